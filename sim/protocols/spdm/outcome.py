"""What requester flows return: ``Ok(value)`` or a ``Failure`` that says why and where, and the values.

A requester flow never lets an exception reach its driver (a SimPy process, the emulator socket
client, a test): every problem — silence, an SPDM ERROR, bytes that do not decode, a signature
that does not verify, a measurement the policy does not expect — ends the flow with a
:class:`Failure` naming the :class:`FailureReason`, the SPDM exchange it happened in and, for an
ERROR response, the responder's ErrorCode. Callers branch on ``outcome.ok`` (or ``isinstance``)
and keep the failure in their trace and reports.

The values of successful flows are frozen records of what was *verified*: the negotiated
connection, a verified certificate chain, a verified challenge, a measurement report, and the
:class:`AttestationReport` that composes them — the object a kernel, firmware TSM or guest keeps.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

from sim.crypto.algorithms import AeadSuite, BaseAsymAlgo, BaseHashAlgo, DheGroup, KeyScheduleAlgo, MeasurementHashAlgo
from sim.crypto.keys import SigningPublicKey
from sim.wire.spdm.common import CapabilityFlags, ErrorCode, MeasurementSpec, MeasurementSummaryHashType
from sim.wire.spdm.measurements import ContentChanged, MeasurementBlock

T = TypeVar("T")


class FailureReason(enum.StrEnum):
    """Why a requester flow failed. The values are stable names for traces and result.json."""

    NO_RESPONSE = "no-response"  # the transport returned nothing (timeout, dropped object, dead mailbox)
    ERROR_RESPONSE = "error-response"  # the responder answered with SPDM ERROR (see Failure.error_code)
    MALFORMED_RESPONSE = "malformed-response"  # bytes that do not decode, or fields that contradict the request
    UNEXPECTED_RESPONSE = "unexpected-response"  # a well-formed response of the wrong kind
    VERSION_MISMATCH = "version-mismatch"  # no common SPDM/DSP0277 version, or a response of the wrong version
    NO_COMMON_ALGORITHM = "no-common-algorithm"  # the selection is not one of ours / not accepted by policy
    UNSUPPORTED_BY_PEER = "unsupported-by-peer"  # the responder lacks the capability the flow needs
    INVALID_STATE = "invalid-state"  # the flow was started out of order (e.g. CHALLENGE before a certificate)
    CERT_CHAIN_INVALID = "cert-chain-invalid"  # framing, RootHash, issuance, constraints, key usage, validity
    UNTRUSTED_ROOT = "untrusted-root"  # the chain does not end in a root the policy trusts
    DIGEST_MISMATCH = "digest-mismatch"  # chain hash differs from DIGESTS / CertChainHash
    BAD_SIGNATURE = "bad-signature"  # CHALLENGE_AUTH, MEASUREMENTS or KEY_EXCHANGE_RSP signature fails
    BAD_VERIFY_DATA = "bad-verify-data"  # ResponderVerifyData HMAC fails
    MEASUREMENT_MISMATCH = "measurement-mismatch"  # a measurement differs from the policy's reference value
    SUMMARY_HASH_MISMATCH = "summary-hash-mismatch"  # MeasurementSummaryHash differs from the measurements
    POLICY_VIOLATION = "policy-violation"  # e.g. policy requires signed measurements the responder cannot sign
    DECRYPT_FAILED = "decrypt-failed"  # a secured response record did not authenticate
    SESSION_ENDED = "session-ended"  # the session is gone (ended, reset, or the responder reported DecryptError)
    INTERNAL_ERROR = "internal-error"  # a bug in the simulator, caught so that the driver survives


@dataclasses.dataclass(frozen=True)
class Ok(Generic[T]):
    """A flow that succeeded, with its result."""

    value: T
    ok: ClassVar[bool] = True

    def unwrap(self) -> T:
        return self.value


@dataclasses.dataclass(frozen=True)
class Failure:
    """A flow that failed: the reason, a human-readable detail, and the SPDM exchange (e.g. "CHALLENGE")."""

    reason: FailureReason
    detail: str
    message: str
    error_code: ErrorCode | None = None  # set for ERROR_RESPONSE (and SESSION_ENDED by DecryptError)
    error_data: int | None = None
    ok: ClassVar[bool] = False

    def unwrap(self) -> NoReturn:
        raise FlowFailed(self)

    def __str__(self) -> str:
        code = f" [{self.error_code.name}]" if self.error_code is not None else ""
        return f"{self.message}: {self.reason.value}{code}: {self.detail}"


Outcome = Ok[T] | Failure


class FlowFailed(RuntimeError):
    """Raised by :meth:`Failure.unwrap`, for callers (tests, scripts) that prefer an exception."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(str(failure))


# --------------------------------------------------------------------------------------------
# Values of successful flows
# --------------------------------------------------------------------------------------------


def _dotted(version: int) -> str:
    return f"{version >> 4}.{version & 0xF}"


def _flag_name(value: Any) -> str | None:
    return None if value is None else (value.name or f"0x{int(value):x}")


@dataclasses.dataclass(frozen=True)
class NegotiatedAlgorithms:
    """The ALGORITHMS selection, one bit per field (None where the responder selected nothing)."""

    base_asym: BaseAsymAlgo | None
    base_hash: BaseHashAlgo
    measurement_spec: MeasurementSpec | None
    measurement_hash: MeasurementHashAlgo | None
    dhe: DheGroup | None = None
    aead: AeadSuite | None = None
    key_schedule: KeyScheduleAlgo | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {f.name: _flag_name(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class ConnectionInfo:
    """Result of VCA (GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS)."""

    version: int
    peer_versions: tuple[int, ...]
    peer_flags: CapabilityFlags
    peer_ct_exponent: int
    peer_data_transfer_size: int | None
    peer_max_spdm_msg_size: int | None
    algorithms: NegotiatedAlgorithms


@dataclasses.dataclass(frozen=True)
class DigestsResult:
    """DIGESTS: the provisioned slots and the digest of each slot's certificate chain."""

    slot_mask: int
    digests: dict[int, bytes]


@dataclasses.dataclass(frozen=True)
class VerifiedChain:
    """A slot's SPDM certificate chain that passed every check of the policy."""

    slot: int
    chain: bytes  # the SPDM container: Length, Reserved, RootHash, DER certificates
    digest: bytes  # Hash(chain): the DIGESTS value and Ct of the session transcript
    certificates_der: tuple[bytes, ...]
    leaf_subject: str
    leaf_public_key: SigningPublicKey = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class ChallengeResult:
    """A verified CHALLENGE_AUTH."""

    slot: int
    slot_mask: int
    summary_type: MeasurementSummaryHashType
    requester_nonce: bytes
    responder_nonce: bytes
    measurement_summary_hash: bytes  # empty when none was requested or the responder does not measure
    opaque_data: bytes = b""


@dataclasses.dataclass(frozen=True)
class MeasurementReport:
    """Measurement blocks from one GET_MEASUREMENTS flow, and whether a signature covered them."""

    blocks: tuple[MeasurementBlock, ...]
    signed: bool
    slot: int | None  # the slot whose key signed, None when unsigned
    content_changed: ContentChanged = ContentChanged.NO_DETECTION
    requester_nonce: bytes = b""  # the nonce of the signed request
    complete: bool = False  # True when one request asked for all indices (what a summary hash covers)

    def by_index(self) -> dict[int, MeasurementBlock]:
        return {b.index: b for b in self.blocks}

    def value(self, index: int) -> bytes | None:
        block = self.by_index().get(index)
        return None if block is None else bytes(block.value)


@dataclasses.dataclass(frozen=True)
class AttestationReport:
    """Everything one attestation established about a device, in one record.

    ``challenged`` says a CHALLENGE_AUTH signature over the whole VCA/certificate transcript was
    verified; ``measurements_signed`` that a signed MEASUREMENTS covered the blocks;
    ``summary_verified`` that the challenge's MeasurementSummaryHash equals the hash of the blocks.
    """

    requester: str
    version: int
    peer_versions: tuple[int, ...]
    peer_flags: CapabilityFlags
    algorithms: NegotiatedAlgorithms
    slot: int
    cert_chain: bytes
    cert_chain_digest: bytes
    leaf_subject: str
    challenged: bool
    challenge_nonce: bytes
    summary_type: MeasurementSummaryHashType
    measurement_summary_hash: bytes
    summary_verified: bool
    measurements: tuple[MeasurementBlock, ...]
    measurements_signed: bool
    content_changed: ContentChanged

    @property
    def authenticated(self) -> bool:
        """The device proved possession of the certified key (by CHALLENGE or signed MEASUREMENTS)."""
        return self.challenged or self.measurements_signed

    def measurement(self, index: int) -> bytes | None:
        return next((bytes(b.value) for b in self.measurements if b.index == index), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (hex for bytes, names for enums) for result.json and traces."""
        return {
            "requester": self.requester,
            "version": _dotted(self.version),
            "peer_versions": [_dotted(v) for v in self.peer_versions],
            "peer_flags": f"0x{int(self.peer_flags):08x}",
            "algorithms": self.algorithms.to_dict(),
            "slot": self.slot,
            "cert_chain_digest": self.cert_chain_digest.hex(),
            "cert_chain_length": len(self.cert_chain),
            "leaf_subject": self.leaf_subject,
            "authenticated": self.authenticated,
            "challenged": self.challenged,
            "challenge_nonce": self.challenge_nonce.hex(),
            "summary_type": MeasurementSummaryHashType(self.summary_type).name,
            "measurement_summary_hash": self.measurement_summary_hash.hex(),
            "summary_verified": self.summary_verified,
            "measurements_signed": self.measurements_signed,
            "content_changed": ContentChanged(self.content_changed).name,
            "measurements": [
                {"index": b.index, "type": b.value_type.name, "raw": b.raw_bit_stream, "value": bytes(b.value).hex()}
                for b in self.measurements
            ],
        }
