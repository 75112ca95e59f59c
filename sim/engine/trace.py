"""The trace bus: every boundary crossing of a run, as one ordered stream of events.

Sources (register models, mailboxes, links, firmware) call :meth:`TraceBus.emit`; sinks subscribe
and never know who emitted (ns-3 style: sources decoupled from sinks). The bus itself keeps a
running SHA-256 over the canonical JSON lines, so :meth:`TraceBus.digest` identifies a run:
the same scenario and seed give the same digest, and tests pin it.

Sinks provided here: :class:`MemorySink` (a list), :class:`JsonLinesSink` (``trace.jsonl``) and
:class:`PcapSink` (``doe.pcap``: one record per DOE data object, link type 292, the number DMTF's
tools use for PCI DOE, INTEROP.md "pcap"). :func:`parse_pcap` reads such a file back.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import BinaryIO, TextIO

from sim.wire.codec import DecodeError

Clock = Callable[[], int]
_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii  # what json.dumps(ensure_ascii=True) quotes with
Sink = Callable[["TraceEvent"], None]


FieldValue = str | int | bool | None


class EventKind(enum.StrEnum):
    """What an event is, for code that decides anything from the trace (verdicts, expectations, reports,
    fingerprints). The summary is for people and is never parsed; ``kind`` and ``fields`` are the contract."""

    UNTYPED = "untyped"                  # carries bytes only; nothing is decided from it beyond channel and data
    CONFIG_READ = "config-read"
    CONFIG_WRITE = "config-write"
    DOE_OBJECT = "doe-object"            # a whole DOE data object at a boundary
    DOE_MAILBOX = "doe-mailbox"          # the mailbox's own events (abort, error, busy, ready)
    DOE_FAILED = "doe-failed"            # a DOE exchange the host driver gave up on
    DOE_NO_RESPONSE = "doe-no-response"  # a relayed DOE request that got no answer
    TLP = "tlp"                          # a TLP as its sender put it on the link
    TLP_MODIFIED = "tlp-modified"        # an interposer changed a TLP in transit
    TLP_CORRUPTED = "tlp-corrupted"      # an injected fault flipped a bit
    TLP_INJECTED = "tlp-injected"        # a TLP from a component that is not an end of the link
    TLP_DROPPED = "tlp-dropped"          # a TLP withheld on the link (field ``by``: interposer, fault, link-down)
    TLP_MALFORMED = "tlp-malformed"
    TEE_REFUSED = "tee-refused"          # a T=1 request refused without a Secure stream (memory or device side)
    ERROR_MESSAGE = "error-message"      # ERR_COR/NONFATAL/FATAL received
    FIRMWARE_MESSAGE = "firmware-message"  # a command to or a response from platform firmware
    KEY_SLOT = "key-slot"                # a key-slot operation through the key-programming path
    DEVICE_KEY = "device-key"            # a device-side IDE event (key set programmed, go, stop)
    STREAM_STATE = "stream-state"
    IDE_INTEGRITY = "ide-integrity"      # an integrity check failed
    LINK_STATE = "link-state"
    RESET_SIGNAL = "reset-signal"
    DPC = "dpc"                          # containment triggered / released / retrain requested
    PHASE = "phase"                      # a securing-flow milestone
    FAULT = "fault"                      # an injected fault
    SCENARIO = "scenario"                # a scenario timeline event, action or failed action
    HOST = "host"                        # a host-kernel event (field ``event``: a HostEventKind value or step)
    GUEST_TDI = "guest-tdi"              # a guest's record of one of its TDIs changed (field ``what``)
    VMM = "vmm"                          # assignment, stream, rebind and reset notices (field ``what``)
    VMM_RELAY = "vmm-relay"
    DMA = "dma"                          # a scenario DMA completed or failed (field ``ok``)
    KEY_REFRESH = "key-refresh"
    DEVICE_FIRMWARE = "device-firmware"  # a device's firmware was updated
    DEVICE = "device"                    # an endpoint's own event (reset, power, TDI transition ...)
    ADVERSARY = "adversary"              # an adversary was installed or acted
    PREMISE = "premise"                  # the scenario premise of an adversary strategy


class Channel(enum.StrEnum):
    """What kind of boundary an event crossed."""

    CONFIG = "config"          # a config-space register read or write (DW granularity)
    DOE = "doe"                # a complete DOE data object (header included)
    TLP = "tlp"                # a TLP on a PCIe link, exactly the bytes on the wire
    FIRMWARE = "firmware"      # a command to or a response from platform firmware
    KEY_SLOT = "key-slot"      # a Root Port key-slot operation through the key-programming path
    LINK = "link"              # link state changes and reset signals (no payload bytes)
    IDE = "ide"                # IDE stream state changes and integrity failures
    FAULT = "fault"            # an injected fault
    SOCKET = "socket"          # a frame on an external socket (interop with reference tools)


@dataclasses.dataclass(frozen=True, slots=True)
class TraceEvent:
    """One boundary crossing.

    ``observers`` are components other than the two ends that see the same bytes in transit (an
    interposer on a link). ``secured_plaintext`` is set by the sender when ``data`` is an encrypted
    record: the bytes inside it, so that the exposure tracker can tell which secrets crossed as
    ciphertext. It is never written to the trace files (they show only what was on the wire).
    """

    time_ns: int
    source: str
    destination: str
    channel: Channel
    data: bytes = b""
    summary: str = ""
    observers: tuple[str, ...] = ()
    secured_plaintext: bytes | None = None
    kind: EventKind = EventKind.UNTYPED
    fields: tuple[tuple[str, FieldValue], ...] = ()
    _line: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _canonical: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def get(self, name: str, default: FieldValue = None) -> FieldValue:
        """A typed field of the event (``default`` when it has none of that name)."""
        for key, value in self.fields:
            if key == name:
                return value
        return default

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "t": self.time_ns,
            "from": self.source,
            "to": self.destination,
            "channel": str(self.channel),
            "data": self.data.hex(),
            "summary": self.summary,
            "kind": str(self.kind),
        }
        if self.fields:
            out["fields"] = dict(self.fields)
        if self.observers:
            out["observers"] = list(self.observers)
        if self.secured_plaintext is not None:
            out["secured"] = True
        return out

    def json_line(self) -> str:
        """The trace.jsonl line: sorted keys, no spaces, hex bytes, ASCII.

        Exactly ``json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)``,
        written out key by key, and once per event, because a run emits one line per config-space DW access.
        """
        if self._line is None:
            object.__setattr__(self, "_line", self._render(with_summary=True))
        assert self._line is not None
        return self._line

    def canonical_line(self) -> str:
        """What identifies the event: the JSON line without the human summary. The trace digest and golden
        fingerprints are computed over it, so rewording a summary changes neither."""
        if self._canonical is None:
            object.__setattr__(self, "_canonical", self._render(with_summary=False))
        assert self._canonical is not None
        return self._canonical

    def _render(self, *, with_summary: bool) -> str:
        observers = (',"observers":[' + ",".join(map(_json_str, self.observers)) + "]") if self.observers else ""
        secured = ',"secured":true' if self.secured_plaintext is not None else ""
        fields = (',"fields":{' + ",".join(f"{_json_str(k)}:{_json_value(v)}" for k, v in sorted(self.fields))
                  + "}") if self.fields else ""
        summary = f',"summary":{_json_str(self.summary)}' if with_summary else ""
        return (f'{{"channel":{_json_str(self.channel.value)},"data":"{self.data.hex()}"{fields},'
                f'"from":{_json_str(self.source)},"kind":{_json_str(self.kind.value)}{observers}{secured}{summary},'
                f'"t":{int(self.time_ns)},"to":{_json_str(self.destination)}}}')


def _json_value(value: FieldValue) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    return _json_str(str(value))


class TraceBus:
    """Publish/subscribe for trace events, stamped with the world's clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sinks: list[Sink] = []
        self._hash = hashlib.sha256()
        self.count = 0

    def subscribe(self, sink: Sink) -> Callable[[], None]:
        """Add a sink; returns a function that removes it again."""
        self._sinks.append(sink)

        def unsubscribe() -> None:
            if sink in self._sinks:
                self._sinks.remove(sink)

        return unsubscribe

    def emit(self, source: str, destination: str, channel: Channel, data: bytes = b"", summary: str = "", *,
             observers: Iterable[str] = (), secured_plaintext: bytes | None = None,
             kind: EventKind = EventKind.UNTYPED, fields: Mapping[str, FieldValue] | None = None) -> TraceEvent:
        event = TraceEvent(int(self._clock()), source, destination,
                           channel if type(channel) is Channel else Channel(channel),
                           data if type(data) is bytes else bytes(data), summary,
                           observers if type(observers) is tuple else tuple(observers),
                           None if secured_plaintext is None else bytes(secured_plaintext),
                           kind, tuple(sorted(fields.items())) if fields else ())
        self._hash.update(event.canonical_line().encode("ascii") + b"\n")
        self.count += 1
        for sink in tuple(self._sinks):
            sink(event)
        return event

    def digest(self) -> str:
        """SHA-256 (hex) over every canonical line (:meth:`TraceEvent.canonical_line`) emitted so far, each
        followed by a newline."""
        return self._hash.hexdigest()


def digest_of(events: Iterable[TraceEvent]) -> str:
    """The digest a bus would have after emitting exactly these events (for stored traces)."""
    h = hashlib.sha256()
    for e in events:
        h.update(e.canonical_line().encode("ascii") + b"\n")
    return h.hexdigest()


class MemorySink:
    """Keeps every event in order; what tests and the report builder read."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []

    def __call__(self, event: TraceEvent) -> None:
        self.events.append(event)

    def on(self, channel: Channel) -> list[TraceEvent]:
        return [e for e in self.events if e.channel is channel]

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)


class JsonLinesSink:
    """Writes ``trace.jsonl``: one canonical JSON object per line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: TraceEvent) -> None:
        self.stream.write(event.json_line() + "\n")


# ----------------------------------------------------------------------------------------------
# pcap (classic libpcap format; see tcpdump's pcap-savefile(5) and libspdm's industry_standard/pcap.h)
# ----------------------------------------------------------------------------------------------

LINKTYPE_PCI_DOE = 292    # DMTF-private number used by spdm-emu / spdm_dump for DOE (INTEROP.md)
LINKTYPE_MCTP = 291
PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAP_VERSION = (2, 4)
# DMTF's spdm_dump refuses a file whose snaplen exceeds 0x10000 (its PCAP_PACKET_MAX_SIZE), so that is
# the snapshot length; a larger DOE object (up to 2^18 DW = 1 MiB, PROTOCOLS.md §1.3) is cut at 64 KiB
# with its true length kept in orig_len. Every object this simulator sends is far smaller.
PCAP_SNAPLEN = 0x10000
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


def pcap_global_header(linktype: int = LINKTYPE_PCI_DOE, *, nanosecond: bool = True,
                       snaplen: int = PCAP_SNAPLEN) -> bytes:
    magic = PCAP_MAGIC_NSEC if nanosecond else PCAP_MAGIC_USEC
    return _GLOBAL.pack(magic, PCAP_VERSION[0], PCAP_VERSION[1], 0, 0, snaplen, linktype)


def pcap_record(time_ns: int, data: bytes, *, nanosecond: bool = True, snaplen: int = PCAP_SNAPLEN) -> bytes:
    sec, frac = divmod(time_ns, 1_000_000_000)
    if not nanosecond:
        frac //= 1000
    if sec >= 1 << 32:
        raise ValueError(f"simulated time {time_ns} ns does not fit a pcap timestamp")
    incl = data[:snaplen]
    return _RECORD.pack(sec, frac, len(incl), len(data)) + incl


class PcapSink:
    """Writes one pcap record per DOE data object that passes ``accept``.

    The default accepts every DOE-channel event. A run that traces each hop of a relayed object
    (guest -> VMM -> host -> device) should pass a filter for the mailbox boundary only, e.g.
    ``lambda e: e.channel is Channel.DOE and "rp0.dev0" in (e.source, e.destination)``, so that
    the file is one request/response stream as spdm_dump expects.
    """

    def __init__(self, stream: BinaryIO, *, accept: Callable[[TraceEvent], bool] | None = None,
                 linktype: int = LINKTYPE_PCI_DOE, nanosecond: bool = True) -> None:
        self.stream = stream
        self.nanosecond = nanosecond
        self.accept = accept or (lambda e: e.channel is Channel.DOE)
        self.records = 0
        stream.write(pcap_global_header(linktype, nanosecond=nanosecond))

    def __call__(self, event: TraceEvent) -> None:
        if self.accept(event):
            self.stream.write(pcap_record(event.time_ns, event.data, nanosecond=self.nanosecond))
            self.records += 1


@dataclasses.dataclass(frozen=True)
class PcapPacket:
    time_ns: int
    data: bytes
    orig_len: int


@dataclasses.dataclass(frozen=True)
class PcapFile:
    magic: int
    version: tuple[int, int]
    snaplen: int
    linktype: int
    packets: tuple[PcapPacket, ...]

    @property
    def nanosecond(self) -> bool:
        return self.magic == PCAP_MAGIC_NSEC


def parse_pcap(data: bytes) -> PcapFile:
    """Read a classic little-endian pcap file (either timestamp resolution); DecodeError on bad input."""
    name = "PcapFile"
    if len(data) < _GLOBAL.size:
        raise DecodeError(name, "global_header", 0, f"needs {_GLOBAL.size} bytes, only {len(data)} present")
    magic, vmaj, vmin, _zone, _sigfigs, snaplen, linktype = _GLOBAL.unpack_from(data, 0)
    if magic not in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
        raise DecodeError(name, "magic", 0, f"0x{magic:08x} is not a little-endian pcap magic")
    scale = 1 if magic == PCAP_MAGIC_NSEC else 1000
    packets: list[PcapPacket] = []
    pos = _GLOBAL.size
    while pos < len(data):
        if len(data) - pos < _RECORD.size:
            raise DecodeError(name, f"record[{len(packets)}].header", pos,
                              f"needs {_RECORD.size} bytes, only {len(data) - pos} left")
        sec, frac, incl, orig = _RECORD.unpack_from(data, pos)
        if frac >= 1_000_000_000 // scale:
            raise DecodeError(name, f"record[{len(packets)}].ts_frac", pos + 4, f"fraction {frac} out of range")
        if incl > orig or incl > snaplen:
            raise DecodeError(name, f"record[{len(packets)}].incl_len", pos + 8,
                              f"incl_len {incl} exceeds orig_len {orig} or snaplen {snaplen}")
        pos += _RECORD.size
        if len(data) - pos < incl:
            raise DecodeError(name, f"record[{len(packets)}].data", pos,
                              f"needs {incl} bytes, only {len(data) - pos} left")
        packets.append(PcapPacket(sec * 1_000_000_000 + frac * scale, data[pos:pos + incl], orig))
        pos += incl
    return PcapFile(magic, (vmaj, vmin), snaplen, linktype, tuple(packets))
