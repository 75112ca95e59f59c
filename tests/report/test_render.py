"""The rendered report: Markdown sections and markers, HTML structure and images, determinism."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sim.report import plots
from sim.report.compare import ReportInputError, compare
from sim.report.html import TEMPLATE_DIR, TEMPLATE_NAME
from sim.report.markdown import DIFFERS_MARKER, FAIL_MARKER, code
from sim.report.plots import MAX_TIMELINE_DEVICES, report_plots
from sim.report.tables import Section
from sim.report.write import render_report, write_report
from tests.report.results_factory import make_result

ALL = ("fat", "thin-host", "thin-guest", "thin-vmm")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Page(HTMLParser):
    """Collects what the tests look at, and checks that every non-void tag is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.h2: list[str] = []
        self.ids: list[str] = []
        self.cells: list[tuple[str | None, str]] = []   # (class, text) of every <td>
        self.list_items: list[tuple[str | None, str]] = []
        self.scripts = 0
        self._capture: list[tuple[str, str | None, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "id" in a and a["id"]:
            self.ids.append(a["id"])
        if tag == "img":
            self.images.append(a)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag == "script":
            self.scripts += 1
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag in ("td", "li", "h2"):
            self._capture.append((tag, a.get("class"), []))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]} at {self.getpos()}")
            return
        self.stack.pop()
        if self._capture and self._capture[-1][0] == tag:
            kind, cls, parts = self._capture.pop()
            text = "".join(parts).strip()
            if kind == "td":
                self.cells.append((cls, text))
            elif kind == "li":
                self.list_items.append((cls, text))
            else:
                self.h2.append(text)

    def handle_data(self, data: str) -> None:
        for _, _, parts in self._capture:
            parts.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    assert page.errors == []
    assert page.stack == []
    return page


def _png_chunks(png: bytes) -> list[bytes]:
    assert png.startswith(PNG_SIGNATURE)
    pos, kinds = len(PNG_SIGNATURE), []
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + data) == struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])[0]
        kinds.append(kind)
        pos += 12 + length
    assert kinds[-1] == b"IEND"
    return kinds


def _md_section(md: str, title: str) -> str:
    """The text of one '## title' section, up to the next '## '."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, re.S | re.M)
    assert match, title
    return match.group(1)


def _md_subsection(section: str, title: str) -> str:
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^### |\Z)", section, re.S | re.M)
    assert match, title
    return match.group(1)


@pytest.fixture(scope="module")
def full() -> tuple[str, str, str]:
    r = render_report([make_result(ALL)])
    return r.markdown, r.html, r.json


def test_markdown_has_every_section_in_order(full: tuple[str, str, str]) -> None:
    md = full[0]
    positions = [md.index(f"\n## {s.value}\n") for s in Section]
    assert positions == sorted(positions)
    assert md.startswith("# tiosim comparison: passthrough-guest\n")
    assert "**Result: FAIL**" in md


def test_markdown_marks_differing_cells_only(full: tuple[str, str, str]) -> None:
    exposure = _md_section(full[0], Section.EXPOSURE.value)
    vmm_rows = {m: next(line for line in _md_subsection(exposure, m).splitlines() if line.startswith("| `vmm`"))
                for m in ALL}
    header = next(line for line in _md_subsection(exposure, "thin-vmm").splitlines() if line.startswith("| component"))
    ide_col = [c.strip() for c in header.strip("|").split("|")].index("ide-key")
    cells = {m: [c.strip() for c in row.strip("|").split("|")] for m, row in vmm_rows.items()}
    assert cells["thin-vmm"][ide_col] == f"**plaintext** {DIFFERS_MARKER}"
    assert cells["thin-guest"][ide_col] == f"**never** {DIFFERS_MARKER}"
    # The Root Port holds the IDE key in every model: the same level, so not marked.
    rp_row = next(line for line in _md_subsection(exposure, "fat").splitlines() if line.startswith("| `rp0`"))
    assert [c.strip() for c in rp_row.strip("|").split("|")][ide_col] == "plaintext"
    diffs = _md_section(full[0], Section.DIFFERENCES.value)
    assert f"- {code('vmm: ide-key never (fat, thin-host, thin-guest) vs plaintext (thin-vmm)')}" in diffs


def test_markdown_expectations_failing_first(full: tuple[str, str, str]) -> None:
    section = _md_section(full[0], Section.EXPECTATIONS.value)
    vmm = _md_subsection(section, "thin-vmm: FAIL (1/2 held)")
    items = [line for line in vmm.splitlines() if line.startswith("- ")]
    assert items[0].startswith(f"- **FAIL** {FAIL_MARKER} #1 ")
    assert items[1].startswith("- ok #0 ")
    assert "FAIL" not in _md_subsection(section, "fat: ok (2/2 held)")


def test_markdown_sequence_list_and_metrics(full: tuple[str, str, str]) -> None:
    md = full[0]
    seq = _md_subsection(_md_section(md, Section.SEQUENCE.value), "fat (3 crossings of the first device's flow)")
    assert "- 1.000 µs `host-kernel` → `gpu0` [doe]: `SPDM 1.2 GET_VERSION`" in seq
    # A summary holding backticks gets a longer code fence, so it cannot break the line.
    assert "``secured 0xfffdfffe `IDE_KM KEY_PROG` *stream* 1``" in seq
    times = _md_section(md, Section.TIME_TO_SECURE.value)
    assert "| `gpu0` | stream secure | 41.235 ms | 30.000 ms | 35.500 ms | 35.400 ms |" in times
    assert "| `gpu0` | TDI RUN | 45.235 ms | host-owned | 39.500 ms | 39.400 ms |" in times
    assert "| fat | `gpu0` | `dpc` | 60.000 ms | 101.235 ms | 41.235 ms | fat-tsm |" in \
        _md_section(md, Section.RECOVERY.value)
    fw = _md_section(md, Section.FIRMWARE_QUEUE.value)
    assert "| fat | 130 | 3 | 4 |" in fw
    assert "| thin-vmm | no firmware command queue | — | — |" in fw
    assert "| `vmm` | **120** ≠ | **0** ≠ | **120** ≠ | **120** ≠ |" in _md_section(md, Section.FORWARDED.value)
    holders = _md_section(md, Section.TRUSTED_BASE.value)
    assert "No run carries a measured trusted base" in holders
    assert "Components that held each secret in plaintext or generated it" in holders
    assert "**gpu0.dsm, guest, rp0, vmm** ≠" in holders


def _md_tables(md: str) -> list[list[str]]:
    tables: list[list[str]] = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    return tables


def test_markdown_tables_keep_their_columns() -> None:
    """Every row of a table has as many unescaped pipes as its header: a pipe inside a cell is escaped."""
    result = make_result(("fat", "thin-guest"))
    result["models"]["fat"]["forwarded"]["relay|odd"] = 3  # type: ignore[index]
    md = render_report([result]).markdown
    tables = _md_tables(md)
    assert len(tables) > 10
    for rows in tables:
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(widths) == 1, rows
    assert "| `relay\\|odd` | **3** ≠ | **0** ≠ |" in md


def test_html_parses_and_embeds_images(full: tuple[str, str, str]) -> None:
    page = _parse(full[1])
    assert page.h2 == [s.value for s in Section]
    assert {s.anchor for s in Section} <= set(page.ids)
    assert page.scripts == 0
    assert all(link.startswith("#") for link in page.links)
    # secured-over-time, queue depth, and one timeline per device.
    assert len(page.images) == 2 + 2
    for img in page.images:
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,"), src[:40]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        kinds = _png_chunks(png)
        assert b"tEXt" not in kinds and b"tIME" not in kinds   # no Software string, no timestamp
        assert img["alt"]
    assert "http://" not in full[1] and "https://" not in full[1]


def test_html_colours_differing_cells(full: tuple[str, str, str]) -> None:
    page = _parse(full[1])
    differing = [text for cls, text in page.cells if cls == "differs"]
    assert "plaintext" in differing and "absent" in differing
    assert "td.differs { background:" in full[1]
    failing = [text for cls, text in page.list_items if cls == "fail"]
    assert failing == ["FAIL #1 exposure vmm ide-key at most never: vmm saw ide-key: plaintext"]
    # Summaries are escaped, not interpreted.
    assert "&lt;ok&gt;" in full[1] and "<ok>" not in full[1]
    assert ("", "SPDM 1.2 GET_VERSION") not in page.cells
    assert (None, "SPDM 1.2 GET_VERSION") in page.cells


def test_identical_inputs_give_identical_bytes(tmp_path: Path) -> None:
    a = write_report([make_result(ALL)], tmp_path / "a")
    b = write_report([json.loads(json.dumps(make_result(ALL)))], tmp_path / "b")
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    assert [p.name for p in a] == ["report.md", "report.html", "report.json"]
    assert json.loads(a.json.read_text())["exposure"]["differences"]


def test_single_model_without_firmware_or_tdis(tmp_path: Path) -> None:
    result = make_result(("thin-host",), devices=1, tdis=False, fault=False)
    paths = write_report(result, tmp_path)
    md = paths.markdown.read_text()
    assert "Only one model was run; nothing to compare." in md
    assert "No faults were injected." in md
    assert "None in any model." in md
    assert "| thin-host | no firmware command queue | — | — |" in md
    page = _parse(paths.html.read_text())
    assert len(page.images) == 2   # secured over time and the device timeline; no queue plot
    assert not [c for c, _ in page.cells if c == "differs"]


def test_no_devices_and_nothing_counted(tmp_path: Path) -> None:
    result = make_result(("fat", "thin-vmm"))
    for run in result["models"].values():  # type: ignore[union-attr]
        run["devices"] = {}
        run.pop("fleet")
        run["crypto_ops"] = {}
        run["forwarded"] = {}
        run["sequence"] = []
        run["expectations"] = []
    paths = write_report([result], tmp_path)
    md = paths.markdown.read_text()
    for text in ("No devices.", "No timelines were plotted.", "No crossings recorded.", "No expectations.",
                 "No crypto operations were counted.", "No component forwarded DOE objects.", "**Result: ok**"):
        assert text in md, text
    page = _parse(paths.html.read_text())
    assert len(page.images) == 1   # only the fat firmware queue


def test_many_devices_timelines_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_TIMELINE_DEVICES >= 8
    monkeypatch.setattr(plots, "MAX_TIMELINE_DEVICES", 2)
    result = make_result(("fat",), devices=4, fault=False)
    assert [k for k in report_plots(compare([result])) if k.startswith("timeline:")] == ["timeline:gpu0",
                                                                                          "timeline:gpu1"]
    r = render_report([result])
    assert "Not plotted (only the first 2 devices are): gpu2, gpu3." in r.html
    assert "plotted in report.html for: `gpu0`, `gpu1`." in r.markdown
    assert len(_parse(r.html).images) == 2 + 1 + 1   # timelines, secured over time, queue depth


def test_trusted_base_rendered_when_present() -> None:
    result = make_result(("fat", "thin-vmm"))
    result["models"]["fat"]["trusted_base"] = {"ide-key-confidentiality": ["fat-tsm", "rp0"]}  # type: ignore[index]
    result["models"]["thin-vmm"]["trusted_base"] = {"ide-key-confidentiality": ["guest", "rp0", "vmm"]}  # type: ignore[index]
    r = render_report([result])
    section = _md_section(r.markdown, Section.TRUSTED_BASE.value)
    assert "| ide-key-confidentiality | **fat-tsm, rp0** ≠ | **guest, rp0, vmm** ≠ |" in section
    assert "(derived from the exposure matrix" in section
    page = _parse(r.html)
    assert ("differs", "guest, rp0, vmm") in page.cells


def test_malformed_result_writes_nothing(tmp_path: Path) -> None:
    result = make_result(("fat",))
    result["models"]["fat"]["devices"]["gpu1"]["stream_transitions"][0]["t_ns"] = -1  # type: ignore[index]
    with pytest.raises(ReportInputError, match=r"^results\[0\]\.models\.fat\.devices\.gpu1\.stream_transitions\[0\]"
                                               r"\.t_ns: expected a non-negative integer, got int -1"):
        write_report([result], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_template_ships_with_the_package() -> None:
    assert (TEMPLATE_DIR / TEMPLATE_NAME).is_file()
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'sim = ["report/templates/*.j2"]' in pyproject


def test_markdown_items_stay_on_one_line() -> None:
    result = make_result(("fat",), devices=1)
    run = result["models"]["fat"]  # type: ignore[index]
    run["sequence"][0]["summary"] = "SPDM\n## not a heading"
    run["expectations"][0]["detail"] = "line one\n- not an item"
    md = render_report([result]).markdown
    assert "\n## not a heading" not in md and "\n- not an item" not in md
    assert "`SPDM ## not a heading`" in md


def test_roles_phases_and_verdicts_rendered(full: tuple[str, str, str]) -> None:
    md = full[0]
    exposure = _md_section(md, Section.EXPOSURE.value)
    assert "| `fat-tsm` | **fat-tsm** ≠ | — | — | — |" in _md_subsection(exposure, "Component roles")
    times = _md_section(md, Section.TIME_TO_SECURE.value)
    assert "| `KEY_PROG` | 15.463 ms (firmware) | 11.250 ms (host) | 13.312 ms (tvm0) | 13.275 ms (tvm0) |" in times
    devices = _md_section(md, Section.DEVICES.value)
    assert "fat-tsm: ok (at 41.234 ms); guest: ok (at 45.235 ms)" in devices
    assert "  - note: gpu0 assigned to tvm0 stays host-owned" in md
    page = _parse(full[1])
    assert ("ok", "fat-tsm: ok (at 41.234 ms); guest: ok (at 45.235 ms)") not in page.cells
    assert (None, "fat-tsm: ok (at 41.234 ms); guest: ok (at 45.235 ms)") in page.cells


def test_timeline_rows_draw_unchanged_states_throughout() -> None:
    from sim.report.plots import _device_rows, _segments

    result = make_result(("thin-host",), devices=1, fault=False)
    dev = result["models"]["thin-host"]["devices"]["gpu0"]  # type: ignore[index]
    dev["tdis"] = {"tdi0": "CONFIG_UNLOCKED"}
    dev["tdi_transitions"] = []
    run = compare([result]).run("thin-host")
    rows = dict(_device_rows(run.devices["gpu0"]))
    assert _segments(rows["TDI tdi0"], run.end_ns) == [(0, 150_000_000, "CONFIG_UNLOCKED")]
    assert _segments(rows["stream"], run.end_ns) == [(0, 30_000_000, "insecure"), (30_000_000, 120_000_000, "secure")]
