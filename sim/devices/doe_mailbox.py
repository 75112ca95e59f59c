"""The DOE mailbox at register level (PROTOCOLS.md §1.2, PCIe r6.0 §6.30, §7.9.24).

Software writes a request object DW by DW to Write Data, sets Go, polls Data Object Ready, then
reads each response DW from Read Data and writes Read Data to advance. The mailbox checks the
object (length, header), answers DOE Discovery itself from the protocols registered behind it, and
hands SPDM (type 1) and secured SPDM (type 2) payloads to a :class:`~sim.devices.security_manager.DoeBackend`.

Time. The register model knows no clock. On Go it builds a :class:`DoeRequest` and passes it to
``scheduler``; with no scheduler the request is answered at once. A SimPy wrapper in the engine
can instead wait the modeled firmware time and then call ``complete(request.ticket, outcome)``,
with the outcome from :meth:`DoeMailbox.respond` (or any other). Busy stays set in between, so a
driver polling Data Object Ready sees the delay. Every Abort or reset starts a new ticket, so a late
completion for an aborted request is dropped.

Behaviour choices, with their sources:

* Wrong length: an object whose written DW count differs from its header Length is silently
  discarded on Go — no Busy, no Error, no response (§1.2 item 3; QEMU cites PCIe r6.0 §6.30.1).
* Second requester: while Busy is set (a request is being processed) the mailbox is "temporarily
  unable to receive a new data object" (PCIe §7.9.24.4, DOE Busy); the spec leaves the device's
  reaction to a write anyway undefined and puts the duty on requesters to serialize (the §6.30.2
  text quoted on linux-acpi, 2021-05-19; Linux doe.c returns -EBUSY without writing). This model
  **ignores** such writes: Write Data DWs and Go are dropped and counted in ``stats.refused``,
  and Error is *not* set, because Error would make the legitimate requester abort its exchange.
  The same applies while an unread response is pending (Data Object Ready = 1): the mailbox has
  no room for a second exchange.
* Error is set (and answers nothing) when the mailbox cannot provide a response: a header that
  does not decode (non-zero reserved byte), an unsupported vendor ID / type, or a malformed
  discovery request. A Read Data advance with no response pending has no effect.
* A backend returning None means "no response": Busy clears, nothing becomes ready, and the
  requester times out after 1 s and aborts (Linux doe.c).
* Abort clears both mailboxes, Busy, Error and Data Object Ready at once, which is within the
  1 s bound Linux allows (§1.2).
* Interrupts: with Interrupt Enable set, Data Object Ready or Error setting raises Interrupt
  Status (RW1C) and calls ``raise_interrupt(vector)`` (QEMU behaviour, §1.2 item 6).
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sim.devices.config_space import DoeControl, DoeRegister, DoeStatus, ResetKind
from sim.devices.security_manager import DoeBackend
from sim.wire.codec import DecodeError
from sim.wire.doe import (
    MAX_LENGTH_DW,
    PCI_SIG_VENDOR_ID,
    DoeDiscoveryRequest,
    DoeDiscoveryResponse,
    DoeObject,
    DoeObjectType,
    doe_length_dw,
)

DISCOVERY_PROTOCOL = (PCI_SIG_VENDOR_ID, int(DoeObjectType.DISCOVERY))
OUT_OF_RANGE_DISCOVERY = (0xFFFF, 0xFF)  # QEMU's answer for an index past the list [S, §1.4]


class DoeOutcomeKind(enum.Enum):
    """How a processed request ends."""

    RESPONSE = "response"  # response object ready to read
    NO_RESPONSE = "no-response"  # handler chose not to answer; requester will time out
    ERROR = "error"  # the mailbox cannot provide a response: Error bit set


@dataclass(frozen=True)
class DoeOutcome:
    kind: DoeOutcomeKind
    response: bytes = b""  # a whole DOE object (header included), DW multiple

    @classmethod
    def of(cls, response: bytes | None) -> DoeOutcome:
        return cls(DoeOutcomeKind.NO_RESPONSE) if response is None else cls(DoeOutcomeKind.RESPONSE, response)


ERROR_OUTCOME = DoeOutcome(DoeOutcomeKind.ERROR)


@dataclass(frozen=True)
class DoeRequest:
    """A request object accepted on Go, waiting to be answered. ``raw`` is every DW as written."""

    ticket: int
    raw: bytes

    @property
    def vendor_id(self) -> int:
        return int.from_bytes(self.raw[0:2], "little")

    @property
    def data_object_type(self) -> int:
        return self.raw[2]


class DoeEventKind(enum.Enum):
    """Things a mailbox tells its observer (the trace, tests, the exposure of who saw what)."""

    REQUEST = "request"  # Go accepted a complete object
    RESPONSE = "response"  # a response became ready
    DISCARDED = "discarded"  # wrong length / empty object dropped on Go
    REFUSED = "refused"  # write or Go while busy / response pending
    ERROR = "error"
    ABORT = "abort"
    NO_RESPONSE = "no-response"
    STALE_COMPLETION = "stale-completion"


@dataclass(frozen=True)
class DoeEvent:
    kind: DoeEventKind
    data: bytes = b""
    detail: str = ""


@dataclass
class DoeStats:
    requests: int = 0
    responses: int = 0
    discarded: int = 0
    refused: int = 0
    errors: int = 0
    aborts: int = 0


@dataclass
class _State:
    write_buf: list[int] = field(default_factory=list)
    read_buf: list[int] = field(default_factory=list)
    read_pos: int = 0
    busy: bool = False
    error: bool = False
    ready: bool = False
    interrupt_status: bool = False
    pending: DoeRequest | None = None


class DoeMailbox:
    """One DOE instance. Attach it to a config space through :class:`~sim.devices.config_space.DoeCapability`.

    ``protocols`` lists the (vendor ID, type) pairs served behind this mailbox besides discovery,
    in discovery order; objects of those types go to ``backend.handle_doe``.
    """

    def __init__(self, backend: DoeBackend | None = None, *,
                 protocols: Sequence[tuple[int, int]] = ((PCI_SIG_VENDOR_ID, DoeObjectType.SPDM),
                                                         (PCI_SIG_VENDOR_ID, DoeObjectType.SECURED_SPDM)),
                 interrupt_vector: int | None = None,
                 raise_interrupt: Callable[[int], None] | None = None,
                 scheduler: Callable[[DoeRequest], None] | None = None,
                 observer: Callable[[DoeEvent], None] | None = None,
                 max_object_dw: int = MAX_LENGTH_DW) -> None:
        self.backend = backend
        self.protocols: tuple[tuple[int, int], ...] = (DISCOVERY_PROTOCOL,) + tuple(
            (int(v), int(t)) for v, t in protocols if (int(v), int(t)) != DISCOVERY_PROTOCOL)
        if len(self.protocols) > 256:
            raise ValueError("DOE discovery indexes are one byte: at most 256 protocols")
        self.interrupt_vector = interrupt_vector
        self.raise_interrupt = raise_interrupt
        self.scheduler = scheduler
        self.observer = observer
        self.max_object_dw = max_object_dw
        self.interrupt_enable = False
        self.stats = DoeStats()
        self._s = _State()
        self._ticket = 0
        self._drops_pending = 0
        self._corrupt_bits: collections.deque[int] = collections.deque()

    # --- register interface (DoeRegisterTarget) ---
    def read_register(self, reg: DoeRegister) -> int:
        s = self._s
        if reg is DoeRegister.CAPABILITIES:
            if self.interrupt_vector is None:
                return 0
            return 1 | (self.interrupt_vector & 0x7FF) << 1
        if reg is DoeRegister.CONTROL:
            return int(DoeControl.INTERRUPT_ENABLE) if self.interrupt_enable else 0  # Abort and Go read 0
        if reg is DoeRegister.STATUS:
            return int(self.status)
        if reg is DoeRegister.READ_DATA:
            if s.ready and not s.error and s.read_pos < len(s.read_buf):
                return s.read_buf[s.read_pos]
            return 0
        return 0  # Write Data reads as 0

    def write_register(self, reg: DoeRegister, value: int) -> None:
        if reg is DoeRegister.CONTROL:
            self._write_control(value)
        elif reg is DoeRegister.STATUS:
            if value & DoeStatus.INTERRUPT_STATUS:
                self._s.interrupt_status = False
        elif reg is DoeRegister.WRITE_DATA:
            self._write_data(value)
        elif reg is DoeRegister.READ_DATA:
            self._advance_read()

    def reset(self, kind: ResetKind) -> None:
        """Any reset of the function: both mailboxes and every status bit go back to idle."""
        self._s = _State()
        self.interrupt_enable = False
        self._ticket += 1

    # --- status ---
    @property
    def status(self) -> DoeStatus:
        s = self._s
        v = DoeStatus(0)
        if s.busy:
            v |= DoeStatus.BUSY
        if s.interrupt_status:
            v |= DoeStatus.INTERRUPT_STATUS
        if s.error:
            v |= DoeStatus.ERROR
        if s.ready:
            v |= DoeStatus.DATA_OBJECT_READY
        return v

    @property
    def pending(self) -> DoeRequest | None:
        """The request being processed (Busy), if any."""
        return self._s.pending

    # --- register behaviours ---
    def _write_control(self, value: int) -> None:
        self.interrupt_enable = bool(value & DoeControl.INTERRUPT_ENABLE)
        if value & DoeControl.ABORT:
            self.abort()
            return
        if value & DoeControl.GO:
            self._go()

    def abort(self) -> None:
        """DOE Abort: drop partial objects, any pending request and response; clear Busy/Error/Ready."""
        self.stats.aborts += 1
        self._ticket += 1
        interrupt = self._s.interrupt_status
        self._s = _State(interrupt_status=interrupt)
        self._emit(DoeEventKind.ABORT)

    # --- fault hooks (used by the fault injector through the endpoint) ---
    def inject_drop(self) -> None:
        """One more object submitted with Go is lost on its way into the mailbox (each call, one object)."""
        self._drops_pending += 1

    def inject_corruption(self, bit: int) -> None:
        """One bit (index into a submitted object, modulo its size) flips on its way in; each call affects
        the next object not yet affected, in order."""
        self._corrupt_bits.append(bit)

    def _write_data(self, value: int) -> None:
        s = self._s
        if s.busy or s.ready:
            self.stats.refused += 1
            self._emit(DoeEventKind.REFUSED, value.to_bytes(4, "little"), "Write Data while busy")
            return
        if len(s.write_buf) >= self.max_object_dw:
            return  # nothing larger than the maximum object can be valid; the Go will discard it
        s.write_buf.append(value & 0xFFFF_FFFF)

    def _go(self) -> None:
        s = self._s
        if s.busy or s.ready:
            self.stats.refused += 1
            self._emit(DoeEventKind.REFUSED, detail="Go while busy")
            return
        if s.error:
            return  # Error must be cleared by Abort first (§1.2 item 1)
        raw = b"".join(dw.to_bytes(4, "little") for dw in s.write_buf)
        s.write_buf = []
        if self._drops_pending:
            self._drops_pending -= 1
            self.stats.discarded += 1
            self._emit(DoeEventKind.DISCARDED, raw, "fault: object lost")
            return
        if self._corrupt_bits and raw:
            bit = self._corrupt_bits.popleft() % (8 * len(raw))
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            raw = bytes(flipped)
        if len(raw) < 8 or doe_length_dw(raw) != len(raw) // 4:
            self.stats.discarded += 1
            self._emit(DoeEventKind.DISCARDED, raw, "written DW count differs from the header Length")
            return
        self._ticket += 1
        request = DoeRequest(self._ticket, raw)
        s.busy = True
        s.pending = request
        self.stats.requests += 1
        self._emit(DoeEventKind.REQUEST, raw)
        if self.scheduler is not None:
            self.scheduler(request)
        else:
            self.complete(request.ticket, self.respond(request))

    def _advance_read(self) -> None:
        s = self._s
        if not s.ready or s.error:
            return  # nothing to read: an advance without a response has no effect
        s.read_pos += 1
        if s.read_pos == len(s.read_buf):
            s.read_buf, s.read_pos, s.ready = [], 0, False

    # --- answering ---
    def respond(self, request: DoeRequest) -> DoeOutcome:
        """Work out the answer to a request (pure apart from the backend call); does not touch registers."""
        try:
            obj = DoeObject.decode(request.raw)
        except DecodeError:
            return ERROR_OUTCOME
        key = (obj.vendor_id, obj.data_object_type)
        if key == DISCOVERY_PROTOCOL:
            return self._discovery(obj.payload)
        if key not in self.protocols or self.backend is None:
            return ERROR_OUTCOME
        response = self.backend.handle_doe(obj.data_object_type, obj.payload)
        if response is None:
            return DoeOutcome.of(None)
        try:
            return DoeOutcome.of(DoeObject(obj.vendor_id, obj.data_object_type, response).encode())
        except ValueError:  # EncodeError: larger than a DOE object can be
            return ERROR_OUTCOME

    def _discovery(self, payload: bytes) -> DoeOutcome:
        try:
            req = DoeDiscoveryRequest.decode(payload)
        except DecodeError:
            return ERROR_OUTCOME
        if req.index < len(self.protocols):
            vid, typ = self.protocols[req.index]
            nxt = req.index + 1 if req.index + 1 < len(self.protocols) else 0
        else:
            (vid, typ), nxt = OUT_OF_RANGE_DISCOVERY, 0
        return DoeOutcome.of(DoeDiscoveryResponse(vid, typ, nxt).to_doe().encode())

    def complete(self, ticket: int, outcome: DoeOutcome | bytes | None) -> bool:
        """Finish the request with ``ticket``. False (and nothing changes) if it was aborted meanwhile.

        ``outcome`` may be a :class:`DoeOutcome`, a whole response object, or None for no response.
        """
        s = self._s
        if s.pending is None or s.pending.ticket != ticket:
            self._emit(DoeEventKind.STALE_COMPLETION, detail=f"ticket {ticket}")
            return False
        if not isinstance(outcome, DoeOutcome):
            outcome = DoeOutcome.of(outcome)
        s.busy, s.pending = False, None
        if outcome.kind is DoeOutcomeKind.ERROR:
            self._set_error()
        elif outcome.kind is DoeOutcomeKind.NO_RESPONSE:
            self._emit(DoeEventKind.NO_RESPONSE)
        else:
            data = outcome.response
            if len(data) % 4 or len(data) < 8:
                self._set_error()
                return True
            s.read_buf = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
            s.read_pos = 0
            s.ready = True
            self.stats.responses += 1
            self._emit(DoeEventKind.RESPONSE, data)
            self._interrupt()
        return True

    def _set_error(self) -> None:
        self._s.error = True
        self.stats.errors += 1
        self._emit(DoeEventKind.ERROR)
        self._interrupt()

    def _interrupt(self) -> None:
        if not self.interrupt_enable or self.interrupt_vector is None or self._s.interrupt_status:
            return
        self._s.interrupt_status = True
        if self.raise_interrupt is not None:
            self.raise_interrupt(self.interrupt_vector)

    def _emit(self, kind: DoeEventKind, data: bytes = b"", detail: str = "") -> None:
        if self.observer is not None:
            self.observer(DoeEvent(kind, data, detail))
