"""PCIe Data Object Exchange (DOE) data objects and DOE discovery (PROTOCOLS.md §1.3, §1.4).

A DOE data object is what crosses the DOE mailbox (and the DMTF emulator socket, INTEROP.md):
an 8-byte little-endian header followed by a payload padded with zeros to a DW boundary. The
header's Length counts DWs *including* the header, and 0 stands for the maximum of 2^18 DW.

The data object type stays a plain ``int`` because its meaning depends on the vendor ID: only
for the PCI-SIG vendor ID (0x0001) do the values map onto :class:`DoeObjectType`, and objects of
types this simulator does not know must still decode (a mailbox silently drops them later).
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Any

from sim.wire.codec import Const, DecodeError, EncodeError, Message, Reader, Reserved, Spec, u8, u16

PCI_SIG_VENDOR_ID = 0x0001
HEADER_BYTES = 8
MAX_LENGTH_DW = 1 << 18  # encoded as 0 in the 18-bit Length field (§1.3)
MAX_PAYLOAD_BYTES = MAX_LENGTH_DW * 4 - HEADER_BYTES
_LENGTH_MASK = MAX_LENGTH_DW - 1
_HEADER = struct.Struct("<HBBI")  # vendor ID, data object type, reserved, Length (DW1)
_PAD = (b"", b"\0", b"\0\0", b"\0\0\0")


class DoeObjectType(enum.IntEnum):
    """PCI-SIG data object types (vendor ID 0x0001), §1.3."""

    DISCOVERY = 0x00
    SPDM = 0x01
    SECURED_SPDM = 0x02
    # Names as in libspdm; defined by specs newer than SPDM 1.3 and not used by this simulator [U].
    SPDM_CONNECTION_ID = 0x03
    SECURED_SPDM_CONNECTION_ID = 0x04


class DiscoveryVersion(enum.IntEnum):
    """Discovery Version byte of a DOE discovery request (§1.4, PCIe r6.1 §6.30.1.1)."""

    CAP_V1 = 0x00  # DOE capability version 1: the byte was reserved
    CAP_V2 = 0x02  # required once the DOE capability version is 2 or more


def _dw_count(payload_len: int) -> int:
    return HEADER_BYTES // 4 + (payload_len + 3) // 4


def doe_length_dw(data: bytes) -> int:
    """The object length in DW (header included) from DW1 bits 17:0 of a DOE header; 0 reads as 2^18.

    The mailbox needs this after the second DW is written to know how many DWs to expect.
    """
    if len(data) < HEADER_BYTES:
        raise DecodeError("DoeObject", "length", len(data), f"a DOE header is 8 bytes, only {len(data)} given")
    raw = int.from_bytes(data[4:8], "little") & _LENGTH_MASK
    return raw if raw else MAX_LENGTH_DW


class _DoeLength(Spec):
    """DW1 of the header: Length in DW over header and padded payload; bits 31:18 reserved."""

    derived = True

    def __init__(self) -> None:
        self.name = "length"

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        dw = _dw_count(len(values["payload"]))
        if dw > MAX_LENGTH_DW:
            raise EncodeError(f"DOE payload of {len(values['payload'])} bytes exceeds {MAX_PAYLOAD_BYTES}")
        out += (dw & _LENGTH_MASK).to_bytes(4, "little")

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        start = r.offset()
        raw = int.from_bytes(r.take(4, self.name), "little") & _LENGTH_MASK  # reserved bits ignored
        dw = raw if raw else MAX_LENGTH_DW
        if dw < HEADER_BYTES // 4:
            raise r.fail(self.name, f"{dw} DW is shorter than the 2-DW header", start)
        need = dw * 4 - HEADER_BYTES
        if r.remaining != need:
            raise r.fail(self.name, f"header says {dw} DW ({need} payload bytes) but {r.remaining} payload bytes "
                                    "were given", start)
        values[self.name] = need


class _PaddedPayload(Spec):
    """The payload: zero-padded to a DW on encode; on decode everything the Length covers (pad included)."""

    def __init__(self) -> None:
        self.name = "payload"

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        payload = bytes(values[self.name])
        out += payload + bytes(-len(payload) % 4)

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        values[self.name] = r.take(values["length"], self.name)


@dataclasses.dataclass(frozen=True)
class DoeObject(Message):
    """One DOE data object (§1.3). ``payload`` is stored as given; decoding yields it with its DW padding.

    Reserved byte 3 must be zero: libspdm rejects the object otherwise, and so does this decoder.
    """

    vendor_id: int
    data_object_type: int
    payload: bytes = b""

    LAYOUT = (
        u16("vendor_id"),
        u8("data_object_type"),
        Const("reserved", 1, 0),
        _DoeLength(),
        _PaddedPayload(),
    )

    def encode(self, ctx: Any = None) -> bytes:
        """As the layout says, with the 8-byte header packed in one step: every DOE exchange passes here twice.

        Anything the layout would refuse or convert (out-of-range or non-int header fields, a payload
        that is not plain bytes or too long) goes through the layout itself, which gives the same
        result or the same error (``tests/wire/test_doe_fast.py`` compares the two).
        """
        vid, kind, payload = self.vendor_id, self.data_object_type, self.payload
        if (type(payload) is bytes and type(vid) is int and type(kind) is int and 0 <= vid <= 0xFFFF
                and 0 <= kind <= 0xFF and len(payload) <= MAX_PAYLOAD_BYTES):
            return _HEADER.pack(vid, kind, 0, _dw_count(len(payload)) & _LENGTH_MASK) + payload + \
                _PAD[-len(payload) % 4]
        return super().encode(ctx)

    @classmethod
    def decode(cls, data: bytes, ctx: Any = None, *, allow_trailing: bool = False) -> DoeObject:
        """As the layout says, with the header read in place; anything irregular goes through the layout."""
        if type(data) is bytes and len(data) >= HEADER_BYTES and data[3] == 0:
            dw = int.from_bytes(data[4:8], "little") & _LENGTH_MASK or MAX_LENGTH_DW
            if dw * 4 == len(data):
                if cls is not DoeObject:
                    return cls(data[0] | data[1] << 8, data[2], data[HEADER_BYTES:])
                obj = object.__new__(cls)  # the fields set as the dataclass __init__ sets them, in field order
                fields = obj.__dict__
                fields["vendor_id"], fields["data_object_type"] = data[0] | data[1] << 8, data[2]
                fields["payload"] = data[HEADER_BYTES:]
                return obj
        return super().decode(data, ctx, allow_trailing=allow_trailing)  # type: ignore[return-value]

    @classmethod
    def pcisig(cls, object_type: DoeObjectType, payload: bytes) -> DoeObject:
        """A PCI-SIG object (vendor ID 0x0001) of a known type."""
        return cls(PCI_SIG_VENDOR_ID, int(object_type), payload)

    @property
    def object_type(self) -> DoeObjectType | None:
        """The PCI-SIG type this object carries, or None for another vendor or an unknown type."""
        if self.vendor_id != PCI_SIG_VENDOR_ID:
            return None
        try:
            return DoeObjectType(self.data_object_type)
        except ValueError:
            return None

    @property
    def length_dw(self) -> int:
        """The Length this object has on the wire, in DW, header included (2^18 at most)."""
        return _dw_count(len(self.payload))

    def summary(self) -> str:
        kind = self.object_type
        what = kind.name if kind is not None else f"vid=0x{self.vendor_id:04x} type=0x{self.data_object_type:02x}"
        return f"DOE {what} len={self.length_dw}DW"


@dataclasses.dataclass(frozen=True)
class DoeDiscoveryRequest(Message):
    """DOE discovery request payload (one DW, §1.4): which protocol index to report."""

    index: int
    version: DiscoveryVersion = DiscoveryVersion.CAP_V1

    LAYOUT = (u8("index"), u8("version", DiscoveryVersion), Reserved(2))

    def to_doe(self) -> DoeObject:
        return DoeObject.pcisig(DoeObjectType.DISCOVERY, self.encode())

    def summary(self) -> str:
        return f"DOE DISCOVERY index={self.index} version={int(self.version)}"


@dataclasses.dataclass(frozen=True)
class DoeDiscoveryResponse(Message):
    """DOE discovery response payload (one DW, §1.4); ``next_index`` 0 marks the last protocol."""

    vendor_id: int
    data_object_type: int
    next_index: int

    LAYOUT = (u16("vendor_id"), u8("data_object_type"), u8("next_index"))

    def to_doe(self) -> DoeObject:
        return DoeObject.pcisig(DoeObjectType.DISCOVERY, self.encode())

    @property
    def object_type(self) -> DoeObjectType | None:
        if self.vendor_id != PCI_SIG_VENDOR_ID:
            return None
        try:
            return DoeObjectType(self.data_object_type)
        except ValueError:
            return None

    def summary(self) -> str:
        kind = self.object_type
        what = kind.name if kind is not None else f"vid=0x{self.vendor_id:04x} type=0x{self.data_object_type:02x}"
        return f"DOE DISCOVERY_RESP {what} next={self.next_index}"


DoeMessage = DoeObject | DoeDiscoveryRequest | DoeDiscoveryResponse


def summarize(msg: DoeMessage) -> str:
    """Compact one-line description for the trace."""
    return msg.summary()
