"""Opaque data in SPDM session messages and the DSP0277 secured-message version elements.

KEY_EXCHANGE(_RSP) and PSK_EXCHANGE(_RSP) carry an opaque-data blob; DSP0277 uses it to negotiate
the secured-message version (PROTOCOLS.md §5.5). Two containers exist:

* SPDM 1.2+ (Opaque Data Format 1): TotalElements(1), Reserved(3), elements.
* SPDM 1.1 (the DSP0277 general header): SpecID(4) = 0x444D5446 ("FTMD" on the wire),
  OpaqueVersion(1) = 1, TotalElements(1), Reserved(2), elements.

Each element is ID(1), VendorLen(1), VendorID, OpaqueElementDataLen(2), data, zero padding so that
the whole element is a multiple of 4 bytes. A secured-message element has ID = DMTF and data
SMDataVersion(1) = 1, SMDataID(1), then the SMDataID-specific part.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any, ClassVar

from sim.wire.codec import (
    Array,
    Bytes,
    Const,
    DecodeError,
    LengthOf,
    Message,
    Reader,
    Reserved,
    nested,
    u8,
    u16,
)
from sim.wire.spdm.common import RegistryId, SpdmVersion

SPEC_ID_DMTF = 0x444D5446  # DSP0277 general opaque data header SpecID, bytes 46 54 4d 44
OPAQUE_VERSION = 1
SM_DATA_VERSION = 1
AEAD_LIMIT_EXPONENT_MAX = 64  # DSP0277 1.3: the sequence number limit is 2**exponent; default 64

_NAME = "OpaqueData"


class SmDataId(enum.IntEnum):
    """SMDataID of a DSP0277 secured-message opaque element."""

    VERSION_SELECTION = 0
    SUPPORTED_VERSION = 1
    AEAD_LIMIT = 2


def _element_padding(values: dict[str, Any], ctx: Any) -> int:
    # ID(1) + VendorLen(1) + VendorID + OpaqueElementDataLen(2) + data, padded to a 4-byte multiple
    return -(4 + int(values["vendor_len"]) + int(values["data_len"])) % 4


@dataclasses.dataclass(frozen=True)
class OpaqueElement(Message):
    """One opaque element; ``data`` excludes the alignment padding (which is ignored on decode)."""

    NAME = "OpaqueElement"
    LAYOUT = (
        u8("registry_id", RegistryId),
        LengthOf("vendor_len", 1, "vendor_id"),
        Bytes("vendor_id", "vendor_len"),
        LengthOf("data_len", 2, "data"),
        Bytes("data", "data_len"),
        Reserved(_element_padding, "padding"),
    )
    registry_id: RegistryId
    data: bytes
    vendor_id: bytes = b""


@dataclasses.dataclass(frozen=True)
class OpaqueDataFormat1(Message):
    """SPDM 1.2+ Opaque Data Format 1 container."""

    NAME = _NAME
    LAYOUT = (
        LengthOf("total_elements", 1, "elements"),
        Reserved(3),
        Array("elements", OpaqueElement, count="total_elements"),
    )
    elements: tuple[OpaqueElement, ...] = ()


@dataclasses.dataclass(frozen=True)
class OpaqueDataGeneral(Message):
    """DSP0277 general opaque data table, used with SPDM 1.1."""

    NAME = _NAME
    LAYOUT = (
        Const("spec_id", 4, SPEC_ID_DMTF),
        Const("opaque_version", 1, OPAQUE_VERSION),
        LengthOf("total_elements", 1, "elements"),
        Reserved(2),
        Array("elements", OpaqueElement, count="total_elements"),
    )
    elements: tuple[OpaqueElement, ...] = ()


OpaqueData = OpaqueDataFormat1 | OpaqueDataGeneral


# --------------------------------------------------------------------------------------------
# Secured-message element payloads (the ``data`` of a DMTF element)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SmVersionSelection(Message):
    """The responder's choice of secured-message version (KEY_EXCHANGE_RSP / PSK_EXCHANGE_RSP)."""

    NAME = "SmVersionSelection"
    SM_DATA_ID: ClassVar[SmDataId] = SmDataId.VERSION_SELECTION
    LAYOUT = (
        Const("sm_data_version", 1, SM_DATA_VERSION),
        Const("sm_data_id", 1, SmDataId.VERSION_SELECTION),
        u16("selected_version"),
    )
    selected_version: int


@dataclasses.dataclass(frozen=True)
class SmSupportedVersions(Message):
    """The requester's list of secured-message versions (KEY_EXCHANGE / PSK_EXCHANGE)."""

    NAME = "SmSupportedVersions"
    SM_DATA_ID: ClassVar[SmDataId] = SmDataId.SUPPORTED_VERSION
    LAYOUT = (
        Const("sm_data_version", 1, SM_DATA_VERSION),
        Const("sm_data_id", 1, SmDataId.SUPPORTED_VERSION),
        LengthOf("version_count", 1, "versions"),
        Array("versions", u16("version"), count="version_count"),
    )
    versions: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.versions:
            raise ValueError("SupportedVersion must list at least one version")


@dataclasses.dataclass(frozen=True)
class SmAeadLimit(Message):
    """DSP0277 1.3 AEAD limit: at most 2**exponent records per key (exponent <= 64)."""

    NAME = "SmAeadLimit"
    SM_DATA_ID: ClassVar[SmDataId] = SmDataId.AEAD_LIMIT
    LAYOUT = (
        Const("sm_data_version", 1, SM_DATA_VERSION),
        Const("sm_data_id", 1, SmDataId.AEAD_LIMIT),
        u8("exponent"),
    )
    exponent: int

    def __post_init__(self) -> None:
        if not 0 <= self.exponent <= AEAD_LIMIT_EXPONENT_MAX:
            raise ValueError(f"AEAD limit exponent {self.exponent} exceeds {AEAD_LIMIT_EXPONENT_MAX}")


SmElement = SmVersionSelection | SmSupportedVersions | SmAeadLimit
_SM_CLASSES: dict[int, type[SmVersionSelection] | type[SmSupportedVersions] | type[SmAeadLimit]] = {
    SmDataId.VERSION_SELECTION: SmVersionSelection,
    SmDataId.SUPPORTED_VERSION: SmSupportedVersions,
    SmDataId.AEAD_LIMIT: SmAeadLimit,
}


def sm_element(payload: SmElement) -> OpaqueElement:
    """Wrap a secured-message payload in a DMTF opaque element."""
    return OpaqueElement(registry_id=RegistryId.DMTF, data=payload.encode())


# --------------------------------------------------------------------------------------------
# Containers by SPDM version
# --------------------------------------------------------------------------------------------


def opaque_container(spdm_version: int) -> type[OpaqueDataFormat1] | type[OpaqueDataGeneral]:
    """Format 1 from SPDM 1.2 on, the DSP0277 general header before (§5.5)."""
    return OpaqueDataFormat1 if spdm_version >= SpdmVersion.V12 else OpaqueDataGeneral


def encode_opaque(elements: Sequence[OpaqueElement], spdm_version: int) -> bytes:
    return opaque_container(spdm_version)(elements=tuple(elements)).encode()


def decode_opaque(opaque: bytes, spdm_version: int) -> OpaqueData:
    """Decode an opaque-data blob in the container for ``spdm_version``; DecodeError on anything malformed."""
    return opaque_container(spdm_version).decode(opaque)


def _element_offsets(container: OpaqueData) -> list[int]:
    """Offset of each element's data within the blob, for error messages."""
    pos = 4 if isinstance(container, OpaqueDataFormat1) else 8
    out = []
    for el in container.elements:
        out.append(pos + 2 + len(el.vendor_id) + 2)
        pos += len(el.encode())
    return out


def decode_sm_element(data: bytes, base: int = 0, field: str = "data") -> SmElement | None:
    """Decode a secured-message payload; None for an SMDataID this code does not know (ignored, per DSP0277)."""
    r = Reader(data, _NAME, base)
    version = r.take(1, f"{field}.sm_data_version")[0]
    if version != SM_DATA_VERSION:
        raise r.fail(f"{field}.sm_data_version", f"expected {SM_DATA_VERSION}, got {version}", base)
    sm_id = r.take(1, f"{field}.sm_data_id")[0]
    cls = _SM_CLASSES.get(sm_id)
    if cls is None:
        return None
    try:
        return cls.decode_from(Reader(data, _NAME, base), None, whole=True)
    except DecodeError as exc:
        raise nested(exc, field) from None


def sm_elements(container: OpaqueData) -> list[tuple[int, SmElement]]:
    """(element index, payload) for every secured-message element (DMTF registry, no vendor ID)."""
    found: list[tuple[int, SmElement]] = []
    for i, (el, offset) in enumerate(zip(container.elements, _element_offsets(container), strict=True)):
        if el.registry_id != RegistryId.DMTF or el.vendor_id:
            continue
        payload = decode_sm_element(el.data, offset, f"elements[{i}].data")
        if payload is not None:
            found.append((i, payload))
    return found


# --------------------------------------------------------------------------------------------
# Typed helpers used by the session code
# --------------------------------------------------------------------------------------------


def supported_versions_opaque(versions: Sequence[int], spdm_version: int, *,
                              aead_limit_exponent: int | None = None) -> bytes:
    """Requester opaque data listing secured-message versions (u16 version numbers, e.g. 0x1100 for 1.1)."""
    elements = [sm_element(SmSupportedVersions(versions=tuple(versions)))]
    if aead_limit_exponent is not None:
        elements.append(sm_element(SmAeadLimit(exponent=aead_limit_exponent)))
    return encode_opaque(elements, spdm_version)


def version_selection_opaque(version: int, spdm_version: int, *, aead_limit_exponent: int | None = None) -> bytes:
    """Responder opaque data selecting one secured-message version."""
    elements = [sm_element(SmVersionSelection(selected_version=version))]
    if aead_limit_exponent is not None:
        elements.append(sm_element(SmAeadLimit(exponent=aead_limit_exponent)))
    return encode_opaque(elements, spdm_version)


@dataclasses.dataclass(frozen=True)
class SecuredMessageVersions:
    """What an opaque blob says about DSP0277 versions; None where the element is absent."""

    supported: tuple[int, ...] | None = None
    selected: int | None = None
    aead_limit_exponent: int | None = None


def parse_secured_message_versions(opaque: bytes, spdm_version: int) -> SecuredMessageVersions:
    """Read the secured-message elements of an opaque blob.

    An empty blob carries no elements. Elements of other registries, vendor elements and unknown
    SMDataIDs are skipped; a second element with the same SMDataID is a DecodeError.
    """
    if not opaque:
        return SecuredMessageVersions()
    container = decode_opaque(opaque, spdm_version)
    result: dict[str, Any] = {}
    seen: set[int] = set()
    for i, payload in sm_elements(container):
        if payload.SM_DATA_ID in seen:
            raise DecodeError(_NAME, f"elements[{i}].data.sm_data_id", _element_offsets(container)[i] + 1,
                              f"duplicate {payload.SM_DATA_ID.name} element")
        seen.add(payload.SM_DATA_ID)
        if isinstance(payload, SmSupportedVersions):
            result["supported"] = payload.versions
        elif isinstance(payload, SmVersionSelection):
            result["selected"] = payload.selected_version
        else:
            result["aead_limit_exponent"] = payload.exponent
    return SecuredMessageVersions(**result)
