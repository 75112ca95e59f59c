"""GET_VERSION, VERSION and RESPOND_IF_READY (PROTOCOLS.md §2.3, §2.4).

GET_VERSION and VERSION always travel with SPDMVersion 0x10 (§9 item 10); the version byte is
still decoded as a field so that a responder can answer a wrong one with VersionMismatch.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from sim.wire.codec import Array, Bits, LengthOf, Message, Reserved, u8
from sim.wire.spdm.common import RequestCode, ResponseCode, SpdmMessage, SpdmVersion, header


@dataclasses.dataclass(frozen=True, order=True)
class VersionNumber(Message):
    """A 16-bit version entry (§2.1): [15:12] major, [11:8] minor, [7:4] update, [3:0] alpha.

    Ordered by (major, minor, update, alpha), so ``max()`` over common entries picks the newest.
    """

    LAYOUT = (Bits("value", 2, [("major", 12, 4, None), ("minor", 8, 4, None),
                                ("update", 4, 4, None), ("alpha", 0, 4, None)]),)

    major: int
    minor: int
    update: int = 0
    alpha: int = 0

    @classmethod
    def from_spdm(cls, version: int) -> VersionNumber:
        """The entry for a header version byte (0x12 → 1.2.0.0)."""
        return cls(major=(version >> 4) & 0xF, minor=version & 0xF)

    @classmethod
    def from_int(cls, value: int) -> VersionNumber:
        """The entry for a raw u16 value (0x1200 → 1.2)."""
        return cls(major=(value >> 12) & 0xF, minor=(value >> 8) & 0xF, update=(value >> 4) & 0xF, alpha=value & 0xF)

    @property
    def value(self) -> int:
        """The raw u16 (little-endian on the wire: 1.2 is the bytes ``00 12``)."""
        return (self.major << 12) | (self.minor << 8) | (self.update << 4) | self.alpha

    @property
    def spdm_version(self) -> int:
        """The header version byte this entry stands for (update and alpha do not appear there)."""
        return (self.major << 4) | self.minor

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}"
        if self.update or self.alpha:
            text += f".{self.update}" + (f".{self.alpha}" if self.alpha else "")
        return text


@dataclasses.dataclass(frozen=True)
class GetVersion(SpdmMessage):
    """GET_VERSION (0x84): the 4-byte header only; it resets the connection state and transcript A."""

    CODE: ClassVar[int] = RequestCode.GET_VERSION
    NAME: ClassVar[str] = "GET_VERSION"
    LAYOUT = header(CODE, Reserved(1, "param1"), Reserved(1, "param2"))

    version: int = SpdmVersion.V10


@dataclasses.dataclass(frozen=True)
class Version(SpdmMessage):
    """VERSION (0x04): the versions the responder supports (§2.4)."""

    CODE: ClassVar[int] = ResponseCode.VERSION
    NAME: ClassVar[str] = "VERSION"
    LAYOUT = header(CODE, Reserved(1, "param1"), Reserved(1, "param2")) + (
        Reserved(1),
        LengthOf("entry_count", 1, "entries"),
        Array("entries", VersionNumber, count="entry_count"),
    )

    version: int = SpdmVersion.V10
    entries: tuple[VersionNumber, ...] = ()

    @classmethod
    def for_versions(cls, *versions: int) -> Version:
        """A VERSION listing header version bytes, e.g. ``Version.for_versions(0x10, 0x11, 0x12)``."""
        return cls(entries=tuple(VersionNumber.from_spdm(v) for v in versions))

    @property
    def spdm_versions(self) -> tuple[int, ...]:
        """The listed versions as header version bytes (0x10, 0x11, ...), in wire order."""
        return tuple(e.spdm_version for e in self.entries)

    def summary(self) -> str:
        return f"VERSION {' '.join(str(e) for e in self.entries) or '(none)'}"


@dataclasses.dataclass(frozen=True)
class RespondIfReady(SpdmMessage):
    """RESPOND_IF_READY (0xFF): retrieve the response promised by ERROR ResponseNotReady (§2.3).

    Param1 is the original request code, Param2 the Token from the ResponseNotReady data.
    """

    CODE: ClassVar[int] = RequestCode.RESPOND_IF_READY
    NAME: ClassVar[str] = "RESPOND_IF_READY"
    LAYOUT = header(CODE, u8("request_code", RequestCode), u8("token"))

    version: int
    request_code: RequestCode
    token: int

    def summary(self) -> str:
        return f"RESPOND_IF_READY request={self.request_code.name} token={self.token}"
