"""ERROR (0x7F): Param1 ErrorCode, Param2 ErrorData, then up to 32 bytes of ExtendedErrorData (PROTOCOLS.md §2.3).

Extended data is typed for the three codes that define it: ResponseNotReady (RDExponent,
RequestCode, Token, RDTM), LargeResponse (Handle) and Vendor/Other (Len, VendorID, data).
Every other code keeps raw bytes. The typed forms read exactly their own size, so DOE pad bytes
after them remain trailing bytes; raw and vendor data run to the end of the message.
ERROR messages never enter a transcript (§3).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from sim.wire.codec import Bytes, DecodeError, EncodeError, LengthOf, Message, Reader, Spec, nested, u8
from sim.wire.spdm.common import ErrorCode, RequestCode, ResponseCode, SpdmMessage, header

MAX_EXTENDED_ERROR_DATA = 32


@dataclasses.dataclass(frozen=True)
class ResponseNotReadyData(Message):
    """ExtendedErrorData of ResponseNotReady: wait RDT × RDTM, then send RESPOND_IF_READY with Token."""

    NAME: ClassVar[str] = "ERROR"
    LAYOUT = (u8("rd_exponent"), u8("request_code", RequestCode), u8("token"), u8("rdtm"))

    rd_exponent: int
    request_code: RequestCode
    token: int
    rdtm: int

    @property
    def rdt_us(self) -> int:
        """RDT = 2^RDExponent microseconds: the time the responder needs to complete the request."""
        return 1 << self.rd_exponent

    @property
    def wait_us(self) -> int:
        """How long the requester waits before RESPOND_IF_READY (RDT × RDTM)."""
        return self.rdt_us * self.rdtm


@dataclasses.dataclass(frozen=True)
class LargeResponseData(Message):
    """ExtendedErrorData of LargeResponse (1.2): the Handle to fetch the response with CHUNK_GET."""

    NAME: ClassVar[str] = "ERROR"
    LAYOUT = (u8("handle"),)

    handle: int


@dataclasses.dataclass(frozen=True)
class VendorErrorData(Message):
    """ExtendedErrorData of Vendor/Other (0xFF): Len, VendorID (Len bytes), vendor-defined data."""

    NAME: ClassVar[str] = "ERROR"
    LAYOUT = (LengthOf("vendor_id_len", 1, "vendor_id"), Bytes("vendor_id", "vendor_id_len"), Bytes("data"))

    vendor_id: bytes
    data: bytes = b""


ExtendedErrorData = ResponseNotReadyData | LargeResponseData | VendorErrorData | bytes

_TYPED: dict[ErrorCode, type[Message]] = {
    ErrorCode.RESPONSE_NOT_READY: ResponseNotReadyData,
    ErrorCode.LARGE_RESPONSE: LargeResponseData,
    ErrorCode.VENDOR_DEFINED: VendorErrorData,
}


class _Extended(Spec):
    """ExtendedErrorData, typed by the ErrorCode decoded before it; at most 32 bytes."""

    def __init__(self) -> None:
        self.name, self.when = "extended", None

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        ext = values["extended"]
        raw = ext.encode(ctx) if isinstance(ext, Message) else bytes(ext)
        if len(raw) > MAX_EXTENDED_ERROR_DATA:
            raise EncodeError(f"extended error data is {len(raw)} bytes, at most {MAX_EXTENDED_ERROR_DATA}")
        out += raw

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        cls = _TYPED.get(values["error_code"])
        if cls is VendorErrorData or cls is None:
            if r.remaining > MAX_EXTENDED_ERROR_DATA:
                raise r.fail(self.name, f"{r.remaining} bytes exceed the {MAX_EXTENDED_ERROR_DATA}-byte maximum")
        if cls is None:
            values["extended"] = r.take(r.remaining, self.name)
            return
        try:
            values["extended"] = cls.decode_from(r, ctx)
        except DecodeError as exc:
            raise nested(exc, self.name) from None


@dataclasses.dataclass(frozen=True)
class ErrorResponse(SpdmMessage):
    """ERROR (0x7F). ``error_data`` is Param2 (e.g. the unsupported request code for UnsupportedRequest)."""

    CODE: ClassVar[int] = ResponseCode.ERROR
    NAME: ClassVar[str] = "ERROR"
    LAYOUT = header(CODE, u8("error_code", ErrorCode), u8("error_data")) + (_Extended(),)

    version: int
    error_code: ErrorCode
    error_data: int = 0
    extended: ExtendedErrorData = b""

    def __post_init__(self) -> None:
        want = _TYPED.get(ErrorCode(self.error_code))
        if want is None:
            if not isinstance(self.extended, bytes | bytearray):
                raise ValueError(f"{ErrorCode(self.error_code).name} takes raw extended bytes")
            object.__setattr__(self, "extended", bytes(self.extended))
        elif not isinstance(self.extended, want):
            raise ValueError(f"{ErrorCode(self.error_code).name} needs {want.__name__} extended data")

    def summary(self) -> str:
        text = f"ERROR {ErrorCode(self.error_code).name}"
        if self.error_data:
            text += f" data=0x{self.error_data:02x}"
        ext = self.extended
        if isinstance(ext, ResponseNotReadyData):
            text += (f" request={ext.request_code.name} token={ext.token} "
                     f"wait={ext.wait_us}us")
        elif isinstance(ext, LargeResponseData):
            text += f" handle={ext.handle}"
        elif isinstance(ext, VendorErrorData):
            text += f" vendor={ext.vendor_id.hex() or '-'} data={len(ext.data)}B"
        elif ext:
            text += f" extended={ext.hex()}"
        return text
