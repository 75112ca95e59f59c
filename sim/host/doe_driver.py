"""The host's DOE driver: Linux ``drivers/pci/doe.c`` behaviour at register level, as SimPy processes.

One exchange (TRUST_MODELS.md §1 "DOE", PROTOCOLS.md §1.2):

1. read Status: Busy set → -EBUSY ("another entity is sending conflicting requests"), Error set → -EIO;
   Linux then *aborts* the mailbox either way (``signal_task_abort``), and so does this driver by default;
2. write the object DW by DW to Write Data, then Go;
3. wait for Data Object Ready: read Status at once, then every 1/128 s (``PCI_DOE_POLL_INTERVAL``) until
   1 s after Go (``PCI_DOE_TIMEOUT``); Error → abort. Alternatively, when the DOE capability advertises
   an interrupt, :attr:`DoeWaitMode.INTERRUPT` enables it and sleeps until the mailbox's MSI (or the same
   1 s deadline): equivalent register traffic minus the polls, and no 7.8 ms quantisation of the
   latency. Upstream Linux polls, so POLL is the default;
4. read each response DW from Read Data and write Read Data to advance; the first DW must carry the
   request's vendor ID and type, Length < 2 is an error, Data Object Ready must still be set before the
   last acknowledge, and Status is checked for Error once more at the end;
5. any failure aborts: write Abort, then (after each 1/128 s) read Status until Busy and Error are clear,
   for at most 1 s; an abort that does not complete marks the mailbox dead (every later exchange fails
   at once, as ``PCI_DOE_FLAG_DEAD`` does).

Every config access costs ``Op.CONFIG_DW_ACCESS`` at the driver's component class (it happens after
that delay) and is traced on ``Channel.CONFIG`` by the link. The whole request object is traced once
on ``Channel.DOE`` host → device when Go is written, with ``secured_plaintext`` passed through if the
caller knows the record's plaintext, and the whole response object device → host once read.

A mailbox is used by one exchange of this driver at a time (Linux queues tasks per mailbox); Busy is
only ever seen when someone outside this driver uses the mailbox. Mailboxes are brought up with one
abort (to resynchronise, as Linux does when it creates a mailbox) and the discovery walk that lists
the supported (vendor ID, type) pairs. :meth:`DoeDriver.reinit` does the same after a reset; it also
clears a dead mark, which Linux only does by re-creating the mailbox when the device is re-probed [U].
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Generator
from typing import Any, Protocol

import simpy

from sim.devices.config_space import DoeControl, DoeRegister, DoeStatus
from sim.engine.timing import ComponentClass, Op
from sim.engine.trace import Channel, EventKind
from sim.engine.world import World
from sim.wire.codec import DecodeError
from sim.wire.doe import (
    MAX_LENGTH_DW,
    PCI_SIG_VENDOR_ID,
    DiscoveryVersion,
    DoeDiscoveryRequest,
    DoeDiscoveryResponse,
    DoeObject,
    DoeObjectType,
)

SimGen = Generator[Any, Any, Any]

NS_PER_S = 1_000_000_000
DOE_TIMEOUT_NS = NS_PER_S                 # PCI_DOE_TIMEOUT = HZ (PCIe r6.0 §6.30.2)
DOE_POLL_INTERVAL_NS = NS_PER_S // 128    # PCI_DOE_POLL_INTERVAL = PCI_DOE_TIMEOUT / 128
MAX_DISCOVERY_ENTRIES = 256               # the index is one byte
ALL_ONES = 0xFFFF_FFFF
_LENGTH_MASK = MAX_LENGTH_DW - 1


class DoeWaitMode(enum.StrEnum):
    """How the driver waits for Data Object Ready."""

    POLL = "poll"            # Linux: read Status every 1/128 s
    INTERRUPT = "interrupt"  # sleep until the mailbox's MSI (needs the capability's interrupt support)


class DoeResultCode(enum.StrEnum):
    """How an exchange ended (Linux return values in the comments)."""

    OK = "ok"
    BUSY = "busy"                  # -EBUSY: Busy was set before we wrote anything
    ERROR = "error"                # -EIO: Error set before sending or while waiting
    TIMEOUT = "timeout"            # -EIO: no Data Object Ready within 1 s of Go
    BAD_RESPONSE = "bad-response"  # -EIO: wrong vendor/type, bad length, Ready dropped, Error after reading
    DEAD = "dead"                  # -EIO: the mailbox was marked dead by an earlier failed abort
    UNSUPPORTED = "unsupported"    # the protocol is not in the mailbox's discovery list
    NO_MAILBOX = "no-mailbox"      # the device has no DOE capability known to the driver


@dataclasses.dataclass(frozen=True)
class DoeResult:
    """What one exchange did: outcome, response payload (with its DW padding, as Linux returns it)."""

    code: DoeResultCode
    response: bytes | None = None
    started_ns: int = 0
    finished_ns: int = 0
    polls: int = 0
    aborted: bool = False
    mailbox_died: bool = False

    @property
    def ok(self) -> bool:
        return self.code is DoeResultCode.OK

    @property
    def latency_ns(self) -> int:
        return self.finished_ns - self.started_ns


class ConfigPort(Protocol):
    """Config requests to the device below a Root Port (``sim.rootport.link.Link`` fits)."""

    def cfg_read(self, function: int, offset: int, *, by: str) -> int: ...

    def cfg_write(self, function: int, offset: int, value: int, byte_enable: int = 0xF, *, by: str) -> bool: ...


class InterruptLine(Protocol):
    """An MSI the mailbox raises (``sim.scenario.platform.DoeInterruptLine`` fits)."""

    listeners: list[Callable[[int], None]]


@dataclasses.dataclass
class DoeStats:
    exchanges: int = 0
    ok: int = 0
    busy: int = 0
    errors: int = 0
    timeouts: int = 0
    bad_responses: int = 0
    aborts: int = 0
    failed_aborts: int = 0
    polls: int = 0
    config_accesses: int = 0


@dataclasses.dataclass
class DoeMailboxHandle:
    """The driver's view of one DOE capability: where it is and what it learnt about it."""

    device: str            # the platform's device id
    path: str              # the endpoint's component path (trace destination)
    port: ConfigPort
    function: int
    offset: int            # config offset of the DOE extended capability
    lock: simpy.Resource
    irq: InterruptLine | None = None
    cap_version: int = 0
    interrupt_capable: bool = False
    interrupt_enabled: bool = False
    protocols: tuple[tuple[int, int], ...] = ()
    dead: bool = False
    initialized: bool = False
    _irq_event: simpy.Event | None = None

    def supports(self, object_type: int, vendor_id: int = PCI_SIG_VENDOR_ID) -> bool:
        return (vendor_id, int(object_type)) in self.protocols


class DoeDriver:
    """DOE mailboxes of every device the host enumerated, driven at register level (module docstring)."""

    def __init__(self, world: World, *, path: str = "host", wait_mode: DoeWaitMode = DoeWaitMode.POLL,
                 abort_on_busy: bool = True) -> None:
        self.world = world
        self.path = path
        self.wait_mode = DoeWaitMode(wait_mode)
        self.abort_on_busy = abort_on_busy
        if path not in world.components():
            world.register(path, self, ComponentClass.HOST_CPU)
        self.mailboxes: dict[str, DoeMailboxHandle] = {}
        self.stats = DoeStats()
        self.results: list[tuple[str, DoeObjectType | int, DoeResult]] = []
        self.last_result: DoeResult | None = None

    # -- mailboxes -------------------------------------------------------------------------------------

    def add_mailbox(self, device: str, path: str, port: ConfigPort, function: int, offset: int, *,
                    irq: InterruptLine | None = None) -> DoeMailboxHandle:
        """Record a DOE capability found by enumeration (no I/O; :meth:`init_mailbox` brings it up)."""
        mb = DoeMailboxHandle(device, path, port, function, offset, simpy.Resource(self.world.env, capacity=1), irq)
        self.mailboxes[device] = mb
        if irq is not None:
            irq.listeners.append(lambda _vector, mb=mb: self._on_irq(mb))
        return mb

    def mailbox(self, device: str) -> DoeMailboxHandle | None:
        return self.mailboxes.get(device)

    def init_mailbox(self, device: str) -> SimGen:
        """Resynchronise (one abort), read the capability, enable its interrupt if waiting on it, and
        walk discovery. Returns the protocol list (empty when the mailbox is dead or absent)."""
        mb = self.mailboxes.get(device)
        if mb is None:
            return ()
        with mb.lock.request() as req:
            yield req
            mb.dead = False
            header = yield from self._read(mb, 0)
            mb.cap_version = (header >> 16) & 0xF
            caps = yield from self._read(mb, DoeRegister.CAPABILITIES)
            mb.interrupt_capable = bool(caps & 1) and header != ALL_ONES
            mb.interrupt_enabled = self.wait_mode is DoeWaitMode.INTERRUPT and mb.interrupt_capable \
                and mb.irq is not None
            if not (yield from self._abort(mb)):
                mb.protocols = ()
                mb.initialized = True
                return ()
            if mb.interrupt_enabled:
                yield from self._write(mb, DoeRegister.CONTROL, int(DoeControl.INTERRUPT_ENABLE))
            mb.protocols = ()
            protocols = yield from self._discover(mb)
            mb.protocols = tuple(protocols)
            mb.initialized = True
        self._note(mb, f"DOE mailbox up: {len(mb.protocols)} protocols "
                       f"{', '.join(f'{v:04x}:{t:02x}' for v, t in mb.protocols)}")
        return mb.protocols

    def reinit(self, device: str) -> SimGen:
        """Bring a mailbox up again after its device was reset (same as :meth:`init_mailbox`)."""
        return (yield from self.init_mailbox(device))

    # -- exchanges ---------------------------------------------------------------------------------------

    def exchange(self, device: str, object_type: DoeObjectType | int, payload: bytes, *,
                 secured_plaintext: bytes | None = None) -> SimGen:
        """One request/response; returns the response payload (DW padding included) or None on failure.

        The details of the last exchange are in :attr:`last_result` (and :attr:`results`)."""
        result = yield from self.exchange_result(device, object_type, payload, secured_plaintext=secured_plaintext)
        return result.response if result.ok else None

    def exchange_result(self, device: str, object_type: DoeObjectType | int, payload: bytes, *,
                        secured_plaintext: bytes | None = None) -> SimGen:
        """As :meth:`exchange`, returning the full :class:`DoeResult`."""
        mb = self.mailboxes.get(device)
        started = self.world.now
        if mb is None:
            result = DoeResult(DoeResultCode.NO_MAILBOX, started_ns=started, finished_ns=started)
        else:
            with mb.lock.request() as req:
                yield req
                result = yield from self._exchange(mb, int(object_type), bytes(payload), secured_plaintext)
        self._account(result)
        self.last_result = result
        self.results.append((device, _type_name(int(object_type)), result))
        return result

    # -- internals: one exchange ----------------------------------------------------------------------------

    def _exchange(self, mb: DoeMailboxHandle, object_type: int, payload: bytes,
                  secured_plaintext: bytes | None) -> SimGen:
        started = self.world.now
        if mb.dead:
            return DoeResult(DoeResultCode.DEAD, started_ns=started, finished_ns=started)
        if mb.initialized and object_type != DoeObjectType.DISCOVERY and not mb.supports(object_type):
            return DoeResult(DoeResultCode.UNSUPPORTED, started_ns=started, finished_ns=started)
        obj = DoeObject.pcisig(DoeObjectType(object_type), payload) if object_type in _KNOWN_TYPES \
            else DoeObject(PCI_SIG_VENDOR_ID, object_type, payload)
        raw = obj.encode()

        status = yield from self._read(mb, DoeRegister.STATUS)
        failure: DoeResultCode | None = None
        if status & DoeStatus.BUSY:
            failure = DoeResultCode.BUSY
            self._note(mb, "DOE busy detected; another entity is sending conflicting requests")
            if not self.abort_on_busy:
                return DoeResult(failure, started_ns=started, finished_ns=self.world.now)
        elif status & DoeStatus.ERROR:
            failure = DoeResultCode.ERROR
        if failure is not None:
            return (yield from self._fail(mb, failure, started, 0))

        for i in range(0, len(raw), 4):
            yield from self._write(mb, DoeRegister.WRITE_DATA, int.from_bytes(raw[i:i + 4], "little"))
        if mb.interrupt_enabled:
            mb._irq_event = self.world.env.event()
        yield from self._write(mb, DoeRegister.CONTROL, int(DoeControl.GO)
                               | (int(DoeControl.INTERRUPT_ENABLE) if mb.interrupt_enabled else 0))
        self.world.trace.emit(self.path, mb.path, Channel.DOE, raw, _summary(raw), secured_plaintext=secured_plaintext,
                              kind=EventKind.DOE_OBJECT)

        deadline = self.world.now + DOE_TIMEOUT_NS
        polls = 0
        while True:
            status = yield from self._read(mb, DoeRegister.STATUS)
            if status & DoeStatus.ERROR:
                return (yield from self._fail(mb, DoeResultCode.ERROR, started, polls))
            if status & DoeStatus.DATA_OBJECT_READY:
                break
            if self.world.now > deadline:
                return (yield from self._fail(mb, DoeResultCode.TIMEOUT, started, polls))
            polls += 1
            if mb.interrupt_enabled:
                yield from self._wait_irq(mb, deadline)
            else:
                yield self.world.timeout(DOE_POLL_INTERVAL_NS)

        response, ok = yield from self._receive(mb, object_type)
        if not ok:
            return (yield from self._fail(mb, DoeResultCode.BAD_RESPONSE, started, polls))
        self.world.trace.emit(mb.path, self.path, Channel.DOE, response, _summary(response), kind=EventKind.DOE_OBJECT)
        return DoeResult(DoeResultCode.OK, response[8:], started, self.world.now, polls)

    def _receive(self, mb: DoeMailboxHandle, object_type: int) -> SimGen:
        """Read and acknowledge the response object; (object bytes, ok)."""
        dws: list[int] = []
        first = yield from self._read(mb, DoeRegister.READ_DATA)
        yield from self._write(mb, DoeRegister.READ_DATA, 0)
        dws.append(first)
        if first & 0xFFFF != PCI_SIG_VENDOR_ID or (first >> 16) & 0xFF != object_type:
            return _pack(dws), False
        second = yield from self._read(mb, DoeRegister.READ_DATA)
        yield from self._write(mb, DoeRegister.READ_DATA, 0)
        dws.append(second)
        length = second & _LENGTH_MASK or MAX_LENGTH_DW
        if length < 2:
            return _pack(dws), False
        for i in range(length - 2):
            dws.append((yield from self._read(mb, DoeRegister.READ_DATA)))
            if i == length - 3:
                status = yield from self._read(mb, DoeRegister.STATUS)
                if not status & DoeStatus.DATA_OBJECT_READY:
                    return _pack(dws), False
            yield from self._write(mb, DoeRegister.READ_DATA, 0)
        status = yield from self._read(mb, DoeRegister.STATUS)
        if status & DoeStatus.ERROR:
            return _pack(dws), False
        return _pack(dws), True

    def _fail(self, mb: DoeMailboxHandle, code: DoeResultCode, started: int, polls: int) -> SimGen:
        self._note(mb, f"DOE exchange failed ({code}): aborting", EventKind.DOE_FAILED, {"code": str(code)})
        ok = yield from self._abort(mb)
        return DoeResult(code, None, started, self.world.now, polls, aborted=True, mailbox_died=not ok)

    def _abort(self, mb: DoeMailboxHandle) -> SimGen:
        """pci_doe_abort: write Abort, then wait/poll up to 1 s for Busy and Error to clear."""
        self.stats.aborts += 1
        deadline = self.world.now + DOE_TIMEOUT_NS
        yield from self._write(mb, DoeRegister.CONTROL, int(DoeControl.ABORT))
        while True:
            yield self.world.timeout(DOE_POLL_INTERVAL_NS)
            status = yield from self._read(mb, DoeRegister.STATUS)
            if not status & (DoeStatus.ERROR | DoeStatus.BUSY):
                return True
            if self.world.now > deadline:
                break
        self.stats.failed_aborts += 1
        mb.dead = True
        self._note(mb, "DOE abort timed out: mailbox dead")
        return False

    def _discover(self, mb: DoeMailboxHandle) -> SimGen:
        version = DiscoveryVersion.CAP_V2 if mb.cap_version >= 2 else DiscoveryVersion.CAP_V1
        found: list[tuple[int, int]] = []
        index = 0
        for _ in range(MAX_DISCOVERY_ENTRIES):
            request = DoeDiscoveryRequest(index, version).encode()
            result = yield from self._exchange(mb, int(DoeObjectType.DISCOVERY), request, None)
            self._account(result)
            if not result.ok or result.response is None:
                break
            try:
                entry = DoeDiscoveryResponse.decode(result.response[:4])
            except DecodeError:
                break
            found.append((entry.vendor_id, entry.data_object_type))
            index = entry.next_index
            if index == 0:
                break
        return found

    # -- internals: registers -------------------------------------------------------------------------------

    def _read(self, mb: DoeMailboxHandle, reg: int) -> SimGen:
        yield self.world.delay(self.path, Op.CONFIG_DW_ACCESS)
        self.stats.config_accesses += 1
        return mb.port.cfg_read(mb.function, mb.offset + int(reg), by=self.path)

    def _write(self, mb: DoeMailboxHandle, reg: int, value: int) -> SimGen:
        yield self.world.delay(self.path, Op.CONFIG_DW_ACCESS)
        self.stats.config_accesses += 1
        mb.port.cfg_write(mb.function, mb.offset + int(reg), value & ALL_ONES, by=self.path)

    def _wait_irq(self, mb: DoeMailboxHandle, deadline: int) -> SimGen:
        event = mb._irq_event
        remaining = max(0, deadline - self.world.now) + 1
        if event is None or event.triggered:
            event = mb._irq_event = self.world.env.event()
        yield event | self.world.timeout(remaining)
        if event.triggered:
            mb._irq_event = self.world.env.event()
            yield from self._write(mb, DoeRegister.STATUS, int(DoeStatus.INTERRUPT_STATUS))  # RW1C

    def _on_irq(self, mb: DoeMailboxHandle) -> None:
        event = mb._irq_event
        if event is not None and not event.triggered:
            event.succeed()

    def _note(self, mb: DoeMailboxHandle, summary: str, kind: EventKind = EventKind.DOE_MAILBOX,
              fields: dict[str, str] | None = None) -> None:
        self.world.trace.emit(self.path, mb.path, Channel.CONFIG, b"", summary, kind=kind, fields=fields)

    def _account(self, result: DoeResult) -> None:
        s = self.stats
        s.exchanges += 1
        s.polls += result.polls
        code = result.code
        if code is DoeResultCode.OK:
            s.ok += 1
        elif code is DoeResultCode.BUSY:
            s.busy += 1
        elif code is DoeResultCode.TIMEOUT:
            s.timeouts += 1
        elif code is DoeResultCode.BAD_RESPONSE:
            s.bad_responses += 1
        elif code is not DoeResultCode.UNSUPPORTED:
            s.errors += 1


_KNOWN_TYPES = frozenset(int(t) for t in DoeObjectType)


def _type_name(object_type: int) -> DoeObjectType | int:
    return DoeObjectType(object_type) if object_type in _KNOWN_TYPES else object_type


def _pack(dws: list[int]) -> bytes:
    return b"".join(dw.to_bytes(4, "little") for dw in dws)


def _summary(raw: bytes) -> str:
    try:
        obj = DoeObject.decode(raw)
    except DecodeError as exc:
        return f"DOE object ({len(raw)} bytes, undecodable: {exc.field})"
    text = obj.summary()
    if obj.object_type is DoeObjectType.SPDM and len(obj.payload) >= 2:
        text += f" SPDM 0x{obj.payload[1]:02x}"
    elif obj.object_type is DoeObjectType.SECURED_SPDM and len(obj.payload) >= 4:
        text += f" session 0x{int.from_bytes(obj.payload[:4], 'little'):08x}"
    return text
