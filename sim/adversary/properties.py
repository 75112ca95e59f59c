"""The security properties checked after a run, from what really happened (not from what anyone believed).

A :class:`Witness` is installed on a run before it starts; it records ground truth the properties need
and that the actors do not keep: every DMA the device was asked to do (bytes, and whether the guest
marked it TEE), every guest MMIO write, every acceptance of a device by its relying party (the guest,
or the host for a device it keeps) with the evidence accepted, and the device's own TDI state and lock
at each RUN. :func:`evaluate` then checks, per property:

* **authenticity** — every acceptance reached the genuine device (its leaf certificate, an SPDM
  session the genuine DSM holds), the firmware it really runs satisfies the guest's policy and is what
  was accepted, the accepted interface report matches the device's real lock flags and BARs, and the
  device's TDI was running whenever the guest used it as a TEE;
* **confidentiality** — no guest DMA/MMIO data crossed the link in the clear, and the compromised
  component holds no IDE key that protected guest data: shown by decrypting a captured IDE TLP of the
  guest's data with the key it holds (AES-256-GCM, the IV rebuilt from the slot's IFV and the TLP's
  position), which is the evidence quoted;
* **integrity** — the guest's DMA data is in memory as the device sent it, and its MMIO writes reached
  the device unchanged;
* **freshness** — after a DPC, hot reset, D3cold, FLR or link drop, no TDI returns to RUN without
  attestation and re-keying after the reset, the guest does not keep using a TDI it accepted before
  the reset, and a host driver does not resume a device it keeps without re-authenticating it;
* **liveness** — every device ends accepted by its relying party, running and with a Secure stream,
  and every recovery completes.

Each gives :class:`Verdict` HELD, BROKEN_DETECTED (by whom, at which message: the first alarm an
honest component raised after the adversary's first action) or BROKEN_UNDETECTED, with an excerpt
of the trace.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sim.crypto.aead import ide_decrypt, ide_iv
from sim.crypto.errors import AeadError
from sim.engine.exposure import Exposure, byte_variants
from sim.engine.trace import Channel, EventKind, TraceEvent
from sim.firmware.commands import FwStatus
from sim.firmware.fat_tsm import FatTsm
from sim.host.kernel import HostEventKind
from sim.protocols.tdisp import TdiTransition
from sim.protocols.tsm import Phase, PhaseMark, SecuredDevice
from sim.rootport.ide_regs import KeySlotStatus
from sim.scenario.schema import AdversaryStrategy
from sim.vmm.guest import LeftRunCause, TdiNote
from sim.wire.codec import DecodeError
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.spdm.common import RequestCode
from sim.wire.tdisp import InterfaceInfo, LockInterfaceFlags, TdiReport, TdiState
from sim.wire.tlp import IDE_PREFIX_BYTE, IdeTlp, Tlp, decode_tlp

if TYPE_CHECKING:
    from sim.adversary.strategies import Adversary
    from sim.scenario.run import ModelRun

EXCERPT_LINES = 6
EXCERPT_WIDTH = 180
# a plain SPDM CHALLENGE or GET_MEASUREMENTS reaching the device (DOE header 8 bytes, then version, code)
ATTESTATION_REQUESTS = frozenset({RequestCode.CHALLENGE, RequestCode.GET_MEASUREMENTS})
MIN_LEAK_BYTES = 8


class SecurityProperty(enum.StrEnum):
    AUTHENTICITY = "authenticity"
    CONFIDENTIALITY = "confidentiality"
    INTEGRITY = "integrity"
    FRESHNESS = "freshness"
    LIVENESS = "liveness"


class Verdict(enum.StrEnum):
    """One run's answer for one property. HELD needs evidence: something of the property was at stake and
    (with an adversary) the adversary acted against it; otherwise the answer is NOT_EXERCISED, with why."""

    HELD = "held"
    BROKEN_DETECTED = "broken-detected"
    BROKEN_UNDETECTED = "broken-undetected"
    NOT_EXERCISED = "not-exercised"


class AlarmKind(enum.StrEnum):
    """What an honest component does when it notices something wrong."""

    IDE_INTEGRITY = "ide-integrity"        # a MAC check or missing key at a port
    VERIFIER_REFUSED = "verifier-refused"  # a guest, the host or the fat TSM refused the device or its evidence
    REFUSED = "refused"                    # the Root Port or a firmware service refused a request
    TDI_ERROR = "tdi-error"                # the device moved a TDI to ERROR (config change, stream insecure ...)
    GUEST_NOTICED = "guest-noticed"        # the guest saw its TDI leave RUN (its own state check)
    RESET_NOTICE = "reset-notice"          # the VMM told the guest its device was reset (liveness only)
    TEE_REFUSED = "tee-refused"            # the device would not send a TDI's T=1 traffic without a Secure stream
    DOE_FAILURE = "doe-failure"            # a DOE exchange timed out or failed


RELEVANT: dict[SecurityProperty, frozenset[AlarmKind]] = {
    SecurityProperty.AUTHENTICITY: frozenset({AlarmKind.VERIFIER_REFUSED, AlarmKind.TDI_ERROR,
                                              AlarmKind.GUEST_NOTICED, AlarmKind.TEE_REFUSED}),
    SecurityProperty.CONFIDENTIALITY: frozenset({AlarmKind.IDE_INTEGRITY, AlarmKind.REFUSED, AlarmKind.TDI_ERROR,
                                                 AlarmKind.VERIFIER_REFUSED, AlarmKind.GUEST_NOTICED,
                                                 AlarmKind.TEE_REFUSED}),
    SecurityProperty.INTEGRITY: frozenset({AlarmKind.IDE_INTEGRITY, AlarmKind.TDI_ERROR, AlarmKind.GUEST_NOTICED}),
    SecurityProperty.FRESHNESS: frozenset({AlarmKind.VERIFIER_REFUSED, AlarmKind.TDI_ERROR,
                                           AlarmKind.GUEST_NOTICED, AlarmKind.TEE_REFUSED}),
    SecurityProperty.LIVENESS: frozenset(AlarmKind),
}


# ----------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PropertyResult:
    property: SecurityProperty
    verdict: Verdict
    detail: str
    detected_by: str | None = None
    at: str | None = None
    at_ns: int | None = None
    excerpt: tuple[str, ...] = ()
    at_stake: int = 0        # items of the property the run had (acceptances, buffers, resets, served devices)
    actions: int = 0         # what the adversary did against them (0 for the run with nobody compromised)

    def to_json(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "detail": self.detail, "detected_by": self.detected_by,
                "at": self.at, "at_ns": self.at_ns, "excerpt": list(self.excerpt), "at_stake": self.at_stake,
                "actions": self.actions}


@dataclasses.dataclass(frozen=True)
class Violation:
    time_ns: int
    device: str
    text: str
    line: str = ""
    evidence: str = ""    # an earlier trace line that explains it (where the adversary got a key ...)


@dataclasses.dataclass(frozen=True)
class Alarm:
    kind: AlarmKind
    by: str
    at: str
    time_ns: int
    line: str


def line(event: TraceEvent) -> str:
    """One trace event as an excerpt line."""
    text = f"{event.time_ns} ns {event.source} -> {event.destination} [{event.channel}] {event.summary}"
    return text if len(text) <= EXCERPT_WIDTH else text[:EXCERPT_WIDTH - 3] + "..."


# ----------------------------------------------------------------------------------------------------
# the witness: ground truth recorded during the run
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DmaRecord:
    """A DMA the device was asked to do: a write of ``data`` into memory, or (``read``) a fetch of ``data`` its
    owner placed in memory; either way the data crosses the link and is at stake."""

    time_ns: int
    device: str
    function: int
    address: int
    data: bytes
    tee: bool
    sent: bool
    protected: bool   # its owner believed it protected when sent (a guest's TDI in RUN; a host-secured device)
    read: bool = False


@dataclasses.dataclass(frozen=True)
class MemoryWrite:
    """A write that landed in host memory behind a Root Port (from a device, genuine or not)."""

    time_ns: int
    root_port: str
    address: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class MmioRecord:
    time_ns: int
    guest: str
    device: str
    function: int
    bar: int
    offset: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class Acceptance:
    """A relying party accepted a device (and, for a guest, started its TDI): what it accepted."""

    time_ns: int
    device: str
    relying: str
    cert_chain: bytes
    firmware_digest: bytes | None          # measurement index 2 as accepted
    report: bytes | None                   # the interface report as accepted (None: no TDI)
    session_genuine: bool | None           # the SPDM session behind it is one the genuine DSM holds
    function: int = 0


@dataclasses.dataclass(frozen=True)
class TdiRun:
    """The device's own view when one of its TDIs entered RUN."""

    time_ns: int
    device: str
    function_id: int
    flags: LockInterfaceFlags | None
    mmio_reporting_offset: int


class Witness:
    """Records ground truth during a run (module docstring). Install before ``run.run()``."""

    def __init__(self, run: ModelRun) -> None:
        self.run = run
        self.dma: list[DmaRecord] = []
        self.mmio: list[MmioRecord] = []
        self.memory: list[MemoryWrite] = []
        self.firmware: dict[str, list[tuple[int, str]]] = {}   # device -> (time, version it runs from then on)
        self.accepted: list[Acceptance] = []
        self.tdi_runs: list[TdiRun] = []
        self._fat_evidence: dict[str, list[tuple[int, Any]]] = {}
        self._finished = False

    @classmethod
    def install(cls, run: ModelRun) -> Witness:
        w = cls(run)
        for h in run.platform.devices:
            h.endpoint.dma_write = w._dma_hook(h.id, h.endpoint.dma_write)  # type: ignore[method-assign]
            w.firmware[h.id] = [(run.world.now, h.responder.profile.measurements.firmware_version)]
            h.responder.update_firmware = w._firmware_hook(h.id, h.responder.update_firmware)  # type: ignore
            h.dsm.add_listener(lambda event, h=h: w._on_dsm(h, event))
        for name, guest in run.actors.guests.items():
            guest.mmio_write = w._mmio_hook(name, guest.mmio_write)  # type: ignore[method-assign]
            guest.device_dma_read = w._dma_read_hook(guest)  # type: ignore[method-assign]
            guest.evidence_problems = w._evidence_hook(name, guest.evidence_problems)  # type: ignore[method-assign]
            guest.phase_listeners.append(lambda mark, name=name: w._on_guest_phase(name, mark))
        for rp in run.platform.root_ports.values():
            rp.host_memory.write = w._memory_hook(rp.path, rp.host_memory.write)  # type: ignore[method-assign]
        run.host.listeners.append(w._on_host)
        return w

    # -- hooks --------------------------------------------------------------------------------------

    def _dma_hook(self, device: str, original: Callable[..., bool]) -> Callable[..., bool]:
        def dma_write(function: int, address: int, data: bytes, *, tee: bool = False) -> bool:
            sent = original(function, address, data, tee=tee)
            self.dma.append(DmaRecord(self.run.world.now, device, function, address, bytes(data), tee, sent,
                                      self._believed_protected(device, tee)))
            return sent
        return dma_write

    def _dma_read_hook(self, guest: Any) -> Callable[..., Any]:
        original = guest.device_dma_read

        def device_dma_read(device: str, address: int, data: bytes, *, function: int = 0) -> Any:
            tdi = guest.tdis.get((device, function))
            running = tdi is not None and tdi.state is TdiState.RUN
            self.dma.append(DmaRecord(self.run.world.now, device, function, address, bytes(data), running, True,
                                      self._believed_protected(device, running), read=True))
            return (yield from original(device, address, data, function=function))
        return device_dma_read

    def _firmware_hook(self, device: str, original: Callable[..., None]) -> Callable[..., None]:
        def update_firmware(version: str, image: bytes | None = None) -> None:
            self.firmware[device].append((self.run.world.now, version))
            original(version, image)
        return update_firmware

    def firmware_at(self, device: str, t: int) -> str:
        """The firmware the device runs at ``t`` (as flashed; a lying DSM is the properties' business)."""
        version = self.firmware[device][0][1]
        for when, v in self.firmware[device]:
            if when <= t:
                version = v
        return version

    def _memory_hook(self, root_port: str, original: Callable[[int, bytes], None]) -> Callable[[int, bytes], None]:
        def write(address: int, data: bytes) -> None:
            self.memory.append(MemoryWrite(self.run.world.now, root_port, address, bytes(data)))
            original(address, data)
        return write

    def _believed_protected(self, device: str, tee: bool) -> bool:
        if self.run.actors.vmm.owner_of(device) is not None:
            return tee
        dev = self.run.host.devices.get(device)
        return bool(dev is not None and dev.secured)

    def _mmio_hook(self, guest: str, original: Callable[..., None]) -> Callable[..., None]:
        def mmio_write(device: str, offset: int, data: bytes, *, function: int = 0, bar: int = 0) -> None:
            self.mmio.append(MmioRecord(self.run.world.now, guest, device, function, bar, offset, bytes(data)))
            original(device, offset, data, function=function, bar=bar)
        return mmio_write

    def _evidence_hook(self, guest: str, original: Callable[..., list[str]]) -> Callable[..., list[str]]:
        def evidence_problems(info: Any, *args: Any, **kwargs: Any) -> list[str]:
            problems = original(info, *args, **kwargs)
            if not problems:
                self._fat_evidence.setdefault(guest, []).append((self.run.world.now, (info, self._fat_sessions())))
            return problems
        return evidence_problems

    def _fat_sessions(self) -> dict[str, bool | None]:
        """Per device, whether the fat TSM's session is one the genuine DSM holds (now, as the guest accepts)."""
        fw = self.run.actors.firmware
        if not isinstance(fw, FatTsm):
            return {}
        return {d.device_id: self._genuine_session(d.device_id, d.secured.session)
                for d in fw.devices.values() if d.secured is not None}

    def _on_dsm(self, handle: Any, event: object) -> None:
        if not isinstance(event, TdiTransition) or event.new is not TdiState.RUN:
            return
        rt = handle.dsm.tdisp.tdi(event.interface_id)
        lock = getattr(rt, "lock", None)
        self.tdi_runs.append(TdiRun(self.run.world.now, handle.id, event.interface_id.function_id,
                                    None if lock is None else LockInterfaceFlags(lock.flags),
                                    0 if lock is None else lock.mmio_reporting_offset))

    def _on_guest_phase(self, guest: str, mark: PhaseMark) -> None:
        if mark.phase is not Phase.RUN:
            return
        secured = self.run.actors.guests[guest].secured_device(mark.device)
        if isinstance(secured, SecuredDevice):
            self._accept(mark.device, guest, secured, secured.session,
                         None if secured.report is None else secured.report.raw)

    def _on_host(self, event: Any) -> None:
        if event.kind is not HostEventKind.SECURED or self.run.actors.vmm.owner_of(event.device) is not None:
            return
        dev = self.run.host.devices.get(event.device)
        secured = getattr(getattr(dev, "last_secure", None), "value", None)
        if isinstance(secured, SecuredDevice):
            self._accept(event.device, self.run.host.path, secured, secured.session, None)

    def _accept(self, device: str, relying: str, secured: SecuredDevice, session: Any, report: bytes | None) -> None:
        att = secured.attestation
        function = secured.interface.function_id & 0x7 if secured.interface is not None else 0
        self.accepted.append(Acceptance(self.run.world.now, device, relying, bytes(att.cert_chain),
                                        att.measurement(2), report, self._genuine_session(device, session), function))

    def _genuine_session(self, device: str, session: Any) -> bool | None:
        """Whether the genuine DSM holds an SPDM session with the same id and handshake secret."""
        secure = getattr(session, "secure", None)
        if secure is None:
            return None
        theirs = self.run.platform.device(device).responder.sessions.get(secure.session_id)
        if theirs is None:
            return False
        try:
            return bool(theirs.keys.handshake_secret == secure.keys.handshake_secret)
        except Exception:  # a session whose key schedule never got that far
            return False

    def finish(self) -> None:
        """Fat model: the guest accepted the firmware's evidence; pair each acceptance with it."""
        fw = self.run.actors.firmware
        if self._finished or not isinstance(fw, FatTsm):
            return
        self._finished = True
        for name, guest in self.run.actors.guests.items():
            for (device, function), rec in guest.tdis.items():
                if rec.accepted_ns is None:
                    continue
                for t, _state in _accept_times(rec):
                    got = _latest_before(self._fat_evidence.get(name, []), t)
                    if got is None:
                        continue
                    info, sessions = got
                    self.accepted.append(Acceptance(t, device, name, bytes(info.certificates),
                                                    _measurement(info.measurements, 2), bytes(info.report),
                                                    sessions.get(device, False), function))


def _accept_times(rec: Any) -> list[tuple[int, str]]:
    return [(entry.time_ns, entry.text) for entry in rec.history if entry.note is TdiNote.ACCEPTED]


def _latest_before(items: list[tuple[int, Any]], t: int) -> Any:
    best = None
    for when, info in items:
        if when <= t:
            best = info
    return best


def _measurement(record: bytes, index: int) -> bytes | None:
    from sim.vmm.guest import _measurement_blocks

    try:
        blocks = _measurement_blocks(record)
    except DecodeError:
        return None
    return next((bytes(b.value) for b in blocks if b.index == index), None)


# ----------------------------------------------------------------------------------------------------
# alarms: what honest components noticed, from the trace and the hardware record
# ----------------------------------------------------------------------------------------------------


def alarms(run: ModelRun, adversary: Adversary | None = None) -> list[Alarm]:
    """Every alarm an honest component raised during the run, in time order."""
    out: list[Alarm] = []
    mine = set(adversary.paths) if adversary is not None else set()
    guests = set(run.actors.guests)
    endpoints = {h.path for h in run.platform.devices}
    fw_path = run.actors.firmware.path if run.actors.firmware is not None else None
    sent: dict[tuple[str, int], list[TraceEvent]] = {}   # (receiver, time sent) -> TLPs on the wire
    hops = {p: link.hop_ns for link in run.platform.links.values() for p in (link.root_port.path, link.endpoint_path)}
    for e in run.memory.events:
        kind = e.kind
        if e.channel is Channel.TLP:
            sent.setdefault((e.destination, e.time_ns), []).append(e)
            continue
        if e.source in mine:
            continue
        if kind is EventKind.IDE_INTEGRITY:
            out.append(Alarm(AlarmKind.IDE_INTEGRITY, e.source, _failed_tlp(sent, hops, e), e.time_ns, line(e)))
        elif kind is EventKind.GUEST_TDI and e.source in guests:
            note = e.get("note")
            if note == TdiNote.NOT_ACCEPTED:
                # ``detail`` is the refusal in the guest's words: quoted for people, never matched
                out.append(Alarm(AlarmKind.VERIFIER_REFUSED, e.source, str(e.get("detail") or e.get("reason")),
                                 e.time_ns, line(e)))
            elif note == TdiNote.LEFT_RUN:
                # a reset notice from the (untrusted) VMM tells the guest its TDI is gone (liveness) but detects no
                # attack; a state check of its own does
                cause = e.get("cause")
                if cause == LeftRunCause.VMM_NOTICE:
                    out.append(Alarm(AlarmKind.RESET_NOTICE, e.source, "VMM reset notice", e.time_ns, line(e)))
                elif cause == LeftRunCause.STATE_CHECK:
                    out.append(Alarm(AlarmKind.GUEST_NOTICED, e.source, "state check", e.time_ns, line(e)))
        elif kind is EventKind.HOST and e.source == run.host.path and \
                e.get("event") in (HostEventKind.AUTH_FAILED, HostEventKind.SECURE_FAILED):
            out.append(Alarm(AlarmKind.VERIFIER_REFUSED, e.source, str(e.get("event")), e.time_ns, line(e)))
        elif kind is EventKind.FIRMWARE_MESSAGE and e.source == fw_path and e.get("direction") == "response":
            status = e.get("status")
            if status == FwStatus.ATTESTATION_FAILED.name:
                out.append(Alarm(AlarmKind.VERIFIER_REFUSED, e.source, f"{e.get('command')} {status}", e.time_ns,
                                 line(e)))
            elif status not in (FwStatus.SUCCESS.name, FwStatus.SPDM_REQUEST.name):
                out.append(Alarm(AlarmKind.REFUSED, e.source, f"{e.get('command')} {status}", e.time_ns, line(e)))
        elif kind is EventKind.KEY_SLOT and e.get("status") != KeySlotStatus.SUCCESS.name:
            out.append(Alarm(AlarmKind.REFUSED, e.destination, f"{e.get('op')} {e.get('status')}", e.time_ns, line(e)))
        elif kind is EventKind.TEE_REFUSED and e.source in endpoints:
            out.append(Alarm(AlarmKind.TEE_REFUSED, e.source, "T=1 request without a Secure stream", e.time_ns,
                             line(e)))
        elif kind is EventKind.DOE_FAILED:
            out.append(Alarm(AlarmKind.DOE_FAILURE, e.source, f"DOE exchange failed ({e.get('code')})", e.time_ns,
                             line(e)))
    for h in run.platform.devices:
        faults = {t for t, _ in run.fault_times.get(h.id, [])}
        for t, name, state in run.watch.devices[h.id].tdis:
            if state == "ERROR" and t not in faults:
                out.append(Alarm(AlarmKind.TDI_ERROR, h.dsm_path, f"TDI {name} -> ERROR", t,
                                 f"{t} ns {h.dsm_path}: TDI {name} -> ERROR"))
    out.sort(key=lambda a: a.time_ns)
    return out


def _failed_tlp(sent: dict[tuple[str, int], list[TraceEvent]], hops: dict[str, int], alarm: TraceEvent) -> str:
    """The TLP whose check failed: one sent a link hop before the alarm to the alarming port, preferring
    one an interposer or injector put there."""
    candidates = sent.get((alarm.source, alarm.time_ns - hops.get(alarm.source, 0)), [])
    if not candidates:
        return f"integrity check failed (stream {alarm.get('stream')})"
    altered = [c for c in candidates if c.kind in (EventKind.TLP_MODIFIED, EventKind.TLP_CORRUPTED,
                                                   EventKind.TLP_INJECTED)]
    return line((altered or candidates)[0])


# ----------------------------------------------------------------------------------------------------
# the checks
# ----------------------------------------------------------------------------------------------------


class _Context:
    """What the checks share: the run, the witness, the adversary, guest data, alarms."""

    def __init__(self, run: ModelRun, witness: Witness, adversary: Adversary | None) -> None:
        self.run = run
        self.witness = witness
        self.adversary = adversary
        self.alarms = alarms(run, adversary)
        self.events = run.memory.events
        self.scenario_owner = {d.id: d.owner for d in run.scenario.platform.devices}
        self.known: dict[bytes, bool] = {}

    def guest_data(self) -> list[bytes]:
        """What a guest's confidentiality covers: its DMA both ways and its MMIO writes."""
        return [r.data for r in self.witness.dma if r.sent and r.protected and self.is_guests(r.device)] + \
               [r.data for r in self.witness.mmio]

    def adversary_actions(self) -> int:
        """How often the adversary acted: its recorded actions; for RECORD (passive by nature) the boundary
        crossings with bytes that it handled, since handling them is all it does."""
        adv = self.adversary
        if adv is None:
            return 0
        if adv.strategy is not AdversaryStrategy.RECORD:
            return len(adv.actions)
        paths = set(adv.paths)
        return sum(1 for e in self.events if e.data and e.time_ns >= adv.installed_ns
                   and (e.source in paths or e.destination in paths or paths.intersection(e.observers)))

    def is_guests(self, device: str) -> bool:
        """A device the scenario gives a guest (its data is the guest's, whoever secured it)."""
        owner = self.scenario_owner.get(device)
        return owner is not None and owner != "host"

    def expected_digest(self, device: str) -> bytes | None:
        from sim.scenario.policies import expected_firmware_digest

        for g in self.run.scenario.guests:
            ref = g.policy.expected_measurements.get(device)
            if device in g.devices and ref is not None and ref.firmware is not None:
                return expected_firmware_digest(self.run.scenario, device, ref.firmware)
        return None

    def actual_firmware(self, device: str, t: int) -> str:
        """What the device really runs at ``t``: what was flashed, unless a compromised DSM runs something else."""
        adv = self.adversary
        if adv is not None and device in adv.firmware_truth and t >= adv.installed_ns:
            return adv.firmware_truth[device]
        return self.witness.firmware_at(device, t)

    def adversary_lines(self) -> list[tuple[int, str]]:
        """The adversary's first two actions, as traced."""
        if self.adversary is None:
            return []
        paths = set(self.adversary.paths)
        return [(e.time_ns, line(e)) for e in self.events if e.source in paths and e.kind is EventKind.ADVERSARY
                and e.get("action") == "act"][:2]

    def result(self, prop: SecurityProperty, violations: list[Violation], held: str, at_stake: int,
               nothing: str) -> PropertyResult:
        """The verdict from the violations found; with none, HELD only if something was at stake and the
        adversary (if any) acted; ``nothing`` says what would have been at stake."""
        acted = self.adversary_actions()
        if not violations:
            if at_stake == 0:
                return PropertyResult(prop, Verdict.NOT_EXERCISED, f"nothing at stake: {nothing}", at_stake=0,
                                      actions=acted)
            if self.adversary is not None and acted == 0:
                return PropertyResult(prop, Verdict.NOT_EXERCISED, f"the adversary never acted ({at_stake} item(s) "
                                      "at stake)", at_stake=at_stake, actions=0)
            if self.adversary is not None:
                held = f"the adversary acted {acted} time(s) against {at_stake} item(s) at stake; " + held
            return PropertyResult(prop, Verdict.HELD, held, at_stake=at_stake, actions=acted)
        first = min(violations, key=lambda v: v.time_ns)
        since = 0
        if self.adversary is not None:
            since = self.adversary.first_action_ns if self.adversary.first_action_ns is not None else first.time_ns
        relevant = RELEVANT[prop]
        alarm = next((a for a in self.alarms if a.kind in relevant and a.time_ns >= since), None)
        lines = self.adversary_lines() + [(first.time_ns, x) for x in (first.evidence, first.line) if x]
        if alarm is not None:
            lines.append((alarm.time_ns, alarm.line))
        excerpt = tuple(x for _, x in sorted(lines, key=lambda tx: tx[0]))[:EXCERPT_LINES]
        detail = first.text + (f" (+{len(violations) - 1} more)" if len(violations) > 1 else "")
        if alarm is None:
            return PropertyResult(prop, Verdict.BROKEN_UNDETECTED, detail, excerpt=excerpt, at_stake=at_stake,
                                  actions=acted)
        return PropertyResult(prop, Verdict.BROKEN_DETECTED, detail, alarm.by, alarm.at, alarm.time_ns, excerpt,
                              at_stake, acted)


def _authenticity(ctx: _Context) -> PropertyResult:
    run, out = ctx.run, []
    for acc in ctx.witness.accepted:
        handle = run.platform.device(acc.device)
        problems: list[str] = []
        if handle.identity.certificates_der[-1] not in acc.cert_chain:
            problems.append("the accepted certificate chain is not the device's")
        if acc.session_genuine is False:
            problems.append("the session behind it is not one the genuine device holds")
        actual = ctx.actual_firmware(acc.device, acc.time_ns)
        from sim.scenario.policies import expected_firmware_digest

        actual_digest = expected_firmware_digest(run.scenario, acc.device, actual)
        expected = ctx.expected_digest(acc.device)
        if expected is not None and actual_digest != expected:
            problems.append(f"the device runs firmware {actual}, which the guest's policy rejects")
        if acc.firmware_digest is not None and acc.firmware_digest != actual_digest:
            problems.append("the accepted firmware measurement is not that of the firmware it runs")
        if acc.report is not None:
            problems += _report_problems(ctx, acc)
        if problems:
            out.append(Violation(acc.time_ns, acc.device, f"{acc.relying} accepted {acc.device}: " + "; ".join(problems),
                                 f"{acc.time_ns} ns {acc.relying} accepted {acc.device}"))
    for rec in ctx.witness.dma:
        if rec.tee and rec.sent:
            watch = run.watch.devices[rec.device]
            name = watch.tdi_names.get(run.platform.device(rec.device).endpoint.requester_id(rec.function))
            state = watch.tdi_state_at(name, rec.time_ns) if name is not None else "RUN"
            if state != "RUN":
                out.append(Violation(rec.time_ns, rec.device, f"the guest used {rec.device}'s TDI as a TEE "
                                     f"while the device had it in {state}",
                                     f"{rec.time_ns} ns TEE DMA by {rec.device} with TDI {state}"))
    n = len(ctx.witness.accepted)
    refusals = sum(1 for a in ctx.alarms if a.kind is AlarmKind.VERIFIER_REFUSED)
    return ctx.result(SecurityProperty.AUTHENTICITY, out, f"{n} acceptance(s), each of the genuine device "
                                                          f"as the policy expects it; {refusals} refusal(s)",
                      n + refusals, "no relying party accepted or refused a device")


def _report_problems(ctx: _Context, acc: Acceptance) -> list[str]:
    handle = ctx.run.platform.device(acc.device)
    try:
        report = TdiReport.decode(acc.report or b"")
    except DecodeError as exc:
        return [f"the accepted report does not decode ({exc.field})"]
    rid = handle.endpoint.requester_id(acc.function)
    runs = [r for r in ctx.witness.tdi_runs if r.device == acc.device and r.function_id == rid
            and r.time_ns <= acc.time_ns]
    out: list[str] = []
    if not runs:
        return ["the device never started that TDI"]
    truth = runs[-1]
    if InterfaceInfo(report.interface_info) & InterfaceInfo.NO_FW_UPDATE and \
            not (truth.flags is not None and truth.flags & LockInterfaceFlags.NO_FW_UPDATE):
        out.append("the report claims NO_FW_UPDATE but the TDI was locked without it")
    header = handle.endpoint.functions[acc.function].header
    for r in report.mmio_ranges:
        if r.range_id not in header.bars:
            out.append(f"the report lists MMIO range {r.range_id}, which is no BAR of the function")
            continue
        address = header.bar_address(r.range_id)
        if r.address - truth.mmio_reporting_offset != address or r.size != header.bars[r.range_id].size:
            out.append(f"the report places MMIO range {r.range_id} at 0x{r.address:x} ({r.size} bytes); "
                       f"the BAR is at 0x{address:x} ({header.bars[r.range_id].size} bytes)")
    return out


def _slot_history(ctx: _Context) -> list[tuple[int, str, int, KeySet, Direction, SubStream, bytes, int]]:
    """Root Port slot writes from the trace: (time, port, block, key set, direction, sub-stream, key, ifv)."""
    out = []
    for e in ctx.events:
        if e.kind is not EventKind.KEY_SLOT or e.get("op") != "program" or len(e.data) != 40:
            continue
        try:
            block = int(e.get("block"))  # type: ignore[arg-type]
            slot = (KeySet[str(e.get("key_set"))], Direction[str(e.get("direction"))],
                    SubStream[str(e.get("sub_stream"))])
        except (KeyError, TypeError, ValueError):
            continue
        out.append((e.time_ns, e.destination, block, *slot, e.data[:32], int.from_bytes(e.data[32:], "big")))
    return out


def _known(ctx: _Context, key: bytes) -> bool:
    """Whether the compromised component holds ``key``: it chose or copied it, or it handled it in the clear."""
    cached = ctx.known.get(key)
    if cached is None:
        cached = ctx.known[key] = _holds(ctx, key)
    return cached


def _holds(ctx: _Context, key: bytes) -> bool:
    adv = ctx.adversary
    if adv is None:
        return False
    if key in adv.known_keys:
        return True
    exposure = ctx.run.world.exposure
    found = exposure.find(key)
    if not found:
        return False
    seen = exposure.per_secret()
    for i, record in enumerate(exposure.records):
        if any(record is f for f in found) and any(Exposure[seen[i]["seen"].get(p, "NEVER")] >= Exposure.SAW_PLAINTEXT
                                                   for p in adv.paths):
            return True
    return False


def _where_seen(ctx: _Context, key: bytes) -> str:
    """The first crossing in which the adversary handled ``key`` in the clear (any byte order it travels in)."""
    adv = ctx.adversary
    if adv is None:
        return ""
    variants = byte_variants(key)
    paths = set(adv.paths)
    for e in ctx.events:
        if e.data and e.channel is not Channel.FAULT and paths & {e.source, e.destination, *e.observers} \
                and any(v in e.data for v in variants):
            return line(e)
    return ""


def _confidentiality(ctx: _Context) -> PropertyResult:
    run, out = ctx.run, []
    data = ctx.guest_data()
    guest_devices = {h.path: h for h in run.platform.devices if ctx.is_guests(h.id)}
    rps = {h.root_port.path: h for h in guest_devices.values()}
    history = _slot_history(ctx)
    sent: dict[tuple[str, Direction, int, KeySet, SubStream], list[int]] = {}
    tried: set[bytes] = set()
    for e in ctx.events:
        if e.channel is not Channel.TLP or not e.data:
            continue
        from_device = e.source in guest_devices
        if not from_device and not (e.source in rps and e.destination in guest_devices):
            continue
        if e.data[:1] != bytes([IDE_PREFIX_BYTE]):
            payload = _plain_payload(e.data)
            if len(payload) >= MIN_LEAK_BYTES and any(payload in d for d in data):
                out.append(Violation(e.time_ns, guest_devices.get(e.source, rps.get(e.source)).id,  # type: ignore[union-attr]
                                     "guest data crossed the link in the clear", line(e)))
            continue
        if ctx.adversary is None:
            continue
        try:
            itlp = IdeTlp.decode(e.data)
        except DecodeError:
            continue
        p = itlp.prefix
        rp = e.destination if from_device else e.source
        key_dir = Direction.RX if from_device else Direction.TX
        counts = sent.setdefault((rp, key_dir, p.stream_id, KeySet(p.key_set), SubStream(p.sub_stream)), [])
        counts.append(e.time_ns)
        for t, port, _blk, ks, d, ss, key, ifv in history:
            if port != rp or ks != p.key_set or d is not key_dir or ss != p.sub_stream or t > e.time_ns:
                continue
            if key in tried or not _known(ctx, key):
                continue
            index = sum(1 for when in counts[:-1] if when >= t)
            try:
                plain = ide_decrypt(key, ide_iv(ifv + index), itlp.ciphertext, itlp.mac or b"", itlp.header_bytes())
            except AeadError:
                continue
            tried.add(key)
            if any(plain[:64] in d for d in data if plain):
                who = ctx.adversary.component
                out.append(Violation(e.time_ns, rps.get(rp).id if rp in rps else "",  # type: ignore[union-attr]
                                     f"{who} holds IDE key {ks.name} {d.name} {ss.name} of {port}: it decrypts "
                                     f"the captured TLP to the guest's data ({plain[:8].hex()}...)", line(e),
                                     _where_seen(ctx, key)))
    return ctx.result(SecurityProperty.CONFIDENTIALITY, out,
                      f"{len(data)} guest buffer(s): never in the clear on the link, no IDE key of theirs with the "
                      "adversary", len(data), "no guest DMA or MMIO data crossed the link")


def _plain_payload(wire: bytes) -> bytes:
    try:
        tlp = decode_tlp(wire)
    except DecodeError:
        return b""
    return tlp.data if isinstance(tlp, Tlp) else b""


def _integrity(ctx: _Context) -> PropertyResult:
    """Every write that landed in a guest DMA buffer is the device's own data for it (a lost write is not an
    integrity break: liveness reports it); every guest MMIO write reached the device unchanged."""
    run, out = ctx.run, []
    buffers = [r for r in ctx.witness.dma if r.sent and not r.read]
    guarded = [r for r in buffers if r.protected]
    for w in ctx.witness.memory:
        for rec in guarded:
            lo, hi = max(w.address, rec.address), min(w.address + len(w.data), rec.address + len(rec.data))
            if lo >= hi or w.time_ns < rec.time_ns:
                continue
            if not any(_covers(other, w) for other in buffers if other.time_ns <= w.time_ns):
                bad = sum(a != b for a, b in zip(w.data[lo - w.address:hi - w.address],
                                                 rec.data[lo - rec.address:hi - rec.address], strict=True))
                out.append(Violation(w.time_ns, rec.device, f"{bad} of {hi - lo} bytes written to {rec.device}'s "
                                     f"DMA buffer at 0x{lo:x} are not the device's",
                                     f"{w.time_ns} ns {w.root_port}: write to 0x{w.address:x} ({len(w.data)} bytes)"))
                break
    out += _tampered_in_transit(ctx, guarded)
    for m in ctx.witness.mmio:
        faults = [t for t, _ in run.fault_times.get(m.device, []) if t >= m.time_ns]
        if faults:
            continue
        fn = run.platform.device(m.device).endpoint.functions[m.function]
        if fn.mmio.mmio_read(m.bar, m.offset, len(m.data)) != m.data:
            out.append(Violation(m.time_ns, m.device, f"{m.guest}'s MMIO write to {m.device} BAR{m.bar}+0x{m.offset:x} "
                                 "did not arrive unchanged"))
    return ctx.result(SecurityProperty.INTEGRITY, out, f"{len(guarded)} DMA buffer(s) and {len(ctx.witness.mmio)} "
                                                       "MMIO write(s): nothing but the device's own data arrived",
                      len(guarded) + len(ctx.witness.mmio), "no protected DMA write or MMIO write in this run")


def _tampered_in_transit(ctx: _Context, guarded: list[DmaRecord]) -> list[Violation]:
    """TLPs of a guest's DMA that did not cross the link as their sender sent them: changed on the wire
    (traced by whoever changed them), withheld (a drop traced on the link), or sent again (the same wire bytes
    twice: IDE counters make every genuine TLP unique)."""
    if not guarded:
        return []
    ends = {p for h in ctx.run.platform.devices for p in (h.path, h.root_port.path)}

    def target(wire: bytes) -> DmaRecord | None:
        try:
            header = decode_tlp(wire).header
        except DecodeError:
            return None
        address = getattr(header, "address", None)
        if address is None or not getattr(header, "is_write", False):
            return None
        return next((r for r in guarded if r.address <= address < r.address + len(r.data)), None)

    out: list[Violation] = []
    seen: dict[bytes, int] = {}
    for e in ctx.events:
        if e.channel is Channel.TLP and e.data:
            rec = target(e.data)
            if rec is None or e.time_ns < rec.time_ns:
                continue
            if e.kind is EventKind.TLP_MODIFIED:
                out.append(Violation(e.time_ns, rec.device, f"a TLP of {rec.device}'s DMA was changed on the link",
                                     line(e)))
            elif e.source in ends and e.data in seen:
                out.append(Violation(e.time_ns, rec.device, f"a TLP of {rec.device}'s DMA crossed the link twice",
                                     line(e)))
            seen[e.data] = e.time_ns
        elif e.kind is EventKind.TLP_DROPPED and e.get("by") == "interposer" and guarded[0].time_ns <= e.time_ns:
            out.append(Violation(e.time_ns, guarded[0].device, "a TLP was withheld on the link during "
                                 f"{guarded[0].device}'s DMA", line(e)))
    return out


def _covers(rec: DmaRecord, w: MemoryWrite) -> bool:
    """``w`` is part of DMA ``rec``: the same bytes at the same place."""
    off = w.address - rec.address
    padded = rec.data + bytes(-len(rec.data) % 4)
    return 0 <= off and padded[off:off + len(w.data)] == w.data


def _freshness(ctx: _Context) -> PropertyResult:
    run, out = ctx.run, []
    total = 0
    slots = _slot_history(ctx)
    for h in run.platform.devices:
        rec = run.watch.devices[h.id]
        for fault_t, what in run.fault_times.get(h.id, []):
            total += 1
            later = [t for t, _n, s in rec.tdis if s == "RUN" and t > fault_t]
            for t in later[:1]:
                phases = {p for pt, p, _o in rec.phases if fault_t < pt <= t}
                keyed = any(fault_t < st <= t and port == h.root_port.path for st, port, *_ in slots)
                attested = any(fault_t < e.time_ns <= t and e.channel is Channel.DOE and e.destination == h.path
                               and len(e.data) > 9 and e.data[9] in ATTESTATION_REQUESTS for e in ctx.events)
                missing = [x for x, ok in (("attestation", attested),
                                           ("key programming", Phase.KEY_PROG.value in phases and keyed)) if not ok]
                if missing:
                    out.append(Violation(t, h.id, f"{h.id}'s TDI returned to RUN after {what} without "
                                         + " and ".join(missing), f"{t} ns {h.dsm_path}: TDI -> RUN"))
            stale = [r for r in ctx.witness.dma if r.device == h.id and r.tee and r.time_ns > fault_t
                     and _left_run(rec, rec.tdi_names.get(h.endpoint.requester_id(r.function)), fault_t, r.time_ns)
                     and not any(fault_t < a.time_ns <= r.time_ns for a in ctx.witness.accepted if a.device == h.id)]
            for r in stale[:1]:
                out.append(Violation(r.time_ns, h.id, f"the guest used {h.id} as a TEE after {what} without "
                                     "accepting it again", f"{r.time_ns} ns TEE DMA by {h.id}"))
            if run.host.policy.owns(h.id) and run.actors.vmm.owner_of(h.id) is None:
                recovery = next((r for r in run.host.recoveries if r.device == h.id and r.started_ns >= fault_t), None)
                # a reset that took the stream (its keys) must be followed by re-authentication before the driver
                if recovery is not None and recovery.resumed_ns is not None and not recovery.reauthenticated \
                        and recovery.insecure_since_ns is not None:
                    out.append(Violation(recovery.resumed_ns, h.id, f"the host driver resumed {h.id} after {what} "
                                         "without re-authenticating it",
                                         f"{recovery.resumed_ns} ns host resumed {h.id}"))
    return ctx.result(SecurityProperty.FRESHNESS, out, f"{total} reset(s), each followed by re-attestation and "
                                                       "re-keying before use", total, "no reset in this run")


def _left_run(rec: Any, name: str | None, start: int, end: int) -> bool:
    """The device took TDI ``name`` out of RUN between ``start`` and ``end``."""
    return any(start <= t <= end and n == name and s != "RUN" for t, n, s in rec.tdis)


def _tdi_before(rec: Any, name: str, t: int) -> str:
    state = "CONFIG_UNLOCKED"
    for when, n, s in rec.tdis:
        if when >= t:
            break
        if n == name:
            state = s
    return state


def _liveness(ctx: _Context) -> PropertyResult:
    run, out = ctx.run, []
    end = run.end_ns
    for h in run.platform.devices:
        rec = run.watch.devices[h.id]
        guest = run.actors.guests.get(run.actors.vmm.owner_of(h.id) or "")
        if guest is not None:
            for (device, fn), t in guest.tdis.items():
                if device != h.id:
                    continue
                name = rec.tdi_names.get(h.endpoint.requester_id(fn))
                if t.state is not TdiState.RUN:
                    out.append(Violation(end, h.id, f"{guest.name} does not run {h.id} fn{fn} at the end"
                                         + (f" ({t.failure})" if t.failure else "")))
                elif name is not None and rec.tdi_state_at(name) != "RUN":
                    out.append(Violation(end, h.id, f"{h.id} has TDI {name} in {rec.tdi_state_at(name)} at the end, "
                                         f"while {guest.name} runs it"))
            if not any(d == h.id for d, _ in guest.tdis):
                out.append(Violation(end, h.id, f"{guest.name} never tried to accept {h.id}"))
        if not rec.stream_secure_at():
            out.append(Violation(end, h.id, f"{h.id}'s IDE stream is not Secure at the end"))
        for dma in ctx.witness.dma:
            if dma.device == h.id and dma.protected and not dma.read:
                got = sum(len(w.data) for w in ctx.witness.memory if w.time_ns >= dma.time_ns and _covers(dma, w))
                if got < len(dma.data):
                    out.append(Violation(dma.time_ns, h.id, f"{len(dma.data) - got} of {len(dma.data)} bytes of "
                                         f"{h.id}'s DMA never arrived"))
        for fault_t, what in run.fault_times.get(h.id, []):
            # recovered: back where it was before the fault (stream, and the TDIs that ran), by the end
            before = [(t, s) for t, s in rec.stream if t < fault_t]
            was_secure = bool(before) and before[-1][1] == "secure"
            ran = {n for n in rec.tdi_names.values() if _tdi_before(rec, n, fault_t) == "RUN"}
            if (was_secure and not rec.stream_secure_at()) or any(rec.tdi_state_at(n) != "RUN" for n in ran):
                out.append(Violation(fault_t, h.id, f"{h.id} never recovered from {what}"))
    return ctx.result(SecurityProperty.LIVENESS, out, "every device accepted, running and Secure; every recovery "
                                                      "completed", len(run.platform.devices), "no device to serve")


CHECKS: dict[SecurityProperty, Callable[[_Context], PropertyResult]] = {
    SecurityProperty.AUTHENTICITY: _authenticity,
    SecurityProperty.CONFIDENTIALITY: _confidentiality,
    SecurityProperty.INTEGRITY: _integrity,
    SecurityProperty.FRESHNESS: _freshness,
    SecurityProperty.LIVENESS: _liveness,
}


def evaluate(run: ModelRun, witness: Witness, adversary: Adversary | None = None,
             properties: Iterable[SecurityProperty] = tuple(SecurityProperty)) -> dict[SecurityProperty, PropertyResult]:
    """Check the properties on a finished run (``witness`` installed before it ran)."""
    witness.finish()
    ctx = _Context(run, witness, adversary)
    return {p: CHECKS[p](ctx) for p in properties}


__all__ = ["Acceptance", "Alarm", "AlarmKind", "PropertyResult", "SecurityProperty", "Verdict", "Witness", "alarms",
           "evaluate"]
