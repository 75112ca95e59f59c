"""What a scenario file becomes before a run: the platform spec for a trust model, and the policies
(trusted roots, reference measurements, expected report fields) of the host and of each guest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sim.crypto.identity import load_certificates
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.profile import make_profile
from sim.protocols.tdisp import BarRange
from sim.scenario import schema as S
from sim.scenario.platform import (
    DeviceSpec,
    MmioRangeSpec,
    Platform,
    PlatformSpec,
    ReportSpec,
    RootPortSpec,
    TdiSpec,
)
from sim.scenario.trust_models import Wiring, principals
from sim.vmm.guest import GuestPolicy, ReportExpectation
from sim.wire.tdisp import InterfaceInfo, MmioRangeAttributes

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
                             or (MmioRangeSpec(),), report=report_spec(t.report))
                     for t in d.tdis) or (TdiSpec(),)
        files = d.identity.cert_chain is not None
        devices.append(DeviceSpec(
            id=d.id, port=d.port, profile=str(d.profile), firmware_version=d.measurements.firmware,
            ca=d.identity.ca or d.id, tdis=tdis,
            cert_chain=d.identity.cert_chain if files else None, key=d.identity.key if files else None,
            measurement_digests=tuple((i, bytes.fromhex(v)) for i, v in sorted(d.measurements.digests.items()))))
    return PlatformSpec(root_ports=ports, devices=tuple(devices))


_RANGE_ATTRIBUTES = {S.ReportRangeAttribute.MSIX_TABLE: MmioRangeAttributes.MSIX_TABLE,
                     S.ReportRangeAttribute.MSIX_PBA: MmioRangeAttributes.MSIX_PBA,
                     S.ReportRangeAttribute.NON_TEE_MEM: MmioRangeAttributes.IS_NON_TEE_MEM,
                     S.ReportRangeAttribute.MEM_ATTR_UPDATABLE: MmioRangeAttributes.IS_MEM_ATTR_UPDATABLE}
_REPORT_FLAGS = {S.ReportFlag.DMA_WITHOUT_PASID: InterfaceInfo.DMA_WITHOUT_PASID,
                 S.ReportFlag.DMA_WITH_PASID: InterfaceInfo.DMA_WITH_PASID,
                 S.ReportFlag.ATS: InterfaceInfo.ATS_ENABLED, S.ReportFlag.PRS: InterfaceInfo.PRS_ENABLED}


def report_spec(report: S.InterfaceReport | None) -> ReportSpec | None:
    """A TDI's configured report layout, as the platform builder takes it."""
    if report is None:
        return None
    ranges = tuple(BarRange(r.bar, r.offset // PAGE, r.size // PAGE,
                            MmioRangeAttributes(sum(int(_RANGE_ATTRIBUTES[a]) for a in set(r.attributes))), r.range_id)
                   for r in report.mmio)
    return ReportSpec(ranges, InterfaceInfo(sum(int(_REPORT_FLAGS[f]) for f in set(report.flags))),
                      report.msi_x_message_control, report.lnr_control, report.tph_control,
                      bytes.fromhex(report.device_specific_info))


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


# the expected_reports fields that name one interface_info bit each (TDISP §11.3.11)
REPORT_BITS: tuple[tuple[str, InterfaceInfo], ...] = (
    ("no_fw_update", InterfaceInfo.NO_FW_UPDATE), ("dma_without_pasid", InterfaceInfo.DMA_WITHOUT_PASID),
    ("dma_with_pasid", InterfaceInfo.DMA_WITH_PASID), ("ats", InterfaceInfo.ATS_ENABLED),
    ("prs", InterfaceInfo.PRS_ENABLED))


def report_expectation(entries: Iterable[S.ExpectedReport]) -> ReportExpectation:
    """One TDI's report requirement from the expected_reports entries naming it, combined field by field.

    Entries that contradict each other (a bit required true by one and false by another, or two MMIO
    range counts) cannot both hold, so the result records the contradiction in ``conflicts`` and refuses
    every report: a requirement is never dropped in favour of the other."""
    info_set = InterfaceInfo(0)
    info_clear = InterfaceInfo(0)
    ranges: int | None = None
    conflicts: list[str] = []
    for rep in entries:
        for name, flag in REPORT_BITS:
            value = getattr(rep, name)
            if value is None:
                continue
            if flag & (info_clear if value else info_set):
                conflicts.append(f"{name} both true and false")
            if value:
                info_set |= flag
            else:
                info_clear |= flag
        if rep.mmio is not None:
            if ranges is not None and ranges != len(rep.mmio):
                conflicts.append(f"mmio both {ranges} and {len(rep.mmio)} ranges")
            ranges = len(rep.mmio) if ranges is None else ranges
    return ReportExpectation(info_set=info_set, info_clear=info_clear, mmio_ranges=ranges,
                             conflicts=tuple(dict.fromkeys(conflicts)))


def report_expectations(scenario: S.Scenario, guest: S.Guest) -> dict[tuple[str, int], ReportExpectation]:
    """A guest's report requirements per TDI, keyed (device id, function of the named TDI): each entry of
    its expected_reports applies to that TDI only; a TDI no entry names has no requirement here."""
    grouped: dict[tuple[str, int], list[S.ExpectedReport]] = {}
    for rep in guest.policy.expected_reports:
        device = scenario.device(rep.device)
        function = next((t.function for t in device.tdis if t.id == rep.tdi), None)
        if function is None:  # the schema's cross-reference check rejects this before a run
            raise ValueError(f"guest '{guest.id}': device '{rep.device}' has no TDI '{rep.tdi}'")
        grouped.setdefault((rep.device, function), []).append(rep)
    return {key: report_expectation(entries) for key, entries in grouped.items()}


def guest_policy(scenario: S.Scenario, platform: Platform, guest: S.Guest) -> GuestPolicy:
    """A guest's policy: its roots, each device's reference measurements, and each TDI's expected report
    (the guest-wide ``report`` stays the default, no interface-report requirement)."""
    return GuestPolicy(verification_policy(scenario, platform, guest.policy, None),
                       per_device={d: verification_policy(scenario, platform, guest.policy, d) for d in guest.devices},
                       per_tdi=report_expectations(scenario, guest))


def host_policy(scenario: S.Scenario, platform: Platform) -> VerificationPolicy:
    """The host trusts the vendor CAs its devices are built under (its own keyring)."""
    cas = sorted({d.identity.ca for d in scenario.platform.devices if d.identity.ca is not None})
    roots = [c for ca in cas for c in platform.root_certificates(ca)]
    roots += [h.identity.root for h in platform.devices if h.spec.cert_chain is not None]
    return VerificationPolicy(trusted_roots=tuple(roots))


