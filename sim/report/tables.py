"""The report's tables, laid out once from a :class:`Comparison` for both renderers.

markdown.py and html.py differ only in syntax: each cell carries a :class:`Mark` (differs between
models, failed, absent) that Markdown shows in bold with a marker and HTML shows in colour.
"""

from __future__ import annotations

import dataclasses
import enum

from sim.engine.exposure import Exposure
from sim.report.compare import ABSENT_WORD, LEVEL_WORDS, Comparison, ModelRun, format_ns


class Mark(enum.StrEnum):
    """How a cell stands out; the value is the CSS class the HTML template uses."""

    NONE = ""
    DIFFERS = "differs"   # the value is not the same in every model
    FAIL = "fail"
    OK = "ok"
    ABSENT = "absent"     # the component or field does not exist in that model


@dataclasses.dataclass(frozen=True)
class Cell:
    text: str
    mark: Mark = Mark.NONE
    code: bool = False    # monospace: identifiers, digests, decoded message summaries


@dataclasses.dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    @property
    def empty(self) -> bool:
        return not self.rows


def _table(header: list[str], rows: list[list[Cell]]) -> Table:
    return Table(tuple(header), tuple(tuple(r) for r in rows))


def _c(text: object, mark: Mark = Mark.NONE, code: bool = False) -> Cell:
    return Cell("—" if text is None else str(text), mark, code)


def _ns(ns: int | None, missing: str = "never") -> Cell:
    return Cell(format_ns(ns, missing), Mark.FAIL if ns is None and missing == "never" else Mark.NONE)


def _side_by_side_marks(values: list[object]) -> Mark:
    return Mark.DIFFERS if len(set(map(repr, values))) > 1 else Mark.NONE


# -- exposure --------------------------------------------------------------------------------------

def shown_secret_classes(cmp: Comparison) -> list[str]:
    """Classes with at least one secret, or one non-never cell, in some model; the rest are all 'never'."""
    shown = []
    for cls in cmp.secret_classes:
        counts = [r.exposure.secret_counts.get(cls, 0) for r in cmp.runs]
        levels = [cmp.level(m, cls, c) for m in cmp.models for c in cmp.components]
        if any(counts) or any(lv is not None and lv != Exposure.NEVER for lv in levels):
            shown.append(cls)
    return shown


def hidden_secret_classes(cmp: Comparison) -> list[str]:
    shown = set(shown_secret_classes(cmp))
    return [c for c in cmp.secret_classes if c not in shown]


def exposure_table(cmp: Comparison, model: str) -> Table:
    """Components × secret classes for one model; cells that differ from another model are marked."""
    classes = shown_secret_classes(cmp)
    rows = []
    for comp in cmp.components:
        row = [_c(comp, code=True)]
        for cls in classes:
            level = cmp.level(model, cls, comp)
            if level is None:
                row.append(Cell(ABSENT_WORD if cmp.differs(cls, comp) else "—",
                                Mark.DIFFERS if cmp.differs(cls, comp) else Mark.ABSENT))
            else:
                row.append(Cell(LEVEL_WORDS[level], Mark.DIFFERS if cmp.differs(cls, comp) else Mark.NONE))
        rows.append(row)
    return _table(["component", *classes], rows)


def secret_counts_table(cmp: Comparison) -> Table:
    classes = shown_secret_classes(cmp)
    rows = []
    for cls in classes:
        counts = [r.exposure.secret_counts.get(cls, 0) for r in cmp.runs]
        mark = _side_by_side_marks(counts)
        rows.append([_c(cls, code=True), *(_c(n, mark) for n in counts)])
    return _table(["secret class", *cmp.models], rows)


def holders_table(cmp: Comparison) -> Table:
    """Per secret class and model: who generated it or saw it in plaintext."""
    per_model = {m: cmp.holders(m) for m in cmp.models}
    rows = []
    for cls in shown_secret_classes(cmp):
        values = [", ".join(per_model[m][cls]) or "nobody" for m in cmp.models]
        mark = _side_by_side_marks(values)
        rows.append([_c(cls, code=True), *(_c(v, mark) for v in values)])
    return _table(["secret class", *cmp.models], rows)


def trusted_base_table(cmp: Comparison) -> Table | None:
    """Per security property and model, the measured trusted base; None when no run carries one."""
    if all(r.trusted_base is None for r in cmp.runs):
        return None
    props: dict[str, None] = {}
    for r in cmp.runs:
        props.update(dict.fromkeys(r.trusted_base or {}))
    rows = []
    for prop in props:
        values: list[str | None] = []
        for r in cmp.runs:
            values.append(None if r.trusted_base is None else base_words(r, prop))
        mark = _side_by_side_marks(values)
        cells = [Cell("not measured", Mark.ABSENT) if v is None
                 else Cell(v, Mark.FAIL) if v.startswith(RISK_PREFIXES) else _c(v, mark) for v in values]
        rows.append([_c(prop), *cells])
    return _table(["property", *cmp.models], rows)


RISK_PREFIXES = ("not exercised", "broken without any compromise", "the device never reached")


def base_words(r: ModelRun, prop: str) -> str:
    """A trusted-base cell: the components, or what the answer rests on when it is not a measurement."""
    status, why = r.trusted_base_status.get(prop, ("exercised", ""))
    comps = ", ".join((r.trusted_base or {}).get(prop, ()))
    if status == "broken-without-compromise":
        return "broken without any compromise" + (f" (also: {comps})" if comps else "")
    if status == "not-exercised":
        return f"not exercised: {why}" if why else "not exercised"
    return comps or "nobody"


def trusted_base_evidence_table(cmp: Comparison) -> Table | None:
    """Where the models' trusted bases differ: which (component, strategy) broke the property undetected
    under which model, what it achieved, and the trace lines that show it (scenario named in the title)."""
    if all(r.trusted_base is None for r in cmp.runs):
        return None
    rows = []
    props: dict[str, None] = {}
    for r in cmp.runs:
        props.update(dict.fromkeys(r.trusted_base or {}))
    for prop in props:
        bases = [frozenset((r.trusted_base or {}).get(prop, ())) for r in cmp.runs if r.trusted_base is not None]
        if len(set(bases)) <= 1:
            continue  # the same trusted base under every model: nothing to demonstrate
        for r in cmp.runs:
            for ev in r.trusted_base_evidence.get(prop, ()):
                rows.append([_c(prop), _c(r.name), _c(ev.component), _c(ev.strategy), _c(ev.detail),
                             _c(" | ".join(ev.excerpt[-2:]), code=True)])
    return _table(["property", "model", "component", "strategy", "what it achieved undetected",
                   "trace (last lines)"], rows)


# -- times -----------------------------------------------------------------------------------------

def time_to_secure_table(cmp: Comparison) -> Table:
    """Per device (and the fleet): boot → stream secure, and boot → TDI RUN, side by side."""
    rows = []
    for name in cmp.device_names():
        secure: list[Cell] = []
        run: list[Cell] = []
        for r in cmp.runs:
            dev = r.devices.get(name)
            if dev is None:
                secure.append(Cell("—", Mark.ABSENT))
                run.append(Cell("—", Mark.ABSENT))
                continue
            secure.append(_ns(dev.time_to_secure_ns))
            if dev.time_to_run_ns is None and dev.host_owned:
                run.append(Cell("host-owned", Mark.ABSENT))
            elif dev.time_to_run_ns is None and not dev.tdi_ids():
                run.append(Cell("no TDI", Mark.ABSENT))
            else:
                run.append(_ns(dev.time_to_run_ns))
        rows.append([_c(name, code=True), _c("stream secure"), *secure])
        rows.append([_c(name, code=True), _c("TDI RUN"), *run])
    fleet_cells = [Cell(f"{format_ns(r.fleet.time_to_secure_ns)} ({r.fleet.secured}/{r.fleet.devices})",
                        Mark.FAIL if r.fleet.secured < r.fleet.devices else Mark.NONE) for r in cmp.runs]
    rows.append([_c("fleet"), _c("all streams secure"), *fleet_cells])
    return _table(["device", "milestone", *cmp.models], rows)


def phases_table(cmp: Comparison, device: str) -> Table:
    """When each securing-flow phase was first reached per model, and by whom; empty if no run records phases."""
    phases: dict[str, None] = {}
    for r in cmp.runs:
        if device in r.devices:
            phases.update(dict.fromkeys(r.devices[device].first_phases()))
    rows = []
    for phase in phases:
        row = [_c(phase, code=True)]
        for r in cmp.runs:
            dev = r.devices.get(device)
            mark = dev.first_phases().get(phase) if dev is not None else None
            row.append(Cell("—", Mark.ABSENT) if mark is None else
                       _c(format_ns(mark.t_ns) + (f" ({mark.by})" if mark.by else "")))
        rows.append(row)
    return _table(["phase", *cmp.models], rows)


def recovery_table(cmp: Comparison) -> Table:
    rows = []
    for r in cmp.runs:
        for dev in r.devices.values():
            for rec in dev.recoveries:
                rows.append([_c(r.name), _c(dev.name, code=True), _c(rec.fault, code=True), _ns(rec.at_ns),
                             _ns(rec.recovered_at_ns), _ns(rec.latency_ns), _c(rec.by or "—")])
    return _table(["model", "device", "fault", "injected at", "secure again at", "latency", "recovered by"], rows)


def insecure_windows_table(cmp: Comparison) -> Table:
    rows = []
    for r in cmp.runs:
        for dev in r.devices.values():
            if not dev.insecure_windows:
                continue
            spans = "; ".join(f"{format_ns(s)} – {format_ns(e, 'end of run')}" for s, e in dev.insecure_windows)
            open_end = any(e is None for _, e in dev.insecure_windows)
            rows.append([_c(r.name), _c(dev.name, code=True), _c(len(dev.insecure_windows)), _c(spans),
                         Cell(format_ns(dev.insecure_total_ns(r.end_ns)), Mark.FAIL if open_end else Mark.NONE)])
    return _table(["model", "device", "windows", "intervals", "total"], rows)


def firmware_table(cmp: Comparison) -> Table:
    rows = []
    for r in cmp.runs:
        fw = r.firmware
        if fw is None:
            rows.append([_c(r.name), Cell("no firmware command queue", Mark.ABSENT), _c("—"), _c("—")])
        else:
            rows.append([_c(r.name), _c(fw.commands), _c(fw.max_queue_depth), _c(len(fw.queue_depth))])
    return _table(["model", "commands", "max queue depth", "depth changes"], rows)


# -- work per component ----------------------------------------------------------------------------

def forwarded_table(cmp: Comparison) -> Table:
    rows = []
    for comp in cmp.forwarded_components():
        values = [r.forwarded.get(comp, 0) for r in cmp.runs]
        mark = _side_by_side_marks(values)
        rows.append([_c(comp, code=True), *(_c(v, mark) for v in values)])
    return _table(["component", *cmp.models], rows)


def crypto_table(cmp: Comparison) -> Table:
    rows = []
    for comp in cmp.crypto_components():
        for c2, op in cmp.crypto_rows():
            if c2 != comp:
                continue
            values = [r.crypto_ops.get(comp, {}).get(op, 0) for r in cmp.runs]
            mark = _side_by_side_marks(values)
            rows.append([_c(comp, code=True), _c(op, code=True), *(_c(v, mark) for v in values)])
        totals = [cmp.crypto_total(m, comp) for m in cmp.models]
        mark = _side_by_side_marks(totals)
        rows.append([_c(comp, code=True), _c("total"), *(_c(v, mark) for v in totals)])
    return _table(["component", "operation", *cmp.models], rows)


# -- devices and runs ------------------------------------------------------------------------------

def roles_table(cmp: Comparison) -> Table:
    """What each component is in each model (e.g. "firmware" is the fat TSM in one, a key-slot service in another)."""
    rows = []
    for comp in cmp.role_components():
        values = [r.roles.get(comp) for r in cmp.runs]
        mark = _side_by_side_marks(values)
        rows.append([_c(comp, code=True), *(Cell("—", Mark.ABSENT) if v is None else _c(v, mark) for v in values)])
    return _table(["component", *cmp.models], rows)


def device_table(cmp: Comparison, device: str) -> Table:
    """One device's final state per model: owner, who secured it, attestation, stream, TDIs."""
    rows = []
    for r in cmp.runs:
        dev = r.devices.get(device)
        if dev is None:
            rows.append([_c(r.name), Cell("not in this model", Mark.ABSENT), *(_c(None) for _ in range(4))])
            continue
        verdicts = []
        for att in dev.attestations:
            words = "ok" if att.ok else ("failed" if att.ok is False else "not run")
            extra = ", ".join(x for x in (att.reason, att.phase and f"in {att.phase}",
                                          att.at_ns is not None and f"at {format_ns(att.at_ns)}") if x)
            verdicts.append((f"{att.by}: " if att.by else "") + words + (f" ({extra})" if extra else ""))
        att_cell = Cell("; ".join(verdicts) or "—",
                        Mark.FAIL if any(a.ok is False for a in dev.attestations) else
                        Mark.NONE if verdicts else Mark.ABSENT)
        stream = dev.stream
        stream_text = "—" if stream is None else " ".join(
            x for x in (f"id {stream.id}" if stream.id is not None else None, stream.state,
                        stream.key_set and f"key set {stream.key_set}") if x)
        tdis = ", ".join(f"{k}: {v}" for k, v in dev.tdis.items()) or "no TDIs"
        rows.append([_c(r.name), _c(dev.owner), _c(dev.secured_by), att_cell,
                     Cell(stream_text, Mark.FAIL if stream is not None and stream.state == "insecure" else Mark.NONE),
                     _c(tdis)])
    return _table(["model", "owner", "secured by", "attestation", "stream", "TDIs"], rows)


def sequence_table(cmp: Comparison, model: str) -> Table:
    rows = [[_c(format_ns(x.t_ns)), _c(x.source, code=True), _c(x.destination, code=True), _c(x.channel),
             _c(x.summary, code=True)] for x in cmp.run(model).sequence]
    return _table(["time", "from", "to", "channel", "summary"], rows)


def runs_table(cmp: Comparison) -> Table:
    rows = [[_c(r.name), Cell("ok" if r.ok else "FAIL", Mark.OK if r.ok else Mark.FAIL),
             _c(sum(e.held for e in r.expectations)), _c(len(r.expectations)), _c(format_ns(r.end_ns)),
             _c(r.trace_events), _c(r.trace_digest, code=True)] for r in cmp.runs]
    return _table(["model", "result", "held", "expectations", "simulated", "trace events", "trace digest"], rows)


class Section(enum.StrEnum):
    """The report's sections, in order; the value is the heading, the lower-case name the HTML anchor."""

    TRUSTED_BASE = "Trusted base"
    EXPECTATIONS = "Expectations"
    EXPOSURE = "Exposure matrix"
    DIFFERENCES = "Exposure differences"
    TIME_TO_SECURE = "Time to secure"
    RECOVERY = "Recovery after faults"
    INSECURE_WINDOWS = "Insecure or unauthenticated windows"
    FIRMWARE_QUEUE = "Firmware queue"
    FORWARDED = "DOE objects forwarded"
    CRYPTO = "Crypto operations"
    DEVICES = "Devices"
    TIMELINES = "Timelines"
    SEQUENCE = "Message sequence"
    RUNS = "Runs"

    @property
    def anchor(self) -> str:
        return self.name.lower().replace("_", "-")


HOLDERS_LABEL = "Components that held each secret in plaintext or generated it"
HOLDERS_NOTE = ("derived from the exposure matrix: a stand-in for the trusted base, not measured by compromising "
                "components")
DIFF_NOTE = "cells whose level is not the same in every model are marked"
