"""The CLI's behaviour in pipes, without a terminal, and at start-up; the subcommands' shared options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import EXIT_BROKEN_PIPE, build_parser, main
from sim.commands import COMMANDS
from sim.commands.common import EXIT_OK, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "single-device-boot.yaml"


def _tiosim(*args: str, cwd: Path | None = None, closed_stdout: bool = False) -> subprocess.CompletedProcess[bytes]:
    """tiosim in a fresh interpreter; with closed_stdout its stdout is a pipe nobody reads (EPIPE on write)."""
    cmd = [sys.executable, "-m", "sim", *args]
    if not closed_stdout:
        return subprocess.run(cmd, capture_output=True, cwd=cwd, timeout=300)
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(cmd, stdout=w, stderr=subprocess.PIPE, cwd=cwd, timeout=300)
    finally:
        os.close(w)


def test_version_comes_from_the_installed_package() -> None:
    from importlib.metadata import version

    done = _tiosim("--version")
    assert done.returncode == 0
    assert done.stdout.decode().strip() == f"tiosim {version('tiosim')}"


def test_help_imports_no_command_module_nor_heavy_library() -> None:
    code = ("import sys\nfrom sim.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('pydantic', 'simpy', 'cryptography', 'rich', 'numpy', 'sim.scenario.schema',"
            " 'sim.commands.run') if m in sys.modules]\nprint('HEAVY', heavy, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert "HEAVY []" in done.stderr.decode(), done.stderr.decode()


# every subcommand, with arguments that make it print to stdout
PRINTING = {
    "run": ["run", str(SCENARIO), "--out", "o"],
    "compare": ["compare", str(SCENARIO), "--out", "o"],
    "validate": ["validate", "--schema"],
    "list": ["list", "events"],
    "new": ["new", "starter"],
    "decode": ["decode", "01 00 00 00 02 00 00 00"],
    "serve-device": ["serve-device", "--port", "0", "--once"],
    "attest": ["attest", "--connect", "127.0.0.1:1", "--timeout", "1"],
    "bench": ["bench", "platform", "--n", "1"],
    "completion": ["completion", "bash"],
    "campaign": ["campaign", str(SCENARIO), "--runs", "1", "--model", "thin-host", "--out", "o"],
}


def test_every_subcommand_is_driven_here() -> None:
    assert set(PRINTING) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(PRINTING))
def test_a_closed_stdout_ends_quietly(command: str, tmp_path: Path) -> None:
    done = _tiosim(*PRINTING[command], cwd=tmp_path, closed_stdout=True)
    err = done.stderr.decode()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert done.returncode == EXIT_BROKEN_PIPE, err


@pytest.mark.parametrize("command", sorted(PRINTING))
def test_bad_arguments_are_a_usage_error(command: str, tmp_path: Path) -> None:
    done = _tiosim(command, "--no-such-option", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    assert "Traceback" not in done.stderr.decode()


def test_errors_are_not_wrapped_without_a_terminal(tmp_path: Path) -> None:
    missing = tmp_path / ("a-very-long-directory-name-" * 6) / "missing.yaml"
    done = _tiosim("run", str(missing), cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], lines


def test_run_takes_a_directory_and_prints_a_json_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "one.yaml").write_text(SCENARIO.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["run", str(folder), "--json", "--out", str(tmp_path / "o")]) == EXIT_OK
    got = json.loads(capsys.readouterr().out)
    assert isinstance(got, list) and [r["scenario"]["name"] for r in got] == ["single-device-boot"]


def test_a_glob_that_matches_nothing_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "*.yaml")]) == EXIT_USAGE
    assert "no file matches this pattern" in capsys.readouterr().err


def test_compare_has_a_default_out_and_runs_one_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    junit = tmp_path / "j.xml"
    assert main(["compare", str(SCENARIO), "--model", "thin-host", "--json", "--junit", str(junit)]) == EXIT_OK
    got = json.loads(capsys.readouterr().out)
    assert list(got[0]["models"]) == ["thin-host"]
    assert (tmp_path / "out" / "single-device-boot" / "report.md").exists()
    assert b"<testsuite" in junit.read_bytes()


def test_latency_bounds_print_in_the_files_units() -> None:
    from sim.scenario.schema import format_duration, parse_duration

    for text in ("1s", "1.5ms", "250ns", "3us", "2000s"):
        assert format_duration(parse_duration(text)) == text


def test_completion_scripts_name_every_command() -> None:
    from sim.commands.completion import bash, zsh

    for script in (bash(), zsh()):
        for name in COMMANDS:
            assert name in script
    assert "--sweep" in bash() and "'compare --format'" not in bash()
    done = subprocess.run(["bash", "-n"], input=bash().encode(), capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_list_explains_every_shipped_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "scenarios"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(list((ROOT / "scenarios").glob("*.yaml")))
    assert not [line for line in out if "(no # Question: line)" in line]
    for what in ("models", "profiles", "strategies", "events"):
        assert main(["list", what]) == EXIT_OK
        lines = capsys.readouterr().out.splitlines()
        assert lines and all(len(line.split(None, 1)) == 2 for line in lines), lines


def test_the_full_parser_knows_every_command() -> None:
    import argparse

    parser = build_parser(None)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    for name in COMMANDS:
        assert sub.choices[name].get_default("func") is not None, name


def test_bench_startup_reports_both_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "startup", "--repeat", "1", "--json"]) == EXIT_OK
    got = json.loads(capsys.readouterr().out)["startup"]
    assert set(got["ratios"]) == {"tiosim --help", "tiosim --version"} and got["cpu_s"]["python -c pass"] > 0


@pytest.mark.parametrize("options", [[], ["--devices", "2", "--guest"], ["--guest", "--model", "thin-vmm"]])
def test_new_writes_a_scenario_that_validates_and_runs(options: list[str], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    assert main(["new", "mine", "--out", str(path), *options]) == EXIT_OK
    assert path.read_text(encoding="utf-8").startswith("# Question: ")
    assert main(["validate", str(path)]) == EXIT_OK
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "-q"]) == EXIT_OK
    assert "FAIL" not in capsys.readouterr().out
    assert main(["new", "mine", "--out", str(path)]) == EXIT_USAGE  # never overwrites silently
