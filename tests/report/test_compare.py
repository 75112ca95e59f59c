"""The comparison computed from result dicts: exposure differences, holders, metrics, input errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.exposure import Exposure
from sim.report.compare import ReportInputError, compare, format_ns, read_result
from tests.report.results_factory import clone, make_result

ALL = ("fat", "thin-host", "thin-guest", "thin-vmm")


def test_vmm_ide_key_difference_found_and_worded() -> None:
    cmp = compare([make_result(("thin-guest", "thin-vmm"))])
    texts = [d.text() for d in cmp.differences]
    assert "vmm: ide-key never (thin-guest) vs plaintext (thin-vmm)" in texts
    assert cmp.differs("ide-key", "vmm")
    assert cmp.level("thin-vmm", "ide-key", "vmm") is Exposure.SAW_PLAINTEXT
    assert cmp.level("thin-guest", "ide-key", "vmm") is Exposure.NEVER
    # thin-keyslot exists only in thin-guest and holds the key there.
    assert "thin-keyslot: ide-key absent (thin-vmm) vs plaintext (thin-guest)" in texts
    # The same in both: the device generated its identity key, the Root Port holds the IDE key.
    assert not cmp.differs("device-identity-key", "gpu0.dsm")
    assert not cmp.differs("ide-key", "rp0")


def test_differences_exactly_the_cells_whose_levels_differ() -> None:
    cmp = compare([make_result(ALL)])
    expected = set()
    for cls in cmp.secret_classes:
        for comp in cmp.components:
            levels = {cmp.level(m, cls, comp) or Exposure.NEVER for m in cmp.models}
            if len(levels) > 1:
                expected.add((cls, comp))
    assert {(d.secret_class, d.component) for d in cmp.differences} == expected
    assert ("ide-key", "vmm") in expected and ("spdm-session-key", "host-kernel") in expected
    # Groups several models that share a level, lowest level first.
    text = next(d.text() for d in cmp.differences if (d.secret_class, d.component) == ("ide-key", "vmm"))
    assert text == "vmm: ide-key never (fat, thin-host, thin-guest) vs plaintext (thin-vmm)"


def test_absent_versus_never_is_not_a_difference() -> None:
    # fat-tsm does not exist in thin-guest; in fat it never saw the device identity key: same effective level.
    cmp = compare([make_result(("fat", "thin-guest"))])
    assert cmp.level("thin-guest", "device-identity-key", "fat-tsm") is None
    assert cmp.level("fat", "device-identity-key", "fat-tsm") is Exposure.NEVER
    assert not cmp.differs("device-identity-key", "fat-tsm")
    assert cmp.differs("ide-key", "fat-tsm")


def test_single_model_has_no_differences() -> None:
    cmp = compare([make_result(("fat",))])
    assert cmp.differences == ()
    assert cmp.models == ["fat"]


def test_results_from_separate_files_are_merged_in_order() -> None:
    cmp = compare([make_result(("thin-vmm",)), make_result(("fat", "thin-guest"))])
    assert cmp.models == ["thin-vmm", "fat", "thin-guest"]
    with pytest.raises(ReportInputError, match=r"^results\[1\]\.models\.fat: this model was already run"):
        compare([make_result(("fat",)), make_result(("fat",))])
    other = make_result(("thin-guest",))
    other["scenario"]["name"] = "fleet-boot"  # type: ignore[index]
    with pytest.raises(ReportInputError, match=r"^results\[1\]\.scenario\.name: scenario 'fleet-boot' differs"):
        compare([make_result(("fat",)), other])


def test_holders_are_generators_and_plaintext_viewers() -> None:
    cmp = compare([make_result(ALL)])
    assert cmp.holders("thin-vmm")["ide-key"] == ["gpu0.dsm", "guest", "rp0", "vmm"]
    assert cmp.holders("fat")["ide-key"] == ["fat-tsm", "gpu0.dsm", "rp0"]
    assert "vmm" not in cmp.holders("thin-guest")["spdm-session-key"]   # it only carried ciphertext
    assert cmp.holders("fat")["psk"] == []


def test_trusted_base_read_in_both_shapes() -> None:
    result = make_result(("fat", "thin-guest"))
    result["models"]["fat"]["trusted_base"] = {  # type: ignore[index]
        "ide-key-confidentiality": ["fat-tsm", "rp0"],
        "attestation-integrity": {"components": ["fat-tsm", "gpu0.dsm"], "strategies": ["substitute-identity"]},
    }
    cmp = compare([result])
    assert cmp.run("fat").trusted_base == {"ide-key-confidentiality": ("fat-tsm", "rp0"),
                                           "attestation-integrity": ("fat-tsm", "gpu0.dsm")}
    assert cmp.run("thin-guest").trusted_base is None
    data = cmp.to_json()
    assert data["trusted_base"] == {"fat": {
        "ide-key-confidentiality": {"status": "exercised", "components": ["fat-tsm", "rp0"], "why": ""},
        "attestation-integrity": {"status": "exercised", "components": ["fat-tsm", "gpu0.dsm"], "why": ""}},
        "thin-guest": None}


def test_metrics_side_by_side() -> None:
    cmp = compare([make_result(ALL)])
    data = cmp.to_json()
    gpu0 = data["devices"]["gpu0"]  # type: ignore[index]
    assert gpu0["fat"]["time_to_secure_ns"] == 41_234_567
    assert gpu0["thin-host"]["time_to_run_ns"] is None
    assert gpu0["thin-vmm"]["recoveries"][0]["latency_ns"] == 35_400_000
    assert gpu0["fat"]["insecure_total_ns"] == 41_234_567
    assert data["fleet"]["thin-guest"] == {"devices": 2, "secured": 2, "time_to_secure_ns": 36_500_000}
    assert data["firmware"]["fat"]["max_queue_depth"] == 3  # type: ignore[index]
    assert data["firmware"]["thin-host"] is None and data["firmware"]["thin-vmm"] is None  # type: ignore[index]
    assert data["forwarded"]["vmm"] == {"fat": 120, "thin-host": 0, "thin-guest": 120, "thin-vmm": 120}
    assert data["crypto_ops"]["guest"]["ecdh-p384"] == {"fat": 0, "thin-host": 0, "thin-guest": 1, "thin-vmm": 1}
    assert data["crypto_ops_total"]["fat-tsm"]["fat"] == 44  # type: ignore[index]
    # Failing expectations first.
    assert [e["held"] for e in data["expectations"]["thin-vmm"]] == [False, True]  # type: ignore[index]
    assert data["ok"] is False and data["runs"]["fat"]["ok"] is True  # type: ignore[index]


def test_report_json_deterministic_and_sorted() -> None:
    a = compare([make_result(ALL)]).to_json_text()
    b = compare([json.loads(json.dumps(make_result(ALL)))]).to_json_text()
    assert a == b
    # The exposure part is built from fresh random secrets each time, so equality also shows no value leaks.
    data = json.loads(a)
    assert list(data) == sorted(data)
    assert json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n" == a


def test_optional_fields_missing() -> None:
    result = make_result(("thin-host", "thin-vmm"), devices=1, tdis=False, fault=False)
    run = result["models"]["thin-vmm"]  # type: ignore[index]
    for key in ("fleet", "firmware", "forwarded", "crypto_ops", "sequence", "trusted_base", "end_ns",
                "trace_digest", "trace_events", "model"):
        run.pop(key, None)
    dev = run["devices"]["gpu0"]
    for key in ("tdis", "tdi_transitions", "insecure_windows", "recoveries", "stream", "attestation",
                "time_to_run_ns", "owner", "secured_by"):
        dev.pop(key)
    cmp = compare([result])
    vmm = cmp.run("thin-vmm")
    assert vmm.firmware is None and vmm.forwarded == {} and vmm.sequence == () and vmm.trusted_base is None
    assert vmm.fleet.devices == 1 and vmm.fleet.secured == 1 and vmm.fleet.time_to_secure_ns == 35_400_000
    assert vmm.end_ns == 35_400_000   # derived from the latest transition
    assert vmm.devices["gpu0"].tdis == {} and vmm.devices["gpu0"].tdi_ids() == []
    assert cmp.run("thin-host").firmware is None  # the key is absent from the fixture altogether
    json.loads(cmp.to_json_text())


def test_no_devices_at_all() -> None:
    result = make_result(("fat", "thin-guest"))
    for run in result["models"].values():  # type: ignore[union-attr]
        run["devices"] = {}
        run.pop("fleet")
    cmp = compare(result)   # a single dict is accepted too
    assert cmp.device_names() == []
    assert cmp.run("fat").fleet.devices == 0 and cmp.run("fat").fleet.time_to_secure_ns is None


def test_open_insecure_window_counts_to_end_of_run() -> None:
    result = make_result(("fat",), devices=1)
    result["models"]["fat"]["devices"]["gpu0"]["insecure_windows"] = [[100_000_000, None]]  # type: ignore[index]
    dev = compare([result]).run("fat").devices["gpu0"]
    assert dev.insecure_windows == ((100_000_000, None),)
    assert dev.insecure_total_ns(150_000_000) == 50_000_000


BAD_CASES = [
    (lambda r: r["models"]["fat"]["devices"]["gpu0"].__setitem__("time_to_secure_ns", "soon"),
     r"results\[0\]\.models\.fat\.devices\.gpu0\.time_to_secure_ns: expected an integer, got str 'soon'"),
    (lambda r: r["models"]["fat"]["exposure"]["matrix"]["ide-key"].__setitem__("vmm", "SOMETIMES"),
     r"results\[0\]\.models\.fat\.exposure\.matrix\.ide-key\.vmm: expected one of NEVER, SAW_CIPHERTEXT_ONLY"),
    (lambda r: r["models"]["fat"].pop("exposure"),
     r"results\[0\]\.models\.fat\.exposure: required key is missing"),
    (lambda r: r["models"]["fat"]["expectations"][1].__setitem__("held", "yes"),
     r"results\[0\]\.models\.fat\.expectations\[1\]\.held: expected true or false, got str 'yes'"),
    (lambda r: r["models"]["fat"]["devices"]["gpu0"]["insecure_windows"].append([5]),
     r"results\[0\]\.models\.fat\.devices\.gpu0\.insecure_windows\[1\]: expected a \[start_ns, end_ns\] pair"),
    (lambda r: r["models"]["fat"]["devices"]["gpu0"]["insecure_windows"].append([9, 3]),
     r"results\[0\]\.models\.fat\.devices\.gpu0\.insecure_windows\[1\]: window ends \(3\) before it starts \(9\)"),
    (lambda r: r["models"]["fat"]["firmware"]["queue_depth"].__setitem__(2, [1, -4]),
     r"results\[0\]\.models\.fat\.firmware\.queue_depth\[2\]\[1\]: expected a non-negative integer, got int -4"),
    (lambda r: r["models"]["fat"]["sequence"][0].pop("summary"),
     r"results\[0\]\.models\.fat\.sequence\[0\]\.summary: required key is missing"),
    (lambda r: r["models"]["fat"]["crypto_ops"]["gpu0.dsm"].__setitem__("ecdh-p384", True),
     r'results\[0\]\.models\.fat\.crypto_ops\["gpu0\.dsm"\]\.ecdh-p384: expected an integer, got boolean true'),
    (lambda r: r["models"]["fat"].__setitem__("model", "thin-guest"),
     r"results\[0\]\.models\.fat\.model: names model 'thin-guest' but is stored under 'fat'"),
    (lambda r: r["models"]["fat"].__setitem__("devices", []),
     r"results\[0\]\.models\.fat\.devices: expected an object, got a list"),
    (lambda r: r["models"]["fat"].__setitem__("trusted_base", {"p": {"who": []}}),
     r"results\[0\]\.models\.fat\.trusted_base\.p\.components: required key is missing"),
    (lambda r: r.__setitem__("format", 2), r"results\[0\]\.format: unsupported result format 2"),
    (lambda r: r.__setitem__("models", {}), r"results\[0\]\.models: no model runs in this result"),
    (lambda r: r["scenario"].pop("name"), r"results\[0\]\.scenario\.name: required key is missing"),
    (lambda r: r["models"]["fat"]["devices"].__setitem__("odd key", None),
     r'results\[0\]\.models\.fat\.devices\["odd key"\]: expected an object, got null'),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_CASES)
def test_malformed_result_names_key_path(mutate, message) -> None:  # type: ignore[no-untyped-def]
    result = clone(make_result(("fat",), devices=1))
    mutate(result)
    with pytest.raises(ReportInputError, match="^" + message):
        compare([result])


def test_top_level_input_errors() -> None:
    with pytest.raises(ReportInputError, match=r"^results: no results to compare"):
        compare([])
    with pytest.raises(ReportInputError, match=r"^results\[0\]: expected an object, got str"):
        compare(["result.json"])  # type: ignore[list-item]
    with pytest.raises(ReportInputError, match=r"^result\.models\.fat: expected an object, got int 3"):
        read_result({"format": 1, "scenario": {"name": "x"}, "models": {"fat": 3}})


@settings(max_examples=100, deadline=None)
@given(path_parts=st.lists(st.sampled_from(["models", "fat", "devices", "gpu0", "exposure", "matrix", "ide-key",
                                           "expectations", "sequence", "firmware", "stream", 0, 1]),
                           min_size=1, max_size=5),
       junk=st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4),
                      st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                          max_size=2)))
def test_any_corruption_gives_report_input_error_or_a_comparison(path_parts, junk) -> None:  # type: ignore[no-untyped-def]
    """Replacing any reachable node by junk never raises anything but ReportInputError."""
    result = make_result(("fat", "thin-vmm"), devices=1)
    node: object = result
    for part in path_parts[:-1]:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
    last = path_parts[-1]
    if isinstance(node, dict) and isinstance(last, str):
        node[last] = junk
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = junk
    try:
        cmp = compare([result])
    except ReportInputError as exc:
        assert exc.path.startswith("results[0]")
    else:
        json.loads(cmp.to_json_text())


def test_format_ns_units() -> None:
    assert format_ns(None) == "never"
    assert format_ns(999) == "999 ns"
    assert format_ns(41_234_567) == "41.235 ms"
    assert format_ns(2_500) == "2.500 µs"
    assert format_ns(1_500_000_000) == "1.500 s"


def test_exposure_levels_as_scenario_words_are_read() -> None:
    result = make_result(("fat", "thin-guest"))
    result["models"]["fat"]["exposure"]["matrix"]["ide-key"]["vmm"] = "plaintext"  # type: ignore[index]
    cmp = compare([result])
    assert cmp.level("fat", "ide-key", "vmm") is Exposure.SAW_PLAINTEXT
    assert "vmm: ide-key never (thin-guest) vs plaintext (fat)" in [d.text() for d in cmp.differences]


def test_attestation_in_both_shapes() -> None:
    cmp = compare([make_result(("fat", "thin-guest"))])
    fat = cmp.run("fat").devices["gpu0"].attestations
    assert [(a.by, a.ok, a.at_ns) for a in fat] == [("fat-tsm", True, 41_233_567), ("guest", True, 45_234_567)]
    guest = cmp.run("thin-guest").devices["gpu0"].attestations
    assert [(a.by, a.ok, a.at_ns) for a in guest] == [("guest", True, None)]
    result = make_result(("fat",))
    result["models"]["fat"]["devices"]["gpu0"]["attestation"]["extra"] = True  # type: ignore[index]
    with pytest.raises(ReportInputError, match=r"^results\[0\]\.models\.fat\.devices\.gpu0\.attestation\.extra: "
                                               r"expected an object per verifier, got boolean true"):
        compare([result])


def test_roles_phases_wiring_and_notes() -> None:
    cmp = compare([make_result(ALL)])
    data = cmp.to_json()
    assert data["roles"]["fat-tsm"] == {"fat": "fat-tsm", "thin-host": None, "thin-guest": None,  # type: ignore[index]
                                        "thin-vmm": None}
    assert data["runs"]["thin-host"]["notes"] == ["gpu0 assigned to tvm0 stays host-owned"]  # type: ignore[index]
    phases = data["devices"]["gpu0"]["fat"]["phases"]  # type: ignore[index]
    assert list(phases) == ["VCA", "KEY_EXCHANGE", "KEY_PROG", "K_SET_GO"]
    assert phases["KEY_PROG"] == {"t_ns": 41_234_567 // 8 * 3, "by": "firmware"}
