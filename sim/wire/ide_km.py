"""PCI-SIG IDE_KM objects (PROTOCOLS.md §6.2, §6.3): IDE key management inside SPDM VENDOR_DEFINED.

Offsets start at the Object ID byte, i.e. after the PCI-SIG Protocol ID byte that
:mod:`sim.wire.pcisig` adds. KEY_PROG keeps key and IFV in their natural AES-GCM byte order as
attributes; the DW reversal the wire demands (§6.3) happens only in encode/decode, so that a key
registered with the exposure tracker is the same bytes the crypto layer uses.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Any, ClassVar

from sim.wire.codec import Array, Bits, Bytes, Const, DecodeError, Message, OpenEnum, Reader, Reserved, u8, u32

KEY_BYTES = 32
IFV_BYTES = 8
MIN_REGISTER_DWS = 2  # IDE Capability and IDE Control are always there (§6.2)


class IdeKmObjectId(enum.IntEnum):
    QUERY = 0x00
    QUERY_RESP = 0x01
    KEY_PROG = 0x02
    KP_ACK = 0x03
    K_SET_GO = 0x04
    K_SET_STOP = 0x05
    K_GOSTOP_ACK = 0x06


class KeySet(enum.IntEnum):
    """KeySubStream bit 0: which of the two key sets (the K bit of the IDE TLP prefix)."""

    K0 = 0
    K1 = 1


class Direction(enum.IntEnum):
    """KeySubStream bit 1, from the receiver of KEY_PROG's point of view."""

    RX = 0
    TX = 1


class SubStream(enum.IntEnum):
    """KeySubStream bits 7:4 (also the IDE prefix Sub-Stream, §7.2)."""

    PR = 0  # posted requests
    NPR = 1  # non-posted requests
    CPL = 2  # completions


class KpAckStatus(enum.IntEnum):
    SUCCESS = 0
    INCORRECT_LENGTH = 1
    UNSUPPORTED_PORT_INDEX = 2
    UNSUPPORTED_VALUE = 3
    UNSPECIFIED_FAILURE = 4


def dw_reverse(data: bytes) -> bytes:
    """Reverse the bytes inside each 4-byte group: natural AES order <-> IDE_KM wire order (§6.3).

    The operation is its own inverse. The 32-byte key travels DW7 first with each DW little-endian,
    which is the same as reversing each group of four key bytes in place; likewise the 8-byte IFV.
    """
    if len(data) % 4:
        raise ValueError(f"{len(data)} bytes is not a whole number of DWs")
    dws = len(data) // 4
    swap = _DW_SWAPS.get(dws)
    if swap is None:
        swap = _DW_SWAPS[dws] = (struct.Struct(f">{dws}I"), struct.Struct(f"<{dws}I"))
    return swap[1].pack(*swap[0].unpack(data))  # each DW read big-endian, written little-endian


_DW_SWAPS: dict[int, tuple[struct.Struct, struct.Struct]] = {}


class _DwReversedBytes(Bytes):
    """Fixed-size bytes stored in natural order and sent DW-reversed (§6.3)."""

    def __init__(self, name: str, size: int) -> None:
        super().__init__(name, size)

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        tmp = bytearray()
        super().encode(values, ctx, tmp)
        out += dw_reverse(bytes(tmp))

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        super().decode(r, values, ctx)
        values[self.name] = dw_reverse(values[self.name])


def _key_sub_stream(*, echo: bool = False, reserved: bool = False) -> Bits:
    """The KeySubStream byte (§6.2): bit 0 key set, bit 1 direction, bits 3:2 reserved, bits 7:4 sub-stream.

    With ``echo`` (KP_ACK, K_GOSTOP_ACK) a reserved sub-stream value decodes as a plain int: the
    device echoes the byte it was sent, including a sub-stream it refuses. With ``reserved`` (KP_ACK)
    bits 3:2 are a field too, so that the echo is the request's byte exactly.
    """
    parts: list[tuple[str, int, int, Any]] = [
        ("key_set", 0, 1, KeySet),
        ("direction", 1, 1, Direction),
        ("sub_stream", 4, 4, OpenEnum(SubStream) if echo else SubStream),
    ]
    if reserved:
        parts.insert(2, ("reserved_bits", 2, 2, None))
    return Bits("key_sub_stream", 1, parts)


def sub_stream_name(value: SubStream | int) -> str:
    return value.name if isinstance(value, SubStream) else f"reserved({int(value)})"


IDE_KM_MESSAGES: dict[int, type[IdeKmMessage]] = {}


@dataclasses.dataclass(frozen=True)
class IdeKmMessage(Message):
    """Base of the IDE_KM objects; subclasses set OBJECT_ID and register for :func:`decode_ide_km`."""

    OBJECT_ID: ClassVar[IdeKmObjectId | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.OBJECT_ID is not None:
            if cls.OBJECT_ID in IDE_KM_MESSAGES and IDE_KM_MESSAGES[cls.OBJECT_ID] is not cls:
                raise TypeError(f"IDE_KM object 0x{cls.OBJECT_ID:02x} defined twice")
            IDE_KM_MESSAGES[cls.OBJECT_ID] = cls
            cls.NAME = cls.OBJECT_ID.name

    def summary(self) -> str:
        return self.NAME


@dataclasses.dataclass(frozen=True)
class Query(IdeKmMessage):
    """QUERY: ask for the IDE capability and register block of one port."""

    OBJECT_ID = IdeKmObjectId.QUERY
    port_index: int = 0

    LAYOUT = (Const("object_id", 1, IdeKmObjectId.QUERY), Reserved(1), u8("port_index"))

    def summary(self) -> str:
        return f"QUERY port={self.port_index}"


@dataclasses.dataclass(frozen=True)
class QueryResp(IdeKmMessage):
    """QUERY_RESP: the port's location and its IDE register block as LE DWs, capability header excluded."""

    OBJECT_ID = IdeKmObjectId.QUERY_RESP
    port_index: int
    function: int
    device: int
    bus: int
    segment: int
    max_port_index: int
    registers: tuple[int, ...]

    LAYOUT = (
        Const("object_id", 1, IdeKmObjectId.QUERY_RESP),
        Reserved(1),
        u8("port_index"),
        Bits("dev_func", 1, [("function", 0, 3, None), ("device", 3, 5, None)]),
        u8("bus"),
        u8("segment"),
        u8("max_port_index"),
        Array("registers", u32("dw")),
    )

    def __post_init__(self) -> None:
        if len(self.registers) < MIN_REGISTER_DWS:
            raise ValueError(f"IDE register block needs at least {MIN_REGISTER_DWS} DWs, has {len(self.registers)}")

    @property
    def requester_id(self) -> int:
        """Bus/device/function of the port as a 16-bit requester ID."""
        return (self.bus << 8) | (self.device << 3) | self.function

    @property
    def ide_capability(self) -> int:
        return self.registers[0]

    @property
    def ide_control(self) -> int:
        return self.registers[1]

    def summary(self) -> str:
        return (f"QUERY_RESP port={self.port_index}/{self.max_port_index} "
                f"{self.segment:02x}:{self.bus:02x}:{self.device:02x}.{self.function} regs={len(self.registers)}DW")


@dataclasses.dataclass(frozen=True)
class KeyProg(IdeKmMessage):
    """KEY_PROG: one key and IFV for one key set / direction / sub-stream of a stream (47 bytes)."""

    OBJECT_ID = IdeKmObjectId.KEY_PROG
    stream_id: int
    key_set: KeySet
    direction: Direction
    sub_stream: SubStream
    key: bytes  # natural AES-256 byte order
    ifv: bytes  # IV bytes 4..11 (invocation field initial value), most significant byte first
    port_index: int = 0

    LAYOUT = (
        Const("object_id", 1, IdeKmObjectId.KEY_PROG),
        Reserved(2),
        u8("stream_id"),
        Reserved(1),
        _key_sub_stream(),
        u8("port_index"),
        _DwReversedBytes("key", KEY_BYTES),
        _DwReversedBytes("ifv", IFV_BYTES),
    )

    def summary(self) -> str:
        return (f"KEY_PROG stream={self.stream_id} {self.key_set.name} {self.direction.name} "
                f"{self.sub_stream.name} port={self.port_index}")


@dataclasses.dataclass(frozen=True)
class KpAck(IdeKmMessage):
    """KP_ACK: the device's verdict on one KEY_PROG."""

    OBJECT_ID = IdeKmObjectId.KP_ACK
    stream_id: int
    status: KpAckStatus
    key_set: KeySet
    direction: Direction
    sub_stream: SubStream | int  # an int: the reserved sub-stream of a refused KEY_PROG, echoed
    port_index: int = 0
    reserved_bits: int = 0       # KeySubStream bits 3:2 as the KEY_PROG carried them (echoed, not interpreted)

    LAYOUT = (
        Const("object_id", 1, IdeKmObjectId.KP_ACK),
        Reserved(2),
        u8("stream_id"),
        u8("status", KpAckStatus),
        _key_sub_stream(echo=True, reserved=True),
        u8("port_index"),
    )

    def summary(self) -> str:
        return (f"KP_ACK stream={self.stream_id} {self.key_set.name} {self.direction.name} "
                f"{sub_stream_name(self.sub_stream)} port={self.port_index} status={self.status.name}")


def _selector_layout(object_id: IdeKmObjectId, *, echo: bool = False) -> tuple[Any, ...]:
    return (
        Const("object_id", 1, object_id),
        Reserved(2),
        u8("stream_id"),
        Reserved(1),
        _key_sub_stream(echo=echo),
        u8("port_index"),
    )


@dataclasses.dataclass(frozen=True)
class _KeySelector(IdeKmMessage):
    """The 7-byte shape shared by K_SET_GO, K_SET_STOP and K_GOSTOP_ACK."""

    stream_id: int
    key_set: KeySet
    direction: Direction
    sub_stream: SubStream | int  # an int only in K_GOSTOP_ACK echoing a reserved sub-stream
    port_index: int = 0

    def summary(self) -> str:
        return (f"{self.NAME} stream={self.stream_id} {self.key_set.name} {self.direction.name} "
                f"{sub_stream_name(self.sub_stream)} port={self.port_index}")


@dataclasses.dataclass(frozen=True)
class KSetGo(_KeySelector):
    """K_SET_GO: start using a programmed key set for one direction / sub-stream."""

    OBJECT_ID = IdeKmObjectId.K_SET_GO
    LAYOUT = _selector_layout(IdeKmObjectId.K_SET_GO)


@dataclasses.dataclass(frozen=True)
class KSetStop(_KeySelector):
    """K_SET_STOP: stop using (and invalidate) a key set."""

    OBJECT_ID = IdeKmObjectId.K_SET_STOP
    LAYOUT = _selector_layout(IdeKmObjectId.K_SET_STOP)


@dataclasses.dataclass(frozen=True)
class KGoStopAck(_KeySelector):
    """K_GOSTOP_ACK: the answer to both K_SET_GO and K_SET_STOP."""

    OBJECT_ID = IdeKmObjectId.K_GOSTOP_ACK
    LAYOUT = _selector_layout(IdeKmObjectId.K_GOSTOP_ACK, echo=True)


def decode_ide_km(data: bytes) -> IdeKmMessage:
    """Decode any IDE_KM object by its Object ID byte (the byte after the Protocol ID)."""
    if not data:
        raise DecodeError("IDE_KM", "object_id", 0, "empty IDE_KM message")
    cls = IDE_KM_MESSAGES.get(data[0])
    if cls is None:
        raise DecodeError("IDE_KM", "object_id", 0, f"unknown IDE_KM object id 0x{data[0]:02x}")
    return cls.decode(data)


def summarize(msg: IdeKmMessage) -> str:
    """Compact one-line description for the trace, e.g. 'KEY_PROG stream=1 K0 TX NPR port=0'."""
    return msg.summary()
