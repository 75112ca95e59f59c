"""The four trust models on one platform: who held which secret, who wrote the key slots, what crossed the link.

These pin the measured picture of TRUST_MODELS.md §6 for the passthrough scenario; a change that lets a
component see more than it did fails here, naming the model, component and secret class.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.crypto.secrets import SecretClass
from sim.engine.exposure import Exposure
from sim.engine.trace import Channel
from sim.scenario.loader import load_scenario
from sim.scenario.run import ModelRun
from sim.scenario.schema import ExposureComponent as C
from sim.scenario.schema import TrustModel
from sim.scenario.trust_models import WIRINGS, Firmware, Securer

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "passthrough-guest.yaml"
N, CT, PT, GEN = Exposure.NEVER, Exposure.SAW_CIPHERTEXT_ONLY, Exposure.SAW_PLAINTEXT, Exposure.GENERATED

# model -> role -> highest exposure to IDE keys (None: the role has no component in that model)
IDE_KEYS = {
    TrustModel.FAT: {C.FAT_TSM: GEN, C.HOST_KERNEL: CT, C.VMM: N, C.GUEST: N, C.ROOT_PORT: PT, C.DEVICE_DSM: PT,
                     C.LINK: N, C.THIN_KEYSLOT: None},
    TrustModel.THIN_HOST: {C.HOST_KERNEL: GEN, C.THIN_KEYSLOT: PT, C.VMM: N, C.ROOT_PORT: PT, C.DEVICE_DSM: PT,
                           C.LINK: N, C.FAT_TSM: None, C.GUEST: None},
    TrustModel.THIN_GUEST: {C.GUEST: GEN, C.THIN_KEYSLOT: PT, C.VMM: CT, C.HOST_KERNEL: CT, C.ROOT_PORT: PT,
                            C.DEVICE_DSM: PT, C.LINK: N, C.FAT_TSM: None},
    TrustModel.THIN_VMM: {C.GUEST: GEN, C.VMM: PT, C.HOST_KERNEL: CT, C.ROOT_PORT: PT, C.DEVICE_DSM: PT, C.LINK: N,
                          C.FAT_TSM: None, C.THIN_KEYSLOT: None},
}
# who wrote the Root Port's key slots for the device
SLOT_WRITER = {TrustModel.FAT: "firmware", TrustModel.THIN_HOST: "firmware",
               TrustModel.THIN_GUEST: "firmware", TrustModel.THIN_VMM: "vmm"}


@pytest.fixture(scope="module")
def runs() -> dict[TrustModel, tuple[ModelRun, dict]]:
    scenario = load_scenario(SCENARIO)
    out = {}
    for model in TrustModel:
        run = ModelRun(scenario, model)
        out[model] = (run, run.run())
    return out


def _present(run: ModelRun, role: C) -> bool:
    from sim.scenario.run import component_role

    return any(component_role(run, p) is role for p in run.world.exposure.matrix().components)


@pytest.mark.parametrize("model", list(TrustModel))
def test_ide_key_exposure_per_role(runs: dict, model: TrustModel) -> None:
    run, _ = runs[model]
    for role, want in IDE_KEYS[model].items():
        if want is None:
            assert not _present(run, role), f"{model}: {role} should not exist"
            continue
        got = run.exposure_of(role, SecretClass.IDE_KEY)
        assert got is want, f"{model}: {role} holds IDE keys at {got.name}, pinned {want.name}"


@pytest.mark.parametrize("model", list(TrustModel))
def test_session_secrets_never_reach_relays(runs: dict, model: TrustModel) -> None:
    run, _ = runs[model]
    for role in (C.VMM, C.HOST_KERNEL, C.LINK, C.ROOT_PORT):
        for secret in (SecretClass.SPDM_SESSION_KEY, SecretClass.SPDM_SESSION_SECRET, SecretClass.DHE_SHARED_SECRET):
            if role is C.HOST_KERNEL and model is TrustModel.THIN_HOST:
                continue  # the host is the session's end there
            assert run.exposure_of(role, secret) is N, f"{model}: {role} saw {secret}"


@pytest.mark.parametrize("model", list(TrustModel))
def test_key_slots_written_by_the_models_principal(runs: dict, model: TrustModel) -> None:
    run, _ = runs[model]
    rp = run.platform.root_ports["rp0"]
    writers = {w for b in range(rp.stream_block_count) for w in rp.key_port.writers(b).values()}
    assert writers == {SLOT_WRITER[model]}


@pytest.mark.parametrize("model", list(TrustModel))
def test_secure_stream_carries_only_ciphertext(runs: dict, model: TrustModel) -> None:
    run, result = runs[model]
    assert result["devices"]["gpu0"]["stream"]["state"] == "secure"
    tlps = [e for e in run.memory.events if e.channel is Channel.TLP]
    ide = [e for e in tlps if e.data[:1] == b"\x92"]
    assert ide, "no IDE TLP crossed the link"
    # the 64 KiB DMA of the scenario arrived intact, and its plaintext never appeared on the link
    (dma,) = result["devices"]["gpu0"]["dma"]
    assert dma["ok"] and dma["bytes"] == 65536
    sample = bytes.fromhex(dma["sample"])
    assert len(sample) == 32 and not any(sample[:16] in e.data for e in tlps)
    after = [e for e in tlps if e.time_ns >= dma["t_ns"] - 10_000]
    assert after and all(e.data[:1] == b"\x92" for e in after), "a TLP of the DMA crossed without IDE"


def test_wirings_are_declared_once_and_differ_where_the_thread_says() -> None:
    assert WIRINGS[TrustModel.FAT].firmware is Firmware.FAT_TSM
    assert WIRINGS[TrustModel.THIN_VMM].firmware is Firmware.NONE
    assert WIRINGS[TrustModel.THIN_GUEST].guest_devices is Securer.GUEST
    assert WIRINGS[TrustModel.THIN_HOST].guest_devices is None
    assert WIRINGS[TrustModel.THIN_VMM].guest_key_path == "vmm"


def test_results_are_deterministic(runs: dict) -> None:
    scenario = load_scenario(SCENARIO)
    again = ModelRun(scenario, TrustModel.THIN_GUEST).run()
    assert again["trace_digest"] == runs[TrustModel.THIN_GUEST][1]["trace_digest"]


def test_guest_dma_is_not_sent_in_the_clear_after_the_keys_are_gone() -> None:
    """A second requester ends the guest's session: IDE keys are revoked, the TDI leaves RUN, and the
    device must not send the guest's TEE DMA in the clear (found while writing the scenario library)."""
    from sim.scenario.loader import load_scenario_text

    text = SCENARIO.read_text()
    text = text.replace("  - {event: dma, device: gpu0, bytes: 64KiB, direction: write, at: 1s}",
                        "  - {event: second_requester, device: gpu0, at: 1s}\n"
                        "  - {event: dma, device: gpu0, bytes: 64KiB, direction: write, at: 1100ms}")
    scenario = load_scenario_text(text, "second-requester-dma.yaml").model_copy(update={"expect": []})
    run = ModelRun(scenario, TrustModel.THIN_GUEST)
    result = run.run()
    (dma,) = result["devices"]["gpu0"]["dma"]
    assert not dma["ok"]
    sample = bytes.fromhex(dma["sample"])[:16]
    assert not any(sample in e.data for e in run.memory.events if e.channel is Channel.TLP)
    assert any("T=1 request without a Secure IDE stream" in e.summary for e in run.memory.events)


def test_each_assigned_device_is_judged_against_its_own_reference() -> None:
    """A guest with two devices pins a different firmware for each: both pass, and a swap fails on that device."""
    from sim.scenario.loader import load_scenario_text

    text = """\
name: two-devices-two-references
seed: 8
models: [thin-guest, fat]
platform:
  root_ports: [{id: rp0}, {id: rp1}]
  devices:
    - {id: a, port: rp0, identity: {ca: vendor}, measurements: {firmware: "1.0.0"}, owner: tvm0, tdis: [{id: t0}]}
    - {id: b, port: rp1, identity: {ca: vendor}, measurements: {firmware: "2.0.0"}, owner: tvm0, tdis: [{id: t0}]}
guests:
  - id: tvm0
    devices: [a, b]
    policy:
      trusted_roots: [{ca: vendor}]
      expected_measurements: {a: {firmware: "1.0.0"}, b: {firmware: "WANT"}}
"""
    for want, b_state in (("2.0.0", "RUN"), ("1.0.0", "CONFIG_UNLOCKED")):
        scenario = load_scenario_text(text.replace("WANT", want), "two.yaml")
        for model in scenario.models:
            result = ModelRun(scenario, model).run()
            devices = result["devices"]
            assert devices["a"]["tdis"]["t0"] == "RUN", (want, model)
            assert devices["b"]["tdis"]["t0"] in ({b_state} if b_state == "RUN" else {"CONFIG_UNLOCKED",
                                                                                        "CONFIG_LOCKED"}), (want, model)
            if b_state != "RUN":
                verdict = devices["b"]["attestation"]["guest"]
                reason = str(verdict["reason"])
                assert not verdict["ok"] and ("measurement" in reason or "index 2 is" in reason), (model, verdict)
