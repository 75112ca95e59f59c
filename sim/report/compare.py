"""The comparison itself: result.json dicts → one :class:`Comparison` → report.json.

Everything a report shows is computed here from the runs' results (the contract is
notes/results-format.md), never from a hand-written table: the exposure matrices side by side and
the cells where the models differ, the components that held each secret, per-device times to
secure, recoveries, insecure windows, firmware queueing, DOE relaying, crypto work and the
expectations. The renderers (markdown.py, html.py, plots.py) only lay this object out.

Input is user data (a file on disk), so every field is checked as it is read, and a bad one raises
:class:`ReportInputError` naming its key path, e.g. ``results[0].models.fat.devices.nic0.time_to_secure_ns``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from sim.engine.exposure import Exposure

BASE_STATUSES = ("exercised", "not-exercised", "broken-without-compromise")
RESULT_FORMAT = 1
REPORT_FORMAT = 2   # 2: trusted_base entries are {status, components, why}

# How an exposure level reads in prose and tables; the same words a scenario's `at_most` uses.
LEVEL_WORDS: dict[Exposure, str] = {
    Exposure.NEVER: "never",
    Exposure.SAW_CIPHERTEXT_ONLY: "ciphertext",
    Exposure.SAW_PLAINTEXT: "plaintext",
    Exposure.GENERATED: "generated",
}
ABSENT_WORD = "absent"  # the component does not exist in that model's world

T = TypeVar("T")


class ReportInputError(ValueError):
    """A result dict that does not follow results-format.md; the message starts with the key path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# -- reading with key paths ------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MISSING = object()


def _sub(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _what(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float | str):
        text = repr(value)
        return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _fail(path: str, expected: str, value: object) -> ReportInputError:
    return ReportInputError(path, f"expected {expected}, got {_what(value)}")


def _obj(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _fail(path, "an object", value)
    for key in value:
        if not isinstance(key, str):
            raise _fail(path, "an object with string keys", key)
    return value


def _field(obj: Mapping[str, object], key: str, path: str, required: bool = True) -> object:
    if key in obj:
        return obj[key]
    if required:
        raise ReportInputError(_sub(path, key), "required key is missing")
    return _MISSING


def _int(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, "an integer", value)
    return value


def _nonneg(value: object, path: str) -> int:
    number = _int(value, path)
    if number < 0:
        raise _fail(path, "a non-negative integer", value)
    return number


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, "a string", value)
    return value


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)
    return value


def _list(value: object, path: str) -> Sequence[object]:
    if not isinstance(value, list | tuple):
        raise _fail(path, "a list", value)
    return value


def _opt(obj: Mapping[str, object], key: str, path: str, read: Callable[[object, str], T]) -> T | None:
    """An optional key whose value may also be null."""
    value = _field(obj, key, path, required=False)
    if value is _MISSING or value is None:
        return None
    return read(value, _sub(path, key))


def _req(obj: Mapping[str, object], key: str, path: str, read: Callable[[object, str], T]) -> T:
    return read(_field(obj, key, path), _sub(path, key))


def _text(value: object) -> str | None:
    """Free-form detail fields: kept as text whatever JSON type they hold."""
    if value is None or value is _MISSING:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# -- one model's run -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Attestation:
    """One verifier's verdict on a device (a fat model has two: the TSM's, then the guest's acceptance)."""

    ok: bool | None
    by: str | None
    reason: str | None
    phase: str | None
    at_ns: int | None = None


@dataclasses.dataclass(frozen=True)
class PhaseMark:
    """When a securing-flow milestone (VCA, KEY_EXCHANGE, ..., RUN) was reached, and by whom."""

    t_ns: int
    phase: str
    by: str | None


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    id: int | None
    state: str | None
    key_set: str | None


@dataclasses.dataclass(frozen=True)
class Recovery:
    """One injected fault and when (whether) the device was secure again."""

    fault: str
    at_ns: int
    recovered_at_ns: int | None
    latency_ns: int | None
    by: str | None


@dataclasses.dataclass(frozen=True)
class Transition:
    """A state change of a device's stream (``subject`` "stream") or of one of its TDIs (its id)."""

    t_ns: int
    subject: str
    state: str


@dataclasses.dataclass(frozen=True)
class DeviceRun:
    name: str
    owner: str | None
    secured_by: str | None
    attestations: tuple[Attestation, ...]
    time_to_secure_ns: int | None
    time_to_run_ns: int | None
    stream: StreamInfo | None
    tdis: Mapping[str, str]
    insecure_windows: tuple[tuple[int, int | None], ...]   # end None: still insecure when the run ended
    recoveries: tuple[Recovery, ...]
    tdi_transitions: tuple[Transition, ...]
    stream_transitions: tuple[Transition, ...]
    phases: tuple[PhaseMark, ...] = ()

    @property
    def host_owned(self) -> bool:
        return self.owner == "host"

    def first_phases(self) -> dict[str, PhaseMark]:
        """The first time each phase was reached, in order of first reaching it."""
        out: dict[str, PhaseMark] = {}
        for mark in self.phases:
            out.setdefault(mark.phase, mark)
        return out

    def insecure_total_ns(self, end_ns: int) -> int:
        """Total time in insecure windows; an open window counts up to the end of the run."""
        return sum(max(0, (end if end is not None else end_ns) - start) for start, end in self.insecure_windows)

    def tdi_ids(self) -> list[str]:
        """TDIs named in the final states or in the transitions, in first-seen order."""
        seen: dict[str, None] = dict.fromkeys(self.tdis)
        for tr in self.tdi_transitions:
            seen.setdefault(tr.subject, None)
        return list(seen)


@dataclasses.dataclass(frozen=True)
class Fleet:
    devices: int
    secured: int
    time_to_secure_ns: int | None


@dataclasses.dataclass(frozen=True)
class FirmwareStats:
    commands: int
    max_queue_depth: int
    queue_depth: tuple[tuple[int, int], ...]   # (t_ns, depth) steps


@dataclasses.dataclass(frozen=True)
class ExposureTable:
    """One model's components × secret classes matrix, as ExposureMatrix.to_json() wrote it."""

    components: tuple[str, ...]
    secret_classes: tuple[str, ...]
    secret_counts: Mapping[str, int]
    cells: Mapping[tuple[str, str], Exposure]   # (secret class, component) → level

    def level(self, secret_class: str, component: str) -> Exposure | None:
        """None when the component does not exist in this model."""
        if component not in self.components:
            return None
        return self.cells.get((secret_class, component), Exposure.NEVER)


@dataclasses.dataclass(frozen=True)
class ExpectationResult:
    index: int
    text: str
    held: bool
    detail: str | None


@dataclasses.dataclass(frozen=True)
class Crossing:
    """One boundary crossing of the sequence view, with its decoded one-line summary."""

    t_ns: int
    source: str
    destination: str
    channel: str
    summary: str


@dataclasses.dataclass(frozen=True)
class ScenarioInfo:
    name: str
    file: str | None
    seed: int | None
    description: str | None
    digest: str | None = None   # of the resolved scenario, when the runner records it


@dataclasses.dataclass(frozen=True)
class ModelRun:
    name: str
    tool: str | None
    trace_digest: str | None
    trace_events: int | None
    end_ns: int
    devices: Mapping[str, DeviceRun]
    fleet: Fleet
    firmware: FirmwareStats | None
    forwarded: Mapping[str, int]
    crypto_ops: Mapping[str, Mapping[str, int]]
    exposure: ExposureTable
    expectations: tuple[ExpectationResult, ...]
    sequence: tuple[Crossing, ...]
    trusted_base: Mapping[str, tuple[str, ...]] | None
    roles: Mapping[str, str] = dataclasses.field(default_factory=dict)   # component → its role in this model
    # property → the runs that broke it undetected: (component, strategy, detail, trace excerpt lines)
    trusted_base_evidence: Mapping[str, tuple[BaseEvidence, ...]] = dataclasses.field(default_factory=dict)
    # property → (status, why): "exercised", "not-exercised" or "broken-without-compromise" (result format 2)
    trusted_base_status: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    wiring: str | None = None       # one sentence on how this trust model is wired
    notes: tuple[str, ...] = ()     # the runner's remarks (e.g. an assignment the model cannot honour)

    @property
    def ok(self) -> bool:
        return all(e.held for e in self.expectations)

    def expectations_failing_first(self) -> list[ExpectationResult]:
        return sorted(self.expectations, key=lambda e: (e.held, e.index))


def _level(value: object, path: str) -> Exposure:
    """An Exposure name as ExposureMatrix.to_json() writes it; the scenario words (never, ...) are accepted too."""
    name = _str(value, path)
    if name in Exposure.__members__:
        return Exposure[name]
    for level, word in LEVEL_WORDS.items():
        if name == word:
            return level
    raise _fail(path, "one of " + ", ".join(e.name for e in Exposure), value)


def _read_exposure(value: object, path: str) -> ExposureTable:
    obj = _obj(value, path)
    comps_path, classes_path = _sub(path, "components"), _sub(path, "secret_classes")
    components = tuple(_str(c, _sub(comps_path, i))
                       for i, c in enumerate(_list(_field(obj, "components", path), comps_path)))
    classes = tuple(_str(c, _sub(classes_path, i))
                    for i, c in enumerate(_list(_field(obj, "secret_classes", path), classes_path)))
    counts_raw = _opt(obj, "secret_counts", path, _obj) or {}
    counts = {k: _nonneg(v, _sub(_sub(path, "secret_counts"), k)) for k, v in counts_raw.items()}
    matrix_path = _sub(path, "matrix")
    matrix = _req(obj, "matrix", path, _obj)
    cells: dict[tuple[str, str], Exposure] = {}
    extra_classes: list[str] = []
    extra_comps: list[str] = []
    for cls, row in matrix.items():
        row_path = _sub(matrix_path, cls)
        if cls not in classes:
            extra_classes.append(cls)
        for comp, level in _obj(row, row_path).items():
            if comp not in components and comp not in extra_comps:
                extra_comps.append(comp)
            cells[(cls, comp)] = _level(level, _sub(row_path, comp))
    return ExposureTable(components + tuple(sorted(extra_comps)), classes + tuple(extra_classes), counts, cells)


def _read_verdict(obj: Mapping[str, object], path: str, by: str | None) -> Attestation:
    return Attestation(
        ok=_opt(obj, "ok", path, _bool),
        by=by if by is not None else _opt(obj, "by", path, _str),
        reason=_text(obj.get("reason")),
        phase=_opt(obj, "phase", path, _str),
        at_ns=_opt(obj, "at_ns", path, _nonneg),
    )


def _read_attestations(value: object, path: str) -> tuple[Attestation, ...]:
    """Either one verdict {ok, by, reason, phase} or, per verifier, {verifier: {ok, reason, phase, at_ns}}."""
    obj = _obj(value, path)
    nested = [k for k, v in obj.items() if isinstance(v, Mapping)]
    if not nested:
        return (_read_verdict(obj, path, None),)
    if len(nested) != len(obj):
        flat = next(k for k in obj if k not in nested)
        raise _fail(_sub(path, flat), "an object per verifier", obj[flat])
    return tuple(_read_verdict(_obj(v, _sub(path, k)), _sub(path, k), k) for k, v in obj.items())


def _read_phase(value: object, path: str) -> PhaseMark:
    obj = _obj(value, path)
    return PhaseMark(_req(obj, "t_ns", path, _nonneg), _req(obj, "phase", path, _str), _opt(obj, "by", path, _str))


def _read_stream(value: object, path: str) -> StreamInfo:
    obj = _obj(value, path)
    return StreamInfo(id=_opt(obj, "id", path, _int), state=_opt(obj, "state", path, _str),
                      key_set=_opt(obj, "key_set", path, _str))


def _read_window(value: object, path: str) -> tuple[int, int | None]:
    pair = _list(value, path)
    if len(pair) != 2:
        raise _fail(path, "a [start_ns, end_ns] pair", value)
    start = _nonneg(pair[0], _sub(path, 0))
    end = None if pair[1] is None else _nonneg(pair[1], _sub(path, 1))
    if end is not None and end < start:
        raise ReportInputError(path, f"window ends ({end}) before it starts ({start})")
    return start, end


def _read_recovery(value: object, path: str) -> Recovery:
    obj = _obj(value, path)
    at = _req(obj, "at_ns", path, _nonneg)
    recovered = _opt(obj, "recovered_at_ns", path, _nonneg)
    latency = _opt(obj, "latency_ns", path, _nonneg)
    if latency is None and recovered is not None:
        latency = recovered - at
    return Recovery(fault=_req(obj, "fault", path, _str), at_ns=at, recovered_at_ns=recovered,
                    latency_ns=latency, by=_opt(obj, "by", path, _str))


def _read_tdi_transition(value: object, path: str) -> Transition:
    obj = _obj(value, path)
    return Transition(_req(obj, "t_ns", path, _nonneg), _req(obj, "tdi", path, _str), _req(obj, "state", path, _str))


def _read_stream_transition(value: object, path: str) -> Transition:
    obj = _obj(value, path)
    return Transition(_req(obj, "t_ns", path, _nonneg), "stream", _req(obj, "state", path, _str))


def _items(obj: Mapping[str, object], key: str, path: str, read: Callable[[object, str], T]) -> tuple[T, ...]:
    """An optional list (missing or null = empty), each item read with its index in the path."""
    raw = _opt(obj, key, path, _list) or ()
    base = _sub(path, key)
    return tuple(read(item, _sub(base, i)) for i, item in enumerate(raw))


def _read_device(name: str, value: object, path: str) -> DeviceRun:
    obj = _obj(value, path)
    tdis_raw = _opt(obj, "tdis", path, _obj) or {}
    tdis = {k: _str(v, _sub(_sub(path, "tdis"), k)) for k, v in tdis_raw.items()}
    return DeviceRun(
        name=name,
        owner=_opt(obj, "owner", path, _str),
        secured_by=_opt(obj, "secured_by", path, _str),
        attestations=_opt(obj, "attestation", path, _read_attestations) or (),
        time_to_secure_ns=_opt(obj, "time_to_secure_ns", path, _nonneg),
        time_to_run_ns=_opt(obj, "time_to_run_ns", path, _nonneg),
        stream=_opt(obj, "stream", path, _read_stream),
        tdis=tdis,
        insecure_windows=_items(obj, "insecure_windows", path, _read_window),
        recoveries=_items(obj, "recoveries", path, _read_recovery),
        tdi_transitions=tuple(sorted(_items(obj, "tdi_transitions", path, _read_tdi_transition),
                                     key=lambda t: t.t_ns)),
        stream_transitions=tuple(sorted(_items(obj, "stream_transitions", path, _read_stream_transition),
                                        key=lambda t: t.t_ns)),
        phases=tuple(sorted(_items(obj, "phases", path, _read_phase), key=lambda p: p.t_ns)),
    )


def _read_fleet(value: object, path: str) -> Fleet:
    obj = _obj(value, path)
    return Fleet(_req(obj, "devices", path, _nonneg), _req(obj, "secured", path, _nonneg),
                 _opt(obj, "time_to_secure_ns", path, _nonneg))


def _derive_fleet(devices: Mapping[str, DeviceRun]) -> Fleet:
    """When a result has no `fleet`: the fleet is secure when its last device is."""
    times = [d.time_to_secure_ns for d in devices.values()]
    secured = [t for t in times if t is not None]
    whole = max(secured) if secured and len(secured) == len(times) else None
    return Fleet(len(times), len(secured), whole)


def _read_step(value: object, path: str) -> tuple[int, int]:
    pair = _list(value, path)
    if len(pair) != 2:
        raise _fail(path, "a [t_ns, depth] pair", value)
    return _nonneg(pair[0], _sub(path, 0)), _nonneg(pair[1], _sub(path, 1))


def _read_firmware(value: object, path: str) -> FirmwareStats:
    obj = _obj(value, path)
    steps = _items(obj, "queue_depth", path, _read_step)
    max_depth = _opt(obj, "max_queue_depth", path, _nonneg)
    if max_depth is None:
        max_depth = max((d for _, d in steps), default=0)
    return FirmwareStats(commands=_opt(obj, "commands", path, _nonneg) or 0, max_queue_depth=max_depth,
                         queue_depth=tuple(sorted(steps)))


def _read_counts(value: object, path: str) -> dict[str, int]:
    return {k: _nonneg(v, _sub(path, k)) for k, v in _obj(value, path).items()}


def _read_crypto(value: object, path: str) -> dict[str, dict[str, int]]:
    return {comp: _read_counts(ops, _sub(path, comp)) for comp, ops in _obj(value, path).items()}


def _read_expectation(value: object, path: str) -> ExpectationResult:
    obj = _obj(value, path)
    return ExpectationResult(_req(obj, "index", path, _int), _req(obj, "text", path, _str),
                             _req(obj, "held", path, _bool), _text(obj.get("detail")))


def _read_crossing(value: object, path: str) -> Crossing:
    obj = _obj(value, path)
    return Crossing(_req(obj, "t_ns", path, _nonneg), _req(obj, "from", path, _str), _req(obj, "to", path, _str),
                    _opt(obj, "channel", path, _str) or "", _req(obj, "summary", path, _str))


@dataclasses.dataclass(frozen=True)
class BaseEvidence:
    """One adversary run that broke a property without detection: who, how, and what the trace shows."""

    component: str
    strategy: str
    detail: str
    excerpt: tuple[str, ...]


def _read_base_evidence(value: object, path: str) -> dict[str, tuple[BaseEvidence, ...]]:
    """property → the BROKEN_UNDETECTED entries of its `evidence` list (absent lists are fine)."""
    out: dict[str, tuple[BaseEvidence, ...]] = {}
    for prop, entry in _obj(value, path).items():
        if not isinstance(entry, Mapping) or "evidence" not in entry:
            continue
        items = []
        ev_path = _sub(_sub(path, prop), "evidence")
        for i, ev in enumerate(_list(entry["evidence"], ev_path)):
            e = _obj(ev, _sub(ev_path, i))
            if str(e.get("verdict", "")).lower().replace("-", "_") not in ("broken_undetected", ""):
                continue
            excerpt = e.get("excerpt") or ()
            lines = tuple(str(x) for x in excerpt) if isinstance(excerpt, list | tuple) else tuple(str(excerpt).splitlines())
            items.append(BaseEvidence(str(e.get("component", "?")), str(e.get("strategy", "?")),
                                      str(e.get("detail", "")), lines))
        out[prop] = tuple(items)
    return out


def _read_base_status(value: object, path: str) -> dict[str, tuple[str, str]]:
    """property → (status, why); an entry without a status (older results) is "exercised"."""
    out: dict[str, tuple[str, str]] = {}
    for prop, entry in _obj(value, path).items():
        if isinstance(entry, Mapping):
            status = _opt(entry, "status", _sub(path, prop), _str) or "exercised"
            if status not in BASE_STATUSES:
                raise ReportInputError(_sub(_sub(path, prop), "status"),
                                       f"expected one of {', '.join(BASE_STATUSES)}, got {status!r}")
            out[prop] = (status, _opt(entry, "why", _sub(path, prop), _str) or "")
    return out


def _read_trusted_base(value: object, path: str) -> dict[str, tuple[str, ...]]:
    """property → components; each property maps to a list or to an object with a `components` list."""
    out: dict[str, tuple[str, ...]] = {}
    for prop, entry in _obj(value, path).items():
        entry_path = _sub(path, prop)
        if isinstance(entry, Mapping):
            entry_path = _sub(entry_path, "components")
            entry = _field(entry, "components", _sub(path, prop))
        items = _list(entry, entry_path)
        out[prop] = tuple(_str(c, _sub(entry_path, i)) for i, c in enumerate(items))
    return out


def _read_model(key: str, value: object, path: str, tool: str | None) -> ModelRun:
    obj = _obj(value, path)
    named = _opt(obj, "model", path, _str)
    if named is not None and named != key:
        raise ReportInputError(_sub(path, "model"), f"names model {named!r} but is stored under {key!r}")
    devices_path = _sub(path, "devices")
    devices = {name: _read_device(name, dev, _sub(devices_path, name))
               for name, dev in _req(obj, "devices", path, _obj).items()}
    fleet = _opt(obj, "fleet", path, _read_fleet) or _derive_fleet(devices)
    end_ns = _opt(obj, "end_ns", path, _nonneg)
    if end_ns is None:   # derive it from the latest time the run mentions
        times = [t.t_ns for d in devices.values() for t in (*d.tdi_transitions, *d.stream_transitions)]
        end_ns = max(times, default=0)
    return ModelRun(
        name=key,
        tool=tool,
        trace_digest=_opt(obj, "trace_digest", path, _str),
        trace_events=_opt(obj, "trace_events", path, _nonneg),
        end_ns=end_ns,
        devices=devices,
        fleet=fleet,
        firmware=_opt(obj, "firmware", path, _read_firmware),
        forwarded=_opt(obj, "forwarded", path, _read_counts) or {},
        crypto_ops=_opt(obj, "crypto_ops", path, _read_crypto) or {},
        exposure=_req(obj, "exposure", path, _read_exposure),
        expectations=tuple(sorted(_items(obj, "expectations", path, _read_expectation), key=lambda e: e.index)),
        sequence=_items(obj, "sequence", path, _read_crossing),
        trusted_base=_opt(obj, "trusted_base", path, _read_trusted_base),
        trusted_base_evidence=_opt(obj, "trusted_base", path, _read_base_evidence) or {},
        trusted_base_status=_opt(obj, "trusted_base", path, _read_base_status) or {},
        roles={k: _str(v, _sub(_sub(path, "roles"), k)) for k, v in (_opt(obj, "roles", path, _obj) or {}).items()},
        wiring=_opt(obj, "wiring", path, _str),
        notes=_items(obj, "notes", path, _str),
    )


def _read_scenario(value: object, path: str) -> ScenarioInfo:
    obj = _obj(value, path)
    return ScenarioInfo(name=_req(obj, "name", path, _str), file=_opt(obj, "file", path, _str),
                        seed=_opt(obj, "seed", path, _int), description=_opt(obj, "description", path, _str),
                        digest=_opt(obj, "digest", path, _str))


def read_result(result: object, path: str = "result") -> tuple[ScenarioInfo, list[ModelRun]]:
    """One result.json dict → its scenario and its model runs (in the file's order)."""
    obj = _obj(result, path)
    fmt = _req(obj, "format", path, _int)
    if fmt != RESULT_FORMAT:
        raise ReportInputError(_sub(path, "format"), f"unsupported result format {fmt} (this report reads "
                                                     f"format {RESULT_FORMAT})")
    tool = _opt(obj, "tool", path, _str)
    scenario = _req(obj, "scenario", path, _read_scenario)
    models_path = _sub(path, "models")
    models = _req(obj, "models", path, _obj)
    if not models:
        raise ReportInputError(models_path, "no model runs in this result")
    return scenario, [_read_model(k, v, _sub(models_path, k), tool) for k, v in models.items()]


# -- the comparison --------------------------------------------------------------------------------

def _level_word(level: Exposure | None) -> str:
    return ABSENT_WORD if level is None else LEVEL_WORDS[level]


def _effective(level: Exposure | None) -> Exposure:
    """A component that does not exist in a model never saw anything there."""
    return Exposure.NEVER if level is None else level


@dataclasses.dataclass(frozen=True)
class ExposureDifference:
    """One (component, secret class) cell whose level is not the same in every model."""

    component: str
    secret_class: str
    levels: Mapping[str, Exposure | None]   # model → level, None = component absent

    def text(self) -> str:
        """E.g. "vmm: ide-key never (thin-guest) vs plaintext (thin-vmm)", lowest level first."""
        groups: dict[str, list[str]] = {}
        order: dict[str, int] = {}
        for model, level in self.levels.items():
            word = _level_word(level)
            groups.setdefault(word, []).append(model)
            order[word] = -1 if level is None else int(level)
        parts = [f"{word} ({', '.join(groups[word])})" for word in sorted(groups, key=lambda w: order[w])]
        return f"{self.component}: {self.secret_class} " + " vs ".join(parts)


def _union(lists: Iterable[Iterable[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for items in lists:
        for item in items:
            seen.setdefault(item, None)
    return list(seen)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The runs of one scenario under several trust models, side by side."""

    scenario: ScenarioInfo
    runs: tuple[ModelRun, ...]
    components: tuple[str, ...]
    secret_classes: tuple[str, ...]
    differences: tuple[ExposureDifference, ...]

    @property
    def models(self) -> list[str]:
        return [r.name for r in self.runs]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    def run(self, model: str) -> ModelRun:
        for r in self.runs:
            if r.name == model:
                return r
        raise KeyError(model)

    def level(self, model: str, secret_class: str, component: str) -> Exposure | None:
        return self.run(model).exposure.level(secret_class, component)

    @functools.cached_property
    def _differing_cells(self) -> frozenset[tuple[str, str]]:
        return frozenset((d.secret_class, d.component) for d in self.differences)

    def differs(self, secret_class: str, component: str) -> bool:
        return (secret_class, component) in self._differing_cells

    def device_names(self) -> list[str]:
        return _union(r.devices for r in self.runs)

    def end_ns(self) -> int:
        return max((r.end_ns for r in self.runs), default=0)

    def holders(self, model: str) -> dict[str, list[str]]:
        """Per secret class, the components that generated it or saw it in plaintext.

        An exposure-derived stand-in for the trusted base until the adversary sweep fills
        `trusted_base`: whoever held a secret could have misused it.
        """
        table = self.run(model).exposure
        return {cls: [c for c in table.components if _effective(table.level(cls, c)) >= Exposure.SAW_PLAINTEXT]
                for cls in self.secret_classes}

    def role_components(self) -> list[str]:
        """Components any run names a role for, sorted."""
        return sorted(_union(r.roles for r in self.runs))

    def forwarded_components(self) -> list[str]:
        return sorted(_union(r.forwarded for r in self.runs))

    def crypto_rows(self) -> list[tuple[str, str]]:
        """(component, operation) pairs that any model performed, sorted."""
        return sorted({(c, op) for r in self.runs for c, ops in r.crypto_ops.items() for op in ops})

    def crypto_components(self) -> list[str]:
        return sorted({c for r in self.runs for c in r.crypto_ops})

    def crypto_total(self, model: str, component: str) -> int:
        return sum(self.run(model).crypto_ops.get(component, {}).values())

    def has_firmware(self) -> bool:
        return any(r.firmware is not None for r in self.runs)

    # -- report.json --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        """The comparison computed, with stable key names; dumped with sorted keys by to_json_text."""
        models = self.models
        devices: dict[str, dict[str, object]] = {}
        for name in self.device_names():
            devices[name] = {r.name: _device_json(r.devices[name], r.end_ns) if name in r.devices else None
                             for r in self.runs}
        return {
            "format": REPORT_FORMAT,
            "scenario": dataclasses.asdict(self.scenario),
            "models": models,
            "ok": self.ok,
            "runs": {r.name: {"tool": r.tool, "trace_digest": r.trace_digest, "trace_events": r.trace_events,
                              "end_ns": r.end_ns, "ok": r.ok, "wiring": r.wiring, "notes": list(r.notes)}
                     for r in self.runs},
            "roles": {c: {r.name: r.roles.get(c) for r in self.runs} for c in self.role_components()},
            "exposure": {
                "components": list(self.components),
                "secret_classes": list(self.secret_classes),
                "matrix": {m: {cls: {c: (None if (lv := self.level(m, cls, c)) is None else LEVEL_WORDS[lv])
                                     for c in self.components} for cls in self.secret_classes} for m in models},
                "secret_counts": {r.name: {cls: r.exposure.secret_counts.get(cls, 0) for cls in self.secret_classes}
                                  for r in self.runs},
                "differences": [{"component": d.component, "secret_class": d.secret_class,
                                 "levels": {m: None if lv is None else LEVEL_WORDS[lv] for m, lv in d.levels.items()},
                                 "text": d.text()} for d in self.differences],
            },
            "trusted_base": {r.name: None if r.trusted_base is None else {
                p: {"status": r.trusted_base_status.get(p, ("exercised", ""))[0], "components": list(c),
                    "why": r.trusted_base_status.get(p, ("exercised", ""))[1]} for p, c in r.trusted_base.items()}
                for r in self.runs},
            "plaintext_holders": {m: self.holders(m) for m in models},
            "devices": devices,
            "fleet": {r.name: dataclasses.asdict(r.fleet) for r in self.runs},
            "firmware": {r.name: None if r.firmware is None else {
                "commands": r.firmware.commands, "max_queue_depth": r.firmware.max_queue_depth,
                "queue_steps": len(r.firmware.queue_depth)} for r in self.runs},
            "forwarded": {c: {r.name: r.forwarded.get(c, 0) for r in self.runs} for c in self.forwarded_components()},
            "crypto_ops": {c: {op: {r.name: r.crypto_ops.get(c, {}).get(op, 0) for r in self.runs}
                               for (c2, op) in self.crypto_rows() if c2 == c} for c in self.crypto_components()},
            "crypto_ops_total": {c: {m: self.crypto_total(m, c) for m in models} for c in self.crypto_components()},
            "expectations": {r.name: [dataclasses.asdict(e) for e in r.expectations_failing_first()]
                             for r in self.runs},
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _device_json(dev: DeviceRun, end_ns: int) -> dict[str, object]:
    return {
        "owner": dev.owner,
        "secured_by": dev.secured_by,
        "attestations": [dataclasses.asdict(a) for a in dev.attestations],
        "phases": {p: {"t_ns": m.t_ns, "by": m.by} for p, m in dev.first_phases().items()},
        "time_to_secure_ns": dev.time_to_secure_ns,
        "time_to_run_ns": dev.time_to_run_ns,
        "stream": None if dev.stream is None else dataclasses.asdict(dev.stream),
        "tdis": dict(dev.tdis),
        "insecure_windows": [list(w) for w in dev.insecure_windows],
        "insecure_total_ns": dev.insecure_total_ns(end_ns),
        "recoveries": [dataclasses.asdict(r) for r in dev.recoveries],
    }


def compare(results: Sequence[Mapping[str, object]] | Mapping[str, object]) -> Comparison:
    """Merge the model runs of one or more result.json dicts (same scenario) and compare them."""
    if isinstance(results, Mapping):
        results = [results]
    if not isinstance(results, Sequence) or isinstance(results, str | bytes):
        raise _fail("results", "a list of result objects", results)
    if not results:
        raise ReportInputError("results", "no results to compare")
    scenario: ScenarioInfo | None = None
    runs: list[ModelRun] = []
    for i, result in enumerate(results):
        path = _sub("results", i)
        this, model_runs = read_result(result, path)
        if scenario is None:
            scenario = this
        elif this.name != scenario.name:
            raise ReportInputError(_sub(_sub(path, "scenario"), "name"),
                                   f"scenario {this.name!r} differs from {scenario.name!r} of results[0]; "
                                   "a comparison is of one scenario")
        for run in model_runs:
            if any(r.name == run.name for r in runs):
                raise ReportInputError(_sub(_sub(path, "models"), run.name), "this model was already run in an "
                                                                             "earlier result")
            runs.append(run)
    assert scenario is not None
    components = tuple(sorted(_union(r.exposure.components for r in runs)))
    classes = tuple(_union(r.exposure.secret_classes for r in runs))
    differences: list[ExposureDifference] = []
    if len(runs) > 1:
        for cls in classes:
            for comp in components:
                levels = {r.name: r.exposure.level(cls, comp) for r in runs}
                if len({_effective(lv) for lv in levels.values()}) > 1:
                    differences.append(ExposureDifference(comp, cls, levels))
    return Comparison(scenario, tuple(runs), components, classes, tuple(differences))


def format_ns(ns: int | None, missing: str = "never") -> str:
    """Simulated nanoseconds in the largest unit that keeps them ≥ 1, three decimals."""
    if ns is None:
        return missing
    for unit, scale in (("s", 1_000_000_000), ("ms", 1_000_000), ("µs", 1_000)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3f} {unit}"
    return f"{ns} ns"
