"""A fat guest's verdict names the same FailureReason as a thin guest's for the same cause.

An attestation expectation's ``reason:`` is looked for in the guest's verdict (the words after "not
accepted: "), so the fat guest words its refusals like the thin securing flow ("<device>: <step> failed
(<reason>): <detail>"). Its evidence check also reports the certificate chain's real status: the chain in
TDI_INFO does not name its hash, and reading a SHA-384 container with SHA-256 framing is MALFORMED, which
must not hide the UNTRUSTED_ROOT found under the chain's own hash.
"""

from __future__ import annotations

import pytest

from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo
from sim.crypto.identity import ChainStatus, build_identity
from sim.firmware.commands import FwCommandId, FwStatus, error, response
from sim.protocols.spdm.outcome import FailureReason
from sim.protocols.spdm.policy import VerificationPolicy
from sim.scenario.loader import load_scenario_text
from sim.scenario.run import ModelRun
from sim.scenario.schema import TrustModel
from sim.vmm.guest import TdiHistoryEntry, TdiNote, _verify_evidence_chain
from sim.wire.tdisp import TdiState
from tests.firmware.fw_bench import build

# a: its chain ends in the vendor CA, its guest trusts only "other"; b: runs 1.0.0, its guest expects 2.0.0;
# c: p256 (SHA-256 chain container), untrusted like a; d: nothing wrong
POLICY_FAILURES = """\
name: verdict-reasons
seed: 1
models: [fat, thin-guest]
platform:
  root_ports: [{id: rp0}, {id: rp1}, {id: rp2}, {id: rp3}]
  devices:
    - {id: a, port: rp0, owner: g1, identity: {ca: vendor}}
    - {id: b, port: rp1, owner: g2, measurements: {firmware: "1.0.0"}}
    - {id: c, port: rp2, owner: g3, profile: p256, identity: {ca: vendor}}
    - {id: d, port: rp3, owner: g4}
guests:
  - {id: g1, devices: [a], policy: {trusted_roots: [{ca: other}]}}
  - {id: g2, devices: [b], policy: {expected_measurements: {b: {firmware: "2.0.0"}}}}
  - {id: g3, devices: [c], policy: {trusted_roots: [{ca: other}]}}
  - {id: g4, devices: [d]}
expect:
  - {expect: attestation, device: a, by: guest, outcome: failed, reason: untrusted-root}
  - {expect: attestation, device: b, by: guest, outcome: failed, reason: measurement-mismatch}
  - {expect: attestation, device: c, by: guest, outcome: failed, reason: untrusted-root}
  - {expect: attestation, device: d, by: guest, outcome: ok}
"""


@pytest.fixture(scope="module")
def policy_runs() -> dict[TrustModel, dict]:
    scenario = load_scenario_text(POLICY_FAILURES)
    return {model: ModelRun(scenario, model).run() for model in scenario.models}


@pytest.mark.parametrize("model", [TrustModel.FAT, TrustModel.THIN_GUEST])
def test_the_same_reason_expectations_hold_in_every_guest_model(policy_runs: dict, model: TrustModel) -> None:
    failed = [x for x in policy_runs[model]["expectations"] if not x["held"]]
    assert failed == []


def test_the_fat_verdict_names_the_reason_and_the_chains_real_status(policy_runs: dict) -> None:
    devices = policy_runs[TrustModel.FAT]["devices"]
    a, b, c = (devices[d]["attestation"]["guest"]["reason"] for d in "abc")
    assert a.startswith("a: evidence check failed (untrusted-root): ")
    assert "(untrusted-root: no trusted root" in a and "malformed" not in a.lower()
    assert "(untrusted-root: no trusted root" in c and "malformed" not in c.lower()   # the SHA-256 container
    assert b.startswith("b: evidence check failed (measurement-mismatch): index 2 is ")
    assert devices["d"]["attestation"]["guest"]["ok"] is True


# --------------------------------------------------------------------------------------------------
# the chain's status, whichever hash frames the container
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("asym", "algo"), [(BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384),
                                            (BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256)])
def test_evidence_chain_status_is_read_under_the_containers_own_hash(asym: BaseAsymAlgo, algo: BaseHashAlgo) -> None:
    dev = build_identity(5, "dev", asym, algo, ca_name="vendor")
    other = build_identity(5, "else", asym, algo, ca_name="other")
    chain = dev.spdm_cert_chain(algo)
    assert _verify_evidence_chain(chain, VerificationPolicy.trusting(dev)).status is ChainStatus.OK
    untrusted = _verify_evidence_chain(chain, VerificationPolicy.trusting(other))
    assert untrusted.status is ChainStatus.UNTRUSTED_ROOT, untrusted
    # a RootHash that is not the hash of the root certificate: framing fits, the hash does not
    h = 48 if algo is BaseHashAlgo.SHA_384 else 32
    bad_root_hash = chain[:4] + bytes(b ^ 0xFF for b in chain[4:4 + h]) + chain[4 + h:]
    assert _verify_evidence_chain(bad_root_hash, VerificationPolicy.trusting(dev)).status \
        is ChainStatus.ROOT_HASH_MISMATCH
    # bytes that frame under neither hash
    assert _verify_evidence_chain(chain[:40], VerificationPolicy.trusting(dev)).status is ChainStatus.MALFORMED


# --------------------------------------------------------------------------------------------------
# firmware refusals: the status in the requester's terms, the fat step's own name kept
# --------------------------------------------------------------------------------------------------


def _last_verdict(history: list[TdiHistoryEntry]) -> str:
    return next(e.text for e in reversed(history) if e.note is TdiNote.NOT_ACCEPTED).removeprefix("not accepted: ")


@pytest.mark.parametrize(("status", "reason"), [
    (FwStatus.DECRYPT_FAILED, FailureReason.DECRYPT_FAILED),
    (FwStatus.BAD_SEQUENCE, FailureReason.DECRYPT_FAILED),
    (FwStatus.INVALID_COMMAND, FailureReason.MALFORMED_RESPONSE),
    (FwStatus.INVALID_STATE, FailureReason.INVALID_STATE),
    (FwStatus.BUSY, FailureReason.NO_RESPONSE),
    (FwStatus.NOT_PERMITTED, FailureReason.ERROR_RESPONSE),
])
def test_a_refused_guest_request_names_a_failure_reason(status: FwStatus, reason: FailureReason) -> None:
    b = build("fat")
    rec = b.guest.tdi("dev0")
    answer = error(FwCommandId.GUEST_REQUEST, status, "told by the firmware")
    assert b.guest._fat_refused(rec, "TDI_INFO", answer, "firmware-x") is False
    assert _last_verdict(rec.history) == f"dev0: TDI_INFO failed ({reason}): firmware status {status.name}: " \
                                         "told by the firmware"
    assert rec.failure_reason == "firmware-x"       # the fat step's own stable name stays


def test_a_success_without_the_expected_body_is_an_unexpected_response() -> None:
    b = build("fat")
    rec = b.guest.tdi("dev0")
    b.guest._fat_refused(rec, "START", response(FwCommandId.GUEST_REQUEST), "start-refused")
    assert _last_verdict(rec.history) == f"dev0: START failed ({FailureReason.UNEXPECTED_RESPONSE}): the firmware " \
                                         "answered with Empty"
    assert rec.state is not TdiState.RUN and rec.failure_reason == "start-refused"


def test_a_tampered_sealed_answer_gives_decrypt_failed_in_the_verdict() -> None:
    from tests.firmware.test_fat_guest_channel import _answer_hook
    from tests.firmware.test_fat_tsm import connect_bind_accept

    b = build("fat")

    def flip(frame: bytes, answer: bytes) -> bytes:
        if len(answer) > 200:      # the sealed TDI_INFO answer: one ciphertext bit
            changed = bytearray(answer)
            changed[150] ^= 0x01
            return bytes(changed)
        return answer

    _answer_hook(b, flip)
    assert b.run(connect_bind_accept(b)) is False
    rec = b.guest.tdi("dev0")
    verdict = _last_verdict(rec.history)
    assert verdict.startswith(f"dev0: TDI_INFO failed ({FailureReason.DECRYPT_FAILED}): firmware status "
                              "DECRYPT_FAILED")
    assert rec.failure_reason == "firmware-decrypt-failed"
