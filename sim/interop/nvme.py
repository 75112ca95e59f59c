"""SPDM over NVMe Security Send / Receive, as QEMU's ``spdm_trans=nvme`` forwards it (DSP0286 storage binding).

QEMU's NVMe controller (hw/nvme/ctrl.c, QEMU 10.2+) turns an admin Security Send with Security
Protocol 0xE8 (DMTF SPDM) into one socket frame of command ``STORAGE_IF_SEND`` and transport type
NVME (4), and a Security Receive into ``STORAGE_IF_RECV``. Both payloads start with a 7-byte
"virtual" storage header, little-endian and packed:

    security_protocol u8 (0xE8) | security_protocol_specific u16 | length u32

SPSP0 (the low byte) carries the DSP0286 operation in bits 7:2 and the connection id in bits 1:0;
SPSP1 must be 0. IF_SEND's header is followed by ``length`` message bytes; IF_RECV's ``length`` is
the host's allocation length. The server answers every IF_SEND and IF_RECV with a 2-byte
**big-endian** NVMe status (command ``STORAGE_ACK_STATUS``) and, after a successful IF_RECV status,
one more frame with the response bytes (at most the allocation length).

:class:`NvmeSpdmEndpoint` is the sans-IO device side: a SPDM message (operation MESSAGE) goes to the
device's firmware as a DOE SPDM payload would (``handle_doe``), and the answer waits for the next
IF_RECV of the same operation. Secured messages (operation SECURED_MESSAGE) are refused with
Invalid Field: DSP0286 records carry a sequence number that the DOE-format record code here does not
produce, so a session over NVMe is not offered rather than half-offered.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

from sim.wire.codec import DecodeError, Message, UInt

SECURITY_PROTOCOL_DMTF_SPDM = 0xE8
HEADER_BYTES = 7
STATUS_BYTES = 2
STORAGE_BINDING_VERSION = 0x1000  # DSP0286 1.0


class StorageOperation(enum.IntEnum):
    """SPSP0 bits 7:2 (DSP0286)."""

    DISCOVERY = 0x01
    PENDING_INFO = 0x02
    MESSAGE = 0x05
    SECURED_MESSAGE = 0x06


class NvmeStatus(enum.IntEnum):
    """The NVMe status values this endpoint returns (Status Field without the phase bit, DNR in bit 14)."""

    SUCCESS = 0x0000
    INVALID_FIELD = 0x4002  # Invalid Field in Command, Do Not Retry
    SEQUENCE_ERROR = 0x400C  # Command Sequence Error: IF_RECV with nothing to receive


@dataclasses.dataclass(frozen=True)
class StorageHeader(Message):
    """The 7-byte virtual storage header QEMU puts before an IF_SEND message or sends alone for IF_RECV."""

    security_protocol: int
    spsp: int
    length: int

    NAME = "StorageHeader"
    LAYOUT = (UInt("security_protocol", 1), UInt("spsp", 2), UInt("length", 4))

    @classmethod
    def for_operation(cls, operation: StorageOperation, length: int, connection_id: int = 0) -> StorageHeader:
        return cls(SECURITY_PROTOCOL_DMTF_SPDM, (int(operation) << 2) | (connection_id & 0x3), length)

    @property
    def operation(self) -> int:
        return (self.spsp & 0xFC) >> 2

    @property
    def connection_id(self) -> int:
        return self.spsp & 0x3


def split_send(payload: bytes) -> tuple[StorageHeader, bytes]:
    """An IF_SEND payload: its header and exactly ``length`` message bytes (DecodeError naming the field)."""
    header = StorageHeader.decode(payload[:HEADER_BYTES]) if len(payload) >= HEADER_BYTES else \
        StorageHeader.decode(payload)  # raises the codec's "truncated" DecodeError
    body = payload[HEADER_BYTES:]
    if len(body) != header.length:
        raise DecodeError(StorageHeader.NAME, "length", 3,
                          f"header says {header.length} message bytes, the frame carries {len(body)}")
    return header, body


def status_bytes(status: NvmeStatus | int) -> bytes:
    return int(status).to_bytes(STATUS_BYTES, "big")


def discovery_response() -> bytes:
    """Storage discovery data (32 bytes): length, binding version, one connection, MESSAGE supported.

    The field order is libspdm's ``spdm_storage_discovery_response_t``; the byte order (little-endian)
    and the bitmap encoding (bit n = operation n) are assumptions not checked against DSP0286's text.
    """
    body = bytearray(32)
    body[0:2] = (32).to_bytes(2, "little")
    body[2:4] = STORAGE_BINDING_VERSION.to_bytes(2, "little")
    body[4] = 0  # connection parameters: connection id 0 only
    body[8] = 1 << StorageOperation.MESSAGE  # supported operations bitmap
    return bytes(body)


SpdmHandler = Callable[[bytes], bytes | None]


class NvmeSpdmEndpoint:
    """The device side of SPDM over NVMe Security Send / Receive (module docstring); never raises on input."""

    def __init__(self, handle_spdm: SpdmHandler) -> None:
        self.handle_spdm = handle_spdm
        self.pending: bytes | None = None
        self.refusals: list[str] = []

    def _refuse(self, why: str) -> NvmeStatus:
        self.refusals.append(why)
        return NvmeStatus.INVALID_FIELD

    def _check(self, header: StorageHeader) -> str | None:
        if header.security_protocol != SECURITY_PROTOCOL_DMTF_SPDM:
            return f"security protocol 0x{header.security_protocol:02x} is not DMTF SPDM (0xe8)"
        if header.spsp >> 8:
            return f"SPSP1 is 0x{header.spsp >> 8:02x}, DSP0286 requires 0"
        if header.connection_id:
            return f"connection id {header.connection_id}: only connection 0 is offered"
        return None

    def send(self, payload: bytes) -> NvmeStatus:
        """One IF_SEND payload; the status to acknowledge it with."""
        try:
            header, message = split_send(payload)
        except DecodeError as exc:
            return self._refuse(str(exc))
        problem = self._check(header)
        if problem:
            return self._refuse(problem)
        if header.operation == StorageOperation.SECURED_MESSAGE:
            return self._refuse("secured SPDM over NVMe is not offered (module docstring)")
        if header.operation != StorageOperation.MESSAGE:
            return self._refuse(f"operation {header.operation} cannot be sent (only MESSAGE, 5)")
        self.pending = self.handle_spdm(message)
        if self.pending is None:
            return self._refuse("the device gave no response to the message")
        return NvmeStatus.SUCCESS

    def receive(self, payload: bytes) -> tuple[NvmeStatus, bytes]:
        """One IF_RECV payload (the header alone); the status and, on success, the data to send after it."""
        try:
            header = StorageHeader.decode(payload)
        except DecodeError as exc:
            return self._refuse(str(exc)), b""
        problem = self._check(header)
        if problem:
            return self._refuse(problem), b""
        if header.length == 0:
            return self._refuse("allocation length 0"), b""
        if header.operation == StorageOperation.DISCOVERY:
            return NvmeStatus.SUCCESS, discovery_response()[:header.length]
        if header.operation != StorageOperation.MESSAGE:
            return self._refuse(f"operation {header.operation} cannot be received (DISCOVERY or MESSAGE)"), b""
        if self.pending is None:
            self.refusals.append("IF_RECV with no response pending")
            return NvmeStatus.SEQUENCE_ERROR, b""
        data, self.pending = self.pending, None
        return NvmeStatus.SUCCESS, data[:header.length]
