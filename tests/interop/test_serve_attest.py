"""``serve-device`` and ``attest`` over loopback: a bounded server in a thread, our client against it.

Every socket has a timeout and every server thread is joined with one, so nothing here can hang.
"""

from __future__ import annotations

import argparse
import io
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from rich.console import Console

from sim import cli as tiosim_cli
from sim.commands import attest as attest_cmd
from sim.commands import serve_device as serve_cmd
from sim.commands.common import EXIT_USAGE, UserError
from sim.crypto.drbg import DeterministicRandom
from sim.engine.trace import LINKTYPE_PCI_DOE, parse_pcap
from sim.interop.attest_flow import AttestProcedure, StepResult
from sim.interop.client import EmuClient, EmuClientError, doe_discovery
from sim.interop.describe import ObjectDescriber
from sim.interop.device import (
    DEFAULT_SEED,
    SocketDevice,
    build_socket_device,
    default_identity,
    default_trusted_roots,
)
from sim.interop.doe_driver import DoeTarget, MailboxResult
from sim.interop.emu_socket import (
    CLIENT_HELLO,
    EmuCommand,
    EmuFrame,
    EmuTransport,
    read_frame,
    write_frame,
)
from sim.interop.server import ConnectionEnd, EmuServer, ServeResult, StopReason, serve_device
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Outbound, run_flow
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SpdmRequester
from sim.wire.doe import DoeObject, DoeObjectType
from sim.wire.spdm import decode_spdm
from sim.wire.spdm.common import ErrorCode
from sim.wire.spdm.error import ErrorResponse
from sim.wire.spdm.version import Version
from sim.wire.tdisp import InterfaceId, TdiState

TIMEOUT = 5.0
GET_VERSION = bytes.fromhex("10 84 00 00")
GET_VERSION_DOE = bytes.fromhex("01 00 01 00 03 00 00 00 10 84 00 00")


@pytest.fixture(scope="module")
def device() -> SocketDevice:
    return build_socket_device(seed=7)


@contextmanager
def running(target: DoeTarget, **kw: object) -> Iterator[tuple[EmuServer, str, int, list[str]]]:
    logs: list[str] = []
    server = EmuServer(target, port=0, log=logs.append, client_timeout=TIMEOUT, **kw)  # type: ignore[arg-type]
    host, port = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server, host, port, logs
    finally:
        server.stop()
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "server thread did not stop"


def raw_connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def hello(sock: socket.socket) -> None:
    write_frame(sock, EmuFrame(EmuCommand.TEST, EmuTransport.PCI_DOE, CLIENT_HELLO))
    answer = read_frame(sock)
    assert answer.command == EmuCommand.TEST


def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        threading.Event().wait(0.05)
    raise AssertionError("condition not reached")


def make_requester(version: str | None, seed: int = DEFAULT_SEED) -> tuple[SpdmRequester, ProtocolEnv]:
    env = ProtocolEnv(DeterministicRandom(seed, "attest-test"), "attest-test")
    policy = VerificationPolicy(trusted_roots=tuple(default_trusted_roots(seed)))
    return SpdmRequester(RequesterConfig(max_version=version), policy, env), env


# ------------------------------------------------------------------ handshake and discovery


def test_handshake_bytes_are_those_of_interop_md(device: SocketDevice) -> None:
    # INTEROP.md "Session flow seen on the wire", step 1: the client's TEST frame, byte for byte
    client_hello = bytes.fromhex("0000dead 00000002 0000000e 436c69656e742048656c6c6f2100")
    with running(device.target) as (_, host, port, _logs), raw_connect(host, port) as sock:
        sock.sendall(client_hello)
        answer = recv_all(sock, 26)
    assert answer == bytes.fromhex("0000dead 00000002 0000000e") + b"Server Hello!\x00"


def recv_all(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def test_discovery_answers_like_the_reference_responder(device: SocketDevice) -> None:
    with running(device.target) as (_, host, port, logs), EmuClient(host, port, timeout=TIMEOUT) as client:
        assert run_flow(doe_discovery(), client.transport) == [(1, 0), (1, 1), (1, 2)]
        raw = client.exchange_object(bytes.fromhex("01 00 00 00 03 00 00 00 00 00 00 00"))
        assert raw == bytes.fromhex("01 00 00 00 03 00 00 00 01 00 00 01")
    assert any("DISCOVERY_RESP SECURED_SPDM next=0" in line for line in logs)


def test_get_version_goes_through_the_mailbox(device: SocketDevice) -> None:
    before = device.endpoint.mailbox.stats.requests
    with running(device.target) as (_, host, port, logs), EmuClient(host, port, timeout=TIMEOUT) as client:
        payload = client.transport(Outbound(DoeObjectType.SPDM, GET_VERSION))
        assert payload is not None
        version = decode_spdm(payload, allow_trailing=True)
        assert isinstance(version, Version)
        assert {(e.major, e.minor) for e in version.entries} >= {(1, 2), (1, 3)}
    assert device.endpoint.mailbox.stats.requests == before + 1  # register level, not a shortcut
    assert any("GET_VERSION" in line and "VERSION" in line.split("->")[1] for line in logs)


# ------------------------------------------------------------------ malformed input


MALFORMED = [
    b"",  # empty NORMAL payload
    b"\x01",
    bytes.fromhex("01 00 01 00 04 00 00 00 10 84 00 00"),  # Length says 4 DW, 3 given
    bytes.fromhex("01 00 01 01 03 00 00 00 10 84 00 00"),  # reserved byte set
    bytes.fromhex("01 00 01 00 01 00 00 00"),  # Length shorter than the header
    bytes.fromhex("02 00 01 00 03 00 00 00 10 84 00 00"),  # unknown vendor
    bytes.fromhex("01 00 07 00 03 00 00 00 10 84 00 00"),  # unknown type
    bytes.fromhex("01 00 00 00 03 00 00 00 00 07 00 00"),  # discovery with a bad version byte
    bytes.fromhex("01 00 01 00 03 00 00 00 ff ff ff ff"),  # SPDM garbage
    bytes.fromhex("01 00 02 00 04 00 00 00 01 02 03 04 05 06 07 08"),  # secured record of no session
    bytes.fromhex("01 00 01 00 03 00 00 00 10 84 00"),  # not a DW multiple
]


def test_malformed_objects_never_kill_the_server(device: SocketDevice) -> None:
    rng = random.Random(4)
    garbage = MALFORMED + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(40)]
    with running(device.target) as (server, host, port, _), EmuClient(host, port, timeout=TIMEOUT) as client:
        for blob in garbage:
            answer = client.exchange_object(blob)
            if answer is not None:  # whatever comes back is a well-formed DOE object
                DoeObject.decode(answer)
            assert not client.broken
        # the device still answers properly afterwards
        payload = client.transport(Outbound(DoeObjectType.SPDM, GET_VERSION))
        assert payload is not None and isinstance(decode_spdm(payload, allow_trailing=True), Version)
        assert server.result.unanswered >= 5


def test_spdm_error_answer_for_bad_request_version(device: SocketDevice) -> None:
    with running(device.target) as (_, host, port, _), EmuClient(host, port, timeout=TIMEOUT) as client:
        payload = client.transport(Outbound(DoeObjectType.SPDM, bytes.fromhex("11 84 00 00")))
        assert payload is not None
        err = decode_spdm(payload, allow_trailing=True)
        assert isinstance(err, ErrorResponse) and err.error_code == ErrorCode.VERSION_MISMATCH


def test_describer_lines_for_odd_objects() -> None:
    describer = ObjectDescriber()
    assert "not a DOE object" in describer.describe(b"\x01\x02", request=True)
    assert describer.describe(bytes.fromhex("01 00 00 00 03 00 00 00 02 00 00 00"), request=True) == \
        "DOE DISCOVERY index=2 version=0"
    assert "does not decode" in describer.describe(bytes.fromhex("01 00 01 00 03 00 00 00 12 61 00 00"),
                                                   request=False)
    assert describer.describe(GET_VERSION_DOE, request=True).endswith("SPDM 1.0 GET_VERSION")


def test_device_bug_is_logged_and_survived() -> None:
    class Exploding:
        def exchange(self, request: bytes) -> MailboxResult:
            raise RuntimeError("boom")

    with running(Exploding()) as (server, host, port, logs), EmuClient(host, port, timeout=TIMEOUT) as client:
        assert client.exchange_object(GET_VERSION_DOE) is None
        assert client.exchange_object(GET_VERSION_DOE) is None
        assert not client.broken
    assert server.result.exchanges == 2
    assert any("RuntimeError: boom" in line for line in logs)


def test_oversized_frame_drops_only_that_client(device: SocketDevice) -> None:
    with running(device.target) as (server, host, port, logs):
        with raw_connect(host, port) as sock:
            hello(sock)
            sock.sendall(bytes.fromhex("00000001 00000002 40000000"))  # 1 GiB announced
            assert sock.recv(16) == b""  # closed without allocating or answering
        with EmuClient(host, port, timeout=TIMEOUT) as client:
            assert client.exchange_object(GET_VERSION_DOE) is not None
    assert ConnectionEnd.BAD_FRAME in server.result.connections
    assert any("exceeds the limit" in line for line in logs)


# ------------------------------------------------------------------ commands


def test_unknown_and_oob_commands_get_unknown_and_the_connection_lives(device: SocketDevice) -> None:
    with running(device.target) as (server, host, port, _), raw_connect(host, port) as sock:
        hello(sock)
        for command in (0x1234, int(EmuCommand.OOB_ENCAP_KEY_UPDATE), int(EmuCommand.OOB_ENCAP_ENDPOINT_INFO)):
            write_frame(sock, EmuFrame(command, EmuTransport.PCI_DOE, bytes(4)))
            answer = read_frame(sock)
            assert answer.command == EmuCommand.UNKNOWN and answer.payload == b""
        write_frame(sock, EmuFrame(EmuCommand.NORMAL, EmuTransport.PCI_DOE, GET_VERSION_DOE))
        assert read_frame(sock).command == EmuCommand.NORMAL
        assert server.result.unknown_commands == 3


def test_wrong_transport_is_refused_with_a_log_line(device: SocketDevice) -> None:
    with running(device.target) as (server, host, port, logs):
        with pytest.raises(EmuClientError):
            EmuClient(host, port, transport=EmuTransport.MCTP, timeout=TIMEOUT).connect()
        with EmuClient(host, port, timeout=TIMEOUT) as client:  # the server is still there
            assert client.exchange_object(GET_VERSION_DOE) is not None
    assert server.result.connections[0] is ConnectionEnd.WRONG_TRANSPORT
    assert any("refused" in line and "MCTP" in line and "PCI_DOE" in line for line in logs)


def test_wrong_transport_after_handshake_is_refused(device: SocketDevice) -> None:
    with running(device.target) as (server, host, port, _), raw_connect(host, port) as sock:
        hello(sock)
        write_frame(sock, EmuFrame(EmuCommand.NORMAL, EmuTransport.TCP, GET_VERSION_DOE))
        assert sock.recv(16) == b""
        sock.close()
        wait_for(lambda: server.result.connections == [ConnectionEnd.WRONG_TRANSPORT])


def test_continue_keeps_spdm_state_for_the_next_client() -> None:
    device = build_socket_device(seed=8)
    requester, _ = make_requester(None)
    with running(device.target) as (server, host, port, _):
        with EmuClient(host, port, timeout=TIMEOUT) as first:
            assert run_flow(requester.init_connection(), first.transport).ok
            assert first.close(EmuCommand.CONTINUE)
        wait_for(lambda: server.result.connections == [ConnectionEnd.CONTINUE])
        with EmuClient(host, port, timeout=TIMEOUT) as second:
            # no new VCA: GET_DIGESTS is only legal if the device kept the negotiated connection
            digests = run_flow(requester.get_digests(), second.transport)
            assert digests.ok, digests
            assert digests.value.slot_mask == 0x01
        wait_for(lambda: server.result.stop_reason is StopReason.SHUTDOWN)


def test_shutdown_stops_the_server(device: SocketDevice) -> None:
    logs: list[str] = []
    server = EmuServer(device.target, port=0, log=logs.append, client_timeout=TIMEOUT)
    host, port = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    client = EmuClient(host, port, timeout=TIMEOUT)
    client.connect()
    assert client.close(EmuCommand.SHUTDOWN)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert server.result.stop_reason is StopReason.SHUTDOWN
    with pytest.raises(EmuClientError):
        EmuClient(host, port, timeout=1.0).connect()


def test_serve_device_builds_one_device_and_serves_it() -> None:
    logs: list[str] = []
    built: list[SocketDevice] = []

    def factory() -> DoeTarget:
        built.append(build_socket_device(seed=21))
        return built[-1].target

    results: list[ServeResult] = []
    thread = threading.Thread(target=lambda: results.append(serve_device(
        "127.0.0.1", 0, factory, max_connections=2, client_timeout=TIMEOUT, log=logs.append)), daemon=True)
    thread.start()
    wait_for(lambda: any("serving" in line for line in logs))
    port = int(re.search(r":(\d+) ", next(line for line in logs if "serving" in line)).group(1))  # type: ignore[union-attr]
    for _ in range(2):
        with EmuClient("127.0.0.1", port, timeout=TIMEOUT) as client:
            assert client.exchange_object(GET_VERSION_DOE) is not None
            client.close(EmuCommand.CONTINUE)
    thread.join(TIMEOUT)
    assert not thread.is_alive() and len(built) == 1
    assert results[0].stop_reason is StopReason.MAX_CONNECTIONS and results[0].exchanges == 2
    assert built[0].endpoint.mailbox.stats.requests == 2


def test_once_serves_exactly_one_client(device: SocketDevice) -> None:
    server = EmuServer(device.target, port=0, max_connections=1, client_timeout=TIMEOUT)
    host, port = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    client = EmuClient(host, port, timeout=TIMEOUT)
    client.connect()
    assert client.close(EmuCommand.CONTINUE)
    thread.join(TIMEOUT)
    assert not thread.is_alive() and server.result.stop_reason is StopReason.MAX_CONNECTIONS


def test_disconnect_without_goodbye_is_like_continue(device: SocketDevice) -> None:
    with running(device.target) as (server, host, port, logs):
        with raw_connect(host, port) as sock:
            hello(sock)
        wait_for(lambda: server.result.connections == [ConnectionEnd.DISCONNECTED])
        with EmuClient(host, port, timeout=TIMEOUT) as client:
            assert client.exchange_object(GET_VERSION_DOE) is not None
    assert any("without CONTINUE or SHUTDOWN" in line for line in logs)


def test_idle_client_is_dropped_after_the_timeout(device: SocketDevice) -> None:
    logs: list[str] = []
    server = EmuServer(device.target, port=0, log=logs.append, client_timeout=0.2, max_connections=1)
    host, port = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    with raw_connect(host, port) as sock:
        hello(sock)
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert server.result.connections == [ConnectionEnd.TIMEOUT]


# ------------------------------------------------------------------ client timeouts and pcap


def test_client_times_out_on_a_silent_server() -> None:
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        host, port = lst.getsockname()
        with pytest.raises(EmuClientError, match="handshake"):
            EmuClient(host, port, timeout=0.2).connect()


def test_client_transport_returns_none_after_timeout_and_stays_broken() -> None:
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        host, port = lst.getsockname()
        answered = threading.Event()

        def half_server() -> None:
            conn, _ = lst.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                read_frame(conn)
                write_frame(conn, EmuFrame(EmuCommand.TEST, EmuTransport.PCI_DOE, b"Server Hello!\x00"))
                answered.wait(TIMEOUT)

        t = threading.Thread(target=half_server, daemon=True)
        t.start()
        client = EmuClient(host, port, timeout=0.2)
        client.connect()
        assert client.transport(Outbound(DoeObjectType.SPDM, GET_VERSION)) is None
        assert client.broken and "no answer" in client.last_problem
        assert client.transport(Outbound(DoeObjectType.SPDM, GET_VERSION)) is None
        answered.set()
        client.close()
        t.join(TIMEOUT)


def test_pcap_records_every_object_in_both_directions(device: SocketDevice) -> None:
    buf = io.BytesIO()
    with running(device.target, pcap=buf) as (_, host, port, _logs), EmuClient(host, port, timeout=TIMEOUT) as client:
        run_flow(doe_discovery(), client.transport)
        client.transport(Outbound(DoeObjectType.SPDM, GET_VERSION))
    capture = parse_pcap(buf.getvalue())
    assert capture.linktype == LINKTYPE_PCI_DOE == 292
    assert capture.snaplen == 0x10000  # spdm_dump refuses files whose snaplen exceeds 64 KiB
    assert len(capture.packets) == 8
    assert capture.packets[0].data == bytes.fromhex("01 00 00 00 03 00 00 00 00 00 00 00")
    assert capture.packets[6].data == GET_VERSION_DOE
    assert DoeObject.decode(capture.packets[7].data).object_type is DoeObjectType.SPDM


# ------------------------------------------------------------------ the full attest flow over the socket


EXPECTED_STEPS = [
    "DOE discovery", "VCA", "GET_DIGESTS", "GET_CERTIFICATE", "CHALLENGE", "GET_MEASUREMENTS",
    "KEY_EXCHANGE/FINISH", "IDE_KM QUERY", "IDE_KM KEY_PROG x6", "IDE_KM K_SET_GO x6", "TDISP GET_VERSION",
    "TDISP GET_CAPABILITIES", "TDISP GET_DEVICE_INTERFACE_STATE (CONFIG_UNLOCKED)", "TDISP LOCK_INTERFACE",
    "TDISP GET_DEVICE_INTERFACE_STATE (CONFIG_LOCKED)", "TDISP GET_DEVICE_INTERFACE_REPORT",
    "TDISP START_INTERFACE", "TDISP GET_DEVICE_INTERFACE_STATE (RUN)", "TDISP STOP_INTERFACE",
    "TDISP GET_DEVICE_INTERFACE_STATE (CONFIG_UNLOCKED)", "IDE_KM K_SET_STOP x6", "END_SESSION",
]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_full_attest_flow_over_the_socket(version: str) -> None:
    device = build_socket_device(seed=11)
    requester, env = make_requester(version, seed=11)
    seen: list[StepResult] = []
    procedure = AttestProcedure(requester, env, on_step=seen.append)
    with running(device.target) as (server, host, port, logs), EmuClient(host, port, timeout=TIMEOUT) as client:
        steps = run_flow(procedure.run(), client.transport)
    assert [s.step for s in steps] == EXPECTED_STEPS, procedure.first_failure
    assert all(s.ok for s in steps) and procedure.ok and seen == steps
    assert f"SPDM {version}" in steps[1].detail
    assert requester.version == int(version.replace(".", ""), 16)
    # the device really went through it: keys stopped, TDI back to CONFIG_UNLOCKED, session gone
    assert device.dsm.tdisp.state_of(InterfaceId(0xBEEF)) is TdiState.CONFIG_UNLOCKED
    assert not device.dsm.spdm.sessions
    assert server.result.unanswered == 0 and server.result.exchanges == device.endpoint.mailbox.stats.requests
    assert sum("SECURED" in line for line in logs) > 30  # IDE_KM and TDISP travelled inside the session
    # one decoded line per exchange, sized by the negotiated algorithms and the request's summary type
    assert any("CHALLENGE_AUTH" in line and "meas_summary=yes" in line for line in logs)
    assert not any("does not decode" in line for line in logs)


def test_attest_flow_names_the_first_failing_step() -> None:
    device = build_socket_device(seed=12)
    requester, env = make_requester("1.2", seed=99)  # trusts the roots of another seed's identities
    procedure = AttestProcedure(requester, env)
    with running(device.target) as (_, host, port, _logs), EmuClient(host, port, timeout=TIMEOUT) as client:
        steps = run_flow(procedure.run(), client.transport)
    assert [s.step for s in steps] == EXPECTED_STEPS[:4]
    failure = procedure.first_failure
    assert failure is not None and failure.step == "GET_CERTIFICATE" and "trusted root" in failure.detail


# ------------------------------------------------------------------ the commands


def cli(*argv: str) -> tuple[argparse.Namespace, Console, io.StringIO]:
    parser = argparse.ArgumentParser(prog="tiosim")
    sub = parser.add_subparsers(dest="command")
    attest_cmd.add_parser(sub)
    serve_cmd.add_parser(sub)
    out = io.StringIO()
    return parser.parse_args(list(argv)), Console(file=out, width=200, highlight=False), out


def run_cli(*argv: str) -> tuple[int, str]:
    args, console, out = cli(*argv)
    try:
        code = args.func(args, console)
    except UserError as exc:
        return EXIT_USAGE, str(exc)
    return code, out.getvalue()


@contextmanager
def serve_command(*argv: str) -> Iterator[tuple[int, io.StringIO, list[int]]]:
    """`serve-device --port 0 ...` in a thread; yields the port it announced, its output and exit code(s)."""
    args, console, out = cli("serve-device", "--port", "0", "--timeout", str(TIMEOUT), *argv)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(args.func(args, console)), daemon=True)
    thread.start()
    ports: list[int] = []

    def announced() -> bool:
        match = re.search(r"on 127\.0\.0\.1:(\d+)", out.getvalue())
        if match:
            ports.append(int(match.group(1)))
        return match is not None

    wait_for(announced)
    try:
        yield ports[0], out, codes
    finally:
        thread.join(TIMEOUT)
        if thread.is_alive():  # the test failed before its client ended the server: end it now
            with EmuClient("127.0.0.1", ports[0], timeout=TIMEOUT) as client:
                client.close(EmuCommand.SHUTDOWN)
            thread.join(TIMEOUT)
        assert not thread.is_alive()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_attest_command_against_serve_device_command(version: str, tmp_path: Path) -> None:
    pcap = tmp_path / "attest.pcap"
    with serve_command("--once", "--seed", "5") as (port, out, codes):
        code, text = run_cli("attest", "--connect", f"127.0.0.1:{port}", "--ver", version, "--seed", "5",
                             "--pcap", str(pcap), "--timeout", str(TIMEOUT))
    assert code == 0, text
    assert "all 22 steps passed" in text and text.count("PASS") == 22
    assert codes == [0]
    served = out.getvalue()
    assert "identity derived from seed 5" in served and "GET_VERSION" in served and "server stopped (shutdown)" in served
    capture = parse_pcap(pcap.read_bytes())
    assert capture.linktype == 292 and len(capture.packets) > 2 * 22


def test_attest_command_fails_naming_the_step(tmp_path: Path) -> None:
    other_root = tmp_path / "other-root.der"
    other_root.write_bytes(default_identity(77).root.public_bytes(serialization.Encoding.DER))
    with serve_command("--once") as (port, _out, _codes):
        code, text = run_cli("attest", "--connect", f"127.0.0.1:{port}", "--trusted-root", str(other_root),
                             "--table")
    assert code == 1
    assert "attest failed at step 'GET_CERTIFICATE'" in text


def test_attest_command_cannot_connect() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        code, text = run_cli("attest", "--connect", f"127.0.0.1:{port}", "--timeout", "1")
    assert code == 1 and "failed at step 'connect'" in text


def test_serve_device_with_certificate_files(tmp_path: Path) -> None:
    identity = default_identity(31, "p256")  # any chain and key in files, like libspdm's sample ones
    chain, key, root = tmp_path / "chain.der", tmp_path / "leaf.key", tmp_path / "root.pem"
    chain.write_bytes(identity.chain_der)
    key.write_bytes(identity.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    root.write_bytes(identity.root.public_bytes(serialization.Encoding.PEM))
    with serve_command("--once", "--profile", "p256", "--cert-chain", str(chain), "--key", str(key)) as (
            port, out, _codes):
        code, text = run_cli("attest", "--connect", f"127.0.0.1:{port}", "--trusted-root", str(root),
                             "--seed", "1000", "--table")
    assert code == 0, text
    assert f"identity from {chain}" in out.getvalue()
    assert "ECDSA_P256" in text


@pytest.mark.parametrize(("argv", "message"), [
    (("--cert-chain", "x.der"), "go together"),
    (("--cert-chain", "/nonexistent/chain.der", "--key", "/nonexistent/key.pem"), "cannot read"),
])
def test_serve_device_refuses_bad_identity_options(argv: tuple[str, ...], message: str) -> None:
    code, text = run_cli("serve-device", "--port", "0", *argv)
    assert code == EXIT_USAGE and message in text


def test_serve_device_key_of_the_wrong_algorithm(tmp_path: Path) -> None:
    identity = default_identity(3, "p256")
    chain, key = tmp_path / "chain.der", tmp_path / "leaf.key"
    chain.write_bytes(identity.chain_der)
    key.write_bytes(identity.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    code, text = run_cli("serve-device", "--port", "0", "--cert-chain", str(chain), "--key", str(key))
    assert code == EXIT_USAGE and "pick a matching --profile" in text


def test_serve_device_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        code, text = run_cli("serve-device", "--port", str(s.getsockname()[1]))
    assert code == EXIT_USAGE and "cannot listen" in text


def test_attest_bad_arguments() -> None:
    assert run_cli("attest", "--connect", "host:notaport")[0] == EXIT_USAGE
    code, text = run_cli("attest", "--connect", "127.0.0.1:1", "--trusted-root", "/nonexistent/root.der")
    assert code == EXIT_USAGE and "--trusted-root" in text


def test_ide_port_index_follows_the_device_option() -> None:
    """DMTF's requester asks IDE_KM for PortIndex 1: a device configured so answers, port 0 is then refused."""
    from sim.interop.attest_flow import AttestOptions

    device = build_socket_device(seed=13, ide_port_index=1)
    requester, env = make_requester("1.2", seed=13)
    procedure = AttestProcedure(requester, env, AttestOptions(port_index=1))
    with running(device.target) as (_server, host, port, _logs), EmuClient(host, port, timeout=TIMEOUT) as client:
        steps = run_flow(procedure.run(), client.transport)
    assert procedure.ok, procedure.first_failure
    assert any(s.step == "IDE_KM QUERY" and "port 1 of max 1" in s.detail for s in steps)

    device = build_socket_device(seed=13, ide_port_index=1)
    requester, env = make_requester("1.2", seed=13)
    procedure = AttestProcedure(requester, env, AttestOptions(port_index=0))
    with running(device.target) as (_server, host, port, _logs), EmuClient(host, port, timeout=TIMEOUT) as client:
        run_flow(procedure.run(), client.transport)
    assert not procedure.ok and "IDE_KM QUERY" in str(procedure.first_failure)


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--stream-id", "300", "argument --stream-id: 300 is outside 0..255"),
    ("--port-index", "-1", "argument --port-index: -1 is outside 0..255"),
    ("--interface", "0x100000000", "argument --interface: 0x100000000 is outside 0..0xffffffff"),
])
def test_attest_refuses_values_that_do_not_fit_their_fields(flag: str, value: str, words: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        tiosim_cli.main(["attest", "--connect", "127.0.0.1:1", flag, value])
    assert caught.value.code == 2 and words in capsys.readouterr().err
