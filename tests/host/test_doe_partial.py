"""The DOE driver never starts an object on top of a partial one it left behind (Linux pci_doe aborts
a mailbox on error and timeout before it is used again)."""

from __future__ import annotations

import simpy

from sim.engine.timing import Op
from sim.host.doe_driver import DoeResultCode
from sim.wire.doe import DoeObjectType
from sim.wire.spdm.common import ResponseCode
from tests.host.test_doe_driver import GET_VERSION, bench, run


def _interrupted_mid_write(b) -> None:
    """Start an exchange and stop its process after two of its Write Data DWs (a reset took over)."""
    def exchange():
        try:
            yield from b.driver.exchange("dev0", DoeObjectType.SPDM, GET_VERSION)
        except simpy.Interrupt:
            return "interrupted"
    proc = b.world.process(exchange())
    access = b.world.cost("host", Op.CONFIG_DW_ACCESS)
    b.world.run(until=b.world.now + 3 * access + access // 2)   # Status read, then two DWs written
    proc.interrupt("reset")
    b.world.run(until=proc)
    assert proc.value == "interrupted"


def test_exchange_after_a_partial_write_aborts_first_and_succeeds() -> None:
    b = bench()
    _interrupted_mid_write(b)
    aborts = b.dev.endpoint.mailbox.stats.aborts
    result = run(b, b.driver.exchange_result("dev0", DoeObjectType.SPDM, GET_VERSION))
    assert result.code is DoeResultCode.OK and result.response is not None
    assert result.response[1] == ResponseCode.VERSION
    assert b.dev.endpoint.mailbox.stats.aborts == aborts + 1   # the driver resynchronised before writing


def test_a_completed_exchange_leaves_nothing_to_abort() -> None:
    b = bench()
    assert run(b, b.driver.exchange("dev0", DoeObjectType.SPDM, GET_VERSION)) is not None
    aborts = b.dev.endpoint.mailbox.stats.aborts
    assert run(b, b.driver.exchange("dev0", DoeObjectType.SPDM, GET_VERSION)) is not None
    assert b.dev.endpoint.mailbox.stats.aborts == aborts
