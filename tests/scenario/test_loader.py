"""Scenario files as users write them: shipped examples load, and every mistake is located precisely."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.engine.timing import DEFAULTS, ComponentClass, Op
from sim.scenario.loader import (
    MAX_NODES,
    Problem,
    ScenarioError,
    ScenarioFileError,
    load_scenario,
    load_scenario_text,
    resolved,
    schema_json,
)
from sim.scenario.schema import Scenario, TdiStateName, TrustModel

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"

GOOD = textwrap.dedent("""\
    name: base
    seed: 3
    models: [fat, thin-guest]
    platform:
      root_ports:
        - id: rp0
          ide_streams: 2
      devices:
        - id: dev0
          port: rp0
          tdis:
            - {id: t0, function: 0, mmio: [{bar: 0, pages: 4}]}
    guests:
      - id: g0
        devices: [dev0]
    timing:
      device-mcu: {hkdf: 30us}
    timeline:
      - {event: boot, at: 0}
      - {event: assign, device: dev0, guest: g0, at: 1ms}
    expect:
      - {expect: tdi_state, device: dev0, tdi: t0, state: RUN}
    """)


def errors_of(text: str, filename: str = "s.yaml") -> list[str]:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, filename)
    assert all(isinstance(p, Problem) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def at(text: str, needle: str, nth: int = 0) -> str:
    """'LINE:COL' of the nth occurrence of ``needle`` in ``text`` (1-based, as the loader reports)."""
    pos = [m.start() for m in re.finditer(re.escape(needle), text)][nth]
    line = text.count("\n", 0, pos) + 1
    return f"{line}:{pos - (text.rfind(chr(10), 0, pos) + 1) + 1}"


# --- valid files ----------------------------------------------------------------------------------


def test_base_text_loads() -> None:
    s = load_scenario_text(GOOD, "s.yaml")
    assert s.models == [TrustModel.FAT, TrustModel.THIN_GUEST]
    assert s.timing == {ComponentClass.DEVICE_MCU: {Op.HKDF: 30_000}}
    assert s.timeline[1].at == 1_000_000 and s.expect[0].state is TdiStateName.RUN  # type: ignore[union-attr]


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_load_and_say_what_they_answer(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, "a shipped scenario starts with the question it answers"
    scenario = load_scenario(path)
    assert scenario.platform.devices and scenario.timeline and scenario.expect


def test_the_two_required_examples_exist_with_their_content() -> None:
    boot = load_scenario(SCENARIOS / "single-device-boot.yaml")
    assert len(boot.platform.root_ports) == 1 and [d.owner for d in boot.platform.devices] == ["host"]
    assert [e.kind for e in boot.timeline] == ["boot"]
    kinds = {e.kind for e in boot.expect}
    assert {"stream_state", "attestation"} <= kinds
    guest = load_scenario(SCENARIOS / "passthrough-guest.yaml")
    assert guest.models == list(TrustModel)
    assert {e.kind for e in guest.timeline} >= {"boot", "dma"}
    assert [d.owner for d in guest.platform.devices] == ["tvm0"]
    vmm_ide = [e for e in guest.expect if e.kind == "exposure" and e.component == "vmm"  # type: ignore[union-attr]
               and e.secret == "ide-key"]  # type: ignore[union-attr]
    # measured: the VMM relays the guest's session and sealed key-slot requests, so ciphertext only
    assert any(e.at_most == "ciphertext" and e.models and "thin-guest" in e.models for e in vmm_ide)  # type: ignore[union-attr]
    assert any(e.at_most == "plaintext" and e.models == ["thin-vmm"] for e in vmm_ide)  # type: ignore[union-attr]
    assert any(e.kind == "tdi_state" and e.state == "RUN" for e in guest.expect)  # type: ignore[union-attr]


def test_merge_keys_and_anchors_work_and_keep_marks() -> None:
    text = textwrap.dedent("""\
        name: m
        seed: 1
        platform:
          root_ports: [{id: rp0}, {id: rp1}, {id: rp2}]
          devices:
            - &nic {id: nic0, port: rp0, profile: p256}
            - <<: *nic
              id: nic1
              port: rp1
            - <<: *nic
              id: nic2
              port: rp2
              profile: p384x
        """)
    errors = errors_of(text)
    assert errors == [f"s.yaml:{at(text, 'p384x')}: platform.devices[2].profile: unknown value (expected one of: "
                      "default-p384, default-p384-clear, p256, got 'p384x')"]
    ok = load_scenario_text(text.replace("p384x", "default-p384"), "s.yaml")
    assert [(d.id, d.profile) for d in ok.platform.devices] == [("nic0", "p256"), ("nic1", "p256"),
                                                                 ("nic2", "default-p384")]
    bad_merge = text.replace("<<: *nic\n      id: nic1", "<<: 5\n      id: nic1")
    assert "a merge key (<<) takes a mapping" in errors_of(bad_merge)[0]


# --- each kind of mistake, located ----------------------------------------------------------------


def test_unknown_key() -> None:
    text = edit("      ide_streams: 2\n", "      ide_streams: 2\n      dcp: true\n")
    assert errors_of(text) == [
        f"s.yaml:{at(text, 'dcp')}: platform.root_ports[0].dcp: unknown key 'dcp' (expected one of: id, "
        "ide_streams, dpc, link_latency); did you mean 'dpc'?"]


def test_unknown_top_level_key() -> None:
    text = GOOD + "extras: 1\n"
    assert errors_of(text) == [f"s.yaml:{at(text, 'extras')}: extras: unknown key 'extras' (expected one of: name, "
                               "description, seed, models, fat_reconnect, platform, guests, timing, timeline, "
                               "expect)"]


def test_wrong_type() -> None:
    text = edit("ide_streams: 2", "ide_streams: two")
    assert errors_of(text) == [f"s.yaml:{at(text, 'two')}: platform.root_ports[0].ide_streams: wrong type "
                               "(expected an integer, got 'two')"]
    text = edit("seed: 3", "seed: [3]")
    assert errors_of(text) == [f"s.yaml:{at(text, '[3]')}: seed: wrong type (expected an integer, got a list)"]
    text = edit("  - id: g0\n", "  - id: 17\n")
    assert errors_of(text) == [f"s.yaml:{at(text, '17')}: guests[0].id: wrong type (expected a string, got 17 "
                               "(an integer)); put it in quotes"]


def test_collection_type_errors_point_at_the_key() -> None:
    text = edit("    devices: [dev0]\n", "    devices:\n      dev0: yes\n")
    assert errors_of(text) == [f"s.yaml:{at(text, 'devices', 1)}: guests[0].devices: wrong type (expected a list, "
                               "got a mapping)"]


def test_bad_duration() -> None:
    text = edit("hkdf: 30us", "hkdf: 30 weeks")
    assert errors_of(text) == [
        f"s.yaml:{at(text, '30 weeks')}: timing.device-mcu.hkdf: bad duration (expected integer ns or a number "
        "with a unit ns, us, ms or s, like '250ns', '3us', '1.5s', got '30 weeks')"]
    text = edit("at: 1ms", "at: 1.5ns")
    assert errors_of(text) == [f"s.yaml:{at(text, '1.5ns')}: timeline[1].at: duration is not a whole number of ns "
                               "(expected a multiple of 1 ns, got '1.5ns')"]


def test_unknown_enum_value_lists_the_allowed_values() -> None:
    text = edit("models: [fat, thin-guest]", "models: [fat, thick]")
    assert errors_of(text) == [f"s.yaml:{at(text, 'thick')}: models[1]: unknown value (expected one of: fat, "
                               "thin-host, thin-guest, thin-vmm, got 'thick')"]
    text = edit("state: RUN", "state: RUNNING")
    assert errors_of(text) == [f"s.yaml:{at(text, 'RUNNING')}: expect[0].state: unknown value (expected one of: "
                               "CONFIG_UNLOCKED, CONFIG_LOCKED, RUN, ERROR, got 'RUNNING')"]


def test_unknown_dict_key_enum_points_at_the_key() -> None:
    text = edit("device-mcu: {hkdf: 30us}", "device-mcu: {hdkf: 30us}")
    error = errors_of(text)[0]
    assert error.startswith(f"s.yaml:{at(text, 'hdkf')}: timing.device-mcu.hdkf: unknown value (expected one of: "
                            "ecdsa-p256-sign,")
    assert "got 'hdkf'" in error
    text = edit("device-mcu: {hkdf: 30us}", "dsp: {hkdf: 30us}")
    assert errors_of(text)[0].startswith(f"s.yaml:{at(text, 'dsp')}: timing.dsp: unknown value (expected one of: "
                                         "device-mcu, firmware-core, host-cpu, guest-vcpu, hardware")


def test_unknown_event_and_missing_discriminator() -> None:
    text = edit("{event: boot, at: 0}", "{event: reboot, at: 0}")
    assert errors_of(text) == [f"s.yaml:{at(text, 'reboot')}: timeline[0].event: unknown event kind 'reboot' "
                               "(expected one of: boot, assign, dma, mmio, dpc, d3cold, d3cold_exit, "
                               "flr, hot_reset, link_down, link_up, key_refresh, firmware_update, "
                               "second_requester, doe_abort, drop_doe, corrupt_doe, adversary)"]
    text = edit("{event: boot, at: 0}", "{at: 0}")
    assert errors_of(text)[0].startswith(f"s.yaml:{at(text, '{at: 0}')}: timeline[0].event: missing required key "
                                         "'event' (expected one of: boot,")


def test_missing_required_key_points_at_its_mapping() -> None:
    text = edit("      port: rp0\n", "")
    assert errors_of(text) == [f"s.yaml:{at(text, 'id: dev0')}: platform.devices[0].port: missing required key "
                               "'port'"]


def test_missing_fields_inside_events_skip_the_union_tag() -> None:
    text = edit("{event: assign, device: dev0, guest: g0, at: 1ms}", "{event: assign, guest: g0, at: 1ms, sz: 1}")
    spot = at(text, "{event: assign")
    assert errors_of(text) == [
        f"s.yaml:{spot}: timeline[1].device: missing required key 'device'",
        f"s.yaml:{at(text, 'sz')}: timeline[1].sz: unknown key 'sz' (expected one of: at, during, after, models, "
        "event, device, guest)",
    ]


def test_two_triggers_on_an_event() -> None:
    text = edit("{event: boot, at: 0}", "{event: boot, at: 0, during: {device: dev0, phase: VCA}}")
    assert errors_of(text) == [f"s.yaml:{at(text, '{event: boot')}: timeline[0]: an event needs exactly one trigger "
                               "(expected one of at, during, after, got at and during)"]


def test_dangling_reference() -> None:
    text = edit("port: rp0", "port: rp1")
    assert errors_of(text) == [f"s.yaml:{at(text, 'rp1')}: platform.devices[0].port: unknown root port 'rp1' "
                               "(expected one of: rp0)"]
    text = edit("{event: assign, device: dev0, guest: g0, at: 1ms}", "{event: assign, device: dev0, guest: g1, "
                "at: 1ms}")
    assert errors_of(text) == [f"s.yaml:{at(text, 'g1')}: timeline[1].guest: unknown guest 'g1' (expected one of: "
                               "g0)"]


def test_duplicate_id() -> None:
    text = edit("    - id: rp0\n      ide_streams: 2\n", "    - id: rp0\n      ide_streams: 2\n    - id: rp0\n")
    assert errors_of(text) == [f"s.yaml:{at(text, 'rp0', 1)}: platform.root_ports[1].id: duplicate root port id "
                               "'rp0' (expected unique, first used at platform.root_ports[0].id)"]


def test_duplicate_yaml_key() -> None:
    text = edit("seed: 3\n", "seed: 3\nseed: 4\n")
    assert errors_of(text) == [f"s.yaml:{at(text, 'seed', 1)}: seed: duplicate key 'seed' (expected each key once; "
                               "first at line 2)"]
    text = edit("{id: t0, function: 0,", "{id: t0, function: 0, id: t1,")
    assert errors_of(text) == [f"s.yaml:{at(text, 'id: t1')}: platform.devices[0].tdis[0].id: duplicate key 'id' "
                               f"(expected each key once; first at line {at(text, 'id: t0').split(':')[0]})"]


def test_yaml_syntax_error_has_its_line() -> None:
    text = edit("models: [fat, thin-guest]", "models: [fat, thin-guest")
    (error,) = errors_of(text)
    assert re.match(r"s\.yaml:4:\d+: YAML syntax: while parsing a flow sequence", error), error
    text = edit("  root_ports:\n", "  root_ports:\n\tbad\n")
    assert re.match(r"s\.yaml:6:1: YAML syntax: .*'\\t' that cannot start any token", errors_of(text)[0]), errors_of(text)


def test_whole_file_problems() -> None:
    assert errors_of("") == ["s.yaml: empty file (expected a mapping with name, seed, platform ...)"]
    assert errors_of("# only a comment\n") == ["s.yaml: empty file (expected a mapping with name, seed, platform ...)"]
    assert errors_of("- a\n- b\n") == ["s.yaml:1:1: the top level must be a mapping (expected keys name, seed, "
                                       "platform ..., got a list)"]
    assert errors_of("a: 1\n---\nb: 2\n")[0].startswith("s.yaml:2:1: YAML syntax: expected a single document")
    assert errors_of("name: \x07\n") == ["s.yaml:1:7: YAML: character U+0007 is not allowed (expected printable text)"]


def test_unsafe_and_odd_yaml_is_refused_not_executed() -> None:
    (error,) = errors_of("name: !!python/object/apply:os.system ['true']\n")
    assert error.startswith("s.yaml:1:7: name: ") and "python/object" in error
    assert errors_of("a: &x [*x]\n") == ["s.yaml:1:4: a[0]: an alias refers to a node that contains it (recursive "
                                         "alias)"]
    assert errors_of("? [a]\n: b\n") == ["s.yaml:1:3: a mapping key must be a plain value, not a list or mapping"]
    assert errors_of("d: 2024-13-45\n") == ["s.yaml:1:4: d: unreadable value '2024-13-45' (month must be in 1..12)"]


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1},"
              f" *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    (error,) = errors_of("\n".join(lines) + "\n")
    assert f"more than {MAX_NODES} values" in error


def test_deep_nesting_is_refused() -> None:
    (error,) = errors_of("[" * 500 + "]" * 500)
    assert "nested" in error or "deep" in error


def test_all_problems_are_reported_in_file_order() -> None:
    text = edit("seed: 3", "seed: x")
    text = edit("ide_streams: 2", "ide_streams: 0", text)
    text = edit("state: RUN", "state: GONE", text)
    lines = [int(e.split(":")[1]) for e in errors_of(text)]
    assert len(lines) == 3 and lines == sorted(lines)


# --- files ----------------------------------------------------------------------------------------


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioFileError) as info:
        load_scenario(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory (expected a " \
                              "readable scenario file)"
    with pytest.raises(ScenarioFileError, match="cannot read"):
        load_scenario(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ScenarioFileError, match=r"not UTF-8 text \(bad byte at offset 9\)"):
        load_scenario(tmp_path / "latin1.yaml")


def test_errors_name_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(edit("port: rp0", "port: [rp0]"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}:10:13: platform.devices[0].port: wrong type (expected a string")


def test_identity_files_resolve_against_the_scenario_folder(tmp_path: Path) -> None:
    text = edit("      port: rp0\n", "      port: rp0\n      identity: {cert_chain: certs/chain.pem, key: certs/k.pem}\n")
    (tmp_path / "s.yaml").write_text(text)
    problems = [str(p) for p in pytest.raises(ScenarioError, load_scenario, tmp_path / "s.yaml").value.problems]
    assert problems == [
        f"{tmp_path / 's.yaml'}:{at(text, 'certs/chain.pem')}: platform.devices[0].identity.cert_chain: file not "
        f"found (expected an existing file, got {tmp_path / 'certs' / 'chain.pem'})",
        f"{tmp_path / 's.yaml'}:{at(text, 'certs/k.pem')}: platform.devices[0].identity.key: file not found "
        f"(expected an existing file, got {tmp_path / 'certs' / 'k.pem'})",
    ]
    s = load_scenario_text(text, str(tmp_path / "s.yaml"), check_files=False)
    assert s.device("dev0").identity.cert_chain == tmp_path / "certs" / "chain.pem"


# --- resolved configuration and JSON Schema -------------------------------------------------------


def test_resolved_fills_defaults_and_loads_back_as_the_same_scenario() -> None:
    s = load_scenario(SCENARIOS / "passthrough-guest.yaml")
    out = resolved(s)
    assert out["timing"]["device-mcu"]["hkdf"] == DEFAULTS[ComponentClass.DEVICE_MCU][Op.HKDF]
    assert set(out["timing"]) == {c.value for c in ComponentClass}
    assert out["platform"]["devices"][0]["identity"] == {"ca": "vendor", "cert_chain": None, "key": None}
    assert list(out["timeline"][0])[0] == "event" and list(out["expect"][0])[0] == "expect"
    assert out["timeline"][1]["at"] == 1_000_000_000 and out["timeline"][1]["bytes"] == 64 * 1024
    text = yaml.safe_dump(out, sort_keys=False)
    again = load_scenario_text(text, str(SCENARIOS / "resolved.yaml"))
    assert again.model_dump(exclude={"timing"}) == s.model_dump(exclude={"timing"})
    assert resolved(again) == out
    json.dumps(out)  # plain JSON types only


def test_resolved_keeps_overrides() -> None:
    out = resolved(load_scenario_text(GOOD, "s.yaml"))
    assert out["timing"]["device-mcu"]["hkdf"] == 30_000
    assert out["timing"]["host-cpu"]["hkdf"] == DEFAULTS[ComponentClass.HOST_CPU][Op.HKDF]


def test_exported_schema_file_is_in_sync() -> None:
    shipped = json.loads((SCENARIOS / "scenario.schema.json").read_text())
    assert shipped == schema_json(), "regenerate with: tiosim validate --schema > scenarios/scenario.schema.json"


def test_schema_describes_the_closed_sets_and_forbids_extra_keys() -> None:
    schema = schema_json()
    defs = schema["$defs"]
    assert schema["additionalProperties"] is False
    assert all(d.get("additionalProperties") is False for d in defs.values() if d.get("type") == "object")
    assert defs["TrustModel"]["enum"] == [m.value for m in TrustModel]
    assert defs["Op"]["enum"] == [o.value for o in Op]
    assert set(schema["properties"]["timeline"]["items"]["discriminator"]["mapping"]) >= {"boot", "dpc", "adversary"}
    assert schema["required"] == ["name", "seed", "platform"]


# --- robustness -----------------------------------------------------------------------------------

_FRAGMENTS = ["name: x\n", "seed: 1\n", "platform:\n", "  root_ports:\n", "    - id: rp0\n", "  devices:\n",
              "    - {id: d, port: rp0}\n", "timeline:\n", "  - {event: boot, at: 0}\n", "expect: []\n", "- ", ": ",
              "{", "}", "[", "]", "&a ", "*a ", "<<: ", "!!str ", "? ", "'", '"', "#", "\t", "\n", "  ", "1.5ms",
              "null", "~", "yes", "0x1F", "2024-01-01", "|\n", ">\n", "---\n", "...\n", "%YAML 1.1\n", "!x "]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join)))
def test_random_yamlish_text_gives_only_scenario_errors(text: str) -> None:
    try:
        result = load_scenario_text(text, "fuzz.yaml", check_files=False)
    except ScenarioError as exc:
        assert exc.problems and all(p.file == "fuzz.yaml" for p in exc.problems)
    else:
        assert isinstance(result, Scenario)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                  st.text(max_size=12), st.lists(st.integers(), max_size=2),
                  st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_schema_error_in_a_mutated_file_has_a_line(data: st.DataObject) -> None:
    """Replace one value (or add a key) anywhere in a valid file: any error still carries FILE:LINE:COL."""
    tree = yaml.safe_load((SCENARIOS / "passthrough-guest.yaml").read_text())
    path = data.draw(st.sampled_from(_paths(tree)[1:]))
    target = tree
    for part in path[:-1]:
        target = target[part]
    if data.draw(st.booleans()) or not isinstance(target, dict):
        target[path[-1]] = data.draw(_JUNK)
    else:
        target[data.draw(st.text(min_size=1, max_size=8))] = data.draw(_JUNK)
    text = yaml.safe_dump(tree, sort_keys=False)
    try:
        load_scenario_text(text, "m.yaml", check_files=False)
    except ScenarioError as exc:
        for problem in exc.problems:
            assert problem.line is not None and problem.column is not None, str(problem)
            assert 1 <= problem.line <= text.count("\n") + 1
