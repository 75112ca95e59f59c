"""PCI enumeration through config space: capabilities, BARs, IDE stream counts, state save/restore."""

from __future__ import annotations

from sim.devices.config_space import BarKind, CapabilityId, Command, ExtCapabilityId
from sim.engine.timing import Op
from sim.engine.trace import Channel, MemorySink
from sim.engine.world import World
from sim.host.pci import DeviceTable, PciEnumerator
from sim.scenario.platform import DeviceSpec, MmioRangeSpec, PlatformSpec, RootPortSpec, TdiSpec, build_platform


def spec() -> PlatformSpec:
    return PlatformSpec(
        (RootPortSpec("rp0", streams=3), RootPortSpec("rp1", streams=1), RootPortSpec("rp2", streams=2)),
        (DeviceSpec("a", "rp0", selective_streams=2),
         DeviceSpec("b", "rp1", tdis=(TdiSpec(0, (MmioRangeSpec(0, 0x8000),)),
                                      TdiSpec(1, (MmioRangeSpec(0, 0x4000), MmioRangeSpec(2, 0x1000)))))),
    )


def enumerate_platform(world: World, p) -> tuple[DeviceTable, PciEnumerator]:
    world.register("host", object())
    enum = PciEnumerator(world, "host")
    ports = {name: (rp, p.links[name]) for name, rp in p.root_ports.items()}
    proc = world.process(enum.enumerate(ports, lambda path: p.device_at(path).id))
    world.run(until=proc)
    return proc.value, enum


def test_enumeration_finds_every_capability_where_the_models_put_it() -> None:
    world = World(1)
    p = build_platform(world, spec())
    table, _ = enumerate_platform(world, p)
    assert table.ids() == ("a", "b")  # rp2 has nothing below it
    assert set(table.ports) == {"rp0", "rp1", "rp2"}
    for name, port in table.ports.items():
        rp = p.root_ports[name]
        assert port.pcie == rp.pcie.offset and port.dpc == rp.dpc.offset and port.ide == rp.ide.offset
        assert port.pm is not None and port.caps[CapabilityId.POWER_MANAGEMENT] == port.pm
        assert port.ide_selective_streams == rp.stream_block_count
        assert port.requester_id == rp.requester_id
    assert table.ports["rp1"].secondary_bus == 2
    a = table.get("a")
    ep = p.endpoint("a")
    assert a.path == "rp0.a" and a.bus == 1
    assert a.doe == ep.doe_cap.offset and a.ide == ep.ide_cap.offset
    assert a.function0.pcie == ep.functions[0].pcie.offset and a.function0.pm == ep.functions[0].pm.offset
    assert a.ide_selective_streams == 2
    assert a.function0.vendor_id == ep.functions[0].header.vendor_id
    assert a.function0.ext_caps.keys() == {ExtCapabilityId.DOE, ExtCapabilityId.IDE}


def test_bars_are_sized_and_left_as_they_were() -> None:
    world = World(1)
    p = build_platform(world, spec())
    ep = p.endpoint("b")
    before = {(n, i): f.header.bar_address(i) for n, f in ep.functions.items() for i in f.header.bars}
    table, _ = enumerate_platform(world, p)
    b = table.get("b")
    assert [f.function for f in b.functions] == [0, 1]
    assert [f.requester_id for f in b.functions] == [2 << 8, 2 << 8 | 1]
    f1 = b.functions[1]
    assert [(x.index, x.kind, x.size) for x in f1.bars] == [(0, BarKind.MEM64, 0x4000), (2, BarKind.MEM64, 0x1000)]
    assert [(x.index, x.size) for x in b.functions[0].bars] == [(0, 0x8000)]
    after = {(n, i): f.header.bar_address(i) for n, f in ep.functions.items() for i in f.header.bars}
    assert before == after
    assert {(f.function, x.index): x.address for f in b.functions for x in f.bars} == before


def test_every_access_is_a_traced_costed_config_request() -> None:
    world = World(1)
    p = build_platform(world, spec())
    sink = MemorySink()
    world.trace.subscribe(sink)
    _, enum = enumerate_platform(world, p)
    host_cfg = [e for e in sink.on(Channel.CONFIG) if e.source == "host"]
    assert len(host_cfg) == enum.cfg.accesses > 50
    assert world.now == enum.cfg.accesses * world.cost("host", Op.CONFIG_DW_ACCESS)


def test_enable_save_and_restore_across_a_conventional_reset() -> None:
    world = World(1)
    p = build_platform(world, spec())
    table, enum = enumerate_platform(world, p)
    b = table.get("b")
    link = p.link("b")
    ep = p.endpoint("b")

    def run(gen):
        proc = world.process(gen)
        world.run(until=proc)
        return proc.value

    run(enum.enable(link, b))
    for f in ep.functions.values():
        assert f.header.command_bits & (Command.MEMORY_SPACE | Command.BUS_MASTER)
    saved = run(enum.save_state(link, b))
    assert [s.function for s in saved] == [0, 1]
    addresses = {(n, i): f.header.bar_address(i) for n, f in ep.functions.items() for i in f.header.bars}
    ep.hot_reset()
    assert all(f.header.bar_address(i) == 0 for f in ep.functions.values() for i in f.header.bars)
    assert not ep.functions[0].header.command_bits & Command.MEMORY_SPACE
    run(enum.restore_state(link, b))
    assert {(n, i): f.header.bar_address(i) for n, f in ep.functions.items() for i in f.header.bars} == addresses
    for f in ep.functions.values():
        assert f.header.command_bits & (Command.MEMORY_SPACE | Command.BUS_MASTER)


def test_ide_selective_blocks_are_found_from_registers() -> None:
    world = World(1)
    p = build_platform(world, spec())
    table, enum = enumerate_platform(world, p)
    rp = p.root_ports["rp0"]
    port = table.ports["rp0"]
    proc = world.process(enum.cfg.ide_selective_blocks(lambda off: enum.cfg.rp_read(rp, off), port.ide))
    world.run(until=proc)
    blocks = proc.value
    assert [off - rp.ide.offset for off, _ in blocks] == [b.base for b in rp.ide.selective_blocks()]
    assert all(n == 1 for _, n in blocks)


def test_a_port_without_a_device_reads_all_ones_and_is_skipped() -> None:
    world = World(1)
    p = build_platform(world, PlatformSpec((RootPortSpec("rp0"),), ()))
    table, _ = enumerate_platform(world, p)
    assert len(table) == 0 and "rp0" in table.ports
