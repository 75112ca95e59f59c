"""``tiosim validate`` as a user runs it: OK lines, every problem, exit codes, the JSON Schema."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from rich.console import Console

from sim import cli
from sim.commands import validate
from sim.commands.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UserError
from sim.scenario.loader import load_scenario, schema_json

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _main(argv: Sequence[str]) -> int:
    """``sim.cli.main`` once the lead has registered the command; until then the same steps by hand."""
    if validate in cli.COMMANDS:
        return cli.main(list(argv))
    parser = argparse.ArgumentParser(prog="tiosim")
    validate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    try:
        return int(args.func(args, Console(highlight=False, soft_wrap=True)))
    except UserError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"tiosim {args.command}: {exc}")
        return EXIT_USAGE


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = _main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_shipped_scenarios_validate(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(p) for p in sorted(SCENARIOS.glob("*.yaml"))]
    code, out, _ = run(capsys, "validate", *paths)
    assert code == EXIT_OK
    assert len(paths) >= 2
    for path in paths:
        scenario = load_scenario(path)
        line = (f"OK {path} ({len(scenario.platform.devices)} devices, {len(scenario.timeline)} events, models "
                f"{', '.join(scenario.models)})")
        assert line in out


def test_invalid_file_prints_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad [x].yaml"  # brackets would be rich markup if not escaped
    bad.write_text("name: b\nseed: 1\nplatform:\n  root_ports: [{id: rp0, dcp: true}]\n"
                   "  devices: [{id: d0, port: rp9}]\n")
    good = SCENARIOS / "single-device-boot.yaml"
    code, out, _ = run(capsys, "validate", str(good), str(bad))
    assert code == EXIT_FAILED
    assert f"OK {good}" in out
    assert f"{bad}:4:26: platform.root_ports[0].dcp: unknown key 'dcp'" in out
    assert f"INVALID {bad} (1 problem)" in out
    bad.write_text("name: b\nseed: 1\nplatform:\n  root_ports: [{id: rp0}]\n  devices: [{id: d0, port: rp9}]\n")
    code, out, _ = run(capsys, "validate", str(bad))
    assert code == EXIT_FAILED
    assert f"{bad}:5:28: platform.devices[0].port: unknown root port 'rp9' (expected one of: rp0)" in out


def test_unreadable_file_exits_2_after_checking_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    code, out, _ = run(capsys, "validate", str(missing), str(SCENARIOS / "single-device-boot.yaml"))
    assert code == EXIT_USAGE
    assert f"{missing}: cannot read: No such file or directory" in out and "OK " in out


def test_no_arguments_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate")
    assert code == EXIT_USAGE and "at least one scenario file" in err and not out


def test_schema_option_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--schema")
    assert code == EXIT_OK
    assert json.loads(out) == schema_json()
    assert json.loads((SCENARIOS / "scenario.schema.json").read_text()) == json.loads(out)
