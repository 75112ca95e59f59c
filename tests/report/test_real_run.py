"""A report rendered from a real run of scenarios/passthrough-guest.yaml under every model it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.engine.exposure import Exposure
from sim.report.compare import compare
from sim.report.tables import Section
from sim.report.write import write_report
from tests.report.test_render import _parse

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "passthrough-guest.yaml"


@pytest.fixture(scope="module")
def result() -> dict[str, object]:
    if not SCENARIO.is_file():
        pytest.skip("scenarios/passthrough-guest.yaml is not there yet")
    run = pytest.importorskip("sim.scenario.run")
    loader = pytest.importorskip("sim.scenario.loader")
    scenario = loader.load_scenario(str(SCENARIO))
    out = run.run_scenario(scenario, None, scenario_file="scenarios/passthrough-guest.yaml")
    # What `tiosim run` writes and the report reads is JSON: go through it, as the files do.
    return json.loads(json.dumps(out, sort_keys=True))


def test_report_from_a_real_run(result: dict[str, object], tmp_path: Path) -> None:
    paths = write_report(result, tmp_path / "a")
    again = write_report([json.loads(json.dumps(result))], tmp_path / "b")
    for a, b in zip(paths, again, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name

    cmp = compare(result)
    assert cmp.models == list(result["models"])  # type: ignore[call-overload]
    assert set(cmp.models) == {"fat", "thin-host", "thin-guest", "thin-vmm"}
    assert cmp.ok == result["ok"]
    # The scenario's own exposure rules: the VMM holds IDE keys in plaintext only where it writes the Root
    # Port's key slots itself (thin-vmm); under the fat TSM it never sees them. The report must show that.
    vmm_ide = next(d for d in cmp.differences if (d.component, d.secret_class) == ("vmm", "ide-key"))
    assert vmm_ide.levels["thin-vmm"] is Exposure.SAW_PLAINTEXT
    assert vmm_ide.levels["fat"] is Exposure.NEVER
    assert "vmm" in cmp.holders("thin-vmm")["ide-key"] and "vmm" not in cmp.holders("fat")["ide-key"]

    md = paths.markdown.read_text(encoding="utf-8")
    for section in Section:
        assert f"\n## {section.value}\n" in md
    assert vmm_ide.text() in md
    page = _parse(paths.html.read_text(encoding="utf-8"))
    devices = cmp.device_names()
    assert devices
    has_queue = any(r.firmware is not None for r in cmp.runs)
    assert len(page.images) == 1 + int(has_queue) + len(devices)
    assert all((img["src"] or "").startswith("data:image/png;base64,") for img in page.images)
    assert ("differs", "plaintext") in page.cells

    report = json.loads(paths.json.read_text(encoding="utf-8"))
    assert report["exposure"]["matrix"]["thin-vmm"]["ide-key"]["vmm"] == "plaintext"
    assert report["exposure"]["matrix"]["fat"]["ide-key"]["vmm"] == "never"
    for model, run in result["models"].items():  # type: ignore[attr-defined]
        for name, dev in run["devices"].items():
            assert report["devices"][name][model]["time_to_secure_ns"] == dev["time_to_secure_ns"]
