"""PNG plots for the report, drawn from a :class:`Comparison` with matplotlib's Agg canvas.

No pyplot and no global backend switch: each figure is a standalone ``Figure`` on its own Agg
canvas, drawn under matplotlib's default style (so a user's matplotlibrc cannot change the bytes),
at a fixed size and dpi, and saved without the "Software" metadata, so the same comparison always
gives byte-identical PNGs.
"""

from __future__ import annotations

import enum
import io

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from sim.report.compare import Comparison, DeviceRun, Transition

DPI = 100
WIDTH_IN = 10.0
ROW_HEIGHT_IN = 0.34
# Timeline figures are one per device; a fleet of many devices gets the first ones only.
MAX_TIMELINE_DEVICES = 16


class StateColour(enum.StrEnum):
    """Fixed colours for the TDI (TDISP) and IDE stream states a run reports; good = green, bad = red."""

    CONFIG_UNLOCKED = "#a6a6a6"
    CONFIG_LOCKED = "#f0a030"
    RUN = "#2e9d4a"
    ERROR = "#d62728"
    SECURE = "#1f9e89"
    INSECURE = "#e377c2"


# States a run reports that have no fixed colour get these, in sorted order of their names.
_SPARE_COLOURS = ("#1f77b4", "#9467bd", "#8c564b", "#bcbd22", "#17becf", "#7f7f7f", "#393b79", "#637939")
_MODEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
# Models often coincide (same firmware queue in thin-host and thin-guest): dashes keep every line visible.
_MODEL_STYLES = ("solid", "dashed", "dotted", "dashdot")


def _model_line(i: int) -> dict[str, object]:
    return {"color": _MODEL_COLOURS[i % len(_MODEL_COLOURS)], "linestyle": _MODEL_STYLES[i % len(_MODEL_STYLES)],
            "linewidth": 1.6}


def _time_unit(max_ns: int) -> tuple[str, float]:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if max_ns >= 10 * scale:
            return unit, scale
    return "ns", 1.0


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _new_figure(height_in: float) -> Figure:
    return Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")


def _colour_map(states: set[str]) -> dict[str, str]:
    fixed = {s.name: s.value for s in StateColour}
    out: dict[str, str] = {}
    spare = iter(_SPARE_COLOURS * (1 + len(states) // len(_SPARE_COLOURS)))
    for state in sorted(states):
        out[state] = fixed.get(state.upper()) or next(spare)
    return out


def _segments(transitions: list[Transition], end_ns: int) -> list[tuple[int, int, str]]:
    """(start, width, state) spans: each state lasts until the next transition or the run's end."""
    spans: list[tuple[int, int, str]] = []
    for i, tr in enumerate(transitions):
        stop = transitions[i + 1].t_ns if i + 1 < len(transitions) else max(end_ns, tr.t_ns)
        spans.append((tr.t_ns, stop - tr.t_ns, tr.state))
    return spans


def _device_rows(dev: DeviceRun) -> list[tuple[str, list[Transition]]]:
    """Per stream and TDI, its transitions; one that never changed is drawn in its final state throughout."""
    stream = list(dev.stream_transitions)
    if not stream and dev.stream is not None and dev.stream.state:
        stream = [Transition(0, "stream", dev.stream.state)]
    rows: list[tuple[str, list[Transition]]] = [("stream", stream)]
    for tdi in dev.tdi_ids():
        changes = [t for t in dev.tdi_transitions if t.subject == tdi]
        if not changes and tdi in dev.tdis:
            changes = [Transition(0, tdi, dev.tdis[tdi])]
        rows.append((f"TDI {tdi}", changes))
    return rows


def timeline_png(comparison: Comparison, device: str) -> bytes:
    """One device's stream and TDI states over time, one row per (model, stream or TDI).

    Insecure windows are hatched over the stream row and injected faults are dashed lines.
    """
    rows: list[tuple[str, list[tuple[int, int, str]], DeviceRun, int]] = []
    for run in comparison.runs:
        dev = run.devices.get(device)
        if dev is None:
            continue
        for label, transitions in _device_rows(dev):
            rows.append((f"{run.name}: {label}", _segments(transitions, run.end_ns), dev, run.end_ns))
    end = max((r[3] for r in rows), default=0) or 1
    unit, scale = _time_unit(end)
    colours = _colour_map({state for _, spans, _, _ in rows for _, _, state in spans})
    with matplotlib.style.context("default"):
        fig = _new_figure(1.3 + ROW_HEIGHT_IN * max(1, len(rows)))
        ax = fig.add_subplot()
        for y, (label, spans, dev, run_end) in enumerate(rows):
            if spans:
                ax.broken_barh([(s / scale, w / scale) for s, w, _ in spans], (y - 0.38, 0.76),
                               facecolors=[colours[state] for _, _, state in spans], edgecolor="white", linewidth=0.5)
            if label.endswith(": stream"):
                windows = [(s / scale, ((e if e is not None else run_end) - s) / scale)
                           for s, e in dev.insecure_windows]
                if windows:
                    ax.broken_barh(windows, (y - 0.45, 0.9), facecolors="none", edgecolor="#d62728",
                                   hatch="///", linewidth=0.8)
                for rec in dev.recoveries:
                    ax.vlines(rec.at_ns / scale, y - 0.5, y + 0.5, colors="black", linestyles="dashed", linewidth=1)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(0, end / scale)
        ax.set_xlabel(f"simulated time ({unit})")
        ax.set_title(f"{device}: stream and TDI states per model")
        ax.grid(axis="x", linestyle=":", linewidth=0.5)
        handles = [Patch(facecolor=colours[s], label=s) for s in sorted(colours)]
        if any(dev.insecure_windows for _, _, dev, _ in rows):
            handles.append(Patch(facecolor="none", edgecolor="#d62728", hatch="///", label="insecure window"))
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize="small",
                       frameon=False)
        return _png(fig)


def queue_depth_png(comparison: Comparison) -> bytes | None:
    """Firmware command queue depth over time, one step line per model that has firmware; None if none has."""
    runs = [r for r in comparison.runs if r.firmware is not None]
    if not runs:
        return None
    end = comparison.end_ns() or 1
    unit, scale = _time_unit(end)
    with matplotlib.style.context("default"):
        fig = _new_figure(3.2)
        ax = fig.add_subplot()
        for i, run in enumerate(comparison.runs):
            if run.firmware is None:
                continue
            steps = list(run.firmware.queue_depth) or [(0, 0)]
            xs = [t / scale for t, _ in steps] + [max(run.end_ns, steps[-1][0]) / scale]
            ys = [d for _, d in steps] + [steps[-1][1]]
            ax.step(xs, ys, where="post", label=f"{run.name} (max {run.firmware.max_queue_depth})",
                    **_model_line(i))  # type: ignore[arg-type]
        ax.set_xlim(0, end / scale)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"simulated time ({unit})")
        ax.set_ylabel("queued commands")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("firmware queue depth")
        ax.grid(linestyle=":", linewidth=0.5)
        ax.legend(fontsize="small")
        return _png(fig)


def secured_over_time_png(comparison: Comparison) -> bytes | None:
    """Devices secured versus time, per model: how fast the fleet becomes secure; None if none was."""
    curves: list[tuple[int, str, list[int], int]] = []
    for i, run in enumerate(comparison.runs):
        times = sorted(d.time_to_secure_ns for d in run.devices.values() if d.time_to_secure_ns is not None)
        curves.append((i, run.name, times, len(run.devices)))
    if not any(times for _, _, times, _ in curves):
        return None
    end = comparison.end_ns() or max(t for _, _, times, _ in curves for t in times) or 1
    unit, scale = _time_unit(end)
    with matplotlib.style.context("default"):
        fig = _new_figure(3.2)
        ax = fig.add_subplot()
        for i, name, times, total in curves:
            xs = [0.0] + [t / scale for t in times] + [end / scale]
            ys = [0] + list(range(1, len(times) + 1)) + [len(times)]
            ax.step(xs, ys, where="post", label=f"{name} ({len(times)}/{total})",
                    **_model_line(i))  # type: ignore[arg-type]
        ax.set_xlim(0, end / scale)
        ax.set_ylim(0, max(total for *_, total in curves) + 0.5)
        ax.set_xlabel(f"simulated time ({unit})")
        ax.set_ylabel("devices with a secure stream")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("time to secure")
        ax.grid(linestyle=":", linewidth=0.5)
        ax.legend(fontsize="small", loc="lower right")
        return _png(fig)


def report_plots(comparison: Comparison) -> dict[str, bytes]:
    """Every plot of the report by a stable name: "secured", "queue_depth", "timeline:<device>"."""
    out: dict[str, bytes] = {}
    secured = secured_over_time_png(comparison)
    if secured is not None:
        out["secured"] = secured
    queue = queue_depth_png(comparison)
    if queue is not None:
        out["queue_depth"] = queue
    for device in comparison.device_names()[:MAX_TIMELINE_DEVICES]:
        out[f"timeline:{device}"] = timeline_png(comparison, device)
    return out
