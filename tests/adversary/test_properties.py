"""The property checks: honest runs hold, and each check catches what it is for (from ground truth)."""

from __future__ import annotations

import pytest

from sim.adversary.properties import AlarmKind, alarms, evaluate
from sim.adversary.properties import SecurityProperty as P
from sim.adversary.properties import Verdict as V
from sim.adversary.strategies import install_premise
from sim.adversary.sweep import run_one
from sim.crypto.aead import ide_decrypt, ide_iv
from sim.engine.trace import Channel
from sim.scenario.schema import AdversaryComponent as C
from sim.scenario.schema import AdversaryStrategy as S
from sim.scenario.schema import TrustModel as M
from sim.wire.tlp import IdeTlp


@pytest.mark.parametrize("model", list(M))
def test_an_honest_run_holds_every_property(passthrough, build, model: M) -> None:
    run, witness, _ = build(passthrough, model)
    run.run()
    results = evaluate(run, witness)
    assert {p: r.verdict for p, r in results.items()} == {**dict.fromkeys(P, V.HELD), P.FRESHNESS: V.NOT_EXERCISED}
    assert results[P.FRESHNESS].detail == "nothing at stake: no reset in this run"
    assert witness.accepted and witness.accepted[0].session_genuine is True
    assert all(r.sent and r.protected for r in witness.dma)


@pytest.mark.parametrize("model", [M.THIN_HOST, M.THIN_GUEST, M.THIN_VMM])
def test_recovery_after_dpc_is_fresh_when_nobody_cheats(passthrough_dpc, build, model: M) -> None:
    run, witness, _ = build(passthrough_dpc, model)
    run.run()
    results = evaluate(run, witness)
    assert {p: r.verdict for p, r in results.items()} == dict.fromkeys(P, V.HELD)
    assert "1 reset(s)" in results[P.FRESHNESS].detail


def test_fat_never_recovers_without_a_reconnect(passthrough_dpc, build) -> None:
    run, witness, _ = build(passthrough_dpc, M.FAT)
    run.run()
    live = evaluate(run, witness)[P.LIVENESS]
    assert live.verdict is V.BROKEN_DETECTED and "never recovered from dpc" in live.detail
    assert live.detected_by == "tvm0"      # its TDI state check found the TDI gone


def test_a_confidentiality_break_is_shown_by_decrypting_a_captured_tlp(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.THIN_GUEST, C.THIN_KEYSLOT, S.RECORD)
    run.run()
    conf = evaluate(run, witness, adv)[P.CONFIDENTIALITY]
    assert conf.verdict is V.BROKEN_UNDETECTED
    # redo the adversary's work from the trace alone: the key it handled decrypts the first DMA TLP
    slot = next(e for e in run.memory.events if e.channel is Channel.KEY_SLOT and e.source == "firmware"
                and e.summary.startswith("program blk0 K0 RX PR") and len(e.data) == 40)
    key, ifv = slot.data[:32], int.from_bytes(slot.data[32:], "big")
    tlp = IdeTlp.decode(next(e.data for e in run.memory.events if e.channel is Channel.TLP
                             and e.source == "rp0.gpu0" and e.time_ns >= 1_000_000_000))
    plain = ide_decrypt(key, ide_iv(ifv), tlp.ciphertext, tlp.mac or b"", tlp.header_bytes())
    assert plain == witness.dma[0].data[:len(plain)]
    assert plain[:8].hex() in conf.detail
    assert any("program blk0 K0 RX PR" in line for line in conf.excerpt)


def test_the_honest_holders_of_a_key_do_not_break_confidentiality(passthrough, build) -> None:
    """thin-vmm: the VMM sees the IDE keys, but only a compromised VMM is an adversary."""
    run, witness, _ = build(passthrough, M.THIN_VMM)
    run.run()
    assert evaluate(run, witness)[P.CONFIDENTIALITY].verdict is V.HELD


@pytest.mark.parametrize("component", [C.HOST_KERNEL, C.VMM])
def test_a_withheld_reset_leaves_the_guest_using_a_dead_tdi(passthrough_dpc, component: C) -> None:
    """The guest never hears of the DPC and keeps using its TDI; the device, reset, refuses its T=1 traffic."""
    out = run_one(passthrough_dpc, M.THIN_GUEST, (component, S.SKIP_REAUTH))
    fresh = out.verdicts["freshness"]
    assert out.verdict(P.FRESHNESS) is V.BROKEN_DETECTED and "without accepting it again" in fresh["detail"]
    assert fresh["detected_by"] == "rp0.gpu0" and "T=1" in fresh["at"]
    assert out.verdict(P.CONFIDENTIALITY) is V.HELD        # nothing of the guest's left the device in the clear
    assert any("withholds" in line or "tells nobody" in line for line in fresh["excerpt"])


def test_host_skipping_reauth_of_its_own_device(passthrough_dpc) -> None:
    out = run_one(passthrough_dpc, M.THIN_HOST, (C.HOST_KERNEL, S.SKIP_REAUTH))
    assert out.verdict(P.FRESHNESS) is V.BROKEN_UNDETECTED
    assert "without re-authenticating" in out.verdicts["freshness"]["detail"]


def test_the_premise_alone_is_caught_except_where_nobody_checks_the_guests_policy(passthrough) -> None:
    guest_checks = run_one(passthrough, M.THIN_GUEST, premise=True)
    assert guest_checks.verdict(P.AUTHENTICITY) is V.HELD
    assert guest_checks.verdict(P.LIVENESS) is V.BROKEN_DETECTED
    assert "MEASUREMENTS" in guest_checks.verdicts["liveness"]["at"] or "measurement" in \
        guest_checks.verdicts["liveness"]["at"].lower()
    host_keeps = run_one(passthrough, M.THIN_HOST, premise=True)
    assert host_keeps.verdict(P.AUTHENTICITY) is V.BROKEN_UNDETECTED


def test_premise_needs_a_pinned_firmware(passthrough, build) -> None:
    unpinned = passthrough.model_copy(update={"guests": []})
    run, _, _ = build(unpinned, M.THIN_HOST)
    assert install_premise(run, S.SUBSTITUTE_MEASUREMENTS) is not None


def test_alarms_come_from_honest_components_only(passthrough, build) -> None:
    run, _, adv = build(passthrough, M.THIN_GUEST, C.LINK_INTERPOSER, S.MODIFY)
    run.run()
    found = alarms(run, adv)
    assert found and found[0].kind is AlarmKind.IDE_INTEGRITY and found[0].by == "rp0"
    assert all(a.by not in adv.paths for a in found)
