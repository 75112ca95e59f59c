"""VENDOR_DEFINED_REQUEST / VENDOR_DEFINED_RESPONSE, SPDM 1.0-1.3 layout (PROTOCOLS.md §2.12).

StandardID (registry, PCI-SIG = 3), Len, VendorID (Len bytes; PCI-SIG: ``01 00``), ReqLength /
RespLength (u16), payload. IDE_KM and TDISP travel as the payload (see ``sim.wire.pcisig``).
SPDM 1.4's "large" form (Param1 bit 7, 4-byte length) is not this layout; this module does not
negotiate 1.4 and decodes Param1/Param2 as reserved.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from sim.wire.codec import Bytes, LengthOf, Reserved, u16
from sim.wire.spdm.common import RegistryId, RequestCode, ResponseCode, SpdmMessage, header

_BODY = (
    u16("standard_id", RegistryId),
    LengthOf("vendor_id_len", 1, "vendor_id"),
    Bytes("vendor_id", "vendor_id_len"),
    LengthOf("payload_length", 2, "payload"),
    Bytes("payload", "payload_length"),
)


def _summary(name: str, standard_id: RegistryId, vendor_id: bytes, payload: bytes) -> str:
    return f"{name} std={RegistryId(standard_id).name} vendor={vendor_id.hex() or '-'} len={len(payload)}"


@dataclasses.dataclass(frozen=True)
class _VendorDefined(SpdmMessage):
    """The 1.0-1.3 VENDOR_DEFINED layout, shared by the request and the response."""

    version: int
    standard_id: RegistryId
    vendor_id: bytes
    payload: bytes

    def summary(self) -> str:
        return _summary(self.NAME, self.standard_id, self.vendor_id, self.payload)


@dataclasses.dataclass(frozen=True)
class VendorDefinedRequest(_VendorDefined):
    """VENDOR_DEFINED_REQUEST (0xFE)."""

    CODE: ClassVar[int] = RequestCode.VENDOR_DEFINED_REQUEST
    NAME: ClassVar[str] = "VENDOR_DEFINED_REQUEST"
    LAYOUT = header(CODE, Reserved(1, "param1"), Reserved(1, "param2")) + _BODY


@dataclasses.dataclass(frozen=True)
class VendorDefinedResponse(_VendorDefined):
    """VENDOR_DEFINED_RESPONSE (0x7E)."""

    CODE: ClassVar[int] = ResponseCode.VENDOR_DEFINED_RESPONSE
    NAME: ClassVar[str] = "VENDOR_DEFINED_RESPONSE"
    LAYOUT = header(CODE, Reserved(1, "param1"), Reserved(1, "param2")) + _BODY
