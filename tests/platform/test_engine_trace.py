"""Trace bus: canonical JSON lines, digest, pcap export (link type 292) read back byte by byte."""

from __future__ import annotations

import io
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.trace import (
    LINKTYPE_PCI_DOE,
    PCAP_MAGIC_NSEC,
    PCAP_MAGIC_USEC,
    Channel,
    EventKind,
    JsonLinesSink,
    MemorySink,
    PcapSink,
    TraceBus,
    TraceEvent,
    digest_of,
    parse_pcap,
)
from sim.engine.world import World
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeObject

GET_VERSION_DOE = bytes.fromhex("010001000300000010840000")  # PROTOCOLS.md §1.3 worked example
VERSION_DOE = bytes.fromhex("0100010006000000" "10040000000500100011001200130014")  # INTEROP.md VERSION 1.0-1.4


def _emit_some(world: World) -> None:
    world.trace.emit("host", "rp0.dev0", Channel.DOE, GET_VERSION_DOE, "GET_VERSION")
    world.call_later(1_500_000_123, lambda: world.trace.emit("rp0.dev0", "host", Channel.DOE, VERSION_DOE, "VERSION"))
    world.call_later(7, lambda: world.trace.emit("host", "rp0", Channel.CONFIG, b"\x01\x00\x00\x00", "CfgWr"))
    world.run()


def test_json_lines_are_canonical_and_digest_matches() -> None:
    world = World(1)
    mem, text = MemorySink(), io.StringIO()
    world.trace.subscribe(mem)
    world.trace.subscribe(JsonLinesSink(text))
    _emit_some(world)
    lines = text.getvalue().splitlines()
    assert len(lines) == 3 == len(mem)
    first = json.loads(lines[0])
    assert list(first) == sorted(first)  # deterministic key order
    assert first == {"channel": "doe", "data": GET_VERSION_DOE.hex(), "from": "host", "summary": "GET_VERSION",
                     "kind": "untyped", "t": 0, "to": "rp0.dev0"}
    assert [json.loads(line)["t"] for line in lines] == [0, 7, 1_500_000_123]
    assert " " not in lines[0].replace("GET_VERSION", "")
    assert world.trace.digest() == digest_of(mem.events)
    import hashlib
    canonical = "".join(e.canonical_line() + "\n" for e in mem.events)
    assert world.trace.digest() == hashlib.sha256(canonical.encode()).hexdigest()


_TEXT = st.text(st.characters(codec="utf-8"), max_size=24)


@settings(max_examples=300)
@given(t=st.integers(0, 2**63), source=_TEXT, destination=_TEXT, channel=st.sampled_from(list(Channel)),
       data=st.binary(max_size=40), summary=_TEXT, observers=st.lists(_TEXT, max_size=3),
       secured=st.none() | st.binary(max_size=8), kind=st.sampled_from(list(EventKind)),
       fields=st.dictionaries(_TEXT, st.none() | st.booleans() | st.integers(-2**70, 2**70) | _TEXT, max_size=4))
def test_json_line_is_the_canonical_json_dumps(t: int, source: str, destination: str, channel: Channel, data: bytes,
                                               summary: str, observers: list[str], secured: bytes | None,
                                               kind: EventKind, fields: dict[str, object]) -> None:
    """The hand-written line must be byte for byte what json.dumps gives: trace digests are pinned on it."""
    event = TraceEvent(t, source, destination, channel, data, summary, tuple(observers), secured, kind,
                       tuple(sorted(fields.items())))
    reference = json.dumps(event.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert event.json_line() == reference
    assert json.loads(event.json_line()) == event.to_json()
    without = {k: v for k, v in event.to_json().items() if k != "summary"}
    assert event.canonical_line() == json.dumps(without, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def test_summary_is_not_part_of_the_digest() -> None:
    """Rewording a summary changes neither the digest nor a fingerprint; a typed field does."""
    a, b, c = (TraceBus(lambda: 7) for _ in range(3))
    a.emit("x", "y", Channel.IDE, b"", "stream Secure", kind=EventKind.STREAM_STATE, fields={"state": "SECURE"})
    b.emit("x", "y", Channel.IDE, b"", "the stream is now secure", kind=EventKind.STREAM_STATE,
           fields={"state": "SECURE"})
    c.emit("x", "y", Channel.IDE, b"", "stream Secure", kind=EventKind.STREAM_STATE, fields={"state": "INSECURE"})
    assert a.digest() == b.digest() != c.digest()


def test_secured_plaintext_is_not_written_but_flagged() -> None:
    bus = TraceBus(lambda: 5)
    text = io.StringIO()
    bus.subscribe(JsonLinesSink(text))
    bus.emit("vmm", "host", Channel.DOE, b"\xaa" * 16, "secured", secured_plaintext=b"SECRET-PLAINTEXT")
    assert "SECRET" not in text.getvalue() and b"SECRET".hex() not in text.getvalue()
    assert json.loads(text.getvalue())["secured"] is True


def test_unsubscribe() -> None:
    bus = TraceBus(lambda: 0)
    mem = MemorySink()
    stop = bus.subscribe(mem)
    bus.emit("a", "b", Channel.LINK)
    stop()
    bus.emit("a", "b", Channel.LINK)
    assert len(mem) == 1 and bus.count == 2


@pytest.mark.parametrize("nanosecond", [True, False])
def test_pcap_global_header_and_records(nanosecond: bool) -> None:
    world = World(2)
    buf = io.BytesIO()
    pcap = PcapSink(buf, nanosecond=nanosecond)
    world.trace.subscribe(pcap)
    _emit_some(world)
    raw = buf.getvalue()
    # global header by hand: magic, version 2.4, zone 0, sigfigs 0, snaplen, linktype
    magic, vmaj, vmin, zone, sigfigs, snaplen, linktype = struct.unpack_from("<IHHiIII", raw, 0)
    assert magic == (PCAP_MAGIC_NSEC if nanosecond else PCAP_MAGIC_USEC)
    assert (vmaj, vmin, zone, sigfigs) == (2, 4, 0, 0)
    assert linktype == LINKTYPE_PCI_DOE == 292 and snaplen == 0x10000  # what spdm_dump accepts
    # first record header by hand: ts 0, lengths of the GET_VERSION object
    ts_sec, ts_frac, incl, orig = struct.unpack_from("<IIII", raw, 24)
    assert (ts_sec, ts_frac, incl, orig) == (0, 0, len(GET_VERSION_DOE), len(GET_VERSION_DOE))
    assert raw[40:40 + incl] == GET_VERSION_DOE
    parsed = parse_pcap(raw)
    assert parsed.linktype == 292 and parsed.nanosecond is nanosecond
    assert [pkt.data for pkt in parsed.packets] == [GET_VERSION_DOE, VERSION_DOE]  # config access not in the pcap
    assert [pkt.orig_len for pkt in parsed.packets] == [12, 24]
    expected_t = 1_500_000_123 if nanosecond else 1_500_000_000
    assert parsed.packets[1].time_ns == expected_t
    assert pcap.records == 2
    # every record is a DOE object that decodes with its header length
    for pkt in parsed.packets:
        DoeObject.decode(pkt.data)


def test_pcap_filter_keeps_one_boundary() -> None:
    world = World(3)
    buf = io.BytesIO()
    world.trace.subscribe(PcapSink(buf, accept=lambda e: e.channel is Channel.DOE and "rp0.dev0" in
                                   (e.source, e.destination)))
    world.trace.emit("guest", "vmm", Channel.DOE, GET_VERSION_DOE)
    world.trace.emit("host", "rp0.dev0", Channel.DOE, GET_VERSION_DOE)
    assert len(parse_pcap(buf.getvalue()).packets) == 1


def test_parse_pcap_rejects_bad_input() -> None:
    good = io.BytesIO()
    sink = PcapSink(good)
    bus = TraceBus(lambda: 0)
    bus.subscribe(sink)
    bus.emit("a", "b", Channel.DOE, GET_VERSION_DOE)
    raw = good.getvalue()
    with pytest.raises(DecodeError) as e:
        parse_pcap(b"\xa1\xb2\xc3\xd4" + raw[4:])  # a big-endian file is not what we write
    assert e.value.field == "magic"
    with pytest.raises(DecodeError):
        parse_pcap(raw[:-1])
    with pytest.raises(DecodeError):
        parse_pcap(raw[:30])


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120))
def test_parse_pcap_fuzz_only_decode_error(data: bytes) -> None:
    for candidate in (data, struct.pack("<IHHiIII", PCAP_MAGIC_NSEC, 2, 4, 0, 0, 1 << 20, 292) + data):
        try:
            parse_pcap(candidate)
        except DecodeError:
            pass
