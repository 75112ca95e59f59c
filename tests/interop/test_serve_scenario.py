"""serve-device --scenario: several devices at once, the state channel (events and query), report layouts,
concurrent clients and the idle bound."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from sim import cli as tiosim_cli
from sim.commands.common import EXIT_USAGE, UserError
from sim.interop.client import EmuClient, EmuClientError, query_state
from sim.interop.doe_driver import MailboxResult, MailboxResultKind
from sim.interop.emu_socket import EmuCommand, EmuFrame, EmuTransport, read_frame, write_frame
from sim.interop.events import MAX_QUERY_BYTES, DeviceView, EventLog, EventType, answer_query, query_handler
from sim.interop.scenario_devices import (
    SERVE_HEARTBEAT_PERIOD_S,
    ServeSetupError,
    apply_mmio_options,
    parse_mmio_option,
    scenario_devices,
)
from sim.interop.server import ConnectionEnd, EmuServer
from sim.scenario.loader import ScenarioError, load_scenario, load_scenario_text
from sim.scenario.run import ModelRun
from sim.wire.tdisp import MmioRange, MmioRangeAttributes

TIMEOUT = 5.0
GET_VERSION_DOE = bytes.fromhex("01 00 01 00 03 00 00 00 10 84 00 00")
TWO = """\
name: two-devices
seed: 9
models: [thin-host]
platform:
  root_ports: [{id: rp0}, {id: rp1}]
  devices:
    - {id: gpu0, port: rp0, tdis: [{id: t0, function: 0}]}
    - id: nic0
      port: rp1
      identity: {ca: other}
      tdis:
        - {id: t0, function: 0}
        - id: t1
          function: 1
          mmio: [{bar: 0, pages: 4}, {bar: 2, pages: 1}]
          report:
            mmio:
              - {bar: 0, offset: 0x1000, size: 0x1000, attributes: [msix_table]}
              - {bar: 0, offset: 0x3000, size: 0x1000, attributes: [msix_pba], range_id: 7}
              - {bar: 2, size: 0x1000}
            flags: [dma_without_pasid, ats]
            msi_x_message_control: 3
timeline: [{event: boot, at: 0}]
"""


@pytest.fixture
def two(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(TWO)
    return path


# ------------------------------------------------------------------ devices from a scenario


def test_scenario_devices_are_the_simulations_devices(two: Path) -> None:
    devices = scenario_devices(two)
    assert [d.device_id for d in devices] == ["gpu0", "nic0"]
    assert [[(t.name, t.function, t.function_id) for t in d.tdis] for d in devices] == [
        [("t0", 0, 0x0100)], [("t0", 0, 0x0200), ("t1", 1, 0x0201)]]
    run = ModelRun(load_scenario(two), load_scenario(two).models[0])
    for d in devices:  # same identity derivation (seed, CA, name) and measurements as a simulation run
        assert d.identity.root == run.platform.identity(d.device_id).root
        assert d.identity.leaf == run.platform.identity(d.device_id).leaf
        theirs = run.platform.device(d.device_id).profile
        assert d.profile.measurements.blocks(0x12, d.profile.measurement_hash_algo) == \
            theirs.measurements.blocks(0x12, theirs.measurement_hash_algo)
    assert devices[0].identity.root != devices[1].identity.root  # CA 'default' vs 'other'
    assert [d.device_id for d in scenario_devices(two, ["nic0"])] == ["nic0"]
    with pytest.raises(ServeSetupError, match="no device 'gpu9'.*gpu0, nic0"):
        scenario_devices(two, ["gpu9"])


def test_serve_heartbeat_default_is_separate_from_the_simulation_profile(two: Path) -> None:
    device = scenario_devices(two)[0]
    assert device.profile.heartbeat_period == 0  # the simulation's profile, as its golden traces pin it
    device.set_heartbeat(SERVE_HEARTBEAT_PERIOD_S)
    assert device.dsm.spdm.profile.heartbeat_period == SERVE_HEARTBEAT_PERIOD_S == 1
    with pytest.raises(ServeSetupError, match="0-255"):
        device.set_heartbeat(256)


def test_report_layout_from_the_scenario_follows_the_bars(two: Path) -> None:
    nic = scenario_devices(two)[1]
    rt = next(r for r in nic.dsm.tdisp.tdis.values() if r.definition.interface_id.function_id == 0x0201)
    bars = nic.endpoint.functions[1].header
    base0, base2 = bars.bar_address(0) >> 12, bars.bar_address(2) >> 12
    assert base0 and base2
    assert nic.dsm.hooks.mmio_ranges(rt.definition) == (
        MmioRange(base0 + 1, 1, MmioRangeAttributes.MSIX_TABLE, 0),
        MmioRange(base0 + 3, 1, MmioRangeAttributes.MSIX_PBA, 7),
        MmioRange(base2, 1, MmioRangeAttributes(0), 2))
    assert rt.definition.msi_x_message_control == 3
    plain = next(r for r in nic.dsm.tdisp.tdis.values() if r.definition.interface_id.function_id == 0x0200)
    assert len(nic.dsm.hooks.mmio_ranges(plain.definition)) == 1  # no report key: the whole BAR


@pytest.mark.parametrize(("report", "where", "words"), [
    ("{mmio: [{bar: 2, size: 4096}]}", "report.mmio[0].bar", "has no BAR 2"),
    ("{mmio: [{bar: 0, offset: 100, size: 4096}]}", "report.mmio[0].offset", "multiple of 4096"),
    ("{mmio: [{bar: 0, offset: 0x3000, size: 0x2000}]}", "report.mmio[0].size", "runs past the end of BAR 0"),
    ("{mmio: [{bar: 0, size: 0x2000}, {bar: 0, offset: 0x1000, size: 0x1000}]}", "report.mmio[1]", "overlaps"),
    ("{mmio: [{bar: 0, size: 4096, attributes: [msix_table]}, {bar: 0, offset: 4096, size: 4096, "
     "attributes: [msix_table]}]}", "report.mmio[1].attributes", "at most one"),
    ("{msi_x_message_control: 1}", "report.msi_x_message_control", "no range is the msix_table"),
    ("{mmio: [{bar: 0, size: 4096, attributes: [msix]}]}", "report.mmio[0].attributes[0]", "msix_table"),
    ("{device_specific_info: xyz}", "report.device_specific_info", ""),
])
def test_bad_report_layouts_are_refused_with_file_line_and_key(report: str, where: str, words: str) -> None:
    text = ("name: r\nseed: 1\nmodels: [thin-host]\nplatform:\n  root_ports: [{id: rp0}]\n  devices:\n"
            f"    - {{id: d0, port: rp0, tdis: [{{id: t0, report: {report}}}]}}\ntimeline: [{{event: boot, at: 0}}]\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, "r.yaml")
    problems = [str(p) for p in info.value.problems]
    assert any(p.startswith("r.yaml:7:") and f"platform.devices[0].tdis[0].{where}" in p and words in p
               for p in problems), problems


def test_mmio_option_parses_and_applies(two: Path) -> None:
    devices = scenario_devices(two)
    opt = parse_mmio_option("0x0100:0:0x1000:0x2000:msix_table+non_tee_mem")
    assert opt.function_id == 0x0100 and opt.range.offset_pages == 1 and opt.range.pages == 2
    assert opt.range.attributes == MmioRangeAttributes.MSIX_TABLE | MmioRangeAttributes.IS_NON_TEE_MEM
    apply_mmio_options(devices, [opt])
    rt = next(iter(devices[0].dsm.tdisp.tdis.values()))
    base = devices[0].endpoint.functions[0].header.bar_address(0) >> 12
    assert devices[0].dsm.hooks.mmio_ranges(rt.definition) == (MmioRange(base + 1, 2, opt.range.attributes, 0),)


@pytest.mark.parametrize(("text", "words"), [
    ("0x100:0:0", "expected FUNCTION_ID:BAR:OFFSET:SIZE"),
    ("zz:0:0:4096", "FUNCTION_ID 'zz' is not a number"),
    ("0x100:7:0:4096", "BAR 7"),
    ("0x100:0:10:4096", "multiples of 4096"),
    ("0x100:0:0:4096:bogus", "unknown attribute 'bogus'"),
])
def test_mmio_option_errors(text: str, words: str) -> None:
    with pytest.raises(ServeSetupError, match=re.escape(words)):
        parse_mmio_option(text)


@pytest.mark.parametrize(("options", "words"), [
    (["0x0999:0:0:4096"], "no served TDI has that FUNCTION_ID"),
    (["0x0100:2:0:4096"], "has no BAR 2"),
    (["0x0100:0:0x3000:0x2000"], "runs past BAR 0"),
    (["0x0100:0:0:0x2000", "0x0100:0:0x1000:0x1000"], "overlap"),
])
def test_mmio_option_layout_errors(two: Path, options: list[str], words: str) -> None:
    with pytest.raises(ServeSetupError, match=words):
        apply_mmio_options(scenario_devices(two), [parse_mmio_option(o) for o in options])


# ------------------------------------------------------------------ the CLI: two devices, attest, events, query


def _cli(*argv: str) -> tuple[object, Console, io.StringIO]:
    parser = tiosim_cli.build_parser()
    out = io.StringIO()
    return parser.parse_args(list(argv)), Console(file=out, width=300, highlight=False), out


def _run(*argv: str) -> tuple[int, str]:
    args, console, out = _cli(*argv)
    try:
        code = args.func(args, console)  # type: ignore[attr-defined]
    except UserError as exc:
        return EXIT_USAGE, str(exc)
    return code, out.getvalue()


@contextmanager
def serving(*argv: str, devices: int) -> Iterator[tuple[dict[str, int], io.StringIO, list[int]]]:
    args, console, out = _cli("serve-device", "--base-port", "0", "--timeout", str(TIMEOUT), *argv)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(args.func(args, console)), daemon=True)  # type: ignore[attr-defined]
    thread.start()
    ports: dict[str, int] = {}
    for _ in range(200):
        ports = {m.group(1): int(m.group(2)) for m in re.finditer(r"device (\S+) on 127\.0\.0\.1:(\d+):", out.getvalue())}
        if len(ports) == devices and out.getvalue().count("serving device") == devices:
            break
        threading.Event().wait(0.05)
    assert len(ports) == devices, out.getvalue()
    try:
        yield ports, out, codes
    finally:
        for port in ports.values():
            try:
                with EmuClient("127.0.0.1", port, timeout=1.0) as client:
                    client.close(EmuCommand.SHUTDOWN)
            except EmuClientError:
                pass
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_two_devices_attested_at_once_with_events_and_query(two: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    roots = tmp_path / "roots"
    with serving("--scenario", str(two), "--events", str(events), "--write-roots", str(roots), devices=2) as (
            ports, out, codes):
        assert "TDIs t0=0x0200 (function 0), t1=0x0201 (function 1)" in out.getvalue()
        assert "heartbeat 1 s" in out.getvalue()
        results: dict[str, tuple[int, str]] = {}

        def attest(device: str, interface: str) -> None:
            results[device] = _run("attest", "--connect", f"127.0.0.1:{ports[device]}", "--trusted-root",
                                   str(roots / f"{device}-root.der"), "--interface", interface, "--keep-server",
                                   "--timeout", str(TIMEOUT))
        threads = [threading.Thread(target=attest, args=a) for a in (("gpu0", "0x0100"), ("nic0", "0x0201"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for device, (code, text) in results.items():
            assert code == 0 and "all 22 steps passed" in text, (device, text)
        state = query_state("127.0.0.1", ports["gpu0"], timeout=TIMEOUT)
        # the same answer from either port: the channel covers every served device
        assert state == query_state("127.0.0.1", ports["nic0"], timeout=TIMEOUT)
    assert codes == [0]
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    for device, tdi in (("gpu0", "t0"), ("nic0", "t1")):
        moves = [(e["from"], e["to"], e["t_bit"]) for e in lines if e["device"] == device and e["event"] == "tdi"]
        assert moves == [("CONFIG_UNLOCKED", "CONFIG_LOCKED", False), ("CONFIG_LOCKED", "RUN", True),
                         ("RUN", "CONFIG_UNLOCKED", False)]
        assert {e["tdi"] for e in lines if e["device"] == device and e["event"] == "tdi"} == {tdi}
        kinds = [(e["event"], e.get("state") or e.get("action")) for e in lines if e["device"] == device]
        assert kinds.index(("spdm-session", "up")) < kinds.index(("ide-key", "programmed")) < \
            kinds.index(("ide-stream", "GO")) < kinds.index(("ide-stream", "STOP")) < kinds.index(("spdm-session", "down"))
    # after the flows: every TDI unlocked, no session, stream keys stopped
    by_device = {d["device"]: d for d in state["devices"]}
    assert state["ok"] and set(by_device) == {"gpu0", "nic0"}
    assert [(t["tdi"], t["state"], t["t_bit"]) for t in by_device["nic0"]["tdis"]] == [
        ("t0", "CONFIG_UNLOCKED", False), ("t1", "CONFIG_UNLOCKED", False)]
    assert by_device["gpu0"]["sessions"] == [] and by_device["gpu0"]["port"] == ports["gpu0"]
    assert all(not s["ready"] for d in state["devices"] for s in d["streams"])


@pytest.mark.parametrize(("argv", "words"), [
    (("--profile", "default-p384"), "--profile cannot be combined with --scenario"),
    (("--seed", "3"), "--seed cannot be combined with --scenario"),
    (("--device", "gpu7"), "no device 'gpu7'"),
    (("--mmio", "0x0100:0:0:1"), "multiples of 4096"),
    (("--pcap", "x.pcap"), "--pcap records one device"),
    (("--max-clients", "0"), "--max-clients 0"),
    (("--base-port", "65535"), "need ports up to 65536"),
])
def test_scenario_option_errors(two: Path, argv: tuple[str, ...], words: str) -> None:
    code, text = _run("serve-device", "--scenario", str(two), *argv)
    assert code == EXIT_USAGE and words in text, text


def test_invalid_scenario_is_a_user_error_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TWO.replace("size: 0x1000}\n            flags", "size: 0x5000}\n            flags"))
    code, text = _run("serve-device", "--scenario", str(bad))
    assert code == EXIT_USAGE and "bad.yaml:" in text and "report.mmio[2].size" in text


def test_device_option_needs_a_scenario() -> None:
    code, text = _run("serve-device", "--device", "gpu0")
    assert code == EXIT_USAGE and "--device selects devices of a --scenario" in text


# ------------------------------------------------------------------ the query protocol, malformed input


@pytest.fixture
def log(two: Path) -> EventLog:
    events = EventLog(keep=True)
    for d in scenario_devices(two):
        events.attach(DeviceView(d.device_id, 0, d.profile.name, d.endpoint, d.dsm, d.lock,
                                 {t.function_id: t.name for t in d.tdis}))
    return events


@pytest.mark.parametrize(("payload", "words"), [
    (b"\xff\xfe", "not UTF-8"),
    (b"{nope", "not JSON"),
    (b"[1, 2]", "must be a JSON object, got list"),
    (b'{"op": "explode"}', "unknown op 'explode'"),
    (b'{"op": "reset"}', "reset needs \"device\""),
    (b'{"op": "reset", "device": "gpu0", "kind": "warm"}', "unknown reset kind 'warm'"),
    (b'{"op": "reset", "device": "gpu0", "kind": "flr", "function": 5}', "flr needs \"function\": one of [0]"),
    (b'{"op": "reset", "device": "gpu0", "kind": "flr", "function": true}', "flr needs"),
    (b"[" * 60_000, "nests too deeply"),
    (b" " * (MAX_QUERY_BYTES + 1), "exceeds the limit"),
])
def test_malformed_queries_get_an_error_answer(log: EventLog, payload: bytes, words: str) -> None:
    answer = answer_query(log, payload)
    assert answer["ok"] is False and words in answer["error"], answer


def test_state_and_reset_queries(log: EventLog) -> None:
    assert answer_query(log, b"") == answer_query(log, b'{"op": "state"}') == log.state()
    answer = answer_query(log, b'{"op": "reset", "device": "nic0", "kind": "flr", "function": 1}')
    assert answer["ok"] is True
    answer = answer_query(log, b'{"op": "reset", "device": "gpu0"}')
    assert answer["ok"] is True
    resets = [(e["device"], e["kind"], e.get("function")) for e in log.lines if e["event"] == str(EventType.RESET)]
    assert resets == [("nic0", "flr", 1), ("gpu0", "conventional", None)]


def test_query_on_the_socket_keeps_the_connection_and_needs_no_handshake(log: EventLog, two: Path) -> None:
    device = scenario_devices(two)[0]
    server = EmuServer(device.target, port=0, client_timeout=TIMEOUT, query=query_handler(log))
    _, port = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.settimeout(TIMEOUT)
            for payload in (b"{nope", b'{"op": "state"}'):
                write_frame(sock, EmuFrame(EmuCommand.TIOSIM_QUERY, EmuTransport.NONE, payload))
                answer = read_frame(sock)
                assert answer.command == EmuCommand.TIOSIM_QUERY and answer.transport == EmuTransport.NONE
            assert json.loads(answer.payload)["ok"] is True
            # and the same connection still carries DOE objects, without TEST first (QEMU sends none)
            write_frame(sock, EmuFrame(EmuCommand.NORMAL, EmuTransport.PCI_DOE, GET_VERSION_DOE))
            assert read_frame(sock).command == EmuCommand.NORMAL
        assert query_state("127.0.0.1", port, {"op": "bogus"}, timeout=TIMEOUT)["ok"] is False
        assert server.result.queries == 3
    finally:
        server.stop()
        thread.join(TIMEOUT)


def test_query_without_a_state_channel_is_unknown(two: Path) -> None:
    device = scenario_devices(two)[0]
    server = EmuServer(device.target, port=0, client_timeout=TIMEOUT)
    _, port = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(EmuClientError, match="expected a TIOSIM_QUERY answer"):
            query_state("127.0.0.1", port, timeout=TIMEOUT)
    finally:
        server.stop()
        thread.join(TIMEOUT)


# ------------------------------------------------------------------ several clients, and the bound


def test_an_idle_client_does_not_hold_the_device(two: Path) -> None:
    device = scenario_devices(two)[0]
    logs: list[str] = []
    server = EmuServer(device.target, port=0, client_timeout=TIMEOUT, max_clients=2, log=logs.append)
    _, port = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        idle = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)  # says nothing, like a booting guest
        with EmuClient("127.0.0.1", port, timeout=TIMEOUT) as busy:
            assert busy.exchange_object(GET_VERSION_DOE) is not None
            # a third client is refused with a line saying why, the two others are unaffected
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as third:
                third.settimeout(TIMEOUT)
                assert third.recv(16) == b""
            assert busy.exchange_object(GET_VERSION_DOE) is not None
            assert busy.close(EmuCommand.CONTINUE)
        assert server.result.refused == 1
        assert any("refused: 2 client(s) already connected" in line for line in logs)
        idle.close()
        for _ in range(100):
            if len(server.result.connections) == 2:
                break
            threading.Event().wait(0.05)
        assert sorted(server.result.connections) == sorted([ConnectionEnd.CONTINUE, ConnectionEnd.DISCONNECTED])
    finally:
        server.stop()
        thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_no_idle_bound_with_timeout_zero() -> None:
    code, text = _run("serve-device", "--timeout", "-1", "--port", "70000")
    assert code == EXIT_USAGE and "70000" in text


# ------------------------------------------------------------------ the response size bound


def test_max_response_bounds_every_object_and_attest_still_passes() -> None:
    """With a 600-byte bound the certificate comes in portions and no response object is larger."""
    args, console, out = _cli("serve-device", "--port", "0", "--max-response", "600", "--once",
                              "--timeout", str(TIMEOUT))
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(args.func(args, console)), daemon=True)  # type: ignore[attr-defined]
    thread.start()
    for _ in range(200):
        if (m := re.search(r"serving device \S+ on 127\.0\.0\.1:(\d+)", out.getvalue())):
            break
        threading.Event().wait(0.05)
    assert m is not None, out.getvalue()
    code, text = _run("attest", "--connect", f"127.0.0.1:{m.group(1)}", "--timeout", str(TIMEOUT))
    thread.join(TIMEOUT)
    assert code == 0 and "all 22 steps passed" in text, text
    served = out.getvalue()
    sizes = [int(n) * 4 for n in re.findall(r"-> DOE \w+ len=(\d+)DW", served)]
    assert sizes and max(sizes) <= 600
    assert "CERTIFICATE slot=0 portion=560" in served and "exceeds" not in served


def test_max_response_too_small_is_refused() -> None:
    code, text = _run("serve-device", "--max-response", "73")
    assert code == EXIT_USAGE and "at least 74 bytes" in text


def test_an_oversized_response_is_not_sent() -> None:
    class Big:
        def exchange(self, request: bytes) -> MailboxResult:
            return MailboxResult(MailboxResultKind.RESPONSE, bytes.fromhex("01000100") + (0x500).to_bytes(4, "little")
                                 + bytes(0x500 * 4 - 8))

    logs: list[str] = []
    server = EmuServer(Big(), port=0, client_timeout=TIMEOUT, max_response=0x1200, log=logs.append)
    _, port = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        with EmuClient("127.0.0.1", port, timeout=TIMEOUT) as client:
            assert client.exchange_object(GET_VERSION_DOE) is None
            assert "no response" in client.last_problem
    finally:
        server.stop()
        thread.join(TIMEOUT)
    assert any("5120-byte response exceeds --max-response 4608" in line for line in logs)


# ------------------------------------------------------------------ mirroring config writes


def test_config_write_moves_the_bar_the_report_reads(log: EventLog) -> None:
    nic = log.devices["nic0"]
    answer = answer_query(log, b'{"op": "config-write", "device": "nic0", "function": 1, "offset": 16, '
                               b'"value": 4276092928}')  # BAR 0 low DW := 0xFEE00000 (the guest placed it)
    assert answer["ok"] is True and answer["value"] & ~0xF == 0xFEE00000
    rt = next(r for r in nic.dsm.tdisp.tdis.values() if r.definition.interface_id.function_id == 0x0201)
    assert nic.dsm.hooks.mmio_ranges(rt.definition)[0].first_page == 0xFEE00 + 1
    assert answer_query(log, b'{"op": "config-read", "device": "nic0", "function": 1, "offset": 16}')["value"] == \
        answer["value"]
    assert [e["event"] for e in log.lines] == [str(EventType.CONFIG_WRITE)]


@pytest.mark.parametrize(("payload", "words"), [
    (b'{"op": "config-read", "device": "gpu0", "function": 3, "offset": 0}', "\"function\" must be one of [0]"),
    (b'{"op": "config-read", "device": "gpu0", "offset": 4096}', "offset 0-4092"),
    (b'{"op": "config-read", "device": "gpu0", "offset": 6}', "not DW-aligned"),
    (b'{"op": "config-read", "device": "gpu0", "offset": "16"}', "offset 0-4092"),
    (b'{"op": "config-write", "device": "gpu0", "offset": 16}', "u32"),
    (b'{"op": "config-write", "device": "gpu0", "offset": 16, "value": -1}', "u32"),
    (b'{"op": "config-write", "offset": 16, "value": 1}', "config-write needs \"device\""),
])
def test_malformed_config_queries(log: EventLog, payload: bytes, words: str) -> None:
    answer = answer_query(log, payload)
    assert answer["ok"] is False and words in answer["error"], answer
