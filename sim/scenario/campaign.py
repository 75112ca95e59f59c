"""Fault campaigns: many seeded fault variants of one scenario, invariants checked on every run,
each failure shrunk to a minimal ready-to-run scenario.

A *variant* adds 1..k faults to the scenario's timeline — DPC on a port, D3cold with its exit, FLR
of a function, link down with link up, hot reset — each at a random instant or a random delay after
a securing-flow milestone. Variants come from ``random.Random(seed)``: the same seed gives the same
variants and so (runs being deterministic) the same report. Every variant runs under every model of
the scenario; each run is checked against these invariants, all computed from the run's structured
records (``sim.scenario.outcomes``, the watch histories, the exposure matrix), never from text:

* ``no-traceback`` — the run raised nothing (an exception is caught per run and reported);
* ``tdi-run-needs-secure-stream`` — no TDI is in RUN over an interval in which its device's
  stream is not Secure;
* ``keys-fresh-after-reset`` — no IDE key programmed after a reset of a device (either end) equals
  one programmed before it;
* ``session-fresh-after-reset`` — after a reset, the device answers no secured message before a
  new KEY_EXCHANGE (no SPDM session survives the reset);
* ``exposure-within-baseline`` — no role sees any secret class more than it does in the model's
  unfaulted run;
* ``fault-accounted`` — every fault ends recovered (secure again, TDIs back in RUN) or with a
  stated reason;
* ``final-state-consistent`` — a port left contained or with its link down, or a device left
  powered off or not usable by the host, is explained by a failed host recovery.

Shrinking (:func:`shrink`) is delta debugging over the fault list (drop faults while the same
invariant still fails), then moves each remaining instant as early as it still fails (bisection
in whole milliseconds), within a bounded number of re-runs.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import random
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from sim.protocols.tsm import Phase
from sim.scenario import schema as S
from sim.scenario.jobs import map_jobs
from sim.scenario.loader import load_scenario_text

NS_PER_MS = 1_000_000
MAX_FAULTS = 3
SHRINK_BUDGET = 40               # re-runs per failure at most
PHASES = tuple(p.value for p in Phase)
CAMPAIGN_FORMAT = 1


class FaultKind(enum.StrEnum):
    """What a campaign can inject (``--faults``)."""

    DPC = "dpc"
    D3COLD = "d3cold"          # with its exit after a hold time
    FLR = "flr"
    LINK_DOWN = "link-down"    # with link up after a hold time
    HOT_RESET = "hot-reset"


DEFAULT_FAULTS = (FaultKind.DPC, FaultKind.D3COLD, FaultKind.FLR, FaultKind.LINK_DOWN)
# timeline event kinds a campaign adds; the baseline run strips them from the scenario
FAULT_EVENTS = frozenset({S.EventKind.DPC, S.EventKind.D3COLD, S.EventKind.D3COLD_EXIT, S.EventKind.FLR,
                          S.EventKind.LINK_DOWN, S.EventKind.LINK_UP, S.EventKind.HOT_RESET})


class Invariant(enum.StrEnum):
    NO_TRACEBACK = "no-traceback"
    TDI_RUN_NEEDS_SECURE = "tdi-run-needs-secure-stream"
    KEYS_FRESH = "keys-fresh-after-reset"
    SESSION_FRESH = "session-fresh-after-reset"
    EXPOSURE = "exposure-within-baseline"
    FAULT_ACCOUNTED = "fault-accounted"
    FINAL_STATE = "final-state-consistent"


# --------------------------------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fault:
    """One injected fault: at ``at_ms``, or ``delay_ms`` after ``phase`` of ``phase_device``."""

    kind: FaultKind
    target: str                     # a device id (d3cold, flr) or a port id (dpc, link-down, hot-reset)
    at_ms: int | None = None
    phase_device: str | None = None
    phase: str | None = None
    delay_ms: int = 0
    function: int = 0               # flr
    hold_ms: int = 0                # d3cold: time until the exit; link-down: time until link up

    def instant_ms(self) -> int:
        return self.at_ms if self.at_ms is not None else self.delay_ms

    def with_instant(self, ms: int) -> Fault:
        return dataclasses.replace(self, at_ms=ms) if self.at_ms is not None else dataclasses.replace(self, delay_ms=ms)

    def _trigger(self, extra_ms: int = 0) -> dict[str, Any]:
        if self.at_ms is not None:
            return {"at": f"{self.at_ms + extra_ms}ms"}
        return {"after": {"device": self.phase_device, "phase": self.phase, "delay": f"{self.delay_ms + extra_ms}ms"}}

    def events(self) -> list[dict[str, Any]]:
        """The timeline entries of this fault."""
        k = self.kind
        if k is FaultKind.DPC:
            return [{"event": "dpc", "port": self.target, **self._trigger()}]
        if k is FaultKind.HOT_RESET:
            return [{"event": "hot_reset", "port": self.target, **self._trigger()}]
        if k is FaultKind.FLR:
            return [{"event": "flr", "device": self.target, "function": self.function, **self._trigger()}]
        if k is FaultKind.D3COLD:
            return [{"event": "d3cold", "device": self.target, **self._trigger()},
                    {"event": "d3cold_exit", "device": self.target, **self._trigger(self.hold_ms)}]
        return [{"event": "link_down", "port": self.target, **self._trigger()},
                {"event": "link_up", "port": self.target, **self._trigger(self.hold_ms)}]

    def describe(self) -> str:
        what = f"{self.kind} {self.target}" + (f" function {self.function}" if self.kind is FaultKind.FLR else "")
        when = f"at {self.at_ms} ms" if self.at_ms is not None else \
            f"{self.delay_ms} ms after {self.phase_device} {self.phase}"
        hold = f" (held {self.hold_ms} ms)" if self.kind in (FaultKind.D3COLD, FaultKind.LINK_DOWN) else ""
        return f"{what} {when}{hold}"

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, enum.Enum) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        return cls(**{**data, "kind": FaultKind(data["kind"])})


@dataclasses.dataclass(frozen=True)
class Variant:
    index: int
    faults: tuple[Fault, ...]


def _horizon_ms(scenario: S.Scenario) -> int:
    last = max((e.at for e in scenario.timeline if e.at is not None), default=0)
    return max(500, last // NS_PER_MS + 500)


def generate(scenario: S.Scenario, runs: int, kinds: Iterable[FaultKind], seed: int,
             max_faults: int = MAX_FAULTS) -> list[Variant]:
    """``runs`` variants of 1..max_faults faults, from ``seed`` alone (module docstring)."""
    rng = random.Random(seed)
    kinds = [FaultKind(k) for k in kinds]
    devices = [d for d in scenario.platform.devices]
    dpc_ports = [p.id for p in scenario.platform.root_ports if p.dpc]
    used_ports = sorted({d.port for d in devices})
    horizon = _horizon_ms(scenario)
    choices = [k for k in kinds if k is not FaultKind.DPC or dpc_ports]
    if not choices or not devices:
        return []
    out = []
    for index in range(runs):
        faults = []
        for _ in range(rng.randint(1, max_faults)):
            kind = rng.choice(choices)
            device = rng.choice(devices)
            if kind is FaultKind.DPC:
                target = rng.choice([p for p in dpc_ports if p in used_ports] or dpc_ports)
            elif kind in (FaultKind.LINK_DOWN, FaultKind.HOT_RESET):
                target = rng.choice(used_ports)
            else:
                target = device.id
            functions = sorted({0} | {t.function for t in device.tdis})
            function = rng.choice(functions) if kind is FaultKind.FLR else 0
            hold = rng.randint(5, 400) if kind in (FaultKind.D3COLD, FaultKind.LINK_DOWN) else 0
            if rng.random() < 0.5:
                fault = Fault(kind, target, at_ms=rng.randint(1, horizon), function=function, hold_ms=hold)
            else:
                fault = Fault(kind, target, phase_device=rng.choice(devices).id, phase=rng.choice(PHASES),
                              delay_ms=rng.randint(0, 100), function=function, hold_ms=hold)
            faults.append(fault)
        out.append(Variant(index, tuple(faults)))
    return out


def variant_data(base: dict[str, Any], faults: Iterable[Fault], model: str | None = None) -> dict[str, Any]:
    """The scenario mapping with the faults added to its timeline and its expectations dropped (a
    campaign checks invariants; the scenario's expectations were written for its unfaulted run)."""
    data = dict(base)
    data["timeline"] = list(base.get("timeline") or []) + [e for f in faults for e in f.events()]
    data["expect"] = []
    if model is not None:
        data["models"] = [model]
    return data


def baseline_data(base: dict[str, Any]) -> dict[str, Any]:
    """The scenario without any fault events and without expectations."""
    faults = {str(k) for k in FAULT_EVENTS}
    data = dict(base)
    data["timeline"] = [e for e in base.get("timeline") or [] if str(e.get("event")) not in faults]
    data["expect"] = []
    return data


# --------------------------------------------------------------------------------------------------
# one run and its invariants
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One run to do: picklable plain data (for process pools and Dask workers)."""

    scenario_yaml: str
    model: str
    faults: tuple[dict[str, Any], ...]
    baseline: dict[str, Any] | None      # the model's unfaulted exposure by role; None: this is the baseline
    index: int = -1


def run_case(case: Case) -> dict[str, Any]:
    """Run one case and check the invariants; never raises (an exception is the no-traceback failure)."""
    from sim.scenario.run import run_scenario

    faults = [Fault.from_json(f) for f in case.faults]
    base = yaml.safe_load(case.scenario_yaml)
    data = variant_data(base, faults, case.model) if case.baseline is not None else \
        {**baseline_data(base), "models": [case.model]}
    try:
        scenario = load_scenario_text(yaml.safe_dump(data, sort_keys=False), "<campaign variant>", check_files=False)
        result = run_scenario(scenario, [S.TrustModel(case.model)])["models"][case.model]
    except Exception as exc:  # noqa: BLE001 - a run that raises is the finding, reported per run
        return {"index": case.index, "model": case.model, "faults": list(case.faults),
                "violations": [{"invariant": str(Invariant.NO_TRACEBACK),
                                "detail": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=-8)}],
                "exposure": None, "outcomes": []}
    violations = [] if case.baseline is None else check(result, case.baseline)
    return {"index": case.index, "model": case.model, "faults": list(case.faults), "violations": violations,
            "exposure": exposure_by_role(result),
            "outcomes": [{"kind": f["kind"], "outcome": f["outcome"]} for f in result["faults"]]}


def exposure_by_role(result: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per secret class, per role (or component path when it plays no role): the highest level."""
    from sim.engine.exposure import Exposure

    roles = result["roles"]
    out: dict[str, dict[str, int]] = {}
    for cls, row in result["exposure"]["matrix"].items():
        for comp, level in row.items():
            who = roles.get(comp, comp)
            cell = out.setdefault(cls, {})
            cell[who] = max(cell.get(who, 0), int(Exposure[level]))
    return out


def check(result: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, str]]:
    """Every invariant but no-traceback on one model's result (module docstring)."""
    found: list[dict[str, str]] = []

    def fail(inv: Invariant, detail: str) -> None:
        found.append({"invariant": str(inv), "detail": detail})

    end = result["end_ns"]
    faults = result["faults"]
    for device, d in result["devices"].items():
        for detail in _run_without_secure(d, end):
            fail(Invariant.TDI_RUN_NEEDS_SECURE, f"{device}: {detail}")
    for dev, resets in result["device_resets"].items():
        state = result["final_state"]["devices"][dev]
        for reset in resets:
            if reset["clears_security"]:
                _fresh_after(result, dev, {state["path"], state["port"]}, reset, fail)
    for cls, row in exposure_by_role(result).items():
        for who, level in row.items():
            allowed = baseline.get(cls, {}).get(who, 0)
            if level > allowed:
                from sim.engine.exposure import Exposure

                fail(Invariant.EXPOSURE, f"{who} reached {Exposure(level).name} of {cls} "
                                         f"(unfaulted run: {Exposure(allowed).name})")
    for f in faults:
        if f["outcome"] != "recovered" and not f["reason"]:
            fail(Invariant.FAULT_ACCOUNTED, f"{f['kind']} of {f['device']} at {f['at_ns']} ns: {f['outcome']} "
                                            "with no stated reason")
    explained_ports = {f["port"] for f in faults if f.get("reason_kind") == "host-recovery"}
    explained_devices = {f["device"] for f in faults if f.get("reason_kind") == "host-recovery"}
    for port, p in result["final_state"]["ports"].items():
        if (p["contained"] or p["link"] != "up") and port not in explained_ports:
            state = "contained" if p["contained"] else f"link {p['link']}"
            fail(Invariant.FINAL_STATE, f"{port} ends {state}, and no failed host recovery says why")
    for dev, s in result["final_state"]["devices"].items():
        if (s["power"] != "D0" or s["host_state"] not in ("ready", None)) and dev not in explained_devices:
            fail(Invariant.FINAL_STATE, f"{dev} ends {s['power']}, host driver {s['host_state']}, and no failed "
                                        "host recovery says why")
    return found


def _fresh_after(result: dict[str, Any], dev: str, where: set[str], reset: dict[str, Any],
                 fail: Callable[[Invariant, str], None]) -> None:
    """After a reset that took the device's keys and sessions: no key programmed again at the same end,
    and no secured response before a new key exchange."""
    t = reset["t_ns"]
    what = f"{reset['kind']} reset at {t} ns"
    for end in sorted(where):
        before = {k["key"] for k in result["key_programs"] if k["where"] == end and k["t_ns"] < t}
        again = sorted({k["key"] for k in result["key_programs"]
                        if k["where"] == end and k["t_ns"] > t and k["key"] in before})
        if again:
            fail(Invariant.KEYS_FRESH, f"{dev}: key {again[0]} was in {end}'s slots before the {what} and was "
                                       "programmed there again after it")
    after = [s for s in result["spdm"].get(dev, []) if s["t_ns"] > t]
    first = next((s for s in after if s["kind"] == "secured_rsp"), None)
    if first is not None and not any(s["kind"] == "key_exchange_rsp" and s["t_ns"] < first["t_ns"] for s in after):
        fail(Invariant.SESSION_FRESH, f"{dev}: secured response in session 0x{first['session_id']:08x} at "
                                      f"{first['t_ns']} ns after the {what}, with no key exchange in between")


def _run_without_secure(d: dict[str, Any], end: int) -> list[str]:
    """Intervals of positive length in which a TDI is in RUN and the device's stream is not Secure."""
    changes = sorted({t["t_ns"] for t in d["tdi_transitions"]} | {s["t_ns"] for s in d["stream_transitions"]})
    out = []
    for i, t in enumerate(changes):
        until = changes[i + 1] if i + 1 < len(changes) else end
        if until <= t:
            continue
        stream = "insecure"
        for s in d["stream_transitions"]:
            if s["t_ns"] <= t:
                stream = s["state"]
        tdis: dict[str, str] = {}
        for x in d["tdi_transitions"]:
            if x["t_ns"] <= t:
                tdis[x["tdi"]] = x["state"]
        running = sorted(n for n, s in tdis.items() if s == "RUN")
        if running and stream != "secure":
            out.append(f"{', '.join(running)} in RUN from {t} to {until} ns while the stream is {stream}")
    return out


# --------------------------------------------------------------------------------------------------
# shrinking
# --------------------------------------------------------------------------------------------------


def shrink(scenario_yaml: str, model: str, faults: list[Fault], invariant: str, baseline: dict[str, Any],
           budget: int = SHRINK_BUDGET) -> tuple[list[Fault], dict[str, Any] | None, int]:
    """The fewest faults at the earliest instants that still fail ``invariant``; (faults, the failing
    run's result, re-runs used)."""
    runs = 0
    last: dict[str, Any] | None = None

    def fails(candidate: list[Fault]) -> bool:
        nonlocal runs, last
        runs += 1
        got = run_case(Case(scenario_yaml, model, tuple(f.to_json() for f in candidate), baseline))
        if any(v["invariant"] == invariant for v in got["violations"]):
            last = got
            return True
        return False

    current = list(faults)
    changed = True
    while changed and len(current) > 1 and runs < budget:
        changed = False
        for i in range(len(current)):
            if runs >= budget:
                break
            candidate = current[:i] + current[i + 1:]
            if fails(candidate):
                current, changed = candidate, True
                break
    for i in range(len(current)):
        lo, hi = 0, current[i].instant_ms()   # hi still fails; find the earliest whole ms that does
        if hi > 0 and runs < budget and fails(current[:i] + [current[i].with_instant(0)] + current[i + 1:]):
            current[i] = current[i].with_instant(0)
            continue
        while hi - lo > 1 and runs < budget:
            mid = (lo + hi) // 2
            candidate = current[:i] + [current[i].with_instant(mid)] + current[i + 1:]
            if fails(candidate):
                hi = mid
                current = candidate
            else:
                lo = mid
    if last is None or [f.to_json() for f in current] != last["faults"]:
        fails(current)   # the result of exactly the shrunk case
    return current, last, runs


def reproducer_yaml(base: dict[str, Any], model: str, faults: list[Fault], violation: dict[str, str]) -> str:
    """A ready-to-run scenario for one shrunk failure, starting with its ``# Question:`` line."""
    data = variant_data(base, faults, model)
    data["name"] = f"{base.get('name', 'scenario')}-{violation['invariant']}"
    data["description"] = (f"Shrunk by tiosim campaign: under {model}, "
                           + "; ".join(f.describe() for f in faults)
                           + f". Invariant {violation['invariant']} failed: {violation['detail']}")
    head = (f"# Question: under {model}, does the platform get back to a secure, consistent state after "
            + "; ".join(f.describe() for f in faults) + "?\n"
            + f"# Found by tiosim campaign: {violation['invariant']} failed: {violation['detail']}\n"
            + "# Check it again with: tiosim campaign THIS_FILE --runs 0\n")
    return head + yaml.safe_dump(data, sort_keys=False, width=110)


# --------------------------------------------------------------------------------------------------
# the campaign
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CampaignOptions:
    runs: int = 100
    kinds: tuple[FaultKind, ...] = DEFAULT_FAULTS
    seed: int = 1
    jobs: int = 1
    scheduler: str | None = None
    max_faults: int = MAX_FAULTS
    shrink_budget: int = SHRINK_BUDGET
    models: tuple[str, ...] | None = None


def run_campaign(scenario_yaml: str, filename: str, options: CampaignOptions,
                 progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Generate, run, check, shrink; returns the campaign report (campaign.json's content)."""
    scenario = load_scenario_text(scenario_yaml, filename)
    base = yaml.safe_load(scenario_yaml)
    models = [str(m) for m in scenario.models if options.models is None or str(m) in options.models]

    def step(stage: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(stage, done, total))

    baselines = map_jobs(run_case, [Case(scenario_yaml, m, (), None) for m in models], jobs=options.jobs,
                         scheduler=options.scheduler, progress=step("baseline"))
    baseline = {m: b["exposure"] for m, b in zip(models, baselines, strict=True)}
    for m, b in zip(models, baselines, strict=True):
        if b["violations"]:
            raise CampaignError(f"{filename}: the unfaulted run under {m} fails: {b['violations'][0]['detail']}")
    variants = generate(scenario, options.runs, options.kinds, options.seed, options.max_faults) \
        if options.runs > 0 else [Variant(0, ())]
    cases = [Case(scenario_yaml, m, tuple(f.to_json() for f in v.faults), baseline[m], v.index)
             for m in models for v in variants]
    results = map_jobs(run_case, cases, jobs=options.jobs, scheduler=options.scheduler, progress=step("runs"))
    failing = [r for r in results if r["violations"]]
    shrinks = [ShrinkJob(scenario_yaml, r["model"], r["faults"], r["violations"][0]["invariant"],
                         baseline[r["model"]], options.shrink_budget) for r in failing]
    shrunk = map_jobs(run_shrink, shrinks, jobs=options.jobs, scheduler=options.scheduler, progress=step("shrink"))
    per_model: dict[str, Any] = {}
    for m in models:
        mine = [r for r in results if r["model"] == m]
        per_model[m] = {
            "runs": len(mine),
            "failed_runs": sum(1 for r in mine if r["violations"]),
            "invariants": {str(inv): sum(1 for r in mine if any(v["invariant"] == inv for v in r["violations"]))
                           for inv in Invariant},
            "outcomes": _count(o["outcome"] for r in mine for o in r["outcomes"]),
        }
    failures = []
    for r, s in zip(failing, shrunk, strict=True):
        failures.append({"model": r["model"], "variant": r["index"], "faults": r["faults"],
                         "violations": r["violations"], "shrunk": s,
                         "reproducer": reproducer_yaml(base, r["model"], [Fault.from_json(f) for f in s["faults"]],
                                                       s["violation"] or r["violations"][0])})
    return {"format": CAMPAIGN_FORMAT, "scenario": scenario.name, "file": filename, "seed": options.seed,
            "runs_per_model": len(variants), "faults": [str(k) for k in options.kinds],
            "max_faults": options.max_faults, "models": per_model,
            "invariant_failures": sum(m["failed_runs"] for m in per_model.values()), "failures": failures}


class CampaignError(Exception):
    """The campaign cannot run as asked (its scenario fails unfaulted)."""


@dataclasses.dataclass(frozen=True)
class ShrinkJob:
    scenario_yaml: str
    model: str
    faults: list[dict[str, Any]]
    invariant: str
    baseline: dict[str, Any]
    budget: int


def run_shrink(job: ShrinkJob) -> dict[str, Any]:
    faults, last, runs = shrink(job.scenario_yaml, job.model, [Fault.from_json(f) for f in job.faults],
                                job.invariant, job.baseline, job.budget)
    violation = None if last is None else next((v for v in last["violations"] if v["invariant"] == job.invariant),
                                               None)
    return {"faults": [f.to_json() for f in faults], "described": [f.describe() for f in faults],
            "violation": violation, "reruns": runs}


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items()))


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """campaign.json, campaign.md and one reproducer YAML per failure (out/reproducers/)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    repro = out / "reproducers"
    for i, f in enumerate(report["failures"]):
        repro.mkdir(exist_ok=True)
        path = repro / f"{i:03d}-{f['model']}-{f['shrunk']['violation']['invariant'] if f['shrunk']['violation'] else f['violations'][0]['invariant']}.yaml"
        path.write_text(f["reproducer"], encoding="utf-8")
        f["reproducer_file"] = str(path.relative_to(out))
        written.append(path)
    (out / "campaign.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "campaign.md").write_text(markdown(report), encoding="utf-8")
    return [out / "campaign.json", out / "campaign.md", *written]


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Fault campaign: {report['scenario']}", "",
             f"{report['runs_per_model']} variants per model, seed {report['seed']}, faults "
             f"{', '.join(report['faults'])} (1..{report['max_faults']} per run); "
             f"{report['invariant_failures']} run(s) failed an invariant.", "",
             "| model | runs | failed | " + " | ".join(str(i) for i in Invariant) + " |",
             "|---|---|---|" + "---|" * len(Invariant)]
    for m, r in report["models"].items():
        lines.append(f"| {m} | {r['runs']} | {r['failed_runs']} | "
                     + " | ".join(str(r["invariants"][str(i)]) for i in Invariant) + " |")
    lines += ["", "Fault outcomes per model:", ""]
    for m, r in report["models"].items():
        lines.append(f"- {m}: " + ", ".join(f"{k} {v}" for k, v in r["outcomes"].items()))
    if report["failures"]:
        lines += ["", "## Failures", ""]
        for f in report["failures"]:
            v = f["shrunk"]["violation"] or f["violations"][0]
            lines.append(f"- [{f['model']}] variant {f['variant']}: **{v['invariant']}**: {v['detail']}; shrunk to "
                         + "; ".join(f["shrunk"]["described"]) + f" ({f.get('reproducer_file', '')})")
    return "\n".join(lines) + "\n"
