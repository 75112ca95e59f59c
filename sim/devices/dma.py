"""A device's DMA engine reading memory: many Memory Read requests, a bounded window, a completion timeout.

:meth:`Endpoint.dma_read <sim.devices.endpoint.Endpoint.dma_read>` sends ONE MRd of at most
Max_Payload_Size and calls back when its completion arrives. A real DMA engine fetching a buffer
splits it into such requests (never crossing a 4 KiB boundary, PCIe §2.2.7), keeps only a bounded
number outstanding (it has a finite number of tags and completion buffers), and gives a request
up when its completion does not come within the Completion Timeout (PCIe §2.8): the Root Port
refused it (a non-TEE request to TEE memory gets no completion), the link went down, or a reset
dropped it. :func:`read_memory` is that engine, written once here so the guest's and the host's
DMA paths fetch the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sim.devices.endpoint import MAX_PAYLOAD_BYTES, DmaCallback, Endpoint
from sim.engine.runner import SimGen
from sim.wire.tlp import CplStatus

if TYPE_CHECKING:
    from sim.engine.world import World

READ_WINDOW = 32
"""Reads outstanding at most. Far below the endpoint's 256 tags, so a 64 KiB read (256 MRd of 256 B)
never exhausts them and writes issued meanwhile still find a tag."""

COMPLETION_TIMEOUT_NS = 50_000_000
"""50 ms: the top of the default Completion Timeout range (Device Control 2 value 0000b, 50 µs to
50 ms, PCIe §7.5.3.16). The top, so a slow but live completer is never cut short; a refused read
costs that much simulated time, as on real hardware."""

PAGE_BYTES = 4096  # a memory request must not cross a 4 KiB boundary


class Memory(Protocol):
    """The memory a device's DMA reaches (the Root Complex's host memory)."""

    def read(self, address: int, length: int) -> bytes: ...

    def write(self, address: int, data: bytes) -> None: ...


def read_chunks(address: int, length: int) -> list[tuple[int, int]]:
    """(address, length) of each MRd: at most Max_Payload_Size, never crossing a 4 KiB boundary."""
    out: list[tuple[int, int]] = []
    at, end = address, address + length
    while at < end:
        size = min(MAX_PAYLOAD_BYTES, end - at, PAGE_BYTES - at % PAGE_BYTES)
        out.append((at, size))
        at += size
    return out


def read_memory(world: World, endpoint: Endpoint, function: int, address: int, length: int, *, tee: bool,
                window: int = READ_WINDOW, timeout_ns: int = COMPLETION_TIMEOUT_NS) -> SimGen[bytes | None]:
    """Have ``function`` of ``endpoint`` fetch ``length`` bytes at ``address`` (use with ``yield from``).

    Returns the bytes, or None when any request fails: the endpoint refuses to issue it (Bus Master
    off, unaligned address, no free tag), its completion is not Successful, or no completion arrives
    within ``timeout_ns`` of issuing it. Requests still outstanding then are abandoned (their tags
    freed, as a completion timeout frees them), so a failed read never blocks the device's later DMA.
    """
    if window < 1:
        raise ValueError("the read window needs at least one request")
    chunks = read_chunks(address, length)
    got: dict[int, bytes] = {}
    issued_at: dict[int, int] = {}    # chunk index -> when its MRd went out, while outstanding
    refused: list[CplStatus] = []
    callbacks: set[DmaCallback] = set()
    wake = world.env.event()

    def on_completion(index: int) -> DmaCallback:
        size = chunks[index][1]

        def done(status: CplStatus, data: bytes) -> None:
            if issued_at.pop(index, None) is None:
                return  # abandoned meanwhile
            if status is CplStatus.SC and len(data) >= size:
                got[index] = data[:size]
            else:
                refused.append(status)
            if not wake.triggered:
                wake.succeed()

        return done

    following = 0
    try:
        while len(got) < len(chunks):
            while following < len(chunks) and len(issued_at) < window:
                chunk_address, chunk_length = chunks[following]
                callback = on_completion(following)
                issued_at[following] = world.now
                try:
                    issued = endpoint.dma_read(function, chunk_address, chunk_length, callback, tee=tee)
                except RuntimeError:  # every tag is taken by other outstanding reads
                    issued = False
                if not issued:
                    return None
                callbacks.add(callback)
                following += 1
            if refused:
                return None
            if not wake.triggered:
                deadline = min(issued_at.values()) + timeout_ns
                if deadline <= world.now:
                    return None  # completion timeout
                yield wake | world.timeout(deadline - world.now)
            if refused:
                return None
            if wake.triggered:
                wake = world.env.event()
        return b"".join(got[i] for i in range(len(chunks)))
    finally:
        issued_at.clear()
        endpoint.abandon_dma(callbacks)


def write_checked(world: World, endpoint: Endpoint, function: int, address: int, data: bytes, *, tee: bool,
                  memory: Memory, settle_ns: int) -> SimGen[bool]:
    """Have ``function`` write ``data`` at ``address`` (posted MWr TLPs, DW-padded); True if ``memory``
    holds it ``settle_ns`` later. Posted writes get no completion, so the owner checks its memory once
    they had time to cross the link; False at once when the endpoint will not issue them (Bus Master off)."""
    if not endpoint.dma_write(function, address, bytes(data), tee=tee):
        return False
    yield world.timeout(settle_ns)
    padded = bytes(data) + bytes(-len(data) % 4)
    return memory.read(address, len(padded)) == padded


def read_placed(world: World, endpoint: Endpoint, function: int, address: int, data: bytes, *, tee: bool,
                memory: Memory) -> SimGen[bool]:
    """The owner places ``data`` at ``address`` in ``memory``, then ``function`` fetches it with
    :func:`read_memory`; True if the device received exactly ``data``."""
    memory.write(address, bytes(data))
    got = yield from read_memory(world, endpoint, function, address, len(data), tee=tee)
    return got == bytes(data)
