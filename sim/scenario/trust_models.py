"""The trust models, declared as wirings of the same parts (DESIGN.md, TRUST_MODELS.md §6).

Every model runs the same platform, the same host kernel, VMM and guests, and the same securing
flow (``sim.protocols.tsm``). What differs is written down once, in :data:`WIRINGS`: which
firmware exists, which component runs the securing flow for host-kept and for assigned devices,
who may write Root Port key slots, and whether the host re-authenticates in its recovery path.
:func:`build_actors` turns a row of that table into live components.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from sim.engine.world import World
from sim.firmware.fat_tsm import FatReconnect, FatTsm
from sim.firmware.keyslot_service import KEYSLOT_PRINCIPAL, KeySlotClient, KeySlotRequestHandler, KeySlotService
from sim.host.kernel import AttestationPolicy, DirectKeySlotHandler, HostKernel, HostPolicy
from sim.protocols.spdm.policy import VerificationPolicy
from sim.scenario.platform import Platform
from sim.scenario.schema import TrustModel
from sim.vmm.guest import Guest, GuestPolicy
from sim.vmm.vmm import Vmm

FAT_PRINCIPAL = "firmware"
HOST_PRINCIPAL = "host"
VMM_PRINCIPAL = "vmm"


class Firmware(enum.StrEnum):
    FAT_TSM = "fat-tsm"            # attests, keys and drives TDISP for every device
    KEY_SLOT_SERVICE = "keyslot"   # allocates streams and writes key slots for whoever owns a device
    NONE = "none"


class Securer(enum.StrEnum):
    """Who runs the securing flow for a device."""

    FIRMWARE = "firmware"
    HOST = "host"
    GUEST = "guest"


@dataclasses.dataclass(frozen=True)
class Wiring:
    model: TrustModel
    firmware: Firmware
    host_devices: Securer          # devices the host keeps
    guest_devices: Securer | None  # devices assigned to a guest (None: assignment without TDISP)
    host_key_path: str             # principal that writes Root Port slots for host-kept devices
    guest_key_path: str | None     # ... for guest-owned devices
    host_reauth_on_recovery: bool  # the OS-native recovery path re-authenticates and re-keys
    summary: str


WIRINGS: dict[TrustModel, Wiring] = {
    TrustModel.FAT: Wiring(
        TrustModel.FAT, Firmware.FAT_TSM, Securer.FIRMWARE, Securer.FIRMWARE, FAT_PRINCIPAL, FAT_PRINCIPAL,
        host_reauth_on_recovery=False,
        summary="A PSP-like firmware TSM attests every device, generates and programs IDE keys and drives TDISP; "
                "the host forwards DOE objects; the guest checks the firmware's report and digests."),
    TrustModel.THIN_HOST: Wiring(
        TrustModel.THIN_HOST, Firmware.KEY_SLOT_SERVICE, Securer.HOST, None, KEYSLOT_PRINCIPAL, None,
        host_reauth_on_recovery=True,
        summary="The host kernel attests and keys every device itself (CMA-SPDM + IDE_KM) and keeps it; the "
                "firmware only writes Root Port key slots. Assigned devices get no TDISP."),
    TrustModel.THIN_GUEST: Wiring(
        TrustModel.THIN_GUEST, Firmware.KEY_SLOT_SERVICE, Securer.HOST, Securer.GUEST, KEYSLOT_PRINCIPAL,
        KEYSLOT_PRINCIPAL, host_reauth_on_recovery=True,
        summary="The host secures the devices it keeps; a confidential guest attests, keys and locks the devices "
                "passed to it through the VMM, which relays ciphertext; keys reach the firmware key-slot "
                "service over a channel the VMM cannot read."),
    TrustModel.THIN_VMM: Wiring(
        TrustModel.THIN_VMM, Firmware.NONE, Securer.HOST, Securer.GUEST, HOST_PRINCIPAL, VMM_PRINCIPAL,
        host_reauth_on_recovery=True,
        summary="As thin-guest, but with no firmware service: the VMM writes the Root Port key slots for the "
                "guest and so joins the guest's trusted base; the host writes them for its own devices."),
}


@dataclasses.dataclass
class Actors:
    """The live software components of one run under one trust model."""

    wiring: Wiring
    host: HostKernel
    firmware: FatTsm | KeySlotService | None
    vmm: Vmm
    guests: dict[str, Guest]

    def securer_of(self, device: str) -> str:
        """The component path that runs the securing flow for ``device`` right now."""
        owner = self.vmm.owner_of(device)
        who = self.wiring.guest_devices if owner is not None else self.wiring.host_devices
        if owner is not None and who is Securer.GUEST:
            return owner
        if who is Securer.FIRMWARE and self.firmware is not None:
            return self.firmware.path
        return self.host.path


@dataclasses.dataclass(frozen=True)
class GuestSetup:
    name: str
    policy: GuestPolicy


def principals(wiring: Wiring) -> frozenset[str]:
    """The principals a Root Port accepts key-slot writes from under this wiring."""
    return frozenset(p for p in (wiring.host_key_path, wiring.guest_key_path) if p is not None)


def build_actors(world: World, platform: Platform, wiring: Wiring, host_verification: VerificationPolicy,
                 guests: list[GuestSetup], host_owned: frozenset[str], *,
                 fat_reconnect: FatReconnect | str = FatReconnect.NONE) -> Actors:
    """Create the host kernel, the firmware, the VMM and the guests for one trust model.

    ``fat_reconnect`` (the scenario's top-level ``fat_reconnect``, a ``FatReconnectMode`` or its value)
    matters under the fat model only."""
    firmware: Any = None
    host_policy = HostPolicy(
        attestation_policy=(AttestationPolicy.FIRMWARE if wiring.host_devices is Securer.FIRMWARE
                            else AttestationPolicy.OS_NATIVE),
        verification=host_verification,
        host_owned=host_owned,
        reauth_on_recovery=wiring.host_reauth_on_recovery,
        parallel_boot=True,  # the kernel probes devices asynchronously; the fat firmware still serialises
    )
    host = HostKernel(world, platform, host_policy)
    if wiring.firmware is Firmware.FAT_TSM:
        firmware = FatTsm(world, platform, host, fat_reconnect=FatReconnect(str(fat_reconnect)))
    elif wiring.firmware is Firmware.KEY_SLOT_SERVICE:
        firmware = KeySlotService(world, platform)
    if wiring.host_devices is Securer.HOST:
        if firmware is not None:
            host.platform_handler = KeySlotRequestHandler(platform, KeySlotClient.direct(firmware, host.path),
                                                          host.enable_stream, host.disable_stream)
        else:
            host.platform_handler = DirectKeySlotHandler(host, HOST_PRINCIPAL)
    vmm = Vmm(world, host, firmware)
    live = {g.name: Guest(world, g.name, g.policy, vmm, firmware,
                          wiring.model if wiring.guest_devices is Securer.GUEST else TrustModel.FAT)
            for g in guests} if wiring.guest_devices is not None else {}
    return Actors(wiring, host, firmware, vmm, live)
