"""Start-up benchmark: the CPU time of ``tiosim --help`` and ``tiosim --version`` against ``python -c pass``.

Each is a fresh interpreter (``python -m sim``, so no console-script shim), timed by the children's
CPU time (user + system, from ``resource``), median of ``repeat`` runs, all in the same run so the
ratio holds on a loaded machine. Target: each <= 10x the bare interpreter. Reported, never asserted.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import subprocess
import sys
from typing import Any

DEFAULT_REPEAT = 15
TARGET_RATIO = 10.0
CASES = {"python -c pass": ["-c", "pass"], "tiosim --help": ["-m", "sim", "--help"],
         "tiosim --version": ["-m", "sim", "--version"]}


def _cpu_of(args: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@dataclasses.dataclass(frozen=True)
class StartupResult:
    repeat: int
    cpu_s: dict[str, float]  # median CPU seconds per case

    @property
    def ratios(self) -> dict[str, float]:
        base = self.cpu_s["python -c pass"] or 1e-9
        return {k: v / base for k, v in self.cpu_s.items() if k != "python -c pass"}

    def lines(self) -> list[str]:
        out = [f"start-up, median CPU of {self.repeat} runs each (target <= {TARGET_RATIO:g}x python -c pass):"]
        out.append(f"  python -c pass     {self.cpu_s['python -c pass'] * 1e3:8.1f} ms")
        for name, ratio in self.ratios.items():
            out.append(f"  {name:<18} {self.cpu_s[name] * 1e3:8.1f} ms  {ratio:5.1f}x"
                       f"{'' if ratio <= TARGET_RATIO else '  (above target)'}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"repeat": self.repeat, "cpu_s": self.cpu_s, "ratios": self.ratios, "target_ratio": TARGET_RATIO}


def measure_startup(repeat: int = DEFAULT_REPEAT) -> StartupResult:
    for args in CASES.values():  # warm the file cache and bytecode once
        _cpu_of(args)
    samples: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(repeat):  # interleaved, so a burst of load hits every case alike
        for name, args in CASES.items():
            samples[name].append(_cpu_of(args))
    return StartupResult(repeat, {k: statistics.median(v) for k, v in samples.items()})
