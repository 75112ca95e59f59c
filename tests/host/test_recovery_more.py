"""The host kernel's key refresh and FLR, and what a firmware update does to its re-authentication.

Key refresh reuses the session the device was secured with, programs the other key set on both ends
and retires the old one; traffic afterwards is sealed with the new set. FLR goes through the function's
Device Control register, waits 100 ms, restores only that function's config and tells the listeners;
only a function-0 FLR that took the IDE stream makes the host re-secure a device it owns. A device whose
firmware was updated fails re-authentication against a policy that pins the old firmware digest, and
the recovery record names the reason.
"""

from __future__ import annotations

import dataclasses

from sim.devices.endpoint import Function0FlrPolicy
from sim.engine.runner import SimGen
from sim.engine.trace import Channel, MemorySink
from sim.engine.world import World
from sim.firmware.commands import FwCommandId, decode_frame
from sim.firmware.keyslot_service import KEYSLOT_PRINCIPAL
from sim.host.kernel import (
    FLR_WAIT_NS,
    DeviceState,
    DirectKeySlotHandler,
    HostEvent,
    HostEventKind,
    HostKernel,
    HostPolicy,
    RecoveryCause,
)
from sim.protocols.ide_km import StreamKeys
from sim.protocols.spdm.outcome import Ok
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.tsm import SecuredDevice, TsmFailure
from sim.rootport.ide_regs import StreamKeySlots
from sim.scenario.platform import Platform, PlatformSpec, TdiSpec, build_platform
from sim.scenario.schema import TrustModel
from sim.scenario.trust_models import WIRINGS, build_actors, principals
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.tlp import IDE_PREFIX_BYTE, IdePrefix

TWO_FUNCTIONS = (TdiSpec(0), TdiSpec(1))
DMA_ADDRESS = 0x2000
PAYLOAD = bytes(range(0x80, 0xC0))


@dataclasses.dataclass
class Rig:
    world: World
    platform: Platform
    kernel: HostKernel
    sink: MemorySink
    events: list[HostEvent]

    def run(self, gen: SimGen[object]) -> object:
        proc = self.world.process(gen)
        self.world.run(until=proc)
        return proc.value

    def secured(self, device: str = "dev0") -> SecuredDevice:
        result = self.kernel.device(device).last_secure
        assert isinstance(result, Ok) and isinstance(result.value, SecuredDevice), result
        return result.value

    def kinds(self, device: str = "dev0") -> list[HostEventKind]:
        return [e.kind for e in self.events if e.device == device]


def boot(*, tdis: tuple[TdiSpec, ...] = (TdiSpec(),), thin_host: bool = False, seed: int = 3,
         keep_security: bool = False) -> Rig:
    """One host-owned device, keyed by the host through :class:`DirectKeySlotHandler` or, with
    ``thin_host``, through the thin key-slot service exactly as the thin-host trust model wires it."""
    world = World(seed)
    sink = MemorySink()
    world.trace.subscribe(sink)
    wiring = WIRINGS[TrustModel.THIN_HOST]
    spec = PlatformSpec.uniform(1, tdis=tdis, key_principals=principals(wiring) if thin_host else None)
    platform = build_platform(world, spec)
    if keep_security:
        # a device whose function-0 FLR keeps IDE keys and SPDM state (Function0FlrPolicy.KEEP_SECURITY)
        ep = platform.endpoint("dev0")
        ep.function0_flr = Function0FlrPolicy.KEEP_SECURITY
        for _, reg in ep.ide_cap.registers():
            reg.keep_on_flr = True
        platform.dsm("dev0").function0_flr_clears_security = False  # type: ignore[attr-defined]
    events: list[HostEvent] = []
    verification = VerificationPolicy.trusting(platform.identity("dev0"))
    if thin_host:
        kernel = build_actors(world, platform, wiring, verification, [], frozenset({"dev0"})).host
        kernel.listeners.append(events.append)
    else:
        kernel = HostKernel(world, platform, HostPolicy(verification=verification), listeners=[events.append])
        kernel.platform_handler = DirectKeySlotHandler(kernel)
    kernel.start()
    world.run(until=kernel.booted)
    return Rig(world, platform, kernel, sink, events)


def rp_slots(rig: Rig, secured: SecuredDevice) -> StreamKeySlots:
    handler = rig.kernel.platform_handler
    blocks = getattr(handler, "blocks", None)
    block = blocks[("dev0", secured.stream_id)] if blocks is not None else \
        handler.streams[("dev0", secured.stream_id)][1]  # type: ignore[union-attr]
    return rig.platform.root_port("dev0").stream_keys(block)


def dma_intact(rig: Rig, data: bytes, function: int = 0) -> bool:
    ep, rp = rig.platform.endpoint("dev0"), rig.platform.root_port("dev0")
    if not ep.dma_write(function, DMA_ADDRESS, data):
        return False
    rig.world.run(until=rig.world.now + 20_000)
    return rp.host_memory.read(DMA_ADDRESS, len(data)) == data


def ide_key_sets_since(rig: Rig, start: int) -> set[KeySet]:
    """The key sets named by the IDE prefixes of the TLPs that crossed the link since ``start``."""
    out = set()
    for e in rig.sink.events[start:]:
        if e.channel is Channel.TLP and e.data[:1] == bytes([IDE_PREFIX_BYTE]):
            out.add(IdePrefix.decode(e.data[:4]).key_set)
    return out


def assert_switched_to(rig: Rig, secured: SecuredDevice, old: StreamKeys, new_set: KeySet) -> None:
    """Both ends run the new key set with the keys the host generated; the old set is gone or stopped."""
    assert secured.keys.key_set is new_set and old.key_set is not new_set
    ep_stream = rig.platform.endpoint("dev0").ide.stream(secured.stream_id)
    assert ep_stream is not None
    assert {slot[0] for slot in ep_stream.slots} == {new_set}                    # old set erased by STOP
    assert set(ep_stream.tx_current.values()) == {new_set}
    for sub in SubStream:
        for direction in Direction:
            assert ep_stream.slots[(new_set, direction, sub)].key == secured.keys.key_for(direction, sub).key
            assert secured.keys.key_for(direction, sub).key != old.key_for(direction, sub).key
    rp = rp_slots(rig, secured)
    assert rp.live and {slot[0] for slot in rp.live} == {new_set}                 # the old set is stopped
    assert set(rp.tx_selected.values()) == {new_set}
    for sub in SubStream:  # the Root Port sends with the key the device receives with, and back
        assert rp.slots[(new_set, Direction.TX, sub)].key == secured.keys.key_for(Direction.RX, sub).key
        assert rp.slots[(new_set, Direction.RX, sub)].key == secured.keys.key_for(Direction.TX, sub).key


# ------------------------------------------------------------------------------------------------------
# key refresh
# ------------------------------------------------------------------------------------------------------


def test_refresh_reuses_the_session_and_switches_both_ends_to_k1() -> None:
    rig = boot()
    secured = rig.secured()
    old, session = secured.keys, secured.session.session_id
    assert dma_intact(rig, PAYLOAD[:32])
    n = len(rig.sink)
    result = rig.run(rig.kernel.refresh_keys("dev0"))
    assert isinstance(result, Ok) and isinstance(result.value, StreamKeys) and result.value.key_set is KeySet.K1
    assert rig.secured() is secured and secured.session.session_id == session and not secured.session.ended
    assert_switched_to(rig, secured, old, KeySet.K1)
    # the refresh was IDE_KM inside the session: secured DOE objects only, no new SPDM handshake
    doe = [e for e in rig.sink.events[n:] if e.channel is Channel.DOE and e.source == "host"]
    assert doe and all(e.data[2] == 2 for e in doe)   # DOE data object type 2: secured CMA
    assert rig.kinds()[-1] is HostEventKind.KEYS_REFRESHED
    t = len(rig.sink)
    assert dma_intact(rig, PAYLOAD)
    assert ide_key_sets_since(rig, t) == {KeySet.K1}
    assert rig.kernel.device("dev0").stream_secure
    # a second refresh goes back to K0 with fresh keys, K1 retired
    again = rig.run(rig.kernel.refresh_keys("dev0"))
    assert isinstance(again, Ok) and again.value.key_set is KeySet.K0
    assert_switched_to(rig, secured, result.value, KeySet.K0)
    t = len(rig.sink)
    assert dma_intact(rig, PAYLOAD[::-1]) and ide_key_sets_since(rig, t) == {KeySet.K0}


def test_refresh_through_the_thin_key_slot_service() -> None:
    rig = boot(thin_host=True)
    secured = rig.secured()
    old = secured.keys
    n = len(rig.sink)
    assert isinstance(rig.run(rig.kernel.refresh_keys("dev0")), Ok)
    assert_switched_to(rig, secured, old, KeySet.K1)
    rp = rp_slots(rig, secured)
    assert {rp.slots[s].principal for s in rp.live} == {KEYSLOT_PRINCIPAL}
    commands = [decode_frame(e.data).command for e in rig.sink.events[n:]
                if e.channel is Channel.FIRMWARE and e.source == "host"]
    assert commands.count(FwCommandId.PROGRAM_KEY) == 6
    assert commands.count(FwCommandId.SET_GO) == 6 and commands.count(FwCommandId.SET_STOP) == 6
    t = len(rig.sink)
    assert dma_intact(rig, PAYLOAD) and ide_key_sets_since(rig, t) == {KeySet.K1}


def test_refresh_is_refused_without_a_secured_session() -> None:
    rig = boot()
    rig.kernel.device("dev0").secured = False   # as after a failed securing
    result = rig.run(rig.kernel.refresh_keys("dev0"))
    assert isinstance(result, TsmFailure) and result.reason == "not-secured"
    assert rig.kinds()[-1] is HostEventKind.KEY_REFRESH_FAILED
    assert rig.secured().keys.key_set is KeySet.K0


# ------------------------------------------------------------------------------------------------------
# FLR
# ------------------------------------------------------------------------------------------------------


def test_flr_of_function_1_restores_that_function_and_keeps_the_stream_and_session() -> None:
    rig = boot(tdis=TWO_FUNCTIONS)
    secured = rig.secured()
    keys, session = secured.keys, secured.session.session_id
    link = rig.platform.link("dev0")
    before = {fn: [link.cfg_read(fn, off, by="test") for off in (0x04, 0x10)] for fn in (0, 1)}
    n = len(rig.sink)
    t0 = rig.world.now
    rec = rig.run(rig.kernel.flr("dev0", 1))
    assert rec.cause is RecoveryCause.FLR and rec.function == 1 and not rec.failed
    assert rec.resumed_ns is not None and rec.resumed_ns - t0 >= FLR_WAIT_NS
    writes = [e for e in rig.sink.events[n:] if e.channel is Channel.CONFIG and "CfgWr fn1" in e.summary]
    pcie = rig.kernel.device("dev0").entry.functions[1].pcie
    assert pcie is not None
    initiate = [e for e in writes if f"0x{pcie + 8:03x}" in e.summary and int.from_bytes(e.data, "little") & 0x8000]
    assert len(initiate) == 1                                                      # Initiate FLR, once
    assert not any("CfgWr fn0" in e.summary for e in rig.sink.events[n:] if e.channel is Channel.CONFIG)
    assert any(e.summary == "FLR of function 1" for e in rig.sink.events[n:])     # the endpoint saw it
    after = {fn: [link.cfg_read(fn, off, by="test") for off in (0x04, 0x10)] for fn in (0, 1)}
    assert after == before                                                         # BAR and Command restored
    # no re-authentication: SPDM state and IDE keys survive an FLR of another function
    assert rec.reauthenticated is None and rec.insecure_since_ns is None
    assert rig.secured() is secured and secured.keys is keys and secured.session.session_id == session
    assert rig.kernel.device("dev0").state is DeviceState.READY and rig.kernel.device("dev0").stream_secure
    flr = [e for e in rig.events if e.kind is HostEventKind.FLR]
    assert len(flr) == 1 and flr[0].record is rec and flr[0].detail == "function 1"
    assert dma_intact(rig, PAYLOAD, function=1)
    assert isinstance(rig.run(rig.kernel.refresh_keys("dev0")), Ok)                # the session is still good


def test_flr_of_function_0_takes_the_stream_and_the_host_secures_again() -> None:
    rig = boot()
    old = rig.secured()
    rec = rig.run(rig.kernel.flr("dev0", 0))
    assert rec.function == 0 and not rec.failed
    assert rec.reauthenticated is True and rec.rekeyed is True and rec.reauth_failure == ""
    assert rec.insecure_since_ns == rec.started_ns
    window = rec.insecure_window_ns()
    assert window is not None and FLR_WAIT_NS <= window <= rec.latency_ns
    new = rig.secured()
    assert new is not old and new.session.session_id != old.session.session_id
    assert new.keys.key_for(Direction.TX, SubStream.PR).key != old.keys.key_for(Direction.TX, SubStream.PR).key
    assert rig.kinds()[-2:] == [HostEventKind.SECURED, HostEventKind.FLR]
    rp = rig.platform.root_port("dev0")
    assert [rp.block_owner(i) for i in range(rp.stream_block_count)].count("host") == 1
    assert dma_intact(rig, PAYLOAD)


def test_flr_of_function_0_on_a_device_that_keeps_its_security() -> None:
    rig = boot(keep_security=True)
    old = rig.secured()
    rec = rig.run(rig.kernel.flr("dev0", 0))
    assert not rec.failed and rec.reauthenticated is None and rec.insecure_since_ns is None
    assert rig.secured() is old and rig.kernel.device("dev0").stream_secure
    assert isinstance(rig.run(rig.kernel.refresh_keys("dev0")), Ok)
    assert dma_intact(rig, PAYLOAD)


def test_flr_of_a_function_that_does_not_exist_is_refused() -> None:
    rig = boot()
    n = len(rig.sink)
    rec = rig.run(rig.kernel.flr("dev0", 3))
    assert rec.failed and rec.resumed_ns is None
    assert not any(e.kind is HostEventKind.FLR for e in rig.events)
    assert not any(e.channel is Channel.CONFIG and "CfgWr" in e.summary for e in rig.sink.events[n:])


def test_flr_is_told_to_the_vmm_as_a_reset_notice() -> None:
    from sim.vmm.vmm import FLR_NOTICE, Vmm

    rig = boot(tdis=TWO_FUNCTIONS)

    class Listener:
        name = "g"

        def __init__(self) -> None:
            self.heard: list[tuple[str, str]] = []

        def on_reset_notice(self, device: str, reason: str) -> None:
            self.heard.append((device, reason))

    vmm = Vmm(rig.world, rig.kernel, None)
    g = Listener()
    vmm.attach_guest(g)
    vmm.assign("dev0", "g")
    rig.run(rig.kernel.flr("dev0", 1))
    assert g.heard == [("dev0", FLR_NOTICE)] and [n.reason for n in vmm.notices] == [FLR_NOTICE]


# ------------------------------------------------------------------------------------------------------
# firmware update
# ------------------------------------------------------------------------------------------------------


def pin_current_firmware(rig: Rig) -> None:
    """The host's policy pins the firmware digest (measurement index 2) the device reports now."""
    measurements = rig.secured().attestation.measurements
    digest = next(bytes(b.value) for b in measurements if b.index == 2)
    policy = rig.kernel.policy
    rig.kernel.policy = dataclasses.replace(
        policy, verification=policy.verification.replace(expected_measurements={2: digest}))


def test_firmware_update_fails_reauthentication_after_dpc_with_measurement_mismatch() -> None:
    for update in (False, True):
        rig = boot()
        pin_current_firmware(rig)
        if update:
            rig.platform.device("dev0").responder.update_firmware("2.0.0")
        rig.world.faults.inject("rp0", "dpc-trigger")
        rig.world.run(until=rig.world.now + 1)
        rig.world.run(until=rig.kernel.wait_ready("dev0"))
        rec = rig.kernel.device("dev0").recovery
        assert rec is not None and rec.cause is RecoveryCause.DPC
        if not update:
            assert rec.reauthenticated and rec.reauth_failure == ""
            continue
        assert rec.reauthenticated is False and rec.rekeyed is False
        assert rec.reauth_failure == "measurement-mismatch"
        failed = [e for e in rig.events if e.kind is HostEventKind.SECURE_FAILED]
        assert failed and "measurement-mismatch" in failed[-1].detail
        dev = rig.kernel.device("dev0")
        assert not dev.secured and not dev.stream_secure
        assert isinstance(rig.run(rig.kernel.refresh_keys("dev0")), TsmFailure)


def test_firmware_update_detected_by_reauthentication_after_a_function_0_flr() -> None:
    rig = boot()
    pin_current_firmware(rig)
    rig.platform.device("dev0").responder.update_firmware("2.0.1")
    rec = rig.run(rig.kernel.flr("dev0", 0))
    assert rec.reauthenticated is False and rec.reauth_failure == "measurement-mismatch"
