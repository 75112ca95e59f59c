"""TDISP responder and requester (sim/protocols/tdisp.py): the transition table, error codes, nonce and
session rules, reset rules, report portions, requester round trips and fuzz."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.crypto.secrets import SecretClass, SecretList
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Flow, Outbound, run_flow
from sim.protocols.ide_km import (
    DIRECTIONS,
    SUB_STREAMS,
    IdeKmRejection,
    IdeKmResponder,
    IdePort,
    InMemoryIdeKeySlots,
    PcisigFailure,
    PcisigFailureReason,
    StaticIdePorts,
    VendorReply,
    ide_register_block,
)
from sim.protocols.spdm.outcome import Ok
from sim.protocols.tdisp import (
    SUPPORTED_REQUESTS,
    TRANSITIONS,
    IdeKmTdispHooks,
    TdiDefinition,
    TdiEvent,
    TdispRequester,
    TdispResponder,
)
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import Direction, KeyProg, KeySet, SubStream
from sim.wire.pcisig import ProtocolId
from sim.wire.tdisp import (
    BindP2pStreamRequest,
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
    SetMmioAttributeRequest,
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
    UnbindP2pStreamRequest,
    VdmRegistryId,
    VdmRequest,
    decode_tdisp,
)

SESSION = 0xFFFE_FFFF
OTHER = 0xFFFD_FFFE
STREAM = 5
TDI0 = InterfaceId.for_function(0x4100)
TDI1 = InterfaceId.for_function(0x4101)
UNKNOWN = InterfaceId.for_function(0x4107)
RANGES = (
    MmioRange(0x80000, 16, MmioRangeAttributes(0), 0),
    MmioRange(0x80010, 1, MmioRangeAttributes.MSIX_TABLE, 2),
    MmioRange(0x80011, 1, MmioRangeAttributes.MSIX_PBA, 2),
)
FLAGS = LockInterfaceFlags.NO_FW_UPDATE


class Device:
    """A TDISP responder over a real IDE_KM responder, with helpers that drive TDIs into each state."""

    def __init__(self, *, max_portion: int = 0x40, sink: SecretList | None = None) -> None:
        self.slots = InMemoryIdeKeySlots()
        env = ProtocolEnv.for_test("dev", 3)
        env.sink = sink
        self.ide = IdeKmResponder(self.slots, StaticIdePorts([IdePort(0, 0, 0, 0x41, 0, ide_register_block((STREAM,)))]),
                                  env)
        tdis = [TdiDefinition(TDI0, 0, InterfaceInfo.DMA_WITHOUT_PASID, RANGES, b"tiosim-dev0",
                              msi_x_message_control=0x8003, tph_control=1),
                TdiDefinition(TDI1, 1, mmio_ranges=(MmioRange(0x90000, 4, range_id=0),))]
        self.tdisp = TdispResponder(tdis, env, IdeKmTdispHooks(self.ide), max_portion=max_portion)
        self.nonces: dict[int, bytes] = {}

    def send(self, msg: TdispMessage | bytes, session: int | None = SESSION) -> TdispMessage:
        out = self.tdisp.handle(session, msg if isinstance(msg, bytes) else msg.encode())
        assert out is not None
        return decode_tdisp(out)

    def program_keys(self, session: int = SESSION, stream: int = STREAM) -> None:
        for d in DIRECTIONS:
            for s in SUB_STREAMS:
                out = self.ide.handle(session, KeyProg(stream_id=stream, key_set=KeySet.K0, direction=d, sub_stream=s,
                                                       key=bytes(32), ifv=bytes(8)).encode())
                assert not isinstance(out, IdeKmRejection)

    def lock(self, iface: InterfaceId = TDI0, flags: LockInterfaceFlags = FLAGS, offset: int = 0,
             session: int = SESSION) -> TdispMessage:
        rsp = self.send(LockInterfaceRequest(flags, STREAM, offset, interface_id=iface), session)
        if isinstance(rsp, LockInterfaceResponse):
            self.nonces[iface.function_id] = rsp.start_interface_nonce
        return rsp

    def into(self, state: TdiState, iface: InterfaceId = TDI0) -> None:
        if state is TdiState.CONFIG_UNLOCKED:
            return
        self.program_keys()
        assert isinstance(self.lock(iface), LockInterfaceResponse)
        if state is TdiState.RUN:
            assert isinstance(self.send(StartInterfaceRequest(self.nonces[iface.function_id], interface_id=iface)),
                              StartInterfaceResponse)
        elif state is TdiState.ERROR:
            self.tdisp.function_level_reset(self.tdisp.tdi(iface).definition.function)  # type: ignore[union-attr]
        assert self.tdisp.state_of(iface) is state


def error_code(msg: TdispMessage) -> TdispErrorCode:
    assert isinstance(msg, TdispError), msg.summary()
    return msg.error_code


def request_for(code: TdispRequestCode, dev: Device, iface: InterfaceId = TDI0) -> TdispMessage:
    """A well-formed request of each kind (START uses the real nonce when there is one)."""
    nonce = dev.nonces.get(iface.function_id, bytes(32))
    return {
        TdispRequestCode.GET_TDISP_VERSION: GetTdispVersion(interface_id=iface),
        TdispRequestCode.GET_TDISP_CAPABILITIES: GetTdispCapabilities(interface_id=iface),
        TdispRequestCode.LOCK_INTERFACE_REQUEST: LockInterfaceRequest(FLAGS, STREAM, interface_id=iface),
        TdispRequestCode.GET_DEVICE_INTERFACE_REPORT: GetDeviceInterfaceReport(0, 0xFFFF, interface_id=iface),
        TdispRequestCode.GET_DEVICE_INTERFACE_STATE: GetDeviceInterfaceState(interface_id=iface),
        TdispRequestCode.START_INTERFACE_REQUEST: StartInterfaceRequest(nonce, interface_id=iface),
        TdispRequestCode.STOP_INTERFACE_REQUEST: StopInterfaceRequest(interface_id=iface),
        TdispRequestCode.BIND_P2P_STREAM_REQUEST: BindP2pStreamRequest(7, interface_id=iface),
        TdispRequestCode.UNBIND_P2P_STREAM_REQUEST: UnbindP2pStreamRequest(7, interface_id=iface),
        TdispRequestCode.SET_MMIO_ATTRIBUTE_REQUEST: SetMmioAttributeRequest(RANGES[0], interface_id=iface),
        TdispRequestCode.VDM_REQUEST: VdmRequest(VdmRegistryId.PCISIG, b"\x01\x00", b"hi", interface_id=iface),
    }[code]


EXPECTED_RESPONSE = {
    TdispRequestCode.GET_TDISP_VERSION: TdispVersion,
    TdispRequestCode.GET_TDISP_CAPABILITIES: TdispCapabilities,
    TdispRequestCode.LOCK_INTERFACE_REQUEST: LockInterfaceResponse,
    TdispRequestCode.GET_DEVICE_INTERFACE_REPORT: DeviceInterfaceReport,
    TdispRequestCode.GET_DEVICE_INTERFACE_STATE: DeviceInterfaceState,
    TdispRequestCode.START_INTERFACE_REQUEST: StartInterfaceResponse,
    TdispRequestCode.STOP_INTERFACE_REQUEST: StopInterfaceResponse,
}


# ------------------------------------------------------------------ the table, cell by cell


def test_table_is_complete_and_matches_the_spec_legal_states() -> None:
    triggers = list(TdispRequestCode) + list(TdiEvent)
    assert set(TRANSITIONS) == {(s, t) for s in TdiState for t in triggers}
    legal = {  # PCIe §11.3.1 Table 11-3, "legal TDISP states"
        TdispRequestCode.LOCK_INTERFACE_REQUEST: {TdiState.CONFIG_UNLOCKED},
        TdispRequestCode.GET_DEVICE_INTERFACE_REPORT: {TdiState.CONFIG_LOCKED, TdiState.RUN},
        TdispRequestCode.START_INTERFACE_REQUEST: {TdiState.CONFIG_LOCKED},
    }
    for code, states in legal.items():
        assert {s for s in TdiState if not isinstance(TRANSITIONS[(s, code)], TdispErrorCode)} == states
    assert set(SUPPORTED_REQUESTS) == set(EXPECTED_RESPONSE)


@pytest.mark.parametrize("state", list(TdiState))
@pytest.mark.parametrize("code", list(TdispRequestCode))
def test_every_request_in_every_state(state: TdiState, code: TdispRequestCode) -> None:
    dev = Device()
    dev.into(state)
    if code is TdispRequestCode.LOCK_INTERFACE_REQUEST and state is TdiState.CONFIG_UNLOCKED:
        dev.program_keys()
    expected = TRANSITIONS[(state, code)]
    rsp = dev.send(request_for(code, dev))
    assert rsp.interface_id == TDI0
    if isinstance(expected, TdispErrorCode):
        assert error_code(rsp) is expected
        if expected is TdispErrorCode.UNSUPPORTED_REQUEST:
            assert isinstance(rsp, TdispError) and rsp.error_data == code
        assert dev.tdisp.state_of(TDI0) is state
    else:
        assert isinstance(rsp, EXPECTED_RESPONSE[code]), rsp.summary()
        assert dev.tdisp.state_of(TDI0) is expected
    assert dev.tdisp.state_of(TDI1) is TdiState.CONFIG_UNLOCKED  # the other TDI is never touched


EVENT_CALLS: dict[TdiEvent, Callable[[TdispResponder], object]] = {
    TdiEvent.SESSION_ENDED: lambda r: r.session_ended(SESSION),
    TdiEvent.CONVENTIONAL_RESET: lambda r: r.conventional_reset(),
    TdiEvent.FUNCTION_LEVEL_RESET: lambda r: r.function_level_reset(0),
    TdiEvent.CONFIG_CHANGED: lambda r: r.config_changed(0),
    TdiEvent.STREAM_INSECURE: lambda r: r.stream_insecure(STREAM),
}


@pytest.mark.parametrize("state", list(TdiState))
@pytest.mark.parametrize("event", list(TdiEvent))
def test_every_event_in_every_state(state: TdiState, event: TdiEvent) -> None:
    dev = Device()
    dev.into(state)
    EVENT_CALLS[event](dev.tdisp)
    assert dev.tdisp.state_of(TDI0) is TRANSITIONS[(state, event)]
    rt = dev.tdisp.tdi(TDI0)
    assert rt is not None
    if rt.state in (TdiState.CONFIG_UNLOCKED, TdiState.ERROR):
        assert rt.nonce is None  # destroyed on leaving CONFIG_LOCKED (§11.3.9)


def test_events_only_touch_matching_tdis() -> None:
    dev = Device()
    dev.into(TdiState.RUN, TDI0)
    dev.tdisp.function_level_reset(1)
    dev.tdisp.config_changed(1)
    dev.tdisp.stream_insecure(STREAM + 1)
    dev.tdisp.session_ended(OTHER)
    assert dev.tdisp.state_of(TDI0) is TdiState.RUN
    assert dev.tdisp.config_changed(None) == [TDI0]
    assert dev.tdisp.state_of(TDI0) is TdiState.ERROR


# ------------------------------------------------------------------ generic error codes


def test_outside_a_session_nothing_is_answered() -> None:
    dev = Device()
    assert dev.tdisp.handle(None, GetTdispVersion(interface_id=TDI0).encode()) is None


def test_version_mismatch() -> None:
    dev = Device()
    dev.program_keys()
    assert error_code(dev.send(LockInterfaceRequest(FLAGS, STREAM, interface_id=TDI0, tdisp_version=0x11))) \
        is TdispErrorCode.VERSION_MISMATCH
    assert dev.tdisp.state_of(TDI0) is TdiState.CONFIG_UNLOCKED
    assert error_code(dev.send(GetTdispVersion(interface_id=TDI0, tdisp_version=0x20))) \
        is TdispErrorCode.VERSION_MISMATCH
    # GET_TDISP_VERSION of any 1.x must be answered with the supported list (§11.3.4)
    rsp = dev.send(GetTdispVersion(interface_id=TDI0, tdisp_version=0x11))
    assert isinstance(rsp, TdispVersion) and rsp.versions == (0x10,)


def test_unknown_interface() -> None:
    dev = Device()
    for code in SUPPORTED_REQUESTS:
        assert error_code(dev.send(request_for(code, dev, UNKNOWN))) is TdispErrorCode.INVALID_INTERFACE


@pytest.mark.parametrize("code", [0x01, 0x7F, 0x80, 0x8C, 0x90, 0xFF])
def test_unknown_and_response_codes_are_unsupported(code: int) -> None:
    dev = Device()
    raw = bytearray(GetTdispVersion(interface_id=TDI0).encode())
    raw[1] = code
    rsp = dev.send(bytes(raw))
    assert isinstance(rsp, TdispError) and rsp.error_code is TdispErrorCode.UNSUPPORTED_REQUEST
    assert rsp.error_data == code


@pytest.mark.parametrize("data", [
    b"",
    b"\x10",
    b"\x10\x81",
    GetTdispVersion(interface_id=TDI0).encode()[:15],
    LockInterfaceRequest(FLAGS, STREAM, interface_id=TDI0).encode()[:35],
    LockInterfaceRequest(FLAGS, STREAM, interface_id=TDI0).encode() + b"\x00",
    GetDeviceInterfaceReport(0, 10, interface_id=TDI0).encode()[:19],
    StartInterfaceRequest(bytes(32), interface_id=TDI0).encode()[:47],
])
def test_truncated_or_overlong_requests_get_invalid_request(data: bytes) -> None:
    dev = Device()
    assert error_code(dev.send(data)) is TdispErrorCode.INVALID_REQUEST
    assert dev.tdisp.state_of(TDI0) is TdiState.CONFIG_UNLOCKED


def test_capabilities_list_the_supported_requests() -> None:
    dev = Device()
    caps = dev.send(GetTdispCapabilities(interface_id=TDI0))
    assert isinstance(caps, TdispCapabilities)
    assert set(caps.supported_requests()) == set(SUPPORTED_REQUESTS)
    assert caps.req_msgs_supported == 0xFE << 0  # bits 1..7: codes 0x81..0x87
    assert caps.lock_interface_flags_supported & LockInterfaceFlags.LOCK_MSIX


# ------------------------------------------------------------------ LOCK


def test_lock_refused_without_keys() -> None:
    dev = Device()
    assert error_code(dev.lock()) is TdispErrorCode.INVALID_REQUEST
    assert dev.tdisp.state_of(TDI0) is TdiState.CONFIG_UNLOCKED


def test_lock_refused_with_keys_from_another_session() -> None:
    dev = Device()
    dev.program_keys(OTHER)
    assert error_code(dev.lock(session=SESSION)) is TdispErrorCode.INVALID_REQUEST
    assert isinstance(dev.lock(session=OTHER), LockInterfaceResponse)
    assert dev.tdisp.tdi(TDI0).session_id == OTHER  # type: ignore[union-attr]


def test_lock_refused_when_one_sub_stream_came_through_another_session() -> None:
    dev = Device()
    dev.program_keys(SESSION)
    dev.ide.handle(OTHER, KeyProg(stream_id=STREAM, key_set=KeySet.K1, direction=Direction.TX,
                                  sub_stream=SubStream.CPL, key=bytes(32), ifv=bytes(8)).encode())
    assert error_code(dev.lock()) is TdispErrorCode.INVALID_REQUEST


def test_lock_refused_for_other_default_stream() -> None:
    dev = Device()
    dev.program_keys()
    rsp = dev.send(LockInterfaceRequest(FLAGS, STREAM + 1, interface_id=TDI0))
    assert error_code(rsp) is TdispErrorCode.INVALID_REQUEST


def test_lock_refused_for_unsupported_flag() -> None:
    dev = Device()
    dev.program_keys()
    assert error_code(dev.lock(flags=LockInterfaceFlags.BIND_P2P)) is TdispErrorCode.INVALID_REQUEST


def test_lock_nonce_is_fresh_and_reported() -> None:
    sink = SecretList()
    dev = Device(sink=sink)
    dev.into(TdiState.CONFIG_LOCKED)
    first = dev.nonces[TDI0.function_id]
    dev.send(StopInterfaceRequest(interface_id=TDI0))
    assert isinstance(dev.lock(), LockInterfaceResponse)
    second = dev.nonces[TDI0.function_id]
    assert first != second and len(first) == 32
    assert [r.value for r in sink.by_class(SecretClass.TDISP_NONCE)] == [first, second]


def test_reporting_offset_overflow_is_refused() -> None:
    dev = Device()
    dev.program_keys()
    assert error_code(dev.lock(offset=-(0x80000 << 12) - 4096)) is TdispErrorCode.INVALID_REQUEST
    assert dev.tdisp.state_of(TDI0) is TdiState.CONFIG_UNLOCKED


# ------------------------------------------------------------------ START and the nonce


def test_start_with_wrong_nonce_is_refused_and_changes_nothing() -> None:
    dev = Device()
    dev.into(TdiState.CONFIG_LOCKED)
    assert error_code(dev.send(StartInterfaceRequest(bytes(32), interface_id=TDI0))) is TdispErrorCode.INVALID_NONCE
    assert dev.tdisp.state_of(TDI0) is TdiState.CONFIG_LOCKED
    nonce = dev.nonces[TDI0.function_id]
    assert isinstance(dev.send(StartInterfaceRequest(nonce, interface_id=TDI0)), StartInterfaceResponse)


def test_nonce_reuse_is_refused() -> None:
    dev = Device()
    dev.into(TdiState.RUN)
    old = dev.nonces[TDI0.function_id]
    assert dev.tdisp.tdi(TDI0).nonce is None  # type: ignore[union-attr]  # invalidated once used
    assert error_code(dev.send(StartInterfaceRequest(old, interface_id=TDI0))) is TdispErrorCode.INVALID_INTERFACE_STATE
    dev.send(StopInterfaceRequest(interface_id=TDI0))
    assert isinstance(dev.lock(), LockInterfaceResponse)
    assert error_code(dev.send(StartInterfaceRequest(old, interface_id=TDI0))) is TdispErrorCode.INVALID_NONCE
    assert dev.tdisp.state_of(TDI0) is TdiState.CONFIG_LOCKED


def test_start_and_report_only_from_the_locking_session() -> None:
    dev = Device()
    dev.into(TdiState.CONFIG_LOCKED)
    nonce = dev.nonces[TDI0.function_id]
    assert error_code(dev.send(StartInterfaceRequest(nonce, interface_id=TDI0), OTHER)) \
        is TdispErrorCode.INVALID_REQUEST
    assert error_code(dev.send(GetDeviceInterfaceReport(0, 0xFFFF, interface_id=TDI0), OTHER)) \
        is TdispErrorCode.INVALID_REQUEST
    assert isinstance(dev.send(StartInterfaceRequest(nonce, interface_id=TDI0)), StartInterfaceResponse)


# ------------------------------------------------------------------ session end, resets, STOP


def test_session_end_sends_bound_tdis_to_error_and_stop_recovers() -> None:
    dev = Device()
    dev.into(TdiState.RUN)
    assert dev.tdisp.session_ended(SESSION) == [TDI0]
    assert dev.tdisp.state_of(TDI0) is TdiState.ERROR
    assert error_code(dev.send(GetDeviceInterfaceReport(0, 0xFFFF, interface_id=TDI0))) \
        is TdispErrorCode.INVALID_INTERFACE_STATE
    state = dev.send(GetDeviceInterfaceState(interface_id=TDI0), OTHER)
    assert isinstance(state, DeviceInterfaceState) and state.tdi_state is TdiState.ERROR
    assert isinstance(dev.send(StopInterfaceRequest(interface_id=TDI0), OTHER), StopInterfaceResponse)
    rt = dev.tdisp.tdi(TDI0)
    assert rt is not None and rt.state is TdiState.CONFIG_UNLOCKED
    assert (rt.session_id, rt.lock, rt.nonce, rt.report) == (None, None, None, None)  # scrubbed


def test_conventional_reset_unlocks_every_tdi() -> None:
    dev = Device()
    dev.into(TdiState.RUN, TDI0)
    dev.lock(TDI1)
    assert dev.tdisp.state_of(TDI1) is TdiState.CONFIG_LOCKED
    assert sorted(i.function_id for i in dev.tdisp.conventional_reset()) == [TDI0.function_id, TDI1.function_id]
    assert dev.tdisp.state_of(TDI0) is dev.tdisp.state_of(TDI1) is TdiState.CONFIG_UNLOCKED


def test_transitions_are_reported_to_listeners() -> None:
    dev = Device()
    seen = []
    dev.tdisp.add_listener(seen.append)
    dev.into(TdiState.RUN)
    dev.tdisp.session_ended(SESSION)
    assert [(e.old, e.new) for e in seen] == [
        (TdiState.CONFIG_UNLOCKED, TdiState.CONFIG_LOCKED), (TdiState.CONFIG_LOCKED, TdiState.RUN),
        (TdiState.RUN, TdiState.ERROR)]
    assert seen[-1].trigger is TdiEvent.SESSION_ENDED and seen[0].trigger is TdispRequestCode.LOCK_INTERFACE_REQUEST


# ------------------------------------------------------------------ the report


def test_report_in_portions_with_offset_and_msix_rules() -> None:
    dev = Device(max_portion=0x20)
    dev.program_keys()
    offset = -(0x70000 << 12)
    assert isinstance(dev.lock(offset=offset), LockInterfaceResponse)
    raw = b""
    while True:
        part = dev.send(GetDeviceInterfaceReport(len(raw), 0xFFFF, interface_id=TDI0))
        assert isinstance(part, DeviceInterfaceReport) and len(part.report) <= 0x20
        raw += part.report
        if part.remainder_length == 0:
            break
    report = TdiReport.decode(raw)
    assert report.mmio_ranges == (MmioRange(0x10000, 16, MmioRangeAttributes(0), 0),)  # MSI-X not locked: hidden
    assert report.msi_x_message_control == 0 and report.tph_control == 0
    assert report.interface_info == InterfaceInfo.DMA_WITHOUT_PASID | InterfaceInfo.NO_FW_UPDATE
    assert report.device_specific_info == b"tiosim-dev0"


def test_report_with_lock_msix_lists_msix_ranges() -> None:
    dev = Device(max_portion=0x400)
    dev.program_keys()
    dev.lock(flags=LockInterfaceFlags.LOCK_MSIX)
    part = dev.send(GetDeviceInterfaceReport(0, 0xFFFF, interface_id=TDI0))
    assert isinstance(part, DeviceInterfaceReport) and part.remainder_length == 0
    report = TdiReport.decode(part.report)
    assert report.mmio_ranges == RANGES and report.msi_x_message_control == 0x8003
    assert not report.interface_info & InterfaceInfo.NO_FW_UPDATE


def test_report_offset_and_length_checks() -> None:
    dev = Device()
    dev.into(TdiState.CONFIG_LOCKED)
    total = len(dev.tdisp.tdi(TDI0).report)  # type: ignore[arg-type, union-attr]
    assert error_code(dev.send(GetDeviceInterfaceReport(0, 0, interface_id=TDI0))) is TdispErrorCode.INVALID_REQUEST
    assert error_code(dev.send(GetDeviceInterfaceReport(total, 4, interface_id=TDI0))) \
        is TdispErrorCode.INVALID_REQUEST
    last = dev.send(GetDeviceInterfaceReport(total - 3, 100, interface_id=TDI0))
    assert isinstance(last, DeviceInterfaceReport) and len(last.report) == 3 and last.remainder_length == 0
    mid = dev.send(GetDeviceInterfaceReport(1, 5, interface_id=TDI0))
    assert isinstance(mid, DeviceInterfaceReport) and len(mid.report) == 5 and mid.remainder_length == total - 6


# ------------------------------------------------------------------ fuzz


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_never_raise(data: bytes) -> None:
    dev = Device()
    out = dev.tdisp.handle(SESSION, data)
    assert out is not None
    msg = decode_tdisp(out)
    assert not msg.is_request


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(TdispRequestCode)), st.integers(0, 60), st.integers(0, 0xFF), st.integers(1, 64))
def test_mutated_requests_never_raise(code: TdispRequestCode, pos: int, value: int, cut: int) -> None:
    dev = Device()
    dev.into(TdiState.CONFIG_LOCKED)
    raw = bytearray(request_for(code, dev).encode())
    raw[pos % len(raw)] = value
    out = dev.tdisp.handle(SESSION, bytes(raw[:cut]))
    assert out is not None and not decode_tdisp(out).is_request


# ------------------------------------------------------------------ requester round trips


def loopback(dev: Device, session: int = SESSION) -> tuple[Callable[[bytes], Flow[VendorReply]],
                                                            Callable[[Outbound], bytes | None]]:
    def send(payload: bytes) -> Flow[VendorReply]:
        answer = yield Outbound(DoeObjectType.SECURED_SPDM, payload)
        if answer is None:
            return PcisigFailure(PcisigFailureReason.NO_RESPONSE, "silence", "loopback")
        return answer

    def deliver(out: Outbound) -> bytes | None:
        assert out.payload[0] == ProtocolId.TDISP
        rsp = dev.tdisp.handle(session, out.payload[1:])
        return None if rsp is None else bytes([ProtocolId.TDISP]) + rsp

    return send, deliver


def test_requester_full_lifecycle() -> None:
    dev = Device(max_portion=0x10)
    dev.program_keys()
    send, deliver = loopback(dev)
    req = TdispRequester(send)
    assert run_flow(req.version(TDI0), deliver) == Ok((0x10,))
    caps = run_flow(req.capabilities(TDI0), deliver)
    assert isinstance(caps, Ok) and caps.value.supports(TdispRequestCode.START_INTERFACE_REQUEST)
    nonce = run_flow(req.lock(TDI0, LockInterfaceFlags.LOCK_MSIX, STREAM, mmio_reporting_offset=1 << 40), deliver)
    assert isinstance(nonce, Ok) and len(nonce.value) == 32
    report = run_flow(req.get_report(TDI0), deliver)
    assert isinstance(report, Ok)
    assert report.value.portions > 3  # 0x10-byte portions
    assert report.value.raw == dev.tdisp.tdi(TDI0).report  # type: ignore[union-attr]
    assert report.value.report.mmio_ranges[0].first_page == 0x80000 + (1 << 28)
    assert run_flow(req.state(TDI0), deliver) == Ok(TdiState.CONFIG_LOCKED)
    assert run_flow(req.start(TDI0, nonce.value), deliver) == Ok(None)
    assert run_flow(req.state(TDI0), deliver) == Ok(TdiState.RUN)
    again = run_flow(req.start(TDI0, nonce.value), deliver)
    assert isinstance(again, PcisigFailure) and again.tdisp_error is TdispErrorCode.INVALID_INTERFACE_STATE
    assert run_flow(req.stop(TDI0), deliver) == Ok(None)
    assert run_flow(req.state(TDI0), deliver) == Ok(TdiState.CONFIG_UNLOCKED)


def test_requester_lock_failure_carries_tdisp_error() -> None:
    dev = Device()
    send, deliver = loopback(dev)
    result = run_flow(TdispRequester(send).lock(TDI0, FLAGS, STREAM), deliver)
    assert isinstance(result, PcisigFailure)
    assert result.reason is PcisigFailureReason.TDISP_ERROR and result.tdisp_error is TdispErrorCode.INVALID_REQUEST
    assert "LOCK_INTERFACE_REQUEST" in result.exchange


def test_requester_rejects_inconsistent_report_portions() -> None:
    dev = Device()
    send, _ = loopback(dev)
    answers = iter([DeviceInterfaceReport(b"\x00" * 8, 30, interface_id=TDI0),
                    DeviceInterfaceReport(b"\x00" * 8, 30, interface_id=TDI0)])  # remainder did not shrink

    def fake(out: Outbound) -> bytes:
        return bytes([ProtocolId.TDISP]) + next(answers).encode()

    result = run_flow(TdispRequester(send).get_report(TDI0), fake)
    assert isinstance(result, PcisigFailure) and result.reason is PcisigFailureReason.BAD_REPORT


def test_requester_rejects_response_for_another_interface() -> None:
    dev = Device()
    send, _ = loopback(dev)

    def fake(out: Outbound) -> bytes:
        return bytes([ProtocolId.TDISP]) + DeviceInterfaceState(TdiState.RUN, interface_id=TDI1).encode()

    result = run_flow(TdispRequester(send).state(TDI0), fake)
    assert isinstance(result, PcisigFailure) and result.reason is PcisigFailureReason.UNEXPECTED_RESPONSE
