"""Root Port IDE registers read the way a kernel driver reads them, key slots that config space
cannot reach, and the key-programming path that records who wrote each slot."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.crypto.secrets import SecretClass
from sim.devices.config_space import IdeStreamState
from sim.engine.exposure import Exposure
from sim.engine.trace import Channel
from sim.rootport.ide_regs import KeySlotStatus
from sim.wire.ide_km import Direction, KeySet, SubStream
from tests.platform.rootport_testbench import IFV, build, key_stream, rp_sel_block

KEY = bytes(range(32))


def _walk_ext(read) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    """Extended capability list walked by next pointers only, as Linux pci_find_next_ext_capability."""
    out, pos = [], 0x100
    while pos:
        header = read(pos)
        if header in (0, 0xFFFF_FFFF):
            break
        out.append((pos, header & 0xFFFF, (header >> 16) & 0xF))
        pos = header >> 20 & 0xFFC
    return out


def test_ide_capability_walk_like_a_driver() -> None:
    p = build(streams=3)
    read = lambda off: p.rp.cfg_read(off, by="kernel")  # noqa: E731 - every access is traced
    caps = _walk_ext(read)
    ids = [c[1] for c in caps]
    assert ids == [0x0030, 0x001D]  # IDE, then DPC
    ide = caps[0][0]
    cap = read(ide + 0x04)
    assert cap & 0x2 and not cap & 0x1            # selective streams, no link IDE
    assert cap & 0x40                             # IDE_KM
    assert (cap >> 8) & 0x1F == 0                 # AES-GCM-256, 96-bit MAC
    assert (cap >> 16) & 0xFF == 3 - 1            # number of selective streams minus one
    assert cap >> 24 & 1                          # TEE-limited supported
    # selective blocks start at +0x0C (no link blocks); each is 20 + 12 * nAssoc bytes (§7.1)
    off = ide + 0x0C
    for i in range(3):
        n_assoc = read(off) & 0xF
        assert n_assoc == 1
        ctl, sts = read(off + 4), read(off + 8)
        assert ctl == 0 and sts & 0xF == 0        # disabled, Insecure
        assert off == rp_sel_block(p, i)
        off += 20 + 12 * n_assoc
    assert off == caps[1][0]                      # the DPC capability follows right after the IDE block
    assert len([e for e in p.sink.on(Channel.CONFIG) if e.source == "kernel"]) >= 10


def test_control_register_fields_read_back() -> None:
    p = build()
    ctl = rp_sel_block(p, 1) + 4
    value = 0x7A << 24 | 1 << 23 | 1 << 22 | 0b101 << 19 | 1 << 9  # stream 0x7A, TEE-limited, default, TC 5, CFG
    p.rp.cfg_write(ctl, value, by="host")
    assert p.rp.cfg_read(ctl, by="host") == value
    assert p.rp.ide.stream_id(p.rp.ide.selective_blocks()[1]) == 0x7A
    # enabled but with no keys: the state stays Insecure
    p.rp.cfg_write(ctl, value | 1, by="host")
    assert p.rp.stream_state(1) is IdeStreamState.INSECURE


def test_key_slots_are_not_reachable_from_config_space() -> None:
    p = build(streams=2)
    # write all ones, then a pattern, to every DW of the extended config space
    for pattern in (0xFFFF_FFFF, 0xA5A5_A5A5):
        for off in range(0x100, 0x1000, 4):
            p.rp.cfg_write(off, pattern, by="attacker")
    for block in range(2):
        assert not p.rp.stream_keys(block).slots
        assert p.rp.stream_state(block) is IdeStreamState.INSECURE
        assert p.rp.cfg_read(rp_sel_block(p, block) + 8, by="attacker") & 0xF == 0  # state is read-only
    # and no key byte ever shows up in config space after programming through the key path
    assert p.rp.key_port.program("firmware.tsm", 0, KeySet.K0, Direction.TX, SubStream.PR, KEY, IFV) == 0
    dump = p.rp.config.dump()
    assert KEY not in dump and KEY[::-1] not in dump and KEY[:8] not in dump


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(0, 0x3FF).map(lambda n: n * 4), value=st.integers(0, 0xFFFF_FFFF))
def test_no_config_write_touches_key_slots(offset: int, value: int) -> None:
    p = build(streams=1)
    assert p.rp.key_port.program("firmware.tsm", 0, KeySet.K1, Direction.RX, SubStream.NPR, KEY, IFV) == 0
    before = dict(p.rp.stream_keys(0).slots)
    p.rp.cfg_write(offset, value, by="attacker")
    if p.rp.link_up:  # a config write may take the link down (SBR, Link Disable, DPC): keys then clear
        assert p.rp.stream_keys(0).slots == before
    else:
        assert not p.rp.stream_keys(0).slots


def test_principal_is_recorded_per_slot_and_traced() -> None:
    p = build()
    kp = p.rp.key_port
    assert kp.program("vmm", 2, KeySet.K0, Direction.TX, SubStream.CPL, KEY, IFV) is KeySlotStatus.SUCCESS
    assert kp.program("firmware.tsm", 2, KeySet.K1, Direction.RX, SubStream.PR, KEY[::-1], IFV) == 0
    assert kp.writer(2, KeySet.K0, Direction.TX, SubStream.CPL) == "vmm"
    assert kp.writer(2, KeySet.K1, Direction.RX, SubStream.PR) == "firmware.tsm"
    assert kp.writer(2, KeySet.K0, Direction.RX, SubStream.PR) is None
    assert kp.writers(2) == {(KeySet.K0, Direction.TX, SubStream.CPL): "vmm",
                             (KeySet.K1, Direction.RX, SubStream.PR): "firmware.tsm"}
    events = [e for e in p.sink.on(Channel.KEY_SLOT)]
    assert [e.source for e in events] == ["vmm", "firmware.tsm"]
    assert events[0].destination == "rp0" and events[0].data == KEY + IFV
    assert "program blk2 K0 TX CPL -> SUCCESS" in events[0].summary


def test_key_path_access_control_and_errors() -> None:
    p = build(key_principals={"firmware.tsm"})
    kp = p.rp.key_port
    assert kp.program("vmm", 0, KeySet.K0, Direction.TX, SubStream.PR, KEY, IFV) is KeySlotStatus.NOT_PERMITTED
    assert kp.writer(0, KeySet.K0, Direction.TX, SubStream.PR) is None
    refused = [e for e in p.sink.on(Channel.KEY_SLOT) if e.source == "vmm"]
    assert refused and refused[0].data == b""  # a refused key never reaches the slot
    assert kp.program("firmware.tsm", 9, KeySet.K0, Direction.TX, SubStream.PR, KEY, IFV) is KeySlotStatus.NO_SUCH_STREAM
    assert kp.program("firmware.tsm", 0, KeySet.K0, Direction.TX, SubStream.PR, KEY[:16], IFV) is KeySlotStatus.INVALID_KEY
    assert kp.set_go("firmware.tsm", 0, KeySet.K1, Direction.TX, SubStream.PR) is KeySlotStatus.EMPTY_SLOT


def test_secure_needs_enable_and_all_six_substreams_and_stop_makes_insecure() -> None:
    p = build()
    key_stream(p, stream_id=3, enable=False)
    assert p.rp.stream_state(0) is IdeStreamState.INSECURE  # keys ready, not enabled
    p.rp.cfg_write(rp_sel_block(p, 0) + 4, 3 << 24 | 1, by="host")
    assert p.rp.stream_state(0) is IdeStreamState.SECURE
    assert p.rp.cfg_read(rp_sel_block(p, 0) + 8, by="host") & 0xF == 2  # Secure = 2 in the Status register
    assert p.rp.key_port.stop("firmware.tsm", 0, KeySet.K0, Direction.RX, SubStream.NPR) == 0
    assert p.rp.stream_state(0) is IdeStreamState.INSECURE
    assert p.rp.key_port.set_go("firmware.tsm", 0, KeySet.K0, Direction.RX, SubStream.NPR) == 0
    assert p.rp.stream_state(0) is IdeStreamState.SECURE
    assert p.rp.key_port.clear("firmware.tsm", 0) == 0
    assert p.rp.stream_state(0) is IdeStreamState.INSECURE and not p.rp.stream_keys(0).slots


def test_key_refresh_switches_key_sets_without_losing_traffic() -> None:
    p = build()
    key_stream(p, stream_id=5)
    new = bytes(range(100, 132))
    # program K1 for device Tx PR / RP Rx PR, GO Rx first on the receiver, then Tx on the sender (TF-RMM order)
    assert p.rp.key_port.program("firmware.tsm", 0, KeySet.K1, Direction.RX, SubStream.PR, new, IFV) == 0
    assert p.rp.key_port.set_go("firmware.tsm", 0, KeySet.K1, Direction.RX, SubStream.PR) == 0
    assert p.ep.ide.program(0, 5, KeySet.K1, Direction.TX, SubStream.PR, new, IFV) == 0
    assert p.ep.ide.set_go(0, 5, KeySet.K1, Direction.TX, SubStream.PR)
    payload = b"\x5a" * 32
    assert p.ep.dma_write(0, 0x9000, payload)
    p.world.run()
    assert p.rp.host_memory.read(0x9000, 32) == payload
    assert p.rp.stream_state(0) is IdeStreamState.SECURE


def test_root_port_is_exposed_to_the_keys_it_holds() -> None:
    p = build()
    key_stream(p, stream_id=5, principal="vmm")
    m = p.world.exposure.matrix()
    assert m.get(SecretClass.IDE_KEY, "vmm") is Exposure.GENERATED
    assert m.get(SecretClass.IDE_KEY, "rp0") is Exposure.SAW_PLAINTEXT
    assert m.get(SecretClass.IDE_KEY, "host") is Exposure.NEVER


def test_stream_block_pool() -> None:
    p = build(streams=2)
    assert p.rp.allocate_stream_block("tsm") == 0
    assert p.rp.allocate_stream_block("tsm") == 1
    assert p.rp.allocate_stream_block("tsm") is None
    assert p.rp.block_owner(1) == "tsm"
    p.rp.release_stream_block(0)
    assert p.rp.allocate_stream_block("host") == 0


def test_bad_block_index_raises_for_model_code() -> None:
    p = build(streams=1)
    with pytest.raises(IndexError):
        p.rp.stream_keys(5)
