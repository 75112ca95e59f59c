"""The DOE mailbox driven register by register the way Linux drivers/pci/doe.c drives it.

The driver below is a generator: it yields how long it wants to sleep (ns) and returns its
result, so the same code runs against a hand-stepped clock (register model with no SimPy) and
inside a SimPy World (the endpoint's scheduled mailbox).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.devices.config_space import (
    ConfigHeader,
    ConfigSpace,
    DoeCapability,
    DoeControl,
    DoeRegister,
    DoeStatus,
    ExtCapabilityId,
    find_ext_capability,
)
from sim.devices.doe_mailbox import DoeEventKind, DoeMailbox, DoeOutcome, DoeRequest
from sim.devices.security_manager import DoeBackend, DsmHardware
from sim.wire.doe import DoeDiscoveryResponse, DoeObject, DoeObjectType

NS_PER_S = 1_000_000_000
POLL_NS = NS_PER_S // 128  # Linux polls every HZ/128
DOE_TIMEOUT_NS = NS_PER_S  # PCI_DOE_TIMEOUT
GET_VERSION = bytes.fromhex("10840000")
VERSION_1_2 = bytes.fromhex("1004000000010012")  # VERSION, one entry: 1.2


# --------------------------------------------------------------------------------------------
# A small real responder standing in for the DSM
# --------------------------------------------------------------------------------------------


@dataclass
class RecordingDsm:
    """Answers GET_VERSION with VERSION 1.2, echoes any other payload, stays silent on b'SILENT'.

    Records every call, so tests can check what reached the firmware and what did not.
    """

    calls: list[tuple[str, object]] = field(default_factory=list)
    hardware: DsmHardware | None = None

    def handle_doe(self, data_object_type: int, payload: bytes) -> bytes | None:
        self.calls.append(("doe", (data_object_type, payload)))
        if payload.startswith(b"SILENT"):
            return None
        if data_object_type == DoeObjectType.SPDM and payload[:4] == GET_VERSION:
            return VERSION_1_2
        return payload

    def attach(self, hardware: DsmHardware) -> None:
        self.hardware = hardware
        self.calls.append(("attach", None))

    def conventional_reset(self) -> None:
        self.calls.append(("conventional_reset", None))

    def function_level_reset(self, function: int) -> None:
        self.calls.append(("flr", function))

    def config_changed(self, function: int, what: str) -> None:
        self.calls.append(("config_changed", (function, what)))

    def doe_payloads(self) -> list[tuple[int, bytes]]:
        return [c[1] for c in self.calls if c[0] == "doe"]  # type: ignore[misc]

    def named(self, name: str) -> list[object]:
        return [c[1] for c in self.calls if c[0] == name]


# --------------------------------------------------------------------------------------------
# The Linux-style driver
# --------------------------------------------------------------------------------------------


class DoeDriverError(Exception):
    def __init__(self, errno: str) -> None:
        super().__init__(errno)
        self.errno = errno


DriverGen = Generator[int, None, bytes]


class LinuxDoeDriver:
    """pci_doe_send_req / pci_doe_wait_resp / pci_doe_recv_resp / pci_doe_abort, over DW config accesses."""

    def __init__(self, read_dw: Callable[[int], int], write_dw: Callable[[int, int], None], cap: int) -> None:
        self.read_dw, self.write_dw, self.cap = read_dw, write_dw, cap
        self.dead = False

    def status(self) -> DoeStatus:
        return DoeStatus(self.read_dw(self.cap + DoeRegister.STATUS))

    def send(self, vendor_id: int, object_type: int, payload: bytes) -> None:
        st_ = self.status()
        if st_ & DoeStatus.BUSY:
            raise DoeDriverError("EBUSY")
        if st_ & DoeStatus.ERROR:
            raise DoeDriverError("EIO")
        raw = DoeObject(vendor_id, object_type, payload).encode()
        for i in range(0, len(raw), 4):
            self.write_dw(self.cap + DoeRegister.WRITE_DATA, int.from_bytes(raw[i:i + 4], "little"))
        self.write_dw(self.cap + DoeRegister.CONTROL, int(DoeControl.GO))

    def receive(self) -> bytes:
        rd = self.cap + DoeRegister.READ_DATA
        dw0 = self.read_dw(rd)
        self.write_dw(rd, 0)
        dw1 = self.read_dw(rd)
        self.write_dw(rd, 0)
        length = dw1 & 0x3FFFF or 1 << 18
        out = [dw0, dw1]
        for i in range(length - 2):
            out.append(self.read_dw(rd))
            if i == length - 3 and not self.status() & DoeStatus.DATA_OBJECT_READY:
                raise DoeDriverError("EIO")  # Ready must still be set before the final acknowledge
            self.write_dw(rd, 0)
        if self.status() & DoeStatus.ERROR:
            raise DoeDriverError("EIO")
        return b"".join(dw.to_bytes(4, "little") for dw in out)

    def abort(self) -> DriverGen:
        self.write_dw(self.cap + DoeRegister.CONTROL, int(DoeControl.ABORT))
        waited = 0
        while waited <= DOE_TIMEOUT_NS:
            st_ = self.status()
            if not st_ & (DoeStatus.ERROR | DoeStatus.BUSY):
                return b""
            yield POLL_NS
            waited += POLL_NS
        self.dead = True
        raise DoeDriverError("EIO")

    def exchange(self, vendor_id: int, object_type: int, payload: bytes) -> DriverGen:
        """One request/response; on error or timeout the mailbox is aborted and the error raised."""
        self.send(vendor_id, object_type, payload)
        waited = 0
        while True:
            st_ = self.status()
            if st_ & DoeStatus.ERROR:
                yield from self.abort()
                raise DoeDriverError("EIO")
            if st_ & DoeStatus.DATA_OBJECT_READY:
                return self.receive()
            if waited >= DOE_TIMEOUT_NS:
                yield from self.abort()
                raise DoeDriverError("ETIMEDOUT")
            yield POLL_NS
            waited += POLL_NS

    def discover(self, version: int) -> DriverGen:
        """The discovery loop: index 0, 1, ... until Next Index is 0."""
        found: list[tuple[int, int]] = []
        index = 0
        while True:
            resp = yield from self.exchange(1, 0, bytes([index, version, 0, 0]))
            obj = DoeObject.decode(resp)
            d = DoeDiscoveryResponse.decode(obj.payload)
            found.append((d.vendor_id, d.data_object_type))
            if d.next_index == 0:
                return bytes(b for pair in found for b in (pair[0] & 0xFF, pair[0] >> 8, pair[1]))
            index = d.next_index


class ManualClock:
    """Just enough of a scheduler for the SimPy-free register model."""

    def __init__(self) -> None:
        self.now = 0
        self._queue: list[tuple[int, int, Callable[[], object]]] = []
        self._seq = 0

    def call_later(self, delay: int, fn: Callable[[], object]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, fn))

    def advance(self, delay: int) -> None:
        end = self.now + delay
        while self._queue and self._queue[0][0] <= end:
            t, _, fn = heapq.heappop(self._queue)
            self.now = t
            fn()
        self.now = end

    def run(self, gen: DriverGen) -> bytes:
        try:
            while True:
                self.advance(next(gen))
        except StopIteration as stop:
            return stop.value


def build(backend: DoeBackend | None = None, **kw: object) -> tuple[ConfigSpace, DoeMailbox, LinuxDoeDriver]:
    mailbox = DoeMailbox(backend, **kw)  # type: ignore[arg-type]
    cs = ConfigSpace(ConfigHeader(vendor_id=0x1DED, device_id=0x7100, class_code=0x120000))
    cs.add_ext_capability(DoeCapability(mailbox))
    cap = find_ext_capability(cs.read_dw, ExtCapabilityId.DOE)
    assert cap == 0x100
    return cs, mailbox, LinuxDoeDriver(cs.read_dw, cs.write_dw, cap)


def delayed(mailbox: DoeMailbox, clock: ManualClock, delay_ns: int) -> Callable[[DoeRequest], None]:
    def schedule(request: DoeRequest) -> None:
        outcome = mailbox.respond(request)
        clock.call_later(delay_ns, lambda: mailbox.complete(request.ticket, outcome))
    return schedule


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_get_version_round_trip_bytes_and_backend_call() -> None:
    dsm = RecordingDsm()
    _, mailbox, drv = build(dsm)
    clock = ManualClock()
    resp = clock.run(drv.exchange(1, DoeObjectType.SPDM, GET_VERSION))
    assert resp == bytes.fromhex("0100010004000000") + VERSION_1_2
    assert dsm.doe_payloads() == [(1, GET_VERSION)]
    assert drv.status() == DoeStatus(0)
    assert mailbox.stats.requests == 1 and mailbox.stats.responses == 1


def test_request_bytes_match_worked_example() -> None:
    seen: list[bytes] = []
    _, mailbox, drv = build(RecordingDsm(), observer=lambda e: seen.append(e.data) if e.kind is DoeEventKind.REQUEST
                            else None)
    ManualClock().run(drv.exchange(1, 1, GET_VERSION))
    assert seen == [bytes.fromhex("010001000300000010840000")]  # PROTOCOLS.md §1.3


@pytest.mark.parametrize("version,cap_version", [(0, 1), (2, 2)])
def test_discovery_loop_until_next_index_zero(version: int, cap_version: int) -> None:
    _, mailbox, drv = build(RecordingDsm())
    listing = ManualClock().run(drv.discover(version))
    pairs = [(listing[i] | listing[i + 1] << 8, listing[i + 2]) for i in range(0, len(listing), 3)]
    assert pairs == [(1, 0), (1, 1), (1, 2)]
    assert mailbox.stats.requests == 3


def test_discovery_lists_custom_protocols_and_out_of_range_index() -> None:
    _, _, drv = build(RecordingDsm(), protocols=[(1, 1), (0x1E98, 0x07)])
    clock = ManualClock()
    listing = clock.run(drv.discover(2))
    assert listing == bytes([1, 0, 0, 1, 0, 1, 0x98, 0x1E, 7])
    resp = DoeObject.decode(clock.run(drv.exchange(1, 0, bytes([9, 2, 0, 0]))))
    assert DoeDiscoveryResponse.decode(resp.payload) == DoeDiscoveryResponse(0xFFFF, 0xFF, 0)


def test_payload_padding_reaches_backend_and_comes_back() -> None:
    dsm = RecordingDsm()
    _, _, drv = build(dsm)
    resp = ManualClock().run(drv.exchange(1, DoeObjectType.SECURED_SPDM, b"\x01\x02\x03\x04\x05"))
    # the backend gets DOE length x 4 - 8 bytes, pad included (§1.3)
    assert dsm.doe_payloads() == [(2, b"\x01\x02\x03\x04\x05\x00\x00\x00")]
    assert DoeObject.decode(resp).payload == b"\x01\x02\x03\x04\x05\x00\x00\x00"


@pytest.mark.parametrize("extra", [-1, +1])
def test_wrong_length_object_silently_discarded(extra: int) -> None:
    dsm = RecordingDsm()
    cs, mailbox, drv = build(dsm)
    raw = DoeObject(1, 1, GET_VERSION + b"ABCD").encode()
    dws = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]
    dws = dws[:extra] if extra < 0 else dws + [0xDEADBEEF]
    for dw in dws:
        cs.write_dw(0x100 + DoeRegister.WRITE_DATA, dw)
    cs.write_dw(0x100 + DoeRegister.CONTROL, int(DoeControl.GO))
    assert drv.status() == DoeStatus(0)  # no Busy, no Error, nothing ready
    assert dsm.doe_payloads() == []
    assert mailbox.stats.discarded == 1
    # the mailbox is usable right away
    assert DoeObject.decode(ManualClock().run(drv.exchange(1, 1, GET_VERSION))).payload == VERSION_1_2


def test_abort_mid_write_discards_partial_object() -> None:
    dsm = RecordingDsm()
    cs, mailbox, drv = build(dsm)
    cs.write_dw(0x100 + DoeRegister.WRITE_DATA, 0x00010001)
    cs.write_dw(0x100 + DoeRegister.WRITE_DATA, 0x00000003)
    clock = ManualClock()
    clock.run(drv.abort())
    assert mailbox.stats.aborts == 1
    resp = clock.run(drv.exchange(1, 1, GET_VERSION))
    assert DoeObject.decode(resp).payload == VERSION_1_2
    assert dsm.doe_payloads() == [(1, GET_VERSION)]


def test_abort_mid_read_clears_ready_and_next_response_starts_at_dw0() -> None:
    cs, mailbox, drv = build(RecordingDsm())
    drv.send(1, 2, bytes(range(16)))
    rd = 0x100 + DoeRegister.READ_DATA
    first = cs.read_dw(rd)
    cs.write_dw(rd, 0)
    cs.read_dw(rd)
    cs.write_dw(rd, 0)
    assert drv.status() & DoeStatus.DATA_OBJECT_READY
    clock = ManualClock()
    clock.run(drv.abort())
    assert drv.status() == DoeStatus(0)
    assert cs.read_dw(rd) == 0
    resp = clock.run(drv.exchange(1, 1, GET_VERSION))
    assert first == 0x0002_0001  # the aborted response was the secured-SPDM echo
    assert resp == bytes.fromhex("0100010004000000") + VERSION_1_2  # the new one, read from its first DW


def test_second_requester_while_busy_is_refused_and_first_exchange_survives() -> None:
    dsm = RecordingDsm()
    cs, mailbox, drv_a = build(dsm)
    clock = ManualClock()
    mailbox.scheduler = delayed(mailbox, clock, 3 * POLL_NS)
    drv_b = LinuxDoeDriver(cs.read_dw, cs.write_dw, 0x100)
    gen_a = drv_a.exchange(1, 1, GET_VERSION)
    clock.advance(next(gen_a))  # A has sent and is polling; the request is being processed
    assert drv_a.status() & DoeStatus.BUSY
    # a well-behaved second requester backs off like Linux does
    with pytest.raises(DoeDriverError) as exc:
        drv_b.send(1, 1, b"\x12\xe1\x00\x00")
    assert exc.value.errno == "EBUSY"
    # a rogue one writes and presses Go anyway: refused, no Error, nothing reaches the firmware
    for dw in (0x00010001, 0x00000003, 0x0000E112):
        cs.write_dw(0x100 + DoeRegister.WRITE_DATA, dw)
    cs.write_dw(0x100 + DoeRegister.CONTROL, int(DoeControl.GO))
    assert not drv_a.status() & DoeStatus.ERROR
    assert mailbox.stats.refused == 4
    resp = clock.run(gen_a)
    assert DoeObject.decode(resp).payload == VERSION_1_2
    assert dsm.doe_payloads() == [(1, GET_VERSION)]


def test_go_while_response_unread_is_refused() -> None:
    cs, mailbox, drv = build(RecordingDsm())
    drv.send(1, 2, b"first!!!")
    assert drv.status() & DoeStatus.DATA_OBJECT_READY
    for i in range(3):
        cs.write_dw(0x100 + DoeRegister.WRITE_DATA, [0x00020001, 3, 0x41414141][i])
    cs.write_dw(0x100 + DoeRegister.CONTROL, int(DoeControl.GO))
    assert mailbox.stats.refused == 4
    assert DoeObject.decode(drv.receive()).payload == b"first!!!"


def test_timeout_when_firmware_never_answers_then_abort_and_stale_completion_dropped() -> None:
    dsm = RecordingDsm()
    _, mailbox, drv = build(dsm)
    clock = ManualClock()
    held: list[tuple[DoeRequest, DoeOutcome]] = []
    mailbox.scheduler = lambda req: held.append((req, mailbox.respond(req)))  # never completes on its own
    with pytest.raises(DoeDriverError) as exc:
        clock.run(drv.exchange(1, 1, GET_VERSION))
    assert exc.value.errno == "ETIMEDOUT"
    assert clock.now >= DOE_TIMEOUT_NS
    assert not drv.dead and drv.status() == DoeStatus(0)
    assert mailbox.stats.aborts == 1
    req, outcome = held[0]
    assert mailbox.complete(req.ticket, outcome) is False  # the late answer is not delivered
    assert drv.status() == DoeStatus(0)


def test_backend_no_response_leads_to_driver_timeout() -> None:
    dsm = RecordingDsm()
    _, mailbox, drv = build(dsm)
    clock = ManualClock()
    with pytest.raises(DoeDriverError) as exc:
        clock.run(drv.exchange(1, 2, b"SILENT.."))
    assert exc.value.errno == "ETIMEDOUT"
    assert dsm.doe_payloads() == [(2, b"SILENT..")]
    assert mailbox.stats.responses == 0


@pytest.mark.parametrize("raw", [
    DoeObject(1, 7, b"abcd").encode(),  # a PCI-SIG type nobody registered
    DoeObject(0x8086, 1, b"abcd").encode(),  # another vendor
    bytes.fromhex("01000101" "03000000" "10840000"),  # reserved byte 3 non-zero (§1.3)
    DoeObject(1, 0, b"\x00\x00\x00\x00\x00\x00\x00\x00").encode(),  # discovery with a 2-DW payload
])
def test_unanswerable_object_sets_error_and_abort_clears_it(raw: bytes) -> None:
    dsm = RecordingDsm()
    cs, mailbox, drv = build(dsm)
    for i in range(0, len(raw), 4):
        cs.write_dw(0x100 + DoeRegister.WRITE_DATA, int.from_bytes(raw[i:i + 4], "little"))
    cs.write_dw(0x100 + DoeRegister.CONTROL, int(DoeControl.GO))
    assert drv.status() & DoeStatus.ERROR
    with pytest.raises(DoeDriverError) as exc:
        drv.send(1, 1, GET_VERSION)
    assert exc.value.errno == "EIO"
    ManualClock().run(drv.abort())
    assert drv.status() == DoeStatus(0)
    assert dsm.doe_payloads() == []


def test_no_backend_means_spdm_gets_error_but_discovery_works() -> None:
    _, _, drv = build(None)
    clock = ManualClock()
    assert clock.run(drv.discover(2)) == bytes([1, 0, 0, 1, 0, 1, 1, 0, 2])
    with pytest.raises(DoeDriverError):
        clock.run(drv.exchange(1, 1, GET_VERSION))


def test_interrupt_on_ready_and_rw1c_status() -> None:
    raised: list[int] = []
    cs, mailbox, drv = build(RecordingDsm(), interrupt_vector=5, raise_interrupt=raised.append)
    cap_reg = cs.read_dw(0x100 + DoeRegister.CAPABILITIES)
    assert cap_reg & 1 and (cap_reg >> 1) & 0x7FF == 5
    drv.send(1, 1, GET_VERSION)  # Go without Interrupt Enable: no interrupt
    assert raised == [] and not drv.status() & DoeStatus.INTERRUPT_STATUS
    drv.receive()
    cs.write_dw(0x100 + DoeRegister.CONTROL, int(DoeControl.INTERRUPT_ENABLE))
    assert cs.read_dw(0x100 + DoeRegister.CONTROL) == int(DoeControl.INTERRUPT_ENABLE)
    raw = DoeObject(1, 1, GET_VERSION).encode()
    for i in range(0, len(raw), 4):
        cs.write_dw(0x100 + DoeRegister.WRITE_DATA, int.from_bytes(raw[i:i + 4], "little"))
    cs.write_dw(0x100 + DoeRegister.CONTROL, int(DoeControl.GO | DoeControl.INTERRUPT_ENABLE))
    assert raised == [5]
    assert drv.status() & DoeStatus.INTERRUPT_STATUS
    cs.write_dw(0x100 + DoeRegister.STATUS, 0)  # writing 0 leaves it
    assert drv.status() & DoeStatus.INTERRUPT_STATUS
    cs.write_dw(0x100 + DoeRegister.STATUS, int(DoeStatus.INTERRUPT_STATUS))  # RW1C
    assert not drv.status() & DoeStatus.INTERRUPT_STATUS
    assert drv.status() & DoeStatus.DATA_OBJECT_READY


def test_control_go_and_abort_read_as_zero_and_partial_writes_ignored() -> None:
    cs, mailbox, drv = build(RecordingDsm())
    cs.write_dw(0x100 + DoeRegister.CONTROL, 0xFFFF_FFFF & ~int(DoeControl.ABORT) & ~int(DoeControl.GO))
    assert cs.read_dw(0x100 + DoeRegister.CONTROL) == int(DoeControl.INTERRUPT_ENABLE)
    cs.write_dw(0x100 + DoeRegister.WRITE_DATA, 0x00010001, byte_enable=0x3)  # not a DW access: dropped
    drv.send(1, 1, GET_VERSION)
    assert DoeObject.decode(drv.receive()).payload == VERSION_1_2


def test_injected_drop_and_corruption() -> None:
    dsm = RecordingDsm()
    _, mailbox, drv = build(dsm)
    clock = ManualClock()
    mailbox.inject_drop()
    with pytest.raises(DoeDriverError):
        clock.run(drv.exchange(1, 1, GET_VERSION))
    assert dsm.doe_payloads() == []
    mailbox.inject_corruption(8 * 8 + 7)  # flips the top bit of payload byte 0: 0x10 -> 0x90
    clock.run(drv.exchange(1, 1, GET_VERSION))
    assert dsm.doe_payloads() == [(1, bytes.fromhex("90840000"))]


def test_injected_faults_count_one_object_each() -> None:
    """drop_doe/corrupt_doe with count N: N objects are affected, one each, in order; the next is clean."""
    dsm = RecordingDsm()
    _, mailbox, drv = build(dsm)
    clock = ManualClock()
    for _ in range(2):
        mailbox.inject_drop()
    for _ in range(2):
        with pytest.raises(DoeDriverError):
            clock.run(drv.exchange(1, 1, GET_VERSION))  # times out and aborts
    assert dsm.doe_payloads() == []
    mailbox.inject_corruption(8 * 8 + 7)  # payload byte 0, top bit
    mailbox.inject_corruption(8 * 8 + 8)  # payload byte 1, bottom bit
    for _ in range(3):
        clock.run(drv.exchange(1, 1, GET_VERSION))
    assert [p for _, p in dsm.doe_payloads()] == [bytes.fromhex("90840000"), bytes.fromhex("10850000"),
                                                  bytes.fromhex("10840000")]


def test_simpy_world_makes_the_answer_take_modeled_time() -> None:
    from sim.devices.endpoint import Endpoint
    from sim.engine.world import World

    world = World(7)
    dsm = RecordingDsm()
    ep = Endpoint("dev0", dsm=dsm)
    ep.attach_world(world)
    cap = find_ext_capability(lambda o: ep.config_read(0, o), ExtCapabilityId.DOE)
    assert cap is not None
    drv = LinuxDoeDriver(lambda o: ep.config_read(0, o), lambda o, v: ep.config_write(0, o, v), cap)
    result: dict[str, object] = {}

    def proc() -> Generator[object, None, None]:
        gen = drv.exchange(1, 1, GET_VERSION)
        try:
            while True:
                yield world.timeout(next(gen))
        except StopIteration as stop:
            result["resp"] = stop.value
            result["t"] = world.now

    world.process(proc())
    world.run()
    assert DoeObject.decode(result["resp"]).payload == VERSION_1_2  # type: ignore[arg-type]
    # the answer was not there at the first poll: at least one 1/128 s poll interval passed
    assert result["t"] == POLL_NS


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.sampled_from([DoeObjectType.SPDM, DoeObjectType.SECURED_SPDM]))
def test_echo_round_trip_any_payload(payload: bytes, typ: DoeObjectType) -> None:
    dsm = RecordingDsm()
    _, _, drv = build(dsm)
    if payload.startswith(b"SILENT") or (typ == DoeObjectType.SPDM and payload[:4] == GET_VERSION):
        return
    resp = DoeObject.decode(ManualClock().run(drv.exchange(1, typ, payload)))
    padded = payload + bytes(-len(payload) % 4)
    assert resp.payload == padded and resp.data_object_type == typ


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(DoeRegister)), st.integers(0, 0xFFFF_FFFF)), max_size=40))
def test_random_register_traffic_never_breaks_the_mailbox(ops: list[tuple[DoeRegister, int]]) -> None:
    """Arbitrary writes (garbage objects, stray Go/Abort, advances) never raise, keep status sane,
    and a driver can always recover with Abort and complete an exchange."""
    dsm = RecordingDsm()
    cs, mailbox, drv = build(dsm)
    for reg, value in ops:
        cs.write_dw(0x100 + reg, value)
        status = drv.status()
        assert not (status & DoeStatus.BUSY and status & DoeStatus.DATA_OBJECT_READY)
        assert status & ~(DoeStatus.BUSY | DoeStatus.ERROR | DoeStatus.INTERRUPT_STATUS
                          | DoeStatus.DATA_OBJECT_READY) == 0
    clock = ManualClock()
    clock.run(drv.abort())
    assert DoeObject.decode(clock.run(drv.exchange(1, 1, GET_VERSION))).payload == VERSION_1_2
