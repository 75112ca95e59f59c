"""The endpoint: config walks per function, MMIO/DMA TLPs (clear and IDE), FLR, PM, resets, D3cold, TDISP hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sim.devices.config_space import (
    Bar,
    BarKind,
    CapabilityId,
    Command,
    DevCtl,
    DoeRegister,
    DoeStatus,
    ExtCapabilityId,
    IdeStreamState,
    PmcsrBit,
    PowerState,
    find_capability,
    find_ext_capability,
    walk_capabilities,
    walk_ext_capabilities,
)
from sim.devices.endpoint import Endpoint, EndpointEvent, Function0FlrPolicy, FunctionSpec, ResetReason
from sim.devices.ide_engine import SUB_STREAMS
from sim.devices.security_manager import ConfigChange
from sim.wire.ide_km import Direction, KeySet, KpAckStatus, QueryResp, SubStream
from sim.wire.tlp import CompletionHeader, CplStatus, IdePrefix, IdeTlp, MemRequestHeader, Tlp, decode_tlp

from .test_devices_doe_mailbox import GET_VERSION, VERSION_1_2, LinuxDoeDriver, ManualClock, RecordingDsm

HOST_RID = 0x0000
BAR0 = 0xFEB0_0000
STREAM = 5
DEV_RX_KEY = bytes(range(32))  # host -> device
DEV_TX_KEY = bytes(range(100, 132))  # device -> host
IFV = (1).to_bytes(8, "big")


@dataclass
class HostSide:
    """The Root Port end of the link, written independently of the device's IDE engine."""

    received: list[bytes] = field(default_factory=list)
    tee: list[bool] = field(default_factory=list)  # the T bit the endpoint asked the link for, per TLP
    tx_counter: dict[SubStream, int] = field(default_factory=lambda: {s: 1 for s in SubStream})
    rx_counter: dict[SubStream, int] = field(default_factory=lambda: {s: 1 for s in SubStream})

    def send_tlp(self, data: bytes, *, tee: bool = False) -> None:
        self.received.append(data)
        self.tee.append(tee)

    def seal(self, header: MemRequestHeader, data: bytes, sub: SubStream) -> bytes:
        iv = bytes(4) + self.tx_counter[sub].to_bytes(8, "big")
        self.tx_counter[sub] += 1
        enc = Cipher(algorithms.AES(DEV_RX_KEY), modes.GCM(iv)).encryptor()
        enc.authenticate_additional_data(header.encode())
        ct = enc.update(data) + enc.finalize()
        return IdeTlp(IdePrefix(STREAM, sub), header, ct, enc.tag[:12]).encode()

    def open(self, wire: bytes) -> Tlp:
        itlp = IdeTlp.decode(wire)
        sub = SubStream(itlp.prefix.sub_stream)
        iv = bytes(4) + self.rx_counter[sub].to_bytes(8, "big")
        self.rx_counter[sub] += 1
        dec = Cipher(algorithms.AES(DEV_TX_KEY), modes.GCM(iv, itlp.mac or b"", min_tag_length=12)).decryptor()
        dec.authenticate_additional_data(itlp.header_bytes())
        return Tlp(itlp.header, dec.update(itlp.ciphertext) + dec.finalize())


def rd(ep: Endpoint, fn: int = 0) -> Callable[[int], int]:
    """A DW reader for the driver-style capability walks."""
    return lambda off: ep.config_read(fn, off)


def make(n_functions: int = 2, *, policy: Function0FlrPolicy = Function0FlrPolicy.CLEAR_SECURITY,
         specs: list[FunctionSpec] | None = None) -> tuple[Endpoint, RecordingDsm, HostSide, list[EndpointEvent]]:
    dsm = RecordingDsm()
    events: list[EndpointEvent] = []
    ep = Endpoint("dev0", functions=specs or [FunctionSpec() for _ in range(n_functions)], dsm=dsm, bus=1,
                  function0_flr=policy, observer=events.append)
    host = HostSide()
    ep.attach_link(host)
    for fn in ep.functions:
        ep.config_write(fn, 0x10, BAR0 + fn * 0x10_0000)
        ep.config_write(fn, 0x14, 0)
        ep.config_write(fn, 0x04, int(Command.MEMORY_SPACE | Command.BUS_MASTER))
    dsm.calls.clear()
    return ep, dsm, host, events


def key_device(ep: Endpoint, dsm: RecordingDsm) -> None:
    """What IDE_KM KEY_PROG/K_SET_GO would do through the DSM, then software enables the stream."""
    assert dsm.hardware is not None
    slots = dsm.hardware.ide
    for ss in SUB_STREAMS:
        assert slots.program(0, STREAM, KeySet.K0, Direction.RX, ss, DEV_RX_KEY, IFV) is KpAckStatus.SUCCESS
        assert slots.program(0, STREAM, KeySet.K0, Direction.TX, ss, DEV_TX_KEY, IFV) is KpAckStatus.SUCCESS
        assert slots.set_go(0, STREAM, KeySet.K0, Direction.RX, ss)
        assert slots.set_go(0, STREAM, KeySet.K0, Direction.TX, ss)
    ide = find_ext_capability(rd(ep), ExtCapabilityId.IDE)
    assert ide is not None
    blk = ep.ide_cap.selective_blocks()[0]
    ep.config_write(0, ide + blk.control, STREAM << 24 | 1)
    assert dsm.named("config_changed") == [(0, str(ConfigChange.IDE_REGISTERS))]  # software changed IDE registers
    dsm.calls.clear()


def ide_state(ep: Endpoint) -> int:
    ide = find_ext_capability(rd(ep), ExtCapabilityId.IDE)
    assert ide is not None
    return ep.config_read(0, ide + ep.ide_cap.selective_blocks()[0].status) & 0xF


def mmio_write(ep: Endpoint, addr: int, data: bytes, tag: int = 1) -> None:
    ep.receive_tlp(Tlp(MemRequestHeader.write(HOST_RID, tag, addr, len(data) // 4), data).encode())


def mmio_read(ep: Endpoint, host: HostSide, addr: int, length_dw: int = 1, tag: int = 2) -> Tlp:
    ep.receive_tlp(Tlp(MemRequestHeader.read(HOST_RID, tag, addr, length_dw)).encode())
    tlp = decode_tlp(host.received.pop())
    assert isinstance(tlp, Tlp)
    return tlp


# --------------------------------------------------------------------------------------------


def test_function0_carries_doe_and_ide_other_functions_do_not() -> None:
    ep, dsm, _, _ = make(3)
    assert walk_capabilities(rd(ep, 0)) == [(0x40, CapabilityId.POWER_MANAGEMENT), (0x48, CapabilityId.PCI_EXPRESS)]
    assert [c[1] for c in walk_ext_capabilities(rd(ep, 0))] == [ExtCapabilityId.DOE, ExtCapabilityId.IDE]
    for fn in (1, 2):
        assert walk_ext_capabilities(rd(ep, fn)) == []
        assert find_capability(rd(ep, fn), CapabilityId.PCI_EXPRESS) == 0x48
        assert ep.config_read(fn, 0x0C) >> 16 & 0x80  # multi-function bit
    assert ep.config_read(7, 0) == 0xFFFF_FFFF  # no such function
    assert dsm.hardware is not None and dsm.hardware.functions() == (0, 1, 2)


def test_doe_through_endpoint_config_space() -> None:
    ep, dsm, _, _ = make(1)
    cap = find_ext_capability(rd(ep), ExtCapabilityId.DOE)
    assert cap is not None
    drv = LinuxDoeDriver(rd(ep), lambda o, v: ep.config_write(0, o, v), cap)
    resp = ManualClock().run(drv.exchange(1, 1, GET_VERSION))
    assert resp[8:] == VERSION_1_2
    assert dsm.named("doe") == [(1, GET_VERSION)]


def test_mmio_write_read_and_unsupported_request() -> None:
    ep, _, host, _ = make(2)
    mmio_write(ep, BAR0 + 0x40, b"ABCDEFGH")
    cpl = mmio_read(ep, host, BAR0 + 0x40, 2)
    assert isinstance(cpl.header, CompletionHeader) and cpl.header.status is CplStatus.SC
    assert cpl.data == b"ABCDEFGH" and cpl.header.completer_id == ep.requester_id(0) == 0x0100
    # function 1's BAR is a different window with its own memory
    mmio_write(ep, BAR0 + 0x10_0000, b"fn#1")
    assert mmio_read(ep, host, BAR0 + 0x10_0000).data == b"fn#1"
    assert mmio_read(ep, host, BAR0 + 0x44).data == b"EFGH"
    ur = mmio_read(ep, host, 0xDEAD_0000)
    assert isinstance(ur.header, CompletionHeader) and ur.header.status is CplStatus.UR and ur.data == b""


def test_partial_byte_enables_on_mmio_write() -> None:
    ep, _, host, _ = make(1)
    mmio_write(ep, BAR0, b"\x11\x22\x33\x44")
    hdr = MemRequestHeader.write(HOST_RID, 3, BAR0, 1, first_be=0b0110)
    ep.receive_tlp(Tlp(hdr, b"\xaa\xbb\xcc\xdd").encode())
    assert mmio_read(ep, host, BAR0).data == b"\x11\xbb\xcc\x44"


def test_mse_off_means_no_decode_and_dma_needs_bme() -> None:
    ep, _, host, _ = make(1)
    ep.config_write(0, 0x04, 0)
    assert mmio_read(ep, host, BAR0).header.status is CplStatus.UR  # type: ignore[union-attr]
    assert not ep.dma_write(0, 0x1000, b"data")
    ep.config_write(0, 0x04, int(Command.BUS_MASTER))
    assert ep.dma_write(0, 0x1000, b"x" * 300)
    tlps = [decode_tlp(b) for b in host.received]
    assert [t.header.length_dw for t in tlps] == [64, 11]  # split at the 256-byte Max_Payload_Size
    assert tlps[1].header.address == 0x1000 + 256  # type: ignore[union-attr]


def test_dma_read_completion_reaches_callback() -> None:
    ep, _, host, _ = make(1)
    got: list[tuple[CplStatus, bytes]] = []
    assert ep.dma_read(0, 0x2000, 8, lambda s, d: got.append((s, d)))
    req = decode_tlp(host.received.pop())
    assert isinstance(req.header, MemRequestHeader) and not req.header.is_write
    cpl = CompletionHeader.with_data(HOST_RID, req.header.requester_id, req.header.tag, 2)
    ep.receive_tlp(Tlp(cpl, b"hostdata").encode())
    assert got == [(CplStatus.SC, b"hostdata")]


def test_ide_stream_secure_end_to_end_and_payload_is_ciphertext() -> None:
    ep, dsm, host, events = make(1)
    assert ide_state(ep) == IdeStreamState.INSECURE
    key_device(ep, dsm)
    assert ide_state(ep) == IdeStreamState.SECURE and ep.secure_stream() == STREAM
    secret = b"TVM private data" * 2
    wire = host.seal(MemRequestHeader.write(HOST_RID, 1, BAR0 + 0x80, len(secret) // 4), secret, SubStream.PR)
    assert secret not in wire
    ep.receive_tlp(wire)
    ep.receive_tlp(host.seal(MemRequestHeader.read(HOST_RID, 2, BAR0 + 0x80, len(secret) // 4), b"", SubStream.NPR))
    cpl_wire = host.received.pop()
    assert cpl_wire[0] == 0x92 and secret not in cpl_wire
    assert IdeTlp.decode(cpl_wire).prefix.sub_stream is SubStream.CPL
    assert host.open(cpl_wire).data == secret
    # device DMA goes out sealed in PR with the T bit when asked
    ep.dma_write(0, 0x3000, b"dma to host", tee=True)
    dma_wire = host.received.pop()
    assert IdeTlp.decode(dma_wire).prefix.tee == 1
    assert host.open(dma_wire).data == b"dma to host\x00"
    assert any(e.kind == "ide-state" and "Secure" in e.summary for e in events)


def test_tampered_ide_tlp_makes_stream_insecure_and_tells_dsm() -> None:
    ep, dsm, host, events = make(1)
    key_device(ep, dsm)
    dsm.calls.clear()
    wire = bytearray(host.seal(MemRequestHeader.write(HOST_RID, 1, BAR0, 2), b"12345678", SubStream.PR))
    wire[20] ^= 0x01  # one ciphertext bit
    ep.receive_tlp(bytes(wire))
    assert ide_state(ep) == IdeStreamState.INSECURE
    assert dsm.named("config_changed") == [(0, str(ConfigChange.IDE_STREAM_INSECURE))]
    assert any(e.kind == "ide-integrity" for e in events)
    assert mmio_read(ep, host, BAR0).data == bytes(4)  # the tampered write never landed (sent in clear now)


def test_ide_fail_message_from_partner_sets_status_bit31() -> None:
    ep, dsm, _, _ = make(1)
    key_device(ep, dsm)
    ep.ide_fail_message(STREAM)
    ide = find_ext_capability(rd(ep), ExtCapabilityId.IDE)
    assert ide is not None
    sts = ep.config_read(0, ide + ep.ide_cap.selective_blocks()[0].status)
    assert sts & 0x8000_0000 and sts & 0xF == IdeStreamState.INSECURE


def test_ide_query_matches_config_space_and_encodes_as_query_resp() -> None:
    ep, dsm, _, _ = make(1)
    assert dsm.hardware is not None
    info = dsm.hardware.ide_query(0)
    assert info is not None and dsm.hardware.ide_query(1) is None
    ide = find_ext_capability(rd(ep), ExtCapabilityId.IDE)
    assert ide is not None
    assert info.register_dws == tuple(ep.config_read(0, ide + o) for o in range(4, ep.ide_cap.size, 4))
    msg = QueryResp(info.port_index, info.dev_func & 7, info.dev_func >> 3, info.bus, info.segment,
                    info.max_port_index, info.register_dws)
    assert QueryResp.decode(msg.encode()).bus == 1


def test_flr_of_nonzero_function_via_device_control_keeps_ide() -> None:
    ep, dsm, host, events = make(2)
    key_device(ep, dsm)
    mmio_write(ep, BAR0 + 0x10_0000, b"keep")
    pos = find_capability(rd(ep, 1), CapabilityId.PCI_EXPRESS)
    assert pos is not None
    devctl = ep.config_read(1, pos + 8)
    ep.config_write(1, pos + 8, devctl | DevCtl.INITIATE_FLR, byte_enable=0b0011)
    assert dsm.named("flr") == [1]
    assert ep.config_read(1, 0x10) & ~0xF == 0 and ep.config_read(1, 0x04) & 0xFFFF == 0  # function 1 reset
    assert ep.config_read(0, 0x10) & ~0xF == BAR0  # function 0 untouched
    assert ep.ide.slot_count() == 6 and ide_state(ep) == IdeStreamState.SECURE
    assert any(e.kind == "flr" for e in events)
    assert not dsm.named("conventional_reset")


@pytest.mark.parametrize("policy,keys_left", [(Function0FlrPolicy.CLEAR_SECURITY, 0),
                                              (Function0FlrPolicy.KEEP_SECURITY, 6)])
def test_flr_of_function0_follows_policy(policy: Function0FlrPolicy, keys_left: int) -> None:
    ep, dsm, _, _ = make(1, policy=policy)
    key_device(ep, dsm)
    ep.function_level_reset(0)
    assert dsm.named("flr") == [0]
    assert ep.ide.slot_count() == keys_left
    # function 0's BAR and command are reset either way, so the link is up but MSE is off
    assert ep.config_read(0, 0x10) & ~0xF == 0
    assert ep.mailbox.status == DoeStatus(0)
    expected = IdeStreamState.SECURE if keys_left else IdeStreamState.INSECURE
    assert ide_state(ep) == expected


def test_d3hot_keeps_ide_keys_and_stream_but_stops_decode() -> None:
    ep, dsm, host, events = make(1)
    key_device(ep, dsm)
    mmio_write(ep, BAR0, b"warm")
    pm = find_capability(rd(ep), CapabilityId.POWER_MANAGEMENT)
    assert pm is not None
    assert ep.config_read(0, pm + 4) & PmcsrBit.NO_SOFT_RESET
    ep.config_write(0, pm + 4, int(PowerState.D3HOT), byte_enable=0b0011)
    assert ep.functions[0].power_state is PowerState.D3HOT
    assert ep.ide.slot_count() == 6 and ide_state(ep) == IdeStreamState.SECURE
    ur = host.seal(MemRequestHeader.read(HOST_RID, 9, BAR0, 1), b"", SubStream.NPR)
    ep.receive_tlp(ur)
    assert host.open(host.received.pop()).header.status is CplStatus.UR  # type: ignore[union-attr]
    ep.config_write(0, pm + 4, int(PowerState.D0), byte_enable=0b0011)
    assert ep.ide.slot_count() == 6 and ide_state(ep) == IdeStreamState.SECURE
    ep.receive_tlp(host.seal(MemRequestHeader.read(HOST_RID, 10, BAR0, 1), b"", SubStream.NPR))
    assert host.open(host.received.pop()).data == b"warm"  # nothing was lost
    assert not dsm.named("conventional_reset") and not dsm.named("config_changed")


def test_d3hot_without_no_soft_reset_loses_function_state() -> None:
    specs = [FunctionSpec(), FunctionSpec(no_soft_reset=False, bars={0: Bar(0x1000, BarKind.MEM32)})]
    ep, dsm, _, _ = make(specs=specs)
    pm = find_capability(rd(ep, 1), CapabilityId.POWER_MANAGEMENT)
    assert pm is not None
    ep.config_write(1, pm + 4, int(PowerState.D3HOT), byte_enable=0b0011)
    ep.config_write(1, pm + 4, int(PowerState.D0), byte_enable=0b0011)
    assert ep.config_read(1, 0x10) == 0
    assert dsm.named("config_changed") == [(1, str(ConfigChange.POWER_STATE))]


@pytest.mark.parametrize("trigger", ["hot_reset", "dpc", "link_down"])
def test_conventional_reset_clears_keys_and_calls_dsm(trigger: str) -> None:
    ep, dsm, host, events = make(2)
    key_device(ep, dsm)
    cap = find_ext_capability(rd(ep), ExtCapabilityId.DOE)
    assert cap is not None
    ep.config_write(0, cap + DoeRegister.WRITE_DATA, 0x0001_0001)  # a half-written DOE object
    if trigger == "hot_reset":
        ep.hot_reset()
    elif trigger == "dpc":
        ep.on_link_reset(ResetReason.DPC)
    else:
        ep.on_link_down()
    assert dsm.named("conventional_reset") == [None]
    assert ep.ide.slot_count() == 0 and ide_state(ep) == IdeStreamState.INSECURE
    assert ep.config_read(0, 0x10) & ~0xF == 0 and ep.config_read(1, 0x04) & 0xFFFF == 0
    assert ep.mailbox.stats.requests == 0 and ep.mailbox.status == DoeStatus(0)
    assert not dsm.named("config_changed")  # a reset is reported as a reset, not as config changes
    assert any(e.kind == "reset" for e in events)


def test_d3cold_entry_and_exit() -> None:
    ep, dsm, host, events = make(1)
    key_device(ep, dsm)
    power: list[bool] = []
    ep.on_power_change = power.append
    ep.enter_d3cold()
    assert not ep.powered and power == [False]
    assert ep.config_read(0, 0) == 0xFFFF_FFFF  # nobody answers
    ep.config_write(0, 0x04, 0xFFFF)  # ignored
    assert dsm.named("conventional_reset") == [None] and ep.ide.slot_count() == 0
    assert not ep.dma_write(0, 0, b"nope")
    ep.enter_d3cold()  # already off: nothing more happens
    assert dsm.named("conventional_reset") == [None]
    ep.exit_d3cold()
    assert ep.powered and power == [False, True]
    assert ep.config_read(0, 0) & 0xFFFF == 0x1DED and ep.config_read(0, 0x04) & 0xFFFF == 0
    assert ide_state(ep) == IdeStreamState.INSECURE
    ep.on_link_up()
    pcie = find_capability(rd(ep), CapabilityId.PCI_EXPRESS)
    assert pcie is not None and ep.config_read(0, pcie + 0x10) >> 16 & 0x2000  # DLL Link Active


def test_config_writes_under_a_tdi_are_reported() -> None:
    ep, dsm, _, _ = make(2)
    ep.config_write(1, 0x04, int(Command.BUS_MASTER))  # MSE cleared
    ep.config_write(1, 0x04, 0)  # BME cleared
    ep.config_write(1, 0x04, int(Command.MEMORY_SPACE))  # setting bits is not a reported change
    ep.config_write(0, 0x10, BAR0 + 0x1000_0000)  # BAR moved
    ep.config_write(0, 0x10, BAR0 + 0x1000_0000)  # same value again: no change
    ide = find_ext_capability(rd(ep), ExtCapabilityId.IDE)
    assert ide is not None
    ep.config_write(0, ide + ep.ide_cap.selective_blocks()[0].base + 0x10, 0x0000_0101)  # RID association 2
    assert dsm.named("config_changed") == [
        (1, str(ConfigChange.MSE_CLEARED)), (1, str(ConfigChange.BME_CLEARED)),
        (0, str(ConfigChange.BAR)), (0, str(ConfigChange.IDE_REGISTERS))]


def test_tdi_config_snapshot_reads_the_registers() -> None:
    ep, dsm, _, _ = make(2)
    assert dsm.hardware is not None
    cfg = dsm.hardware.tdi_config(1)
    assert cfg.requester_id == 0x0101 and cfg.memory_enabled and cfg.bus_master_enabled
    assert cfg.bars[0].address == BAR0 + 0x10_0000 and cfg.bars[0].size == 0x4000
    assert cfg.power_state is PowerState.D0


def test_malformed_tlp_is_dropped_not_raised() -> None:
    ep, _, host, events = make(1)
    ep.receive_tlp(b"\x92\x00")
    ep.receive_tlp(b"")
    ep.receive_tlp(bytes.fromhex("7f000001"))
    assert host.received == [] and sum(e.kind == "tlp-dropped" for e in events) == 3


def test_attach_world_offers_faults_and_reports_stored_keys() -> None:
    from sim.crypto.secrets import SecretClass, SecretRecord
    from sim.engine.faults import FaultKind
    from sim.engine.trace import MemorySink
    from sim.engine.world import World

    world = World(3)
    sink = MemorySink()
    world.trace.subscribe(sink)
    dsm = RecordingDsm()
    ep = Endpoint("dev0", dsm=dsm)
    ep.attach_world(world)
    kinds = {k for _, k in world.faults.offered("dev0")}
    assert {FaultKind.D3COLD_ENTRY, FaultKind.D3COLD_EXIT, FaultKind.FLR, FaultKind.DOE_ABORT} <= kinds
    world.exposure.register(SecretRecord("ide k0", SecretClass.IDE_KEY, "tsm", DEV_RX_KEY))
    assert dsm.hardware is not None
    dsm.hardware.ide.program(0, 1, KeySet.K0, Direction.RX, SubStream.PR, DEV_RX_KEY, IFV)
    matrix = world.exposure.matrix()
    assert matrix.get(SecretClass.IDE_KEY, "dev0").name == "SAW_PLAINTEXT"
    world.faults.inject("dev0", FaultKind.D3COLD_ENTRY)
    assert not ep.powered and dsm.named("conventional_reset") == [None]
    world.faults.inject("dev0", FaultKind.D3COLD_EXIT)
    assert ep.powered
    assert any("D3cold entry" in e.summary for e in sink)
