"""Shared scenarios and a helper that builds a run with the witness (and an adversary) installed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sim.adversary.properties import Witness
from sim.adversary.strategies import Adversary, install
from sim.scenario.loader import load_scenario
from sim.scenario.run import ModelRun
from sim.scenario.schema import AdversaryComponent, AdversaryStrategy, Scenario, TrustModel

ROOT = Path(__file__).resolve().parents[2]
PASSTHROUGH = ROOT / "scenarios" / "passthrough-guest.yaml"
PASSTHROUGH_DPC = Path(__file__).with_name("passthrough_dpc.yaml")


@pytest.fixture(scope="session")
def passthrough() -> Scenario:
    return load_scenario(str(PASSTHROUGH))


@pytest.fixture(scope="session")
def passthrough_dpc() -> Scenario:
    return load_scenario(str(PASSTHROUGH_DPC))


Built = tuple[ModelRun, Witness, Adversary | None]


@pytest.fixture
def build() -> Callable[..., Built]:
    """``build(scenario, model, component=None, strategy=None)``: a run with the witness and, if named, an
    adversary installed from boot (not yet run)."""
    def make(scenario: Scenario, model: TrustModel, component: AdversaryComponent | None = None,
             strategy: AdversaryStrategy | None = None, **kw: Any) -> Built:
        run = ModelRun(scenario, model)
        witness = Witness.install(run)
        adv = None
        if component is not None and strategy is not None:
            got = install(run, component, strategy, **kw)
            assert isinstance(got, Adversary), got
            adv = got
        return run, witness, adv
    return make
