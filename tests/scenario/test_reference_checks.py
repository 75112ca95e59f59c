"""`tiosim validate` refuses what `tiosim run` cannot do: TDI functions and BAR layouts the platform cannot
build, MMIO that does not fit a Root Port's window, DMA too large to run, and events and expectations that
name something that cannot take part (an empty port, a port without DPC, another guest's device, a device
the guest already has from boot). Each refusal names the file, line, key path and what was expected."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from sim.engine.world import World
from sim.protocols.tsm import Phase
from sim.scenario.loader import ScenarioError, load_scenario, load_scenario_text, schema_json
from sim.scenario.platform import (
    PORT_WINDOW_SIZE,
    DeviceSpec,
    MmioRangeSpec,
    PlatformSpec,
    PlatformSpecError,
    RootPortSpec,
    TdiSpec,
    build_platform,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
PAGE = 4096

BASE = textwrap.dedent("""\
    name: refs
    seed: 1
    models: [fat, thin-guest]
    platform:
      root_ports:
        - {id: rp0}
        - {id: rp1, dpc: false}
        - {id: rp2}
      devices:
        - id: d0
          port: rp0
          owner: g0
          tdis:
            - {id: t0, function: 0, mmio: [{bar: 0, pages: 4}]}
        - id: d1
          port: rp1
          tdis:
            - {id: t0, function: 0}
    guests:
      - {id: g0, devices: [d0]}
      - {id: g1, devices: [d1]}
    timeline:
      - {event: boot, at: 0}
    expect:
      - {expect: stream_state, port: rp0, state: secure}
    """)


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def at(text: str, needle: str, nth: int = 0) -> str:
    """'LINE:COL' of the nth occurrence of ``needle`` (1-based, as the loader reports)."""
    pos = [m.start() for m in re.finditer(re.escape(needle), text)][nth]
    return f"{text.count(chr(10), 0, pos) + 1}:{pos - (text.rfind(chr(10), 0, pos) + 1) + 1}"


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, "s.yaml")
    return [str(p) for p in info.value.problems]


def test_base_loads() -> None:
    scenario = load_scenario_text(BASE, "s.yaml")
    assert [d.id for d in scenario.platform.devices] == ["d0", "d1"]


# --- TDI functions and BARs ----------------------------------------------------------------------------


def test_function_above_7_is_refused() -> None:
    text = edit("{id: t0, function: 0}", "{id: t0, function: 8}")
    assert problems(text) == [f"s.yaml:{at(text, '8}')}: platform.devices[1].tdis[0].function: out of range "
                              "(expected <= 7, got 8 (an integer))"]


def test_flr_of_function_above_7_is_refused() -> None:
    text = edit("  - {event: boot, at: 0}\n", "  - {event: flr, device: d1, function: 9, at: 0}\n")
    assert problems(text) == [f"s.yaml:{at(text, '9, at')}: timeline[0].function: out of range "
                              "(expected <= 7, got 9 (an integer))"]


def test_two_tdis_on_one_function_are_refused() -> None:
    text = edit("        - {id: t0, function: 0}\n",
                "        - {id: t0, function: 0}\n        - {id: t1, function: 0}\n")
    assert problems(text) == [f"s.yaml:{at(text, '0}', nth=2)}: platform.devices[1].tdis[1].function: "
                              "function 0 already has TDI 't0' (expected one TDI per function)"]


def test_tdis_on_functions_0_and_7_load() -> None:
    text = edit("{id: t0, function: 0}\n", "{id: t0, function: 0}\n        - {id: t7, function: 7}\n")
    assert {t.function for t in load_scenario_text(text).device("d1").tdis} == {0, 7}


@pytest.mark.parametrize("pages", [3, 12, 4095, 8192, 100000])
def test_pages_not_a_power_of_two_up_to_the_window_are_refused(pages: int) -> None:
    text = edit("pages: 4}", f"pages: {pages}}}")
    assert problems(text) == [
        f"s.yaml:{at(text, f'{pages}}}')}: platform.devices[0].tdis[0].mmio[0].pages: bad page count: a BAR's size "
        f"is a power of two and at most the Root Port's 16 MiB window (expected one of 1, 2, 4, ... 4096, got "
        f"{pages})"]


def test_bar_5_is_refused_because_a_64_bit_bar_takes_two_slots() -> None:
    text = edit("{bar: 0, pages: 4}", "{bar: 5, pages: 4}")
    assert problems(text) == [f"s.yaml:{at(text, '5, pages')}: platform.devices[0].tdis[0].mmio[0].bar: BAR 5 "
                              "cannot be a 64-bit BAR: it takes slots 5 and 6, and a function has slots 0-5 "
                              "(expected 0-4)"]


def test_bars_on_adjacent_slots_are_refused() -> None:
    text = edit("{bar: 0, pages: 4}", "{bar: 0, pages: 4}, {bar: 1, pages: 1}")
    assert problems(text) == [f"s.yaml:{at(text, '1, pages')}: platform.devices[0].tdis[0].mmio[1].bar: BAR 1 "
                              "overlaps BAR 0 of function 0: each range is a 64-bit BAR taking two slots (BAR 0: "
                              "0 and 1) (expected BARs at least 2 apart, such as 0, 2, 4)"]


def test_a_bar_below_a_taken_pair_is_refused() -> None:
    text = edit("{bar: 0, pages: 4}", "{bar: 2, pages: 4}, {bar: 1, pages: 1}")
    assert problems(text)[0].endswith("mmio[1].bar: BAR 1 overlaps BAR 2 of function 0: each range is a 64-bit "
                                      "BAR taking two slots (BAR 2: 2 and 3) (expected BARs at least 2 apart, "
                                      "such as 0, 2, 4)")


def test_a_bar_given_twice_is_refused() -> None:
    text = edit("{bar: 0, pages: 4}", "{bar: 2, pages: 4}, {bar: 2, pages: 1}")
    assert problems(text) == [f"s.yaml:{at(text, '2, pages: 1')}: platform.devices[0].tdis[0].mmio[1].bar: "
                              "BAR 2 of function 0 is given twice (expected each BAR once)"]


def test_bars_0_2_4_and_bar_1_alone_load() -> None:
    text = edit("{bar: 0, pages: 4}", "{bar: 0, pages: 4}, {bar: 2, pages: 1}, {bar: 4, pages: 8}")
    assert [r.bar for r in load_scenario_text(text).device("d0").tdis[0].mmio] == [0, 2, 4]
    load_scenario_text(edit("{bar: 0, pages: 4}", "{bar: 1, pages: 4}, {bar: 3, pages: 4}"))


def test_mmio_beyond_the_port_window_is_refused() -> None:
    text = edit("{id: t0, function: 0}\n", "{id: t0, function: 0, mmio: [{bar: 0, pages: 4096}]}\n"
                "        - {id: t1, function: 1, mmio: [{bar: 0, pages: 1}]}\n")
    assert problems(text) == [f"s.yaml:{at(text, 'tdis:', nth=1)}: platform.devices[1].tdis: the MMIO of device "
                              "'d1' spans 16388 KiB of its Root Port's memory window, each BAR aligned to its size "
                              "and each function without a TDI taking 16 KiB (expected at most 16 MiB = 4096 pages)"]


# Layouts as (function, [pages of each range]) and whether they fit a 16 MiB window once each BAR is aligned to
# its size, function by function, largest first (functions without a TDI get one 16 KiB BAR).
LAYOUTS = [
    ([(0, [4096])], True),
    ([(0, [4096]), (1, [1])], False),
    ([(0, [1]), (1, [2048])], True),            # 4 KiB, then 8 MiB aligned at 8 MiB: exactly 16 MiB
    ([(0, [1]), (1, [2048]), (2, [1])], False),
    ([(0, [2048]), (3, [1024])], True),         # functions 1 and 2 take 16 KiB each before the 4 MiB range
    ([(0, [2048]), (3, [1024, 1024])], False),
    ([(0, [2048, 1024, 1024])], True),
    ([(0, [2048]), (1, [])], True),             # a TDI without ranges gets 16 KiB in BAR 0
    ([(7, [4096])], False),                     # functions 0-6 take 16 KiB each
]


def _layout_yaml(layout: list[tuple[int, list[int]]]) -> str:
    def ranges(pages: list[int]) -> str:
        return ", ".join(f"{{bar: {2 * k}, pages: {p}}}" for k, p in enumerate(pages))

    tdis = ", ".join(f"{{id: t{f}, function: {f}, mmio: [{ranges(pages)}]}}" for f, pages in layout)
    return edit("tdis:\n        - {id: t0, function: 0}\n", f"tdis: [{tdis}]\n")


def _builds(layout: list[tuple[int, list[int]]]) -> bool:
    tdis = tuple(TdiSpec(function=f, mmio=tuple(MmioRangeSpec(bar=2 * k, size=p * PAGE) for k, p in enumerate(pages))
                         or (MmioRangeSpec(),)) for f, pages in layout)
    spec = PlatformSpec(root_ports=(RootPortSpec("rp0"),), devices=(DeviceSpec("d1", "rp0", tdis=tdis),))
    try:
        build_platform(World(1), spec)
    except PlatformSpecError as exc:
        assert f"{PORT_WINDOW_SIZE:#x}-byte port window" in str(exc)
        return False
    return True


@pytest.mark.parametrize(("layout", "fits"), LAYOUTS)
def test_validate_accepts_exactly_the_layouts_the_platform_builds(layout: list[tuple[int, list[int]]],
                                                                 fits: bool) -> None:
    text = _layout_yaml(layout)
    if fits:
        load_scenario_text(text)
    else:
        found = problems(text)
        assert len(found) == 1 and "platform.devices[1].tdis: the MMIO of device 'd1' spans " in found[0]
    assert _builds(layout) is fits


@pytest.mark.parametrize(("bars", "message"), [
    ((5,), "device 'd0' function 0 BAR 5: a 64-bit BAR takes slots 5 and 6, an endpoint has slots 0-5 "
           "(expected BAR 0-4)"),
    ((0, 1), "device 'd0' function 0 BAR 1: slot 1 is taken by 64-bit BAR 0 (expected BARs at least 2 apart)"),
])
def test_platform_refuses_overlapping_64_bit_bars_with_a_spec_error(bars: tuple[int, ...], message: str) -> None:
    tdi = TdiSpec(mmio=tuple(MmioRangeSpec(bar=b) for b in bars))
    with pytest.raises(PlatformSpecError) as info:
        build_platform(World(1), PlatformSpec(devices=(DeviceSpec("d0", "rp0", tdis=(tdi,)),)))
    assert str(info.value) == message


# --- events and expectations ------------------------------------------------------------------------------


def test_stream_state_of_a_port_without_a_device_is_refused() -> None:
    text = edit("{expect: stream_state, port: rp0, state: secure}", "{expect: stream_state, port: rp2, "
                "state: insecure}")
    assert problems(text) == [f"s.yaml:{at(text, 'rp2, state')}: expect[0].port: root port 'rp2' has no device "
                              "behind it, so it has no stream and any state would hold (expected a port with a "
                              "device: rp0, rp1)"]


def test_dpc_on_a_port_without_dpc_is_refused() -> None:
    text = edit("{event: boot, at: 0}", "{event: dpc, port: rp1, at: 1s}")
    assert problems(text) == [f"s.yaml:{at(text, 'rp1, at')}: timeline[0].port: port 'rp1' has no DPC (dpc: false) "
                              "(expected a port with dpc: true; hot_reset or link_down reset a device without DPC)"]


def test_dpc_on_a_port_with_dpc_loads() -> None:
    load_scenario_text(edit("{event: boot, at: 0}", "{event: dpc, port: rp0, at: 1s}"))


def test_mmio_to_another_guests_device_is_refused() -> None:
    text = edit("{event: boot, at: 0}", "{event: mmio, device: d1, guest: g0, at: 1s}")
    assert problems(text) == [f"s.yaml:{at(text, 'd1, guest')}: timeline[0].device: guest 'g0' does not list 'd1' "
                              "in its devices, so it cannot reach its MMIO (expected one of: d0)"]


def test_mmio_to_the_guests_own_device_loads() -> None:
    load_scenario_text(edit("{event: boot, at: 0}", "{event: mmio, device: d0, guest: g0, tdi: t0, at: 1s}"))


def test_assigning_a_device_to_the_guest_that_owns_it_from_boot_is_refused() -> None:
    text = edit("{event: boot, at: 0}", "{event: assign, device: d0, guest: g0, at: 2s}")
    assert problems(text) == [f"s.yaml:{at(text, 'd0, guest')}: timeline[0].device: guest 'g0' already has 'd0' "
                              "from boot (its owner: g0); assigning it again would break its running TDI (expected "
                              "a device whose owner is not 'g0')"]


def test_assigning_a_host_kept_device_loads() -> None:
    load_scenario_text(edit("{event: boot, at: 0}", "{event: assign, device: d1, guest: g1, at: 2s}"))


@pytest.mark.parametrize(("size", "got"), [("1GiB", 1 << 30), ("17MiB", 17 << 20), (16777217, 16777217)])
def test_dma_above_16_mib_is_refused(size: str | int, got: int) -> None:
    text = edit("{event: boot, at: 0}", f"{{event: dma, device: d0, bytes: {size}, at: 1s}}")
    assert problems(text) == [f"s.yaml:{at(text, f'{size}, at')}: timeline[0].bytes: DMA too large: the run moves "
                              f"one TLP per 256 B (expected at most 16MiB = 16777216 bytes, got {got} bytes)"]


def test_dma_of_16_mib_loads() -> None:
    scenario = load_scenario_text(edit("{event: boot, at: 0}", "{event: dma, device: d0, bytes: 16MiB, at: 1s}"))
    assert scenario.timeline[0].bytes == 16 << 20  # type: ignore[union-attr]


# --- the schema and the shipped scenarios -------------------------------------------------------------


def test_json_schema_states_the_bounds() -> None:
    defs = schema_json()["$defs"]
    mmio = defs["MmioRange"]["properties"]
    assert (mmio["bar"]["minimum"], mmio["bar"]["maximum"]) == (0, 4)
    assert mmio["pages"]["enum"] == [1 << n for n in range(13)]
    assert defs["Tdi"]["properties"]["function"]["maximum"] == 7
    assert defs["FlrEvent"]["properties"]["function"]["maximum"] == 7
    assert defs["DmaEvent"]["properties"]["bytes"]["anyOf"][0]["maximum"] == 16 << 20


@pytest.mark.parametrize("trigger", ["During", "After"])
def test_milestone_descriptions_name_every_phase_as_reached(trigger: str) -> None:
    text = schema_json()["$defs"][trigger]["properties"]["phase"]["description"]
    assert "never reached" not in text
    assert all(re.search(rf"\b{p.name}\b", text) for p in Phase)


def test_every_shipped_scenario_still_validates() -> None:
    paths = sorted(SCENARIOS.glob("*.yaml"))
    assert len(paths) >= 10
    for path in paths:
        load_scenario(path)
