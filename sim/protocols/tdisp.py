"""TDISP 1.0 (PROTOCOLS.md §6.4, TRUST_MODELS.md §3): the device's TDI state machines and the TSM's requester.

Every TDI of a device is in one of CONFIG_UNLOCKED, CONFIG_LOCKED, RUN or ERROR. What a request
or an event does to it is written down once, in :data:`TRANSITIONS` (state x trigger -> the
state it ends in, or the TdispErrorCode it is refused with). The rows follow the TDISP request
table (PCIe §11.3.1, "legal TDISP states") and the rules of §11.2/§11.4:

* only LOCK leaves CONFIG_UNLOCKED; it draws a fresh START_INTERFACE_NONCE from ``env.rng``
  (reported as :attr:`SecretClass.TDISP_NONCE`) and binds the TDI to the SPDM session it came on.
  It is refused with INVALID_REQUEST unless all six sub-stream keys of the default stream were
  programmed, all through that same session (Table 11-12);
* START with that nonce moves CONFIG_LOCKED to RUN and destroys the nonce; a wrong nonce is
  INVALID_NONCE and changes nothing (spdm-emu behaves the same);
* STOP is legal in every state and returns to CONFIG_UNLOCKED, scrubbing the lock parameters,
  nonce and report (so a STOP in CONFIG_UNLOCKED succeeds and changes nothing; spdm-emu refuses
  it, the spec's table lists all four states);
* the end of the bound SPDM session, an FLR, a configuration change or the bound stream going
  Insecure send CONFIG_LOCKED / RUN to ERROR; a conventional reset sends every TDI to
  CONFIG_UNLOCKED (§11.4.8).

Optional requests (BIND/UNBIND_P2P_STREAM, SET_MMIO_ATTRIBUTE, VDM) are not implemented and answer
UNSUPPORTED_REQUEST with the request code as ERROR_DATA, as §11.3.1 requires.

The report of a locked TDI is built at LOCK time (with the MMIO_REPORTING_OFFSET applied and the
MSI-X ranges only when LOCK_MSIX was asked for) and handed out in portions of at most
``max_portion`` bytes (default 0x40, libtdisp's LIBTDISP_INTERFACE_REPORT_PORTION_LEN).
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Protocol

from sim.crypto.secrets import SecretClass
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Flow, Outbound
from sim.protocols.ide_km import (
    IdeKeyStatus,
    IdeKmResponder,
    PcisigFailure,
    PcisigFailureReason,
    PcisigOutcome,
    SpdmVendorRequester,
    VendorTransport,
    spdm_vendor_transport,
)
from sim.protocols.spdm.outcome import Ok
from sim.wire.codec import DecodeError
from sim.wire.pcisig import ProtocolId
from sim.wire.tdisp import (
    HEADER_BYTES,
    NONCE_BYTES,
    TDISP_MESSAGES,
    TDISP_VERSION_1_0,
    DeviceInterfaceReport,
    DeviceInterfaceState,
    GetDeviceInterfaceReport,
    GetDeviceInterfaceState,
    GetTdispCapabilities,
    GetTdispVersion,
    InterfaceId,
    InterfaceInfo,
    LockInterfaceFlags,
    LockInterfaceRequest,
    LockInterfaceResponse,
    MmioRange,
    MmioRangeAttributes,
    StartInterfaceRequest,
    StartInterfaceResponse,
    StopInterfaceRequest,
    StopInterfaceResponse,
    TdiReport,
    TdispCapabilities,
    TdispError,
    TdispErrorCode,
    TdispMessage,
    TdispRequestCode,
    TdispVersion,
    TdiState,
    decode_tdisp,
    request_bitmap,
)

PAGE_SHIFT = 12
DEFAULT_MAX_PORTION = 0x40  # libtdisp LIBTDISP_INTERFACE_REPORT_PORTION_LEN
WHOLE_REPORT = 0xFFFF  # OFFSET 0 with LENGTH 0xFFFF asks for everything (§6.4)


class TdiEvent(enum.Enum):
    """Triggers that are not requests: what the device hardware and the SPDM layer report."""

    SESSION_ENDED = "session-ended"  # the SPDM session the TDI is bound to ended (§11.4.5)
    CONVENTIONAL_RESET = "conventional-reset"  # DPC, hot reset, D3cold (§11.4.8)
    FUNCTION_LEVEL_RESET = "function-level-reset"  # FLR of the function hosting the TDI (§11.4.9)
    CONFIG_CHANGED = "config-changed"  # a locked register of the TDI's function changed (§11.2.6)
    STREAM_INSECURE = "stream-insecure"  # the bound IDE stream left the Secure state


Trigger = TdispRequestCode | TdiEvent
Entry = TdiState | TdispErrorCode

_U, _L, _R, _E = TdiState.CONFIG_UNLOCKED, TdiState.CONFIG_LOCKED, TdiState.RUN, TdiState.ERROR
_BAD = TdispErrorCode.INVALID_INTERFACE_STATE
_UNSUP = TdispErrorCode.UNSUPPORTED_REQUEST

# Columns: CONFIG_UNLOCKED, CONFIG_LOCKED, RUN, ERROR.
_ROWS: dict[Trigger, tuple[Entry, Entry, Entry, Entry]] = {
    TdispRequestCode.GET_TDISP_VERSION: (_U, _L, _R, _E),
    TdispRequestCode.GET_TDISP_CAPABILITIES: (_U, _L, _R, _E),
    TdispRequestCode.LOCK_INTERFACE_REQUEST: (_L, _BAD, _BAD, _BAD),
    TdispRequestCode.GET_DEVICE_INTERFACE_REPORT: (_BAD, _L, _R, _BAD),
    TdispRequestCode.GET_DEVICE_INTERFACE_STATE: (_U, _L, _R, _E),
    TdispRequestCode.START_INTERFACE_REQUEST: (_BAD, _R, _BAD, _BAD),
    TdispRequestCode.STOP_INTERFACE_REQUEST: (_U, _U, _U, _U),
    TdispRequestCode.BIND_P2P_STREAM_REQUEST: (_UNSUP, _UNSUP, _UNSUP, _UNSUP),
    TdispRequestCode.UNBIND_P2P_STREAM_REQUEST: (_UNSUP, _UNSUP, _UNSUP, _UNSUP),
    TdispRequestCode.SET_MMIO_ATTRIBUTE_REQUEST: (_UNSUP, _UNSUP, _UNSUP, _UNSUP),
    TdispRequestCode.VDM_REQUEST: (_UNSUP, _UNSUP, _UNSUP, _UNSUP),
    TdiEvent.SESSION_ENDED: (_U, _E, _E, _E),
    TdiEvent.CONVENTIONAL_RESET: (_U, _U, _U, _U),
    TdiEvent.FUNCTION_LEVEL_RESET: (_U, _E, _E, _E),
    TdiEvent.CONFIG_CHANGED: (_U, _E, _E, _E),
    TdiEvent.STREAM_INSECURE: (_U, _E, _E, _E),
}

#: The one transition table: (state, trigger) -> the resulting state, or the error that refuses it.
TRANSITIONS: dict[tuple[TdiState, Trigger], Entry] = {
    (state, trigger): row[state] for trigger, row in _ROWS.items() for state in TdiState
}

SUPPORTED_REQUESTS: tuple[TdispRequestCode, ...] = tuple(
    c for c in TdispRequestCode if any(TRANSITIONS[(s, c)] is not _UNSUP for s in TdiState))

def transition(state: TdiState, trigger: Trigger) -> Entry:
    return TRANSITIONS[(state, trigger)]


# --------------------------------------------------------------------------------------------
# Device side
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BarRange:
    """A report range given relative to a BAR: its address is the BAR's base at LOCK plus the offset."""

    bar: int
    offset_pages: int
    pages: int
    attributes: MmioRangeAttributes = MmioRangeAttributes(0)
    range_id: int | None = None  # None: the BAR index


@dataclasses.dataclass(frozen=True)
class TdiDefinition:
    """One TDI the device hosts: its interface ID, the function it lives on, and its report contents.

    ``mmio_ranges`` hold device-side 4 KiB page numbers (before the reporting offset), BAR ranges in
    ascending BAR order with RANGE_ID = BAR index. Ranges marked MSIX_TABLE / MSIX_PBA are reported
    only when the lock asks for LOCK_MSIX, as are the MSI-X message control and TPH control values.
    """

    interface_id: InterfaceId
    function: int = 0
    interface_info: InterfaceInfo = InterfaceInfo.DMA_WITHOUT_PASID
    mmio_ranges: tuple[MmioRange, ...] = ()
    device_specific_info: bytes = b""
    msi_x_message_control: int = 0
    lnr_control: int = 0
    tph_control: int = 0
    requires_ide: bool = True
    bar_ranges: tuple[BarRange, ...] = ()  # when given (and no mmio_ranges): the report's ranges, from the BARs

    @property
    def key(self) -> tuple[int, int | None]:
        return _interface_key(self.interface_id)


def _interface_key(interface_id: InterfaceId) -> tuple[int, int | None]:
    """What identifies a TDI: requester ID, and segment when valid (reserved bits ignored)."""
    return interface_id.requester_id, interface_id.segment


@dataclasses.dataclass(frozen=True)
class TdispDeviceCaps:
    """What TDISP_CAPABILITIES reports (besides the request bitmap, which follows from the table)."""

    lock_flags_supported: LockInterfaceFlags = (LockInterfaceFlags.NO_FW_UPDATE
                                                | LockInterfaceFlags.SYSTEM_CACHE_LINE_SIZE_128
                                                | LockInterfaceFlags.LOCK_MSIX)
    dev_addr_width: int = 52
    num_req_this: int = 1
    num_req_all: int = 1
    versions: tuple[int, ...] = (TDISP_VERSION_1_0,)


class TdispHooks(Protocol):
    """What the TDISP responder asks the rest of the DSM at LOCK time."""

    def ide_key_status(self, stream_id: int, session_id: int) -> IdeKeyStatus:
        """Whether the default stream's six keys are all programmed, all through ``session_id``."""
        ...

    def lock_check(self, tdi: TdiDefinition, request: LockInterfaceRequest) -> TdispErrorCode | None:
        """Device-specific configuration checks (§11.3.8 list); an error code refuses the LOCK."""
        ...

    def mmio_ranges(self, tdi: TdiDefinition) -> tuple[MmioRange, ...]:
        """The TDI's MMIO ranges as configured now (device-side page numbers)."""
        ...


class IdeKmTdispHooks:
    """:class:`TdispHooks` backed by an :class:`IdeKmResponder`; static ranges, no extra config checks."""

    def __init__(self, ide_km: IdeKmResponder, port_index: int = 0) -> None:
        self.ide_km = ide_km
        self.port_index = port_index

    def ide_key_status(self, stream_id: int, session_id: int) -> IdeKeyStatus:
        return self.ide_km.key_status(stream_id, session_id, self.port_index)

    def lock_check(self, tdi: TdiDefinition, request: LockInterfaceRequest) -> TdispErrorCode | None:
        return None

    def mmio_ranges(self, tdi: TdiDefinition) -> tuple[MmioRange, ...]:
        return tdi.mmio_ranges


@dataclasses.dataclass
class TdiRuntime:
    """The mutable state of one TDI."""

    definition: TdiDefinition
    state: TdiState = TdiState.CONFIG_UNLOCKED
    session_id: int | None = None  # the SPDM session that locked it
    lock: LockInterfaceRequest | None = None
    nonce: bytes | None = None
    report: bytes | None = None

    @property
    def stream_id(self) -> int | None:
        return None if self.lock is None else self.lock.default_stream_id

    def scrub(self) -> None:
        self.session_id = None
        self.lock = None
        self.nonce = None
        self.report = None


@dataclasses.dataclass(frozen=True)
class TdiTransition:
    """A TDI changed state: for the trace and for whoever must react (e.g. the guest's view)."""

    interface_id: InterfaceId
    old: TdiState
    new: TdiState
    trigger: Trigger
    session_id: int | None


class _Refused(Exception):
    """Internal: a request refused with a TDISP error code (never leaves :meth:`TdispResponder.handle`)."""

    def __init__(self, code: TdispErrorCode, data: int = 0) -> None:
        super().__init__(code.name)
        self.code = code
        self.data = data


class TdispResponder:
    """The device's TDISP responder (sans-IO): TDISP message bytes in, TDISP message bytes out.

    ``handle(session_id, message)`` takes the message after the Protocol ID byte and returns the
    response message, or None when the request must be ignored (outside a secured session, §6.1).
    """

    def __init__(self, tdis: Sequence[TdiDefinition], env: ProtocolEnv, hooks: TdispHooks, *,
                 caps: TdispDeviceCaps = TdispDeviceCaps(), max_portion: int = DEFAULT_MAX_PORTION) -> None:
        if not 1 <= max_portion <= 0xFFFF:
            raise ValueError("max_portion must be 1..0xFFFF")
        self.env = env
        self.hooks = hooks
        self.caps = caps
        self.max_portion = max_portion
        self.tdis: dict[tuple[int, int | None], TdiRuntime] = {}
        for d in tdis:
            self.define(d)
        self.events: list[TdiTransition] = []
        self._listeners: list[Callable[[TdiTransition], None]] = []

    def define(self, tdi: TdiDefinition) -> TdiRuntime:
        """Host one more TDI (in CONFIG_UNLOCKED)."""
        if tdi.key in self.tdis:
            raise ValueError(f"TDI {tdi.interface_id} defined twice")
        rt = self.tdis[tdi.key] = TdiRuntime(tdi)
        return rt

    # --- observation ---

    def add_listener(self, callback: Callable[[TdiTransition], None]) -> None:
        self._listeners.append(callback)

    def tdi(self, interface_id: InterfaceId) -> TdiRuntime | None:
        return self.tdis.get(_interface_key(interface_id))

    def state_of(self, interface_id: InterfaceId) -> TdiState:
        rt = self.tdi(interface_id)
        if rt is None:
            raise KeyError(str(interface_id))
        return rt.state

    def _move(self, rt: TdiRuntime, trigger: Trigger, session_id: int | None) -> None:
        entry = transition(rt.state, trigger)
        if isinstance(entry, TdispErrorCode):  # events never fail; requests were checked before
            return
        old = rt.state
        rt.state = entry
        if entry is TdiState.CONFIG_UNLOCKED:
            rt.scrub()
        elif entry is TdiState.ERROR:
            rt.nonce = None  # §11.3.9: destroyed when leaving CONFIG_LOCKED for ERROR
        if entry is not old:
            event = TdiTransition(rt.definition.interface_id, old, entry, trigger, session_id)
            self.events.append(event)
            for cb in list(self._listeners):
                cb(event)

    # --- events ---

    def apply_event(self, event: TdiEvent, tdis: Iterable[TdiRuntime]) -> list[InterfaceId]:
        """Apply a non-request trigger to the given TDIs; returns those whose state changed."""
        moved = []
        for rt in list(tdis):
            before = rt.state
            self._move(rt, event, rt.session_id)
            if rt.state is not before:
                moved.append(rt.definition.interface_id)
        return moved

    def session_ended(self, session_id: int) -> list[InterfaceId]:
        """The SPDM session ended: the TDIs it locked go to ERROR (§11.4.5)."""
        return self.apply_event(TdiEvent.SESSION_ENDED, (rt for rt in self.tdis.values() if rt.session_id == session_id))

    def conventional_reset(self) -> list[InterfaceId]:
        """DPC / hot reset / D3cold: every TDI to CONFIG_UNLOCKED (§11.4.8)."""
        return self.apply_event(TdiEvent.CONVENTIONAL_RESET, self.tdis.values())

    def function_level_reset(self, function: int) -> list[InterfaceId]:
        """FLR: the function's locked / running TDIs to ERROR (§11.4.9)."""
        return self.apply_event(TdiEvent.FUNCTION_LEVEL_RESET,
                           (rt for rt in self.tdis.values() if rt.definition.function == function))

    def config_changed(self, function: int | None = None) -> list[InterfaceId]:
        """A tracked register changed: that function's (or, with None, every) locked / running TDI to ERROR."""
        return self.apply_event(TdiEvent.CONFIG_CHANGED, (rt for rt in self.tdis.values()
                                                     if function is None or rt.definition.function == function))

    def stream_insecure(self, stream_id: int) -> list[InterfaceId]:
        """The IDE stream left Secure: the TDIs bound to it to ERROR."""
        return self.apply_event(TdiEvent.STREAM_INSECURE, (rt for rt in self.tdis.values() if rt.stream_id == stream_id))

    # --- requests ---

    def handle(self, session_id: int | None, message: bytes) -> bytes | None:
        """Answer one TDISP request (the bytes after the Protocol ID); None = ignore (no session)."""
        if session_id is None:
            return None
        message = bytes(message)
        try:
            return self._handle(session_id, message).encode()
        except _Refused as refused:
            return TdispError(refused.code, refused.data, interface_id=_peek_interface(message)).encode()

    def _handle(self, session_id: int, message: bytes) -> TdispMessage:
        if len(message) < 2:
            raise _Refused(TdispErrorCode.INVALID_REQUEST)
        version, code = message[0], message[1]
        if code not in TdispRequestCode._value2member_map_:
            raise _Refused(TdispErrorCode.UNSUPPORTED_REQUEST, code)
        request = TdispRequestCode(code)
        if request is TdispRequestCode.GET_TDISP_VERSION:
            if version >> 4 != TDISP_VERSION_1_0 >> 4:  # GET_VERSION: any 1.x must be answered (§11.3.4)
                raise _Refused(TdispErrorCode.VERSION_MISMATCH)
        elif version != TDISP_VERSION_1_0:
            raise _Refused(TdispErrorCode.VERSION_MISMATCH)
        if request not in SUPPORTED_REQUESTS:
            raise _Refused(TdispErrorCode.UNSUPPORTED_REQUEST, code)
        try:
            msg = TDISP_MESSAGES[code].decode(message)
        except DecodeError:
            raise _Refused(TdispErrorCode.INVALID_REQUEST) from None
        rt = self.tdi(msg.interface_id)
        if rt is None:
            raise _Refused(TdispErrorCode.INVALID_INTERFACE)
        target = transition(rt.state, request)
        if isinstance(target, TdispErrorCode):
            raise _Refused(target, code if target is _UNSUP else 0)
        iid = msg.interface_id
        response: TdispMessage
        if isinstance(msg, GetTdispVersion):
            response = TdispVersion(self.caps.versions, interface_id=iid)
        elif isinstance(msg, GetTdispCapabilities):
            response = TdispCapabilities(request_bitmap(SUPPORTED_REQUESTS), self.caps.lock_flags_supported,
                                         self.caps.dev_addr_width, self.caps.num_req_this, self.caps.num_req_all,
                                         interface_id=iid)
        elif isinstance(msg, LockInterfaceRequest):
            response = LockInterfaceResponse(self._lock(rt, msg, session_id), interface_id=iid)
        elif isinstance(msg, GetDeviceInterfaceReport):
            portion, remainder = self._portion(rt, msg, session_id)
            response = DeviceInterfaceReport(portion, remainder, interface_id=iid)
        elif isinstance(msg, GetDeviceInterfaceState):
            response = DeviceInterfaceState(rt.state, interface_id=iid)
        elif isinstance(msg, StartInterfaceRequest):
            self._start(rt, msg, session_id)
            response = StartInterfaceResponse(interface_id=iid)
        elif isinstance(msg, StopInterfaceRequest):
            response = StopInterfaceResponse(interface_id=iid)
        else:  # every supported request is listed above
            raise _Refused(TdispErrorCode.UNSPECIFIED)
        self._move(rt, request, session_id)  # STOP scrubs even when already CONFIG_UNLOCKED
        return response

    def _lock(self, rt: TdiRuntime, req: LockInterfaceRequest, session_id: int) -> bytes:
        if req.flags & ~self.caps.lock_flags_supported:
            raise _Refused(TdispErrorCode.INVALID_REQUEST)
        tdi = rt.definition
        if tdi.requires_ide and self.hooks.ide_key_status(req.default_stream_id, session_id) is not IdeKeyStatus.COMPLETE:
            raise _Refused(TdispErrorCode.INVALID_REQUEST)
        error = self.hooks.lock_check(tdi, req)
        if error is not None:
            raise _Refused(error)
        report = self._build_report(tdi, req)
        nonce = self.env.rng.bytes(NONCE_BYTES)
        self.env.report(f"tdisp start nonce {tdi.interface_id}", SecretClass.TDISP_NONCE, nonce)
        rt.lock, rt.nonce, rt.report, rt.session_id = req, nonce, report, session_id
        return nonce

    def _build_report(self, tdi: TdiDefinition, req: LockInterfaceRequest) -> bytes:
        msix = bool(req.flags & LockInterfaceFlags.LOCK_MSIX)
        hidden = MmioRangeAttributes.MSIX_TABLE | MmioRangeAttributes.MSIX_PBA
        ranges = []
        for r in self.hooks.mmio_ranges(tdi):
            if not msix and r.attributes & hidden:
                continue
            address = (r.first_page << PAGE_SHIFT) + req.mmio_reporting_offset
            if not 0 <= address < (1 << 64) or address + (r.number_of_pages << PAGE_SHIFT) > (1 << 64):
                raise _Refused(TdispErrorCode.INVALID_REQUEST)  # the TSM must not make the offset overflow
            ranges.append(dataclasses.replace(r, first_page=address >> PAGE_SHIFT))
        info = tdi.interface_info & ~InterfaceInfo.NO_FW_UPDATE
        if req.flags & LockInterfaceFlags.NO_FW_UPDATE:
            info |= InterfaceInfo.NO_FW_UPDATE
        report = TdiReport(InterfaceInfo(info), tuple(ranges), tdi.device_specific_info,
                           msi_x_message_control=tdi.msi_x_message_control if msix else 0,
                           lnr_control=tdi.lnr_control, tph_control=tdi.tph_control if msix else 0)
        data = report.encode()
        if len(data) > 0xFFFF:
            raise _Refused(TdispErrorCode.INVALID_DEVICE_CONFIGURATION)  # OFFSET is 16 bits
        return data

    def _portion(self, rt: TdiRuntime, req: GetDeviceInterfaceReport, session_id: int) -> tuple[bytes, int]:
        if rt.session_id != session_id or rt.report is None:
            raise _Refused(TdispErrorCode.INVALID_REQUEST)  # the report belongs to the locking session
        if req.length == 0 or req.offset >= len(rt.report):
            raise _Refused(TdispErrorCode.INVALID_REQUEST)
        length = min(req.length, self.max_portion, len(rt.report) - req.offset)
        portion = rt.report[req.offset:req.offset + length]
        return portion, len(rt.report) - req.offset - length

    def _start(self, rt: TdiRuntime, req: StartInterfaceRequest, session_id: int) -> None:
        if rt.session_id != session_id:
            raise _Refused(TdispErrorCode.INVALID_REQUEST)
        if rt.nonce is None or not hmac.compare_digest(rt.nonce, req.start_interface_nonce):
            raise _Refused(TdispErrorCode.INVALID_NONCE)
        rt.nonce = None  # §11.3.14: invalidated before moving to RUN


def _peek_interface(message: bytes) -> InterfaceId:
    """The request's INTERFACE_ID for echoing in an error, or interface 0 when the header is cut short."""
    if len(message) >= HEADER_BYTES:
        return InterfaceId(int.from_bytes(message[4:8], "little"))
    return InterfaceId(0)


# --------------------------------------------------------------------------------------------
# Requester (the TSM side: firmware, host kernel or guest, depending on the trust model)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InterfaceReport:
    """A reassembled DEVICE_INTERFACE_REPORT: the exact bytes (what a TVM hashes) and their decoding."""

    raw: bytes
    report: TdiReport
    portions: int


class TdispRequester:
    """TDISP requester flows over a :data:`VendorTransport`; each returns ``Ok(result)`` or a PcisigFailure."""

    def __init__(self, transport: VendorTransport, *, portion_length: int = WHOLE_REPORT,
                 max_portions: int = 1024) -> None:
        self.transport = transport
        self.portion_length = portion_length
        self.max_portions = max_portions

    @classmethod
    def over_session(cls, requester: SpdmVendorRequester, session: object, **kw: int) -> TdispRequester:
        """TDISP through an SPDM requester's secured session."""
        return cls(spdm_vendor_transport(requester, session), **kw)

    def _exchange(self, request: TdispMessage, expect: type[TdispMessage]
                  ) -> Generator[Outbound, bytes | None, PcisigOutcome[TdispMessage]]:
        # The request's summary names the exchange in a failure; it is only written when there is one.
        reply = yield from self.transport(bytes([ProtocolId.TDISP]) + request.encode())
        if isinstance(reply, PcisigFailure):
            return dataclasses.replace(reply, exchange=request.summary())
        if not reply or reply[0] != ProtocolId.TDISP:
            return PcisigFailure(PcisigFailureReason.MALFORMED_RESPONSE, "not a TDISP payload", request.summary())
        try:
            rsp = decode_tdisp(reply[1:])
        except DecodeError as exc:
            return PcisigFailure(PcisigFailureReason.MALFORMED_RESPONSE, str(exc), request.summary())
        if isinstance(rsp, TdispError):
            return PcisigFailure(PcisigFailureReason.TDISP_ERROR, rsp.summary(), request.summary(),
                                 tdisp_error=rsp.error_code)
        if not isinstance(rsp, expect) or rsp.interface_id != request.interface_id \
                or rsp.tdisp_version != TDISP_VERSION_1_0:
            return PcisigFailure(PcisigFailureReason.UNEXPECTED_RESPONSE, rsp.summary(), request.summary())
        return Ok(rsp)

    def version(self, interface_id: InterfaceId) -> Flow[PcisigOutcome[tuple[int, ...]]]:
        """GET_TDISP_VERSION; fails unless the device lists 1.0, the version this requester speaks."""
        rsp = yield from self._exchange(GetTdispVersion(interface_id=interface_id), TdispVersion)
        if isinstance(rsp, PcisigFailure):
            return rsp
        assert isinstance(rsp.value, TdispVersion)
        if TDISP_VERSION_1_0 not in rsp.value.versions:
            return PcisigFailure(PcisigFailureReason.UNEXPECTED_RESPONSE, rsp.value.summary(), "GET_TDISP_VERSION")
        return Ok(rsp.value.versions)

    def capabilities(self, interface_id: InterfaceId) -> Flow[PcisigOutcome[TdispCapabilities]]:
        rsp = yield from self._exchange(GetTdispCapabilities(interface_id=interface_id), TdispCapabilities)
        if isinstance(rsp, PcisigFailure):
            return rsp
        assert isinstance(rsp.value, TdispCapabilities)
        return Ok(rsp.value)

    def lock(self, interface_id: InterfaceId, flags: LockInterfaceFlags, stream_id: int, *,
             mmio_reporting_offset: int = 0, bind_p2p_address_mask: int = 0) -> Flow[PcisigOutcome[bytes]]:
        """LOCK_INTERFACE_REQUEST; returns the START_INTERFACE_NONCE."""
        req = LockInterfaceRequest(flags, stream_id, mmio_reporting_offset, bind_p2p_address_mask,
                                   interface_id=interface_id)
        rsp = yield from self._exchange(req, LockInterfaceResponse)
        if isinstance(rsp, PcisigFailure):
            return rsp
        assert isinstance(rsp.value, LockInterfaceResponse)
        return Ok(rsp.value.start_interface_nonce)

    def get_report(self, interface_id: InterfaceId) -> Flow[PcisigOutcome[InterfaceReport]]:
        """GET_DEVICE_INTERFACE_REPORT portion by portion until REMAINDER_LENGTH is 0; decode the whole."""
        raw = bytearray()
        total: int | None = None
        exchange = f"GET_DEVICE_INTERFACE_REPORT if={interface_id}"
        for count in range(1, self.max_portions + 1):
            length = self.portion_length if total is None else min(self.portion_length, total - len(raw))
            req = GetDeviceInterfaceReport(len(raw), length, interface_id=interface_id)
            rsp = yield from self._exchange(req, DeviceInterfaceReport)
            if isinstance(rsp, PcisigFailure):
                return rsp
            part = rsp.value
            assert isinstance(part, DeviceInterfaceReport)
            if not part.report or len(part.report) > length:
                return PcisigFailure(PcisigFailureReason.BAD_REPORT,
                                     f"portion of {len(part.report)} bytes for LENGTH {length}", exchange)
            raw += part.report
            if total is not None and len(raw) + part.remainder_length != total:
                return PcisigFailure(PcisigFailureReason.BAD_REPORT, "REMAINDER_LENGTH is inconsistent", exchange)
            total = len(raw) + part.remainder_length
            if part.remainder_length == 0:
                try:
                    report = TdiReport.decode(bytes(raw))
                except DecodeError as exc:
                    return PcisigFailure(PcisigFailureReason.BAD_REPORT, str(exc), exchange)
                return Ok(InterfaceReport(bytes(raw), report, count))
        return PcisigFailure(PcisigFailureReason.BAD_REPORT, f"more than {self.max_portions} portions", exchange)

    def state(self, interface_id: InterfaceId) -> Flow[PcisigOutcome[TdiState]]:
        rsp = yield from self._exchange(GetDeviceInterfaceState(interface_id=interface_id), DeviceInterfaceState)
        if isinstance(rsp, PcisigFailure):
            return rsp
        assert isinstance(rsp.value, DeviceInterfaceState)
        return Ok(rsp.value.tdi_state)

    def start(self, interface_id: InterfaceId, nonce: bytes) -> Flow[PcisigOutcome[None]]:
        """START_INTERFACE_REQUEST echoing the LOCK nonce."""
        rsp = yield from self._exchange(StartInterfaceRequest(nonce, interface_id=interface_id),
                                        StartInterfaceResponse)
        return rsp if isinstance(rsp, PcisigFailure) else Ok(None)

    def stop(self, interface_id: InterfaceId) -> Flow[PcisigOutcome[None]]:
        rsp = yield from self._exchange(StopInterfaceRequest(interface_id=interface_id), StopInterfaceResponse)
        return rsp if isinstance(rsp, PcisigFailure) else Ok(None)
