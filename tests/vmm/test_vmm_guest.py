"""The VMM and the guest on a real platform: the guest runs the securing flow through the VMM relay
(thin-guest, thin-vmm), the VMM carries only ciphertext unless the model hands it the keys, the guest
uses its TDI over a Secure stream, and it notices when the TDI leaves RUN."""

from __future__ import annotations

import pytest

from sim.crypto.secrets import SecretClass
from sim.engine.exposure import Exposure
from sim.engine.runner import SimGen
from sim.engine.trace import Channel
from sim.firmware.commands import FwCommandId, decode_frame
from sim.vmm.guest import GuestModel
from sim.vmm.vmm import RelayRefused
from sim.wire.doe import DoeObject, DoeObjectType
from sim.wire.tdisp import InterfaceId, TdiState
from sim.wire.tlp import IDE_PREFIX_BYTE
from tests.firmware.fw_bench import Bench, build

PAYLOAD = bytes(range(0x40, 0x80))


def secure(b: Bench) -> bool:
    return bool(b.run(b.guest.secure("dev0")))


def ide_keys(b: Bench) -> list[bytes]:
    return [r.value for r in b.world.exposure.records if r.secret_class is SecretClass.IDE_KEY]


@pytest.mark.parametrize("model", ["thin-guest", "thin-vmm"])
def test_guest_secures_its_device_through_the_vmm(model: str) -> None:
    b = build(model)
    assert secure(b)
    rec = b.guest.tdi("dev0")
    assert rec.state is TdiState.RUN and rec.accepted_ns is not None
    rp = b.platform.root_ports["rp0"]
    writers = set(rp.key_port.writers(0).values())
    assert writers == {"firmware" if model == "thin-guest" else "vmm"}
    assert rp.stream_state(0).name == "SECURE"
    # every DOE object of the guest crossed guest -> vmm -> host with the same bytes
    doe = b.sink.on(Channel.DOE)
    g2v = [e.data for e in doe if e.source == "guest0" and e.destination == "vmm"]
    v2h = [e.data for e in doe if e.source == "vmm" and e.destination == "host"]
    assert g2v == v2h and len(g2v) == b.vmm.relayed_doe > 20
    secured = [e for e in doe if e.source == "guest0" and DoeObject.decode(e.data).data_object_type
               == DoeObjectType.SECURED_SPDM]
    assert secured and all(e.secured_plaintext for e in secured)
    exp = b.world.exposure.matrix()
    assert exp.get(SecretClass.IDE_KEY, "guest0") is Exposure.GENERATED
    assert exp.get(SecretClass.SPDM_SESSION_KEY, "guest0") is Exposure.GENERATED
    assert exp.get(SecretClass.IDE_KEY, "host") is Exposure.SAW_CIPHERTEXT_ONLY
    assert exp.get(SecretClass.SPDM_SESSION_KEY, "vmm") is Exposure.NEVER
    assert exp.get(SecretClass.SPDM_SESSION_KEY, "host") is Exposure.NEVER
    if model == "thin-guest":
        # the guest channel: the VMM relays sealed frames and never sees an IDE key in the clear
        assert exp.get(SecretClass.IDE_KEY, "vmm") is Exposure.SAW_CIPHERTEXT_ONLY
        assert exp.get(SecretClass.IDE_KEY, "firmware") is Exposure.SAW_PLAINTEXT
        assert exp.get(SecretClass.GUEST_CHANNEL_KEY, "vmm") is Exposure.NEVER
        assert exp.get(SecretClass.GUEST_CHANNEL_KEY, "guest0") is Exposure.SAW_PLAINTEXT
        relayed = [e for e in b.sink.on(Channel.FIRMWARE) if e.source == "vmm" and e.destination == "firmware"]
        assert relayed and all(decode_frame(e.data).command is FwCommandId.GUEST_CHANNEL for e in relayed)
        for key in ide_keys(b):
            assert not any(key in e.data for e in relayed)
    else:
        # no firmware service: the guest hands the keys to the VMM, which writes the slots
        assert exp.get(SecretClass.IDE_KEY, "vmm") is Exposure.SAW_PLAINTEXT
        assert exp.get(SecretClass.IDE_KEY, "firmware") is Exposure.NEVER
        hypercalls = [e for e in b.sink.on(Channel.KEY_SLOT) if e.source == "guest0" and e.destination == "vmm"]
        assert any(key in e.data for e in hypercalls for key in ide_keys(b))


@pytest.mark.parametrize("model", ["thin-guest", "thin-vmm", "fat"])
def test_mmio_and_dma_are_ciphertext_on_the_link(model: str) -> None:
    b = build(model)

    def flow() -> SimGen[tuple[bytes | None, bool]]:
        if model == "fat":
            c = yield from b.firmware.connect("dev0")
            assert c.status.name == "SUCCESS"
            yield from b.vmm.bind_tdi("dev0")
        assert (yield from b.guest.secure("dev0"))
        b.guest.mmio_write("dev0", 0x100, PAYLOAD)
        back = yield from b.guest.mmio_read("dev0", 0x100, len(PAYLOAD))
        dma = yield from b.guest.device_dma("dev0", 0x8000, PAYLOAD[::-1])
        return back, dma

    back, dma = b.run(flow())
    assert back == PAYLOAD and dma is True
    tlps = [e.data for e in b.sink.on(Channel.TLP)]
    assert len(tlps) >= 3
    assert all(t[0] == IDE_PREFIX_BYTE for t in tlps)
    assert not any(PAYLOAD[:16] in t or PAYLOAD[::-1][:16] in t for t in tlps)


def test_relay_refuses_a_device_not_assigned_to_the_guest() -> None:
    b = build("thin-guest", assign=False)
    with pytest.raises(RelayRefused):
        b.run(b.vmm.relay_doe("guest0", "dev0", DoeObjectType.SPDM, b"\x12\x84\x00\x00"))
    assert not secure_quietly(b)


def secure_quietly(b: Bench) -> bool:
    try:
        return secure(b)
    except RelayRefused:
        return False


def test_thin_guest_dpc_notice_and_recovery() -> None:
    b = build("thin-guest")

    def flow() -> SimGen[None]:
        assert (yield from b.guest.secure("dev0"))
        yield b.world.timeout(5_000_000)
        b.world.faults.inject("rp0", "dpc-trigger")
        yield b.world.timeout(1_500_000_000)

    b.run(flow())
    rec = b.guest.tdi("dev0")
    [outage] = rec.outages
    assert "error-detected" in outage.how
    assert outage.back_ns is not None and outage.back_ns > outage.left_ns
    assert rec.state is TdiState.RUN
    assert [n.reason for n in b.vmm.notices] == ["error-detected", "recovered"]
    rp = b.platform.root_ports["rp0"]
    # the old stream was given back before the new one was taken: one block in use, Secure again
    owners = [rp.block_owner(i) for i in range(rp.stream_block_count)]
    assert owners.count("guest0") == 1
    assert rp.stream_state(owners.index("guest0")).name == "SECURE"


def test_periodic_state_check_notices_tdi_leaving_run() -> None:
    b = build("thin-guest")
    link = b.platform.link("dev0")

    def flow() -> SimGen[int | None]:
        assert (yield from b.guest.secure("dev0"))
        watcher = b.world.process(b.guest.watch("dev0", period_ns=10_000_000))
        yield b.world.timeout(25_000_000)
        link.cfg_write(0, 0x04, 0, by="host")  # the host clears Memory Space / Bus Master: TDI -> ERROR
        cleared = b.world.now
        left = yield watcher
        return left - cleared if left is not None else None

    delay = b.run(flow())
    rec = b.guest.tdi("dev0")
    assert rec.left_run_how == "state check: ERROR"
    assert delay is not None and 0 < delay <= 10_000_000 + 50_000_000


def test_guest_models_and_launch() -> None:
    b = build("thin-guest")
    assert b.guest.model is GuestModel.THIN_GUEST and b.guest.channel is not None
    with pytest.raises(ValueError):
        b.vmm.attach_guest(b.guest)


def test_same_seed_same_trace() -> None:
    digests = []
    for _ in range(2):
        b = build("thin-guest", seed=11)
        assert secure(b)
        digests.append(b.world.trace.digest())
    assert digests[0] == digests[1]
    assert digests[0] != _digest_for(13)   # and the digest does depend on the seed


def _digest_for(seed: int) -> str:
    b = build("thin-guest", seed=seed)
    assert secure(b)
    return b.world.trace.digest()


def test_guest_releases_its_device() -> None:
    b = build("thin-guest")

    def flow() -> SimGen[bool]:
        assert (yield from b.guest.secure("dev0"))
        return (yield from b.guest.release("dev0"))

    assert b.run(flow()) is True
    rp = b.platform.root_ports["rp0"]
    assert [rp.block_owner(i) for i in range(rp.stream_block_count)] == [None] * rp.stream_block_count
    assert rp.key_port.writers(0) == {} and rp.stream_state(0).name == "INSECURE"
    assert b.guest.tdi("dev0").state is TdiState.CONFIG_UNLOCKED
    iface = InterfaceId(b.platform.endpoint("dev0").requester_id(0))
    assert b.platform.dsm("dev0").tdi_state(iface) is TdiState.CONFIG_UNLOCKED  # type: ignore[attr-defined]


def test_guest_policy_refusals() -> None:
    from sim.protocols.spdm.policy import VerificationPolicy
    from sim.vmm.guest import GuestPolicy, ReportExpectation

    # a measurement the device does not have: attestation fails, no stream stays allocated
    probe = build("thin-guest")
    roots = VerificationPolicy.trusting(probe.platform.identity("dev0"))
    bad_meas = build("thin-guest", guest_policy=GuestPolicy(roots.replace(expected_measurements={1: bytes(48)})))
    assert secure(bad_meas) is False
    rec = bad_meas.guest.tdi("dev0")
    assert rec.state is None and "MEASUREMENT" in rec.failure.upper()
    rp = bad_meas.platform.root_ports["rp0"]
    assert all(rp.block_owner(i) is None for i in range(rp.stream_block_count))
    # a report the policy does not accept: LOCK and REPORT happen, START never does
    bad_report = build("thin-guest", guest_policy=GuestPolicy(roots, ReportExpectation(mmio_ranges=99)))
    assert secure(bad_report) is False
    rec = bad_report.guest.tdi("dev0")
    assert "report-rejected" in rec.failure and "99" in rec.failure
    iface = InterfaceId(bad_report.platform.endpoint("dev0").requester_id(0))
    assert bad_report.platform.dsm("dev0").tdi_state(iface) is TdiState.CONFIG_LOCKED  # type: ignore[attr-defined]
