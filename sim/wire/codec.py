"""Declarative binary layouts: one definition per message, used to both encode and decode.

A message is a frozen dataclass that subclasses :class:`Message` and lists its wire layout in
``LAYOUT``, a tuple of field specs in wire order. Specs whose value follows from other fields
(lengths, counts, reserved bytes, constants) are *derived*: they have no dataclass attribute,
are computed on encode and checked or consumed on decode. Every other spec names a dataclass
attribute of the same name.

Sizes that depend on negotiated algorithms (hash size H, signature size S, DHE size D) are
looked up in a context object passed to ``encode``/``decode`` (see ``sim.wire.spdm.context``)
or computed from fields decoded earlier in the same message.

Decoding never raises anything but :class:`DecodeError`, which names the message, the field
and the byte offset.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

# A size or a condition may be a literal, the name of an earlier field / context attribute,
# or a function of (values decoded so far, context).
SizeRef = int | str | Callable[[dict[str, Any], Any], int]
Cond = Callable[[dict[str, Any], Any], bool]

M = TypeVar("M", bound="Message")


class DecodeError(ValueError):
    """Bytes that do not decode: which message, which field, which byte offset, and why."""

    def __init__(self, message: str, field: str, offset: int, reason: str) -> None:
        self.message = message
        self.field = field
        self.offset = offset
        self.reason = reason
        super().__init__(f"{message}.{field} at byte {offset}: {reason}")


class EncodeError(ValueError):
    """A message object whose field values cannot be put on the wire."""


class Reader:
    """Cursor over a byte string that reports short reads as DecodeError."""

    __slots__ = ("data", "pos", "message", "base")

    def __init__(self, data: bytes, message: str, base: int = 0) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.message = message
        self.base = base  # offset of data[0] within the outermost buffer, for error messages

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def offset(self) -> int:
        return self.base + self.pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0:
            raise DecodeError(self.message, field, self.offset(), f"negative length {n}")
        if self.pos + n > len(self.data):
            raise DecodeError(
                self.message, field, self.offset(),
                f"needs {n} bytes, only {len(self.data) - self.pos} left",
            )
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def fail(self, field: str, reason: str, offset: int | None = None) -> DecodeError:
        return DecodeError(self.message, field, self.offset() if offset is None else offset, reason)


def resolve(ref: SizeRef, values: dict[str, Any], ctx: Any, what: str) -> int:
    """Turn a size reference into a number, from a literal, a field, a context attribute or a function."""
    if isinstance(ref, int):
        return ref
    if isinstance(ref, str):
        if ref in values:
            return int(values[ref])
        if ctx is not None and hasattr(ctx, ref):
            return int(getattr(ctx, ref))
        raise EncodeError(f"{what}: size '{ref}' is neither an earlier field nor in the context")
    return int(ref(values, ctx))


# --------------------------------------------------------------------------------------------
# Field specs
# --------------------------------------------------------------------------------------------


class Spec(abc.ABC):
    """One field on the wire."""

    name: str = ""
    derived: bool = False  # no dataclass attribute
    when: Cond | None = None

    def present(self, values: dict[str, Any], ctx: Any) -> bool:
        return self.when is None or bool(self.when(values, ctx))

    @abc.abstractmethod
    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        """Append this field's bytes to ``out``."""

    @abc.abstractmethod
    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        """Read this field from ``r`` into ``values``."""


class UInt(Spec):
    """Little-endian unsigned integer; with ``enum`` the attribute holds that enum's member.

    Values outside a closed enum are decode errors naming the field; ``IntFlag`` enums accept
    any bit pattern.
    """

    def __init__(self, name: str, size: int, enum_type: type[enum.IntEnum] | type[enum.IntFlag] | None = None,
                 *, when: Cond | None = None, big_endian: bool = False) -> None:
        self.name, self.size, self.enum_type, self.when = name, size, enum_type, when
        self.order: Any = "big" if big_endian else "little"

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        v = int(values[self.name])
        if not 0 <= v < (1 << (8 * self.size)):
            raise EncodeError(f"field '{self.name}' = {v} does not fit in {self.size} bytes")
        out += v.to_bytes(self.size, self.order)

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        start = r.offset()
        v = int.from_bytes(r.take(self.size, self.name), self.order)
        values[self.name] = to_enum(self.enum_type, v, r, self.name, start)


_NO_MEMBERS: dict[int, Any] = {}


class OpenEnum:
    """Marks an enum field whose reserved values still decode, as plain ints.

    For responses that echo a request field byte for byte (an IDE_KM KP_ACK echoes whatever
    KeySubStream it was sent, reserved sub-streams included), so that the echo stays readable.
    """

    def __init__(self, enum_type: type[enum.IntEnum]) -> None:
        self.enum_type = enum_type


def to_enum(enum_type: Any, v: int, r: Reader, field: str, offset: int) -> Any:
    if enum_type is None:
        return v
    if isinstance(enum_type, OpenEnum):
        return enum_type.enum_type._value2member_map_.get(v, v)
    # Fast path: the member the enum call would return (every value seen once is in this map, flags included).
    member = getattr(enum_type, "_value2member_map_", _NO_MEMBERS).get(v)
    if member is not None:
        return member
    if issubclass(enum_type, enum.IntFlag):
        return enum_type(v)
    try:
        return enum_type(v)
    except ValueError:
        raise r.fail(field, f"value 0x{v:x} is not a valid {enum_type.__name__}", offset) from None


def u8(name: str, enum_type: Any = None, **kw: Any) -> UInt:
    return UInt(name, 1, enum_type, **kw)


def u16(name: str, enum_type: Any = None, **kw: Any) -> UInt:
    return UInt(name, 2, enum_type, **kw)


def u24(name: str, enum_type: Any = None, **kw: Any) -> UInt:
    return UInt(name, 3, enum_type, **kw)


def u32(name: str, enum_type: Any = None, **kw: Any) -> UInt:
    return UInt(name, 4, enum_type, **kw)


def u64(name: str, enum_type: Any = None, **kw: Any) -> UInt:
    return UInt(name, 8, enum_type, **kw)


class Const(Spec):
    """A fixed value: written on encode, checked on decode (e.g. a message code or version)."""

    derived = True

    def __init__(self, name: str, size: int, value: int, *, when: Cond | None = None) -> None:
        self.name, self.size, self.value, self.when = name, size, value, when

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        out += self.value.to_bytes(self.size, "little")

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        start = r.offset()
        v = int.from_bytes(r.take(self.size, self.name), "little")
        if v != self.value:
            raise r.fail(self.name, f"expected 0x{self.value:0{2 * self.size}x}, got 0x{v:0{2 * self.size}x}", start)
        values[self.name] = v


class Reserved(Spec):
    """Reserved bytes: zero on encode, ignored on decode (receivers must not check them)."""

    derived = True

    def __init__(self, size: SizeRef, name: str = "reserved", *, when: Cond | None = None) -> None:
        self.size, self.name, self.when = size, name, when

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        out += bytes(resolve(self.size, values, ctx, self.name))

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        r.take(resolve(self.size, values, ctx, self.name), self.name)


class Bytes(Spec):
    """A byte string whose size is fixed, taken from an earlier field or the context, or 'rest'."""

    def __init__(self, name: str, size: SizeRef | None = None, *, when: Cond | None = None,
                 max_size: int | None = None) -> None:
        # size None means "everything that is left"
        self.name, self.size, self.when, self.max_size = name, size, when, max_size

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        v = bytes(values[self.name])
        if self.size is not None:
            n = resolve(self.size, values, ctx, self.name)
            if len(v) != n:
                raise EncodeError(f"field '{self.name}' must be {n} bytes, is {len(v)}")
        if self.max_size is not None and len(v) > self.max_size:
            raise EncodeError(f"field '{self.name}' is {len(v)} bytes, at most {self.max_size} allowed")
        out += v

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        n = r.remaining if self.size is None else resolve(self.size, values, ctx, self.name)
        if self.max_size is not None and n > self.max_size:
            raise r.fail(self.name, f"length {n} exceeds the maximum of {self.max_size}")
        values[self.name] = r.take(n, self.name)


class LengthOf(Spec):
    """A derived length or count of another field: ``(len(target) // unit) + adjust``.

    On decode the raw number is stored under this spec's name so that the target can use it
    as its size; ``to_size`` converts the stored number back into the target's byte size or
    item count when unit/adjust are not trivial.
    """

    derived = True

    def __init__(self, name: str, size: int, target: str, *, unit: int = 1, adjust: int = 0,
                 encoded: bool = False, when: Cond | None = None, big_endian: bool = False) -> None:
        # encoded=True: the byte size of the target's encoding (for nested messages or arrays of
        # them) rather than len() of the attribute (bytes length or item count).
        self.name, self.size, self.target, self.unit, self.adjust, self.when = name, size, target, unit, adjust, when
        self.encoded = encoded
        self.order: Any = "big" if big_endian else "little"

    def measure(self, values: dict[str, Any], ctx: Any) -> int:
        v = values[self.target]
        if self.encoded:
            items = v if isinstance(v, tuple) else (v,)
            encodings = tuple(item.encode(ctx) for item in items)
            # the target's spec writes these same bytes instead of encoding every item a second time
            values[_pre_encoded_key(self.target)] = encodings
            return sum(len(e) for e in encodings)
        return len(v)

    def count(self, values: dict[str, Any], ctx: Any) -> int:
        return self.measure(values, ctx) // self.unit + self.adjust

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        n = self.count(values, ctx)
        if not 0 <= n < (1 << (8 * self.size)):
            raise EncodeError(f"length field '{self.name}' = {n} does not fit in {self.size} bytes")
        out += n.to_bytes(self.size, self.order)
        # what a decoder would store: lets the target check its size against it
        values[self.name] = (n - self.adjust) * self.unit

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        start = r.offset()
        n = int.from_bytes(r.take(self.size, self.name), self.order)
        if n < self.adjust:
            raise r.fail(self.name, f"value {n} is below the minimum {self.adjust}", start)
        values[self.name] = (n - self.adjust) * self.unit


def _pre_encoded_key(target: str) -> str:
    """Where LengthOf(encoded=True) leaves the target's item encodings in the encode values (not a field name)."""
    return "\0encoded:" + target


class Struct(Spec):
    """A nested message (a Message subclass) at this position."""

    def __init__(self, name: str, cls: type[Message], *, size: SizeRef | None = None, when: Cond | None = None) -> None:
        self.name, self.cls, self.size, self.when = name, cls, size, when

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        v = values[self.name]
        if not isinstance(v, self.cls):
            raise EncodeError(f"field '{self.name}' must be a {self.cls.__name__}")
        pre = values.get(_pre_encoded_key(self.name))
        out += pre[0] if pre is not None and len(pre) == 1 else v.encode(ctx)

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        try:
            if self.size is None:
                values[self.name] = self.cls.decode_from(r, ctx)
            else:
                n = resolve(self.size, values, ctx, self.name)
                start = r.offset()
                sub = Reader(r.take(n, self.name), r.message, start)
                values[self.name] = self.cls.decode_from(sub, ctx, whole=True)
        except DecodeError as exc:
            raise nested(exc, self.name) from None


def nested(exc: DecodeError, prefix: str) -> DecodeError:
    """The same error with the enclosing field's name in front of the field path."""
    if exc.field.startswith(prefix + ".") or exc.field == prefix:
        return exc
    return DecodeError(exc.message, f"{prefix}.{exc.field}", exc.offset, exc.reason)


class Array(Spec):
    """A tuple of nested messages, sized by an item count or a total byte length.

    Exactly one of ``count`` and ``length`` is given. ``count`` with None means "until the
    bytes run out".
    """

    def __init__(self, name: str, cls: type[Message] | UInt, *, count: SizeRef | None = None,
                 length: SizeRef | None = None, when: Cond | None = None, max_count: int | None = None) -> None:
        self.name, self.cls, self.count, self.length, self.when, self.max_count = name, cls, count, length, when, max_count

    def _encode_item(self, item: Any, ctx: Any) -> bytes:
        if isinstance(self.cls, UInt):
            buf = bytearray()
            self.cls.encode({self.cls.name: item}, ctx, buf)
            return bytes(buf)
        if not isinstance(item, self.cls):
            raise EncodeError(f"items of '{self.name}' must be {self.cls.__name__}")
        return item.encode(ctx)

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        items = values[self.name]
        if self.count is not None:
            n = resolve(self.count, values, ctx, self.name)
            if len(items) != n:
                raise EncodeError(f"field '{self.name}' must hold {n} items, holds {len(items)}")
        pre = values.get(_pre_encoded_key(self.name))
        if pre is not None and len(pre) == len(items) and not isinstance(self.cls, UInt):
            for item, encoding in zip(items, pre, strict=True):
                if not isinstance(item, self.cls):
                    raise EncodeError(f"items of '{self.name}' must be {self.cls.__name__}")
                out += encoding
            return
        for item in items:
            out += self._encode_item(item, ctx)

    def _decode_item(self, r: Reader, ctx: Any, i: int) -> Any:
        if isinstance(self.cls, UInt):
            tmp: dict[str, Any] = {}
            start = r.offset()
            raw = int.from_bytes(r.take(self.cls.size, f"{self.name}[{i}]"), self.cls.order)
            tmp[self.cls.name] = to_enum(self.cls.enum_type, raw, r, f"{self.name}[{i}]", start)
            return tmp[self.cls.name]
        try:
            return self.cls.decode_from(r, ctx)
        except DecodeError as exc:
            raise nested(exc, f"{self.name}[{i}]") from None

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        items: list[Any] = []
        if self.length is not None:
            n = resolve(self.length, values, ctx, self.name)
            start = r.offset()
            sub = Reader(r.take(n, self.name), r.message, start)
            while sub.remaining:
                items.append(self._decode_item(sub, ctx, len(items)))
        else:
            count = None if self.count is None else resolve(self.count, values, ctx, self.name)
            if count is not None and self.max_count is not None and count > self.max_count:
                raise r.fail(self.name, f"{count} items exceed the maximum of {self.max_count}")
            while (r.remaining if count is None else len(items) < count):
                items.append(self._decode_item(r, ctx, len(items)))
        values[self.name] = tuple(items)


class Bits(Spec):
    """Several attributes packed in one little-endian integer: (attr, low bit, width, enum)."""

    def __init__(self, name: str, size: int, parts: Sequence[tuple[str, int, int, Any]], *,
                 when: Cond | None = None) -> None:
        self.name, self.size, self.parts, self.when = name, size, tuple(parts), when
        self.derived = True  # the packed integer itself is not an attribute; its parts are

    @property
    def attrs(self) -> tuple[str, ...]:
        return tuple(p[0] for p in self.parts)

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        word = 0
        for attr, low, width, _ in self.parts:
            v = int(values[attr])
            if not 0 <= v < (1 << width):
                raise EncodeError(f"field '{attr}' = {v} does not fit in {width} bits")
            word |= v << low
        out += word.to_bytes(self.size, "little")

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        start = r.offset()
        word = int.from_bytes(r.take(self.size, self.name), "little")
        for attr, low, width, enum_type in self.parts:
            values[attr] = to_enum(enum_type, (word >> low) & ((1 << width) - 1), r, attr, start)


# --------------------------------------------------------------------------------------------
# Message base
# --------------------------------------------------------------------------------------------


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_FIELD_SETS: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """The dataclass attribute names of a message class, computed once per class (encode/decode are hot)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
        _FIELD_SETS[cls] = frozenset(names)
    return names


def _field_set(cls: type) -> frozenset[str]:
    fields = _FIELD_SETS.get(cls)
    if fields is None:
        _field_names(cls)
        fields = _FIELD_SETS[cls]
    return fields


# Per-class layout plans: each spec with what the encode/decode loops ask of it on every call, looked
# up once. A plan is rebuilt if the class's LAYOUT tuple is replaced.
_EncodeStep = tuple[Cond | None, bool, str, Callable[[dict[str, Any], Any, bytearray], None]]
_DecodeStep = tuple[Cond | None, bool, str, Callable[[Reader, dict[str, Any], Any], None]]
_PLANS: dict[type, tuple[tuple[Spec, ...], tuple[_EncodeStep, ...], tuple[_DecodeStep, ...]]] = {}


def _plan(cls: type[Message]) -> tuple[tuple[_EncodeStep, ...], tuple[_DecodeStep, ...]]:
    layout = cls.LAYOUT
    plan = _PLANS.get(cls)
    if plan is None or plan[0] is not layout:
        encode = tuple((spec.when, spec.derived, spec.name, spec.encode) for spec in layout)
        # on decode, an absent attribute (not derived, not Bits) is stored as None
        decode = tuple((spec.when, spec.derived or isinstance(spec, Bits), spec.name, spec.decode)
                       for spec in layout)
        plan = _PLANS[cls] = (layout, encode, decode)
    return plan[1], plan[2]


# Per-class generated encoder/decoder (sim.wire.codegen), rebuilt if the class's LAYOUT tuple is replaced.
_CODECS: dict[type, tuple[tuple[Spec, ...], Callable[..., bytes], Callable[..., Any]]] = {}


_GENERATE = True
_CODECS_BY_MODE = {True: _CODECS, False: {}}


def use_generated_codecs(enabled: bool) -> None:
    """Switch between the generated per-class codecs (default) and the layout interpreter alone.

    For tests that compare the two on the same inputs; both give the same bytes, objects and errors.
    """
    global _GENERATE, _CODECS
    _GENERATE = bool(enabled)
    _CODECS = _CODECS_BY_MODE[_GENERATE]


def _interpreted_decode(cls: type[Message], r: Reader, ctx: Any, whole: bool) -> Any:
    return cls._decode_generic(r, ctx, whole=whole)


def _compiled(cls: type[Message]) -> tuple[tuple[Spec, ...], Callable[..., bytes], Callable[..., Any]]:
    layout = cls.LAYOUT
    if _GENERATE:
        from sim.wire.codegen import compile_codec  # imported on first use: codegen builds on this module

        encode, decode = compile_codec(cls, _field_names(cls))
    else:
        encode, decode = cls._encode_generic, _interpreted_decode
    entry = _CODECS_BY_MODE[_GENERATE][cls] = (layout, encode, decode)
    return entry


def _attr_names(layout: Sequence[Spec]) -> set[str]:
    names: set[str] = set()
    for spec in layout:
        if isinstance(spec, Bits):
            names.update(spec.attrs)
        elif not spec.derived:
            names.add(spec.name)
    return names


@dataclasses.dataclass(frozen=True)
class Message:
    """Base of every wire structure. Subclasses are frozen dataclasses with a ``LAYOUT``."""

    LAYOUT: ClassVar[tuple[Spec, ...]] = ()
    NAME: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "NAME" not in cls.__dict__:
            cls.NAME = cls.__name__

    @classmethod
    def check_layout(cls) -> None:
        """Fail loudly when a layout and the dataclass attributes disagree (used by tests)."""
        attrs = {f.name for f in dataclasses.fields(cls)}
        wired = _attr_names(cls.LAYOUT)
        if attrs != wired:
            raise TypeError(f"{cls.__name__}: attributes {sorted(attrs)} != layout fields {sorted(wired)}")

    def field_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _field_names(type(self))}

    def encode(self, ctx: Any = None) -> bytes:
        cls = type(self)
        codec = _CODECS.get(cls)
        if codec is None or codec[0] is not cls.LAYOUT:
            codec = _compiled(cls)
        return codec[1](self, ctx)

    def _encode_generic(self, ctx: Any = None) -> bytes:
        """The layout interpreter: the reference the generated encoder falls back to on anything unusual."""
        values = self.field_values()
        out = bytearray()
        # derived lengths need the target's value: they read it straight from `values`
        for when, derived, name, encode in _plan(type(self))[0]:
            if when is not None and not when(values, ctx):
                continue
            if not derived and values.get(name) is None:
                raise EncodeError(f"{self.NAME}: field '{name}' is required here but is None")
            encode(values, ctx, out)
        return bytes(out)

    @classmethod
    def decode_from(cls: type[M], r: Reader, ctx: Any = None, *, whole: bool = False) -> M:
        codec = _CODECS.get(cls)
        if codec is None or codec[0] is not cls.LAYOUT:
            codec = _compiled(cls)
        return codec[2](cls, r, ctx, whole)  # type: ignore[no-any-return]

    @classmethod
    def _decode_generic(cls: type[M], r: Reader, ctx: Any = None, *, whole: bool = False) -> M:
        """The layout interpreter: the reference the generated decoder falls back to on anything unusual."""
        values: dict[str, Any] = {}
        for when, derived_or_bits, name, decode in _plan(cls)[1]:
            if when is not None and not when(values, ctx):
                if not derived_or_bits:
                    values[name] = None
                continue
            decode(r, values, ctx)
        if whole and r.remaining:
            raise r.fail("(end)", f"{r.remaining} unexpected trailing bytes after {cls.NAME}")
        attrs = _field_set(cls)
        try:
            obj = cls(**{k: v for k, v in values.items() if k in attrs})
        except (TypeError, ValueError) as exc:  # a field validator refused a decoded value
            raise r.fail("(message)", str(exc)) from None
        return obj

    @classmethod
    def decode(cls: type[M], data: bytes, ctx: Any = None, *, allow_trailing: bool = False) -> M:
        """Decode exactly one message from ``data`` (trailing bytes are an error unless allowed)."""
        r = Reader(data, cls.NAME)
        return cls.decode_from(r, ctx, whole=not allow_trailing)

    def describe(self) -> Iterator[tuple[str, Any]]:
        """(field, value) pairs for printing, nested messages flattened with dotted names."""
        for name, value in self.field_values().items():
            yield from _describe(name, value)


def _describe(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Message):
        for sub, v in value.describe():
            yield f"{name}.{sub}", v
    elif isinstance(value, tuple) and value and all(isinstance(v, Message) for v in value):
        for i, item in enumerate(value):
            for sub, v in item.describe():
                yield f"{name}[{i}].{sub}", v
    else:
        yield name, value


def format_value(value: Any) -> str:
    """Human-readable rendering of one decoded value (hex for bytes, names for enums)."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex() if value else "(empty)"
    if isinstance(value, enum.IntFlag):
        names = [m.name for m in type(value) if m.value and (value & m) == m and m.name]
        rest = int(value) & ~sum(int(m) for m in type(value) if m.value and (value & m) == m)
        parts = names + ([f"0x{rest:x}"] if rest else [])
        return f"0x{int(value):x}" + (f" ({'|'.join(parts)})" if parts else "")
    if isinstance(value, enum.IntEnum):
        return f"{value.name} (0x{int(value):x})"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value} (0x{value:x})"
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)
