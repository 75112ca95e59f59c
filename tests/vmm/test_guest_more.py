"""Guests after key refresh, FLR, Secondary Bus Reset and a device firmware update.

Thin guests refresh their own stream's keys through their relay and key path; after an FLR they STOP
and re-LOCK/START the TDI in the surviving session (function other than 0) or secure the device again
(function 0 took SPDM and IDE). Fat guests ask the VMM to re-bind (TDI_UNBIND + TDI_BIND) and re-accept,
or wait for the host's reconnect when the firmware's session is gone. A re-attestation after a firmware
update fails against a policy pinning the old digest, with the reason recorded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sim.engine.runner import SimGen
from sim.engine.trace import Channel, MemorySink
from sim.engine.world import World
from sim.firmware.commands import FwStatus
from sim.firmware.fat_tsm import FatTsm
from sim.firmware.keyslot_service import KeySlotService
from sim.host.kernel import AttestationPolicy, HostKernel, HostPolicy
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.tsm import SecuredDevice
from sim.scenario.platform import PlatformSpec, TdiSpec, build_platform
from sim.vmm.guest import Guest, GuestPolicy
from sim.vmm.vmm import FLR_NOTICE, Vmm
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.tdisp import InterfaceId, TdiState
from sim.wire.tlp import IDE_PREFIX_BYTE, IdePrefix
from tests.firmware.fw_bench import PRINCIPALS, Bench

PAYLOAD = bytes(range(0x20, 0x60))
SETTLE_NS = 2_500_000_000
THIN = ["thin-guest", "thin-vmm"]


def build(model: str, *, functions: int = 1, fat_reconnect: str = "none", seed: int = 9,
          recover_on_reset: bool = True) -> Bench:
    """One device (with ``functions`` functions, one TDI each) assigned to one guest, wired for ``model``."""
    world = World(seed)
    sink = MemorySink()
    world.trace.subscribe(sink)
    tdis = tuple(TdiSpec(fn) for fn in range(functions))
    platform = build_platform(world, PlatformSpec.uniform(1, tdis=tdis,
                                                          key_principals=frozenset({PRINCIPALS[model]})))
    firmware: Any
    if model == "fat":
        host = HostKernel(world, platform, HostPolicy(attestation_policy=AttestationPolicy.FIRMWARE))
        firmware = FatTsm(world, platform, host, fat_reconnect=fat_reconnect)
    else:
        host = HostKernel(world, platform, HostPolicy(host_owned=frozenset()))
        firmware = KeySlotService(world, platform) if model == "thin-guest" else None
    vmm = Vmm(world, host, firmware)
    policy = GuestPolicy(VerificationPolicy.trusting(platform.identity("dev0")))
    guest = Guest(world, "guest0", policy, vmm, firmware, model, recover_on_reset=recover_on_reset)
    vmm.assign("dev0", guest.name)
    host.start()
    return Bench(world, platform, host, firmware, vmm, guest, sink)


def accept(b: Bench, function: int = 0) -> SimGen[bool]:
    """Bring the TDI of ``function`` to RUN under the bench's model."""
    if isinstance(b.firmware, FatTsm):
        connected = yield from b.firmware.connect("dev0")
        assert connected.status is FwStatus.SUCCESS
        bound = yield from b.vmm.bind_tdi("dev0", function)
        assert bound.status is FwStatus.SUCCESS, bound
    ok = yield from b.guest.secure("dev0", function)
    assert ok, b.guest.tdi("dev0", function).failure
    return True


def owned(b: Bench) -> SecuredDevice:
    secured = b.guest.secured_device("dev0")
    assert secured is not None
    return secured


def tdi_state(b: Bench, function: int = 0) -> TdiState:
    iface = InterfaceId(b.platform.endpoint("dev0").requester_id(function))
    return b.platform.dsm("dev0").tdi_state(iface)  # type: ignore[attr-defined,no-any-return]


def key_sets_on_link(b: Bench, start: int) -> set[KeySet]:
    return {IdePrefix.decode(e.data[:4]).key_set for e in b.sink.events[start:]
            if e.channel is Channel.TLP and e.data[:1] == bytes([IDE_PREFIX_BYTE])}


def pinned_policy(b: Bench) -> GuestPolicy:
    """The guest's policy with the device's current firmware digest (measurement index 2) pinned."""
    profile = b.platform.device("dev0").responder.profile
    blocks = profile.measurements.blocks(0x12, profile.measurement_hash_algo)
    digest = next(bytes(x.measurement.value) for x in blocks if x.index == 2)
    return dataclasses.replace(b.guest.policy,
                               verification=b.guest.policy.verification.replace(expected_measurements={2: digest}))


# ------------------------------------------------------------------------------------------------------
# key refresh
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", THIN)
def test_thin_guest_refreshes_its_keys_in_its_own_session(model: str) -> None:
    b = build(model)
    marks: dict[str, Any] = {}

    def flow() -> SimGen[tuple[bool, bool]]:
        yield from accept(b)
        marks["old"], marks["session"] = owned(b).keys, owned(b).session.session_id
        marks["n"] = len(b.sink)
        refreshed = yield from b.guest.refresh_keys("dev0")
        marks["t"] = len(b.sink)
        dma = yield from b.guest.device_dma("dev0", 0x7000, PAYLOAD)
        return refreshed, dma

    refreshed, dma = b.run(flow())
    secured = owned(b)
    new, old = secured.keys, marks["old"]
    assert refreshed is True and dma is True
    assert secured.session.session_id == marks["session"] and not secured.session.ended
    assert new.key_set is KeySet.K1 and old.key_set is KeySet.K0
    engine = b.platform.endpoint("dev0").ide.stream(secured.stream_id)
    assert engine is not None and {s[0] for s in engine.slots} == {KeySet.K1}
    rp = b.platform.root_ports["rp0"]
    block = next(i for i in range(rp.stream_block_count) if rp.block_owner(i) == "guest0")
    slots = rp.stream_keys(block)
    assert {s[0] for s in slots.live} == {KeySet.K1}
    assert {slots.slots[s].principal for s in slots.live} == {PRINCIPALS[model]}
    for sub in SubStream:
        assert slots.slots[(KeySet.K1, Direction.RX, sub)].key == new.key_for(Direction.TX, sub).key
        assert new.key_for(Direction.TX, sub).key != old.key_for(Direction.TX, sub).key
    assert key_sets_on_link(b, marks["t"]) == {KeySet.K1}
    assert tdi_state(b) is TdiState.RUN and b.guest.tdi("dev0").state is TdiState.RUN
    assert any("keys refreshed" in what for _, _note, what in b.guest.tdi("dev0").history)
    # how the new keys travelled: sealed past the VMM (thin-guest), or handed to it (thin-vmm)
    window = b.sink.events[marks["n"]:marks["t"]]
    to_vmm = [e.data for e in window if e.destination == "vmm" or e.source == "vmm"]
    seen_by_vmm = {k.key for k in new.keys if any(k.key in data for data in to_vmm)}
    assert seen_by_vmm == (set() if model == "thin-guest" else {k.key for k in new.keys})


def test_refresh_keys_needs_a_session_the_guest_owns() -> None:
    thin = build("thin-guest")
    assert thin.run(thin.guest.refresh_keys("dev0")) is False         # never secured
    fat = build("fat")

    def flow() -> SimGen[bool]:
        yield from accept(fat)
        return (yield from fat.guest.refresh_keys("dev0"))

    assert fat.run(flow()) is False                                     # the fat guest holds no IDE keys


# ------------------------------------------------------------------------------------------------------
# FLR, thin
# ------------------------------------------------------------------------------------------------------


def flr_after_accept(b: Bench, function: int, reset: int | None = None) -> dict[str, Any]:
    """Accept the TDI of ``function``, then FLR function ``reset`` (default: the same) and wait."""
    marks: dict[str, Any] = {}

    def flow() -> SimGen[None]:
        yield from accept(b, function)
        if not isinstance(b.firmware, FatTsm):
            marks["session"], marks["keys"] = owned(b).session.session_id, owned(b).keys
        marks["n"] = len(b.sink)
        marks["record"] = yield from b.host.flr("dev0", function if reset is None else reset)
        yield b.world.timeout(SETTLE_NS)
        marks["dma"] = yield from b.guest.device_dma("dev0", 0x6000, PAYLOAD, function=function)

    b.run(flow())
    return marks


@pytest.mark.parametrize("model", THIN)
def test_thin_flr_of_function_1_stops_and_restarts_in_the_same_session(model: str) -> None:
    b = build(model, functions=2)
    marks = flr_after_accept(b, 1)
    rec = b.guest.tdi("dev0", 1)
    assert rec.state is TdiState.RUN and tdi_state(b, 1) is TdiState.RUN and marks["dma"] is True
    [outage] = rec.outages
    assert outage.how == f"VMM notice: {FLR_NOTICE}; state ERROR" and outage.back_ns is not None
    assert outage.left_ns == marks["record"].resumed_ns                 # when the VMM's notice arrived
    whats = [what for _, _note, what in rec.history]
    assert "STOP: CONFIG_UNLOCKED (same session)" in whats
    assert owned(b).session.session_id == marks["session"] and owned(b).keys is marks["keys"]
    assert [n.reason for n in b.vmm.notices] == [FLR_NOTICE]
    # no new SPDM handshake: every DOE object the guest sent after the FLR was a secured record
    sent = [e for e in b.sink.events[marks["n"]:] if e.channel is Channel.DOE and e.source == "guest0"]
    assert sent and all(e.data[2] == 2 for e in sent)


@pytest.mark.parametrize("model", THIN)
def test_thin_flr_of_function_0_secures_the_device_again(model: str) -> None:
    b = build(model)
    marks = flr_after_accept(b, 0)
    rec = b.guest.tdi("dev0")
    assert rec.state is TdiState.RUN and tdi_state(b) is TdiState.RUN and marks["dma"] is True
    [outage] = rec.outages
    assert "no answer" in outage.how and outage.back_ns is not None
    assert owned(b).session.session_id != marks["session"]
    assert owned(b).keys.key_for(Direction.TX, SubStream.PR).key != \
        marks["keys"].key_for(Direction.TX, SubStream.PR).key
    rp = b.platform.root_ports["rp0"]
    assert [rp.block_owner(i) for i in range(rp.stream_block_count)].count("guest0") == 1


def test_guest_that_does_not_recover_only_records_the_outage() -> None:
    b = build("thin-guest", functions=2, recover_on_reset=False)
    flr_after_accept(b, 1)
    rec = b.guest.tdi("dev0", 1)
    assert rec.state is None and rec.outages and rec.outages[0].back_ns is None
    assert tdi_state(b, 1) is TdiState.ERROR
    assert "STOP: CONFIG_UNLOCKED (same session)" not in [what for _, _note, what in rec.history]


def test_thin_guest_secures_again_after_a_secondary_bus_reset() -> None:
    b = build("thin-guest")

    def flow() -> SimGen[None]:
        yield from accept(b)
        yield from b.host.reset_device("dev0")
        yield b.world.timeout(SETTLE_NS)

    b.run(flow())
    rec = b.guest.tdi("dev0")
    [outage] = rec.outages
    assert outage.how == "VMM notice: recovered" and outage.back_ns is not None
    assert rec.state is TdiState.RUN and tdi_state(b) is TdiState.RUN


# ------------------------------------------------------------------------------------------------------
# FLR, fat
# ------------------------------------------------------------------------------------------------------


def test_fat_flr_of_function_1_rebinds_through_the_vmm_and_reaccepts() -> None:
    b = build("fat", functions=2)
    marks = flr_after_accept(b, 1)
    fw = b.firmware
    assert isinstance(fw, FatTsm)
    rec = b.guest.tdi("dev0", 1)
    assert rec.state is TdiState.RUN and tdi_state(b, 1) is TdiState.RUN and marks["dma"] is True
    assert "re-bound by the TSM: CONFIG_LOCKED" in [what for _, _note, what in rec.history]
    after = [r.command for r in fw.core.records if r.queued_ns >= marks["record"].resumed_ns]
    assert after[:3] == ["GUEST_REQUEST", "TDI_UNBIND", "TDI_BIND"]       # TDI_STATE, then the re-bind
    assert after.count("GUEST_REQUEST") == 3                               # + TDI_INFO, STATE_CHANGE
    assert fw.reconnects == [] and "DEV_CONNECT" not in after


@pytest.mark.parametrize("reconnect", ["none", "host-initiated"])
def test_fat_flr_of_function_0(reconnect: str) -> None:
    b = build("fat", fat_reconnect=reconnect)
    marks = flr_after_accept(b, 0)
    fw = b.firmware
    assert isinstance(fw, FatTsm)
    [record] = fw.reconnects
    assert record.reason == "flr" and record.reset_ns == marks["record"].started_ns
    rec = b.guest.tdi("dev0")
    if reconnect == "none":
        assert record.reconnected_ns is None
        assert rec.state is None and rec.failure_reason == "session-ended"
        assert tdi_state(b) is TdiState.ERROR
    else:
        assert record.ok and record.rebound == [0]
        assert rec.state is TdiState.RUN and tdi_state(b) is TdiState.RUN and marks["dma"] is True
        assert rec.outages[0].back_ns is not None and rec.outages[0].back_ns > (record.reconnected_ns or 0)


# ------------------------------------------------------------------------------------------------------
# firmware update
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [*THIN, "fat"])
def test_firmware_update_fails_the_guest_re_attestation_with_measurement_mismatch(model: str) -> None:
    b = build(model, fat_reconnect="host-initiated")
    b.guest.policy = pinned_policy(b)

    def flow() -> SimGen[None]:
        yield from accept(b)
        b.platform.device("dev0").responder.update_firmware("2.0.0")
        b.world.faults.inject("rp0", "dpc-trigger")
        yield b.world.timeout(SETTLE_NS)

    b.run(flow())
    rec = b.guest.tdi("dev0")
    assert rec.accepted_ns is not None                  # the first acceptance (old firmware) passed
    assert rec.state is not TdiState.RUN and rec.failure_reason == "measurement-mismatch"
    assert "index 2" in rec.failure and tdi_state(b) is not TdiState.RUN
    assert any("not accepted" in what and "index 2" in what for _, _note, what in rec.history)


def test_firmware_update_detected_when_a_function_0_flr_makes_the_guest_secure_again() -> None:
    b = build("thin-guest")
    b.guest.policy = pinned_policy(b)

    def flow() -> SimGen[None]:
        yield from accept(b)
        b.platform.device("dev0").responder.update_firmware("3.1.4")
        yield from b.host.flr("dev0", 0)
        yield b.world.timeout(SETTLE_NS)

    b.run(flow())
    rec = b.guest.tdi("dev0")
    assert rec.state is not TdiState.RUN and rec.failure_reason == "measurement-mismatch"
    rp = b.platform.root_ports["rp0"]
    assert all(rp.block_owner(i) is None for i in range(rp.stream_block_count))   # its stream went back

