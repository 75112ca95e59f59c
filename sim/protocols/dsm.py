"""The device security manager (DSM): the firmware behind a TEE-I/O endpoint's DOE mailbox.

One :class:`DeviceSecurityManager` composes the device's SPDM responder, its IDE_KM responder and
its TDISP responder, and is what the endpoint hardware calls (it has the shape of
``sim.devices.security_manager.SecurityManager``):

* ``handle_doe(object_type, payload)`` — DOE type 1 (SPDM) goes to ``SpdmResponder.handle``,
  type 2 (secured SPDM) to ``handle_secured``; anything else gets no response;
* the PCI-SIG VENDOR_DEFINED handler routes Protocol ID 0 (IDE_KM) and 1 (TDISP) payloads
  (PROTOCOLS.md §6.1). Both belong inside a secured session: TDISP outside one is ignored (no
  response, §6.1); IDE_KM outside one is refused with SPDM ERROR SessionRequired (InvalidRequest
  before SPDM 1.2, which lacks that code). TDISP also needs SPDM 1.2+ and is ignored below it;
* SPDM events are wired to their consequences: when a session ends, the TDIs it locked go to
  ERROR and the IDE keys it programmed are stopped (TRUST_MODELS.md §3, TDISP §11.4.5);
* ``conventional_reset()`` (all TDIs to CONFIG_UNLOCKED, SPDM and IDE state forgotten, §11.4.8),
  ``function_level_reset(fn)`` (that function's TDIs to ERROR; function 0 also drops SPDM and
  IDE unless told otherwise, matching the endpoint's default Function0FlrPolicy) and
  ``config_changed(fn, what)`` (locked TDIs of the function to ERROR; for IDE register changes
  only the TDIs whose default stream's registers actually changed or left Secure).

With hardware attached (``attach``), IDE_KM uses the endpoint's IDE engine and register block,
the TDIs default to one per function, a TDI's MMIO ranges are read from its BARs at LOCK, and
LOCK checks the device configuration: a selective stream register block with the default
Stream ID must exist, only one may be marked Default, and the function's BARs must not overlap
(TDISP §11.3.8 list; refused with INVALID_DEVICE_CONFIGURATION).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol

from sim.crypto.identity import Identity
from sim.protocols.env import ProtocolEnv
from sim.protocols.ide_km import (
    IdeKeySlots,
    IdeKeyStatus,
    IdeKmEvent,
    IdeKmRejection,
    IdeKmResponder,
    IdePortInfo,
    IdePortProvider,
    InMemoryIdeKeySlots,
    StaticIdePorts,
)
from sim.protocols.spdm.profile import ResponderProfile, make_profile
from sim.protocols.spdm.responder import ResponderEvent, SessionEnded, SpdmResponder, VendorRequestError
from sim.protocols.tdisp import (
    DEFAULT_MAX_PORTION,
    PAGE_SHIFT,
    TdiDefinition,
    TdiEvent,
    TdispDeviceCaps,
    TdispResponder,
    TdiTransition,
)
from sim.wire.doe import DoeObjectType
from sim.wire.pcisig import PCISIG_VENDOR_ID, STANDARD_ID_PCISIG, ProtocolId
from sim.wire.spdm.common import ErrorCode
from sim.wire.tdisp import InterfaceId, LockInterfaceRequest, MmioRange, TdispErrorCode, TdiState

IDE_REGISTERS_CHANGED = "ide-registers"  # sim.devices.security_manager.ConfigChange.IDE_REGISTERS
TDISP_MIN_SPDM_VERSION = 0x12  # §6.1 [S, TDISP-CN]

DsmEvent = ResponderEvent | IdeKmEvent | TdiTransition


# --------------------------------------------------------------------------------------------
# The hardware view (``sim.devices.security_manager.DsmHardware`` has this shape)
# --------------------------------------------------------------------------------------------


class BarInfo(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def address(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def kind(self) -> object: ...  # BarKind: MEM32 / MEM64 / IO


class FunctionConfig(Protocol):
    @property
    def function(self) -> int: ...

    @property
    def requester_id(self) -> int: ...

    @property
    def bars(self) -> tuple[BarInfo, ...]: ...


class DsmHardwareView(Protocol):
    """What the endpoint hands its DSM at attach: IDE key slots, the QUERY_RESP provider, function configs."""

    @property
    def ide(self) -> IdeKeySlots: ...

    def ide_query(self, port_index: int) -> IdePortInfo | None: ...

    @property
    def ide_port_index(self) -> int: ...

    def functions(self) -> tuple[int, ...]: ...

    def tdi_config(self, function: int) -> FunctionConfig: ...


# --------------------------------------------------------------------------------------------
# Reading the IDE register block (PROTOCOLS.md §6.2 order, §7.1 bits)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SelectiveStreamRegs:
    """One selective IDE stream register block, as QUERY_RESP lists it."""

    index: int
    capability: int
    control: int
    status: int
    association: tuple[int, ...]  # RID Association 1, 2, then the address-association DWs

    @property
    def stream_id(self) -> int:
        return (self.control >> 24) & 0xFF

    @property
    def is_default(self) -> bool:
        return bool(self.control >> 22 & 1)

    @property
    def secure(self) -> bool:
        return self.status & 0xF == 2

    def configuration(self) -> tuple[int, ...]:
        """What must not change under a locked TDI: control (but Enable, which Status covers) and associations."""
        return (self.control & ~1, *self.association)


def selective_streams(register_dws: Sequence[int]) -> list[SelectiveStreamRegs]:
    """The selective stream blocks of a QUERY_RESP register block (empty when it is malformed)."""
    if len(register_dws) < 2:
        return []
    cap = register_dws[0]
    pos = 2
    if cap & 1:  # Link IDE: 1 + Link TC field blocks of (Control, Status)
        pos += 2 * (((cap >> 13) & 0x7) + 1)
    if not cap >> 1 & 1:
        return []
    out = []
    for i in range(((cap >> 16) & 0xFF) + 1):
        if pos + 5 > len(register_dws):
            return out
        n_assoc = register_dws[pos] & 0xF
        end = pos + 5 + 3 * n_assoc
        if end > len(register_dws):
            return out
        out.append(SelectiveStreamRegs(i, register_dws[pos], register_dws[pos + 1], register_dws[pos + 2],
                                       tuple(register_dws[pos + 3:end])))
        pos = end
    return out


# --------------------------------------------------------------------------------------------
# The DSM
# --------------------------------------------------------------------------------------------


class VendorRequestRefused(VendorRequestError):
    """Raised from the PCI-SIG vendor handler: the SPDM responder answers with ``error_code``."""


class _DsmTdispHooks:
    """TDISP LOCK checks and report contents, from IDE_KM bookkeeping and (when attached) the hardware."""

    def __init__(self, dsm: DeviceSecurityManager) -> None:
        self.dsm = dsm
        self.locked_streams: dict[tuple[int, int | None], SelectiveStreamRegs] = {}

    def ide_key_status(self, stream_id: int, session_id: int) -> IdeKeyStatus:
        return self.dsm.ide_km.key_status(stream_id, session_id, self.dsm.port_index)

    def lock_check(self, tdi: TdiDefinition, request: LockInterfaceRequest) -> TdispErrorCode | None:
        hw = self.dsm.hardware
        if hw is None:
            return None
        if tdi.requires_ide and self.dsm.check_stream_registers:
            port = hw.ide_query(self.dsm.port_index)
            blocks = selective_streams(port.register_dws) if port is not None else []
            matching = [b for b in blocks if b.stream_id == request.default_stream_id]
            if len(matching) != 1 or sum(b.is_default for b in blocks) > 1:
                return TdispErrorCode.INVALID_DEVICE_CONFIGURATION
            self.locked_streams[tdi.key] = matching[0]
        config = _function_config(hw, tdi.function)
        if config is None:
            return TdispErrorCode.INVALID_DEVICE_CONFIGURATION  # the TDI's function is not there
        bars = sorted((b.address, b.address + b.size) for b in _memory_bars(config))
        if any(a_end > b_start for (_, a_end), (b_start, _) in zip(bars, bars[1:], strict=False)):
            return TdispErrorCode.INVALID_DEVICE_CONFIGURATION
        return None

    def mmio_ranges(self, tdi: TdiDefinition) -> tuple[MmioRange, ...]:
        hw = self.dsm.hardware
        config = None if tdi.mmio_ranges or hw is None else _function_config(hw, tdi.function)
        if config is None:
            return tdi.mmio_ranges
        if tdi.bar_ranges:  # a configured layout: sub-ranges of the BARs as they are programmed now
            bars = {b.index: b for b in _memory_bars(config)}
            return tuple(MmioRange((bars[r.bar].address >> PAGE_SHIFT) + r.offset_pages, r.pages, r.attributes,
                                   r.bar if r.range_id is None else r.range_id)
                         for r in tdi.bar_ranges if r.bar in bars)
        return tuple(MmioRange(b.address >> PAGE_SHIFT, max(1, b.size >> PAGE_SHIFT), range_id=b.index)
                     for b in sorted(_memory_bars(config), key=lambda b: b.index))


def _function_config(hw: DsmHardwareView, function: int) -> FunctionConfig | None:
    if function not in hw.functions():
        return None
    return hw.tdi_config(function)


def _memory_bars(config: FunctionConfig) -> list[BarInfo]:
    return [b for b in config.bars if str(getattr(b.kind, "value", b.kind)).startswith("mem") and b.size]


class DeviceSecurityManager:
    """SPDM + IDE_KM + TDISP for one device, as its endpoint hardware sees it (module docstring)."""

    def __init__(self, responder: SpdmResponder, env: ProtocolEnv, *, tdis: Sequence[TdiDefinition] = (),
                 slots: IdeKeySlots | None = None, ports: IdePortProvider | None = None, port_index: int = 0,
                 caps: TdispDeviceCaps | None = None, max_portion: int = DEFAULT_MAX_PORTION,
                 function0_flr_clears_security: bool = True, check_stream_registers: bool = True) -> None:
        self.spdm = responder
        self.env = env
        self.port_index = port_index
        self.function0_flr_clears_security = function0_flr_clears_security
        self.check_stream_registers = check_stream_registers
        self.hardware: DsmHardwareView | None = None
        self.ide_km = IdeKmResponder(slots if slots is not None else InMemoryIdeKeySlots(),
                                     ports if ports is not None else StaticIdePorts(()), _child(env, "ide_km"))
        self.hooks = _DsmTdispHooks(self)
        self.tdisp = TdispResponder(tdis, _child(env, "tdisp"), self.hooks, caps=caps or TdispDeviceCaps(), max_portion=max_portion)
        self.events: list[DsmEvent] = []
        self._listeners: list[Callable[[DsmEvent], None]] = []
        responder.register_vendor_handler(STANDARD_ID_PCISIG, PCISIG_VENDOR_ID, self._on_pcisig)
        responder.add_listener(self._on_spdm_event)
        self.ide_km.add_listener(self._record)
        self.tdisp.add_listener(self._record)

    @classmethod
    def build(cls, profile: ResponderProfile | str, identity: Identity, env: ProtocolEnv,
              **kw: object) -> DeviceSecurityManager:
        """A DSM with a fresh SPDM responder for ``profile`` (or a named profile) and ``identity``."""
        prof = make_profile(profile) if isinstance(profile, str) else profile
        return cls(SpdmResponder(prof, identity, _child(env, "spdm")), env, **kw)  # type: ignore[arg-type]

    # --- observation ---

    def add_listener(self, callback: Callable[[DsmEvent], None]) -> None:
        """Every SPDM event, IDE_KM action and TDI state change, as it happens."""
        self._listeners.append(callback)

    def _record(self, event: DsmEvent) -> None:
        self.events.append(event)
        for cb in list(self._listeners):
            cb(event)

    def tdi_state(self, interface_id: InterfaceId) -> TdiState:
        return self.tdisp.state_of(interface_id)

    # --- what the endpoint hardware calls ---

    def attach(self, hardware: DsmHardwareView) -> None:
        """The endpoint's hardware view: IDE engine, QUERY_RESP provider, functions (one TDI each if none given)."""
        self.hardware = hardware
        self.port_index = hardware.ide_port_index
        self.ide_km.slots = hardware.ide
        self.ide_km.ports = hardware
        if not self.tdisp.tdis:
            for fn in hardware.functions():
                rid = hardware.tdi_config(fn).requester_id
                self.tdisp.define(TdiDefinition(InterfaceId.for_function(rid), function=fn))

    def handle_doe(self, data_object_type: int, payload: bytes, now: float | None = None) -> bytes | None:
        """One DOE request object's payload in (pad bytes allowed), the response payload out (None = none)."""
        if data_object_type == DoeObjectType.SPDM:
            return self.spdm.handle(payload, now)
        if data_object_type == DoeObjectType.SECURED_SPDM:
            return self.spdm.handle_secured(payload, now)
        return None

    def conventional_reset(self) -> None:
        """DPC, hot reset, D3cold: every TDI to CONFIG_UNLOCKED, then SPDM and IDE_KM state forgotten."""
        self.tdisp.conventional_reset()
        self.spdm.reset()
        self.ide_km.reset()
        self.hooks.locked_streams.clear()

    def function_level_reset(self, function: int) -> None:
        """FLR: the function's TDIs to ERROR; for function 0 (by default) SPDM and IDE state go too."""
        self.tdisp.function_level_reset(function)
        if function == 0 and self.function0_flr_clears_security:
            self.spdm.reset()
            self.ide_km.reset()

    def config_changed(self, function: int, what: str = "") -> None:
        """A tracked register changed under a function (``what`` is a ConfigChange value)."""
        if str(what) == IDE_REGISTERS_CHANGED and self.hardware is not None and self.check_stream_registers:
            self._check_streams()
        elif str(what) == IDE_REGISTERS_CHANGED:
            self.tdisp.config_changed(None)  # without the registers, any locked TDI may be affected
        else:
            self.tdisp.config_changed(function)

    def stream_insecure(self, stream_id: int) -> None:
        """The IDE stream left Secure (integrity failure, link down): its TDIs to ERROR."""
        self.tdisp.stream_insecure(stream_id)

    # --- internals ---

    def _check_streams(self) -> None:
        """Compare each locked TDI's default-stream registers with their state at LOCK (§11.2.6 table)."""
        assert self.hardware is not None
        port = self.hardware.ide_query(self.port_index)
        now = {b.index: b for b in selective_streams(port.register_dws)} if port is not None else {}
        for key, at_lock in list(self.hooks.locked_streams.items()):
            rt = self.tdisp.tdis.get(key)
            if rt is None or rt.state not in (TdiState.CONFIG_LOCKED, TdiState.RUN):
                del self.hooks.locked_streams[key]
                continue
            current = now.get(at_lock.index)
            if current is None or current.configuration() != at_lock.configuration():
                self.tdisp.apply_event(TdiEvent.CONFIG_CHANGED, [rt])
            elif at_lock.secure and not current.secure:
                self.tdisp.apply_event(TdiEvent.STREAM_INSECURE, [rt])

    def _on_pcisig(self, session_id: int | None, version: int, payload: bytes) -> bytes | None:
        if not payload:
            raise VendorRequestRefused(ErrorCode.INVALID_REQUEST, "empty PCI-SIG payload")
        protocol, body = payload[0], payload[1:]
        if protocol == ProtocolId.IDE_KM:
            result = self.ide_km.handle(session_id, body)
            if isinstance(result, IdeKmRejection):
                raise VendorRequestRefused(result.spdm_error(version), result.detail)
            return bytes([ProtocolId.IDE_KM]) + result
        if protocol == ProtocolId.TDISP:
            if session_id is None or version < TDISP_MIN_SPDM_VERSION:
                return None  # §6.1: ignored, no response
            response = self.tdisp.handle(session_id, body)
            return None if response is None else bytes([ProtocolId.TDISP]) + response
        raise VendorRequestRefused(ErrorCode.INVALID_REQUEST, f"unknown PCI-SIG protocol id 0x{protocol:02x}")

    def _on_spdm_event(self, event: ResponderEvent) -> None:
        self._record(event)
        if isinstance(event, SessionEnded):
            self.tdisp.session_ended(event.session_id)  # first, so the trace names the real cause
            self.ide_km.revoke_session(event.session_id)


def _child(env: ProtocolEnv, name: str) -> ProtocolEnv:
    """The same owner, sink and meter, with an independent random stream per sub-protocol."""
    return ProtocolEnv(env.rng.child(name), env.owner, env.sink, env.meter, env.observer)
