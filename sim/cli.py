"""The ``tiosim`` command line.

Each subcommand lives in ``sim/commands/<name>.py`` and registers itself with ``add_parser``;
``sim.commands.COMMANDS`` names them. Only the module of the command being run is imported, so
``tiosim --help`` and ``--version`` start in a few times the interpreter's own start-up.

Every user-facing failure is one line naming what was wrong (file, key, field, byte offset)
with a non-zero exit status; a traceback is a bug. A closed output pipe (``tiosim ... | head``)
ends the command quietly with status 141, as a shell reports a process killed by SIGPIPE.
Without a terminal, output is plain: no colour, no progress bars, no truncation or wrapping.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sim.commands import COMMANDS, summary
from sim.commands.common import EXIT_USAGE, UserError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
EXIT_INTERRUPTED = 130  # 128 + SIGINT
PLAIN_WIDTH = 100_000  # "no wrapping": wider than any line a command prints
FORMATS = ("auto", "plain", "rich")


class _Version(argparse.Action):
    """``--version``: read from the installed package's metadata only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the installed tiosim version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("tiosim")
        except PackageNotFoundError:  # run from a checkout that was never installed
            from sim import __version__ as text
        print(f"tiosim {text}")
        parser.exit()


def _modules(only: str | None) -> Iterable[str]:
    seen: list[str] = []
    for name, command in COMMANDS.items():
        if command.module not in seen and (only is None or name == only):
            seen.append(command.module)
    return seen


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser of ``command`` (of every command when None); the others get a help line only."""
    parser = argparse.ArgumentParser(
        prog="tiosim",
        description="Discrete-event simulator of trusted PCIe I/O (DOE, SPDM, IDE_KM, TDISP).",
        epilog="`tiosim COMMAND --help` describes a command. Documentation: docs/ in the source tree.",
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="output style: rich (colour, tables, progress bars), plain (full-width lines, no "
                             "colour or progress; for logs, pipes and editors), auto (rich on a terminal, "
                             "else plain; the default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    full = set(_modules(command)) if command is None or command in COMMANDS else set()
    added: set[str] = set()
    for name, spec in COMMANDS.items():
        if spec.module in full:
            if spec.module not in added:
                importlib.import_module(spec.module).add_parser(sub)
                added.add(spec.module)
        else:
            sub.add_parser(name, help=summary(name), add_help=False)
    return parser


def _command_of(argv: Sequence[str]) -> str:
    """The subcommand argv names ("" when none): the first word that is not a global option or its value."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--format":
            skip = True
        elif word == "--":
            continue
        elif not word.startswith("-"):
            return word
    return ""


def make_console(style: str, stderr: bool = False) -> Console:
    """The console of one run: rich on a terminal (or when asked), else plain full-width lines."""
    from rich.console import Console as RichConsole

    class Console(RichConsole):
        def on_broken_pipe(self) -> None:  # rich would exit 1 itself; main ends every closed pipe the same way
            raise BrokenPipeError

    stream = sys.stderr if stderr else sys.stdout
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if style == "rich" or (style == "auto" and tty):
        return Console(stderr=stderr, highlight=False, soft_wrap=True, force_terminal=True if style == "rich" else None)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, force_terminal=False, no_color=True,
                   width=PLAIN_WIDTH, emoji=False)


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests capture it)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args_list)
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("tiosim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    console = make_console(args.format)
    try:
        return int(args.func(args, console))
    except UserError as exc:
        from rich.markup import escape

        make_console(args.format, stderr=True).print(f"[red]tiosim {args.command}:[/red] {escape(str(exc))}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
