"""``tiosim validate``: check scenario files against the schema, or print the schema itself."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape

from sim.commands import summary
from sim.commands.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UserError
from sim.scenario.loader import ScenarioError, ScenarioFileError, load_scenario, schema_json


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    if args.schema:
        print(json.dumps(schema_json(), indent=2))
        if not args.scenarios:
            return EXIT_OK
    if not args.scenarios:
        raise UserError("validate needs at least one scenario file (or --schema)")
    invalid = unreadable = 0
    for path in args.scenarios:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            if isinstance(exc, ScenarioFileError):
                unreadable += 1
            else:
                invalid += 1
            for problem in exc.problems:
                console.print(f"[red]{escape(str(problem))}[/red]")
            if not isinstance(exc, ScenarioFileError):
                count = len(exc.problems)
                console.print(f"[red]INVALID[/red] {escape(path)} ({count} problem{'s' if count != 1 else ''})")
            continue
        models = ", ".join(str(m) for m in scenario.models)
        console.print(f"[green]OK[/green] {escape(path)} ({len(scenario.platform.devices)} devices, "
                      f"{len(scenario.timeline)} events, models {models})")
    if unreadable:
        return EXIT_USAGE
    return EXIT_FAILED if invalid else EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    val = sub.add_parser(
        "validate",
        help=summary("validate"),
        description="Load each scenario file and report every problem as FILE:LINE:COL: key.path: message. "
                    "Exits 1 if any file is invalid, 2 if one cannot be read. --schema prints the scenario "
                    "JSON Schema (for editors; scenarios/scenario.schema.json is this output).",
    )
    val.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario YAML files")
    val.add_argument("--schema", action="store_true", help="print the scenario JSON Schema")
    val.set_defaults(func=cmd_validate)
