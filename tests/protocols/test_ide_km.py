"""IDE_KM responder and requester (sim/protocols/ide_km.py): statuses, session tracking, round trips, fuzz."""

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
    INITIAL_IFV,
    SUB_STREAMS,
    IdeKeyStatus,
    IdeKmRejection,
    IdeKmRejectReason,
    IdeKmRequester,
    IdeKmResponder,
    IdePort,
    InMemoryIdeKeySlots,
    PcisigFailure,
    PcisigFailureReason,
    StaticIdePorts,
    VendorReply,
    ide_register_block,
    normalize_vendor_reply,
)
from sim.protocols.spdm.outcome import Failure, FailureReason, Ok
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import (
    Direction,
    KeyProg,
    KeySet,
    KGoStopAck,
    KpAck,
    KpAckStatus,
    KSetGo,
    KSetStop,
    Query,
    QueryResp,
    SubStream,
    decode_ide_km,
    dw_reverse,
)
from sim.wire.pcisig import ProtocolId
from sim.wire.spdm.common import ErrorCode

SESSION = 0xFFFE_FFFF
OTHER_SESSION = 0xFFFD_FFFE
STREAM = 3
KEY = bytes(range(32))
IFV = INITIAL_IFV


def make_responder(*, stream_ids: tuple[int, ...] = (STREAM,), ports: int = 1,
                   max_streams: int = 1) -> tuple[IdeKmResponder, InMemoryIdeKeySlots]:
    slots = InMemoryIdeKeySlots(ports=ports, max_streams=max_streams)
    regs = ide_register_block(stream_ids)
    port_list = [IdePort(i, ports - 1, dev_func=(2 << 3) | i, bus=0x41, segment=1, register_dws=regs)
                 for i in range(ports)]
    return IdeKmResponder(slots, StaticIdePorts(port_list), ProtocolEnv.for_test("dev")), slots


def key_prog(sub: SubStream = SubStream.PR, direction: Direction = Direction.RX, key_set: KeySet = KeySet.K0,
             stream: int = STREAM, port: int = 0, key: bytes = KEY) -> bytes:
    return KeyProg(stream_id=stream, key_set=key_set, direction=direction, sub_stream=sub, key=key, ifv=IFV,
                   port_index=port).encode()


def ack(data: object) -> KpAck:
    assert isinstance(data, bytes), data
    msg = decode_ide_km(data)
    assert isinstance(msg, KpAck)
    return msg


def program_all(rsp: IdeKmResponder, session: int | None = SESSION, key_set: KeySet = KeySet.K0,
                stream: int = STREAM) -> None:
    for d in DIRECTIONS:
        for s in SUB_STREAMS:
            assert ack(rsp.handle(session, key_prog(s, d, key_set, stream))).status is KpAckStatus.SUCCESS


# ------------------------------------------------------------------ QUERY


def test_query_reports_port_location_and_register_block() -> None:
    rsp, _ = make_responder(ports=2)
    out = rsp.handle(SESSION, Query(1).encode())
    assert isinstance(out, bytes)
    msg = decode_ide_km(out)
    assert isinstance(msg, QueryResp)
    assert (msg.port_index, msg.max_port_index, msg.bus, msg.segment, msg.device, msg.function) == (1, 1, 0x41, 1, 2, 1)
    assert msg.registers == ide_register_block((STREAM,))
    assert (msg.ide_capability >> 6) & 1 == 1  # IDE_KM supported
    assert (msg.registers[3] >> 24) == STREAM  # first selective stream's Stream ID


def test_query_of_missing_port_is_rejected_at_spdm_level() -> None:
    rsp, _ = make_responder()
    out = rsp.handle(SESSION, Query(5).encode())
    assert isinstance(out, IdeKmRejection)
    assert out.reason is IdeKmRejectReason.UNSUPPORTED_PORT
    assert out.spdm_error(0x12) is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00", Query(0).encode() + b"\x00"])
def test_malformed_query_is_rejected(data: bytes) -> None:
    rsp, _ = make_responder()
    out = rsp.handle(SESSION, data)
    assert isinstance(out, IdeKmRejection) and out.reason is IdeKmRejectReason.MALFORMED


# ------------------------------------------------------------------ KEY_PROG statuses


def test_key_prog_success_stores_key_and_ifv_in_natural_order() -> None:
    rsp, slots = make_responder()
    reply = ack(rsp.handle(SESSION, key_prog(SubStream.NPR, Direction.TX, KeySet.K1)))
    assert reply.status is KpAckStatus.SUCCESS
    assert (reply.stream_id, reply.key_set, reply.direction, reply.sub_stream) == (STREAM, KeySet.K1, Direction.TX,
                                                                                  SubStream.NPR)
    assert slots.keys[(0, STREAM, KeySet.K1, Direction.TX, SubStream.NPR)] == (KEY, IFV)
    assert rsp.programmed_by[(0, STREAM, KeySet.K1, Direction.TX, SubStream.NPR)] == SESSION
    # the wire carries the key DW-reversed (§6.3); what was stored is the natural order
    assert key_prog()[7:39] == dw_reverse(KEY)


@pytest.mark.parametrize("cut", [7, 20, 46])
def test_key_prog_with_wrong_length_gets_incorrect_length(cut: int) -> None:
    rsp, slots = make_responder()
    reply = ack(rsp.handle(SESSION, key_prog()[:cut]))
    assert reply.status is KpAckStatus.INCORRECT_LENGTH and reply.stream_id == STREAM
    assert not slots.keys


def test_key_prog_too_long_gets_incorrect_length() -> None:
    rsp, _ = make_responder()
    assert ack(rsp.handle(SESSION, key_prog() + b"\x00")).status is KpAckStatus.INCORRECT_LENGTH


def test_key_prog_unsupported_port_index() -> None:
    rsp, slots = make_responder()
    reply = ack(rsp.handle(SESSION, key_prog(port=3)))
    assert reply.status is KpAckStatus.UNSUPPORTED_PORT_INDEX and reply.port_index == 3
    assert not slots.keys


def test_key_prog_unsupported_sub_stream_value_is_echoed() -> None:
    rsp, slots = make_responder()
    raw = bytearray(key_prog())
    raw[5] = 0x31  # sub-stream 3 (reserved), K1, Rx
    out = rsp.handle(SESSION, bytes(raw))
    assert isinstance(out, bytes) and len(out) == 7
    assert out[0] == 0x03 and out[4] == KpAckStatus.UNSUPPORTED_VALUE and out[5] == 0x31
    assert not slots.keys


def test_key_prog_second_stream_beyond_capacity_is_unsupported_value() -> None:
    rsp, _ = make_responder(stream_ids=(STREAM, 9), max_streams=1)
    assert ack(rsp.handle(SESSION, key_prog())).status is KpAckStatus.SUCCESS
    reply = ack(rsp.handle(SESSION, key_prog(stream=9)))
    assert reply.status is KpAckStatus.UNSUPPORTED_VALUE
    assert (0, 9, KeySet.K0, Direction.RX, SubStream.PR) not in rsp.programmed_by


def test_key_prog_stream_not_in_register_block_is_unsupported_value() -> None:
    slots = InMemoryIdeKeySlots(stream_ids=(STREAM,))
    rsp = IdeKmResponder(slots, StaticIdePorts([IdePort(0, 0, 0, 1, 0, ide_register_block((STREAM,)))]),
                         ProtocolEnv.for_test())
    assert ack(rsp.handle(SESSION, key_prog(stream=STREAM + 1))).status is KpAckStatus.UNSUPPORTED_VALUE


def test_reprogramming_disarms_until_next_go() -> None:
    rsp, slots = make_responder()
    rsp.handle(SESSION, key_prog(SubStream.PR, Direction.TX))
    rsp.handle(SESSION, KSetGo(stream_id=STREAM, key_set=KeySet.K0, direction=Direction.TX,
                                sub_stream=SubStream.PR).encode())
    assert (0, STREAM, KeySet.K0, Direction.TX, SubStream.PR) in slots.armed
    rsp.handle(SESSION, key_prog(SubStream.PR, Direction.TX, key=bytes(32)))
    assert (0, STREAM, KeySet.K0, Direction.TX, SubStream.PR) not in slots.armed


# ------------------------------------------------------------------ GO / STOP


def selector(cls: type[KSetGo] | type[KSetStop], sub: SubStream = SubStream.PR, direction: Direction = Direction.RX,
             key_set: KeySet = KeySet.K0, port: int = 0) -> bytes:
    return cls(stream_id=STREAM, key_set=key_set, direction=direction, sub_stream=sub, port_index=port).encode()


def test_go_and_stop_are_acknowledged_and_change_the_slots() -> None:
    rsp, slots = make_responder()
    program_all(rsp)
    for d in DIRECTIONS:
        for s in SUB_STREAMS:
            out = rsp.handle(SESSION, selector(KSetGo, s, d))
            assert isinstance(out, bytes)
            msg = decode_ide_km(out)
            assert isinstance(msg, KGoStopAck) and (msg.direction, msg.sub_stream) == (d, s)
    assert slots.ready(STREAM)
    out = rsp.handle(SESSION, selector(KSetStop, SubStream.CPL, Direction.TX))
    assert isinstance(decode_ide_km(out), KGoStopAck)  # type: ignore[arg-type]
    assert not slots.ready(STREAM)
    assert (0, STREAM, KeySet.K0, Direction.TX, SubStream.CPL) not in slots.keys
    assert rsp.key_status(STREAM, SESSION) is IdeKeyStatus.INCOMPLETE


def test_go_of_empty_key_set_is_refused() -> None:
    rsp, slots = make_responder()
    out = rsp.handle(SESSION, selector(KSetGo))
    assert isinstance(out, IdeKmRejection) and out.reason is IdeKmRejectReason.NOT_PROGRAMMED
    assert not slots.armed


def test_stop_of_empty_slot_is_still_acknowledged() -> None:
    rsp, _ = make_responder()
    assert isinstance(decode_ide_km(rsp.handle(SESSION, selector(KSetStop))), KGoStopAck)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [KSetGo, KSetStop])
def test_go_stop_unsupported_port_and_bad_length(cls: type[KSetGo] | type[KSetStop]) -> None:
    rsp, _ = make_responder()
    out = rsp.handle(SESSION, selector(cls, port=4))
    assert isinstance(out, IdeKmRejection) and out.reason is IdeKmRejectReason.UNSUPPORTED_PORT
    out = rsp.handle(SESSION, selector(cls)[:6])
    assert isinstance(out, IdeKmRejection) and out.reason is IdeKmRejectReason.MALFORMED
    raw = bytearray(selector(cls))
    raw[5] = 0xF0  # sub-stream 15
    out = rsp.handle(SESSION, bytes(raw))
    assert isinstance(out, IdeKmRejection) and out.reason is IdeKmRejectReason.MALFORMED


@pytest.mark.parametrize("object_id", [0x01, 0x03, 0x06, 0x07, 0xFF])
def test_response_objects_and_unknown_ids_are_unsupported(object_id: int) -> None:
    rsp, _ = make_responder()
    out = rsp.handle(SESSION, bytes([object_id]) + bytes(6))
    assert isinstance(out, IdeKmRejection) and out.reason is IdeKmRejectReason.UNSUPPORTED_OBJECT


# ------------------------------------------------------------------ sessions


def test_outside_a_session_every_request_is_refused() -> None:
    rsp, slots = make_responder()
    for data in (Query(0).encode(), key_prog(), selector(KSetGo)):
        out = rsp.handle(None, data)
        assert isinstance(out, IdeKmRejection) and out.reason is IdeKmRejectReason.NO_SESSION
        assert out.spdm_error(0x12) is ErrorCode.SESSION_REQUIRED
        assert out.spdm_error(0x11) is ErrorCode.UNEXPECTED_REQUEST
    assert not slots.keys


def test_key_status_tracks_the_programming_session() -> None:
    rsp, _ = make_responder()
    assert rsp.key_status(STREAM, SESSION) is IdeKeyStatus.INCOMPLETE
    program_all(rsp)
    assert rsp.key_status(STREAM, SESSION) is IdeKeyStatus.COMPLETE
    assert rsp.key_status(STREAM, OTHER_SESSION) is IdeKeyStatus.OTHER_SESSION
    # one sub-stream re-keyed through another session: no session has them all any more
    rsp.handle(OTHER_SESSION, key_prog(SubStream.CPL, Direction.RX))
    assert rsp.key_status(STREAM, SESSION) is IdeKeyStatus.OTHER_SESSION
    assert rsp.key_status(STREAM, OTHER_SESSION) is IdeKeyStatus.OTHER_SESSION
    assert rsp.streams_of_session(OTHER_SESSION) == {STREAM}


def test_key_status_missing_one_sub_stream_is_incomplete() -> None:
    rsp, _ = make_responder()
    for d in DIRECTIONS:
        for s in SUB_STREAMS:
            if (d, s) != (Direction.TX, SubStream.NPR):
                rsp.handle(SESSION, key_prog(s, d))
    assert rsp.key_status(STREAM, SESSION) is IdeKeyStatus.INCOMPLETE


def test_revoke_session_stops_its_keys_only() -> None:
    rsp, slots = make_responder(stream_ids=(STREAM, 9), max_streams=2)
    program_all(rsp, SESSION)
    program_all(rsp, OTHER_SESSION, stream=9)
    gone = rsp.revoke_session(SESSION)
    assert len(gone) == 6 and all(s[1] == STREAM for s in gone)
    assert not any(k[1] == STREAM for k in slots.keys)
    assert sum(1 for k in slots.keys if k[1] == 9) == 6
    assert [e.kind for e in rsp.events].count("revoked") == 6


def test_reset_forgets_and_erases_everything() -> None:
    rsp, slots = make_responder()
    program_all(rsp)
    rsp.reset()
    assert not slots.keys and not rsp.programmed_by
    assert rsp.key_status(STREAM, SESSION) is IdeKeyStatus.INCOMPLETE


# ------------------------------------------------------------------ fuzz


def test_kp_ack_echoing_a_reserved_sub_stream_decodes() -> None:
    """Found by the fuzz test below: a short KEY_PROG naming sub-stream 3 gets a KP_ACK that echoes it."""
    rsp, _ = make_responder()
    out = rsp.handle(0, b"\x02\x00\x00\x00\x00\x30\x00")
    assert isinstance(out, bytes)
    ack = decode_ide_km(out)
    assert isinstance(ack, KpAck) and ack.sub_stream == 3 and ack.status is not KpAckStatus.SUCCESS
    assert "reserved(3)" in ack.summary()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)))
def test_random_bytes_never_raise(data: bytes, session: int | None) -> None:
    rsp, _ = make_responder()
    out = rsp.handle(session, data)
    if isinstance(out, bytes):
        decode_ide_km(out)  # always a well-formed IDE_KM object (KP_ACK may echo a reserved sub-stream)
    else:
        assert isinstance(out, IdeKmRejection)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 46), st.integers(0, 0xFF), st.integers(0, 0xFF))
def test_mutated_key_prog_never_raises(pos: int, value: int, cut: int) -> None:
    rsp, _ = make_responder()
    raw = bytearray(key_prog())
    raw[pos] = value
    out = rsp.handle(SESSION, bytes(raw[:max(cut, 1)]))
    assert isinstance(out, bytes | IdeKmRejection)


# ------------------------------------------------------------------ requester round trips


def loopback(rsp: IdeKmResponder, session: int | None = SESSION) -> tuple[Callable[[bytes], Flow[VendorReply]],
                                                                          Callable[[Outbound], bytes | None]]:
    """A VendorTransport that hands payloads to ``rsp`` in memory (no SPDM layer)."""

    def send(payload: bytes) -> Flow[VendorReply]:
        answer = yield Outbound(DoeObjectType.SECURED_SPDM, payload)
        if answer is None:
            return PcisigFailure(PcisigFailureReason.NO_RESPONSE, "silence", "loopback")
        return answer

    def deliver(out: Outbound) -> bytes | None:
        assert out.payload[0] == ProtocolId.IDE_KM
        result = rsp.handle(session, out.payload[1:])
        if isinstance(result, IdeKmRejection):
            return None
        return bytes([ProtocolId.IDE_KM]) + result

    return send, deliver


def test_requester_setup_programs_all_six_and_arms_them() -> None:
    rsp, slots = make_responder()
    send, deliver = loopback(rsp)
    sink = SecretList()
    env = ProtocolEnv.for_test("host", 7)
    env.sink = sink
    req = IdeKmRequester(send, env)
    q = run_flow(req.query(0), deliver)
    assert isinstance(q, Ok) and isinstance(q.value, QueryResp)
    result = run_flow(req.setup(STREAM), deliver)
    assert isinstance(result, Ok)
    keys = result.value
    assert len(keys.keys) == 6 and len({k.key for k in keys.keys}) == 6
    for k in keys.keys:
        assert slots.keys[(0, STREAM, KeySet.K0, k.direction, k.sub_stream)] == (k.key, INITIAL_IFV)
        assert k.root_port_direction is not k.direction
    assert slots.ready(STREAM)
    assert rsp.key_status(STREAM, SESSION) is IdeKeyStatus.COMPLETE
    assert [r.value for r in sink.by_class(SecretClass.IDE_KEY)] == [k.key for k in keys.keys]
    assert keys.key_for(Direction.TX, SubStream.CPL).sub_stream is SubStream.CPL


def test_requester_refresh_switches_to_other_key_set_and_stop() -> None:
    rsp, slots = make_responder()
    send, deliver = loopback(rsp)
    req = IdeKmRequester(send, ProtocolEnv.for_test("host", 1))
    first = run_flow(req.setup(STREAM), deliver)
    second = run_flow(req.refresh(STREAM, KeySet.K0), deliver)
    assert isinstance(first, Ok) and isinstance(second, Ok)
    assert second.value.key_set is KeySet.K1
    assert not {k.key for k in first.value.keys} & {k.key for k in second.value.keys}
    # Tx now sends with K1; Rx accepts both until K0 is stopped
    assert (0, STREAM, KeySet.K1, Direction.TX, SubStream.PR) in slots.armed
    assert (0, STREAM, KeySet.K0, Direction.TX, SubStream.PR) not in slots.armed
    assert (0, STREAM, KeySet.K0, Direction.RX, SubStream.PR) in slots.armed
    stopped = run_flow(req.stop(STREAM, KeySet.K0), deliver)
    assert isinstance(stopped, Ok)
    assert not any(k[2] is KeySet.K0 for k in slots.keys)
    assert slots.ready(STREAM)


def test_requester_reports_kp_ack_failure() -> None:
    rsp, _ = make_responder(stream_ids=(STREAM,))
    send, deliver = loopback(rsp)
    req = IdeKmRequester(send, ProtocolEnv.for_test())
    run_flow(req.program(STREAM), deliver)
    result = run_flow(req.program(STREAM + 1), deliver)  # the one-stream device is full
    assert isinstance(result, PcisigFailure)
    assert result.reason is PcisigFailureReason.KP_ACK_STATUS and result.kp_ack_status is KpAckStatus.UNSUPPORTED_VALUE
    assert not result.ok
    assert "KEY_PROG" in result.exchange


def test_requester_failures_no_response_and_malformed() -> None:
    rsp, _ = make_responder()
    send, deliver = loopback(rsp, session=None)  # outside a session: the responder refuses → silence here
    req = IdeKmRequester(send, ProtocolEnv.for_test())
    result = run_flow(req.query(0), deliver)
    assert isinstance(result, PcisigFailure) and result.reason is PcisigFailureReason.NO_RESPONSE
    result = run_flow(req.query(0), lambda out: bytes([ProtocolId.IDE_KM, 0x01, 0x00]))
    assert isinstance(result, PcisigFailure) and result.reason is PcisigFailureReason.MALFORMED_RESPONSE
    result = run_flow(req.query(0), lambda out: bytes([ProtocolId.TDISP, 0x10]))
    assert isinstance(result, PcisigFailure) and result.reason is PcisigFailureReason.MALFORMED_RESPONSE


def test_requester_detects_echo_mismatch() -> None:
    rsp, _ = make_responder()
    send, _ = loopback(rsp)
    req = IdeKmRequester(send, ProtocolEnv.for_test())
    wrong = KpAck(stream_id=STREAM, status=KpAckStatus.SUCCESS, key_set=KeySet.K1, direction=Direction.RX,
                  sub_stream=SubStream.PR).encode()
    result = run_flow(req.program(STREAM), lambda out: bytes([ProtocolId.IDE_KM]) + wrong)
    assert isinstance(result, PcisigFailure) and result.reason is PcisigFailureReason.UNEXPECTED_RESPONSE


def test_normalize_vendor_reply_shapes() -> None:
    assert normalize_vendor_reply(Ok(b"\x00\x01"), "x") == b"\x00\x01"
    none = normalize_vendor_reply(Ok(None), "x")
    assert isinstance(none, PcisigFailure) and none.reason is PcisigFailureReason.NO_RESPONSE
    spdm = Failure(FailureReason.ERROR_RESPONSE, "ERROR", "VENDOR_DEFINED_REQUEST", ErrorCode.SESSION_REQUIRED)
    out = normalize_vendor_reply(spdm, "x")
    assert isinstance(out, PcisigFailure) and out.reason is PcisigFailureReason.SPDM_FAILURE and out.spdm is spdm


def test_requester_is_deterministic() -> None:
    def run() -> list[bytes]:
        rsp, _ = make_responder()
        send, deliver = loopback(rsp)
        wire: list[bytes] = []

        def record(out: Outbound) -> bytes | None:
            wire.append(out.payload)
            answer = deliver(out)
            wire.append(answer or b"")
            return answer

        run_flow(IdeKmRequester(send, ProtocolEnv.for_test("host", 42)).setup(STREAM), record)
        return wire

    assert run() == run()


def test_kp_ack_echoes_the_key_sub_stream_byte_exactly() -> None:
    """Known answer: a KEY_PROG whose KeySubStream has the reserved bits 3:2 set (0x0E: K0, Tx, bits 3:2 = 11,
    sub-stream PR) is acknowledged with that very byte, also when it is refused (0x3C: reserved sub-stream 3)."""
    rsp, slots = make_responder()
    request = bytes([0x02, 0x00, 0x00, STREAM, 0x00, 0x0E, 0x00]) + KEY + IFV
    out = rsp.handle(SESSION, request)
    assert out == bytes([0x03, 0x00, 0x00, STREAM, KpAckStatus.SUCCESS, 0x0E, 0x00])
    assert decode_ide_km(out).encode() == out   # the reserved bits survive a decode/encode round trip
    refused = rsp.handle(SESSION, bytes([0x02, 0x00, 0x00, STREAM, 0x00, 0x3C, 0x00]) + KEY + IFV)
    assert refused == bytes([0x03, 0x00, 0x00, STREAM, KpAckStatus.UNSUPPORTED_VALUE, 0x3C, 0x00])
