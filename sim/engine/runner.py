"""Running sans-IO protocol flows inside the simulation.

A protocol flow (``sim.protocols.flow``) is a generator of transport messages; here it becomes a
SimPy process. Between steps, the crypto operations the protocol object recorded in its
``CryptoMeter`` are charged as simulated time to the component that runs the flow, at that
component's class costs (a guest vCPU signs faster than a device microcontroller). The transport
is itself a SimPy generator supplied by the caller: a host DOE driver, a firmware-to-host
forwarding loop, or a guest-to-VMM relay, each of which charges and traces its own hops.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from sim.engine.world import World
from sim.protocols.env import CryptoMeter
from sim.protocols.flow import Flow, Outbound

T = TypeVar("T")
SimGen = Generator[Any, Any, T]
Transport = Callable[[Outbound], SimGen[bytes | None]]


def charge(world: World, path: str, meter: CryptoMeter) -> SimGen[int]:
    """Wait for the modeled cost of every operation in ``meter`` since its last drain; returns ns spent."""
    total = world.price_ops(path, ((str(item.op), item.nbytes) for item in meter.drain()))
    if total:
        yield world.timeout(total)
    return total


def drive(world: World, path: str, meter: CryptoMeter, flow: Flow[T], transport: Transport) -> SimGen[T]:
    """Run ``flow`` to completion as part of a SimPy process (use with ``yield from``)."""
    try:
        out = next(flow)
        while True:
            yield from charge(world, path, meter)
            answer = yield from transport(out)
            out = flow.send(answer)
    except StopIteration as stop:
        yield from charge(world, path, meter)
        return stop.value  # type: ignore[no-any-return]
