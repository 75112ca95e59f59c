"""The DMTF emulator ("platform") socket protocol: frames and blocking socket helpers (INTEROP.md).

spdm-emu's ``spdm_responder_emu`` / ``spdm_requester_emu`` and the SPDM-Responder-Validator talk
to a peer over plain TCP, the responder being the server. Every frame, in both directions, is a
12-byte header of three **big-endian** u32 (command, transport type, payload size) followed by the
payload; for PCI_DOE the payload is one whole DOE data object, header and DW padding included.

Two choices here are deliberate:

* A frame goes out in ONE ``sendall`` of header + payload on a socket with TCP_NODELAY. The
  reference writes a frame in four small writes without TCP_NODELAY, and Nagle plus delayed ACK
  then cost about 44 ms per message (INTEROP.md "Socket framing").
* Before every ``recv`` on a TCP socket, TCP_QUICKACK is re-armed (Linux clears it after each
  ACK): the reference tools write a frame as several small ``send`` calls without TCP_NODELAY, so
  their second write waits for our ACK of the first, and a delayed ACK makes that ~44 ms per
  message (measured in /work/notes/interop.md §6.5; with QUICKACK, 0.1 ms).
* A header announcing more than ``max_payload`` bytes (default: the largest DOE object, 1 MiB) is
  refused with a :class:`~sim.wire.codec.DecodeError` before anything is allocated, so a garbage
  header cannot make us reserve gigabytes.
"""

from __future__ import annotations

import dataclasses
import enum
import socket

from sim.wire.codec import Bytes, DecodeError, LengthOf, Message, UInt
from sim.wire.doe import MAX_LENGTH_DW

DEFAULT_PORT = 2323  # transports NONE, MCTP and PCI_DOE
DEFAULT_TCP_PORT = 4194  # transport TCP
HEADER_BYTES = 12
MAX_PAYLOAD_BYTES = MAX_LENGTH_DW * 4  # a DOE object is at most 2^18 DW = 1 MiB (PROTOCOLS.md §1.3)
CLIENT_HELLO = b"Client Hello!\x00"  # 14 bytes, NUL included (the C string with its terminator)
SERVER_HELLO = b"Server Hello!\x00"


class EmuCommand(enum.IntEnum):
    """Command field of a frame (spdm-emu ``command.h``)."""

    NORMAL = 0x0001  # payload is a transport message
    STORAGE_IF_SEND = 0x0002  # QEMU NVMe Security Send: storage header + message (sim.interop.nvme)
    STORAGE_IF_RECV = 0x0003  # QEMU NVMe Security Receive: storage header; answered by ACK_STATUS (+ data)
    STORAGE_ACK_STATUS = 0x0004  # the server's 2-byte big-endian NVMe status for IF_SEND / IF_RECV
    TIOSIM_QUERY = 0x7451  # tiosim's state channel (docs/emulator-events.md); not a DMTF command
    OOB_ENCAP_KEY_UPDATE = 0x8001  # payload: a 4-byte session id
    OOB_ENCAP_ENDPOINT_INFO = 0x8002
    CONTINUE = 0xFFFD  # client done; server keeps SPDM state and accepts the next client
    SHUTDOWN = 0xFFFE  # client done; server closes and exits
    UNKNOWN = 0xFFFF  # server's answer to a command it does not know
    TEST = 0xDEAD  # hello handshake


class EmuTransport(enum.IntEnum):
    """Transport type field: what the payload of a NORMAL frame is."""

    NONE = 0
    MCTP = 1
    PCI_DOE = 2
    TCP = 3  # spdm-emu's value; QEMU's SpdmTransportType calls 3 SCSI
    NVME = 4  # QEMU's spdm_trans=nvme: NVMe Security Send/Receive (DSP0286), see sim.interop.nvme


def default_port(transport: EmuTransport) -> int:
    """The port the reference tools use for ``transport`` unless ``--port`` overrides it."""
    return DEFAULT_TCP_PORT if transport is EmuTransport.TCP else DEFAULT_PORT


def _name(enum_type: type[enum.IntEnum], value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return f"0x{value:x}"


@dataclasses.dataclass(frozen=True)
class EmuFrameHeader(Message):
    """The 12-byte frame header alone, read first so that the payload size is known before reading on.

    Command and transport stay plain ints: a server must be able to read a frame with a command it
    does not know (and answer UNKNOWN) or a transport it does not serve (and refuse it).
    """

    command: int
    transport: int
    payload_size: int

    NAME = "EmuFrameHeader"
    LAYOUT = (
        UInt("command", 4, big_endian=True),
        UInt("transport", 4, big_endian=True),
        UInt("payload_size", 4, big_endian=True),
    )

    def check_size(self, max_payload: int = MAX_PAYLOAD_BYTES) -> None:
        """Refuse an absurd payload size before allocating for it."""
        if self.payload_size > max_payload:
            raise DecodeError(self.NAME, "payload_size", 8,
                              f"{self.payload_size} bytes exceeds the limit of {max_payload} bytes")


@dataclasses.dataclass(frozen=True)
class EmuFrame(Message):
    """One frame: command, transport type and payload (the size is derived)."""

    command: int
    transport: int
    payload: bytes = b""

    NAME = "EmuFrame"
    LAYOUT = (
        UInt("command", 4, big_endian=True),
        UInt("transport", 4, big_endian=True),
        LengthOf("payload_size", 4, "payload", big_endian=True),
        Bytes("payload", "payload_size"),
    )

    @property
    def known_command(self) -> EmuCommand | None:
        try:
            return EmuCommand(self.command)
        except ValueError:
            return None

    @property
    def known_transport(self) -> EmuTransport | None:
        try:
            return EmuTransport(self.transport)
        except ValueError:
            return None

    def summary(self) -> str:
        return (f"{_name(EmuCommand, self.command)} transport={_name(EmuTransport, self.transport)} "
                f"size={len(self.payload)}")


def hello_frame(transport: EmuTransport = EmuTransport.PCI_DOE) -> EmuFrame:
    """The client's TEST handshake frame."""
    return EmuFrame(EmuCommand.TEST, transport, CLIENT_HELLO)


# --------------------------------------------------------------------------------------------
# blocking socket helpers
# --------------------------------------------------------------------------------------------


class EmuSocketError(Exception):
    """The connection failed in a way the protocol cannot recover from (not a decode error)."""


class PeerClosed(EmuSocketError):
    """The peer closed the connection; ``clean`` when it did so between frames, not inside one."""

    def __init__(self, detail: str, *, clean: bool) -> None:
        super().__init__(detail)
        self.clean = clean


def configure(sock: socket.socket, timeout: float | None) -> None:
    """TCP_NODELAY (frames must not wait for Nagle) and a timeout for every blocking call."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def _quickack(sock: socket.socket) -> None:
    """ACK at once instead of delaying: re-armed before each read, as Linux resets it."""
    if _QUICKACK is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass


def recv_exact(sock: socket.socket, n: int, *, what: str = "data", at_boundary: bool = False) -> bytes:
    """Exactly ``n`` bytes; PeerClosed on EOF (``clean`` if EOF came before the first byte at a boundary)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        _quickack(sock)
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            clean = at_boundary and got == 0
            raise PeerClosed(f"peer closed the connection {'between frames' if clean else f'inside {what}'}"
                             f" ({got} of {n} bytes read)", clean=clean)
        got += k
    return bytes(buf)


def read_frame(sock: socket.socket, *, max_payload: int = MAX_PAYLOAD_BYTES) -> EmuFrame:
    """Read one frame. DecodeError for an oversized header; PeerClosed; TimeoutError from the socket."""
    header = EmuFrameHeader.decode(recv_exact(sock, HEADER_BYTES, what="a frame header", at_boundary=True))
    header.check_size(max_payload)
    payload = recv_exact(sock, header.payload_size, what="a frame payload") if header.payload_size else b""
    return EmuFrame(header.command, header.transport, payload)


def write_frame(sock: socket.socket, frame: EmuFrame) -> None:
    """Send a frame in a single write (header and payload together)."""
    sock.sendall(frame.encode())


def send(sock: socket.socket, command: EmuCommand | int, transport: EmuTransport | int, payload: bytes = b"") -> None:
    write_frame(sock, EmuFrame(int(command), int(transport), payload))
