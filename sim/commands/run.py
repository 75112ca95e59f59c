"""``tiosim run`` and ``tiosim compare``: run scenario files under trust models, check, report.

``run`` writes, per scenario, ``result.json`` (the source of truth), the resolved scenario, and per
model ``trace.jsonl`` and ``doe.pcap``; it exits 1 when an expectation fails, naming it.
``compare`` runs every model a scenario names and adds ``report.md``, ``report.html`` and
``report.json`` computed from those results.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sim.commands import summary
from sim.commands.common import EXIT_FAILED, EXIT_OK, UserError
from sim.scenario.loader import ScenarioError, ScenarioFileError, load_scenario, resolved
from sim.scenario.platform import PlatformSpecError
from sim.scenario.run import run_scenario
from sim.scenario.schema import Scenario, TrustModel


def _ms(ns: int | None) -> str:
    return "—" if ns is None else f"{ns / 1e6:.3f} ms"


def _load(path: str, seed: int | None) -> Scenario:
    try:
        scenario = load_scenario(path)
    except (ScenarioError, ScenarioFileError) as exc:
        raise UserError(str(exc)) from None
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    return scenario


def _models(scenario: Scenario, wanted: list[str] | None, path: str) -> list[TrustModel]:
    if not wanted:
        return list(scenario.models)
    out: list[TrustModel] = []
    for name in wanted:
        try:
            model = TrustModel(name)
        except ValueError:
            raise UserError(f"--model {name}: expected one of {', '.join(m.value for m in TrustModel)}") from None
        if model not in scenario.models:
            # its expectations were written for the models it names; under another they would silently not apply
            raise UserError(f"--model {name}: {path} runs under {', '.join(m.value for m in scenario.models)} "
                            "(its `models:` key); add the model there to run it")
        if model not in out:
            out.append(model)
    return out


def scenario_paths(given: list[str]) -> list[str]:
    """The scenario files ``given`` names: files as they are, a directory as its ``*.yaml`` files (sorted,
    not recursive), a glob pattern (for shells that pass it unexpanded) as its matches; duplicates once."""
    out: list[str] = []
    for item in given:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("*.yaml") if p.is_file())
            if not found:
                raise UserError(f"{item}: a directory without scenario files (*.yaml)")
        elif any(c in item for c in "*?[") and not path.exists():
            found = sorted(p for p in glob.glob(item) if Path(p).is_file())
            if not found:
                raise UserError(f"{item}: no file matches this pattern")
        else:
            found = [item]
        out.extend(f for f in found if f not in out)
    return out


def _out_dir(base: str | None, scenario: Scenario, several: bool) -> Path:
    root = Path(base) if base else Path("out")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario.name)
    return root / safe if several or not base else root


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True)


def run_with_progress(console: Console, scenario: Scenario, models: list[TrustModel] | None, quiet: bool,
                      **kw: Any) -> dict[str, Any]:
    """run_scenario with a progress bar over the trust models (none when quiet or not a terminal);
    a platform the scenario describes but that cannot be built is a one-line user error."""
    try:
        return _run_with_progress(console, scenario, models, quiet, **kw)
    except PlatformSpecError as exc:
        raise UserError(f"{kw.get('scenario_file') or scenario.name}: platform: {exc}") from None


def _run_with_progress(console: Console, scenario: Scenario, models: list[TrustModel] | None, quiet: bool,
                       **kw: Any) -> dict[str, Any]:
    chosen = models or list(scenario.models)
    if quiet or not console.is_terminal:
        return run_scenario(scenario, chosen, **kw)
    with _progress(console) as bar:
        task = bar.add_task(scenario.name, total=len(chosen))
        done: list[str] = []

        def step(model: str) -> None:
            if done:
                bar.advance(task)
            done.append(model)
            bar.update(task, description=f"{scenario.name}: {model}")

        result = run_scenario(scenario, chosen, progress=step, **kw)
        bar.advance(task)
    return result


def sweep_with_progress(console: Console, scenario: Scenario, models: list[TrustModel], quiet: bool) -> Any:
    """The adversary sweep of ``models``, with a bar over its runs (and an ETA) on a terminal."""
    from sim.adversary.sweep import sweep

    if quiet or not console.is_terminal:
        return sweep(scenario, models)
    with _progress(console) as bar:
        task = bar.add_task(f"{scenario.name}: adversary sweep", total=None)

        def step(model: str, done: int, total: int) -> None:
            bar.update(task, description=f"{scenario.name}: adversary sweep, {model}", completed=done, total=total)

        return sweep(scenario, models, progress=step)


def summary_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['scenario']['name']} (seed {result['scenario']['seed']})")
    for column in ("model", "device", "secured by", "time to secure", "TDIs", "stream", "expectations"):
        table.add_column(column)
    for model, res in result["models"].items():
        held = sum(e["held"] for e in res["expectations"])
        total = len(res["expectations"])
        verdict = f"[green]{held}/{total} held[/green]" if held == total else f"[red]{held}/{total} held[/red]"
        for i, (dev, d) in enumerate(res["devices"].items()):
            table.add_row(model if i == 0 else "", dev, d["secured_by"], _ms(d["time_to_secure_ns"]),
                          ", ".join(f"{k}={v}" for k, v in d["tdis"].items()), d["stream"]["state"],
                          verdict if i == 0 else "")
    return table


def failures(result: dict[str, Any]) -> list[str]:
    return [f"{result['scenario']['name']} [{model}] expectation failed: {e['text']} (got {e['detail']})"
            for model, res in result["models"].items() for e in res["expectations"] if not e["held"]]


def write_outputs(result: dict[str, Any], scenario: Scenario, out: Path) -> None:
    (out / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "scenario.resolved.json").write_text(json.dumps(resolved(scenario), indent=2, sort_keys=True) + "\n",
                                                encoding="utf-8")


def junit(results: list[dict[str, Any]]) -> bytes:
    """JUnit XML: one test suite per scenario, one test case per (model, expectation)."""
    suites = ET.Element("testsuites")
    for result in results:
        cases = [(m, e) for m, r in result["models"].items() for e in r["expectations"]]
        suite = ET.SubElement(suites, "testsuite", name=result["scenario"]["name"], tests=str(len(cases)),
                              failures=str(sum(not e["held"] for _, e in cases)))
        for model, exp in cases:
            case = ET.SubElement(suite, "testcase", classname=f"{result['scenario']['name']}.{model}",
                                 name=exp["text"])
            if not exp["held"]:
                ET.SubElement(case, "failure", message=f"got {exp['detail']}").text = exp["text"]
        for model, res in result["models"].items():
            for note in res.get("notes", []):
                ET.SubElement(suite, "system-out").text = f"[{model}] {note}"
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def _mkdir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output folder: {exc.strerror}") from None


def _finish(args: argparse.Namespace, console: Console, results: list[dict[str, Any]]) -> int:
    """What run and compare end with: the JSON list (always a list, one entry per scenario), JUnit, status."""
    if args.json:
        console.print(json.dumps(results, indent=2, sort_keys=True), markup=False, highlight=False)
    if args.junit:
        try:
            Path(args.junit).write_bytes(junit(results))
        except OSError as exc:
            raise UserError(f"--junit {args.junit}: cannot write: {exc.strerror}") from None
    return EXIT_FAILED if any(failures(r) for r in results) else EXIT_OK


def _notes(console: Console, result: dict[str, Any]) -> None:
    for model, res in result["models"].items():
        for note in res["notes"]:
            console.print(f"[yellow]note[/yellow] {escape(f'[{model}] {note}')}")


def _scenarios(args: argparse.Namespace) -> Iterator[tuple[str, Scenario, list[TrustModel], Path]]:
    """What run and compare both iterate: each scenario file named, loaded, its models chosen and its output
    folder made."""
    paths = scenario_paths(args.scenario)
    several = len(paths) > 1
    for path in paths:
        scenario = _load(path, args.seed)
        models = _models(scenario, args.model, path)
        out = _out_dir(args.out, scenario, several)
        _mkdir(out)
        yield path, scenario, models, out


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    results = []
    chatty = not (args.quiet or args.json)
    for path, scenario, models, out in _scenarios(args):
        if chatty:
            console.print(f"running {escape(path)} under {', '.join(models)} ...")
        result = run_with_progress(console, scenario, models, not chatty, out_dir=out, scenario_file=path)
        write_outputs(result, scenario, out)
        results.append(result)
        if chatty:
            console.print(summary_table(result))
            _notes(console, result)
            console.print(f"wrote {escape(str(out))}/result.json, scenario.resolved.json and per model trace.jsonl, "
                          "doe.pcap")
        if not args.json:
            for line in failures(result):
                console.print(f"[red]FAIL[/red] {escape(line)}")
    return _finish(args, console, results)


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from sim.adversary.sweep import attach
    from sim.report.compare import compare
    from sim.report.write import write_report

    results = []
    chatty = not (args.quiet or args.json)
    for path, scenario, models, out in _scenarios(args):
        if chatty:
            console.print(f"comparing {', '.join(models)} on {escape(path)} ...")
        result = run_with_progress(console, scenario, models, not chatty, out_dir=out, scenario_file=path)
        if args.sweep:
            if chatty:
                console.print("adversary sweep: each component compromised with each strategy, per model ...")
            attach(result, sweep_with_progress(console, scenario, models, not chatty))
            if chatty:
                for model, res in result["models"].items():
                    for prop, entry in (res.get("trusted_base") or {}).items():
                        console.print(escape(f"  trusted base [{model}] {prop}: {_base_words(entry)}"))
        write_outputs(result, scenario, out)
        written = write_report(result, out)
        results.append(result)
        if chatty:
            console.print(summary_table(result))
            _notes(console, result)
            diffs = compare(result).differences
            console.print(f"[bold]Who saw which secret, where the models differ[/bold] ({len(diffs)}):")
            for d in diffs:
                console.print(f"  {escape(d.text())}")
            console.print(escape(f"wrote {written.markdown}, {written.html} (plots), {written.json}"))
        if not args.json:
            for line in failures(result):
                console.print(f"[red]FAIL[/red] {escape(line)}")
    return _finish(args, console, results)


def _common(p: argparse.ArgumentParser) -> None:
    """The options run and compare share, with the same meaning."""
    p.add_argument("scenario", nargs="+", metavar="SCENARIO",
                   help="scenario YAML files, directories (their *.yaml files) or glob patterns")
    p.add_argument("--model", action="append", metavar="M",
                   help="run only this trust model (repeatable; one the scenario names): fat, thin-host, "
                        "thin-guest, thin-vmm")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default out/<scenario name>; with several scenarios DIR/<scenario name>)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of the result.json objects, one per scenario, instead of tables")
    p.add_argument("--quiet", "-q", action="store_true", help="print only failures (for CI)")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML (one case per expectation)")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser(
        "run", help=summary("run"),
        description="Run each SCENARIO under the trust models it names (or --model), print a summary, and write "
                    "result.json, scenario.resolved.json and per model trace.jsonl and doe.pcap. Exits 1 when "
                    "an expectation fails, naming it.")
    _common(run)
    run.set_defaults(func=cmd_run)

    cmp = sub.add_parser(
        "compare", help=summary("compare"),
        description="Run each SCENARIO under every trust model it names (or --model) and write report.md, "
                    "report.html (plots embedded, viewable offline) and report.json next to "
                    "result.json. Exits 1 when an expectation fails, naming it.")
    _common(cmp)
    cmp.add_argument("--sweep", action="store_true",
                     help="also compromise each component with each adversary strategy, per model, and put the "
                          "measured trusted base of every security property into result.json and the report")
    cmp.set_defaults(func=cmd_compare)


def _base_words(entry: dict[str, Any]) -> str:
    """One trusted-base answer for the terminal, with what it rests on when it is not a measurement."""
    comps = ", ".join(entry["components"])
    if entry["status"] == "broken-without-compromise":
        return "BROKEN WITHOUT ANY COMPROMISE" + (f" (also: {comps})" if comps else "") + f" - {entry['why']}"
    if entry["status"] == "not-exercised":
        return f"NOT EXERCISED - {entry['why']}"
    return comps or "nobody"
