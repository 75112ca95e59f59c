"""DPC: trigger -> contained (link down, streams Insecure, keys cleared, endpoint reset) -> status
-> software release -> link retrains; plus Secondary Bus Reset and Link Disable."""

from __future__ import annotations

from sim.devices.config_space import IdeStreamState, LnkCtl, LnkSta, find_ext_capability
from sim.engine.timing import LINK_TRAINING_NS
from sim.engine.trace import Channel
from sim.rootport.dpc import DpcCtl, DpcStatus, DpcTriggerReason, ErrorSeverity
from sim.rootport.ide_regs import KeySlotStatus
from sim.rootport.link import LinkReset, LinkState
from sim.wire.ide_km import Direction, KeySet, SubStream
from tests.platform.rootport_testbench import IFV, Platform, build, key_stream

DPC_ID = 0x001D
PCIE_CAP_LNKCTL = 0x10


def _dpc(p: Platform) -> int:
    off = find_ext_capability(lambda o: p.rp.cfg_read(o, by="kernel"), DPC_ID)
    assert off is not None
    return off


def _spy_resets(p: Platform) -> list[LinkReset]:
    resets: list[LinkReset] = []
    original = p.ep.on_link_reset

    def spy(reason: LinkReset) -> None:
        resets.append(reason)
        original(reason)

    p.link._endpoint.reset = spy  # type: ignore[union-attr]
    return resets


def _enable_dpc(p: Platform, dpc: int) -> None:
    # what Linux dpc_probe does: ERR_FATAL trigger + interrupt enable (16-bit write at +6)
    p.rp.cfg_write(dpc + 6, int(DpcCtl.INT_EN) | 1, 2, by="kernel")


def _link_active(p: Platform) -> bool:
    lnksta = p.rp.cfg_read(0x40 + PCIE_CAP_LNKCTL + 2, 2, by="kernel")
    return bool(lnksta & LnkSta.DLL_LINK_ACTIVE)


def test_dpc_capability_registers() -> None:
    p = build()
    dpc = _dpc(p)
    cap = p.rp.cfg_read(dpc + 4, 2, by="kernel")
    assert cap & 0x80  # software triggering supported (PCI_EXP_DPC_CAP_SW_TRIGGER)
    assert not cap & 0x20  # no RP PIO extensions
    assert p.rp.cfg_read(dpc + 6, 2, by="kernel") == 0  # triggering disabled at reset
    assert p.rp.cfg_read(dpc + 8, 2, by="kernel") == 0


def test_err_fatal_contains_and_software_releases() -> None:
    p = build()
    key_stream(p, stream_id=5)
    resets = _spy_resets(p)
    dpc = _dpc(p)
    _enable_dpc(p, dpc)
    assert _link_active(p)
    # the endpoint reports ERR_FATAL: the port contains the link below
    assert p.rp.error_message(ErrorSeverity.FATAL, p.ep.requester_id(0))
    status = p.rp.cfg_read(dpc + 8, 2, by="kernel")
    assert status & DpcStatus.TRIGGER
    assert (status >> 1) & 3 == DpcTriggerReason.ERR_FATAL
    assert status & DpcStatus.INTERRUPT
    assert p.rp.cfg_read(dpc + 0x0A, 2, by="kernel") == p.ep.requester_id(0)  # DPC Error Source ID
    assert p.link.state is LinkState.DOWN and not _link_active(p)
    assert p.rp.stream_state(0) is IdeStreamState.INSECURE
    assert all(not p.rp.stream_keys(b).slots for b in range(p.rp.stream_block_count))
    assert resets == [LinkReset.DPC]
    assert p.ep.ide.slot_count() == 0  # the endpoint got its conventional reset
    # key slots are held while contained
    assert p.rp.key_port.program("firmware.tsm", 0, KeySet.K0, Direction.TX, SubStream.PR, bytes(32), IFV) \
        is KeySlotStatus.PORT_DOWN
    # a second error while contained changes nothing
    assert not p.rp.error_message(ErrorSeverity.FATAL, 0x0100)
    # release: RW1C Trigger Status (+ Interrupt Status), as dpc_reset_link does
    t_release = p.world.now
    p.rp.cfg_write(dpc + 8, int(DpcStatus.TRIGGER | DpcStatus.INTERRUPT), 2, by="kernel")
    assert p.rp.cfg_read(dpc + 8, 2, by="kernel") == 0
    assert p.link.state is LinkState.TRAINING
    p.world.run()
    assert p.link.state is LinkState.UP and _link_active(p)
    assert p.world.now - t_release == LINK_TRAINING_NS
    assert p.rp.stream_state(0) is IdeStreamState.INSECURE  # must be re-keyed
    key_stream(p, stream_id=5, enable=True)
    assert p.rp.stream_state(0) is IdeStreamState.SECURE
    summaries = [e.summary for e in p.sink.on(Channel.LINK)]
    assert any("DPC triggered (ERR_FATAL)" in s for s in summaries)
    assert any("DPC released" in s for s in summaries)


def test_software_trigger_and_nonfatal_policy() -> None:
    p = build()
    dpc = _dpc(p)
    # triggering disabled: a software trigger does nothing
    p.rp.cfg_write(dpc + 6, int(DpcCtl.SW_TRIGGER), 2, by="kernel")
    assert not p.rp.dpc.triggered
    _enable_dpc(p, dpc)  # ERR_FATAL only
    assert not p.rp.error_message(ErrorSeverity.NONFATAL, 0x0100)
    assert p.link.state is LinkState.UP
    p.rp.cfg_write(dpc + 6, int(DpcCtl.SW_TRIGGER | DpcCtl.INT_EN) | 1, 2, by="kernel")
    status = p.rp.cfg_read(dpc + 8, 2, by="kernel")
    assert status & DpcStatus.TRIGGER
    assert (status >> 1) & 3 == DpcTriggerReason.IN_EXTENSION and (status >> 5) & 3 == 1  # SW trigger
    assert p.rp.cfg_read(dpc + 6, 2, by="kernel") & DpcCtl.SW_TRIGGER == 0  # reads as 0
    assert p.link.state is LinkState.DOWN


def test_dpc_fault_and_surprise_down_trigger_dpc() -> None:
    p = build()
    dpc = _dpc(p)
    _enable_dpc(p, dpc)
    p.world.faults.inject("rp0", "dpc-trigger")
    assert p.rp.dpc.triggered and p.rp.dpc.reason is DpcTriggerReason.ERR_FATAL
    p.rp.cfg_write(dpc + 8, int(DpcStatus.TRIGGER), 2, by="kernel")
    p.world.run()
    assert p.link.state is LinkState.UP
    p.world.faults.inject("rp0.link", "link-down")  # a Surprise Down is an uncorrectable error
    assert p.rp.dpc.triggered and p.rp.dpc.reason is DpcTriggerReason.UNCORRECTABLE


def test_secondary_bus_reset_holds_link_down_then_retrains() -> None:
    p = build()
    key_stream(p, stream_id=5)
    resets = _spy_resets(p)
    p.world.faults.inject("rp0", "hot-reset")
    assert resets == [LinkReset.HOT_RESET]
    assert p.link.state is LinkState.DOWN and p.rp.stream_state(0) is IdeStreamState.INSECURE
    assert p.ep.ide.slot_count() == 0
    p.world.run()
    assert p.link.state is LinkState.UP
    assert p.world.now == 2_000_000 + LINK_TRAINING_NS


def test_link_disable_bit() -> None:
    p = build()
    resets = _spy_resets(p)
    lnkctl = 0x40 + PCIE_CAP_LNKCTL
    p.rp.cfg_write(lnkctl, int(LnkCtl.LINK_DISABLE), 2, by="kernel")
    assert p.link.state is LinkState.DOWN and resets == [LinkReset.LINK_DOWN]
    p.rp.cfg_write(lnkctl, 0, 2, by="kernel")
    p.world.run()
    assert p.link.state is LinkState.UP
