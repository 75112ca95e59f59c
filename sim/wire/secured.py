"""DSP0277 secured-message records and their PCIe DOE binding (PROTOCOLS.md §5.1-5.3).

Only framing lives here: the crypto layer encrypts ``SecuredPlaintext.encode()`` with AES-GCM
under ``SecuredRecord.aad()`` and hands back ciphertext and tag, which this module frames.

The size of the sequence-number field is fixed by the transport binding, not carried on the
wire: 0 bytes for PCIe DOE, 2 for MCTP, 8 in libspdm's unit tests (§8.2). A :class:`SecuredFraming`
passed as the decode context says which binding applies; the record keeps it as
``seq_num_size`` so that it re-encodes and computes its AAD on its own.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, TypeVar

from sim.wire.codec import Bytes, EncodeError, LengthOf, Message, Reader, Spec, u32

MAC_BYTES = 16
APP_LENGTH_BYTES = 2


class SeqNumSize(enum.IntEnum):
    """Bytes of the sequence number in the record header, per transport binding (§5.1, §5.3)."""

    NONE = 0  # PCIe DOE
    MCTP = 2  # DSP0276
    EIGHT = 8  # libspdm unit tests


@dataclasses.dataclass(frozen=True)
class SecuredFraming:
    """What the transport binding fixes: sequence-number size and how many pad bytes may follow a record."""

    seq_num_size: SeqNumSize = SeqNumSize.NONE
    max_padding: int = 3


_SEQ_NUM_SIZES = frozenset(int(s) for s in SeqNumSize)

PCI_DOE_FRAMING = SecuredFraming(SeqNumSize.NONE, 3)  # DOE pads to a DW (§1.3)
MCTP_FRAMING = SecuredFraming(SeqNumSize.MCTP, 0)
LIBSPDM_TEST_FRAMING = SecuredFraming(SeqNumSize.EIGHT, 0)


def session_id(req_id: int, rsp_id: int) -> int:
    """SessionID = (RspSessionID << 16) | ReqSessionID; on the wire the requester's half comes first (§9.3)."""
    if not (0 <= req_id <= 0xFFFF and 0 <= rsp_id <= 0xFFFF):
        raise ValueError(f"session id halves must be u16: req=0x{req_id:x} rsp=0x{rsp_id:x}")
    return (rsp_id << 16) | req_id


def req_session_id(sid: int) -> int:
    """The ReqSessionID half of a SessionID."""
    return sid & 0xFFFF


def rsp_session_id(sid: int) -> int:
    """The RspSessionID half of a SessionID."""
    return (sid >> 16) & 0xFFFF


class _FramingParam(Spec):
    """A binding parameter kept as an attribute: nothing on the wire, taken from the decode context."""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        if int(values[self.name]) not in _SEQ_NUM_SIZES:  # refuse sizes no binding uses
            raise EncodeError(f"seq_num_size {values[self.name]} is not one of {[int(s) for s in SeqNumSize]}")

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        framing = ctx if isinstance(ctx, SecuredFraming) else PCI_DOE_FRAMING
        values[self.name] = SeqNumSize(framing.seq_num_size)


class _SeqNum(Spec):
    """The low-order ``seq_num_size`` bytes of the 64-bit sequence number, little-endian."""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        size, v = int(values["seq_num_size"]), int(values[self.name])
        if not 0 <= v < (1 << (8 * size)):
            raise EncodeError(f"seq_num {v} does not fit in {size} bytes (use the low-order bytes)")
        out += v.to_bytes(size, "little")

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        size = int(values["seq_num_size"])
        values[self.name] = int.from_bytes(r.take(size, self.name), "little")


class _RecordLength(LengthOf):
    """Length = bytes after this field; refuses values too small to hold the mandatory parts."""

    def __init__(self, target: str, minimum: int) -> None:
        super().__init__("length", 2, target, adjust=MAC_BYTES)
        self.minimum = minimum

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        start = r.offset()
        super().decode(r, values, ctx)
        n = values[self.name] + MAC_BYTES
        if n < self.minimum:
            raise r.fail(self.name, f"value {n} is below the minimum {self.minimum}", start)


R = TypeVar("R", bound="_Record")


def _header_len(seq_num_size: int) -> int:
    return 4 + int(seq_num_size) + 2


def _quick_header(session_id: int, seq_num: int, seq_num_size: int, body_len: int, mac: bytes) -> bytes | None:
    """SessionID ‖ SeqNum ‖ Length without encoding the body (the AAD of every record, so it is hot).

    None when a field would not encode; the caller then goes through encode(), which says why.
    """
    try:
        size, sid, seq, length = int(seq_num_size), int(session_id), int(seq_num), body_len + MAC_BYTES
    except (TypeError, ValueError):
        return None
    if (size in _SEQ_NUM_SIZES and 0 <= sid <= 0xFFFF_FFFF and 0 <= seq < 1 << (8 * size) and length <= 0xFFFF
            and isinstance(mac, bytes | bytearray) and len(mac) == MAC_BYTES):
        return sid.to_bytes(4, "little") + seq.to_bytes(size, "little") + length.to_bytes(2, "little")
    return None


class _Record(Message):
    """Shared decode: the length field bounds the record, and the binding may add a few pad bytes."""

    @classmethod
    def decode(cls: type[R], data: bytes, ctx: Any = None, *, allow_trailing: bool = False) -> R:
        framing = ctx if isinstance(ctx, SecuredFraming) else PCI_DOE_FRAMING
        r = Reader(data, cls.NAME)
        rec = cls.decode_from(r, framing)
        if r.remaining > framing.max_padding and not allow_trailing:
            raise r.fail("length", f"{r.remaining} bytes follow the record; the binding pads at most "
                                   f"{framing.max_padding}")
        return rec


@dataclasses.dataclass(frozen=True)
class SecuredRecord(_Record):
    """An encrypt-and-MAC record: SessionID ‖ [SeqNum] ‖ Length ‖ ciphertext ‖ MAC (§5.1).

    With the default ``seq_num_size`` 0 this is the PCIe DOE form (§5.3). ``ciphertext`` is the
    encrypted :class:`SecuredPlaintext` (so at least the 2-byte length); Length = len(ciphertext) + 16.
    """

    session_id: int
    ciphertext: bytes
    mac: bytes
    seq_num: int = 0
    seq_num_size: SeqNumSize = SeqNumSize.NONE

    LAYOUT = (
        u32("session_id"),
        _FramingParam("seq_num_size"),
        _SeqNum("seq_num"),
        _RecordLength("ciphertext", APP_LENGTH_BYTES + MAC_BYTES),
        Bytes("ciphertext", "length"),
        Bytes("mac", MAC_BYTES),
    )

    @classmethod
    def build(cls, session: int, ciphertext: bytes, mac: bytes, *, sequence: int = 0,
              framing: SecuredFraming = PCI_DOE_FRAMING) -> SecuredRecord:
        """A record for a 64-bit sequence counter, keeping only the bytes the binding puts on the wire."""
        size = framing.seq_num_size
        return cls(session, ciphertext, mac, sequence & ((1 << (8 * size)) - 1), SeqNumSize(size))

    @property
    def length(self) -> int:
        return len(self.ciphertext) + MAC_BYTES

    def aad(self) -> bytes:
        """Associated data of the AEAD: SessionID ‖ SeqNum ‖ Length, exactly as on the wire."""
        header = _quick_header(self.session_id, self.seq_num, self.seq_num_size, len(self.ciphertext), self.mac)
        return header if header is not None else self.encode()[: _header_len(self.seq_num_size)]

    def summary(self) -> str:
        seq = f" seq={self.seq_num}" if self.seq_num_size else ""
        return f"SECURED sid=0x{self.session_id:08x}{seq} len={self.length}"


@dataclasses.dataclass(frozen=True)
class MacOnlyRecord(_Record):
    """A MAC-only record (MAC_CAP without ENCRYPT_CAP): SessionID ‖ [SeqNum] ‖ Length ‖ AppData ‖ MAC (§5.1).

    There is no ApplicationDataLength; Length = len(app_data) + 16.
    """

    session_id: int
    app_data: bytes
    mac: bytes
    seq_num: int = 0
    seq_num_size: SeqNumSize = SeqNumSize.NONE

    LAYOUT = (
        u32("session_id"),
        _FramingParam("seq_num_size"),
        _SeqNum("seq_num"),
        _RecordLength("app_data", MAC_BYTES),
        Bytes("app_data", "length"),
        Bytes("mac", MAC_BYTES),
    )

    @property
    def length(self) -> int:
        return len(self.app_data) + MAC_BYTES

    def header(self) -> bytes:
        """SessionID ‖ SeqNum ‖ Length as on the wire."""
        header = _quick_header(self.session_id, self.seq_num, self.seq_num_size, len(self.app_data), self.mac)
        return header if header is not None else self.encode()[: _header_len(self.seq_num_size)]

    def aad(self) -> bytes:
        """Associated data of the AEAD: everything before the MAC (the plaintext is empty)."""
        header = _quick_header(self.session_id, self.seq_num, self.seq_num_size, len(self.app_data), self.mac)
        return header + bytes(self.app_data) if header is not None else self.encode()[:-MAC_BYTES]

    def summary(self) -> str:
        seq = f" seq={self.seq_num}" if self.seq_num_size else ""
        return f"SECURED-MAC sid=0x{self.session_id:08x}{seq} len={self.length}"


@dataclasses.dataclass(frozen=True)
class SecuredPlaintext(Message):
    """The encrypted part of a record: ApplicationDataLength ‖ ApplicationData ‖ RandomData (§5.1).

    Over PCIe DOE, and for IDE_KM and TDISP, ``random_data`` must be empty.
    """

    app_data: bytes
    random_data: bytes = b""

    LAYOUT = (
        LengthOf("app_data_length", 2, "app_data"),
        Bytes("app_data", "app_data_length"),
        Bytes("random_data"),
    )

    def summary(self) -> str:
        return f"SECURED-PLAIN app={len(self.app_data)}B random={len(self.random_data)}B"


SecuredMessage = SecuredRecord | MacOnlyRecord | SecuredPlaintext


def summarize(msg: SecuredMessage) -> str:
    """Compact one-line description for the trace."""
    return msg.summary()
