"""``tiosim decode`` as a user runs it: fields printed, bad input named, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_decodes_doe_get_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "01 00 01 00 03 00 00 00 10 84 00 00")
    assert code == 0
    assert "DOE SPDM len=3DW" in out and "GET_VERSION" in out


def test_decodes_ide_km_inside_vendor_defined(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "12 fe 00 00 03 00 02 01 00 04 00 00 00 00 00")  # PROTOCOLS.md §6.1
    assert code == 0
    assert "VENDOR_DEFINED_REQUEST" in out and "QUERY" in out and "port" in out.lower()


def test_decodes_tdisp_inside_vendor_defined(capsys: pytest.CaptureFixture[str]) -> None:
    msg = "12 fe 00 00 03 00 02 01 00 11 00 01 10 81 00 00 00 01 00 00 00 00 00 00 00 00 00 00"  # §6.4
    code, out, _ = run(capsys, "decode", msg)
    assert code == 0
    assert "GET_TDISP_VERSION" in out


def test_shipped_example_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "--file", str(ROOT / "scenarios/examples/doe-discovery-and-version.hex"))
    assert code == 0
    assert out.count("DOE ") >= 3 and "VERSION 1.0 1.1 1.2" in out


def test_truncated_message_names_field_and_offset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "--as", "spdm", "10 04 00 00 00 03 00 10 00 11")
    assert code == 1
    assert "cannot decode" in out and "entries" in out and "at byte 10" in out


def test_bad_hex_and_missing_file_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "decode", "zz")
    assert code == 2 and "not hex" in err
    code, _, err = run(capsys, "decode", "--file", "/nonexistent/x.hex")
    assert code == 2 and "/nonexistent/x.hex" in err


def test_unrecognisable_bytes_ask_for_as(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "ff ff ff ff")
    assert code == 1 and "--as" in out


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "sim", "decode", "10 84 00 00"], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "GET_VERSION" in proc.stdout


def test_decodes_an_ide_tlp_as_the_trace_records_it(capsys: pytest.CaptureFixture[str]) -> None:
    """trace.jsonl carries link TLPs as hex: decode --as tlp shows the IDE prefix and the header."""
    payload = "00" * 256 + "11" * 12  # 64 DW of ciphertext and the 96-bit MAC
    code, out, _ = run(capsys, "decode", "--as", "tlp", "9200010540000040010000ff10000000" + payload)
    assert code == 0
    assert "IDE stream=1" in out and "prefix.tee = 1" in out and "header.address = 268435456 (0x10000000)" in out
    code, out, _ = run(capsys, "decode", "--as", "tlp", "40 00 00 01")
    assert code == 1 and "at byte 4" in out


def test_auto_mode_recognises_a_tlp(capsys: pytest.CaptureFixture[str]) -> None:
    payload = "00" * 256 + "11" * 12
    code, out, _ = run(capsys, "decode", "9200010540000040010000ff10000000" + payload)
    assert code == 0 and "IDE stream=1" in out
    code, out, _ = run(capsys, "decode", "40 00 00 01")  # a truncated TLP is not guessed to be one
    assert code == 1 and "nor a TLP" in out


def test_file_reads_a_runs_trace_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "single-device-boot.yaml"
    assert main(["run", str(scenario), "--model", "thin-host", "--out", str(tmp_path), "-q"]) == 0
    capsys.readouterr()
    trace = tmp_path / "thin-host" / "trace.jsonl"
    doe_lines = [n for n, line in enumerate(trace.read_text().splitlines(), 1) if '"channel":"doe"' in line]
    code, out, _ = run(capsys, "decode", "--file", str(trace))
    assert code == 0, out
    assert "cannot decode" not in out
    assert [int(m) for m in re.findall(r"trace\.jsonl:(\d+): t=", out)] == doe_lines
    assert "KEY_EXCHANGE_RSP" in out and "CHALLENGE_AUTH" in out  # sized by the conversation so far
