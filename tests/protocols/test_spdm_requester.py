"""The SPDM requester: scripted responses first, then wired to the real responder in memory.

Every flow runs at SPDM 1.2 and 1.3 (VCA and attestation also at 1.0/1.1) through ``run_flow``
with an in-memory DOE link, and each failure reason the requester knows is provoked with real
bytes: a foreign root, tampered certificate portions, flipped signature bytes, firmware that no
longer matches the policy, responder ERRORs, silence, truncation, padding, Busy/ResponseNotReady.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo, MeasurementHashAlgo
from sim.crypto.hashes import digest
from sim.crypto.identity import Identity, build_identity
from sim.crypto.secrets import SecretClass, SecretList
from sim.protocols.env import CryptoOp, ProtocolEnv
from sim.protocols.flow import Outbound, run_flow
from sim.protocols.spdm.outcome import Failure, FailureReason, FlowFailed, Ok
from sim.protocols.spdm.policy import ANY, VerificationPolicy
from sim.protocols.spdm.profile import DEFAULT_CAPABILITIES, firmware_image, make_profile
from sim.protocols.spdm.requester import RequesterConfig, SessionHandle, SpdmRequester, parse_version
from sim.protocols.spdm.responder import SpdmResponder
from sim.wire.doe import DoeObjectType
from sim.wire.spdm.algorithms import Algorithms, AlgStruct, OtherParams
from sim.wire.spdm.common import (
    AeadSuite,
    AlgType,
    CapabilityFlags,
    DheGroup,
    ErrorCode,
    KeyScheduleAlgo,
    MeasurementSpec,
    MeasurementSummaryHashType,
    RequestCode,
    ResponseCode,
)
from sim.wire.spdm.error import ErrorResponse, ResponseNotReadyData
from sim.wire.spdm.measurements import DmtfValueType
from sim.wire.spdm.session import Heartbeat, KeyUpdateOperation

P384 = (BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384)
P256 = (BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256)
ALL = MeasurementSummaryHashType.ALL
TCB = MeasurementSummaryHashType.TCB
PCISIG_VENDOR = b"\x01\x00"


def identity_for(profile: str, name: str = "dev0", seed: int = 1, ca_name: str | None = None) -> Identity:
    asym, hash_algo = P256 if profile == "p256" else P384
    return build_identity(seed, name, asym, hash_algo, ca_name=ca_name)


# ------------------------------------------------------------------------------------------------
# An in-memory DOE link to the real responder, with hooks to tamper with the bytes in transit
# ------------------------------------------------------------------------------------------------

Tamper = Callable[[Outbound, bytes], bytes | None]


class Link:
    """Carries DOE payloads between a requester flow and a responder, recording every byte."""

    def __init__(self, responder: SpdmResponder, *, pad: bool = False) -> None:
        self.responder = responder
        self.pad = pad
        self.log: list[tuple[str, int, bytes]] = []
        self.on_request: Callable[[Outbound], Outbound] | None = None
        self.on_response: Tamper | None = None

    def __call__(self, out: Outbound) -> bytes | None:
        if self.on_request is not None:
            out = self.on_request(out)
        self.log.append(("req", int(out.object_type), out.payload))
        if out.object_type == DoeObjectType.SPDM:
            answer = self.responder.handle(out.payload)
        else:
            answer = self.responder.handle_secured(out.payload)
        if answer is not None and self.on_response is not None:
            answer = self.on_response(out, answer)
        if answer is not None and self.pad:
            answer = answer + bytes(-len(answer) % 4)
        self.log.append(("rsp", int(out.object_type), answer if answer is not None else b""))
        return answer

    def digest(self) -> str:
        h = hashlib.sha256()
        for direction, kind, data in self.log:
            h.update(direction.encode() + bytes([kind]) + len(data).to_bytes(4, "little") + data)
        return h.hexdigest()

    def requests(self, code: int) -> list[bytes]:
        return [d for direction, kind, d in self.log if direction == "req" and kind == 1 and d[1] == code]


def flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def on_plain(code: RequestCode, change: Callable[[bytes], bytes | None], *, nth: int = 0) -> Tamper:
    """Change the response to the ``nth`` plain request of ``code``."""
    seen = [0]

    def tamper(out: Outbound, answer: bytes) -> bytes | None:
        if out.object_type == DoeObjectType.SPDM and out.payload[1] == code:
            seen[0] += 1
            if seen[0] - 1 == nth:
                return change(answer)
        return answer

    return tamper


@dataclasses.dataclass
class Rig:
    requester: SpdmRequester
    responder: SpdmResponder
    link: Link
    identity: Identity

    def run(self, flow):  # type: ignore[no-untyped-def]
        return run_flow(flow, self.link)

    def ok(self, flow):  # type: ignore[no-untyped-def]
        outcome = self.run(flow)
        assert isinstance(outcome, Ok), str(outcome)
        return outcome.value

    def fails(self, flow, reason: FailureReason) -> Failure:  # type: ignore[no-untyped-def]
        outcome = self.run(flow)
        assert isinstance(outcome, Failure), f"expected {reason}, got {outcome}"
        assert outcome.reason is reason, str(outcome)
        return outcome


def make_rig(version: str = "1.3", profile: str = "default-p384", *, policy: VerificationPolicy | None = None,
             config: RequesterConfig | None = None, pad: bool = False, requester_seed: int = 2,
             responder_seed: int = 1, sink: SecretList | None = None) -> Rig:
    identity = identity_for(profile)
    prof = make_profile(profile)
    responder = SpdmResponder(prof, identity, ProtocolEnv.for_test("dev0.dsm", responder_seed))
    flags = RequesterConfig().flags
    if prof.handshake_in_the_clear:
        flags |= CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP
    cfg = config if config is not None else RequesterConfig(max_version=version, flags=flags)
    env = ProtocolEnv.for_test("host.cma", requester_seed)
    env.sink = sink
    requester = SpdmRequester(cfg, policy if policy is not None else VerificationPolicy.trusting(identity), env)
    return Rig(requester, responder, Link(responder, pad=pad), identity)


VERSIONS = ["1.2", "1.3"]
PROFILES = ["default-p384", "p256", "default-p384-clear"]


# ------------------------------------------------------------------------------------------------
# Against scripted, hand-built responses (no responder involved)
# ------------------------------------------------------------------------------------------------


class Script:
    """Expects exact requests (or a predicate) and replays fixed responses."""

    def __init__(self, steps: list[tuple[bytes | None, bytes | None]]) -> None:
        self.steps = list(steps)
        self.seen: list[bytes] = []

    def __call__(self, out: Outbound) -> bytes | None:
        expected, answer = self.steps.pop(0)
        self.seen.append(out.payload)
        if expected is not None:
            assert out.payload == expected, out.payload.hex()
        return answer


def _scripted_algorithms(version: int) -> bytes:
    return Algorithms(
        version=version, measurement_hash_algo=MeasurementHashAlgo.SHA_384, base_asym_sel=BaseAsymAlgo.ECDSA_P384,
        base_hash_sel=BaseHashAlgo.SHA_384, measurement_specification_sel=MeasurementSpec.DMTF,
        other_params_selection=OtherParams.OPAQUE_DATA_FMT1,
        alg_structs=(AlgStruct(AlgType.DHE, DheGroup.SECP_384_R1), AlgStruct(AlgType.AEAD, AeadSuite.AES_256_GCM),
                     AlgStruct(AlgType.REQ_BASE_ASYM_ALG, 0), AlgStruct(AlgType.KEY_SCHEDULE, KeyScheduleAlgo.SPDM)),
    ).encode()


def test_vca_against_hand_built_responses() -> None:
    # VERSION example of PROTOCOLS.md §2.4 (1.0, 1.1, 1.2), CAPABILITIES 1.2 with CERT|CHAL|MEAS_SIG|
    # ENCRYPT|MAC|KEY_EX|HBEAT|KEY_UPD, DataTransferSize = MaxSPDMmsgSize = 4096.
    version = bytes.fromhex("100400000003001000110012")
    caps = bytes.fromhex("12610000000e0000" "d6620000" "00100000" "00100000")
    script = Script([
        (bytes.fromhex("10840000"), version),
        (bytes.fromhex("12e10000" "00000000" "c0620000" "00100000" "00100000"), caps),
        (None, _scripted_algorithms(0x12)),
    ])
    requester = SpdmRequester(RequesterConfig(), VerificationPolicy(), ProtocolEnv.for_test("host", 1))
    info = run_flow(requester.init_connection(), script).unwrap()
    assert info.version == 0x12 and info.peer_versions == (0x10, 0x11, 0x12)
    assert info.algorithms.base_asym is BaseAsymAlgo.ECDSA_P384 and info.algorithms.aead is AeadSuite.AES_256_GCM
    algorithms_request = script.seen[2]
    assert algorithms_request[:2] == b"\x12\xe3" and algorithms_request[2] == 4  # four AlgStructs
    assert int.from_bytes(algorithms_request[4:6], "little") == len(algorithms_request) == 48
    assert algorithms_request[7] == OtherParams.OPAQUE_DATA_FMT1
    assert requester.transcript.vca == b"".join(script.seen[:1]) + version + script.seen[1] + caps + \
        script.seen[2] + _scripted_algorithms(0x12)


def test_scripted_no_common_version_and_error_to_capabilities() -> None:
    only_14 = bytes.fromhex("10040000000100" "14")
    requester = SpdmRequester(RequesterConfig(), VerificationPolicy(), ProtocolEnv.for_test("host", 1))
    failure = run_flow(requester.init_connection(), Script([(None, only_14)]))
    assert isinstance(failure, Failure) and failure.reason is FailureReason.VERSION_MISMATCH
    assert failure.message == "GET_VERSION"

    error = ErrorResponse(0x12, ErrorCode.VERSION_MISMATCH).encode()
    failure = run_flow(requester.init_connection(),
                       Script([(None, bytes.fromhex("100400000003001000110012")), (None, error)]))
    assert isinstance(failure, Failure) and failure.reason is FailureReason.ERROR_RESPONSE
    assert failure.error_code is ErrorCode.VERSION_MISMATCH and failure.message == "GET_CAPABILITIES"
    with pytest.raises(FlowFailed):
        failure.unwrap()


def test_scripted_selection_outside_the_offer_is_refused() -> None:
    bad = bytearray(_scripted_algorithms(0x12))
    bad[12:16] = int(BaseAsymAlgo.RSASSA_3072).to_bytes(4, "little")  # BaseAsymSel: never offered
    script = Script([(None, bytes.fromhex("100400000003001000110012")),
                     (None, bytes.fromhex("1261000000000000" "d6620000" "00100000" "00100000")),
                     (None, bytes(bad))])
    requester = SpdmRequester(RequesterConfig(), VerificationPolicy(), ProtocolEnv.for_test("host", 1))
    failure = run_flow(requester.init_connection(), script)
    assert isinstance(failure, Failure) and failure.reason is FailureReason.NO_COMMON_ALGORITHM
    assert "BaseAsymAlgo" in failure.detail


# ------------------------------------------------------------------------------------------------
# Requester ↔ responder: every flow
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_flow_against_the_responder(version: str, profile: str) -> None:
    rig = make_rig(version, profile)
    r = rig.requester
    info = rig.ok(r.init_connection())
    assert info.version == parse_version(version)
    assert rig.responder.version == info.version

    digests = rig.ok(r.get_digests())
    assert digests.slot_mask == 1 and set(digests.digests) == {0}
    chain = rig.ok(r.get_certificate(0))
    assert chain.chain == rig.identity.spdm_cert_chain() and chain.digest == digests.digests[0]
    assert len(rig.link.requests(RequestCode.GET_CERTIFICATE)) == -(-len(chain.chain) // 0x400)

    challenge = rig.ok(r.challenge(0, ALL))
    assert len(challenge.measurement_summary_hash) == (48 if profile != "p256" else 32)

    report = rig.ok(r.get_measurements())
    assert report.signed and [b.index for b in report.blocks] == [1, 2, 3, 4, 5, 0xFE]
    assert report.value(2) == digest(BaseHashAlgo.SHA_256 if profile == "p256" else BaseHashAlgo.SHA_384,
                                     firmware_image("1.0.0", "device"))
    some = rig.ok(r.get_measurements([2, 5]))  # two requests, the second one signed over both
    assert [b.index for b in some.blocks] == [2, 5] and some.value(5) == b"1.0.0"
    assert len(rig.link.requests(RequestCode.GET_MEASUREMENTS)) == 3

    session = rig.ok(r.start_session(0))
    assert isinstance(session, SessionHandle) and session.established
    assert session.session_id in rig.responder.sessions
    finish = [kind for direction, kind, d in rig.link.log if direction == "req" and kind == 1 and d[1] == 0xE5]
    assert bool(finish) == (profile == "default-p384-clear")  # FINISH in the clear only when negotiated
    assert rig.ok(r.heartbeat(session)) is None
    in_session = rig.ok(r.get_measurements([1], session=session))
    assert in_session.value(1) == report.value(1)
    for op in (KeyUpdateOperation.UPDATE_KEY, KeyUpdateOperation.UPDATE_ALL_KEYS):
        assert rig.ok(r.key_update(session, op)) is None
        assert rig.ok(r.heartbeat(session)) is None  # the new keys work both ways
    ack = rig.ok(r.secured_exchange(session, Heartbeat(version=info.version).encode()))
    assert ack[:2] == bytes([info.version, ResponseCode.HEARTBEAT_ACK])

    rig.responder.register_vendor_handler(3, PCISIG_VENDOR, lambda sid, ver, payload: b"\x00" + payload[::-1])
    assert rig.ok(r.vendor_request(session, 3, PCISIG_VENDOR, b"\x00\x01\x02")) == b"\x00\x02\x01\x00"
    assert rig.ok(r.end_session(session)) is None
    assert session.ended and session.session_id not in rig.responder.sessions
    rig.fails(r.heartbeat(session), FailureReason.SESSION_ENDED)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "1.3"])
def test_attest_report(version: str, profile: str) -> None:
    rig = make_rig(version, profile)
    report = rig.ok(rig.requester.attest())
    assert report.version == parse_version(version)
    assert report.challenged and report.measurements_signed and report.authenticated
    assert report.summary_verified and report.summary_type is ALL
    assert report.cert_chain_digest == digest(rig.identity.hash_algo, rig.identity.spdm_cert_chain())
    expected_indices = [1, 2, 3, 4] if version in ("1.0", "1.1") else [1, 2, 3, 4, 5, 0xFE]
    assert [b.index for b in report.measurements] == expected_indices
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["version"] == version and as_json["algorithms"]["base_hash"] == report.algorithms.base_hash.name
    assert as_json["measurements"][1]["value"] == report.measurement(2).hex()


def test_tcb_summary_and_session_summary_hash() -> None:
    rig = make_rig("1.2")
    report = rig.ok(rig.requester.attest(summary_type=TCB))
    assert report.summary_verified
    session = rig.ok(rig.requester.start_session(0, TCB))  # checked against the attested measurements
    assert len(session.measurement_summary_hash) == 48


def test_spdm_10_has_no_sessions_and_11_has() -> None:
    rig = make_rig("1.0")
    rig.ok(rig.requester.attest())
    rig.fails(rig.requester.start_session(), FailureReason.UNSUPPORTED_BY_PEER)
    rig = make_rig("1.1")
    rig.ok(rig.requester.attest())
    session = rig.ok(rig.requester.start_session())
    rig.ok(rig.requester.key_update(session))
    rig.ok(rig.requester.end_session(session))


def test_version_cap_and_policy_minimum() -> None:
    rig = make_rig(config=RequesterConfig(max_version="1.2"))
    assert rig.ok(rig.requester.init_connection()).version == 0x12
    rig = make_rig(config=RequesterConfig(max_version="1.2"), policy=VerificationPolicy(min_version=0x13))
    rig.fails(rig.requester.init_connection(), FailureReason.VERSION_MISMATCH)


def test_doe_padding_is_tolerated_and_kept_out_of_transcripts() -> None:
    for version in VERSIONS:
        rig = make_rig(version, pad=True)
        rig.ok(rig.requester.attest())
        session = rig.ok(rig.requester.start_session())
        rig.ok(rig.requester.key_update(session))
        rig.ok(rig.requester.end_session(session))
        assert any(len(d) % 4 == 0 and d[-1] == 0 for direction, _, d in rig.link.log if direction == "rsp")
    rig = make_rig()
    rig.link.on_response = on_plain(RequestCode.GET_DIGESTS, lambda a: a + bytes(4))  # 4 > 3 pad bytes
    rig.ok(rig.requester.init_connection())
    rig.fails(rig.requester.get_digests(), FailureReason.MALFORMED_RESPONSE)
    rig.link.on_response = on_plain(RequestCode.CHALLENGE, lambda a: a + bytes(4))
    rig.fails(rig.requester.attest(), FailureReason.MALFORMED_RESPONSE)


def test_same_seeds_give_the_same_bytes_on_the_wire() -> None:
    def run(requester_seed: int) -> str:
        rig = make_rig("1.3", requester_seed=requester_seed)
        rig.ok(rig.requester.attest())
        session = rig.ok(rig.requester.start_session())
        rig.ok(rig.requester.key_update(session))
        rig.ok(rig.requester.heartbeat(session))
        rig.ok(rig.requester.end_session(session))
        return rig.link.digest()

    first = run(2)
    assert run(2) == first
    assert run(3) != first


def test_crypto_is_metered_and_secrets_are_reported() -> None:
    sink = SecretList()
    rig = make_rig("1.2", sink=sink)
    rig.ok(rig.requester.attest())
    rig.ok(rig.requester.start_session())
    totals = rig.requester.env.meter.totals
    assert totals[CryptoOp.ECDSA_P384_VERIFY] >= 3 + 2  # challenge, measurements, key exchange + chain
    assert totals[CryptoOp.ECDH_P384] == 1 and totals[CryptoOp.HKDF] > 0 and totals[CryptoOp.HASH_PER_KIB] > 0
    assert sink.by_class(SecretClass.DHE_PRIVATE) and sink.by_class(SecretClass.SPDM_SESSION_KEY)
    assert all(r.owner == "host.cma" for r in sink.records)


# ------------------------------------------------------------------------------------------------
# Failure reasons
# ------------------------------------------------------------------------------------------------


def test_untrusted_root() -> None:
    rogue = build_identity(1, "dev0", *P384, ca_name="rogue-vendor")
    rig = make_rig(policy=VerificationPolicy.trusting(rogue))
    failure = rig.fails(rig.requester.attest(), FailureReason.UNTRUSTED_ROOT)
    assert failure.message == "GET_CERTIFICATE"
    rig = make_rig(policy=VerificationPolicy())  # trusts nothing at all
    rig.fails(rig.requester.attest(), FailureReason.UNTRUSTED_ROOT)


def test_root_with_the_trusted_name_but_another_key() -> None:
    impostor = build_identity(99, "dev0", *P384)  # same CA names, different seed: different keys
    rig = make_rig(policy=VerificationPolicy.trusting(impostor))
    rig.fails(rig.requester.attest(), FailureReason.CERT_CHAIN_INVALID)


@pytest.mark.parametrize(("portion", "offset", "what"), [
    (0, 8 + 4 + 3, "root hash"),  # CERTIFICATE header 8, then the chain: Length, Reserved, RootHash
    (1, -3, "leaf signature"),  # the last bytes of the chain are the leaf certificate's signature
])
def test_tampered_certificate_portion(portion: int, offset: int, what: str) -> None:
    rig = make_rig()
    rig.link.on_response = on_plain(RequestCode.GET_CERTIFICATE, lambda a: flip(a, offset), nth=portion)
    failure = rig.fails(rig.requester.attest(), FailureReason.CERT_CHAIN_INVALID)
    assert failure.message == "GET_CERTIFICATE", what


def test_digest_mismatch() -> None:
    rig = make_rig()
    rig.link.on_response = on_plain(RequestCode.GET_DIGESTS, lambda a: flip(a, 10))
    rig.fails(rig.requester.attest(), FailureReason.DIGEST_MISMATCH)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("code", "offset"), [
    (RequestCode.CHALLENGE, -1),  # signature
    (RequestCode.CHALLENGE, 4 + 48 + 5),  # responder nonce: signed, so the signature breaks
    (RequestCode.GET_MEASUREMENTS, -1),
    (RequestCode.GET_MEASUREMENTS, 8 + 10),  # inside the first measurement block
])
def test_flipped_signed_byte_is_a_bad_signature(version: str, code: RequestCode, offset: int) -> None:
    rig = make_rig(version)
    rig.link.on_response = on_plain(code, lambda a: flip(a, offset))
    rig.fails(rig.requester.attest(), FailureReason.BAD_SIGNATURE)


@pytest.mark.parametrize("version", VERSIONS)
def test_key_exchange_signature_and_verify_data(version: str) -> None:
    rig = make_rig(version)
    rig.ok(rig.requester.attest())
    rig.link.on_response = on_plain(RequestCode.KEY_EXCHANGE, lambda a: flip(a, -49))  # last signature byte
    rig.fails(rig.requester.start_session(), FailureReason.BAD_SIGNATURE)
    rig.link.on_response = on_plain(RequestCode.KEY_EXCHANGE, lambda a: flip(a, -1))  # ResponderVerifyData
    rig.fails(rig.requester.start_session(), FailureReason.BAD_VERIFY_DATA)
    assert not rig.requester.sessions
    rig.link.on_response = None
    assert rig.ok(rig.requester.start_session()).established


def test_finish_rsp_verify_data_in_the_clear() -> None:
    rig = make_rig("1.3", "default-p384-clear")
    rig.ok(rig.requester.attest())
    rig.link.on_response = on_plain(RequestCode.FINISH, lambda a: flip(a, -1))
    rig.fails(rig.requester.start_session(), FailureReason.BAD_VERIFY_DATA)
    assert not rig.requester.sessions


def test_measurement_mismatch_after_a_firmware_update() -> None:
    golden = make_rig("1.3")
    golden_report = golden.ok(golden.requester.attest())
    policy = VerificationPolicy.trusting(golden.identity).pinned(golden_report.measurements)
    rig = make_rig("1.3", policy=policy)
    rig.ok(rig.requester.attest())
    rig.responder.update_firmware("1.0.1")
    failure = rig.fails(rig.requester.attest(), FailureReason.MEASUREMENT_MISMATCH)
    assert "index 2" in failure.detail and "index 5" in failure.detail
    assert rig.requester.last_measurements is not None
    assert rig.requester.last_measurements.content_changed.name == "UNCHANGED"  # within one signed L


def test_measurement_reference_any_and_unlisted() -> None:
    rig = make_rig(policy=VerificationPolicy.trusting(identity_for("default-p384"),
                                                      expected_measurements={1: ANY, 0x30: ANY}))
    failure = rig.fails(rig.requester.attest(), FailureReason.MEASUREMENT_MISMATCH)
    assert "index 48 was not reported" in failure.detail
    policy = VerificationPolicy.trusting(identity_for("default-p384"), expected_measurements={1: ANY},
                                         allow_unlisted_measurements=False)
    rig = make_rig(policy=policy)
    rig.fails(rig.requester.attest(), FailureReason.MEASUREMENT_MISMATCH)


def test_summary_hash_mismatch() -> None:
    # The verifier counts firmware as TCB, the device only its ROM: the TCB summaries disagree.
    policy = VerificationPolicy.trusting(identity_for("default-p384"),
                                         tcb_value_types=frozenset({DmtfValueType.MUTABLE_FIRMWARE}))
    rig = make_rig(policy=policy)
    rig.fails(rig.requester.attest(summary_type=TCB), FailureReason.SUMMARY_HASH_MISMATCH)
    rig.ok(rig.requester.attest(summary_type=ALL))  # ALL does not depend on what counts as TCB
    failure = rig.fails(rig.requester.start_session(0, TCB), FailureReason.SUMMARY_HASH_MISMATCH)
    assert failure.message == "KEY_EXCHANGE" and not rig.requester.sessions


def _rig_with_capabilities(capabilities: CapabilityFlags, policy: VerificationPolicy | None = None) -> Rig:
    rig = make_rig("1.3", policy=policy)
    rig.responder = SpdmResponder(make_profile("default-p384").replace(capabilities=capabilities), rig.identity,
                                  ProtocolEnv.for_test("dev0.dsm", 1))
    rig.link = Link(rig.responder)
    return rig


def test_attest_adapts_to_the_responder_capabilities() -> None:
    no_challenge = DEFAULT_CAPABILITIES & ~CapabilityFlags.CHAL_CAP
    rig = _rig_with_capabilities(no_challenge)
    report = rig.ok(rig.requester.attest())
    assert not report.challenged and report.measurements_signed and report.authenticated
    rig.fails(rig.requester.challenge(0), FailureReason.UNSUPPORTED_BY_PEER)

    unsigned_only = (DEFAULT_CAPABILITIES & ~CapabilityFlags.MEAS_CAP_SIG) | CapabilityFlags.MEAS_CAP_NO_SIG
    rig = _rig_with_capabilities(unsigned_only)
    rig.fails(rig.requester.attest(), FailureReason.POLICY_VIOLATION)
    lenient = VerificationPolicy.trusting(rig.identity, require_signed_measurements=False)
    rig = _rig_with_capabilities(unsigned_only, lenient)
    report = rig.ok(rig.requester.attest())
    assert report.challenged and not report.measurements_signed and report.summary_verified

    no_measurements = DEFAULT_CAPABILITIES & ~CapabilityFlags.MEAS_CAP_SIG & ~CapabilityFlags.MEAS_FRESH_CAP
    rig = _rig_with_capabilities(no_measurements)
    report = rig.ok(rig.requester.attest())
    assert report.challenged and report.measurements == () and report.summary_type is MeasurementSummaryHashType.NONE
    rig.fails(rig.requester.get_measurements(), FailureReason.UNSUPPORTED_BY_PEER)


def test_no_common_algorithm_by_policy() -> None:
    rig = make_rig(policy=VerificationPolicy.trusting(identity_for("default-p384"),
                                                      accepted_asym=BaseAsymAlgo.ECDSA_P256))
    failure = rig.fails(rig.requester.init_connection(), FailureReason.NO_COMMON_ALGORITHM)
    assert "policy" in failure.detail


def test_responder_errors() -> None:
    rig = make_rig()
    rig.ok(rig.requester.attest())
    failure = rig.fails(rig.requester.get_measurements([0x30]), FailureReason.ERROR_RESPONSE)
    assert failure.error_code is ErrorCode.INVALID_REQUEST
    session = rig.ok(rig.requester.start_session())
    failure = rig.fails(rig.requester.vendor_request(session, 3, b"\x99\x99", b"\x00"), FailureReason.ERROR_RESPONSE)
    assert failure.error_code is ErrorCode.UNSUPPORTED_REQUEST and failure.error_data == 0xFE
    assert session.established  # an ERROR inside the session does not end it
    rig.ok(rig.requester.heartbeat(session))


def test_no_response() -> None:
    rig = make_rig()
    rig.link.on_response = on_plain(RequestCode.CHALLENGE, lambda a: None)
    failure = rig.fails(rig.requester.attest(), FailureReason.NO_RESPONSE)
    assert failure.message == "CHALLENGE"
    requester = SpdmRequester()
    assert run_flow(requester.init_connection(), lambda out: None).reason is FailureReason.NO_RESPONSE


@pytest.mark.parametrize(("code", "cut"), [
    (RequestCode.CHALLENGE, 60), (RequestCode.GET_MEASUREMENTS, -5), (RequestCode.GET_VERSION, 2),
    (RequestCode.GET_CERTIFICATE, 20),
])
def test_truncated_response(code: RequestCode, cut: int) -> None:
    rig = make_rig()
    rig.link.on_response = on_plain(code, lambda a: a[:cut])
    rig.fails(rig.requester.attest(), FailureReason.MALFORMED_RESPONSE)


def test_unexpected_response_and_wrong_version() -> None:
    rig = make_rig()
    rig.link.on_response = on_plain(RequestCode.GET_DIGESTS, lambda a: bytes.fromhex("100400000001" "0013"))
    rig.fails(rig.requester.attest(), FailureReason.UNEXPECTED_RESPONSE)
    rig = make_rig("1.3")
    rig.link.on_response = on_plain(RequestCode.GET_DIGESTS, lambda a: bytes([0x12]) + a[1:])
    rig.fails(rig.requester.attest(), FailureReason.VERSION_MISMATCH)


def test_busy_is_retried_a_bounded_number_of_times() -> None:
    # A busy responder does not process the request: Busy is answered in front of the real one.
    rig = make_rig()
    busy = ErrorResponse(0x13, ErrorCode.BUSY).encode()
    count = [0]

    def busy_twice(out: Outbound) -> bytes | None:
        if out.payload[1] == RequestCode.CHALLENGE and count[0] < 2:
            count[0] += 1
            return busy
        return rig.link(out)

    assert run_flow(rig.requester.attest(), busy_twice).unwrap().challenged
    assert count[0] == 2

    rig = make_rig()
    sent = [0]

    def always_busy(out: Outbound) -> bytes | None:
        if out.payload[1] == RequestCode.GET_DIGESTS:
            sent[0] += 1
            return busy
        return rig.link(out)

    failure = run_flow(rig.requester.attest(), always_busy)
    assert isinstance(failure, Failure) and failure.reason is FailureReason.ERROR_RESPONSE
    assert failure.error_code is ErrorCode.BUSY
    assert sent[0] == 1 + rig.requester.config.max_busy_retries


def test_response_not_ready_then_respond_if_ready() -> None:
    rig = make_rig("1.2")
    held: dict[str, bytes] = {}

    def delay(out: Outbound, answer: bytes) -> bytes:
        if out.object_type == DoeObjectType.SPDM and out.payload[1] == RequestCode.CHALLENGE:
            held["challenge_auth"] = answer
            return ErrorResponse(0x12, ErrorCode.RESPONSE_NOT_READY,
                                 extended=ResponseNotReadyData(10, RequestCode.CHALLENGE, 7, 2)).encode()
        if out.object_type == DoeObjectType.SPDM and out.payload[1] == RequestCode.RESPOND_IF_READY:
            assert out.payload == bytes([0x12, 0xFF, RequestCode.CHALLENGE, 7])
            return held.pop("challenge_auth")
        return answer

    rig.link.on_response = delay
    report = rig.ok(rig.requester.attest())  # the signature proves RESPOND_IF_READY stayed out of M1
    assert report.challenged and rig.requester.last_not_ready_wait_us == (1 << 10) * 2


def test_decrypt_failed_on_a_tampered_record() -> None:
    rig = make_rig()
    rig.ok(rig.requester.attest())
    session = rig.ok(rig.requester.start_session())
    rig.link.on_response = lambda out, answer: flip(answer, -1) if out.object_type == 2 else answer
    rig.fails(rig.requester.heartbeat(session), FailureReason.DECRYPT_FAILED)
    assert session.ended and not rig.requester.sessions
    rig.fails(rig.requester.heartbeat(session), FailureReason.SESSION_ENDED)


def test_responder_decrypt_error_ends_the_session() -> None:
    rig = make_rig()
    rig.ok(rig.requester.attest())
    session = rig.ok(rig.requester.start_session())

    def corrupt(out: Outbound) -> Outbound:
        return Outbound(out.object_type, flip(out.payload, -1)) if out.object_type == 2 else out

    rig.link.on_request = corrupt
    failure = rig.fails(rig.requester.heartbeat(session), FailureReason.SESSION_ENDED)
    assert failure.error_code is ErrorCode.DECRYPT_ERROR
    assert session.ended and not rig.responder.sessions


def test_get_version_resets_sessions_and_state() -> None:
    rig = make_rig()
    rig.ok(rig.requester.attest())
    session = rig.ok(rig.requester.start_session())
    rig.ok(rig.requester.init_connection())
    assert session.ended and not rig.responder.sessions
    rig.fails(rig.requester.heartbeat(session), FailureReason.SESSION_ENDED)
    rig.fails(rig.requester.challenge(0), FailureReason.INVALID_STATE)  # the chain belongs to the old connection


def test_flows_out_of_order() -> None:
    rig = make_rig()
    rig.fails(rig.requester.challenge(0), FailureReason.INVALID_STATE)
    rig.ok(rig.requester.init_connection())
    rig.fails(rig.requester.challenge(0), FailureReason.INVALID_STATE)
    rig.fails(rig.requester.start_session(0), FailureReason.INVALID_STATE)
    rig.fails(rig.requester.get_certificate(9), FailureReason.INVALID_STATE)
    rig.fails(rig.requester.get_measurements(), FailureReason.INVALID_STATE)  # signed needs a verified chain
    rig.fails(rig.requester.get_measurements(signed=False), FailureReason.POLICY_VIOLATION)
    rig.requester.policy = rig.requester.policy.replace(require_signed_measurements=False)
    assert not rig.ok(rig.requester.get_measurements(signed=False)).signed


def test_vendor_request_silence_is_none() -> None:
    rig = make_rig()
    rig.ok(rig.requester.attest())
    session = rig.ok(rig.requester.start_session())
    rig.responder.register_vendor_handler(3, PCISIG_VENDOR, lambda sid, ver, payload: None)
    assert rig.ok(rig.requester.vendor_request(session, 3, PCISIG_VENDOR, b"\x01\x10")) is None
    rig.ok(rig.requester.heartbeat(session))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.integers(0, 40), kind=st.sampled_from(["flip", "cut", "junk", "random"]),
       position=st.integers(0, 4000), data=st.binary(min_size=0, max_size=64))
def test_mangled_responses_never_raise(target: int, kind: str, position: int, data: bytes) -> None:
    rig = make_rig("1.3")
    count = [0]

    def mangle(out: Outbound, answer: bytes) -> bytes:
        count[0] += 1
        if count[0] - 1 != target or not answer:
            return answer
        if kind == "flip":
            return flip(answer, position % len(answer))
        if kind == "cut":
            return answer[:position % len(answer)]
        if kind == "junk":
            return answer + data
        return data

    rig.link.on_response = mangle
    outcomes = [rig.run(rig.requester.attest())]
    session = rig.run(rig.requester.start_session())
    outcomes.append(session)
    if isinstance(session, Ok):
        outcomes.append(rig.run(rig.requester.key_update(session.value)))
        outcomes.append(rig.run(rig.requester.heartbeat(session.value)))
        outcomes.append(rig.run(rig.requester.end_session(session.value)))
    for outcome in outcomes:
        assert isinstance(outcome, Ok | Failure)
        assert not (isinstance(outcome, Failure) and outcome.reason is FailureReason.INTERNAL_ERROR), str(outcome)


# ------------------------------------------------------------------------------------------------
# Configuration and policy helpers
# ------------------------------------------------------------------------------------------------


def test_parse_version_and_config_validation() -> None:
    assert parse_version("1.2") == 0x12 and parse_version("13") == 0x13 and parse_version(0x11) == 0x11
    for bad in ("1.4", "x", "2.0"):
        with pytest.raises(ValueError):
            parse_version(bad)
    with pytest.raises(ValueError):
        RequesterConfig(flags=CapabilityFlags.MUT_AUTH_CAP)
    with pytest.raises(ValueError):
        RequesterConfig(data_transfer_size=41, max_spdm_msg_size=41)
    assert RequesterConfig(max_version="1.1").offered_versions == (0x10, 0x11)


def test_policy_from_root_files_and_checks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    identity = identity_for("default-p384")
    root_file = tmp_path / "root.der"
    root_file.write_bytes(identity.root.public_bytes(serialization.Encoding.DER))
    policy = VerificationPolicy.from_root_files(root_file, require_summary_hash_match=False)
    assert policy.trusted_roots == (identity.root,) and not policy.require_summary_hash_match
    with pytest.raises(ValueError):
        VerificationPolicy(expected_measurements={0: ANY})
    rig = make_rig(policy=policy)
    report = rig.ok(rig.requester.attest())
    pinned = policy.pinned(report.measurements)
    assert pinned.measurement_problems(report.measurements) == []
    assert pinned.measurement_problems(report.measurements[1:]) == ["index 1 was not reported"]


def test_plain_answers_to_secured_requests() -> None:
    rig = make_rig()
    rig.ok(rig.requester.attest())
    session = rig.ok(rig.requester.start_session())
    other_error = ErrorResponse(0x13, ErrorCode.UNSPECIFIED).encode()
    rig.link.on_response = lambda out, answer: other_error if out.object_type == 2 else answer
    failure = rig.fails(rig.requester.heartbeat(session), FailureReason.ERROR_RESPONSE)
    assert failure.error_code is ErrorCode.UNSPECIFIED
    rig.link.on_response = lambda out, answer: b"\x01\x02\x03\x04" + answer[4:] if out.object_type == 2 else answer
    rig.fails(rig.requester.heartbeat(session), FailureReason.MALFORMED_RESPONSE)
    decrypt_error = ErrorResponse(0x13, ErrorCode.DECRYPT_ERROR).encode()
    rig.link.on_response = lambda out, answer: decrypt_error if out.object_type == 2 else answer
    failure = rig.fails(rig.requester.heartbeat(session), FailureReason.SESSION_ENDED)
    assert failure.error_code is ErrorCode.DECRYPT_ERROR and session.ended


def test_a_bug_becomes_an_internal_error_not_an_exception() -> None:
    rig = make_rig()

    def boom(*args: object) -> None:
        raise KeyError("simulated bug")

    rig.requester._check_capabilities = boom  # type: ignore[method-assign]
    failure = rig.fails(rig.requester.attest(), FailureReason.INTERNAL_ERROR)
    assert "KeyError" in failure.detail and failure.message == "ATTEST"
