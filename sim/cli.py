"""The ``tiosim`` command line.

Each subcommand lives in ``sim/commands/<name>.py`` and registers itself with ``add_parser``.
Every user-facing failure is one line naming what was wrong (file, key, field, byte offset)
with a non-zero exit status; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from sim.commands import attest, bench, campaign, decode, run, serve_device, validate
from sim.commands.common import EXIT_USAGE, UserError

COMMANDS = (run, decode, validate, serve_device, attest, bench, campaign)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiosim",
        description="Discrete-event simulator of trusted PCIe I/O (DOE, SPDM, IDE_KM, TDISP).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    console = Console(highlight=False, soft_wrap=True)
    try:
        return int(args.func(args, console))
    except UserError as exc:
        Console(stderr=True, highlight=False).print(f"[red]tiosim {args.command}:[/red] {exc}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
