"""The measured trusted base of each trust model, pinned for the shipped passthrough scenario.

A change that lets one more (component, strategy) pair break a property without detection fails here,
naming the pair; so does one that closes a gap (update the pin on purpose). Fat GUEST_REQUESTs and
their answers travel sealed on the guest channel (AES-256-GCM under the per-guest key the TSM creates
at launch), so the VMM that carries them is out of fat's authenticity base: rewriting the sealed
TDI_INFO (vmm/substitute-measurements) makes the guest's open fail, which is detected. The fat TSM
itself, which seals the evidence, stays in it. A forged clear write from a second device lands only in memory that is not a confidential guest's:
the Root Port admits only T=1 requests from a Secure stream into TEE memory, so second-device/modify
breaks integrity only in thin-host, where the device is the host's and its DMA goes to host memory.
"""

from __future__ import annotations

import json
import json as _json

import pytest

from sim.adversary.sweep import ModelSweep, attach, sweep, sweep_model
from sim.report.compare import compare
from sim.scenario.run import run_scenario
from sim.scenario.schema import AdversaryComponent as C
from sim.scenario.schema import AdversaryStrategy as S
from sim.scenario.schema import TrustModel as M
from tests.adversary.conftest import PASSTHROUGH

DSM_LIES = ["device-dsm/lie-in-report", "device-dsm/substitute-measurements"]
DSM_ALL = ["device-dsm/lie-in-report", "device-dsm/record", "device-dsm/substitute-measurements"]
FORGED_WRITE = ["second-device/modify"]

# liveness: a denial counts whether or not it is noticed (whoever can keep the device from serving its owner)
LIVENESS_PINS: dict[str, list[str]] = {
    "fat": [
        "device-dsm/substitute-identity",
        "fat-tsm/reprogram-after-accept",
        "host-kernel/drop",
        "host-kernel/modify",
        "host-kernel/replay",
        "host-kernel/reprogram-after-accept",
        "host-kernel/substitute-identity",
        "link-interposer/drop",
        "link-interposer/modify",
        "link-interposer/reorder",
        "link-interposer/replay",
        "link-interposer/substitute-identity",
        "second-device/replay",
        "vmm/drop",
        "vmm/modify",
        "vmm/replay",
        "vmm/substitute-identity",
    ],
    "thin-host": [
        "device-dsm/substitute-identity",
        "link-interposer/drop",
        "link-interposer/modify",
        "link-interposer/reorder",
        "link-interposer/replay",
        "link-interposer/substitute-identity",
        "link-interposer/substitute-measurements",
        "second-device/replay",
        "thin-keyslot/reprogram-after-accept",
    ],
    "thin-guest": [
        "device-dsm/substitute-identity",
        "host-kernel/drop",
        "host-kernel/modify",
        "host-kernel/replay",
        "host-kernel/reprogram-after-accept",
        "host-kernel/substitute-identity",
        "link-interposer/drop",
        "link-interposer/modify",
        "link-interposer/reorder",
        "link-interposer/replay",
        "link-interposer/substitute-identity",
        "second-device/replay",
        "thin-keyslot/reprogram-after-accept",
        "vmm/drop",
        "vmm/modify",
        "vmm/replay",
        "vmm/substitute-identity",
    ],
    "thin-vmm": [
        "device-dsm/substitute-identity",
        "host-kernel/drop",
        "host-kernel/modify",
        "host-kernel/program-known-keys",
        "host-kernel/replay",
        "host-kernel/reprogram-after-accept",
        "host-kernel/substitute-identity",
        "link-interposer/drop",
        "link-interposer/modify",
        "link-interposer/reorder",
        "link-interposer/replay",
        "link-interposer/substitute-identity",
        "second-device/replay",
        "vmm/drop",
        "vmm/modify",
        "vmm/replay",
        "vmm/reprogram-after-accept",
        "vmm/substitute-identity",
    ],
}

PASSTHROUGH_PINS: dict[str, dict[str, list[str]]] = {
    "fat": {
        "authenticity": DSM_LIES + ["fat-tsm/lie-in-report", "fat-tsm/substitute-measurements"],
        "confidentiality": DSM_ALL + ["fat-tsm/lie-in-report", "fat-tsm/program-known-keys", "fat-tsm/record",
                                      "fat-tsm/substitute-measurements"],
        "liveness": LIVENESS_PINS["fat"],
    },
    "thin-host": {
        "confidentiality": DSM_ALL + ["host-kernel/program-known-keys", "host-kernel/record",
                                      "host-kernel/reprogram-after-accept", "thin-keyslot/program-known-keys",
                                      "thin-keyslot/record"],
        "integrity": FORGED_WRITE,
        "liveness": LIVENESS_PINS["thin-host"],
    },
    "thin-guest": {
        "authenticity": DSM_LIES,
        "confidentiality": DSM_ALL + ["thin-keyslot/program-known-keys", "thin-keyslot/record"],
        "liveness": LIVENESS_PINS["thin-guest"],
    },
    "thin-vmm": {
        "authenticity": DSM_LIES,
        "confidentiality": DSM_ALL + ["vmm/program-known-keys", "vmm/record"],
        "liveness": LIVENESS_PINS["thin-vmm"],
    },
}

RESET_PAIRS = [(C.HOST_KERNEL, S.SKIP_REAUTH), (C.VMM, S.SKIP_REAUTH), (C.VMM, S.RECORD)]
RESET_PINS: dict[str, dict[str, list[str]]] = {
    "fat": {},
    "thin-host": {"freshness": ["host-kernel/skip-reauth"], "liveness": ["host-kernel/skip-reauth"]},
    "thin-guest": {"liveness": ["host-kernel/skip-reauth", "vmm/skip-reauth"]},
    "thin-vmm": {"confidentiality": ["vmm/record"], "liveness": ["host-kernel/skip-reauth", "vmm/skip-reauth"]},
}


def _measured(ms: ModelSweep) -> dict[str, list[str]]:
    return {prop: sorted({f"{e['component']}/{e['strategy']}" for e in entry["evidence"]})
            for prop, entry in ms.trusted_base().items() if entry["evidence"]}


def _differences(pinned: dict[str, dict[str, list[str]]], sweeps: dict[str, ModelSweep]) -> list[str]:
    out = []
    for model, ms in sweeps.items():
        got = _measured(ms)
        want = pinned[model]
        for prop in sorted(set(got) | set(want)):
            wider = sorted(set(got.get(prop, [])) - set(want.get(prop, [])))
            narrower = sorted(set(want.get(prop, [])) - set(got.get(prop, [])))
            evidence = {f"{e['component']}/{e['strategy']}": e for e in ms.trusted_base()[prop]["evidence"]}
            for pair in wider:
                out.append(f"{model} {prop}: WIDER, {pair} now breaks it undetected: {evidence[pair]['detail']}")
            for pair in narrower:
                out.append(f"{model} {prop}: narrower, {pair} no longer breaks it undetected (update the pin)")
    return out


@pytest.fixture(scope="module")
def passthrough_sweep(passthrough) -> dict[str, ModelSweep]:
    return sweep(passthrough, workers=2)


def test_trusted_base_of_each_model_for_passthrough_guest(passthrough_sweep) -> None:
    problems = _differences(PASSTHROUGH_PINS, passthrough_sweep)
    assert not problems, "\n".join(problems)


def test_the_sweep_explains_what_it_did_not_run(passthrough_sweep) -> None:
    thin_host = passthrough_sweep["thin-host"]
    skipped = {(c, s): why for c, s, why in thin_host.skipped}
    assert skipped[("fat-tsm", "record")] == "the thin-host model has no fat-tsm"
    assert "owns every device" in skipped[("host-kernel", "modify")]
    assert "no reset" in skipped[("vmm", "skip-reauth")]
    assert "no report" in skipped[("link-interposer", "lie-in-report")]
    # the honest run holds everything at stake (no reset: freshness is not exercised); the premise alone is
    # caught where a guest checks measurements, and breaks thin-host's authenticity with nobody compromised
    assert {p: v["verdict"] for p, v in thin_host.honest.verdicts.items()} == {
        **dict.fromkeys(("authenticity", "confidentiality", "integrity", "liveness"), "held"),
        "freshness": "not-exercised"}
    tb = thin_host.trusted_base()
    assert tb["authenticity"]["status"] == "broken-without-compromise" and "premise alone" in tb["authenticity"]["why"]
    assert tb["freshness"] == {**tb["freshness"], "status": "not-exercised", "why": "nothing at stake: no reset in this run"}
    assert tb["confidentiality"]["status"] == "exercised" and tb["confidentiality"]["verdicts"]["broken-undetected"] > 0
    assert passthrough_sweep["thin-guest"].premise is not None
    assert passthrough_sweep["thin-guest"].premise.verdict("authenticity") is not None   # type: ignore[arg-type]


def test_fat_and_thin_bases_differ_where_the_issue_says(passthrough_sweep) -> None:
    tb = {m: ms.trusted_base() for m, ms in passthrough_sweep.items()}
    assert "fat-tsm" in tb["fat"]["confidentiality"]["components"]
    assert "vmm" in tb["thin-vmm"]["confidentiality"]["components"]
    assert "vmm" not in tb["thin-guest"]["confidentiality"]["components"]
    assert "host-kernel" not in tb["thin-guest"]["confidentiality"]["components"]
    assert "host-kernel" in tb["thin-host"]["confidentiality"]["components"]
    evidence = next(e for e in tb["thin-vmm"]["confidentiality"]["evidence"] if e["strategy"] == "program-known-keys")
    assert evidence["verdict"] == "broken-undetected" and evidence["excerpt"]
    json.dumps(tb)   # result.json material


def test_reset_strategies_pinned_on_a_dpc_scenario(passthrough_dpc) -> None:
    sweeps = sweep(passthrough_dpc, pairs=RESET_PAIRS, workers=2)
    problems = _differences(RESET_PINS, sweeps)
    assert not problems, "\n".join(problems)
    fat = sweeps["fat"].trusted_base()
    assert fat["liveness"]["honest"] == "broken-detected" and fat["liveness"]["status"] == "broken-without-compromise"
    assert "nobody compromised" in fat["liveness"]["why"]


def test_the_report_reads_the_trusted_base(passthrough) -> None:
    result = run_scenario(passthrough, [M.THIN_VMM])
    ms = sweep_model(passthrough, M.THIN_VMM, [(C.VMM, S.RECORD), (C.LINK_INTERPOSER, S.MODIFY)])
    attach(result, {"thin-vmm": ms})
    entry = result["models"]["thin-vmm"]
    assert entry["trusted_base"]["confidentiality"]["components"] == ["vmm"]
    assert entry["adversary_sweep"]["pairs"][1]["detected"]["integrity"]["by"] == "rp0"
    cmp = compare(_json.loads(_json.dumps(result)))
    assert cmp.run("thin-vmm").trusted_base is not None
    assert cmp.run("thin-vmm").trusted_base["confidentiality"] == ("vmm",)


def test_report_demonstrates_where_the_trusted_bases_differ(tmp_path) -> None:
    """The report lists, for every property whose base differs between models, the breaking runs."""
    from sim.report.write import write_report
    from sim.scenario.loader import load_scenario

    scenario = load_scenario(str(PASSTHROUGH))
    result = run_scenario(scenario, [M.THIN_GUEST, M.THIN_VMM])
    pairs = [(C.VMM, S.PROGRAM_KNOWN_KEYS), (C.VMM, S.RECORD)]
    attach(result, sweep(scenario, [M.THIN_GUEST, M.THIN_VMM], pairs))
    md = write_report(result, tmp_path).markdown.read_text()
    section = md[md.index("### Where the trusted bases differ"):]
    row = next(line for line in section.splitlines() if line.startswith("| confidentiality | thin-vmm | vmm |"))
    assert "program-known-keys" in row or "record" in row
    assert not any(line.startswith("| confidentiality | thin-guest | vmm |") for line in section.splitlines())
