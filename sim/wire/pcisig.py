"""The PCI-SIG payload of SPDM VENDOR_DEFINED_REQUEST/RESPONSE (PROTOCOLS.md §6.1).

The SPDM envelope (StandardID 0x0003 = PCI-SIG, VendorID 0x0001, ReqLength) belongs to
``sim.wire.spdm.vendor``; what travels in its payload is one Protocol ID byte followed by an
IDE_KM object or a TDISP message. This module adds and strips that byte and dispatches.
"""

from __future__ import annotations

import enum

from sim.wire.codec import DecodeError, EncodeError
from sim.wire.ide_km import IdeKmMessage, decode_ide_km
from sim.wire.tdisp import TdispMessage, decode_tdisp

STANDARD_ID_PCISIG = 3  # SPDM RegistryId.PCISIG
PCISIG_VENDOR_ID = b"\x01\x00"  # 0x0001 little-endian, VendorIDLen = 2


class ProtocolId(enum.IntEnum):
    IDE_KM = 0x00
    TDISP = 0x01


PcisigMessage = IdeKmMessage | TdispMessage


def is_pcisig_envelope(standard_id: int, vendor_id: bytes) -> bool:
    """Whether a VENDOR_DEFINED message carries a PCI-SIG protocol payload."""
    return int(standard_id) == STANDARD_ID_PCISIG and bytes(vendor_id) == PCISIG_VENDOR_ID


def protocol_of(msg: PcisigMessage) -> ProtocolId:
    if isinstance(msg, IdeKmMessage):
        return ProtocolId.IDE_KM
    if isinstance(msg, TdispMessage):
        return ProtocolId.TDISP
    raise EncodeError(f"{type(msg).__name__} is neither an IDE_KM nor a TDISP message")


def encode_pcisig_payload(msg: PcisigMessage) -> bytes:
    """Protocol ID byte ‖ the message: the VENDOR_DEFINED payload (ReqLength counts the Protocol ID)."""
    return bytes([protocol_of(msg)]) + msg.encode()


encode = encode_pcisig_payload


def decode_pcisig_payload(payload: bytes) -> PcisigMessage:
    """Decode a VENDOR_DEFINED payload; errors carry offsets within the payload (Protocol ID at 0)."""
    if not payload:
        raise DecodeError("PCISIG", "protocol_id", 0, "empty PCI-SIG vendor-defined payload")
    try:
        protocol = ProtocolId(payload[0])
    except ValueError:
        raise DecodeError("PCISIG", "protocol_id", 0, f"unknown PCI-SIG protocol id 0x{payload[0]:02x}") from None
    body = payload[1:]
    try:
        if protocol is ProtocolId.IDE_KM:
            return decode_ide_km(body)
        return decode_tdisp(body)
    except DecodeError as exc:
        raise DecodeError(exc.message, exc.field, exc.offset + 1, exc.reason) from None


def summarize(msg: PcisigMessage) -> str:
    """Compact one-line description, prefixed with the protocol for IDE_KM (TDISP summaries name it already)."""
    text = msg.summary()
    return f"IDE_KM {text}" if isinstance(msg, IdeKmMessage) else text
