"""An adversary limited by ``device:`` acts on that device's traffic only.

Each strategy is run once with ``device: d0`` and compared with a clean run: the other devices (d1, given
to the same guest, and the host's h0) must come out exactly as without the adversary. Strategies that
acted on the whole component (skip-reauth switched the host's re-authentication off for every device; fat
vmm/replay and vmm/substitute-identity took every request of d0's guest for d0's; fat-tsm/lie-in-report
changed the TSM's lock flags for every bind; vmm/program-known-keys copied every key it wrote) now act
per device, and skip-reauth is refused, with the reason, when the named device is never reset.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sim.adversary.strategies import Adversary, NotApplicable, install
from sim.firmware.fat_tsm import FatTsm
from sim.scenario.loader import load_scenario_text
from sim.scenario.run import ModelRun
from sim.scenario.schema import AdversaryComponent as C
from sim.scenario.schema import AdversaryStrategy as S
from sim.scenario.schema import Scenario, TrustModel
from sim.wire.tdisp import LockInterfaceFlags

# d0 and d1 go to g0, h0 stays with the host; every port gets a DPC at 2 s, and every device DMAs before
# and after it
TWO_GUEST_DEVICES = """\
name: device-filter
seed: 3
platform:
  root_ports: [{{id: rp0}}, {{id: rp1}}, {{id: rp2}}]
  devices:
    - {{id: d0, port: rp0, owner: g0, measurements: {{firmware: "2.0.0"}}}}
    - {{id: d1, port: rp1, owner: g0, measurements: {{firmware: "2.0.0"}}}}
    - {{id: h0, port: rp2}}
guests:
  - id: g0
    devices: [d0, d1]
    policy:
      expected_measurements:
        d0: {{firmware: "2.0.0"}}
        d1: {{firmware: "2.0.0"}}
timeline:
  - {{event: dma, device: d0, bytes: 4KiB, at: 1s}}
  - {{event: dma, device: d1, bytes: 4KiB, at: 1s}}
  - {{event: dma, device: h0, bytes: 4KiB, at: 1s}}
{resets}
  - {{event: dma, device: d0, bytes: 4KiB, at: 4s}}
  - {{event: dma, device: d1, bytes: 4KiB, at: 4s}}
  - {{event: dma, device: h0, bytes: 4KiB, at: 4s}}
"""
ALL_PORTS_RESET = "\n".join(f"  - {{event: dpc, port: rp{i}, at: 2s}}" for i in range(3))


def _scenario(resets: str = ALL_PORTS_RESET) -> Scenario:
    return load_scenario_text(TWO_GUEST_DEVICES.format(resets=resets))


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return _scenario()


@pytest.fixture(scope="module")
def no_reset() -> Scenario:
    """The same platform with no reset: what the TSM locked is still locked at the end."""
    return _scenario("")


def _run(scenario: Scenario, model: TrustModel, component: C | None = None, strategy: S | None = None,
         device: str | None = "d0") -> tuple[ModelRun, Adversary | None, dict[str, Any]]:
    run = ModelRun(scenario, model)
    adv = None
    if component is not None and strategy is not None:
        got = install(run, component, strategy, device)
        assert isinstance(got, Adversary), got
        adv = got
    return run, adv, run.run()


def _summary(result: dict[str, Any], device: str) -> tuple[Any, ...]:
    """What a device came out with: stream state, TDI states, every verdict, DMA results, transitions."""
    x = result["devices"][device]
    verdicts = json.dumps({k: (v["ok"], v["reason"]) for k, v in x["attestation"].items()}, sort_keys=True)
    return (x["stream"]["state"], tuple(sorted(x["tdis"].items())), verdicts, tuple(e["ok"] for e in x["dma"]),
            len(x["stream_transitions"]), len(x["tdi_transitions"]))


_clean: dict[tuple[int, TrustModel], tuple[Scenario, dict[str, Any]]] = {}


def _clean_run(scenario: Scenario, model: TrustModel) -> dict[str, Any]:
    key = (id(scenario), model)
    if key not in _clean:
        _clean[key] = (scenario, _run(scenario, model)[2])   # the scenario is kept so that its id stays its own
    return _clean[key][1]


def _others_untouched(scenario: Scenario, model: TrustModel, result: dict[str, Any]) -> None:
    clean = _clean_run(scenario, model)
    for other in ("d1", "h0"):
        assert _summary(result, other) == _summary(clean, other), other


# --------------------------------------------------------------------------------------------------
# skip-reauth: a per-device exclusion in the host, not the host-wide switch
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [TrustModel.THIN_HOST, TrustModel.THIN_GUEST])
def test_host_skip_reauth_limited_to_d0_leaves_the_other_devices_recovering(scenario: Scenario,
                                                                            model: TrustModel) -> None:
    run, adv, result = _run(scenario, model, C.HOST_KERNEL, S.SKIP_REAUTH)
    assert run.host.policy.reauth_on_recovery is True and run.host.policy.reauth_excluded == {"d0"}
    assert adv is not None and adv.actions and all("d0" in a.summary for a in adv.actions)
    _others_untouched(scenario, model, result)
    if model is TrustModel.THIN_HOST:   # the host keeps d0 here: it resumes it with its stream gone
        assert result["devices"]["d0"]["stream"]["state"] != "secure"
        assert _summary(result, "d0") != _summary(_clean_run(scenario, model), "d0")


def test_host_skip_reauth_without_a_device_still_switches_reauthentication_off(scenario: Scenario) -> None:
    run = ModelRun(scenario, TrustModel.THIN_HOST)
    assert isinstance(install(run, C.HOST_KERNEL, S.SKIP_REAUTH), Adversary)
    assert run.host.policy.reauth_on_recovery is False and not run.host.policy.reauth_excluded


@pytest.mark.parametrize("component", [C.HOST_KERNEL, C.VMM])
def test_skip_reauth_of_a_device_never_reset_is_refused(component: C) -> None:
    only_d1 = _scenario("  - {event: dpc, port: rp1, at: 2s}")
    run = ModelRun(only_d1, TrustModel.THIN_GUEST)
    got = install(run, component, S.SKIP_REAUTH, "d0")
    assert isinstance(got, NotApplicable)
    assert got.reason == "the scenario has no reset (DPC, hot reset, D3cold, FLR, link down) of d0"
    assert run.host.policy.reauth_on_recovery is True and not run.host.policy.reauth_excluded
    assert isinstance(install(run, component, S.SKIP_REAUTH, "d1"), Adversary)


# --------------------------------------------------------------------------------------------------
# fat: the VMM tells d0's sealed requests from d1's of the same guest
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["d0", "d1"])
def test_fat_vmm_replay_hits_only_the_named_devices_requests(scenario: Scenario, target: str) -> None:
    _run_, adv, result = _run(scenario, TrustModel.FAT, C.VMM, S.REPLAY, target)
    assert adv is not None and [a.summary for a in adv.actions] == [
        f"replays the first sealed GUEST_REQUEST of {target} in place of the second"]
    other = "d1" if target == "d0" else "d0"
    clean = _clean_run(scenario, TrustModel.FAT)
    assert _summary(result, other) == _summary(clean, other)
    assert _summary(result, "h0") == _summary(clean, "h0")
    assert result["devices"][target]["attestation"]["guest"]["ok"] is False


def test_fat_vmm_substitute_identity_of_d0_leaves_d1_accepted(scenario: Scenario) -> None:
    _run_, adv, result = _run(scenario, TrustModel.FAT, C.VMM, S.SUBSTITUTE_IDENTITY)
    assert adv is not None and adv.actions and all(a.summary.endswith("for d0") for a in adv.actions)
    assert result["devices"]["d0"]["attestation"]["guest"]["ok"] is False
    _others_untouched(scenario, TrustModel.FAT, result)


def test_fat_tsm_lie_in_report_limited_to_d0_locks_only_d0_without_no_fw_update(no_reset: Scenario) -> None:
    run, adv, result = _run(no_reset, TrustModel.FAT, C.FAT_TSM, S.LIE_IN_REPORT)
    fw = run.actors.firmware
    assert isinstance(fw, FatTsm) and fw.lock_flags is LockInterfaceFlags.NO_FW_UPDATE   # restored after d0's binds

    def lock_flags(device: str) -> LockInterfaceFlags:
        tdis = run.platform.device(device).dsm.tdisp.tdis
        lock = tdis[next(iter(tdis))].lock
        assert lock is not None, device
        return LockInterfaceFlags(lock.flags)

    assert not lock_flags("d0") & LockInterfaceFlags.NO_FW_UPDATE
    assert lock_flags("d1") & LockInterfaceFlags.NO_FW_UPDATE
    assert adv is not None and [a.summary for a in adv.actions][0] == "locks d0's TDIs without NO_FW_UPDATE"
    _others_untouched(no_reset, TrustModel.FAT, result)


# --------------------------------------------------------------------------------------------------
# thin-vmm: the VMM keeps copies of the named device's keys only
# --------------------------------------------------------------------------------------------------


def _slot_keys(run: ModelRun, device: str) -> set[bytes]:
    rp = run.platform.device(device).root_port
    return {slot.key for block in range(rp.stream_block_count) for slot in rp.stream_keys(block).slots.values()}


def test_thin_vmm_program_known_keys_copies_only_the_named_devices_keys(scenario: Scenario) -> None:
    run, adv, result = _run(scenario, TrustModel.THIN_VMM, C.VMM, S.PROGRAM_KNOWN_KEYS)
    assert adv is not None and adv.known_keys
    assert set(adv.known_keys) & _slot_keys(run, "d0")
    assert not set(adv.known_keys) & _slot_keys(run, "d1")
    _all, everyone, _r = _run(scenario, TrustModel.THIN_VMM, C.VMM, S.PROGRAM_KNOWN_KEYS, None)
    assert everyone is not None and len(everyone.known_keys) > len(adv.known_keys)
    _others_untouched(scenario, TrustModel.THIN_VMM, result)
