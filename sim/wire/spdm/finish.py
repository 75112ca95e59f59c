"""FINISH (0xE5) and FINISH_RSP (0x65), SPDM 1.1-1.3 (PROTOCOLS.md §2.11).

FINISH carries the requester's signature (mutual authentication, param1 bit 0) of ``req_sig_size``
bytes and RequesterVerifyData (H). FINISH_RSP carries ResponderVerifyData (H) only when the handshake
is in the clear; otherwise it is the bare header. The transcript cut points (§3.2) are given by
``signed_part`` (what a signature covers) and ``verify_part`` (what the VerifyData HMAC covers).
SPDM 1.4 adds opaque data to both messages; that layout is not implemented here.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from sim.wire.codec import Bytes, EncodeError, Reserved, u8
from sim.wire.spdm.common import (
    DEFAULT_CONTEXT,
    RequestCode,
    ResponseCode,
    SpdmContext,
    SpdmMessage,
    SpdmVersion,
    header,
)

HEADER_SIZE = 4


class FinishAttributes(enum.IntFlag):
    """FINISH param1."""

    SIGNATURE_INCLUDED = 0x1


def _ctx(ctx: SpdmContext | None) -> SpdmContext:
    return DEFAULT_CONTEXT if ctx is None else ctx


def _check_version(version: int) -> None:
    if version >= SpdmVersion.V14:
        raise ValueError(f"the SPDM 1.4 layout (with opaque data) is not implemented; version 0x{version:02x}")


def _signature_included(values: dict[str, Any], ctx: Any) -> bool:
    return bool(values["attributes"] & FinishAttributes.SIGNATURE_INCLUDED)


@dataclasses.dataclass(frozen=True)
class Finish(SpdmMessage):
    """Ends the handshake from the requester's side; ``signature`` is None unless mutual auth signs."""

    CODE = RequestCode.FINISH
    NAME = "FINISH"
    LAYOUT = header(CODE, u8("attributes", FinishAttributes), u8("req_slot_id")) + (
        Bytes("signature", "req_sig_size", when=_signature_included),
        Bytes("requester_verify_data", "hash_size"),
    )
    version: int
    requester_verify_data: bytes
    attributes: FinishAttributes = FinishAttributes(0)
    req_slot_id: int = 0
    signature: bytes | None = None

    def __post_init__(self) -> None:
        _check_version(self.version)
        if bool(self.attributes & FinishAttributes.SIGNATURE_INCLUDED) != (self.signature is not None):
            raise ValueError("signature must be given exactly when param1 SIGNATURE_INCLUDED is set")

    @property
    def signature_included(self) -> bool:
        return self.signature is not None

    def signed_part(self, ctx: SpdmContext | None = None) -> bytes:
        """The FINISH header: the part of FINISH that the requester's signature covers (§3.2)."""
        return self.encode(ctx)[:HEADER_SIZE]

    def verify_part(self, ctx: SpdmContext | None = None) -> bytes:
        """Header and signature, without RequesterVerifyData: what the RequesterVerifyData HMAC covers."""
        ctx = _ctx(ctx)
        return self.encode(ctx)[: -ctx.hash_size or None]

    def summary(self) -> str:
        sig = f" signed req_slot={self.req_slot_id}" if self.signature_included else ""
        return f"FINISH{sig}"


@dataclasses.dataclass(frozen=True)
class FinishRsp(SpdmMessage):
    """Ends the handshake from the responder's side; carries ResponderVerifyData only in the clear."""

    CODE = ResponseCode.FINISH_RSP
    NAME = "FINISH_RSP"
    LAYOUT = header(CODE, Reserved(1, "param1"), Reserved(1, "param2")) + (
        Bytes("responder_verify_data", "hash_size", when=lambda v, ctx: ctx.handshake_in_the_clear),
    )
    version: int
    responder_verify_data: bytes | None = None

    def __post_init__(self) -> None:
        _check_version(self.version)

    def encode(self, ctx: Any = None) -> bytes:
        ctx = _ctx(ctx)
        if (self.responder_verify_data is not None) != ctx.handshake_in_the_clear:
            raise EncodeError("FINISH_RSP ResponderVerifyData must be present exactly when the handshake is in the clear")
        return super().encode(ctx)

    def verify_part(self, ctx: SpdmContext | None = None) -> bytes:
        """The FINISH_RSP header: what the ResponderVerifyData HMAC covers (§3.2)."""
        return self.encode(ctx)[:HEADER_SIZE]

    def summary(self) -> str:
        return "FINISH_RSP" + (" verify_data" if self.responder_verify_data is not None else "")
