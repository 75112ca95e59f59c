"""CHALLENGE and CHALLENGE_AUTH (PROTOCOLS.md §2.8).

CHALLENGE_AUTH sizes: CertChainHash H (``ctx.hash_size``), MeasurementSummaryHash
``ctx.meas_summary_size`` (0 when the request's HashType was NONE or the responder does not
measure), Signature S (``ctx.sig_size``). Transcript C holds CHALLENGE_AUTH *without* its
signature (§3.1): :meth:`ChallengeAuth.encode_without_signature` gives those bytes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from sim.wire.codec import Bits, Bytes, LengthOf, u8
from sim.wire.spdm.common import (
    MAX_OPAQUE_DATA_SIZE,
    NONCE_SIZE,
    REQUESTER_CONTEXT_SIZE,
    MeasurementSummaryHashType,
    RequestCode,
    ResponseCode,
    SpdmMessage,
    gate_field,
    header,
    since,
)

SLOT_ID_PROVISIONED_KEY = 0xFF  # CHALLENGE Param1: use the pre-provisioned public key, no certificate


@dataclasses.dataclass(frozen=True)
class Challenge(SpdmMessage):
    """CHALLENGE (0x83): slot, which measurement summary to include, nonce; 1.3 adds RequesterContext."""

    CODE: ClassVar[int] = RequestCode.CHALLENGE
    NAME: ClassVar[str] = "CHALLENGE"
    LAYOUT = header(CODE, u8("slot_id"), u8("hash_type", MeasurementSummaryHashType)) + (
        Bytes("nonce", NONCE_SIZE),
        Bytes("requester_context", REQUESTER_CONTEXT_SIZE, when=since(0x13)),
    )

    version: int
    slot_id: int
    hash_type: MeasurementSummaryHashType
    nonce: bytes
    requester_context: bytes | None = None

    def __post_init__(self) -> None:
        gate_field(self, "requester_context", self.version >= 0x13)

    def summary(self) -> str:
        return f"CHALLENGE slot={self.slot_id} hash_type={MeasurementSummaryHashType(self.hash_type).name}"


@dataclasses.dataclass(frozen=True)
class ChallengeAuth(SpdmMessage):
    """CHALLENGE_AUTH (0x03): the responder's signed answer to CHALLENGE.

    Param1 bits 3:0 SlotID (0xF for a provisioned key), bit 7 BasicMutAuthReq (1.1 only);
    Param2 SlotMask.
    """

    CODE: ClassVar[int] = ResponseCode.CHALLENGE_AUTH
    NAME: ClassVar[str] = "CHALLENGE_AUTH"
    LAYOUT = header(CODE, Bits("param1", 1, [("slot_id", 0, 4, None), ("basic_mut_auth_req", 7, 1, None)]),
                    u8("slot_mask")) + (
        Bytes("cert_chain_hash", "hash_size"),
        Bytes("nonce", NONCE_SIZE),
        Bytes("measurement_summary_hash", "meas_summary_size"),
        LengthOf("opaque_length", 2, "opaque_data"),
        Bytes("opaque_data", "opaque_length", max_size=MAX_OPAQUE_DATA_SIZE),
        Bytes("requester_context", REQUESTER_CONTEXT_SIZE, when=since(0x13)),
        Bytes("signature", "sig_size"),
    )

    version: int
    slot_id: int
    slot_mask: int
    cert_chain_hash: bytes
    nonce: bytes
    signature: bytes
    measurement_summary_hash: bytes = b""
    opaque_data: bytes = b""
    requester_context: bytes | None = None
    basic_mut_auth_req: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "basic_mut_auth_req", bool(self.basic_mut_auth_req))
        gate_field(self, "requester_context", self.version >= 0x13)

    def encode_without_signature(self, ctx: Any = None) -> bytes:
        """The message up to (excluding) the Signature: what transcript C records (§3.1)."""
        return self.encode(ctx)[:-len(self.signature) or None]

    def summary(self) -> str:
        return (f"CHALLENGE_AUTH slot={self.slot_id} slot_mask=0x{self.slot_mask:02x} "
                f"meas_summary={'yes' if self.measurement_summary_hash else 'no'} opaque={len(self.opaque_data)}")
