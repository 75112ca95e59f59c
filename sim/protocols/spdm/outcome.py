"""Typed results of requester flows: ``Ok(value)`` or a ``Failure`` that says why and where.

A requester flow never lets an exception reach its driver (a SimPy process, the emulator socket
client, a test): every problem — silence, an SPDM ERROR, bytes that do not decode, a signature
that does not verify, a measurement the policy does not expect — ends the flow with a
:class:`Failure` naming the :class:`FailureReason`, the SPDM exchange it happened in and, for an
ERROR response, the responder's ErrorCode. Callers branch on ``outcome.ok`` (or ``isinstance``)
and keep the failure in their trace and reports.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import ClassVar, Generic, NoReturn, TypeVar

from sim.wire.spdm.common import ErrorCode

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
