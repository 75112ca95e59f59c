"""The shipped scenario library as CI regression tests.

Every ``scenarios/*.yaml`` runs once under every trust model it names (cached for the module), and:
every expectation holds (a failure names scenario, model and expectation); nothing in its timeline was
skipped or left waiting; its trace matches the golden data in ``scenarios/golden/`` (a mismatch names
the first differing trace event). Golden data is regenerated only on request:
``python -m sim.scenario.golden --update`` — these tests never write it.

A few facts the expectation language cannot state (a lower bound on exposure, who recovered a device,
the firmware's queue depth, fleet times compared across models) are checked here from the same runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from sim.engine.exposure import Exposure
from sim.scenario.golden import GoldenError, check, golden_path, load_golden, run_traced
from sim.scenario.loader import load_scenario
from sim.scenario.schema import TrustModel

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))

# The questions the library must answer (the issue "Scenario files, CLI, reports").
REQUIRED = {
    "single-device-boot", "passthrough-guest", "dpc-before-keying", "dpc-during-key-programming", "dpc-during-run",
    "d3cold-resume", "flr", "key-refresh", "firmware-update-detected", "second-requester", "fleet-boot-64",
    "claim-guest-keys-hidden-from-vmm", "claim-vmm-joins-tcb-without-firmware",
    "claim-os-reauthenticates-after-reset", "claim-host-is-doe-proxy-in-fat",
}
# What a run of a shipped scenario must never leave in its notes: a skipped event or a trigger never reached.
FORBIDDEN_NOTES = ("not modeled yet", "never fired", "scenario action failed", "key refresh of", "DMA of")


def _cases() -> list[Any]:
    out = []
    for path in FILES:
        for model in load_scenario(path).models:
            out.append(pytest.param(path, model, id=f"{path.stem}-{model}"))
    return out


CASES = _cases()


@dataclasses.dataclass
class Outcome:
    """One (scenario, model) run, reduced to what the tests read (the full trace is not kept)."""

    result: dict[str, Any]
    golden_problem: str | None
    key_refreshes: list[tuple[str, str]]   # (who, what) of every key refresh the trace reports


class Runs:
    """Each (scenario, model) runs once per test module; its trace is compared with golden data as soon
    as it exists and then dropped (the 64-device fleet's traces are ~170k events per model)."""

    def __init__(self) -> None:
        self._done: dict[tuple[Path, TrustModel], Outcome] = {}

    def get(self, path: Path, model: TrustModel) -> Outcome:
        key = (path, model)
        if key not in self._done:
            scenario = load_scenario(path)
            traced = run_traced(scenario, model)
            try:
                golden = load_golden(golden_path(path))
            except GoldenError as exc:
                problem: str | None = str(exc)
            else:
                mismatch = check(scenario, golden, traced)
                problem = None if mismatch is None else str(mismatch)
            # what `tiosim run` writes is JSON: read the result the way reports and CI do
            refreshes = [(e.source, e.summary) for e in traced.events if " key refresh by " in e.summary]
            self._done[key] = Outcome(json.loads(json.dumps(traced.result)), problem, refreshes)
        return self._done[key]


@pytest.fixture(scope="module")
def runs() -> Runs:
    return Runs()


def _level(result: dict[str, Any], role: str, secret: str) -> Exposure:
    """The most any component playing ``role`` had of ``secret`` (as the exposure expectations read it)."""
    matrix = result["exposure"]["matrix"].get(secret, {})
    levels = [Exposure[v] for path, v in matrix.items() if result["roles"].get(path) == role]
    return max(levels, default=Exposure.NEVER)


# ----------------------------------------------------------------------------------------------------
# the library's shape
# ----------------------------------------------------------------------------------------------------


def test_library_answers_every_question() -> None:
    missing = REQUIRED - {p.stem for p in FILES}
    assert not missing, f"scenarios missing from the library: {', '.join(sorted(missing))}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_file_says_what_it_answers(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# Question"), f"{path.name}: the first line must be '# Question...' (got {first!r})"
    assert load_scenario(path).name == path.stem, f"{path.name}: the scenario's name must be its file name"


def test_every_golden_file_belongs_to_a_scenario() -> None:
    stems = {p.stem for p in FILES}
    orphans = [p.name for p in (SCENARIOS / "golden").glob("*.json") if p.stem not in stems]
    assert not orphans, f"golden data without a scenario: {', '.join(orphans)}"
    for path in FILES:
        try:
            golden = load_golden(golden_path(path))
        except GoldenError:
            continue  # reported per model by test_trace_matches_golden
        assert set(golden.models) == {str(m) for m in load_scenario(path).models}, (
            f"{path.name}: golden data covers {sorted(golden.models)}; regenerate it with "
            f"python -m sim.scenario.golden --update {path.relative_to(SCENARIOS.parent)}")


# ----------------------------------------------------------------------------------------------------
# every scenario under every model it names
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "model"), CASES)
def test_expectations_hold(runs: Runs, path: Path, model: TrustModel) -> None:
    result = runs.get(path, model).result
    assert result["expectations"], f"{path.stem} [{model}] checks nothing"
    failed = [f"{path.stem} [{model}] expectation #{e['index']} failed: {e['text']} (got {e['detail']})"
              for e in result["expectations"] if not e["held"]]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize(("path", "model"), CASES)
def test_timeline_fully_played(runs: Runs, path: Path, model: TrustModel) -> None:
    notes = runs.get(path, model).result["notes"]
    bad = [n for n in notes if any(f in n for f in FORBIDDEN_NOTES)]
    assert not bad, f"{path.stem} [{model}]: " + "; ".join(bad)


@pytest.mark.parametrize(("path", "model"), CASES)
def test_trace_matches_golden(runs: Runs, path: Path, model: TrustModel) -> None:
    problem = runs.get(path, model).golden_problem
    assert problem is None, (f"{path.stem}: {problem}\nIf the change is intended, regenerate with: "
                             f"python -m sim.scenario.golden --update scenarios/{path.name}")


def test_same_scenario_same_digest() -> None:
    """Determinism: two fresh runs of the same scenario give byte-identical traces."""
    scenario = load_scenario(SCENARIOS / "dpc-during-run.yaml")
    first = run_traced(scenario, TrustModel.THIN_GUEST)
    second = run_traced(scenario, TrustModel.THIN_GUEST)
    assert len(first.events) == len(second.events) > 1000
    assert first.digest == second.digest
    assert first.result["devices"] == second.result["devices"]


# ----------------------------------------------------------------------------------------------------
# facts the expectation language cannot state
# ----------------------------------------------------------------------------------------------------


def _get(runs: Runs, stem: str, model: str) -> dict[str, Any]:
    return runs.get(SCENARIOS / f"{stem}.yaml", TrustModel(model)).result


def test_fleet_fat_firmware_serialises(runs: Runs) -> None:
    fat = _get(runs, "fleet-boot-64", "fat")
    host = _get(runs, "fleet-boot-64", "thin-host")
    assert fat["fleet"]["secured"] == host["fleet"]["secured"] == 64
    assert fat["firmware"]["max_queue_depth"] == 64   # every DEV_CONNECT waits on the one TSM core
    assert fat["fleet"]["time_to_secure_ns"] > 5 * host["fleet"]["time_to_secure_ns"]
    for model in ("thin-guest", "thin-vmm"):
        thin = _get(runs, "fleet-boot-64", model)
        assert fat["fleet"]["time_to_secure_ns"] > 5 * thin["fleet"]["time_to_secure_ns"], model
    assert _get(runs, "fleet-boot-64", "thin-vmm")["firmware"] is None


@pytest.mark.parametrize(("stem", "model", "role", "secret", "level"), [
    # claim (a): the guest generates the IDE keys; the VMM and host carry them as ciphertext
    ("claim-guest-keys-hidden-from-vmm", "thin-guest", "guest", "ide-key", Exposure.GENERATED),
    ("claim-guest-keys-hidden-from-vmm", "thin-guest", "vmm", "ide-key", Exposure.SAW_CIPHERTEXT_ONLY),
    ("claim-guest-keys-hidden-from-vmm", "thin-guest", "host-kernel", "ide-key", Exposure.SAW_CIPHERTEXT_ONLY),
    ("claim-guest-keys-hidden-from-vmm", "thin-guest", "thin-keyslot", "ide-key", Exposure.SAW_PLAINTEXT),
    # claim (b): without firmware the VMM has the keys in plaintext; with it, ciphertext
    ("claim-vmm-joins-tcb-without-firmware", "thin-vmm", "vmm", "ide-key", Exposure.SAW_PLAINTEXT),
    ("claim-vmm-joins-tcb-without-firmware", "thin-vmm", "guest", "ide-key", Exposure.GENERATED),
    ("claim-vmm-joins-tcb-without-firmware", "thin-guest", "vmm", "ide-key", Exposure.SAW_CIPHERTEXT_ONLY),
    # claim (d): under fat the host relays ciphertext; under thin-host it generates
    ("claim-host-is-doe-proxy-in-fat", "fat", "host-kernel", "ide-key", Exposure.SAW_CIPHERTEXT_ONLY),
    ("claim-host-is-doe-proxy-in-fat", "fat", "fat-tsm", "ide-key", Exposure.GENERATED),
    ("claim-host-is-doe-proxy-in-fat", "thin-host", "host-kernel", "ide-key", Exposure.GENERATED),
    ("claim-host-is-doe-proxy-in-fat", "thin-host", "host-kernel", "spdm-session-key", Exposure.GENERATED),
])
def test_claim_exposure_exact(runs: Runs, stem: str, model: str, role: str, secret: str, level: Exposure) -> None:
    got = _level(_get(runs, stem, model), role, secret)
    assert got is level, f"{stem} [{model}]: {role} had {secret} at {got.name}, expected {level.name}"


def test_claim_vmm_joins_tcb_no_keyslot_firmware(runs: Runs) -> None:
    result = _get(runs, "claim-vmm-joins-tcb-without-firmware", "thin-vmm")
    assert "thin-keyslot" not in result["roles"].values() and "fat-tsm" not in result["roles"].values()
    assert result["firmware"] is None


def test_claim_host_is_doe_proxy(runs: Runs) -> None:
    fat = _get(runs, "claim-host-is-doe-proxy-in-fat", "fat")
    assert fat["forwarded"]["host"] > 0           # it carried the firmware's DOE objects ...
    assert "host" not in fat["crypto_ops"]        # ... and computed nothing
    assert "host" in _get(runs, "claim-host-is-doe-proxy-in-fat", "thin-host")["crypto_ops"]


@pytest.mark.parametrize(("stem", "model", "device", "by"), [
    ("dpc-during-run", "thin-host", "nic0", "host"),
    ("dpc-during-run", "thin-host", "gpu0", "host"),
    ("dpc-during-run", "thin-guest", "nic0", "host"),
    ("dpc-during-run", "thin-guest", "gpu0", "tvm0"),
    ("dpc-during-run", "thin-vmm", "gpu0", "tvm0"),
    ("dpc-during-run", "fat", "nic0", None),
    ("dpc-during-run", "fat", "gpu0", None),
    ("d3cold-resume", "thin-host", "nic0", "host"),
    ("d3cold-resume", "thin-guest", "gpu0", "tvm0"),
    ("d3cold-resume", "fat", "gpu0", None),
    ("claim-os-reauthenticates-after-reset", "thin-host", "nic0", "host"),
    ("claim-os-reauthenticates-after-reset", "thin-host", "nic1", "host"),
    ("claim-os-reauthenticates-after-reset", "fat", "nic0", None),
    ("claim-os-reauthenticates-after-reset", "fat", "nic1", None),
    ("fat-host-initiated-reconnect", "fat", "nic0", "firmware"),
    ("fat-host-initiated-reconnect", "fat", "gpu0", "firmware"),
])
def test_who_recovers(runs: Runs, stem: str, model: str, device: str, by: str | None) -> None:
    """Who brought the device back after its fault (None: nobody, it never recovered)."""
    recoveries = _get(runs, stem, model)["devices"][device]["recoveries"]
    assert len(recoveries) == 1, recoveries
    rec = recoveries[0]
    if by is None:
        assert rec["recovered_at_ns"] is None, f"{stem} [{model}] {device} recovered: {rec}"
    else:
        assert rec["recovered_at_ns"] is not None and rec["latency_ns"] > 0, f"{stem} [{model}] {device}: {rec}"
        assert rec["by"] == by, f"{stem} [{model}] {device} recovered by {rec['by']}, expected {by}"


def test_firmware_update_reattestation_verdicts(runs: Runs) -> None:
    """The guest's second verdict is the failure; the host accepted the new firmware twice."""
    for model in ("thin-guest", "thin-vmm"):
        att = _get(runs, "firmware-update-detected", model)["devices"]["gpu0"]["attestation"]["guest"]
        assert att["attempts"] == 2 and att["ok"] is False and "measurement-mismatch" in att["reason"], att
    host = _get(runs, "firmware-update-detected", "thin-host")["devices"]["gpu0"]["attestation"]["host-kernel"]
    assert host["attempts"] == 2 and host["ok"] is True


@pytest.mark.parametrize(("model", "nic0_by", "gpu0_by"), [
    ("fat", "firmware", "firmware"),
    ("thin-host", "host", "host"),
    ("thin-guest", "host", "tvm0"),
    ("thin-vmm", "host", "tvm0"),
])
def test_key_refresh_by_the_owner(runs: Runs, model: str, nic0_by: str, gpu0_by: str) -> None:
    """Each device's owner switched its stream to a new key set, once, and new keys exist for both."""
    outcome = runs.get(SCENARIOS / "key-refresh.yaml", TrustModel(model))
    assert sorted(outcome.key_refreshes) == sorted([
        (nic0_by, f"nic0 key refresh by {nic0_by}: switched key set"),
        (gpu0_by, f"gpu0 key refresh by {gpu0_by}: switched key set")])
    # 2 devices x 6 sub-stream keys, twice (boot and refresh)
    assert outcome.result["exposure"]["secret_counts"]["ide-key"] == 24
