"""The SPDM responder driven by a tiny in-test requester that verifies every signature and VerifyData.

Flows at 1.2 and 1.3 (VCA also at 1.0 and 1.1), every error path the responder promises, session
life cycle (key update, heartbeat, end, reset, GET_VERSION mid-session, decrypt errors) and
hypothesis fuzzing of ``handle`` / ``handle_secured``.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.crypto.algorithms import AeadSuite, BaseAsymAlgo, BaseHashAlgo, DheGroup, MeasurementHashAlgo
from sim.crypto.dhe import EcdheKeyPair
from sim.crypto.hashes import digest
from sim.crypto.identity import Identity, build_identity
from sim.crypto.secrets import SecretClass, SecretList
from sim.crypto.signing import SigningContext
from sim.protocols.env import CryptoOp, ProtocolEnv
from sim.protocols.spdm.profile import DeviceMeasurements, ResponderProfile, make_profile
from sim.protocols.spdm.responder import (
    REQUEST_TABLE,
    ConnectionNegotiated,
    ConnectionState,
    EndReason,
    SessionEnded,
    SessionEstablished,
    SpdmResponder,
    VersionReset,
)
from sim.wire.codec import DecodeError
from sim.wire.pcisig import PCISIG_VENDOR_ID, STANDARD_ID_PCISIG
from sim.wire.spdm import decode_spdm
from sim.wire.spdm.algorithms import Algorithms, AlgStruct, NegotiateAlgorithms, OtherParams
from sim.wire.spdm.capabilities import Capabilities, GetCapabilities
from sim.wire.spdm.certificates import Certificate, GetCertificate, GetCertificateAttributes, GetDigests
from sim.wire.spdm.challenge import Challenge
from sim.wire.spdm.common import (
    AlgType,
    CapabilityFlags,
    ErrorCode,
    KeyScheduleAlgo,
    MeasurementSpec,
    MeasurementSummaryHashType,
    RegistryId,
    RequestCode,
    SpdmContext,
    SpdmMessage,
)
from sim.wire.spdm.error import ErrorResponse, ResponseNotReadyData
from sim.wire.spdm.key_exchange import KeyExchange, SessionPolicy
from sim.wire.spdm.measurements import (
    ContentChanged,
    DmtfValueType,
    GetMeasurements,
    MeasurementAttributes,
    MeasurementBlock,
    Measurements,
)
from sim.wire.spdm.opaque import supported_versions_opaque
from sim.wire.spdm.session import (
    EndSession,
    EndSessionAck,
    Heartbeat,
    HeartbeatAck,
    KeyUpdate,
    KeyUpdateAck,
    KeyUpdateOperation,
)
from sim.wire.spdm.vendor import VendorDefinedRequest, VendorDefinedResponse
from sim.wire.spdm.version import GetVersion, RespondIfReady, Version
from tests.protocols.spdm_responder_peer import REQ_FLAGS, Peer, PeerSession, error_of

P384, P256 = BaseAsymAlgo.ECDSA_P384, BaseAsymAlgo.ECDSA_P256
SHA384, SHA256 = BaseHashAlgo.SHA_384, BaseHashAlgo.SHA_256
ALL = MeasurementSummaryHashType.ALL
TCB = MeasurementSummaryHashType.TCB


@pytest.fixture(scope="module")
def ident() -> Identity:
    return build_identity(b"tiosim-test", "dev0", P384, SHA384)


@pytest.fixture(scope="module")
def ident256() -> Identity:
    return build_identity(b"tiosim-test", "dev1", P256, SHA256)


def responder(identity: Identity, profile: str | ResponderProfile = "default-p384", *,
              sink: SecretList | None = None) -> SpdmResponder:
    prof = make_profile(profile, "dev0") if isinstance(profile, str) else profile
    env = ProtocolEnv.for_test("dev0.dsm", seed=7)
    env.sink = sink
    return SpdmResponder(prof, identity, env)


def peer(identity: Identity, version: int = 0x12, profile: str | ResponderProfile = "default-p384",
         **kw: object) -> Peer:
    return Peer(responder(identity, profile), identity, version=version, **kw)  # type: ignore[arg-type]


def err(data: bytes | None, code: ErrorCode, version: int | None = None) -> ErrorResponse:
    msg = error_of(data)
    assert msg.error_code == code, msg.summary()
    if version is not None:
        assert msg.version == version
    return msg


def secured_error(p: Peer, ps: PeerSession, request: bytes, code: ErrorCode) -> None:
    err(p.secured(ps, request), code)


# --- VCA ------------------------------------------------------------------------------------------


def test_version_lists_the_profile(ident: Identity) -> None:
    rsp = responder(ident)
    v = decode_spdm(rsp.handle(GetVersion().encode()) or b"")
    assert isinstance(v, Version) and v.version == 0x10
    assert v.spdm_versions == (0x10, 0x11, 0x12, 0x13)
    assert rsp.handle(GetVersion().encode()) == bytes.fromhex("1004000000040010001100120013")
    assert rsp.state is ConnectionState.AFTER_VERSION
    assert rsp.drain_events() == [VersionReset(), VersionReset()]


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
def test_vca_at_every_version(ident: Identity, version: int) -> None:
    p = peer(ident, version)
    algs = p.vca()
    assert algs.version == version
    assert p.rsp.version == version and p.rsp.state is ConnectionState.NEGOTIATED
    assert p.rsp.transcript.vca == p.a  # both sides hold the same A
    assert algs.measurement_hash_algo == MeasurementHashAlgo.SHA_384
    assert algs.measurement_specification_sel == MeasurementSpec.DMTF
    if version >= 0x11:
        assert algs.dhe_group == DheGroup.SECP_384_R1 and algs.aead_suite == AeadSuite.AES_256_GCM
        assert algs.key_schedule == KeyScheduleAlgo.SPDM and algs.req_base_asym_alg is None  # no mutual auth
    else:
        assert algs.alg_structs == ()
    if version >= 0x12:
        assert algs.other_params_selection == OtherParams.OPAQUE_DATA_FMT1


def test_capabilities_are_masked_per_version_and_never_overclaim(ident: Identity) -> None:
    for version in (0x10, 0x11, 0x12, 0x13):
        rsp = responder(ident)
        rsp.handle(GetVersion().encode())
        caps = GetCapabilities(version, ct_exponent=10 if version >= 0x11 else None,
                               flags=REQ_FLAGS if version >= 0x11 else None,
                               data_transfer_size=4096 if version >= 0x12 else None,
                               max_spdm_msg_size=4096 if version >= 0x12 else None)
        msg = decode_spdm(rsp.handle(caps.encode()) or b"")
        assert isinstance(msg, Capabilities) and msg.ct_exponent == 14
        forbidden = (CapabilityFlags.MUT_AUTH_CAP | CapabilityFlags.PSK_CAP | CapabilityFlags.ENCAP_CAP
                     | CapabilityFlags.CHUNK_CAP | CapabilityFlags.PSK_CAP_WITH_CONTEXT)
        assert not msg.flags & forbidden
        if version == 0x10:
            assert msg.flags == CapabilityFlags.CERT_CAP | CapabilityFlags.CHAL_CAP | CapabilityFlags.MEAS_CAP_SIG \
                | CapabilityFlags.MEAS_FRESH_CAP
        else:
            assert msg.flags & CapabilityFlags.KEY_EX_CAP
        assert (msg.data_transfer_size == 4096) == (version >= 0x12)


def test_algorithm_selection_uses_the_profile_priority(ident256: Identity) -> None:
    p = peer(ident256, 0x12, "p256", aead=AeadSuite.AES_128_GCM | AeadSuite.CHACHA20_POLY1305 | AeadSuite.AES_256_GCM)
    algs = p.vca()
    assert algs.aead_suite == AeadSuite.AES_256_GCM  # one bit: the first of the profile's order
    assert algs.base_asym_sel == P256 and algs.dhe_group == DheGroup.SECP_256_R1
    p2 = peer(ident256, 0x12, "p256")
    p2.aead = AeadSuite.AES_128_GCM | AeadSuite.CHACHA20_POLY1305
    assert p2.vca().aead_suite == AeadSuite.AES_128_GCM
    p2.aead = AeadSuite.AES_128_GCM
    p2.connect()  # a whole session under AES-128-GCM


def test_no_common_algorithm_is_invalid_request(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.raw(GetVersion().encode())
    p.raw(GetCapabilities(0x12, 10, REQ_FLAGS, 4096, 4096).encode())
    structs = (AlgStruct(AlgType.DHE, DheGroup.SECP_384_R1), AlgStruct(AlgType.AEAD, AeadSuite.AES_256_GCM),
               AlgStruct(AlgType.KEY_SCHEDULE, KeyScheduleAlgo.SPDM))
    no_asym = NegotiateAlgorithms(0x12, P256, SHA384, other_params_support=OtherParams.OPAQUE_DATA_FMT1,
                                  alg_structs=structs)
    err(p.raw(no_asym.encode()), ErrorCode.INVALID_REQUEST, 0x12)
    no_dhe = dataclasses.replace(no_asym, base_asym_algo=P384,
                                 alg_structs=(AlgStruct(AlgType.DHE, DheGroup.FFDHE_2048),) + structs[1:])
    err(p.raw(no_dhe.encode()), ErrorCode.INVALID_REQUEST)
    unsorted = dataclasses.replace(no_asym, base_asym_algo=P384, alg_structs=(structs[1], structs[0], structs[2]))
    err(p.raw(unsorted.encode()), ErrorCode.INVALID_REQUEST)
    ok = dataclasses.replace(no_asym, base_asym_algo=P384 | P256)
    assert isinstance(decode_spdm(p.raw(ok.encode()) or b""), Algorithms)  # still usable afterwards


@pytest.mark.parametrize(("caps", "why"), [
    (GetCapabilities(0x12, 10, REQ_FLAGS, 41, 41), "DataTransferSize below 42"),
    (GetCapabilities(0x12, 10, REQ_FLAGS, 4096, 8192), "DTS != MaxSPDMmsgSize without CHUNK_CAP"),
    (GetCapabilities(0x12, 10, CapabilityFlags.ENCRYPT_CAP | CapabilityFlags.CERT_CAP, 4096, 4096),
     "ENCRYPT_CAP without KEY_EX_CAP or PSK_CAP"),
    (GetCapabilities(0x12, 40, REQ_FLAGS, 4096, 4096), "CTExponent above 31"),
])
def test_bad_capabilities(ident: Identity, caps: GetCapabilities, why: str) -> None:
    rsp = responder(ident)
    rsp.handle(GetVersion().encode())
    err(rsp.handle(caps.encode()), ErrorCode.INVALID_REQUEST)
    assert rsp.state is ConnectionState.AFTER_VERSION, why
    assert isinstance(decode_spdm(rsp.handle(GetCapabilities(0x12, 10, REQ_FLAGS, 4096, 4096).encode()) or b""),
                      Capabilities)


# --- certificates, challenge, measurements ---------------------------------------------------------


@pytest.mark.parametrize("version", [0x12, 0x13])
@pytest.mark.parametrize("portion", [0x40, 0x200, 0xFFFF])
def test_digests_and_certificate_portions(ident: Identity, version: int, portion: int) -> None:
    p = peer(ident, version)
    p.vca()
    d = p.digests()
    assert d.slot_mask == 0x01 and d.digests == (digest(SHA384, ident.spdm_cert_chain(SHA384)),)
    if version >= 0x13:
        assert d.supported_slot_mask == 0x01
    chain = p.certificate(0, portion)
    assert chain == ident.spdm_cert_chain(SHA384)
    assert p.rsp.state is ConnectionState.AFTER_CERTIFICATE


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
@pytest.mark.parametrize("hash_type", list(MeasurementSummaryHashType))
def test_challenge(ident: Identity, version: int, hash_type: MeasurementSummaryHashType) -> None:
    p = peer(ident, version)
    p.vca()
    p.digests()
    p.certificate()
    auth = p.challenge(0, hash_type)  # signature over M1 verified inside
    assert auth.slot_mask == 0x01 and p.rsp.state is ConnectionState.AUTHENTICATED
    store = p.rsp.profile.measurements
    if hash_type is MeasurementSummaryHashType.NONE:
        assert auth.measurement_summary_hash == b""
    else:
        blocks = [it.block(MeasurementHashAlgo.SHA_384, raw=False) for it in store.items(version)
                  if hash_type is ALL or it.value_type is DmtfValueType.IMMUTABLE_ROM]
        assert auth.measurement_summary_hash == digest(SHA384, b"".join(b.encode() for b in blocks))
    # a second challenge without new digests/certificate: M1 is A ‖ C only (B was reset)
    p.challenge(0, MeasurementSummaryHashType.NONE)


def test_challenge_errors(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.vca()
    nonce = bytes(32)
    err(p.raw(Challenge(0x12, 3, MeasurementSummaryHashType.NONE, nonce).encode()), ErrorCode.INVALID_REQUEST)
    err(p.raw(Challenge(0x12, 0xFF, MeasurementSummaryHashType.NONE, nonce).encode()), ErrorCode.INVALID_REQUEST)
    err(p.raw(Challenge(0x12, 0, MeasurementSummaryHashType.NONE, nonce).encode()[:20]), ErrorCode.INVALID_REQUEST)
    bad_type = bytearray(Challenge(0x12, 0, MeasurementSummaryHashType.NONE, nonce).encode())
    bad_type[3] = 0x07
    err(p.raw(bytes(bad_type)), ErrorCode.INVALID_REQUEST)
    p.digests()
    p.certificate()
    p.challenge()  # still usable, and M1 is right after the refused attempts


@pytest.mark.parametrize("version", [0x11, 0x12, 0x13])
def test_measurements(ident: Identity, version: int) -> None:
    p = peer(ident, version)
    p.vca()
    count = p.measurements(0x00, signed=False)
    visible = 6 if version >= 0x12 else 4  # device mode and version blocks exist from 1.2 on
    assert count.total_indices == visible and count.blocks == ()
    one = p.measurements(2, signed=False)
    assert [b.index for b in one.blocks] == [2] and one.blocks[0].value_type is DmtfValueType.MUTABLE_FIRMWARE
    assert not one.blocks[0].raw_bit_stream and len(one.blocks[0].value) == 48
    signed_all = p.measurements(0xFF, signed=True)  # L1/L2 covers the two unsigned exchanges too
    assert [b.index for b in signed_all.blocks] == ([1, 2, 3, 4, 5, 0xFE] if version >= 0x12 else [1, 2, 3, 4])
    if version >= 0x12:
        mode = signed_all.blocks[-1]
        assert mode.raw_bit_stream and mode.value_type is DmtfValueType.DEVICE_MODE and len(mode.value) == 16
        raw = p.measurements(2, signed=True, raw=True)
        assert raw.blocks[0].raw_bit_stream and raw.blocks[0].value == p.rsp.profile.measurements.item(2, version).content
        assert raw.content_changed is ContentChanged.UNCHANGED
    else:
        assert signed_all.content_changed is ContentChanged.NO_DETECTION
    if version >= 0x13:
        assert signed_all.requester_context is not None


def test_firmware_update_is_visible(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.vca()
    before = p.measurements(0xFF, signed=True)
    p.measurements(0x00, signed=False)  # starts an L transcript
    p.rsp.update_firmware("2.0.0")
    after = p.measurements(0xFF, signed=True)
    assert after.content_changed is ContentChanged.CHANGED  # changed during this L1/L2
    assert before.blocks[1].value != after.blocks[1].value
    assert [b.value for b in after.blocks if b.index == 5] == [b"2.0.0"]
    assert before.blocks[0] == after.blocks[0]  # immutable ROM unchanged
    assert p.measurements(0xFF, signed=True).content_changed is ContentChanged.UNCHANGED


def test_measurement_errors(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.vca()
    err(p.raw(bytes.fromhex("12e00009")), ErrorCode.INVALID_REQUEST)  # no index 9
    err(p.raw(bytes.fromhex("12e00100") + bytes(32) + b"\x05"), ErrorCode.INVALID_REQUEST)  # slot 5 not provisioned
    err(p.raw(bytes.fromhex("12e001ff") + bytes(10)), ErrorCode.INVALID_REQUEST)  # truncated nonce
    p.measurements(0xFF)  # L1/L2 was reset by the errors: the signature still verifies
    no_sig = make_profile("default-p384").replace(
        capabilities=(make_profile("default-p384").capabilities & ~CapabilityFlags.MEAS_CAP_SIG)
        | CapabilityFlags.MEAS_CAP_NO_SIG)
    q = Peer(responder(ident, no_sig), ident, version=0x12)
    q.vca()
    q.measurements(0xFF, signed=False)
    err(q.raw(bytes.fromhex("12e001ff") + bytes(32) + b"\x00"), ErrorCode.INVALID_REQUEST)


def test_measurements_need_the_measurement_spec(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.vca(meas=False)
    assert p.algorithms is not None and p.algorithms.measurement_hash_algo == 0
    err(p.raw(bytes.fromhex("12e00000")), ErrorCode.UNEXPECTED_REQUEST)


# --- sessions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0x11, 0x12, 0x13])
@pytest.mark.parametrize("in_clear", [False, True])
def test_key_exchange_and_finish(ident: Identity, version: int, in_clear: bool) -> None:
    sink = SecretList()
    prof = "default-p384-clear" if in_clear else "default-p384"
    flags = REQ_FLAGS | (CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP if in_clear else CapabilityFlags(0))
    rsp = responder(ident, prof, sink=sink)
    p = Peer(rsp, ident, version=version, flags=flags)
    ps = p.connect(in_clear=in_clear)
    sid = ps.session.session_id
    assert sid & 0xFFFF == 0xFFFE
    assert rsp.drain_events()[-1] == SessionEstablished(sid)
    server = rsp.sessions[sid]
    assert server.established
    assert server.keys.master_secret == ps.session.keys.master_secret
    assert sink.by_class(SecretClass.DHE_SHARED_SECRET)[0].owner == "dev0.dsm"
    assert sink.by_class(SecretClass.DHE_PRIVATE)
    hb = p.secured_msg(ps, Heartbeat(version))
    assert isinstance(hb, HeartbeatAck)
    m = p.measurements(0xFF, session=ps)  # per-session L2
    assert m.signature is not None
    totals = rsp.env.meter.totals
    assert totals[CryptoOp.ECDSA_P384_SIGN] == 2 and totals[CryptoOp.ECDH_P384] == 1


def test_key_exchange_with_measurement_summary(ident: Identity) -> None:
    p = peer(ident, 0x13)
    p.vca()
    p.digests()
    p.certificate()
    ps = p.key_exchange(TCB)
    p.finish(ps)
    assert ps.session.established


def test_finish_with_bad_verify_data_ends_the_session(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.vca()
    p.digests()
    p.certificate()
    ps = p.key_exchange()
    sid = ps.session.session_id
    rsp = p.finish(ps, tamper=True)  # the DecryptError comes back sealed with the handshake key
    err(rsp, ErrorCode.DECRYPT_ERROR, 0x12)
    assert sid not in p.rsp.sessions
    assert SessionEnded(sid, EndReason.DECRYPT_ERROR) in p.rsp.drain_events()


def test_tampered_record_gets_decrypt_error_and_kills_the_session(ident: Identity) -> None:
    p = peer(ident, 0x12)
    ps = p.connect()
    sid = ps.session.session_id
    seen: list[object] = []
    p.rsp.add_listener(seen.append)
    record = bytearray(ps.session.seal(Heartbeat(0x12).encode()))
    record[8] ^= 0x40
    answer = p.rsp.handle_secured(bytes(record))
    assert answer is not None and answer[:4] == sid.to_bytes(4, "little")  # sealed, not in the clear
    err(ps.session.open(answer), ErrorCode.DECRYPT_ERROR)
    assert seen == [SessionEnded(sid, EndReason.DECRYPT_ERROR)]
    assert sid not in p.rsp.sessions
    assert p.rsp.handle_secured(ps.session.seal(Heartbeat(0x12).encode())) is None  # unknown session: dropped
    assert p.rsp.handle_secured(b"\x01\x02") is None
    assert isinstance(decode_spdm(p.raw(GetDigests(0x12).encode()) or b"", p.ctx), SpdmMessage)  # still usable


@pytest.mark.parametrize("op", [KeyUpdateOperation.UPDATE_KEY, KeyUpdateOperation.UPDATE_ALL_KEYS])
def test_key_update(ident: Identity, op: KeyUpdateOperation) -> None:
    p = peer(ident, 0x13)
    ps = p.connect()
    s = ps.session
    server = p.rsp.sessions[s.session_id]
    old_req = server.keys.app_secret(s.role.send_direction)
    record = p.rsp.handle_secured(s.seal(KeyUpdate(0x13, op, 0x5A).encode()))
    assert record is not None
    s.requester_before_key_update(op)
    ack = decode_spdm(s.open(record))
    assert isinstance(ack, KeyUpdateAck) and ack.operation is op and ack.tag == 0x5A
    s.requester_after_key_update_ack(op)
    verify = decode_spdm(p.secured(ps, KeyUpdate(0x13, KeyUpdateOperation.VERIFY_NEW_KEY, 0x5B).encode()))
    assert isinstance(verify, KeyUpdateAck) and verify.tag == 0x5B
    s.requester_after_key_update_ack(KeyUpdateOperation.VERIFY_NEW_KEY)
    assert server.keys.app_secret(s.role.send_direction) != old_req
    assert isinstance(p.secured_msg(ps, Heartbeat(0x13)), HeartbeatAck)
    # out-of-order key updates
    secured_error(p, ps, KeyUpdate(0x13, KeyUpdateOperation.VERIFY_NEW_KEY, 1).encode(), ErrorCode.INVALID_REQUEST)
    secured_error(p, ps, bytes.fromhex("13e90900"), ErrorCode.INVALID_REQUEST)  # operation 9 does not exist
    assert isinstance(p.secured_msg(ps, Heartbeat(0x13)), HeartbeatAck)


def test_end_session(ident: Identity) -> None:
    p = peer(ident, 0x12)
    ps = p.connect()
    sid = ps.session.session_id
    p.rsp.drain_events()
    assert isinstance(p.secured_msg(ps, EndSession(0x12)), EndSessionAck)
    assert p.rsp.drain_events() == [SessionEnded(sid, EndReason.END_SESSION)]
    assert p.rsp.sessions == {}
    assert p.rsp.handle_secured(ps.session.seal(Heartbeat(0x12).encode())) is None
    ps2 = p.key_exchange(req_session_id=0x1234)  # a new session on the same connection
    p.finish(ps2)
    assert ps2.session.session_id & 0xFFFF == 0x1234


def test_get_version_mid_session_resets_everything(ident: Identity) -> None:
    p = peer(ident, 0x12)
    ps = p.connect()
    sid = ps.session.session_id
    p.rsp.drain_events()
    secured_error(p, ps, GetVersion().encode(), ErrorCode.UNEXPECTED_REQUEST)  # not inside a session
    assert isinstance(decode_spdm(p.raw(GetVersion().encode()) or b""), Version)
    assert p.rsp.drain_events() == [SessionEnded(sid, EndReason.VERSION_RESET), VersionReset()]
    assert p.rsp.sessions == {} and p.rsp.state is ConnectionState.AFTER_VERSION and p.rsp.version is None
    assert p.rsp.handle_secured(ps.session.seal(Heartbeat(0x12).encode())) is None
    err(p.raw(GetDigests(0x12).encode()), ErrorCode.UNEXPECTED_REQUEST)
    p.connect()  # and the whole thing works again


def test_session_limit_and_reset(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.vca()
    p.digests()
    p.certificate()
    sessions = [p.key_exchange(req_session_id=i + 1) for i in range(4)]
    for ps in sessions:
        p.finish(ps)
    assert all(ps.session.established for ps in sessions) and len(p.rsp.sessions) == 4
    err(p.raw(b"\x12\xe4" + bytes(2)), ErrorCode.INVALID_REQUEST)  # truncated KEY_EXCHANGE
    p.rsp.drain_events()
    p.rsp.reset()
    events = p.rsp.drain_events()
    assert [e.reason for e in events if isinstance(e, SessionEnded)] == [EndReason.CONVENTIONAL_RESET] * 4
    assert p.rsp.state is ConnectionState.NOT_STARTED
    err(p.raw(GetDigests(0x12).encode()), ErrorCode.UNEXPECTED_REQUEST)


def test_session_limit_error_code(ident: Identity) -> None:
    prof = make_profile("default-p384").replace(max_sessions=1)
    p = Peer(responder(ident, prof), ident, version=0x12)
    p.vca()
    p.digests()
    p.certificate()
    p.finish(p.key_exchange())
    ke = KeyExchange(0x12, MeasurementSummaryHashType.NONE, 0, 7, bytes(32),
                     EcdheKeyPair.generate(DheGroup.SECP_384_R1, p.env.rng).public_value,
                     supported_versions_opaque([0x1100], 0x12), session_policy=SessionPolicy(0))
    err(p.raw(ke.encode(p.ctx)), ErrorCode.SESSION_LIMIT_EXCEEDED)
    bad_point = dataclasses.replace(ke, exchange_data=b"\x01" * 96)
    err(p.raw(bad_point.encode(p.ctx)), ErrorCode.SESSION_LIMIT_EXCEEDED)
    no_versions = dataclasses.replace(ke, opaque_data=supported_versions_opaque([0x2000], 0x12))
    err(p.raw(no_versions.encode(p.ctx)), ErrorCode.INVALID_REQUEST)  # no common DSP0277 version
    p.rsp.reset()
    q = Peer(p.rsp, ident, version=0x12)
    q.vca()
    err(q.raw(bad_point.encode(q.ctx)), ErrorCode.INVALID_REQUEST)  # not a point on the curve


def test_heartbeat_timeout(ident: Identity) -> None:
    prof = make_profile("default-p384").replace(heartbeat_period=10)
    rsp = responder(ident, prof)
    p = Peer(rsp, ident, version=0x12)
    p.vca()
    p.digests()
    p.certificate()
    p.now = 100.0
    ps = p.key_exchange()
    p.finish(ps)
    assert ps.session.heartbeat_period == 10
    assert rsp.get_timer() == 120.0
    record = rsp.handle_secured(ps.session.seal(Heartbeat(0x12).encode()), now=115.0)
    assert record is not None and rsp.get_timer() == 135.0
    ps.session.open(record)
    rsp.handle_timer(130.0)
    assert rsp.sessions
    rsp.handle_timer(135.5)
    assert rsp.sessions == {} and rsp.drain_events()[-1] == SessionEnded(ps.session.session_id,
                                                                           EndReason.HEARTBEAT_TIMEOUT)
    assert rsp.get_timer() is None


# --- vendor-defined ----------------------------------------------------------------------------------


def test_vendor_defined_routing(ident: Identity) -> None:
    p = peer(ident, 0x12)
    calls: list[tuple[int | None, int, bytes]] = []

    def tdisp_like(session_id: int | None, version: int, payload: bytes) -> bytes | None:
        calls.append((session_id, version, payload))
        if session_id is None:
            return None  # TDISP outside a session is ignored (§6.1)
        return b"\x01" + payload[::-1]

    p.rsp.register_vendor_handler(STANDARD_ID_PCISIG, PCISIG_VENDOR_ID, tdisp_like)
    ps = p.connect()
    request = VendorDefinedRequest(0x12, RegistryId.PCISIG, PCISIG_VENDOR_ID, b"\x01\x10\x81\x00")
    assert p.raw(request.encode()) is None  # no response at all outside a session
    rsp = p.secured_msg(ps, request)
    assert isinstance(rsp, VendorDefinedResponse) and rsp.payload == b"\x01\x00\x81\x10\x01"
    assert rsp.standard_id == RegistryId.PCISIG and rsp.vendor_id == PCISIG_VENDOR_ID
    assert calls == [(None, 0x12, b"\x01\x10\x81\x00"), (ps.session.session_id, 0x12, b"\x01\x10\x81\x00")]
    unknown = VendorDefinedRequest(0x12, RegistryId.IANA, b"\x12\x34\x56\x78", b"x")
    e = err(p.raw(unknown.encode()), ErrorCode.UNSUPPORTED_REQUEST)
    assert e.error_data == RequestCode.VENDOR_DEFINED_REQUEST
    p.rsp.register_vendor_handler(STANDARD_ID_PCISIG, 1, lambda sid, v, data: b"int-id")
    assert isinstance(p.secured_msg(ps, request), VendorDefinedResponse)

    def broken(session_id: int | None, version: int, payload: bytes) -> bytes | None:
        raise DecodeError("TDISP", "header", 0, "short")

    p.rsp.register_vendor_handler(STANDARD_ID_PCISIG, PCISIG_VENDOR_ID, broken)
    secured_error(p, ps, request.encode(p.ctx), ErrorCode.INVALID_REQUEST)


# --- error paths -------------------------------------------------------------------------------------


def test_out_of_order_requests(ident: Identity) -> None:
    p = peer(ident, 0x12)
    err(p.raw(GetDigests(0x12).encode()), ErrorCode.UNEXPECTED_REQUEST, 0x10)  # before GET_VERSION
    p.raw(GetVersion().encode())
    neg = NegotiateAlgorithms(0x12, P384, SHA384, other_params_support=OtherParams.OPAQUE_DATA_FMT1)
    err(p.raw(neg.encode()), ErrorCode.UNEXPECTED_REQUEST)  # before GET_CAPABILITIES
    p.raw(GetCapabilities(0x12, 10, REQ_FLAGS, 4096, 4096).encode())
    err(p.raw(GetCapabilities(0x12, 10, REQ_FLAGS, 4096, 4096).encode()), ErrorCode.UNEXPECTED_REQUEST, 0x12)
    err(p.raw(GetDigests(0x12).encode()), ErrorCode.UNEXPECTED_REQUEST)  # before NEGOTIATE_ALGORITHMS
    err(p.raw(bytes.fromhex("12e50000") + bytes(48)), ErrorCode.UNEXPECTED_REQUEST)  # FINISH before anything
    assert p.rsp.state is ConnectionState.AFTER_CAPABILITIES


def test_version_errors(ident: Identity) -> None:
    p = peer(ident, 0x12)
    err(p.raw(bytes.fromhex("11840000")), ErrorCode.VERSION_MISMATCH, 0x10)  # GET_VERSION must be 0x10
    p.raw(GetVersion().encode())
    err(p.raw(bytes.fromhex("14e10000") + bytes(16)), ErrorCode.VERSION_MISMATCH)  # 1.4 is not offered
    p.vca()
    err(p.raw(GetDigests(0x11).encode()), ErrorCode.VERSION_MISMATCH, 0x12)
    err(p.raw(bytes.fromhex("13810000")), ErrorCode.VERSION_MISMATCH, 0x12)
    assert p.digests() is not None


def test_unsupported_and_truncated(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.vca()
    for code in (0x99, RequestCode.PSK_EXCHANGE, RequestCode.CHUNK_GET, RequestCode.GET_CSR,
                 RequestCode.GET_ENCAPSULATED_REQUEST, 0x04):
        e = err(p.raw(bytes([0x12, code, 0, 0])), ErrorCode.UNSUPPORTED_REQUEST, 0x12)
        assert e.error_data == code
    err(p.raw(bytes.fromhex("12820000") + b"\x00"), ErrorCode.INVALID_REQUEST)  # truncated GET_CERTIFICATE
    err(p.raw(GetCertificate(0x12, 4, 0, 10).encode()), ErrorCode.INVALID_REQUEST)  # slot 4 empty
    err(p.raw(GetCertificate(0x12, 0, 0xF000, 10).encode()), ErrorCode.INVALID_REQUEST)  # offset past the end
    err(p.raw(bytes.fromhex("12ff8100")), ErrorCode.UNEXPECTED_REQUEST)  # RESPOND_IF_READY, nothing pending
    assert p.raw(b"\x12\x81") is None  # no SPDM header at all: dropped
    q = peer(ident, 0x10)
    q.vca()
    e = err(q.raw(bytes.fromhex("10e40000") + bytes(200)), ErrorCode.UNSUPPORTED_REQUEST, 0x10)
    assert e.error_data == RequestCode.KEY_EXCHANGE  # sessions start at 1.1
    p.digests()  # still usable


@pytest.mark.parametrize(("version", "code"), [(0x12, ErrorCode.SESSION_REQUIRED), (0x11, ErrorCode.UNSPECIFIED)])
def test_session_only_requests_outside_a_session(ident: Identity, version: int, code: ErrorCode) -> None:
    p = peer(ident, version)
    p.vca()
    for request in (Heartbeat(version), KeyUpdate(version, KeyUpdateOperation.UPDATE_KEY, 1), EndSession(version)):
        err(p.raw(request.encode()), code, version)
    err(p.raw(bytes([version, 0xE5, 0, 0]) + bytes(48)), code)  # FINISH without a session


def test_plain_only_requests_inside_a_session(ident: Identity) -> None:
    p = peer(ident, 0x12)
    ps = p.connect()
    for request in (Challenge(0x12, 0, MeasurementSummaryHashType.NONE, bytes(32)).encode(),
                    GetCapabilities(0x12, 10, REQ_FLAGS, 4096, 4096).encode()):
        secured_error(p, ps, request, ErrorCode.UNEXPECTED_REQUEST)
    secured_error(p, ps, bytes.fromhex("12e50000") + bytes(48), ErrorCode.UNEXPECTED_REQUEST)  # FINISH again
    assert isinstance(p.secured_msg(ps, GetDigests(0x12)), SpdmMessage)  # allowed in a session
    cert = p.secured_msg(ps, GetCertificate(0x12, 0, 0, 0x100))
    assert isinstance(cert, Certificate) and len(cert.cert_chain) == 0x100


def test_busy_and_response_not_ready_injection(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.vca()
    p.rsp.inject_busy(2)
    err(p.raw(GetDigests(0x12).encode()), ErrorCode.BUSY)
    err(p.raw(GetDigests(0x12).encode()), ErrorCode.BUSY)
    p.digests()
    p.certificate()
    p.rsp.inject_not_ready(1, rd_exponent=12, rdtm=3)
    request = GetMeasurements(0x12, 0xFF, MeasurementAttributes.GENERATE_SIGNATURE, nonce=bytes(32), slot_id=0)
    e = err(p.raw(request.encode()), ErrorCode.RESPONSE_NOT_READY)
    assert isinstance(e.extended, ResponseNotReadyData)
    assert e.extended.request_code is RequestCode.GET_MEASUREMENTS and e.extended.wait_us == (1 << 12) * 3
    token = e.extended.token
    err(p.raw(RespondIfReady(0x12, RequestCode.GET_MEASUREMENTS, token ^ 1).encode()), ErrorCode.INVALID_REQUEST)
    err(p.raw(RespondIfReady(0x12, RequestCode.GET_DIGESTS, token).encode()), ErrorCode.INVALID_REQUEST)
    response = p.raw(RespondIfReady(0x12, RequestCode.GET_MEASUREMENTS, token).encode())
    m = decode_spdm(response or b"", p.ctx)
    assert isinstance(m, Measurements) and m.signature is not None
    # L1/L2 holds the deferred request and its response, never ERROR or RESPOND_IF_READY
    p.verify(p.a + request.encode() + (response or b"")[:-len(m.signature)], m.signature,
             SigningContext.RESPONDER_MEASUREMENTS)
    err(p.raw(RespondIfReady(0x12, RequestCode.GET_MEASUREMENTS, token).encode()), ErrorCode.UNEXPECTED_REQUEST)
    p.digests()  # GET_MEASUREMENTS dropped the unfinished B (libspdm): fetch again, then challenge
    p.certificate()
    p.challenge()


def test_response_too_large(ident: Identity) -> None:
    rsp = responder(ident)
    p = Peer(rsp, ident, version=0x12)
    p.raw(GetVersion().encode())
    p.raw(GetCapabilities(0x12, 10, REQ_FLAGS, 42, 42).encode())
    structs = (AlgStruct(AlgType.DHE, DheGroup.SECP_384_R1), AlgStruct(AlgType.AEAD, AeadSuite.AES_256_GCM),
               AlgStruct(AlgType.KEY_SCHEDULE, KeyScheduleAlgo.SPDM))
    p.raw(NegotiateAlgorithms(0x12, P384, SHA384, measurement_specification=MeasurementSpec.DMTF,
                              other_params_support=OtherParams.OPAQUE_DATA_FMT1, alg_structs=structs).encode())
    e = err(p.raw(GetDigests(0x12).encode()), ErrorCode.RESPONSE_TOO_LARGE)
    assert int.from_bytes(e.extended, "little") == 4 + 48
    cert = decode_spdm(p.raw(GetCertificate(0x12, 0, 0, 0x400).encode()) or b"", rsp.context)
    assert isinstance(cert, Certificate) and len(cert.cert_chain) == 42 - 8  # portions are clamped instead


def test_profile_validation(ident: Identity, ident256: Identity) -> None:
    with pytest.raises(ValueError, match="not implemented"):
        ResponderProfile(capabilities=CapabilityFlags.CERT_CAP | CapabilityFlags.MUT_AUTH_CAP)
    with pytest.raises(ValueError):
        ResponderProfile(versions=(0x14,))
    with pytest.raises(ValueError):
        ResponderProfile(data_transfer_size=41, max_spdm_msg_size=41)
    with pytest.raises(ValueError):
        SpdmResponder(make_profile("default-p384"), ident256, ProtocolEnv.for_test())  # P-256 key, P-384 profile
    with pytest.raises(KeyError, match="known"):
        make_profile("nope")
    m = DeviceMeasurements("x")
    assert m.item(0xFE, 0x11) is None and m.item(0xFE, 0x12) is not None
    block = m.item(1, 0x12).block(MeasurementHashAlgo.SHA_256, raw=False)  # type: ignore[union-attr]
    assert MeasurementBlock.decode(block.encode()) == block and len(block.value) == 32


def test_doe_padding_never_enters_transcripts(ident: Identity) -> None:
    p = peer(ident, 0x12)
    p.vca()
    request = GetMeasurements(0x12, 0xFF, MeasurementAttributes.GENERATE_SIGNATURE, nonce=bytes(range(32)),
                              slot_id=0).encode()
    assert len(request) == 37
    response = p.raw(request + b"\x00\x00\x00")  # DOE pads the 37 bytes to a DW boundary
    m = decode_spdm(response or b"", p.ctx)
    assert isinstance(m, Measurements) and m.signature is not None
    p.verify(p.a + request + (response or b"")[:-len(m.signature)], m.signature, SigningContext.RESPONDER_MEASUREMENTS)


def test_slot_size_request_at_13(ident: Identity) -> None:
    p = peer(ident, 0x13)
    p.vca()
    size = decode_spdm(p.raw(GetCertificate(0x13, 0, 0, 0, GetCertificateAttributes.SLOT_SIZE_REQUESTED).encode())
                       or b"", p.ctx)
    assert isinstance(size, Certificate) and size.cert_chain == b""
    assert size.remainder_length == len(ident.spdm_cert_chain(SHA384))


def test_negotiation_event_reaches_listeners(ident: Identity) -> None:
    rsp = responder(ident)
    seen: list[object] = []
    rsp.add_listener(seen.append)
    Peer(rsp, ident, version=0x13).vca()
    assert seen == [VersionReset(), ConnectionNegotiated(0x13, P384, SHA384)]
    assert rsp.drain_events() == seen and rsp.drain_events() == []


def test_table_covers_every_handled_request() -> None:
    assert set(REQUEST_TABLE) == set(SpdmResponder._HANDLERS)
    for row in REQUEST_TABLE.values():
        assert len(row.cells) == len(ConnectionState)


def test_determinism(ident: Identity) -> None:
    def run() -> list[bytes]:
        p = peer(ident, 0x13)
        ps = p.connect()
        p.measurements(0xFF, session=ps)
        return [p.a, bytes(ps.th), ps.session.keys.master_secret]

    assert run() == run()


# --- fuzzing ----------------------------------------------------------------------------------------


def decodable(data: bytes, ctx: SpdmContext) -> bool:
    """Whether ``data`` decodes as an SPDM message under one of the contexts a response can need."""
    variants = [ctx, ctx.with_(meas_summary_size=ctx.hash_size), ctx.with_(handshake_in_the_clear=True),
                ctx.with_(meas_summary_size=ctx.hash_size, handshake_in_the_clear=True)]
    for c in variants:
        try:
            decode_spdm(data, c)
            return True
        except DecodeError:
            continue
    return False


@pytest.fixture(scope="module")
def valid_requests(ident: Identity) -> list[bytes]:
    """Every request of a full 1.2 flow, as sent (used as seeds for mutation)."""
    sent: list[bytes] = []
    rsp = responder(ident)
    original = rsp.handle

    def spy(message: bytes, now: float | None = None) -> bytes | None:
        sent.append(message)
        return original(message, now)

    rsp.handle = spy  # type: ignore[method-assign]
    p = Peer(rsp, ident, version=0x12)
    p.vca()
    p.digests()
    p.certificate()
    p.challenge(0, ALL)
    p.measurements(0xFF)
    p.key_exchange()
    return sent


def negotiated_responder(ident: Identity) -> tuple[SpdmResponder, SpdmContext]:
    p = peer(ident, 0x12)
    p.vca()
    return p.rsp, p.ctx


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=120), negotiated=st.booleans())
def test_fuzz_random_bytes(ident: Identity, data: bytes, negotiated: bool) -> None:
    rsp, ctx = negotiated_responder(ident) if negotiated else (responder(ident), SpdmContext())
    out = rsp.handle(data)
    assert out is None or decodable(out, rsp.context if negotiated else ctx)
    assert rsp.handle_secured(data) is None  # no session exists: every record is dropped


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(min_value=0), pos=st.integers(min_value=0), value=st.integers(0, 255),
       cut=st.integers(min_value=0, max_value=300), extra=st.binary(max_size=8), mode=st.sampled_from("fcx"))
def test_fuzz_mutated_requests(ident: Identity, valid_requests: list[bytes], pick: int, pos: int, value: int,
                               cut: int, extra: bytes, mode: str) -> None:
    rsp, _ = negotiated_responder(ident)
    for prefix in valid_requests[3:]:  # bring the connection to a late state first (ignoring answers)
        if prefix[1] in (RequestCode.GET_DIGESTS, RequestCode.GET_CERTIFICATE):
            rsp.handle(prefix)
    base = bytearray(valid_requests[pick % len(valid_requests)])
    if mode == "f":
        base[pos % len(base)] = value
    elif mode == "c":
        base = base[:cut % (len(base) + 1)]
    else:
        base += extra
    out = rsp.handle(bytes(base))
    assert out is None or decodable(out, rsp.context)
    assert rsp.handle(GetDigests(0x12).encode()) is not None  # the responder stays usable


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=80), flip=st.integers(min_value=0))
def test_fuzz_secured_records(ident: Identity, body: bytes, flip: int) -> None:
    p = peer(ident, 0x12)
    ps = p.connect()
    sid = ps.session.session_id
    forged = sid.to_bytes(4, "little") + body
    out = p.rsp.handle_secured(forged)
    assert out is not None and sid not in p.rsp.sessions  # a record that fails to open ends the session
    err(ps.session.open(out), ErrorCode.DECRYPT_ERROR)
    q = peer(ident, 0x12)
    qs = q.connect()
    record = bytearray(qs.session.seal(Heartbeat(0x12).encode()))
    i = flip % (len(record) * 8)
    record[i // 8] ^= 1 << (i % 8)
    out = q.rsp.handle_secured(bytes(record))
    if i < 32:  # the SessionID itself: unknown session, dropped
        assert out is None
    else:
        assert out is not None
        err(qs.session.open(out), ErrorCode.DECRYPT_ERROR)


def test_get_capabilities_errors_follow_the_validator() -> None:
    """SPDM-Responder-Validator 2.2.4 and 2.4.3: version first, then fields, ERROR in the request's version."""
    from sim.crypto.algorithms import BaseAsymAlgo as _Asym
    from sim.crypto.algorithms import BaseHashAlgo as _Hash
    from sim.crypto.identity import build_identity as _build
    from sim.protocols.env import ProtocolEnv as _Env
    from sim.protocols.spdm.profile import make_profile as _profile
    from sim.protocols.spdm.responder import SpdmResponder as _Responder

    ident = _build(3, "validator-cases", _Asym.ECDSA_P384, _Hash.SHA_384)

    def fresh() -> _Responder:
        rsp = _Responder(_profile("default-p384"), ident, _Env.for_test("dev", 1))
        assert rsp.handle(bytes.fromhex("10840000"))[1] == 0x04  # VERSION
        return rsp

    assert fresh().handle(bytes.fromhex("14e10000")) == bytes.fromhex("107f4100")
    # 1.1 GET_CAPABILITIES with CTExponent 0x0a but invalid flags (MAC without ENCRYPT/KEY_EX rules)
    answer = fresh().handle(bytes.fromhex("11e10000000a000006770000"))
    assert answer is not None and answer[:3] == bytes.fromhex("117f01")
