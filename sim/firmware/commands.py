"""The platform firmware's command interface, as bytes: one frame format for every caller.

Every command to the firmware and every answer from it is one *frame*: an 8-byte header and a
per-command body, all little-endian (the layout is ours; the command set is modeled on the public
AMD SEV-TIO and Intel TDX Connect interfaces, TRUST_MODELS.md §2)::

    +0  u16  command word   bits 14:0 = FwCommandId, bit 15 = 1 in a response
    +2  u16  status word    request: FwRequestKind (NEW / CONTINUE); response: FwStatus
    +4  u32  body length in bytes
    +8  ...  body (layout chosen by command, direction and status word)

Fat TSM commands (SEV-TIO/TDX Connect style): TIO_STATUS, DEV_CREATE, DEV_CONNECT, DEV_DISCONNECT,
DEV_RECLAIM, ROLL_KEY (an IDE key refresh, as in AMD's out-of-tree SEV-TIO driver), TDI_BIND,
TDI_UNBIND, TDI_REPORT, TDI_STATUS, GUEST_REQUEST. A command that needs the device answers with
status SPDM_REQUEST and a :class:`SpdmRequest` body: one DOE object the host must exchange with the
device (SEV-TIO ``SEV_RET_SPDM_REQUEST``, TDX ``TDX_SPDM_REQUEST``). The host then re-issues the
*same* command with kind CONTINUE and a :class:`SpdmContinue` body carrying the device's answer
(``sev_tio_continue``), until the firmware answers with a final status.

Thin key-slot service commands (Arm CCA EL3 ``RP_IDE_KEY_*`` analogue): ALLOCATE_STREAM,
PROGRAM_KEY, SET_GO, SET_STOP, RELEASE_STREAM. A guest reaches them only through GUEST_CHANNEL,
whose body is an AES-256-GCM sealed key-slot frame (:class:`GuestChannelMessage`). A fat-model guest
sends its GUEST_REQUESTs the same way: sealed in GUEST_CHANNEL, which may then answer SPDM_REQUEST.

Decoding raises only :class:`~sim.wire.codec.DecodeError`.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from sim.wire.codec import (
    Bits,
    Bytes,
    DecodeError,
    EncodeError,
    LengthOf,
    Message,
    Reader,
    Reserved,
    u8,
    u16,
    u32,
    u64,
)
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.tdisp import TdiState

HEADER_BYTES = 8
RESPONSE_BIT = 0x8000
SHA384_BYTES = 48
GUEST_CHANNEL_TAG_BYTES = 16
IDE_KEY_BYTES = 32
IFV_BYTES = 8
MAX_BODY_BYTES = 1 << 20  # a DOE object is at most 1 MiB (PROTOCOLS.md §1.3); nothing here is larger


class FwCommandId(enum.IntEnum):
    """Command identifiers (15 bits)."""

    # fat TSM (SEV-TIO TIO_*, TDX TDH.SPDM/IDE/TDI)
    TIO_STATUS = 0x0001
    DEV_CREATE = 0x0002
    DEV_CONNECT = 0x0003
    DEV_DISCONNECT = 0x0004
    DEV_RECLAIM = 0x0005
    ROLL_KEY = 0x0006              # out-of-tree SEV-TIO: refresh the device's IDE keys in its session
    TDI_BIND = 0x0010
    TDI_UNBIND = 0x0011
    TDI_REPORT = 0x0012
    TDI_STATUS = 0x0013
    GUEST_REQUEST = 0x0014
    # thin key-slot service
    ALLOCATE_STREAM = 0x0020
    PROGRAM_KEY = 0x0021
    SET_GO = 0x0022
    SET_STOP = 0x0023
    RELEASE_STREAM = 0x0024
    # the encrypted guest <-> firmware channel (relayed by the VMM)
    GUEST_CHANNEL = 0x0030


class FwRequestKind(enum.IntEnum):
    """Status word of a request: a new command, or the re-issue after an SPDM_REQUEST."""

    NEW = 0
    CONTINUE = 1


class FwStatus(enum.IntEnum):
    """Status word of a response."""

    SUCCESS = 0x0000
    SPDM_REQUEST = 0x0001          # exchange the enclosed DOE object, then re-issue with CONTINUE
    INVALID_COMMAND = 0x0010       # unknown or malformed command frame
    INVALID_PARAMETER = 0x0011
    INVALID_DEVICE = 0x0012        # no such device handle / RID
    INVALID_TDI = 0x0013
    INVALID_STATE = 0x0014         # the command is not allowed in the object's current state
    NOT_PERMITTED = 0x0015         # e.g. a stream not allocated to the caller
    NO_RESOURCES = 0x0016          # no free stream in the Root Port's pool
    UNSUPPORTED = 0x0017           # this firmware does not offer the command (fat vs thin)
    BUSY = 0x0018
    ATTESTATION_FAILED = 0x0020    # SPDM / IDE_KM / TDISP failed or evidence did not verify
    DOE_FAILED = 0x0021            # the host reported no DOE response
    KEY_SLOT_ERROR = 0x0022        # the Root Port key-programming path refused the operation
    BAD_SEQUENCE = 0x0030          # guest channel: replayed or out-of-order sequence number
    DECRYPT_FAILED = 0x0031        # guest channel: tag check failed


class FwDirection(enum.Enum):
    REQUEST = "request"
    RESPONSE = "response"


class TioFeature(enum.IntFlag):
    """TIO_STATUS feature bits: what this firmware offers."""

    FAT_TSM = 1 << 0
    KEY_SLOT_SERVICE = 1 << 1
    GUEST_CHANNEL = 1 << 2


class DisconnectFlag(enum.IntFlag):
    FORCE = 1 << 0                 # SEV-TIO DEV_DISCONNECT FORCE: drop the state even with TDIs bound, no SPDM


class BindFlag(enum.IntFlag):
    RUN_FORCE = 1 << 0             # SEV-TIO TDI_BIND RUN_FORCE: skip the guest's accept (not used by default)


class GuestRequestType(enum.IntEnum):
    """GUEST_REQUEST scopes (Linux ``pci_tsm_req_scope`` / SEV-TIO guest messages)."""

    TDI_INFO = 1                   # report + SHA-384 digests; "no device secrets"
    STATE_CHANGE = 2               # LOCKED -> RUN only (START_INTERFACE)
    TDI_STATE = 3                  # the TDI's TDISP state as the firmware last read it


class DoeResult(enum.IntEnum):
    """What the host's DOE exchange produced, in a CONTINUE re-issue."""

    RESPONSE = 0
    NO_RESPONSE = 1                # timeout, dropped object, dead mailbox


# ------------------------------------------------------------------------------------------------
# Header
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FwHeader(Message):
    """The 8-byte frame header followed by the raw body (see the module docstring)."""

    command: int
    response: int
    status: int
    body: bytes

    LAYOUT = (
        Bits("command_word", 2, [("command", 0, 15, None), ("response", 15, 1, None)]),
        u16("status"),
        LengthOf("length", 4, "body"),
        Bytes("body", "length", max_size=MAX_BODY_BYTES),
    )


# ------------------------------------------------------------------------------------------------
# Bodies
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FwBody(Message):
    """Base of every body; ``COMMAND`` names the command a request/response body belongs to."""

    COMMAND: ClassVar[FwCommandId | None] = None


@dataclasses.dataclass(frozen=True)
class Empty(FwBody):
    """No parameters (also the body of a response that only carries a status)."""

    LAYOUT = ()


@dataclasses.dataclass(frozen=True)
class ErrorDetail(FwBody):
    """Body of an error response: an ASCII reason, for the trace and the reports."""

    detail: bytes = b""

    LAYOUT = (LengthOf("detail_length", 2, "detail"), Bytes("detail", "detail_length"))

    @classmethod
    def text(cls, reason: str) -> ErrorDetail:
        return cls(reason.encode("ascii", "replace")[:0xFFFF])


def _key_sub_stream() -> Bits:
    """Key set / direction / sub-stream packed as in the IDE_KM KeySubStream byte (PROTOCOLS.md §6.2)."""
    return Bits("key_sub_stream", 1, [("key_set", 0, 1, KeySet), ("direction", 1, 1, Direction),
                                      ("sub_stream", 4, 4, SubStream)])


# -- fat TSM: device ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TioStatusRsp(FwBody):
    COMMAND = FwCommandId.TIO_STATUS
    features: TioFeature
    devices: int
    bound_tdis: int
    commands_served: int

    LAYOUT = (u32("features", TioFeature), u16("devices"), u16("bound_tdis"), u32("commands_served"))


@dataclasses.dataclass(frozen=True)
class DevCreate(FwBody):
    """SEV-TIO TIO_DEV_CREATE: the device's RID, the Root Port number and the segment."""

    COMMAND = FwCommandId.DEV_CREATE
    rid: int
    root_port: int
    segment: int

    LAYOUT = (u16("rid"), u16("root_port"), u16("segment"), Reserved(2))


@dataclasses.dataclass(frozen=True)
class DevCreateRsp(FwBody):
    COMMAND = FwCommandId.DEV_CREATE
    dev_handle: int

    LAYOUT = (u32("dev_handle"),)


@dataclasses.dataclass(frozen=True)
class DevConnect(FwBody):
    """SEV-TIO TIO_DEV_CONNECT: traffic-class mask, certificate slot, up to 8 IDE stream IDs (0xFF = none)."""

    COMMAND = FwCommandId.DEV_CONNECT
    dev_handle: int
    tc_mask: int = 1
    cert_slot: int = 0
    ide_stream_ids: bytes = b"\xff" * 8

    LAYOUT = (u32("dev_handle"), u8("tc_mask"), u8("cert_slot"), Reserved(2), Bytes("ide_stream_ids", 8))


@dataclasses.dataclass(frozen=True)
class DevConnectRsp(FwBody):
    """The connected device: its IDE stream (Root Port block and Stream ID) and SPDM session."""

    COMMAND = FwCommandId.DEV_CONNECT
    dev_handle: int
    root_port_block: int
    stream_id: int
    session_id: int

    LAYOUT = (u32("dev_handle"), u8("root_port_block"), u8("stream_id"), Reserved(2), u32("session_id"))


@dataclasses.dataclass(frozen=True)
class DevDisconnect(FwBody):
    COMMAND = FwCommandId.DEV_DISCONNECT
    dev_handle: int
    flags: DisconnectFlag = DisconnectFlag(0)

    LAYOUT = (u32("dev_handle"), u32("flags", DisconnectFlag))


@dataclasses.dataclass(frozen=True)
class DevReclaim(FwBody):
    COMMAND = FwCommandId.DEV_RECLAIM
    dev_handle: int

    LAYOUT = (u32("dev_handle"),)


@dataclasses.dataclass(frozen=True)
class RollKey(FwBody):
    """SEV-TIO ROLL_KEY: program the other key set of the device's stream on both ends, switch to it
    and retire the old one, in the session that connected it (TDISP §11.4.5: keys refresh only there)."""

    COMMAND = FwCommandId.ROLL_KEY
    dev_handle: int

    LAYOUT = (u32("dev_handle"),)


@dataclasses.dataclass(frozen=True)
class RollKeyRsp(FwBody):
    """The stream after the refresh and the key set now in use."""

    COMMAND = FwCommandId.ROLL_KEY
    dev_handle: int
    stream_id: int
    key_set: KeySet

    LAYOUT = (u32("dev_handle"), u8("stream_id"), u8("key_set", KeySet), Reserved(2))


# -- fat TSM: TDIs --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TdiBind(FwBody):
    """SEV-TIO TDI_BIND: bind a TDI (function) of a connected device to a guest; LOCK it."""

    COMMAND = FwCommandId.TDI_BIND
    dev_handle: int
    function: int
    guest_id: int
    vbdf: int = 0
    flags: BindFlag = BindFlag(0)

    LAYOUT = (u32("dev_handle"), u16("function"), u16("vbdf"), u32("guest_id"), u32("flags", BindFlag))


@dataclasses.dataclass(frozen=True)
class TdiRef(FwBody):
    """Which TDI: device handle and function (shared layout of TDI_UNBIND/TDI_REPORT/TDI_STATUS)."""

    dev_handle: int
    function: int

    LAYOUT = (u32("dev_handle"), u16("function"), Reserved(2))


@dataclasses.dataclass(frozen=True)
class TdiUnbind(TdiRef):
    COMMAND = FwCommandId.TDI_UNBIND


@dataclasses.dataclass(frozen=True)
class TdiReport(TdiRef):
    COMMAND = FwCommandId.TDI_REPORT


@dataclasses.dataclass(frozen=True)
class TdiStatus(TdiRef):
    COMMAND = FwCommandId.TDI_STATUS


@dataclasses.dataclass(frozen=True)
class TdiBindRsp(FwBody):
    COMMAND = FwCommandId.TDI_BIND
    state: TdiState

    LAYOUT = (u8("state", TdiState), Reserved(3))


@dataclasses.dataclass(frozen=True)
class TdiReportRsp(FwBody):
    """The TDISP interface report bytes (PROTOCOLS.md §6.4) as the firmware read them after LOCK."""

    COMMAND = FwCommandId.TDI_REPORT
    report: bytes

    LAYOUT = (LengthOf("report_length", 4, "report"), Bytes("report", "report_length"))


@dataclasses.dataclass(frozen=True)
class TdiStatusRsp(FwBody):
    COMMAND = FwCommandId.TDI_STATUS
    state: TdiState
    stream_secure: int

    LAYOUT = (u8("state", TdiState), u8("stream_secure"), Reserved(2))


@dataclasses.dataclass(frozen=True)
class GuestRequest(FwBody):
    """A guest's request about one of its TDIs. It travels sealed, as the plaintext of a GUEST_CHANNEL
    frame (so does its answer), so that the VMM relaying it can neither read nor rewrite it."""

    COMMAND = FwCommandId.GUEST_REQUEST
    guest_id: int
    dev_handle: int
    function: int
    request: GuestRequestType
    data: bytes = b""

    LAYOUT = (u32("guest_id"), u32("dev_handle"), u16("function"), u16("request", GuestRequestType),
              LengthOf("data_length", 4, "data"), Bytes("data", "data_length"))


@dataclasses.dataclass(frozen=True)
class TdiInfo(FwBody):
    """GUEST_REQUEST TDI_INFO answer, like SEV-TIO TDI_INFO: SHA-384 digests of the certificate chain,
    the measurement record and the interface report, plus (for the simulator's guest) the blobs
    themselves so that it can check them against the digests and its own policy."""

    COMMAND = FwCommandId.GUEST_REQUEST
    state: TdiState
    certificates_digest: bytes
    measurements_digest: bytes
    report_digest: bytes
    certificates: bytes = b""
    measurements: bytes = b""
    report: bytes = b""

    LAYOUT = (
        u8("state", TdiState), Reserved(3),
        Bytes("certificates_digest", SHA384_BYTES),
        Bytes("measurements_digest", SHA384_BYTES),
        Bytes("report_digest", SHA384_BYTES),
        LengthOf("certificates_length", 4, "certificates"), Bytes("certificates", "certificates_length"),
        LengthOf("measurements_length", 4, "measurements"), Bytes("measurements", "measurements_length"),
        LengthOf("report_length", 4, "report"), Bytes("report", "report_length"),
    )


@dataclasses.dataclass(frozen=True)
class GuestStateRsp(FwBody):
    """GUEST_REQUEST STATE_CHANGE / TDI_STATE answer: the TDI's state afterwards."""

    COMMAND = FwCommandId.GUEST_REQUEST
    state: TdiState

    LAYOUT = (u8("state", TdiState), Reserved(3))


# -- the DOE proxy loop -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpdmRequest(FwBody):
    """Response body with status SPDM_REQUEST: one DOE object for the host to exchange with a device.

    ``object_type`` is the DOE data object type (SEV-TIO ``data_type``: 1 SPDM -> CMA, 2 SECURED_SPDM
    -> secured CMA); ``payload`` is the object's payload without DOE padding.
    """

    dev_handle: int
    object_type: DoeObjectType
    payload: bytes

    LAYOUT = (u32("dev_handle"), u8("object_type", DoeObjectType), Reserved(3),
              LengthOf("payload_length", 4, "payload"), Bytes("payload", "payload_length"))


@dataclasses.dataclass(frozen=True)
class SpdmContinue(FwBody):
    """Request body of a CONTINUE re-issue: the device's answer to the last SPDM_REQUEST."""

    result: DoeResult
    payload: bytes = b""

    LAYOUT = (u8("result", DoeResult), Reserved(3), LengthOf("payload_length", 4, "payload"),
              Bytes("payload", "payload_length"))


# -- thin key-slot service ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AllocateStream(FwBody):
    """Pick a free selective stream register block in a Root Port's pool for the device ``rid``."""

    COMMAND = FwCommandId.ALLOCATE_STREAM
    root_port: int
    rid: int

    LAYOUT = (u16("root_port"), u16("rid"))


@dataclasses.dataclass(frozen=True)
class AllocateStreamRsp(FwBody):
    COMMAND = FwCommandId.ALLOCATE_STREAM
    root_port: int
    block: int
    stream_id: int

    LAYOUT = (u16("root_port"), u8("block"), u8("stream_id"))


@dataclasses.dataclass(frozen=True)
class StreamRef(FwBody):
    root_port: int
    block: int

    LAYOUT = (u16("root_port"), u8("block"), Reserved(1))


@dataclasses.dataclass(frozen=True)
class ReleaseStream(StreamRef):
    COMMAND = FwCommandId.RELEASE_STREAM


@dataclasses.dataclass(frozen=True)
class ProgramKey(FwBody):
    """Write one Root Port key slot. Key and IFV in natural (AES-GCM) byte order."""

    COMMAND = FwCommandId.PROGRAM_KEY
    root_port: int
    block: int
    key_set: KeySet
    direction: Direction
    sub_stream: SubStream
    key: bytes
    ifv: bytes

    LAYOUT = (u16("root_port"), u8("block"), _key_sub_stream(), Bytes("key", IDE_KEY_BYTES), Bytes("ifv", IFV_BYTES))


@dataclasses.dataclass(frozen=True)
class SlotRef(FwBody):
    root_port: int
    block: int
    key_set: KeySet
    direction: Direction
    sub_stream: SubStream

    LAYOUT = (u16("root_port"), u8("block"), _key_sub_stream())


@dataclasses.dataclass(frozen=True)
class SetGo(SlotRef):
    COMMAND = FwCommandId.SET_GO


@dataclasses.dataclass(frozen=True)
class SetStop(SlotRef):
    COMMAND = FwCommandId.SET_STOP


# -- guest channel ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GuestChannelMessage(FwBody):
    """One sealed guest <-> firmware message: AES-256-GCM under the guest's channel key.

    The plaintext is a complete frame (request from the guest, response from the firmware): a
    key-slot command to the thin service, or a GUEST_REQUEST to the fat TSM. ``sequence`` is per direction, starting at 0; the IV is derived from it and the AAD
    is the first 16 bytes of this body (guest id, direction, sequence), so the VMM can neither
    replay, reorder nor redirect a message without the tag check failing.
    """

    COMMAND = FwCommandId.GUEST_CHANNEL
    guest_id: int
    to_guest: int
    sequence: int
    ciphertext: bytes
    tag: bytes

    LAYOUT = (u32("guest_id"), u8("to_guest"), Reserved(3), u64("sequence"),
              LengthOf("ciphertext_length", 4, "ciphertext"), Bytes("ciphertext", "ciphertext_length"),
              Bytes("tag", GUEST_CHANNEL_TAG_BYTES))

    def aad(self) -> bytes:
        return (self.guest_id.to_bytes(4, "little") + bytes([self.to_guest]) + bytes(3)
                + self.sequence.to_bytes(8, "little"))


# ------------------------------------------------------------------------------------------------
# Which body goes with which frame
# ------------------------------------------------------------------------------------------------

REQUEST_BODIES: dict[FwCommandId, type[FwBody]] = {
    FwCommandId.TIO_STATUS: Empty,
    FwCommandId.DEV_CREATE: DevCreate,
    FwCommandId.DEV_CONNECT: DevConnect,
    FwCommandId.DEV_DISCONNECT: DevDisconnect,
    FwCommandId.DEV_RECLAIM: DevReclaim,
    FwCommandId.ROLL_KEY: RollKey,
    FwCommandId.TDI_BIND: TdiBind,
    FwCommandId.TDI_UNBIND: TdiUnbind,
    FwCommandId.TDI_REPORT: TdiReport,
    FwCommandId.TDI_STATUS: TdiStatus,
    FwCommandId.GUEST_REQUEST: GuestRequest,
    FwCommandId.ALLOCATE_STREAM: AllocateStream,
    FwCommandId.PROGRAM_KEY: ProgramKey,
    FwCommandId.SET_GO: SetGo,
    FwCommandId.SET_STOP: SetStop,
    FwCommandId.RELEASE_STREAM: ReleaseStream,
    FwCommandId.GUEST_CHANNEL: GuestChannelMessage,
}

# Success bodies; commands absent here answer SUCCESS with an Empty body. GUEST_REQUEST's success
# body depends on the request type, so it is chosen by a trial decode (TdiInfo is never 4 bytes).
RESPONSE_BODIES: dict[FwCommandId, type[FwBody]] = {
    FwCommandId.TIO_STATUS: TioStatusRsp,
    FwCommandId.DEV_CREATE: DevCreateRsp,
    FwCommandId.DEV_CONNECT: DevConnectRsp,
    FwCommandId.ROLL_KEY: RollKeyRsp,
    FwCommandId.TDI_BIND: TdiBindRsp,
    FwCommandId.TDI_REPORT: TdiReportRsp,
    FwCommandId.TDI_STATUS: TdiStatusRsp,
    FwCommandId.ALLOCATE_STREAM: AllocateStreamRsp,
    FwCommandId.GUEST_CHANNEL: GuestChannelMessage,
}

# Commands that may answer SPDM_REQUEST (they talk to the device).
# GUEST_CHANNEL is one of them: in the fat model it carries a sealed GUEST_REQUEST (TDI_STATE, STATE_CHANGE).
DOE_COMMANDS = frozenset({FwCommandId.DEV_CONNECT, FwCommandId.DEV_DISCONNECT, FwCommandId.DEV_RECLAIM,
                          FwCommandId.ROLL_KEY,
                          FwCommandId.TDI_BIND, FwCommandId.TDI_UNBIND, FwCommandId.TDI_REPORT,
                          FwCommandId.TDI_STATUS, FwCommandId.GUEST_REQUEST, FwCommandId.GUEST_CHANNEL})

KEY_SLOT_COMMANDS = frozenset({FwCommandId.ALLOCATE_STREAM, FwCommandId.PROGRAM_KEY, FwCommandId.SET_GO,
                               FwCommandId.SET_STOP, FwCommandId.RELEASE_STREAM})


@dataclasses.dataclass(frozen=True)
class FwFrame:
    """A decoded frame: command, direction, status word (typed by direction) and body."""

    command: FwCommandId
    direction: FwDirection
    kind: FwRequestKind | None
    status: FwStatus | None
    body: FwBody

    @property
    def is_request(self) -> bool:
        return self.direction is FwDirection.REQUEST

    def encode(self) -> bytes:
        word = int(self.kind if self.is_request else self.status)  # type: ignore[arg-type]
        return FwHeader(int(self.command), 0 if self.is_request else 1, word, self.body.encode()).encode()

    def summary(self) -> str:
        if self.is_request:
            kind = "" if self.kind is FwRequestKind.NEW else " CONTINUE"
            return f"FW {self.command.name}{kind} req"
        return f"FW {self.command.name} rsp {self.status.name if self.status is not None else '?'}"


def request(body: FwBody, *, command: FwCommandId | None = None) -> FwFrame:
    """A NEW request frame for ``body`` (whose class names its command)."""
    cmd = command if command is not None else body.COMMAND
    if cmd is None:
        raise EncodeError(f"{type(body).__name__} does not name a command; pass command=")
    return FwFrame(FwCommandId(cmd), FwDirection.REQUEST, FwRequestKind.NEW, None, body)


def continuation(command: FwCommandId, body: SpdmContinue) -> FwFrame:
    """The CONTINUE re-issue of ``command`` carrying the device's DOE answer."""
    return FwFrame(FwCommandId(command), FwDirection.REQUEST, FwRequestKind.CONTINUE, None, body)


def response(command: FwCommandId, status: FwStatus = FwStatus.SUCCESS, body: FwBody | None = None) -> FwFrame:
    """A response frame; error statuses default to an empty :class:`ErrorDetail`."""
    if body is None:
        body = Empty() if status is FwStatus.SUCCESS else ErrorDetail()
    return FwFrame(FwCommandId(command), FwDirection.RESPONSE, None, FwStatus(status), body)


def error(command: FwCommandId, status: FwStatus, reason: str) -> FwFrame:
    return response(command, status, ErrorDetail.text(reason))


def _typed(enum_type: Any, value: int, field: str, offset: int) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        raise DecodeError("FwFrame", field, offset, f"value 0x{value:x} is not a valid {enum_type.__name__}") from None


def _body_class(command: FwCommandId, direction: FwDirection, kind: FwRequestKind | None,
                status: FwStatus | None, body: bytes) -> type[FwBody]:
    if direction is FwDirection.REQUEST:
        if kind is FwRequestKind.CONTINUE:
            return SpdmContinue
        return REQUEST_BODIES[command]
    if status is FwStatus.SPDM_REQUEST:
        return SpdmRequest
    if status is not FwStatus.SUCCESS:
        return ErrorDetail
    if command is FwCommandId.GUEST_REQUEST:
        return GuestStateRsp if len(body) == 4 else TdiInfo
    return RESPONSE_BODIES.get(command, Empty)


def decode_frame(data: bytes) -> FwFrame:
    """Decode one complete frame (header + body, no trailing bytes); DecodeError on anything wrong."""
    header = FwHeader.decode(data)
    command = _typed(FwCommandId, header.command, "command", 0)
    direction = FwDirection.RESPONSE if header.response else FwDirection.REQUEST
    kind: FwRequestKind | None = None
    status: FwStatus | None = None
    if direction is FwDirection.REQUEST:
        kind = _typed(FwRequestKind, header.status, "kind", 2)
        if kind is FwRequestKind.CONTINUE and command not in DOE_COMMANDS:
            raise DecodeError("FwFrame", "kind", 2, f"{command.name} never asks for an SPDM exchange to continue")
    else:
        status = _typed(FwStatus, header.status, "status", 2)
        if status is FwStatus.SPDM_REQUEST and command not in DOE_COMMANDS:
            raise DecodeError("FwFrame", "status", 2, f"{command.name} cannot answer SPDM_REQUEST")
    cls = _body_class(command, direction, kind, status, header.body)
    try:
        body = cls.decode_from(Reader(header.body, cls.NAME, HEADER_BYTES), whole=True)
    except DecodeError as exc:
        raise DecodeError(exc.message, f"body.{exc.field}", exc.offset, exc.reason) from None
    return FwFrame(command, direction, kind, status, body)


def frame_fields(data: bytes) -> dict[str, str | bool | None]:
    """The typed fields of a frame's trace event (what alarms and reports read); never raises."""
    try:
        frame = decode_frame(data)
    except DecodeError:
        return {"malformed": True}
    return {"command": frame.command.name, "direction": str(frame.direction.name).lower(),
            "status": None if frame.status is None else frame.status.name,
            "request_kind": None if frame.kind is None else frame.kind.name}


def summarize(data: bytes) -> str:
    """One line for a trace event; never raises."""
    try:
        return decode_frame(data).summary()
    except DecodeError as exc:
        return f"FW malformed ({exc})"
