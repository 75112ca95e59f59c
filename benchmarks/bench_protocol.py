"""Protocol benchmark: the whole ``tiosim attest`` flow in process against the cost of its crypto alone.

The measuring code lives in :mod:`sim.bench.protocol` (shared with ``tiosim bench protocol``); this
script parses options and prints the report: flow CPU time, crypto CPU time per operation kind, and
their ratio (target <= 1.3). ``--profile`` adds the top 15 Python hotspots of one flow run.

    python -m benchmarks.bench_protocol --repeat 9
"""

from __future__ import annotations

import argparse
import json
import sys

from sim.bench.protocol import DEFAULT_REPEAT, BenchmarkError, measure_protocol, profile_flow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"timed runs of the flow and of its crypto (default {DEFAULT_REPEAT})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ver", choices=["1.2", "1.3"], help="highest SPDM version to negotiate")
    parser.add_argument("--no-mailbox", action="store_true", help="skip the run through the DOE registers")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--profile", action="store_true", help="also print the top Python hotspots (cProfile)")
    args = parser.parse_args(argv)
    try:
        result = measure_protocol(args.repeat, seed=args.seed, version=args.ver, mailbox=not args.no_mailbox)
    except BenchmarkError as exc:
        print(f"bench_protocol: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2) if args.json else "\n".join(result.lines()))
    if args.profile:
        print(profile_flow(args.seed, args.ver))
    return 0


if __name__ == "__main__":
    sys.exit(main())
