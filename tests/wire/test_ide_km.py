"""IDE_KM objects and the PCI-SIG payload byte: §6.1-§6.3 examples, KeySubStream values, round trips, fuzz."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.wire.codec import DecodeError, EncodeError
from sim.wire.ide_km import (
    IDE_KM_MESSAGES,
    Direction,
    IdeKmMessage,
    IdeKmObjectId,
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
    summarize,
)
from sim.wire.pcisig import (
    PCISIG_VENDOR_ID,
    STANDARD_ID_PCISIG,
    ProtocolId,
    decode_pcisig_payload,
    encode_pcisig_payload,
    is_pcisig_envelope,
    protocol_of,
)
from sim.wire.pcisig import summarize as summarize_pcisig
from sim.wire.tdisp import GetTdispVersion, InterfaceId

# §6.3 worked example (TEEIO's example key)
KEY_NATURAL = bytes.fromhex("df254152 056e02e0 ef8b7feb 9739d4d9 6a4eb801 03241df7 cd5e24b4 9ccd2720".replace(" ", ""))
IFV_NATURAL = bytes.fromhex("0000000000000001")
KEY_WIRE = bytes.fromhex("52 41 25 df e0 02 6e 05 eb 7f 8b ef d9 d4 39 97 01 b8 4e 6a f7 1d 24 03 b4 24 5e cd 20 27 cd 9c")
IFV_WIRE = bytes.fromhex("00 00 00 00 01 00 00 00")


def only_decode_error(decoder: Callable[[bytes], Any], data: bytes) -> None:
    try:
        decoder(data)
    except DecodeError:
        pass


# ------------------------------------------------------------------ known answers


def test_query_example_in_spdm_envelope() -> None:
    spdm = bytes.fromhex("12 fe 00 00 03 00 02 01 00 04 00 00 00 00 00")
    # the envelope belongs to the SPDM layer; check that its constants are the ones this module exports
    assert int.from_bytes(spdm[4:6], "little") == STANDARD_ID_PCISIG
    assert spdm[6] == len(PCISIG_VENDOR_ID) and spdm[7:9] == PCISIG_VENDOR_ID
    payload = spdm[11:]
    assert int.from_bytes(spdm[9:11], "little") == len(payload)  # ReqLength counts the Protocol ID byte
    msg = decode_pcisig_payload(payload)
    assert msg == Query(port_index=0)
    assert encode_pcisig_payload(msg) == payload
    assert decode_ide_km(payload[1:]) == Query(0)
    assert Query(0).encode() == bytes.fromhex("00 00 00")


def test_key_prog_dw_order_matches_section_6_3() -> None:
    msg = KeyProg(stream_id=1, key_set=KeySet.K0, direction=Direction.RX, sub_stream=SubStream.PR,
                  key=KEY_NATURAL, ifv=IFV_NATURAL, port_index=0)
    wire = msg.encode()
    assert len(wire) == 47
    assert wire[:7] == bytes.fromhex("02 00 00 01 00 00 00")
    assert wire[7:39] == KEY_WIRE
    assert wire[39:47] == IFV_WIRE
    back = decode_ide_km(wire)
    assert isinstance(back, KeyProg)
    assert back.key == KEY_NATURAL and back.ifv == IFV_NATURAL
    assert back == msg


def test_key_dw7_first_rule() -> None:
    # Key DWj holds K[28-4j .. 31-4j] with K[28-4j] in bits 31:24; DW7 goes first, each DW little-endian.
    key = bytes(range(0x40, 0x60))
    wire = KeyProg(0, KeySet.K1, Direction.TX, SubStream.CPL, key, bytes(8)).encode()[7:39]
    expect = b""
    for j in range(7, -1, -1):
        dw = int.from_bytes(key[28 - 4 * j:32 - 4 * j], "big")
        expect += dw.to_bytes(4, "little")
    assert wire == expect
    assert dw_reverse(dw_reverse(key)) == key
    with pytest.raises(ValueError):
        dw_reverse(b"abc")


@pytest.mark.parametrize(("byte", "key_set", "direction", "sub"), [
    (0x00, KeySet.K0, Direction.RX, SubStream.PR),
    (0x10, KeySet.K0, Direction.RX, SubStream.NPR),
    (0x20, KeySet.K0, Direction.RX, SubStream.CPL),
    (0x02, KeySet.K0, Direction.TX, SubStream.PR),
    (0x12, KeySet.K0, Direction.TX, SubStream.NPR),
    (0x22, KeySet.K0, Direction.TX, SubStream.CPL),
    (0x23, KeySet.K1, Direction.TX, SubStream.CPL),
])
def test_key_sub_stream_byte(byte: int, key_set: KeySet, direction: Direction, sub: SubStream) -> None:
    go = KSetGo(stream_id=3, key_set=key_set, direction=direction, sub_stream=sub, port_index=1)
    assert go.encode() == bytes([0x04, 0, 0, 3, 0, byte, 1])
    assert decode_ide_km(go.encode()) == go


def test_key_sub_stream_reserved_bits_ignored_and_bad_sub_stream_refused() -> None:
    assert decode_ide_km(bytes([0x05, 0, 0, 3, 0, 0x1C, 0])) == KSetStop(3, KeySet.K0, Direction.RX, SubStream.NPR)
    with pytest.raises(DecodeError) as err:
        decode_ide_km(bytes([0x05, 0, 0, 3, 0, 0x30, 0]))
    assert (err.value.field, err.value.offset) == ("sub_stream", 5)


def test_seven_byte_objects() -> None:
    ack = KpAck(stream_id=9, status=KpAckStatus.UNSUPPORTED_PORT_INDEX, key_set=KeySet.K1, direction=Direction.TX,
                sub_stream=SubStream.NPR, port_index=2)
    assert ack.encode() == bytes([0x03, 0, 0, 9, 2, 0x13, 2])
    assert KGoStopAck(9, KeySet.K0, Direction.RX, SubStream.PR).encode() == bytes([0x06, 0, 0, 9, 0, 0, 0])
    assert KSetStop(9, KeySet.K0, Direction.RX, SubStream.PR).encode()[0] == 0x05
    with pytest.raises(DecodeError) as err:
        decode_ide_km(bytes([0x03, 0, 0, 9, 5, 0, 0]))
    assert (err.value.field, err.value.offset) == ("status", 4)


def test_query_resp_register_block() -> None:
    regs = (0x0000_0142, 0x0000_0000, 0x0000_0001, 0x0100_0001, 0x0000_0000, 0x0000_ff00, 0x0000_0001)
    msg = QueryResp(port_index=0, function=1, device=2, bus=0x3A, segment=0, max_port_index=0, registers=regs)
    wire = msg.encode()
    assert wire[:7] == bytes([0x01, 0, 0, (2 << 3) | 1, 0x3A, 0, 0])
    assert wire[7:11] == (0x142).to_bytes(4, "little")
    assert len(wire) == 7 + 4 * len(regs)
    back = decode_ide_km(wire)
    assert back == msg and isinstance(back, QueryResp)
    assert back.requester_id == 0x3A11 and back.ide_capability == 0x142 and back.ide_control == 0
    with pytest.raises(DecodeError) as err:
        decode_ide_km(wire[:-1])
    assert err.value.field.startswith("registers")
    with pytest.raises(DecodeError):
        decode_ide_km(wire[:11])  # one DW: below the minimum of IDE Capability + IDE Control
    with pytest.raises(ValueError):
        QueryResp(0, 0, 0, 0, 0, 0, (1,))


def test_dispatch_errors() -> None:
    with pytest.raises(DecodeError) as err:
        decode_ide_km(b"")
    assert err.value.field == "object_id"
    with pytest.raises(DecodeError) as err:
        decode_ide_km(b"\x07\x00\x00")
    assert (err.value.field, err.value.offset) == ("object_id", 0)
    with pytest.raises(DecodeError) as err:
        decode_ide_km(bytes(2))  # QUERY cut short
    assert err.value.field == "port_index"
    with pytest.raises(DecodeError) as err:
        decode_ide_km(bytes(4))  # QUERY with a trailing byte
    assert err.value.field == "(end)"
    assert len(IDE_KM_MESSAGES) == len(IdeKmObjectId)


def test_pcisig_payload_errors_and_offsets() -> None:
    with pytest.raises(DecodeError) as err:
        decode_pcisig_payload(b"")
    assert err.value.field == "protocol_id"
    with pytest.raises(DecodeError) as err:
        decode_pcisig_payload(b"\x02\x00\x00\x00")
    assert (err.value.field, err.value.offset) == ("protocol_id", 0)
    with pytest.raises(DecodeError) as err:
        decode_pcisig_payload(bytes([0, 0x03, 0, 0, 9, 7, 0, 0]))
    assert (err.value.field, err.value.offset) == ("status", 5)  # offset counted from the Protocol ID byte


def test_pcisig_helpers() -> None:
    tdisp = GetTdispVersion(interface_id=InterfaceId(0x100))
    assert protocol_of(Query()) is ProtocolId.IDE_KM and protocol_of(tdisp) is ProtocolId.TDISP
    assert encode_pcisig_payload(tdisp)[0] == 1
    assert is_pcisig_envelope(3, b"\x01\x00") and not is_pcisig_envelope(3, b"\x98\x1e")
    assert not is_pcisig_envelope(0, b"\x01\x00")
    with pytest.raises(EncodeError):
        protocol_of(object())  # type: ignore[arg-type]


def test_summaries() -> None:
    prog = KeyProg(1, KeySet.K0, Direction.TX, SubStream.NPR, bytes(32), bytes(8), port_index=0)
    assert summarize(prog) == "KEY_PROG stream=1 K0 TX NPR port=0"
    assert summarize_pcisig(prog) == "IDE_KM KEY_PROG stream=1 K0 TX NPR port=0"
    assert summarize(Query(2)) == "QUERY port=2"
    ack = KpAck(1, KpAckStatus.SUCCESS, KeySet.K0, Direction.RX, SubStream.CPL)
    assert summarize(ack) == "KP_ACK stream=1 K0 RX CPL port=0 status=SUCCESS"
    assert summarize(KGoStopAck(4, KeySet.K1, Direction.TX, SubStream.PR)) == "K_GOSTOP_ACK stream=4 K1 TX PR port=0"
    assert summarize_pcisig(GetTdispVersion(interface_id=InterfaceId(0x100))).startswith("TDISP GET_TDISP_VERSION")


# ------------------------------------------------------------------ property tests

u8s = st.integers(0, 0xFF)
selectors = {"stream_id": u8s, "key_set": st.sampled_from(KeySet), "direction": st.sampled_from(Direction),
             "sub_stream": st.sampled_from(SubStream), "port_index": u8s}
MESSAGES = st.one_of(
    st.builds(Query, port_index=u8s),
    st.builds(QueryResp, port_index=u8s, function=st.integers(0, 7), device=st.integers(0, 31), bus=u8s,
              segment=u8s, max_port_index=u8s,
              registers=st.lists(st.integers(0, 0xFFFFFFFF), min_size=2, max_size=40).map(tuple)),
    st.builds(KeyProg, key=st.binary(min_size=32, max_size=32), ifv=st.binary(min_size=8, max_size=8), **selectors),
    st.builds(KpAck, status=st.sampled_from(KpAckStatus), **selectors),
    st.builds(KSetGo, **selectors),
    st.builds(KSetStop, **selectors),
    st.builds(KGoStopAck, **selectors),
)


@settings(max_examples=200)
@given(msg=MESSAGES)
def test_roundtrip_every_object(msg: IdeKmMessage) -> None:
    wire = msg.encode()
    assert wire[0] == msg.OBJECT_ID
    assert decode_ide_km(wire) == msg
    assert decode_pcisig_payload(encode_pcisig_payload(msg)) == msg
    assert summarize(msg).startswith(msg.NAME)


def test_layouts_match_attributes() -> None:
    for cls in IDE_KM_MESSAGES.values():
        cls.check_layout()


# ------------------------------------------------------------------ fuzz


@settings(max_examples=200)
@given(data=st.binary(max_size=64))
def test_fuzz_random_bytes(data: bytes) -> None:
    only_decode_error(decode_ide_km, data)
    only_decode_error(decode_pcisig_payload, data)
    only_decode_error(decode_pcisig_payload, b"\x00" + data)


@settings(max_examples=150)
@given(msg=MESSAGES, cut=st.integers(0, 200))
def test_fuzz_truncations(msg: IdeKmMessage, cut: int) -> None:
    wire = msg.encode()
    cut %= len(wire)
    if isinstance(msg, QueryResp) and cut >= 15 and (cut - 7) % 4 == 0:
        return  # a whole-DW shorter register block is still a valid QUERY_RESP
    with pytest.raises(DecodeError):
        decode_ide_km(wire[:cut])
    only_decode_error(decode_pcisig_payload, b"\x00" + wire[:cut])
