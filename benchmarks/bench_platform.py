"""Platform benchmark: N endpoints behind N Root Ports, one DOE round trip per endpoint.

The measuring code lives in :mod:`sim.bench.platform` (shared with ``tiosim bench platform``); this
script parses options and prints its report. Prints only; asserts nothing about speed.

    python -m benchmarks.bench_platform --n 1000
"""

from __future__ import annotations

import argparse

from sim.bench.platform import DEFAULT_ENDPOINTS, measure_platform, profile_platform


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=DEFAULT_ENDPOINTS,
                        help=f"number of Root Port + endpoint pairs (default {DEFAULT_ENDPOINTS})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="independent runs; wall times are medians (default 1)")
    parser.add_argument("--profile", action="store_true", help="also print the top Python hotspots (cProfile)")
    args = parser.parse_args(argv)
    result = measure_platform(args.n, seed=args.seed, repeat=args.repeat)
    print("\n".join(result.lines()))
    if args.profile:
        print(profile_platform(args.n, seed=args.seed))


if __name__ == "__main__":
    main()
