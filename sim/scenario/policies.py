"""What a scenario file becomes before a run: the platform spec for a trust model, and the policies
(trusted roots, reference measurements, expected report fields) of the host and of each guest."""

from __future__ import annotations

from typing import Any

from sim.crypto.identity import load_certificates
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.profile import make_profile
from sim.scenario import schema as S
from sim.scenario.platform import DeviceSpec, MmioRangeSpec, Platform, PlatformSpec, RootPortSpec, TdiSpec
from sim.scenario.trust_models import Wiring, principals
from sim.vmm.guest import GuestPolicy, ReportExpectation
from sim.wire.tdisp import InterfaceInfo

PAGE = 4096


def platform_spec(scenario: S.Scenario, wiring: Wiring) -> PlatformSpec:
    """The hardware the scenario describes, with the Root Ports accepting only this model's key writers."""
    allowed = principals(wiring)
    ports = tuple(RootPortSpec(name=p.id, streams=p.ide_streams, dpc=p.dpc, key_principals=allowed,
                               link_hop_ns=p.link_latency) for p in scenario.platform.root_ports)
    devices = []
    for d in scenario.platform.devices:
        tdis = tuple(TdiSpec(function=t.function, name=t.id,
                             mmio=tuple(MmioRangeSpec(bar=m.bar, size=m.pages * PAGE) for m in t.mmio)
                             or (MmioRangeSpec(),))
                     for t in d.tdis) or (TdiSpec(),)
        files = d.identity.cert_chain is not None
        devices.append(DeviceSpec(
            id=d.id, port=d.port, profile=str(d.profile), firmware_version=d.measurements.firmware,
            ca=d.identity.ca or d.id, tdis=tdis,
            cert_chain=d.identity.cert_chain if files else None, key=d.identity.key if files else None))
    return PlatformSpec(root_ports=ports, devices=tuple(devices))


def _roots(platform: Platform, trusted: list[S.TrustedRoot]) -> tuple[Any, ...]:
    roots: list[Any] = []
    for t in trusted:
        if t.ca is not None:
            roots += platform.root_certificates(t.ca)
        elif t.file is not None:
            roots += load_certificates(t.file)
    return tuple(roots)


def expected_firmware_digest(scenario: S.Scenario, device: str, version: str) -> bytes:
    """The firmware measurement (index 2) a device of the scenario reports when it runs ``version``."""
    d = scenario.device(device)
    profile = make_profile(str(d.profile), d.id, version)
    blocks = profile.measurements.blocks(0x12, profile.measurement_hash_algo)
    return next(b.measurement.value for b in blocks if b.index == 2)


def verification_policy(scenario: S.Scenario, platform: Platform, policy: S.GuestPolicy,
                        device: str | None) -> VerificationPolicy:
    """A guest's verification policy for one device: its trusted roots and that device's reference
    measurements (the firmware digest derived from the expected version, and explicit digests)."""
    expected: dict[int, bytes] = {}
    ref = policy.expected_measurements.get(device) if device is not None else None
    if ref is not None:
        if ref.firmware is not None:
            expected[2] = expected_firmware_digest(scenario, device, ref.firmware)
        for index, value in ref.digests.items():
            expected[index] = bytes.fromhex(value)
    return VerificationPolicy(trusted_roots=_roots(platform, policy.trusted_roots), expected_measurements=expected,
                              require_signed_measurements=policy.require_signed_measurements)


def guest_policy(scenario: S.Scenario, platform: Platform, guest: S.Guest) -> GuestPolicy:
    info_set = InterfaceInfo(0)
    info_clear = InterfaceInfo(0)
    ranges: int | None = None
    for rep in guest.policy.expected_reports:
        for flag, value in ((InterfaceInfo.NO_FW_UPDATE, rep.no_fw_update),
                            (InterfaceInfo.DMA_WITHOUT_PASID, rep.dma_without_pasid),
                            (InterfaceInfo.DMA_WITH_PASID, rep.dma_with_pasid),
                            (InterfaceInfo.ATS_ENABLED, rep.ats), (InterfaceInfo.PRS_ENABLED, rep.prs)):
            if value is True:
                info_set |= flag
            elif value is False:
                info_clear |= flag
        if rep.mmio is not None:
            ranges = len(rep.mmio)
    return GuestPolicy(verification_policy(scenario, platform, guest.policy, None),
                       ReportExpectation(info_set=info_set, info_clear=info_clear, mmio_ranges=ranges),
                       per_device={d: verification_policy(scenario, platform, guest.policy, d) for d in guest.devices})


def host_policy(scenario: S.Scenario, platform: Platform) -> VerificationPolicy:
    """The host trusts the vendor CAs its devices are built under (its own keyring)."""
    cas = sorted({d.identity.ca for d in scenario.platform.devices if d.identity.ca is not None})
    roots = [c for ca in cas for c in platform.root_certificates(ca)]
    roots += [h.identity.root for h in platform.devices if h.spec.cert_chain is not None]
    return VerificationPolicy(trusted_roots=tuple(roots))


