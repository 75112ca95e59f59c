"""SPDM part A: everything before sessions (PROTOCOLS.md §2.3-2.9, §2.12; INTEROP.md byte examples)."""

from __future__ import annotations

import datetime
import hashlib
import struct
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.wire.spdm  # noqa: F401  (registers every message with decode_spdm)
from sim.wire.codec import DecodeError, EncodeError
from sim.wire.spdm.algorithms import (
    Algorithms,
    AlgStruct,
    ExtAlg,
    MelSpecification,
    NegotiateAlgorithms,
    OtherParams,
    SupportedAlgorithms,
)
from sim.wire.spdm.capabilities import Capabilities, CapabilitiesAttributes, GetCapabilities
from sim.wire.spdm.certificates import (
    CertChain,
    Certificate,
    CertModel,
    Digests,
    GetCertificate,
    GetCertificateAttributes,
    GetDigests,
    KeyUsage,
    SlotKeyInfo,
    slots_of,
    split_der_certificates,
)
from sim.wire.spdm.challenge import Challenge, ChallengeAuth
from sim.wire.spdm.common import (
    AeadSuite,
    AlgType,
    BaseAsymAlgo,
    BaseHashAlgo,
    CapabilityFlags,
    DheGroup,
    ErrorCode,
    KeyScheduleAlgo,
    MeasurementHashAlgo,
    MeasurementSpec,
    MeasurementSummaryHashType,
    RegistryId,
    RequestCode,
    SpdmContext,
    SpdmMessage,
    decode_spdm,
)
from sim.wire.spdm.error import ErrorResponse, LargeResponseData, ResponseNotReadyData, VendorErrorData
from sim.wire.spdm.measurements import (
    ContentChanged,
    DmtfValueType,
    GetMeasurements,
    MeasurementAttributes,
    MeasurementBlock,
    MeasurementOperation,
    Measurements,
)
from sim.wire.spdm.vendor import VendorDefinedRequest, VendorDefinedResponse
from sim.wire.spdm.version import GetVersion, RespondIfReady, Version, VersionNumber

VERSIONS = (0x10, 0x11, 0x12, 0x13)

# (H, S): SHA-256/P-256, SHA-384/P-384, SHA-512/P-521, SHA-256/RSA-2048
CONTEXTS = tuple(
    SpdmContext(hash_size=h, sig_size=s, meas_summary_size=m)
    for h, s in ((32, 64), (48, 96), (64, 132), (32, 256))
    for m in (0, h)
)

u8s = st.integers(0, 0xFF)
u16s = st.integers(0, 0xFFFF)
u32s = st.integers(0, 0xFFFF_FFFF)


def nbytes(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


def flags(enum_type: Any, bits: int = 32) -> st.SearchStrategy[Any]:
    return st.integers(0, (1 << bits) - 1).map(enum_type)


# --------------------------------------------------------------------------------------------
# Builders: one random valid message per (version, context)
# --------------------------------------------------------------------------------------------

Draw = Callable[[st.SearchStrategy[Any]], Any]


def ext_algs(draw: Draw, n: int = 3) -> tuple[ExtAlg, ...]:
    return tuple(draw(st.lists(st.builds(ExtAlg, st.sampled_from(RegistryId), u16s), max_size=n)))


def alg_structs(draw: Draw, version: int) -> tuple[AlgStruct, ...]:
    if version < 0x11:
        return ()
    types = sorted(draw(st.sets(st.sampled_from(list(AlgType)), max_size=4)))
    return tuple(AlgStruct(t, draw(u16s), ext_algs(draw, 2)) for t in types)


def b_get_version(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return GetVersion(version=v)


def b_version(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    entries = draw(st.lists(st.builds(VersionNumber, *(st.integers(0, 15),) * 4), max_size=8))
    return Version(version=v, entries=tuple(entries))


def b_respond_if_ready(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return RespondIfReady(v, draw(st.sampled_from(RequestCode)), draw(u8s))


def b_get_capabilities(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return GetCapabilities(
        v,
        ct_exponent=draw(u8s) if v >= 0x11 else None,
        flags=draw(flags(CapabilityFlags)) if v >= 0x11 else None,
        data_transfer_size=draw(u32s) if v >= 0x12 else None,
        max_spdm_msg_size=draw(u32s) if v >= 0x12 else None,
        attributes=draw(flags(CapabilitiesAttributes, 8)) if v >= 0x13 else None,
    )


def supported_algorithms(draw: Draw) -> SupportedAlgorithms:
    return SupportedAlgorithms(
        draw(flags(BaseAsymAlgo)), draw(flags(BaseHashAlgo)), draw(flags(MeasurementSpec, 8)),
        draw(flags(OtherParams, 8)), draw(flags(MelSpecification, 8)), ext_algs(draw), ext_algs(draw),
        alg_structs(draw, 0x13),
    )


def b_capabilities(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    with_block = v >= 0x13 and draw(st.booleans())
    attributes = None
    if v >= 0x13:
        attributes = CapabilitiesAttributes(draw(u8s) & ~1 | with_block)
    return Capabilities(
        v, draw(u8s), draw(flags(CapabilityFlags)),
        data_transfer_size=draw(u32s) if v >= 0x12 else None,
        max_spdm_msg_size=draw(u32s) if v >= 0x12 else None,
        attributes=attributes,
        supported_algorithms=supported_algorithms(draw) if with_block else None,
    )


def b_negotiate_algorithms(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return NegotiateAlgorithms(
        v, draw(flags(BaseAsymAlgo)), draw(flags(BaseHashAlgo)), draw(flags(MeasurementSpec, 8)),
        other_params_support=draw(flags(OtherParams, 8)) if v >= 0x12 else None,
        mel_specification=draw(flags(MelSpecification, 8)) if v >= 0x13 else None,
        ext_asym=ext_algs(draw), ext_hash=ext_algs(draw), alg_structs=alg_structs(draw, v),
    )


def b_algorithms(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return Algorithms(
        v, draw(flags(MeasurementHashAlgo)), draw(flags(BaseAsymAlgo)), draw(flags(BaseHashAlgo)),
        draw(flags(MeasurementSpec, 8)),
        other_params_selection=draw(flags(OtherParams, 8)) if v >= 0x12 else None,
        mel_specification_sel=draw(flags(MelSpecification, 8)) if v >= 0x13 else None,
        ext_asym_sel=ext_algs(draw, 1), ext_hash_sel=ext_algs(draw, 1), alg_structs=alg_structs(draw, v),
    )


def b_get_digests(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return GetDigests(v)


def b_digests(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    mask = draw(u8s)
    n = len(slots_of(mask))
    digests = tuple(draw(nbytes(ctx.hash_size)) for _ in range(n))
    key_info = None
    if v >= 0x13 and n and draw(st.booleans()):
        key_info = tuple(SlotKeyInfo(draw(u8s), draw(st.sampled_from(CertModel)), draw(flags(KeyUsage, 16)))
                         for _ in range(n))
    return Digests(v, mask, digests, draw(u8s) if v >= 0x13 else None, key_info)


def b_get_certificate(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    attrs = draw(flags(GetCertificateAttributes, 8)) if v >= 0x13 else None
    return GetCertificate(v, draw(st.integers(0, 15)), draw(u16s), draw(u16s), attrs)


def b_certificate(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    model = draw(st.sampled_from(CertModel)) if v >= 0x13 else None
    return Certificate(v, draw(st.integers(0, 15)), draw(u16s), draw(st.binary(max_size=80)), model)


def b_challenge(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return Challenge(v, draw(u8s), draw(st.sampled_from(MeasurementSummaryHashType)), draw(nbytes(32)),
                     draw(nbytes(8)) if v >= 0x13 else None)


def b_challenge_auth(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return ChallengeAuth(
        v, draw(st.integers(0, 15)), draw(u8s), draw(nbytes(ctx.hash_size)), draw(nbytes(32)),
        draw(nbytes(ctx.sig_size)), draw(nbytes(ctx.meas_summary_size)), draw(st.binary(max_size=40)),
        draw(nbytes(8)) if v >= 0x13 else None, draw(st.booleans()),
    )


def b_get_measurements(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    attrs = MeasurementAttributes(draw(st.integers(0, 0xFF)))
    signed = bool(attrs & MeasurementAttributes.GENERATE_SIGNATURE)
    return GetMeasurements(
        v, draw(u8s), attrs,
        nonce=draw(nbytes(32)) if signed else None,
        slot_id=draw(st.integers(0, 15)) if signed and v >= 0x11 else None,
        requester_context=draw(nbytes(8)) if v >= 0x13 else None,
    )


def measurement_blocks(draw: Draw) -> tuple[MeasurementBlock, ...]:
    return tuple(
        MeasurementBlock.dmtf(draw(u8s), draw(st.sampled_from(DmtfValueType)), draw(st.binary(max_size=64)),
                              raw_bit_stream=draw(st.booleans()))
        for _ in range(draw(st.integers(0, 4)))
    )


def b_measurements(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return Measurements(
        v, draw(nbytes(32)), measurement_blocks(draw),
        signature=draw(st.one_of(st.none(), nbytes(ctx.sig_size))),
        total_indices=draw(u8s), slot_id=draw(st.integers(0, 15)),
        content_changed=draw(st.sampled_from(ContentChanged)), opaque_data=draw(st.binary(max_size=40)),
        requester_context=draw(nbytes(8)) if v >= 0x13 else None,
    )


def b_error(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    code = draw(st.sampled_from(ErrorCode))
    ext: Any
    if code == ErrorCode.RESPONSE_NOT_READY:
        ext = ResponseNotReadyData(draw(u8s), draw(st.sampled_from(RequestCode)), draw(u8s), draw(u8s))
    elif code == ErrorCode.LARGE_RESPONSE:
        ext = LargeResponseData(draw(u8s))
    elif code == ErrorCode.VENDOR_DEFINED:
        vid = draw(st.binary(max_size=8))
        ext = VendorErrorData(vid, draw(st.binary(max_size=31 - len(vid))))
    else:
        ext = draw(st.binary(max_size=32))
    return ErrorResponse(v, code, draw(u8s), ext)


def b_vendor_request(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return VendorDefinedRequest(v, draw(st.sampled_from(RegistryId)), draw(st.binary(max_size=9)),
                                draw(st.binary(max_size=100)))


def b_vendor_response(draw: Draw, v: int, ctx: SpdmContext) -> SpdmMessage:
    return VendorDefinedResponse(v, draw(st.sampled_from(RegistryId)), draw(st.binary(max_size=9)),
                                 draw(st.binary(max_size=100)))


BUILDERS: dict[str, Callable[[Draw, int, SpdmContext], SpdmMessage]] = {
    "GET_VERSION": b_get_version,
    "VERSION": b_version,
    "RESPOND_IF_READY": b_respond_if_ready,
    "GET_CAPABILITIES": b_get_capabilities,
    "CAPABILITIES": b_capabilities,
    "NEGOTIATE_ALGORITHMS": b_negotiate_algorithms,
    "ALGORITHMS": b_algorithms,
    "GET_DIGESTS": b_get_digests,
    "DIGESTS": b_digests,
    "GET_CERTIFICATE": b_get_certificate,
    "CERTIFICATE": b_certificate,
    "CHALLENGE": b_challenge,
    "CHALLENGE_AUTH": b_challenge_auth,
    "GET_MEASUREMENTS": b_get_measurements,
    "MEASUREMENTS": b_measurements,
    "ERROR": b_error,
    "VENDOR_DEFINED_REQUEST": b_vendor_request,
    "VENDOR_DEFINED_RESPONSE": b_vendor_response,
}

# Messages whose last field runs to the end of the message: DOE pad bytes become part of it.
TAIL_IS_REST = {"ERROR"}


@st.composite
def any_message(draw: Draw) -> tuple[SpdmMessage, SpdmContext]:
    name = draw(st.sampled_from(sorted(BUILDERS)))
    version = draw(st.sampled_from(VERSIONS))
    ctx = draw(st.sampled_from(CONTEXTS))
    return BUILDERS[name](draw, version, ctx), ctx


def assert_decode_error_sane(exc: DecodeError, data: bytes) -> None:
    assert exc.field, "a DecodeError names its field"
    assert 0 <= exc.offset <= len(data), f"offset {exc.offset} outside the {len(data)} bytes given"


# --------------------------------------------------------------------------------------------
# Round trips: every message at every version
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(name: str, version: int, data: st.DataObject) -> None:
    ctx = data.draw(st.sampled_from(CONTEXTS))
    msg = BUILDERS[name](data.draw, version, ctx)
    raw = msg.encode(ctx)
    assert raw[0] == version and raw[1] == msg.CODE
    assert type(msg).decode(raw, ctx) == msg
    again = decode_spdm(raw, ctx)
    assert again == msg and type(again) is type(msg)
    assert again.encode(ctx) == raw
    assert again.summary().startswith(name)
    # DOE pads to a DW: up to 3 zero bytes after the message must not change it (§1.3)
    if name not in TAIL_IS_REST:
        pad = bytes(-len(raw) % 4)
        assert decode_spdm(raw + pad, ctx, allow_trailing=True) == msg


def test_every_code_of_part_a_is_registered_and_layouts_match() -> None:
    from sim.wire.spdm.common import SPDM_MESSAGES

    for cls in (GetVersion, Version, RespondIfReady, GetCapabilities, Capabilities, NegotiateAlgorithms,
                Algorithms, GetDigests, Digests, GetCertificate, Certificate, Challenge, ChallengeAuth,
                GetMeasurements, Measurements, ErrorResponse, VendorDefinedRequest, VendorDefinedResponse):
        assert SPDM_MESSAGES[cls.CODE] is cls
        cls.check_layout()
    for cls in (VersionNumber, ExtAlg, AlgStruct, SupportedAlgorithms, CertChain, MeasurementBlock,
                ResponseNotReadyData, LargeResponseData, VendorErrorData):
        cls.check_layout()


# --------------------------------------------------------------------------------------------
# Known answers
# --------------------------------------------------------------------------------------------


def test_version_example_from_protocols_2_4() -> None:
    raw = bytes.fromhex("10 04 00 00 00 03 00 10 00 11 00 12")
    msg = decode_spdm(raw)
    assert isinstance(msg, Version)
    assert msg.spdm_versions == (0x10, 0x11, 0x12)
    assert [str(e) for e in msg.entries] == ["1.0", "1.1", "1.2"]
    assert Version.for_versions(0x10, 0x11, 0x12).encode() == raw
    assert msg.summary() == "VERSION 1.0 1.1 1.2"


def test_interop_doe_payloads_get_version_and_version_1_0_to_1_4() -> None:
    get_version_object = bytes.fromhex("01 00 01 00 03 00 00 00 10 84 00 00")
    version_object = bytes.fromhex("01 00 01 00 06 00 00 00 10 04 00 00 00 05 00 10 00 11 00 12 00 13 00 14")
    assert decode_spdm(get_version_object[8:]) == GetVersion()
    assert GetVersion().encode() == get_version_object[8:]
    msg = decode_spdm(version_object[8:])
    assert isinstance(msg, Version)
    assert msg.spdm_versions == (0x10, 0x11, 0x12, 0x13, 0x14)
    assert max(msg.entries) == VersionNumber(1, 4)
    assert msg.encode() == version_object[8:]
    assert len(msg.encode()) + 8 == 4 * 6  # the DOE Length of 6 DW


def test_version_number_fields() -> None:
    assert VersionNumber(1, 2).encode() == b"\x00\x12"
    v = VersionNumber.decode(b"\x35\x12")
    assert (v.major, v.minor, v.update, v.alpha) == (1, 2, 3, 5)
    assert v.value == 0x1235 and VersionNumber.from_int(0x1235) == v and v.spdm_version == 0x12
    assert str(v) == "1.2.3.5" and str(VersionNumber.from_spdm(0x13)) == "1.3"
    assert sorted([VersionNumber(1, 3), VersionNumber(1, 0), VersionNumber(1, 2, 1)])[-1] == VersionNumber(1, 3)


def test_respond_if_ready_bytes() -> None:
    msg = RespondIfReady(0x12, RequestCode.GET_MEASUREMENTS, 7)
    assert msg.encode() == bytes.fromhex("12 ff e0 07")
    with pytest.raises(DecodeError) as err:
        decode_spdm(bytes.fromhex("12 ff 42 07"))  # 0x42 is no request code
    assert err.value.field == "request_code" and err.value.offset == 2


@pytest.mark.parametrize(("version", "req_size", "rsp_size"), [(0x10, 4, 12), (0x11, 12, 12), (0x12, 20, 20),
                                                               (0x13, 20, 20)])
def test_capabilities_sizes_per_version(version: int, req_size: int, rsp_size: int) -> None:
    wide = version >= 0x12
    req = GetCapabilities(version, ct_exponent=12 if version >= 0x11 else None,
                          flags=CapabilityFlags.CERT_CAP if version >= 0x11 else None,
                          data_transfer_size=4096 if wide else None, max_spdm_msg_size=8192 if wide else None)
    rsp = Capabilities(version, 14, CapabilityFlags.CERT_CAP | CapabilityFlags.MEAS_CAP_SIG,
                       4096 if wide else None, 8192 if wide else None)
    assert len(req.encode()) == req_size
    assert len(rsp.encode()) == rsp_size
    raw = rsp.encode()
    assert raw[5] == 14 and int.from_bytes(raw[8:12], "little") == 0x12
    if wide:
        assert raw[12:20] == struct.pack("<II", 4096, 8192)
    # a message cut to the previous version's size does not decode at this version
    if version >= 0x11:
        with pytest.raises(DecodeError):
            GetCapabilities.decode(req.encode()[:-4])


def test_capabilities_1_3_supported_algorithms_block() -> None:
    block = SupportedAlgorithms(BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384,
                                alg_structs=(AlgStruct(AlgType.DHE, DheGroup.SECP_384_R1),
                                             AlgStruct(AlgType.AEAD, AeadSuite.AES_256_GCM)))
    rsp = Capabilities(0x13, 14, CapabilityFlags.CERT_CAP, 4096, 4096, supported_algorithms=block)
    raw = rsp.encode()
    assert raw[2] == CapabilitiesAttributes.SUPPORTED_ALGORITHMS
    assert len(raw) == 20 + 30 + 2 * 4
    assert raw[20] == 2 and int.from_bytes(raw[22:24], "little") == 30 + 8  # block Param1, Length
    assert decode_spdm(raw) == rsp
    bad = bytearray(raw)
    bad[22] += 4
    with pytest.raises(DecodeError) as err:
        decode_spdm(bytes(bad))
    assert err.value.field == "supported_algorithms.length" and err.value.offset == 22
    # 1.2 has no block and no Param1 meaning: the same bit is ignored, the 20 bytes are all there is
    assert len(Capabilities(0x12, 14, CapabilityFlags.CERT_CAP, 4096, 4096).encode()) == 20


def _independent_negotiate_algorithms_1_2() -> bytes:
    """NEGOTIATE_ALGORITHMS 1.2 packed by hand from the §2.6 table."""
    structs = struct.pack("<BBH", 2, 0x20, 0x10) + struct.pack("<BBH", 3, 0x20, 0x02) \
        + struct.pack("<BBH", 4, 0x20, 0x80) + struct.pack("<BBH", 5, 0x20, 0x01)
    length = 32 + len(structs)
    return (struct.pack("<BBBBHBBII", 0x12, 0xE3, 4, 0, length, 0x01, 0x02, 0x90, 0x02)
            + bytes(12) + struct.pack("<BBBB", 0, 0, 0, 0) + structs)


def test_negotiate_algorithms_known_bytes_and_length() -> None:
    raw = _independent_negotiate_algorithms_1_2()
    msg = NegotiateAlgorithms(
        0x12, BaseAsymAlgo.ECDSA_P256 | BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384,
        other_params_support=OtherParams.OPAQUE_DATA_FMT1,
        alg_structs=(AlgStruct(AlgType.DHE, DheGroup.SECP_384_R1), AlgStruct(AlgType.AEAD, AeadSuite.AES_256_GCM),
                     AlgStruct(AlgType.REQ_BASE_ASYM_ALG, BaseAsymAlgo.ECDSA_P384),
                     AlgStruct(AlgType.KEY_SCHEDULE, KeyScheduleAlgo.SPDM)),
    )
    assert msg.encode() == raw and len(raw) == 48
    decoded = decode_spdm(raw)
    assert decoded == msg
    assert isinstance(decoded, NegotiateAlgorithms)
    dhe = decoded.struct(AlgType.DHE)
    assert dhe is not None and isinstance(dhe.supported, DheGroup)
    assert decoded.limit_violations() == []


def test_algorithms_lengths_and_context() -> None:
    ext = (ExtAlg(RegistryId.TCG, 0x0B),)
    for version, structs in ((0x10, ()), (0x11, (AlgStruct(AlgType.DHE, DheGroup.SECP_256_R1),)),
                             (0x12, (AlgStruct(AlgType.DHE, DheGroup.SECP_384_R1),
                                     AlgStruct(AlgType.AEAD, AeadSuite.AES_256_GCM),
                                     AlgStruct(AlgType.REQ_BASE_ASYM_ALG, BaseAsymAlgo.ECDSA_P384),
                                     AlgStruct(AlgType.KEY_SCHEDULE, KeyScheduleAlgo.SPDM, ext)))):
        rsp = Algorithms(version, MeasurementHashAlgo.SHA_384, BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384,
                         ext_asym_sel=ext, alg_structs=structs)
        raw = rsp.encode()
        expected = 36 + 4 + sum(4 + 4 * len(s.external) for s in structs)
        assert len(raw) == expected == int.from_bytes(raw[4:6], "little")
        assert raw[2] == len(structs) and raw[32] == 1 and raw[33] == 0
        req = NegotiateAlgorithms(version, BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384, ext_hash=ext,
                                  alg_structs=structs)
        assert len(req.encode()) == 32 + 4 + sum(4 + 4 * len(s.external) for s in structs)
    ctx = rsp.to_context()
    assert (ctx.hash_size, ctx.sig_size, ctx.dhe_size, ctx.req_sig_size) == (48, 96, 96, 96)
    assert rsp.aead_suite == AeadSuite.AES_256_GCM and rsp.key_schedule == KeyScheduleAlgo.SPDM
    with pytest.raises(ValueError):
        Algorithms(0x12, MeasurementHashAlgo.SHA_384, BaseAsymAlgo(0), BaseHashAlgo.SHA_384).to_context()


def test_algorithms_1_0_has_no_alg_structs() -> None:
    with pytest.raises(ValueError):
        NegotiateAlgorithms(0x10, BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256,
                            alg_structs=(AlgStruct(AlgType.DHE, DheGroup.SECP_256_R1),))
    raw = bytearray(NegotiateAlgorithms(0x10, BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256).encode())
    raw[2] = 3  # Param1 is reserved in 1.0: ignored, no AlgStructs read
    msg = decode_spdm(bytes(raw))
    assert isinstance(msg, NegotiateAlgorithms) and msg.alg_structs == ()


def test_negotiate_algorithms_limit_violations() -> None:
    many = tuple(ExtAlg(RegistryId.DMTF, i) for i in range(9))
    msg = NegotiateAlgorithms(0x10, BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256, ext_asym=many)
    problems = msg.limit_violations()
    assert any("Length" in p for p in problems) and any("extended" in p for p in problems)
    unordered = NegotiateAlgorithms(0x12, BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256,
                                    alg_structs=(AlgStruct(AlgType.AEAD, 2), AlgStruct(AlgType.DHE, 8)))
    assert any("ascending" in p for p in unordered.limit_violations())
    kem = NegotiateAlgorithms(0x13, BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256,
                              alg_structs=(AlgStruct(AlgType.KEM, 1),))
    assert any("1.4" in p for p in kem.limit_violations())


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_wrong_length_field_is_a_length_error(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["NEGOTIATE_ALGORITHMS", "ALGORITHMS"]))
    version = data.draw(st.sampled_from(VERSIONS))
    msg = BUILDERS[name](data.draw, version, CONTEXTS[0])
    raw = bytearray(msg.encode())
    wrong = data.draw(u16s.filter(lambda n: n != len(raw)))
    raw[4:6] = wrong.to_bytes(2, "little")
    with pytest.raises(DecodeError) as err:
        decode_spdm(bytes(raw))
    assert err.value.field == "length" and err.value.offset == 4


def test_alg_struct_fixed_count_must_be_two() -> None:
    raw = bytearray(_independent_negotiate_algorithms_1_2())
    raw[33] = 0x30
    with pytest.raises(DecodeError) as err:
        decode_spdm(bytes(raw))
    assert err.value.field == "alg_structs[0].alg_count" and err.value.offset == 33
    raw[33] = 0x21  # one external entry announced but the next struct's bytes are read as it, then short
    with pytest.raises(DecodeError):
        decode_spdm(bytes(raw))


# ---- certificates ----


def _cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey) -> bytes:
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(len(name))
            .not_valid_before(datetime.datetime(2024, 1, 1)).not_valid_after(datetime.datetime(2034, 1, 1))
            .sign(issuer_key, hashes.SHA384()))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def der_chain() -> tuple[bytes, ...]:
    root_key, inter_key, leaf_key = (ec.derive_private_key(k, ec.SECP384R1()) for k in (11, 22, 33))
    return (_cert("root", root_key, "root", root_key), _cert("intermediate", inter_key, "root", root_key),
            _cert("leaf", leaf_key, "intermediate", inter_key))


def test_cert_chain_layout_and_split(der_chain: tuple[bytes, ...]) -> None:
    ctx = SpdmContext(hash_size=48)
    der = b"".join(der_chain)
    root_hash = hashlib.sha384(der_chain[0]).digest()
    chain = CertChain(root_hash, der)
    raw = chain.encode(ctx)
    assert len(raw) == 4 + 48 + len(der)
    assert raw[:4] == len(raw).to_bytes(2, "little") + b"\x00\x00" and raw[4:52] == root_hash and raw[52:] == der
    assert CertChain.decode(raw, ctx) == chain
    assert chain.certificates == der_chain
    assert chain.root_certificate == der_chain[0] and chain.leaf_certificate == der_chain[2]
    for cert in chain.certificates:  # the split pieces are whole certificates
        x509.load_der_x509_certificate(cert)
    # the digest DIGESTS carries is Hash(the whole chain, header included)
    digests = Digests(0x12, 0b1, (hashlib.sha384(raw).digest(),))
    assert Digests.decode(digests.encode(ctx), ctx).by_slot() == {0: hashlib.sha384(raw).digest()}
    bad = bytearray(raw)
    bad[0:2] = (len(raw) - 1).to_bytes(2, "little")
    with pytest.raises(DecodeError):
        CertChain.decode(bytes(bad), ctx)


def test_split_der_errors(der_chain: tuple[bytes, ...]) -> None:
    der = b"".join(der_chain)
    with pytest.raises(DecodeError) as err:
        split_der_certificates(der[:-1])
    assert err.value.field == "der_chain[2]"
    with pytest.raises(DecodeError) as err:
        split_der_certificates(der_chain[0] + b"\x31\x00")
    assert err.value.field == "der_chain[1]" and err.value.offset == len(der_chain[0])
    with pytest.raises(DecodeError):
        split_der_certificates(b"\x30\x80\x00\x00")  # indefinite length is not DER
    assert split_der_certificates(b"") == ()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=40))
def test_split_der_fuzz(blob: bytes) -> None:
    try:
        parts = split_der_certificates(blob)
    except DecodeError as exc:
        assert_decode_error_sane(exc, blob)
    else:
        assert b"".join(parts) == blob


def test_get_certificate_and_certificate_bytes() -> None:
    req = GetCertificate(0x12, 0, 0, 1024)
    assert req.encode() == bytes.fromhex("12 82 00 00 00 00 00 04")
    assert req.summary() == "GET_CERTIFICATE slot=0 offset=0 length=1024"
    req13 = GetCertificate(0x13, 3, 0x100, 0x200, GetCertificateAttributes.SLOT_SIZE_REQUESTED)
    assert req13.encode() == bytes.fromhex("13 82 03 01 00 01 00 02")
    rsp = Certificate(0x13, 3, 0x1234, b"\xaa\xbb", CertModel.ALIAS_CERT)
    assert rsp.encode() == bytes.fromhex("13 02 03 02 02 00 34 12 aa bb")
    with pytest.raises(DecodeError) as err:
        decode_spdm(bytes.fromhex("13 02 03 02 03 00 34 12 aa bb"))  # PortionLength 3, only 2 bytes
    assert err.value.field == "cert_chain" and err.value.offset == 8


def test_digests_slot_masks() -> None:
    ctx = SpdmContext(hash_size=32)
    d = Digests(0x13, 0b1000_0010, (b"\x01" * 32, b"\x02" * 32), supported_slot_mask=0xFF)
    raw = d.encode(ctx)
    assert raw[:4] == bytes.fromhex("13 01 ff 82") and len(raw) == 4 + 64
    assert d.by_slot() == {1: b"\x01" * 32, 7: b"\x02" * 32}
    with pytest.raises(ValueError):
        Digests(0x12, 0b11, (b"\x01" * 32,))
    with pytest.raises(DecodeError):
        Digests.decode(raw[:-1], ctx)
    # 1.2: Param1 is reserved and ignored
    assert Digests.decode(bytes.fromhex("12 01 55 01") + b"\x07" * 32, ctx).supported_slot_mask is None
    # 1.3 MultiKeyConn arrays: KeyPairID[n], CertificateInfo[n], KeyUsageMask[n]
    mk = Digests(0x13, 0b11, (b"\x01" * 32, b"\x02" * 32), 0x03,
                 (SlotKeyInfo(1, CertModel.DEVICE_CERT, KeyUsage.CHALLENGE_USE),
                  SlotKeyInfo(2, CertModel.GENERIC_CERT, KeyUsage.KEY_EX_USE | KeyUsage.MEASUREMENT_USE)))
    tail = mk.encode(ctx)[4 + 64:]
    assert tail == bytes.fromhex("01 02 01 03 02 00 05 00")
    assert Digests.decode(mk.encode(ctx), ctx) == mk


# ---- challenge ----


@pytest.mark.parametrize("version", VERSIONS)
def test_challenge_sizes_and_unsigned_bytes(version: int) -> None:
    ch = Challenge(version, 0, MeasurementSummaryHashType.ALL, bytes(range(32)),
                   b"ctx-8byt" if version >= 0x13 else None)
    assert len(ch.encode()) == (44 if version >= 0x13 else 36)
    ctx = SpdmContext(hash_size=48, sig_size=96, meas_summary_size=48)
    auth = ChallengeAuth(version, 0, 0x01, b"\x11" * 48, b"\x22" * 32, b"\x33" * 96, b"\x44" * 48, b"opaque",
                         b"ctx-8byt" if version >= 0x13 else None)
    raw = auth.encode(ctx)
    assert len(raw) == 4 + 48 + 32 + 48 + 2 + 6 + (8 if version >= 0x13 else 0) + 96
    assert auth.encode_without_signature(ctx) == raw[:-96]
    assert raw[4 + 48 + 32 + 48:4 + 48 + 32 + 48 + 2] == b"\x06\x00"
    # without a measurement summary the same bytes are H shorter
    assert len(ChallengeAuth(version, 0, 1, b"\x11" * 48, b"\x22" * 32, b"\x33" * 96, b"", b"opaque",
                             b"ctx-8byt" if version >= 0x13 else None).encode(ctx.with_(meas_summary_size=0))) \
        == len(raw) - 48


def test_challenge_auth_opaque_limit() -> None:
    ctx = SpdmContext(hash_size=32, sig_size=64)
    head = bytes.fromhex("12 03 00 01") + bytes(32 + 32)
    with pytest.raises(DecodeError) as err:
        decode_spdm(head + (1025).to_bytes(2, "little") + bytes(1025 + 64), ctx)
    assert err.value.field == "opaque_data"
    with pytest.raises(EncodeError):
        ChallengeAuth(0x12, 0, 1, bytes(32), bytes(32), bytes(64), b"", bytes(1025)).encode(ctx)


# ---- measurements ----


@pytest.mark.parametrize(("version", "signed", "size"), [
    (0x10, False, 4), (0x11, False, 4), (0x12, False, 4), (0x13, False, 12),
    (0x10, True, 36), (0x11, True, 37), (0x12, True, 37), (0x13, True, 45),
])
def test_get_measurements_sizes(version: int, signed: bool, size: int) -> None:
    attrs = MeasurementAttributes.GENERATE_SIGNATURE if signed else MeasurementAttributes(0)
    msg = GetMeasurements(version, MeasurementOperation.ALL, attrs, nonce=bytes(32) if signed else None,
                          slot_id=2 if signed and version >= 0x11 else None,
                          requester_context=bytes(8) if version >= 0x13 else None)
    raw = msg.encode()
    assert len(raw) == size and raw[3] == 0xFF
    if signed and version >= 0x11:
        assert raw[36] == 2
    assert decode_spdm(raw) == msg


def test_measurement_block_bytes() -> None:
    block = MeasurementBlock.dmtf(1, DmtfValueType.MUTABLE_FIRMWARE, b"\xab" * 48)
    raw = block.encode()
    assert raw[:7] == bytes.fromhex("01 01 33 00 01 30 00") and raw[7:] == b"\xab" * 48
    raw_stream = MeasurementBlock.dmtf(0xFE, DmtfValueType.DEVICE_MODE, bytes(16), raw_bit_stream=True).encode()
    assert raw_stream[4] == 0x85
    decoded = MeasurementBlock.decode(raw_stream)
    assert decoded.raw_bit_stream and decoded.value_type == DmtfValueType.DEVICE_MODE and decoded.index == 0xFE
    with pytest.raises(DecodeError) as err:  # MeasurementSize disagrees with the DMTF value size
        MeasurementBlock.decode(raw[:2] + (0x34).to_bytes(2, "little") + raw[4:] + b"\x00")
    assert err.value.field.startswith("measurement")
    with pytest.raises(DecodeError):  # value type 0x7F is not defined
        MeasurementBlock.decode(bytes.fromhex("01 01 03 00 7f 00 00"))


def test_measurements_layout_and_signature_presence() -> None:
    ctx = SpdmContext(hash_size=48, sig_size=96)
    blocks = (MeasurementBlock.dmtf(1, DmtfValueType.IMMUTABLE_ROM, b"\x01" * 48),
              MeasurementBlock.dmtf(2, DmtfValueType.MUTABLE_FIRMWARE, b"\x02" * 48))
    unsigned = Measurements(0x12, b"\x5a" * 32, blocks, content_changed=ContentChanged.UNCHANGED, slot_id=0)
    raw = unsigned.encode(ctx)
    record = unsigned.record(ctx)
    assert raw[4] == 2 and int.from_bytes(raw[5:8], "little") == len(record) == 2 * 55
    assert raw[3] == 0x20 and raw[8:8 + len(record)] == record
    assert len(raw) == 8 + len(record) + 32 + 2
    assert decode_spdm(raw, ctx) == unsigned and unsigned.encode_without_signature(ctx) == raw
    signed = Measurements(0x13, b"\x5a" * 32, blocks, signature=b"\x77" * 96, slot_id=3,
                          requester_context=b"R" * 8, opaque_data=b"op")
    raw = signed.encode(ctx)
    assert len(raw) == 8 + len(record) + 32 + 2 + 2 + 8 + 96
    assert decode_spdm(raw, ctx) == signed
    assert signed.encode_without_signature(ctx) == raw[:-96]
    assert decode_spdm(signed.encode_without_signature(ctx), ctx) == Measurements(
        0x13, b"\x5a" * 32, blocks, slot_id=3, requester_context=b"R" * 8, opaque_data=b"op")
    # neither nothing nor S bytes after the fixed fields: strict decode refuses the leftover
    with pytest.raises(DecodeError) as err:
        decode_spdm(raw[:-1], ctx)
    assert err.value.field == "(end)"
    # total count reply (operation 0): Param1 carries the count, no blocks
    count = Measurements(0x12, bytes(32), total_indices=5)
    assert count.encode(ctx)[2:8] == bytes.fromhex("05 00 00 00 00 00")


def test_measurements_block_count_mismatch() -> None:
    ctx = SpdmContext(hash_size=32, sig_size=64)
    msg = Measurements(0x12, bytes(32), (MeasurementBlock.dmtf(1, DmtfValueType.VERSION, b"1.0"),))
    raw = bytearray(msg.encode(ctx))
    raw[4] = 2
    with pytest.raises(DecodeError) as err:
        decode_spdm(bytes(raw), ctx)
    assert err.value.field == "number_of_blocks" and err.value.offset == 4


# ---- error, vendor ----


def test_error_response_not_ready_typed() -> None:
    raw = bytes.fromhex("12 7f 42 00 0c e0 03 02")
    msg = decode_spdm(raw)
    assert isinstance(msg, ErrorResponse) and msg.error_code == ErrorCode.RESPONSE_NOT_READY
    ext = msg.extended
    assert isinstance(ext, ResponseNotReadyData)
    assert (ext.rd_exponent, ext.request_code, ext.token, ext.rdtm) == (12, RequestCode.GET_MEASUREMENTS, 3, 2)
    assert ext.rdt_us == 4096 and ext.wait_us == 8192
    assert msg.encode() == raw
    with pytest.raises(DecodeError) as err:
        decode_spdm(raw[:-1])
    assert err.value.field == "extended.rdtm"
    with pytest.raises(DecodeError):
        decode_spdm(raw + b"\x00")  # strict: ResponseNotReady data is exactly 4 bytes
    assert decode_spdm(raw + b"\x00", allow_trailing=True) == msg


def test_error_other_codes() -> None:
    assert decode_spdm(bytes.fromhex("12 7f 0f 00 09")) == ErrorResponse(0x12, ErrorCode.LARGE_RESPONSE,
                                                                          extended=LargeResponseData(9))
    unsupported = ErrorResponse(0x11, ErrorCode.UNSUPPORTED_REQUEST, RequestCode.KEY_EXCHANGE)
    assert unsupported.encode() == bytes.fromhex("11 7f 07 e4")
    assert unsupported.summary() == "ERROR UNSUPPORTED_REQUEST data=0xe4"
    vendor = ErrorResponse(0x12, ErrorCode.VENDOR_DEFINED, 0, VendorErrorData(b"\x01\x00", b"\xde\xad"))
    assert vendor.encode() == bytes.fromhex("12 7f ff 00 02 01 00 de ad")
    assert decode_spdm(vendor.encode()) == vendor
    with pytest.raises(DecodeError) as err:
        decode_spdm(bytes.fromhex("12 7f 05 00") + bytes(33))
    assert err.value.field == "extended"
    with pytest.raises(DecodeError) as err:
        decode_spdm(bytes.fromhex("12 7f 02 00"))  # 0x02 is no ErrorCode
    assert err.value.field == "error_code"
    with pytest.raises(ValueError):
        ErrorResponse(0x12, ErrorCode.RESPONSE_NOT_READY)


def test_vendor_defined_protocols_6_1_example() -> None:
    raw = bytes.fromhex("12 fe 00 00 03 00 02 01 00 04 00 00 00 00 00")
    msg = decode_spdm(raw)
    assert msg == VendorDefinedRequest(0x12, RegistryId.PCISIG, b"\x01\x00", b"\x00\x00\x00\x00")
    assert msg.encode() == raw
    assert msg.summary() == "VENDOR_DEFINED_REQUEST std=PCISIG vendor=0100 len=4"
    rsp = VendorDefinedResponse(0x12, RegistryId.PCISIG, b"\x01\x00", b"\x00\x01")
    assert rsp.encode()[:2] == b"\x12\x7e" and decode_spdm(rsp.encode()) == rsp
    with pytest.raises(DecodeError) as err:
        decode_spdm(raw[:-1])
    assert err.value.field == "payload"


# --------------------------------------------------------------------------------------------
# Fuzz: only DecodeError escapes, and whatever decodes is self-consistent
# --------------------------------------------------------------------------------------------

PART_A_CODES = sorted({0x84, 0x04, 0xFF, 0xE1, 0x61, 0xE3, 0x63, 0x81, 0x01, 0x82, 0x02, 0x83, 0x03, 0xE0, 0x60,
                       0x7F, 0xFE, 0x7E})


def _decode_or_error(raw: bytes, ctx: SpdmContext) -> SpdmMessage | None:
    try:
        msg = decode_spdm(raw, ctx)
    except DecodeError as exc:
        assert_decode_error_sane(exc, raw)
        return None
    again = decode_spdm(msg.encode(ctx), ctx)  # decoded values re-encode to something equally valid
    assert again == msg
    return msg


@settings(max_examples=300, deadline=None)
@given(code=st.sampled_from(PART_A_CODES), version=st.sampled_from((0x10, 0x11, 0x12, 0x13, 0x14, 0x00, 0xFF)),
       body=st.binary(max_size=120), ctx=st.sampled_from(CONTEXTS))
def test_fuzz_random_bodies(code: int, version: int, body: bytes, ctx: SpdmContext) -> None:
    _decode_or_error(bytes([version, code]) + body, ctx)


@settings(max_examples=200, deadline=None)
@given(pair=any_message(), data=st.data())
def test_fuzz_truncations(pair: tuple[SpdmMessage, SpdmContext], data: st.DataObject) -> None:
    msg, ctx = pair
    raw = msg.encode(ctx)
    cut = data.draw(st.integers(0, len(raw) - 1))
    short = raw[:cut]
    decoded = _decode_or_error(short, ctx)
    if decoded is not None:
        # only a message whose tail is optional or open-ended may survive a cut, and then exactly as cut
        assert decoded.encode(ctx) == short
        assert isinstance(decoded, ErrorResponse | Measurements | Digests)


@settings(max_examples=300, deadline=None)
@given(pair=any_message(), data=st.data())
def test_fuzz_mutations(pair: tuple[SpdmMessage, SpdmContext], data: st.DataObject) -> None:
    msg, ctx = pair
    raw = bytearray(msg.encode(ctx))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(1 if len(raw) > 1 else 0, len(raw) - 1))  # keep the code byte mostly
        raw[i] = data.draw(u8s)
    tail = data.draw(st.binary(max_size=6))
    _decode_or_error(bytes(raw) + tail, ctx)


def test_empty_and_tiny_inputs() -> None:
    for raw in (b"", b"\x12", b"\x12\xe3", b"\x12\x63\x00"):
        with pytest.raises(DecodeError):
            decode_spdm(raw)
