"""Per-class encoder and decoder functions generated once from a message's ``LAYOUT``.

The layout stays the one definition of a message. The generic interpreter in
:mod:`sim.wire.codec` walks it spec by spec on every call (a dict of values, a method call, a
size lookup and a ``Reader.take`` per field); in the protocol benchmark that cost more than the
crypto of the secured records. Here each class's layout is turned once into straight-line Python
source: the common specs (``UInt``, ``Const``, ``Reserved``, ``Bytes``, ``LengthOf``, ``Bits``,
and runs of fixed-size integers folded into one ``struct`` call) are written out inline, with
values kept in local variables when no condition or size function needs to see them as a dict;
every other spec (``Struct``, ``Array``, the protocol modules' own specs) is called through its
``encode`` / ``decode`` method exactly as the interpreter calls it. A decoded message whose class
has the plain dataclass ``__init__`` (no ``__post_init__``) gets its fields set directly, in field
order, as that ``__init__`` would set them.

The generated code is an optimistic fast path, never a second definition of the format: any
irregularity it meets (a short buffer, a value out of range, an unknown enum value, a failing
validator, any exception at all) sends the call to the interpreter from the start, which gives
the result or the precise :class:`~sim.wire.codec.DecodeError` / ``EncodeError``. So both paths
agree by construction on bad input, and ``tests/wire/test_codec_generated.py`` checks that they
agree on good and bad input alike.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sim.wire.codec import Bits, Bytes, Const, LengthOf, OpenEnum, Reserved, Spec, UInt, resolve

if TYPE_CHECKING:
    from sim.wire.codec import Message, Reader

EncodeFn = Callable[["Message", Any], bytes]
DecodeFn = Callable[[type["Message"], "Reader", Any, bool], "Message"]


class _Fallback(Exception):
    """Internal: the fast path declines; the interpreter handles the call."""


_FALLBACK = _Fallback()
_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _enum_member(enum_type: Any, value: int) -> Any:
    """The enum member for a decoded value (what ``codec.to_enum`` returns), or decline."""
    if issubclass(enum_type, enum.IntFlag):
        return enum_type(value)
    raise _FALLBACK


def _is_fixed(spec: Spec) -> bool:
    """A spec that can join a ``struct`` run: unconditional, little-endian, 1/2/4/8 bytes, no lookups."""
    if spec.when is not None:
        return False
    kind = type(spec)
    if kind is UInt:
        return spec.order == "little" and spec.size in _STRUCT_CODES  # type: ignore[attr-defined]
    if kind is Const:
        return spec.size in _STRUCT_CODES  # type: ignore[attr-defined]
    if kind is Reserved:
        return isinstance(spec.size, int) and spec.size >= 0  # type: ignore[attr-defined]
    return False


def _inline(spec: Spec) -> bool:
    """Specs whose encode and decode the generated code writes out itself."""
    kind = type(spec)
    if kind is LengthOf:
        return not spec.encoded  # type: ignore[attr-defined]
    return kind in (UInt, Const, Reserved, Bytes, Bits)


def _stores(spec: Spec) -> tuple[str, ...]:
    """The names an inline spec's decode puts in the values (Reserved puts none)."""
    if isinstance(spec, Bits):
        return spec.attrs
    return () if type(spec) is Reserved else (spec.name,)


def _runs(layout: tuple[Spec, ...]) -> list[list[Spec]]:
    """The layout as groups: struct runs of consecutive fixed specs, every other spec on its own."""
    groups: list[list[Spec]] = []
    for spec in layout:
        if _is_fixed(spec) and groups and all(_is_fixed(s) for s in groups[-1]):
            groups[-1].append(spec)
        else:
            groups.append([spec])
    return groups


def _size_refs(spec: Spec) -> list[Any]:
    return [getattr(spec, "size", None)] if type(spec) in (Bytes, Reserved) else []


def _needs_values_dict(layout: tuple[Spec, ...], known: set[str]) -> bool:
    """Whether some spec must see the values as a dict (a condition, a spec method, a size lookup).

    ``known`` are the names that are sure to be set when a size refers to them (they grow along
    the layout); any other string size is looked up like the interpreter does, in the dict or the
    context, and a size function gets the dict.
    """
    known = set(known)
    for spec in layout:
        if spec.when is not None or not _inline(spec):
            return True
        for ref in _size_refs(spec):
            if ref is not None and not isinstance(ref, int) and not (isinstance(ref, str) and ref in known):
                return True
        known.update(_stores(spec))
    return False


def _plain_init(cls: type) -> bool:
    """True if ``cls(**fields)`` would only set each field: the dataclass-made ``__init__``, no ``__post_init__``."""
    if hasattr(cls, "__post_init__") or not dataclasses.is_dataclass(cls):
        return False
    init = cls.__init__  # type: ignore[misc]
    code = getattr(init, "__code__", None)
    if code is None or code.co_filename != "<string>" or code.co_name != "__init__":  # made by dataclasses
        return False
    return all(f.init for f in dataclasses.fields(cls))


class _Source:
    """A tiny indented source writer."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class _Namespace:
    """Objects the generated code refers to by name (specs, enums, conditions, constants)."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {
            "_FALLBACK": _FALLBACK, "_resolve": resolve, "_enum_member": _enum_member, "_int": int,
            "_new": object.__new__,
        }

    def add(self, prefix: str, obj: Any) -> str:
        name = f"{prefix}{len(self.names)}"
        self.names[name] = obj
        return name


class _Values:
    """Where generated code keeps decoded / derived values: the ``values`` dict, or plain locals."""

    def __init__(self, use_dict: bool, locals_: dict[str, str] | None = None) -> None:
        self.use_dict = use_dict
        self.locals = dict(locals_ or {})  # name -> local variable holding it

    def ref(self, name: str) -> str:
        if name in self.locals and not self.use_dict:
            return self.locals[name]
        return f"values[{name!r}]"

    def store(self, src: _Source, name: str, expr: str) -> None:
        if self.use_dict:
            src(f"values[{name!r}] = {expr}")
        else:
            var = self.locals.setdefault(name, f"f_{name}")
            src(f"{var} = {expr}")


def _size_expr(ref: Any, ns: _Namespace, spec_name: str, known: set[str], vals: _Values) -> str:
    """Source for a size reference: a literal, a value known to be set, or the interpreter's resolve()."""
    if isinstance(ref, int):
        return repr(ref)
    if isinstance(ref, str) and ref in known:
        return f"_int({vals.ref(ref)})"
    return f"_resolve({ns.add('ref', ref)}, values, ctx, {spec_name!r})"


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


def _encode_struct_run(src: _Source, ns: _Namespace, specs: list[Spec]) -> None:
    fmt, args = "<", []
    for spec in specs:
        kind = type(spec)
        if kind is Reserved:
            fmt += f"{spec.size}x"  # type: ignore[attr-defined]
        elif kind is Const:
            fmt += _STRUCT_CODES[spec.size]  # type: ignore[attr-defined]
            args.append(repr(int(spec.value)))  # type: ignore[attr-defined]
        else:
            fmt += _STRUCT_CODES[spec.size]  # type: ignore[attr-defined]
            args.append(f"a_{spec.name}")
    packer = ns.add("pack", struct.Struct(fmt).pack)
    src(f"out += {packer}({', '.join(args)})")


def _encode_spec(src: _Source, ns: _Namespace, spec: Spec, attrs: set[str], known: set[str], vals: _Values) -> None:
    kind = type(spec)
    name = spec.name
    if kind is UInt:
        limit = 1 << (8 * spec.size)  # type: ignore[attr-defined]
        src(f"v = _int(a_{name})")
        src(f"if not 0 <= v < {limit}: raise _FALLBACK")
        src(f"out += v.to_bytes({spec.size}, {spec.order!r})")  # type: ignore[attr-defined]
    elif kind is Const:
        src(f"out += {int(spec.value).to_bytes(spec.size, 'little')!r}")  # type: ignore[attr-defined]
    elif kind is Reserved:
        if isinstance(spec.size, int):  # type: ignore[attr-defined]
            src(f"out += {bytes(spec.size)!r}")  # type: ignore[attr-defined]
        else:
            src(f"out += bytes({_size_expr(spec.size, ns, name, known, vals)})")  # type: ignore[attr-defined]
    elif kind is Bytes:
        src(f"v = a_{name}")
        src("if type(v) is not bytes: v = bytes(v)")
        if spec.size is not None:  # type: ignore[attr-defined]
            size = _size_expr(spec.size, ns, name, known, vals)  # type: ignore[attr-defined]
            src(f"if len(v) != {size}: raise _FALLBACK")
        if spec.max_size is not None:  # type: ignore[attr-defined]
            src(f"if len(v) > {spec.max_size}: raise _FALLBACK")  # type: ignore[attr-defined]
        src("out += v")
    elif kind is LengthOf and not spec.encoded:  # type: ignore[attr-defined]
        target = spec.target  # type: ignore[attr-defined]
        unit, adjust = spec.unit, spec.adjust  # type: ignore[attr-defined]
        measure = f"len(a_{target})" if target in attrs else f"len({vals.ref(target)})"
        src(f"n = {measure} // {unit} + {adjust}" if unit != 1 else f"n = {measure} + {adjust}")
        src(f"if not 0 <= n < {1 << (8 * spec.size)}: raise _FALLBACK")  # type: ignore[attr-defined]
        src(f"out += n.to_bytes({spec.size}, {spec.order!r})")  # type: ignore[attr-defined]
        vals.store(src, name, f"(n - {adjust}) * {unit}" if (adjust, unit) != (0, 1) else "n")
    elif kind is Bits:
        src("word = 0")
        for attr, low, width, _ in spec.parts:  # type: ignore[attr-defined]
            src(f"v = _int(a_{attr})")
            src(f"if not 0 <= v < {1 << width}: raise _FALLBACK")
            src(f"word |= v << {low}")
        src(f"out += word.to_bytes({spec.size}, 'little')")  # type: ignore[attr-defined]
    else:
        src(f"{ns.add('enc', spec.encode)}(values, ctx, out)")


def _encoder_source(cls: type[Message], attr_names: tuple[str, ...], ns: _Namespace) -> str:
    layout = cls.LAYOUT
    attrs = set(attr_names)
    vals = _Values(_needs_values_dict(layout, attrs))
    src = _Source()
    src("def encode(self, ctx):")
    src.depth += 1
    src("try:")
    src.depth += 1
    for attr in attr_names:
        src(f"a_{attr} = self.{attr}")
    if vals.use_dict:
        src("values = {" + ", ".join(f"{a!r}: a_{a}" for a in attr_names) + "}")
    else:
        vals.locals.update({a: f"a_{a}" for a in attr_names})
    src("out = bytearray()")
    known = set(attrs)
    for group in _runs(layout):
        spec = group[0]
        if len(group) > 1:
            for s in group:
                if not s.derived:
                    src(f"if a_{s.name} is None: raise _FALLBACK")
            _encode_struct_run(src, ns, group)
            continue
        if spec.when is not None:
            src(f"if {ns.add('when', spec.when)}(values, ctx):")
            src.depth += 1
        if not spec.derived:
            src(f"if a_{spec.name} is None: raise _FALLBACK" if spec.name in attrs
                else f"if values.get({spec.name!r}) is None: raise _FALLBACK")
        _encode_spec(src, ns, spec, attrs, known, vals)
        if spec.when is not None:
            src.depth -= 1
        elif _inline(spec) and type(spec) is LengthOf:
            known.add(spec.name)
    src("return bytes(out)")
    src.depth -= 1
    src("except Exception:")
    src("    pass")
    src("return self._encode_generic(ctx)")
    return src.text()


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------


def _enum_conversion(src: _Source, ns: _Namespace, enum_type: Any, raw: str) -> str:
    """Source of the value ``codec.to_enum`` would store (members for enums; reserved values decline)."""
    if enum_type is None:
        return raw
    if isinstance(enum_type, OpenEnum):
        members = ns.add("members", enum_type.enum_type._value2member_map_)
        return f"{members}.get({raw}, {raw})"
    members = ns.add("members", getattr(enum_type, "_value2member_map_", {}))
    etype = ns.add("enum", enum_type)
    src(f"m = {members}.get({raw})")
    return f"m if m is not None else _enum_member({etype}, {raw})"


def _decode_struct_run(src: _Source, ns: _Namespace, specs: list[Spec], vals: _Values) -> None:
    fmt, targets = "<", []
    for spec in specs:
        if type(spec) is Reserved:
            fmt += f"{spec.size}x"  # type: ignore[attr-defined]
            continue
        fmt += _STRUCT_CODES[spec.size]  # type: ignore[attr-defined]
        targets.append((spec, f"r_{len(targets)}"))
    unpacker = struct.Struct(fmt)
    src(f"if pos + {unpacker.size} > end: raise _FALLBACK")
    if targets:
        names = ", ".join(var for _, var in targets) + ("," if len(targets) == 1 else "")
        src(f"{names} = {ns.add('unpack', unpacker.unpack_from)}(data, pos)")
    src(f"pos += {unpacker.size}")
    for spec, var in targets:
        if type(spec) is Const:
            src(f"if {var} != {int(spec.value)}: raise _FALLBACK")  # type: ignore[attr-defined]
            vals.store(src, spec.name, var)
        else:
            vals.store(src, spec.name, _enum_conversion(src, ns, spec.enum_type, var))  # type: ignore[attr-defined]


def _decode_spec(src: _Source, ns: _Namespace, spec: Spec, known: set[str], vals: _Values) -> None:
    kind = type(spec)
    name = spec.name
    if kind in (UInt, Const, LengthOf):
        size = spec.size  # type: ignore[attr-defined]
        order = getattr(spec, "order", "little")
        src(f"if pos + {size} > end: raise _FALLBACK")
        src("v = data[pos]" if size == 1 else f"v = _int.from_bytes(data[pos:pos + {size}], {order!r})")
        src(f"pos += {size}")
        if kind is UInt:
            vals.store(src, name, _enum_conversion(src, ns, spec.enum_type, "v"))  # type: ignore[attr-defined]
        elif kind is Const:
            src(f"if v != {int(spec.value)}: raise _FALLBACK")  # type: ignore[attr-defined]
            vals.store(src, name, "v")
        else:
            adjust, unit = spec.adjust, spec.unit  # type: ignore[attr-defined]
            if adjust:
                src(f"if v < {adjust}: raise _FALLBACK")
            vals.store(src, name, f"(v - {adjust}) * {unit}" if (adjust, unit) != (0, 1) else "v")
    elif kind is Reserved:
        src(f"n = {_size_expr(spec.size, ns, name, known, vals)}")  # type: ignore[attr-defined]
        src("if n < 0 or pos + n > end: raise _FALLBACK")
        src("pos += n")
    elif kind is Bytes:
        if spec.size is None:  # type: ignore[attr-defined]
            src("n = end - pos")
        else:
            src(f"n = {_size_expr(spec.size, ns, name, known, vals)}")  # type: ignore[attr-defined]
        if spec.max_size is not None:  # type: ignore[attr-defined]
            src(f"if n > {spec.max_size}: raise _FALLBACK")  # type: ignore[attr-defined]
        src("if n < 0 or pos + n > end: raise _FALLBACK")
        vals.store(src, name, "data[pos:pos + n]")
        src("pos += n")
    elif kind is Bits:
        src(f"if pos + {spec.size} > end: raise _FALLBACK")  # type: ignore[attr-defined]
        src("word = data[pos]" if spec.size == 1  # type: ignore[attr-defined]
            else f"word = _int.from_bytes(data[pos:pos + {spec.size}], 'little')")  # type: ignore[attr-defined]
        src(f"pos += {spec.size}")  # type: ignore[attr-defined]
        for attr, low, width, enum_type in spec.parts:  # type: ignore[attr-defined]
            raw = f"((word >> {low}) & {(1 << width) - 1})" if low else f"(word & {(1 << width) - 1})"
            vals.store(src, attr, _enum_conversion(src, ns, enum_type, raw))
    else:
        src("r.pos = pos")
        src(f"{ns.add('dec', spec.decode)}(r, values, ctx)")
        src("pos = r.pos")


def _decoder_source(cls: type[Message], attr_names: tuple[str, ...], ns: _Namespace) -> str:
    layout = cls.LAYOUT
    vals = _Values(_needs_values_dict(layout, set()))
    src = _Source()
    src("def decode(cls, r, ctx, whole):")
    src.depth += 1
    src("start = r.pos")
    src("try:")
    src.depth += 1
    src("data = r.data")
    src("pos = start")
    src("end = len(data)")
    if vals.use_dict:
        src("values = {}")
    known: set[str] = set()
    certain = True  # every attribute is sure to be among the stored names at the end
    for group in _runs(layout):
        spec = group[0]
        if len(group) > 1 or (_is_fixed(spec) and type(spec) is Const):
            _decode_struct_run(src, ns, group, vals)
            for s in group:
                known.update(_stores(s))
            continue
        if not _inline(spec):
            certain = False
        if spec.when is not None:
            src(f"if {ns.add('when', spec.when)}(values, ctx):")
            src.depth += 1
            _decode_spec(src, ns, spec, known, vals)
            src.depth -= 1
            if not (spec.derived or isinstance(spec, Bits)):
                src("else:")
                src(f"    values[{spec.name!r}] = None")
            elif isinstance(spec, Bits):
                certain = False
        else:
            _decode_spec(src, ns, spec, known, vals)
            if _inline(spec):
                known.update(_stores(spec))
    src("if whole and pos != end: raise _FALLBACK")
    _construct(src, cls, attr_names, ns, vals, certain and set(attr_names) <= _stored_names(layout))
    src("r.pos = pos")
    src("return obj")
    src.depth -= 1
    src("except Exception:")
    src("    r.pos = start")
    src("return cls._decode_generic(r, ctx, whole=whole)")
    return src.text()


def _construct(src: _Source, cls: type, attr_names: tuple[str, ...], ns: _Namespace, vals: _Values,
               certain: bool) -> None:
    """Build the message from the decoded values, as ``cls(**attributes found)`` would."""
    if not certain:
        attrs = ns.add("attrs", frozenset(attr_names))
        src(f"obj = cls(**{{k: v for k, v in values.items() if k in {attrs}}})")
    elif _plain_init(cls) and attr_names:
        src("obj = _new(cls)")
        src("d = obj.__dict__")
        for a in attr_names:  # field order, as the dataclass __init__ sets them
            src(f"d[{a!r}] = {vals.ref(a)}")
    else:
        src("obj = cls(" + ", ".join(f"{a}={vals.ref(a)}" for a in attr_names) + ")")


def _stored_names(layout: tuple[Spec, ...]) -> set[str]:
    """Names an all-inline layout stores on every decode (absent optional fields as None)."""
    names: set[str] = set()
    for spec in layout:
        if isinstance(spec, Bits):
            if spec.when is None:
                names.update(spec.attrs)
        elif not spec.derived or (spec.when is None and type(spec) is not Reserved):
            names.add(spec.name)
    return names


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def compile_codec(cls: type[Message], attr_names: tuple[str, ...]) -> tuple[EncodeFn, DecodeFn]:
    """The generated (encode, decode) pair of ``cls`` for its current LAYOUT."""
    ns = _Namespace()
    source = _encoder_source(cls, attr_names, ns) + "\n" + _decoder_source(cls, attr_names, ns)
    scope = dict(ns.names)
    exec(compile(source, f"<codec {cls.__module__}.{cls.__qualname__}>", "exec"), scope)
    encode_fn, decode_fn = scope["encode"], scope["decode"]
    encode_fn.__source__ = source  # type: ignore[attr-defined]  # for debugging: what was generated
    return encode_fn, decode_fn
