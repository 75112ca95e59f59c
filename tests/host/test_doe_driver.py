"""The host DOE driver against a real endpoint mailbox and DSM: discovery, round trips, timeout/abort,
busy, error, a dead mailbox, interrupt mode, tracing and costs."""

from __future__ import annotations

import dataclasses

import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.devices.config_space import DoeRegister, find_ext_capability
from sim.engine.timing import Op
from sim.engine.trace import Channel, MemorySink
from sim.engine.world import World
from sim.host.doe_driver import (
    DOE_POLL_INTERVAL_NS,
    DOE_TIMEOUT_NS,
    DoeDriver,
    DoeResultCode,
    DoeWaitMode,
)
from sim.scenario.platform import DeviceHandle, DeviceSpec, PlatformSpec, build_platform
from sim.wire.doe import DoeObject, DoeObjectType
from sim.wire.spdm.common import ResponseCode

GET_VERSION = bytes.fromhex("10840000")
GET_VERSION_OBJECT = bytes.fromhex("010001000300000010840000")  # PROTOCOLS.md §1.3 worked example


@dataclasses.dataclass
class Bench:
    world: World
    dev: DeviceHandle
    driver: DoeDriver
    sink: MemorySink
    doe: int


def bench(*, wait_mode: DoeWaitMode = DoeWaitMode.POLL, interrupt: bool = False, init: bool = True,
          abort_on_busy: bool = True) -> Bench:
    world = World(1)
    p = build_platform(world, PlatformSpec(devices=(DeviceSpec(doe_interrupt=interrupt),)))
    sink = MemorySink()
    world.trace.subscribe(sink)
    dev = p.device("dev0")
    doe = find_ext_capability(lambda o: dev.endpoint.config_read(0, o), 0x2E)
    assert doe is not None
    driver = DoeDriver(world, wait_mode=wait_mode, abort_on_busy=abort_on_busy)
    driver.add_mailbox("dev0", dev.path, dev.link, 0, doe, irq=dev.doe_irq)
    b = Bench(world, dev, driver, sink, doe)
    if init:
        run(b, driver.init_mailbox("dev0"))
    return b


def run(b: Bench, gen):
    proc = b.world.process(gen)
    b.world.run(until=proc)
    return proc.value


def test_discovery_lists_the_dsm_protocols() -> None:
    b = bench()
    mb = b.driver.mailbox("dev0")
    assert mb is not None and mb.protocols == ((1, 0), (1, 1), (1, 2))
    assert mb.cap_version == 2 and not mb.dead
    # one resynchronising abort, then three discovery exchanges, each traced both ways on the DOE channel
    doe_events = b.sink.on(Channel.DOE)
    assert len(doe_events) == 6
    assert doe_events[0].data == bytes.fromhex("01000000030000000002 0000".replace(" ", ""))
    assert b.dev.endpoint.mailbox.stats.aborts == 1


def test_get_version_round_trip_through_the_real_dsm() -> None:
    b = bench()
    before = len(b.sink)
    t0 = b.world.now
    rsp = run(b, b.driver.exchange("dev0", DoeObjectType.SPDM, GET_VERSION))
    assert rsp is not None and rsp[1] == ResponseCode.VERSION
    result = b.driver.last_result
    assert result is not None and result.ok and result.started_ns == t0
    events = b.sink.events[before:]
    doe = [e for e in events if e.channel is Channel.DOE]
    assert [(e.source, e.destination) for e in doe] == [("host", "rp0.dev0"), ("rp0.dev0", "host")]
    assert doe[0].data == GET_VERSION_OBJECT
    assert DoeObject.decode(doe[1].data).payload == rsp
    # every DW went through a traced config write to Write Data, each costing the host's access time
    writes = [e for e in events if e.channel is Channel.CONFIG and e.source == "host"
              and f"0x{b.doe + DoeRegister.WRITE_DATA:03x}" in e.summary and "CfgWr" in e.summary]
    assert [int.from_bytes(e.data, "little") for e in writes] == \
        [int.from_bytes(GET_VERSION_OBJECT[i:i + 4], "little") for i in range(0, 12, 4)]
    accesses = sum(1 for e in events if e.channel is Channel.CONFIG and e.source == "host" and "Cfg" in e.summary)
    access_ns = b.world.cost("host", Op.CONFIG_DW_ACCESS)
    # Linux polls: one immediate Status read, then the 1/128 s poll interval
    assert result.polls == 1
    assert b.world.now - t0 == accesses * access_ns + DOE_POLL_INTERVAL_NS


def test_dropped_object_times_out_after_one_second_and_aborts() -> None:
    b = bench()
    b.world.faults.inject("rp0.dev0", "drop-doe")
    t0 = b.world.now
    result = run(b, b.driver.exchange_result("dev0", DoeObjectType.SPDM, GET_VERSION))
    assert result.code is DoeResultCode.TIMEOUT and result.aborted and not result.mailbox_died
    assert DOE_TIMEOUT_NS < b.world.now - t0 < DOE_TIMEOUT_NS + 3 * DOE_POLL_INTERVAL_NS
    assert result.polls >= 128
    assert b.dev.endpoint.mailbox.stats.aborts == 2 and b.driver.stats.timeouts == 1
    # the mailbox is usable again
    assert run(b, b.driver.exchange("dev0", DoeObjectType.SPDM, GET_VERSION)) is not None


def _other_requester_sends(b: Bench, raw: bytes, *, go: bool = True) -> None:
    """Another entity (not this driver) writes an object straight into the mailbox."""
    ep = b.dev.endpoint
    for i in range(0, len(raw), 4):
        ep.config_write(0, b.doe + DoeRegister.WRITE_DATA, int.from_bytes(raw[i:i + 4], "little"))
    if go:
        ep.config_write(0, b.doe + DoeRegister.CONTROL, 1 << 31)


def test_busy_mailbox_gives_ebusy_and_linux_aborts_the_other_exchange() -> None:
    b = bench()
    _other_requester_sends(b, GET_VERSION_OBJECT)
    mailbox = b.dev.endpoint.mailbox
    assert mailbox.pending is not None  # the device is still working on it: Busy
    result = run(b, b.driver.exchange_result("dev0", DoeObjectType.SPDM, GET_VERSION))
    assert result.code is DoeResultCode.BUSY and result.aborted
    assert b.driver.stats.busy == 1
    assert mailbox.pending is None and not mailbox.status  # the other requester's exchange is gone
    assert any("busy detected" in e.summary for e in b.sink.events)


def test_busy_without_abort_leaves_the_other_exchange_alone() -> None:
    b = bench(abort_on_busy=False)
    _other_requester_sends(b, GET_VERSION_OBJECT)
    result = run(b, b.driver.exchange_result("dev0", DoeObjectType.SPDM, GET_VERSION))
    assert result.code is DoeResultCode.BUSY and not result.aborted
    b.world.run(until=b.world.now + 10_000_000)
    assert b.dev.endpoint.mailbox.status & (1 << 31)  # the other requester's response arrived


def test_error_bit_makes_the_driver_abort_then_recover() -> None:
    b = bench()
    bad = bytearray(GET_VERSION_OBJECT)
    bad[3] = 0x55  # non-zero reserved byte: the mailbox cannot answer and sets Error
    _other_requester_sends(b, bytes(bad))
    b.world.run(until=b.world.now + 10_000_000)
    assert b.dev.endpoint.mailbox.status & 0x4
    result = run(b, b.driver.exchange_result("dev0", DoeObjectType.SPDM, GET_VERSION))
    assert result.code is DoeResultCode.ERROR and result.aborted and not result.mailbox_died
    assert run(b, b.driver.exchange("dev0", DoeObjectType.SPDM, GET_VERSION)) is not None


def test_link_down_kills_the_mailbox_until_reinit() -> None:
    b = bench()
    b.dev.link.hold_down("test", None)
    t0 = b.world.now
    result = run(b, b.driver.exchange_result("dev0", DoeObjectType.SPDM, GET_VERSION))
    # all-ones Status reads as Busy+Error: -EBUSY, then an abort that never completes: dead
    assert result.code is DoeResultCode.BUSY and result.mailbox_died
    assert b.world.now - t0 > DOE_TIMEOUT_NS
    t1 = b.world.now
    again = run(b, b.driver.exchange_result("dev0", DoeObjectType.SPDM, GET_VERSION))
    assert again.code is DoeResultCode.DEAD and b.world.now == t1
    b.dev.link.release("test")
    b.world.run(until=b.world.now + 50_000_000)
    assert run(b, b.driver.reinit("dev0")) == ((1, 0), (1, 1), (1, 2))
    assert run(b, b.driver.exchange("dev0", DoeObjectType.SPDM, GET_VERSION)) is not None


def test_unsupported_protocol_and_unknown_device_are_refused_without_io() -> None:
    b = bench()
    n = len(b.sink)
    result = run(b, b.driver.exchange_result("dev0", 0x05, b"\x00\x00\x00\x00"))
    assert result.code is DoeResultCode.UNSUPPORTED
    assert run(b, b.driver.exchange_result("nope", DoeObjectType.SPDM, GET_VERSION)).code is DoeResultCode.NO_MAILBOX
    assert len(b.sink) == n


def test_interrupt_mode_waits_for_the_msi_instead_of_polling() -> None:
    polled = bench()
    irq = bench(wait_mode=DoeWaitMode.INTERRUPT, interrupt=True)
    mb = irq.driver.mailbox("dev0")
    assert mb is not None and mb.interrupt_enabled
    run(polled, polled.driver.exchange("dev0", DoeObjectType.SPDM, GET_VERSION))
    rsp = run(irq, irq.driver.exchange("dev0", DoeObjectType.SPDM, GET_VERSION))
    assert rsp is not None and rsp[1] == ResponseCode.VERSION
    assert polled.driver.last_result is not None and irq.driver.last_result is not None
    assert irq.driver.last_result.latency_ns < DOE_POLL_INTERVAL_NS < polled.driver.last_result.latency_ns
    assert irq.dev.doe_irq.count >= 1
    # without interrupt support the driver falls back to polling
    fallback = bench(wait_mode=DoeWaitMode.INTERRUPT, interrupt=False)
    mb2 = fallback.driver.mailbox("dev0")
    assert mb2 is not None and not mb2.interrupt_enabled


def test_secured_plaintext_is_passed_through_to_the_trace() -> None:
    b = bench()
    b.world.faults.inject("rp0.dev0", "drop-doe")  # keep it short: no session exists anyway
    record = bytes(range(40))
    run(b, b.driver.exchange_result("dev0", DoeObjectType.SECURED_SPDM, record, secured_plaintext=b"inner message"))
    sent = [e for e in b.sink.on(Channel.DOE) if e.source == "host"][-1]
    assert sent.secured_plaintext == b"inner message"
    assert DoeObject.decode(sent.data).payload == record


def test_concurrent_exchanges_of_this_driver_are_serialised() -> None:
    b = bench()
    procs = [b.world.process(b.driver.exchange_result("dev0", DoeObjectType.SPDM, GET_VERSION)) for _ in range(3)]
    b.world.run(until=simpy.AllOf(b.world.env, procs))
    results = [p.value for p in procs]
    assert all(r.code is DoeResultCode.OK for r in results)
    finished = [r.finished_ns for r in results]
    assert finished == sorted(finished) and len(set(finished)) == 3
    assert b.driver.stats.busy == 0 and b.dev.endpoint.mailbox.stats.refused == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=0, max_size=64))
def test_any_spdm_payload_goes_out_as_one_exact_doe_object(payload: bytes) -> None:
    b = bench()
    n = len(b.sink)
    result = run(b, b.driver.exchange_result("dev0", DoeObjectType.SPDM, payload))
    sent = [e for e in b.sink.events[n:] if e.channel is Channel.DOE and e.source == "host"]
    assert len(sent) == 1 and sent[0].data == DoeObject.pcisig(DoeObjectType.SPDM, payload).encode()
    writes = [e for e in b.sink.events[n:] if e.channel is Channel.CONFIG and "CfgWr" in e.summary
              and f"0x{b.doe + DoeRegister.WRITE_DATA:03x}" in e.summary]
    assert len(writes) == len(sent[0].data) // 4
    # the responder answers (an ERROR for garbage) or stays silent (runts): never a crash, never Busy
    assert result.code in (DoeResultCode.OK, DoeResultCode.TIMEOUT)
