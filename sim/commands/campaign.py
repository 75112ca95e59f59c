"""``tiosim campaign``: random fault storms on one scenario, invariants on every run, shrunk reproducers.

Writes ``campaign.json`` (the report: counts per model and invariant, every failure with its shrunk
fault list), ``campaign.md`` and, per failure, a ready-to-run scenario in ``reproducers/``. Exits 1
when any run failed an invariant. The engine is :mod:`sim.scenario.campaign`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sim.commands import summary
from sim.commands.common import EXIT_FAILED, EXIT_OK, UserError, read_text
from sim.scenario.campaign import (
    DEFAULT_FAULTS,
    CampaignError,
    CampaignOptions,
    FaultKind,
    Invariant,
    run_campaign,
    write_report,
)
from sim.scenario.jobs import JobsError
from sim.scenario.loader import ScenarioError, load_scenario_text


def _kinds(text: str) -> tuple[FaultKind, ...]:
    out = []
    for name in (t.strip() for t in text.split(",") if t.strip()):
        try:
            out.append(FaultKind(name))
        except ValueError:
            raise UserError(f"--faults {name}: expected a comma-separated list of "
                            f"{', '.join(k.value for k in FaultKind)}") from None
    if not out:
        raise UserError("--faults: name at least one fault kind")
    return tuple(dict.fromkeys(out))


def cmd_campaign(args: argparse.Namespace, console: Console) -> int:
    text = read_text(args.scenario)
    try:
        load_scenario_text(text, args.scenario)
    except ScenarioError as exc:
        raise UserError(str(exc)) from None
    if args.runs < 0:
        raise UserError(f"--runs {args.runs}: expected 0 (check the file as written) or more")
    if not 1 <= args.max_faults <= 10:
        raise UserError(f"--max-faults {args.max_faults}: expected 1 to 10")
    options = CampaignOptions(runs=args.runs, kinds=_kinds(args.faults), seed=args.seed, jobs=args.jobs,
                              scheduler=args.scheduler, max_faults=args.max_faults,
                              models=tuple(args.model) if args.model else None)
    out = Path(args.out)
    started = time.monotonic()
    try:
        if args.quiet or not console.is_terminal:
            report = run_campaign(text, args.scenario, options)
        else:
            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TimeElapsedColumn(), console=console, transient=True) as bar:
                tasks: dict[str, int] = {}

                def progress(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        tasks[stage] = bar.add_task(stage, total=total)
                    bar.update(tasks[stage], completed=done)

                report = run_campaign(text, args.scenario, options, progress)
    except (CampaignError, JobsError) as exc:
        raise UserError(str(exc)) from None
    wall = time.monotonic() - started
    paths = write_report(report, out)
    failed = report["invariant_failures"]
    if not args.quiet:
        for model, r in report["models"].items():
            bad = ", ".join(f"{inv} {r['invariants'][str(inv)]}" for inv in Invariant if r["invariants"][str(inv)])
            console.print(f"{model}: {r['runs']} runs, {r['failed_runs']} failed" + (f" ({bad})" if bad else ""))
        console.print(f"wrote {paths[0]}, {paths[1]}" + (f" and {len(paths) - 2} reproducer(s)" if len(paths) > 2
                                                           else "") + f" in {wall:.1f} s")
    for f in report["failures"]:
        v = f["shrunk"]["violation"] or f["violations"][0]
        where = escape(f"[{f['model']}] {v['invariant']}: {v['detail']} -> {f.get('reproducer_file', '')}")
        console.print(f"[red]FAIL[/red] {where}")
    return EXIT_FAILED if failed else EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "campaign", help=summary("campaign"),
        description="Generate RUNS fault variants of SCENARIO (1..--max-faults faults each, at random instants "
                    "or after random milestones, reproducible from --seed), run each under every model of the "
                    "scenario, check the invariants on every run, shrink each failure to a minimal scenario and "
                    "write campaign.json, campaign.md and reproducers/*.yaml to --out. --runs 0 checks the file "
                    "as written (e.g. a reproducer). Exits 1 when a run failed an invariant.")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--runs", type=int, default=100, help="variants per model (default 100)")
    p.add_argument("--faults", default=",".join(k.value for k in DEFAULT_FAULTS),
                   help=f"fault kinds to draw from (default {','.join(k.value for k in DEFAULT_FAULTS)}; "
                        f"also: {','.join(k.value for k in FaultKind if k not in DEFAULT_FAULTS)})")
    p.add_argument("--max-faults", type=int, default=3, help="at most this many faults per variant (default 3)")
    p.add_argument("--seed", type=int, default=1, help="variant generator seed (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--scheduler", metavar="ADDR", help="run on this Dask distributed scheduler instead "
                                                       "(tcp://host:8786; needs tiosim[dask])")
    p.add_argument("--model", action="append", metavar="M", help="only this model of the scenario (repeatable)")
    p.add_argument("--out", default="out/campaign", metavar="DIR", help="output folder (default out/campaign)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only failures")
    p.set_defaults(func=cmd_campaign)
