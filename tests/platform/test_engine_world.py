"""World, timing model and fault injector: determinism, costs, scheduling and the fault registry."""

from __future__ import annotations

import pytest

from sim.engine.faults import FaultError, FaultKind, FaultRequest
from sim.engine.timing import DEFAULTS, ComponentClass, Op, TimingError, TimingModel
from sim.engine.world import World
from sim.rootport.dpc import ErrorSeverity
from tests.platform.rootport_testbench import build, key_stream


def _run(seed: int) -> tuple[str, int]:
    """A small but complete run: keyed stream, DMA both ways, randomized faults, DPC recovery."""
    p = build(seed)
    dpc = 0x100 + 0x8C  # after the 4-stream IDE capability
    p.rp.cfg_write(dpc + 6, 0x9, 2, by="kernel")
    key_stream(p, stream_id=p.world.rng("host").randint(1, 200))
    rng = p.world.rng("rp0.dev0.dma")
    for i in range(12):
        p.world.call_later(4000 * i, lambda i=i: p.ep.dma_write(0, 0x1000 * (i + 1), rng.bytes(64)))
    p.world.faults.randomize(start_ns=10_000, end_ns=50_000, count=3,
                             kinds=[FaultKind.CORRUPT_TLP, FaultKind.DROP_TLP])
    p.world.call_later(60_000, lambda: p.rp.error_message(ErrorSeverity.FATAL, 0x0100))
    p.world.call_later(70_000, lambda: p.rp.cfg_write(dpc + 8, 1, 2, by="kernel"))
    p.world.run()
    return p.world.trace.digest(), p.world.trace.count


def test_same_seed_same_digest_different_seed_differs() -> None:
    a, n = _run(1234)
    b, m = _run(1234)
    c, _ = _run(1235)
    assert a == b and n == m and n > 30
    assert a != c


def test_rng_is_per_path_and_independent_of_order() -> None:
    w1, w2 = World(5), World(5)
    a1 = w1.rng("rp0").bytes(16)
    w2.rng("host").bytes(1000)  # consuming another component's stream changes nothing for rp0
    assert w2.rng("rp0").bytes(16) == a1
    assert w1.rng("rp0").bytes(16) != a1  # the stream advances
    assert World(6).rng("rp0").bytes(16) != a1


def test_register_and_costs() -> None:
    w = World(1, timing={"device-mcu": {"ecdsa-p384-sign": 123}})
    w.register("rp0.dev0", object(), ComponentClass.DEVICE_MCU)
    w.register("host", object(), ComponentClass.HOST_CPU)
    with pytest.raises(ValueError):
        w.register("host", object())
    assert w.cost("rp0.dev0", Op.ECDSA_P384_SIGN) == 123
    assert w.cost("host", Op.ECDSA_P384_SIGN) == DEFAULTS[ComponentClass.HOST_CPU][Op.ECDSA_P384_SIGN]
    assert w.components() == ("rp0.dev0", "host")
    assert w.resolved_config()["components"] == {"host": "host-cpu", "rp0.dev0": "device-mcu"}

    def proc():  # type: ignore[no-untyped-def]
        yield w.delay("rp0.dev0", Op.ECDSA_P384_SIGN)
        yield w.delay("host", Op.AEAD_PER_KIB, nbytes=4096)

    w.process(proc())
    w.run()
    assert w.now == 123 + 4 * DEFAULTS[ComponentClass.HOST_CPU][Op.AEAD_PER_KIB]


def test_timing_model_covers_everything_and_rejects_typos() -> None:
    for cls in ComponentClass:
        assert set(DEFAULTS[cls]) == set(Op)
        assert all(isinstance(v, int) and v >= 0 for v in DEFAULTS[cls].values())
    # the slow classes really are slower at public-key crypto
    assert DEFAULTS[ComponentClass.DEVICE_MCU][Op.ECDSA_P384_SIGN] > DEFAULTS[ComponentClass.HOST_CPU][Op.ECDSA_P384_SIGN]
    t = TimingModel()
    assert t.cost("host-cpu", "hash-per-kib", nbytes=1) == 1  # rounded up, never 0 for non-zero work
    with pytest.raises(TimingError, match="per KiB"):
        t.cost("host-cpu", "hash-per-kib")
    with pytest.raises(TimingError, match="unknown component class 'host-gpu'"):
        TimingModel({"host-gpu": {}})
    with pytest.raises(TimingError, match="unknown operation"):
        TimingModel({"host-cpu": {"ecdsa-p999-sign": 1}})
    with pytest.raises(TimingError, match="non-negative integer"):
        TimingModel({"host-cpu": {"hkdf": -1}})
    assert TimingModel({"guest-vcpu": {"hkdf": 7}}).table()["guest-vcpu"]["hkdf"] == 7


def test_call_later_order_and_bad_delays() -> None:
    w = World(1)
    order: list[str] = []
    w.call_later(10, lambda: order.append("b"))
    w.call_later(5, lambda: order.append("a"))
    w.call_later(10, lambda: order.append("c"))
    w.run()
    assert order == ["a", "b", "c"] and w.now == 10
    with pytest.raises(ValueError):
        w.timeout(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        w.timeout(-1)


def test_fault_registry_schedule_and_trace() -> None:
    w = World(9)
    got: list[FaultRequest] = []
    w.faults.offer("rp0.dev0", FaultKind.FLR, got.append)
    w.faults.schedule(500, "rp0.dev0", "flr", function=1)
    with pytest.raises(FaultError, match="does not offer fault 'd3cold-entry'"):
        w.faults.schedule(600, "rp0.dev0", FaultKind.D3COLD_ENTRY)
    with pytest.raises(FaultError, match="unknown fault kind"):
        w.faults.inject("rp0.dev0", "meteor")
    w.run()
    assert len(got) == 1 and got[0].time_ns == 500 and got[0].params == {"function": 1}
    assert w.faults.history[0].kind is FaultKind.FLR
    with pytest.raises(FaultError, match="in the past"):
        w.faults.schedule(100, "rp0.dev0", "flr")


def test_randomized_faults_are_seeded() -> None:
    def plan(seed: int) -> list[tuple[int, str, FaultKind]]:
        w = World(seed)
        for target in ("rp0", "rp1"):
            w.faults.offer(target, FaultKind.DPC_TRIGGER, lambda r: None)
            w.faults.offer(target, FaultKind.HOT_RESET, lambda r: None)
        out = w.faults.randomize(start_ns=0, end_ns=1_000_000, count=8)
        w.run()
        assert len(w.faults.history) == 8
        return out

    assert plan(3) == plan(3)
    assert plan(3) != plan(4)
    assert all(0 <= t < 1_000_000 for t, _, _ in plan(3))
    w = World(1)
    with pytest.raises(FaultError, match="no offered fault"):
        w.faults.randomize(start_ns=0, end_ns=10, count=1)
