"""Large-message transfer, SPDM 1.2+ (PROTOCOLS.md §2.13): CHUNK_SEND/_ACK and CHUNK_GET/CHUNK_RESPONSE.

A message larger than the peer's DataTransferSize travels in numbered chunks. The requester sends
a large request with CHUNK_SEND (the last ACK carries the response to it); a responder that
answered ERROR(LargeResponse, handle) hands out its large response through CHUNK_GET /
CHUNK_RESPONSE. LargeMessageSize is present only in the chunk with ChunkSeqNo 0.

1.2/1.3 layout: ChunkSeqNo is 2 bytes, followed in CHUNK_SEND/CHUNK_RESPONSE by 2 reserved bytes.
SPDM 1.4 widens ChunkSeqNo to 4 bytes and drops the reserved field (PROTOCOLS.md §2.13, from libspdm);
this module follows that for version >= 1.4 in every chunk message, which for CHUNK_SEND_ACK and
CHUNK_GET is taken from spdm-rs and not checked against the 1.4 spec text.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from sim.wire.codec import Bytes, DecodeError, EncodeError, LengthOf, Reader, Reserved, UInt, u8, u32
from sim.wire.spdm.common import (
    RequestCode,
    ResponseCode,
    SpdmContext,
    SpdmMessage,
    SpdmVersion,
    before,
    decode_spdm,
    header,
)


class ChunkAttributes(enum.IntFlag):
    """CHUNK_SEND / CHUNK_RESPONSE param1."""

    LAST_CHUNK = 0x1


class ChunkAckAttributes(enum.IntFlag):
    """CHUNK_SEND_ACK param1."""

    EARLY_ERROR_DETECTED = 0x1  # the responder gave up early; an ERROR response follows the header


class _SeqNo(UInt):
    """ChunkSeqNo: 2 bytes before SPDM 1.4, 4 bytes from 1.4 on (read from the message's own version)."""

    def __init__(self) -> None:
        super().__init__("chunk_seq_no", 2)

    @staticmethod
    def width(values: dict[str, Any]) -> int:
        return 4 if values["version"] >= SpdmVersion.V14 else 2

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        n = self.width(values)
        v = int(values[self.name])
        if not 0 <= v < (1 << (8 * n)):
            raise EncodeError(f"field '{self.name}' = {v} does not fit in {n} bytes")
        out += v.to_bytes(n, "little")

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        values[self.name] = int.from_bytes(r.take(self.width(values), self.name), "little")


def _first_chunk(values: dict[str, Any], ctx: Any) -> bool:
    return values["chunk_seq_no"] == 0


def _chunk_layout(code: int) -> tuple[Any, ...]:
    return header(code, u8("attributes", ChunkAttributes), u8("handle")) + (
        _SeqNo(),
        Reserved(2, when=before(SpdmVersion.V14)),
        LengthOf("chunk_size", 4, "chunk"),
        u32("large_message_size", when=_first_chunk),
        Bytes("chunk", "chunk_size"),
    )


@dataclasses.dataclass(frozen=True)
class _Chunk(SpdmMessage):
    """The shared CHUNK_SEND / CHUNK_RESPONSE body."""

    version: int
    handle: int
    chunk_seq_no: int
    chunk: bytes
    attributes: ChunkAttributes = ChunkAttributes(0)
    large_message_size: int | None = None

    def __post_init__(self) -> None:
        if (self.chunk_seq_no == 0) != (self.large_message_size is not None):
            raise ValueError("large_message_size is present exactly in the chunk with chunk_seq_no 0")

    @property
    def last(self) -> bool:
        return bool(self.attributes & ChunkAttributes.LAST_CHUNK)

    def summary(self) -> str:
        size = f" of {self.large_message_size}" if self.large_message_size is not None else ""
        last = " last" if self.last else ""
        return f"{self.NAME} handle={self.handle} seq={self.chunk_seq_no} {len(self.chunk)}B{size}{last}"


@dataclasses.dataclass(frozen=True)
class ChunkSend(_Chunk):
    CODE = RequestCode.CHUNK_SEND
    NAME = "CHUNK_SEND"
    LAYOUT = _chunk_layout(CODE)


@dataclasses.dataclass(frozen=True)
class ChunkResponse(_Chunk):
    CODE = ResponseCode.CHUNK_RESPONSE
    NAME = "CHUNK_RESPONSE"
    LAYOUT = _chunk_layout(CODE)


@dataclasses.dataclass(frozen=True)
class ChunkSendAck(SpdmMessage):
    """Acknowledges one CHUNK_SEND; after the last chunk (or an early error) the response follows."""

    CODE = ResponseCode.CHUNK_SEND_ACK
    NAME = "CHUNK_SEND_ACK"
    LAYOUT = header(CODE, u8("attributes", ChunkAckAttributes), u8("handle")) + (
        _SeqNo(),
        Bytes("response"),
    )
    version: int
    handle: int
    chunk_seq_no: int
    response: bytes = b""
    attributes: ChunkAckAttributes = ChunkAckAttributes(0)

    def __post_init__(self) -> None:
        if self.attributes & ChunkAckAttributes.EARLY_ERROR_DETECTED and not self.response:
            raise ValueError("EARLY_ERROR_DETECTED requires the ERROR response after the header")

    @property
    def header_size(self) -> int:
        return 4 + (4 if self.version >= SpdmVersion.V14 else 2)

    def inner(self, ctx: SpdmContext | None = None, *, allow_trailing: bool = False) -> SpdmMessage:
        """The response to the large request (or the early ERROR), decoded.

        ``allow_trailing`` ignores DOE pad bytes that a plain DOE transfer appends to this ACK.
        """
        try:
            return decode_spdm(self.response, ctx, allow_trailing=allow_trailing)
        except DecodeError as exc:
            raise DecodeError(self.NAME, f"response.{exc.field}", self.header_size + exc.offset, exc.reason) from None

    def summary(self) -> str:
        early = " early_error" if self.attributes & ChunkAckAttributes.EARLY_ERROR_DETECTED else ""
        resp = f" +response {len(self.response)}B" if self.response else ""
        return f"CHUNK_SEND_ACK handle={self.handle} seq={self.chunk_seq_no}{early}{resp}"


@dataclasses.dataclass(frozen=True)
class ChunkGet(SpdmMessage):
    """Asks for chunk ``chunk_seq_no`` of the large response named by ``handle``."""

    CODE = RequestCode.CHUNK_GET
    NAME = "CHUNK_GET"
    LAYOUT = header(CODE, Reserved(1, "param1"), u8("handle")) + (_SeqNo(),)
    version: int
    handle: int
    chunk_seq_no: int

    def summary(self) -> str:
        return f"CHUNK_GET handle={self.handle} seq={self.chunk_seq_no}"
