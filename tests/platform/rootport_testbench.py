"""Shared builders for the Root Port / link / engine tests: a World with one Root Port, its link
and a real ``sim.devices`` endpoint, and a helper that keys one selective IDE stream on both ends
the way IDE_KM would (RP Tx key = device Rx key and vice versa, PROTOCOLS.md §6.2)."""

from __future__ import annotations

import dataclasses

from sim.crypto.secrets import SecretClass, SecretRecord
from sim.devices.config_space import Command, find_ext_capability
from sim.devices.endpoint import Endpoint
from sim.engine.trace import MemorySink
from sim.engine.world import World
from sim.rootport.link import Link, LinkPort, plug_in
from sim.rootport.root_port import RootPort
from sim.wire.ide_km import Direction, KeySet, SubStream

IDE_CAP_ID = 0x30
IDE_CTL_ENABLE = 1
IFV = (1).to_bytes(8, "big")  # spdm-emu's IFV (PROTOCOLS.md §6.3)


@dataclasses.dataclass
class Platform:
    world: World
    rp: RootPort
    link: Link
    ep: Endpoint
    port: LinkPort
    sink: MemorySink

    @property
    def ep_path(self) -> str:
        return self.link.endpoint_path


def build(seed: int = 1, *, streams: int = 4, key_principals: set[str] | None = None) -> Platform:
    world = World(seed)
    sink = MemorySink()
    world.trace.subscribe(sink)
    rp = RootPort(world, "rp0", streams=streams, key_principals=key_principals)
    rp.cfg_write(0x18, 0x00_01_01_00, by="host")  # primary 0, secondary 1, subordinate 1
    link = Link(world, rp)
    ep = Endpoint("dev0", bus=1)
    ep.attach_world(world, "rp0.dev0")
    port = plug_in(link, "rp0.dev0", ep)
    link.cfg_write(0, 0x04, int(Command.MEMORY_SPACE | Command.BUS_MASTER), by="host")
    return Platform(world, rp, link, ep, port, sink)


@dataclasses.dataclass
class StreamKeys:
    downstream: dict[SubStream, bytes]  # RP Tx = device Rx
    upstream: dict[SubStream, bytes]    # device Tx = RP Rx


def key_stream(p: Platform, *, stream_id: int = 5, block: int = 0, principal: str = "firmware.tsm",
               enable: bool = True) -> StreamKeys:
    """Generate six keys from the principal's seeded stream, register them as secrets, program and
    GO them on both ends, then set Enable + Stream ID on both ends' selective block."""
    rng = p.world.rng(principal)
    keys = StreamKeys({s: rng.bytes(32) for s in SubStream}, {s: rng.bytes(32) for s in SubStream})
    for sub in SubStream:
        for label, key in ((f"down {sub.name}", keys.downstream[sub]), (f"up {sub.name}", keys.upstream[sub])):
            p.world.exposure.register(SecretRecord(f"ide {stream_id} {label}", SecretClass.IDE_KEY, principal, key))
        rp_tx, rp_rx = keys.downstream[sub], keys.upstream[sub]
        kp = p.rp.key_port
        assert kp.program(principal, block, KeySet.K0, Direction.TX, sub, rp_tx, IFV) == 0
        assert kp.program(principal, block, KeySet.K0, Direction.RX, sub, rp_rx, IFV) == 0
        assert p.ep.ide.program(0, stream_id, KeySet.K0, Direction.RX, sub, rp_tx, IFV) == 0
        assert p.ep.ide.program(0, stream_id, KeySet.K0, Direction.TX, sub, rp_rx, IFV) == 0
    for sub in SubStream:
        for direction in (Direction.RX, Direction.TX):
            assert p.ep.ide.set_go(0, stream_id, KeySet.K0, direction, sub)
            assert p.rp.key_port.set_go(principal, block, KeySet.K0, direction, sub) == 0
    if enable:
        enable_stream(p, stream_id=stream_id, block=block)
    return keys


def enable_stream(p: Platform, *, stream_id: int, block: int = 0) -> None:
    rp_ctl = rp_sel_block(p, block) + 4
    p.rp.cfg_write(rp_ctl, stream_id << 24 | IDE_CTL_ENABLE, by="host")
    ep_cap = find_ext_capability(lambda o: p.link.cfg_read(0, o, by="host"), IDE_CAP_ID)
    assert ep_cap is not None
    p.link.cfg_write(0, ep_cap + 0x10, stream_id << 24 | IDE_CTL_ENABLE, by="host")


def rp_sel_block(p: Platform, block: int) -> int:
    """Config offset of a Root Port selective stream block, computed from registers as a driver would
    (PROTOCOLS.md §7.1: 0x0C + 8 * link blocks, then 20 + 12 * nAssoc bytes per selective block)."""
    cap = find_ext_capability(p.rp.config.read_dw, IDE_CAP_ID)
    assert cap is not None
    ide_cap = p.rp.config.read_dw(cap + 4)
    n_link = ((ide_cap >> 13) & 0x7) + 1 if ide_cap & 1 else 0
    off = cap + 0x0C + 8 * n_link
    for _ in range(block):
        off += 20 + 12 * (p.rp.config.read_dw(off) & 0xF)
    return off
