"""GET_CAPABILITIES and CAPABILITIES (PROTOCOLS.md §2.5).

Which fields exist follows the message's own version byte:

| version | GET_CAPABILITIES | CAPABILITIES |
|---|---|---|
| 1.0 | 4 bytes (header only) | 12 bytes (CTExponent, Flags) |
| 1.1 | 12 bytes (CTExponent, Flags) | 12 bytes |
| 1.2 / 1.3 | 20 bytes (+ DataTransferSize, MaxSPDMmsgSize) | 20 bytes |

In 1.3 Param1 bit 0 of the request asks for the supported-algorithms block, and the same bit in
the response says the block follows the 20 bytes. Absent fields are None on the object.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import ClassVar

from sim.wire.codec import Const, Reserved, Spec, Struct, u8, u32
from sim.wire.spdm.algorithms import SupportedAlgorithms
from sim.wire.spdm.common import (
    CapabilityFlags,
    RequestCode,
    ResponseCode,
    SpdmMessage,
    gate_field,
    introduced,
    since,
)

MIN_DATA_TRANSFER_SIZE = 42  # smallest DataTransferSize a 1.2+ endpoint may declare (§2.5)


class CapabilitiesAttributes(enum.IntFlag):
    """Param1 of GET_CAPABILITIES / CAPABILITIES in 1.3 (reserved before)."""

    SUPPORTED_ALGORITHMS = 0x01


def _header(code: int) -> tuple[Spec, ...]:
    """SPDM header whose Param1 is CapabilitiesAttributes from 1.3 on (reserved before); Param2 reserved."""
    return (
        u8("version"),
        Const("code", 1, code),
        *introduced(0x13, u8("attributes", CapabilitiesAttributes)),
        Reserved(1, "param2"),
    )


def _gate_common(msg: GetCapabilities | Capabilities, ct_from: int) -> None:
    gate_field(msg, "attributes", msg.version >= 0x13, CapabilitiesAttributes(0))
    gate_field(msg, "ct_exponent", msg.version >= ct_from, 0)
    gate_field(msg, "flags", msg.version >= ct_from, CapabilityFlags(0))
    gate_field(msg, "data_transfer_size", msg.version >= 0x12)
    gate_field(msg, "max_spdm_msg_size", msg.version >= 0x12)


def _fmt(msg: GetCapabilities | Capabilities) -> str:
    parts = [msg.code_name]
    if msg.ct_exponent is not None:
        parts.append(f"ct_exp={msg.ct_exponent}")
    if msg.flags is not None:
        parts.append(f"flags=0x{int(msg.flags):08x}")
    if msg.data_transfer_size is not None:
        parts.append(f"dts={msg.data_transfer_size} max_msg={msg.max_spdm_msg_size}")
    if msg.attributes and msg.attributes & CapabilitiesAttributes.SUPPORTED_ALGORITHMS:
        parts.append("+supported_algorithms")
    return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class GetCapabilities(SpdmMessage):
    """GET_CAPABILITIES (0xE1): the requester's CT exponent, flags and (1.2+) transfer sizes."""

    CODE: ClassVar[int] = RequestCode.GET_CAPABILITIES
    NAME: ClassVar[str] = "GET_CAPABILITIES"
    LAYOUT = _header(CODE) + (
        Reserved(1, when=since(0x11)),
        u8("ct_exponent", when=since(0x11)),
        Reserved(2, "ext_flags", when=since(0x11)),
        u32("flags", CapabilityFlags, when=since(0x11)),
        u32("data_transfer_size", when=since(0x12)),
        u32("max_spdm_msg_size", when=since(0x12)),
    )

    version: int
    ct_exponent: int | None = None
    flags: CapabilityFlags | None = None
    data_transfer_size: int | None = None
    max_spdm_msg_size: int | None = None
    attributes: CapabilitiesAttributes | None = None

    def __post_init__(self) -> None:
        _gate_common(self, 0x11)

    @property
    def ct_us(self) -> int | None:
        """CT = 2^CTExponent microseconds: the time allowed for a cryptographic response (§2.3)."""
        return None if self.ct_exponent is None else 1 << self.ct_exponent

    def summary(self) -> str:
        return _fmt(self)


@dataclasses.dataclass(frozen=True)
class Capabilities(SpdmMessage):
    """CAPABILITIES (0x61): the responder's CT exponent, flags and (1.2+) transfer sizes.

    ``supported_algorithms`` (1.3) is present exactly when ``attributes`` has SUPPORTED_ALGORITHMS.
    """

    CODE: ClassVar[int] = ResponseCode.CAPABILITIES
    NAME: ClassVar[str] = "CAPABILITIES"
    LAYOUT = _header(CODE) + (
        Reserved(1),
        u8("ct_exponent"),
        Reserved(2, "ext_flags"),
        u32("flags", CapabilityFlags),
        u32("data_transfer_size", when=since(0x12)),
        u32("max_spdm_msg_size", when=since(0x12)),
        Struct("supported_algorithms", SupportedAlgorithms,
               when=lambda v, c: v["version"] >= 0x13 and bool(v["attributes"] & CapabilitiesAttributes.SUPPORTED_ALGORITHMS)),
    )

    version: int
    ct_exponent: int = 0
    flags: CapabilityFlags = CapabilityFlags(0)
    data_transfer_size: int | None = None
    max_spdm_msg_size: int | None = None
    attributes: CapabilitiesAttributes | None = None
    supported_algorithms: SupportedAlgorithms | None = None

    def __post_init__(self) -> None:
        if self.attributes is None and self.version >= 0x13 and self.supported_algorithms is not None:
            object.__setattr__(self, "attributes", CapabilitiesAttributes.SUPPORTED_ALGORITHMS)
        _gate_common(self, 0x10)
        gate_field(self, "supported_algorithms",
                   bool(self.attributes and self.attributes & CapabilitiesAttributes.SUPPORTED_ALGORITHMS))

    @property
    def ct_us(self) -> int | None:
        """CT = 2^CTExponent microseconds: the time allowed for a cryptographic response (§2.3)."""
        return None if self.ct_exponent is None else 1 << self.ct_exponent

    def summary(self) -> str:
        return _fmt(self)
