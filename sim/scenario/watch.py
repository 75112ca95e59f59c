"""What a run watches on the hardware: per device, its IDE stream and TDI state changes, protocol
milestones and injected faults; and what follows from them (insecure windows, recoveries)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sim.devices.config_space import IdeStreamState
from sim.devices.endpoint import EndpointEventKind, Function0FlrPolicy
from sim.engine.world import World
from sim.protocols.tdisp import TdiTransition
from sim.scenario.platform import Platform


@dataclasses.dataclass(frozen=True)
class FaultMark:
    """An injected fault on one device, and how far its stream/TDI histories were when it hit."""

    at_ns: int
    what: str
    stream_seen: int
    tdis_seen: int


@dataclasses.dataclass
class DeviceRecord:
    device: str
    tdi_names: dict[int, str]                      # TDISP function id -> scenario TDI id
    stream: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    tdis: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    phases: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    faults: list[FaultMark] = dataclasses.field(default_factory=list)
    # resets the endpoint itself reported: (time, "conventional" or "flr", function, whether its keys and
    # SPDM sessions went with it)
    resets: list[tuple[int, str, int, bool]] = dataclasses.field(default_factory=list)

    def mark_fault(self, t: int, what: str) -> FaultMark:
        """Note a fault injected now, with how many transitions had been seen before it (so that the
        state *before* the fault is known even when the fault changes it in the same nanosecond)."""
        mark = FaultMark(t, what, len(self.stream), len(self.tdis))
        self.faults.append(mark)
        return mark

    def stream_secure_at(self, t: int | None = None, *, seen: int | None = None) -> bool:
        """The stream state at time ``t`` (None: now), or after the first ``seen`` transitions."""
        state = "insecure"
        for when, s in self.stream[:seen]:
            if t is not None and when > t:
                break
            state = s
        return state == "secure"

    def tdi_state_at(self, tdi: str, t: int | None = None, *, seen: int | None = None) -> str:
        """A TDI's state at time ``t`` (None: now), or after the first ``seen`` transitions."""
        state = "CONFIG_UNLOCKED"
        for when, name, s in self.tdis[:seen]:
            if t is not None and when > t:
                break
            if name == tdi:
                state = s
        return state

    def first_secure(self, after: int = 0) -> int | None:
        return next((t for t, s in self.stream if s == "secure" and t >= after), None)

    def first_run(self, after: int = 0) -> int | None:
        return next((t for t, _n, s in self.tdis if s == "RUN" and t >= after), None)


class Watch:
    """Follows the hardware: each device's IDE stream and the DSM's TDI transitions.

    A device's stream counts as secure only while BOTH ends read Secure: the Root Port's stream
    block and the endpoint's. A device can lose its keys without the Root Port noticing (its SPDM
    session ended by a second requester, an FLR of function 0): its traffic is then no longer
    protected although the Root Port's status still reads Secure (TRUST_MODELS.md §3, §11.4.5).
    """

    def __init__(self, world: World, platform: Platform) -> None:
        self.world = world
        self.devices: dict[str, DeviceRecord] = {}
        for h in platform.devices:
            names = {h.endpoint.requester_id(t.function): t.name or f"tdi{i}" for i, t in enumerate(h.spec.tdis)}
            rec = self.devices[h.id] = DeviceRecord(h.id, names)
            h.root_port.stream_listeners.append(lambda block, state, rec=rec, h=h: self._stream(rec, h))
            previous = h.endpoint.observer   # the trace glue: keep it, and watch IDE state changes too
            h.endpoint.observer = lambda event, rec=rec, h=h, prev=previous: self._endpoint(rec, h, event, prev)
            h.dsm.add_listener(lambda event, rec=rec: self._dsm(rec, event))

    def _endpoint(self, rec: DeviceRecord, h: Any, event: Any, previous: Callable[[Any], None] | None) -> None:
        if previous is not None:
            previous(event)
        if event.kind is EndpointEventKind.IDE_STATE:
            self._stream(rec, h)
        elif event.kind is EndpointEventKind.RESET:
            rec.resets.append((self.world.now, "conventional", 0, True))
        elif event.kind is EndpointEventKind.FLR and event.data:
            function = event.data[0]
            clears = function == 0 and h.endpoint.function0_flr is Function0FlrPolicy.CLEAR_SECURITY
            rec.resets.append((self.world.now, "flr", function, clears))

    def _stream(self, rec: DeviceRecord, h: Any) -> None:
        rp = h.root_port
        rp_secure = any(rp.stream_state(b) is IdeStreamState.SECURE for b in range(rp.stream_block_count))
        secure = rp_secure and h.endpoint.secure_stream() is not None
        state = "secure" if secure else "insecure"
        if state != (rec.stream[-1][1] if rec.stream else "insecure"):   # a stream starts out insecure
            rec.stream.append((self.world.now, state))

    def _dsm(self, rec: DeviceRecord, event: object) -> None:
        if isinstance(event, TdiTransition) and event.old is not event.new:
            name = rec.tdi_names.get(event.interface_id.function_id, str(event.interface_id))
            rec.tdis.append((self.world.now, name, event.new.name))



def insecure_windows(rec: DeviceRecord, end: int) -> list[list[int]]:
    """Intervals after the device first became secure during which its stream was not."""
    out: list[list[int]] = []
    started: int | None = None
    seen_secure = False
    for t, state in rec.stream:
        if state == "secure":
            seen_secure = True
            if started is not None:
                out.append([started, t])
                started = None
        elif seen_secure and started is None:
            started = t
    if started is not None:
        out.append([started, end])
    return out


def recoveries(rec: DeviceRecord, faults: list[tuple[int, str]] | None = None) -> list[dict[str, Any]]:
    """For each injected fault, when the device was back where it was just before it: stream secure
    (if it was), and the TDIs that were running running again; ``by`` is who re-ran the securing flow.

    The state "before" is taken from the fault's mark (transitions seen when it was injected), not
    from the clock: a DPC moves the stream and TDIs in the very nanosecond it is injected.
    """
    marks = rec.faults
    if faults is not None and [(m.at_ns, m.what) for m in marks] != list(faults):
        marks = [FaultMark(at, what, sum(t < at for t, _ in rec.stream), sum(t < at for t, _n, _s in rec.tdis))
                 for at, what in faults]
    out = []
    for i, mark in enumerate(marks):
        at = mark.at_ns
        was_running = {n for n in rec.tdi_names.values() if rec.tdi_state_at(n, seen=mark.tdis_seen) == "RUN"}
        was_secure = rec.stream_secure_at(seen=mark.stream_seen)
        nxt = marks[i + 1] if i + 1 < len(marks) else None
        # did this fault cost anything before the next one hit (e.g. an FLR of a function without a TDI)?
        lost = (was_secure and any(s != "secure" for _t, s in
                                   rec.stream[mark.stream_seen:nxt.stream_seen if nxt else None])) or \
            any(n in was_running and s != "RUN" for _t, n, s in rec.tdis[mark.tdis_seen:nxt.tdis_seen if nxt else None])
        back: int | None = None
        if not lost:
            back = at
        else:
            candidates = sorted({t for t, _ in rec.stream[mark.stream_seen:]}
                                | {t for t, _n, _s in rec.tdis[mark.tdis_seen:]})
            for t in candidates:
                if (not was_secure or rec.stream_secure_at(t)) and \
                        all(rec.tdi_state_at(n, t) == "RUN" for n in was_running):
                    back = t
                    break
        by = next((owner for t, _p, owner in rec.phases if t >= at and (back is None or t <= back)), None)
        out.append({"fault": mark.what, "at_ns": at, "recovered_at_ns": back,
                    "latency_ns": None if back is None else back - at, "by": by if back != at else None})
    return out


