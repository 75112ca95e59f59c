"""The one flow that secures a device, whoever runs it: a fat firmware TSM, the host kernel or a guest.

Trust models differ in *who* runs these steps and *through what path* (DESIGN.md: a trust model
is a wiring of the same parts). The steps themselves live only here:

1. attest: VCA, digests, certificate, challenge, signed measurements, checked against a policy;
2. KEY_EXCHANGE / FINISH: a secured session with the certified key;
3. IDE: QUERY, a stream from the Root Port's pool, KEY_PROG of all six sub-stream keys to the
   device, the same keys into the Root Port's slots (opposite direction), then K_SET_GO in the
   order device Rx, Root Port Rx, device Tx, Root Port Tx (TRUST_MODELS.md §4), then enable;
4. for a device interface given to a guest: TDISP LOCK (bound to this session), the interface
   report (checked by the caller's policy), and START with the LOCK nonce.

The flow is sans-IO. Besides DOE objects (:class:`~sim.protocols.flow.Outbound`) it yields
:class:`PlatformRequest` objects, answered by whoever may touch the Root Port's key slots in the
trust model at hand, and :class:`PhaseMark` milestones, which the simulation traces and which
scenario events can be attached to ("during KEY_PROG of device X").
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Flow, Outbound
from sim.protocols.ide_km import IdeKmRequester, PcisigFailure, ProgrammedKey, StreamKeys
from sim.protocols.spdm.outcome import AttestationReport, Failure, Ok
from sim.protocols.spdm.requester import SessionHandle, SpdmRequester
from sim.protocols.tdisp import InterfaceReport, TdispRequester
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import Direction, KeySet
from sim.wire.spdm.common import MeasurementSummaryHashType, RequestCode
from sim.wire.tdisp import InterfaceId, LockInterfaceFlags

T = TypeVar("T")


class Phase(enum.StrEnum):
    """Protocol milestones of securing a device, in order; scenario triggers name them."""

    VCA = "VCA"
    CERTIFICATE = "CERTIFICATE"
    CHALLENGE = "CHALLENGE"
    MEASUREMENTS = "MEASUREMENTS"
    KEY_EXCHANGE = "KEY_EXCHANGE"
    FINISH = "FINISH"
    KEY_PROG = "KEY_PROG"
    K_SET_GO = "K_SET_GO"
    LOCK = "LOCK"
    REPORT = "REPORT"
    START = "START"
    RUN = "RUN"


# --- what the flow asks of the platform ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AllocateStream:
    """Pick a free selective IDE stream in the device's Root Port; answered with its stream id or None."""

    device: str


@dataclasses.dataclass(frozen=True)
class ProgramRootPortKey:
    """Write one Root Port key slot with the key the device got (the Root Port uses it the other way)."""

    device: str
    key: ProgrammedKey

    @property
    def direction(self) -> Direction:
        return self.key.root_port_direction


@dataclasses.dataclass(frozen=True)
class RootPortKeySet:
    """K_SET_GO (or STOP) for the three sub-streams of one direction of the Root Port's stream."""

    device: str
    stream_id: int
    key_set: KeySet
    direction: Direction
    go: bool = True


@dataclasses.dataclass(frozen=True)
class EnableStream:
    """Set the stream's Enable bit on both ends; answered True once the Root Port reads Secure."""

    device: str
    stream_id: int


@dataclasses.dataclass(frozen=True)
class ReleaseStream:
    device: str
    stream_id: int


PlatformRequest = AllocateStream | ProgramRootPortKey | RootPortKeySet | EnableStream | ReleaseStream


@dataclasses.dataclass(frozen=True)
class PhaseMark:
    """A milestone about to start for ``device``; the driver answers None."""

    device: str
    phase: Phase


TsmFlow = Generator[Outbound | PlatformRequest | PhaseMark, Any, T]


# --- results -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TsmFailure:
    """Securing failed: in which phase, why (a stable reason name) and the underlying detail."""

    device: str
    phase: Phase
    reason: str
    detail: str
    ok = False

    def __str__(self) -> str:
        return f"{self.device}: {self.phase} failed ({self.reason}): {self.detail}"


@dataclasses.dataclass
class SecuredDevice:
    """What the owner of a device holds once it is secured; the handle for later steps."""

    device: str
    attestation: AttestationReport
    session: SessionHandle
    stream_id: int
    keys: StreamKeys
    interface: InterfaceId | None = None
    nonce: bytes | None = None
    report: InterfaceReport | None = None
    running: bool = False


TsmOutcome = Ok[T] | TsmFailure


@dataclasses.dataclass(frozen=True)
class SecuringOptions:
    slot: int = 0
    key_set: KeySet = KeySet.K0
    port_index: int = 0
    summary_type: MeasurementSummaryHashType = MeasurementSummaryHashType.ALL


def _failure(device: str, phase: Phase, failure: Failure | PcisigFailure | str, reason: str = "") -> TsmFailure:
    if isinstance(failure, Failure):
        return TsmFailure(device, phase, str(failure.reason), str(failure))
    if isinstance(failure, PcisigFailure):
        return TsmFailure(device, phase, str(failure.reason), str(failure))
    return TsmFailure(device, phase, reason or "platform-refused", failure)


def _ide(requester: SpdmRequester, secured_session: SessionHandle, env: ProtocolEnv) -> IdeKmRequester:
    return IdeKmRequester.over_session(requester, secured_session, env)


# --- the flows ---------------------------------------------------------------------------------------


# The milestones inside attestation and session set-up, each marked when its first request goes out.
_REQUEST_PHASES: dict[int, Phase] = {
    RequestCode.GET_DIGESTS: Phase.CERTIFICATE, RequestCode.GET_CERTIFICATE: Phase.CERTIFICATE,
    RequestCode.CHALLENGE: Phase.CHALLENGE, RequestCode.GET_MEASUREMENTS: Phase.MEASUREMENTS,
    RequestCode.FINISH: Phase.FINISH,
}


def _marking_phases(flow: Flow[T], device: str) -> TsmFlow[T]:
    """``flow`` passed through unchanged, with a PhaseMark before the first request of each phase in
    :data:`_REQUEST_PHASES` (read from the SPDM request code, in the clear or inside a secured record)."""
    marked: set[Phase] = set()
    try:
        out = next(flow)
        while True:
            spdm = out.plaintext if out.object_type is DoeObjectType.SECURED_SPDM else (
                out.payload if out.object_type is DoeObjectType.SPDM else None)
            phase = _REQUEST_PHASES.get(spdm[1]) if spdm is not None and len(spdm) >= 2 else None
            if phase is not None and phase not in marked:
                marked.add(phase)
                yield PhaseMark(device, phase)
            out = flow.send((yield out))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def secure_device(requester: SpdmRequester, env: ProtocolEnv, device: str,
                  options: SecuringOptions = SecuringOptions()) -> TsmFlow[TsmOutcome[SecuredDevice]]:
    """Attest the device, open a session, and bring up an IDE stream keyed by this requester."""
    yield PhaseMark(device, Phase.VCA)
    report = yield from _marking_phases(requester.attest(options.slot, options.summary_type), device)
    if isinstance(report, Failure):
        return _failure(device, _attest_phase(report), report)
    yield PhaseMark(device, Phase.KEY_EXCHANGE)
    session = yield from _marking_phases(requester.start_session(options.slot), device)
    if isinstance(session, Failure):
        return _failure(device, Phase.KEY_EXCHANGE, session)
    handle = session.value
    ide = _ide(requester, handle, env)
    query = yield from ide.query(options.port_index)
    if isinstance(query, PcisigFailure):
        return _failure(device, Phase.KEY_PROG, query)
    stream_id = yield AllocateStream(device)
    if stream_id is None:
        return _failure(device, Phase.KEY_PROG, "no free IDE stream in the Root Port", "no-free-stream")
    keys = yield from _program_both_ends(ide, device, int(stream_id), options.key_set, options.port_index)
    if isinstance(keys, TsmFailure):
        return keys
    enabled = yield EnableStream(device, int(stream_id))
    if not enabled:
        return _failure(device, Phase.K_SET_GO, f"stream {stream_id} did not become Secure", "stream-not-secure")
    return Ok(SecuredDevice(device, report.value, handle, int(stream_id), keys))


def _attest_phase(failure: Failure) -> Phase:
    name = failure.message.upper()
    for phase, markers in ((Phase.CERTIFICATE, ("DIGEST", "CERTIFICATE")), (Phase.CHALLENGE, ("CHALLENGE",)),
                           (Phase.MEASUREMENTS, ("MEASUREMENT",))):
        if any(m in name for m in markers):
            return phase
    return Phase.VCA


def _program_both_ends(ide: IdeKmRequester, device: str, stream_id: int, key_set: KeySet, port_index: int
                       ) -> TsmFlow[StreamKeys | TsmFailure]:
    """KEY_PROG the six keys to the device and the Root Port, then GO in the §4 order."""
    yield PhaseMark(device, Phase.KEY_PROG)
    keys = yield from ide.program(stream_id, key_set, port_index)
    if isinstance(keys, PcisigFailure):
        return _failure(device, Phase.KEY_PROG, keys)
    for key in keys.value.keys:
        if not (yield ProgramRootPortKey(device, key)):
            return _failure(device, Phase.KEY_PROG, f"Root Port refused key slot {key.sub_stream.name} "
                                                    f"{key.root_port_direction.name}", "key-slot-refused")
    yield PhaseMark(device, Phase.K_SET_GO)
    # Both receivers before either transmitter, so that no TLP is sent under a key its receiver
    # has not armed yet: device Rx, Root Port Rx, device Tx, Root Port Tx.
    for direction in (Direction.RX, Direction.TX):
        go = yield from ide.go(stream_id, key_set, (direction,), port_index)
        if isinstance(go, PcisigFailure):
            return _failure(device, Phase.K_SET_GO, go)
        if not (yield RootPortKeySet(device, stream_id, key_set, direction, go=True)):
            return _failure(device, Phase.K_SET_GO, f"Root Port refused GO {direction.name}", "key-slot-refused")
    return keys.value


def lock_and_report(requester: SpdmRequester, secured: SecuredDevice, interface: InterfaceId,
                    flags: LockInterfaceFlags = LockInterfaceFlags.NO_FW_UPDATE
                    ) -> TsmFlow[TsmOutcome[InterfaceReport]]:
    """TDISP: version, capabilities, LOCK (bound to the session), and the interface report."""
    tdisp = TdispRequester.over_session(requester, secured.session)
    yield PhaseMark(secured.device, Phase.LOCK)
    for step in (tdisp.version(interface), tdisp.capabilities(interface)):
        result = yield from step
        if isinstance(result, PcisigFailure):
            return _failure(secured.device, Phase.LOCK, result)
    nonce = yield from tdisp.lock(interface, flags, secured.stream_id)
    if isinstance(nonce, PcisigFailure):
        return _failure(secured.device, Phase.LOCK, nonce)
    yield PhaseMark(secured.device, Phase.REPORT)
    report = yield from tdisp.get_report(interface)
    if isinstance(report, PcisigFailure):
        return _failure(secured.device, Phase.REPORT, report)
    secured.interface, secured.nonce, secured.report = interface, nonce.value, report.value
    return Ok(report.value)


def start_interface(requester: SpdmRequester, secured: SecuredDevice) -> TsmFlow[TsmOutcome[None]]:
    """TDISP START with the LOCK nonce; the interface then runs."""
    if secured.interface is None or secured.nonce is None:
        return _failure(secured.device, Phase.START, "the interface was never locked", "not-locked")
    tdisp = TdispRequester.over_session(requester, secured.session)
    yield PhaseMark(secured.device, Phase.START)
    started = yield from tdisp.start(secured.interface, secured.nonce)
    if isinstance(started, PcisigFailure):
        return _failure(secured.device, Phase.START, started)
    secured.running = True
    yield PhaseMark(secured.device, Phase.RUN)
    return Ok(None)


def accept_and_start(requester: SpdmRequester, secured: SecuredDevice, interface: InterfaceId,
                     check_report: Callable[[InterfaceReport], str | None],
                     flags: LockInterfaceFlags = LockInterfaceFlags.NO_FW_UPDATE) -> TsmFlow[TsmOutcome[None]]:
    """Lock, fetch the report, let the owner's policy judge it (None = accept, else why not), start."""
    report = yield from lock_and_report(requester, secured, interface, flags)
    if isinstance(report, TsmFailure):
        return report
    verdict = check_report(report.value)
    if verdict is not None:
        return _failure(secured.device, Phase.REPORT, verdict, "report-rejected")
    return (yield from start_interface(requester, secured))


def refresh_keys(requester: SpdmRequester, env: ProtocolEnv, secured: SecuredDevice, port_index: int = 0, *,
                 retire_old: bool = False) -> TsmFlow[TsmOutcome[StreamKeys]]:
    """Program the other key set on both ends and switch to it (a key refresh).

    With ``retire_old`` the previous key set is then stopped on both ends, transmitters first (the
    §4 stop order): nothing transmits under it any more once both Tx sides went to the new set, and
    stopping erases it, so a retired key cannot be used again."""
    ide = _ide(requester, secured.session, env)
    old_set = secured.keys.key_set
    new_set = KeySet(1 - old_set)
    keys = yield from _program_both_ends(ide, secured.device, secured.stream_id, new_set, port_index)
    if isinstance(keys, TsmFailure):
        return keys
    secured.keys = keys
    if retire_old:
        for direction in (Direction.TX, Direction.RX):
            if not (yield RootPortKeySet(secured.device, secured.stream_id, old_set, direction, go=False)):
                return _failure(secured.device, Phase.K_SET_GO, f"Root Port refused STOP {direction.name}",
                                "key-slot-refused")
            stop = yield from ide.stop(secured.stream_id, old_set, (direction,), port_index)
            if isinstance(stop, PcisigFailure):
                return _failure(secured.device, Phase.K_SET_GO, stop)
    return Ok(keys)


def teardown(requester: SpdmRequester, env: ProtocolEnv, secured: SecuredDevice, port_index: int = 0
             ) -> TsmFlow[TsmOutcome[None]]:
    """Stop the interface, stop the stream (Tx first), end the session and give the stream back."""
    if secured.interface is not None:
        tdisp = TdispRequester.over_session(requester, secured.session)
        stopped = yield from tdisp.stop(secured.interface)
        if isinstance(stopped, PcisigFailure):
            return _failure(secured.device, Phase.RUN, stopped)
        secured.running = False
    ide = _ide(requester, secured.session, env)
    for direction in (Direction.TX, Direction.RX):  # transmitters first, the reverse of GO
        yield RootPortKeySet(secured.device, secured.stream_id, secured.keys.key_set, direction, go=False)
        stop = yield from ide.stop(secured.stream_id, secured.keys.key_set, (direction,), port_index)
        if isinstance(stop, PcisigFailure):
            return _failure(secured.device, Phase.K_SET_GO, stop)
    ended = yield from requester.end_session(secured.session)
    yield ReleaseStream(secured.device, secured.stream_id)
    if isinstance(ended, Failure):
        return _failure(secured.device, Phase.KEY_EXCHANGE, ended)
    return Ok(None)
