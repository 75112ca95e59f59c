"""GET_MEASUREMENTS, MEASUREMENTS and DMTF measurement blocks (PROTOCOLS.md §2.9).

Whether MEASUREMENTS carries a Signature is not written in the response: it follows from the
request's attributes. The decoder decides it from the remaining length, so that a captured
response decodes on its own (traces, pcap, ``tiosim decode``): after the RequesterContext (1.3)
or the OpaqueData, either nothing remains (no signature) or at least S = ``ctx.sig_size`` bytes
remain and the first S are the Signature. Any other remainder is left unread, which a strict
decode reports as trailing bytes and a DOE-padded decode (``allow_trailing``) tolerates as pad.
The requester must still check that a signature is present exactly when it asked for one.

Nonce and OpaqueDataLength are present in every MEASUREMENTS, signed or not (libspdm, §2.9).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from sim.wire.codec import (
    Bits,
    Bytes,
    DecodeError,
    EncodeError,
    LengthOf,
    Message,
    Reader,
    Spec,
    Struct,
    nested,
    u8,
)
from sim.wire.spdm.common import (
    MAX_OPAQUE_DATA_SIZE,
    NONCE_SIZE,
    REQUESTER_CONTEXT_SIZE,
    MeasurementSpec,
    RequestCode,
    ResponseCode,
    SpdmMessage,
    gate_field,
    header,
    since,
)

MEASUREMENT_INDEX_MANIFEST = 0xFD  # reserved index: measurement manifest
MEASUREMENT_INDEX_DEVICE_MODE = 0xFE  # reserved index: device mode


class MeasurementAttributes(enum.IntFlag):
    """GET_MEASUREMENTS Param1."""

    GENERATE_SIGNATURE = 0x01
    RAW_BIT_STREAM_REQUESTED = 0x02  # 1.2
    NEW_MEASUREMENT_REQUESTED = 0x04  # 1.3


class MeasurementOperation(enum.IntEnum):
    """GET_MEASUREMENTS Param2 values with a meaning of their own; 0x01-0xFE name one index."""

    TOTAL_COUNT = 0x00
    ALL = 0xFF


class ContentChanged(enum.IntEnum):
    """MEASUREMENTS Param2 bits 5:4 (1.2+)."""

    NO_DETECTION = 0
    CHANGED = 1
    UNCHANGED = 2


class DmtfValueType(enum.IntEnum):
    """DMTFSpecMeasurementValueType bits 6:0."""

    IMMUTABLE_ROM = 0
    MUTABLE_FIRMWARE = 1
    HARDWARE_CONFIG = 2
    FIRMWARE_CONFIG = 3
    MEASUREMENT_MANIFEST = 4
    DEVICE_MODE = 5  # 1.2
    VERSION = 6  # 1.2
    SECURE_VERSION_NUMBER = 7  # 1.2
    HASH_EXTEND = 8  # 1.3
    INFORMATIONAL = 9  # 1.3
    STRUCTURED_MANIFEST = 10  # 1.3


def _op_name(op: int) -> str:
    try:
        return MeasurementOperation(op).name
    except ValueError:
        return f"index {op}"


# --------------------------------------------------------------------------------------------
# Measurement blocks
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DmtfMeasurement(Message):
    """The DMTF measurement inside a block: value type (bit 7 = raw bit stream, else digest), size, value."""

    LAYOUT = (
        Bits("value_type_byte", 1, [("value_type", 0, 7, DmtfValueType), ("raw_bit_stream", 7, 1, None)]),
        LengthOf("value_size", 2, "value"),
        Bytes("value", "value_size"),
    )

    value_type: DmtfValueType
    value: bytes
    raw_bit_stream: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw_bit_stream", bool(self.raw_bit_stream))


@dataclasses.dataclass(frozen=True)
class MeasurementBlock(Message):
    """One measurement block: Index, MeasurementSpecification, MeasurementSize, DMTF measurement.

    The whole block, header included, is what MeasurementSummaryHash concatenates (§2.9).
    """

    LAYOUT = (
        u8("index"),
        u8("measurement_specification", MeasurementSpec),
        LengthOf("measurement_size", 2, "measurement", encoded=True),
        Struct("measurement", DmtfMeasurement, size="measurement_size"),
    )

    index: int
    measurement: DmtfMeasurement
    measurement_specification: MeasurementSpec = MeasurementSpec.DMTF

    def __post_init__(self) -> None:
        if self.measurement_specification != MeasurementSpec.DMTF:
            raise ValueError(f"measurement specification 0x{int(self.measurement_specification):x} is not DMTF")

    @classmethod
    def dmtf(cls, index: int, value_type: DmtfValueType, value: bytes, *, raw_bit_stream: bool = False) -> MeasurementBlock:
        """A DMTF block in one call."""
        return cls(index, DmtfMeasurement(value_type, value, raw_bit_stream))

    @property
    def value_type(self) -> DmtfValueType:
        return self.measurement.value_type

    @property
    def raw_bit_stream(self) -> bool:
        return self.measurement.raw_bit_stream

    @property
    def value(self) -> bytes:
        return self.measurement.value


class _MeasurementRecord(Spec):
    """NumberOfBlocks(1) ‖ MeasurementRecordLength(3) ‖ blocks; the count must match the blocks found."""

    def __init__(self) -> None:
        self.name, self.when = "blocks", None

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        blocks = values["blocks"]
        record = b"".join(b.encode(ctx) for b in blocks)
        if len(blocks) > 0xFF or len(record) >= 1 << 24:
            raise EncodeError(f"{len(blocks)} blocks / {len(record)} bytes do not fit a measurement record")
        out.append(len(blocks))
        out += len(record).to_bytes(3, "little")
        out += record

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        count_at = r.offset()
        count = r.take(1, "number_of_blocks")[0]
        length = int.from_bytes(r.take(3, "measurement_record_length"), "little")
        start = r.offset()
        sub = Reader(r.take(length, "measurement_record"), r.message, start)
        blocks: list[MeasurementBlock] = []
        while sub.remaining:
            try:
                blocks.append(MeasurementBlock.decode_from(sub, ctx))
            except DecodeError as exc:
                raise nested(exc, f"blocks[{len(blocks)}]") from None
        if len(blocks) != count:
            raise r.fail("number_of_blocks", f"says {count} blocks, the record holds {len(blocks)}", count_at)
        values["blocks"] = tuple(blocks)


class _OptionalSignature(Spec):
    """A trailing Signature of S bytes that is there only if the request asked for it (module docstring)."""

    def __init__(self) -> None:
        self.name = "signature"
        self.when = lambda v, c: v.get("signature", b"") is not None  # None on encode: no signature

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        sig = bytes(values["signature"])
        if len(sig) != ctx.sig_size:
            raise EncodeError(f"signature is {len(sig)} bytes, S is {ctx.sig_size}")
        out += sig

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        size = int(ctx.sig_size)
        values["signature"] = r.take(size, self.name) if size and r.remaining >= size else None


# --------------------------------------------------------------------------------------------
# GET_MEASUREMENTS / MEASUREMENTS
# --------------------------------------------------------------------------------------------


def _signed(values: dict[str, Any], ctx: Any) -> bool:
    return bool(values["attributes"] & MeasurementAttributes.GENERATE_SIGNATURE)


@dataclasses.dataclass(frozen=True)
class GetMeasurements(SpdmMessage):
    """GET_MEASUREMENTS (0xE0).

    Nonce (32) and, from 1.1, SlotIDParam follow only when a signature is requested; 1.3 always
    ends with RequesterContext (8). Unsigned: 4 bytes (12 in 1.3).
    """

    CODE: ClassVar[int] = RequestCode.GET_MEASUREMENTS
    NAME: ClassVar[str] = "GET_MEASUREMENTS"
    LAYOUT = header(CODE, u8("attributes", MeasurementAttributes), u8("operation")) + (
        Bytes("nonce", NONCE_SIZE, when=_signed),
        Bits("slot_id_param", 1, [("slot_id", 0, 4, None)],
             when=lambda v, c: _signed(v, c) and v["version"] >= 0x11),
        Bytes("requester_context", REQUESTER_CONTEXT_SIZE, when=since(0x13)),
    )

    version: int
    operation: int
    attributes: MeasurementAttributes = MeasurementAttributes(0)
    nonce: bytes | None = None
    slot_id: int | None = None
    requester_context: bytes | None = None

    def __post_init__(self) -> None:
        signed = bool(self.attributes & MeasurementAttributes.GENERATE_SIGNATURE)
        gate_field(self, "nonce", signed)
        gate_field(self, "slot_id", signed and self.version >= 0x11, 0)
        gate_field(self, "requester_context", self.version >= 0x13)

    @property
    def signature_requested(self) -> bool:
        return bool(self.attributes & MeasurementAttributes.GENERATE_SIGNATURE)

    def summary(self) -> str:
        text = f"GET_MEASUREMENTS op={_op_name(self.operation)}"
        if self.signature_requested:
            text += f" signed slot={self.slot_id if self.slot_id is not None else 0}"
        if self.attributes & MeasurementAttributes.RAW_BIT_STREAM_REQUESTED:
            text += " raw"
        if self.attributes & MeasurementAttributes.NEW_MEASUREMENT_REQUESTED:
            text += " new"
        return text


@dataclasses.dataclass(frozen=True)
class Measurements(SpdmMessage):
    """MEASUREMENTS (0x60).

    ``total_indices`` is Param1: the number of measurement indices in reply to operation
    TOTAL_COUNT, reserved (0) otherwise. Param2 carries the slot and (1.2) ContentChanged.
    """

    CODE: ClassVar[int] = ResponseCode.MEASUREMENTS
    NAME: ClassVar[str] = "MEASUREMENTS"
    LAYOUT = header(CODE, u8("total_indices"),
                    Bits("param2", 1, [("slot_id", 0, 4, None), ("content_changed", 4, 2, ContentChanged)])) + (
        _MeasurementRecord(),
        Bytes("nonce", NONCE_SIZE),
        LengthOf("opaque_length", 2, "opaque_data"),
        Bytes("opaque_data", "opaque_length", max_size=MAX_OPAQUE_DATA_SIZE),
        Bytes("requester_context", REQUESTER_CONTEXT_SIZE, when=since(0x13)),
        _OptionalSignature(),
    )

    version: int
    nonce: bytes
    blocks: tuple[MeasurementBlock, ...] = ()
    signature: bytes | None = None
    total_indices: int = 0
    slot_id: int = 0
    content_changed: ContentChanged = ContentChanged.NO_DETECTION
    opaque_data: bytes = b""
    requester_context: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        gate_field(self, "requester_context", self.version >= 0x13)

    def encode_without_signature(self, ctx: Any = None) -> bytes:
        """The message without its Signature: what the L1/L2 transcript records for the signed response (§3.1)."""
        raw = self.encode(ctx)
        return raw[:-len(self.signature)] if self.signature else raw

    def record(self, ctx: Any = None) -> bytes:
        """The concatenated blocks, headers included (the input of MeasurementSummaryHash)."""
        return b"".join(b.encode(ctx) for b in self.blocks)

    def summary(self) -> str:
        text = f"MEASUREMENTS blocks={len(self.blocks)}"
        if self.total_indices:
            text += f" total={self.total_indices}"
        if self.signature is not None:
            text += f" signed slot={self.slot_id}"
        if self.content_changed:
            text += f" {ContentChanged(self.content_changed).name.lower()}"
        return text
