"""SecureSession (DSP0277 records, phases, sequence numbers, key update) and the SPDM transcripts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.crypto.aead import aead_decrypt, record_iv
from sim.crypto.algorithms import AeadSuite, BaseHashAlgo
from sim.crypto.hashes import digest
from sim.crypto.key_schedule import Direction, Phase, TrafficKeys
from sim.crypto.secrets import SecretClass, SecretList
from sim.protocols.env import CryptoOp, ProtocolEnv
from sim.protocols.spdm.session import (
    SecureSession,
    SessionDecryptError,
    SessionRole,
    SessionState,
    SessionStateError,
    WrongSessionError,
    record_session_id,
)
from sim.protocols.spdm.transcript import Buffer, ConnectionTranscript, SessionTranscript, recordable
from sim.wire.codec import DecodeError
from sim.wire.secured import LIBSPDM_TEST_FRAMING
from sim.wire.spdm.common import RequestCode
from sim.wire.spdm.session import KeyUpdateOperation

SID = 0xFFFDFFFE
SHARED = bytes(range(48))
TH1 = bytes(0xA0 + (i % 16) for i in range(48))
TH2 = bytes(0xB0 + (i % 16) for i in range(48))
REQ, RSP = Direction.REQUEST, Direction.RESPONSE


def pair(*, encrypt: bool = True, version: int = 0x12, sink: SecretList | None = None,
         ) -> tuple[SecureSession, SecureSession]:
    """A requester and a responder view of the §8.3 vector session, in the handshake phase."""
    envs = [ProtocolEnv.for_test("req"), ProtocolEnv.for_test("rsp")]
    envs[1].sink = sink
    out = []
    for role, env in zip((SessionRole.REQUESTER, SessionRole.RESPONDER), envs, strict=True):
        s = SecureSession(SID, role, version, BaseHashAlgo.SHA_384, AeadSuite.AES_256_GCM, env, encrypt=encrypt)
        s.set_dhe_secret(SHARED)
        s.derive_handshake_keys(TH1)
        out.append(s)
    return out[0], out[1]


def established(**kw: object) -> tuple[SecureSession, SecureSession]:
    req, rsp = pair(**kw)  # type: ignore[arg-type]
    req.enter_data_phase(TH2)
    rsp.enter_data_phase(TH2)
    return req, rsp


# --- keys: the §8.3 vector through the session ------------------------------------------------------


def test_session_keys_follow_the_83_vector() -> None:
    req, rsp = pair()
    for s in (req, rsp):
        assert s.keys.keys(REQ, Phase.HANDSHAKE).key.hex() == \
            "fb11bfa3f8e1c0105ef1b1977e549ce90ea8c7ea93a7c98a4096dba1c4c10332"
        assert s.keys.keys(RSP, Phase.HANDSHAKE).salt.hex() == "a100ec986e7c65ca46607031"
        s.enter_data_phase(TH2)
        assert s.state is SessionState.ESTABLISHED and s.phase is Phase.DATA
        assert s.keys.keys(REQ, Phase.DATA).key.hex() == \
            "99c24aec0de310cabcfe018518eb9be734fb413897397694b32f907a99a67e5d"
        assert s.keys.keys(RSP, Phase.DATA).salt.hex() == "f9b993b491703c5a348a033b"
    req.update_key(REQ)
    assert req.keys.app_secret(REQ).hex() == (
        "e5764c3341debca4784023c9ea43097c1245cf9db3ad9fb006ba6b34eac41d82ce65636f86162c725472ae3a6e63400c")


def test_secrets_reach_the_sink_and_ops_are_metered() -> None:
    sink = SecretList()
    _, rsp = pair(sink=sink)
    rsp.enter_data_phase(TH2)
    values = {r.value for r in sink.records}
    assert SHARED in values
    assert rsp.keys.keys(RSP, Phase.DATA).key in values and rsp.keys.keys(REQ, Phase.HANDSHAKE).salt in values
    assert all(r.owner == "rsp" for r in sink.records)
    assert sink.by_class(SecretClass.SPDM_SESSION_KEY)
    rsp.seal(b"\x12\x68\x00\x00")
    ops = rsp.env.meter.totals
    assert ops[CryptoOp.HKDF] == 1 + 8 + 9 and ops[CryptoOp.AEAD_PER_KIB] == 1


# --- records ------------------------------------------------------------------------------------------


def test_doe_record_layout_and_round_trip() -> None:
    req, rsp = pair()
    message = bytes.fromhex("12e50000") + bytes(48)
    record = req.seal(message)
    # PCIe DOE: SessionID ‖ Length ‖ ciphertext(2 + n) ‖ MAC, no sequence number, no random data (§5.3)
    assert record[:4] == bytes.fromhex("fefffdff")
    assert int.from_bytes(record[4:6], "little") == 2 + len(message) + 16 == len(record) - 6
    assert record_session_id(record) == SID
    keys = req.keys.keys(REQ, Phase.HANDSHAKE)
    plain = aead_decrypt(AeadSuite.AES_256_GCM, keys.key, record_iv(keys.salt, 0), record[6:-16], record[-16:],
                         record[:6])
    assert plain == len(message).to_bytes(2, "little") + message
    assert rsp.open(record) == message
    assert req.sequence_number(REQ) == rsp.sequence_number(REQ) == 1
    answer = rsp.seal(b"\x12\x65\x00\x00")
    assert req.open(answer + b"\x00\x00") == b"\x12\x65\x00\x00"  # DOE pad bytes are tolerated


def test_libspdm_record_kat_through_the_session() -> None:
    """§8.2: key 00..1f, salt 2i, SessionID 0x00112233, 8-byte sequence numbers in the header."""
    env = ProtocolEnv.for_test("kat")
    s = SecureSession(0x00112233, SessionRole.REQUESTER, 0x12, BaseHashAlgo.SHA_384, AeadSuite.AES_256_GCM, env,
                      framing=LIBSPDM_TEST_FRAMING)
    s.set_dhe_secret(SHARED)
    s.derive_handshake_keys(TH1)
    s.keys._keys[(REQ, Phase.HANDSHAKE)] = TrafficKeys(bytes(range(32)), bytes(2 * i for i in range(12)))
    app = bytes(range(16))
    record = s.seal(app)
    assert record.hex() == ("33221100" "0000000000000000" "2200" "9bfed3b7043d3286603d861733d67f959a20"
                            "3d4fac58cb706cf5a0270af673f0fe36")
    s._seq[(REQ, Phase.HANDSHAKE)] = 0xAA55AA55AA55AA55
    record = s.seal(app)
    assert record.hex() == ("33221100" "55aa55aa55aa55aa" "2200" "0dea75eac691374994975263f8c08f6c1aa4"
                            "0dcdb48ad6fa240479d5d8d2fe281914")


def test_phases_switch_keys_and_counters() -> None:
    req, rsp = pair()
    rsp.open(req.seal(b"finish"))
    req.open(rsp.seal(b"finish_rsp"))
    hs_record = req.seal(b"late handshake record")
    req.enter_data_phase(TH2)
    rsp.enter_data_phase(TH2)
    assert req.sequence_number(REQ) == 0 and req.sequence_number(REQ, Phase.HANDSHAKE) == 2
    with pytest.raises(SessionDecryptError):
        rsp.open(hs_record)  # handshake key no longer accepted
    for i in range(3):
        assert rsp.open(req.seal(bytes([i]) * 5)) == bytes([i]) * 5
        assert req.open(rsp.seal(b"ack")) == b"ack"
    assert rsp.sequence_number(REQ) == 3 and rsp.sequence_number(RSP) == 3
    with pytest.raises(SessionStateError):
        req.enter_data_phase(TH2)


def test_failures_are_typed_and_do_not_advance() -> None:
    req, rsp = established()
    record = bytearray(req.seal(b"\x12\xe8\x00\x00"))
    tampered = bytes(record[:-1]) + bytes([record[-1] ^ 1])
    with pytest.raises(SessionDecryptError):
        rsp.open(tampered)
    assert rsp.sequence_number(REQ) == 0
    other = bytes.fromhex("01000200") + bytes(record[4:])
    with pytest.raises(WrongSessionError) as exc:
        rsp.open(other)
    assert exc.value.got == 0x00020001
    with pytest.raises(SessionDecryptError):
        rsp.open(bytes(record[:10]))  # truncated: malformed record
    assert rsp.open(bytes(record)) == b"\x12\xe8\x00\x00"
    with pytest.raises(SessionDecryptError):
        rsp.open(bytes(record))  # replay: the sequence number moved on
    with pytest.raises(SessionDecryptError):
        req.open(req.seal(b"own direction"))  # a peer never accepts its own direction's records
    rsp.end("test")
    assert rsp.ended
    with pytest.raises(SessionStateError):
        rsp.seal(b"x")
    with pytest.raises(DecodeError):
        record_session_id(b"\x01\x02")


def test_handshake_keys_needed_first() -> None:
    s = SecureSession(SID, SessionRole.REQUESTER, 0x12, BaseHashAlgo.SHA_384, AeadSuite.AES_256_GCM,
                      ProtocolEnv.for_test())
    with pytest.raises(SessionStateError):
        s.seal(b"too early")
    with pytest.raises(SessionStateError):
        s.update_key(REQ)


def test_mac_only_session() -> None:
    req, rsp = established(encrypt=False)
    message = b"\x12\xe8\x00\x00"
    record = req.seal(message)
    assert record[6:6 + len(message)] == message  # in the clear, but authenticated
    assert int.from_bytes(record[4:6], "little") == len(message) + 16
    assert rsp.open(record) == message
    forged = req.seal(message)
    forged = forged[:6] + b"\x12\xe9" + forged[8:]
    with pytest.raises(SessionDecryptError):
        rsp.open(forged)


# --- key update choreography (§4.2) --------------------------------------------------------------


@pytest.mark.parametrize("op", [KeyUpdateOperation.UPDATE_KEY, KeyUpdateOperation.UPDATE_ALL_KEYS])
def test_key_update_choreography(op: KeyUpdateOperation) -> None:
    req, rsp = established()
    for _ in range(2):
        rsp.open(req.seal(b"traffic"))
        req.open(rsp.seal(b"traffic"))
    old_rsp_key = rsp.keys.keys(RSP, Phase.DATA).key
    rsp.open(req.seal(b"KEY_UPDATE"))  # under the old request key
    req.requester_before_key_update(op)
    rsp.responder_apply_key_update(op)
    ack = rsp.seal(b"KEY_UPDATE_ACK")
    assert (rsp.keys.keys(RSP, Phase.DATA).key != old_rsp_key) == (op is KeyUpdateOperation.UPDATE_ALL_KEYS)
    assert req.open(ack) == b"KEY_UPDATE_ACK"
    req.requester_after_key_update_ack(op)
    assert req.sequence_number(REQ) == 0  # the new request key starts a new count
    verify = req.seal(b"VERIFY_NEW_KEY")
    assert rsp.open(verify) == b"VERIFY_NEW_KEY"
    rsp.responder_apply_key_update(KeyUpdateOperation.VERIFY_NEW_KEY)
    assert req.open(rsp.seal(b"ACK")) == b"ACK"
    req.requester_after_key_update_ack(KeyUpdateOperation.VERIFY_NEW_KEY)
    assert not rsp.key_update_pending(REQ) and not req.key_update_pending(REQ)
    assert rsp.keys.keys(REQ, Phase.DATA) == req.keys.keys(REQ, Phase.DATA)
    assert rsp.open(req.seal(b"after")) == b"after"


def test_key_update_falls_back_to_the_previous_key_once() -> None:
    """libspdm: if the new receive key fails and a backup exists, the old key (and counter) come back."""
    req, rsp = established()
    rsp.open(req.seal(b"one"))
    rsp.open(req.seal(b"KEY_UPDATE"))
    rsp.responder_apply_key_update(KeyUpdateOperation.UPDATE_KEY)
    assert rsp.key_update_pending(REQ) and rsp.sequence_number(REQ) == 0
    # the requester never saw the ACK and keeps sending under the old key
    assert rsp.open(req.seal(b"still old")) == b"still old"
    assert not rsp.key_update_pending(REQ) and rsp.sequence_number(REQ) == 3
    with pytest.raises(SessionStateError):
        rsp.rollback_key_update(REQ)


def test_explicit_rollback_and_double_update() -> None:
    req, _ = established()
    before = req.keys.keys(RSP, Phase.DATA)
    req.update_key(RSP)
    with pytest.raises(SessionStateError):
        req.update_key(RSP)
    req.rollback_key_update(RSP)
    assert req.keys.keys(RSP, Phase.DATA) == before


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=6),
       flip=st.integers(min_value=0, max_value=10_000))
def test_round_trips_and_any_bit_flip_fails(messages: list[bytes], flip: int) -> None:
    req, rsp = established()
    for m in messages:
        assert rsp.open(req.seal(m)) == m
    record = bytearray(req.seal(messages[0]))
    pos = flip % (len(record) * 8)
    record[pos // 8] ^= 1 << (pos % 8)
    with pytest.raises((SessionDecryptError, WrongSessionError)):
        rsp.open(bytes(record))


# --- transcripts -----------------------------------------------------------------------------------


def test_connection_transcript_buffers_and_rules() -> None:
    t = ConnectionTranscript()
    a_parts = [b"\x10\x84\x00\x00", b"\x10\x04\x00\x00\x00\x01\x00\x12"]
    for p in a_parts:
        assert t.add_vca(p)
    assert not t.add_vca(b"\x12\x7f\x01\x00")  # ERROR never enters
    assert not t.add_vca(b"\x12\xff\xe0\x01")  # nor RESPOND_IF_READY
    assert not recordable(b"\x12")
    assert t.vca == b"".join(a_parts)
    t.add_b(b"\x12\x81\x00\x00")
    t.add_c(b"\x12\x83\x00\x00")
    assert t.m1m2() == t.vca + b"\x12\x81\x00\x00" + b"\x12\x83\x00\x00"
    t.add_l(b"\x12\xe0\x00\x00")
    assert t.l1l2(0x11) == b"\x12\xe0\x00\x00"
    assert t.l1l2(0x12) == t.vca + b"\x12\xe0\x00\x00"
    t.before_request(RequestCode.GET_MEASUREMENTS, negotiated=True, authenticated=False)
    assert t.buffer(Buffer.L) and not t.buffer(Buffer.B)  # an unfinished challenge is dropped
    assert t.add_b(b"\x12\x82\x00\x00")
    t.before_request(RequestCode.GET_DIGESTS, negotiated=True, authenticated=True)
    assert not t.buffer(Buffer.L) and not t.buffer(Buffer.B)
    assert t.add_b(b"\x12\x81\x00\x00")
    t.before_request(RequestCode.KEY_EXCHANGE, negotiated=True, authenticated=True)
    assert t.buffer(Buffer.B) == b"\x12\x81\x00\x00"  # authenticated: B stays
    t.challenge_done()
    assert t.m1m2() == t.vca
    t.reset()
    assert t.m1m2() == b""


def test_session_transcript_cut_points() -> None:
    algo = BaseHashAlgo.SHA_256
    vca, ct, ke, rsp_signed, sig, rvd, fin, qvd, frsp = (bytes([i]) * (i + 3) for i in range(9))
    t = SessionTranscript(algo, vca, ct)
    assert t.key_exchange_signature_hash(ke, rsp_signed) == digest(algo, vca + ct + ke + rsp_signed)
    th1 = t.th1(sig)
    assert th1 == digest(algo, vca + ct + ke + rsp_signed + sig) == t.th1_hash
    t.add(rvd)
    assert t.finish_verify_hash(fin) == digest(algo, vca + ct + ke + rsp_signed + sig + rvd + fin)
    t.add(qvd)
    assert t.th2(frsp) == digest(algo, t.data) == t.th2_hash
    assert t.data == vca + ct + ke + rsp_signed + sig + rvd + fin + qvd + frsp
    meter = ProtocolEnv.for_test().meter
    SessionTranscript(algo, vca, ct, meter=meter)
    assert [op.nbytes for op in meter.drain()] == [len(vca), len(ct)]
