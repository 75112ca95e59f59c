"""Start-up benchmark: ``tiosim --help`` / ``--version`` CPU against ``python -c pass``, in one run.

The measuring code lives in :mod:`sim.bench.startup` (shared with ``tiosim bench startup``). Prints only.

    python -m benchmarks.bench_startup --repeat 15
"""

from __future__ import annotations

import argparse

from sim.bench.startup import DEFAULT_REPEAT, measure_startup


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help=f"runs per case (default {DEFAULT_REPEAT})")
    args = parser.parse_args(argv)
    print("\n".join(measure_startup(args.repeat).lines()))


if __name__ == "__main__":
    main()
