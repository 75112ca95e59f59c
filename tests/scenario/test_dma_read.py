"""Scenario `dma` events with `direction: read`: the device really fetches its owner's memory with MRd TLPs.

The windowed reader (``sim.devices.dma``) is tested on the Root Port test bench: how many MRd go out,
how many are outstanding at once, the 4 KiB rule, and the completion timeout freeing its tags. The
scenario tests run a guest-owned (thin-guest) and a host-owned (thin-host) device reading 64 KiB, and
reads of TEE memory that must fail: refused by the Root Port, or never sent because the keys are gone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from sim.devices.dma import COMPLETION_TIMEOUT_NS, READ_WINDOW, read_chunks, read_memory
from sim.devices.endpoint import MAX_PAYLOAD_BYTES
from sim.engine.trace import Channel, TraceEvent
from sim.scenario.loader import load_scenario_text
from sim.scenario.run import GUEST_DMA_BASE, HOST_DMA_BASE, ModelRun
from sim.scenario.schema import TrustModel
from tests.platform.rootport_testbench import Platform, build

MRD = re.compile(r"\bMRd(32|64) rid=\S+ tag=\d+ addr=0x([0-9a-f]+) len=(\d+)DW")
CPLD = re.compile(r"\bCplD\b")
KIB64 = 64 * 1024

SCENARIO = """\
name: dma-read
seed: 42
models: [thin-guest, thin-host]
platform:
  root_ports:
    - {id: rp0, ide_streams: 2, dpc: true}
  devices:
    - id: gpu0
      port: rp0
      identity: {ca: vendor}
      measurements: {firmware: "1.0.0"}
      owner: tvm0
      tdis:
        - {id: tdi0, function: 0, mmio: [{bar: 0, pages: 16}]}
guests:
  - id: tvm0
    devices: [gpu0]
    policy:
      trusted_roots: [{ca: vendor}]
      expected_measurements:
        gpu0: {firmware: "PINNED"}
timeline:
  - {event: boot, at: 0}
EVENTS
"""
READ_AT_1S = "  - {event: dma, device: gpu0, bytes: 64KiB, direction: read, at: 1s}\n"


def run_model(model: TrustModel, events: str = READ_AT_1S, pinned: str = "1.0.0") -> tuple[ModelRun, dict[str, Any]]:
    """One model's run of :data:`SCENARIO` with ``events`` after boot; the guest pins firmware ``pinned``."""
    text = SCENARIO.replace("EVENTS\n", events).replace("PINNED", pinned)
    run = ModelRun(load_scenario_text(text, "dma-read.yaml"), model)
    return run, run.run()


def tlps(run_or_events: ModelRun | list[TraceEvent], pattern: re.Pattern[str], *, after_ns: int = 0,
         source: str | None = None) -> list[TraceEvent]:
    events = run_or_events.memory.events if isinstance(run_or_events, ModelRun) else run_or_events
    return [e for e in events if e.channel is Channel.TLP and e.time_ns >= after_ns and pattern.search(e.summary)
            and (source is None or e.source == source)]


def expected_data(seed: int, device: str, at_ns: int, n: int) -> bytes:
    """The run's deterministic DMA data (the write path's derivation), recomputed independently."""
    return (hashlib.sha256(f"{seed}:{device}:{at_ns}".encode()).digest() * (n // 32 + 1))[:n]


# ----------------------------------------------------------------------------------------------------
# the windowed reader on the test bench
# ----------------------------------------------------------------------------------------------------


def counting_reads(p: Platform, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Wrap the endpoint's dma_read to count requests issued and the peak outstanding at once."""
    stats = {"issued": 0, "outstanding": 0, "peak": 0}
    real = p.ep.dma_read

    def dma_read(function: int, address: int, length: int, callback: Callable[..., None], *,
                 tee: bool = False) -> bool:
        def done(*args: Any) -> None:
            stats["outstanding"] -= 1
            callback(*args)

        ok = real(function, address, length, done, tee=tee)
        if ok:
            stats["issued"] += 1
            stats["outstanding"] += 1
            stats["peak"] = max(stats["peak"], stats["outstanding"])
        return ok

    monkeypatch.setattr(p.ep, "dma_read", dma_read)
    return stats


def read(p: Platform, address: int, length: int, **kw: Any) -> tuple[bytes | None, int]:
    """Run one read to its end; returns (result, simulated ns it took)."""
    start = p.world.now
    proc = p.world.process(read_memory(p.world, p.ep, 0, address, length, tee=kw.pop("tee", False), **kw))
    p.world.run(until=proc)
    return proc.value, p.world.now - start


@pytest.mark.parametrize("window", [READ_WINDOW, 8])
def test_64k_read_is_256_mrd_with_at_most_window_outstanding(window: int, monkeypatch: pytest.MonkeyPatch) -> None:
    p = build()
    data = bytes(p.world.rng("test").bytes(KIB64))
    p.rp.host_memory.write(0x40000, data)
    stats = counting_reads(p, monkeypatch)
    got, _ = read(p, 0x40000, KIB64, window=window)
    assert got == data
    mrds = tlps(p.sink.events, MRD, source=p.ep_path)
    assert len(mrds) == KIB64 // MAX_PAYLOAD_BYTES == 256 == stats["issued"]
    assert len(tlps(p.sink.events, CPLD)) == 256
    assert stats["peak"] == window  # the window is used, and never exceeded
    assert stats["outstanding"] == 0


def test_requests_never_cross_a_4k_boundary_and_odd_lengths_are_trimmed() -> None:
    assert read_chunks(0x0FF0, 1000) == [(0x0FF0, 16), (0x1000, 256), (0x1100, 256), (0x1200, 256), (0x1300, 216)]
    p = build()
    data = bytes(range(256)) * 4
    p.rp.host_memory.write(0x0FF0, data)
    got, _ = read(p, 0x0FF0, 1001)
    assert got == data[:1001]
    spans = [(int(m[2], 16), 4 * int(m[3])) for e in tlps(p.sink.events, MRD) if (m := MRD.search(e.summary))]
    assert all(a // 4096 == (a + n - 1) // 4096 for a, n in spans)
    assert sum(n for _a, n in spans) == 1004  # 1001 bytes in whole DWs


def test_refused_reads_time_out_and_free_their_tags() -> None:
    """Non-TEE reads of TEE memory get no completion: each read fails after the completion timeout, and
    its abandoned tags are freed (nine failures would leak 288 > 256 tags otherwise)."""
    p = build()
    p.rp.protect_tee_memory(0x1000_0000, 0x1000_0000)
    for _ in range(9):
        got, took = read(p, 0x1000_0000, KIB64)
        assert got is None
        assert took == COMPLETION_TIMEOUT_NS
    assert len(tlps(p.sink.events, MRD)) == 9 * READ_WINDOW  # the window filled, then nothing more was sent
    assert any(e.summary.startswith("refused MRd") for e in p.sink.events)
    data = bytes(p.world.rng("after").bytes(KIB64))
    p.rp.host_memory.write(0x2000_0000, data)
    got, _ = read(p, 0x2000_0000, KIB64)
    assert got == data


def test_a_read_cut_by_link_down_fails_without_hanging() -> None:
    p = build()
    p.world.call_later(300, p.link.surprise_down)
    got, took = read(p, 0x40000, KIB64)
    assert got is None
    assert took <= COMPLETION_TIMEOUT_NS + 300


def test_no_bus_master_fails_at_once() -> None:
    p = build()
    p.link.cfg_write(0, 0x04, 0, by="host")  # clear Memory Space and Bus Master Enable
    got, took = read(p, 0x40000, 64)
    assert got is None and took == 0
    assert not tlps(p.sink.events, MRD)


# ----------------------------------------------------------------------------------------------------
# scenario runs
# ----------------------------------------------------------------------------------------------------


def test_guest_owned_device_reads_64k_intact_through_ide() -> None:
    run, result = run_model(TrustModel.THIN_GUEST)
    dev = result["devices"]["gpu0"]
    assert dev["tdis"]["tdi0"] == "RUN"
    (dma,) = dev["dma"]
    assert dma["ok"] is True and dma["direction"] == "read" and dma["bytes"] == KIB64
    data = expected_data(42, "gpu0", 1_000_000_000, KIB64)
    assert dma["sample"] == data[:32].hex()
    assert run.platform.device("gpu0").root_port.host_memory.read(GUEST_DMA_BASE, KIB64) == data  # placed by the guest
    path = run.platform.device("gpu0").path
    mrds = tlps(run, MRD, after_ns=1_000_000_000, source=path)
    assert len(mrds) == 256 and all(e.summary.startswith("IDE ") for e in mrds)  # T=1 requests in the stream
    assert len(tlps(run, CPLD, after_ns=1_000_000_000)) == 256
    assert not any(data[:16] in e.data for e in run.memory.events if e.channel is Channel.TLP)  # ciphertext only
    assert any(e.summary == "DMA read of 65536 bytes arrived intact" and e.destination == "gpu0"
               for e in run.memory.events)


def test_host_owned_device_reads_intact() -> None:
    run, result = run_model(TrustModel.THIN_HOST)
    (dma,) = result["devices"]["gpu0"]["dma"]
    assert dma["ok"] is True and dma["direction"] == "read"
    data = expected_data(42, "gpu0", 1_000_000_000, KIB64)
    assert run.platform.device("gpu0").root_port.host_memory.read(HOST_DMA_BASE, KIB64) == data
    mrds = tlps(run, MRD, after_ns=1_000_000_000, source=run.platform.device("gpu0").path)
    assert len(mrds) == 256
    assert {int(m[2], 16) for e in mrds if (m := MRD.search(e.summary))} == {
        HOST_DMA_BASE + i * MAX_PAYLOAD_BYTES for i in range(256)}
    assert any(e.summary == "DMA read of 65536 bytes arrived intact" for e in run.memory.events)


def test_refused_read_of_tee_memory_by_a_device_not_in_run_is_a_failed_dma() -> None:
    """The guest rejects the device (firmware not the pinned one): its TDI never runs and the stream is
    torn down, so the device's plain reads of the guest's TEE memory are refused by the Root Port and end
    at the completion timeout."""
    run, result = run_model(TrustModel.THIN_GUEST, pinned="9.9.9")
    dev = result["devices"]["gpu0"]
    assert dev["tdis"]["tdi0"] != "RUN" and dev["stream"]["state"] == "insecure"
    (dma,) = dev["dma"]
    assert dma["ok"] is False and dma["direction"] == "read"
    assert dma["t_ns"] == 1_000_000_000 + COMPLETION_TIMEOUT_NS
    assert f"DMA read of 65536 bytes by gpu0 at {dma['t_ns']} ns failed" in result["notes"]
    mrds = tlps(run, MRD, after_ns=1_000_000_000)
    assert len(mrds) == READ_WINDOW and not any(e.summary.startswith("IDE ") for e in mrds)
    refused = [e for e in run.memory.events if e.summary.startswith("refused MRd")]
    assert len(refused) == READ_WINDOW
    assert not tlps(run, CPLD, after_ns=1_000_000_000)
    assert any(e.summary == "DMA read of 65536 bytes FAILED" for e in run.memory.events)


def test_read_after_the_keys_are_gone_is_never_sent_and_fails() -> None:
    """A second requester ends the guest's session; the device must not send T=1 reads in the clear."""
    run, result = run_model(TrustModel.THIN_GUEST, "  - {event: second_requester, device: gpu0, at: 1s}\n"
                                           "  - {event: dma, device: gpu0, bytes: 64KiB, direction: read, "
                                           "at: 1100ms}\n")
    (dma,) = result["devices"]["gpu0"]["dma"]
    assert dma["ok"] is False and dma["direction"] == "read"
    assert not tlps(run, MRD, after_ns=1_100_000_000)
    assert any("T=1 request without a Secure IDE stream: MRd" in e.summary for e in run.memory.events)
    sample = bytes.fromhex(dma["sample"])[:16]
    assert not any(sample in e.data for e in run.memory.events if e.channel is Channel.TLP)


def test_writes_keep_their_record_and_trace_wording() -> None:
    run, result = run_model(TrustModel.THIN_GUEST, READ_AT_1S.replace("read", "write"))
    (dma,) = result["devices"]["gpu0"]["dma"]
    assert dma["ok"] is True and dma["direction"] == "write"
    assert not tlps(run, MRD, after_ns=1_000_000_000)
    assert any(e.summary == "DMA 65536 bytes arrived intact" and e.source == "gpu0" for e in run.memory.events)
