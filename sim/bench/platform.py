"""Platform benchmark: N endpoints behind N Root Ports, one DOE round trip per endpoint.

Each endpoint is a ``sim.devices.endpoint.Endpoint`` on its own link below its own Root Port.
A host process per endpoint walks the endpoint's extended capabilities to find DOE (0x2E) and does
one DOE Discovery exchange (index 0) at register level, as Linux ``drivers/pci/doe.c`` does: check
Busy/Error, write the request DW by DW, set Go, poll Data Object Ready, read and acknowledge each
response DW. Every config access is a traced boundary crossing and costs the host's modeled
config-access time.

The exchange is DOE Discovery, which the mailbox answers itself; the SPDM path is measured by the
protocol benchmark (:mod:`sim.bench.protocol`).

Reports wall time and tracemalloc peak memory, in total and per endpoint. Asserts nothing about speed.
"""

from __future__ import annotations

import cProfile
import dataclasses
import io
import pstats
import statistics
import time
import tracemalloc
from collections.abc import Generator
from typing import Any

from sim.devices.config_space import DoeStatus, find_ext_capability
from sim.devices.endpoint import Endpoint
from sim.engine.timing import ComponentClass, Op
from sim.engine.world import World
from sim.rootport.link import Link, plug_in
from sim.rootport.root_port import RootPort
from sim.wire.doe import DiscoveryVersion, DoeDiscoveryRequest, DoeDiscoveryResponse, DoeObject, doe_length_dw

DEFAULT_ENDPOINTS = 1000
PROFILE_TOP = 15
DOE_CAP_ID = 0x2E
DOE_CTRL, DOE_STATUS, DOE_WRITE, DOE_READ = 0x08, 0x0C, 0x10, 0x14
DOE_GO = 1 << 31
POLL_NS = 1_000_000_000 // 128  # Linux polls the mailbox every HZ/128


def build(world: World, n: int) -> list[tuple[RootPort, Link, Endpoint]]:
    """``n`` Root Ports, each with one link and one endpoint, and a host component that drives them."""
    out = []
    world.register("host", object(), ComponentClass.HOST_CPU)
    for i in range(n):
        bus = (i % 255) + 1
        rp = RootPort(world, f"rp{i}", device=(i % 31) + 1, streams=1)
        rp.config.write(0x18, bus << 16 | bus << 8)  # secondary/subordinate bus numbers
        link = Link(world, rp)
        ep = Endpoint(f"dev{i}", bus=bus)
        ep.attach_world(world, f"rp{i}.dev0")
        plug_in(link, f"rp{i}.dev0", ep)
        out.append((rp, link, ep))
    return out


def doe_discovery(world: World, link: Link, results: list[DoeDiscoveryResponse]) -> Generator[Any, Any, None]:
    """One DOE Discovery round trip through the endpoint's mailbox registers."""
    access = world.cost("host", Op.CONFIG_DW_ACCESS)

    def rd(off: int) -> int:
        return link.cfg_read(0, off, by="host")

    def wr(off: int, value: int) -> None:
        link.cfg_write(0, off, value, by="host")

    cap = find_ext_capability(rd, DOE_CAP_ID)
    yield world.timeout(access * 4)
    if cap is None:
        raise RuntimeError(f"{link.endpoint_path}: no DOE capability")
    if rd(cap + DOE_STATUS) & (DoeStatus.BUSY | DoeStatus.ERROR):
        raise RuntimeError(f"{link.endpoint_path}: mailbox busy or in error")
    request = DoeDiscoveryRequest(0, DiscoveryVersion.CAP_V2).to_doe().encode()
    for i in range(0, len(request), 4):
        wr(cap + DOE_WRITE, int.from_bytes(request[i:i + 4], "little"))
        yield world.timeout(access)
    wr(cap + DOE_CTRL, DOE_GO)
    yield world.timeout(access)
    while not rd(cap + DOE_STATUS) & DoeStatus.DATA_OBJECT_READY:
        yield world.timeout(POLL_NS)
    words = []
    for _ in range(2):
        words.append(rd(cap + DOE_READ))
        wr(cap + DOE_READ, 0)
    header = b"".join(w.to_bytes(4, "little") for w in words)
    for _ in range(doe_length_dw(header) - 2):
        words.append(rd(cap + DOE_READ))
        wr(cap + DOE_READ, 0)
        yield world.timeout(2 * access)
    obj = DoeObject.decode(b"".join(w.to_bytes(4, "little") for w in words))
    results.append(DoeDiscoveryResponse.decode(obj.payload))


@dataclasses.dataclass(frozen=True)
class PlatformRun:
    """One build + DOE phase: wall times, tracemalloc figures and what the simulation did."""

    endpoints: int
    ok: int
    build_s: float
    doe_s: float
    mem_build: int
    peak: int
    simulated_ns: int
    trace_events: int
    trace_digest: str


@dataclasses.dataclass(frozen=True)
class PlatformBenchResult:
    """``repeat`` platform runs; times are reported as medians, memory and trace from the first run."""

    seed: int
    runs: tuple[PlatformRun, ...]

    @property
    def endpoints(self) -> int:
        return self.runs[0].endpoints

    @property
    def build_s(self) -> float:
        return float(statistics.median(r.build_s for r in self.runs))

    @property
    def doe_s(self) -> float:
        return float(statistics.median(r.doe_s for r in self.runs))

    @property
    def all_ok(self) -> bool:
        return all(r.ok == r.endpoints for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        first = self.runs[0]
        return {
            "seed": self.seed, "repeat": len(self.runs), "endpoints": self.endpoints, "doe_ok": first.ok,
            "build_wall_s": {"median": self.build_s, "samples": [r.build_s for r in self.runs]},
            "doe_wall_s": {"median": self.doe_s, "samples": [r.doe_s for r in self.runs]},
            "memory_after_build_bytes": first.mem_build, "peak_memory_bytes": first.peak,
            "simulated_ns": first.simulated_ns, "trace_events": first.trace_events, "trace_digest": first.trace_digest,
        }

    def lines(self) -> list[str]:
        first, n = self.runs[0], self.endpoints
        build_s, doe_s = self.build_s, self.doe_s
        out = [
            f"endpoints:               {n}",
            f"DOE round trips ok:      {first.ok}/{n}",
            f"build wall time:         {build_s:.3f} s  ({1e6 * build_s / n:.1f} us/endpoint)",
            f"DOE phase wall time:     {doe_s:.3f} s  ({1e6 * doe_s / n:.1f} us/endpoint)",
            f"memory after build:      {first.mem_build / 2**20:.1f} MiB  ({first.mem_build / n / 1024:.1f} KiB/endpoint)",
            f"peak memory (tracemalloc): {first.peak / 2**20:.1f} MiB  ({first.peak / n / 1024:.1f} KiB/endpoint)",
            f"simulated time:          {first.simulated_ns} ns",
            f"trace events:            {first.trace_events}  digest {first.trace_digest[:16]}",
        ]
        if len(self.runs) > 1:
            out.insert(1, f"repeats:                 {len(self.runs)} (wall times are medians)")
        return out


def run_platform_once(n: int = DEFAULT_ENDPOINTS, seed: int = 1) -> PlatformRun:
    """Build ``n`` endpoints and do one DOE Discovery on each, under tracemalloc."""
    if n < 1:
        raise ValueError("the platform benchmark needs at least one endpoint")
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        world = World(seed)
        platform = build(world, n)
        t_build = time.perf_counter() - t0
        mem_build, _ = tracemalloc.get_traced_memory()

        results: list[DoeDiscoveryResponse] = []
        t1 = time.perf_counter()
        for _, link, _ in platform:
            world.process(doe_discovery(world, link, results))
        world.run()
        t_doe = time.perf_counter() - t1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ok = sum(1 for r in results if r.vendor_id == 1 and r.data_object_type == 0)
    return PlatformRun(n, ok, t_build, t_doe, mem_build, peak, int(world.now), world.trace.count, world.trace.digest())


def measure_platform(n: int = DEFAULT_ENDPOINTS, *, seed: int = 1, repeat: int = 1) -> PlatformBenchResult:
    """``repeat`` independent platform runs of ``n`` endpoints each."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    return PlatformBenchResult(seed, tuple(run_platform_once(n, seed) for _ in range(repeat)))


def profile_platform(n: int = DEFAULT_ENDPOINTS, *, seed: int = 1, top: int = PROFILE_TOP) -> str:
    """cProfile of one build + DOE phase (without tracemalloc): the ``top`` functions by cumulative time."""
    def once() -> None:
        world = World(seed)
        results: list[DoeDiscoveryResponse] = []
        for _, link, _ in build(world, n):
            world.process(doe_discovery(world, link, results))
        world.run()

    profiler = cProfile.Profile()
    profiler.runcall(once)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(pstats.SortKey.CUMULATIVE).print_stats(top)
    return out.getvalue()
