"""The key-handling part of each model's trusted base, measured on every shipped scenario with guests.

For each shipped scenario that passes devices to a confidential guest (and is small enough to sweep in
CI), the components that can read or write IDE keys are compromised in turn. Pinned: the VMM breaks the
guest's confidentiality undetected exactly in thin-vmm (it writes the Root Port slots) — in scenarios where
guest data crosses the link at all, since confidentiality is about that data; the host kernel, which only
relays ciphertext for guest-owned devices, never does; the link interposer never does.
A change that lets one of them in fails here, naming scenario, model and the pair.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.adversary.sweep import sweep_model
from sim.scenario.loader import load_scenario
from sim.scenario.schema import AdversaryComponent as C
from sim.scenario.schema import AdversaryStrategy as S
from sim.scenario.schema import TrustModel as M

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
PAIRS = [(C.VMM, S.PROGRAM_KNOWN_KEYS), (C.VMM, S.RECORD), (C.HOST_KERNEL, S.RECORD),
         (C.HOST_KERNEL, S.PROGRAM_KNOWN_KEYS), (C.LINK_INTERPOSER, S.RECORD)]
GUEST_MODELS = (M.FAT, M.THIN_GUEST, M.THIN_VMM)


def _cases() -> list[tuple[str, M]]:
    out = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        scenario = load_scenario(path)
        guest_owned = [d for d in scenario.platform.devices if d.owner != "host"]
        if guest_owned and len(scenario.platform.devices) <= 4:
            out += [(path.name, m) for m in scenario.models if m in GUEST_MODELS]
    return out


@pytest.mark.parametrize(("name", "model"), _cases())
def test_who_can_break_guest_confidentiality(name: str, model: M) -> None:
    scenario = load_scenario(SCENARIOS / name)
    base = sweep_model(scenario, model, PAIRS).trusted_base()["confidentiality"]
    breaking = {(e["component"], e["strategy"]) for e in base["evidence"]}
    guest_devices = {d.id for d in scenario.platform.devices if d.owner != "host"}
    guest_data = any(e.kind in ("dma", "mmio") and getattr(e, "device", None) in guest_devices
                     for e in scenario.timeline)
    vmm_pairs = {("vmm", "program-known-keys"), ("vmm", "record")}
    expected = vmm_pairs if model is M.THIN_VMM and guest_data else set()
    assert breaking == expected, f"{name} [{model}]: {sorted(breaking)} break confidentiality undetected"
