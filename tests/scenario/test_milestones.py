"""Every securing-flow phase is a milestone a scenario event can hang off, including those inside attestation
and session set-up (CERTIFICATE, CHALLENGE, MEASUREMENTS, FINISH), marked as their first request goes out."""

from __future__ import annotations

import pytest

from sim.engine.trace import Channel
from sim.protocols.tsm import Phase
from sim.scenario.loader import load_scenario_text
from sim.scenario.run import ModelRun
from sim.scenario.schema import TrustModel

SCENARIO = """\
name: milestones
seed: 9
models: [thin-host, fat]
platform:
  root_ports: [{id: rp0, dpc: true}]
  devices: [{id: nic0, port: rp0}]
timeline:
  - {event: boot, at: 0}
  - {event: dpc, port: rp0, during: {device: nic0, phase: %(phase)s}}
expect:
  - {expect: attestation, device: nic0, by: %(by)s, outcome: ok}
"""
BY = {TrustModel.THIN_HOST: "host-kernel", TrustModel.FAT: "fat-tsm"}


@pytest.mark.parametrize("model", [TrustModel.THIN_HOST, TrustModel.FAT])
def test_attestation_phases_are_marked_in_order(model: TrustModel) -> None:
    run = ModelRun(load_scenario_text(SCENARIO % {"phase": "K_SET_GO", "by": BY[model]}, "m.yaml"), model)
    run.run()
    phases = [e.summary.split(" phase ")[1] for e in run.memory.events
              if e.channel is Channel.LINK and " phase " in e.summary]
    first = [Phase.VCA, Phase.CERTIFICATE, Phase.CHALLENGE, Phase.MEASUREMENTS, Phase.KEY_EXCHANGE, Phase.FINISH,
             Phase.KEY_PROG, Phase.K_SET_GO]
    assert phases[:len(first)] == [str(p) for p in first]


@pytest.mark.parametrize("phase", ["CERTIFICATE", "CHALLENGE", "MEASUREMENTS", "FINISH"])
def test_an_event_during_an_attestation_phase_fires_there_and_the_host_recovers(phase: str) -> None:
    """A DPC while the host fetches the certificate, is challenged, measures or finishes the handshake: the
    event fires at that milestone, the attempt fails, and the host's recovery attests the device again."""
    run = ModelRun(load_scenario_text(SCENARIO % {"phase": phase, "by": "host-kernel"}, "m.yaml"),
                   TrustModel.THIN_HOST)
    result = run.run()
    assert not result["notes"], result["notes"]
    summaries = [e.summary for e in run.memory.events]
    mark = summaries.index(f"nic0 phase {phase}")
    assert summaries[mark + 1] == "scenario event dpc"
    assert all(e["held"] for e in result["expectations"]), result["expectations"]
