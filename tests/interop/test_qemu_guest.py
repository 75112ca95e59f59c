"""Opt-in: a real Linux kernel under QEMU (TCG) in front of a served scenario device (docs/qemu.md).

QEMU's NVMe controller with ``spdm_port=P`` carries a DOE capability; QEMU answers DOE Discovery itself and
forwards SPDM and secured SPDM objects to the socket responder (here: gpu0 of scenarios/passthrough-guest.yaml,
served by :class:`~sim.interop.server.EmuServer` as ``serve-device --scenario`` does). A tiny busybox
initramfs reports the kernel's view (sysfs ``doe_features`` where the kernel has it), walks DOE Discovery
through the function's sysfs config file, then relays the host's whole attest procedure through the DOE
registers (tests/interop/qemu_guest/doe_requester.c, built static here): every object crosses the guest
kernel's config-space path and QEMU's DOE emulation.

Skipped unless ``qemu-system-x86_64`` >= 9.1, a kernel image (``TIOSIM_QEMU_KERNEL`` or the newest
/boot/vmlinuz-*), a static busybox and ``gcc -static`` are present; ``TIOSIM_QEMU=1`` makes it required.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sim.crypto.drbg import DeterministicRandom
from sim.interop.attest_flow import AttestOptions, AttestProcedure
from sim.interop.events import DeviceView, EventLog, EventType, query_handler
from sim.interop.scenario_devices import scenario_devices
from sim.interop.server import EmuServer
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Outbound, run_flow
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SpdmRequester
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeObject

HERE = Path(__file__).parent / "qemu_guest"
SCENARIO = Path(__file__).parents[2] / "scenarios" / "passthrough-guest.yaml"
REQUIRED = os.environ.get("TIOSIM_QEMU") == "1"
RUN_LIMIT_S = 170.0  # the whole guest run; the bound is 3 minutes
READY = struct.pack("<I", 0x59444552)
END = 0xFFFFFFFF


def _missing() -> str | None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    if m is None or (int(m.group(1)), int(m.group(2))) < (9, 1):
        return f"QEMU >= 9.1 needed for spdm_port (found: {out.splitlines()[0] if out else 'unknown'})"
    if _kernel() is None:
        return "no kernel image (set TIOSIM_QEMU_KERNEL or apt-get install linux-image-amd64)"
    busybox = shutil.which("busybox")
    if busybox is None or b"ld-linux" in Path(busybox).read_bytes()[:4096]:
        return "no static busybox (apt-get install busybox-static)"
    if shutil.which("gcc") is None:
        return "gcc not found (needed to build the guest's DOE requester statically)"
    return None


def _kernel() -> Path | None:
    given = os.environ.get("TIOSIM_QEMU_KERNEL")
    if given:
        return Path(given) if Path(given).is_file() else None
    images = sorted(Path("/boot").glob("vmlinuz-*"))
    readable = [p for p in images if os.access(p, os.R_OK)]
    return readable[-1] if readable else None


def _cpio_newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A newc initramfs archive: (name, mode, data, (rdev major, minor)) entries, then the trailer."""
    out = bytearray()
    for ino, (name, mode, data, (major, minor)) in enumerate([*entries, ("TRAILER!!!", 0, b"", (0, 0))], 1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(encoded), 0]
        out += b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + encoded
        out += bytes(-len(out) % 4)
        out += data + bytes(-len(data) % 4)
    return bytes(out)


def _initramfs(tmp: Path) -> Path:
    binary = tmp / "doe_requester"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(HERE / "doe_requester.c")], check=True,
                   capture_output=True, timeout=120)
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    d, f, x, c = 0o040755, 0o100644, 0o100755, 0o020600
    entries = [("bin", d, b"", (0, 0)), ("dev", d, b"", (0, 0)), ("proc", d, b"", (0, 0)), ("sys", d, b"", (0, 0)),
               ("dev/console", c, b"", (5, 1)), ("bin/busybox", x, busybox, (0, 0)),
               ("bin/sh", x, busybox, (0, 0)), ("init", x, (HERE / "init.sh").read_bytes(), (0, 0)),
               ("doe_requester", x, binary.read_bytes(), (0, 0)), ("etc", d, b"", (0, 0)), ("etc/hostname", f, b"t\n", (0, 0))]
    path = tmp / "initramfs.cpio"
    path.write_bytes(_cpio_newc(entries))
    return path


class GuestBridge:
    """The host end of doe_requester's bridge: a run_flow transport whose objects go through the guest."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.exchanges = 0

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the guest closed the bridge")
            buf += chunk
        return buf

    def wait_ready(self) -> None:
        seen = b""
        while not seen.endswith(READY):
            seen = (seen + self._read(1))[-8:]

    def transport(self, out: Outbound) -> bytes | None:
        request = DoeObject.pcisig(out.object_type, out.payload).encode()
        self.sock.sendall(struct.pack("<I", len(request)) + request)
        (length,) = struct.unpack("<I", self._read(4))
        self.exchanges += 1
        if not length:
            return None
        try:
            obj = DoeObject.decode(self._read(length))
        except DecodeError:
            return None
        return obj.payload if obj.object_type is out.object_type else None

    def end(self) -> None:
        self.sock.sendall(struct.pack("<I", END))


@pytest.fixture(scope="module")
def tools() -> None:
    missing = _missing()
    if missing is not None:
        if REQUIRED:
            pytest.fail(f"TIOSIM_QEMU=1 but {missing}")
        pytest.skip(missing)


def test_kernel_discovers_doe_and_the_attest_flow_runs_through_guest_config_space(tools: None, tmp_path: Path) -> None:
    started = time.monotonic()
    initramfs = _initramfs(tmp_path)
    (device,) = scenario_devices(SCENARIO)
    events = EventLog(keep=True)
    events.attach(DeviceView(device.device_id, 0, device.profile.name, device.endpoint, device.dsm, device.lock,
                             {t.function_id: t.name for t in device.tdis}))
    logs: list[str] = []
    server = EmuServer(device.target, port=0, client_timeout=None, log=logs.append, lock=device.lock,
                       query=query_handler(events), max_connections=1)
    _, port = server.bind()
    serving = threading.Thread(target=server.serve, daemon=True)
    serving.start()
    console, bridge_path = tmp_path / "console.log", tmp_path / "bridge.sock"
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", "1", "-display", "none",
         "-monitor", "none", "-no-reboot", "-kernel", str(_kernel()), "-initrd", str(initramfs),
         "-append", "console=ttyS0 rdinit=/init quiet panic=-1",
         "-chardev", f"file,id=con,path={console}", "-serial", "chardev:con",
         "-chardev", f"socket,id=br,path={bridge_path},server=on,wait=off", "-serial", "chardev:br",
         "-device", f"nvme,serial=tiosim0,spdm_port={port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not bridge_path.exists():
            assert qemu.poll() is None, qemu.stdout.read().decode() if qemu.stdout else "qemu exited"
            assert time.monotonic() < deadline, "QEMU did not open the bridge socket"
            time.sleep(0.1)
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(RUN_LIMIT_S)
        sock.connect(str(bridge_path))
        bridge = GuestBridge(sock)
        bridge.wait_ready()
        env = ProtocolEnv(DeterministicRandom(1, "qemu-guest-test"), "qemu-guest-test")
        policy = VerificationPolicy(trusted_roots=(device.identity.root,), validation_time=dt.datetime.now(dt.UTC))
        procedure = AttestProcedure(SpdmRequester(RequesterConfig(), policy, env), env,
                                    AttestOptions(interface_function_id=device.tdis[0].function_id))
        steps = run_flow(procedure.run(), bridge.transport)
        bridge.end()
        qemu.wait(timeout=max(5.0, RUN_LIMIT_S - (time.monotonic() - started)))
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait(10)
        server.stop()
        serving.join(10)
    text = console.read_text(errors="replace")
    elapsed = time.monotonic() - started
    print(f"QEMU guest run: {elapsed:.1f} s, {bridge.exchanges} objects through the guest's DOE registers")
    print("\n".join(line for line in text.splitlines() if line.startswith("TIOSIM")))
    # the kernel's view: DOE discovery as the PCI core recorded it (only kernels with sysfs doe_features)
    features = re.findall(r"TIOSIM-DOE-FEATURE (\S+)", text)
    if "TIOSIM-NO-DOE-FEATURES" not in text:
        assert any(f.endswith(":01") or f == "0x0001:01" for f in features), features
    # DOE Discovery through the registers, as QEMU answers it: discovery, SPDM, secured SPDM
    assert "TIOSIM-DISCOVERY discovery index 0: vid 0x0001 type 0 next 1" in text, text[-3000:]
    assert re.search(r"vid 0x0001 type 1 ", text) and re.search(r"vid 0x0001 type 2 ", text)
    # the whole attest procedure through the guest kernel's config-space path and QEMU's DOE
    assert procedure.ok, procedure.first_failure
    assert len(steps) == 22 and all(s.ok for s in steps)
    assert f"TIOSIM-BRIDGE bridge: {bridge.exchanges} exchanges" in text
    tdi = [(e["from"], e["to"]) for e in events.lines if e["event"] == str(EventType.TDI)]
    assert tdi == [("CONFIG_UNLOCKED", "CONFIG_LOCKED"), ("CONFIG_LOCKED", "RUN"), ("RUN", "CONFIG_UNLOCKED")]
    assert not any("TEST with" in line for line in logs)  # QEMU connects without the hello
    assert server.result.exchanges >= 40 and server.result.unanswered == 0
