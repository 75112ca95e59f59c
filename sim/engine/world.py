"""The World: one simulation run's clock, randomness, timing, trace, exposure and components.

This module and its neighbours are the only code that knows SimPy (DESIGN.md, "Layers"). Time is
integer nanoseconds throughout; every component gets its own seeded random stream derived from
the run seed and the component's path ("rp0", "rp0.dev0", "host"), so adding a component never
changes the bytes another one draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any

import simpy

from sim.crypto.drbg import DeterministicRandom
from sim.engine.exposure import ExposureTracker
from sim.engine.faults import FaultInjector
from sim.engine.timing import ComponentClass, Op, TimingModel
from sim.engine.trace import Channel, EventKind, TraceBus
from sim.protocols.env import ProtocolEnv


@dataclasses.dataclass
class ComponentEntry:
    path: str
    component: object
    component_class: ComponentClass
    rng: DeterministicRandom


class World:
    """Owns the SimPy environment and everything shared by the components of one run."""

    def __init__(self, seed: int, *, timing: TimingModel | Mapping[str, Mapping[str, int]] | None = None) -> None:
        self.seed = seed
        self.env = simpy.Environment(initial_time=0)
        self.timing = timing if isinstance(timing, TimingModel) else TimingModel(timing)
        self.trace = TraceBus(lambda: self.now)
        self._components: dict[str, ComponentEntry] = {}
        self._rngs: dict[str, DeterministicRandom] = {}
        self.exposure = ExposureTracker(components=lambda: tuple(self._components))
        self.trace.subscribe(self.exposure.on_trace)
        self.faults = FaultInjector(self)
        # crypto operations each component performed, by operation name (for the reports)
        self.crypto_ops: dict[str, dict[str, int]] = {}
        self.milestone_listeners: list[Callable[[str, str, str], None]] = []

    # -- time ---------------------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return int(self.env.now)

    def timeout(self, ns: int) -> simpy.Timeout:
        if isinstance(ns, bool) or not isinstance(ns, int) or ns < 0:
            raise ValueError(f"delays are non-negative integer ns, got {ns!r}")
        return self.env.timeout(ns)

    def call_later(self, delay_ns: int, fn: Callable[[], object]) -> None:
        """Run a plain callback after a delay; for register models that are not SimPy processes.
        Callbacks due at the same time run in the order they were scheduled."""
        ev = self.timeout(delay_ns)
        ev.callbacks.append(lambda _ev: fn())

    def call_at(self, at_ns: int, fn: Callable[[], object]) -> None:
        self.call_later(at_ns - self.now, fn)

    def process(self, generator: Generator[simpy.Event, Any, Any]) -> simpy.Process:
        return self.env.process(generator)

    def run(self, until: int | simpy.Event | None = None) -> Any:
        return self.env.run(until=until)

    # -- components --------------------------------------------------------------------------------

    def register(self, path: str, component: object,
                 component_class: ComponentClass = ComponentClass.HARDWARE) -> ComponentEntry:
        """Add a component under a unique dotted path; returns its entry (with its random stream)."""
        if not path or path in self._components:
            raise ValueError(f"component path '{path}' is empty or already registered")
        entry = ComponentEntry(path, component, ComponentClass(component_class), self.rng(path))
        self._components[path] = entry
        return entry

    def component(self, path: str) -> object:
        return self._components[path].component

    def component_class(self, path: str) -> ComponentClass:
        return self._components[path].component_class

    def components(self) -> tuple[str, ...]:
        return tuple(self._components)

    def rng(self, path: str) -> DeterministicRandom:
        """The random stream of a path (one stream per path, created on first use)."""
        rng = self._rngs.get(path)
        if rng is None:
            rng = self._rngs[path] = DeterministicRandom(self.seed, path)
        return rng

    def protocol_env(self, path: str, rng: DeterministicRandom | None = None) -> ProtocolEnv:
        """The surroundings of a protocol object run by ``path``: its random stream (or ``rng``), and the
        exposure tracker as both the sink of the secrets it creates and the observer of plaintext it handles."""
        return ProtocolEnv(rng if rng is not None else self.rng(path), path, self.exposure,
                           observer=self.exposure.observe_stored)

    # -- costs ---------------------------------------------------------------------------------------

    def cost(self, path: str, op: Op | str, *, nbytes: int | None = None) -> int:
        """Cost in ns of an operation run by the component at ``path`` (by its component class)."""
        return self.timing.cost(self.component_class(path), op, nbytes=nbytes)

    def delay(self, path: str, op: Op | str, *, nbytes: int | None = None) -> simpy.Timeout:
        """A SimPy event that fires after the operation's cost: ``yield world.delay("host", Op.HKDF)``."""
        return self.timeout(self.cost(path, op, nbytes=nbytes))

    def price_ops(self, path: str, ops: Iterable[tuple[str, int | None]]) -> int:
        """Total cost in ns of crypto operations (name, bytes) run by ``path``; also counts them."""
        counts = self.crypto_ops.setdefault(path, {})
        total = 0
        for op, nbytes in ops:
            counts[op] = counts.get(op, 0) + 1
            total += self.cost(path, op, nbytes=nbytes)
        return total

    # -- milestones ----------------------------------------------------------------------------------

    def milestone(self, owner: str, device: str, device_path: str, phase: str) -> None:
        """A device reached a protocol milestone (a securing-flow phase): traced, and listeners told.

        Listeners get (device id, phase name, owner); scenario events timed "during KEY_PROG of
        device X" hang off this.
        """
        self.trace.emit(owner, device_path, Channel.LINK, b"", f"{device} phase {phase}", kind=EventKind.PHASE,
                        fields={"device": device, "phase": phase})
        for listener in tuple(self.milestone_listeners):
            listener(device, phase, owner)

    def resolved_config(self) -> dict[str, object]:
        """What a run writes next to its results: seed, timing table, components and their classes."""
        return {
            "seed": self.seed,
            "timing": self.timing.table(),
            "components": {p: str(e.component_class) for p, e in sorted(self._components.items())},
        }
