"""SPDM part B: session messages, opaque data and large-message transfer (PROTOCOLS.md §2.10-2.13, §5.5)."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.wire.codec import DecodeError, EncodeError
from sim.wire.secured import session_id
from sim.wire.spdm import chunk, encapsulated, finish, key_exchange, opaque, psk, session
from sim.wire.spdm.chunk import ChunkAckAttributes, ChunkAttributes, ChunkGet, ChunkResponse, ChunkSend, ChunkSendAck
from sim.wire.spdm.common import (
    SPDM_MESSAGES,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    MeasurementSummaryHashType,
    RegistryId,
    SpdmContext,
    SpdmMessage,
    decode_spdm,
)
from sim.wire.spdm.encapsulated import (
    DeliverEncapsulatedResponse,
    EncapsulatedPayloadType,
    EncapsulatedRequest,
    EncapsulatedResponseAck,
    GetEncapsulatedRequest,
)
from sim.wire.spdm.finish import Finish, FinishAttributes, FinishRsp
from sim.wire.spdm.key_exchange import KeyExchange, KeyExchangeRsp, MutAuthRequested, SessionPolicy
from sim.wire.spdm.opaque import (
    OpaqueDataFormat1,
    OpaqueDataGeneral,
    OpaqueElement,
    SecuredMessageVersions,
    SmAeadLimit,
    SmSupportedVersions,
    SmVersionSelection,
    decode_opaque,
    encode_opaque,
    parse_secured_message_versions,
    sm_element,
    supported_versions_opaque,
    version_selection_opaque,
)
from sim.wire.spdm.psk import PskExchange, PskExchangeRsp, PskFinish, PskFinishRsp
from sim.wire.spdm.session import (
    EndSession,
    EndSessionAck,
    EndSessionAttributes,
    Heartbeat,
    HeartbeatAck,
    KeyUpdate,
    KeyUpdateAck,
    KeyUpdateOperation,
)

# --------------------------------------------------------------------------------------------
# Contexts: P-256/SHA-256 vs P-384/SHA-384, handshake in the clear on/off, measurement summary
# on/off, requester (mutual-auth) signature key present or not.
# --------------------------------------------------------------------------------------------

_SUITES = [
    (BaseHashAlgo.SHA_256, BaseAsymAlgo.ECDSA_P256, DheGroup.SECP_256_R1),
    (BaseHashAlgo.SHA_384, BaseAsymAlgo.ECDSA_P384, DheGroup.SECP_384_R1),
]


def _contexts() -> list[SpdmContext]:
    out = []
    for (h, a, d), clear, meas, mut in itertools.product(_SUITES, (False, True), (False, True), (False, True)):
        base = SpdmContext.for_algorithms(h, a, d, a if mut else None, handshake_in_the_clear=clear)
        out.append(base.with_(meas_summary_size=base.hash_size if meas else 0))
    return out


CONTEXTS = _contexts()
CTX256 = SpdmContext.for_algorithms(BaseHashAlgo.SHA_256, BaseAsymAlgo.ECDSA_P256, DheGroup.SECP_256_R1,
                                    BaseAsymAlgo.ECDSA_P256)
CTX384 = SpdmContext.for_algorithms(BaseHashAlgo.SHA_384, BaseAsymAlgo.ECDSA_P384, DheGroup.SECP_384_R1,
                                    BaseAsymAlgo.ECDSA_P384)

SESSION_VERSIONS = (0x11, 0x12, 0x13)
CHUNK_VERSIONS = (0x12, 0x13, 0x14)

ALL_CLASSES: tuple[type[SpdmMessage], ...] = (
    KeyExchange, KeyExchangeRsp, Finish, FinishRsp, PskExchange, PskExchangeRsp, PskFinish, PskFinishRsp,
    Heartbeat, HeartbeatAck, KeyUpdate, KeyUpdateAck, EndSession, EndSessionAck,
    GetEncapsulatedRequest, EncapsulatedRequest, DeliverEncapsulatedResponse, EncapsulatedResponseAck,
    ChunkSend, ChunkSendAck, ChunkGet, ChunkResponse,
)


def exact(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


u8s = st.integers(0, 0xFF)
u16s = st.integers(0, 0xFFFF)
small = st.binary(max_size=40)


def message_strategy(cls: type[SpdmMessage], ctx: SpdmContext) -> st.SearchStrategy[Any]:
    """Valid messages of ``cls`` for ``ctx`` (every field at the size the context demands)."""
    sv = st.sampled_from(SESSION_VERSIONS)
    if cls is KeyExchange:
        return sv.flatmap(lambda v: st.builds(
            KeyExchange, version=st.just(v), hash_type=st.sampled_from(MeasurementSummaryHashType), slot_id=u8s,
            req_session_id=u16s, random_data=exact(32), exchange_data=exact(ctx.dhe_size), opaque_data=small,
            session_policy=st.builds(SessionPolicy, st.integers(0, 3)) if v >= 0x12 else st.none()))
    if cls is KeyExchangeRsp:
        return st.builds(
            KeyExchangeRsp, version=sv, heartbeat_period=u8s, rsp_session_id=u16s,
            mut_auth_requested=st.builds(MutAuthRequested, st.integers(0, 7)), req_slot_id=st.integers(0, 15),
            random_data=exact(32), exchange_data=exact(ctx.dhe_size),
            measurement_summary_hash=exact(ctx.meas_summary_size), opaque_data=small, signature=exact(ctx.sig_size),
            responder_verify_data=st.none() if ctx.handshake_in_the_clear else exact(ctx.hash_size))
    if cls is Finish:
        return st.booleans().flatmap(lambda signed: st.builds(
            Finish, version=sv, requester_verify_data=exact(ctx.hash_size),
            attributes=st.just(FinishAttributes.SIGNATURE_INCLUDED if signed else FinishAttributes(0)),
            req_slot_id=u8s, signature=exact(ctx.req_sig_size) if signed else st.none()))
    if cls is FinishRsp:
        return st.builds(FinishRsp, version=sv,
                         responder_verify_data=exact(ctx.hash_size) if ctx.handshake_in_the_clear else st.none())
    if cls is PskExchange:
        return sv.flatmap(lambda v: st.builds(
            PskExchange, version=st.just(v), hash_type=st.sampled_from(MeasurementSummaryHashType),
            req_session_id=u16s, psk_hint=st.binary(max_size=16), requester_context=small, opaque_data=small,
            session_policy=st.builds(SessionPolicy, st.integers(0, 3)) if v >= 0x12 else st.none()))
    if cls is PskExchangeRsp:
        return st.builds(PskExchangeRsp, version=sv, heartbeat_period=u8s, rsp_session_id=u16s,
                         measurement_summary_hash=exact(ctx.meas_summary_size), responder_context=small,
                         opaque_data=small, responder_verify_data=exact(ctx.hash_size))
    if cls is PskFinish:
        return st.builds(PskFinish, version=sv, requester_verify_data=exact(ctx.hash_size))
    if cls in (PskFinishRsp, Heartbeat, HeartbeatAck, EndSessionAck, GetEncapsulatedRequest):
        return st.builds(cls, version=sv)
    if cls in (KeyUpdate, KeyUpdateAck):
        return st.builds(cls, version=sv, operation=st.sampled_from(KeyUpdateOperation), tag=u8s)
    if cls is EndSession:
        return st.builds(EndSession, version=sv, attributes=st.builds(EndSessionAttributes, u8s))
    if cls is EncapsulatedRequest:
        return st.builds(EncapsulatedRequest, version=sv, request_id=u8s, encapsulated_request=small)
    if cls is DeliverEncapsulatedResponse:
        return st.builds(DeliverEncapsulatedResponse, version=sv, request_id=u8s, encapsulated_response=small)
    if cls is EncapsulatedResponseAck:
        return st.tuples(sv, st.sampled_from(EncapsulatedPayloadType)).flatmap(lambda vp: st.builds(
            EncapsulatedResponseAck, version=st.just(vp[0]), request_id=u8s, payload_type=st.just(vp[1]),
            payload=st.just(b"") if vp[1] == EncapsulatedPayloadType.ABSENT else small,
            ack_request_id=u8s if vp[0] >= 0x12 else st.none()))
    if cls in (ChunkSend, ChunkResponse):
        cv = st.sampled_from(CHUNK_VERSIONS)
        return st.tuples(cv, st.integers(0, 3)).flatmap(lambda vs: st.builds(
            cls, version=st.just(vs[0]), handle=u8s, chunk_seq_no=st.just(vs[1]), chunk=small,
            attributes=st.builds(ChunkAttributes, st.integers(0, 1)),
            large_message_size=st.integers(0, 2**32 - 1) if vs[1] == 0 else st.none()))
    if cls is ChunkSendAck:
        return st.booleans().flatmap(lambda early: st.builds(
            ChunkSendAck, version=st.sampled_from(CHUNK_VERSIONS), handle=u8s, chunk_seq_no=u16s,
            response=st.binary(min_size=4, max_size=40) if early else small,
            attributes=st.just(ChunkAckAttributes.EARLY_ERROR_DETECTED if early else ChunkAckAttributes(0))))
    if cls is ChunkGet:
        return st.builds(ChunkGet, version=st.sampled_from(CHUNK_VERSIONS), handle=u8s, chunk_seq_no=u16s)
    raise AssertionError(f"no strategy for {cls.__name__}")


def any_message() -> st.SearchStrategy[tuple[SpdmContext, Any]]:
    return st.tuples(st.sampled_from(CONTEXTS), st.sampled_from(ALL_CLASSES)).flatmap(
        lambda cc: st.tuples(st.just(cc[0]), message_strategy(cc[1], cc[0])))


def expected_size(msg: Any, ctx: SpdmContext) -> int:
    """Size of a message from PROTOCOLS.md tables, computed independently of the layouts."""
    h, s, d, m = ctx.hash_size, ctx.sig_size, ctx.dhe_size, ctx.meas_summary_size
    match msg:
        case KeyExchange():
            return 4 + 4 + 32 + d + 2 + len(msg.opaque_data)
        case KeyExchangeRsp():
            return 4 + 4 + 32 + d + m + 2 + len(msg.opaque_data) + s + (0 if ctx.handshake_in_the_clear else h)
        case Finish():
            return 4 + (ctx.req_sig_size if msg.signature is not None else 0) + h
        case FinishRsp():
            return 4 + (h if ctx.handshake_in_the_clear else 0)
        case PskExchange():
            return 12 + len(msg.psk_hint) + len(msg.requester_context) + len(msg.opaque_data)
        case PskExchangeRsp():
            return 12 + m + len(msg.responder_context) + len(msg.opaque_data) + h
        case PskFinish():
            return 4 + h
        case EncapsulatedRequest():
            return 4 + len(msg.encapsulated_request)
        case DeliverEncapsulatedResponse():
            return 4 + len(msg.encapsulated_response)
        case EncapsulatedResponseAck():
            return (8 if msg.version >= 0x12 else 4) + len(msg.payload)
        case ChunkSend() | ChunkResponse():
            return 12 + (4 if msg.chunk_seq_no == 0 else 0) + len(msg.chunk)
        case ChunkSendAck():
            return 4 + (4 if msg.version >= 0x14 else 2) + len(msg.response)
        case ChunkGet():
            return 4 + (4 if msg.version >= 0x14 else 2)
        case _:
            return 4


# --------------------------------------------------------------------------------------------
# Round trips and sizes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.NAME)
def test_layout_matches_attributes(cls: type[SpdmMessage]) -> None:
    cls.check_layout()


@settings(max_examples=300, deadline=None)
@given(any_message())
def test_round_trip_every_message(case: tuple[SpdmContext, Any]) -> None:
    ctx, msg = case
    data = msg.encode(ctx)
    assert data[1] == msg.CODE and data[0] == msg.version
    assert len(data) == expected_size(msg, ctx)
    back = decode_spdm(data, ctx)
    assert type(back) is type(msg)
    assert back == msg
    assert back.encode(ctx) == data
    assert back.summary().startswith(msg.NAME)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.NAME)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_round_trip_per_class(cls: type[SpdmMessage], data: st.DataObject) -> None:
    ctx = data.draw(st.sampled_from(CONTEXTS))
    msg = data.draw(message_strategy(cls, ctx))
    assert cls.decode(msg.encode(ctx), ctx) == msg


def test_decoding_without_context_uses_the_default_sizes() -> None:
    default = SpdmContext()
    msg = PskFinish(version=0x12, requester_verify_data=bytes(range(default.hash_size)))
    assert PskFinish.decode(msg.encode()) == msg
    assert len(msg.encode()) == 4 + 48


# --------------------------------------------------------------------------------------------
# Known answers
# --------------------------------------------------------------------------------------------


def test_session_id_example_from_section_2_10() -> None:
    req = KeyExchange(version=0x12, hash_type=MeasurementSummaryHashType.NONE, slot_id=0, req_session_id=0xFFFE,
                      random_data=bytes(32), exchange_data=bytes(64), session_policy=SessionPolicy(0))
    rsp = KeyExchangeRsp(version=0x12, heartbeat_period=0, rsp_session_id=0xFFFD,
                         mut_auth_requested=MutAuthRequested(0), req_slot_id=0, random_data=bytes(32),
                         exchange_data=bytes(64), measurement_summary_hash=b"", opaque_data=b"",
                         signature=bytes(64), responder_verify_data=bytes(32))
    req_bytes, rsp_bytes = req.encode(CTX256), rsp.encode(CTX256)
    assert req_bytes[4:6] == bytes.fromhex("feff") and rsp_bytes[4:6] == bytes.fromhex("fdff")
    sid = session_id(req.req_session_id, rsp.rsp_session_id)
    assert sid == 0xFFFDFFFE == rsp.session_id(0xFFFE)
    assert sid.to_bytes(4, "little") == bytes.fromhex("feff fdff") == req_bytes[4:6] + rsp_bytes[4:6]
    psk_rsp = PskExchangeRsp(version=0x12, heartbeat_period=0, rsp_session_id=0xFFFD, measurement_summary_hash=b"",
                             responder_context=b"", opaque_data=b"", responder_verify_data=bytes(32))
    assert psk_rsp.session_id(0xFFFE) == 0xFFFDFFFE


SUPPORTED_EXAMPLE = bytes.fromhex("01 00 00 00 00 00 05 00 01 01 01 00 11 00 00 00")
SELECTION_EXAMPLE = bytes.fromhex("01 00 00 00 00 00 04 00 01 00 00 11")


def test_opaque_examples_from_section_5_5() -> None:
    assert supported_versions_opaque([0x1100], 0x12) == SUPPORTED_EXAMPLE
    assert version_selection_opaque(0x1100, 0x12) == SELECTION_EXAMPLE
    assert parse_secured_message_versions(SUPPORTED_EXAMPLE, 0x12) == SecuredMessageVersions(supported=(0x1100,))
    assert parse_secured_message_versions(SELECTION_EXAMPLE, 0x13) == SecuredMessageVersions(selected=0x1100)


def test_opaque_spdm_1_1_general_header() -> None:
    blob = supported_versions_opaque([0x1000, 0x1100], 0x11)
    # SpecID "FTMD", OpaqueVersion 1, TotalElements 1, Reserved(2)
    assert blob[:8] == bytes.fromhex("46544d44 01 01 0000")
    # element: ID 0, VendorLen 0, DataLen 7, SMDataVersion 1, SupportedVersion, count 2, 1.0, 1.1, pad 1
    assert blob[8:] == bytes.fromhex("00 00 0700 01 01 02 0010 0011 00")
    assert len(blob) % 4 == 0
    assert parse_secured_message_versions(blob, 0x11).supported == (0x1000, 0x1100)
    sel = version_selection_opaque(0x1100, 0x11)
    assert sel == bytes.fromhex("46544d44 01 01 0000 00 00 0400 01 00 0011")
    # a 1.1 blob read as Format 1 (or the reverse) does not parse
    with pytest.raises(DecodeError):
        parse_secured_message_versions(SUPPORTED_EXAMPLE, 0x11)
    with pytest.raises(DecodeError):
        parse_secured_message_versions(blob, 0x12)


def test_opaque_aead_limit_element() -> None:
    blob = supported_versions_opaque([0x1200], 0x13, aead_limit_exponent=40)
    assert blob[0] == 2  # two elements
    assert blob[-8:] == bytes.fromhex("00 00 0300 01 02 28 00")
    parsed = parse_secured_message_versions(blob, 0x13)
    assert parsed == SecuredMessageVersions(supported=(0x1200,), aead_limit_exponent=40)
    too_big = bytearray(blob)
    too_big[-2] = 65
    with pytest.raises(DecodeError, match="exponent"):
        parse_secured_message_versions(bytes(too_big), 0x13)


def test_opaque_skips_foreign_elements_and_rejects_duplicates() -> None:
    vendor = OpaqueElement(registry_id=RegistryId.PCISIG, vendor_id=b"\x01\x00", data=b"\x01\x00\x00\x11\xff")
    unknown_sm = OpaqueElement(registry_id=RegistryId.DMTF, data=bytes([1, 9, 1, 2, 3]))
    blob = encode_opaque([vendor, unknown_sm, sm_element(SmVersionSelection(selected_version=0x1200))], 0x12)
    assert parse_secured_message_versions(blob, 0x12) == SecuredMessageVersions(selected=0x1200)
    assert decode_opaque(blob, 0x12).elements[0] == vendor
    dup = encode_opaque([sm_element(SmVersionSelection(selected_version=0x1100))] * 2, 0x12)
    with pytest.raises(DecodeError) as err:
        parse_secured_message_versions(dup, 0x12)
    assert err.value.field == "elements[1].data.sm_data_id" and err.value.offset == 12 + 4 + 1
    assert parse_secured_message_versions(b"", 0x12) == SecuredMessageVersions()


def test_opaque_errors_name_field_and_offset() -> None:
    bad_spec = b"XXXX" + supported_versions_opaque([0x1100], 0x11)[4:]
    with pytest.raises(DecodeError) as err:
        parse_secured_message_versions(bad_spec, 0x11)
    assert err.value.field == "spec_id" and err.value.offset == 0
    bad_sm_version = bytearray(SUPPORTED_EXAMPLE)
    bad_sm_version[8] = 2
    with pytest.raises(DecodeError) as err:
        parse_secured_message_versions(bytes(bad_sm_version), 0x12)
    assert err.value.field == "elements[0].data.sm_data_version" and err.value.offset == 8
    zero_count = bytes.fromhex("01000000 0000 0300 01 01 00 00")
    with pytest.raises(DecodeError):
        parse_secured_message_versions(zero_count, 0x12)
    short_count = bytes.fromhex("01000000 0000 0500 01 01 02 0011 000000")  # claims 2 versions, holds 1
    with pytest.raises(DecodeError) as err:
        parse_secured_message_versions(short_count, 0x12)
    assert err.value.field.startswith("elements[0].data.versions")


element_strategy = st.builds(OpaqueElement, registry_id=st.sampled_from(RegistryId), data=st.binary(max_size=20),
                             vendor_id=st.binary(max_size=6))


@settings(max_examples=150, deadline=None)
@given(st.lists(element_strategy, max_size=5), st.sampled_from((0x11, 0x12, 0x13)))
def test_opaque_round_trip_and_alignment(elements: list[OpaqueElement], version: int) -> None:
    blob = encode_opaque(elements, version)
    assert len(blob) % 4 == 0
    for el in elements:
        assert len(el.encode()) % 4 == 0
        assert len(el.encode()) - 4 - len(el.vendor_id) - len(el.data) in range(4)
    container = decode_opaque(blob, version)
    assert isinstance(container, OpaqueDataFormat1 if version >= 0x12 else OpaqueDataGeneral)
    assert container.elements == tuple(elements)


@settings(max_examples=100, deadline=None)
@given(st.lists(u16s, min_size=1, max_size=8), u16s, st.none() | st.integers(0, 64), st.sampled_from((0x11, 0x12)))
def test_opaque_helpers_round_trip(versions: list[int], chosen: int, aead: int | None, spdm: int) -> None:
    parsed = parse_secured_message_versions(supported_versions_opaque(versions, spdm, aead_limit_exponent=aead), spdm)
    assert parsed == SecuredMessageVersions(supported=tuple(versions), aead_limit_exponent=aead)
    parsed = parse_secured_message_versions(version_selection_opaque(chosen, spdm, aead_limit_exponent=aead), spdm)
    assert parsed == SecuredMessageVersions(selected=chosen, aead_limit_exponent=aead)


def test_key_exchange_offsets_match_section_2_10() -> None:
    opq = SUPPORTED_EXAMPLE
    msg = KeyExchange(version=0x12, hash_type=MeasurementSummaryHashType.ALL, slot_id=0xFF, req_session_id=0x1234,
                      random_data=bytes(range(32)), exchange_data=bytes([0xD5]) * 96, opaque_data=opq,
                      session_policy=SessionPolicy.TERMINATION_POLICY)
    b = msg.encode(CTX384)
    assert b[:4] == bytes.fromhex("12 e4 ff ff")
    assert b[4:6] == bytes.fromhex("3412") and b[6] == 1 and b[7] == 0
    assert b[8:40] == bytes(range(32)) and b[40:136] == bytes([0xD5]) * 96
    assert b[136:138] == len(opq).to_bytes(2, "little") and b[138:] == opq


def test_key_exchange_1_1_byte_6_is_reserved() -> None:
    raw = bytes.fromhex("11 e4 01 00 feff 03 00") + bytes(32) + bytes(64) + bytes.fromhex("0000")
    msg = KeyExchange.decode(raw, CTX256)
    assert msg.session_policy is None and msg.hash_type == MeasurementSummaryHashType.TCB
    assert msg.encode(CTX256)[6] == 0  # reserved byte written as zero
    with pytest.raises(ValueError):
        dataclasses.replace(msg, session_policy=SessionPolicy.TERMINATION_POLICY)
    assert dataclasses.replace(msg, session_policy=SessionPolicy(0)).session_policy is None
    assert dataclasses.replace(msg, version=0x12).session_policy == SessionPolicy(0)  # 1.2 default: no bits


def test_key_exchange_rsp_offsets_and_cut_points() -> None:
    for clear in (False, True):
        ctx = CTX384.with_(meas_summary_size=48, handshake_in_the_clear=clear)
        opq = SELECTION_EXAMPLE
        rsp = KeyExchangeRsp(version=0x13, heartbeat_period=5, rsp_session_id=0xABCD,
                             mut_auth_requested=MutAuthRequested.REQUESTED | MutAuthRequested.WITH_ENCAP_REQUEST,
                             req_slot_id=3, random_data=b"\x11" * 32, exchange_data=b"\x22" * 96,
                             measurement_summary_hash=b"\x33" * 48, opaque_data=opq, signature=b"\x44" * 96,
                             responder_verify_data=None if clear else b"\x55" * 48)
        b = rsp.encode(ctx)
        assert b[:8] == bytes.fromhex("13 64 05 00 cdab 03 03")
        assert b[40:136] == b"\x22" * 96 and b[136:184] == b"\x33" * 48
        assert b[184:186] == bytes([len(opq), 0]) and b[186:198] == opq
        signed, th1 = rsp.signed_part(ctx), rsp.verify_part(ctx)
        assert signed == b[:198] and signed.endswith(opq)
        assert th1 == signed + b"\x44" * 96 == rsp.th1_part(ctx)
        assert b == th1 + (b"" if clear else b"\x55" * 48)
        assert KeyExchangeRsp.decode(b, ctx) == rsp


def test_verify_data_presence_follows_handshake_in_the_clear() -> None:
    rsp = KeyExchangeRsp(version=0x12, heartbeat_period=0, rsp_session_id=1, mut_auth_requested=MutAuthRequested(0),
                         req_slot_id=0, random_data=bytes(32), exchange_data=bytes(64), measurement_summary_hash=b"",
                         opaque_data=b"", signature=bytes(64), responder_verify_data=bytes(32))
    with pytest.raises(EncodeError):
        rsp.encode(CTX256.with_(handshake_in_the_clear=True))
    with pytest.raises(EncodeError):
        FinishRsp(version=0x12, responder_verify_data=bytes(32)).encode(CTX256)
    with pytest.raises(EncodeError):
        FinishRsp(version=0x12).encode(CTX256.with_(handshake_in_the_clear=True))
    # the same bytes decode differently under the two contexts: the verify data moves (§9 item 5)
    in_clear = FinishRsp(version=0x12, responder_verify_data=b"\x77" * 32).encode(CTX256.with_(handshake_in_the_clear=True))
    assert in_clear == bytes.fromhex("12 65 00 00") + b"\x77" * 32
    with pytest.raises(DecodeError) as err:
        FinishRsp.decode(in_clear, CTX256)
    assert err.value.offset == 4


def test_finish_layouts_and_cut_points() -> None:
    mutual = Finish(version=0x12, attributes=FinishAttributes.SIGNATURE_INCLUDED, req_slot_id=2,
                    signature=b"\xaa" * 64, requester_verify_data=b"\xbb" * 32)
    b = mutual.encode(CTX256)
    assert b == bytes.fromhex("12 e5 01 02") + b"\xaa" * 64 + b"\xbb" * 32
    assert mutual.signed_part(CTX256) == b[:4]
    assert mutual.verify_part(CTX256) == b[:68]
    plain = Finish(version=0x12, requester_verify_data=b"\xbb" * 48)
    assert plain.encode(CTX384) == bytes.fromhex("12 e5 00 00") + b"\xbb" * 48
    assert plain.verify_part(CTX384) == bytes.fromhex("12 e5 00 00")
    assert Finish.decode(bytes.fromhex("12 e5 01 00") + bytes(96) + bytes(48), CTX384).signature == bytes(96)
    with pytest.raises(ValueError):
        Finish(version=0x12, requester_verify_data=bytes(32), signature=bytes(64))
    assert FinishRsp(version=0x12).encode(CTX256) == bytes.fromhex("12 65 00 00")
    assert FinishRsp(version=0x12).verify_part(CTX256) == bytes.fromhex("12 65 00 00")
    assert "signed" in mutual.summary() and "signed" not in plain.summary()


def test_psk_layouts() -> None:
    req = PskExchange(version=0x12, hash_type=MeasurementSummaryHashType.NONE, req_session_id=0xFFFE,
                      psk_hint=b"hint", requester_context=b"\x01" * 32, opaque_data=SUPPORTED_EXAMPLE,
                      session_policy=SessionPolicy.TERMINATION_POLICY)
    b = req.encode(CTX256)
    assert b[:12] == bytes.fromhex("12 e6 00 01 feff 0400 2000 1000")
    assert b[12:] == b"hint" + b"\x01" * 32 + SUPPORTED_EXAMPLE
    v11 = PskExchange.decode(bytes.fromhex("11 e6 ff 07 0100 0000 0000 0000"), CTX256)
    assert v11.session_policy is None and v11.hash_type == MeasurementSummaryHashType.ALL
    rsp = PskExchangeRsp(version=0x12, heartbeat_period=10, rsp_session_id=0xFFFD, measurement_summary_hash=b"",
                         responder_context=b"\x02" * 32, opaque_data=SELECTION_EXAMPLE,
                         responder_verify_data=b"\x03" * 32)
    rb = rsp.encode(CTX256)
    assert rb[:12] == bytes.fromhex("12 66 0a 00 fdff 0000 2000 0c00")
    assert rsp.verify_part(CTX256) == rb[:-32] and rb[-32:] == b"\x03" * 32
    fin = PskFinish(version=0x12, requester_verify_data=b"\x04" * 32)
    assert fin.encode(CTX256) == bytes.fromhex("12 e7 00 00") + b"\x04" * 32
    assert fin.verify_part(CTX256) == bytes.fromhex("12 e7 00 00")
    assert PskFinishRsp(version=0x12).encode() == bytes.fromhex("12 67 00 00")


def test_session_control_messages_from_raw_bytes() -> None:
    ku = decode_spdm(bytes.fromhex("11 e9 02 5a"))
    assert isinstance(ku, KeyUpdate) and ku.operation == KeyUpdateOperation.UPDATE_ALL_KEYS and ku.tag == 0x5A
    ack = decode_spdm(bytes.fromhex("11 69 03 5a"))
    assert isinstance(ack, KeyUpdateAck) and ack.operation == KeyUpdateOperation.VERIFY_NEW_KEY
    end = decode_spdm(bytes.fromhex("12 ec 01 00"))
    assert isinstance(end, EndSession) and end.clear_negotiated_state
    assert not EndSession(version=0x12).clear_negotiated_state
    assert isinstance(decode_spdm(bytes.fromhex("12 6c 00 00")), EndSessionAck)
    assert isinstance(decode_spdm(bytes.fromhex("12 e8 00 00")), Heartbeat)
    assert isinstance(decode_spdm(bytes.fromhex("12 68 00 00")), HeartbeatAck)
    # reserved params are ignored on decode and written as zero
    assert decode_spdm(bytes.fromhex("12 e8 ff ff")).encode() == bytes.fromhex("12 e8 00 00")
    for bad in ("11 e9 00 01", "11 e9 04 01", "11 69 ff 00"):
        with pytest.raises(DecodeError) as err:
            decode_spdm(bytes.fromhex(bad))
        assert err.value.field == "operation" and err.value.offset == 2
    assert KeyUpdate(version=0x11, operation=KeyUpdateOperation.UPDATE_KEY, tag=7).summary() == \
        "KEY_UPDATE UPDATE_KEY tag=0x07"


def test_encapsulated_layouts() -> None:
    assert GetEncapsulatedRequest(version=0x12).encode() == bytes.fromhex("12 ea 00 00")
    inner = bytes.fromhex("12 e9 01 33")  # a KEY_UPDATE carried as the encapsulated request
    req = EncapsulatedRequest(version=0x12, request_id=9, encapsulated_request=inner)
    assert req.encode() == bytes.fromhex("12 6a 09 00") + inner
    got = req.inner()
    assert isinstance(got, KeyUpdate) and got.tag == 0x33
    assert "KEY_UPDATE" in req.summary()
    deliver = DeliverEncapsulatedResponse(version=0x12, request_id=9, encapsulated_response=bytes.fromhex("12 69 01 33"))
    assert isinstance(deliver.inner(), KeyUpdateAck)
    ack12 = EncapsulatedResponseAck(version=0x12, request_id=0, payload_type=EncapsulatedPayloadType.PRESENT,
                                    ack_request_id=9, payload=inner)
    assert ack12.encode() == bytes.fromhex("12 6b 00 01 09 000000") + inner
    assert isinstance(ack12.inner(), KeyUpdate)
    ack11 = decode_spdm(bytes.fromhex("11 6b 04 00"))
    assert isinstance(ack11, EncapsulatedResponseAck) and ack11.ack_request_id is None
    assert ack11.payload_type == EncapsulatedPayloadType.ABSENT
    slot = decode_spdm(bytes.fromhex("12 6b 00 02 05 000000 03"))
    assert isinstance(slot, EncapsulatedResponseAck) and slot.req_slot_id == 3
    with pytest.raises(DecodeError):  # ABSENT must not carry a payload (libspdm rejects it too)
        decode_spdm(bytes.fromhex("12 6b 00 00 05 000000 12e90133"))
    with pytest.raises(DecodeError):
        decode_spdm(bytes.fromhex("12 6b 00 03 05 000000"))  # unknown payload type
    with pytest.raises(DecodeError) as err:
        EncapsulatedRequest(version=0x12, request_id=1, encapsulated_request=bytes.fromhex("12 e9 07 00")).inner()
    assert err.value.message == "ENCAPSULATED_REQUEST"
    assert err.value.field == "encapsulated_request.operation" and err.value.offset == 4 + 2
    with pytest.raises(DecodeError) as err:
        ack12.__class__(version=0x12, request_id=0, payload_type=EncapsulatedPayloadType.PRESENT, ack_request_id=1,
                        payload=b"\x12").inner()
    assert err.value.offset == 8 + 1


def test_chunk_layouts() -> None:
    first = ChunkSend(version=0x12, handle=4, chunk_seq_no=0, chunk=b"\xc0" * 5, large_message_size=5000)
    assert first.encode() == bytes.fromhex("12 85 00 04 0000 0000 05000000 88130000") + b"\xc0" * 5
    later = decode_spdm(bytes.fromhex("12 85 01 04 0700 0000 03000000 616263"))
    assert isinstance(later, ChunkSend)
    assert later.chunk_seq_no == 7 and later.last and later.chunk == b"abc" and later.large_message_size is None
    resp = decode_spdm(bytes.fromhex("13 06 00 02 0000 0000 02000000 00010000 beef"))
    assert isinstance(resp, ChunkResponse) and resp.large_message_size == 256 and resp.chunk == b"\xbe\xef"
    get = decode_spdm(bytes.fromhex("12 86 00 07 0300"))
    assert isinstance(get, ChunkGet) and get.handle == 7 and get.chunk_seq_no == 3
    ack = ChunkSendAck(version=0x12, handle=4, chunk_seq_no=1, response=bytes.fromhex("12 6c 00 00"))
    assert ack.encode() == bytes.fromhex("12 05 00 04 0100 126c0000")
    assert isinstance(ack.inner(), EndSessionAck)
    early = decode_spdm(bytes.fromhex("12 05 01 04 0000 12e90000"))
    assert isinstance(early, ChunkSendAck) and early.attributes & ChunkAckAttributes.EARLY_ERROR_DETECTED
    with pytest.raises(DecodeError) as err:
        early.inner()  # KEY_UPDATE operation 0 is invalid
    assert err.value.field == "response.operation" and err.value.offset == 6 + 2
    with pytest.raises(DecodeError):
        decode_spdm(bytes.fromhex("12 05 01 04 0000"))  # early error without the ERROR response
    # SPDM 1.4: 4-byte ChunkSeqNo, no reserved field
    v14 = ChunkSend(version=0x14, handle=1, chunk_seq_no=0x10000, chunk=b"z")
    assert v14.encode() == bytes.fromhex("14 85 00 01 00000100 01000000 7a")
    assert ChunkGet(version=0x14, handle=1, chunk_seq_no=2).encode() == bytes.fromhex("14 86 00 01 02000000")
    with pytest.raises(EncodeError):
        ChunkGet(version=0x13, handle=1, chunk_seq_no=0x10000).encode()
    with pytest.raises(ValueError):
        ChunkSend(version=0x12, handle=1, chunk_seq_no=0, chunk=b"")  # seq 0 needs LargeMessageSize
    with pytest.raises(ValueError):
        ChunkSend(version=0x12, handle=1, chunk_seq_no=1, chunk=b"", large_message_size=9)
    assert first.summary() == "CHUNK_SEND handle=4 seq=0 5B of 5000"


def test_wrong_length_fields_are_decode_errors() -> None:
    good = ChunkSend(version=0x12, handle=1, chunk_seq_no=1, chunk=b"abcd").encode()
    for size in (3, 5, 0xFFFFFFFF):
        bad = good[:8] + size.to_bytes(4, "little") + good[12:]
        with pytest.raises(DecodeError):
            decode_spdm(bad)
    kx = KeyExchange(version=0x12, hash_type=MeasurementSummaryHashType.NONE, slot_id=0, req_session_id=1,
                     random_data=bytes(32), exchange_data=bytes(64), opaque_data=SUPPORTED_EXAMPLE,
                     session_policy=SessionPolicy(0)).encode(CTX256)
    off = 40 + 64
    for n in (0, 15, 17, 1025):
        with pytest.raises(DecodeError) as err:
            decode_spdm(kx[:off] + n.to_bytes(2, "little") + kx[off + 2:], CTX256)
        assert err.value.message == "KEY_EXCHANGE"
    with pytest.raises(DecodeError) as err:
        decode_spdm(kx[:off] + (1025).to_bytes(2, "little") + bytes(1025), CTX256)
    assert err.value.field == "opaque_data" and "maximum" in err.value.reason
    # decoding under the wrong context (P-384 sizes for P-256 bytes) fails cleanly
    with pytest.raises(DecodeError):
        decode_spdm(kx, CTX384)
    psk_req = PskExchange(version=0x12, hash_type=MeasurementSummaryHashType.NONE, req_session_id=1, psk_hint=b"ab",
                          requester_context=b"cd", session_policy=SessionPolicy(0)).encode()
    with pytest.raises(DecodeError) as err:
        decode_spdm(psk_req[:6] + b"\x09\x00" + psk_req[8:])
    assert err.value.field in ("psk_hint", "requester_context", "opaque_data")


# --------------------------------------------------------------------------------------------
# Fuzzing: only DecodeError escapes
# --------------------------------------------------------------------------------------------

MY_CODES = sorted({cls.CODE for cls in ALL_CLASSES})


def _decode_or_decode_error(data: bytes, ctx: SpdmContext) -> SpdmMessage | None:
    try:
        return decode_spdm(data, ctx)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(data)
        return None


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CONTEXTS), st.sampled_from((0x10, 0x11, 0x12, 0x13, 0x14)), st.sampled_from(MY_CODES),
       st.binary(max_size=300))
def test_fuzz_random_bodies(ctx: SpdmContext, version: int, code: int, body: bytes) -> None:
    data = bytes([version, code]) + body
    msg = _decode_or_decode_error(data, ctx)
    if msg is not None:  # whatever decodes re-encodes to the same bytes, up to reserved bytes
        again = msg.encode(ctx)
        assert len(again) == len(data)
        assert decode_spdm(again, ctx) == msg


@settings(max_examples=200, deadline=None)
@given(any_message(), st.data())
def test_fuzz_truncations_and_trailing_bytes(case: tuple[SpdmContext, Any], data: st.DataObject) -> None:
    ctx, msg = case
    encoded = msg.encode(ctx)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    _decode_or_decode_error(encoded[:cut], ctx)
    if cut < 4:
        with pytest.raises(DecodeError):
            decode_spdm(encoded[:cut], ctx)
    open_ended = (EncapsulatedRequest, DeliverEncapsulatedResponse, EncapsulatedResponseAck, ChunkSendAck)
    if not isinstance(msg, open_ended):
        with pytest.raises(DecodeError):
            decode_spdm(encoded[:cut], ctx)
        with pytest.raises(DecodeError) as err:
            decode_spdm(encoded + b"\x00", ctx)
        assert err.value.offset == len(encoded)


@settings(max_examples=200, deadline=None)
@given(any_message(), st.data())
def test_fuzz_bit_flips(case: tuple[SpdmContext, Any], data: st.DataObject) -> None:
    ctx, msg = case
    buf = bytearray(msg.encode(ctx))
    pos = data.draw(st.integers(0, len(buf) - 1))
    buf[pos] ^= 1 << data.draw(st.integers(0, 7))
    _decode_or_decode_error(bytes(buf), ctx)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.sampled_from((0x11, 0x12, 0x13)))
def test_fuzz_opaque(blob: bytes, version: int) -> None:
    try:
        parse_secured_message_versions(blob, version)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(blob)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=2, max_size=12))
def test_fuzz_sm_element_payloads(payload: bytes) -> None:
    blob = encode_opaque([OpaqueElement(registry_id=RegistryId.DMTF, data=payload)], 0x12)
    try:
        parse_secured_message_versions(blob, 0x12)
    except DecodeError as exc:
        assert exc.field.startswith("elements[0].data")
        assert 8 <= exc.offset <= 8 + len(payload)


def test_every_part_b_code_is_registered() -> None:
    for cls in ALL_CLASSES:
        assert SPDM_MESSAGES[cls.CODE] is cls
    for mod in (key_exchange, finish, psk, session, encapsulated, chunk, opaque):
        assert mod.__doc__


def test_sm_payload_classes_round_trip() -> None:
    for payload in (SmVersionSelection(selected_version=0x1100), SmSupportedVersions(versions=(0x1000, 0x1100)),
                    SmAeadLimit(exponent=64)):
        assert type(payload).decode(payload.encode()) == payload
    with pytest.raises(ValueError):
        SmSupportedVersions(versions=())
    with pytest.raises(ValueError):
        SmAeadLimit(exponent=65)


def test_embedded_messages_with_doe_padding() -> None:
    padded = EncapsulatedRequest(version=0x12, request_id=1, encapsulated_request=bytes.fromhex("12 e8 00 00 000000"))
    with pytest.raises(DecodeError):
        padded.inner()
    assert isinstance(padded.inner(allow_trailing=True), Heartbeat)
    ack = ChunkSendAck(version=0x12, handle=1, chunk_seq_no=0, response=bytes.fromhex("12 68 00 00 00"))
    assert isinstance(ack.inner(allow_trailing=True), HeartbeatAck)


def test_finish_1_4_layout_is_refused_not_misread() -> None:
    with pytest.raises(DecodeError) as err:
        decode_spdm(bytes.fromhex("14 e5 00 00") + bytes(48))
    assert "1.4" in err.value.reason
    with pytest.raises(ValueError):
        FinishRsp(version=0x14)
