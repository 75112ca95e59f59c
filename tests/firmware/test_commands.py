"""Firmware command frames: every command round-trips, the header layout is as documented, and
malformed bytes raise only DecodeError naming the field and offset."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.firmware.commands import (
    DOE_COMMANDS,
    REQUEST_BODIES,
    AllocateStream,
    AllocateStreamRsp,
    BindFlag,
    DevConnect,
    DevConnectRsp,
    DevCreate,
    DevCreateRsp,
    DevDisconnect,
    DevReclaim,
    DisconnectFlag,
    DoeResult,
    Empty,
    ErrorDetail,
    FwCommandId,
    FwDirection,
    FwFrame,
    FwRequestKind,
    FwStatus,
    GuestChannelMessage,
    GuestRequest,
    GuestRequestType,
    GuestStateRsp,
    ProgramKey,
    ReleaseStream,
    RollKey,
    RollKeyRsp,
    SetGo,
    SetStop,
    SpdmContinue,
    SpdmRequest,
    TdiBind,
    TdiBindRsp,
    TdiInfo,
    TdiReport,
    TdiReportRsp,
    TdiStatus,
    TdiStatusRsp,
    TdiUnbind,
    TioFeature,
    TioStatusRsp,
    continuation,
    decode_frame,
    error,
    request,
    response,
    summarize,
)
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.tdisp import TdiState

KEY = bytes(range(0x20, 0x40))
IFV = (1).to_bytes(8, "big")
D48 = bytes(range(48))

REQUESTS: dict[FwCommandId, FwFrame] = {
    FwCommandId.TIO_STATUS: request(Empty(), command=FwCommandId.TIO_STATUS),
    FwCommandId.DEV_CREATE: request(DevCreate(rid=0x0100, root_port=0, segment=0)),
    FwCommandId.DEV_CONNECT: request(DevConnect(dev_handle=7, tc_mask=1, cert_slot=0, ide_stream_ids=bytes(8))),
    FwCommandId.DEV_DISCONNECT: request(DevDisconnect(7, DisconnectFlag.FORCE)),
    FwCommandId.DEV_RECLAIM: request(DevReclaim(7)),
    FwCommandId.ROLL_KEY: request(RollKey(7)),
    FwCommandId.TDI_BIND: request(TdiBind(7, function=0, guest_id=1, vbdf=0x0800, flags=BindFlag.RUN_FORCE)),
    FwCommandId.TDI_UNBIND: request(TdiUnbind(7, 0)),
    FwCommandId.TDI_REPORT: request(TdiReport(7, 1)),
    FwCommandId.TDI_STATUS: request(TdiStatus(7, 2)),
    FwCommandId.GUEST_REQUEST: request(GuestRequest(1, 7, 0, GuestRequestType.STATE_CHANGE, b"\x02")),
    FwCommandId.ALLOCATE_STREAM: request(AllocateStream(root_port=3, rid=0x0400)),
    FwCommandId.PROGRAM_KEY: request(ProgramKey(0, 1, KeySet.K1, Direction.TX, SubStream.CPL, KEY, IFV)),
    FwCommandId.SET_GO: request(SetGo(0, 1, KeySet.K0, Direction.RX, SubStream.NPR)),
    FwCommandId.SET_STOP: request(SetStop(0, 1, KeySet.K0, Direction.TX, SubStream.PR)),
    FwCommandId.RELEASE_STREAM: request(ReleaseStream(0, 1)),
    FwCommandId.GUEST_CHANNEL: request(GuestChannelMessage(2, 0, 5, b"sealed bytes", bytes(range(16)))),
}

RESPONSES: list[FwFrame] = [
    response(FwCommandId.TIO_STATUS, body=TioStatusRsp(TioFeature.FAT_TSM | TioFeature.GUEST_CHANNEL, 4, 2, 99)),
    response(FwCommandId.DEV_CREATE, body=DevCreateRsp(7)),
    response(FwCommandId.DEV_CONNECT, body=DevConnectRsp(7, 0, 1, 0xFFFDFFFE)),
    response(FwCommandId.DEV_DISCONNECT),
    response(FwCommandId.DEV_RECLAIM),
    response(FwCommandId.TDI_BIND, body=TdiBindRsp(TdiState.CONFIG_LOCKED)),
    response(FwCommandId.TDI_UNBIND),
    response(FwCommandId.TDI_REPORT, body=TdiReportRsp(b"report bytes")),
    response(FwCommandId.TDI_STATUS, body=TdiStatusRsp(TdiState.RUN, 1)),
    response(FwCommandId.GUEST_REQUEST, body=GuestStateRsp(TdiState.RUN)),
    response(FwCommandId.GUEST_REQUEST, body=TdiInfo(TdiState.CONFIG_LOCKED, D48, D48[::-1], bytes(48),
                                                       b"certs", b"meas", b"report")),
    response(FwCommandId.ALLOCATE_STREAM, body=AllocateStreamRsp(3, 0, 1)),
    response(FwCommandId.PROGRAM_KEY),
    response(FwCommandId.SET_GO),
    response(FwCommandId.SET_STOP),
    response(FwCommandId.RELEASE_STREAM),
    response(FwCommandId.GUEST_CHANNEL, body=GuestChannelMessage(2, 1, 5, b"", bytes(16))),
    response(FwCommandId.DEV_CONNECT, FwStatus.SPDM_REQUEST, SpdmRequest(7, DoeObjectType.SPDM, b"\x12\x84\x00\x00")),
    response(FwCommandId.TDI_BIND, FwStatus.SPDM_REQUEST, SpdmRequest(7, DoeObjectType.SECURED_SPDM, bytes(40))),
    error(FwCommandId.SET_GO, FwStatus.NOT_PERMITTED, "not yours"),
    response(FwCommandId.ROLL_KEY, body=RollKeyRsp(7, 1, KeySet.K1)),
    response(FwCommandId.DEV_CONNECT, FwStatus.ATTESTATION_FAILED),
]

CONTINUES = [
    continuation(FwCommandId.DEV_CONNECT, SpdmContinue(DoeResult.RESPONSE, b"\x12\x04\x00\x00\x00\x01")),
    continuation(FwCommandId.GUEST_REQUEST, SpdmContinue(DoeResult.NO_RESPONSE)),
]

ALL = [*REQUESTS.values(), *RESPONSES, *CONTINUES]


def test_every_command_has_a_request_case() -> None:
    assert set(REQUESTS) == set(FwCommandId) == set(REQUEST_BODIES)


@pytest.mark.parametrize("frame", ALL, ids=lambda f: f.summary())
def test_round_trip(frame: FwFrame) -> None:
    data = frame.encode()
    back = decode_frame(data)
    assert back == frame
    assert back.encode() == data
    assert summarize(data) == frame.summary()


def test_header_layout_known_bytes() -> None:
    data = REQUESTS[FwCommandId.PROGRAM_KEY].encode()
    # command 0x0021 LE, kind NEW, body length 44 = 2 + 1 + 1 + 32 + 8
    assert data[:8] == bytes.fromhex("2100 0000 2c000000".replace(" ", ""))
    assert data[8:12] == bytes([0, 0, 1, 0x01 | 0x02 | (2 << 4)])
    assert data[12:44] == KEY and data[44:52] == IFV
    rsp = response(FwCommandId.DEV_CONNECT, FwStatus.SPDM_REQUEST,
                   SpdmRequest(7, DoeObjectType.SPDM, b"\x12\x84\x00\x00")).encode()
    # response bit 15, status SPDM_REQUEST = 1, body = handle, type, 3 reserved, length, payload
    assert rsp == bytes.fromhex("0380 0100 10000000 07000000 01000000 04000000 12840000".replace(" ", ""))
    cont = CONTINUES[0].encode()
    assert cont[:4] == bytes.fromhex("0300 0100".replace(" ", ""))


def test_direction_and_kind() -> None:
    req = decode_frame(REQUESTS[FwCommandId.DEV_CONNECT].encode())
    assert req.direction is FwDirection.REQUEST and req.kind is FwRequestKind.NEW and req.status is None
    cont = decode_frame(CONTINUES[0].encode())
    assert cont.kind is FwRequestKind.CONTINUE and isinstance(cont.body, SpdmContinue)
    rsp = decode_frame(RESPONSES[-1].encode())
    assert rsp.direction is FwDirection.RESPONSE and rsp.status is FwStatus.ATTESTATION_FAILED
    assert isinstance(rsp.body, ErrorDetail)


def _expect_error(data: bytes, field: str, offset: int) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_frame(data)
    assert info.value.field == field, info.value
    assert info.value.offset == offset, info.value
    return info.value


def test_malformed_frames_name_field_and_offset() -> None:
    good = REQUESTS[FwCommandId.PROGRAM_KEY].encode()
    _expect_error(good[:5], "length", 4)
    _expect_error(good[:-1], "body", 8)
    _expect_error(good + b"\x00", "(end)", len(good))
    _expect_error(b"\x7f\x00" + good[2:], "command", 0)                     # unknown command id
    _expect_error(good[:2] + b"\x05\x00" + good[4:], "kind", 2)             # request kind 5
    _expect_error(b"\x21\x80\x99\x00" + good[4:], "status", 2)              # unknown status
    # CONTINUE of a command that never talks to the device
    _expect_error(good[:2] + b"\x01\x00" + good[4:], "kind", 2)
    # SPDM_REQUEST answered by a key-slot command
    _expect_error(b"\x21\x80\x01\x00" + good[4:], "status", 2)
    # a bad enum inside the body: direction bit is fine, but the sub-stream nibble 0xF is not a SubStream
    bad = bytearray(good)
    bad[11] = 0xF0
    err = _expect_error(bytes(bad), "body.sub_stream", 11)
    assert "SubStream" in err.reason
    # a body length field inside the body that overruns
    spdm = bytearray(RESPONSES[17].encode())
    spdm[16] = 0xFF
    _expect_error(bytes(spdm), "body.payload", 20)


def test_every_doe_command_can_continue() -> None:
    for command in DOE_COMMANDS:
        frame = continuation(command, SpdmContinue(DoeResult.RESPONSE, b"x"))
        assert decode_frame(frame.encode()) == frame


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_raises_only_decode_error(data: bytes) -> None:
    try:
        decode_frame(data)
    except DecodeError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALL), st.data())
def test_mutations_raise_only_decode_error(frame: FwFrame, data: st.DataObject) -> None:
    raw = bytearray(frame.encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        decode_frame(bytes(raw[:cut]))
    except DecodeError:
        pass
