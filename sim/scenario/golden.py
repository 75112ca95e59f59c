"""Golden traces: what a shipped scenario's run looked like, compact enough to keep in the repository.

A run's trace digest (SHA-256 over its canonical JSON lines, ``sim.engine.trace``) says *whether* a run
changed; it cannot say *where*. So the golden file of a scenario, ``scenarios/golden/<stem>.json``, also
keeps, per trust model, a fingerprint of every trace event: the first :data:`FINGERPRINT_BYTES` bytes of
the SHA-256 of its canonical JSON line, packed as base64 lines. Comparing a new run against those finds
the FIRST event that differs and names it (index, time, source → destination, decoded summary), and
says where the golden event at that index went (found later in this run, or gone) — without storing
the golden trace itself.

Golden data is only ever written on request::

    python -m sim.scenario.golden --update                 # every scenarios/*.yaml
    python -m sim.scenario.golden --update scenarios/x.yaml
    python -m sim.scenario.golden --check                  # compare, print the first difference, exit 1

Tests compare and fail; they never update.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sim.engine.trace import TraceEvent
from sim.scenario.loader import ScenarioError, ScenarioFileError, load_scenario
from sim.scenario.run import ModelRun, digest_of_scenario
from sim.scenario.schema import Scenario, TrustModel

GOLDEN_FORMAT = 1
FINGERPRINT_BYTES = 4        # 2^-32 chance that a changed event keeps its fingerprint (the digest still catches it)
EVENTS_PER_LINE = 1024       # fingerprints per base64 line: a change rewrites few lines of the golden file
REPO = Path(__file__).resolve().parents[2]
SCENARIO_DIR = REPO / "scenarios"


# ----------------------------------------------------------------------------------------------------
# fingerprints
# ----------------------------------------------------------------------------------------------------


def fingerprint(event: TraceEvent) -> bytes:
    """The first bytes of the SHA-256 of the event's canonical line (typed fields and bytes, no summary: what the
    trace digest hashes)."""
    return hashlib.sha256(event.canonical_line().encode("ascii")).digest()[:FINGERPRINT_BYTES]


def fingerprints(events: Iterable[TraceEvent]) -> bytes:
    return b"".join(fingerprint(e) for e in events)


def pack(fps: bytes) -> list[str]:
    """Base64 lines of :data:`EVENTS_PER_LINE` fingerprints each."""
    step = EVENTS_PER_LINE * FINGERPRINT_BYTES
    return [base64.b64encode(fps[i:i + step]).decode("ascii") for i in range(0, len(fps), step)]


def unpack(lines: Sequence[str]) -> bytes:
    try:
        return b"".join(base64.b64decode(line, validate=True) for line in lines)
    except ValueError as exc:
        raise GoldenError(f"fingerprints are not base64: {exc}") from None


class GoldenError(Exception):
    """A golden file that is missing, unreadable or of another format."""


# ----------------------------------------------------------------------------------------------------
# golden data
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GoldenModel:
    """One trust model's run: its digest, how many events, and one fingerprint per event."""

    trace_digest: str
    trace_events: int
    fingerprints: bytes

    def at(self, index: int) -> bytes:
        return self.fingerprints[index * FINGERPRINT_BYTES:(index + 1) * FINGERPRINT_BYTES]

    def find(self, fp: bytes, start: int) -> int | None:
        """The first index >= ``start`` whose fingerprint is ``fp``."""
        for i in range(start, self.trace_events):
            if self.at(i) == fp:
                return i
        return None

    def to_json(self) -> dict[str, Any]:
        return {"trace_digest": self.trace_digest, "trace_events": self.trace_events,
                "fingerprints": pack(self.fingerprints)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> GoldenModel:
        if not isinstance(obj, dict) or not {"trace_digest", "trace_events", "fingerprints"} <= obj.keys():
            raise GoldenError(f"{where}: expected an object with trace_digest, trace_events, fingerprints")
        fps = unpack(obj["fingerprints"])
        if len(fps) != obj["trace_events"] * FINGERPRINT_BYTES:
            raise GoldenError(f"{where}: {len(fps) // FINGERPRINT_BYTES} fingerprints for "
                              f"{obj['trace_events']} events")
        return cls(str(obj["trace_digest"]), int(obj["trace_events"]), fps)

    @classmethod
    def of(cls, digest: str, events: Sequence[TraceEvent]) -> GoldenModel:
        return cls(digest, len(events), fingerprints(events))


@dataclasses.dataclass(frozen=True)
class Golden:
    """A scenario's golden file: per trust model, a :class:`GoldenModel`."""

    scenario: str
    file: str
    scenario_digest: str
    models: dict[str, GoldenModel]

    def to_json(self) -> dict[str, Any]:
        return {"format": GOLDEN_FORMAT, "scenario": self.scenario, "file": self.file,
                "scenario_digest": self.scenario_digest, "fingerprint_bytes": FINGERPRINT_BYTES,
                "models": {m: g.to_json() for m, g in sorted(self.models.items())}}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Golden:
        if not isinstance(obj, dict) or obj.get("format") != GOLDEN_FORMAT:
            raise GoldenError(f"{where}: not a golden file of format {GOLDEN_FORMAT}")
        if obj.get("fingerprint_bytes") != FINGERPRINT_BYTES:
            raise GoldenError(f"{where}: fingerprints of {obj.get('fingerprint_bytes')} bytes, expected "
                              f"{FINGERPRINT_BYTES} (regenerate it)")
        models = obj.get("models")
        if not isinstance(models, dict):
            raise GoldenError(f"{where}: 'models' must be an object")
        return cls(str(obj.get("scenario")), str(obj.get("file")), str(obj.get("scenario_digest")),
                   {m: GoldenModel.from_json(g, f"{where}: models.{m}") for m, g in models.items()})


def golden_path(scenario_file: str | Path, golden_dir: Path | None = None) -> Path:
    """``<scenario folder>/golden/<stem>.json`` unless another folder is given."""
    path = Path(scenario_file)
    return (golden_dir or path.parent / "golden") / f"{path.stem}.json"


def load_golden(path: Path) -> Golden:
    if not path.is_file():
        raise GoldenError(f"{path}: no golden data (write it with: python -m sim.scenario.golden --update)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GoldenError(f"{path}: unreadable ({exc})") from None
    return Golden.from_json(obj, str(path))


def write_golden(golden: Golden, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(golden.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")


def display_path(path: Path) -> str:
    """Repository-relative when inside it (golden files must not depend on where the checkout lives)."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.as_posix()


# ----------------------------------------------------------------------------------------------------
# running and comparing
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TracedRun:
    """One model's run with its full trace kept in memory."""

    model: str
    result: dict[str, Any]
    events: list[TraceEvent]

    @property
    def digest(self) -> str:
        return str(self.result["trace_digest"])


def run_traced(scenario: Scenario, model: TrustModel) -> TracedRun:
    """Run ``scenario`` under ``model`` exactly as ``tiosim run`` does, keeping every trace event."""
    run = ModelRun(scenario, model)
    result = run.run()
    return TracedRun(str(model), result, run.memory.events)


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """Where a run first departs from its golden trace."""

    model: str
    index: int
    text: str

    def __str__(self) -> str:
        return self.text


def _event_text(e: TraceEvent) -> str:
    return f"t={e.time_ns} ns {e.source} → {e.destination} [{e.channel}] {e.summary or '(no summary)'}"


def first_mismatch(golden: GoldenModel, run: TracedRun) -> Mismatch | None:
    """None when the run's digest is the golden one; otherwise the first differing event, described."""
    if run.digest == golden.trace_digest and len(run.events) == golden.trace_events:
        return None
    now = fingerprints(run.events)
    count = min(len(run.events), golden.trace_events)
    index = next((i for i in range(count)
                  if now[i * FINGERPRINT_BYTES:(i + 1) * FINGERPRINT_BYTES] != golden.at(i)), None)
    head = f"[{run.model}] trace digest {run.digest[:16]}… != golden {golden.trace_digest[:16]}…"
    if index is None:
        if len(run.events) > golden.trace_events:
            extra = run.events[count]
            return Mismatch(run.model, count, f"{head}: the first {count} events match; this run goes on with "
                                              f"{len(run.events) - count} more, from event #{count}: "
                                              f"{_event_text(extra)}")
        if len(run.events) < golden.trace_events:
            last = f" after event #{count - 1}: {_event_text(run.events[-1])}" if run.events else ""
            return Mismatch(run.model, count, f"{head}: this run stops at {count} events{last}; the golden run "
                                              f"had {golden.trace_events}")
        return Mismatch(run.model, count, f"{head}: all {count} event fingerprints match, yet the digest differs")
    event = run.events[index]
    fp_now = now[index * FINGERPRINT_BYTES:(index + 1) * FINGERPRINT_BYTES]
    in_golden = golden.find(fp_now, index + 1)
    later = next((j for j in range(index + 1, len(run.events))
                  if now[j * FINGERPRINT_BYTES:(j + 1) * FINGERPRINT_BYTES] == golden.at(index)), None)
    where_now = (f"golden has this event later, at #{in_golden}" if in_golden is not None
                 else "golden has no such event after this point")
    where_golden = (f"golden event #{index} comes at #{later} in this run: {_event_text(run.events[later])}"
                    if later is not None else f"golden event #{index} does not occur in this run")
    return Mismatch(run.model, index, f"{head}: first differing event #{index} of {len(run.events)} (golden "
                                      f"{golden.trace_events}): now {_event_text(event)} ({where_now}); "
                                      f"{where_golden}")


def golden_of(scenario: Scenario, scenario_file: str | Path, runs: Iterable[TracedRun]) -> Golden:
    return Golden(scenario.name, display_path(Path(scenario_file)), digest_of_scenario(scenario),
                  {r.model: GoldenModel.of(r.digest, r.events) for r in runs})


def check(scenario: Scenario, golden: Golden, run: TracedRun) -> Mismatch | None:
    """Compare one model's run with the scenario's golden data (missing model or stale scenario named)."""
    model = golden.models.get(run.model)
    if model is None:
        return Mismatch(run.model, 0, f"[{run.model}] no golden trace for this model (golden has "
                                      f"{', '.join(golden.models) or 'none'})")
    found = first_mismatch(model, run)
    if found is not None and golden.scenario_digest != digest_of_scenario(scenario):
        return Mismatch(found.model, found.index, f"{found.text} — note: the scenario itself changed since the "
                                                  "golden data was written")
    return found


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------


def shipped_scenarios(folder: Path = SCENARIO_DIR) -> list[Path]:
    return sorted(folder.glob("*.yaml"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.scenario.golden",
        description="Write (--update) or compare (--check) the golden traces of scenario files: per trust "
                    "model the trace digest, the event count and a fingerprint per trace event.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--update", action="store_true", help="run and (re)write the golden files")
    mode.add_argument("--check", action="store_true", help="run and compare; exit 1 naming the first difference")
    parser.add_argument("scenario", nargs="*", help="scenario files (default: every scenarios/*.yaml)")
    parser.add_argument("--golden-dir", type=Path, help="where golden files live (default: <scenario dir>/golden)")
    args = parser.parse_args(argv)
    files = [Path(p) for p in args.scenario] or shipped_scenarios()
    failed = False
    for path in files:
        try:
            scenario = load_scenario(path)
        except (ScenarioError, ScenarioFileError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
        runs = [run_traced(scenario, m) for m in scenario.models]
        target = golden_path(path, args.golden_dir)
        if args.update:
            write_golden(golden_of(scenario, path, runs), target)
            print(f"wrote {display_path(target)} ({', '.join(f'{r.model}: {len(r.events)} events' for r in runs)})")
            continue
        try:
            golden = load_golden(target)
        except GoldenError as exc:
            print(f"FAIL {exc}")
            failed = True
            continue
        problems = [m for r in runs if (m := check(scenario, golden, r)) is not None]
        for m in problems:
            print(f"FAIL {display_path(path)} {m}")
        if not problems:
            print(f"ok   {display_path(path)} ({len(runs)} models)")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
