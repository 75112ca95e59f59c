"""Requester flows as generators: the sans-IO shape shared by every requester in the simulator.

A flow is a generator that yields the next :class:`Outbound` transport message (a DOE object
type and its payload), receives the peer's answer (the DOE payload bytes, or ``None`` when no
answer came: timeout, dropped object, dead mailbox), and finally returns its result. Flows
compose with ``yield from``. Whoever drives a flow owns all I/O and time: a SimPy process in the
engine, the emulator socket client, or :func:`run_flow` in a test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import TypeVar

from sim.wire.doe import DoeObjectType

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Outbound:
    """One transport message to send: a DOE data object type and its payload (unpadded).

    For a secured record, ``plaintext`` is the SPDM message inside it. It never goes on a wire;
    the simulation's relays hand it to the exposure tracker so that every secret inside counts as
    seen in ciphertext only by whoever carries the record.
    """

    object_type: DoeObjectType
    payload: bytes
    plaintext: bytes | None = dataclasses.field(default=None, repr=False, compare=False)


Flow = Generator[Outbound, bytes | None, T]


def run_flow(flow: Flow[T], transport: Callable[[Outbound], bytes | None]) -> T:
    """Drive ``flow`` to completion, sending each outbound message through ``transport``."""
    try:
        out = next(flow)
        while True:
            out = flow.send(transport(out))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
