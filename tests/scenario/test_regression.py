"""Scenario runs as CI regression checks: ``tiosim run`` exit codes and JUnit XML, and golden traces
(``sim.scenario.golden``): a difference is named by its first differing trace event, and golden data is
written only when asked for."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sim import cli
from sim.commands.common import EXIT_FAILED, EXIT_OK
from sim.engine.trace import Channel, TraceEvent, digest_of
from sim.scenario import golden as G
from sim.scenario.loader import load_scenario
from sim.scenario.schema import TrustModel

ONE_DEVICE = """\
# Question: a one-device scenario for the command-line tests.
name: {name}
seed: 5
models: [{models}]
platform:
  root_ports:
    - {{id: rp0, ide_streams: 1, dpc: true}}
  devices:
    - {{id: nic0, port: rp0, identity: {{ca: vendor}}, owner: host}}
timeline:
{timeline}
expect:
  - {{expect: stream_state, device: nic0, state: secure}}
  - {{expect: attestation, device: nic0, by: host-kernel, outcome: ok, models: [thin-host]}}
  - {{expect: latency, metric: time_to_secure, device: nic0, max: 1s}}
{extra}"""

FALSE_EXPECTATION = "  - {expect: stream_state, device: nic0, state: insecure, models: [thin-host]}\n"


def _scenario(tmp_path: Path, name: str, *, models: str = "thin-host", extra: str = "",
              timeline: str = "  - {event: boot, at: 0}\n") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(ONE_DEVICE.format(name=name, models=models, extra=extra, timeline=timeline.rstrip("\n")),
                    encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


# ----------------------------------------------------------------------------------------------------
# tiosim run: exit codes and JUnit
# ----------------------------------------------------------------------------------------------------


def test_run_all_held_exits_0_and_writes_junit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _scenario(tmp_path, "all-held", models="fat, thin-host")
    junit = tmp_path / "junit.xml"
    code, out = _run(capsys, "run", str(path), "--out", str(tmp_path / "out"), "--junit", str(junit), "--quiet")
    assert code == EXIT_OK, out
    assert "FAIL" not in out

    root = ET.fromstring(junit.read_bytes())
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "all-held"
    cases = suite.findall("testcase")
    # three expectations under thin-host, two under fat (one is thin-host only)
    assert int(suite.get("tests", "-1")) == len(cases) == 5
    assert suite.get("failures") == "0"
    assert {c.get("classname") for c in cases} == {"all-held.fat", "all-held.thin-host"}
    names = [c.get("name") for c in cases if c.get("classname") == "all-held.thin-host"]
    assert names == ["stream_state nic0 == secure at end", "attestation of nic0 by host-kernel is ok at end",
                     "time_to_secure of nic0 <= 1s"]
    assert not any(c.findall("failure") for c in cases)

    result = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    assert result["ok"] is True and set(result["models"]) == {"fat", "thin-host"}


def test_run_false_expectation_exits_1_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _scenario(tmp_path, "one-false", extra=FALSE_EXPECTATION)
    junit = tmp_path / "junit.xml"
    code, out = _run(capsys, "run", str(path), "--out", str(tmp_path / "out"), "--junit", str(junit), "--quiet")
    assert code == EXIT_FAILED
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert fails == ["FAIL one-false [thin-host] expectation failed: stream_state nic0 == insecure at end "
                     "(got nic0: secure)"]

    suite = ET.fromstring(junit.read_bytes()).find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "4"
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["stream_state nic0 == insecure at end"]
    failure = failed[0].find("failure")
    assert failure is not None and failure.get("message") == "got nic0: secure"
    result = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    assert result["ok"] is False


def test_run_model_must_be_one_the_scenario_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its expectations are written for its models; under another they would silently not apply."""
    path = _scenario(tmp_path, "one-model")
    code, out = _run(capsys, "run", str(path), "--model", "thin-vmm", "--quiet")
    assert code == 2
    assert f"--model thin-vmm: {path} runs under thin-host (its `models:` key)" in " ".join(out.split())
    code, out = _run(capsys, "run", str(path), "--model", "thin-host", "--model", "thin-host",
                     "--out", str(tmp_path / "out"), "--quiet")
    assert code == EXIT_OK
    result = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    assert list(result["models"]) == ["thin-host"]  # a repeated model runs once


# ----------------------------------------------------------------------------------------------------
# golden traces: the first differing event, never a silent update
# ----------------------------------------------------------------------------------------------------


def _ev(i: int, summary: str, t: int | None = None) -> TraceEvent:
    return TraceEvent(t if t is not None else 1000 * i, "host", "rp0.nic0", Channel.DOE, bytes([i]), summary)


def _traced(events: list[TraceEvent]) -> G.TracedRun:
    return G.TracedRun("thin-host", {"trace_digest": digest_of(events)}, events)


GOLDEN_EVENTS = [_ev(i, f"message {i}") for i in range(6)]
GOLDEN = G.GoldenModel.of(digest_of(GOLDEN_EVENTS), GOLDEN_EVENTS)


def test_identical_trace_has_no_mismatch() -> None:
    assert G.first_mismatch(GOLDEN, _traced(list(GOLDEN_EVENTS))) is None


def test_changed_event_is_named_with_time_ends_and_summary() -> None:
    now = list(GOLDEN_EVENTS)
    now[3] = _ev(3, "message 3 (changed)", t=3500)
    found = G.first_mismatch(GOLDEN, _traced(now))
    assert found is not None and found.index == 3
    assert "first differing event #3 of 6" in found.text
    assert "now t=3500 ns host → rp0.nic0 [doe] message 3 (changed)" in found.text
    assert "golden event #3 does not occur in this run" in found.text


def test_inserted_event_says_where_the_golden_one_went() -> None:
    now = [*GOLDEN_EVENTS[:2], _ev(9, "stray message", t=1500), *GOLDEN_EVENTS[2:]]
    found = G.first_mismatch(GOLDEN, _traced(now))
    assert found is not None and found.index == 2
    assert "now t=1500 ns host → rp0.nic0 [doe] stray message (golden has no such event after this point)" \
        in found.text
    assert "golden event #2 comes at #3 in this run: t=2000 ns host → rp0.nic0 [doe] message 2" in found.text


def test_removed_event_is_found_later_in_golden() -> None:
    now = [*GOLDEN_EVENTS[:1], *GOLDEN_EVENTS[2:]]
    found = G.first_mismatch(GOLDEN, _traced(now))
    assert found is not None and found.index == 1
    assert "golden has this event later, at #2" in found.text
    assert "golden event #1 does not occur in this run" in found.text


def test_longer_and_shorter_traces() -> None:
    longer = G.first_mismatch(GOLDEN, _traced([*GOLDEN_EVENTS, _ev(6, "one more")]))
    assert longer is not None and longer.index == 6
    assert "the first 6 events match; this run goes on with 1 more, from event #6" in longer.text
    shorter = G.first_mismatch(GOLDEN, _traced(GOLDEN_EVENTS[:4]))
    assert shorter is not None and shorter.index == 4
    assert "this run stops at 4 events after event #3" in shorter.text and "the golden run had 6" in shorter.text


def test_golden_file_round_trip_and_corruption(tmp_path: Path) -> None:
    golden = G.Golden("s", "scenarios/s.yaml", "ab" * 32, {"thin-host": GOLDEN})
    path = tmp_path / "s.json"
    G.write_golden(golden, path)
    assert G.load_golden(path) == golden
    obj = json.loads(path.read_text(encoding="utf-8"))
    obj["models"]["thin-host"]["trace_events"] = 7
    path.write_text(json.dumps(obj), encoding="utf-8")
    with pytest.raises(G.GoldenError, match="6 fingerprints for 7 events"):
        G.load_golden(path)
    obj["models"]["thin-host"]["fingerprints"] = ["not base64!"]
    path.write_text(json.dumps(obj), encoding="utf-8")
    with pytest.raises(G.GoldenError, match="not base64"):
        G.load_golden(path)
    with pytest.raises(G.GoldenError, match="no golden data"):
        G.load_golden(tmp_path / "missing.json")


def test_golden_cli_update_check_and_first_difference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _scenario(tmp_path, "golden-demo")
    gdir = tmp_path / "golden"
    assert G.main(["--check", str(path), "--golden-dir", str(gdir)]) == 1     # nothing written yet ...
    assert "no golden data" in capsys.readouterr().out
    assert not (gdir / "golden-demo.json").exists()                          # ... and checking wrote none
    assert G.main(["--update", str(path), "--golden-dir", str(gdir)]) == 0
    written = (gdir / "golden-demo.json").read_bytes()
    assert G.main(["--check", str(path), "--golden-dir", str(gdir)]) == 0
    assert "ok" in capsys.readouterr().out

    # Another seed changes the first nonce-bearing message: the check names exactly that event.
    before = G.run_traced(load_scenario(path), TrustModel.THIN_HOST)
    path.write_text(path.read_text(encoding="utf-8").replace("seed: 5", "seed: 6"), encoding="utf-8")
    after = G.run_traced(load_scenario(path), TrustModel.THIN_HOST)
    first = next(i for i, (a, b) in enumerate(zip(before.events, after.events, strict=False))
                 if a.json_line() != b.json_line())
    event = after.events[first]
    assert G.main(["--check", str(path), "--golden-dir", str(gdir)]) == 1
    out = capsys.readouterr().out
    assert f"first differing event #{first} of {len(after.events)}" in out
    assert f"now t={event.time_ns} ns {event.source} → {event.destination} [{event.channel}] {event.summary}" in out
    assert "the scenario itself changed since the golden data was written" in out
    assert (gdir / "golden-demo.json").read_bytes() == written                # a failed check never updates


def test_golden_check_names_an_added_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _scenario(tmp_path, "golden-extra")
    gdir = tmp_path / "golden"
    assert G.main(["--update", str(path), "--golden-dir", str(gdir)]) == 0
    capsys.readouterr()
    path.write_text(path.read_text(encoding="utf-8").replace(
        "  - {event: boot, at: 0}", "  - {event: boot, at: 0}\n  - {event: second_requester, device: nic0, at: 2s}"),
        encoding="utf-8")
    assert G.main(["--check", str(path), "--golden-dir", str(gdir)]) == 1
    out = capsys.readouterr().out
    assert "this run goes on with" in out
    assert "scenario → nic0 [fault] scenario event second_requester" in out
