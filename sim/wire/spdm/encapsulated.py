"""Encapsulated requests, SPDM 1.1+: the responder asks the requester questions (mutual authentication).

The requester polls with GET_ENCAPSULATED_REQUEST; the responder answers ENCAPSULATED_REQUEST
carrying a whole SPDM request (e.g. GET_DIGESTS). The requester answers that with
DELIVER_ENCAPSULATED_RESPONSE; the responder acknowledges with ENCAPSULATED_RESPONSE_ACK, which may
carry the next request. Layouts checked against libspdm include/industry_standard/spdm.h (DSP0274
1.2 structures): from 1.2 the ACK has AckRequestID(1) and Reserved(3) after the header. SPDM 1.3
changes to these messages, if any, are unverified here.

The embedded message runs to the end of the outer one. Over plain (unsecured) DOE the outer message
may carry up to 3 pad bytes that end up in the embedded bytes; ``inner(allow_trailing=True)`` then
decodes the embedded message and ignores them. Inside secured messages the length is exact.
"""

from __future__ import annotations

import dataclasses
import enum

from sim.wire.codec import Bytes, DecodeError, Reserved, u8
from sim.wire.spdm.common import (
    RequestCode,
    ResponseCode,
    SpdmContext,
    SpdmMessage,
    SpdmVersion,
    decode_spdm,
    header,
    since,
)

HEADER_SIZE = 4
ACK_HEADER_SIZE_12 = 8


class EncapsulatedPayloadType(enum.IntEnum):
    """ENCAPSULATED_RESPONSE_ACK param2: what follows the ACK header."""

    ABSENT = 0  # the encapsulated flow is done
    PRESENT = 1  # another encapsulated request follows
    REQ_SLOT_NUMBER = 2  # one byte: the requester slot to use for mutual authentication


def _decode_inner(msg: SpdmMessage, field: str, data: bytes, offset: int, ctx: SpdmContext | None,
                  allow_trailing: bool) -> SpdmMessage:
    """Decode an embedded SPDM message, reporting errors against the outer message and offset."""
    try:
        return decode_spdm(data, ctx, allow_trailing=allow_trailing)
    except DecodeError as exc:
        raise DecodeError(msg.NAME, f"{field}.{exc.field}", offset + exc.offset, exc.reason) from None


@dataclasses.dataclass(frozen=True)
class GetEncapsulatedRequest(SpdmMessage):
    CODE = RequestCode.GET_ENCAPSULATED_REQUEST
    NAME = "GET_ENCAPSULATED_REQUEST"
    LAYOUT = header(CODE, Reserved(1, "param1"), Reserved(1, "param2"))
    version: int

    def summary(self) -> str:
        return "GET_ENCAPSULATED_REQUEST"


@dataclasses.dataclass(frozen=True)
class EncapsulatedRequest(SpdmMessage):
    """A request from the responder to the requester, tagged with ``request_id`` (param1)."""

    CODE = ResponseCode.ENCAPSULATED_REQUEST
    NAME = "ENCAPSULATED_REQUEST"
    LAYOUT = header(CODE, u8("request_id"), Reserved(1, "param2")) + (Bytes("encapsulated_request"),)
    version: int
    request_id: int
    encapsulated_request: bytes

    def inner(self, ctx: SpdmContext | None = None, *, allow_trailing: bool = False) -> SpdmMessage:
        """The embedded request, decoded (DecodeError names this message and the embedded field)."""
        return _decode_inner(self, "encapsulated_request", self.encapsulated_request, HEADER_SIZE, ctx, allow_trailing)

    def summary(self) -> str:
        return f"ENCAPSULATED_REQUEST id={self.request_id} {_inner_name(self.encapsulated_request)}"


@dataclasses.dataclass(frozen=True)
class DeliverEncapsulatedResponse(SpdmMessage):
    """The requester's answer to the encapsulated request with the same ``request_id``."""

    CODE = RequestCode.DELIVER_ENCAPSULATED_RESPONSE
    NAME = "DELIVER_ENCAPSULATED_RESPONSE"
    LAYOUT = header(CODE, u8("request_id"), Reserved(1, "param2")) + (Bytes("encapsulated_response"),)
    version: int
    request_id: int
    encapsulated_response: bytes

    def inner(self, ctx: SpdmContext | None = None, *, allow_trailing: bool = False) -> SpdmMessage:
        return _decode_inner(self, "encapsulated_response", self.encapsulated_response, HEADER_SIZE, ctx, allow_trailing)

    def summary(self) -> str:
        return f"DELIVER_ENCAPSULATED_RESPONSE id={self.request_id} {_inner_name(self.encapsulated_response)}"


@dataclasses.dataclass(frozen=True)
class EncapsulatedResponseAck(SpdmMessage):
    """Acknowledges a delivered response; from 1.2 ``ack_request_id`` names the response acknowledged.

    ``payload`` is the next encapsulated request (PRESENT), one slot-number byte (REQ_SLOT_NUMBER),
    or empty (ABSENT, which libspdm enforces; so does this decoder).
    """

    CODE = ResponseCode.ENCAPSULATED_RESPONSE_ACK
    NAME = "ENCAPSULATED_RESPONSE_ACK"
    LAYOUT = header(CODE, u8("request_id"), u8("payload_type", EncapsulatedPayloadType)) + (
        u8("ack_request_id", when=since(SpdmVersion.V12)),
        Reserved(3, when=since(SpdmVersion.V12)),
        Bytes("payload"),
    )
    version: int
    request_id: int
    payload_type: EncapsulatedPayloadType
    payload: bytes = b""
    ack_request_id: int | None = None

    def __post_init__(self) -> None:
        if (self.version >= SpdmVersion.V12) != (self.ack_request_id is not None):
            raise ValueError(f"ack_request_id is {'required' if self.ack_request_id is None else 'absent'} "
                             f"in SPDM 0x{self.version:02x}")
        if self.payload_type == EncapsulatedPayloadType.ABSENT and self.payload:
            raise ValueError("payload type ABSENT with a non-empty payload")

    @property
    def header_size(self) -> int:
        return ACK_HEADER_SIZE_12 if self.version >= SpdmVersion.V12 else HEADER_SIZE

    def inner(self, ctx: SpdmContext | None = None, *, allow_trailing: bool = False) -> SpdmMessage:
        """The next encapsulated request (payload type PRESENT only)."""
        if self.payload_type != EncapsulatedPayloadType.PRESENT:
            raise DecodeError(self.NAME, "payload_type", 3, f"{self.payload_type.name} carries no request")
        return _decode_inner(self, "payload", self.payload, self.header_size, ctx, allow_trailing)

    @property
    def req_slot_id(self) -> int | None:
        """The requester slot number carried by a REQ_SLOT_NUMBER ACK."""
        if self.payload_type != EncapsulatedPayloadType.REQ_SLOT_NUMBER or not self.payload:
            return None
        return self.payload[0]

    def summary(self) -> str:
        ack = f" ack_id={self.ack_request_id}" if self.ack_request_id is not None else ""
        tail = ""
        if self.payload_type == EncapsulatedPayloadType.PRESENT:
            tail = f" next={_inner_name(self.payload)}"
        elif self.req_slot_id is not None:
            tail = f" req_slot={self.req_slot_id}"
        return f"ENCAPSULATED_RESPONSE_ACK id={self.request_id}{ack} {self.payload_type.name}{tail}"


def _inner_name(data: bytes) -> str:
    """The code name of an embedded message, for summaries (no full decode)."""
    if len(data) < 2:
        return "(truncated)"
    for codes in (RequestCode, ResponseCode):
        try:
            return codes(data[1]).name
        except ValueError:
            continue
    return f"code=0x{data[1]:02x}"
