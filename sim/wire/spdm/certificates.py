"""GET_DIGESTS, DIGESTS, GET_CERTIFICATE, CERTIFICATE and the SPDM certificate chain (PROTOCOLS.md §2.7).

DIGESTS carries one digest of H bytes per set bit of its slot mask (Param2; "ProvisionedSlotMask"
in 1.3, where Param1 becomes SupportedSlotMask). With 1.3 MultiKeyConn three per-slot arrays
(KeyPairID, CertificateInfo, KeyUsageMask) follow the digests; the message does not say whether
they are there, so the decoder takes them when exactly their 4 bytes per slot remain (1.3 only).

:class:`CertChain` is the object that slots hold, DIGESTS hashes and CERTIFICATE transfers in
portions. :func:`split_der_certificates` cuts its DER part into certificates by ASN.1 lengths only.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from sim.crypto.errors import CertificateFormatError
from sim.crypto.identity import split_der_certificates as crypto_split_der
from sim.wire.codec import (
    Bits,
    Bytes,
    Const,
    DecodeError,
    EncodeError,
    LengthOf,
    Message,
    Reader,
    Reserved,
    Spec,
    u8,
    u16,
)
from sim.wire.spdm.common import (
    LengthPrefixed,
    RequestCode,
    ResponseCode,
    SpdmMessage,
    TotalLength,
    gate_field,
    header,
    introduced,
)

MAX_SLOTS = 8


class CertModel(enum.IntEnum):
    """CertificateInfo bits 2:0 (1.3): what the slot's certificate chain certifies."""

    NONE = 0
    DEVICE_CERT = 1
    ALIAS_CERT = 2
    GENERIC_CERT = 3


class KeyUsage(enum.IntFlag):
    """KeyUsageMask (1.3 MultiKeyConn): what the slot's key may be used for."""

    KEY_EX_USE = 0x0001
    CHALLENGE_USE = 0x0002
    MEASUREMENT_USE = 0x0004
    ENDPOINT_INFO_USE = 0x0008
    STANDARDS_KEY_USE = 0x4000
    VENDOR_KEY_USE = 0x8000


class GetCertificateAttributes(enum.IntFlag):
    """GET_CERTIFICATE Param2 (1.3): SlotSizeRequested asks only for the slot's chain size."""

    SLOT_SIZE_REQUESTED = 0x01


def slots_of(mask: int) -> tuple[int, ...]:
    """Slot numbers of the set bits of a slot mask, ascending (the order digests travel in)."""
    return tuple(i for i in range(MAX_SLOTS) if mask >> i & 1)


# --------------------------------------------------------------------------------------------
# The SPDM certificate chain and DER splitting
# --------------------------------------------------------------------------------------------


def split_der_certificates(der: bytes, *, what: str = "CertChain") -> tuple[bytes, ...]:
    """Cut concatenated DER certificates apart by their outer SEQUENCE lengths (no X.509 parse).

    The crypto layer's splitter, with its error turned into a DecodeError naming ``der_chain[i]``
    and the offset.
    """
    try:
        return tuple(crypto_split_der(der))
    except CertificateFormatError as exc:
        raise DecodeError(what, f"der_chain[{exc.index}]", exc.offset or 0, str(exc)) from None


def _der_size(values: dict[str, Any], ctx: Any) -> int:
    if "der_chain" in values:  # encoding: the attribute is there
        return len(values["der_chain"])
    return int(values["length"]) - 4 - int(ctx.hash_size)


@dataclasses.dataclass(frozen=True)
class CertChain(LengthPrefixed, Message):
    """SPDM certificate chain: Length(2, total incl. header and RootHash), Reserved(2), RootHash(H), DER.

    RootHash is Hash(DER of the root certificate); the wire layer does not compute it.
    """

    LENGTH_OFFSET: ClassVar[int] = 0
    LAYOUT = (TotalLength(), Reserved(2), Bytes("root_hash", "hash_size"), Bytes("der_chain", _der_size))

    root_hash: bytes
    der_chain: bytes

    @property
    def certificates(self) -> tuple[bytes, ...]:
        """The DER certificates, root (or first) first, leaf last."""
        return split_der_certificates(self.der_chain)

    @property
    def root_certificate(self) -> bytes:
        return self.certificates[0]

    @property
    def leaf_certificate(self) -> bytes:
        return self.certificates[-1]


# --------------------------------------------------------------------------------------------
# GET_DIGESTS / DIGESTS
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GetDigests(SpdmMessage):
    """GET_DIGESTS (0x81): header only."""

    CODE: ClassVar[int] = RequestCode.GET_DIGESTS
    NAME: ClassVar[str] = "GET_DIGESTS"
    LAYOUT = header(CODE, Reserved(1, "param1"), Reserved(1, "param2"))

    version: int


@dataclasses.dataclass(frozen=True)
class SlotKeyInfo:
    """One slot's 1.3 MultiKeyConn entries in DIGESTS."""

    key_pair_id: int
    cert_model: CertModel
    key_usage: KeyUsage


class _SlotDigests(Spec):
    """One digest of H bytes per set bit of ``slot_mask``."""

    def __init__(self) -> None:
        self.name, self.when = "digests", None

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        for d in values["digests"]:
            if len(d) != ctx.hash_size:
                raise EncodeError(f"a digest is {len(d)} bytes, H is {ctx.hash_size}")
            out += d

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        n = len(slots_of(values["slot_mask"]))
        values["digests"] = tuple(r.take(ctx.hash_size, f"digests[{i}]") for i in range(n))


class _MultiKeyInfo(Spec):
    """1.3 KeyPairID[n] ‖ CertificateInfo[n] ‖ KeyUsageMask[n] (u16), present when 4n bytes remain."""

    def __init__(self) -> None:
        self.name = "key_info"
        # on encode an absent (None) value skips the spec; on decode the spec itself decides
        self.when = lambda v, c: v["version"] >= 0x13 and v.get("key_info", ()) is not None

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        info = values["key_info"]
        out += bytes(int(k.key_pair_id) for k in info)
        out += bytes(int(k.cert_model) for k in info)
        for k in info:
            out += int(k.key_usage).to_bytes(2, "little")

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        n = len(values["digests"])
        if n == 0 or r.remaining < 4 * n:
            values["key_info"] = None
            return
        ids = r.take(n, "key_pair_id")
        start = r.offset()
        infos = r.take(n, "certificate_info")
        models = []
        for i, b in enumerate(infos):
            try:
                models.append(CertModel(b & 0x7))
            except ValueError:
                raise r.fail(f"certificate_info[{i}]", f"CertModel {b & 0x7} is reserved", start + i) from None
        usage = r.take(2 * n, "key_usage_mask")
        values["key_info"] = tuple(
            SlotKeyInfo(ids[i], models[i], KeyUsage(int.from_bytes(usage[2 * i:2 * i + 2], "little")))
            for i in range(n)
        )


@dataclasses.dataclass(frozen=True)
class Digests(SpdmMessage):
    """DIGESTS (0x01): Hash(SPDM cert chain) of each provisioned slot, ascending slot order."""

    CODE: ClassVar[int] = ResponseCode.DIGESTS
    NAME: ClassVar[str] = "DIGESTS"
    LAYOUT = (
        u8("version"),
        Const("code", 1, CODE),
        *introduced(0x13, u8("supported_slot_mask")),
        u8("slot_mask"),
        _SlotDigests(),
        _MultiKeyInfo(),
    )

    version: int
    slot_mask: int
    digests: tuple[bytes, ...]
    supported_slot_mask: int | None = None
    key_info: tuple[SlotKeyInfo, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "digests", tuple(bytes(d) for d in self.digests))
        if self.key_info is not None:
            object.__setattr__(self, "key_info", tuple(self.key_info))
        n = len(slots_of(self.slot_mask))
        if len(self.digests) != n:
            raise ValueError(f"slot mask 0x{self.slot_mask:02x} needs {n} digests, got {len(self.digests)}")
        gate_field(self, "supported_slot_mask", self.version >= 0x13, self.slot_mask)
        if self.key_info is not None and (self.version < 0x13 or len(self.key_info) != n or n == 0):
            raise ValueError("MultiKeyConn key info needs SPDM 1.3 and one entry per digest")

    def by_slot(self) -> dict[int, bytes]:
        """Digest per slot number."""
        return dict(zip(slots_of(self.slot_mask), self.digests, strict=True))

    def summary(self) -> str:
        return f"DIGESTS slots={','.join(map(str, slots_of(self.slot_mask))) or 'none'}"


# --------------------------------------------------------------------------------------------
# GET_CERTIFICATE / CERTIFICATE
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GetCertificate(SpdmMessage):
    """GET_CERTIFICATE (0x82): a portion (Offset, Length) of one slot's chain; 8 bytes."""

    CODE: ClassVar[int] = RequestCode.GET_CERTIFICATE
    NAME: ClassVar[str] = "GET_CERTIFICATE"
    LAYOUT = (
        u8("version"),
        Const("code", 1, CODE),
        Bits("param1", 1, [("slot_id", 0, 4, None)]),
        *introduced(0x13, u8("attributes", GetCertificateAttributes)),
        u16("offset"),
        u16("length"),
    )

    version: int
    slot_id: int
    offset: int
    length: int
    attributes: GetCertificateAttributes | None = None

    def __post_init__(self) -> None:
        gate_field(self, "attributes", self.version >= 0x13, GetCertificateAttributes(0))

    def summary(self) -> str:
        extra = " slot_size_requested" if self.attributes else ""
        return f"GET_CERTIFICATE slot={self.slot_id} offset={self.offset} length={self.length}{extra}"


@dataclasses.dataclass(frozen=True)
class Certificate(SpdmMessage):
    """CERTIFICATE (0x02): PortionLength bytes of the chain and how many remain after them."""

    CODE: ClassVar[int] = ResponseCode.CERTIFICATE
    NAME: ClassVar[str] = "CERTIFICATE"
    LAYOUT = (
        u8("version"),
        Const("code", 1, CODE),
        Bits("param1", 1, [("slot_id", 0, 4, None)]),
        *introduced(0x13, Bits("param2", 1, [("cert_model", 0, 3, CertModel)])),
        LengthOf("portion_length", 2, "cert_chain"),
        u16("remainder_length"),
        Bytes("cert_chain", "portion_length"),
    )

    version: int
    slot_id: int
    remainder_length: int
    cert_chain: bytes
    cert_model: CertModel | None = None

    def __post_init__(self) -> None:
        gate_field(self, "cert_model", self.version >= 0x13, CertModel.NONE)

    def summary(self) -> str:
        return (f"CERTIFICATE slot={self.slot_id} portion={len(self.cert_chain)} "
                f"remainder={self.remainder_length}")
