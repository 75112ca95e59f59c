"""Summaries are for people: rewording every one changes no verdict, no trusted base and no golden data."""

from __future__ import annotations

import pytest

from sim.adversary.sweep import run_one
from sim.engine.trace import TraceBus
from sim.scenario import golden as G
from sim.scenario.loader import load_scenario
from sim.scenario.schema import AdversaryComponent as C
from sim.scenario.schema import AdversaryStrategy as S
from sim.scenario.schema import TrustModel as M

PAIRS = [None, (C.LINK_INTERPOSER, S.MODIFY), (C.VMM, S.PROGRAM_KNOWN_KEYS), (C.HOST_KERNEL, S.DROP)]


def _reworded(monkeypatch: pytest.MonkeyPatch) -> None:
    emit = TraceBus.emit

    def reworded(self, source, destination, channel, data=b"", summary="", **kw):  # type: ignore[no-untyped-def]
        return emit(self, source, destination, channel, data, "reworded: " + summary[::-1], **kw)

    monkeypatch.setattr(TraceBus, "emit", reworded)


@pytest.mark.parametrize("model", [M.THIN_GUEST, M.THIN_VMM, M.FAT])
def test_rewording_every_summary_changes_no_verdict(passthrough, model: M, monkeypatch: pytest.MonkeyPatch) -> None:
    before = [run_one(passthrough, model, pair) for pair in PAIRS]
    _reworded(monkeypatch)
    after = [run_one(passthrough, model, pair) for pair in PAIRS]
    for b, a in zip(before, after, strict=True):
        assert {p: v["verdict"] for p, v in a.verdicts.items()} == {p: v["verdict"] for p, v in b.verdicts.items()}
        assert {p: v["detected_by"] for p, v in a.verdicts.items()} == \
            {p: v["detected_by"] for p, v in b.verdicts.items()}
        assert a.trace_digest == b.trace_digest


def test_rewording_every_summary_keeps_golden_data(monkeypatch: pytest.MonkeyPatch) -> None:
    _reworded(monkeypatch)
    path = G.SCENARIO_DIR / "passthrough-guest.yaml"
    scenario = load_scenario(str(path))
    golden = G.load_golden(G.golden_path(path))
    for model in scenario.models:
        run = G.run_traced(scenario, model)
        assert run.events[0].summary.startswith("reworded: ")
        assert G.check(scenario, golden, run) is None, f"{model}: golden fingerprints depend on a summary"
