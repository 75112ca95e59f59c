"""A confidential guest that is given a device: verifies it, accepts its TDI, uses it, watches it.

What the guest does depends on the trust model (``trust-design.md``):

* **thin-guest / thin-vmm** — the guest *is* the device's owner: it runs the one securing flow
  (:mod:`sim.protocols.tsm`) itself at guest-vCPU costs: attestation against its own policy, its own
  SPDM session, IDE keys from its own random stream, TDISP LOCK -> report check -> START. Its DOE
  objects go through the VMM relay (secured records are ciphertext to the VMM and the host); its Root
  Port key requests go to the thin key-slot service over the sealed guest channel (thin-guest) or,
  with no firmware service, to the VMM in the clear (thin-vmm), which writes the slots itself.
* **fat** — the firmware TSM owns the device; the VMM binds the TDI through the host's TSM driver, and
  the guest only receives evidence: GUEST_REQUEST TDI_INFO returns the report and SHA-384 digests of
  certificates, measurements and report; the guest checks the blobs against the digests and its
  policy (trusted roots, expected measurements, expected report fields), then asks the firmware to
  START the interface (GUEST_REQUEST STATE_CHANGE). Every GUEST_REQUEST and its answer travel sealed
  on the guest channel the firmware created at launch (``sim.firmware.guest_channel``): the VMM
  relays ciphertext, and an answer that does not open is a failure, never evidence.

Accepting a TDI moves it to RUN; the guest then does MMIO to the device and has the device DMA into
its memory, through the real Root Port and link (the bytes on the link are IDE ciphertext when the
stream is Secure). It notices a TDI leaving RUN by periodic checks (TDISP GET_DEVICE_INTERFACE_STATE
in thin models, the firmware's TDI_STATE in fat) or by the VMM's reset notice, and records when.

After the VMM's notices (the guest checks the device's own answer before it acts; the VMM is not
trusted to say which function was reset):

* conventional reset ("recovered"): thin guests secure the device again from the start; fat guests
  wait, since only a new DEV_CONNECT helps and a guest cannot issue one ("rebound" follows when the
  host reconnects, ``fat_reconnect="host-initiated"``; then the guest re-accepts: TDI_INFO, verify,
  START);
* FLR ("flr", TRUST_MODELS.md §3: the function's TDIs are in ERROR and need a STOP): thin guests STOP
  the TDI (-> CONFIG_UNLOCKED) and LOCK / REPORT / START it again in the same session when that
  session survived (an FLR of a function other than 0), or secure the device from the start when it
  did not (function 0's FLR dropped SPDM and IDE, the endpoint's default). Fat guests cannot STOP
  (``pci_tsm_req_scope`` STATE_CHANGE allows only UNLOCKED->LOCKED and LOCKED->RUN; SEV-TIO's
  TDI_UNBIND/TDI_BIND are host operations, §1-2), so they ask the VMM to re-bind (TDI_UNBIND +
  TDI_BIND through the host's TSM driver) and re-accept; when the firmware no longer answers for the
  TDI at all (its session went with a function-0 FLR) the guest stays out of RUN until a "rebound".

Every refusal is recorded with a stable reason (:attr:`TdiRecord.failure_reason`): a device whose
firmware was updated fails re-attestation against a policy pinning the old digest with
"measurement-mismatch" in either model.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509

from sim.crypto.algorithms import BaseHashAlgo
from sim.crypto.hashes import digest
from sim.crypto.identity import ChainResult, ChainStatus, verify_spdm_cert_chain
from sim.devices.dma import read_placed, write_checked
from sim.engine.runner import SimGen, drive
from sim.engine.timing import ComponentClass, Op
from sim.engine.trace import Channel, EventKind
from sim.engine.world import World
from sim.firmware.commands import (
    ErrorDetail,
    FwCommandId,
    FwFrame,
    FwStatus,
    GuestChannelMessage,
    GuestRequest,
    GuestRequestType,
    GuestStateRsp,
    TdiInfo,
    decode_frame,
    error,
    request,
)
from sim.firmware.core import peek_secured_record, trace_phase
from sim.firmware.keyslot_service import GuestChannelEnd, GuestChannelSender, KeySlotClient, KeySlotRequestHandler
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Outbound
from sim.protocols.ide_km import PcisigFailure
from sim.protocols.spdm.outcome import FailureReason, Ok
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SpdmRequester
from sim.protocols.tdisp import InterfaceReport, TdispRequester
from sim.protocols.tsm import (
    PhaseMark,
    SecuredDevice,
    TsmFailure,
    accept_and_start,
    refresh_keys,
    secure_device,
    teardown,
)
from sim.scenario.platform import DeviceHandle, Platform
from sim.vmm.vmm import FLR_NOTICE, LOST_EVENT_KINDS, REBOUND_NOTICE, Vmm
from sim.wire.codec import DecodeError, Reader
from sim.wire.doe import DoeObjectType
from sim.wire.spdm.measurements import MeasurementBlock
from sim.wire.tdisp import InterfaceId, InterfaceInfo, MmioRangeAttributes, TdiReport, TdiState
from sim.wire.tlp import CompletionHeader, CplStatus, MemRequestHeader, Tlp

MMIO_READ_TIMEOUT_NS = 1_000_000      # a completion timeout far above any modeled link latency
DMA_SETTLE_NS = 10_000                # least wait for posted DMA writes to land (RootPort.posted_write_settle_ns)


class GuestModel(enum.StrEnum):
    """The trust models in which a guest owns or receives a device."""

    FAT = "fat"
    THIN_GUEST = "thin-guest"
    THIN_VMM = "thin-vmm"


@dataclasses.dataclass(frozen=True)
class ReportExpectation:
    """What the guest requires of a TDI's interface report (TDISP §11.3.11, PROTOCOLS.md §6.4).

    ``conflicts`` names requirements that contradict each other (a bit required both set and clear, two
    MMIO range counts): no report can meet them, so every report is refused with those words, never
    accepted because one of the two requirements happened to be dropped."""

    info_set: InterfaceInfo = InterfaceInfo(0)       # interface_info bits that must be set
    info_clear: InterfaceInfo = InterfaceInfo(0)     # ... and bits that must be clear
    mmio_ranges: int | None = None                   # exact number of MMIO ranges, if given
    allow_non_tee_mmio: bool = True                  # whether IS_NON_TEE_MEM ranges are acceptable
    conflicts: tuple[str, ...] = ()                  # contradictory requirements: nothing is acceptable

    def problems(self, report: TdiReport) -> list[str]:
        out: list[str] = [f"contradictory requirement: {c}" for c in self.conflicts]
        info = InterfaceInfo(report.interface_info)
        if (info & self.info_set) != self.info_set:
            out.append(f"interface_info {int(info):#x} lacks {int(self.info_set & ~info):#x}")
        if info & self.info_clear:
            out.append(f"interface_info {int(info):#x} has forbidden bits {int(info & self.info_clear):#x}")
        if self.mmio_ranges is not None and len(report.mmio_ranges) != self.mmio_ranges:
            out.append(f"{len(report.mmio_ranges)} MMIO ranges, expected {self.mmio_ranges}")
        if not self.allow_non_tee_mmio and any(r.attributes & MmioRangeAttributes.IS_NON_TEE_MEM
                                               for r in report.mmio_ranges):
            out.append("a range is non-TEE memory")
        return out


@dataclasses.dataclass(frozen=True)
class GuestPolicy:
    """The guest's verification policy: trusted roots and expected measurements (``verification``,
    which also says whether measurements must be signed) and expected interface-report fields.

    Report requirements are per TDI: ``per_tdi`` keys are (device id, function); a TDI not listed
    there is judged by ``report`` (what a policy built by hand sets for every TDI)."""

    verification: VerificationPolicy = VerificationPolicy()
    report: ReportExpectation = ReportExpectation()
    requester: RequesterConfig = RequesterConfig()
    # per device id, a policy of its own (its reference measurements); others use ``verification``
    per_device: Mapping[str, VerificationPolicy] = dataclasses.field(default_factory=dict)
    # per (device id, function), the report requirement of that TDI; others use ``report``
    per_tdi: Mapping[tuple[str, int], ReportExpectation] = dataclasses.field(default_factory=dict)

    def verification_for(self, device: str | None) -> VerificationPolicy:
        return self.per_device.get(device, self.verification) if device is not None else self.verification

    def report_for(self, device: str | None, function: int = 0) -> ReportExpectation:
        """The requirement on the report of ``device``'s TDI on ``function`` (None: the guest-wide one)."""
        return self.per_tdi.get((device, function), self.report) if device is not None else self.report


@dataclasses.dataclass
class Outage:
    """One time the guest saw its TDI leave RUN, how it found out, and when it was accepted again."""

    left_ns: int
    how: str
    back_ns: int | None = None

    def duration_ns(self, now: int) -> int:
        return (self.back_ns if self.back_ns is not None else now) - self.left_ns


class TdiNote(enum.StrEnum):
    """What happened to one of a guest's TDIs (the typed part of its history and of its trace event)."""

    ACCEPTED = "accepted"
    NOT_ACCEPTED = "not-accepted"
    LEFT_RUN = "left-run"
    KEYS_REFRESHED = "keys-refreshed"
    KEY_REFRESH_FAILED = "key-refresh-failed"
    RELEASED = "released"
    RESECURING = "resecuring"
    STOPPED = "stopped"
    REBOUND = "rebound"


class LeftRunCause(enum.StrEnum):
    """How the guest learnt that a TDI left RUN: its own state check is evidence of its own; a notice from the
    (untrusted) VMM tells it the device is gone but proves no attack; releasing it is the guest's choice."""

    RELEASED = "released"
    STATE_CHECK = "state-check"
    VMM_NOTICE = "vmm-notice"


class TdiHistoryEntry(typing.NamedTuple):
    time_ns: int
    note: TdiNote
    text: str


@dataclasses.dataclass
class TdiRecord:
    """What the guest knows about one of its TDIs and when things happened to it (times in ns).

    ``left_run_ns``/``left_run_how`` describe the current outage (None while the TDI runs);
    ``outages`` keeps every one, closed when the guest accepts the TDI again. ``failure`` is the last
    refusal in words, ``failure_reason`` its stable name (a ``FailureReason``/TsmFailure reason value
    such as "measurement-mismatch", or "report-rejected", "rebind-failed", "session-ended").
    """

    device: str
    function: int
    state: TdiState | None = None
    secure_started_ns: int | None = None
    accepted_ns: int | None = None
    left_run_ns: int | None = None
    left_run_how: str = ""
    failure: str = ""
    failure_reason: str = ""
    history: list[TdiHistoryEntry] = dataclasses.field(default_factory=list)
    outages: list[Outage] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Owned:
    """A thin-model guest's ownership state for one device."""

    requester: SpdmRequester
    env: ProtocolEnv
    secured: SecuredDevice | None = None


class Guest:
    """Component ``name`` (guest-vcpu). See the module docstring."""

    def __init__(self, world: World, name: str, policy: GuestPolicy, vmm: Vmm, firmware: Any,
                 model: GuestModel | str, *, recover_on_reset: bool = True, register: bool = True) -> None:
        self.world = world
        self.name = name
        self.policy = policy
        self.vmm = vmm
        self.firmware = firmware
        self.model = GuestModel(model)
        self.recover_on_reset = recover_on_reset
        if register:
            world.register(name, self, ComponentClass.GUEST_VCPU)
        self.platform: Platform | None = vmm.platform
        self.tdis: dict[tuple[str, int], TdiRecord] = {}
        self.notices: list[tuple[int, str, str]] = []
        self._owned: dict[str, _Owned] = {}
        self._rng = world.rng(name)
        self._attempts = 0
        self._tag = 0
        self._slots: KeySlotRequestHandler | None = None
        self._securing: set[str] = set()
        self._rebound_pending: set[str] = set()
        self.phase_listeners: list[Callable[[PhaseMark], None]] = []
        self.channel: GuestChannelEnd | None = None
        self.guest_id: int | None = None
        vmm.attach_guest(self)
        launched = firmware.launch_guest(name) if firmware is not None and hasattr(firmware, "launch_guest") \
            else None
        if isinstance(launched, GuestChannelEnd):
            self.channel = launched
            self.guest_id = launched.guest_id
        elif isinstance(launched, int):
            self.guest_id = launched
        if self.model is GuestModel.THIN_GUEST and self.channel is None:
            raise ValueError(f"{name}: thin-guest needs a firmware key-slot service with a guest channel")
        if self.model is GuestModel.FAT and self.channel is None:
            raise ValueError(f"{name}: fat needs a fat TSM firmware with a guest channel")

    # ==============================================================================================
    # bookkeeping
    # ==============================================================================================

    def tdi(self, device: str, function: int = 0) -> TdiRecord:
        key = (device, function)
        if key not in self.tdis:
            self.tdis[key] = TdiRecord(device, function)
        return self.tdis[key]

    def _note(self, rec: TdiRecord, note: TdiNote, what: str, **fields: str | None) -> None:
        rec.history.append(TdiHistoryEntry(self.world.now, note, what))
        self.world.trace.emit(self.name, self._device_path(rec.device), Channel.LINK, b"",
                              f"{self.name}: {rec.device} fn{rec.function} {what}", kind=EventKind.GUEST_TDI,
                              fields={"device": rec.device, "function": rec.function, "note": note.value, **fields})

    def _device_path(self, device: str) -> str:
        return self._handle(device).path if self.platform is not None else device

    def _handle(self, device: str) -> DeviceHandle:
        if self.platform is None:
            raise RuntimeError("the VMM gave the guest no platform to look devices up in")
        return self.platform.device(device)

    def _left_run(self, rec: TdiRecord, cause: LeftRunCause, how: str, at: int | None = None) -> None:
        """The TDI is found out of RUN; ``at`` is when the guest learnt of it (default: now)."""
        when = self.world.now if at is None else at
        if rec.state is TdiState.RUN and rec.left_run_ns is None:
            rec.left_run_ns = when
            rec.left_run_how = how
            rec.outages.append(Outage(when, how))
            self._note(rec, TdiNote.LEFT_RUN, f"left RUN ({how})", cause=cause.value)
        if rec.state is TdiState.RUN:
            rec.state = None

    # ==============================================================================================
    # thin models: the guest runs the securing flow
    # ==============================================================================================

    def secure(self, device: str, function: int = 0) -> SimGen[bool]:
        """Attest, key and lock the device, check the report, START: the TDI is in RUN on success."""
        if self.model is GuestModel.FAT:
            return (yield from self.accept_fat(device, function))
        if device in self._securing:
            return False   # already under way (e.g. a reset notice while a check re-secures)
        self._securing.add(device)
        try:
            return (yield from self._secure(device, function))
        finally:
            self._securing.discard(device)

    def _secure(self, device: str, function: int, *, unlock_first: bool = False) -> SimGen[bool]:
        """The whole flow. ``unlock_first``: STOP the interface in the new session before LOCK (after an
        FLR the TDI is in ERROR, and only STOP leaves it; STOP is legal in every state)."""
        rec = self.tdi(device, function)
        rec.secure_started_ns = self.world.now
        if self._owned.pop(device, None) is not None:  # owned before (a reset): give its streams back first
            yield from self._release_streams(device)
        self._attempts += 1
        env = self.world.protocol_env(self.name, self._rng.child(f"{device}:{self._attempts}"))
        owned = self._owned[device] = _Owned(SpdmRequester(self.policy.requester, self.policy.verification_for(device), env),
                                             env)
        transport = self._transport(device, owned)
        result = yield from drive(self.world, self.name, env.meter,
                                  secure_device(owned.requester, env, device), transport)
        if isinstance(result, TsmFailure):
            yield from self._release_streams(device)   # a stream the failed flow took is given back
            return self._failed(rec, str(result), result.reason)
        owned.secured = result.value
        interface = InterfaceId(self._handle(device).endpoint.requester_id(function))
        if unlock_first:
            stopped = yield from drive(self.world, self.name, env.meter, TdispRequester.over_session(
                owned.requester, owned.secured.session).stop(interface), transport)
            if isinstance(stopped, PcisigFailure):
                return self._failed(rec, f"STOP: {stopped}", str(stopped.reason))
        started = yield from drive(self.world, self.name, env.meter,
                                   accept_and_start(owned.requester, owned.secured, interface,
                                                    self._report_judge(device, function)),
                                   transport)
        if isinstance(started, TsmFailure):
            return self._failed(rec, str(started), started.reason)
        return self._accepted(rec)

    def refresh_keys(self, device: str) -> SimGen[bool]:
        """Refresh the IDE keys of a device this guest secured (thin models): in its own session (TDISP
        §11.4.5), fresh keys of the other key set to the device over the VMM relay (ciphertext to the VMM)
        and to the Root Port over its key path (sealed guest channel, or the VMM in thin-vmm), GO, then the
        old set stopped on both ends. False when the guest holds no live session for the device; a fat
        guest never holds IDE keys (the host's ROLL_KEY refreshes them in the firmware)."""
        owned = self._owned.get(device)
        if self.model is GuestModel.FAT or owned is None or owned.secured is None \
                or owned.secured.session.ended or device in self._securing:
            return False
        secured = owned.secured
        old = secured.keys.key_set
        self._securing.add(device)
        try:
            result = yield from drive(self.world, self.name, owned.env.meter,
                                      refresh_keys(owned.requester, owned.env, secured, retire_old=True),
                                      self._transport(device, owned))
        finally:
            self._securing.discard(device)
        for (dev, _fn), rec in self.tdis.items():
            if dev == device:
                self._note(rec, TdiNote.KEYS_REFRESHED if not isinstance(result, TsmFailure)
                           else TdiNote.KEY_REFRESH_FAILED, f"keys refreshed: stream {secured.stream_id} {old.name} -> "
                                f"{secured.keys.key_set.name}" if not isinstance(result, TsmFailure)
                           else f"key refresh failed: {result}")
        return not isinstance(result, TsmFailure)

    def secured_device(self, device: str) -> SecuredDevice | None:
        """What this guest holds for a device it secured itself (thin models): session, stream, keys."""
        owned = self._owned.get(device)
        return None if owned is None else owned.secured

    def release(self, device: str, function: int = 0) -> SimGen[bool]:
        """Give the device up (thin models): STOP the TDI, stop the stream Tx first, END_SESSION, and
        return the stream to the key-slot path (``tsm.teardown``)."""
        owned = self._owned.pop(device, None)
        if owned is None or owned.secured is None:
            return False
        result = yield from drive(self.world, self.name, owned.env.meter,
                                  teardown(owned.requester, owned.env, owned.secured),
                                  self._transport(device, owned))
        rec = self.tdi(device, function)
        self._left_run(rec, LeftRunCause.RELEASED, "released by the guest")
        rec.state = TdiState.CONFIG_UNLOCKED
        self._note(rec, TdiNote.RELEASED, "released")
        return not isinstance(result, TsmFailure)

    def _release_streams(self, device: str) -> SimGen[None]:
        yield from self._handler().release_all(device)

    def _report_judge(self, device: str, function: int) -> Callable[[InterfaceReport], str | None]:
        """The check the securing flow runs on the report of ``device``'s TDI on ``function``: that TDI's
        own requirement, so that one TDI's expected report never constrains another (None = accept)."""
        expectation = self.policy.report_for(device, function)

        def judge(report: InterfaceReport) -> str | None:
            problems = expectation.problems(report.report)
            return "; ".join(problems) if problems else None
        return judge

    def _failed(self, rec: TdiRecord, why: str, reason: str = "") -> bool:
        rec.failure = why
        rec.failure_reason = str(reason)
        self._note(rec, TdiNote.NOT_ACCEPTED, f"not accepted: {why}", reason=rec.failure_reason or None,
                   detail=why)
        return False

    def _accepted(self, rec: TdiRecord) -> bool:
        rec.state = TdiState.RUN
        rec.accepted_ns = self.world.now
        rec.left_run_ns, rec.left_run_how, rec.failure, rec.failure_reason = None, "", "", ""
        if rec.outages and rec.outages[-1].back_ns is None:
            rec.outages[-1].back_ns = self.world.now
        self._note(rec, TdiNote.ACCEPTED, "accepted: RUN")
        return True

    def _transport(self, device: str, owned: _Owned) -> Callable[[Any], SimGen[Any]]:
        def transport(message: Any) -> SimGen[Any]:
            if isinstance(message, Outbound):
                secured = DoeObjectType(message.object_type) is DoeObjectType.SECURED_SPDM
                plain = peek_secured_record(owned.requester.sessions, message.payload, outgoing=True) \
                    if secured else None
                peek = (lambda answer: peek_secured_record(owned.requester.sessions, answer, outgoing=False)) \
                    if secured else None
                answer = yield from self.vmm.relay_doe(self.name, device, DoeObjectType(message.object_type),
                                                       message.payload, secured_plaintext=plain,
                                                       response_plaintext=peek)
                if answer is not None and peek is not None:
                    opened = peek(answer)
                    if opened is not None:  # the guest is the session's end: it reads the message
                        self.world.exposure.observe_stored(self.name, opened)
                return answer
            if isinstance(message, PhaseMark):
                trace_phase(self.world, self.name, self._device_path(device), message)
                for listener in list(self.phase_listeners):
                    listener(message)
                return None
            return (yield from self._platform_request(device, owned, message))
        return transport

    def _key_client(self) -> KeySlotClient:
        if self.model is GuestModel.THIN_GUEST:
            assert self.channel is not None
            return KeySlotClient(GuestChannelSender(self.world, self.name, self.channel,
                                                    self.vmm.sealed_relay_for(self.name)))
        return KeySlotClient(self.vmm.hypercall_sender_for(self.name))

    def _handler(self) -> KeySlotRequestHandler:
        """Key-slot commands over the sealed channel (thin-guest) or in the clear to the VMM (thin-vmm);
        the stream registers through the VMM (they are not secret)."""
        if self._slots is None:
            assert self.platform is not None
            self._slots = KeySlotRequestHandler(
                self.platform, self._key_client(),
                enable=lambda device, block, sid: self.vmm.enable_stream(self.name, device, block, sid),
                disable=lambda device, block, sid: self.vmm.disable_stream(self.name, device, block, sid))
        return self._slots

    def _platform_request(self, device: str, owned: _Owned, req: Any) -> SimGen[Any]:
        return (yield from self._handler()(device, req))

    # ==============================================================================================
    # fat: the guest receives the firmware's evidence
    # ==============================================================================================

    def guest_request(self, device: str, function: int, kind: GuestRequestType) -> SimGen[FwFrame]:
        """One GUEST_REQUEST, sealed on the guest channel and relayed by the VMM; the opened answer, or
        an error frame when the answer does not open (altered, replayed, forged) or does not decode."""
        assert self.channel is not None
        handle = self.firmware.handle_of(device) if hasattr(self.firmware, "handle_of") else None
        frame = request(GuestRequest(self.guest_id or 0, handle or 0, function, kind)).encode()
        yield self.world.delay(self.name, Op.FW_COMMAND_DISPATCH)
        channel = self.channel

        def peek(answer: bytes) -> bytes | None:
            try:
                body = decode_frame(answer).body
            except DecodeError:
                return None
            return channel.peek(body) if isinstance(body, GuestChannelMessage) else None

        def relay(sealed: bytes, plain: bytes | None) -> SimGen[tuple[bytes, bytes | None]]:
            answer = yield from self.vmm.relay_guest_request(self.name, device, sealed, secured_plaintext=plain,
                                                             response_plaintext=peek)
            return answer, None

        inner = yield from GuestChannelSender(self.world, self.name, channel, relay)(frame)
        try:
            return decode_frame(inner)
        except DecodeError as exc:
            return error(FwCommandId.GUEST_REQUEST, FwStatus.INVALID_COMMAND, f"answer: {exc}")

    def accept_fat(self, device: str, function: int = 0) -> SimGen[bool]:
        """TDI_INFO -> verify the evidence against the policy -> STATE_CHANGE (START) -> RUN."""
        rec = self.tdi(device, function)
        rec.secure_started_ns = self.world.now
        info = yield from self.guest_request(device, function, GuestRequestType.TDI_INFO)
        if info.status is not FwStatus.SUCCESS or not isinstance(info.body, TdiInfo):
            status = info.status.name if info.status else "?"
            return self._fat_refused(rec, "TDI_INFO", info, f"firmware-{status.lower().replace('_', '-')}")
        body = info.body
        nbytes = len(body.certificates) + len(body.measurements) + len(body.report)
        yield self.world.delay(self.name, Op.HASH_PER_KIB, nbytes=nbytes)
        problems = self.evidence_problems(body, device, function)   # the seam a witness or a test watches
        if problems:
            # the first finding is the verdict's reason, in the order a thin guest's flow would meet them
            # (certificate chain, measurements, report); every problem stays in the words
            findings = self.evidence_findings(body, device, function)
            reason = findings[0][0] if findings else str(FailureReason.POLICY_VIOLATION)
            return self._fat_failed(rec, "evidence check", reason, "; ".join(problems))
        started = yield from self.guest_request(device, function, GuestRequestType.STATE_CHANGE)
        if started.status is FwStatus.SUCCESS and isinstance(started.body, GuestStateRsp) \
                and started.body.state is not TdiState.RUN:
            return self._fat_failed(rec, "START", str(FailureReason.UNEXPECTED_RESPONSE),
                                    f"the firmware answered with the TDI in {started.body.state.name}, not RUN",
                                    "start-refused")
        if started.status is not FwStatus.SUCCESS or not isinstance(started.body, GuestStateRsp):
            return self._fat_refused(rec, "START", started, "start-refused")
        return self._accepted(rec)

    def _fat_failed(self, rec: TdiRecord, step: str, reason: str, detail: str, failure_reason: str = "") -> bool:
        """A fat refusal worded like a thin guest's (``TsmFailure``: "<device>: <step> failed (<reason>):
        <detail>"), so that the verdict names the same ``FailureReason`` for the same cause in every guest
        model (an attestation expectation's ``reason:`` is looked for in these words). ``failure_reason``
        keeps the fat step's own stable name where it has one (default: ``reason``)."""
        return self._failed(rec, f"{rec.device}: {step} failed ({reason}): {detail}", failure_reason or reason)

    def _fat_refused(self, rec: TdiRecord, step: str, answer: FwFrame, failure_reason: str) -> bool:
        """A GUEST_REQUEST answered with an error status (or a success without the expected body): the
        firmware's status, mapped to the ``FailureReason`` a thin guest's flow gives for the same cause."""
        status = answer.status
        if status is FwStatus.SUCCESS:
            reason = FailureReason.UNEXPECTED_RESPONSE
            detail = f"the firmware answered with {type(answer.body).__name__}"
        else:
            reason = _FW_STATUS_REASONS.get(status, FailureReason.ERROR_RESPONSE) if status is not None \
                else FailureReason.MALFORMED_RESPONSE
            said = answer.body.detail.decode("ascii", "replace") if isinstance(answer.body, ErrorDetail) else ""
            detail = f"firmware status {status.name if status is not None else '?'}" + (f": {said}" if said else "")
        return self._fat_failed(rec, step, str(reason), detail, failure_reason)

    def evidence_problems(self, info: TdiInfo, device: str | None = None, function: int = 0) -> list[str]:
        """Why the firmware's evidence does not satisfy this guest's policy for the TDI ([] when it does)."""
        return [text for _, text in self.evidence_findings(info, device, function)]

    def evidence_findings(self, info: TdiInfo, device: str | None = None, function: int = 0
                          ) -> list[tuple[str, str]]:
        """(stable reason, words) for every way the evidence fails the policy; reasons are the requester's
        ``FailureReason`` values where one fits (digest-mismatch, untrusted-root, cert-chain-invalid,
        malformed-response, measurement-mismatch) and "report-rejected" for the interface report.

        ``device`` and ``function`` say whose evidence it is, since TDI_INFO does not (None: the guest-wide
        policy): the device picks the reference measurements, the function the report requirement."""
        out: list[tuple[str, str]] = []
        for what, blob, want in (("certificates", info.certificates, info.certificates_digest),
                                 ("measurements", info.measurements, info.measurements_digest),
                                 ("report", info.report, info.report_digest)):
            if digest(BaseHashAlgo.SHA_384, blob) != want:
                out.append((str(FailureReason.DIGEST_MISMATCH), f"{what} do not match their SHA-384 digest"))
        verification = self.policy.verification_for(device)
        result = _verify_evidence_chain(info.certificates, verification)
        if not result.ok:
            reason = FailureReason.UNTRUSTED_ROOT if result.status is ChainStatus.UNTRUSTED_ROOT \
                else FailureReason.CERT_CHAIN_INVALID
            out.append((str(reason), f"certificate chain does not verify against the guest's roots "
                                     f"({result.status.value}: {result.detail})"))
        try:
            blocks = _measurement_blocks(info.measurements)
        except DecodeError as exc:
            out.append((str(FailureReason.MALFORMED_RESPONSE), f"measurement record: {exc}"))
        else:
            out.extend((str(FailureReason.MEASUREMENT_MISMATCH), p)
                       for p in verification.measurement_problems(blocks))
        try:
            report = TdiReport.decode(info.report)
        except DecodeError as exc:
            out.append((str(FailureReason.MALFORMED_RESPONSE), f"report: {exc}"))
        else:
            out.extend(("report-rejected", p) for p in self.policy.report_for(device, function).problems(report))
        return out

    # ==============================================================================================
    # watching a TDI
    # ==============================================================================================

    def check_state(self, device: str, function: int = 0) -> SimGen[TdiState | None]:
        """Ask the device (thin: TDISP GET_DEVICE_INTERFACE_STATE in the guest's session; fat: the
        firmware's TDI_STATE) what state the TDI is in; None when there is no answer."""
        rec = self.tdi(device, function)
        state = yield from self._read_state(device, function)
        if state is not TdiState.RUN:
            self._left_run(rec, LeftRunCause.STATE_CHECK, f"state check: {state.name if state is not None else 'no answer'}")
        return state

    def _read_state(self, device: str, function: int) -> SimGen[TdiState | None]:
        state: TdiState | None = None
        if self.model is GuestModel.FAT:
            got = yield from self.guest_request(device, function, GuestRequestType.TDI_STATE)
            if got.status is FwStatus.SUCCESS and isinstance(got.body, GuestStateRsp):
                state = got.body.state
        else:
            owned = self._owned.get(device)
            if owned is not None and owned.secured is not None and not owned.secured.session.ended:
                tdisp = TdispRequester.over_session(owned.requester, owned.secured.session)
                interface = InterfaceId(self._handle(device).endpoint.requester_id(function))
                result = yield from drive(self.world, self.name, owned.env.meter, tdisp.state(interface),
                                          self._transport(device, owned))
                if isinstance(result, Ok):
                    state = result.value
                elif isinstance(result, PcisigFailure):
                    state = None
        return state

    def watch(self, device: str, function: int = 0, *, period_ns: int = 10_000_000,
              until_ns: int | None = None) -> SimGen[int | None]:
        """Check the TDI every ``period_ns`` while it is in RUN; returns when it left RUN (or None)."""
        rec = self.tdi(device, function)
        while rec.state is TdiState.RUN and (until_ns is None or self.world.now < until_ns):
            yield self.world.timeout(period_ns)
            if rec.state is not TdiState.RUN:
                break
            yield from self.check_state(device, function)
        return rec.left_run_ns

    def on_reset_notice(self, device: str, reason: str) -> None:
        """The VMM says the host reset (or lost) an assigned device, that it is usable again, that one
        of its functions went through an FLR, or (fat) that the TSM re-bound its TDIs (module docstring)."""
        self.notices.append((self.world.now, device, reason))
        if reason == FLR_NOTICE:
            if any(dev == device for dev, _fn in self.tdis):
                self.world.process(self.recover_after_flr(device))
            return
        if reason == REBOUND_NOTICE:
            if self.model is GuestModel.FAT and self.recover_on_reset:
                if device in self._securing:
                    self._rebound_pending.add(device)   # accepted once the running recovery is over
                else:
                    self.world.process(self._reaccept_fat(device))
            return
        for (dev, _fn), rec in self.tdis.items():
            if dev != device:
                continue
            # lost, or back after a reset the guest may not have heard begin (a Secondary Bus Reset):
            # either way a conventional reset left every TDI in CONFIG_UNLOCKED (§11.4.8)
            self._left_run(rec, LeftRunCause.VMM_NOTICE, f"VMM notice: {reason}")
        if reason not in LOST_EVENT_KINDS and self.recover_on_reset and self.model is not GuestModel.FAT:
            for (dev, fn), rec in list(self.tdis.items()):
                if dev == device and rec.state is not TdiState.RUN:
                    self.world.process(self.secure(dev, fn))

    def recover_after_flr(self, device: str) -> SimGen[None]:
        """After the VMM's FLR notice: ask the device (or, fat, the firmware) for each of this guest's
        TDIs on ``device``; a TDI still in RUN was not affected. One that is not has left RUN; unless
        ``recover_on_reset`` is off it is brought back (module docstring: STOP + LOCK/REPORT/START in
        the surviving session, a full re-secure without one, or a fat re-bind and re-accept)."""
        if device in self._securing:
            return
        noticed = self.world.now
        self._securing.add(device)
        try:
            for (dev, fn), rec in list(self.tdis.items()):
                if dev != device:
                    continue
                state = yield from self._read_state(device, fn)
                if state is TdiState.RUN:
                    continue
                self._left_run(rec, LeftRunCause.VMM_NOTICE, f"VMM notice: {FLR_NOTICE}; state {state.name if state else 'no answer'}",
                               at=noticed)
                if not self.recover_on_reset:
                    continue
                if self.model is GuestModel.FAT:
                    yield from self._recover_fat_tdi(device, fn, rec, state)
                else:
                    yield from self._recover_thin_tdi(device, fn, rec, state)
        finally:
            self._securing.discard(device)
        if device in self._rebound_pending:
            self._rebound_pending.discard(device)
            yield from self._reaccept_fat(device)

    def _recover_thin_tdi(self, device: str, function: int, rec: TdiRecord, state: TdiState | None) -> SimGen[bool]:
        owned = self._owned.get(device)
        if state is None or owned is None or owned.secured is None or owned.secured.session.ended:
            self._note(rec, TdiNote.RESECURING, "no answer in the guest's session: securing the device again")
            return (yield from self._secure(device, function, unlock_first=True))
        secured = owned.secured
        interface = InterfaceId(self._handle(device).endpoint.requester_id(function))
        transport = self._transport(device, owned)
        if state is not TdiState.CONFIG_UNLOCKED:
            stopped = yield from drive(self.world, self.name, owned.env.meter, TdispRequester.over_session(
                owned.requester, secured.session).stop(interface), transport)
            if isinstance(stopped, PcisigFailure):
                return self._failed(rec, f"STOP: {stopped}", str(stopped.reason))
            rec.state = TdiState.CONFIG_UNLOCKED
            self._note(rec, TdiNote.STOPPED, "STOP: CONFIG_UNLOCKED (same session)")
        secured.running = False
        rec.secure_started_ns = self.world.now
        started = yield from drive(self.world, self.name, owned.env.meter,
                                   accept_and_start(owned.requester, secured, interface,
                                                    self._report_judge(device, function)),
                                   transport)
        if isinstance(started, TsmFailure):
            return self._failed(rec, str(started), started.reason)
        return self._accepted(rec)

    def _recover_fat_tdi(self, device: str, function: int, rec: TdiRecord, state: TdiState | None) -> SimGen[bool]:
        if state is None:
            # the firmware cannot read the TDI in its session: the FLR took it (function 0); only a new
            # DEV_CONNECT by the host helps, which a guest cannot ask for ("rebound" follows if it happens)
            return self._fat_failed(rec, "TDI_STATE", str(FailureReason.SESSION_ENDED),
                                    "the firmware no longer answers for the TDI: waiting for a reconnect")
        if state is not TdiState.CONFIG_LOCKED:
            bound = yield from self.vmm.rebind_tdi(self.name, device, function)
            if bound.status is not FwStatus.SUCCESS:
                return self._fat_refused(rec, "re-bind", bound, "rebind-failed")
            self._note(rec, TdiNote.REBOUND, "re-bound by the TSM: CONFIG_LOCKED")
        return (yield from self.accept_fat(device, function))

    def _reaccept_fat(self, device: str) -> SimGen[None]:
        """Fat: the TSM re-bound this guest's TDIs of ``device``; accept those not running."""
        for (dev, fn), rec in list(self.tdis.items()):
            if dev == device and rec.state is not TdiState.RUN:
                yield from self.accept_fat(device, fn)

    # ==============================================================================================
    # using the device: MMIO and DMA through the real Root Port and link
    # ==============================================================================================

    def _next_tag(self) -> int:
        self._tag = (self._tag + 1) & 0xFF
        return self._tag

    def bar_address(self, device: str, function: int = 0, bar: int = 0) -> int:
        return self._handle(device).endpoint.functions[function].header.bar_address(bar)

    def _tee(self, device: str, function: int) -> bool:
        """Whether this guest's accesses to and from the TDI are TEE requests (T=1): only while it runs."""
        rec = self.tdis.get((device, function))
        return rec is not None and rec.state is TdiState.RUN

    def mmio_write(self, device: str, offset: int, data: bytes, *, function: int = 0, bar: int = 0) -> None:
        """A store to the TDI's BAR: a MWr from the Root Port (IDE-sealed on the link when Secure, T=1 while
        the TDI runs)."""
        if len(data) % 4 or not data:
            raise ValueError("MMIO writes are whole DWs")
        handle = self._handle(device)
        address = self.bar_address(device, function, bar) + offset
        header = MemRequestHeader.write(handle.root_port.requester_id, self._next_tag(), address, len(data) // 4)
        handle.root_port.send_tlp(Tlp(header, bytes(data)), tee=self._tee(device, function))

    def mmio_read(self, device: str, offset: int, length: int = 4, *, function: int = 0,
                  bar: int = 0) -> SimGen[bytes | None]:
        """A load from the TDI's BAR: MRd, wait for the completion (None on UR or timeout)."""
        handle = self._handle(device)
        rp = handle.root_port
        tag = self._next_tag()
        done = self.world.env.event()

        def on_completion(tlp: Tlp) -> None:
            header = tlp.header
            if isinstance(header, CompletionHeader) and header.tag == tag and not done.triggered:
                done.succeed(tlp.data if header.status == CplStatus.SC else None)

        rp.completion_listeners.append(on_completion)
        try:
            address = self.bar_address(device, function, bar) + offset
            rp.send_tlp(Tlp(MemRequestHeader.read(rp.requester_id, tag, address, (length + 3) // 4), b""),
                        tee=self._tee(device, function))
            timeout = self.world.timeout(MMIO_READ_TIMEOUT_NS)
            yield done | timeout
        finally:
            rp.completion_listeners.remove(on_completion)
        return done.value[:length] if done.triggered and done.value is not None else None

    def device_dma(self, device: str, address: int, data: bytes, *, function: int = 0) -> SimGen[bool]:
        """Have the device write ``data`` into guest memory (TEE request when the TDI runs); True if it
        arrived intact (checked once the writes had time to cross the link, however slow it is)."""
        handle = self._handle(device)
        return (yield from write_checked(self.world, handle.endpoint, function, address, data,
                                         tee=self._tee(device, function), memory=handle.root_port.host_memory,
                                         settle_ns=handle.root_port.posted_write_settle_ns(DMA_SETTLE_NS)))

    def device_dma_read(self, device: str, address: int, data: bytes, *, function: int = 0) -> SimGen[bool]:
        """Put ``data`` in guest memory and have the device fetch it with Memory Reads (TEE requests when
        the TDI runs, as for writes); True if the device received exactly ``data``. A read the Root Port
        refuses (non-TEE request to TEE memory) or that a reset loses ends at the completion timeout."""
        handle = self._handle(device)
        return (yield from read_placed(self.world, handle.endpoint, function, address, data,
                                       tee=self._tee(device, function), memory=handle.root_port.host_memory))


def _measurement_blocks(record: bytes) -> tuple[MeasurementBlock, ...]:
    r = Reader(record, "MeasurementRecord")
    blocks: list[MeasurementBlock] = []
    while r.remaining:
        blocks.append(MeasurementBlock.decode_from(r))
    return tuple(blocks)


# A fat guest's GUEST_REQUEST refused by the firmware (or by the guest's end of the channel), in the terms
# of a thin guest's requester for the same cause; any other refusal is the peer answering with an error.
_FW_STATUS_REASONS: dict[FwStatus, FailureReason] = {
    FwStatus.DECRYPT_FAILED: FailureReason.DECRYPT_FAILED,       # a sealed record did not authenticate
    FwStatus.BAD_SEQUENCE: FailureReason.DECRYPT_FAILED,         # replayed or out of order: a stale record
    FwStatus.INVALID_COMMAND: FailureReason.MALFORMED_RESPONSE,  # bytes that do not decode (or were unsealed)
    FwStatus.INVALID_STATE: FailureReason.INVALID_STATE,         # e.g. the device is not connected, TDI not locked
    FwStatus.DOE_FAILED: FailureReason.NO_RESPONSE,              # the device did not answer the firmware
    FwStatus.BUSY: FailureReason.NO_RESPONSE,                    # no answer came back (a carrier withheld it)
}


def _verify_evidence_chain(certificates: bytes, verification: VerificationPolicy) -> ChainResult:
    """Verify the SPDM certificate chain in TDI_INFO evidence, which does not name the chain's hash.

    The container is framed with the hash the TSM negotiated with the device (its RootHash is that
    hash of the root certificate); SHA-384 and SHA-256 are tried, and the first whose framing parses
    with a matching RootHash is the chain's own algorithm: its status is the answer (UNTRUSTED_ROOT,
    EXPIRED, ...), never the MALFORMED of reading the same bytes with the other hash's framing. Only
    when no framing fits is the answer ROOT_HASH_MISMATCH (framing parsed) or else MALFORMED."""
    misfits: list[ChainResult] = []
    for algo in (BaseHashAlgo.SHA_384, BaseHashAlgo.SHA_256):
        try:
            result = verify_spdm_cert_chain(algo, certificates, verification.trusted_roots,
                                            at=verification.validation_time)
        except x509.InvalidVersion as exc:   # a DER parse error that is not a ValueError
            result = ChainResult(ChainStatus.MALFORMED, f"certificate: {exc}")
        if result.status not in (ChainStatus.MALFORMED, ChainStatus.ROOT_HASH_MISMATCH):
            return result
        misfits.append(result)
    return next((r for r in misfits if r.status is ChainStatus.ROOT_HASH_MISMATCH), misfits[0])
