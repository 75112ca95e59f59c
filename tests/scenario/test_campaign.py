"""Fault campaigns: reproducible variants, zero invariant failures on a small seeded campaign, a
reintroduced recovery bug caught and shrunk, reproducers that load, the parallel runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sim.host.kernel import DeviceState, HostKernel
from sim.scenario.campaign import (
    CampaignOptions,
    Case,
    FaultKind,
    Invariant,
    generate,
    run_campaign,
    run_case,
    write_report,
)
from sim.scenario.jobs import map_jobs
from sim.scenario.loader import load_scenario, load_scenario_text

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "passthrough-guest.yaml"


def _text() -> str:
    return SCENARIO.read_text()


def test_same_seed_same_variants_other_seed_others() -> None:
    scenario = load_scenario(SCENARIO)
    a = generate(scenario, 20, list(FaultKind), seed=5)
    assert a == generate(scenario, 20, list(FaultKind), seed=5)
    assert a != generate(scenario, 20, list(FaultKind), seed=6)
    assert all(1 <= len(v.faults) <= 3 for v in a)


def test_small_seeded_campaign_has_no_invariant_failures(tmp_path: Path) -> None:
    report = run_campaign(_text(), str(SCENARIO), CampaignOptions(runs=20, seed=3))
    assert report["invariant_failures"] == 0, report["failures"]
    assert set(report["models"]) == {"fat", "thin-host", "thin-guest", "thin-vmm"}
    assert all(m["runs"] == 20 for m in report["models"].values())
    write_report(report, tmp_path)
    assert (tmp_path / "campaign.json").is_file() and "| fat | 20 | 0 |" in (tmp_path / "campaign.md").read_text()
    # the same seed gives the same report
    again = run_campaign(_text(), str(SCENARIO), CampaignOptions(runs=20, seed=3, models=("thin-guest",)))
    assert again["models"]["thin-guest"] == report["models"]["thin-guest"]


def _old_on_dpc(self: HostKernel, rp_name: str, reason: object, ext: object) -> None:
    """The bug of issue 12: a DPC while the device is being recovered is dropped."""
    for dev in self.devices.values():
        if dev.handle.root_port.path == rp_name and dev.state is not DeviceState.RECOVERING:
            self.world.process(self._recover_dpc(dev, "reintroduced"))


def test_reintroduced_dpc_during_recovery_bug_is_caught_and_shrunk_to_two_faults(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(HostKernel, "_on_dpc", _old_on_dpc)
    report = run_campaign(_text(), str(SCENARIO), CampaignOptions(
        runs=30, seed=1, models=("thin-guest",), kinds=(FaultKind.DPC, FaultKind.FLR)))
    assert report["invariant_failures"] >= 1
    failure = report["failures"][0]
    assert failure["violations"][0]["invariant"] in (Invariant.FAULT_ACCOUNTED, Invariant.FINAL_STATE)
    shrunk = failure["shrunk"]["faults"]
    assert len(shrunk) == 2 and any(f["kind"] == "dpc" for f in shrunk)
    write_report(report, tmp_path)
    text = (tmp_path / failure["reproducer_file"]).read_text()
    assert text.startswith("# Question:")
    scenario = load_scenario_text(text, "reproducer.yaml")
    assert [str(m) for m in scenario.models] == ["thin-guest"]
    # the reproducer fails as written with the bug, and passes without it
    data = yaml.safe_load(text)
    case = Case(yaml.safe_dump(data), "thin-guest", (), None)
    baseline = run_case(case)["exposure"]
    assert run_case(Case(yaml.safe_dump(data), "thin-guest", (), baseline))["violations"]
    monkeypatch.undo()
    assert not run_case(Case(yaml.safe_dump(data), "thin-guest", (), baseline))["violations"]


def _boom(self: HostKernel, device: str, function: int = 0):  # noqa: ANN202 - a generator that raises
    raise RuntimeError("injected")
    yield


def test_an_exception_inside_a_run_is_a_failure_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HostKernel, "boot", lambda self: _boom(self, ""))
    got = run_case(Case(_text(), "thin-host", ({"kind": "dpc", "target": "rp0", "at_ms": 5, "phase_device": None,
                                                "phase": None, "delay_ms": 0, "function": 0, "hold_ms": 0},),
                        {}))
    assert [v["invariant"] for v in got["violations"]] == [Invariant.NO_TRACEBACK]


def _square(x: int) -> int:
    return x * x


def test_map_jobs_pool_matches_serial_in_input_order() -> None:
    items = list(range(7))
    assert map_jobs(_square, items, jobs=2) == map_jobs(_square, items, jobs=1) == [x * x for x in items]


def test_campaign_through_a_dask_local_cluster() -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        report = run_campaign(_text(), str(SCENARIO), CampaignOptions(runs=3, seed=2, models=("thin-vmm",),
                                                                      scheduler=cluster.scheduler_address))
    local = run_campaign(_text(), str(SCENARIO), CampaignOptions(runs=3, seed=2, models=("thin-vmm",)))
    assert report == local
