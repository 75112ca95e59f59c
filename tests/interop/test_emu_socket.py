"""The emulator socket frame codec and socket helpers (INTEROP.md "Socket framing")."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.interop.client import parse_host_port
from sim.interop.emu_socket import (
    CLIENT_HELLO,
    HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    SERVER_HELLO,
    EmuCommand,
    EmuFrame,
    EmuFrameHeader,
    EmuTransport,
    PeerClosed,
    configure,
    default_port,
    hello_frame,
    read_frame,
    recv_exact,
    write_frame,
)
from sim.wire.codec import DecodeError

TIMEOUT = 5.0

# ------------------------------------------------------------------ known bytes (INTEROP.md)


def test_server_hello_bytes_match_interop_md() -> None:
    frame = EmuFrame(EmuCommand.TEST, EmuTransport.PCI_DOE, SERVER_HELLO)
    assert frame.encode() == bytes.fromhex("0000dead 00000002 0000000e 5365727665722048656c6c6f2100")


def test_client_hello_bytes() -> None:
    # INTEROP.md "Session flow seen on the wire", step 1, byte for byte
    assert hello_frame().encode() == bytes.fromhex("0000dead 00000002 0000000e 436c69656e742048656c6c6f2100")
    assert len(CLIENT_HELLO) == len(SERVER_HELLO) == 14


def test_get_version_normal_frame() -> None:
    doe = bytes.fromhex("01 00 01 00 03 00 00 00 10 84 00 00")
    wire = EmuFrame(EmuCommand.NORMAL, EmuTransport.PCI_DOE, doe).encode()
    assert wire[:HEADER_BYTES] == bytes.fromhex("00000001 00000002 0000000c")
    assert wire[HEADER_BYTES:] == doe


@pytest.mark.parametrize(("command", "value"), [
    (EmuCommand.NORMAL, 0x0001), (EmuCommand.OOB_ENCAP_KEY_UPDATE, 0x8001),
    (EmuCommand.OOB_ENCAP_ENDPOINT_INFO, 0x8002), (EmuCommand.CONTINUE, 0xFFFD),
    (EmuCommand.SHUTDOWN, 0xFFFE), (EmuCommand.UNKNOWN, 0xFFFF), (EmuCommand.TEST, 0xDEAD),
])
def test_command_values_are_big_endian_on_the_wire(command: EmuCommand, value: int) -> None:
    wire = EmuFrame(command, EmuTransport.MCTP).encode()
    assert wire == value.to_bytes(4, "big") + bytes.fromhex("00000001 00000000")


def test_transport_values_and_default_ports() -> None:
    assert [int(t) for t in (EmuTransport.NONE, EmuTransport.MCTP, EmuTransport.PCI_DOE, EmuTransport.TCP)] == \
        [0, 1, 2, 3]
    assert default_port(EmuTransport.PCI_DOE) == default_port(EmuTransport.MCTP) == 2323
    assert default_port(EmuTransport.TCP) == 4194


def test_unknown_command_and_transport_still_decode() -> None:
    frame = EmuFrame.decode(bytes.fromhex("12345678 00000009 00000001 aa"))
    assert frame.command == 0x12345678 and frame.known_command is None
    assert frame.transport == 9 and frame.known_transport is None
    assert "0x12345678" in frame.summary()


# ------------------------------------------------------------------ decode errors


def test_truncated_payload_is_a_decode_error_naming_the_field() -> None:
    with pytest.raises(DecodeError) as err:
        EmuFrame.decode(bytes.fromhex("00000001 00000002 00000010 0102"))
    assert err.value.field == "payload" and err.value.offset == 12


def test_short_header_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as err:
        EmuFrameHeader.decode(bytes(7))
    assert err.value.message == "EmuFrameHeader"


def test_absurd_size_is_refused_before_allocation() -> None:
    header = EmuFrameHeader.decode(bytes.fromhex("00000001 00000002 ffffffff"))
    with pytest.raises(DecodeError) as err:
        header.check_size()
    assert err.value.field == "payload_size" and err.value.offset == 8
    assert str(MAX_PAYLOAD_BYTES) in str(err.value)
    header.check_size(0xFFFF_FFFF)  # an explicit larger limit accepts it


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF_FFFF), st.integers(0, 0xFFFF_FFFF), st.binary(max_size=300))
def test_round_trip(command: int, transport: int, payload: bytes) -> None:
    frame = EmuFrame(command, transport, payload)
    wire = frame.encode()
    assert len(wire) == HEADER_BYTES + len(payload)
    assert EmuFrame.decode(wire) == frame
    assert EmuFrameHeader.decode(wire[:HEADER_BYTES]).payload_size == len(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        EmuFrame.decode(data)
    except DecodeError:
        pass


# ------------------------------------------------------------------ socket helpers


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    b.settimeout(TIMEOUT)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_write_then_read_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    frame = EmuFrame(EmuCommand.NORMAL, EmuTransport.PCI_DOE, bytes(range(200)))
    write_frame(a, frame)
    assert read_frame(b) == frame


def test_read_frame_with_empty_payload(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    write_frame(a, EmuFrame(EmuCommand.SHUTDOWN, EmuTransport.PCI_DOE))
    got = read_frame(b)
    assert got.known_command is EmuCommand.SHUTDOWN and got.payload == b""


def test_frame_arriving_in_pieces_is_reassembled(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    wire = EmuFrame(EmuCommand.NORMAL, EmuTransport.PCI_DOE, b"abcdefgh" * 50).encode()

    def dribble() -> None:
        for i in range(0, len(wire), 7):
            a.sendall(wire[i:i + 7])

    t = threading.Thread(target=dribble)
    t.start()
    got = read_frame(b)
    t.join(TIMEOUT)
    assert got.encode() == wire


def test_eof_between_frames_is_clean(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(PeerClosed) as err:
        read_frame(b)
    assert err.value.clean


def test_eof_inside_a_frame_is_not_clean(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(bytes.fromhex("00000001 00000002 00000008 0102"))
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(PeerClosed) as err:
        read_frame(b)
    assert not err.value.clean and "payload" in str(err.value)


def test_oversized_frame_header_is_refused_without_reading_on(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(bytes.fromhex("00000001 00000002 7fffffff"))
    with pytest.raises(DecodeError):
        read_frame(b, max_payload=1024)


def test_read_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    _, b = pair
    b.settimeout(0.05)
    with pytest.raises(TimeoutError):
        recv_exact(b, 4)


def test_configure_sets_nodelay_and_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        configure(s, 1.5)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert s.gettimeout() == 1.5


def test_one_frame_is_one_send_call() -> None:
    """The header and payload leave in a single write (INTEROP.md: four small writes cost ~44 ms each)."""
    calls: list[bytes] = []

    class Recorder:
        def sendall(self, data: bytes) -> None:
            calls.append(bytes(data))

    frame = EmuFrame(EmuCommand.NORMAL, EmuTransport.PCI_DOE, bytes(40))
    write_frame(Recorder(), frame)  # type: ignore[arg-type]
    assert calls == [frame.encode()]


# ------------------------------------------------------------------ HOST:PORT parsing


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:2323", ("127.0.0.1", 2323)),
    ("localhost", ("localhost", 2323)),
    (":4000", ("127.0.0.1", 4000)),
    ("[::1]:2324", ("::1", 2324)),
    ("[::1]", ("::1", 2323)),
])
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["host:0", "host:70000", "host:abc", "[::1:2323"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)
