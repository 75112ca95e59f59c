"""What a verifier accepts: trust anchors, algorithms, versions and reference measurements.

A :class:`VerificationPolicy` belongs to whoever runs the requester (a host kernel, a firmware
TSM, a guest) and is what makes attestation mean something: the requester checks every
signature and chain it receives, and the policy says which roots, algorithms and measurement
values are good enough. It is plain configuration (frozen), built directly or with the helper
constructors from :mod:`sim.crypto.identity` objects and files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography import x509

from sim.crypto.algorithms import AeadSuite, BaseAsymAlgo, BaseHashAlgo, DheGroup, MeasurementHashAlgo
from sim.crypto.identity import Identity, load_trusted_roots
from sim.wire.spdm.measurements import DmtfValueType, MeasurementBlock


class Expect(enum.Enum):
    """A reference value that accepts any content: the index must merely be reported."""

    ANY = "any"


ANY = Expect.ANY
MeasurementReference = bytes | Expect

# A fixed validation instant: runs never read the wall clock (DESIGN.md "Deterministic").
DEFAULT_VALIDATION_TIME = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

ALL_ECDSA = BaseAsymAlgo.ECDSA_P256 | BaseAsymAlgo.ECDSA_P384 | BaseAsymAlgo.ECDSA_P521
ALL_RSA = (BaseAsymAlgo.RSASSA_2048 | BaseAsymAlgo.RSAPSS_2048 | BaseAsymAlgo.RSASSA_3072 | BaseAsymAlgo.RSAPSS_3072
           | BaseAsymAlgo.RSASSA_4096 | BaseAsymAlgo.RSAPSS_4096)
SHA2 = BaseHashAlgo.SHA_256 | BaseHashAlgo.SHA_384 | BaseHashAlgo.SHA_512
MEASUREMENT_SHA2 = (MeasurementHashAlgo.SHA_256 | MeasurementHashAlgo.SHA_384 | MeasurementHashAlgo.SHA_512
                    | MeasurementHashAlgo.RAW_BIT_STREAM_ONLY)
NIST_DHE = DheGroup.SECP_256_R1 | DheGroup.SECP_384_R1 | DheGroup.SECP_521_R1
AEADS = AeadSuite.AES_128_GCM | AeadSuite.AES_256_GCM | AeadSuite.CHACHA20_POLY1305


@dataclasses.dataclass(frozen=True)
class VerificationPolicy:
    """The verifier's rules (see the module docstring).

    * ``trusted_roots`` — a chain must start at (or be issued by) one of these.
    * ``accepted_*`` — bitmasks of algorithms the verifier tolerates; a responder selection
      outside them fails with NO_COMMON_ALGORITHM even if the requester offered it.
    * ``min_version`` — the lowest SPDM version (header byte, e.g. 0x12) worth talking to.
    * ``expected_measurements`` — per index, the exact value (digest or raw bytes) or :data:`ANY`.
    * ``allow_unlisted_measurements`` — whether indices absent from the reference are tolerated.
    * ``require_signed_measurements`` — unsigned MEASUREMENTS are not evidence.
    * ``require_summary_hash_match`` — the MeasurementSummaryHash of CHALLENGE_AUTH must equal the
      hash of the measurement blocks the responder reports (ALL: every block; TCB: the blocks
      whose value type is in ``tcb_value_types``, the libspdm sample convention, §2.9).
    * ``validation_time`` — the instant certificate validity is checked at.
    """

    trusted_roots: tuple[x509.Certificate, ...] = ()
    accepted_asym: BaseAsymAlgo = ALL_ECDSA | ALL_RSA
    accepted_hash: BaseHashAlgo = SHA2
    accepted_measurement_hash: MeasurementHashAlgo = MEASUREMENT_SHA2
    accepted_dhe: DheGroup = NIST_DHE
    accepted_aead: AeadSuite = AEADS
    min_version: int = 0x10
    expected_measurements: Mapping[int, MeasurementReference] = dataclasses.field(default_factory=dict)
    allow_unlisted_measurements: bool = True
    require_signed_measurements: bool = True
    require_summary_hash_match: bool = True
    tcb_value_types: frozenset[DmtfValueType] = frozenset({DmtfValueType.IMMUTABLE_ROM})
    validation_time: dt.datetime = DEFAULT_VALIDATION_TIME

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted_roots", tuple(self.trusted_roots))
        object.__setattr__(self, "expected_measurements", dict(self.expected_measurements))
        for index, ref in self.expected_measurements.items():
            if not 1 <= index <= 0xFE:
                raise ValueError(f"measurement index {index} is outside 1..254")
            if not isinstance(ref, bytes | Expect):
                raise ValueError(f"reference for index {index} must be bytes or ANY, not {type(ref).__name__}")

    # --- constructors ---------------------------------------------------------------------------

    @classmethod
    def trusting(cls, *identities: Identity, **kw: object) -> VerificationPolicy:
        """A policy whose trust anchors are the root certificates of ``identities`` (deduplicated)."""
        roots: list[x509.Certificate] = []
        for identity in identities:
            if identity.root not in roots:
                roots.append(identity.root)
        return cls(trusted_roots=tuple(roots), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_root_files(cls, *sources: bytes | str | Path, **kw: object) -> VerificationPolicy:
        """A policy trusting the certificates in DER/PEM files or bytes (e.g. libspdm's ``ca.cert.der``)."""
        return cls(trusted_roots=tuple(load_trusted_roots(*sources)), **kw)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> VerificationPolicy:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def pinned(self, blocks: Iterable[MeasurementBlock], *, exclusive: bool = True) -> VerificationPolicy:
        """This policy with reference values taken from known-good blocks (a golden device).

        ``exclusive`` also refuses indices the golden device did not report.
        """
        refs = {b.index: bytes(b.value) for b in blocks}
        return self.replace(expected_measurements=refs, allow_unlisted_measurements=not exclusive)

    # --- checks ---------------------------------------------------------------------------------

    def trusts_anything(self) -> bool:
        return bool(self.trusted_roots)

    def measurement_problems(self, blocks: Iterable[MeasurementBlock], *, requested: Iterable[int] | None = None
                             ) -> list[str]:
        """Why reported blocks do not satisfy the reference values ([] when they do).

        ``requested`` limits the check to the indices a request asked for (None: all of them were).
        """
        got = {b.index: b for b in blocks}
        wanted = set(self.expected_measurements) if requested is None else \
            set(self.expected_measurements) & set(requested)
        problems: list[str] = []
        for index in sorted(wanted):
            ref = self.expected_measurements[index]
            block = got.get(index)
            if block is None:
                problems.append(f"index {index} was not reported")
            elif isinstance(ref, bytes) and bytes(block.value) != ref:
                problems.append(f"index {index} is {bytes(block.value).hex()[:32]}…, expected {ref.hex()[:32]}…")
        if not self.allow_unlisted_measurements:
            extra = sorted(set(got) - set(self.expected_measurements))
            if extra:
                problems.append(f"indices {extra} are not in the reference")
        return problems
