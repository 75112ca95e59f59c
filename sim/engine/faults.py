"""Fault injection: DPC triggers, power and reset events, link drops, DOE and TLP damage.

The injector never reaches into a model. Each hardware component *offers* the faults it can suffer
as named actions (``world.faults.offer("rp0", FaultKind.DPC_TRIGGER, rp.dpc.inject)``) that use the
same public methods software or the hardware itself would; the injector only decides when, and
records and traces every injection. Faults are scheduled at a simulated time or drawn at random
from the world's seeded stream, so a run with faults is as reproducible as one without.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from sim.crypto.drbg import DeterministicRandom
from sim.engine.trace import Channel, EventKind

if TYPE_CHECKING:
    from sim.engine.world import World


class FaultKind(enum.StrEnum):
    DPC_TRIGGER = "dpc-trigger"        # Root Port: an uncorrectable error contains the link
    HOT_RESET = "hot-reset"            # Root Port: Secondary Bus Reset of the link below
    LINK_DOWN = "link-down"            # link: surprise loss of the physical link
    LINK_UP = "link-up"                # link: the link retrains after a LINK_DOWN
    D3COLD_ENTRY = "d3cold-entry"      # endpoint: main power removed
    D3COLD_EXIT = "d3cold-exit"        # endpoint: power restored (a conventional reset)
    FLR = "flr"                        # endpoint: Function Level Reset
    DOE_ABORT = "doe-abort"            # endpoint: the DOE mailbox is aborted mid-exchange
    DROP_DOE = "drop-doe"              # endpoint: the next DOE object is lost
    CORRUPT_DOE = "corrupt-doe"        # endpoint: one bit of the next DOE object flips
    DROP_TLP = "drop-tlp"              # link: the next TLP is lost
    CORRUPT_TLP = "corrupt-tlp"        # link: one bit of the next TLP flips


class FaultError(ValueError):
    """A fault that no component offers, or a bad schedule."""


@dataclasses.dataclass(frozen=True)
class FaultRequest:
    """What an action receives: which fault, when, its parameters, and a seeded random stream."""

    kind: FaultKind
    target: str
    time_ns: int
    params: Mapping[str, object]
    rng: DeterministicRandom


FaultAction = Callable[[FaultRequest], None]


@dataclasses.dataclass(frozen=True)
class FaultRecord:
    time_ns: int
    target: str
    kind: FaultKind
    params: tuple[tuple[str, object], ...]


class FaultInjector:
    """Registry of offered fault actions plus a scheduler for them."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._actions: dict[tuple[str, FaultKind], FaultAction] = {}
        self.history: list[FaultRecord] = []
        self._count = 0

    def offer(self, target: str, kind: FaultKind | str, action: FaultAction) -> None:
        """A component declares a fault it can suffer and the public method that produces it."""
        self._actions[(target, FaultKind(kind))] = action

    def offered(self, target: str | None = None) -> list[tuple[str, FaultKind]]:
        return sorted(k for k in self._actions if target is None or k[0] == target)

    def _action(self, target: str, kind: FaultKind | str) -> tuple[FaultKind, FaultAction]:
        try:
            k = FaultKind(kind)
        except ValueError:
            raise FaultError(f"unknown fault kind '{kind}'; expected one of: "
                             f"{', '.join(m.value for m in FaultKind)}") from None
        action = self._actions.get((target, k))
        if action is None:
            offers = ", ".join(str(kk) for t, kk in self.offered(target)) or "none"
            raise FaultError(f"component '{target}' does not offer fault '{k}' (it offers: {offers})")
        return k, action

    def inject(self, target: str, kind: FaultKind | str, **params: object) -> FaultRecord:
        """Apply a fault now."""
        k, action = self._action(target, kind)
        self._count += 1
        now = self._world.now
        record = FaultRecord(now, target, k, tuple(sorted(params.items())))
        self.history.append(record)
        detail = " ".join(f"{n}={v}" for n, v in record.params)
        self._world.trace.emit("faults", target, Channel.FAULT, b"", f"{k}{' ' + detail if detail else ''}",
                               kind=EventKind.FAULT, fields={"fault": str(k)})
        rng = self._world.rng("faults").child(f"f{self._count}")
        action(FaultRequest(k, target, now, dict(params), rng))
        return record

    def schedule(self, at_ns: int, target: str, kind: FaultKind | str, **params: object) -> None:
        """Apply a fault at an absolute simulated time (checked now, so typos fail early)."""
        self._action(target, kind)
        if at_ns < self._world.now:
            raise FaultError(f"fault time {at_ns} ns is in the past (now {self._world.now} ns)")
        self._world.call_at(at_ns, lambda: self.inject(target, kind, **params))

    def randomize(self, *, start_ns: int, end_ns: int, count: int,
                  kinds: Iterable[FaultKind | str] | None = None,
                  targets: Iterable[str] | None = None) -> list[tuple[int, str, FaultKind]]:
        """Schedule ``count`` faults drawn uniformly over [start_ns, end_ns) and over the offered
        (target, kind) pairs that pass the filters; the draw comes from the world's seeded stream."""
        if end_ns <= start_ns or count < 0:
            raise FaultError("randomize needs start_ns < end_ns and count >= 0")
        kind_set = None if kinds is None else {FaultKind(k) for k in kinds}
        target_set = None if targets is None else set(targets)
        pool = [(t, k) for t, k in self.offered()
                if (kind_set is None or k in kind_set) and (target_set is None or t in target_set)]
        if not pool and count:
            raise FaultError("no offered fault matches the given kinds/targets")
        rng = self._world.rng("faults").child("randomize")
        plan = sorted((rng.randint(start_ns, end_ns - 1), *rng.choice(pool)) for _ in range(count))
        for at, target, kind in plan:
            self.schedule(at, target, kind)
        return plan
