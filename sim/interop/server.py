"""The responder side of the DMTF emulator socket protocol: one simulated device behind a TCP port.

Speaks what ``spdm_responder_emu`` speaks (INTEROP.md): a client connects, sends TEST "Client
Hello!\\0" and gets "Server Hello!\\0"; then NORMAL frames, each carrying one DOE object, strictly
request then response; then CONTINUE (the server keeps the device, with its SPDM state, and accepts
the next client) or SHUTDOWN (the server answers and exits). Each DOE object goes to ONE device
through a :class:`~sim.interop.doe_driver.DoeTarget` — normally the register-level driver of the
endpoint's DOE mailbox, so the socket device is the same device the simulator runs, and DOE
Discovery is answered by that mailbox: index 0 → (1, 0, next 1), 1 → (1, SPDM, next 2),
2 → (1, secured SPDM, next 0), as the reference responder does.

Where this server differs from the reference, it is on purpose and more forgiving:

* A request the device does not answer (dropped by the mailbox, Error set, TDISP outside a
  session) gets an empty NORMAL frame, the socket's stand-in for the 1 s DOE timeout; the reference
  would send nothing and its requester would block forever.
* An unknown command gets UNKNOWN and the connection stays up (the reference drops the client).
  OOB_ENCAP_* commands also get UNKNOWN: the device has no encapsulated requests (no ENCAP_CAP).
* A frame of the wrong transport type is refused with a log line and that client is disconnected;
  the server itself keeps running (the reference stops).
* A client that disconnects without CONTINUE/SHUTDOWN is treated like CONTINUE.
"""

from __future__ import annotations

import dataclasses
import enum
import socket
import threading
import traceback
from collections.abc import Callable
from typing import BinaryIO

from sim.interop.capture import DoeCapture
from sim.interop.describe import ObjectDescriber
from sim.interop.doe_driver import DoeTarget, MailboxResultKind
from sim.interop.emu_socket import (
    CLIENT_HELLO,
    DEFAULT_PORT,
    MAX_PAYLOAD_BYTES,
    SERVER_HELLO,
    EmuCommand,
    EmuSocketError,
    EmuTransport,
    PeerClosed,
    configure,
    read_frame,
    send,
)
from sim.wire.codec import DecodeError

LOOPBACK = "127.0.0.1"
ACCEPT_POLL_S = 0.2  # how often the accept loop looks at the stop flag

Log = Callable[[str], None]


class ConnectionEnd(enum.StrEnum):
    """How one client connection ended."""

    CONTINUE = "continue"
    SHUTDOWN = "shutdown"
    DISCONNECTED = "disconnected"  # EOF without CONTINUE/SHUTDOWN
    WRONG_TRANSPORT = "wrong-transport"
    BAD_FRAME = "bad-frame"  # a header announcing an absurd size: the stream cannot be resynchronised
    TIMEOUT = "timeout"
    STOPPED = "stopped"  # stop() was called


class StopReason(enum.StrEnum):
    SHUTDOWN = "shutdown"
    MAX_CONNECTIONS = "max-connections"
    STOPPED = "stopped"


@dataclasses.dataclass
class ServeResult:
    """What a server run did (for the CLI's exit line and for tests)."""

    stop_reason: StopReason | None = None
    connections: list[ConnectionEnd] = dataclasses.field(default_factory=list)
    exchanges: int = 0
    unanswered: int = 0
    unknown_commands: int = 0


class EmuServer:
    """A bounded, stoppable server for one device (see the module docstring).

    ``max_connections`` stops the server after that many clients (``--once`` is 1); None serves
    until SHUTDOWN or :meth:`stop`. ``client_timeout`` bounds every read from a client.
    """

    def __init__(self, target: DoeTarget, *, host: str = LOOPBACK, port: int = DEFAULT_PORT,
                 max_connections: int | None = None, client_timeout: float | None = 300.0,
                 max_payload: int = MAX_PAYLOAD_BYTES, log: Log | None = None,
                 pcap: BinaryIO | None = None) -> None:
        self.target = target
        self.host = host
        self.port = port
        self.transport = EmuTransport.PCI_DOE
        self.max_connections = max_connections
        self.client_timeout = client_timeout
        self.max_payload = max_payload
        self.log: Log = log or (lambda line: None)
        self.capture = DoeCapture(pcap) if pcap is not None else None
        self.describer = ObjectDescriber()
        self.result = ServeResult()
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # --- lifecycle ---
    def bind(self) -> tuple[str, int]:
        """Open the listening socket (port 0 picks a free port); returns the bound address."""
        if self._listener is None:
            lst = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                lst.bind((self.host, self.port))
                lst.listen(1)
            except OSError:
                lst.close()
                raise
            lst.settimeout(ACCEPT_POLL_S)
            self._listener = lst
        addr = self._listener.getsockname()
        return str(addr[0]), int(addr[1])

    @property
    def address(self) -> tuple[str, int]:
        return self.bind()

    def stop(self) -> None:
        """Ask a running :meth:`serve` to return soon (safe from another thread)."""
        self._stop.set()
        with self._lock:
            if self._client is not None:
                try:
                    self._client.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> EmuServer:
        self.bind()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    # --- serving ---
    def serve(self) -> ServeResult:
        """Accept clients one at a time until SHUTDOWN, ``max_connections`` or :meth:`stop`."""
        host, port = self.bind()
        assert self._listener is not None
        self.log(f"serving one simulated device on {host}:{port} (transport PCI_DOE)")
        try:
            while True:
                if self._stop.is_set():
                    self.result.stop_reason = StopReason.STOPPED
                    break
                try:
                    conn, peer = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stop.is_set():
                        self.result.stop_reason = StopReason.STOPPED
                        break
                    raise
                end = self._serve_client(conn, f"{peer[0]}:{peer[1]}")
                self.result.connections.append(end)
                if end is ConnectionEnd.SHUTDOWN:
                    self.result.stop_reason = StopReason.SHUTDOWN
                    break
                if end is ConnectionEnd.STOPPED:
                    self.result.stop_reason = StopReason.STOPPED
                    break
                if self.max_connections is not None and len(self.result.connections) >= self.max_connections:
                    self.result.stop_reason = StopReason.MAX_CONNECTIONS
                    break
        finally:
            self.close()
        self.log(f"server stopped ({self.result.stop_reason}): {len(self.result.connections)} connection(s), "
                 f"{self.result.exchanges} exchange(s), {self.result.unanswered} unanswered")
        return self.result

    def _serve_client(self, conn: socket.socket, peer: str) -> ConnectionEnd:
        with self._lock:
            self._client = conn
        self.log(f"client {peer} connected")
        try:
            configure(conn, self.client_timeout)
            end = self._client_loop(conn)
        except PeerClosed as exc:
            end = ConnectionEnd.STOPPED if self._stop.is_set() else ConnectionEnd.DISCONNECTED
            if end is ConnectionEnd.DISCONNECTED:
                self.log(f"client {peer} disconnected without CONTINUE or SHUTDOWN: {exc}")
        except TimeoutError:
            end = ConnectionEnd.TIMEOUT
            self.log(f"client {peer} sent nothing for {self.client_timeout} s; dropping it")
        except (EmuSocketError, OSError) as exc:
            end = ConnectionEnd.STOPPED if self._stop.is_set() else ConnectionEnd.DISCONNECTED
            if end is ConnectionEnd.DISCONNECTED:
                self.log(f"client {peer}: connection error: {exc}")
        finally:
            with self._lock:
                self._client = None
            conn.close()
        self.log(f"client {peer} done ({end})")
        return end

    def _client_loop(self, conn: socket.socket) -> ConnectionEnd:
        while True:
            if self._stop.is_set():
                return ConnectionEnd.STOPPED
            try:
                frame = read_frame(conn, max_payload=self.max_payload)
            except DecodeError as exc:
                self.log(f"refused frame: {exc}; closing the connection (the stream cannot be resynchronised)")
                return ConnectionEnd.BAD_FRAME
            if frame.transport != self.transport:
                self.log(f"refused: client uses transport {frame.known_transport.name if frame.known_transport else ''}"
                         f" ({frame.transport}) but this server serves PCI_DOE ({int(self.transport)}); "
                         "start the client with --trans PCI_DOE")
                return ConnectionEnd.WRONG_TRANSPORT
            command = frame.known_command
            if command is EmuCommand.TEST:
                if frame.payload != CLIENT_HELLO:
                    self.log(f"TEST with an unexpected payload {frame.payload[:32]!r}; answering the hello anyway")
                send(conn, EmuCommand.TEST, self.transport, SERVER_HELLO)
            elif command is EmuCommand.NORMAL:
                send(conn, EmuCommand.NORMAL, self.transport, self._exchange(frame.payload))
            elif command is EmuCommand.CONTINUE:
                send(conn, EmuCommand.CONTINUE, self.transport)
                return ConnectionEnd.CONTINUE
            elif command is EmuCommand.SHUTDOWN:
                send(conn, EmuCommand.SHUTDOWN, self.transport)
                return ConnectionEnd.SHUTDOWN
            else:
                self.result.unknown_commands += 1
                what = command.name if command is not None else f"0x{frame.command:x}"
                self.log(f"command {what} is not supported here; answering UNKNOWN")
                send(conn, EmuCommand.UNKNOWN, self.transport)

    def _exchange(self, request: bytes) -> bytes:
        """One DOE object through the device; the response object, or b"" when there is none."""
        self.result.exchanges += 1
        n = self.result.exchanges
        self._capture(request)
        try:
            result = self.target.exchange(request)
        except Exception as exc:  # the server must outlive a device bug; it is logged in full
            self.result.unanswered += 1
            self.log(f"#{n} {self.describer.describe(request, request=True)} -> device raised "
                     f"{type(exc).__name__}: {exc} (a simulator bug)\n{traceback.format_exc()}")
            return b""
        if result.kind is not MailboxResultKind.RESPONSE:
            self.result.unanswered += 1
            self.log(f"#{n} {self.describer.describe(request, request=True)} -> no response: {result.detail}")
            return b""
        self._capture(result.response)
        self.log(f"#{n} {self.describer.describe(request, request=True)} -> "
                 f"{self.describer.describe(result.response, request=False)}")
        return result.response

    def _capture(self, data: bytes) -> None:
        if self.capture is not None:
            self.capture.record(data)


def serve_device(host: str, port: int, device_factory: Callable[[], DoeTarget], *,
                 max_connections: int | None = None, client_timeout: float | None = 300.0,
                 log: Log | None = None, pcap: BinaryIO | None = None) -> ServeResult:
    """Build one device with ``device_factory`` and serve it until SHUTDOWN or ``max_connections``."""
    server = EmuServer(device_factory(), host=host, port=port, max_connections=max_connections,
                       client_timeout=client_timeout, log=log, pcap=pcap)
    return server.serve()
