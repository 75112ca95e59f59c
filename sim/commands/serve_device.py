"""``tiosim serve-device``: one simulated device behind DMTF's emulator socket protocol.

DMTF's ``spdm_requester_emu --trans PCI_DOE``, the SPDM-Responder-Validator and ``tiosim attest``
can connect to it as they would to ``spdm_responder_emu``. Each exchange is logged as one decoded
line; ``--pcap`` also writes every DOE object to a pcap file (link type 292) for ``spdm_dump``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO

from cryptography.hazmat.primitives import serialization
from rich.console import Console

from sim.commands import summary
from sim.commands.common import EXIT_FAILED, EXIT_OK, UserError
from sim.crypto.errors import CryptoError
from sim.interop.device import DEFAULT_PROFILE, DEFAULT_SEED, SocketDevice, build_socket_device
from sim.interop.emu_socket import DEFAULT_PORT
from sim.interop.events import DeviceView, EventLog, EventType, query_handler
from sim.interop.nvme import NvmeSpdmEndpoint
from sim.interop.scenario_devices import (
    QEMU_MAX_RESPONSE,
    SERVE_HEARTBEAT_PERIOD_S,
    ServedDevice,
    ServeSetupError,
    apply_mmio_options,
    parse_mmio_option,
    scenario_devices,
)
from sim.interop.server import DEFAULT_MAX_CLIENTS, LOOPBACK, EmuServer, ServeResult, StopReason
from sim.protocols.spdm.profile import PROFILES
from sim.scenario.loader import ScenarioError
from sim.wire.doe import DoeObjectType

MAX_TCP_PORT = 0xFFFF


def _open_pcap(path: str | None) -> BinaryIO | None:
    if path is None:
        return None
    try:
        return open(path, "wb")  # closed in cmd_serve_device's finally
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror}") from None


def build_device(args: argparse.Namespace) -> SocketDevice:
    """The device the options describe; one-line UserErrors for unusable files or combinations."""
    if (args.cert_chain is None) != (args.key is None):
        raise UserError("--cert-chain and --key go together")
    try:
        return build_socket_device(profile=args.profile or DEFAULT_PROFILE, seed=args.seed, cert_chain=args.cert_chain, key=args.key,
                                   heartbeat_period=args.heartbeat_period, ide_port_index=args.ide_port_index)
    except (ValueError, CryptoError) as exc:
        raise UserError(str(exc)) from None


def describe_identity(device: SocketDevice | ServedDevice, args: argparse.Namespace) -> str:
    root = device.identity.root
    fingerprint = hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()[:16]
    source = f"from {args.cert_chain}" if args.cert_chain else f"derived from seed {args.seed}"
    return (f"profile {device.profile.name}; identity {source}: {len(device.identity.certificates)} certificates, "
            f"root {root.subject.rfc4514_string()} (sha256 {fingerprint}...)")


def _open_events(path: str | None) -> TextIO | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")  # closed in cmd_serve_device's finally
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror}") from None


def served_devices(args: argparse.Namespace) -> list[ServedDevice]:
    """The devices the options name: a scenario's (all or --device) or the one built-in device."""
    try:
        mmio = [parse_mmio_option(text) for text in args.mmio or []]
        if args.scenario is not None:
            clashing = [flag for flag, value in (("--cert-chain", args.cert_chain), ("--key", args.key),
                                                 ("--profile", args.profile), ("--seed", args.seed)) if value is not None]
            if clashing:
                raise UserError(f"{clashing[0]} cannot be combined with --scenario: profiles, identities and seeds "
                                "come from the scenario file")
            devices = scenario_devices(args.scenario, args.device or ())
        else:
            if args.device:
                raise UserError("--device selects devices of a --scenario file")
            if args.seed is None:
                args.seed = DEFAULT_SEED
            devices = [ServedDevice.from_socket_device(build_device(args))]
        for device in devices:
            device.set_heartbeat(SERVE_HEARTBEAT_PERIOD_S if args.heartbeat_period is None else args.heartbeat_period)
            device.set_max_response(args.max_response)
        apply_mmio_options(devices, mmio)
    except ScenarioError as exc:
        raise UserError(str(exc)) from None
    except ServeSetupError as exc:
        raise UserError(str(exc)) from None
    return devices


def describe_device(device: ServedDevice, host: str, port: int) -> str:
    """The one line per served device: id, address, profile, TDIs (name = FUNCTION_ID), root fingerprint."""
    tdis = ", ".join(f"{t.name}=0x{t.function_id:04x} (function {t.function})" for t in device.tdis) or "none"
    fingerprint = hashlib.sha256(device.root_der()).hexdigest()[:16]
    return (f"device {device.device_id} on {host}:{port}: profile {device.profile.name}, heartbeat "
            f"{device.profile.heartbeat_period} s, TDIs {tdis}; root {device.identity.root.subject.rfc4514_string()} "
            f"(sha256 {fingerprint}...)")


def _write_roots(devices: list[ServedDevice], folder: str) -> list[str]:
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for d in devices:
            path = out / f"{d.device_id}-root.der"
            path.write_bytes(d.root_der())
            written.append(str(path))
        return written
    except OSError as exc:
        raise UserError(f"{folder}: cannot write the root certificates: {exc.strerror}") from None


def cmd_serve_device(args: argparse.Namespace, console: Console) -> int:
    base = args.base_port if args.base_port is not None else args.port
    if not 0 <= base <= MAX_TCP_PORT:  # socket.bind would raise OverflowError, not OSError
        raise UserError(f"--port {base}: a TCP port is 0-{MAX_TCP_PORT}")
    if args.max_clients < 1:
        raise UserError(f"--max-clients {args.max_clients}: at least 1")
    devices = served_devices(args)
    if base and base + len(devices) - 1 > MAX_TCP_PORT:
        raise UserError(f"--base-port {base}: {len(devices)} devices need ports up to {base + len(devices) - 1}")
    if args.pcap is not None and len(devices) > 1:
        raise UserError("--pcap records one device's objects; pick one with --device")
    print_lock = threading.Lock()
    prefix = len(devices) > 1

    def logger(device_id: str) -> Callable[[str], None]:
        def log(line: str) -> None:
            with print_lock:
                console.print(f"[{device_id}] {line}" if prefix else line, markup=False, highlight=False)
        return log

    pcap = _open_pcap(args.pcap)
    events_out = _open_events(args.events)
    events = EventLog(events_out)
    query = query_handler(events)
    servers: list[EmuServer] = []
    try:
        for i, device in enumerate(devices):
            port = base + i if base else 0
            events.attach(DeviceView(device.device_id, port, device.profile.name, device.endpoint, device.dsm,
                                     device.lock, {t.function_id: t.name for t in device.tdis}))
            nvme = NvmeSpdmEndpoint(lambda message, dsm=device.dsm: dsm.handle_doe(DoeObjectType.SPDM, message))
            server = EmuServer(device.target, host=args.host, port=port, max_response=args.max_response,
                               max_connections=1 if args.once else args.max_connections,
                               client_timeout=args.timeout or None, log=logger(device.device_id), pcap=pcap,
                               max_clients=args.max_clients, lock=device.lock, query=query, nvme=nvme,
                               name=f"device {device.device_id}",
                               on_client=lambda peer, state, d=device.device_id: events.emit(
                                   d, EventType.CLIENT, peer=peer, state=state))
            servers.append(server)
            try:
                host, bound = server.bind()
            except OSError as exc:
                raise UserError(f"cannot listen on {args.host}:{port}: {exc.strerror or exc}") from None
            events.devices[device.device_id].port = bound
            logger(device.device_id)(describe_device(device, host, bound))
            if args.scenario is None:
                logger(device.device_id)(describe_identity(device, args))
        if args.write_roots:
            for path in _write_roots(devices, args.write_roots):
                logger("roots")(f"wrote {path}")
        return _serve_all(servers, logger("serve-device"))
    finally:
        for server in servers:
            server.stop()
            server.close()
        if pcap is not None:
            pcap.close()
        if events_out is not None and events_out is not sys.stdout:
            events_out.close()


def _serve_all(servers: list[EmuServer], log: Callable[[str], None]) -> int:
    """Run every server in its own thread until all have stopped (SHUTDOWN, --once, or Ctrl-C)."""
    results: list[ServeResult] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.serve()), daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
    except KeyboardInterrupt:
        for s in servers:
            s.stop()
        for t in threads:
            t.join(5.0)
        log("interrupted")
        return EXIT_OK
    ok = all(r.stop_reason in (StopReason.SHUTDOWN, StopReason.MAX_CONNECTIONS) for r in results)
    return EXIT_OK if ok else EXIT_FAILED


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve-device",
        help=summary("serve-device"),
        description="Serve one simulated device (DOE mailbox, SPDM responder, IDE_KM, TDISP) over the socket "
                    "protocol of DMTF's spdm-emu, as spdm_responder_emu does: spdm_requester_emu --trans PCI_DOE, "
                    "the SPDM-Responder-Validator and `tiosim attest` can connect. Without --cert-chain/--key the "
                    "device's certificate chain is derived from --seed, and `tiosim attest` with the same --seed "
                    "trusts its root. The server keeps the device (and its SPDM state) across clients that end "
                    "with CONTINUE and exits on SHUTDOWN. Loopback only unless --host says otherwise.",
    )
    p.add_argument("--host", default=LOOPBACK, help=f"address to listen on (default {LOOPBACK})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 = any)")
    p.add_argument("--scenario", metavar="FILE",
                   help="serve every device of this scenario file (the i-th on port --base-port + i), with the "
                        "profiles, identities, measurements, TDIs and report layouts a simulation of it runs")
    p.add_argument("--device", action="append", metavar="ID", help="with --scenario: serve only this device "
                   "(repeatable; ports still follow the file order of the devices served)")
    p.add_argument("--base-port", type=int, metavar="P",
                   help=f"with --scenario: the first device's port (default --port, {DEFAULT_PORT}; 0 = any)")
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help=f"SPDM responder profile (default {DEFAULT_PROFILE}; not with --scenario)")
    p.add_argument("--cert-chain", metavar="FILE",
                   help="certificate chain, DER root-first (e.g. libspdm's bundle_responder.certchain.der) or PEM")
    p.add_argument("--key", metavar="FILE", help="the leaf certificate's private key (PEM or DER)")
    p.add_argument("--seed", type=int,
                   help=f"seed of the device's identity and randomness (default {DEFAULT_SEED}; not with --scenario)")
    p.add_argument("--heartbeat-period", type=int, metavar="SECONDS",
                   help=f"HeartbeatPeriod offered in KEY_EXCHANGE_RSP (default {SERVE_HEARTBEAT_PERIOD_S}, so "
                        "conformance suites test heartbeats; 0 = none); advertised only, never enforced: the "
                        "socket device has no clock")
    p.add_argument("--mmio", action="append", metavar="FUNCTION_ID:BAR:OFFSET:SIZE[:ATTR+ATTR]",
                   help="a range of that TDI's interface report, relative to the BAR's base at LOCK (repeatable, "
                        "in report order; replaces the default of whole BARs); ATTR: msix_table, msix_pba, "
                        "non_tee_mem, mem_attr_updatable")
    p.add_argument("--max-response", type=int, default=QEMU_MAX_RESPONSE, metavar="BYTES",
                   help=f"largest response object (DOE header and secured record included) the client takes "
                        f"(default {QEMU_MAX_RESPONSE:#x}, QEMU's limit); lowers DataTransferSize and MaxSPDMmsgSize "
                        "to fit when needed: larger answers become ResponseTooLarge, certificate portions shrink")
    p.add_argument("--events", metavar="PATH|-",
                   help="write one JSON line per device-side change (SPDM session, IDE keys and streams, TDI "
                        "states with the T bit, resets, clients) to PATH or stdout (docs/emulator-events.md)")
    p.add_argument("--write-roots", metavar="DIR",
                   help="write each device's root certificate to DIR/ID-root.der (for attest --trusted-root)")
    p.add_argument("--max-clients", type=int, default=DEFAULT_MAX_CLIENTS, metavar="N",
                   help=f"clients one device serves at once (default {DEFAULT_MAX_CLIENTS}); one more is refused")
    p.add_argument("--ide-port-index", type=int, default=0, metavar="N",
                   help="the IDE_KM PortIndex of the device's IDE port (default 0; DMTF's spdm_requester_emu "
                        "asks for 1, so pass --ide-port-index 1 when it is the client)")
    p.add_argument("--once", action="store_true", help="serve one client, then exit")
    p.add_argument("--max-connections", type=int, metavar="N", help="exit after N clients")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="drop a client that sends nothing for this long (default 300; 0 = never, for an emulator "
                        "that keeps its connection for the guest's life); other clients are served meanwhile")
    p.add_argument("--pcap", metavar="FILE", help="write every DOE object to FILE (pcap, link type 292)")
    p.set_defaults(func=cmd_serve_device)

