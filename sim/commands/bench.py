"""``tiosim bench``: how fast the simulator itself runs (CPU and wall time, not simulated time).

``protocol`` times the whole ``tiosim attest`` flow in process against the crypto operations it
needs and prints their ratio (:mod:`sim.bench.protocol`); ``platform`` builds N endpoints and does
one DOE round trip on each (:mod:`sim.bench.platform`). Targets are reported, never asserted: the
exit status is 1 only when a measured flow itself failed.
"""

from __future__ import annotations

import argparse
import enum
import json
from typing import Any

from rich.console import Console

from sim.bench.platform import DEFAULT_ENDPOINTS, measure_platform, profile_platform
from sim.bench.protocol import DEFAULT_REPEAT, BenchmarkError, measure_protocol, profile_flow
from sim.commands import summary
from sim.commands.common import EXIT_FAILED, EXIT_OK, UserError

PLATFORM_DEFAULT_REPEAT = 1  # a platform run is long and its numbers are stable


class Which(enum.StrEnum):
    PROTOCOL = "protocol"
    PLATFORM = "platform"
    STARTUP = "startup"
    ALL = "all"


def _print(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    which = Which(args.which)
    if args.repeat is not None and args.repeat < 1:
        raise UserError("--repeat must be at least 1")
    if args.n < 1:
        raise UserError("--n must be at least 1")
    results: dict[str, Any] = {}
    status = EXIT_OK
    if which in (Which.PROTOCOL, Which.ALL):
        try:
            protocol = measure_protocol(args.repeat or DEFAULT_REPEAT, seed=args.seed, version=args.ver,
                                        mailbox=not args.no_mailbox)
        except BenchmarkError as exc:
            console.print(f"[red]bench protocol failed[/red]: {exc}")
            results["protocol"] = {"error": str(exc)}
            status = EXIT_FAILED
        else:
            results["protocol"] = protocol.to_dict()
            if not args.json:
                _print(console, "\n".join(protocol.lines()))
        if args.profile and status == EXIT_OK and not args.json:
            _print(console, "top Python hotspots of one flow run (cProfile, cumulative):")
            _print(console, profile_flow(args.seed, args.ver))
    if which in (Which.PLATFORM, Which.ALL):
        platform = measure_platform(args.n, seed=args.seed, repeat=args.repeat or PLATFORM_DEFAULT_REPEAT)
        results["platform"] = platform.to_dict()
        if not platform.all_ok:
            status = EXIT_FAILED
        if not args.json:
            if which is Which.ALL:
                _print(console, "\nplatform benchmark:")
            _print(console, "\n".join(platform.lines()))
            if args.profile:
                _print(console, "top Python hotspots of one platform run (cProfile, cumulative):")
                _print(console, profile_platform(args.n, seed=args.seed))
    if which in (Which.STARTUP, Which.ALL):
        from sim.bench.startup import DEFAULT_REPEAT as STARTUP_REPEAT
        from sim.bench.startup import measure_startup

        startup = measure_startup(args.repeat or STARTUP_REPEAT)
        results["startup"] = startup.to_dict()
        if not args.json:
            _print(console, ("\n" if which is Which.ALL else "") + "\n".join(startup.lines()))
    if args.json:
        _print(console, json.dumps(results, indent=2))
    return status


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench",
        help=summary("bench"),
        description="protocol: run everything `tiosim attest` does in process (device included) and, in the same "
                    "run, the crypto operations that flow needs; print both CPU times (medians) and their ratio "
                    "(target <= 1.3). platform: build N Root Port + endpoint pairs and do one DOE round trip on each; "
                    "print wall time and memory. startup: CPU of `tiosim --help` and `--version` against `python -c pass` "
                    "(target <= 10x). Targets are reported, not asserted.",
    )
    p.add_argument("which", nargs="?", choices=[w.value for w in Which], default=Which.PROTOCOL.value,
                   help="which benchmark (default protocol)")
    p.add_argument("--repeat", type=int, metavar="N",
                   help=f"timed runs (default {DEFAULT_REPEAT} for protocol, {PLATFORM_DEFAULT_REPEAT} for platform)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--profile", action="store_true",
                   help="also print the top 15 Python hotspots by cumulative time (cProfile)")
    p.add_argument("--seed", type=int, default=1, help="seed of the device, requester and platform (default 1)")
    p.add_argument("--ver", choices=["1.2", "1.3"],
                   help="protocol: highest SPDM version to negotiate (default: the highest both support)")
    p.add_argument("--no-mailbox", action="store_true",
                   help="protocol: skip the extra run with every DW through the DOE registers")
    p.add_argument("--n", type=int, default=DEFAULT_ENDPOINTS,
                   help=f"platform: number of Root Port + endpoint pairs (default {DEFAULT_ENDPOINTS})")
    p.set_defaults(func=cmd_bench)
