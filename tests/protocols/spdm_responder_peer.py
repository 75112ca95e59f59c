"""A tiny SPDM requester for the responder tests: builds requests with the wire classes, keeps its
own transcripts as plain byte concatenations (independent of sim.protocols.spdm.transcript), and
verifies every signature and VerifyData with the crypto layer. Any failed check raises
AssertionError, so a test that runs a flow through it has checked the responder's crypto.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sim.crypto.algorithms import AeadSuite, BaseAsymAlgo, BaseHashAlgo, DheGroup, KeyScheduleAlgo
from sim.crypto.dhe import EcdheKeyPair
from sim.crypto.hashes import digest, hmac_digest
from sim.crypto.identity import Identity, verify_spdm_cert_chain
from sim.crypto.key_schedule import Direction
from sim.crypto.signing import SigningContext, spdm_verify
from sim.protocols.env import ProtocolEnv
from sim.protocols.spdm.responder import SpdmResponder
from sim.protocols.spdm.session import SecureSession, SessionRole
from sim.wire.spdm import decode_spdm
from sim.wire.spdm.algorithms import Algorithms, AlgStruct, NegotiateAlgorithms, OtherParams
from sim.wire.spdm.capabilities import Capabilities, GetCapabilities
from sim.wire.spdm.certificates import Certificate, Digests, GetCertificate, GetDigests
from sim.wire.spdm.challenge import Challenge, ChallengeAuth
from sim.wire.spdm.common import (
    AlgType,
    CapabilityFlags,
    MeasurementSpec,
    MeasurementSummaryHashType,
    SpdmContext,
    SpdmMessage,
)
from sim.wire.spdm.error import ErrorResponse
from sim.wire.spdm.finish import Finish, FinishRsp
from sim.wire.spdm.key_exchange import KeyExchange, KeyExchangeRsp, SessionPolicy
from sim.wire.spdm.measurements import GetMeasurements, MeasurementAttributes, Measurements
from sim.wire.spdm.opaque import parse_secured_message_versions, supported_versions_opaque
from sim.wire.spdm.version import GetVersion, Version

REQ_FLAGS = (CapabilityFlags.CERT_CAP | CapabilityFlags.CHAL_CAP | CapabilityFlags.ENCRYPT_CAP
             | CapabilityFlags.MAC_CAP | CapabilityFlags.KEY_EX_CAP | CapabilityFlags.HBEAT_CAP
             | CapabilityFlags.KEY_UPD_CAP)
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def h(algo: BaseHashAlgo, data: bytes) -> bytes:
    return digest(algo, data)


@dataclasses.dataclass
class PeerSession:
    session: SecureSession
    th: bytearray  # the raw session transcript A ‖ Ct ‖ K ‖ F
    version: int


class Peer:
    """The in-test requester (see the module docstring)."""

    def __init__(self, responder: SpdmResponder, identity: Identity, *, version: int = 0x12,
                 flags: CapabilityFlags = REQ_FLAGS, asym: BaseAsymAlgo | None = None,
                 hash_algo: BaseHashAlgo | None = None, dhe: DheGroup | None = None,
                 aead: AeadSuite = AeadSuite.AES_256_GCM, seed: int = 1) -> None:
        self.rsp = responder
        self.identity = identity
        self.version = version
        self.flags = flags
        self.asym = asym or identity.asym_algo
        self.hash_algo = hash_algo or identity.hash_algo
        self.dhe = dhe or {BaseAsymAlgo.ECDSA_P256: DheGroup.SECP_256_R1}.get(self.asym, DheGroup.SECP_384_R1)
        self.aead = aead
        self.env = ProtocolEnv.for_test("requester", seed)
        self.a = b""
        self.b = b""
        self.l_log = b""
        self.ctx = SpdmContext()
        self.chain: bytes | None = None
        self.algorithms: Algorithms | None = None
        self.now: float | None = None  # simulated time handed to the responder with every message

    # --- plumbing -------------------------------------------------------------------------------

    def raw(self, request: bytes) -> bytes | None:
        return self.rsp.handle(request, self.now)

    def send(self, msg: SpdmMessage | bytes, ctx: SpdmContext | None = None) -> tuple[bytes, SpdmMessage]:
        request = msg if isinstance(msg, bytes) else msg.encode(ctx or self.ctx)
        response = self.rsp.handle(request, self.now)
        assert response is not None, f"no response to {request.hex()}"
        return response, decode_spdm(response, ctx or self.ctx)

    def expect(self, msg: SpdmMessage | bytes, cls: type, ctx: SpdmContext | None = None) -> tuple[bytes, Any]:
        response, decoded = self.send(msg, ctx)
        assert isinstance(decoded, cls), f"expected {cls.__name__}, got {decoded.summary()}"
        return response, decoded

    # --- VCA ------------------------------------------------------------------------------------

    def vca(self, *, meas: bool = True) -> Algorithms:
        req = GetVersion().encode()
        rsp, version = self.expect(req, Version)
        assert self.version in version.spdm_versions
        self.a = req + rsp
        v = self.version
        caps = GetCapabilities(v, ct_exponent=10 if v >= 0x11 else None, flags=self.flags if v >= 0x11 else None,
                               data_transfer_size=4096 if v >= 0x12 else None,
                               max_spdm_msg_size=4096 if v >= 0x12 else None)
        req = caps.encode()
        rsp, _ = self.expect(req, Capabilities)
        self.a += req + rsp
        structs = ()
        if v >= 0x11:
            structs = (AlgStruct(AlgType.DHE, self.dhe), AlgStruct(AlgType.AEAD, self.aead),
                       AlgStruct(AlgType.REQ_BASE_ASYM_ALG, self.asym), AlgStruct(AlgType.KEY_SCHEDULE, KeyScheduleAlgo.SPDM))
        neg = NegotiateAlgorithms(v, self.asym, self.hash_algo,
                                  measurement_specification=MeasurementSpec.DMTF if meas else MeasurementSpec(0),
                                  other_params_support=OtherParams.OPAQUE_DATA_FMT1 if v >= 0x12 else None,
                                  alg_structs=structs)
        req = neg.encode()
        rsp, algs = self.expect(req, Algorithms)
        assert algs.base_asym_sel == self.asym and algs.base_hash_sel == self.hash_algo
        self.a += req + rsp
        self.ctx = algs.to_context()
        self.algorithms = algs
        return algs

    # --- certificates ---------------------------------------------------------------------------

    def digests(self) -> Digests:
        req = GetDigests(self.version).encode()
        rsp, d = self.expect(req, Digests)
        self.b = req + rsp
        return d

    def certificate(self, slot: int = 0, portion: int = 0x200) -> bytes:
        chain = b""
        offset = 0
        while True:
            req = GetCertificate(self.version, slot, offset, portion).encode()
            rsp, cert = self.expect(req, Certificate)
            self.b += req + rsp
            chain += cert.cert_chain
            offset += len(cert.cert_chain)
            if cert.remainder_length == 0:
                break
        result = verify_spdm_cert_chain(self.hash_algo, chain, [self.identity.root], at=NOW, asym_algo=self.asym)
        assert result.ok, result
        self.chain = chain
        return chain

    # --- challenge and measurements -------------------------------------------------------------

    def verify(self, transcript: bytes, signature: bytes, context: SigningContext) -> None:
        assert spdm_verify(self.version, self.asym, self.hash_algo, self.identity.public_key,
                           h(self.hash_algo, transcript), signature, context), f"bad {context.value} signature"

    def challenge(self, slot: int = 0, hash_type: MeasurementSummaryHashType = MeasurementSummaryHashType.NONE,
                  ) -> ChallengeAuth:
        assert self.chain is not None
        ctx_bytes = self.env.rng.bytes(8) if self.version >= 0x13 else None
        req = Challenge(self.version, slot, hash_type, self.env.rng.bytes(32), ctx_bytes).encode()
        summary = 0 if hash_type == MeasurementSummaryHashType.NONE else self.ctx.hash_size
        ctx = self.ctx.with_(meas_summary_size=summary)
        rsp, auth = self.expect(req, ChallengeAuth, ctx)
        assert auth.cert_chain_hash == h(self.hash_algo, self.chain)
        assert auth.requester_context == ctx_bytes
        m1 = self.a + self.b + req + rsp[:-len(auth.signature)]
        self.verify(m1, auth.signature, SigningContext.RESPONDER_CHALLENGE_AUTH)
        self.b = b""
        return auth

    def measurements(self, operation: int = 0xFF, *, signed: bool = True, raw: bool = False,
                     session: PeerSession | None = None) -> Measurements:
        attrs = MeasurementAttributes(0)
        if signed:
            attrs |= MeasurementAttributes.GENERATE_SIGNATURE
        if raw:
            attrs |= MeasurementAttributes.RAW_BIT_STREAM_REQUESTED
        req = GetMeasurements(self.version, operation, attrs, nonce=self.env.rng.bytes(32) if signed else None,
                              slot_id=0 if signed and self.version >= 0x11 else None,
                              requester_context=self.env.rng.bytes(8) if self.version >= 0x13 else None).encode()
        if session is None:
            rsp, m = self.expect(req, Measurements)
        else:
            rsp = self.secured(session, req)
            m = decode_spdm(rsp, self.ctx)
            assert isinstance(m, Measurements), m.summary()
        assert (m.signature is not None) == signed
        body = rsp[:-len(m.signature)] if m.signature else rsp
        self.l_log += req + body
        if signed:
            l1 = (self.a if self.version >= 0x12 else b"") + self.l_log
            self.verify(l1, m.signature, SigningContext.RESPONDER_MEASUREMENTS)
            self.l_log = b""
        return m

    # --- sessions ---------------------------------------------------------------------------------

    def key_exchange(self, hash_type: MeasurementSummaryHashType = MeasurementSummaryHashType.NONE, *,
                     in_clear: bool = False, req_session_id: int = 0xFFFE) -> PeerSession:
        assert self.chain is not None
        v = self.version
        pair = EcdheKeyPair.generate(self.dhe, self.env.rng)
        opaque = supported_versions_opaque([0x1100], v)
        ke = KeyExchange(v, hash_type, 0, req_session_id, self.env.rng.bytes(32), pair.public_value, opaque,
                         session_policy=SessionPolicy(0) if v >= 0x12 else None)
        req = ke.encode(self.ctx)
        summary = 0 if hash_type == MeasurementSummaryHashType.NONE else self.ctx.hash_size
        ctx = self.ctx.with_(meas_summary_size=summary, handshake_in_the_clear=in_clear)
        rsp, kr = self.expect(req, KeyExchangeRsp, ctx)
        assert parse_secured_message_versions(kr.opaque_data, v).selected == 0x1100
        th = bytearray(self.a + h(self.hash_algo, self.chain) + req)
        self.verify(bytes(th) + kr.signed_part(ctx), kr.signature, SigningContext.RESPONDER_KEY_EXCHANGE_RSP)
        th += kr.verify_part(ctx)
        th1 = h(self.hash_algo, bytes(th))
        sid = kr.session_id(req_session_id)
        session = SecureSession(sid, SessionRole.REQUESTER, v, self.hash_algo, self.aead, self.env,
                                handshake_in_the_clear=in_clear, heartbeat_period=kr.heartbeat_period)
        session.set_dhe_secret(pair.shared_secret(kr.exchange_data))
        session.derive_handshake_keys(th1)
        if not in_clear:
            expected = hmac_digest(self.hash_algo, session.keys.finished_key(Direction.RESPONSE), th1)
            assert kr.responder_verify_data == expected, "bad ResponderVerifyData in KEY_EXCHANGE_RSP"
            th += kr.responder_verify_data
        return PeerSession(session, th, v)

    def finish(self, ps: PeerSession, *, tamper: bool = False) -> bytes:
        """FINISH → FINISH_RSP; checks the ResponderVerifyData (in the clear) and switches to data keys."""
        s = ps.session
        header = Finish(ps.version, bytes(self.ctx.hash_size)).encode(self.ctx)[:4]
        ps.th += header
        vd = hmac_digest(self.hash_algo, s.keys.finished_key(Direction.REQUEST), h(self.hash_algo, bytes(ps.th)))
        if tamper:
            vd = bytes([vd[0] ^ 1]) + vd[1:]
        req = header + vd
        ps.th += vd
        ctx = self.ctx.with_(handshake_in_the_clear=s.handshake_in_the_clear)
        if s.handshake_in_the_clear:
            rsp = self.raw(req)
        else:
            record = self.rsp.handle_secured(s.seal(req), self.now)
            assert record is not None
            rsp = s.open(record)
        msg = decode_spdm(rsp, ctx)
        if not isinstance(msg, FinishRsp):
            return rsp
        if s.handshake_in_the_clear:
            ps.th += rsp[:4]
            expected = hmac_digest(self.hash_algo, s.keys.finished_key(Direction.RESPONSE), h(self.hash_algo, bytes(ps.th)))
            assert msg.responder_verify_data == expected, "bad ResponderVerifyData in FINISH_RSP"
            ps.th += msg.responder_verify_data
        else:
            ps.th += rsp
        s.enter_data_phase(h(self.hash_algo, bytes(ps.th)))
        return rsp

    def secured(self, ps: PeerSession, request: bytes) -> bytes:
        record = self.rsp.handle_secured(ps.session.seal(request), self.now)
        assert record is not None, "no secured response"
        return ps.session.open(record)

    def secured_msg(self, ps: PeerSession, msg: SpdmMessage) -> SpdmMessage:
        return decode_spdm(self.secured(ps, msg.encode(self.ctx)), self.ctx)

    def connect(self, *, in_clear: bool = False) -> PeerSession:
        """VCA, digests, certificate, KEY_EXCHANGE and FINISH: an established session."""
        self.vca()
        self.digests()
        self.certificate()
        ps = self.key_exchange(in_clear=in_clear)
        rsp = self.finish(ps)
        assert isinstance(decode_spdm(rsp, self.ctx.with_(handshake_in_the_clear=in_clear)), FinishRsp)
        return ps


def error_of(data: bytes | None) -> ErrorResponse:
    assert data is not None, "expected an ERROR, got no response"
    msg = decode_spdm(data)
    assert isinstance(msg, ErrorResponse), f"expected ERROR, got {msg.summary()}"
    return msg


__all__ = ["NOW", "REQ_FLAGS", "Peer", "PeerSession", "error_of", "h"]
