"""report.html: the comparison as one self-contained page (inline CSS, plots as base64 PNG data URIs).

The page is rendered from templates/report.html.j2 with autoescaping on; nothing in it refers to an
external asset, so it opens offline and can be attached to a bug or a pull request as is.
"""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2

from sim.report import tables
from sim.report.compare import Comparison, format_ns
from sim.report.tables import Section

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "report.html.j2"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["ns"] = format_ns
    return env


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(cmp: Comparison, plots: dict[str, bytes]) -> str:
    """The whole report as HTML text; ``plots`` as returned by plots.report_plots."""
    devices = cmp.device_names()
    timelines = [(name, data_uri(plots[f"timeline:{name}"])) for name in devices if f"timeline:{name}" in plots]
    return _environment().get_template(TEMPLATE_NAME).render(
        cmp=cmp,
        Section=Section,
        sections=list(Section),
        failing=[r.name for r in cmp.runs if not r.ok],
        exposure_tables={m: tables.exposure_table(cmp, m) for m in cmp.models},
        hidden_classes=tables.hidden_secret_classes(cmp),
        secret_counts=tables.secret_counts_table(cmp),
        trusted_base=tables.trusted_base_table(cmp),
        trusted_base_evidence=tables.trusted_base_evidence_table(cmp),
        holders=tables.holders_table(cmp),
        holders_label=tables.HOLDERS_LABEL,
        holders_note=tables.HOLDERS_NOTE,
        diff_note=tables.DIFF_NOTE,
        time_to_secure=tables.time_to_secure_table(cmp),
        phase_tables=[(name, t) for name in devices if not (t := tables.phases_table(cmp, name)).empty],
        roles=tables.roles_table(cmp),
        recovery=tables.recovery_table(cmp),
        insecure=tables.insecure_windows_table(cmp),
        firmware=tables.firmware_table(cmp),
        forwarded=tables.forwarded_table(cmp),
        crypto=tables.crypto_table(cmp),
        device_tables=[(name, tables.device_table(cmp, name)) for name in devices],
        sequences=[(r.name, tables.sequence_table(cmp, r.name)) for r in cmp.runs],
        runs=tables.runs_table(cmp),
        secured_plot=data_uri(plots["secured"]) if "secured" in plots else None,
        queue_plot=data_uri(plots["queue_depth"]) if "queue_depth" in plots else None,
        timelines=timelines,
        untimed_devices=[name for name in devices if f"timeline:{name}" not in plots],
    )
