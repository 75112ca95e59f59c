"""Each installer really does what it says, on real bytes (and the table covers every pair once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.adversary.properties import SecurityProperty as P
from sim.adversary.properties import Verdict, evaluate
from sim.adversary.strategies import (
    IMPOSTOR_CA,
    INSTALLERS,
    NOT_APPLICABLE,
    NotApplicable,
    applicability,
    install,
    table,
)
from sim.crypto.identity import build_identity
from sim.engine.trace import Channel
from sim.firmware.commands import TdiInfo, decode_frame
from sim.rootport.ide_regs import KeySlotStatus
from sim.scenario.loader import load_scenario
from sim.scenario.policies import expected_firmware_digest
from sim.scenario.run import ModelRun
from sim.scenario.schema import AdversaryComponent as C
from sim.scenario.schema import AdversaryStrategy as S
from sim.scenario.schema import TrustModel as M
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeObjectType
from sim.wire.tdisp import InterfaceInfo, LockInterfaceFlags, TdiReport
from sim.wire.tlp import IdeTlp, Tlp, decode_tlp

from .conftest import PASSTHROUGH

ENDPOINT = "rp0.gpu0"


def _slot_snapshot(run: ModelRun, at_ns: int) -> dict[tuple[int, str], tuple[bytes, str]]:
    """The Root Port's slot keys and writers at ``at_ns`` (filled in when the simulation gets there)."""
    snap: dict[tuple[int, str], tuple[bytes, str]] = {}
    rp = run.platform.root_ports["rp0"]

    def take() -> None:
        for block in range(rp.stream_block_count):
            for slot, value in rp.stream_keys(block).slots.items():
                snap[(block, " ".join(s.name for s in slot))] = (value.key, value.principal)
    run.world.call_at(at_ns, take)
    return snap


def test_every_pair_is_implemented_or_not_applicable_with_a_reason() -> None:
    for c in C:
        for s in S:
            assert ((c, s) in INSTALLERS) != ((c, s) in NOT_APPLICABLE), (c, s)
    rows = {(r["component"], r["strategy"]): r for r in table()}
    assert len(rows) == len(C) * len(S)
    assert rows[("link-interposer", "lie-in-report")]["status"] == "not-applicable"
    assert rows[("link-interposer", "modify")]["status"] == "implemented"
    assert applicability(None, M.THIN_GUEST, C.FAT_TSM, S.RECORD) == "the thin-guest model has no fat-tsm"


def test_link_modify_flips_one_bit_on_the_wire_and_the_ide_mac_catches_it(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.THIN_GUEST, C.LINK_INTERPOSER, S.MODIFY)
    run.run()
    tlps = [e for e in run.memory.events if e.channel is Channel.TLP]
    original = next(e for e in tlps if e.source == ENDPOINT and isinstance(decode_tlp(e.data), IdeTlp))
    changed = next(e for e in tlps if e.source == "rp0.link.interposer")
    assert changed.summary.startswith("modified by interposer")
    flipped = [a ^ b for a, b in zip(original.data, changed.data, strict=True)]
    assert sum(bin(x).count("1") for x in flipped) == 1            # the real TLP with exactly one bit changed
    result = evaluate(run, witness, adv)[P.INTEGRITY]
    assert result.verdict is Verdict.BROKEN_DETECTED
    assert result.detected_by == "rp0" and "modified by interposer" in (result.at or "")
    assert any("integrity failure" in line for line in result.excerpt)


def test_host_replay_resends_an_earlier_object_byte_for_byte(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.THIN_GUEST, C.HOST_KERNEL, S.REPLAY)
    run.run()
    assert adv is not None
    replayed = next(a.data for a in adv.actions if a.summary.startswith("replays"))
    sent = [e.data for e in run.memory.events if e.channel is Channel.DOE and e.source == "host"
            and e.destination == ENDPOINT]
    carrying = [i for i, data in enumerate(sent) if data[8:8 + len(replayed)] == replayed]
    assert len(carrying) == 2 and sent[carrying[0]] == sent[carrying[1]]   # the same object, twice on the wire
    assert carrying[1] > carrying[0] + 1                                    # ... later, in place of another
    live = evaluate(run, witness, adv)[P.LIVENESS]
    assert live.verdict is Verdict.BROKEN_DETECTED and live.detected_by == "tvm0"


def test_host_in_thin_vmm_writes_its_own_keys_into_the_guests_slots(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.THIN_VMM, C.HOST_KERNEL, S.PROGRAM_KNOWN_KEYS)
    snap = _slot_snapshot(run, 500_000_000)       # after K_SET_GO, before the DMA at 1 s
    run.run()
    assert adv is not None and len(adv.known_keys) == 6
    assert len(snap) == 6
    assert all(key in adv.known_keys and writer == "host" for key, writer in snap.values())
    # the device kept the guest's keys: the first DMA TLP fails the Root Port's MAC check, nothing of the
    # guest's lands and the attacker's keys open nothing the device sent
    results = evaluate(run, witness, adv)
    assert results[P.LIVENESS].verdict is Verdict.BROKEN_DETECTED and results[P.LIVENESS].detected_by == "rp0"
    assert "never arrived" in results[P.LIVENESS].detail
    assert results[P.INTEGRITY].verdict is Verdict.HELD
    assert results[P.CONFIDENTIALITY].verdict is Verdict.HELD


def test_vmm_in_thin_guest_is_refused_by_the_root_port(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.THIN_GUEST, C.VMM, S.PROGRAM_KNOWN_KEYS)
    snap = _slot_snapshot(run, 500_000_000)
    run.run()
    refused = [e for e in run.memory.events if e.channel is Channel.KEY_SLOT and e.source == "vmm"]
    assert len(refused) == 6 and all(e.summary.endswith(KeySlotStatus.NOT_PERMITTED.name) for e in refused)
    assert all(e.data == b"" for e in refused)     # a refused key never reaches the slot
    assert adv is not None and not any(key in adv.known_keys for key, _ in snap.values())
    results = evaluate(run, witness, adv)
    # freshness has nothing at stake (no reset): said so, never "held"
    assert {p: r.verdict for p, r in results.items()} == {
        **{p: Verdict.HELD for p in results}, P.FRESHNESS: Verdict.NOT_EXERCISED}, results
    assert results[P.CONFIDENTIALITY].actions == 6


def test_vmm_in_thin_vmm_knows_the_keys_in_the_slots(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.THIN_VMM, C.VMM, S.PROGRAM_KNOWN_KEYS)
    snap = _slot_snapshot(run, 500_000_000)
    run.run()
    assert adv is not None and snap
    assert all(key in adv.known_keys and writer == "vmm" for key, writer in snap.values())
    conf = evaluate(run, witness, adv)[P.CONFIDENTIALITY]
    assert conf.verdict is Verdict.BROKEN_UNDETECTED
    dma = next(r for r in witness.dma if r.device == "gpu0")
    assert dma.data[:8].hex() in conf.detail            # it decrypted the captured TLP to the guest's bytes
    assert any("PROGRAM_KEY" in line for line in conf.excerpt)


def test_impostor_answers_with_its_own_certificate_and_the_guest_refuses(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.THIN_GUEST, C.VMM, S.SUBSTITUTE_IDENTITY)
    run.run()
    handle = run.platform.device("gpu0")
    impostor = build_identity(run.world.seed, "gpu0-impostor", handle.profile.asym_algos[0],
                              handle.profile.hash_algos[0], ca_name=IMPOSTOR_CA)
    to_guest = [e.data for e in run.memory.events if e.channel is Channel.DOE and e.source == "vmm"
                and e.destination == "tvm0"]
    assert any(impostor.certificates_der[-1][:200] in data for data in to_guest)
    assert not any(handle.identity.certificates_der[-1][:200] in data for data in to_guest)
    spdm = (DoeObjectType.SPDM, DoeObjectType.SECURED_SPDM)
    assert not any(e.channel is Channel.DOE and e.destination == ENDPOINT and e.data[2] in spdm
                   for e in run.memory.events)   # no SPDM object of the guest ever reached the device
    results = evaluate(run, witness, adv)
    assert results[P.AUTHENTICITY].verdict is Verdict.HELD
    assert results[P.LIVENESS].verdict is Verdict.BROKEN_DETECTED
    assert results[P.LIVENESS].detected_by == "tvm0" and "CERTIFICATE" in (results[P.LIVENESS].at or "")


def test_dsm_signs_the_expected_measurements_while_running_another_image(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.THIN_GUEST, C.DEVICE_DSM, S.SUBSTITUTE_MEASUREMENTS)
    run.run()
    assert adv is not None and adv.firmware_truth == {"gpu0": "0.9.0"}
    expected = expected_firmware_digest(passthrough, "gpu0", "1.0.0")
    from_device = [e.data for e in run.memory.events if e.channel is Channel.DOE and e.source == ENDPOINT]
    assert any(expected in data for data in from_device)           # the signed response carries the lie
    auth = evaluate(run, witness, adv)[P.AUTHENTICITY]
    assert auth.verdict is Verdict.BROKEN_UNDETECTED and "0.9.0" in auth.detail


def test_fat_tsm_lies_in_the_report_it_hands_the_guest(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.FAT, C.FAT_TSM, S.LIE_IN_REPORT)
    run.run()
    infos = []
    for e in run.memory.events:
        if e.channel is Channel.FIRMWARE and e.destination == "tvm0" and e.secured_plaintext:
            try:   # the answer is sealed on the guest channel: the lie is inside the seal
                body = decode_frame(e.secured_plaintext).body
            except DecodeError:
                continue
            if isinstance(body, TdiInfo):
                infos.append(body)
    assert infos and InterfaceInfo(TdiReport.decode(infos[0].report).interface_info) & InterfaceInfo.NO_FW_UPDATE
    lock = run.platform.device("gpu0").dsm.tdisp.tdis[next(iter(run.platform.device("gpu0").dsm.tdisp.tdis))].lock
    assert lock is not None and not lock.flags & LockInterfaceFlags.NO_FW_UPDATE
    auth = evaluate(run, witness, adv)[P.AUTHENTICITY]
    assert auth.verdict is Verdict.BROKEN_UNDETECTED and "NO_FW_UPDATE" in auth.detail


def test_second_device_forges_a_dma_write_with_the_tdis_requester_id(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.THIN_GUEST, C.SECOND_DEVICE, S.MODIFY)
    run.run()
    assert adv is not None
    forged = decode_tlp(next(a.data for a in adv.actions if a.summary.startswith("writes")))
    assert isinstance(forged, Tlp) and forged.header.requester_id == run.platform.device("gpu0").endpoint.requester_id(0)
    on_wire = [e for e in run.memory.events if e.channel is Channel.TLP and e.data == forged.encode()]
    assert on_wire                                                  # the forged TLP crossed the link as is
    # ... and the Root Port refused it: guest (TEE) memory takes only T=1 requests from a Secure stream
    assert any(e.summary.startswith("refused") and "TEE memory" in e.summary for e in run.memory.events)
    assert evaluate(run, witness, adv)[P.INTEGRITY].verdict is Verdict.HELD


def test_second_device_forged_write_lands_in_host_memory_in_thin_host(passthrough, build) -> None:
    """The host keeps the device in thin-host: its DMA goes to host memory, where a forged write lands."""
    run, witness, adv = build(passthrough, M.THIN_HOST, C.SECOND_DEVICE, S.MODIFY)
    run.run()
    assert adv is not None and evaluate(run, witness, adv)[P.INTEGRITY].verdict is Verdict.BROKEN_UNDETECTED


def test_not_applicable_pairs_install_nothing(passthrough) -> None:
    run = ModelRun(passthrough, M.THIN_HOST)
    for comp, strat in ((C.LINK_INTERPOSER, S.LIE_IN_REPORT), (C.FAT_TSM, S.RECORD), (C.HOST_KERNEL, S.MODIFY),
                        (C.VMM, S.SKIP_REAUTH)):
        got = install(run, comp, strat)
        assert isinstance(got, NotApplicable) and got.reason
    assert not any(e.channel is Channel.FAULT for e in run.memory.events)


@pytest.mark.parametrize("model", [M.THIN_GUEST, M.THIN_HOST])
def test_timeline_adversary_event_installs_at_its_time(tmp_path: Path, model: M) -> None:
    text = PASSTHROUGH.read_text(encoding="utf-8").replace(
        "  - {event: boot, at: 0}\n",
        "  - {event: boot, at: 0}\n"
        "  - {event: adversary, at: 100ms, component: vmm, strategy: program-known-keys}\n"
        "  - {event: adversary, at: 100ms, component: fat-tsm, strategy: record}\n")
    path = tmp_path / "adversarial.yaml"
    path.write_text(text, encoding="utf-8")
    run = ModelRun(load_scenario(str(path)), model)
    run.run()
    assert [(a.component, a.strategy, a.installed_ns) for a in run.adversaries] == \
        [(C.VMM, S.PROGRAM_KNOWN_KEYS, 100_000_000)]
    assert any("fat-tsm/record does not apply" in n for n in run.notes)
    if model is M.THIN_GUEST:   # the VMM tried to overwrite the guest's slots and the Root Port refused
        refused = [e for e in run.memory.events if e.channel is Channel.KEY_SLOT and e.source == "vmm"]
        assert refused and all("NOT_PERMITTED" in e.summary for e in refused)
