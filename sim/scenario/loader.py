"""Scenario files: YAML in, a validated :class:`~sim.scenario.schema.Scenario` out, or precise errors.

The YAML is composed into nodes (``yaml.compose``) and built into plain data by hand, so that every
value keeps the line and column it came from and duplicate keys can be refused (PyYAML's own
constructor silently keeps the last one). Every pydantic error location is then walked through the
data and the schema's types together, which turns it into ``FILE:LINE:COL: key.path: message``.
Nothing the user writes should surface as anything but a :class:`ScenarioError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import enum
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from sim.engine.timing import TimingModel
from sim.scenario.schema import PATTERN_DESCRIPTIONS, EventKind, ExpectKind, Scenario, format_loc

# Limits that keep hostile or accidental input (alias bombs, deep nesting) cheap to refuse.
MAX_NODES = 100_000
MAX_DEPTH = 64

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_DISCRIMINATORS: dict[str, type[enum.StrEnum]] = {"event": EventKind, "expect": ExpectKind}

Path_ = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario file, located as precisely as the input allows."""

    file: str
    line: int | None  # 1-based; None when the problem concerns the whole file
    column: int | None  # 1-based
    path: str  # key path such as "platform.devices[0].port"; "" for the document itself
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ScenarioError(Exception):
    """A scenario file that does not load; ``problems`` lists everything found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class ScenarioFileError(ScenarioError):
    """The file could not be read at all (missing, a folder, not UTF-8)."""


# --- YAML nodes -> data with marks ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Where:
    key: yaml.Mark | None  # the key's position, for mapping entries
    value: yaml.Mark  # where the value starts


class _Builder:
    """Builds plain Python data from a node tree, recording where each value came from."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.where: dict[Path_, _Where] = {}
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._nodes = 0
        self._active: set[int] = set()

    def problem(self, mark: yaml.Mark | None, path: Path_, message: str) -> None:
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        self.problems.append(Problem(self.filename, line, column, format_loc(_display(path)), message))

    def build(self, node: yaml.Node, path: Path_, key_mark: yaml.Mark | None = None) -> Any:
        self.where.setdefault(path, _Where(key_mark, node.start_mark))
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooBig(node.start_mark, f"the document expands to more than {MAX_NODES} values (alias bomb?)")
        if len(path) > MAX_DEPTH:
            raise _TooBig(node.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        if id(node) in self._active:
            self.problem(node.start_mark, path, "an alias refers to a node that contains it (recursive alias)")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ_TAG:
                    self.problem(node.start_mark, path, f"unsupported YAML tag {node.tag} (expected a plain list)")
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if node.tag != _MAP_TAG:
                self.problem(node.start_mark, path, f"unsupported YAML tag {node.tag} (expected a plain mapping)")
            return self._mapping(node, path)
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        try:
            return self._constructor.construct_object(node)
        except yaml.MarkedYAMLError as exc:
            self.problem(exc.problem_mark or node.start_mark, path, _yaml_message(exc))
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.problem(node.start_mark, path, f"unreadable value {node.value!r} ({exc})")
        return None

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        seen: dict[tuple[type, Any], yaml.Mark] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node.start_mark, path, "a mapping key must be a plain value, not a list or mapping")
                continue
            key = self._scalar(key_node, path)
            ident = (type(key), key)
            if ident in seen:
                first = seen[ident]
                self.problem(key_node.start_mark, (*path, key),
                             f"duplicate key '{key}' (expected each key once; first at line {first.line + 1})")
                continue
            seen[ident] = key_node.start_mark
            out[key] = self.build(value_node, (*path, key), key_node.start_mark)
        for merge in merges:  # YAML merge keys: explicit entries win, earlier merges win over later ones
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.problem(source.start_mark, path, "a merge key (<<) takes a mapping or a list of mappings")
                    continue
                # Built in place: marks already recorded (explicit keys, earlier merges) are kept.
                merged = self.build(source, path)
                for key, value in merged.items():
                    out.setdefault(key, value)
        return out


class _TooBig(Exception):
    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    parts = [exc.context, exc.problem]
    return "YAML syntax: " + ", ".join(p for p in parts if p) if any(parts) else f"YAML syntax: {exc}"


def _codepoint(character: int | str) -> str:
    return f"U+{character if isinstance(character, int) else ord(character[:1] or chr(0)):04X}"


def _display(path: Path_) -> tuple[str | int, ...]:
    return tuple(p if isinstance(p, int) and not isinstance(p, bool) else str(p) for p in path)


def _parse_yaml(text: str, filename: str) -> tuple[Any, dict[Path_, _Where]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise ScenarioError([Problem(filename, line, column, "", _yaml_message(exc))]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ScenarioError([Problem(filename, line, column, "", f"YAML: character {_codepoint(exc.character)} "
                                     "is not allowed (expected printable text)")]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([Problem(filename, None, None, "", f"YAML: {exc}")]) from None
    except RecursionError:
        raise ScenarioError([Problem(filename, None, None, "", f"YAML nested too deeply (expected at most "
                                     f"{MAX_DEPTH} levels)")]) from None
    if root is None:
        raise ScenarioError([Problem(filename, None, None, "", "empty file (expected a mapping with name, seed, "
                                     "platform ...)")])
    builder = _Builder(filename)
    try:
        data = builder.build(root, ())
    except _TooBig as exc:
        raise ScenarioError([Problem(filename, exc.mark.line + 1, exc.mark.column + 1, "", str(exc))]) from None
    except RecursionError:
        raise ScenarioError([Problem(filename, None, None, "", "YAML nested too deeply")]) from None
    if builder.problems:
        raise ScenarioError(builder.problems)
    if not isinstance(data, dict):
        where = builder.where[()].value
        raise ScenarioError([Problem(filename, where.line + 1, where.column + 1, "",
                                     f"the top level must be a mapping (expected keys name, seed, platform ..., "
                                     f"got {_describe(data)})")])
    return data, builder.where


# --- pydantic error -> Problem ----------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional so that what remains is a model, container, enum or union."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_member(tp: Any, tag: Any) -> Any:
    """The member of a discriminated union whose Literal discriminator equals ``tag``."""
    for member in get_args(tp):
        member = _unwrap(member)
        if not _is_model(member):
            continue
        for field in member.model_fields.values():
            if get_origin(field.annotation) is Literal and tag in get_args(field.annotation):
                return member
    return None


@dataclasses.dataclass
class _Located:
    data_path: Path_  # keys/indices that exist in the data
    parent_type: Any  # the schema type of the last value reached (a model for key errors)
    leaf_type: Any  # the schema type at the full location (None if unknown)
    key_error: bool  # the location is a dict key ("[key]" in pydantic's loc)


def _locate(data: Any, loc: tuple[Any, ...]) -> _Located:
    """Walk pydantic's ``loc`` through the data and the schema types at once.

    Discriminated-union tags in ``loc`` consume a type step but no data step, and "[key]" marks a
    dict key; everything else is a key or index into the data (where it exists).
    """
    tp: Any = Scenario
    parent: Any = Scenario
    node: Any = data
    path: list[Any] = []
    key_error = False
    for part in loc:
        if part == "[key]":  # the key of the dict just stepped into
            key_error = True
            tp = get_args(parent)[0] if get_origin(parent) is dict else None
            continue
        tp = _unwrap(tp)
        if get_origin(tp) in (Union, types.UnionType):
            member = _union_member(tp, part)
            if member is not None:
                tp = member
                continue
        parent = tp
        if _is_model(tp):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            tp = field.annotation if field is not None else None
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            tp = None
        if isinstance(node, dict):
            match = next((k for k in node if k == part or str(k) == str(part)), _NOTHING)
            if match is not _NOTHING:
                path.append(match)
                node = node[match]
                continue
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
            continue
        node = _NOTHING
    if tp is not None and not key_error:
        tp = _unwrap(tp)
    return _Located(tuple(path), _unwrap(parent), tp, key_error)


_NOTHING = object()


def _describe(value: Any) -> str:
    """How a value reads in an error message: strings quoted, other kinds named."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value} (a number)"
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "...'"
    if isinstance(value, datetime.date):
        return f"{value} (a date)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    return type(value).__name__


def _choices(tp: Any) -> str | None:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return ", ".join(str(m.value) for m in tp)
    if get_origin(tp) is Literal:
        return ", ".join(str(a.value if isinstance(a, enum.Enum) else a) for a in get_args(tp))
    return None


def _message(err: Mapping[str, Any], located: _Located) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    loc = err["loc"]
    got = _describe(err.get("input"))
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = list(located.parent_type.model_fields) if _is_model(located.parent_type) else []
        hint = difflib.get_close_matches(key, allowed, n=1)
        text = f"unknown key '{key}' (expected one of: {', '.join(allowed)})" if allowed else f"unknown key '{key}'"
        return text + (f"; did you mean '{hint[0]}'?" if hint else "")
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind in ("enum", "literal_error"):
        choices = _choices(located.leaf_type) or str(ctx.get("expected", ""))
        return f"unknown value (expected one of: {choices}, got {got})"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        key = str(ctx.get("discriminator", "")).strip("'")
        choices = ", ".join(m.value for m in _DISCRIMINATORS[key]) if key in _DISCRIMINATORS else ""
        if kind == "union_tag_not_found":
            return f"missing required key '{key}' (expected one of: {choices})"
        return f"unknown {key} kind {_describe(ctx.get('tag'))} (expected one of: {choices})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"wrong type (expected an integer, got {got})"
    if kind in ("string_type", "string_sub_type"):
        quote = "; put it in quotes" if isinstance(err.get("input"), int | float) else ""
        return f"wrong type (expected a string, got {got}){quote}"
    if kind in ("bool_type", "bool_parsing"):
        return f"wrong type (expected true or false, got {got})"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"wrong type (expected a list, got {got})"
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return f"wrong type (expected a mapping, got {got})"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": ">= {ge}", "greater_than": "> {gt}", "less_than_equal": "<= {le}",
                 "less_than": "< {lt}"}[kind].format(**{k: ctx.get(k) for k in ("ge", "gt", "le", "lt")})
        return f"out of range (expected {bound}, got {got})"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return f"bad value (expected {PATTERN_DESCRIPTIONS.get(pattern, 'a string matching ' + pattern)}, got {got})"
    if kind in ("string_too_short", "string_too_long"):
        limit = f"at least {ctx.get('min_length')}" if kind == "string_too_short" else f"at most {ctx.get('max_length')}"
        return f"bad length (expected {limit} characters, got {got})"
    if kind in ("too_short", "too_long"):
        limit = f"at least {ctx.get('min_length')}" if kind == "too_short" else f"at most {ctx.get('max_length')}"
        return f"wrong number of items (expected {limit}, got {ctx.get('actual_length')})"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err.get("msg", "")))
    return str(err.get("msg", kind))  # our own PydanticCustomErrors already say what was expected


def _problem(filename: str, where: Mapping[Path_, _Where], path: Path_, message: str, *,
             display: Path_ | None = None, on_key: bool = False) -> Problem:
    spot = where.get(path)
    probe = path
    while spot is None and probe:  # a value the data does not have: point at its parent
        probe = probe[:-1]
        spot = where.get(probe)
    mark = None
    if spot is not None:
        # A value that starts on a later line than its key (a block list or mapping) reads better at the key.
        later = spot.key is not None and spot.value.line != spot.key.line
        mark = spot.key if (on_key or later) and spot.key is not None else spot.value
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return Problem(filename, line, column, format_loc(_display(display if display is not None else path)), message)


def _pydantic_problems(exc: ValidationError, data: Any, filename: str,
                       where: Mapping[Path_, _Where]) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        located = _locate(data, tuple(err["loc"]))
        path = located.data_path
        display: Path_ = path
        kind = err["type"]
        if kind == "missing":
            display = (*path, err["loc"][-1])
        elif kind == "union_tag_invalid":
            key = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
            path = display = (*path, key)
        elif kind == "union_tag_not_found":
            display = (*path, str((err.get("ctx") or {}).get("discriminator", "")).strip("'"))
        problems.append(_problem(filename, where, path, _message(err, located), display=display,
                                 on_key=located.key_error or kind == "extra_forbidden"))
    return problems


# --- public API -----------------------------------------------------------------------------------


def load_scenario_text(text: str, filename: str = "<scenario>", *, check_files: bool = True) -> Scenario:
    """Parse and validate scenario YAML; relative file paths resolve against ``filename``'s folder.

    ``check_files`` also checks that referenced certificate and key files exist and parse.
    Raises :class:`ScenarioError` listing every problem found.
    """
    data, where = _parse_yaml(text, filename)
    references: list[tuple[tuple[str | int, ...], str]] = []
    context = {"reference_problems": references, "base_dir": str(Path(filename).absolute().parent), "check_files": check_files}
    try:
        scenario = Scenario.model_validate(data, context=context)
    except ValidationError as exc:
        raise ScenarioError(_pydantic_problems(exc, data, filename, where)) from None
    except RecursionError:  # pragma: no cover - the builder's depth limit keeps data shallow
        raise ScenarioError([Problem(filename, None, None, "", "nested too deeply")]) from None
    if references:
        raise ScenarioError([_problem(filename, where, loc, message) for loc, message in references])
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read, parse and validate a scenario file (see :func:`load_scenario_text`)."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ScenarioFileError([Problem(name, None, None, "", f"cannot read: {reason} "
                                         "(expected a readable scenario file)")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioFileError([Problem(name, None, None, "", f"not UTF-8 text (bad byte at offset {exc.start})")]) \
            from None
    return load_scenario_text(text, name)


_KIND_FIRST = ("event", "expect")


def _kind_first(item: dict[str, Any]) -> dict[str, Any]:
    head = {k: item[k] for k in _KIND_FIRST if k in item}
    return {**head, **{k: v for k, v in item.items() if k not in head}}


def resolved(scenario: Scenario) -> dict[str, Any]:
    """The fully resolved configuration (defaults filled, durations in ns, file paths absolute, the
    complete timing table), for writing next to a run's results; it loads back as the same run."""
    out = scenario.model_dump(mode="json")
    out["timing"] = TimingModel({str(c): {str(o): v for o, v in ops.items()}
                                 for c, ops in scenario.timing.items()}).table()
    out["timeline"] = [_kind_first(e) for e in out["timeline"]]
    out["expect"] = [_kind_first(e) for e in out["expect"]]
    return out


def schema_json() -> dict[str, Any]:
    """The scenario JSON Schema (draft 2020-12), for editors and ``scenarios/scenario.schema.json``."""
    schema = Scenario.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "tiosim scenario", **{
        k: v for k, v in schema.items() if k != "title"}}
