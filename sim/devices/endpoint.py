"""A PCIe endpoint: functions with config space and BARs, the DOE mailbox, the IDE engine, TLPs, resets.

Function 0 is the DSM function: it carries the DOE capability (behind which the DSM firmware
answers SPDM and secured SPDM) and the IDE capability (whose selective stream blocks software
programs, while IDE_KM, through the DSM, fills the key slots of :class:`~sim.devices.ide_engine.IdeEngine`).
Every function has a type 0 header, the Power Management and PCI Express capabilities, and BARs
backed by an MMIO target (plain memory unless one is given).

The endpoint talks to the rest of the platform through a link port (:class:`LinkPort`, i.e. the
Root Port side's ``sim/rootport/link.py``): it sends TLP bytes with ``send_tlp`` and receives them in
:meth:`Endpoint.receive_tlp`. MMIO requests to its BARs are answered with completions; device
DMA goes out as memory requests. When a selective IDE stream is Secure, TLPs travel as IDE TLPs
sealed with the device's Tx keys and incoming IDE TLPs are opened with its Rx keys (PROTOCOLS.md §7.2):
either the endpoint does it itself, or (``attach_link(..., link_applies_ide=True)``) the link does
it through the endpoint's ``ide_tx_stream`` / ``ide_seal`` / ``ide_open`` / ``ide_fail_message``.
Wiring to ``sim/rootport/link.py``: ``link.connect_endpoint(path, receive=ep.receive_tlp,
reset=ep.on_link_reset, state=ep.on_link_state, ide=ep)``.

Reset and power semantics (TRUST_MODELS.md §1, §3, §4; TDISP §11.4.8-9):

* conventional reset — DPC containment, hot reset (SBR), link down, D3cold: every register,
  the DOE mailbox and the IDE keys are lost, streams go Insecure, and the DSM hears
  ``conventional_reset()`` (drop SPDM state and sessions; all TDIs to CONFIG_UNLOCKED);
* FLR (Device Control bit 15 of a function) — that function's registers, MMIO state and (for
  function 0) mailbox are reset and the DSM hears ``function_level_reset(n)`` (TDIs of n to ERROR);
  IDE keys survive an FLR of a function other than 0; for function 0 see :class:`Function0FlrPolicy`;
* D3hot and back with No_Soft_Reset = 1 — nothing is lost (IDE survives, PCIe §6.33.8);
  with No_Soft_Reset = 0 the function's state is lost and the DSM hears ``config_changed(n, "power-state")``;
* config writes that change a function's configuration (MSE or BME cleared, a BAR rewritten,
  IDE stream registers changed, a Secure stream dropping to Insecure) are reported with
  ``config_changed``; the DSM decides whether a locked TDI cares.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sim.devices.config_space import (
    DW_MASK,
    Bar,
    BarKind,
    Command,
    ConfigHeader,
    ConfigSpace,
    DoeCapability,
    IdeCapability,
    IdeCapFlag,
    IdeStreamBlock,
    IdeStreamState,
    PcieCapability,
    PowerManagementCapability,
    PowerState,
    RegisterWrite,
    ResetKind,
)
from sim.devices.doe_mailbox import DoeEvent, DoeEventKind, DoeMailbox, DoeOutcome, DoeRequest
from sim.devices.ide_engine import IdeEngine, IdeEngineError, IdeIntegrityError
from sim.devices.security_manager import (
    BarConfig,
    ConfigChange,
    IdeKeySlots,
    IdePortInfo,
    SecurityManager,
    TdiConfig,
)
from sim.wire.codec import DecodeError
from sim.wire.doe import PCI_SIG_VENDOR_ID, DoeObjectType
from sim.wire.ide_km import Direction, KeySet, KpAckStatus, SubStream
from sim.wire.tlp import (
    CompletionHeader,
    CplStatus,
    IdePrefix,
    IdeTlp,
    MemRequestHeader,
    Tlp,
    TlpHeader,
    decode_tlp,
)

if TYPE_CHECKING:
    from sim.engine.faults import FaultRequest
    from sim.engine.world import World

DEFAULT_VENDOR_ID = 0x1DED  # placeholder IDs for simulated devices (not a claim about any vendor)
DEFAULT_DEVICE_ID = 0x7100
CLASS_PROCESSING_ACCELERATOR = 0x120000
MAX_PAYLOAD_BYTES = 256  # Device Capabilities Max_Payload_Size_Supported = 256 B (PcieCapability)
ALL_ONES = DW_MASK


def pci_sig_protocols() -> tuple[tuple[int, int], ...]:
    """The protocols a DSM mailbox serves besides discovery: CMA/SPDM and secured CMA/SPDM."""
    return ((PCI_SIG_VENDOR_ID, int(DoeObjectType.SPDM)), (PCI_SIG_VENDOR_ID, int(DoeObjectType.SECURED_SPDM)))


class ResetReason(enum.StrEnum):
    """Why a conventional reset happened (all of them have the same effect on the device)."""

    DPC = "dpc"
    HOT_RESET = "hot-reset"
    LINK_DOWN = "link-down"
    D3COLD = "d3cold"
    POWER_ON = "power-on"


class Function0FlrPolicy(enum.Enum):
    """What an FLR of function 0 (the DSM function) does to IDE keys and SPDM state.

    TDISP §11.4.9 only says that an FLR of a function *other than* 0 keeps SPDM and IDE
    (TRUST_MODELS.md §3); Linux CMA notes SPDM state survives FLR in general. Which one a real
    function-0 FLR does is not settled by the public sources [U], so it is a device parameter.
    """

    CLEAR_SECURITY = "clear-security"  # IDE keys erased; the DSM is told (and drops SPDM state)
    KEEP_SECURITY = "keep-security"  # like any other function: IDE keys and IDE registers kept


class LinkPort(Protocol):
    """What the endpoint needs from the link it is plugged into (``sim/rootport/link.py``)."""

    def send_tlp(self, data: bytes, *, tee: bool = False) -> None: ...


class MmioTarget(Protocol):
    """Behaviour behind a function's BARs."""

    def mmio_read(self, bar: int, offset: int, length: int) -> bytes: ...

    def mmio_write(self, bar: int, offset: int, data: bytes) -> None: ...

    def reset(self) -> None: ...


class BarMemory:
    """Plain memory behind each BAR: what a register file or on-device RAM looks like to software."""

    def __init__(self, bars: dict[int, Bar]) -> None:
        self._mem = {i: bytearray(b.size) for i, b in bars.items() if b.kind is not BarKind.IO}

    def mmio_read(self, bar: int, offset: int, length: int) -> bytes:
        return bytes(self._mem[bar][offset:offset + length])

    def mmio_write(self, bar: int, offset: int, data: bytes) -> None:
        self._mem[bar][offset:offset + len(data)] = data

    def reset(self) -> None:
        for m in self._mem.values():
            m[:] = bytes(len(m))


@dataclass(frozen=True)
class FunctionSpec:
    """How to build one function."""

    vendor_id: int = DEFAULT_VENDOR_ID
    device_id: int = DEFAULT_DEVICE_ID
    class_code: int = CLASS_PROCESSING_ACCELERATOR
    bars: dict[int, Bar] = field(default_factory=lambda: {0: Bar(0x4000, BarKind.MEM64)})
    no_soft_reset: bool = True
    mmio: MmioTarget | None = None


class EndpointFunction:
    """One function: its config space, PM and PCIe capabilities, and MMIO behaviour."""

    def __init__(self, number: int, spec: FunctionSpec, multifunction: bool) -> None:
        self.number = number
        header = ConfigHeader(vendor_id=spec.vendor_id, device_id=spec.device_id, class_code=spec.class_code,
                              multifunction=multifunction, bars=spec.bars, interrupt_pin=1)
        self.config = ConfigSpace(header)
        self.pm = PowerManagementCapability(no_soft_reset=spec.no_soft_reset)
        self.pcie = PcieCapability()
        self.config.add_capability(self.pm)
        self.config.add_capability(self.pcie)
        self.mmio: MmioTarget = spec.mmio if spec.mmio is not None else BarMemory(spec.bars)

    @property
    def header(self) -> ConfigHeader:
        return self.config.header

    @property
    def power_state(self) -> PowerState:
        return self.pm.power_state


class EndpointEventKind(enum.StrEnum):
    RESET = "reset"
    FLR = "flr"
    POWER = "power"
    IDE_STATE = "ide-state"
    IDE_INTEGRITY = "ide-integrity"
    CONFIG_CHANGED = "config-changed"
    TLP_DROPPED = "tlp-dropped"
    TEE_REFUSED = "tee-refused"     # a T=1 request the device would not send without a Secure stream


@dataclass(frozen=True)
class EndpointEvent:
    """Something the endpoint reports to its observer (tests, the trace glue in :meth:`Endpoint.attach_world`)."""

    kind: EndpointEventKind
    summary: str
    data: bytes = b""


DmaCallback = Callable[[CplStatus, bytes], None]


class _PortIndexed:
    """The IDE engine's key slots under the endpoint's IDE_KM PortIndex (the engine numbers its port 0)."""

    def __init__(self, engine: IdeEngine, port_index: int) -> None:
        self._engine = engine
        self._port_index = port_index

    def _port(self, port_index: int) -> int:
        return 0 if port_index == self._port_index else -1  # -1: the engine answers unsupported port

    def program(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
                sub_stream: SubStream, key: bytes, ifv: bytes) -> KpAckStatus:
        return self._engine.program(self._port(port_index), stream_id, key_set, direction, sub_stream, key, ifv)

    def set_go(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
               sub_stream: SubStream) -> bool:
        return self._engine.set_go(self._port(port_index), stream_id, key_set, direction, sub_stream)

    def set_stop(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
                 sub_stream: SubStream) -> bool:
        return self._engine.set_stop(self._port(port_index), stream_id, key_set, direction, sub_stream)


class _DsmHardware:
    """The :class:`~sim.devices.security_manager.DsmHardware` view of an endpoint handed to its DSM."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._ep = endpoint

    @property
    def ide(self) -> IdeKeySlots:
        return _PortIndexed(self._ep.ide, self._ep.ide_port_index)

    @property
    def ide_port_index(self) -> int:
        return self._ep.ide_port_index

    def ide_query(self, port_index: int) -> IdePortInfo | None:
        if port_index != self._ep.ide_port_index:
            return None
        return IdePortInfo(port_index=port_index, max_port_index=port_index, dev_func=self._ep.device << 3,
                           bus=self._ep.bus,
                           segment=0, register_dws=self._ep.ide_cap.register_dws())

    def functions(self) -> tuple[int, ...]:
        return tuple(sorted(self._ep.functions))

    def tdi_config(self, function: int) -> TdiConfig:
        fn = self._ep.functions[function]
        h = fn.header
        bars = tuple(BarConfig(i, h.bar_address(i), b.size, b.kind, b.prefetchable) for i, b in sorted(h.bars.items()))
        return TdiConfig(function, self._ep.requester_id(function), h.command_bits, bars, fn.power_state)


class Endpoint:
    """A multi-function PCIe endpoint with a DSM on function 0."""

    def __init__(self, name: str = "dev0", *, functions: Sequence[FunctionSpec] = (FunctionSpec(),),
                 dsm: SecurityManager | None = None, bus: int = 1, device: int = 0,
                 selective_streams: int = 1, addr_assoc: int = 1, doe_version: int = 2,
                 doe_interrupt_vector: int | None = None,
                 function0_flr: Function0FlrPolicy = Function0FlrPolicy.CLEAR_SECURITY,
                 ide_port_index: int = 0,
                 observer: Callable[[EndpointEvent], None] | None = None) -> None:
        if not 1 <= len(functions) <= 8:
            raise ValueError("an endpoint has 1..8 functions")
        if not 0 <= ide_port_index <= 0xFF:
            raise ValueError("the IDE_KM port index is one byte")
        self.name = name
        # The PortIndex IDE_KM uses for this endpoint's one IDE port. 0 is the usual choice for an
        # endpoint's upstream port; DMTF's reference requester asks for 1.
        self.ide_port_index = ide_port_index
        self.bus = bus
        self.device = device
        self.dsm = dsm
        self.function0_flr = function0_flr
        self.observer = observer
        self.powered = True
        self.on_power_change: Callable[[bool], None] | None = None  # wiring: tell the link power went/came
        self.link: LinkPort | None = None
        self.link_up = False
        self.link_applies_ide = False
        self.functions: dict[int, EndpointFunction] = {
            n: EndpointFunction(n, spec, len(functions) > 1) for n, spec in enumerate(functions)}
        f0 = self.functions[0]
        self.mailbox = DoeMailbox(dsm, protocols=pci_sig_protocols(), interrupt_vector=doe_interrupt_vector)
        self.doe_cap = DoeCapability(self.mailbox, version=doe_version)
        self.ide_cap = IdeCapability(flags=IdeCapFlag.SELECTIVE | IdeCapFlag.IDE_KM | IdeCapFlag.TEE_LIMITED,
                                     selective_assoc=(addr_assoc,) * selective_streams,
                                     on_stream_control=self._ide_control_written)
        if function0_flr is Function0FlrPolicy.KEEP_SECURITY:
            for _, reg in self.ide_cap.registers():
                reg.keep_on_flr = True
        f0.config.add_ext_capability(self.doe_cap)
        f0.config.add_ext_capability(self.ide_cap)
        self.ide = IdeEngine(max_streams=selective_streams, on_change=self._ide_keys_changed)
        self._secure: dict[int, bool] = {b.index: False for b in self.ide_cap.selective_blocks()}
        self._tag = 0
        self._dma_pending: dict[int, DmaCallback] = {}
        self._resetting = False
        for fn in self.functions.values():
            fn.config.add_write_observer(self._config_written_for(fn.number))
            fn.pcie.on_flr = self._flr_for(fn.number)
            fn.pm.on_power_state = self._power_for(fn.number)
        self.hardware = _DsmHardware(self)
        if dsm is not None:
            dsm.attach(self.hardware)

    # ------------------------------------------------------------------------------------------
    # identity and config access
    # ------------------------------------------------------------------------------------------

    def requester_id(self, function: int = 0) -> int:
        return (self.bus << 8) | (self.device << 3) | function

    def config_read(self, function: int, offset: int) -> int:
        """A config read as it reaches the device; all ones when the function does not exist or power is off."""
        fn = self.functions.get(function)
        if fn is None or not self.powered:
            return ALL_ONES
        return fn.config.read_dw(offset)

    def config_write(self, function: int, offset: int, value: int, byte_enable: int = 0xF) -> None:
        fn = self.functions.get(function)
        if fn is None or not self.powered:
            return
        fn.config.write_dw(offset, value, byte_enable)

    # ------------------------------------------------------------------------------------------
    # link
    # ------------------------------------------------------------------------------------------

    def attach_link(self, port: LinkPort, *, up: bool = True, link_applies_ide: bool = False) -> None:
        """Plug into a link. With ``link_applies_ide`` the link seals outgoing TLPs through this
        endpoint's :class:`IdePortCrypto` methods (``sim/rootport/link.py`` does that when the endpoint
        is connected with ``ide=endpoint``), so the endpoint sends them plain; otherwise the endpoint
        seals them itself. Incoming IDE TLPs are opened here whenever they still carry the prefix."""
        self.link = port
        self.link_applies_ide = link_applies_ide
        if up:
            self.on_link_up()

    def on_link_state(self, state: str) -> None:
        """Link-state hook for ``sim/rootport/link.py``: "up" trains us; "down"/"training" only stop traffic,
        because that link delivers the matching reset separately through :meth:`on_link_reset`."""
        if str(state) == "up":
            self.on_link_up()
        else:
            self.link_up = False
            self._update_ide_status()

    def on_link_reset(self, reason: str) -> None:
        """Reset-signal hook for ``sim/rootport/link.py`` ("hot-reset", "dpc", "link-down")."""
        self.link_up = False
        self.conventional_reset(ResetReason(str(reason)))

    def on_link_up(self) -> None:
        """The link trained (Data Link Layer up)."""
        if not self.powered:
            return
        self.link_up = True
        self.functions[0].pcie.set_link(up=True, speed=4, width=16)
        self._update_ide_status()

    def on_link_down(self) -> None:
        """DL_Down on the upstream port: handled like a hot reset [S: PCIe §2.9.1 for Upstream Ports].

        Idempotent: a link that is already down (e.g. DPC delivered its reset first) resets nothing twice.
        """
        if not self.link_up:
            return
        self.link_up = False
        self.conventional_reset(ResetReason.LINK_DOWN)

    def hot_reset(self) -> None:
        """Hot reset (Secondary Bus Reset above us, or a link-level reset)."""
        self.conventional_reset(ResetReason.HOT_RESET)

    # ------------------------------------------------------------------------------------------
    # resets and power
    # ------------------------------------------------------------------------------------------

    def conventional_reset(self, reason: ResetReason = ResetReason.HOT_RESET) -> None:
        """Everything volatile is lost: registers, mailbox, IDE keys, MMIO state; the DSM drops its state."""
        self._resetting = True
        try:
            for fn in self.functions.values():
                fn.config.reset(ResetKind.CONVENTIONAL)
                fn.mmio.reset()
            self.ide.clear()
            self._dma_pending.clear()
            for blk in self.ide_cap.selective_blocks():
                self._secure[blk.index] = False
            if self.dsm is not None:
                self.dsm.conventional_reset()
            if self.link_up:
                self.functions[0].pcie.set_link(up=True, speed=4, width=16)
        finally:
            self._resetting = False
        self._emit("reset", f"conventional reset ({reason})")

    def function_level_reset(self, function: int) -> None:
        """FLR of one function (also reached by writing Initiate FLR in its Device Control)."""
        fn = self.functions[function]
        self._resetting = True
        try:
            fn.config.reset(ResetKind.FLR)
            fn.mmio.reset()
            if function == 0:  # the mailbox was reset with function 0's config space (DoeCapability.reset)
                if self.function0_flr is Function0FlrPolicy.CLEAR_SECURITY:
                    self.ide.clear()
            if self.link_up and function == 0:
                fn.pcie.set_link(up=True, speed=4, width=16)
            if self.dsm is not None:
                self.dsm.function_level_reset(function)
        finally:
            self._resetting = False
        self._update_ide_status()
        self._emit("flr", f"FLR of function {function}")

    def enter_d3cold(self) -> None:
        """Main power removed: the link drops and all state is lost at once (a conventional reset)."""
        if not self.powered:
            return
        self.link_up = False
        self.conventional_reset(ResetReason.D3COLD)
        self.powered = False
        self.functions[0].pcie.set_link(up=False)
        self._emit("power", "D3cold entry (power removed)")
        if self.on_power_change is not None:
            self.on_power_change(False)

    def exit_d3cold(self) -> None:
        """Power restored: the device comes up from reset in D0uninitialized; the link retrains."""
        if self.powered:
            return
        self.powered = True
        for fn in self.functions.values():
            fn.config.reset(ResetKind.CONVENTIONAL)
        self._emit("power", "D3cold exit (power restored)")
        if self.on_power_change is not None:
            self.on_power_change(True)
        elif self.link is not None:
            self.on_link_up()

    def _power_for(self, function: int) -> Callable[[PowerState, PowerState], None]:
        def changed(old: PowerState, new: PowerState) -> None:
            fn = self.functions[function]
            self._emit("power", f"function {function} {old.name} -> {new.name}")
            if old is PowerState.D3HOT and new is PowerState.D0 and not fn.pm.no_soft_reset:
                # No_Soft_Reset = 0: the function's state is lost on the way back to D0 (a soft reset)
                self._resetting = True
                try:
                    fn.config.reset(ResetKind.SOFT)
                    fn.mmio.reset()
                    if function == 0:
                        self.ide.clear()
                finally:
                    self._resetting = False
                self._update_ide_status()
                self._config_changed(function, ConfigChange.POWER_STATE)
        return changed

    def _flr_for(self, function: int) -> Callable[[], None]:
        return lambda: self.function_level_reset(function)

    # ------------------------------------------------------------------------------------------
    # configuration changes seen by TDISP
    # ------------------------------------------------------------------------------------------

    def _config_written_for(self, function: int) -> Callable[[ConfigSpace, RegisterWrite], None]:
        def observe(cs: ConfigSpace, w: RegisterWrite) -> None:
            if self._resetting or not w.changed:
                return
            name = w.name
            if name == "command":
                cleared = w.old & ~w.new
                if cleared & Command.MEMORY_SPACE:
                    self._config_changed(function, ConfigChange.MSE_CLEARED)
                if cleared & Command.BUS_MASTER:
                    self._config_changed(function, ConfigChange.BME_CLEARED)
            elif name.startswith("bar"):
                self._config_changed(function, ConfigChange.BAR)
            elif function == 0 and self.ide_cap.offset is not None and \
                    self.ide_cap.offset < w.offset < self.ide_cap.offset + self.ide_cap.size:
                self._config_changed(function, ConfigChange.IDE_REGISTERS)
        return observe

    def _config_changed(self, function: int, what: ConfigChange) -> None:
        self._emit("config-changed", f"function {function}: {what}")
        if self.dsm is not None:
            self.dsm.config_changed(function, str(what))

    # ------------------------------------------------------------------------------------------
    # IDE stream state
    # ------------------------------------------------------------------------------------------

    def _ide_control_written(self, blk: IdeStreamBlock, w: RegisterWrite) -> None:
        self._update_ide_status()

    def _ide_keys_changed(self, stream_id: int) -> None:
        if not self._resetting:
            self._update_ide_status()

    def _update_ide_status(self) -> None:
        """Status = Secure when the block is enabled, its stream ID has armed keys both ways, and the link is up."""
        for blk in self.ide_cap.selective_blocks():
            secure = (self.powered and self.link_up and self.ide_cap.enabled(blk)
                      and self.ide.ready(self.ide_cap.stream_id(blk)))
            was = self._secure[blk.index]
            self._secure[blk.index] = secure
            self.ide_cap.set_state(blk, IdeStreamState.SECURE if secure else IdeStreamState.INSECURE)
            if secure != was:
                sid = self.ide_cap.stream_id(blk)
                self._emit("ide-state", f"stream {sid} {'Secure' if secure else 'Insecure'}")
                if was and not self._resetting:
                    self._config_changed(0, ConfigChange.IDE_STREAM_INSECURE)

    # --- IdePortCrypto (sim/rootport/link.py), structurally: the link seals/opens with our engine ---
    def ide_tx_stream(self, header: TlpHeader) -> int | None:
        return self.secure_stream()

    def ide_seal(self, stream_id: int, sub_stream: SubStream, aad: bytes,
                 plaintext: bytes) -> tuple[KeySet, bytes, bytes] | None:
        try:
            sealed = self.ide.seal(stream_id, sub_stream, aad, plaintext)
        except IdeEngineError:
            return None
        return sealed.key_set, sealed.ciphertext, sealed.mac

    def ide_open(self, stream_id: int, sub_stream: SubStream, key_set: KeySet, aad: bytes,
                 ciphertext: bytes, mac: bytes) -> bytes | None:
        try:
            return self.ide.open(stream_id, sub_stream, key_set, aad, ciphertext, mac)
        except IdeIntegrityError as exc:
            self._emit("ide-integrity", str(exc))
            self._update_ide_status()
            return None

    def ide_fail_message(self, stream_id: int) -> None:
        """The partner reported an integrity failure (IDE Fail Message): Status bit 31, stream Insecure."""
        self.ide.mark_failed(stream_id)
        for blk in self.ide_cap.selective_blocks():
            if self.ide_cap.stream_id(blk) == stream_id:
                self.ide_cap.set_state(blk, self.ide_cap.state(blk), integrity_fail=True)
        self._update_ide_status()

    def secure_stream(self) -> int | None:
        """The stream ID of the first Secure selective stream, which carries the device's TLPs."""
        for blk in self.ide_cap.selective_blocks():
            if self._secure[blk.index]:
                return self.ide_cap.stream_id(blk)
        return None

    # ------------------------------------------------------------------------------------------
    # TLPs
    # ------------------------------------------------------------------------------------------

    def _send(self, header: TlpHeader, data: bytes, sub_stream: SubStream, tee: bool) -> None:
        if self.link is None or not self.link_up or not self.powered:
            self._emit("tlp-dropped", f"no link: {header.summary()}")
            return
        stream = self.secure_stream()
        if tee and stream is None:
            # TDISP: a TDI's TEE traffic (T=1) travels only on a Secure IDE stream; after a key loss it
            # is not sent in the clear.
            self._emit("tee-refused", f"T=1 request without a Secure IDE stream: {header.summary()}")
            return
        if stream is None or self.link_applies_ide:
            self.link.send_tlp(Tlp(header, data).encode(), tee=tee)
            return
        try:
            sealed = self.ide.seal(stream, sub_stream, header.encode(), data)
        except IdeEngineError as exc:
            self._emit("tlp-dropped", f"IDE: {exc}")
            return
        prefix = IdePrefix(stream, sub_stream, sealed.key_set, tee=int(tee))
        self.link.send_tlp(IdeTlp(prefix, header, sealed.ciphertext, sealed.mac).encode())

    def receive_tlp(self, data: bytes) -> None:
        """A TLP arrives from the link. Malformed bytes and failed MACs are dropped (and reported)."""
        if not self.powered:
            return
        try:
            tlp = decode_tlp(data)
        except DecodeError as exc:
            self._emit("tlp-dropped", f"malformed TLP: {exc}", data)
            return
        tee = False
        if isinstance(tlp, IdeTlp):
            p = tlp.prefix
            opened = self.ide_open(p.stream_id, SubStream(p.sub_stream), KeySet(p.key_set), tlp.header_bytes(),
                                   tlp.ciphertext, tlp.mac or b"")
            if opened is None:
                return
            header, payload, tee = tlp.header, opened, bool(p.tee)
        else:
            header, payload = tlp.header, tlp.data
        if isinstance(header, CompletionHeader):
            self._complete_dma(header, payload)
        else:
            self._serve_mmio(header, payload, tee)

    def _claim(self, address: int, length: int) -> tuple[EndpointFunction, int, int] | None:
        for fn in self.functions.values():
            if fn.power_state is not PowerState.D0:
                continue  # a function in D3hot decodes no memory requests
            hit = fn.header.decode_memory(address, length)
            if hit is not None:
                return fn, hit[0], hit[1]
        return None

    def _serve_mmio(self, req: MemRequestHeader, payload: bytes, tee: bool) -> None:
        nbytes = 4 * req.length_dw
        claim = self._claim(req.address, nbytes)
        if req.is_write:
            if claim is not None:
                fn, bar, off = claim
                self._masked_write(fn, bar, off, payload, req.first_be, req.last_be, req.length_dw)
            return  # posted: no completion, an unclaimed write is dropped (UR is logged, not returned)
        if claim is None:
            cpl = CompletionHeader.without_data(self.requester_id(0), req.requester_id, req.tag, CplStatus.UR)
            self._send(cpl, b"", SubStream.CPL, tee)
            return
        fn, bar, off = claim
        data = fn.mmio.mmio_read(bar, off, nbytes)
        cpl = CompletionHeader.with_data(self.requester_id(fn.number), req.requester_id, req.tag, req.length_dw,
                                         lower_address=req.address & 0x7F)
        self._send(cpl, data, SubStream.CPL, tee)

    @staticmethod
    def _masked_write(fn: EndpointFunction, bar: int, off: int, payload: bytes, first_be: int, last_be: int,
                      length_dw: int) -> None:
        if first_be == 0xF and (length_dw == 1 or last_be == 0xF):
            fn.mmio.mmio_write(bar, off, payload)
            return
        current = bytearray(fn.mmio.mmio_read(bar, off, len(payload)))
        for i, b in enumerate(payload):
            dw, lane = divmod(i, 4)
            be = first_be if dw == 0 else (last_be if dw == length_dw - 1 else 0xF)
            if be >> lane & 1:
                current[i] = b
        fn.mmio.mmio_write(bar, off, bytes(current))

    # --- device-initiated DMA ---
    def _can_master(self, function: int) -> bool:
        fn = self.functions[function]
        return self.powered and bool(fn.header.command_bits & Command.BUS_MASTER) and fn.power_state is PowerState.D0

    def dma_write(self, function: int, address: int, data: bytes, *, tee: bool = False) -> bool:
        """Device writes host memory (posted MWr TLPs, split at Max_Payload_Size). False if BME is off."""
        if not self._can_master(function) or address % 4:
            return False
        data = data + bytes(-len(data) % 4)
        for off in range(0, len(data), MAX_PAYLOAD_BYTES):
            chunk = data[off:off + MAX_PAYLOAD_BYTES]
            hdr = MemRequestHeader.write(self.requester_id(function), self._next_tag(), address + off, len(chunk) // 4)
            self._send(hdr, chunk, SubStream.PR, tee)
        return True

    def dma_read(self, function: int, address: int, length: int, callback: DmaCallback, *, tee: bool = False) -> bool:
        """Device reads host memory (one MRd); ``callback(status, data)`` runs when the completion arrives."""
        if not self._can_master(function) or address % 4 or not 0 < length <= MAX_PAYLOAD_BYTES:
            return False
        tag = self._next_tag()
        self._dma_pending[tag] = callback
        hdr = MemRequestHeader.read(self.requester_id(function), tag, address, (length + 3) // 4)
        self._send(hdr, b"", SubStream.NPR, tee)
        return True

    def abandon_dma(self, callbacks: Collection[DmaCallback]) -> None:
        """Forget outstanding reads made with these callbacks and free their tags: the requester gave them
        up (Completion Timeout); a completion arriving later is then unexpected and dropped."""
        for tag in [t for t, cb in self._dma_pending.items() if cb in callbacks]:
            del self._dma_pending[tag]

    def _complete_dma(self, cpl: CompletionHeader, payload: bytes) -> None:
        callback = self._dma_pending.pop(cpl.tag, None)
        if callback is None:
            self._emit("tlp-dropped", f"unexpected completion: {cpl.summary()}")
            return
        callback(CplStatus(cpl.status), payload)

    def _next_tag(self) -> int:
        for _ in range(256):
            self._tag = (self._tag + 1) & 0xFF
            if self._tag not in self._dma_pending:
                return self._tag
        raise RuntimeError("all 256 tags have outstanding reads")

    # ------------------------------------------------------------------------------------------
    # engine glue
    # ------------------------------------------------------------------------------------------

    def _emit(self, kind: str, summary: str, data: bytes = b"") -> None:
        if self.observer is not None:
            self.observer(EndpointEvent(EndpointEventKind(kind), summary, data))

    def attach_world(self, world: World, path: str | None = None, *, register: bool = True,
                     response_delay_ns: Callable[[DoeRequest, DoeOutcome], int] | None = None) -> None:
        """Run this endpoint inside a World: DOE answers take modeled time, events go to the trace,
        the endpoint's faults are offered to the injector, and stored keys are reported for exposure.

        The DOE response delay defaults to one firmware dispatch plus one register access per DW
        moved through the mailbox, at the device microcontroller's costs (``sim.engine.timing``).
        """
        from sim.engine.faults import FaultKind
        from sim.engine.timing import ComponentClass, Op
        from sim.engine.trace import Channel, EventKind

        path = path or self.name
        if register:
            world.register(path, self, ComponentClass.DEVICE_MCU)

        def default_delay(request: DoeRequest, outcome: DoeOutcome) -> int:
            dws = len(request.raw) // 4 + len(outcome.response) // 4
            return world.cost(path, Op.FW_COMMAND_DISPATCH) + dws * world.cost(path, Op.CONFIG_DW_ACCESS)

        delay = response_delay_ns or default_delay

        def schedule(request: DoeRequest) -> None:
            outcome = self.mailbox.respond(request)
            world.call_later(delay(request, outcome), lambda: self.mailbox.complete(request.ticket, outcome))

        self.mailbox.scheduler = schedule
        channel_of = {EndpointEventKind.IDE_STATE: Channel.IDE, EndpointEventKind.IDE_INTEGRITY: Channel.IDE}

        def trace(event: EndpointEvent) -> None:
            world.trace.emit(path, path, channel_of.get(event.kind, Channel.LINK), event.data, event.summary,
                             kind=EventKind.TEE_REFUSED if event.kind is EndpointEventKind.TEE_REFUSED
                             else EventKind.DEVICE, fields={"event": event.kind.value})

        previous = self.observer

        def observe(event: EndpointEvent) -> None:
            trace(event)
            if previous is not None:
                previous(event)

        self.observer = observe
        self.ide.observe_stored = lambda value: world.exposure.observe_stored(path, value)

        def doe_event(event: DoeEvent) -> None:
            # request/response objects are traced by whoever drives the mailbox (DOE channel); here only
            # the register-level incidents that the metrics count (BUSY refusals, aborts, errors, discards)
            if event.kind in (DoeEventKind.REQUEST, DoeEventKind.RESPONSE):
                return
            world.trace.emit(path, path, Channel.CONFIG, b"",
                             f"DOE {event.kind.value}{': ' + event.detail if event.detail else ''}",
                             kind=EventKind.DOE_MAILBOX, fields={"event": event.kind.value})

        self.mailbox.observer = doe_event
        offers: dict[FaultKind, Callable[[FaultRequest], None]] = {
            FaultKind.D3COLD_ENTRY: lambda r: self.enter_d3cold(),
            FaultKind.D3COLD_EXIT: lambda r: self.exit_d3cold(),
            FaultKind.FLR: lambda r: self.function_level_reset(int(str(r.params.get("function", 0)))),
            FaultKind.DOE_ABORT: lambda r: self.mailbox.abort(),
            FaultKind.DROP_DOE: lambda r: self.mailbox.inject_drop(),
            FaultKind.CORRUPT_DOE: lambda r: self.mailbox.inject_corruption(r.rng.randint(0, 63)),
        }
        for kind, action in offers.items():
            world.faults.offer(path, kind, action)
