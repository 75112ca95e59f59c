"""The device security manager (sim/protocols/dsm.py): routing, session rules, resets, hardware checks, and the
end-to-end flow through the real SPDM requester and responder over DOE objects and secured records."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo
from sim.crypto.identity import Identity, build_identity
from sim.crypto.secrets import SecretClass, SecretList
from sim.protocols.dsm import DeviceSecurityManager, selective_streams
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Outbound, run_flow
from sim.protocols.ide_km import (
    IdeKeyStatus,
    IdeKmRequester,
    IdePort,
    InMemoryIdeKeySlots,
    PcisigFailure,
    PcisigFailureReason,
    StaticIdePorts,
    ide_register_block,
)
from sim.protocols.spdm.outcome import Failure, FailureReason, Ok
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SessionHandle, SpdmRequester
from sim.protocols.spdm.responder import SessionEnded
from sim.protocols.tdisp import TdiDefinition, TdispRequester, TdiTransition
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import Direction, KeySet, KpAckStatus, Query, SubStream
from sim.wire.pcisig import PCISIG_VENDOR_ID, STANDARD_ID_PCISIG, ProtocolId
from sim.wire.spdm.common import ErrorCode
from sim.wire.tdisp import (
    GetTdispVersion,
    InterfaceId,
    InterfaceInfo,
    LockInterfaceFlags,
    MmioRange,
    TdispErrorCode,
    TdiState,
)

STREAM = 1
TDI0 = InterfaceId.for_function(0x0100)
TDI1 = InterfaceId.for_function(0x0101)


@pytest.fixture(scope="module")
def identity() -> Identity:
    return build_identity(11, "dsm-test-device", BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384)


class Rig:
    """A DSM (in-memory key slots) and a real SPDM requester wired through DOE objects."""

    def __init__(self, identity: Identity, *, max_version: int | None = None, seed: int = 5) -> None:
        self.slots = InMemoryIdeKeySlots()
        self.sink = SecretList()
        env = ProtocolEnv.for_test("dev0.dsm", seed)
        env.sink = self.sink
        ports = StaticIdePorts([IdePort(0, 0, 0, 1, 0, ide_register_block((STREAM,)))])
        tdis = [TdiDefinition(TDI0, 0, InterfaceInfo.DMA_WITHOUT_PASID, (MmioRange(0xF0000, 8, range_id=0),),
                              b"dev0"),
                TdiDefinition(TDI1, 1, mmio_ranges=(MmioRange(0xF1000, 2, range_id=0),))]
        self.dsm = DeviceSecurityManager.build("default-p384", identity, env, tdis=tdis, slots=self.slots,
                                               ports=ports, max_portion=0x20)
        host_env = ProtocolEnv.for_test("host.tsm", seed + 1)
        host_env.sink = self.sink
        self.host_env = host_env
        self.req = SpdmRequester(RequesterConfig(max_version=max_version), VerificationPolicy.trusting(identity),
                                 host_env)
        self.wire: list[tuple[DoeObjectType, bytes, bytes | None]] = []

    def transport(self, out: Outbound) -> bytes | None:
        answer = self.dsm.handle_doe(out.object_type, out.payload)
        self.wire.append((out.object_type, out.payload, answer))
        return answer

    def run(self, flow: object) -> object:
        return run_flow(flow, self.transport)  # type: ignore[arg-type]

    def session(self) -> SessionHandle:
        """A fresh connection (VCA, digests, certificate) and a session on it."""
        for flow in (self.req.init_connection(), self.req.get_digests(), self.req.get_certificate(0)):
            assert isinstance(self.run(flow), Ok)
        result = self.run(self.req.start_session())
        assert isinstance(result, Ok), result
        return result.value  # type: ignore[no-any-return]

    def ide(self, session: SessionHandle | None) -> IdeKmRequester:
        return IdeKmRequester.over_session(self.req, session, self.host_env)

    def tdisp(self, session: SessionHandle | None) -> TdispRequester:
        return TdispRequester.over_session(self.req, session)


def ok(result: object) -> object:
    assert isinstance(result, Ok), result
    return result.value


# ------------------------------------------------------------------ end to end


def test_end_to_end_attest_key_lock_report_start_stop(identity: Identity) -> None:
    rig = Rig(identity)
    report = ok(rig.run(rig.req.attest()))
    assert report is not None
    session = ok(rig.run(rig.req.start_session()))
    assert isinstance(session, SessionHandle)
    mark = len(rig.wire)

    ide = rig.ide(session)
    query = ok(rig.run(ide.query(0)))
    assert query.registers == ide_register_block((STREAM,))  # type: ignore[attr-defined]
    keys = ok(rig.run(ide.setup(STREAM)))
    assert rig.slots.ready(STREAM)
    assert rig.dsm.ide_km.key_status(STREAM, session.session_id) is IdeKeyStatus.COMPLETE

    td = rig.tdisp(session)
    assert ok(rig.run(td.version(TDI0))) == (0x10,)
    nonce = ok(rig.run(td.lock(TDI0, LockInterfaceFlags.NO_FW_UPDATE, STREAM, mmio_reporting_offset=-(0xE0000 << 12))))
    got = ok(rig.run(td.get_report(TDI0)))
    assert got.portions > 1  # type: ignore[attr-defined]
    assert got.report.mmio_ranges == (MmioRange(0x10000, 8, range_id=0),)  # type: ignore[attr-defined]
    assert got.report.interface_info & InterfaceInfo.NO_FW_UPDATE  # type: ignore[attr-defined]
    assert ok(rig.run(td.start(TDI0, nonce))) is None  # type: ignore[arg-type]
    assert ok(rig.run(td.state(TDI0))) is TdiState.RUN
    assert rig.dsm.tdi_state(TDI0) is TdiState.RUN
    assert ok(rig.run(td.stop(TDI0))) is None
    assert ok(rig.run(td.state(TDI0))) is TdiState.CONFIG_UNLOCKED
    assert ok(rig.run(rig.req.end_session(session))) is None

    # everything after the session started travelled as secured records (DOE type 2) ...
    assert {t for t, _, _ in rig.wire[mark:]} == {DoeObjectType.SECURED_SPDM}
    # ... so neither the IDE keys nor the START nonce ever crossed the wire in the clear
    secrets = [k.key for k in keys.keys] + [nonce]  # type: ignore[attr-defined]
    for _, request, answer in rig.wire:
        for secret in secrets:
            assert secret not in request and secret not in (answer or b"")
    assert len(rig.sink.by_class(SecretClass.IDE_KEY)) == 6
    assert [r.value for r in rig.sink.by_class(SecretClass.TDISP_NONCE)] == [nonce]
    # ending the session took its keys away
    assert not rig.slots.keys
    assert any(isinstance(e, SessionEnded) for e in rig.dsm.events)


def test_session_end_while_running_sends_tdi_to_error_and_revokes_keys(identity: Identity) -> None:
    rig = Rig(identity)
    session = rig.session()
    ok(rig.run(rig.ide(session).setup(STREAM)))
    td = rig.tdisp(session)
    nonce = ok(rig.run(td.lock(TDI0, LockInterfaceFlags(0), STREAM)))
    ok(rig.run(td.start(TDI0, nonce)))  # type: ignore[arg-type]
    ok(rig.run(rig.req.end_session(session)))
    assert rig.dsm.tdi_state(TDI0) is TdiState.ERROR
    assert not rig.slots.keys and not rig.slots.ready(STREAM)
    changes = [e for e in rig.dsm.events if isinstance(e, TdiTransition)]
    assert changes[-1].new is TdiState.ERROR and changes[-1].session_id == session.session_id
    # a new session can see the ERROR, STOP it, and must re-key before it may LOCK again
    second = rig.session()
    td2 = rig.tdisp(second)
    assert ok(rig.run(td2.state(TDI0))) is TdiState.ERROR
    ok(rig.run(td2.stop(TDI0)))
    refused = rig.run(td2.lock(TDI0, LockInterfaceFlags(0), STREAM))
    assert isinstance(refused, PcisigFailure) and refused.tdisp_error is TdispErrorCode.INVALID_REQUEST
    ok(rig.run(rig.ide(second).setup(STREAM)))
    assert isinstance(ok(rig.run(td2.lock(TDI0, LockInterfaceFlags(0), STREAM))), bytes)


def test_lock_refused_when_keys_came_through_another_session(identity: Identity) -> None:
    rig = Rig(identity)
    first = rig.session()
    ok(rig.run(rig.ide(first).setup(STREAM)))
    second = ok(rig.run(rig.req.start_session()))
    refused = rig.run(rig.tdisp(second).lock(TDI0, LockInterfaceFlags(0), STREAM))  # type: ignore[arg-type]
    assert isinstance(refused, PcisigFailure) and refused.tdisp_error is TdispErrorCode.INVALID_REQUEST
    assert isinstance(ok(rig.run(rig.tdisp(first).lock(TDI0, LockInterfaceFlags(0), STREAM))), bytes)


def test_end_to_end_is_deterministic(identity: Identity) -> None:
    def wire() -> list[tuple[DoeObjectType, bytes, bytes | None]]:
        rig = Rig(identity, seed=21)
        session = rig.session()
        ok(rig.run(rig.ide(session).setup(STREAM)))
        ok(rig.run(rig.tdisp(session).lock(TDI0, LockInterfaceFlags(0), STREAM)))
        return rig.wire

    assert wire() == wire()


# ------------------------------------------------------------------ outside a session


def test_ide_km_outside_a_session_gets_session_required(identity: Identity) -> None:
    rig = Rig(identity)
    ok(rig.run(rig.req.init_connection()))
    payload = bytes([ProtocolId.IDE_KM]) + Query(0).encode()
    result = rig.run(rig.req.vendor_request(None, STANDARD_ID_PCISIG, PCISIG_VENDOR_ID, payload))
    assert isinstance(result, Failure) and result.reason is FailureReason.ERROR_RESPONSE
    assert result.error_code is ErrorCode.SESSION_REQUIRED
    # through the IDE_KM requester it is an SPDM-level failure
    failed = rig.run(rig.ide(None).query(0))
    assert isinstance(failed, PcisigFailure) and failed.reason is PcisigFailureReason.SPDM_FAILURE
    assert failed.spdm is not None and failed.spdm.error_code is ErrorCode.SESSION_REQUIRED


def test_ide_km_outside_a_session_at_spdm_1_1(identity: Identity) -> None:
    rig = Rig(identity, max_version=0x11)
    ok(rig.run(rig.req.init_connection()))
    failed = rig.run(rig.ide(None).query(0))
    assert isinstance(failed, PcisigFailure) and failed.spdm is not None
    assert failed.spdm.error_code is ErrorCode.UNEXPECTED_REQUEST  # no SessionRequired before 1.2


def test_tdisp_outside_a_session_is_ignored(identity: Identity) -> None:
    rig = Rig(identity)
    ok(rig.run(rig.req.init_connection()))
    payload = bytes([ProtocolId.TDISP]) + GetTdispVersion(interface_id=TDI0).encode()
    assert rig.run(rig.req.vendor_request(None, STANDARD_ID_PCISIG, PCISIG_VENDOR_ID, payload)) == Ok(None)
    failed = rig.run(rig.tdisp(None).version(TDI0))
    assert isinstance(failed, PcisigFailure) and failed.reason is PcisigFailureReason.NO_RESPONSE


def test_tdisp_needs_spdm_1_2(identity: Identity) -> None:
    rig = Rig(identity, max_version=0x11)
    session = rig.session()
    ok(rig.run(rig.ide(session).query(0)))  # IDE_KM works in a 1.1 session
    failed = rig.run(rig.tdisp(session).version(TDI0))
    assert isinstance(failed, PcisigFailure) and failed.reason is PcisigFailureReason.NO_RESPONSE


KEY_PROG_CUT = b"\x00\x02\x00\x00\x01\x00\x00\x00\x00"  # Protocol ID + a 8-byte KEY_PROG (47 expected)


@pytest.mark.parametrize("payload", [b"", b"\x02\x00", b"\x00", b"\x00\x07\x00\x00", b"\x00\x02\x00\x00\x01",
                                     KEY_PROG_CUT])
def test_bad_pci_sig_payload_in_session_gets_invalid_request(identity: Identity, payload: bytes) -> None:
    rig = Rig(identity)
    session = rig.session()
    result = rig.run(rig.req.vendor_request(session, STANDARD_ID_PCISIG, PCISIG_VENDOR_ID, payload))
    if payload == KEY_PROG_CUT:  # long enough to acknowledge: KP_ACK INCORRECT_LENGTH, stream 1 echoed
        assert isinstance(result, Ok) and result.value[:2] == b"\x00\x03"  # type: ignore[index]
        assert result.value[4] == 1 and result.value[5] == KpAckStatus.INCORRECT_LENGTH  # type: ignore[index]
        return
    assert isinstance(result, Failure) and result.error_code is ErrorCode.INVALID_REQUEST
    assert ok(rig.run(rig.req.heartbeat(session))) is None  # the session survives


def test_non_spdm_doe_types_get_no_response(identity: Identity) -> None:
    rig = Rig(identity)
    assert rig.dsm.handle_doe(DoeObjectType.DISCOVERY, bytes(4)) is None
    assert rig.dsm.handle_doe(0x7, bytes(8)) is None


# ------------------------------------------------------------------ resets


def locked_rig(identity: Identity, state: TdiState = TdiState.RUN) -> tuple[Rig, SessionHandle]:
    rig = Rig(identity)
    session = rig.session()
    ok(rig.run(rig.ide(session).setup(STREAM)))
    td = rig.tdisp(session)
    for iface in (TDI0, TDI1):
        nonce = ok(rig.run(td.lock(iface, LockInterfaceFlags(0), STREAM)))
        if state is TdiState.RUN:
            ok(rig.run(td.start(iface, nonce)))  # type: ignore[arg-type]
    return rig, session


def test_conventional_reset_unlocks_everything_and_forgets_spdm(identity: Identity) -> None:
    rig, session = locked_rig(identity)
    rig.dsm.conventional_reset()
    assert rig.dsm.tdi_state(TDI0) is rig.dsm.tdi_state(TDI1) is TdiState.CONFIG_UNLOCKED
    assert not rig.dsm.spdm.sessions and not rig.slots.keys
    # no TDI passed through ERROR on the way: the reset is the cause
    assert not any(isinstance(e, TdiTransition) and e.new is TdiState.ERROR for e in rig.dsm.events)
    # the old session's records are now dropped without answer
    assert rig.run(rig.req.heartbeat(session)).reason is FailureReason.NO_RESPONSE  # type: ignore[attr-defined]


def test_flr_of_function_1_errors_its_tdi_and_keeps_the_session(identity: Identity) -> None:
    rig, session = locked_rig(identity)
    rig.dsm.function_level_reset(1)
    assert rig.dsm.tdi_state(TDI1) is TdiState.ERROR and rig.dsm.tdi_state(TDI0) is TdiState.RUN
    assert ok(rig.run(rig.tdisp(session).state(TDI0))) is TdiState.RUN
    assert rig.slots.ready(STREAM)


def test_flr_of_function_0_errors_its_tdi_and_drops_security_state(identity: Identity) -> None:
    rig, _ = locked_rig(identity, TdiState.CONFIG_LOCKED)
    rig.dsm.function_level_reset(0)
    assert rig.dsm.tdi_state(TDI0) is TdiState.ERROR
    assert rig.dsm.tdi_state(TDI1) is TdiState.ERROR  # bound to the session that ended with the SPDM state
    assert not rig.dsm.spdm.sessions and not rig.slots.keys


def test_config_change_errors_only_that_function(identity: Identity) -> None:
    rig, _ = locked_rig(identity)
    rig.dsm.config_changed(1, "bar")
    assert rig.dsm.tdi_state(TDI1) is TdiState.ERROR and rig.dsm.tdi_state(TDI0) is TdiState.RUN
    rig.dsm.config_changed(0, "ide-registers")  # without hardware to compare, every locked TDI is suspect
    assert rig.dsm.tdi_state(TDI0) is TdiState.ERROR


def test_stream_insecure(identity: Identity) -> None:
    rig, _ = locked_rig(identity)
    rig.dsm.stream_insecure(STREAM + 1)
    assert rig.dsm.tdi_state(TDI0) is TdiState.RUN
    rig.dsm.stream_insecure(STREAM)
    assert rig.dsm.tdi_state(TDI0) is rig.dsm.tdi_state(TDI1) is TdiState.ERROR


# ------------------------------------------------------------------ attached hardware


@dataclasses.dataclass(frozen=True)
class FakeBar:
    index: int
    address: int
    size: int
    kind: str = "mem64"


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    function: int
    requester_id: int
    bars: tuple[FakeBar, ...]


class FakeHardware:
    """A stand-in for the endpoint's DsmHardware: real key slots, a mutable register block and BARs."""

    ide_port_index = 0

    def __init__(self) -> None:
        self.ide = InMemoryIdeKeySlots()
        self.registers = list(ide_register_block((STREAM,), enabled=True))
        self.bars = {0: (FakeBar(0, 0xC000_0000, 0x4000), FakeBar(2, 0xC001_0000, 0x1000)),
                     1: (FakeBar(0, 0xC010_0000, 0x2000), FakeBar(1, 0, 0x100, "io"))}

    def ide_query(self, port_index: int) -> IdePort | None:
        return IdePort(0, 0, 0, 1, 0, tuple(self.registers)) if port_index == 0 else None

    def functions(self) -> tuple[int, ...]:
        return (0, 1)

    def tdi_config(self, function: int) -> FakeConfig:
        return FakeConfig(function, 0x0100 | function, self.bars[function])

    def set_secure(self, secure: bool) -> None:
        self.registers[4] = 2 if secure else 0  # first selective stream's Status


def attached(identity: Identity) -> tuple[Rig, FakeHardware, SessionHandle]:
    rig = Rig(identity)
    hw = FakeHardware()
    dsm = DeviceSecurityManager.build("default-p384", identity, ProtocolEnv.for_test("dev1.dsm", 3))
    dsm.attach(hw)
    rig.dsm, rig.slots = dsm, hw.ide
    session = rig.session()
    ok(rig.run(rig.ide(session).setup(STREAM)))
    hw.set_secure(True)
    return rig, hw, session


def test_attach_defines_tdis_per_function_and_reports_bars(identity: Identity) -> None:
    rig, hw, session = attached(identity)
    assert set(rig.dsm.tdisp.tdis) == {(0x0100, None), (0x0101, None)}
    td = rig.tdisp(session)
    ok(rig.run(td.lock(TDI0, LockInterfaceFlags(0), STREAM)))
    got = ok(rig.run(td.get_report(TDI0)))
    assert got.report.mmio_ranges == (MmioRange(0xC0000, 4, range_id=0),  # type: ignore[attr-defined]
                                      MmioRange(0xC0010, 1, range_id=2))
    ok(rig.run(td.lock(TDI1, LockInterfaceFlags(0), STREAM)))
    got1 = ok(rig.run(td.get_report(TDI1)))
    assert got1.report.mmio_ranges == (MmioRange(0xC0100, 2, range_id=0),)  # type: ignore[attr-defined]


def test_lock_checks_the_stream_registers_and_bars(identity: Identity) -> None:
    rig, hw, session = attached(identity)
    td = rig.tdisp(session)
    hw.registers[3] &= 0x00FFFFFF  # the selective stream's Stream ID no longer matches
    failed = rig.run(td.lock(TDI0, LockInterfaceFlags(0), STREAM))
    assert isinstance(failed, PcisigFailure) and failed.tdisp_error is TdispErrorCode.INVALID_DEVICE_CONFIGURATION
    hw.registers[3] |= STREAM << 24
    hw.bars[0] = (FakeBar(0, 0xC000_0000, 0x4000), FakeBar(2, 0xC000_2000, 0x1000))  # overlapping BARs
    failed = rig.run(td.lock(TDI0, LockInterfaceFlags(0), STREAM))
    assert isinstance(failed, PcisigFailure) and failed.tdisp_error is TdispErrorCode.INVALID_DEVICE_CONFIGURATION
    hw.bars[0] = (FakeBar(0, 0xC000_0000, 0x4000),)
    assert isinstance(ok(rig.run(td.lock(TDI0, LockInterfaceFlags(0), STREAM))), bytes)


def test_ide_register_changes_error_only_when_the_bound_stream_changes(identity: Identity) -> None:
    rig, hw, session = attached(identity)
    td = rig.tdisp(session)
    nonce = ok(rig.run(td.lock(TDI0, LockInterfaceFlags(0), STREAM)))
    ok(rig.run(td.start(TDI0, nonce)))  # type: ignore[arg-type]
    hw.registers[1] = 0x4  # IDE Control (flow-through) is not the stream's configuration
    rig.dsm.config_changed(0, "ide-registers")
    assert rig.dsm.tdi_state(TDI0) is TdiState.RUN
    hw.registers[6] = 0x1234  # RID Association 2 of the bound stream
    rig.dsm.config_changed(0, "ide-registers")
    assert rig.dsm.tdi_state(TDI0) is TdiState.ERROR


def test_bound_stream_leaving_secure_errors_the_tdi(identity: Identity) -> None:
    rig, hw, session = attached(identity)
    td = rig.tdisp(session)
    ok(rig.run(td.lock(TDI1, LockInterfaceFlags(0), STREAM)))
    hw.set_secure(False)
    rig.dsm.config_changed(0, "ide-registers")
    events: list[TdiTransition] = [e for e in rig.dsm.events if isinstance(e, TdiTransition)]
    assert rig.dsm.tdi_state(TDI1) is TdiState.ERROR and events[-1].trigger.name == "STREAM_INSECURE"


def test_ide_km_uses_the_attached_engine(identity: Identity) -> None:
    rig, hw, session = attached(identity)
    assert hw.ide.ready(STREAM)
    assert (0, STREAM, KeySet.K0, Direction.TX, SubStream.NPR) in hw.ide.keys
    ok(rig.run(rig.req.end_session(session)))
    assert not hw.ide.keys


def test_selective_streams_parser_handles_link_blocks_and_truncation() -> None:
    regs = list(ide_register_block((4, 9), addr_assoc=2))
    regs[0] |= 1 | (1 << 13)  # Link IDE with 2 TCs: two (Control, Status) pairs before the selective blocks
    regs[2:2] = [0, 0, 0, 0]
    blocks = selective_streams(regs)
    assert [(b.index, b.stream_id, b.is_default, len(b.association)) for b in blocks] == [(0, 4, True, 8),
                                                                                        (1, 9, False, 8)]
    assert len(selective_streams(regs[:-1])) == 1
    assert selective_streams([]) == [] and selective_streams([0, 0]) == []


def test_listeners_see_every_layer(identity: Identity) -> None:
    rig = Rig(identity)
    seen: list[object] = []
    rig.dsm.add_listener(seen.append)
    session = rig.session()
    ok(rig.run(rig.ide(session).setup(STREAM)))
    kinds: set[Callable[..., object] | type] = {type(e) for e in seen}
    assert SessionEnded not in kinds
    assert any(getattr(e, "kind", None) == "programmed" for e in seen)
    assert any(type(e).__name__ == "SessionEstablished" for e in seen)


# ------------------------------------------------------------------ with the real endpoint model


def test_with_the_endpoint_model_through_its_doe_mailbox(identity: Identity) -> None:
    from sim.devices.doe_mailbox import DoeOutcomeKind, DoeRequest
    from sim.devices.endpoint import Endpoint, FunctionSpec
    from sim.devices.security_manager import SecurityManager
    from sim.wire.doe import DoeObject

    dsm = DeviceSecurityManager.build("default-p384", identity, ProtocolEnv.for_test("ep.dsm", 9))
    ep = Endpoint("dev0", functions=(FunctionSpec(), FunctionSpec()), dsm=dsm, bus=1)
    assert isinstance(dsm, SecurityManager)
    assert set(dsm.tdisp.tdis) == {(0x0100, None), (0x0101, None)}
    rig = Rig(identity)
    rig.dsm, rig.slots = dsm, InMemoryIdeKeySlots()
    tickets = iter(range(1, 10_000))

    def via_mailbox(out: Outbound) -> bytes | None:  # the mailbox's own decoding, padding included
        outcome = ep.mailbox.respond(DoeRequest(next(tickets), DoeObject.pcisig(out.object_type, out.payload).encode()))
        if outcome.kind is not DoeOutcomeKind.RESPONSE:
            return None
        return DoeObject.decode(outcome.response).payload

    rig.transport = via_mailbox  # type: ignore[method-assign]
    session = rig.session()
    ok(rig.run(rig.ide(session).setup(STREAM)))
    assert ep.ide.ready(STREAM)
    blk = ep.ide_cap.selective_blocks()[0]
    assert ep.ide_cap.offset is not None
    ep.config_write(0, ep.ide_cap.offset + blk.control, (STREAM << 24) | 1)  # Stream ID + Enable
    td = rig.tdisp(session)
    nonce = ok(rig.run(td.lock(TDI0, LockInterfaceFlags(0), STREAM)))
    ok(rig.run(td.lock(TDI1, LockInterfaceFlags(0), STREAM)))
    ok(rig.run(td.start(TDI0, nonce)))  # type: ignore[arg-type]
    assert ok(rig.run(td.get_report(TDI0))).report.mmio_ranges[0].number_of_pages == 4  # type: ignore[attr-defined]

    ep.function_level_reset(1)  # TDISP §11.4.9: that function's TDI to ERROR, SPDM and IDE kept
    assert dsm.tdi_state(TDI1) is TdiState.ERROR and dsm.tdi_state(TDI0) is TdiState.RUN
    assert ok(rig.run(td.state(TDI0))) is TdiState.RUN and ep.ide.ready(STREAM)

    ep.config_write(0, ep.ide_cap.offset + blk.control, ((STREAM + 1) << 24) | 1)  # re-target the bound stream
    assert dsm.tdi_state(TDI0) is TdiState.ERROR

    ep.conventional_reset()  # DPC / hot reset: everything unlocked, keys and sessions gone
    assert dsm.tdi_state(TDI0) is dsm.tdi_state(TDI1) is TdiState.CONFIG_UNLOCKED
    assert ep.ide.slot_count() == 0 and not dsm.spdm.sessions


def test_tdi_on_a_missing_function_cannot_lock_and_register_check_can_be_disabled(identity: Identity) -> None:
    tdi3 = InterfaceId.for_function(0x0103)
    for strict in (True, False):
        rig = Rig(identity)
        hw = FakeHardware()
        hw.registers[3] &= 0x00FFFFFF  # Stream ID 0 in the only selective block
        dsm = DeviceSecurityManager.build("default-p384", identity, ProtocolEnv.for_test("dev3.dsm", 3),
                                          tdis=[TdiDefinition(tdi3, 3), TdiDefinition(TDI0, 0)],
                                          check_stream_registers=strict)
        dsm.attach(hw)
        rig.dsm, rig.slots = dsm, hw.ide
        session = rig.session()
        ok(rig.run(rig.ide(session).setup(STREAM)))
        td = rig.tdisp(session)
        failed = rig.run(td.lock(tdi3, LockInterfaceFlags(0), STREAM))
        assert isinstance(failed, PcisigFailure)
        assert failed.tdisp_error is TdispErrorCode.INVALID_DEVICE_CONFIGURATION
        result = rig.run(td.lock(TDI0, LockInterfaceFlags(0), STREAM))
        assert isinstance(result, Ok) is (not strict)
