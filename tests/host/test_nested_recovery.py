"""Nested resets: a DPC or a power-off while the host recovers a device restarts recovery, and the
config state the host restores is the one it placed (never the reset values)."""

from __future__ import annotations

from pathlib import Path

from sim.scenario import schema as S
from sim.scenario.loader import load_scenario
from sim.scenario.run import ModelRun

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _run(name: str, model: S.TrustModel) -> ModelRun:
    run = ModelRun(load_scenario(SCENARIOS / name), model)
    run.run()
    return run


def test_dpc_during_flr_recovery_is_serviced() -> None:
    run = _run("dpc-during-flr-recovery.yaml", S.TrustModel.THIN_GUEST)
    causes = [(r.cause.value, r.superseded_by.split(" ")[0] if r.superseded_by else "") for r in run.host.recoveries]
    assert ("flr", "dpc") in causes and ("dpc", "") in causes
    assert not run.platform.root_ports["rp0"].dpc.triggered
    res = run.result()
    assert res["devices"]["gpu0"]["tdis"]["tdi0"] == "RUN"
    assert [f["outcome"] for f in res["faults"]] == ["superseded", "recovered"]


def test_bars_and_command_restored_after_d3cold_during_flr_wait() -> None:
    run = _run("d3cold-during-flr-wait.yaml", S.TrustModel.THIN_VMM)
    ep = run.platform.device("gpu0").endpoint
    boot = {off: value for s in run.host.devices["gpu0"].entry.saved if s.function == 0 for off, value in s.bars}
    assert boot and all(v for v in boot.values() if v & 0xFFFF_FFF0)
    assert {off: ep.config_read(0, off) for off in boot} == boot
    assert ep.config_read(0, 0x04) & 0x6 == 0x6   # Memory Space and Bus Master enabled again
    assert run.result()["devices"]["gpu0"]["tdis"]["tdi0"] == "RUN"
