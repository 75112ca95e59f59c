"""PCIe TLPs (non-Flit mode): memory request and completion headers, and IDE TLP framing (PROTOCOLS.md §7.2).

TLP headers are sent byte 0 first with bit 7 the most significant, so each header DW reads as a
**big-endian** 32-bit word; field positions below are bits of that word (PCIe Base §2.2).
Everything in the non-IDE headers is long-established public knowledge; the IDE prefix and the
IDE AAD are taken from secondary sources and are marked [S]/[U] where they are used.

Only what the simulator carries over a link is modeled: MRd/MWr (3DW and 4DW, locked reads too),
Cpl/CplD, optional ECRC (kept as opaque bytes; no CRC is computed), and the IDE prefix.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, NamedTuple

from sim.wire.codec import (
    Bits,
    Bytes,
    Const,
    DecodeError,
    EncodeError,
    Message,
    Reader,
    Spec,
    Struct,
    nested,
    to_enum,
    u8,
)
from sim.wire.ide_km import KeySet, SubStream

IDE_PREFIX_BYTE = 0x92  # Fmt 100b (prefix) | Type 1_0010b (End-End, IDE) [S]
IDE_MAC_BYTES = 12  # AES-GCM-256 with a 96-bit tag (§7.2, §9.1)
PCRC_BYTES = 4  # [U] the PCRC DW is encrypted along with the data
ECRC_BYTES = 4
MAX_LENGTH_DW = 1024  # Length field 0 means 1024 DW
MAX_BYTE_COUNT = 4096  # Byte Count field 0 means 4096 bytes


class TlpFmt(enum.IntEnum):
    """Fmt[2:0]: header size, data presence, or a TLP prefix."""

    NO_DATA_3DW = 0b000
    NO_DATA_4DW = 0b001
    DATA_3DW = 0b010
    DATA_4DW = 0b011
    PREFIX = 0b100

    @property
    def has_data(self) -> bool:
        return self in (TlpFmt.DATA_3DW, TlpFmt.DATA_4DW)

    @property
    def header_dw(self) -> int:
        return 4 if self in (TlpFmt.NO_DATA_4DW, TlpFmt.DATA_4DW) else 3


class TlpType(enum.IntEnum):
    """Type[4:0] of a (non-prefix) TLP header; Fmt tells read from write and 3DW from 4DW."""

    MEM = 0b0_0000  # MRd / MWr
    MEM_LOCKED = 0b0_0001  # MRdLk
    IO = 0b0_0010
    CFG0 = 0b0_0100
    CFG1 = 0b0_0101
    CPL = 0b0_1010  # Cpl / CplD
    CPL_LOCKED = 0b0_1011  # CplLk / CplDLk
    FETCH_ADD = 0b0_1100
    SWAP = 0b0_1101
    CAS = 0b0_1110
    MSG_TO_RC = 0b1_0000
    MSG_BY_ADDRESS = 0b1_0001
    MSG_BY_ID = 0b1_0010
    MSG_BROADCAST = 0b1_0011
    MSG_LOCAL = 0b1_0100
    MSG_GATHERED = 0b1_0101


class TlpAttr(enum.IntFlag):
    """Attr[2:0]; Attr[2] sits apart from Attr[1:0] in DW0."""

    NO_SNOOP = 1 << 0
    RELAXED_ORDERING = 1 << 1
    ID_BASED_ORDERING = 1 << 2


class AddressType(enum.IntEnum):
    """AT[1:0] of memory requests (reserved, i.e. 0, in completions). 0b11 is reserved."""

    UNTRANSLATED = 0b00
    TRANSLATION_REQUEST = 0b01
    TRANSLATED = 0b10


class CplStatus(enum.IntEnum):
    SC = 0b000  # successful completion
    UR = 0b001  # unsupported request
    CRS = 0b010  # configuration request retry status
    CA = 0b100  # completer abort


# --------------------------------------------------------------------------------------------
# Big-endian bit fields
# --------------------------------------------------------------------------------------------


class _Field(NamedTuple):
    """Wire bits [low, low+width) of a big-endian DW hold attribute bits [shift, shift+width)."""

    attr: str
    low: int
    width: int
    shift: int = 0
    enum_type: Any = None
    zero_means_max: bool = False  # Length and Byte Count: 0 encodes 2^width


class _BeBits(Bits):
    """Fields packed in one big-endian DW; an attribute may be split over several parts or DWs.

    Range checks happen in the header classes' ``__post_init__``: here a value's bits are just placed.
    """

    def __init__(self, name: str, fields: tuple[_Field, ...]) -> None:
        self.name, self.size, self.when, self.fields = name, 4, None, fields
        self.parts = tuple((f.attr, f.low, f.width, f.enum_type) for f in fields)
        self.derived = True

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        word = 0
        for f in self.fields:
            v = (int(values[f.attr]) >> f.shift) & ((1 << f.width) - 1)
            word |= v << f.low
        out += word.to_bytes(4, "big")

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        start = r.offset()
        word = int.from_bytes(r.take(4, self.name), "big")
        for f in self.fields:
            v = (word >> f.low) & ((1 << f.width) - 1)
            if f.zero_means_max and v == 0:
                v = 1 << f.width
            values[f.attr] = int(values.get(f.attr, 0)) | (v << f.shift)
        for f in self.fields:
            if f.enum_type is not None:
                values[f.attr] = to_enum(f.enum_type, int(values[f.attr]), r, f.attr, start)


def _dw0() -> _BeBits:
    """DW0, common to all TLP headers."""
    return _BeBits("dw0", (
        _Field("fmt", 29, 3, enum_type=TlpFmt),
        _Field("tlp_type", 24, 5, enum_type=TlpType),
        _Field("tag", 23, 1, shift=9),  # T9: tag bit 9 (10-bit tags)
        _Field("tc", 20, 3),
        _Field("tag", 19, 1, shift=8),  # T8: tag bit 8 (10-bit tags)
        _Field("attr", 18, 1, shift=2),  # Attr[2] (IDO); the enum is applied after Attr[1:0] below
        _Field("ln", 17, 1),  # lightweight notification
        _Field("th", 16, 1),  # TLP processing hints present
        _Field("td", 15, 1),  # TLP digest (ECRC) present
        _Field("ep", 14, 1),  # poisoned
        _Field("attr", 12, 2, enum_type=TlpAttr),
        _Field("at", 10, 2, enum_type=AddressType),
        _Field("length_dw", 0, 10, zero_means_max=True),
    ))


class _Address(Bits):
    """The address DW(s) of a memory request: [Address 63:32] ‖ Address 31:2 | PH[1:0], big-endian."""

    def __init__(self) -> None:
        self.name, self.size, self.when, self.derived = "address", 4, None, True
        self.parts = (("address", 2, 62, None), ("ph", 0, 2, None))

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        addr, ph = int(values["address"]), int(values["ph"])
        if TlpFmt(values["fmt"]).header_dw == 4:
            out += (addr >> 32).to_bytes(4, "big")
        out += ((addr & 0xFFFF_FFFC) | ph).to_bytes(4, "big")

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        hi = int.from_bytes(r.take(4, "address"), "big") if TlpFmt(values["fmt"]).header_dw == 4 else 0
        lo = int.from_bytes(r.take(4, "address"), "big")
        values["address"] = (hi << 32) | (lo & 0xFFFF_FFFC)
        values["ph"] = lo & 0x3


def _rid(rid: int) -> str:
    return f"{rid >> 8:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7}"


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------


class _HeaderBase(Message):
    """What both header kinds share. Not a dataclass itself: the annotations only declare the
    attributes that the concrete (dataclass) headers define, so that the helpers below type-check."""

    fmt: TlpFmt
    tlp_type: TlpType
    tag: int
    length_dw: int
    tc: int
    attr: TlpAttr
    ln: int
    th: int
    td: int
    ep: int

    def _check_common(self) -> None:
        if not 1 <= self.length_dw <= MAX_LENGTH_DW:
            raise ValueError(f"length_dw {self.length_dw} outside 1..{MAX_LENGTH_DW}")
        for name, bits in (("tag", 10), ("tc", 3), ("attr", 3), ("ln", 1), ("th", 1), ("td", 1), ("ep", 1)):
            v = int(getattr(self, name))
            if not 0 <= v < (1 << bits):
                raise ValueError(f"{name} = {v} does not fit in {bits} bits")

    @property
    def has_data(self) -> bool:
        return TlpFmt(self.fmt).has_data

    @property
    def data_bytes(self) -> int:
        """Bytes of data payload that follow this header (the Length field, for TLPs with data)."""
        return 4 * self.length_dw if self.has_data else 0

    @property
    def header_bytes(self) -> int:
        return 4 * TlpFmt(self.fmt).header_dw


@dataclasses.dataclass(frozen=True)
class MemRequestHeader(_HeaderBase):
    """MRd / MRdLk / MWr header, 3DW (32-bit address) or 4DW (64-bit address).

    PCIe requires the 3DW form for addresses below 4 GiB; :meth:`read` and :meth:`write` choose
    the form that way, while decoding accepts a 4DW header with a low address as it is.
    """

    fmt: TlpFmt
    tlp_type: TlpType
    requester_id: int
    tag: int
    address: int
    length_dw: int = 1
    first_be: int = 0xF
    last_be: int = 0
    tc: int = 0
    attr: TlpAttr = TlpAttr(0)
    at: AddressType = AddressType.UNTRANSLATED
    ln: int = 0
    th: int = 0
    td: int = 0
    ep: int = 0
    ph: int = 0  # processing hint when th = 1; reserved otherwise

    LAYOUT = (
        _dw0(),
        _BeBits("dw1", (
            _Field("requester_id", 16, 16),
            _Field("tag", 8, 8),
            _Field("last_be", 4, 4),
            _Field("first_be", 0, 4),
        )),
        _Address(),
    )

    def __post_init__(self) -> None:
        self._check_common()
        fmt = TlpFmt(self.fmt)
        if fmt == TlpFmt.PREFIX or self.tlp_type not in (TlpType.MEM, TlpType.MEM_LOCKED):
            raise ValueError(f"{fmt.name}/{TlpType(self.tlp_type).name} is not a memory request")
        if self.tlp_type == TlpType.MEM_LOCKED and fmt.has_data:
            raise ValueError("locked memory requests are reads")
        limit = 1 << (64 if fmt.header_dw == 4 else 32)
        if not 0 <= self.address < limit or self.address % 4:
            raise ValueError(f"address 0x{self.address:x} is not DW-aligned within {fmt.header_dw}DW range")
        for name, bits in (("requester_id", 16), ("first_be", 4), ("last_be", 4), ("ph", 2)):
            v = getattr(self, name)
            if not 0 <= v < (1 << bits):
                raise ValueError(f"{name} = {v} does not fit in {bits} bits")

    @staticmethod
    def _fmt(address: int, with_data: bool) -> TlpFmt:
        four = address >= 1 << 32
        if with_data:
            return TlpFmt.DATA_4DW if four else TlpFmt.DATA_3DW
        return TlpFmt.NO_DATA_4DW if four else TlpFmt.NO_DATA_3DW

    @classmethod
    def read(cls, requester_id: int, tag: int, address: int, length_dw: int = 1, *, first_be: int = 0xF,
             last_be: int | None = None, **kw: Any) -> MemRequestHeader:
        """An MRd; Last DW BE defaults to 0xF for multi-DW reads and must be 0 for single-DW ones."""
        last = (0xF if length_dw > 1 else 0) if last_be is None else last_be
        return cls(cls._fmt(address, False), TlpType.MEM, requester_id, tag, address, length_dw, first_be, last, **kw)

    @classmethod
    def write(cls, requester_id: int, tag: int, address: int, length_dw: int, *, first_be: int = 0xF,
              last_be: int | None = None, **kw: Any) -> MemRequestHeader:
        """An MWr header for ``length_dw`` DWs of data."""
        last = (0xF if length_dw > 1 else 0) if last_be is None else last_be
        return cls(cls._fmt(address, True), TlpType.MEM, requester_id, tag, address, length_dw, first_be, last, **kw)

    @property
    def is_write(self) -> bool:
        return self.has_data

    def summary(self) -> str:
        kind = ("MWr" if self.is_write else "MRdLk" if self.tlp_type == TlpType.MEM_LOCKED else "MRd")
        bits = 64 if self.header_bytes == 16 else 32
        return f"{kind}{bits} rid={_rid(self.requester_id)} tag={self.tag} addr=0x{self.address:x} len={self.length_dw}DW"


@dataclasses.dataclass(frozen=True)
class CompletionHeader(_HeaderBase):
    """Cpl / CplD (and the locked variants): always a 3DW header."""

    fmt: TlpFmt
    tlp_type: TlpType
    completer_id: int
    requester_id: int
    tag: int
    status: CplStatus = CplStatus.SC
    byte_count: int = 4
    lower_address: int = 0
    length_dw: int = 1
    bcm: int = 0
    tc: int = 0
    attr: TlpAttr = TlpAttr(0)
    at: AddressType = AddressType.UNTRANSLATED
    ln: int = 0
    th: int = 0
    td: int = 0
    ep: int = 0

    LAYOUT = (
        _dw0(),
        _BeBits("dw1", (
            _Field("completer_id", 16, 16),
            _Field("status", 13, 3, enum_type=CplStatus),
            _Field("bcm", 12, 1),
            _Field("byte_count", 0, 12, zero_means_max=True),
        )),
        _BeBits("dw2", (
            _Field("requester_id", 16, 16),
            _Field("tag", 8, 8),
            # bit 7 reserved
            _Field("lower_address", 0, 7),
        )),
    )

    def __post_init__(self) -> None:
        self._check_common()
        if self.fmt not in (TlpFmt.NO_DATA_3DW, TlpFmt.DATA_3DW) or self.tlp_type not in (TlpType.CPL,
                                                                                         TlpType.CPL_LOCKED):
            raise ValueError(f"{TlpFmt(self.fmt).name}/{TlpType(self.tlp_type).name} is not a completion")
        for name, lo, hi in (("completer_id", 0, 0xFFFF), ("requester_id", 0, 0xFFFF), ("bcm", 0, 1),
                             ("byte_count", 1, MAX_BYTE_COUNT), ("lower_address", 0, 0x7F)):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ValueError(f"{name} = {v} outside {lo}..{hi}")

    @classmethod
    def with_data(cls, completer_id: int, requester_id: int, tag: int, length_dw: int, *, byte_count: int | None = None,
                  lower_address: int = 0, status: CplStatus = CplStatus.SC, **kw: Any) -> CompletionHeader:
        """A CplD for ``length_dw`` DWs; Byte Count defaults to the whole payload (a single completion)."""
        bc = 4 * length_dw if byte_count is None else byte_count
        return cls(TlpFmt.DATA_3DW, TlpType.CPL, completer_id, requester_id, tag, status, bc, lower_address,
                   length_dw, **kw)

    @classmethod
    def without_data(cls, completer_id: int, requester_id: int, tag: int, status: CplStatus, **kw: Any
                     ) -> CompletionHeader:
        """A Cpl (no data), e.g. an unsupported-request completion."""
        return cls(TlpFmt.NO_DATA_3DW, TlpType.CPL, completer_id, requester_id, tag, status, **kw)

    def summary(self) -> str:
        kind = "CplD" if self.has_data else "Cpl"
        size = f" len={self.length_dw}DW" if self.has_data else ""
        return (f"{kind} cid={_rid(self.completer_id)} rid={_rid(self.requester_id)} tag={self.tag} "
                f"{CplStatus(self.status).name} bc={self.byte_count}{size}")


TlpHeader = MemRequestHeader | CompletionHeader


def decode_tlp_header(data: bytes, *, allow_trailing: bool = False) -> TlpHeader:
    """Decode a memory-request or completion header, choosing the class from Fmt/Type of byte 0."""
    r = Reader(data, "TLP")
    header = _read_header(r)
    if r.remaining and not allow_trailing:
        raise r.fail("(end)", f"{r.remaining} bytes after the {header.header_bytes}-byte header")
    return header


def _read_header(r: Reader) -> TlpHeader:
    if not r.remaining:
        raise r.fail("dw0", "no TLP header")
    byte0 = r.data[r.pos]
    fmt, tlp_type = byte0 >> 5, byte0 & 0x1F
    if fmt == TlpFmt.PREFIX:
        raise r.fail("dw0", f"a TLP prefix (0x{byte0:02x}) where a header was expected")
    cls: type[TlpHeader]
    if tlp_type in (TlpType.MEM, TlpType.MEM_LOCKED):
        cls = MemRequestHeader
    elif tlp_type in (TlpType.CPL, TlpType.CPL_LOCKED):
        cls = CompletionHeader
    else:
        raise r.fail("dw0", f"TLP type 0x{tlp_type:02x} (fmt {fmt:03b}) is not modeled")
    return cls.decode_from(r)


class _HeaderField(Spec):
    """A TLP header of either kind, dispatched on byte 0."""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        v = values[self.name]
        if not isinstance(v, (MemRequestHeader, CompletionHeader)):
            raise EncodeError(f"field '{self.name}' must be a MemRequestHeader or CompletionHeader")
        out += v.encode()

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        try:
            values[self.name] = _read_header(r)
        except DecodeError as exc:
            raise nested(exc, self.name) from None


# --------------------------------------------------------------------------------------------
# Whole TLPs
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tlp(Message):
    """A plain TLP: header ‖ data payload (Length DWs, for TLPs with data) ‖ [ECRC when TD]."""

    header: TlpHeader
    data: bytes = b""
    ecrc: bytes | None = None  # opaque: no CRC is computed or checked here

    LAYOUT = (
        _HeaderField("header"),
        Bytes("data", lambda v, ctx: v["header"].data_bytes),
        Bytes("ecrc", ECRC_BYTES, when=lambda v, ctx: bool(v["header"].td)),
    )

    def __post_init__(self) -> None:
        if len(self.data) != self.header.data_bytes:
            raise ValueError(f"data is {len(self.data)} bytes, the header says {self.header.data_bytes}")
        if (self.ecrc is not None) != bool(self.header.td):
            raise ValueError("ecrc must be given exactly when the header's TD bit is set")

    def summary(self) -> str:
        return self.header.summary()


@dataclasses.dataclass(frozen=True)
class IdePrefix(Message):
    """The IDE TLP prefix (1 DW) [S: third-party VIP source via PROTOCOLS.md §7.2; confirm against PCIe §6.33].

    Byte 3: bits 7:4 Sub-Stream, 3 P (PCRC present), 2 M (MAC in this TLP), 1 K (key set), 0 T (TEE originator).
    """

    stream_id: int
    sub_stream: SubStream
    key_set: KeySet = KeySet.K0
    pr_sent_counter: int = 0  # [U] semantics (posted-request counter for ordering) not modeled beyond the byte
    mac_present: int = 1  # [U] 0 only when aggregating several TLPs under one MAC
    pcrc: int = 0
    tee: int = 1

    LAYOUT = (
        Const("prefix_type", 1, IDE_PREFIX_BYTE),
        u8("pr_sent_counter"),
        u8("stream_id"),
        # [U] bit 7 of the Sub-Stream nibble is reserved when TEE-IO is supported; decoded here as part of the
        # 4-bit field, so a set bit 7 reads as an unknown sub-stream.
        Bits("flags", 1, [
            ("tee", 0, 1, None),
            ("key_set", 1, 1, KeySet),
            ("mac_present", 2, 1, None),
            ("pcrc", 3, 1, None),
            ("sub_stream", 4, 4, SubStream),
        ]),
    )

    def summary(self) -> str:
        flags = "".join(c for c, on in (("T", self.tee), ("M", self.mac_present), ("P", self.pcrc)) if on)
        return (f"IDE stream={self.stream_id} {SubStream(self.sub_stream).name} {KeySet(self.key_set).name} "
                f"ctr={self.pr_sent_counter}" + (f" {flags}" if flags else ""))


@dataclasses.dataclass(frozen=True)
class IdeTlp(Message):
    """An IDE TLP: IDE prefix ‖ header ‖ encrypted payload [‖ encrypted PCRC] ‖ MAC (96-bit) when M is set.

    The link model encrypts: plaintext = data payload, AAD = :meth:`header_bytes`. [U] The spec's AAD
    also covers parts of the prefix and masks some mutable header bits; this framing uses the
    header bytes as they are. ECRC together with IDE is not modeled.
    """

    prefix: IdePrefix
    header: TlpHeader
    ciphertext: bytes = b""
    mac: bytes | None = None

    LAYOUT = (
        Struct("prefix", IdePrefix),
        _HeaderField("header"),
        Bytes("ciphertext", lambda v, ctx: v["header"].data_bytes + (PCRC_BYTES if v["prefix"].pcrc else 0)),
        Bytes("mac", IDE_MAC_BYTES, when=lambda v, ctx: bool(v["prefix"].mac_present)),
    )

    def __post_init__(self) -> None:
        want = self.header.data_bytes + (PCRC_BYTES if self.prefix.pcrc else 0)
        if len(self.ciphertext) != want:
            raise ValueError(f"ciphertext is {len(self.ciphertext)} bytes, header and prefix say {want}")
        if self.header.td:
            raise ValueError("ECRC on IDE TLPs is not modeled")
        if self.prefix.mac_present:
            if self.mac is None or len(self.mac) != IDE_MAC_BYTES:
                raise ValueError(f"M is set: a {IDE_MAC_BYTES}-byte MAC is required")
        elif self.mac is not None:
            raise ValueError("M is clear: this TLP carries no MAC")

    def header_bytes(self) -> bytes:
        """The TLP header as on the wire, the AAD for AES-GCM (see the class note)."""
        return self.header.encode()

    def summary(self) -> str:
        return f"{self.prefix.summary()} {self.header.summary()}"


def ide_iv(invocation: int, fixed: int = 0) -> bytes:
    """96-bit AES-GCM IV: fixed field (4 bytes; 0 for PCIe) ‖ invocation field (8 bytes), MSB first (§7.2)."""
    if not 0 <= invocation < 1 << 64 or not 0 <= fixed < 1 << 32:
        raise ValueError("invocation must fit in 64 bits and the fixed field in 32")
    return fixed.to_bytes(4, "big") + invocation.to_bytes(8, "big")


def invocation_from_ifv(ifv: bytes) -> int:
    """The initial invocation counter from KEY_PROG's IFV (natural order, MSB first; §6.3)."""
    if len(ifv) != 8:
        raise ValueError(f"IFV is 8 bytes, got {len(ifv)}")
    return int.from_bytes(ifv, "big")


AnyTlp = Tlp | IdeTlp


def decode_tlp(data: bytes) -> AnyTlp:
    """Decode a TLP as carried by the link: an IDE TLP when it starts with the IDE prefix, else a plain TLP."""
    if data[:1] == bytes([IDE_PREFIX_BYTE]):
        return IdeTlp.decode(data)
    return Tlp.decode(data)


def summarize(msg: AnyTlp | TlpHeader | IdePrefix) -> str:
    """Compact one-line description for the trace."""
    return msg.summary()
