"""Wall-clock and CPU benchmarks of the simulator itself (not simulated time).

``protocol`` times the whole ``tiosim attest`` flow in process against the cost of the crypto it
needs; ``platform`` times building and exercising many endpoints in the engine. Both are used by
``benchmarks/`` scripts and by ``tiosim bench``. Targets are reported as ratios measured in one
run, never asserted as times.
"""
