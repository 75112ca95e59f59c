"""The fat TSM on a real platform: DOE proxied through the host as SPDM_REQUEST/CONTINUE frames, one
firmware core serializing commands, key slots written by "firmware", TDI evidence for the guest, and
what happens after a DPC with and without a host-initiated reconnect."""

from __future__ import annotations

import hashlib

from sim.crypto.secrets import SecretClass
from sim.engine.exposure import Exposure
from sim.engine.runner import SimGen
from sim.engine.trace import Channel
from sim.firmware.commands import (
    DevConnectRsp,
    DoeResult,
    FwCommandId,
    FwFrame,
    FwRequestKind,
    FwStatus,
    GuestChannelMessage,
    GuestRequest,
    GuestRequestType,
    ProgramKey,
    SpdmContinue,
    SpdmRequest,
    TdiInfo,
    TdiStatus,
    TdiStatusRsp,
    continuation,
    decode_frame,
    request,
)
from sim.firmware.fat_tsm import FatDeviceState, FatTsm
from sim.protocols.spdm.policy import VerificationPolicy
from sim.vmm.guest import Guest, GuestPolicy
from sim.wire.doe import DoeObject
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.tdisp import InterfaceId, TdiReport, TdiState
from tests.firmware.fw_bench import Bench, build


def fw(b: Bench) -> FatTsm:
    assert isinstance(b.firmware, FatTsm)
    return b.firmware


def connect_bind_accept(b: Bench, device: str = "dev0") -> SimGen[bool]:
    c = yield from fw(b).connect(device)
    assert c.status is FwStatus.SUCCESS, c
    bound = yield from b.vmm.bind_tdi(device)
    assert bound.status is FwStatus.SUCCESS, bound
    return (yield from b.guest.accept_fat(device))


def test_connect_proxies_every_doe_object_through_the_host() -> None:
    b = build("fat")
    answer: FwFrame = b.run(fw(b).connect("dev0"))
    assert answer.status is FwStatus.SUCCESS and isinstance(answer.body, DevConnectRsp)
    rp = b.platform.root_ports["rp0"]
    block = answer.body.root_port_block
    assert rp.stream_state(block).name == "SECURE"
    assert set(rp.key_port.writers(block).values()) == {"firmware"} and len(rp.key_port.writers(block)) == 6
    assert fw(b).device("dev0").state is FatDeviceState.CONNECTED

    frames = [(e, decode_frame(e.data)) for e in b.sink.on(Channel.FIRMWARE)]
    spdm_requests = [f for e, f in frames if e.source == "firmware" and f.status is FwStatus.SPDM_REQUEST]
    continues = [f for e, f in frames if e.destination == "firmware" and f.kind is FwRequestKind.CONTINUE]
    assert len(spdm_requests) == len(continues) == fw(b).doe_hops > 20
    # what the firmware asked for is exactly what the host's DOE driver put in the mailbox, in order
    # (the DOE discovery objects of the host's boot are not the firmware's)
    to_device = [o for o in (DoeObject.decode(e.data) for e in b.sink.on(Channel.DOE)
                             if e.source == "host" and e.destination == "rp0.dev0") if o.data_object_type]
    from_device = [o for o in (DoeObject.decode(e.data) for e in b.sink.on(Channel.DOE)
                               if e.source == "rp0.dev0" and e.destination == "host") if o.data_object_type]
    assert len(to_device) == len(spdm_requests) == len(from_device)
    for f, obj in zip(spdm_requests, to_device, strict=True):
        assert isinstance(f.body, SpdmRequest)
        assert obj.data_object_type == f.body.object_type
        assert obj.payload[:len(f.body.payload)] == f.body.payload
        assert 0 <= len(obj.payload) - len(f.body.payload) <= 3
    for f, obj in zip(continues, from_device, strict=True):
        assert isinstance(f.body, SpdmContinue) and f.body.result is DoeResult.RESPONSE
        assert obj.payload[:len(f.body.payload)] == f.body.payload            # at most the DOE padding differs
        assert 0 <= len(obj.payload) - len(f.body.payload) <= 3
    # the host carried secured records only: IDE keys and session keys never in its clear view
    exp = b.world.exposure.matrix()
    assert exp.get(SecretClass.IDE_KEY, "host") is Exposure.SAW_CIPHERTEXT_ONLY
    assert exp.get(SecretClass.SPDM_SESSION_KEY, "host") is Exposure.NEVER
    assert exp.get(SecretClass.IDE_KEY, "firmware") is Exposure.GENERATED
    assert exp.get(SecretClass.IDE_KEY, "rp0") is Exposure.SAW_PLAINTEXT
    assert exp.get(SecretClass.IDE_KEY, "vmm") is Exposure.NEVER
    # every issue and every re-issue cost a dispatch: the connect took at least that long
    record = next(r for r in fw(b).core.records if r.command == "DEV_CONNECT")
    assert record.service_ns >= len(continues) * b.world.cost("firmware", "fw-command-dispatch")


def test_one_core_serializes_two_concurrent_connects() -> None:
    b = build("fat", devices=2)
    done: dict[str, int] = {}

    def one(device: str) -> SimGen[None]:
        yield b.host.booted
        answer = yield from fw(b).connect(device)
        assert answer.status is FwStatus.SUCCESS
        done[device] = b.world.now

    b.world.process(one("dev0"))
    b.world.process(one("dev1"))
    b.world.run()
    core = fw(b).core
    assert core.max_depth == 2
    assert any(depth == 2 for _, depth in core.depth_samples)
    first, second = [r for r in core.records if r.command == "DEV_CONNECT"]
    assert first.wait_ns < second.wait_ns
    assert second.started_ns >= first.finished_ns          # never two commands on the core at once
    assert second.wait_ns >= first.service_ns - 100_000    # it waited (about) the whole first connect
    assert abs(done["dev1"] - done["dev0"]) >= first.service_ns - 100_000
    starts = sorted((r.started_ns, r.finished_ns) for r in core.records)
    for (_, end), (start, _) in zip(starts, starts[1:], strict=False):
        assert start >= end


def test_guest_gets_report_and_digests_then_runs() -> None:
    b = build("fat")
    captured: list[TdiInfo] = []
    original = b.guest.evidence_problems

    def spy(info: TdiInfo, device: str | None = None, function: int = 0) -> list[str]:
        captured.append(info)
        return original(info, device, function)

    b.guest.evidence_problems = spy  # type: ignore[method-assign]
    assert b.run(connect_bind_accept(b)) is True
    [info] = captured
    assert info.certificates_digest == hashlib.sha384(info.certificates).digest()
    assert info.measurements_digest == hashlib.sha384(info.measurements).digest()
    assert info.report_digest == hashlib.sha384(info.report).digest()
    assert TdiReport.decode(info.report).mmio_ranges
    assert info.state is TdiState.CONFIG_LOCKED
    dsm = b.platform.dsm("dev0")
    iface = InterfaceId(b.platform.endpoint("dev0").requester_id(0))
    assert dsm.tdi_state(iface) is TdiState.RUN  # type: ignore[attr-defined]
    assert b.guest.tdi("dev0").state is TdiState.RUN
    # the guest never held a device secret in the fat model
    exp = b.world.exposure.matrix()
    for cls in (SecretClass.IDE_KEY, SecretClass.SPDM_SESSION_KEY, SecretClass.TDISP_NONCE):
        assert exp.get(cls, "guest0") is Exposure.NEVER


def test_guest_with_other_roots_refuses_and_tdi_stays_locked() -> None:
    b = build("fat", guest_policy=GuestPolicy(VerificationPolicy()))  # trusts no root

    def flow() -> SimGen[FwFrame]:
        accepted = yield from connect_bind_accept(b)
        assert accepted is False
        handle = fw(b).handle_of("dev0")
        return (yield from fw(b).host_call(TdiStatus(handle, 0)))

    status = b.run(flow())
    assert "certificate chain" in b.guest.tdi("dev0").failure
    assert isinstance(status.body, TdiStatusRsp) and status.body.state is TdiState.CONFIG_LOCKED


def test_guest_request_for_someone_elses_tdi_is_refused() -> None:
    b = build("fat")
    intruder = Guest(b.world, "guest1", GuestPolicy(), b.vmm, b.firmware, "fat")

    def flow() -> SimGen[FwFrame]:
        yield from connect_bind_accept(b)
        assert intruder.channel is not None
        inner = request(GuestRequest(intruder.guest_id or 0, fw(b).handle_of("dev0") or 0, 0,
                                     GuestRequestType.TDI_INFO))
        sealed = yield from fw(b).issue(request(intruder.channel.seal(inner.encode())).encode())
        outer = decode_frame(sealed)
        assert outer.status is FwStatus.SUCCESS and isinstance(outer.body, GuestChannelMessage)
        return decode_frame(intruder.channel.open(outer.body))

    answer = b.run(flow())
    assert answer.command is FwCommandId.GUEST_REQUEST and answer.status is FwStatus.NOT_PERMITTED
    assert b"not bound to guest" in answer.body.encode()


def test_protocol_errors_are_answered_not_raised() -> None:
    b = build("fat")

    def flow() -> SimGen[list[FwStatus | None]]:
        out = []
        stray = continuation(FwCommandId.DEV_CONNECT, SpdmContinue(DoeResult.RESPONSE, b"\x12\x04"))
        out.append(decode_frame((yield from fw(b).command("host", stray.encode()))).status)
        key = ProgramKey(0, 0, KeySet.K0, Direction.TX, SubStream.PR, bytes(32), bytes(8))
        out.append((yield from fw(b).host_call(key)).status)
        out.append(decode_frame((yield from fw(b).command("host", b"\x03\x00\x00"))).status)
        out.append((yield from fw(b).host_call(TdiStatus(9, 0))).status)
        return out

    assert b.run(flow()) == [FwStatus.INVALID_STATE, FwStatus.UNSUPPORTED, FwStatus.INVALID_COMMAND,
                             FwStatus.INVALID_DEVICE]


def dpc_after_accept(reconnect: str) -> Bench:
    b = build("fat", fat_reconnect=reconnect)

    def flow() -> SimGen[None]:
        assert (yield from connect_bind_accept(b))
        b.world.faults.inject("rp0", "dpc-trigger")
        yield b.world.timeout(1_500_000_000)

    b.run(flow())
    return b


def test_no_reconnect_after_dpc_by_default() -> None:
    b = dpc_after_accept("none")
    [rec] = fw(b).reconnects
    assert rec.reconnected_ns is None and rec.window_ns(b.world.now) >= 1_000_000_000
    rp = b.platform.root_ports["rp0"]
    assert rp.stream_state(0).name == "INSECURE" and rp.key_port.writers(0) == {}
    # the guest was told by the VMM and recorded when its TDI left RUN
    rec_g = b.guest.tdi("dev0")
    assert rec_g.left_run_ns == rec.reset_ns and "error-detected" in rec_g.left_run_how
    # nobody reconnected: the only DEV_CONNECT is the first one
    assert [r.command for r in fw(b).core.records].count("DEV_CONNECT") == 1


def test_host_initiated_reconnect_after_dpc() -> None:
    b = dpc_after_accept("host-initiated")
    [rec] = fw(b).reconnects
    assert rec.ok is True and rec.reconnected_ns is not None
    assert rec.reconnected_ns > rec.reset_ns
    commands = [r.command for r in fw(b).core.records]
    assert commands.count("DEV_CONNECT") == 2 and "DEV_DISCONNECT" in commands
    assert fw(b).device("dev0").state is FatDeviceState.CONNECTED
    assert b.platform.root_ports["rp0"].stream_state(fw(b).device("dev0").block or 0).name == "SECURE"
