"""docs/scenario-format.md stays true: its example file validates and runs with every expectation holding,
and the error and failure messages it quotes are the ones the tools print for it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from sim.commands.run import failures
from sim.scenario.loader import ScenarioError, load_scenario_text
from sim.scenario.run import run_scenario

DOC = Path(__file__).resolve().parents[2] / "docs" / "scenario-format.md"


def _blocks(heading: str, lang: str) -> list[str]:
    """The fenced ``lang`` blocks under the level-2 heading ``heading`` (up to the next one), in order."""
    text = DOC.read_text(encoding="utf-8")
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, f"{DOC.name}: no heading '## {heading}'"
    blocks = re.findall(rf"^```{lang}\n(.*?)^```$", section.group(1), re.M | re.S)
    assert blocks, f"{DOC.name}: no ```{lang} block under '## {heading}'"
    return blocks


def _block(heading: str, lang: str) -> str:
    """The first fenced ``lang`` block under the heading."""
    return _blocks(heading, lang)[0]


@pytest.fixture(scope="module")
def example() -> str:
    """The example scenario file: the first ```yaml block under '## Example'."""
    return _block("Example", "yaml")


@pytest.fixture(scope="module")
def example_result(example: str) -> dict[str, Any]:
    return run_scenario(load_scenario_text(example, str(DOC)))


def test_example_runs_with_every_expectation_holding(example_result: dict[str, Any]) -> None:
    result = example_result
    assert set(result["models"]) == {"thin-guest", "thin-vmm"}
    for model, res in result["models"].items():
        assert res["expectations"], f"[{model}] the example checks nothing"
        failed = [f"[{model}] #{e['index']} {e['text']} (got {e['detail']})" for e in res["expectations"] if not e["held"]]
        assert not failed, "the example in docs/scenario-format.md fails:\n" + "\n".join(failed)
        assert not res["notes"], f"[{model}] the example's timeline was not fully played: {res['notes']}"
    assert result["ok"]


def test_quoted_validation_errors_are_what_the_loader_says(example: str) -> None:
    """The Errors section breaks the example (K_SET_GO misspelt, '100 msec') and quotes what validate prints."""
    broken = example.replace("phase: K_SET_GO", "phase: KEY_SET_GO").replace("delay: 100ms", "delay: 100 msec")
    assert broken.count("KEY_SET_GO") == 1 and broken.count("100 msec") == 1
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(broken, "broken.yaml")
    quoted = [line for line in _block("Errors", "text").splitlines() if line.startswith("broken.yaml:")]
    assert quoted == [str(p) for p in caught.value.problems]


def test_quoted_failures_are_what_run_prints(example: str) -> None:
    """The Expectations section lowers the example's recovery bound to 300 ms and quotes the FAIL lines."""
    lowered = example.replace("device: nic0, max: 500ms", "device: nic0, max: 300ms")
    assert lowered.count("max: 300ms") == 1
    result = run_scenario(load_scenario_text(lowered, str(DOC)))
    quoted = [line.removeprefix("FAIL ") for block in _blocks("Expectations", "text") for line in block.splitlines()
              if line.startswith("FAIL ")]
    assert quoted and quoted == failures(result)
