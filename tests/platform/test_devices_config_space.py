"""Config space: header, capability lists walked like a kernel driver, BAR sizing, register semantics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.devices.config_space import (
    Bar,
    BarKind,
    CapabilityId,
    Command,
    ConfigAccessError,
    ConfigHeader,
    ConfigSpace,
    DevCtl,
    DoeCapability,
    ExtCapabilityId,
    ExtendedCapability,
    HeaderType,
    IdeCapability,
    IdeCapFlag,
    IdeStreamKind,
    IdeStreamState,
    LnkCtl,
    PcieCapability,
    PcieDeviceType,
    PmcsrBit,
    PowerManagementCapability,
    PowerState,
    Register,
    ResetKind,
    Status,
    byte_enable_mask,
    find_capability,
    find_ext_capability,
    walk_capabilities,
    walk_ext_capabilities,
)
from sim.devices.doe_mailbox import DoeMailbox

BARS = {
    0: Bar(0x1000, BarKind.MEM32),
    1: Bar(0x4000, BarKind.MEM64, prefetchable=True),  # slots 1 and 2
    3: Bar(0x20, BarKind.IO),
    4: Bar(1 << 33, BarKind.MEM64),  # 8 GiB: the sizing pattern spills into the upper DW
}


def make(flr: list[int] | None = None, power: list[tuple[PowerState, PowerState]] | None = None) -> ConfigSpace:
    cs = ConfigSpace(ConfigHeader(vendor_id=0x1DED, device_id=0x7100, class_code=0x120000, revision=3,
                                  bars=BARS, interrupt_pin=1))
    cs.add_capability(PowerManagementCapability(on_power_state=None if power is None
                                                else lambda o, n: power.append((o, n))))
    cs.add_capability(PcieCapability(on_flr=None if flr is None else lambda: flr.append(1)))
    cs.add_ext_capability(DoeCapability(DoeMailbox()))
    cs.add_ext_capability(IdeCapability(flags=IdeCapFlag.SELECTIVE | IdeCapFlag.IDE_KM, link_tcs=2,
                                        selective_assoc=(1, 2)))
    return cs


def linux_bar_size(cs: ConfigSpace, offset: int) -> int:
    """What pci_read_base does: save, write all ones, read, restore, size = ~mask + 1."""
    saved = cs.read_dw(offset)
    cs.write_dw(offset, 0xFFFF_FFFF)
    probe = cs.read_dw(offset)
    cs.write_dw(offset, saved)
    mask = 0xFFFF_FFFC if probe & 1 else 0xFFFF_FFF0
    return (~(probe & mask) + 1) & 0xFFFF_FFFF


def test_header_identity_and_readonly_fields() -> None:
    cs = make()
    assert cs.read_dw(0x00) == 0x7100_1DED
    assert cs.read(0x02, 2) == 0x7100
    assert cs.read_dw(0x08) == 0x1200_0003
    assert cs.read(0x0E, 1) == int(HeaderType.ENDPOINT)
    cs.write_dw(0x00, 0xFFFF_FFFF)
    cs.write_dw(0x08, 0)
    assert cs.read_dw(0x00) == 0x7100_1DED and cs.read_dw(0x08) == 0x1200_0003
    assert cs.read(0x3D, 1) == 1  # interrupt pin RO
    cs.write(0x3C, 0x5A, 1)
    assert cs.read(0x3C, 1) == 0x5A  # interrupt line RW


def test_classic_capability_walk_like_pci_find_capability() -> None:
    cs = make()
    assert cs.read(0x06, 2) & Status.CAP_LIST
    assert walk_capabilities(cs.read_dw) == [(0x40, CapabilityId.POWER_MANAGEMENT), (0x48, CapabilityId.PCI_EXPRESS)]
    assert find_capability(cs.read_dw, CapabilityId.PCI_EXPRESS) == 0x48
    assert find_capability(cs.read_dw, CapabilityId.MSIX) is None
    # header DW of the PCIe cap: ID 0x10, next 0, version 2 endpoint in bits 31:16
    assert cs.read_dw(0x48) == (0x0002 << 16) | 0x10
    assert cs.read(0x41, 1) == 0x48  # PM's next pointer, computed when PCIe was added


def test_extended_capability_walk_and_headers() -> None:
    cs = make()
    caps = walk_ext_capabilities(cs.read_dw)
    assert caps == [(0x100, ExtCapabilityId.DOE, 2), (0x118, ExtCapabilityId.IDE, 1)]
    assert cs.read_dw(0x100) == 0x002E | 2 << 16 | 0x118 << 20
    assert cs.read_dw(0x118) == 0x0030 | 1 << 16  # last: next 0
    assert find_ext_capability(cs.read_dw, ExtCapabilityId.IDE) == 0x118
    assert find_ext_capability(cs.read_dw, ExtCapabilityId.DPC) is None
    cs.write_dw(0x100, 0)  # headers are read-only
    assert walk_ext_capabilities(cs.read_dw) == caps


def test_no_capabilities_means_no_lists() -> None:
    cs = ConfigSpace(ConfigHeader(vendor_id=1, device_id=2, class_code=0))
    assert not cs.read(0x06, 2) & Status.CAP_LIST
    assert find_capability(cs.read_dw, CapabilityId.PCI_EXPRESS) is None
    assert find_ext_capability(cs.read_dw, ExtCapabilityId.DOE) is None
    assert cs.read_dw(0x100) == 0


def test_walks_terminate_on_looping_lists() -> None:
    regs = {0x04: Status.CAP_LIST << 16, 0x34: 0x40, 0x40: 0x4001, 0x100: 0x100 << 20 | 0x2E}
    read = lambda o: int(regs.get(o, 0))  # noqa: E731 - a fake device whose lists point at themselves
    assert find_capability(read, CapabilityId.PCI_EXPRESS) is None
    assert find_ext_capability(read, ExtCapabilityId.IDE) is None
    assert len(walk_ext_capabilities(read)) <= (4096 - 256) // 8


def test_bar_sizing_linux_style() -> None:
    cs = make()
    assert linux_bar_size(cs, 0x10) == 0x1000
    cs.write_dw(0x10, 0xFFFF_FFFF)
    assert cs.read_dw(0x10) == 0xFFFF_F000
    # 64-bit prefetchable: type bits 0b1100 stay, upper DW fully writable for a 16 KiB BAR
    cs.write_dw(0x14, 0xFFFF_FFFF)
    cs.write_dw(0x18, 0xFFFF_FFFF)
    assert cs.read_dw(0x14) == 0xFFFF_C00C and cs.read_dw(0x18) == 0xFFFF_FFFF
    assert linux_bar_size(cs, 0x1C) == 0x20 and cs.read_dw(0x1C) & 1  # I/O BAR
    # an 8 GiB BAR: low DW has no address bits, the upper DW reads ...FFFE
    cs.write_dw(0x20, 0xFFFF_FFFF)
    cs.write_dw(0x24, 0xFFFF_FFFF)
    assert cs.read_dw(0x20) == 0x4 and cs.read_dw(0x24) == 0xFFFF_FFFE
    cs.write_dw(0x28 - 4 * 0, 0xFFFF_FFFF)  # slot 6 does not exist in a type 0 header: 0x28 is CardBus CIS
    assert cs.read_dw(0x28) == 0


def test_bar_programming_and_memory_decode() -> None:
    cs = make()
    cs.write_dw(0x10, 0xFEB0_0000)
    cs.write_dw(0x14, 0x0000_0000)
    cs.write_dw(0x18, 0x0000_0001)  # BAR1 at 0x1_0000_0000
    h = cs.header
    assert h.bar_address(0) == 0xFEB0_0000 and h.bar_address(1) == 0x1_0000_0000
    assert h.decode_memory(0xFEB0_0010) is None  # Memory Space Enable is off
    cs.write(0x04, int(Command.MEMORY_SPACE), 2)
    assert h.decode_memory(0xFEB0_0010) == (0, 0x10)
    assert h.decode_memory(0x1_0000_3FFC, 4) == (1, 0x3FFC)
    assert h.decode_memory(0x1_0000_3FFE, 4) is None  # crosses the end
    assert h.decode_memory(0xFEB0_1000) is None


def test_unaligned_bar_writes_lose_low_bits() -> None:
    cs = make()
    cs.write_dw(0x10, 0x1234_5678)
    assert cs.read_dw(0x10) == 0x1234_5000


def test_command_status_rw_and_rw1c() -> None:
    cs = make()
    cs.write_dw(0x04, 0xFFFF)  # only the implemented command bits stick
    assert cs.read(0x04, 2) == int(Command.IO_SPACE | Command.MEMORY_SPACE | Command.BUS_MASTER
                                   | Command.PARITY_ERROR_RESPONSE | Command.SERR | Command.INTX_DISABLE)
    cs.header.command.set_bits((Status.REC_MASTER_ABORT | Status.DETECTED_PARITY) << 16)  # hardware sets errors
    status = cs.read(0x06, 2)
    assert status & Status.REC_MASTER_ABORT and status & Status.CAP_LIST
    cs.write(0x06, 0, 2)  # writing 0 changes nothing
    assert cs.read(0x06, 2) == status
    cs.write(0x06, int(Status.REC_MASTER_ABORT | Status.CAP_LIST), 2)  # RW1C clears; CAP_LIST is RO
    assert cs.read(0x06, 2) == int(Status.DETECTED_PARITY | Status.CAP_LIST)
    cs.write(0x04, 0, 2)  # a 16-bit command write leaves status alone
    assert cs.read(0x06, 2) == int(Status.DETECTED_PARITY | Status.CAP_LIST)
    assert cs.command == Command(0)


def test_byte_enables() -> None:
    cs = make()
    assert byte_enable_mask(0b0101) == 0x00FF_00FF
    cs.write_dw(0x04, 0xFFFF_0006, byte_enable=0b0001)
    assert cs.command == Command.MEMORY_SPACE | Command.BUS_MASTER
    cs.write_dw(0x04, 0x0000_0000, byte_enable=0b0000)
    assert cs.command == Command.MEMORY_SPACE | Command.BUS_MASTER
    cs.write(0x05, 0x04, 1)  # byte 1 of the command register: INTx Disable
    assert cs.command & Command.INTX_DISABLE and cs.command & Command.MEMORY_SPACE


@pytest.mark.parametrize("offset,size", [(0x1001, 1), (0x1000, 4), (0x02, 4), (0x03, 2), (-4, 4), (0, 3)])
def test_bad_accesses_raise_config_access_error(offset: int, size: int) -> None:
    with pytest.raises(ConfigAccessError):
        make().read(offset, size)


def test_pcie_capability_flr_pulse_and_link_status() -> None:
    flr: list[int] = []
    cs = make(flr=flr)
    pos = find_capability(cs.read_dw, CapabilityId.PCI_EXPRESS)
    assert pos is not None
    assert cs.read_dw(pos + 4) & (1 << 28)  # Device Capabilities: FLR capable
    devctl = cs.read(pos + 8, 2)
    cs.write(pos + 8, devctl | DevCtl.INITIATE_FLR, 2)
    assert flr == [1]
    assert cs.read(pos + 8, 2) == devctl  # Initiate FLR reads 0, the rest unchanged
    pcie = cs.get(PcieCapability)
    pcie.set_link(up=True, speed=4, width=16)
    lnksta = cs.read(pos + 0x12, 2)
    assert lnksta & 0x2000 and lnksta & 0xF == 4 and (lnksta >> 4) & 0x3F == 16
    pcie.set_link(up=False)
    assert cs.read(pos + 0x12, 2) == 0
    assert (cs.read_dw(pos) >> 20) & 0xF == PcieDeviceType.ENDPOINT


def test_link_control_hook_for_retrain_and_disable() -> None:
    seen: list[int] = []
    cs = ConfigSpace(ConfigHeader(vendor_id=1, device_id=2, class_code=0x060400, header_type=HeaderType.BRIDGE))
    cs.add_capability(PcieCapability(device_type=PcieDeviceType.ROOT_PORT,
                                     on_link_control=lambda w: seen.append(w.pulses | (w.new & 0xFFFF))))
    pos = find_capability(cs.read_dw, CapabilityId.PCI_EXPRESS)
    assert pos is not None
    cs.write(pos + 0x10, int(LnkCtl.RETRAIN_LINK), 2)
    cs.write(pos + 0x10, int(LnkCtl.LINK_DISABLE), 2)
    assert seen == [int(LnkCtl.RETRAIN_LINK), int(LnkCtl.LINK_DISABLE)]
    assert cs.read(pos + 0x10, 2) == int(LnkCtl.LINK_DISABLE)  # retrain reads 0
    # type 1 header: two BAR slots, bus numbers, Secondary Bus Reset in Bridge Control
    cs.write_dw(0x18, 0x00_05_04_00)
    assert cs.read_dw(0x18) == 0x00_05_04_00
    cs.write(0x3E, 0x40, 2)
    assert cs.read(0x3E, 2) == 0x40


def test_power_management_d3hot_and_unsupported_states() -> None:
    power: list[tuple[PowerState, PowerState]] = []
    cs = make(power=power)
    pm = find_capability(cs.read_dw, CapabilityId.POWER_MANAGEMENT)
    assert pm is not None
    assert cs.read(pm + 4, 2) & PmcsrBit.NO_SOFT_RESET
    cs.write(pm + 4, int(PowerState.D3HOT), 2)
    assert cs.read(pm + 4, 2) & 3 == PowerState.D3HOT
    cs.write(pm + 4, int(PowerState.D1), 2)  # D1 not supported: ignored
    assert cs.read(pm + 4, 2) & 3 == PowerState.D3HOT
    cs.write(pm + 4, int(PowerState.D0), 2)
    assert power == [(PowerState.D0, PowerState.D3HOT), (PowerState.D3HOT, PowerState.D0)]
    cs.write(pm + 4, 0, 2)  # No_Soft_Reset is RO
    assert cs.read(pm + 4, 2) & PmcsrBit.NO_SOFT_RESET


def test_ide_capability_layout_per_protocols_7_1() -> None:
    cs = make()
    ide = cs.get(IdeCapability)
    base = 0x118
    cap = cs.read_dw(base + 4)
    assert cap & IdeCapFlag.LINK and cap & IdeCapFlag.SELECTIVE and cap & IdeCapFlag.IDE_KM
    assert (cap >> 13) & 7 == 1 and (cap >> 16) & 0xFF == 1  # 2 link TCs, 2 selective streams (minus 1)
    assert [(b.kind, b.base) for b in ide.blocks] == [
        (IdeStreamKind.LINK, 0x0C), (IdeStreamKind.LINK, 0x14),
        (IdeStreamKind.SELECTIVE, 0x1C), (IdeStreamKind.SELECTIVE, 0x1C + 20 + 12)]
    assert ide.size == 0x0C + 2 * 8 + (20 + 12) + (20 + 24)
    sel1 = ide.block(IdeStreamKind.SELECTIVE, 1)
    assert cs.read_dw(base + sel1.base) == 2  # number of address association blocks
    cs.write_dw(base + sel1.control, 0xFFFF_FFFF)
    assert cs.read_dw(base + sel1.control) == 0xFFFF_FFFD  # bit 1 reserved
    assert ide.stream_id(sel1) == 0xFF and ide.enabled(sel1)
    cs.write_dw(base + sel1.status, 0xFFFF_FFFF)  # status is hardware-driven
    assert cs.read_dw(base + sel1.status) == 0
    ide.set_state(sel1, IdeStreamState.SECURE, integrity_fail=True)
    assert cs.read_dw(base + sel1.status) == 0x8000_0002
    cs.write_dw(base + sel1.status, 0x8000_0000)  # integrity-fail bit is RW1C
    assert ide.state(sel1) is IdeStreamState.SECURE and cs.read_dw(base + sel1.status) == 2
    cs.write_dw(base + sel1.base + 0x0C, 0xFFFF_FFFF)
    cs.write_dw(base + sel1.base + 0x10, 0xFFFF_FFFF)
    assert cs.read_dw(base + sel1.base + 0x0C) == 0x00FF_FF00  # RID limit
    assert cs.read_dw(base + sel1.base + 0x10) == 0xFFFF_FF01  # valid, RID base, segment
    dws = ide.register_dws()
    assert len(dws) == (ide.size - 4) // 4 and dws[0] == cap


def test_stream_control_hook_fires_on_change_only() -> None:
    seen: list[tuple[int, int]] = []
    cs = ConfigSpace(ConfigHeader(vendor_id=1, device_id=2, class_code=0))
    ide = IdeCapability(on_stream_control=lambda b, w: seen.append((b.index, w.new)))
    cs.add_ext_capability(ide)
    blk = ide.selective_blocks()[0]
    cs.write_dw(0x100 + blk.control, 0x0300_0001)
    cs.write_dw(0x100 + blk.control, 0x0300_0001)
    assert seen == [(0, 0x0300_0001)]


def test_resets_conventional_and_flr() -> None:
    cs = make()
    pos = find_capability(cs.read_dw, CapabilityId.PCI_EXPRESS)
    assert pos is not None
    cs.write_dw(0x10, 0xFEB0_0000)
    cs.write(0x04, int(Command.MEMORY_SPACE | Command.BUS_MASTER), 2)
    cs.write(pos + 0x10, int(LnkCtl.COMMON_CLOCK), 2)
    cs.reset(ResetKind.FLR)
    assert cs.read_dw(0x10) == 0 and cs.command == Command(0)
    assert cs.read(pos + 0x10, 2) == int(LnkCtl.COMMON_CLOCK)  # link registers survive FLR
    assert cs.read(0x06, 2) & Status.CAP_LIST
    cs.reset(ResetKind.CONVENTIONAL)
    assert cs.read(pos + 0x10, 2) == 0
    assert walk_ext_capabilities(cs.read_dw)[0][0] == 0x100


def test_custom_extended_capability_plugs_in() -> None:
    class Vendor(ExtendedCapability):
        cap_id = 0x000B
        size = 0x0C

        def __init__(self) -> None:
            super().__init__()
            self.define(4, Register("vsec_header", reset=0x0081_0001))
            self.define(8, Register("scratch", rw=0xFFFF))

    cs = make()
    cs.add_ext_capability(Vendor())
    assert walk_ext_capabilities(cs.read_dw)[-1] == (0x118 + cs.get(IdeCapability).size, 0x000B, 1)
    off = find_ext_capability(cs.read_dw, 0x000B)
    assert off is not None
    cs.write_dw(off + 8, 0x1234_5678)
    assert cs.read_dw(off + 8) == 0x5678
    with pytest.raises(ValueError):
        cs.add_ext_capability(cs.get(Vendor))  # already placed


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 0xFFFF_FFFF), st.integers(0, 15)), max_size=30))
def test_random_writes_never_corrupt_identity_or_capability_lists(ops: list[tuple[int, int, int]]) -> None:
    cs = make()
    ident = cs.read_dw(0)
    classic = walk_capabilities(cs.read_dw)
    ext = walk_ext_capabilities(cs.read_dw)
    for dw, value, be in ops:
        cs.write_dw(4 * dw, value, be)
        assert cs.read(0x06, 2) & Status.CAP_LIST
    assert cs.read_dw(0) == ident
    assert walk_capabilities(cs.read_dw) == classic
    assert walk_ext_capabilities(cs.read_dw) == ext
    for offset in (0x10, 0x14, 0x1C, 0x20):
        v = cs.read_dw(offset)
        assert v & 0xF == cs.header.bars[(offset - 0x10) // 4].type_bits
