"""The requester side of the DMTF emulator socket protocol: drive flows against a socket responder.

:class:`EmuClient` connects (to ``spdm_responder_emu`` or ``tiosim serve-device``), does the TEST
handshake, and offers :meth:`EmuClient.transport`, a function for
:func:`sim.protocols.flow.run_flow`: each :class:`~sim.protocols.flow.Outbound` becomes one DOE
object in one NORMAL frame, and the NORMAL frame that comes back is decoded into the DOE payload the
flow receives (pad bytes included, as from a real mailbox). Every read has a timeout. Anything that
means "no usable answer" — a timeout, an empty NORMAL frame, a response that is not a DOE object of
the requested type, the peer closing — is ``None`` to the flow (its NO_RESPONSE), with the reason kept
in :attr:`EmuClient.last_problem`. After a timeout or a broken stream the client stops sending,
because a late answer would pair with the wrong request.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any, BinaryIO

from sim.interop.capture import DoeCapture
from sim.interop.emu_socket import (
    DEFAULT_PORT,
    MAX_PAYLOAD_BYTES,
    SERVER_HELLO,
    EmuCommand,
    EmuFrame,
    EmuSocketError,
    EmuTransport,
    configure,
    hello_frame,
    read_frame,
    send,
    write_frame,
)
from sim.protocols.flow import Flow, Outbound
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeDiscoveryRequest, DoeDiscoveryResponse, DoeObject, DoeObjectType

DEFAULT_TIMEOUT_S = 30.0
MAX_DISCOVERY_ENTRIES = 256  # discovery indexes are one byte

Log = Callable[[str], None]


class EmuClientError(Exception):
    """The connection or handshake failed: one line saying what happened."""


def parse_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """"HOST:PORT", "HOST", "[v6]:PORT" or ":PORT" (loopback); ValueError says what is wrong."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    host = host or "127.0.0.1"
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be a number 1-65535")
    return host, int(port_text)


class EmuClient:
    """One connection to a socket responder (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 transport: EmuTransport = EmuTransport.PCI_DOE, timeout: float = DEFAULT_TIMEOUT_S,
                 max_payload: int = MAX_PAYLOAD_BYTES, log: Log | None = None, pcap: BinaryIO | None = None) -> None:
        self.host = host
        self.port = port
        self.transport_type = transport
        self.timeout = timeout
        self.max_payload = max_payload
        self.log: Log = log or (lambda line: None)
        self.capture = DoeCapture(pcap) if pcap is not None else None
        self.sock: socket.socket | None = None
        self.broken = False
        self.last_problem = ""
        self.exchanges = 0

    # --- connection ---
    def connect(self) -> None:
        """Connect and do the TEST handshake; EmuClientError says why not."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise EmuClientError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        configure(sock, self.timeout)
        self.sock = sock
        try:
            write_frame(sock, hello_frame(self.transport_type))
            answer = read_frame(sock, max_payload=self.max_payload)
        except (OSError, EmuSocketError, DecodeError) as exc:
            self.close_socket()
            raise EmuClientError(f"handshake with {self.host}:{self.port} failed: {exc}") from None
        if answer.command != EmuCommand.TEST or answer.payload != SERVER_HELLO:
            self.close_socket()
            raise EmuClientError(f"handshake with {self.host}:{self.port}: expected TEST {SERVER_HELLO!r}, "
                                 f"got {answer.summary()} {answer.payload[:32]!r}")
        if answer.transport != self.transport_type:
            self.close_socket()
            raise EmuClientError(f"server answered with transport {answer.transport}, we use "
                                 f"{self.transport_type.name} ({int(self.transport_type)})")
        self.log(f"connected to {self.host}:{self.port} (transport {self.transport_type.name})")

    def __enter__(self) -> EmuClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self, command: EmuCommand = EmuCommand.SHUTDOWN) -> bool:
        """End the connection with SHUTDOWN (server exits) or CONTINUE (server waits for the next client).

        True when the server echoed the command. Never raises.
        """
        if command not in (EmuCommand.SHUTDOWN, EmuCommand.CONTINUE):
            raise ValueError("close with SHUTDOWN or CONTINUE")
        if self.sock is None:
            return False
        ok = False
        try:
            if not self.broken:
                send(self.sock, command, self.transport_type)
                echo = read_frame(self.sock, max_payload=self.max_payload)
                ok = echo.command == command
                if not ok:
                    self.log(f"{command.name}: server answered {echo.summary()}")
        except (OSError, EmuSocketError, DecodeError) as exc:
            self.log(f"{command.name}: {exc}")
        finally:
            self.close_socket()
        return ok

    # --- exchanges ---
    def _fail(self, problem: str, *, broken: bool) -> None:
        self.last_problem = problem
        self.broken = self.broken or broken
        self.log(problem)

    def exchange_object(self, request: bytes) -> bytes | None:
        """One raw DOE object out, the raw response object back (None: no usable answer)."""
        if self.sock is None or self.broken:
            self._fail("no connection (closed, or broken by an earlier timeout)", broken=True)
            return None
        self._capture(request)
        try:
            send(self.sock, EmuCommand.NORMAL, self.transport_type, request)
            frame = read_frame(self.sock, max_payload=self.max_payload)
        except TimeoutError:
            self._fail(f"no answer within {self.timeout} s", broken=True)
            return None
        except (OSError, EmuSocketError, DecodeError) as exc:
            self._fail(f"connection failed: {exc}", broken=True)
            return None
        self.exchanges += 1
        return self._check_frame(frame)

    def _check_frame(self, frame: EmuFrame) -> bytes | None:
        if frame.transport != self.transport_type:
            self._fail(f"answer with transport {frame.transport}, expected {int(self.transport_type)}", broken=True)
            return None
        if frame.command != EmuCommand.NORMAL:
            self._fail(f"expected a NORMAL frame, got {frame.summary()}", broken=False)
            return None
        if not frame.payload:
            self._fail("the device gave no response (empty NORMAL frame)", broken=False)
            return None
        self._capture(frame.payload)
        return frame.payload

    def transport(self, out: Outbound) -> bytes | None:
        """The transport function for :func:`~sim.protocols.flow.run_flow`: DOE payload in, DOE payload out."""
        raw = self.exchange_object(DoeObject.pcisig(out.object_type, out.payload).encode())
        if raw is None:
            return None
        try:
            obj = DoeObject.decode(raw)
        except DecodeError as exc:
            self._fail(f"answer is not a DOE object: {exc}", broken=False)
            return None
        if obj.object_type is not out.object_type:
            self._fail(f"asked with DOE type {out.object_type.name}, answered with {obj.summary()}", broken=False)
            return None
        return obj.payload

    def _capture(self, data: bytes) -> None:
        if self.capture is not None:
            self.capture.record(data)


def doe_discovery() -> Flow[list[tuple[int, int]] | None]:
    """Walk DOE Discovery from index 0 until Next Index is 0: the (vendor ID, type) pairs, or None on silence.

    The request uses Discovery Version 0 as the reference requester does; the reference responder
    and this simulator's mailbox both accept it.
    """
    found: list[tuple[int, int]] = []
    index = 0
    for _ in range(MAX_DISCOVERY_ENTRIES):
        answer = yield Outbound(DoeObjectType.DISCOVERY, DoeDiscoveryRequest(index).encode())
        if answer is None or len(answer) < 4:
            return None
        try:
            rsp = DoeDiscoveryResponse.decode(answer[:4])
        except DecodeError:
            return None
        found.append((rsp.vendor_id, rsp.data_object_type))
        if rsp.next_index == 0:
            return found
        index = rsp.next_index
    return found


def query_state(host: str, port: int, request: dict[str, Any] | bytes | None = None, *,
                timeout: float = DEFAULT_TIMEOUT_S, transport: EmuTransport = EmuTransport.PCI_DOE) -> dict[str, Any]:
    """One TIOSIM_QUERY on its own connection (docs/emulator-events.md): the decoded JSON answer.

    No TEST handshake is needed for the query; the connection ends without SHUTDOWN, so the server and its
    other clients are unaffected. EmuClientError when the server is unreachable or answers something else.
    """
    payload = request if isinstance(request, bytes) else json.dumps(request or {"op": "state"}).encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            configure(sock, timeout)
            send(sock, EmuCommand.TIOSIM_QUERY, transport, payload)
            frame = read_frame(sock)
    except (OSError, EmuSocketError, DecodeError) as exc:
        raise EmuClientError(f"query to {host}:{port} failed: {exc}") from None
    if frame.command != EmuCommand.TIOSIM_QUERY:
        raise EmuClientError(f"query to {host}:{port}: expected a TIOSIM_QUERY answer, got {frame.summary()}")
    try:
        answer = json.loads(frame.payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EmuClientError(f"query to {host}:{port}: the answer is not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise EmuClientError(f"query to {host}:{port}: the answer is not a JSON object")
    return answer
