"""A guest's expected_reports apply to the TDI each entry names, and to no other TDI or device.

Every scenario here is built so that merging all entries into one guest-wide requirement (the old
behaviour) would fail it: the entry that the other TDI or device cannot meet would reject that one too.
Both ways a guest judges a report are covered: the thin securing flow's report check (thin-guest,
thin-vmm) and the fat guest's check of the firmware's TDI_INFO evidence (``Guest.evidence_findings``).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from sim.engine.world import World
from sim.firmware.commands import FwStatus, GuestRequestType, TdiInfo
from sim.scenario import schema as S
from sim.scenario.loader import ScenarioError, load_scenario_text
from sim.scenario.platform import build_platform
from sim.scenario.policies import guest_policy, platform_spec, report_expectation, report_expectations
from sim.scenario.run import ModelRun
from sim.scenario.schema import TrustModel
from sim.scenario.trust_models import WIRINGS
from sim.vmm.guest import Guest, GuestPolicy, ReportExpectation
from sim.wire.tdisp import InterfaceInfo, MmioRange, TdiReport, TdiState

GUEST_MODELS = [TrustModel.FAT, TrustModel.THIN_GUEST, TrustModel.THIN_VMM]
ATS_LACKING = f"lacks {int(InterfaceInfo.ATS_ENABLED):#x}"   # what a report without ATS is refused with

# gpu0 and gpu1, one TDI each (function 0, one MMIO range), both given to tvm0 at boot
TWO_DEVICES = """\
name: two-devices
seed: 11
models: [fat, thin-guest, thin-vmm]
platform:
  root_ports:
    - {{id: rp0, ide_streams: 1, dpc: true}}
    - {{id: rp1, ide_streams: 1, dpc: true}}
  devices:
    - {{id: gpu0, port: rp0, identity: {{ca: vendor}}, owner: tvm0,
       tdis: [{{id: tdi0, function: 0, mmio: [{{bar: 0, pages: 4}}]}}]}}
    - {{id: gpu1, port: rp1, identity: {{ca: vendor}}, owner: tvm0,
       tdis: [{{id: tdi0, function: 0, mmio: [{{bar: 0, pages: 4}}]}}]}}
guests:
  - id: tvm0
    devices: [gpu0, gpu1]
    policy:
      trusted_roots: [{{ca: vendor}}]
      expected_reports: [{reports}]
timeline:
  - {{event: boot, at: 0}}
expect:
{expect}
"""

# gpu0 with tdi0 on function 0 (one MMIO range; the runner locks and starts it) and tdi1 on function 1
# (two MMIO ranges; left unlocked by the runner, brought up by the test after the run)
TWO_TDIS = """\
name: two-tdis
seed: 12
models: [fat, thin-guest, thin-vmm]
platform:
  root_ports:
    - {{id: rp0, ide_streams: 2, dpc: true}}
  devices:
    - id: gpu0
      port: rp0
      identity: {{ca: vendor}}
      owner: tvm0
      tdis:
        - {{id: tdi0, function: 0, mmio: [{{bar: 0, pages: 16}}]}}
        - {{id: tdi1, function: 1, mmio: [{{bar: 0, pages: 4}}, {{bar: 2, pages: 4}}]}}
guests:
  - id: tvm0
    devices: [gpu0]
    policy:
      trusted_roots: [{{ca: vendor}}]
      expected_reports: [{reports}]
timeline:
  - {{event: boot, at: 0}}
expect:
  - {{expect: tdi_state, device: gpu0, tdi: tdi0, state: RUN}}
  - {{expect: attestation, device: gpu0, by: guest, outcome: ok}}
"""


def _entries(*items: str) -> str:
    """expected_reports entries (flow mappings) for the templates' flow list."""
    return ", ".join(items)


def _expect(*items: str) -> str:
    """expect: lines (flow mappings) for the TWO_DEVICES template."""
    return "\n".join(f"  - {item}" for item in items)


def _run(text: str, model: TrustModel) -> tuple[ModelRun, dict[str, Any]]:
    run = ModelRun(load_scenario_text(text), model)
    result = run.run()
    failed = [f"{e['text']}: {e['detail']}" for e in result["expectations"] if not e["held"]]
    assert not failed, f"{model}: {failed}"
    assert result["expectations"], "the scenario must check something"
    return run, result


def _guest(run: ModelRun) -> Guest:
    guest = run.actors.guests["tvm0"]
    assert isinstance(guest, Guest)
    return guest


def _play(run: ModelRun, gen: Generator[Any, Any, Any]) -> Any:
    """Run one more guest action on the finished run's world and return its result."""
    proc = run.world.process(gen)
    run.world.run(until=proc)
    return proc.value


def _secure_function_1(run: ModelRun) -> bool:
    """Bring up tdi1 (function 1) the way its model does: fat binds it in the TSM first, then the guest
    accepts it (TDI_INFO evidence); thin guests secure it themselves (LOCK, report check, START)."""
    guest = _guest(run)

    def flow() -> Generator[Any, Any, bool]:
        if run.model is TrustModel.FAT:
            bound = yield from run.actors.vmm.bind_tdi("gpu0", 1)
            assert bound.status is FwStatus.SUCCESS
        return (yield from guest.secure("gpu0", 1))

    return bool(_play(run, flow()))


# ----------------------------------------------------------------------------------------------------
# two devices: an entry for one never touches the other
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", GUEST_MODELS)
def test_unmet_entry_rejects_its_device_and_leaves_the_other_alone(model: TrustModel) -> None:
    text = TWO_DEVICES.format(
        reports=_entries("{device: gpu0, tdi: tdi0, ats: true}"),
        expect=_expect("{expect: attestation, device: gpu0, by: guest, outcome: failed}",
                       "{expect: tdi_state, device: gpu0, tdi: tdi0, state: CONFIG_LOCKED}",
                       "{expect: attestation, device: gpu1, by: guest, outcome: ok}",
                       "{expect: tdi_state, device: gpu1, tdi: tdi0, state: RUN}"))
    run, result = _run(text, model)
    rejected = _guest(run).tdi("gpu0")
    assert rejected.failure_reason == "report-rejected" and ATS_LACKING in rejected.failure
    assert _guest(run).tdi("gpu1").state is TdiState.RUN
    assert result["devices"]["gpu1"]["attestation"]["guest"]["ok"] is True


@pytest.mark.parametrize("model", GUEST_MODELS)
def test_met_entry_accepts_its_device_while_the_others_entry_rejects_it(model: TrustModel) -> None:
    # merged, "ats: false" for gpu0 and "ats: true" for gpu1 would refuse both
    text = TWO_DEVICES.format(
        reports=_entries("{device: gpu0, tdi: tdi0, no_fw_update: true, dma_without_pasid: true, ats: false, "
                         "prs: false, dma_with_pasid: false, mmio: [{bar: 0, pages: 4}]}",
                         "{device: gpu1, tdi: tdi0, ats: true}"),
        expect=_expect("{expect: attestation, device: gpu0, by: guest, outcome: ok}",
                       "{expect: tdi_state, device: gpu0, tdi: tdi0, state: RUN}",
                       "{expect: attestation, device: gpu1, by: guest, outcome: failed}",
                       "{expect: tdi_state, device: gpu1, tdi: tdi0, state: CONFIG_LOCKED}"))
    run, _ = _run(text, model)
    assert _guest(run).tdi("gpu0").failure == ""
    rejected = _guest(run).tdi("gpu1")
    assert rejected.failure_reason == "report-rejected" and ATS_LACKING in rejected.failure


# ----------------------------------------------------------------------------------------------------
# two TDIs of one device: an entry for one function never touches the other
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", GUEST_MODELS)
def test_entry_for_function_1_rejects_it_but_not_function_0(model: TrustModel) -> None:
    run, _ = _run(TWO_TDIS.format(reports=_entries("{device: gpu0, tdi: tdi1, ats: true}")), model)
    assert _secure_function_1(run) is False
    rec = _guest(run).tdi("gpu0", 1)
    assert rec.failure_reason == "report-rejected" and ATS_LACKING in rec.failure
    assert rec.state is None


@pytest.mark.parametrize("model", GUEST_MODELS)
def test_each_tdi_held_to_its_own_mmio_count(model: TrustModel) -> None:
    # merged, one count would hold for both TDIs, and one of them has the other count
    text = TWO_TDIS.format(reports=_entries("{device: gpu0, tdi: tdi0, mmio: [{bar: 0, pages: 16}]}",
                                          "{device: gpu0, tdi: tdi1, no_fw_update: true, "
                                          "mmio: [{bar: 0, pages: 4}, {bar: 2, pages: 4}]}"))
    run, _ = _run(text, model)
    assert _secure_function_1(run) is True
    assert _guest(run).tdi("gpu0", 1).state is TdiState.RUN
    assert run.result()["devices"]["gpu0"]["tdis"]["tdi1"] == "RUN"


def test_fat_evidence_is_judged_against_the_function_it_is_for() -> None:
    """The same TDI_INFO evidence (function 0's) passes as function 0's and fails as function 1's."""
    run, _ = _run(TWO_TDIS.format(reports=_entries("{device: gpu0, tdi: tdi1, ats: true}")), TrustModel.FAT)
    guest = _guest(run)
    answer = _play(run, guest.guest_request("gpu0", 0, GuestRequestType.TDI_INFO))
    assert answer.status is FwStatus.SUCCESS and isinstance(answer.body, TdiInfo)
    info = answer.body
    assert guest.evidence_findings(info, "gpu0", 0) == []
    assert guest.evidence_findings(info, "gpu0") == []          # function 0 by default
    findings = guest.evidence_findings(info, "gpu0", 1)
    assert [reason for reason, _ in findings] == ["report-rejected"] and ATS_LACKING in findings[0][1]
    assert guest.evidence_problems(info, "gpu0", 1) == [findings[0][1]]


# ----------------------------------------------------------------------------------------------------
# guest_policy(): the mapping itself
# ----------------------------------------------------------------------------------------------------


def _policy(text: str) -> tuple[S.Scenario, GuestPolicy]:
    scenario = load_scenario_text(text)
    platform = build_platform(World(scenario.seed), platform_spec(scenario, WIRINGS[TrustModel.FAT]))
    return scenario, guest_policy(scenario, platform, scenario.guest("tvm0"))


def test_guest_policy_keys_requirements_by_device_and_function() -> None:
    text = TWO_TDIS.format(reports=_entries("{device: gpu0, tdi: tdi1, ats: true}",
                                          "{device: gpu0, tdi: tdi0, no_fw_update: true}",
                                          "{device: gpu0, tdi: tdi0, dma_with_pasid: false, mmio: [{bar: 0, pages: 1}]}"))
    scenario, policy = _policy(text)
    tdi0 = ReportExpectation(info_set=InterfaceInfo.NO_FW_UPDATE, info_clear=InterfaceInfo.DMA_WITH_PASID,
                             mmio_ranges=1)
    tdi1 = ReportExpectation(info_set=InterfaceInfo.ATS_ENABLED)
    assert dict(policy.per_tdi) == {("gpu0", 0): tdi0, ("gpu0", 1): tdi1}   # same-TDI entries combined
    assert report_expectations(scenario, scenario.guest("tvm0")) == dict(policy.per_tdi)
    assert policy.report_for("gpu0", 0) == tdi0 and policy.report_for("gpu0", 1) == tdi1
    assert policy.report == ReportExpectation()                 # a TDI no entry names: no requirement
    assert policy.report_for("gpu0", 2) == ReportExpectation() and policy.report_for("gpu9") == ReportExpectation()


def test_guest_policy_without_entries_requires_nothing() -> None:
    _, policy = _policy(TWO_DEVICES.format(reports="", expect=_expect("{expect: stream_state, device: gpu0, "
                                                                      "state: secure}")))
    assert dict(policy.per_tdi) == {} and policy.report_for("gpu0") == ReportExpectation()


def test_hand_built_policy_applies_report_to_every_tdi_not_listed() -> None:
    everywhere = ReportExpectation(mmio_ranges=3)
    own = ReportExpectation(info_set=InterfaceInfo.NO_FW_UPDATE)
    policy = GuestPolicy(report=everywhere, per_tdi={("dev0", 1): own})
    assert policy.report_for("dev0", 1) is own
    assert policy.report_for("dev0", 0) is everywhere and policy.report_for("dev1", 1) is everywhere
    assert policy.report_for(None) is everywhere


def _entry(**fields: Any) -> S.ExpectedReport:
    return S.ExpectedReport(device="gpu0", tdi="tdi0", **fields)


def test_contradictory_entries_fail_closed() -> None:
    """Entries that cannot both hold refuse every report, naming the contradiction; neither side wins."""
    one = [S.MmioRange(bar=0, pages=1)]
    got = report_expectation([_entry(ats=True, mmio=one), _entry(ats=False, no_fw_update=True),
                              _entry(mmio=one * 2), _entry(ats=True)])
    assert got.conflicts == ("ats both true and false", "mmio both 1 and 2 ranges")
    for info, ranges in ((InterfaceInfo.ATS_ENABLED | InterfaceInfo.NO_FW_UPDATE, 1),
                         (InterfaceInfo.NO_FW_UPDATE, 1), (InterfaceInfo.NO_FW_UPDATE, 2)):
        report = TdiReport(info, tuple(MmioRange(0x1000 * i, 1, range_id=i) for i in range(ranges)))
        problems = got.problems(report)
        assert problems[:2] == ["contradictory requirement: ats both true and false",
                                "contradictory requirement: mmio both 1 and 2 ranges"]


def test_agreeing_entries_combine_without_conflict() -> None:
    one = [S.MmioRange(bar=0, pages=1)]
    got = report_expectation([_entry(ats=False, mmio=one), _entry(ats=False, prs=True, mmio=one), _entry()])
    assert got == ReportExpectation(info_set=InterfaceInfo.PRS_ENABLED, info_clear=InterfaceInfo.ATS_ENABLED,
                                    mmio_ranges=1)
    good = TdiReport(InterfaceInfo.PRS_ENABLED, (MmioRange(0x1000, 1, range_id=0),))
    assert got.problems(good) == []
    assert got.problems(TdiReport(InterfaceInfo.PRS_ENABLED | InterfaceInfo.ATS_ENABLED,
                                  (MmioRange(0x1000, 1, range_id=0),)))


def test_contradicting_entries_for_one_tdi_are_refused_when_the_file_loads() -> None:
    shipped = (Path(__file__).resolve().parents[2] / "scenarios" / "passthrough-guest.yaml").read_text()
    entry = "- {device: gpu0, tdi: tdi0, no_fw_update: true}"
    assert entry in shipped
    with pytest.raises(ScenarioError, match=r"expected_reports\[1\]\.no_fw_update contradicts expected_reports\[0\] "
                                            r"for device 'gpu0' TDI 'tdi0'"):
        load_scenario_text(shipped.replace(entry, entry + "\n        - {device: gpu0, tdi: tdi0, no_fw_update: false}"),
                           "s.yaml")
    agreeing = shipped.replace(entry, entry + "\n        - {device: gpu0, tdi: tdi0, ats: false}")
    assert load_scenario_text(agreeing, "s.yaml").guests[0].policy.expected_reports[1].ats is False
