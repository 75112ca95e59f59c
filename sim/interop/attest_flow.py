"""The whole ``tiosim attest`` procedure as one sans-IO flow: attestation, a session, IDE keys, TDISP.

The steps follow what DMTF's ``spdm_requester_emu --exe_session APP`` does over PCI_DOE
(INTEROP.md), so a run against ``spdm_responder_emu`` and a run against ``tiosim serve-device``
exercise the same exchanges: DOE discovery; VCA; DIGESTS; CERTIFICATE (chain verified against the
trusted roots); CHALLENGE (measurement summary hash of all blocks); signed MEASUREMENTS (checked
against that summary hash); KEY_EXCHANGE + FINISH; IDE_KM QUERY, KEY_PROG and K_SET_GO for the six
{Rx,Tx} x {PR,NPR,CPL} sub-streams of key set K0; TDISP GET_VERSION, GET_CAPABILITIES, state
(CONFIG_UNLOCKED), LOCK, state (CONFIG_LOCKED), the interface report, START with the LOCK nonce,
state (RUN), STOP, state (CONFIG_UNLOCKED); IDE_KM K_SET_STOP; END_SESSION.

Each step is recorded as a :class:`StepResult` the moment it finishes (the CLI prints it live);
the flow stops at the first failing step, whose result says what went wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from sim.crypto.algorithms import BaseHashAlgo
from sim.crypto.hashes import digest
from sim.interop.client import doe_discovery
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Flow, Outbound
from sim.protocols.ide_km import DIRECTIONS, IdeKmRequester, PcisigFailure
from sim.protocols.spdm.outcome import Failure, Ok
from sim.protocols.spdm.requester import SessionHandle, SpdmRequester
from sim.protocols.tdisp import TdispRequester
from sim.wire.doe import PCI_SIG_VENDOR_ID, DoeObjectType
from sim.wire.ide_km import KeySet
from sim.wire.spdm.common import MeasurementSummaryHashType
from sim.wire.tdisp import InterfaceId, LockInterfaceFlags, TdiState

T = TypeVar("T")
DEFAULT_INTERFACE_FUNCTION_ID = 0xBEEF  # the interface spdm_requester_emu addresses (INTEROP.md)


@dataclasses.dataclass(frozen=True)
class StepResult:
    """One line of the attest report: the step, whether it passed, and what was found (or what failed)."""

    step: str
    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class AttestOptions:
    """Which TDI, IDE port and stream the procedure uses."""

    interface_function_id: int = DEFAULT_INTERFACE_FUNCTION_ID
    port_index: int = 0
    stream_id: int = 0
    summary_type: MeasurementSummaryHashType = MeasurementSummaryHashType.ALL


class _StepFailed(Exception):
    pass


def _short(data: bytes, n: int = 8) -> str:
    return data[:n].hex() + ("..." if len(data) > n else "")


def _dotted(version: int) -> str:
    return f"{version >> 4}.{version & 0xF}"


def _name(value: Any) -> str:
    return "-" if value is None else (getattr(value, "name", None) or str(value))


class AttestProcedure:
    """Runs the steps (module docstring) with one :class:`SpdmRequester`; ``on_step`` sees each result."""

    def __init__(self, requester: SpdmRequester, env: ProtocolEnv, options: AttestOptions = AttestOptions(),
                 on_step: Callable[[StepResult], None] | None = None) -> None:
        self.requester = requester
        self.env = env
        self.options = options
        self.on_step = on_step
        self.steps: list[StepResult] = []
        self.session: SessionHandle | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def first_failure(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)

    def _record(self, step: str, ok: bool, detail: str) -> None:
        result = StepResult(step, ok, detail)
        self.steps.append(result)
        if self.on_step is not None:
            self.on_step(result)
        if not ok:
            raise _StepFailed(step)

    def _unwrap(self, step: str, outcome: Ok[T] | Failure | PcisigFailure) -> T:
        if isinstance(outcome, Ok):
            return outcome.value
        self._record(step, False, str(outcome))
        raise AssertionError("unreachable")  # _record raised

    def run(self) -> Flow[list[StepResult]]:
        """The flow: drive it with :func:`~sim.protocols.flow.run_flow` and a transport."""
        try:
            yield from self._steps()
        except _StepFailed:
            pass
        except Exception as exc:  # a simulator bug must not take the driver down; it ends the run as a failure
            self.steps.append(StepResult("internal error", False, f"{type(exc).__name__}: {exc}"))
        return self.steps

    def _steps(self) -> Generator[Outbound, bytes | None, None]:
        req = self.requester
        opts = self.options

        protocols = yield from doe_discovery()
        if protocols is None:
            self._record("DOE discovery", False, "no answer to DOE Discovery")
        assert protocols is not None
        names = ", ".join(_name(DoeObjectType(t)) if v == PCI_SIG_VENDOR_ID and t in DoeObjectType._value2member_map_
                          else f"{v:#06x}/{t:#04x}" for v, t in protocols)
        have = set(protocols)
        missing = [t.name for t in (DoeObjectType.SPDM, DoeObjectType.SECURED_SPDM)
                   if (PCI_SIG_VENDOR_ID, int(t)) not in have]
        self._record("DOE discovery", not missing, names + (f"; missing {', '.join(missing)}" if missing else ""))

        info = self._unwrap("VCA", (yield from req.init_connection()))
        alg = info.algorithms
        self._record("VCA", True, f"SPDM {_dotted(info.version)} (peer offers "
                     f"{' '.join(_dotted(v) for v in info.peer_versions)}); {_name(alg.base_asym)} "
                     f"{_name(alg.base_hash)} {_name(alg.dhe)} {_name(alg.aead)}")

        digests = self._unwrap("GET_DIGESTS", (yield from req.get_digests()))
        self._record("GET_DIGESTS", True, f"slot mask {digests.slot_mask:#04x}; slot 0 "
                     f"{_short(digests.digests.get(0, b''))}")

        chain = self._unwrap("GET_CERTIFICATE", (yield from req.get_certificate(0)))
        self._record("GET_CERTIFICATE", True, f"{len(chain.chain)} bytes, {len(chain.certificates_der)} certificates, "
                     f"leaf {chain.leaf_subject}; chain verified to a trusted root")

        challenge = self._unwrap("CHALLENGE", (yield from req.challenge(0, opts.summary_type)))
        self._record("CHALLENGE", True, f"signature verified; {opts.summary_type.name} summary hash "
                     f"{_short(challenge.measurement_summary_hash) or '(none)'}")

        report = self._unwrap("GET_MEASUREMENTS", (yield from req.get_measurements(None, signed=True)))
        detail = f"{len(report.blocks)} blocks, signature {'verified' if report.signed else 'absent'}"
        if challenge.measurement_summary_hash and opts.summary_type is MeasurementSummaryHashType.ALL:
            expected = digest(BaseHashAlgo(alg.base_hash), b"".join(b.encode() for b in report.blocks))
            if expected != challenge.measurement_summary_hash:
                self._record("GET_MEASUREMENTS", False, detail + "; CHALLENGE_AUTH's summary hash differs from the "
                             "hash of these blocks")
            detail += "; matches the CHALLENGE summary hash"
        self._record("GET_MEASUREMENTS", report.signed, detail)

        session = self._unwrap("KEY_EXCHANGE/FINISH", (yield from req.start_session(0)))
        self.session = session
        self._record("KEY_EXCHANGE/FINISH", True, f"session {session.session_id:#010x} established "
                     f"(DSP0277 {_dotted(session.secured_message_version >> 8)})")

        ide = IdeKmRequester.over_session(req, session, self.env)
        q = self._unwrap("IDE_KM QUERY", (yield from ide.query(opts.port_index)))
        self._record("IDE_KM QUERY", True, f"port {q.port_index} of max {q.max_port_index}, bus {q.bus:#04x} "
                     f"dev {q.device} fn {q.function}, {len(q.registers)} register DWs")
        keys = self._unwrap("IDE_KM KEY_PROG x6", (yield from ide.program(opts.stream_id, KeySet.K0, opts.port_index)))
        self._record("IDE_KM KEY_PROG x6", True, f"stream {keys.stream_id} K0: {len(keys.keys)} keys acknowledged "
                     "(KP_ACK status 0)")
        self._unwrap("IDE_KM K_SET_GO x6", (yield from ide.go(opts.stream_id, KeySet.K0, DIRECTIONS, opts.port_index)))
        self._record("IDE_KM K_SET_GO x6", True, "Rx then Tx, PR/NPR/CPL: K_GOSTOP_ACK each")

        tdisp = TdispRequester.over_session(req, session)
        tdi = InterfaceId(opts.interface_function_id)
        versions = self._unwrap("TDISP GET_VERSION", (yield from tdisp.version(tdi)))
        self._record("TDISP GET_VERSION", True, f"interface {tdi.function_id:#x}: versions "
                     f"{' '.join(_dotted(v) for v in versions)}")
        caps = self._unwrap("TDISP GET_CAPABILITIES", (yield from tdisp.capabilities(tdi)))
        self._record("TDISP GET_CAPABILITIES", True, f"lock flags {int(caps.lock_interface_flags_supported):#06x}, "
                     f"requests {' '.join(f'{c:#x}' for c in caps.supported_requests())}")
        yield from self._expect_state(tdisp, tdi, TdiState.CONFIG_UNLOCKED)
        flags = LockInterfaceFlags(int(caps.lock_interface_flags_supported) & int(LockInterfaceFlags(0x1F)))
        nonce = self._unwrap("TDISP LOCK_INTERFACE", (yield from tdisp.lock(tdi, flags, opts.stream_id)))
        self._record("TDISP LOCK_INTERFACE", True, f"flags {int(flags):#06x}, stream {opts.stream_id}; "
                     f"nonce {_short(nonce)}")
        yield from self._expect_state(tdisp, tdi, TdiState.CONFIG_LOCKED)
        iface = self._unwrap("TDISP GET_DEVICE_INTERFACE_REPORT", (yield from tdisp.get_report(tdi)))
        ranges = ", ".join(f"{r.address:#x}+{r.size:#x}" for r in iface.report.mmio_ranges) or "no MMIO ranges"
        self._record("TDISP GET_DEVICE_INTERFACE_REPORT", True, f"{len(iface.raw)} bytes in {iface.portions} "
                     f"portion(s): {ranges}")
        self._unwrap("TDISP START_INTERFACE", (yield from tdisp.start(tdi, nonce)))
        self._record("TDISP START_INTERFACE", True, "nonce accepted")
        yield from self._expect_state(tdisp, tdi, TdiState.RUN)
        self._unwrap("TDISP STOP_INTERFACE", (yield from tdisp.stop(tdi)))
        self._record("TDISP STOP_INTERFACE", True, "stopped")
        yield from self._expect_state(tdisp, tdi, TdiState.CONFIG_UNLOCKED)

        self._unwrap("IDE_KM K_SET_STOP x6", (yield from ide.stop(opts.stream_id, KeySet.K0,
                                                                   port_index=opts.port_index)))
        self._record("IDE_KM K_SET_STOP x6", True, "Tx then Rx, PR/NPR/CPL: K_GOSTOP_ACK each")

        self._unwrap("END_SESSION", (yield from req.end_session(session)))
        self.session = None
        self._record("END_SESSION", True, f"session {session.session_id:#010x} ended")

    def _expect_state(self, tdisp: TdispRequester, tdi: InterfaceId, want: TdiState
                      ) -> Generator[Outbound, bytes | None, None]:
        step = f"TDISP GET_DEVICE_INTERFACE_STATE ({want.name})"
        state = self._unwrap(step, (yield from tdisp.state(tdi)))
        self._record(step, state is want, f"state {TdiState(state).name}")
