"""Decode any byte string this simulator puts on a wire into a tree of layers, for people.

Used by ``tiosim decode`` and by the trace's one-line summaries: DOE object → SPDM message →
PCI-SIG vendor payload → IDE_KM or TDISP. Secured records are shown as ciphertext (no keys here).
"""

from __future__ import annotations

import dataclasses
import re

import sim.wire.spdm  # noqa: F401  (importing the package registers every SPDM message)
from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo, DheGroup
from sim.wire.codec import DecodeError, Message, format_value
from sim.wire.doe import (
    HEADER_BYTES,
    PCI_SIG_VENDOR_ID,
    DoeDiscoveryRequest,
    DoeDiscoveryResponse,
    DoeObject,
    DoeObjectType,
    doe_length_dw,
)
from sim.wire.ide_km import decode_ide_km
from sim.wire.pcisig import decode_pcisig_payload, is_pcisig_envelope
from sim.wire.secured import SecuredRecord
from sim.wire.spdm.common import SpdmContext, SpdmMessage, SpdmVersion, decode_spdm
from sim.wire.tdisp import decode_tdisp
from sim.wire.tlp import decode_tlp

KINDS = ("auto", "doe", "spdm", "secured", "ide_km", "tdisp", "tlp", "discovery-request", "discovery-response")

_HASHES = {"sha256": BaseHashAlgo.SHA_256, "sha384": BaseHashAlgo.SHA_384, "sha512": BaseHashAlgo.SHA_512}
_ASYMS = {
    "p256": (BaseAsymAlgo.ECDSA_P256, DheGroup.SECP_256_R1),
    "p384": (BaseAsymAlgo.ECDSA_P384, DheGroup.SECP_384_R1),
    "rsa2048": (BaseAsymAlgo.RSAPSS_2048, DheGroup.SECP_384_R1),
    "rsa3072": (BaseAsymAlgo.RSAPSS_3072, DheGroup.SECP_384_R1),
}


@dataclasses.dataclass
class Layer:
    """One decoded protocol layer: a title, its fields (name, rendered value) and nested layers."""

    title: str
    fields: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    children: list[Layer] = dataclasses.field(default_factory=list)

    def lines(self, indent: int = 0) -> list[str]:
        pad = "  " * indent
        out = [pad + self.title]
        out += [f"{pad}  {name} = {value}" for name, value in self.fields]
        for child in self.children:
            out += child.lines(indent + 1)
        return out


def parse_hex(text: str) -> bytes:
    """Hex with optional spaces, colons, commas or 0x prefixes; ValueError says what is wrong."""
    cleaned = re.sub(r"0x|[\s:,_-]", "", text, flags=re.IGNORECASE)
    bad = re.search(r"[^0-9a-fA-F]", cleaned)
    if bad:
        raise ValueError(f"not hex: character {bad.group()!r} at position {bad.start()} of the digits")
    if len(cleaned) % 2:
        raise ValueError(f"odd number of hex digits ({len(cleaned)})")
    if not cleaned:
        raise ValueError("no bytes given")
    return bytes.fromhex(cleaned)


def context_for(hash_name: str = "sha384", asym_name: str = "p384") -> SpdmContext:
    """An SPDM decoding context for the named negotiated algorithms."""
    try:
        hash_algo = _HASHES[hash_name]
        asym, dhe = _ASYMS[asym_name]
    except KeyError as exc:
        raise ValueError(f"unknown algorithm name {exc.args[0]!r}") from None
    return SpdmContext.for_algorithms(hash_algo, asym, dhe, asym)


def _fields(msg: Message) -> list[tuple[str, str]]:
    return [(name, format_value(value)) for name, value in msg.describe()]


def _title(msg: Message) -> str:
    summary = getattr(msg, "summary", None)
    return summary() if callable(summary) else type(msg).__name__


def _spdm_layer(data: bytes, ctx: SpdmContext, *, padded: bool) -> Layer:
    msg = decode_spdm(data, ctx, allow_trailing=padded)
    version = SpdmVersion(msg.version).dotted if msg.version in SpdmVersion._value2member_map_ else f"0x{msg.version:02x}"
    layer = Layer(f"SPDM {version} {_title(msg)}", _fields(msg))
    layer.children += _vendor_children(msg)
    return layer


def _vendor_children(msg: SpdmMessage) -> list[Layer]:
    standard_id = getattr(msg, "standard_id", None)
    vendor_id = getattr(msg, "vendor_id", None)
    payload = getattr(msg, "payload", None)
    if standard_id is None or vendor_id is None or payload is None or not is_pcisig_envelope(standard_id, vendor_id):
        return []
    try:
        inner = decode_pcisig_payload(payload)
    except DecodeError as exc:
        return [Layer(f"PCI-SIG payload does not decode: {exc}")]
    return [Layer(_title(inner), _fields(inner))]


def _discovery_layers(payload: bytes) -> list[Layer]:
    """A discovery payload reads both ways (request and response are one DW each): show what fits."""
    layers: list[Layer] = []
    plausible = {
        DoeDiscoveryRequest: payload[1:2] in (b"\x00", b"\x02") and payload[2:4] == b"\x00\x00",
        DoeDiscoveryResponse: payload[:2] not in (b"", b"\x00\x00", b"\x00"),
    }
    for cls, fits in plausible.items():
        if not fits:
            continue
        try:
            msg = cls.decode(payload[:4])
        except DecodeError:
            continue
        layers.append(Layer(f"as {'request' if cls is DoeDiscoveryRequest else 'response'}: {_title(msg)}",
                            _fields(msg)))
    if not layers:
        raise DecodeError("DoeDiscovery", "payload", HEADER_BYTES, "neither a discovery request nor a response")
    return layers


def _doe_layer(data: bytes, ctx: SpdmContext) -> Layer:
    obj = DoeObject.decode(data)
    layer = Layer(_title(obj), _fields(obj))
    kind = obj.object_type
    try:
        if kind is DoeObjectType.DISCOVERY:
            layer.children += _discovery_layers(obj.payload)
        elif kind is DoeObjectType.SPDM:
            layer.children.append(_spdm_layer(obj.payload, ctx, padded=True))
        elif kind is DoeObjectType.SECURED_SPDM:
            rec = SecuredRecord.decode(obj.payload)
            layer.children.append(Layer(_title(rec) + " (encrypted)", _fields(rec)))
    except DecodeError as exc:
        raise DecodeError(exc.message, exc.field, exc.offset + HEADER_BYTES, exc.reason) from None
    return layer


def _looks_like_doe(data: bytes) -> bool:
    if len(data) < HEADER_BYTES or int.from_bytes(data[:2], "little") != PCI_SIG_VENDOR_ID or data[3] != 0:
        return False
    try:
        return doe_length_dw(data) * 4 == len(data)
    except DecodeError:
        return False


def dissect(data: bytes, kind: str = "auto", *, hash_name: str = "sha384", asym_name: str = "p384") -> Layer:
    """Decode ``data`` as ``kind`` (or guess it); DecodeError names the field and byte offset."""
    ctx = context_for(hash_name, asym_name)
    if kind == "auto":
        if _looks_like_doe(data):
            kind = "doe"
        elif data and data[0] in SpdmVersion._value2member_map_:
            kind = "spdm"
        else:
            raise DecodeError("input", "(first bytes)", 0,
                              "neither a DOE object (vendor 0x0001, length matching) nor an SPDM message "
                              "(version byte 0x10-0x14); say what it is with --as")
    if kind == "doe":
        return _doe_layer(data, ctx)
    if kind == "spdm":
        return _spdm_layer(data, ctx, padded=False)
    if kind == "secured":
        rec = SecuredRecord.decode(data)
        return Layer(_title(rec) + " (encrypted)", _fields(rec))
    if kind == "ide_km":
        msg: Message = decode_ide_km(data)
        return Layer("IDE_KM " + _title(msg), _fields(msg))
    if kind == "tdisp":
        msg = decode_tdisp(data)
        return Layer(_title(msg), _fields(msg))
    if kind == "tlp":  # as trace.jsonl records link traffic: a plain TLP, or an IDE TLP (prefix 0x92)
        tlp = decode_tlp(data)
        return Layer(_title(tlp), _fields(tlp))
    if kind == "discovery-request":
        req = DoeDiscoveryRequest.decode(data)
        return Layer(_title(req), _fields(req))
    if kind == "discovery-response":
        rsp = DoeDiscoveryResponse.decode(data)
        return Layer(_title(rsp), _fields(rsp))
    raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
