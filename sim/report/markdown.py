"""report.md: the comparison as GitHub-flavoured Markdown, readable in a terminal or a pull request.

Cells that differ between models are bold with a ``≠`` marker; failures are bold with ``✗``.
Plots live in report.html only; this file names them so a reader knows where to look.
"""

from __future__ import annotations

import re

from sim.report.compare import Comparison, format_ns
from sim.report.tables import (
    DIFF_NOTE,
    HOLDERS_LABEL,
    HOLDERS_NOTE,
    Cell,
    Mark,
    Section,
    Table,
    crypto_table,
    device_table,
    exposure_table,
    firmware_table,
    forwarded_table,
    hidden_secret_classes,
    holders_table,
    insecure_windows_table,
    phases_table,
    recovery_table,
    roles_table,
    runs_table,
    secret_counts_table,
    time_to_secure_table,
    trusted_base_evidence_table,
    trusted_base_table,
)

DIFFERS_MARKER = "≠"
FAIL_MARKER = "✗"
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def code(text: str) -> str:
    """An inline code span that survives backticks in the text (CommonMark: a longer fence), on one line."""
    text = " ".join(text.split("\n"))
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _plain(text: str) -> str:
    """Escape the characters that would start Markdown emphasis, links or HTML in prose; one line."""
    text = " ".join(text.split("\n"))
    for ch in "\\`*[]":
        text = text.replace(ch, "\\" + ch)
    # "<" starts raw HTML only before a tag-like character; an underscore inside a word never starts emphasis.
    text = _TAG_START.sub(r"\\<", text)
    return _EDGE_UNDERSCORE.sub(r"\\_", text)


def _cell(cell: Cell) -> str:
    text = code(cell.text) if cell.code else _plain(cell.text)
    if cell.mark is Mark.DIFFERS:
        text = f"**{text}** {DIFFERS_MARKER}"
    elif cell.mark is Mark.FAIL:
        text = f"**{text}** {FAIL_MARKER}"
    return text.replace("|", "\\|").replace("\n", " ")


def table(t: Table) -> list[str]:
    if t.empty:
        return []
    lines = ["| " + " | ".join(_plain(h).replace("|", "\\|") for h in t.header) + " |",
             "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return lines


def _section(lines: list[str], section: Section) -> None:
    lines += ["", f"## {section.value}", ""]


def _or(lines: list[str], t: Table, empty: str) -> None:
    lines += table(t) or [empty]


def render_markdown(cmp: Comparison, plot_names: list[str] | None = None) -> str:
    """The whole report as Markdown text (ends with a newline)."""
    sc = cmp.scenario
    lines = [f"# tiosim comparison: {_plain(sc.name)}", ""]
    where = ", ".join(x for x in (sc.file and f"file {code(sc.file)}", sc.seed is not None and f"seed {sc.seed}")
                      if x)
    lines.append(f"Scenario {code(sc.name)}" + (f" ({where})" if where else "") + ", run under "
                 + ", ".join(code(m) for m in cmp.models) + ".")
    if sc.description:
        lines += ["", _plain(" ".join(sc.description.split()))]
    failing = [r.name for r in cmp.runs if not r.ok]
    lines += ["", (f"**Result: FAIL** {FAIL_MARKER}: expectations failed under " + ", ".join(code(m) for m in failing)
                   + "." if failing else "**Result: ok**: every expectation held under every model."),
              "", f"Exposure differences between models: {len(cmp.differences)}."]
    if any(r.wiring or r.notes for r in cmp.runs):
        lines += ["", "Models:", ""]
        for r in cmp.runs:
            lines.append(f"- {code(r.name)}: {_plain(r.wiring or '')}".rstrip())
            lines += [f"  - note: {_plain(n)}" for n in r.notes]

    _section(lines, Section.TRUSTED_BASE)
    tb = trusted_base_table(cmp)
    if tb is None:
        lines.append("No run carries a measured trusted base (the adversary sweep did not run).")
    else:
        lines += ["The decision: per security property, the components whose compromise breaks it without detection "
                  "(for liveness, detected or not). **Not exercised** means nothing of that property was at stake "
                  "or no adversary ever acted on it, so the run says nothing about it; **broken without any "
                  "compromise** means the run with nobody compromised already violates it.", ""]
        lines += table(tb) or ["No properties."]
        lines += ["", f"### Where the trusted bases differ, demonstrated by scenario `{cmp.scenario.name}`", ""]
        _or(lines, trusted_base_evidence_table(cmp), "The trusted base of every property is the same in every model.")
    lines += ["", f"### {HOLDERS_LABEL}", "", f"({HOLDERS_NOTE}.)", ""]
    _or(lines, holders_table(cmp), "No secrets.")


    _section(lines, Section.EXPECTATIONS)
    for r in cmp.runs:
        held = sum(e.held for e in r.expectations)
        lines += [f"### {r.name}: {'ok' if r.ok else 'FAIL'} ({held}/{len(r.expectations)} held)", ""]
        if not r.expectations:
            lines.append("No expectations.")
        for e in r.expectations_failing_first():
            status = f"**FAIL** {FAIL_MARKER}" if not e.held else "ok"
            detail = f": {_plain(e.detail)}" if e.detail else ""
            lines.append(f"- {status} #{e.index} {_plain(e.text)}{detail}")
        lines.append("")

    _section(lines, Section.EXPOSURE)
    lines.append(f"Levels: generated > plaintext > ciphertext (only) > never; — = no such component in that "
                 f"model; {DIFF_NOTE} **bold** {DIFFERS_MARKER}.")
    hidden = hidden_secret_classes(cmp)
    if hidden:
        lines.append("Secret classes with no secret in any model (never seen by anyone): "
                     + ", ".join(code(c) for c in hidden) + ".")
    roles = roles_table(cmp)
    if not roles.empty:
        lines += ["", "### Component roles", ""]
        lines += table(roles)
    for m in cmp.models:
        lines += ["", f"### {m}", ""]
        _or(lines, exposure_table(cmp, m), "No components.")
    lines += ["", "### Secrets registered per class", ""]
    _or(lines, secret_counts_table(cmp), "No secrets were registered.")

    _section(lines, Section.DIFFERENCES)
    if cmp.differences:
        lines += [f"- {code(d.text())}" for d in cmp.differences]
    else:
        lines.append("None: every component saw every secret class at the same level in every model."
                     if len(cmp.runs) > 1 else "Only one model was run; nothing to compare.")

    _section(lines, Section.TIME_TO_SECURE)
    lines += ["Simulated time from boot.", ""]
    _or(lines, time_to_secure_table(cmp), "No devices.")
    for name in cmp.device_names():
        phases = phases_table(cmp, name)
        if not phases.empty:
            lines += ["", f"### {code(name)}: securing phases (first reached, by)", ""]
            lines += table(phases)

    _section(lines, Section.RECOVERY)
    _or(lines, recovery_table(cmp), "No faults were injected.")

    _section(lines, Section.INSECURE_WINDOWS)
    lines += ["Intervals a device ran with its stream insecure or unauthenticated after having been secured.", ""]
    _or(lines, insecure_windows_table(cmp), "None in any model.")

    _section(lines, Section.FIRMWARE_QUEUE)
    _or(lines, firmware_table(cmp), "No runs.")

    _section(lines, Section.FORWARDED)
    _or(lines, forwarded_table(cmp), "No component forwarded DOE objects.")

    _section(lines, Section.CRYPTO)
    _or(lines, crypto_table(cmp), "No crypto operations were counted.")

    _section(lines, Section.DEVICES)
    for name in cmp.device_names():
        lines += [f"### {code(name)}", ""]
        lines += table(device_table(cmp, name))
        lines.append("")
    if not cmp.device_names():
        lines.append("No devices.")

    _section(lines, Section.TIMELINES)
    timelines = [n.split(":", 1)[1] for n in (plot_names or []) if n.startswith("timeline:")]
    if timelines:
        lines.append("Stream and TDI state timelines per device are plotted in report.html for: "
                     + ", ".join(code(n) for n in timelines) + ".")
    else:
        lines.append("No timelines were plotted.")

    _section(lines, Section.SEQUENCE)
    for r in cmp.runs:
        lines += [f"### {r.name} ({len(r.sequence)} crossings of the first device's flow)", ""]
        if not r.sequence:
            lines.append("No crossings recorded.")
        for x in r.sequence:
            channel = f" [{_plain(x.channel)}]" if x.channel else ""
            lines.append(f"- {format_ns(x.t_ns)} {code(x.source)} → {code(x.destination)}{channel}: {code(x.summary)}")
        lines.append("")

    _section(lines, Section.RUNS)
    lines += table(runs_table(cmp))
    return "\n".join(lines).rstrip("\n") + "\n"
