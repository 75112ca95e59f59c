"""Running a scenario under one trust model, and what the run leaves behind (result.json).

The run builds the platform and the model's actors (``trust_models``), plays the timeline —
events at simulated times, or hung off protocol milestones ("during KEY_PROG of gpu0") — and
records, from the hardware and the trace, what happened: when each device's IDE stream and TDIs
changed state, who verified it, recoveries after faults, firmware queue depth, DOE objects carried
per component, crypto operations, and who saw which secret. Expectations are checked against that
record. The result layout is documented in docs/result-format.md.

Neighbours: ``policies`` (scenario → platform spec and verification policies), ``watch`` (what is
recorded per device), ``expectations`` (checking them).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from sim import __version__
from sim.crypto.algorithms import BaseHashAlgo
from sim.crypto.hashes import digest
from sim.devices.dma import read_placed, write_checked
from sim.engine.exposure import Exposure
from sim.engine.trace import Channel, EventKind, JsonLinesSink, MemorySink, PcapSink, TraceEvent
from sim.engine.world import World
from sim.firmware.fat_tsm import FatTsm
from sim.protocols.tsm import ReleaseStream, SecuredDevice
from sim.rootport.dpc import DpcTriggerReason, DpcTriggerReasonExt
from sim.scenario import schema as S
from sim.scenario.expectations import describe, evaluate
from sim.scenario.platform import (
    build_platform,
)
from sim.scenario.policies import guest_policy, host_policy, platform_spec
from sim.scenario.trust_models import WIRINGS, Actors, GuestSetup, Securer, build_actors
from sim.scenario.watch import Watch, insecure_windows, recoveries
from sim.vmm.guest import TdiNote
from sim.wire.doe import DoeObjectType
from sim.wire.spdm.version import GetVersion

GUEST_DMA_BASE = 0x1000_0000   # confidential guests' DMA buffers: TEE memory (T=1 requests only)
HOST_DMA_BASE = 0x2000_0000    # the host's own DMA buffers
HOST_DMA_SETTLE_NS = 1000      # least wait before the host checks a device's DMA write (RootPort.posted_write_settle_ns)
TEE_MEMORY_SIZE = 0x1000_0000
SEQUENCE_LIMIT = 200
HORIZON_NS = 600 * 1_000_000_000  # a run stops at the latest at 10 simulated minutes after its last event
RESULT_FORMAT = 1


# ----------------------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunArtifacts:
    """Where a run writes its files (None: keep in memory only)."""

    trace: TextIO | None = None
    pcap: Any = None


@dataclasses.dataclass(eq=False)
class _PendingEvent:
    """A timeline event not yet fired: waiting for its milestone (``due_ns`` None) or for its time."""

    event: S.Event
    trigger: int | S.During | S.After
    due_ns: int | None = None


class ModelRun:
    """One scenario under one trust model: build, play the timeline, record, check."""

    def __init__(self, scenario: S.Scenario, model: S.TrustModel, artifacts: RunArtifacts | None = None) -> None:
        self.scenario = scenario
        self.model = model
        self.wiring = WIRINGS[model]
        timing = {str(c): {str(o): int(v) for o, v in ops.items()} for c, ops in scenario.timing.items()}
        self.world = World(scenario.seed, timing=timing)
        self.memory = MemorySink()
        self.world.trace.subscribe(self.memory)
        arts = artifacts or RunArtifacts()
        if arts.trace is not None:
            self.world.trace.subscribe(JsonLinesSink(arts.trace))
        self.platform = build_platform(self.world, platform_spec(scenario, self.wiring))
        if arts.pcap is not None:
            # one record per DOE object at the mailbox (the relay hops above it carry the same object)
            endpoints = {h.path for h in self.platform.devices}
            self.world.trace.subscribe(PcapSink(arts.pcap, accept=lambda e: _is_doe_object(e) and (
                e.source in endpoints or e.destination in endpoints)))
        guests = [GuestSetup(g.id, guest_policy(scenario, self.platform, g)) for g in scenario.guests]
        boot_owned = {d.id: d.owner for d in scenario.platform.devices}
        host_owned = frozenset(d for d, o in boot_owned.items() if o == S.HOST or self.wiring.guest_devices is None)
        self.actors: Actors = build_actors(self.world, self.platform, self.wiring,
                                           host_policy(scenario, self.platform), guests, host_owned,
                                           fat_reconnect=scenario.fat_reconnect)
        self.host = self.actors.host
        if scenario.guests:
            for rp in self.platform.root_ports.values():
                rp.protect_tee_memory(GUEST_DMA_BASE, TEE_MEMORY_SIZE)
        self.watch = Watch(self.world, self.platform)
        self.boot_ns: int | None = None
        self.end_ns = 0
        self.notes: list[str] = []
        self.adversaries: list[Any] = []   # installed by adversary events (sim.adversary.strategies.Adversary)
        self.dma_log: dict[str, list[dict[str, Any]]] = {}
        self.attestations: dict[str, dict[str, Any]] = {}   # device -> verifier -> its latest verdict
        self.attestation_log: dict[tuple[str, str], list[dict[str, Any]]] = {}   # every verdict, in order
        self.fault_times: dict[str, list[tuple[int, str]]] = {d: [] for d in self.watch.devices}
        self.checks: list[tuple[int, S.Expectation, bool, str]] = []   # (position in the file's expect:, ...)
        self._occurrences: dict[tuple[str, str], int] = {}
        self._pending: list[_PendingEvent] = []   # every timeline event until it fires; left over: noted
        self._connected: dict[str, Any] = {}
        self._assigning: dict[str, str] = {}   # device -> guest an assignment under way is giving it to
        self._boot_assign = [(d.id, d.owner) for d in scenario.platform.devices if d.owner != S.HOST]
        self.world.milestone_listeners.append(self._milestone)
        self.host.listeners.append(self._on_host_event)

    # -- the timeline -----------------------------------------------------------------------------------

    def _applies(self, item: S.Event | S.Expectation) -> bool:
        return item.models is None or self.model in item.models

    def schedule(self) -> int:
        """Put every event on the clock (or on its milestone); returns the last fixed time."""
        last = 0
        events = [e for e in self.scenario.timeline if self._applies(e)]
        if not any(e.kind is S.EventKind.BOOT for e in events):
            self.world.call_at(0, self._boot)
        for event in events:
            trigger = event.trigger
            pending = _PendingEvent(event, trigger)
            self._pending.append(pending)
            if isinstance(trigger, int):
                last = max(last, trigger)
                pending.due_ns = trigger
                self.world.call_at(trigger, lambda p=pending: self._fire_pending(p))
        for position, exp in enumerate(self.scenario.expect):
            if self._applies(exp) and exp.at != "end":
                at = int(exp.at)
                last = max(last, at)
                self.world.call_at(at, lambda x=exp, i=position: self._check(x, i, at_ns=self.world.now))
        return last

    def _milestone(self, device: str, phase: str, owner: str) -> None:
        rec = self.watch.devices.get(device)
        if rec is not None:
            rec.phases.append((self.world.now, phase, owner))
        key = (device, phase)
        self._occurrences[key] = n = self._occurrences.get(key, 0) + 1
        for pending in self._pending:
            trigger = pending.trigger
            if (pending.due_ns is None and not isinstance(trigger, int) and trigger.device == device
                    and str(trigger.phase) == phase and trigger.occurrence == n):
                delay = trigger.delay if isinstance(trigger, S.After) else 0
                pending.due_ns = self.world.now + delay
                self.world.call_later(delay, lambda p=pending: self._fire_pending(p))

    def _fire_pending(self, pending: _PendingEvent) -> None:
        self._pending.remove(pending)
        self._fire(pending.event)

    def _note_unfired(self, horizon_ns: int) -> None:
        """Every timeline event that never fired is a note: its milestone was not reached, or it was due
        past the horizon (an ``after:`` delay can carry it beyond the run's last moment)."""
        for p in self._pending:
            trigger, kind = p.trigger, p.event.kind.value
            if p.due_ns is None and not isinstance(trigger, int):
                self.notes.append(f"event '{kind}' waiting for {trigger.device} {trigger.phase} "
                                  f"(occurrence {trigger.occurrence}) never fired: the milestone was not reached")
            elif isinstance(trigger, int):
                self.notes.append(f"event '{kind}' at {trigger} ns never fired: the run stopped at {horizon_ns} ns")
            else:
                how = "after" if isinstance(trigger, S.After) else "during"
                self.notes.append(f"event '{kind}' {how} {trigger.device} {trigger.phase} (occurrence "
                                  f"{trigger.occurrence}) was due at {p.due_ns} ns and never fired: the run stops "
                                  f"at {horizon_ns} ns, {HORIZON_NS // 1_000_000_000} s after its last fixed time")

    def _fire(self, event: S.Event) -> None:
        handler = getattr(self, f"_on_{event.kind.value}", None)
        self.world.trace.emit("scenario", getattr(event, "device", None) or getattr(event, "port", None) or "world",
                              Channel.FAULT if event.kind not in (S.EventKind.BOOT, S.EventKind.ASSIGN, S.EventKind.DMA,
                                                                  S.EventKind.MMIO) else Channel.LINK,
                              b"", f"scenario event {event.kind.value}", kind=EventKind.SCENARIO,
                              fields={"event": event.kind.value})
        if handler is None:
            self.notes.append(f"event '{event.kind.value}' at {self.world.now} ns is not modeled yet; it was skipped")
            return
        handler(event)

    def _process(self, gen: Any) -> Any:
        """Run an event's work as a process; a component refusing it is recorded, never a crash."""
        def guarded() -> Any:
            try:
                return (yield from gen)
            except Exception as exc:  # an actor refused (e.g. a relay for an unassigned device)
                self.notes.append(f"at {self.world.now} ns: {type(exc).__name__}: {exc}")
                self.world.trace.emit("scenario", "world", Channel.FAULT, b"",
                                      f"scenario action failed: {type(exc).__name__}: {exc}", kind=EventKind.SCENARIO,
                                      fields={"event": "action-failed", "error": type(exc).__name__})
                return None
        return self.world.process(guarded())

    def _fault(self, device: str, what: str) -> None:
        self.fault_times[device].append((self.world.now, what))
        self.watch.devices[device].mark_fault(self.world.now, what)

    def _devices_behind(self, port: str) -> list[str]:
        return [h.id for h in self.platform.devices if h.root_port.path == port]

    # -- event handlers ----------------------------------------------------------------------------------

    def _boot(self, event: S.Event | None = None) -> None:
        if self.boot_ns is not None:
            self.notes.append("a second boot event was ignored")
            return
        self.boot_ns = self.world.now
        self.host.start()
        self._process(self._after_boot())

    def _on_boot(self, event: S.Event) -> None:
        self._boot(event)

    def _after_boot(self) -> Any:
        yield self.host.booted
        fw = self.actors.firmware
        if isinstance(fw, FatTsm):
            # tsm/connect for every device, issued concurrently (the firmware serialises them)
            for h in self.platform.devices:
                self._connected[h.id] = self._process(self._fat_connect(fw, h.id))
        for device, guest in self._boot_assign:
            self._assign(device, guest)

    def _fat_connect(self, fw: FatTsm, device: str) -> Any:
        answer = yield from fw.connect(device)
        ok = getattr(answer, "status", None) is not None and answer.status.name == "SUCCESS"
        body = getattr(answer, "body", answer)
        detail = getattr(body, "detail", None)
        reason = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(body)
        self._attested(device, S.Verifier.FAT_TSM.value, ok=ok, reason=None if ok else reason)

    def _attested(self, device: str, verifier: str, *, ok: bool, reason: str | None, **extra: Any) -> None:
        """Log one verdict of ``verifier`` on ``device``; ``attestations`` keeps the latest of each."""
        entry = {"ok": ok, "reason": reason, **extra, "at_ns": self.world.now}
        log = self.attestation_log.setdefault((device, verifier), [])
        log.append(entry)
        self.attestations.setdefault(device, {})[verifier] = {**entry, "attempts": len(log)}

    def _on_host_event(self, event: Any) -> None:
        """Every attestation the host kernel runs (at boot, in a recovery path) is a verdict."""
        kind = str(getattr(event, "kind", ""))
        if kind not in ("authenticated", "auth-failed", "secured", "secure-failed"):
            return
        dev = self.host.devices.get(event.device)
        result = None if dev is None else dev.last_secure if kind.startswith("secure") else dev.last_auth
        ok = kind in ("authenticated", "secured")
        self._attested(event.device, S.Verifier.HOST_KERNEL.value, ok=ok,
                       reason=None if ok else str(getattr(result, "reason", result)),
                       phase=None if ok else str(getattr(result, "phase", "")))

    def _record_host_attestation(self, device: str) -> None:
        """The host's verdict on ``device`` from its last securing result, unless one was logged."""
        dev = self.host.devices.get(device)
        if dev is None or (device, S.Verifier.HOST_KERNEL.value) in self.attestation_log:
            return
        result = dev.last_secure
        if result is None:
            return
        ok = bool(getattr(result, "ok", False))
        self._attested(device, S.Verifier.HOST_KERNEL.value, ok=ok,
                       reason=None if ok else str(getattr(result, "reason", result)),
                       phase=None if ok else str(getattr(result, "phase", "")))

    def _sync_guest_attestations(self) -> None:
        """Guests judge a device each time they (re-)secure or accept it, also on their own after a
        reset notice; their TDI records keep those verdicts, which become the guest's log here."""
        for name, g in self.actors.guests.items():
            verdicts: dict[str, list[tuple[int, bool, str | None]]] = {}
            for (device, _fn), rec in g.tdis.items():
                for entry in rec.history:
                    if entry.note is TdiNote.ACCEPTED:
                        verdicts.setdefault(device, []).append((entry.time_ns, True, None))
                    elif entry.note is TdiNote.NOT_ACCEPTED:
                        verdicts.setdefault(device, []).append((entry.time_ns, False,
                                                                entry.text.removeprefix("not accepted: ")))
            for device, items in verdicts.items():
                log = [{"ok": ok, "reason": why, "guest": name, "at_ns": t} for t, ok, why in sorted(
                    items, key=lambda v: v[0])]
                self.attestation_log[(device, S.Verifier.GUEST.value)] = log
                self.attestations.setdefault(device, {})[S.Verifier.GUEST.value] = {**log[-1], "attempts": len(log)}

    def attestation_at(self, device: str, verifier: str, at_ns: int | None = None,
                       guest: str | None = None) -> dict[str, Any] | None:
        """The latest verdict of ``verifier`` on ``device`` given by ``at_ns`` (None: by now)."""
        if verifier == S.Verifier.GUEST.value:
            self._sync_guest_attestations()
        log = self.attestation_log.get((device, verifier), [])
        found = [e for e in log if (at_ns is None or e["at_ns"] <= at_ns)
                 and (guest is None or e.get("guest") in (None, guest))]
        return found[-1] if found else None

    def _on_assign(self, event: S.AssignEvent) -> None:
        self._assign(event.device, event.guest)

    def _assign(self, device: str, guest: str) -> None:
        if self.wiring.guest_devices is None:
            self.notes.append(f"{self.model}: {device} assigned to {guest} stays host-owned (no TDISP in this model)")
            self.world.trace.emit("vmm", guest, Channel.LINK, b"", f"assign {device} to {guest}: host keeps it secured",
                                  kind=EventKind.VMM, fields={"what": "assign-refused", "device": device})
            return
        owner = self.actors.vmm.owner_of(device) or self._assigning.get(device)
        if owner == guest:
            # assigning again would re-run the securing flow on top of the running TDI and break it
            how = "already owns" if self.actors.vmm.owner_of(device) == guest else "is already being given"
            self.notes.append(f"assign of {device} to {guest} at {self.world.now} ns ignored: {guest} {how} it")
            return
        self._assigning[device] = guest
        self._process(self._assign_proc(device, guest))

    def _assign_proc(self, device: str, guest: str) -> Any:
        try:
            yield from self._hand_over(device, guest)
        finally:  # from here on the VMM's record says who owns it (or the assignment failed)
            if self._assigning.get(device) == guest:
                del self._assigning[device]
        g = self.actors.guests[guest]
        if self.wiring.guest_devices is Securer.FIRMWARE:
            connected = self._connected.get(device)
            if connected is not None:
                yield connected  # the TSM binds TDIs of connected devices only
            yield from self.actors.vmm.bind_tdi(device)
        yield from g.secure(device)
        self._sync_guest_attestations()

    def _hand_over(self, device: str, guest: str) -> Any:
        """After boot, the host lets the device go and the VMM passes it through to ``guest``."""
        host, vmm = self.host, self.actors.vmm
        if self.boot_ns is None or not host.booted.triggered:
            yield host.booted
        dev = host.devices.get(device)
        if self.wiring.host_devices is Securer.HOST and dev is not None and isinstance(getattr(dev.last_secure, "value", None),
                                                                                      SecuredDevice):
            # the host gives the device up: its stream goes back before the guest takes over
            if host.platform_handler is not None:
                yield from host.platform_handler(device, ReleaseStream(device, dev.last_secure.value.stream_id))
        host.policy = dataclasses.replace(host.policy, host_owned=(host.policy.host_owned or frozenset()) - {device})
        vmm.assign(device, guest)

    def _guest_of(self, device: str) -> Any:
        owner = self.actors.vmm.owner_of(device)
        return self.actors.guests.get(owner) if owner is not None else None

    def _on_dma(self, event: S.DmaEvent) -> None:
        self._process(self._dma(event))

    def _dma(self, event: S.DmaEvent) -> Any:
        handle = self.platform.device(event.device)
        guest = self._guest_of(event.device)
        data = (hashlib.sha256(f"{self.scenario.seed}:{event.device}:{self.world.now}".encode()).digest()
                * (event.bytes // 32 + 1))[:event.bytes]
        read = event.direction is S.DmaDirection.READ
        if guest is not None and read:
            ok = yield from guest.device_dma_read(event.device, GUEST_DMA_BASE, data)
        elif guest is not None:
            ok = yield from guest.device_dma(event.device, GUEST_DMA_BASE, data)
        elif read:  # the host's own buffer, plain requests (no TDI)
            ok = yield from read_placed(self.world, handle.endpoint, 0, HOST_DMA_BASE, data, tee=False,
                                        memory=handle.root_port.host_memory)
        else:
            ok = yield from write_checked(self.world, handle.endpoint, 0, HOST_DMA_BASE, data, tee=False,
                                          memory=handle.root_port.host_memory,
                                          settle_ns=handle.root_port.posted_write_settle_ns(HOST_DMA_SETTLE_NS))
        verdict = "arrived intact" if ok else "FAILED"
        if read:  # the data moves from memory to the device
            self.world.trace.emit("host-memory", event.device, Channel.LINK, b"",
                                  f"DMA read of {event.bytes} bytes {verdict}", kind=EventKind.DMA,
                                  fields={"device": event.device, "direction": "read", "bytes": event.bytes, "ok": bool(ok)})
        else:  # (worded as before reads existed, so the shipped scenarios' golden traces stay valid)
            self.world.trace.emit(event.device, "host-memory", Channel.LINK, b"", f"DMA {event.bytes} bytes {verdict}",
                                  kind=EventKind.DMA, fields={"device": event.device, "direction": "write",
                                                              "bytes": event.bytes, "ok": bool(ok)})
        self.dma_log.setdefault(event.device, []).append(
            {"t_ns": self.world.now, "bytes": event.bytes, "ok": bool(ok), "sample": data[:32].hex(),
             "direction": str(event.direction)})
        if not ok:
            what = "DMA read" if read else "DMA"
            self.notes.append(f"{what} of {event.bytes} bytes by {event.device} at {self.world.now} ns failed")

    def _on_mmio(self, event: S.MmioEvent) -> None:
        guest = self.actors.guests.get(event.guest)
        if guest is None:
            self.notes.append(f"mmio by {event.guest}: no such guest in {self.model}")
            return
        tdis = self.scenario.device(event.device).tdis
        tdi = next((t for t in tdis if t.id == event.tdi), None) if event.tdi is not None else \
            next((t for t in tdis if t.function == 0), tdis[0] if tdis else None)
        function, bar = (tdi.function, tdi.mmio[0].bar if tdi.mmio else 0) if tdi is not None else (0, 0)
        fn = self.platform.device(event.device).endpoint.functions.get(function)
        if fn is None or bar not in fn.header.bars:
            self.notes.append(f"mmio by {event.guest} to {event.device}: function {function} has no BAR {bar}")
            return
        guest.mmio_write(event.device, 0, b"\x5a" * 8, function=function, bar=bar)

    def _on_dpc(self, event: S.DpcEvent) -> None:
        rp = self.platform.root_ports[event.port]
        if rp.dpc is None:
            self.notes.append(f"dpc event at {self.world.now} ns on {event.port} skipped: the port has no DPC "
                              "capability (root_ports[].dpc is false)")
            return
        for d in self._devices_behind(event.port):
            self._fault(d, "dpc")
        rp.dpc.trigger(DpcTriggerReason.IN_EXTENSION, DpcTriggerReasonExt.SW_TRIGGER)

    def _on_hot_reset(self, event: S.HotResetEvent) -> None:
        for d in self._devices_behind(event.port):
            self._fault(d, "hot_reset")
            self._process(self.host.reset_device(d))

    def _on_d3cold(self, event: S.D3ColdEvent) -> None:
        self._fault(event.device, "d3cold")
        self._process(self.host.enter_d3cold(event.device))

    def _on_d3cold_exit(self, event: S.D3ColdExitEvent) -> None:
        self._process(self.host.exit_d3cold(event.device))

    def _on_flr(self, event: S.FlrEvent) -> None:
        """The host initiates the FLR (Linux pcie_flr); owners react as their model does."""
        self._fault(event.device, "flr")
        self._process(self.host.flr(event.device, event.function))

    def _on_key_refresh(self, event: S.KeyRefreshEvent) -> None:
        """The device's owner programs the other key set on both ends and switches to it."""
        self._process(self._key_refresh(event.device))

    def _key_refresh(self, device: str) -> Any:
        guest = self._guest_of(device)
        fw = self.actors.firmware
        if isinstance(fw, FatTsm):
            answer = yield from fw.roll_key(device)
            ok = getattr(getattr(answer, "status", None), "name", "") == "SUCCESS"
            by = fw.path
        elif guest is not None and self.wiring.guest_devices is Securer.GUEST:
            ok = bool((yield from guest.refresh_keys(device)))
            by = guest.name
        else:
            ok = bool(getattr((yield from self.host.refresh_keys(device)), "ok", False))
            by = self.host.path
        self.world.trace.emit(by, device, Channel.IDE, b"",
                              f"{device} key refresh by {by}: {'switched key set' if ok else 'FAILED'}",
                              kind=EventKind.KEY_REFRESH, fields={"device": device, "by": by, "ok": ok})
        if not ok:
            self.notes.append(f"key refresh of {device} by {by} at {self.world.now} ns failed")

    def _on_link_down(self, event: S.LinkDownEvent) -> None:
        for d in self._devices_behind(event.port):
            self._fault(d, "link_down")
        self.platform.links[event.port].surprise_down()

    def _on_link_up(self, event: S.LinkUpEvent) -> None:
        self.platform.links[event.port].train()

    def _on_firmware_update(self, event: S.FirmwareUpdateEvent) -> None:
        self.platform.device(event.device).responder.update_firmware(event.version)
        self.world.trace.emit("scenario", event.device, Channel.LINK, b"",
                              f"{event.device} device firmware updated to {event.version}",
                              kind=EventKind.DEVICE_FIRMWARE, fields={"device": event.device, "version": event.version})

    def _on_second_requester(self, event: S.SecondRequesterEvent) -> None:
        self._fault(event.device, "second_requester")
        self._process(self.host.forward_doe(event.device, DoeObjectType.SPDM, GetVersion(version=0x10).encode()))

    def _on_doe_abort(self, event: S.DoeAbortEvent) -> None:
        self.platform.device(event.device).endpoint.mailbox.abort()

    def _on_drop_doe(self, event: S.DropDoeEvent) -> None:
        for _ in range(event.count):
            self.platform.device(event.device).endpoint.mailbox.inject_drop()

    def _on_corrupt_doe(self, event: S.CorruptDoeEvent) -> None:
        for i in range(event.count):
            self.platform.device(event.device).endpoint.mailbox.inject_corruption(8 * 8 + i)

    def _on_adversary(self, event: S.AdversaryEvent) -> None:
        """From now on ``event.component`` follows ``event.strategy`` (``sim.adversary.strategies``)."""
        from sim.adversary.strategies import NotApplicable, install  # the adversary layer builds on this one

        got = install(self, event.component, event.strategy, event.device)
        if isinstance(got, NotApplicable):
            self.notes.append(f"adversary {event.component}/{event.strategy} does not apply in {self.model}: "
                              f"{got.reason}")
            return
        self.adversaries.append(got)

    # -- running and checking ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        last = self.schedule()
        self.world.run(until=last + HORIZON_NS)
        # the run ends with its last activity, not at the horizon
        self.end_ns = max([last] + [e.time_ns for e in self.memory.events[-1:]])
        self._note_unfired(last + HORIZON_NS)
        for h in self.platform.devices:
            if self.host.policy.owns(h.id) and S.Verifier.HOST_KERNEL.value not in self.attestations.get(h.id, {}):
                self._record_host_attestation(h.id)
        for position, exp in enumerate(self.scenario.expect):
            if self._applies(exp) and exp.at == "end":
                self._check(exp, position, at_ns=None)
        return self.result()

    def _check(self, exp: S.Expectation, position: int, *, at_ns: int | None) -> None:
        """Check ``exp`` (at ``position`` in the scenario's ``expect:`` list) now."""
        held, detail = evaluate(self, exp, at_ns)
        self.checks.append((position, exp, held, detail))

    # -- the result --------------------------------------------------------------------------------------

    def exposure_of(self, role: S.ExposureComponent, secret: Any) -> Exposure:
        matrix = self.world.exposure.matrix()
        levels = [matrix.get(secret, path) for path in matrix.components if component_role(self, path) is role]
        return max(levels, default=Exposure.NEVER)

    def result(self) -> dict[str, Any]:
        end = self.end_ns
        boot = self.boot_ns or 0
        devices: dict[str, Any] = {}
        self._sync_guest_attestations()
        for h in self.platform.devices:
            rec = self.watch.devices[h.id]
            owner = self.actors.vmm.owner_of(h.id) or "host"
            start = boot
            secure_t = rec.first_secure(start)
            run_t = rec.first_run(start)
            devices[h.id] = {
                "owner": owner,
                "secured_by": self.actors.securer_of(h.id),
                "attestation": self.attestations.get(h.id, {}),
                "time_to_secure_ns": None if secure_t is None else secure_t - start,
                "time_to_run_ns": None if run_t is None else run_t - start,
                "stream": {"state": "secure" if rec.stream_secure_at() else "insecure"},
                "tdis": {name: rec.tdi_state_at(name) for name in rec.tdi_names.values()},
                "insecure_windows": insecure_windows(rec, end),
                "recoveries": recoveries(rec),
                "tdi_transitions": [{"t_ns": t, "tdi": n, "state": s} for t, n, s in rec.tdis],
                "tdis_sent_to": {state: sum(1 for _t, _n, s in rec.tdis if s == state)
                                 for state in ("ERROR", "CONFIG_UNLOCKED")},
                "stream_transitions": [{"t_ns": t, "state": s} for t, s in rec.stream],
                "phases": [{"t_ns": t, "phase": p, "by": o} for t, p, o in rec.phases],
                "dma": self.dma_log.get(h.id, []),
            }
        secured = [d["time_to_secure_ns"] for d in devices.values() if d["time_to_secure_ns"] is not None]
        fw = self.actors.firmware
        core = getattr(fw, "core", None)
        firmware = None
        if core is not None:
            firmware = {"commands": len(core.records), "max_queue_depth": core.max_depth,
                        "queue_depth": [[t, d] for t, d in core.depth_samples]}
        exposure = self.world.exposure.matrix()
        return {
            "model": str(self.model),
            "wiring": self.wiring.summary,
            "trace_digest": self.world.trace.digest(),
            "trace_events": self.world.trace.count,
            "end_ns": end,
            "devices": devices,
            "fleet": {"devices": len(devices), "secured": len(secured),
                      "time_to_secure_ns": max(secured) if secured and len(secured) == len(devices) else None},
            "firmware": firmware,
            "forwarded": forwarded(self.memory.events),
            "crypto_ops": {p: dict(sorted(ops.items())) for p, ops in sorted(self.world.crypto_ops.items())},
            "exposure": exposure.to_json(),
            "roles": {p: str(component_role(self, p)) for p in exposure.components if component_role(self, p)},
            # index: the position in the file's expect: list (checks with at: run first; file order here)
            "expectations": [{"index": i, "text": describe(x), "held": held, "detail": detail}
                             for i, x, held, detail in sorted(self.checks, key=lambda c: c[0])],
            "notes": self.notes,
            "sequence": sequence(self.memory.events, self.platform.devices[0].path if self.platform.devices else ""),
            "trusted_base": None,
        }


def _is_doe_object(event: TraceEvent) -> bool:
    return event.channel is Channel.DOE and len(event.data) >= 8


def forwarded(events: list[TraceEvent]) -> dict[str, int]:
    """DOE objects each software component sent on (as a relay or as the requester)."""
    counts: dict[str, int] = {}
    for e in events:
        if e.channel is Channel.DOE and len(e.data) >= 8 and not e.source.startswith("rp"):
            counts[e.source] = counts.get(e.source, 0) + 1
        elif e.channel is Channel.FIRMWARE and len(e.data) >= 8:
            counts[e.source] = counts.get(e.source, 0) + 1
    return dict(sorted(counts.items()))


def sequence(events: list[TraceEvent], device_path: str) -> list[dict[str, Any]]:
    """The first crossings that concern one device: its message sequence, decoded one line each."""
    out = []
    for e in events:
        if e.channel in (Channel.DOE, Channel.FIRMWARE, Channel.KEY_SLOT) or e.kind is EventKind.PHASE:
            if device_path and device_path not in (e.source, e.destination) and e.channel is Channel.DOE:
                continue
            out.append({"t_ns": e.time_ns, "from": e.source, "to": e.destination, "channel": str(e.channel),
                        "summary": e.summary})
            if len(out) >= SEQUENCE_LIMIT:
                break
    return out


def component_role(run: ModelRun, path: str) -> S.ExposureComponent | None:
    """Which role of the exposure rules a component path plays in this run."""
    if path == run.host.path:
        return S.ExposureComponent.HOST_KERNEL
    if path == run.actors.vmm.path:
        return S.ExposureComponent.VMM
    fw = run.actors.firmware
    if fw is not None and (path == fw.path or path.startswith(fw.path + ".")):  # incl. its key-slot principal
        return S.ExposureComponent.FAT_TSM if isinstance(fw, FatTsm) else S.ExposureComponent.THIN_KEYSLOT
    if path in run.actors.guests or any(g.id == path for g in run.scenario.guests):
        return S.ExposureComponent.GUEST
    if path in run.platform.root_ports:
        return S.ExposureComponent.ROOT_PORT
    if path in {link.path for link in run.platform.links.values()} or path.endswith(".link"):
        return S.ExposureComponent.LINK
    if any(path in (h.path, h.dsm_path) for h in run.platform.devices):
        return S.ExposureComponent.DEVICE_DSM
    return None


# ----------------------------------------------------------------------------------------------------
# the whole scenario
# ----------------------------------------------------------------------------------------------------


def run_scenario(scenario: S.Scenario, models: list[S.TrustModel] | None = None, *, out_dir: Path | None = None,
                 scenario_file: str | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``scenario`` under each model; with ``out_dir`` write trace.jsonl/doe.pcap per model there."""
    chosen = models or list(scenario.models)
    results: dict[str, Any] = {}
    for model in chosen:
        if progress is not None:
            progress(str(model))
        arts = RunArtifacts()
        files: list[Any] = []
        if out_dir is not None:
            sub = out_dir / str(model)
            sub.mkdir(parents=True, exist_ok=True)
            arts.trace = open(sub / "trace.jsonl", "w", encoding="ascii")  # noqa: SIM115 - closed below
            arts.pcap = open(sub / "doe.pcap", "wb")  # noqa: SIM115
            files = [arts.trace, arts.pcap]
        try:
            results[str(model)] = ModelRun(scenario, model, arts).run()
        finally:
            for f in files:
                f.close()
    ok = all(x["held"] for r in results.values() for x in r["expectations"])
    return {
        "format": RESULT_FORMAT,
        "tool": f"tiosim {__version__}",
        "scenario": {"name": scenario.name, "file": scenario_file, "seed": scenario.seed,
                     "description": scenario.description,
                     "digest": digest_of_scenario(scenario)},
        "ok": ok,
        "models": results,
    }


def digest_of_scenario(scenario: S.Scenario) -> str:
    return digest(BaseHashAlgo.SHA_256, scenario.model_dump_json().encode()).hex()


