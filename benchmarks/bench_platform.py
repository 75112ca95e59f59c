"""Platform benchmark: N endpoints behind N Root Ports, one DOE round trip per endpoint.

Each endpoint is a ``sim.devices.endpoint.Endpoint`` on its own link below its own Root Port.
A host process per endpoint walks the endpoint's extended capabilities to find DOE (0x2E) and does
one DOE Discovery exchange (index 0) at register level, as Linux ``drivers/pci/doe.c`` does: check
Busy/Error, write the request DW by DW, set Go, poll Data Object Ready, read and acknowledge each
response DW. Every config access is a traced boundary crossing and costs the host's modeled
config-access time.

The exchange is DOE Discovery, which the mailbox answers itself. TODO(spdm): once an SPDM
responder exists in ``sim.protocols``, plug it in as the endpoint's DSM and add a GET_VERSION
round trip per endpoint, so the benchmark also measures the SPDM path.

Reports wall time and tracemalloc peak memory, in total and per endpoint. Prints only; asserts
nothing about speed.

    python -m benchmarks.bench_platform --n 1000
"""

from __future__ import annotations

import argparse
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

DOE_CAP_ID = 0x2E
DOE_CTRL, DOE_STATUS, DOE_WRITE, DOE_READ = 0x08, 0x0C, 0x10, 0x14
DOE_GO = 1 << 31
POLL_NS = 1_000_000_000 // 128  # Linux polls the mailbox every HZ/128


def build(world: World, n: int) -> list[tuple[RootPort, Link, Endpoint]]:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1000, help="number of Root Port + endpoint pairs (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    n = args.n

    tracemalloc.start()
    t0 = time.perf_counter()
    world = World(args.seed)
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
    tracemalloc.stop()

    ok = sum(1 for r in results if r.vendor_id == 1 and r.data_object_type == 0)
    print(f"endpoints:               {n}")
    print(f"DOE round trips ok:      {ok}/{n}")
    print(f"build wall time:         {t_build:.3f} s  ({1e6 * t_build / n:.1f} us/endpoint)")
    print(f"DOE phase wall time:     {t_doe:.3f} s  ({1e6 * t_doe / n:.1f} us/endpoint)")
    print(f"memory after build:      {mem_build / 2**20:.1f} MiB  ({mem_build / n / 1024:.1f} KiB/endpoint)")
    print(f"peak memory (tracemalloc): {peak / 2**20:.1f} MiB  ({peak / n / 1024:.1f} KiB/endpoint)")
    print(f"simulated time:          {world.now} ns")
    print(f"trace events:            {world.trace.count}  digest {world.trace.digest()[:16]}")


if __name__ == "__main__":
    main()
