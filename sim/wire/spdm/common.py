"""SPDM (DSP0274 1.0-1.3) constants, the 4-byte header and the decoding context.

Everything here is a fact from PROTOCOLS.md §2; message layouts live in the sibling modules
and register themselves by request/response code so that :func:`decode_spdm` can dispatch.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar, Self

from sim.crypto.algorithms import (  # noqa: F401  (re-exported: the SPDM algorithm bits live in crypto)
    DHE_SIZE,
    HASH_SIZE,
    SIGNATURE_SIZE,
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    KeyScheduleAlgo,
    MeasurementHashAlgo,
)
from sim.wire.codec import Const, DecodeError, EncodeError, Message, Reader, Reserved, Spec, u8


class SpdmVersion(enum.IntEnum):
    V10 = 0x10
    V11 = 0x11
    V12 = 0x12
    V13 = 0x13
    V14 = 0x14

    @property
    def dotted(self) -> str:
        return f"{self >> 4}.{self & 0xF}"


class RequestCode(enum.IntEnum):
    GET_DIGESTS = 0x81
    GET_CERTIFICATE = 0x82
    CHALLENGE = 0x83
    GET_VERSION = 0x84
    CHUNK_SEND = 0x85
    CHUNK_GET = 0x86
    GET_ENDPOINT_INFO = 0x87
    SLOT_MANAGEMENT = 0x88
    GET_MEASUREMENTS = 0xE0
    GET_CAPABILITIES = 0xE1
    GET_SUPPORTED_EVENT_TYPES = 0xE2
    NEGOTIATE_ALGORITHMS = 0xE3
    KEY_EXCHANGE = 0xE4
    FINISH = 0xE5
    PSK_EXCHANGE = 0xE6
    PSK_FINISH = 0xE7
    HEARTBEAT = 0xE8
    KEY_UPDATE = 0xE9
    GET_ENCAPSULATED_REQUEST = 0xEA
    DELIVER_ENCAPSULATED_RESPONSE = 0xEB
    END_SESSION = 0xEC
    GET_CSR = 0xED
    SET_CERTIFICATE = 0xEE
    GET_MEASUREMENT_EXTENSION_LOG = 0xEF
    SUBSCRIBE_EVENT_TYPES = 0xF0
    SEND_EVENT = 0xF1
    GET_KEY_PAIR_INFO = 0xFC
    SET_KEY_PAIR_INFO = 0xFD
    VENDOR_DEFINED_REQUEST = 0xFE
    RESPOND_IF_READY = 0xFF


class ResponseCode(enum.IntEnum):
    DIGESTS = 0x01
    CERTIFICATE = 0x02
    CHALLENGE_AUTH = 0x03
    VERSION = 0x04
    CHUNK_SEND_ACK = 0x05
    CHUNK_RESPONSE = 0x06
    ENDPOINT_INFO = 0x07
    SLOT_MANAGEMENT_RESP = 0x08
    MEASUREMENTS = 0x60
    CAPABILITIES = 0x61
    SUPPORTED_EVENT_TYPES = 0x62
    ALGORITHMS = 0x63
    KEY_EXCHANGE_RSP = 0x64
    FINISH_RSP = 0x65
    PSK_EXCHANGE_RSP = 0x66
    PSK_FINISH_RSP = 0x67
    HEARTBEAT_ACK = 0x68
    KEY_UPDATE_ACK = 0x69
    ENCAPSULATED_REQUEST = 0x6A
    ENCAPSULATED_RESPONSE_ACK = 0x6B
    END_SESSION_ACK = 0x6C
    CSR = 0x6D
    SET_CERTIFICATE_RSP = 0x6E
    MEASUREMENT_EXTENSION_LOG = 0x6F
    SUBSCRIBE_EVENT_TYPES_ACK = 0x70
    EVENT_ACK = 0x71
    KEY_PAIR_INFO = 0x7C
    SET_KEY_PAIR_INFO_ACK = 0x7D
    VENDOR_DEFINED_RESPONSE = 0x7E
    ERROR = 0x7F


class ErrorCode(enum.IntEnum):
    INVALID_REQUEST = 0x01
    BUSY = 0x03
    UNEXPECTED_REQUEST = 0x04
    UNSPECIFIED = 0x05
    DECRYPT_ERROR = 0x06
    UNSUPPORTED_REQUEST = 0x07
    REQUEST_IN_FLIGHT = 0x08
    INVALID_RESPONSE_CODE = 0x09
    SESSION_LIMIT_EXCEEDED = 0x0A
    SESSION_REQUIRED = 0x0B
    RESET_REQUIRED = 0x0C
    RESPONSE_TOO_LARGE = 0x0D
    REQUEST_TOO_LARGE = 0x0E
    LARGE_RESPONSE = 0x0F
    MESSAGE_LOST = 0x10
    INVALID_POLICY = 0x11
    DATA_TOO_LARGE = 0x12
    VERSION_MISMATCH = 0x41
    RESPONSE_NOT_READY = 0x42
    REQUEST_RESYNCH = 0x43
    OPERATION_FAILED = 0x44
    NO_PENDING_REQUESTS = 0x45
    REQUEST_SESSION_TERMINATED = 0x46
    INVALID_STATE = 0x47
    VENDOR_DEFINED = 0xFF


class CapabilityFlags(enum.IntFlag):
    CACHE_CAP = 1 << 0
    CERT_CAP = 1 << 1
    CHAL_CAP = 1 << 2
    MEAS_CAP_NO_SIG = 1 << 3
    MEAS_CAP_SIG = 1 << 4
    MEAS_FRESH_CAP = 1 << 5
    ENCRYPT_CAP = 1 << 6
    MAC_CAP = 1 << 7
    MUT_AUTH_CAP = 1 << 8
    KEY_EX_CAP = 1 << 9
    PSK_CAP = 1 << 10
    PSK_CAP_WITH_CONTEXT = 1 << 11
    ENCAP_CAP = 1 << 12
    HBEAT_CAP = 1 << 13
    KEY_UPD_CAP = 1 << 14
    HANDSHAKE_IN_THE_CLEAR_CAP = 1 << 15
    PUB_KEY_ID_CAP = 1 << 16
    CHUNK_CAP = 1 << 17
    ALIAS_CERT_CAP = 1 << 18
    SET_CERT_CAP = 1 << 19
    CSR_CAP = 1 << 20
    CERT_INSTALL_RESET_CAP = 1 << 21
    EP_INFO_CAP_NO_SIG = 1 << 22
    EP_INFO_CAP_SIG = 1 << 23
    MEL_CAP = 1 << 24
    EVENT_CAP = 1 << 25
    MULTI_KEY_CAP_ONLY = 1 << 26
    MULTI_KEY_CAP_NEG = 1 << 27
    GET_KEY_PAIR_INFO_CAP = 1 << 28
    SET_KEY_PAIR_INFO_CAP = 1 << 29


class AlgType(enum.IntEnum):
    DHE = 2
    AEAD = 3
    REQ_BASE_ASYM_ALG = 4
    KEY_SCHEDULE = 5
    REQ_PQC_ASYM_ALG = 6
    KEM = 7


class MeasurementSpec(enum.IntFlag):
    DMTF = 0x1


class RegistryId(enum.IntEnum):
    DMTF = 0
    TCG = 1
    USB = 2
    PCISIG = 3
    IANA = 4
    HDBASET = 5
    MIPI = 6
    CXL = 7
    JEDEC = 8
    VESA = 9
    IANA_CBOR = 0xA
    DMTF_DSP = 0xB


class MeasurementSummaryHashType(enum.IntEnum):
    """Param1 of CHALLENGE, KEY_EXCHANGE and PSK_EXCHANGE: which measurements the summary hash covers (§2.9)."""

    NONE = 0x00
    TCB = 0x01
    ALL = 0xFF


@dataclasses.dataclass(frozen=True)
class SpdmContext:
    """What a decoder must know about the negotiated connection to size variable fields.

    ``hash_size`` is H, ``sig_size`` S, ``dhe_size`` D. ``meas_summary_size`` is H when the
    request asked for a measurement summary hash (and the responder measures), else 0.
    ``handshake_in_the_clear`` moves ResponderVerifyData from KEY_EXCHANGE_RSP to FINISH_RSP.
    ``mut_auth`` says whether FINISH carries a requester signature of ``req_sig_size`` bytes.
    """

    hash_size: int = 48
    sig_size: int = 96
    dhe_size: int = 96
    req_sig_size: int = 96
    meas_summary_size: int = 0
    handshake_in_the_clear: bool = False

    @classmethod
    def for_algorithms(cls, hash_algo: BaseHashAlgo, asym_algo: BaseAsymAlgo, dhe: DheGroup | None = None,
                       req_asym_algo: BaseAsymAlgo | None = None, **kw: Any) -> SpdmContext:
        return cls(
            hash_size=HASH_SIZE[hash_algo],
            sig_size=SIGNATURE_SIZE[asym_algo],
            dhe_size=DHE_SIZE[dhe] if dhe else 0,
            req_sig_size=SIGNATURE_SIZE[req_asym_algo] if req_asym_algo else 0,
            **kw,
        )

    def with_(self, **changes: Any) -> SpdmContext:
        return dataclasses.replace(self, **changes)


DEFAULT_CONTEXT = SpdmContext()

SPDM_MESSAGES: dict[int, type[SpdmMessage]] = {}


def since(version: int) -> Any:
    """Condition for a field present only from SPDM ``version`` on (read from the message's own header)."""
    return lambda values, ctx: values["version"] >= version


def before(version: int) -> Any:
    """Condition for a field present only before SPDM ``version`` (e.g. a byte that later versions define)."""
    return lambda values, ctx: values["version"] < version


def header(code: int, param1: Spec | None = None, param2: Spec | None = None) -> tuple[Spec, ...]:
    """The 4-byte SPDM header; params default to plain ``param1``/``param2`` attributes."""
    return (
        u8("version"),
        Const("code", 1, code),
        param1 if param1 is not None else u8("param1"),
        param2 if param2 is not None else u8("param2"),
    )


@dataclasses.dataclass(frozen=True)
class SpdmMessage(Message):
    """An SPDM request or response. Subclasses set CODE and start their LAYOUT with :func:`header`."""

    CODE: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.CODE:
            if cls.CODE in SPDM_MESSAGES and SPDM_MESSAGES[cls.CODE] is not cls:
                raise TypeError(f"SPDM code 0x{cls.CODE:02x} defined twice")
            SPDM_MESSAGES[cls.CODE] = cls

    @property
    def code_name(self) -> str:
        try:
            return RequestCode(self.CODE).name
        except ValueError:
            return ResponseCode(self.CODE).name

    def encode(self, ctx: Any = None) -> bytes:
        """As :meth:`Message.encode`; without a context, DEFAULT_CONTEXT sizes the H/S/D fields."""
        return super().encode(DEFAULT_CONTEXT if ctx is None else ctx)

    @classmethod
    def decode_from(cls, r: Reader, ctx: Any = None, *, whole: bool = False) -> Self:
        """As :meth:`Message.decode_from`; without a context, DEFAULT_CONTEXT sizes the H/S/D fields."""
        return super().decode_from(r, DEFAULT_CONTEXT if ctx is None else ctx, whole=whole)

    def summary(self) -> str:
        """One line for traces and ``tiosim decode``; subclasses add their key fields after the code name."""
        return self.code_name


def decode_spdm(data: bytes, ctx: SpdmContext | None = None, *, allow_trailing: bool = False) -> SpdmMessage:
    """Decode any SPDM message by its request/response code.

    ``allow_trailing`` accepts up to 3 trailing bytes of DOE padding; the decoded message
    re-encodes to the true message size (PROTOCOLS.md §1.3: pad bytes never enter transcripts).
    """
    return decode_spdm_sized(data, ctx, allow_trailing=allow_trailing)[0]


def decode_spdm_sized(data: bytes, ctx: SpdmContext | None = None, *,
                      allow_trailing: bool = False) -> tuple[SpdmMessage, int]:
    """:func:`decode_spdm`, and how many bytes the message occupies (its size without DOE pad bytes).

    That count is what the message re-encodes to (``tests/wire/test_spdm_consumed.py``), so callers
    that need the exact message bytes for a transcript slice them off instead of encoding again.
    """
    cls = SPDM_MESSAGES.get(data[1]) if len(data) >= 2 else None
    if cls is None:
        r = Reader(data, "SPDM")
        r.take(1, "version")
        code = r.take(1, "code")[0]
        raise DecodeError("SPDM", "code", 1, f"unknown request/response code 0x{code:02x}")
    r = Reader(data, cls.NAME)
    msg = cls.decode_from(r, ctx if ctx is not None else DEFAULT_CONTEXT, whole=not allow_trailing)
    return msg, r.pos


# --------------------------------------------------------------------------------------------
# Helpers shared by the message modules (appended by part A; general, not message-specific)
# --------------------------------------------------------------------------------------------

NONCE_SIZE = 32  # every SPDM nonce and RandomData field
REQUESTER_CONTEXT_SIZE = 8  # 1.3 RequesterContext in CHALLENGE / GET_MEASUREMENTS and their responses
MAX_OPAQUE_DATA_SIZE = 1024  # OpaqueDataLength limit (§2.8)


def gate_field(msg: Any, name: str, present: bool, default: Any = None) -> None:
    """Keep a version-gated attribute consistent with the wire: a value exactly when the field exists.

    Call from ``__post_init__``. When the field is absent at the message's version the attribute
    must be None (a falsy value such as 0 or b"" is normalised to None); when present, None is
    replaced by ``default`` or refused, so that encode never meets a missing value.
    """
    value = getattr(msg, name)
    if present:
        if value is None:
            if default is None:
                raise ValueError(f"{type(msg).__name__}.{name} is required at version 0x{msg.version:02x}")
            object.__setattr__(msg, name, default)
    elif value is not None:
        if value:
            raise ValueError(f"{type(msg).__name__}.{name} does not exist at version 0x{msg.version:02x}")
        object.__setattr__(msg, name, None)


class TotalLength(Spec):
    """A u16 "Length" holding the size of the whole structure that contains it.

    It is written as zero and patched by :class:`LengthPrefixed` once the size is known; on decode
    the declared value is kept (under this spec's name) for the size check and for later sizes.
    """

    derived = True

    def __init__(self, name: str = "length", size: int = 2) -> None:
        self.name, self.size, self.when = name, size, None

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        out += bytes(self.size)

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        values[self.name] = int.from_bytes(r.take(self.size, self.name), "little")


class LengthPrefixed:
    """Mixin for structures whose Length field must equal their own encoded size.

    Used for NEGOTIATE_ALGORITHMS / ALGORITHMS (§2.6), the 1.3 supported-algorithms block and the
    SPDM certificate chain (§2.7). ``LENGTH_OFFSET`` is where the :class:`TotalLength` spec sits.
    A Length that disagrees with the bytes the layout consumed is a DecodeError naming "length".
    """

    LENGTH_OFFSET: ClassVar[int] = 4
    LENGTH_SIZE: ClassVar[int] = 2

    def encode(self, ctx: Any = None) -> bytes:
        raw = bytearray(super().encode(ctx))  # type: ignore[misc]
        if len(raw) >= 1 << (8 * self.LENGTH_SIZE):
            raise EncodeError(f"{type(self).__name__} is {len(raw)} bytes, too long for its Length field")
        raw[self.LENGTH_OFFSET:self.LENGTH_OFFSET + self.LENGTH_SIZE] = len(raw).to_bytes(self.LENGTH_SIZE, "little")
        return bytes(raw)

    @classmethod
    def decode_from(cls, r: Reader, ctx: Any = None, *, whole: bool = False) -> Any:
        start = r.pos
        msg = super().decode_from(r, ctx, whole=False)  # type: ignore[misc]
        at = start + cls.LENGTH_OFFSET
        declared = int.from_bytes(r.data[at:at + cls.LENGTH_SIZE], "little")
        size = r.pos - start
        if declared != size:
            raise DecodeError(r.message, "length", r.base + at, f"Length says {declared} bytes, the structure has {size}")
        if whole and r.remaining:
            raise r.fail("(end)", f"{r.remaining} unexpected trailing bytes after {r.message}")
        return msg


def introduced(version: int, spec: Spec) -> tuple[Spec, Spec]:
    """A field defined from ``version`` on, and reserved bytes of the same size in its place before it."""
    spec.when = since(version)
    return spec, Reserved(int(getattr(spec, "size")), spec.name, when=before(version))  # noqa: B009
