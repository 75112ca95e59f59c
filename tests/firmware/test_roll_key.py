"""The fat TSM's ROLL_KEY (an IDE key refresh in the connecting session) and what the fat model does
after a conventional reset with and without a host-initiated reconnect: reconnect, re-bind the guest's
TDIs, and let the guest re-accept them. Also the scenario's ``fat_reconnect`` option."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sim.crypto.secrets import SecretClass
from sim.engine.runner import SimGen
from sim.engine.trace import Channel
from sim.firmware.commands import (
    DevConnectRsp,
    DevDisconnect,
    DisconnectFlag,
    FwCommandId,
    FwFrame,
    FwRequestKind,
    FwStatus,
    GuestRequestType,
    RollKey,
    RollKeyRsp,
    decode_frame,
    request,
    response,
)
from sim.firmware.fat_tsm import FatDeviceState, FatReconnect, FatTsm
from sim.protocols.spdm.policy import VerificationPolicy
from sim.scenario.platform import PlatformSpec, build_platform
from sim.scenario.schema import FatReconnectMode, Scenario, TrustModel
from sim.scenario.trust_models import WIRINGS, build_actors
from sim.wire.codec import DecodeError
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.tdisp import InterfaceId, TdiState
from sim.wire.tlp import IDE_PREFIX_BYTE, IdePrefix
from tests.firmware.fw_bench import Bench, build

PAYLOAD = bytes(range(0x10, 0x50))
SETTLE_NS = 2_500_000_000


def fw(b: Bench) -> FatTsm:
    assert isinstance(b.firmware, FatTsm)
    return b.firmware


def connect_bind_accept(b: Bench) -> SimGen[DevConnectRsp]:
    c = yield from fw(b).connect("dev0")
    assert c.status is FwStatus.SUCCESS and isinstance(c.body, DevConnectRsp), c
    bound = yield from b.vmm.bind_tdi("dev0")
    assert bound.status is FwStatus.SUCCESS, bound
    assert (yield from b.guest.accept_fat("dev0"))
    return c.body


def key_sets_on_link(b: Bench, start: int) -> set[KeySet]:
    return {IdePrefix.decode(e.data[:4]).key_set for e in b.sink.events[start:]
            if e.channel is Channel.TLP and e.data[:1] == bytes([IDE_PREFIX_BYTE])}


def tdi_state(b: Bench, function: int = 0) -> TdiState:
    iface = InterfaceId(b.platform.endpoint("dev0").requester_id(function))
    return b.platform.dsm("dev0").tdi_state(iface)  # type: ignore[attr-defined,no-any-return]


# ------------------------------------------------------------------------------------------------------
# the command's bytes
# ------------------------------------------------------------------------------------------------------


def test_roll_key_frames_have_the_documented_layout() -> None:
    req = request(RollKey(7)).encode()
    assert req == bytes.fromhex("0600 0000 04000000 07000000".replace(" ", ""))
    rsp = response(FwCommandId.ROLL_KEY, body=RollKeyRsp(7, 3, KeySet.K1)).encode()
    assert rsp == bytes.fromhex("0680 0000 08000000 07000000 03 01 0000".replace(" ", ""))
    assert decode_frame(rsp).body == RollKeyRsp(7, 3, KeySet.K1)
    bad = bytearray(rsp)
    bad[13] = 2   # not a key set
    with pytest.raises(DecodeError) as info:
        decode_frame(bytes(bad))
    assert info.value.field == "body.key_set" and info.value.offset == 13
    with pytest.raises(DecodeError):
        decode_frame(req[:-1])


# ------------------------------------------------------------------------------------------------------
# ROLL_KEY on a connected device
# ------------------------------------------------------------------------------------------------------


def test_roll_key_refreshes_both_ends_in_the_connecting_session() -> None:
    b = build("fat")
    state: dict[str, Any] = {}

    def flow() -> SimGen[tuple[FwFrame, bool]]:
        connected = yield from connect_bind_accept(b)
        state["connected"] = connected
        state["old"] = fw(b).device("dev0").secured.keys
        state["n"] = len(b.sink)
        answer = yield from fw(b).roll_key("dev0")
        state["t"] = len(b.sink)
        dma = yield from b.guest.device_dma("dev0", 0x9000, PAYLOAD)
        return answer, dma

    answer, dma = b.run(flow())
    connected = state["connected"]
    assert isinstance(connected, DevConnectRsp)
    assert answer.status is FwStatus.SUCCESS and answer.body == RollKeyRsp(connected.dev_handle, connected.stream_id,
                                                                          KeySet.K1)
    dev = fw(b).device("dev0")
    assert dev.secured is not None and dev.secured.session.session_id == connected.session_id
    assert dev.state is FatDeviceState.CONNECTED
    new, old = dev.secured.keys, state["old"]
    assert new.key_set is KeySet.K1 and old.key_set is KeySet.K0
    # the firmware ran it through the host's SPDM_REQUEST / CONTINUE loop, as a DOE command
    frames = [(e, decode_frame(e.data)) for e in b.sink.events[state["n"]:state["t"]]
              if e.channel is Channel.FIRMWARE]
    continues = [f for e, f in frames if f.command is FwCommandId.ROLL_KEY and f.kind is FwRequestKind.CONTINUE]
    assert len(continues) == 6 + 6 + 6   # KEY_PROG x6, GO x6, STOP x6 of the old set
    # the Root Port: slots written by the firmware, only K1 live; the device: only K1 left
    rp = b.platform.root_ports["rp0"]
    assert dev.block is not None
    slots = rp.stream_keys(dev.block)
    assert {s[0] for s in slots.live} == {KeySet.K1} and set(slots.tx_selected.values()) == {KeySet.K1}
    assert {slots.slots[s].principal for s in slots.live} == {"firmware"}
    engine = b.platform.endpoint("dev0").ide.stream(dev.secured.stream_id)
    assert engine is not None and {s[0] for s in engine.slots} == {KeySet.K1}
    for sub in SubStream:
        assert slots.slots[(KeySet.K1, Direction.TX, sub)].key == new.key_for(Direction.RX, sub).key
        assert new.key_for(Direction.RX, sub).key != old.key_for(Direction.RX, sub).key
    # the TDI kept running, and its DMA now travels under K1
    assert tdi_state(b) is TdiState.RUN and b.guest.tdi("dev0").state is TdiState.RUN
    assert dma is True and key_sets_on_link(b, state["t"]) == {KeySet.K1}
    # the new keys never crossed the host in the clear
    new_keys = [k.key for k in new.keys]
    host_bytes = [e.data for e in b.sink.events if e.source == "host" or e.destination == "host"]
    assert not any(key in data for key in new_keys for data in host_bytes)
    registered = {r.value for r in b.world.exposure.records if r.secret_class is SecretClass.IDE_KEY}
    assert set(new_keys) <= registered


def test_roll_key_alternates_and_is_refused_for_unconnected_devices() -> None:
    b = build("fat")

    def flow() -> SimGen[list[FwFrame]]:
        out = [(yield from fw(b).roll_key("dev0"))]            # no handle yet
        yield from connect_bind_accept(b)
        out.append((yield from fw(b).roll_key("dev0")))
        out.append((yield from fw(b).roll_key("dev0")))
        out.append((yield from fw(b).host_call(DevDisconnect(fw(b).handle_of("dev0") or 0, DisconnectFlag.FORCE))))
        out.append((yield from fw(b).roll_key("dev0")))
        out.append((yield from fw(b).host_call(RollKey(99))))
        return out

    missing, first, second, _, disconnected, unknown = b.run(flow())
    assert missing.status is FwStatus.INVALID_DEVICE
    assert isinstance(first.body, RollKeyRsp) and first.body.key_set is KeySet.K1
    assert isinstance(second.body, RollKeyRsp) and second.body.key_set is KeySet.K0
    assert disconnected.status is FwStatus.INVALID_STATE and unknown.status is FwStatus.INVALID_DEVICE


# ------------------------------------------------------------------------------------------------------
# after a conventional reset: "none" vs "host-initiated"
# ------------------------------------------------------------------------------------------------------


def reset_after_accept(reconnect: str, cause: str) -> tuple[Bench, DevConnectRsp]:
    b = build("fat", fat_reconnect=reconnect)
    got: list[DevConnectRsp] = []

    def flow() -> SimGen[None]:
        got.append((yield from connect_bind_accept(b)))
        if cause == "dpc":
            b.world.faults.inject("rp0", "dpc-trigger")
        elif cause == "hot-reset":
            yield from b.host.reset_device("dev0")
        else:
            yield from b.host.enter_d3cold("dev0")
            yield b.world.timeout(50_000_000)
            yield from b.host.exit_d3cold("dev0")
        yield b.world.timeout(SETTLE_NS)

    b.run(flow())
    return b, got[0]


@pytest.mark.parametrize("cause", ["dpc", "hot-reset", "d3cold"])
def test_host_initiated_reconnect_rebinds_and_the_guest_accepts_again(cause: str) -> None:
    b, first = reset_after_accept("host-initiated", cause)
    [rec] = fw(b).reconnects
    assert rec.ok is True and rec.rebound == [0] and rec.rebind_failed == []
    assert rec.reconnected_ns is not None and rec.reconnected_ns > rec.reset_ns
    commands = [r.command for r in fw(b).core.records]
    tail = commands[commands.index("DEV_DISCONNECT"):]
    assert tail[:3] == ["DEV_DISCONNECT", "DEV_CONNECT", "TDI_BIND"]
    assert tail.count("GUEST_REQUEST") >= 2   # TDI_INFO and STATE_CHANGE of the re-accept
    dev = fw(b).device("dev0")
    assert dev.secured is not None and dev.secured.session.session_id != first.session_id
    g = b.guest.tdi("dev0")
    assert g.state is TdiState.RUN and tdi_state(b) is TdiState.RUN
    [outage] = g.outages
    assert outage.back_ns is not None and outage.back_ns > rec.reconnected_ns
    assert [n.reason for n in b.vmm.notices][-1] == "rebound"

    def dma() -> SimGen[bool]:
        return (yield from b.guest.device_dma("dev0", 0xA000, PAYLOAD))

    assert b.run(dma()) is True


def test_without_a_reconnect_the_guest_stays_out_of_run() -> None:
    b, _ = reset_after_accept("none", "hot-reset")
    [rec] = fw(b).reconnects
    assert rec.reconnected_ns is None and rec.reason == "hot-reset" and rec.window_ns(b.world.now) > SETTLE_NS // 2
    assert [r.command for r in fw(b).core.records].count("DEV_CONNECT") == 1
    assert "rebound" not in [n.reason for n in b.vmm.notices]
    assert b.guest.tdi("dev0").state is not TdiState.RUN and tdi_state(b) is TdiState.CONFIG_UNLOCKED


def test_host_initiated_reaccept_fails_when_the_device_firmware_changed() -> None:
    b = build("fat", fat_reconnect="host-initiated")
    handle = b.platform.device("dev0")
    profile = handle.responder.profile
    blocks = profile.measurements.blocks(0x12, profile.measurement_hash_algo)
    pinned = next(bytes(x.measurement.value) for x in blocks if x.index == 2)
    b.guest.policy = type(b.guest.policy)(VerificationPolicy.trusting(handle.identity,
                                                                       expected_measurements={2: pinned}))

    def flow() -> SimGen[None]:
        yield from connect_bind_accept(b)
        handle.responder.update_firmware("2.0.0")
        b.world.faults.inject("rp0", "dpc-trigger")
        yield b.world.timeout(SETTLE_NS)

    b.run(flow())
    [rec] = fw(b).reconnects
    assert rec.ok and rec.rebound == [0]    # the firmware pins no measurement: it reconnects and re-binds
    g = b.guest.tdi("dev0")
    assert g.state is not TdiState.RUN and g.failure_reason == "measurement-mismatch"
    assert "index 2" in g.failure and tdi_state(b) is TdiState.CONFIG_LOCKED  # LOCKED, never STARTed


def test_without_a_reconnect_the_firmware_keeps_a_stale_connection() -> None:
    b, _ = reset_after_accept("none", "dpc")

    def ask(kind: GuestRequestType) -> SimGen[FwFrame]:
        return (yield from b.guest.guest_request("dev0", 0, kind))   # sealed on the guest's channel

    # nobody told the firmware: it still answers TDI_INFO from what it read before the reset, but
    # its session is gone, so anything that needs the device fails
    assert fw(b).device("dev0").state is FatDeviceState.CONNECTED
    assert b.run(ask(GuestRequestType.TDI_INFO)).status is FwStatus.SUCCESS
    assert b.run(ask(GuestRequestType.TDI_STATE)).status is FwStatus.ATTESTATION_FAILED
    assert b.run(ask(GuestRequestType.STATE_CHANGE)).status is not FwStatus.SUCCESS


# ------------------------------------------------------------------------------------------------------
# the scenario option
# ------------------------------------------------------------------------------------------------------


def scenario(**extra: object) -> Scenario:
    return Scenario.model_validate({"name": "t", "seed": 1, "models": ["fat"],
                                    "platform": {"root_ports": [{"id": "rp0"}],
                                                 "devices": [{"id": "dev0", "port": "rp0"}]}, **extra})


def test_scenario_fat_reconnect_option_reaches_the_firmware() -> None:
    assert scenario().fat_reconnect is FatReconnectMode.NONE
    chosen = scenario(fat_reconnect="host-initiated").fat_reconnect
    assert chosen is FatReconnectMode.HOST_INITIATED
    with pytest.raises(ValidationError):
        scenario(fat_reconnect="sometimes")
    for value, want in ((chosen, FatReconnect.HOST_INITIATED), (FatReconnectMode.NONE, FatReconnect.NONE)):
        from sim.engine.world import World

        world = World(1)
        platform = build_platform(world, PlatformSpec.uniform(1))
        actors = build_actors(world, platform, WIRINGS[TrustModel.FAT], VerificationPolicy(), [], frozenset(),
                              fat_reconnect=value)
        assert isinstance(actors.firmware, FatTsm) and actors.firmware.fat_reconnect is want
    exported = json.loads(Path(__file__).parents[2].joinpath("scenarios", "scenario.schema.json").read_text())
    assert exported["properties"]["fat_reconnect"]["default"] == "none"
    assert exported["$defs"]["FatReconnectMode"]["enum"] == ["none", "host-initiated"]
