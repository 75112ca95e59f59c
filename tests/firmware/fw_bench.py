"""A real platform wired for one trust model, for the firmware / VMM / guest tests.

Everything is the real thing: ``build_platform`` endpoints with their DSMs, the host kernel with its
register-level DOE driver, the fat TSM or the thin key-slot service, the VMM and a guest. Root Ports
allow only the key-slot principal the model declares (trust-design.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sim.engine.runner import SimGen
from sim.engine.trace import MemorySink
from sim.engine.world import World
from sim.firmware.fat_tsm import FatTsm
from sim.firmware.keyslot_service import KEYSLOT_PRINCIPAL, KeySlotService
from sim.host.kernel import AttestationPolicy, HostKernel, HostPolicy
from sim.protocols.spdm.policy import VerificationPolicy
from sim.scenario.platform import Platform, PlatformSpec, build_platform
from sim.vmm.guest import Guest, GuestPolicy
from sim.vmm.vmm import Vmm

PRINCIPALS = {"fat": "firmware", "thin-guest": KEYSLOT_PRINCIPAL, "thin-vmm": "vmm"}


@dataclasses.dataclass
class Bench:
    world: World
    platform: Platform
    host: HostKernel
    firmware: Any
    vmm: Vmm
    guest: Guest
    sink: MemorySink

    def run(self, gen: SimGen[Any], *, until: int | None = None) -> Any:
        """Run ``gen`` after the host has booted; returns its value."""
        def main() -> SimGen[Any]:
            yield self.host.booted
            return (yield from gen)
        proc = self.world.process(main())
        self.world.run(until=until)
        assert proc.triggered and proc.ok, "the test process did not finish"
        return proc.value


def build(model: str, *, devices: int = 1, seed: int = 5, fat_reconnect: str = "none",
          guest_policy: GuestPolicy | None = None, assign: bool = True) -> Bench:
    world = World(seed)
    sink = MemorySink()
    world.trace.subscribe(sink)
    spec = PlatformSpec.uniform(devices, key_principals=frozenset({PRINCIPALS[model]}))
    platform = build_platform(world, spec)
    if model == "fat":
        host = HostKernel(world, platform, HostPolicy(attestation_policy=AttestationPolicy.FIRMWARE))
        firmware: Any = FatTsm(world, platform, host, fat_reconnect=fat_reconnect)
    else:
        host = HostKernel(world, platform, HostPolicy(host_owned=frozenset()))
        firmware = KeySlotService(world, platform) if model == "thin-guest" else None
    vmm = Vmm(world, host, firmware)
    policy = guest_policy or GuestPolicy(VerificationPolicy.trusting(*(d.identity for d in platform.devices)))
    guest = Guest(world, "guest0", policy, vmm, firmware, model)
    if assign:
        for d in platform.devices:
            vmm.assign(d.id, guest.name)
    host.start()
    return Bench(world, platform, host, firmware, vmm, guest, sink)
