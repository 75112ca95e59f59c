"""A VMM that tampers with the fat guest's sealed GUEST_REQUESTs changes real bytes and is caught."""

from __future__ import annotations

import pytest

from sim.adversary.properties import SecurityProperty as P
from sim.adversary.properties import Verdict, evaluate
from sim.engine.trace import Channel
from sim.firmware.commands import FwCommandId, GuestChannelMessage, decode_frame
from sim.scenario.schema import AdversaryComponent as C
from sim.scenario.schema import AdversaryStrategy as S
from sim.scenario.schema import TrustModel as M
from sim.wire.tdisp import TdiState


@pytest.mark.parametrize("strategy", [S.SUBSTITUTE_MEASUREMENTS, S.SUBSTITUTE_IDENTITY, S.MODIFY])
def test_vmm_rewriting_sealed_evidence_is_detected(passthrough, build, strategy: S) -> None:
    run, witness, adv = build(passthrough, M.FAT, C.VMM, strategy)
    run.run()
    assert adv is not None and adv.actions, "the adversary never acted"
    action = adv.actions[0]
    sealed = decode_frame(action.data)
    assert sealed.command is FwCommandId.GUEST_CHANNEL and isinstance(sealed.body, GuestChannelMessage)
    # the altered ciphertext is what the guest received, and the firmware had sent something else
    to_guest = [e for e in run.memory.events if e.channel is Channel.FIRMWARE and e.destination == "tvm0"]
    assert any(e.data == action.data for e in to_guest)
    assert not any(e.data == action.data for e in run.memory.events
                   if e.channel is Channel.FIRMWARE and e.source == "firmware")
    guest = run.actors.guests["tvm0"]
    recs = list(guest.tdis.values())
    assert recs and all(r.state is not TdiState.RUN for r in recs)
    assert any(r.failure_reason == "firmware-decrypt-failed" for r in recs)
    verdict = evaluate(run, witness, adv)[P.AUTHENTICITY].verdict
    assert verdict is not Verdict.BROKEN_UNDETECTED


def test_vmm_replaying_a_sealed_request_is_refused(passthrough, build) -> None:
    run, witness, adv = build(passthrough, M.FAT, C.VMM, S.REPLAY)
    run.run()
    assert adv is not None and adv.actions
    refused = [e for e in run.memory.events if e.channel is Channel.FIRMWARE and e.source == "firmware"
               and "BAD_SEQUENCE" in e.summary]
    assert refused
    assert evaluate(run, witness, adv)[P.AUTHENTICITY].verdict is not Verdict.BROKEN_UNDETECTED
