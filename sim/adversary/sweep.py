"""The measured trusted base: compromise each component in turn, run the same scenario, check the properties.

For one scenario and one trust model, :func:`sweep_model` runs the scenario once honest, once with the
premise of substitute-measurements (the device runs firmware its guest's policy rejects, nobody
compromised), and once per applicable (component, strategy) pair with that adversary installed from
boot. A property's trusted base is the set of components with at least one BROKEN_UNDETECTED run,
counted only when the honest run held the property and, for a strategy with a premise, when the
premise alone was not already broken undetected (then the model gives no protection against the
premise itself, which the sweep reports instead). Pairs that cannot apply (the static table, a component
the model does not have, a premise the scenario lacks) are not run, and are reported with the reason.

Runs are independent, so ``workers`` > 1 spreads them over processes (fork).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from sim.adversary.properties import SecurityProperty, Verdict, Witness, evaluate
from sim.adversary.strategies import (
    Adversary,
    NotApplicable,
    applicability,
    install,
    install_premise,
)
from sim.scenario import schema as S

Pair = tuple[S.AdversaryComponent, S.AdversaryStrategy]


class BaseStatus(enum.StrEnum):
    """What a trusted-base answer rests on."""

    EXERCISED = "exercised"                                   # at stake and attacked: the components are measured
    NOT_EXERCISED = "not-exercised"                           # nothing at stake, or no adversary ever acted
    BROKEN_WITHOUT_COMPROMISE = "broken-without-compromise"   # the run with nobody compromised already breaks it


def breaking(prop: SecurityProperty) -> frozenset[Verdict]:
    """The verdicts that put a component in a property's trusted base: an undetected break; for liveness a
    detected one too (a denial that is noticed is still a denial)."""
    if prop is SecurityProperty.LIVENESS:
        return frozenset({Verdict.BROKEN_UNDETECTED, Verdict.BROKEN_DETECTED})
    return frozenset({Verdict.BROKEN_UNDETECTED})
PREMISED = frozenset({S.AdversaryStrategy.SUBSTITUTE_MEASUREMENTS})


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """One run of the sweep: which adversary (None: honest or premise only), the verdicts, or why not run."""

    component: str | None
    strategy: str | None
    premise: bool
    applicable: bool
    reason: str | None
    verdicts: dict[str, dict[str, Any]]
    actions: int
    trace_digest: str | None
    seconds: float

    def verdict(self, prop: SecurityProperty) -> Verdict | None:
        v = self.verdicts.get(str(prop))
        return None if v is None else Verdict(v["verdict"])

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_one(scenario: S.Scenario, model: S.TrustModel, pair: Pair | None = None, *, premise: bool = False,
            device: str | None = None) -> RunOutcome:
    """Build the run, install the witness (and the adversary, or the premise), run it, check the properties."""
    from sim.scenario.run import ModelRun

    started = time.perf_counter()
    run = ModelRun(scenario, model)
    witness = Witness.install(run)
    adversary: Adversary | None = None
    comp = strat = None
    if pair is not None:
        comp, strat = str(pair[0]), str(pair[1])
        got = install(run, pair[0], pair[1], device)
        if isinstance(got, NotApplicable):
            return RunOutcome(comp, strat, False, False, got.reason, {}, 0, None, time.perf_counter() - started)
        adversary = got
    elif premise:
        why = install_premise(run, S.AdversaryStrategy.SUBSTITUTE_MEASUREMENTS)
        if why is not None:
            return RunOutcome(None, str(S.AdversaryStrategy.SUBSTITUTE_MEASUREMENTS), True, False, why, {}, 0, None,
                              time.perf_counter() - started)
    run.run()
    results = evaluate(run, witness, adversary)
    return RunOutcome(comp, strat, premise, True, None, {str(p): r.to_json() for p, r in results.items()},
                      len(adversary.actions) if adversary is not None else 0, run.world.trace.digest(),
                      time.perf_counter() - started)


def _job(args: tuple[S.Scenario, S.TrustModel, Pair | None, bool]) -> RunOutcome:
    scenario, model, pair, premise = args
    return run_one(scenario, model, pair, premise=premise)


@dataclasses.dataclass
class ModelSweep:
    model: S.TrustModel
    honest: RunOutcome
    premise: RunOutcome | None
    runs: list[RunOutcome]
    skipped: list[tuple[str, str, str]]          # not applicable here, not run: (component, strategy, reason)
    seconds: float

    def excused(self, outcome: RunOutcome, prop: SecurityProperty) -> bool:
        """A run whose break the premise alone already causes, undetected."""
        return (self.premise is not None and self.premise.applicable and outcome.strategy is not None
                and S.AdversaryStrategy(outcome.strategy) in PREMISED
                and self.premise.verdict(prop) in breaking(prop))

    def trusted_base(self) -> dict[str, dict[str, Any]]:
        """Per property: its status (``exercised``, ``not-exercised``, ``broken-without-compromise``), the
        components whose compromise breaks it (undetected; for liveness a detected denial is a denial too), why,
        the verdict counts over the pairs, and the evidence."""
        out: dict[str, dict[str, Any]] = {}
        for prop in SecurityProperty:
            honest = self.honest.verdict(prop)
            counts = {str(v): 0 for v in Verdict}
            for o in self.runs:
                v = o.verdict(prop)
                if o.applicable and v is not None:
                    counts[str(v)] += 1
            entry: dict[str, Any] = {"status": BaseStatus.EXERCISED.value, "components": [], "why": "",
                                     "evidence": [], "honest": str(honest), "verdicts": counts}
            out[str(prop)] = entry
            if honest in breaking(prop):
                entry["status"] = BaseStatus.BROKEN_WITHOUT_COMPROMISE.value
                entry["why"] = "broken with nobody compromised: " + self.honest.verdicts[str(prop)]["detail"]
                continue
            if self.premise is not None and self.premise.verdict(prop) is Verdict.BROKEN_UNDETECTED:
                entry["status"] = BaseStatus.BROKEN_WITHOUT_COMPROMISE.value
                entry["why"] = ("the substitute-measurements premise alone (firmware the policy rejects, nobody "
                                "compromised) breaks it: " + self.premise.verdicts[str(prop)]["detail"])
            exercised = [o for o in self.runs if o.applicable and o.verdict(prop) not in (None, Verdict.NOT_EXERCISED)]
            if honest is Verdict.NOT_EXERCISED and not exercised:
                entry["status"] = BaseStatus.NOT_EXERCISED.value
                entry["why"] = self.honest.verdicts[str(prop)]["detail"]
                continue
            comps: list[str] = []
            for o in self.runs:
                if not o.applicable or o.verdict(prop) not in breaking(prop) or self.excused(o, prop):
                    continue
                v = o.verdicts[str(prop)]
                if o.component not in comps:
                    comps.append(str(o.component))
                entry["evidence"].append({"component": o.component, "strategy": o.strategy, "verdict": v["verdict"],
                                          "detected_by": v["detected_by"], "at": v["at"], "detail": v["detail"],
                                          "excerpt": v["excerpt"]})
            order = [str(c) for c in S.AdversaryComponent]
            entry["components"] = sorted(comps, key=order.index)
            if entry["status"] == BaseStatus.EXERCISED.value:
                held = counts[str(Verdict.HELD)] + counts[str(Verdict.BROKEN_DETECTED)]
                entry["why"] = (f"{len(entry['evidence'])} pair run(s) broke it without compromise of anything else; "
                                f"{held} held or were detected; {counts[str(Verdict.NOT_EXERCISED)]} not exercised")
        return out

    def to_json(self) -> dict[str, Any]:
        """The sweep's own record (next to ``trusted_base`` in result.json)."""
        return {
            "runs": len(self.runs) + 1 + (self.premise is not None),
            "seconds": round(self.seconds, 3),
            "honest": self.honest.verdicts,
            "premise": None if self.premise is None else {"applicable": self.premise.applicable,
                                                          "reason": self.premise.reason,
                                                          "verdicts": self.premise.verdicts},
            "pairs": [{"component": o.component, "strategy": o.strategy, "applicable": o.applicable,
                       "reason": o.reason, "actions": o.actions,
                       "verdicts": {p: v["verdict"] for p, v in o.verdicts.items()},
                       "detected": {p: {"by": v["detected_by"], "at": v["at"]} for p, v in o.verdicts.items()
                                    if v["verdict"] == str(Verdict.BROKEN_DETECTED)}}
                      for o in self.runs],
            "not_applicable": [{"component": c, "strategy": s, "reason": r} for c, s, r in self.skipped],
        }


def _map(jobs: list[tuple[S.Scenario, S.TrustModel, Pair | None, bool]], workers: int,
         progress: Callable[[int, int], None] | None = None) -> list[RunOutcome]:
    """Run the jobs (in a process pool when workers > 1), telling ``progress(done, total)`` after each."""
    def told(outcomes: Iterable[RunOutcome]) -> list[RunOutcome]:
        out: list[RunOutcome] = []
        for outcome in outcomes:
            out.append(outcome)
            if progress is not None:
                progress(len(out), len(jobs))
        return out

    if workers <= 1 or len(jobs) < 2:
        return told(_job(j) for j in jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        return told(pool.map(_job, jobs))


def sweep_model(scenario: S.Scenario, model: S.TrustModel, pairs: Iterable[Pair] | None = None, *,
                workers: int = 1, progress: Callable[[int, int], None] | None = None) -> ModelSweep:
    """Honest run, premise run, and one run per applicable pair (every component x strategy by default);
    ``progress(done, total)`` after each run."""
    started = time.perf_counter()
    chosen = list(pairs) if pairs is not None else [(c, s) for c in S.AdversaryComponent for s in S.AdversaryStrategy]
    reasons = {(c, s): applicability(scenario, model, c, s) for c, s in chosen}
    skipped = [(str(c), str(s), why) for (c, s), why in reasons.items() if why is not None]
    to_run = [pair for pair, why in reasons.items() if why is None]
    with_premise = any(s in PREMISED for _, s in to_run)
    jobs: list[tuple[S.Scenario, S.TrustModel, Pair | None, bool]] = [(scenario, model, None, False)]
    if with_premise:
        jobs.append((scenario, model, None, True))
    jobs += [(scenario, model, pair, False) for pair in to_run]
    outcomes = _map(jobs, workers, progress)
    honest = outcomes[0]
    premise = outcomes[1] if with_premise else None
    runs = outcomes[1 + with_premise:]
    return ModelSweep(model, honest, premise, runs, skipped, time.perf_counter() - started)


def sweep(scenario: S.Scenario, models: Sequence[S.TrustModel] | None = None, pairs: Iterable[Pair] | None = None,
          *, workers: int | None = None,
          progress: Callable[[str, int, int], None] | None = None) -> dict[str, ModelSweep]:
    """:func:`sweep_model` for each model of the scenario (or ``models``); ``progress(model, done, total)``
    after each run (for a progress bar)."""
    chosen_pairs = list(pairs) if pairs is not None else None
    n = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))
    def told(model: S.TrustModel) -> Callable[[int, int], None] | None:
        return None if progress is None else lambda done, total: progress(str(model), done, total)

    return {str(m): sweep_model(scenario, m, chosen_pairs, workers=n, progress=told(m))
            for m in (models or scenario.models)}


def attach(result: dict[str, Any], sweeps: dict[str, ModelSweep]) -> dict[str, Any]:
    """Put each model's trusted base (the report's shape: property -> {components, evidence}) and the sweep's
    record into a ``run_scenario`` result."""
    for model, ms in sweeps.items():
        entry = result["models"].get(model)
        if entry is None:
            continue
        entry["trusted_base"] = ms.trusted_base()
        entry["adversary_sweep"] = ms.to_json()
    return result


__all__ = ["BaseStatus", "ModelSweep", "RunOutcome", "attach", "run_one", "sweep", "sweep_model"]
