"""A scenario `mmio` event writes where it says: the named TDI's function and the BAR of its first range."""

from __future__ import annotations

import pytest

from sim.scenario.loader import load_scenario_text
from sim.scenario.run import ModelRun
from sim.scenario.schema import TrustModel

SCENARIO = """\
name: mmio
seed: 5
models: [thin-guest]
platform:
  root_ports: [{id: rp0}]
  devices:
    - id: gpu0
      port: rp0
      owner: tvm0
      tdis:
        - {id: tdi0, mmio: [{bar: 2, pages: 4}]}
guests:
  - {id: tvm0, devices: [gpu0]}
timeline:
  - {event: boot, at: 0}
  - {event: mmio, device: gpu0, guest: tvm0, %(tdi)s at: 1s}
"""


@pytest.mark.parametrize("tdi", ["tdi: tdi0,", ""])
def test_mmio_event_writes_to_the_tdis_first_range(tdi: str) -> None:
    """Named or not (the function-0 TDI), the write lands in BAR 2, the TDI's only range."""
    run = ModelRun(load_scenario_text(SCENARIO % {"tdi": tdi}, "mmio.yaml"), TrustModel.THIN_GUEST)
    result = run.run()
    assert not result["notes"], result["notes"]
    fn = run.platform.device("gpu0").endpoint.functions[0]
    assert fn.mmio.mmio_read(2, 0, 8) == b"\x5a" * 8
    assert fn.mmio.mmio_read(2, 8, 8) != b"\x5a" * 8


def test_mmio_event_to_a_tdi_on_another_function() -> None:
    text = (SCENARIO % {"tdi": "tdi: tdi1,"}).replace(
        "- {id: tdi0, mmio: [{bar: 2, pages: 4}]}", "- {id: tdi0, mmio: [{bar: 2, pages: 4}]}\n        - {id: tdi1, function: 1}")
    run = ModelRun(load_scenario_text(text, "mmio.yaml"), TrustModel.THIN_GUEST)
    result = run.run()
    assert not result["notes"], result["notes"]
    functions = run.platform.device("gpu0").endpoint.functions
    assert functions[1].mmio.mmio_read(0, 0, 8) == b"\x5a" * 8  # tdi1 lists no range: one in BAR 0
    assert functions[0].mmio.mmio_read(2, 0, 8) != b"\x5a" * 8
