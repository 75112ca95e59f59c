"""The devices ``serve-device`` puts on sockets: those of a scenario file, or the one built-in socket device.

``--scenario FILE`` serves what a simulation of that file runs: the platform is built by the scenario
layer's own builder (:func:`sim.scenario.platform.build_platform` on :func:`sim.scenario.policies.platform_spec`),
so profiles, identities (seed, CA and name derivation), measurement digests, TDIs, BARs and report
layouts are the simulation's. Only two things differ, both outside the device: the DOE mailbox answers
at once (no SimPy scheduler drives the socket), and the socket default of a nonzero HeartbeatPeriod
(:data:`SERVE_HEARTBEAT_PERIOD_S`) is applied unless told otherwise, so the responder validator
exercises its heartbeat group while simulation traces stay as they are.

``--mmio`` overrides a TDI's report layout from the command line (:func:`parse_mmio_option`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from sim.crypto.identity import Identity
from sim.devices.endpoint import Endpoint
from sim.engine.world import World
from sim.interop.device import DEVICE_NAME, SocketDevice
from sim.interop.doe_driver import DoeMailboxDriver
from sim.protocols.dsm import DeviceSecurityManager
from sim.protocols.spdm.profile import ResponderProfile
from sim.protocols.tdisp import BarRange, TdiDefinition
from sim.scenario.loader import load_scenario
from sim.scenario.platform import PlatformSpecError, build_platform
from sim.scenario.policies import platform_spec
from sim.scenario.trust_models import WIRINGS
from sim.wire.tdisp import MmioRangeAttributes

SERVE_HEARTBEAT_PERIOD_S = 1  # what serve-device offers by default (the simulation profiles keep 0)
QEMU_MAX_RESPONSE = 0x1200  # QEMU's SPDM_SOCKET_MAX_MESSAGE_BUFFER_SIZE: the largest response object it takes
RESPONSE_OVERHEAD = 8 + 24  # DOE header; secured record: session id 4, length 2, app length 2, MAC 16
MIN_SPDM_MESSAGE = 42  # the smallest DataTransferSize SPDM allows
PAGE = 4096
_ATTRIBUTE_NAMES = {"msix_table": MmioRangeAttributes.MSIX_TABLE, "msix_pba": MmioRangeAttributes.MSIX_PBA,
                    "non_tee_mem": MmioRangeAttributes.IS_NON_TEE_MEM,
                    "mem_attr_updatable": MmioRangeAttributes.IS_MEM_ATTR_UPDATABLE}


class ServeSetupError(ValueError):
    """Devices that cannot be served as asked; the message names the file, device or option."""


@dataclasses.dataclass(frozen=True)
class ServedTdi:
    name: str
    function: int
    function_id: int  # the TDISP INTERFACE_ID FUNCTION_ID (requester ID of the function)


@dataclasses.dataclass
class ServedDevice:
    """One device as a socket serves it: its parts, its TDIs and the register-level driver that reaches it."""

    device_id: str
    profile: ResponderProfile
    identity: Identity
    endpoint: Endpoint
    dsm: DeviceSecurityManager
    target: DoeMailboxDriver
    tdis: list[ServedTdi]
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @classmethod
    def from_socket_device(cls, d: SocketDevice) -> ServedDevice:
        """The built-in socket device (sim.interop.device); its TDIs are named f0..f7 after their functions."""
        tdis = [ServedTdi(f"f{fn}", fn, d.endpoint.requester_id(fn)) for fn in sorted(d.endpoint.functions)]
        return cls(DEVICE_NAME, d.profile, d.identity, d.endpoint, d.dsm, d.target, tdis)

    def set_max_response(self, size: int) -> None:
        """Bound every response object to ``size`` bytes: DataTransferSize = MaxSPDMmsgSize = size - overhead.

        Without CHUNK_CAP (not implemented) a response that would not fit is refused with
        ResponseTooLarge (SPDM 1.2+), and CERTIFICATE portions are clamped to fit.
        """
        dts = size - RESPONSE_OVERHEAD
        if dts < MIN_SPDM_MESSAGE:
            raise ServeSetupError(f"--max-response {size}: at least {MIN_SPDM_MESSAGE + RESPONSE_OVERHEAD} bytes "
                                  f"(a {MIN_SPDM_MESSAGE}-byte SPDM message plus {RESPONSE_OVERHEAD} bytes of DOE "
                                  "header and secured record)")
        if dts < self.profile.data_transfer_size:
            self.profile = self.profile.replace(data_transfer_size=dts, max_spdm_msg_size=dts)
            self.dsm.spdm.profile = self.profile

    def root_der(self) -> bytes:
        return self.identity.root.public_bytes(serialization.Encoding.DER)

    def set_heartbeat(self, seconds: int) -> None:
        """The HeartbeatPeriod KEY_EXCHANGE_RSP offers (advertised only: the socket device keeps no clock)."""
        if not 0 <= seconds <= 0xFF:
            raise ServeSetupError(f"--heartbeat-period {seconds}: the period is one byte, 0-255 seconds")
        self.profile = self.profile.replace(heartbeat_period=seconds)
        self.dsm.spdm.profile = self.profile


def scenario_devices(path: str | Path, only: Sequence[str] = ()) -> list[ServedDevice]:
    """Every device of the scenario file, in file order (or those named in ``only``).

    Raises :class:`sim.scenario.loader.ScenarioError` for a file that does not load and
    :class:`ServeSetupError` for an unknown ``only`` id.
    """
    scenario = load_scenario(path)
    known = [d.id for d in scenario.platform.devices]
    unknown = [d for d in only if d not in known]
    if unknown:
        raise ServeSetupError(f"{path}: no device '{unknown[0]}' (expected one of: {', '.join(known)})")
    world = World(scenario.seed)
    try:
        platform = build_platform(world, platform_spec(scenario, WIRINGS[scenario.models[0]]))
    except PlatformSpecError as exc:
        raise ServeSetupError(f"{path}: {exc}") from None
    out = []
    for handle in platform.devices:
        if only and handle.id not in only:
            continue
        ep = handle.endpoint
        ep.mailbox.scheduler = None  # answer on Go: the socket is the only clock here
        tdis = [ServedTdi(t.name or f"f{t.function}", t.function, ep.requester_id(t.function)) for t in handle.spec.tdis]
        out.append(ServedDevice(handle.id, handle.profile, handle.identity, ep, handle.dsm,
                                DoeMailboxDriver.for_endpoint(ep), tdis))
    return out


@dataclasses.dataclass(frozen=True)
class MmioOption:
    """One ``--mmio FUNCTION_ID:BAR:OFFSET:SIZE[:ATTR+ATTR]`` value."""

    function_id: int
    range: BarRange


def _number(text: str, what: str, option: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ServeSetupError(f"--mmio {option}: {what} {text!r} is not a number (decimal or 0x hex)") from None


def parse_mmio_option(text: str) -> MmioOption:
    """``FUNCTION_ID:BAR:OFFSET:SIZE[:ATTR+ATTR...]``, e.g. ``0x0100:0:0x2000:0x1000:msix_table``."""
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise ServeSetupError(f"--mmio {text}: expected FUNCTION_ID:BAR:OFFSET:SIZE[:ATTR+ATTR], "
                              "e.g. 0xbeef:0:0:0x4000 or 0x0100:0:0x2000:0x1000:msix_table")
    fid, bar, offset, size = (_number(p, w, text) for p, w in zip(parts[:4], ("FUNCTION_ID", "BAR", "OFFSET", "SIZE"),
                                                                    strict=True))
    attrs = MmioRangeAttributes(0)
    for name in filter(None, parts[4].split("+") if len(parts) == 5 else []):
        if name not in _ATTRIBUTE_NAMES:
            raise ServeSetupError(f"--mmio {text}: unknown attribute {name!r} (expected: {', '.join(_ATTRIBUTE_NAMES)})")
        attrs |= _ATTRIBUTE_NAMES[name]
    if not 0 <= fid <= 0xFFFF_FFFF:
        raise ServeSetupError(f"--mmio {text}: FUNCTION_ID is 32 bits")
    if not 0 <= bar <= 5:
        raise ServeSetupError(f"--mmio {text}: BAR {bar} (expected 0-5)")
    if offset < 0 or offset % PAGE or size <= 0 or size % PAGE:
        raise ServeSetupError(f"--mmio {text}: OFFSET and SIZE are multiples of 4096 (SIZE at least 4096)")
    return MmioOption(fid, BarRange(bar, offset // PAGE, size // PAGE, attrs))


def apply_mmio_options(devices: Sequence[ServedDevice], options: Sequence[MmioOption]) -> None:
    """Give the named TDIs the command line's report layout (in option order), checked against their BARs."""
    by_fid: dict[int, list[BarRange]] = {}
    for opt in options:
        by_fid.setdefault(opt.function_id, []).append(opt.range)
    served = {t.function_id: (d, t) for d in devices for t in d.tdis}
    for fid, ranges in by_fid.items():
        if fid not in served:
            raise ServeSetupError(f"--mmio 0x{fid:04x}: no served TDI has that FUNCTION_ID (served: "
                                  f"{', '.join(f'0x{f:04x}' for f in sorted(served))})")
        device, tdi = served[fid]
        bars = {i: b.size for i, b in device.endpoint.functions[tdi.function].header.bars.items() if b.size}
        for r in ranges:
            if r.bar not in bars:
                raise ServeSetupError(f"--mmio 0x{fid:04x}: function {tdi.function} of {device.device_id} has no BAR "
                                      f"{r.bar} (BARs: {', '.join(map(str, sorted(bars)))})")
            if (r.offset_pages + r.pages) * PAGE > bars[r.bar]:
                raise ServeSetupError(f"--mmio 0x{fid:04x}: offset + size runs past BAR {r.bar} "
                                      f"(0x{bars[r.bar]:x} bytes)")
        spans = sorted((r.bar, r.offset_pages, r.offset_pages + r.pages) for r in ranges)
        for (b1, _, e1), (b2, s2, _) in zip(spans, spans[1:], strict=False):
            if b1 == b2 and s2 < e1:
                raise ServeSetupError(f"--mmio 0x{fid:04x}: ranges in BAR {b1} overlap")
        runtime = next(rt for rt in device.dsm.tdisp.tdis.values() if rt.definition.interface_id.function_id == fid)
        runtime.definition = _with_ranges(runtime.definition, tuple(ranges))


def _with_ranges(definition: TdiDefinition, ranges: tuple[BarRange, ...]) -> TdiDefinition:
    return dataclasses.replace(definition, bar_ranges=ranges, mmio_ranges=())
