"""TDISP 1.0 messages (PROTOCOLS.md §6.4): TDI lifecycle requests and responses inside SPDM VENDOR_DEFINED.

Offsets start after the PCI-SIG Protocol ID byte. Every message begins with the 16-byte TDISP
header: version, message type, 2 reserved bytes and the 12-byte INTERFACE_ID. The header's
version is kept as a plain int (not an enum) because a responder must be able to read a message
with a version it does not speak in order to answer VERSION_MISMATCH.

The device interface report (:class:`TdiReport`) is its own structure: it travels split into
portions across several DEVICE_INTERFACE_REPORT responses, and is decoded once reassembled.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from sim.wire.codec import (
    Array,
    Bytes,
    Const,
    DecodeError,
    EncodeError,
    LengthOf,
    Message,
    Reader,
    Reserved,
    Spec,
    Struct,
    UInt,
    u8,
    u16,
    u32,
    u64,
)

TDISP_VERSION_1_0 = 0x10
HEADER_BYTES = 16
NONCE_BYTES = 32


class TdispRequestCode(enum.IntEnum):
    GET_TDISP_VERSION = 0x81
    GET_TDISP_CAPABILITIES = 0x82
    LOCK_INTERFACE_REQUEST = 0x83
    GET_DEVICE_INTERFACE_REPORT = 0x84
    GET_DEVICE_INTERFACE_STATE = 0x85
    START_INTERFACE_REQUEST = 0x86
    STOP_INTERFACE_REQUEST = 0x87
    BIND_P2P_STREAM_REQUEST = 0x88
    UNBIND_P2P_STREAM_REQUEST = 0x89
    SET_MMIO_ATTRIBUTE_REQUEST = 0x8A
    VDM_REQUEST = 0x8B


class TdispResponseCode(enum.IntEnum):
    TDISP_VERSION = 0x01
    TDISP_CAPABILITIES = 0x02
    LOCK_INTERFACE_RESPONSE = 0x03
    DEVICE_INTERFACE_REPORT = 0x04
    DEVICE_INTERFACE_STATE = 0x05
    START_INTERFACE_RESPONSE = 0x06
    STOP_INTERFACE_RESPONSE = 0x07
    BIND_P2P_STREAM_RESPONSE = 0x08
    UNBIND_P2P_STREAM_RESPONSE = 0x09
    SET_MMIO_ATTRIBUTE_RESPONSE = 0x0A
    VDM_RESPONSE = 0x0B
    TDISP_ERROR = 0x7F


class TdiState(enum.IntEnum):
    CONFIG_UNLOCKED = 0
    CONFIG_LOCKED = 1
    RUN = 2
    ERROR = 3


class TdispErrorCode(enum.IntEnum):
    INVALID_REQUEST = 0x0001
    BUSY = 0x0003
    INVALID_INTERFACE_STATE = 0x0004
    UNSPECIFIED = 0x0005
    UNSUPPORTED_REQUEST = 0x0007
    VERSION_MISMATCH = 0x0041
    VENDOR_SPECIFIC_ERROR = 0x00FF
    INVALID_INTERFACE = 0x0101
    INVALID_NONCE = 0x0102
    INSUFFICIENT_ENTROPY = 0x0103
    INVALID_DEVICE_CONFIGURATION = 0x0104


class LockInterfaceFlags(enum.IntFlag):
    NO_FW_UPDATE = 1 << 0
    SYSTEM_CACHE_LINE_SIZE_128 = 1 << 1  # clear: 64-byte lines
    LOCK_MSIX = 1 << 2
    BIND_P2P = 1 << 3
    ALL_REQUEST_REDIRECT = 1 << 4


class InterfaceInfo(enum.IntFlag):
    """INTERFACE_INFO of the TDI report."""

    NO_FW_UPDATE = 1 << 0
    DMA_WITHOUT_PASID = 1 << 1
    DMA_WITH_PASID = 1 << 2
    ATS_ENABLED = 1 << 3
    PRS_ENABLED = 1 << 4


class MmioRangeAttributes(enum.IntFlag):
    MSIX_TABLE = 1 << 0
    MSIX_PBA = 1 << 1
    IS_NON_TEE_MEM = 1 << 2
    IS_MEM_ATTR_UPDATABLE = 1 << 3


class VdmRegistryId(enum.IntEnum):
    """REGISTRY_ID of TDISP VDM messages and vendor-specific errors."""

    PCISIG = 0
    CXL = 1


# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InterfaceId(Message):
    """INTERFACE_ID: FUNCTION_ID (u32) and 8 reserved bytes.

    FUNCTION_ID bits 15:0 requester ID, 23:16 segment (meaningful only when bit 24 is set),
    24 segment valid, 31:25 reserved. The raw value is kept so that reserved bits survive.
    """

    function_id: int

    LAYOUT = (u32("function_id"), Reserved(8))

    @classmethod
    def for_function(cls, requester_id: int, segment: int | None = None) -> InterfaceId:
        """The interface of a function by requester ID, with the segment only when given."""
        if not 0 <= requester_id <= 0xFFFF or (segment is not None and not 0 <= segment <= 0xFF):
            raise ValueError(f"requester id 0x{requester_id:x} / segment {segment} out of range")
        seg = 0 if segment is None else (segment << 16) | (1 << 24)
        return cls(requester_id | seg)

    @property
    def requester_id(self) -> int:
        return self.function_id & 0xFFFF

    @property
    def segment_valid(self) -> bool:
        return bool(self.function_id >> 24 & 1)

    @property
    def segment(self) -> int | None:
        return (self.function_id >> 16) & 0xFF if self.segment_valid else None

    @property
    def bus(self) -> int:
        return self.requester_id >> 8

    @property
    def device(self) -> int:
        return (self.requester_id >> 3) & 0x1F

    @property
    def function(self) -> int:
        return self.requester_id & 0x7

    def __str__(self) -> str:
        seg = f"{self.segment:02x}:" if self.segment is not None else ""
        return f"{seg}{self.bus:02x}:{self.device:02x}.{self.function}"


class _SignedU64(UInt):
    """An 8-byte little-endian two's-complement integer (MMIO_REPORTING_OFFSET)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, 8)

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        v = int(values[self.name])
        if not -(1 << 63) <= v < (1 << 63):
            raise EncodeError(f"field '{self.name}' = {v} does not fit in a signed 64-bit integer")
        out += v.to_bytes(8, "little", signed=True)

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        values[self.name] = int.from_bytes(r.take(8, self.name), "little", signed=True)


@dataclasses.dataclass(frozen=True)
class MmioRange(Message):
    """One MMIO_RANGE entry (16 bytes): 4 KiB page number, page count, attributes, range ID."""

    first_page: int
    number_of_pages: int
    attributes: MmioRangeAttributes = MmioRangeAttributes(0)
    range_id: int = 0  # 0-7: the BAR the range belongs to

    LAYOUT = (
        u64("first_page"),
        u32("number_of_pages"),
        u16("attributes", MmioRangeAttributes),
        u16("range_id"),
    )

    @property
    def address(self) -> int:
        return self.first_page << 12

    @property
    def size(self) -> int:
        return self.number_of_pages << 12


@dataclasses.dataclass(frozen=True)
class TdiReport(Message):
    """The device interface report: what the TDI looks like once locked (§6.4 'TDI report structure')."""

    interface_info: InterfaceInfo
    mmio_ranges: tuple[MmioRange, ...] = ()
    device_specific_info: bytes = b""
    msi_x_message_control: int = 0
    lnr_control: int = 0
    tph_control: int = 0

    LAYOUT = (
        u16("interface_info", InterfaceInfo),
        Reserved(2),
        u16("msi_x_message_control"),
        u16("lnr_control"),
        u32("tph_control"),
        LengthOf("mmio_range_count", 4, "mmio_ranges"),
        Array("mmio_ranges", MmioRange, count="mmio_range_count"),
        LengthOf("device_specific_info_len", 4, "device_specific_info"),
        Bytes("device_specific_info", "device_specific_info_len"),
    )

    def summary(self) -> str:
        return (f"TDI_REPORT info={int(self.interface_info):#x} mmio_ranges={len(self.mmio_ranges)} "
                f"dev_info={len(self.device_specific_info)}B")


@dataclasses.dataclass(frozen=True)
class TdispVendorErrorData(Message):
    """EXTENDED_ERROR_DATA of a VENDOR_SPECIFIC_ERROR: registry, vendor ID, vendor data."""

    registry_id: VdmRegistryId
    vendor_id: bytes
    vendor_data: bytes = b""

    LAYOUT = (
        u8("registry_id", VdmRegistryId),
        LengthOf("vendor_id_len", 1, "vendor_id"),
        Bytes("vendor_id", "vendor_id_len"),
        Bytes("vendor_data"),
    )


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

TDISP_MESSAGES: dict[int, type[TdispMessage]] = {}


def _header(code: int) -> tuple[Spec, ...]:
    return (
        u8("tdisp_version"),
        Const("message_type", 1, code),
        Reserved(2),
        Struct("interface_id", InterfaceId),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TdispMessage(Message):
    """Base of TDISP messages: the header fields, keyword-only so payload fields stay positional."""

    CODE: ClassVar[TdispRequestCode | TdispResponseCode | None] = None

    interface_id: InterfaceId
    tdisp_version: int = TDISP_VERSION_1_0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.CODE is not None:
            if cls.CODE in TDISP_MESSAGES and TDISP_MESSAGES[cls.CODE] is not cls:
                raise TypeError(f"TDISP code 0x{cls.CODE:02x} defined twice")
            TDISP_MESSAGES[cls.CODE] = cls
            cls.NAME = cls.CODE.name

    @property
    def is_request(self) -> bool:
        return isinstance(self.CODE, TdispRequestCode)

    def details(self) -> str:
        """Message-specific part of the summary."""
        return ""

    def summary(self) -> str:
        extra = self.details()
        version = "" if self.tdisp_version == TDISP_VERSION_1_0 else f" v=0x{self.tdisp_version:02x}"
        return f"TDISP {self.NAME} if={self.interface_id}{version}" + (f" {extra}" if extra else "")


@dataclasses.dataclass(frozen=True)
class GetTdispVersion(TdispMessage):
    CODE = TdispRequestCode.GET_TDISP_VERSION
    LAYOUT = _header(CODE)


@dataclasses.dataclass(frozen=True)
class TdispVersion(TdispMessage):
    """TDISP_VERSION: the versions the device supports (at least one; 0x10 = 1.0)."""

    CODE = TdispResponseCode.TDISP_VERSION
    versions: tuple[int, ...] = (TDISP_VERSION_1_0,)

    LAYOUT = (
        *_header(CODE),
        LengthOf("version_num_count", 1, "versions"),
        Array("versions", u8("version"), count="version_num_count"),
    )

    def __post_init__(self) -> None:
        if not self.versions:
            raise ValueError("TDISP_VERSION must list at least one version")

    def details(self) -> str:
        return "versions=" + ",".join(f"{v >> 4}.{v & 0xF}" for v in self.versions)


@dataclasses.dataclass(frozen=True)
class GetTdispCapabilities(TdispMessage):
    CODE = TdispRequestCode.GET_TDISP_CAPABILITIES
    tsm_caps: int = 0  # reserved in TDISP 1.0

    LAYOUT = (*_header(CODE), u32("tsm_caps"))


def request_bitmap(codes: Any) -> int:
    """REQ_MSGS_SUPPORTED as an integer: bit (code - 0x80) for each supported request code."""
    bits = 0
    for code in codes:
        bits |= 1 << (int(code) - 0x80)
    return bits


@dataclasses.dataclass(frozen=True)
class TdispCapabilities(TdispMessage):
    """TDISP_CAPABILITIES (44 bytes). ``req_msgs_supported`` is the 128-bit bitmap, bit = code - 0x80."""

    CODE = TdispResponseCode.TDISP_CAPABILITIES
    req_msgs_supported: int
    lock_interface_flags_supported: LockInterfaceFlags
    dev_addr_width: int
    num_req_this: int
    num_req_all: int
    dsm_caps: int = 0

    LAYOUT = (
        *_header(CODE),
        u32("dsm_caps"),
        UInt("req_msgs_supported", 16),
        u16("lock_interface_flags_supported", LockInterfaceFlags),
        Reserved(3),
        u8("dev_addr_width"),
        u8("num_req_this"),
        u8("num_req_all"),
    )

    def supports(self, code: int) -> bool:
        return 0x80 <= code < 0x100 and bool(self.req_msgs_supported >> (code - 0x80) & 1)

    def supported_requests(self) -> tuple[TdispRequestCode, ...]:
        return tuple(c for c in TdispRequestCode if self.supports(c))

    def details(self) -> str:
        return f"reqs={len(self.supported_requests())} addr_width={self.dev_addr_width}"


@dataclasses.dataclass(frozen=True)
class LockInterfaceRequest(TdispMessage):
    """LOCK_INTERFACE_REQUEST (36 bytes): lock the TDI configuration and bind it to the default stream."""

    CODE = TdispRequestCode.LOCK_INTERFACE_REQUEST
    flags: LockInterfaceFlags
    default_stream_id: int
    mmio_reporting_offset: int = 0  # signed, added to every reported MMIO address
    bind_p2p_address_mask: int = 0

    LAYOUT = (
        *_header(CODE),
        u16("flags", LockInterfaceFlags),
        u8("default_stream_id"),
        Reserved(1),
        _SignedU64("mmio_reporting_offset"),
        u64("bind_p2p_address_mask"),
    )

    def details(self) -> str:
        return f"stream={self.default_stream_id} flags={int(self.flags):#x}"


@dataclasses.dataclass(frozen=True)
class LockInterfaceResponse(TdispMessage):
    """LOCK_INTERFACE_RESPONSE (48 bytes): the nonce START_INTERFACE_REQUEST must echo."""

    CODE = TdispResponseCode.LOCK_INTERFACE_RESPONSE
    start_interface_nonce: bytes

    LAYOUT = (*_header(CODE), Bytes("start_interface_nonce", NONCE_BYTES))


@dataclasses.dataclass(frozen=True)
class GetDeviceInterfaceReport(TdispMessage):
    """GET_DEVICE_INTERFACE_REPORT: ask for ``length`` report bytes from ``offset``."""

    CODE = TdispRequestCode.GET_DEVICE_INTERFACE_REPORT
    offset: int
    length: int

    LAYOUT = (*_header(CODE), u16("offset"), u16("length"))

    def details(self) -> str:
        return f"offset={self.offset} length={self.length}"


@dataclasses.dataclass(frozen=True)
class DeviceInterfaceReport(TdispMessage):
    """DEVICE_INTERFACE_REPORT: one portion of the :class:`TdiReport` bytes and how many remain after it."""

    CODE = TdispResponseCode.DEVICE_INTERFACE_REPORT
    report: bytes
    remainder_length: int = 0

    LAYOUT = (
        *_header(CODE),
        LengthOf("portion_length", 2, "report"),
        u16("remainder_length"),
        Bytes("report", "portion_length"),
    )

    def details(self) -> str:
        return f"portion={len(self.report)} remainder={self.remainder_length}"


def report_portions(report: bytes, offset: int, length: int) -> tuple[bytes, int]:
    """The portion a responder returns for (OFFSET, LENGTH) and the REMAINDER_LENGTH after it."""
    if not 0 <= offset <= len(report):
        raise ValueError(f"offset {offset} is beyond the {len(report)}-byte report")
    portion = report[offset:offset + length]
    return portion, len(report) - offset - len(portion)


@dataclasses.dataclass(frozen=True)
class GetDeviceInterfaceState(TdispMessage):
    CODE = TdispRequestCode.GET_DEVICE_INTERFACE_STATE
    LAYOUT = _header(CODE)


@dataclasses.dataclass(frozen=True)
class DeviceInterfaceState(TdispMessage):
    CODE = TdispResponseCode.DEVICE_INTERFACE_STATE
    tdi_state: TdiState

    LAYOUT = (*_header(CODE), u8("tdi_state", TdiState))

    def details(self) -> str:
        return self.tdi_state.name


@dataclasses.dataclass(frozen=True)
class StartInterfaceRequest(TdispMessage):
    """START_INTERFACE_REQUEST: echoes the LOCK nonce to move the TDI to RUN."""

    CODE = TdispRequestCode.START_INTERFACE_REQUEST
    start_interface_nonce: bytes

    LAYOUT = (*_header(CODE), Bytes("start_interface_nonce", NONCE_BYTES))


@dataclasses.dataclass(frozen=True)
class StartInterfaceResponse(TdispMessage):
    CODE = TdispResponseCode.START_INTERFACE_RESPONSE
    LAYOUT = _header(CODE)


@dataclasses.dataclass(frozen=True)
class StopInterfaceRequest(TdispMessage):
    CODE = TdispRequestCode.STOP_INTERFACE_REQUEST
    LAYOUT = _header(CODE)


@dataclasses.dataclass(frozen=True)
class StopInterfaceResponse(TdispMessage):
    CODE = TdispResponseCode.STOP_INTERFACE_RESPONSE
    LAYOUT = _header(CODE)


@dataclasses.dataclass(frozen=True)
class BindP2pStreamRequest(TdispMessage):
    CODE = TdispRequestCode.BIND_P2P_STREAM_REQUEST
    p2p_stream_id: int

    LAYOUT = (*_header(CODE), u8("p2p_stream_id"))

    def details(self) -> str:
        return f"stream={self.p2p_stream_id}"


@dataclasses.dataclass(frozen=True)
class BindP2pStreamResponse(TdispMessage):
    CODE = TdispResponseCode.BIND_P2P_STREAM_RESPONSE
    LAYOUT = _header(CODE)


@dataclasses.dataclass(frozen=True)
class UnbindP2pStreamRequest(TdispMessage):
    CODE = TdispRequestCode.UNBIND_P2P_STREAM_REQUEST
    p2p_stream_id: int

    LAYOUT = (*_header(CODE), u8("p2p_stream_id"))

    def details(self) -> str:
        return f"stream={self.p2p_stream_id}"


@dataclasses.dataclass(frozen=True)
class UnbindP2pStreamResponse(TdispMessage):
    CODE = TdispResponseCode.UNBIND_P2P_STREAM_RESPONSE
    LAYOUT = _header(CODE)


@dataclasses.dataclass(frozen=True)
class SetMmioAttributeRequest(TdispMessage):
    """SET_MMIO_ATTRIBUTE_REQUEST: one MMIO_RANGE; only IS_NON_TEE_MEM is meaningful."""

    CODE = TdispRequestCode.SET_MMIO_ATTRIBUTE_REQUEST
    mmio_range: MmioRange

    LAYOUT = (*_header(CODE), Struct("mmio_range", MmioRange))


@dataclasses.dataclass(frozen=True)
class SetMmioAttributeResponse(TdispMessage):
    CODE = TdispResponseCode.SET_MMIO_ATTRIBUTE_RESPONSE
    LAYOUT = _header(CODE)


def _vdm_layout(code: int) -> tuple[Spec, ...]:
    return (
        *_header(code),
        u8("registry_id", VdmRegistryId),
        LengthOf("vendor_id_len", 1, "vendor_id"),
        Bytes("vendor_id", "vendor_id_len"),
        Bytes("vendor_data"),
    )


@dataclasses.dataclass(frozen=True)
class VdmRequest(TdispMessage):
    CODE = TdispRequestCode.VDM_REQUEST
    registry_id: VdmRegistryId
    vendor_id: bytes
    vendor_data: bytes = b""

    LAYOUT = _vdm_layout(CODE)


@dataclasses.dataclass(frozen=True)
class VdmResponse(TdispMessage):
    CODE = TdispResponseCode.VDM_RESPONSE
    registry_id: VdmRegistryId
    vendor_id: bytes
    vendor_data: bytes = b""

    LAYOUT = _vdm_layout(CODE)


@dataclasses.dataclass(frozen=True)
class TdispError(TdispMessage):
    """TDISP_ERROR: error code (u32), error data (u32) and optional extended data."""

    CODE = TdispResponseCode.TDISP_ERROR
    error_code: TdispErrorCode
    error_data: int = 0
    extended_error_data: bytes = b""

    LAYOUT = (
        *_header(CODE),
        u32("error_code", TdispErrorCode),
        u32("error_data"),
        Bytes("extended_error_data"),
    )

    @classmethod
    def vendor_specific(cls, interface_id: InterfaceId, data: TdispVendorErrorData) -> TdispError:
        """A VENDOR_SPECIFIC_ERROR whose ERROR_DATA is the length of its extended data."""
        ext = data.encode()
        return cls(TdispErrorCode.VENDOR_SPECIFIC_ERROR, len(ext), ext, interface_id=interface_id)

    def vendor_error_data(self) -> TdispVendorErrorData:
        """The extended data of a VENDOR_SPECIFIC_ERROR, decoded."""
        return TdispVendorErrorData.decode(self.extended_error_data)

    def details(self) -> str:
        return f"{self.error_code.name} data=0x{self.error_data:x}"


def decode_tdisp(data: bytes) -> TdispMessage:
    """Decode any TDISP message by the MessageType byte of its header (the bytes after the Protocol ID)."""
    if len(data) < 2:
        raise DecodeError("TDISP", "message_type", len(data), f"a TDISP header is 16 bytes, only {len(data)} given")
    cls = TDISP_MESSAGES.get(data[1])
    if cls is None:
        raise DecodeError("TDISP", "message_type", 1, f"unknown TDISP message type 0x{data[1]:02x}")
    return cls.decode(data)


def summarize(msg: TdispMessage | TdiReport) -> str:
    """Compact one-line description for the trace, e.g. 'TDISP LOCK_INTERFACE_REQUEST if=01:00.0 stream=1 ...'."""
    return msg.summary()
