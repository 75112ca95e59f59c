"""The one securing flow, run in memory against a real DSM and a key-slot store for the Root Port."""

from __future__ import annotations

import hashlib

import pytest

from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo
from sim.crypto.identity import Identity, build_identity
from sim.crypto.secrets import SecretClass, SecretList
from sim.protocols.dsm import DeviceSecurityManager
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Outbound
from sim.protocols.ide_km import IdePort, InMemoryIdeKeySlots, StaticIdePorts, ide_register_block
from sim.protocols.spdm.outcome import Ok
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SpdmRequester
from sim.protocols.tdisp import InterfaceReport, TdiDefinition
from sim.protocols.tsm import (
    AllocateStream,
    EnableStream,
    Phase,
    PhaseMark,
    ProgramRootPortKey,
    ReleaseStream,
    RootPortKeySet,
    SecuredDevice,
    TsmFailure,
    accept_and_start,
    refresh_keys,
    secure_device,
    teardown,
)
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.tdisp import InterfaceId, InterfaceInfo, MmioRange, TdiState

STREAM = 3
TDI = InterfaceId.for_function(0x0100)


@pytest.fixture(scope="module")
def identity() -> Identity:
    return build_identity(21, "tsm-test-device", BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384)


class RootPortSlots:
    """The Root Port side as the flow sees it: a stream pool and key slots (real storage and rules)."""

    def __init__(self, free: tuple[int, ...] = (STREAM,)) -> None:
        self.free = list(free)
        self.slots = InMemoryIdeKeySlots(stream_ids=free)
        self.enabled: set[int] = set()
        self.log: list[object] = []

    def handle(self, request: object) -> object:
        self.log.append(request)
        if isinstance(request, AllocateStream):
            return self.free.pop(0) if self.free else None
        if isinstance(request, ProgramRootPortKey):
            k = request.key
            return self.slots.program(0, k.stream_id, k.key_set, request.direction, k.sub_stream, k.key,
                                      k.ifv).name == "SUCCESS"
        if isinstance(request, RootPortKeySet):
            op = self.slots.set_go if request.go else self.slots.set_stop
            return all(op(0, request.stream_id, request.key_set, request.direction, s) for s in SubStream)
        if isinstance(request, EnableStream):
            if self.slots.ready(request.stream_id):
                self.enabled.add(request.stream_id)
                return True
            return False
        if isinstance(request, ReleaseStream):
            self.enabled.discard(request.stream_id)
            self.free.append(request.stream_id)
            return None
        raise AssertionError(f"unexpected platform request {request!r}")


class Rig:
    def __init__(self, identity: Identity, *, seed: int = 3, rp_streams: tuple[int, ...] = (STREAM,)) -> None:
        self.sink = SecretList()
        dev_env = ProtocolEnv.for_test("dev0.dsm", seed)
        dev_env.sink = self.sink
        self.device_slots = InMemoryIdeKeySlots(stream_ids=(STREAM,))
        ports = StaticIdePorts([IdePort(0, 0, 0, 1, 0, ide_register_block((STREAM,)))])
        tdis = [TdiDefinition(TDI, 0, InterfaceInfo.DMA_WITHOUT_PASID, (MmioRange(0xF0000, 8, range_id=0),), b"nic")]
        self.dsm = DeviceSecurityManager.build("default-p384", identity, dev_env, tdis=tdis,
                                               slots=self.device_slots, ports=ports)
        self.env = ProtocolEnv.for_test("guest0", seed + 1)
        self.env.sink = self.sink
        self.req = SpdmRequester(RequesterConfig(), VerificationPolicy.trusting(identity), self.env)
        self.rp = RootPortSlots(rp_streams)
        self.marks: list[Phase] = []
        self.wire = hashlib.sha256()
        self.records: list[tuple[bytes, bytes | None]] = []

    def run(self, flow: object) -> object:
        """Drive a TSM flow: DOE objects to the DSM, platform requests to the Root Port stand-in."""
        try:
            item = next(flow)  # type: ignore[call-overload]
            while True:
                if isinstance(item, Outbound):
                    answer: object = self.dsm.handle_doe(item.object_type, item.payload)
                    self.wire.update(item.payload + (answer or b""))
                    if item.object_type is DoeObjectType.SECURED_SPDM:
                        self.records.append((item.payload, item.plaintext))
                elif isinstance(item, PhaseMark):
                    self.marks.append(item.phase)
                    answer = None
                else:
                    answer = self.rp.handle(item)
                item = flow.send(answer)  # type: ignore[attr-defined]
        except StopIteration as stop:
            return stop.value


def secured(rig: Rig) -> SecuredDevice:
    result = rig.run(secure_device(rig.req, rig.env, "dev0"))
    assert isinstance(result, Ok), result
    return result.value  # type: ignore[no-any-return]


def test_secure_device_keys_both_ends_with_matching_keys(identity: Identity) -> None:
    rig = Rig(identity)
    dev = secured(rig)
    assert dev.stream_id == STREAM and STREAM in rig.rp.enabled
    assert dev.attestation.challenged and dev.attestation.measurements_signed
    # The Root Port transmits with the key the device receives with, and the other way round.
    for key in dev.keys.keys:
        rp_key = rig.rp.slots.keys[(0, STREAM, KeySet.K0, key.root_port_direction, key.sub_stream)][0]
        dev_key = rig.device_slots.keys[(0, STREAM, KeySet.K0, key.direction, key.sub_stream)][0]
        assert rp_key == dev_key == key.key
    assert len({k.key for k in dev.keys.keys}) == 6
    assert rig.marks == [Phase.VCA, Phase.CERTIFICATE, Phase.CHALLENGE, Phase.MEASUREMENTS, Phase.KEY_EXCHANGE,
                         Phase.FINISH, Phase.KEY_PROG, Phase.K_SET_GO]
    # GO order: device Rx (IDE_KM), Root Port Rx, device Tx, Root Port Tx (TRUST_MODELS.md §4).
    rp_go = [r for r in rig.rp.log if isinstance(r, RootPortKeySet)]
    assert [r.direction for r in rp_go] == [Direction.RX, Direction.TX]


def test_keys_never_cross_in_the_clear_and_records_carry_their_plaintext(identity: Identity) -> None:
    rig = Rig(identity)
    dev = secured(rig)
    ide_keys = [r.value for r in rig.sink.by_class(SecretClass.IDE_KEY)]
    assert len(ide_keys) == 6
    assert all(k in {pk.key for pk in dev.keys.keys} for k in ide_keys)
    # Every KEY_PROG went in a secured record: the record bytes hold no key in any byte order,
    # while the plaintext handed along for the exposure tracker does (DW-reversed, §6.3).
    carried = [p for _, p in rig.records if p is not None and b"\x02\x00\x00" in p]
    assert rig.records and all(p is not None for _, p in rig.records)
    for key in ide_keys:
        reversed_dw = b"".join(key[i:i + 4][::-1] for i in range(0, 32, 4))
        assert not any(key in rec or reversed_dw in rec for rec, _ in rig.records)
        assert any(reversed_dw in p for p in carried)


def test_accept_and_start_runs_the_interface(identity: Identity) -> None:
    rig = Rig(identity)
    dev = secured(rig)
    seen: list[InterfaceReport] = []

    def check(report: InterfaceReport) -> str | None:
        seen.append(report)
        return None

    result = rig.run(accept_and_start(rig.req, dev, TDI, check))
    assert isinstance(result, Ok), result
    assert dev.running and rig.dsm.tdi_state(TDI) is TdiState.RUN
    assert seen and seen[0].report.mmio_ranges[0].first_page == 0xF0000
    assert rig.marks[-4:] == [Phase.LOCK, Phase.REPORT, Phase.START, Phase.RUN]


def test_a_rejected_report_is_not_started(identity: Identity) -> None:
    rig = Rig(identity)
    dev = secured(rig)
    result = rig.run(accept_and_start(rig.req, dev, TDI, lambda report: "unexpected MMIO layout"))
    assert isinstance(result, TsmFailure)
    assert (result.phase, result.reason) == (Phase.REPORT, "report-rejected")
    assert rig.dsm.tdi_state(TDI) is TdiState.CONFIG_LOCKED and not dev.running


def test_no_free_stream_fails_in_key_prog(identity: Identity) -> None:
    rig = Rig(identity, rp_streams=())
    result = rig.run(secure_device(rig.req, rig.env, "dev0"))
    assert isinstance(result, TsmFailure)
    assert (result.phase, result.reason) == (Phase.KEY_PROG, "no-free-stream")


def test_untrusted_device_fails_in_certificate_phase(identity: Identity) -> None:
    rig = Rig(identity)
    other = build_identity(21, "someone-else", BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384, ca_name="other-ca")
    rig.req = SpdmRequester(RequesterConfig(), VerificationPolicy.trusting(other), rig.env)
    result = rig.run(secure_device(rig.req, rig.env, "dev0"))
    assert isinstance(result, TsmFailure) and result.phase is Phase.CERTIFICATE
    assert result.reason == "untrusted-root"
    assert not rig.rp.log  # nothing was allocated or programmed for an unauthenticated device


def test_refresh_switches_both_ends_to_the_other_key_set(identity: Identity) -> None:
    rig = Rig(identity)
    dev = secured(rig)
    old = {k.key for k in dev.keys.keys}
    result = rig.run(refresh_keys(rig.req, rig.env, dev))
    assert isinstance(result, Ok), result
    assert dev.keys.key_set is KeySet.K1 and not old & {k.key for k in dev.keys.keys}
    armed_tx = {s for s in rig.rp.slots.armed if s[3] is Direction.TX}
    assert {s[2] for s in armed_tx} == {KeySet.K1}


def test_teardown_stops_everything_and_returns_the_stream(identity: Identity) -> None:
    rig = Rig(identity)
    dev = secured(rig)
    assert isinstance(rig.run(accept_and_start(rig.req, dev, TDI, lambda r: None)), Ok)
    result = rig.run(teardown(rig.req, rig.env, dev))
    assert isinstance(result, Ok), result
    assert rig.dsm.tdi_state(TDI) is TdiState.CONFIG_UNLOCKED
    assert not rig.rp.slots.armed and rig.rp.free == [STREAM] and dev.session.ended


def test_same_seed_same_bytes(identity: Identity) -> None:
    a, b = Rig(identity, seed=9), Rig(identity, seed=9)
    secured(a)
    secured(b)
    assert a.wire.hexdigest() == b.wire.hexdigest()
    c = Rig(identity, seed=10)
    secured(c)
    assert c.wire.hexdigest() != a.wire.hexdigest()
