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

* Several clients may be connected at once (each in its own thread, exchanges serialized per
  device), so an emulator holding its connection for a guest's life does not lock others out; one
  client beyond ``max_clients`` is refused with a log line.
* The TEST handshake is optional (QEMU sends none); a client that disconnects without
  CONTINUE/SHUTDOWN is treated like CONTINUE (QEMU closes that way).
* A request the device does not answer (dropped by the mailbox, Error set, TDISP outside a
  session) gets an empty NORMAL frame, the socket's stand-in for the 1 s DOE timeout; the reference
  would send nothing and its requester would block forever.
* An unknown command gets UNKNOWN and the connection stays up (the reference drops the client).
  OOB_ENCAP_* commands also get UNKNOWN: the device has no encapsulated requests (no ENCAP_CAP).
* A frame of the wrong transport type is refused with a log line and that client is disconnected;
  the server itself keeps running (the reference stops). Transport NVME (QEMU's ``spdm_trans=nvme``)
  is served when an :class:`~sim.interop.nvme.NvmeSpdmEndpoint` is given.
* TIOSIM_QUERY frames, with any transport and without a handshake, are answered by the state
  channel (sim.interop.events, docs/emulator-events.md).
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
    EmuFrame,
    EmuSocketError,
    EmuTransport,
    PeerClosed,
    configure,
    read_frame,
    send,
)
from sim.interop.nvme import NvmeSpdmEndpoint, NvmeStatus, status_bytes
from sim.wire.codec import DecodeError

LOOPBACK = "127.0.0.1"
ACCEPT_POLL_S = 0.2  # how often the accept loop looks at the stop flag
DEFAULT_MAX_CLIENTS = 4
CLIENT_JOIN_S = 5.0  # how long serve() waits for each client thread after stopping

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
    queries: int = 0
    refused: int = 0  # clients turned away because max_clients were connected


class EmuServer:
    """A bounded, stoppable server for one device (see the module docstring).

    Several clients may be connected at once (``max_clients``, default 4; one more is refused with a
    log line and closed): an emulator such as QEMU keeps its connection open for the guest's whole
    life, and a query client or ``tiosim attest`` must still get in. Exchanges with the device are
    serialized by ``lock`` (shared with the state channel), one request and its response at a time.
    ``max_connections`` stops the server after that many clients ended (``--once`` is 1); None serves
    until SHUTDOWN or :meth:`stop`. ``client_timeout`` bounds the silence of every client (None: none).
    ``query`` answers TIOSIM_QUERY frames (sim.interop.events); ``nvme`` serves QEMU's NVMe storage
    frames; ``on_client(peer, state)`` is told of connects and ends; a response object larger than
    ``max_response`` is not sent (the client would drop it) but logged.
    """

    def __init__(self, target: DoeTarget, *, host: str = LOOPBACK, port: int = DEFAULT_PORT,
                 max_connections: int | None = None, client_timeout: float | None = 300.0,
                 max_payload: int = MAX_PAYLOAD_BYTES, log: Log | None = None,
                 pcap: BinaryIO | None = None, max_clients: int = DEFAULT_MAX_CLIENTS,
                 lock: threading.Lock | None = None, query: Callable[[bytes], bytes] | None = None,
                 nvme: NvmeSpdmEndpoint | None = None, name: str = "one simulated device",
                 on_client: Callable[[str, str], None] | None = None, max_response: int | None = None) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self.target = target
        self.host = host
        self.port = port
        self.transport = EmuTransport.PCI_DOE
        self.max_connections = max_connections
        self.client_timeout = client_timeout
        self.max_payload = max_payload
        self.max_clients = max_clients
        self.max_response = max_response
        self.query = query
        self.nvme = nvme
        self.name = name
        self.on_client = on_client or (lambda peer, state: None)
        self.log: Log = log or (lambda line: None)
        self.capture = DoeCapture(pcap) if pcap is not None else None
        self.describer = ObjectDescriber()
        self.result = ServeResult()
        self.device_lock = lock or threading.Lock()
        self._listener: socket.socket | None = None
        self._clients: dict[socket.socket, threading.Thread] = {}
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
                lst.listen(self.max_clients + 1)
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
            clients = list(self._clients)
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
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
        """Accept clients until SHUTDOWN, ``max_connections`` or :meth:`stop`; each client has its own thread."""
        host, port = self.bind()
        assert self._listener is not None
        self.log(f"serving {self.name} on {host}:{port} (transports PCI_DOE and NVME)")
        try:
            while not self._stop.is_set():
                try:
                    conn, peer = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stop.is_set():
                        break
                    raise
                name = f"{peer[0]}:{peer[1]}"
                with self._lock:
                    busy = len(self._clients) >= self.max_clients
                if busy:
                    self.result.refused += 1
                    self.log(f"client {name} refused: {self.max_clients} client(s) already connected "
                             "(raise --max-clients to allow more)")
                    conn.close()
                    continue
                thread = threading.Thread(target=self._client_thread, args=(conn, name), daemon=True)
                with self._lock:
                    self._clients[conn] = thread
                thread.start()
        finally:
            self.close()
            self.stop()
            with self._lock:
                threads = list(self._clients.values())
            for thread in threads:
                thread.join(CLIENT_JOIN_S)
        if self.result.stop_reason is None:
            self.result.stop_reason = StopReason.STOPPED
        self.log(f"server stopped ({self.result.stop_reason}): {len(self.result.connections)} connection(s), "
                 f"{self.result.exchanges} exchange(s), {self.result.unanswered} unanswered")
        return self.result

    def _client_thread(self, conn: socket.socket, peer: str) -> None:
        try:
            end = self._serve_client(conn, peer)
        finally:
            with self._lock:
                self._clients.pop(conn, None)
        with self._lock:
            self.result.connections.append(end)
            done = len(self.result.connections)
            if self.result.stop_reason is None:
                if end is ConnectionEnd.SHUTDOWN:
                    self.result.stop_reason = StopReason.SHUTDOWN
                elif end is ConnectionEnd.STOPPED and self._stop.is_set():
                    self.result.stop_reason = StopReason.STOPPED
                elif self.max_connections is not None and done >= self.max_connections:
                    self.result.stop_reason = StopReason.MAX_CONNECTIONS
        if self.result.stop_reason is not None:
            self.stop()

    def _serve_client(self, conn: socket.socket, peer: str) -> ConnectionEnd:
        self.log(f"client {peer} connected")
        self.on_client(peer, "connected")
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
            conn.close()
        self.log(f"client {peer} done ({end})")
        self.on_client(peer, str(end))
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
            command = frame.known_command
            if command is EmuCommand.TIOSIM_QUERY:
                self._answer_query(conn, frame)
                continue
            if frame.transport == EmuTransport.NVME and self.nvme is not None:
                end = self._storage_frame(conn, frame)
                if end is not None:
                    return end
                continue
            if frame.transport != self.transport:
                self.log(f"refused: client uses transport {frame.known_transport.name if frame.known_transport else ''}"
                         f" ({frame.transport}) but this server serves PCI_DOE ({int(self.transport)})"
                         f"{' and NVME (4)' if self.nvme is not None else ''}; start the client with --trans PCI_DOE")
                return ConnectionEnd.WRONG_TRANSPORT
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

    def _answer_query(self, conn: socket.socket, frame: EmuFrame) -> None:
        if self.query is None:
            self.result.unknown_commands += 1
            send(conn, EmuCommand.UNKNOWN, frame.transport)
            return
        self.result.queries += 1
        send(conn, EmuCommand.TIOSIM_QUERY, frame.transport, self.query(frame.payload))

    def _storage_frame(self, conn: socket.socket, frame: EmuFrame) -> ConnectionEnd | None:
        """One NVMe storage frame (sim.interop.nvme); how the connection ends, or None to read on."""
        assert self.nvme is not None
        command = frame.known_command
        transport = EmuTransport.NVME
        if command is EmuCommand.STORAGE_IF_SEND:
            with self.device_lock:
                self.result.exchanges += 1
                status = self.nvme.send(frame.payload)
            if status is not NvmeStatus.SUCCESS:
                self.log(f"NVMe IF_SEND refused ({status.name}): {self.nvme.refusals[-1]}")
            send(conn, EmuCommand.STORAGE_ACK_STATUS, transport, status_bytes(status))
        elif command is EmuCommand.STORAGE_IF_RECV:
            with self.device_lock:
                status, data = self.nvme.receive(frame.payload)
            send(conn, EmuCommand.STORAGE_ACK_STATUS, transport, status_bytes(status))
            if status is NvmeStatus.SUCCESS:
                send(conn, EmuCommand.NORMAL, transport, data)
            else:
                self.log(f"NVMe IF_RECV refused ({status.name}): {self.nvme.refusals[-1]}")
        elif command is EmuCommand.CONTINUE:
            send(conn, command, transport)
            return ConnectionEnd.CONTINUE
        elif command is EmuCommand.SHUTDOWN:
            send(conn, command, transport)
            return ConnectionEnd.SHUTDOWN
        else:
            self.result.unknown_commands += 1
            send(conn, EmuCommand.UNKNOWN, transport)
        return None

    def _exchange(self, request: bytes) -> bytes:
        """One DOE object through the device; the response object, or b"" when there is none."""
        with self.device_lock:
            return self._exchange_locked(request)

    def _exchange_locked(self, request: bytes) -> bytes:
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
        if self.max_response is not None and len(result.response) > self.max_response:
            self.result.unanswered += 1
            self.log(f"#{n} {self.describer.describe(request, request=True)} -> a {len(result.response)}-byte "
                     f"response exceeds --max-response {self.max_response}; sent none (a simulator bug: the "
                     "responder's DataTransferSize should have bounded it)")
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
