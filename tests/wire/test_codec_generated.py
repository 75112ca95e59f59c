"""The generated per-class codecs (sim.wire.codegen) against the layout interpreter they replace.

Both must give the same bytes, the same objects (reprs included, so an int is never an enum
member on one side only), the same reader position and the same exceptions (type, message,
field, offset) on every input: the messages of the whole attest flow at SPDM 1.2 and 1.3 as
captured in flight, those messages mutated byte by byte, random bytes for every message class,
and decoded messages whose fields were replaced by values an encoder must refuse.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.wire
from sim.bench.protocol import FlowRig
from sim.wire import codec
from sim.wire.codec import (
    Array,
    Bits,
    Bytes,
    Const,
    LengthOf,
    Message,
    OpenEnum,
    Reader,
    Reserved,
    Struct,
    UInt,
    u8,
    u16,
    u24,
    u32,
)
from sim.wire.secured import LIBSPDM_TEST_FRAMING, MCTP_FRAMING, PCI_DOE_FRAMING
from sim.wire.spdm.common import SpdmContext

CONTEXTS: tuple[Any, ...] = (
    None, SpdmContext(), SpdmContext(32, 64, 64, 64), SpdmContext(48, 96, 96, 96, 48, True),
    PCI_DOE_FRAMING, MCTP_FRAMING, LIBSPDM_TEST_FRAMING,
)


@dataclasses.dataclass(frozen=True)
class DecodeCase:
    cls: type[Message]
    data: bytes
    ctx: Any
    whole: bool


@dataclasses.dataclass(frozen=True)
class EncodeCase:
    obj: Message
    ctx: Any


class Shade(enum.IntEnum):
    DARK = 1
    LIGHT = 2


class Marks(enum.IntFlag):
    X = 1
    Y = 4


@dataclasses.dataclass(frozen=True)
class Leaf(Message):
    """A nested item with a unit-scaled, adjusted length."""

    LAYOUT = (u8("shade", Shade), LengthOf("dws", 1, "body", unit=4, adjust=1), Bytes("body", "dws"))
    shade: Shade
    body: bytes


@dataclasses.dataclass(frozen=True)
class OddShapes(Message):
    """Every spec shape the generator treats on its own: sizes from functions and the context, conditions,
    big-endian and 3-byte integers, constants outside struct runs, flags, open enums, nested items."""

    LAYOUT = (
        Const("magic", 3, 0xC0FFEE),
        UInt("be16", 2, big_endian=True),
        u24("len24"),
        u8("marks", Marks),
        u8("open", OpenEnum(Shade)),
        Reserved("pad_size"),
        Bits("bits", 2, [("lo", 0, 3, Shade), ("hi", 8, 8, None)], when=lambda v, ctx: v["len24"] & 1),
        u16("maybe", when=lambda v, ctx: v["marks"] & Marks.Y),
        Const("tag", 1, 0x5A, when=lambda v, ctx: v["len24"] > 10),
        LengthOf("leaf_bytes", 1, "leaves", encoded=True),
        Array("leaves", Leaf, length="leaf_bytes", max_count=4),
        u8("nrefs"),
        Array("refs", u32("ref"), count="nrefs", max_count=3),
        Struct("first", Leaf),
        Bytes("sized", lambda v, ctx: v["len24"] % 5),
        Bytes("rest", max_size=6),
    )
    be16: int
    len24: int
    marks: Marks
    open: Shade | int
    leaves: tuple[Leaf, ...]
    nrefs: int
    refs: tuple[int, ...]
    first: Leaf
    sized: bytes
    rest: bytes
    lo: Shade | None = None
    hi: int | None = None
    maybe: int | None = None


@dataclasses.dataclass(frozen=True)
class PadCtx:
    pad_size: int = 2


def _all_message_classes() -> list[type[Message]]:
    for info in pkgutil.walk_packages(sim.wire.__path__, "sim.wire."):
        importlib.import_module(info.name)
    seen: list[type[Message]] = []
    todo = [Message]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return sorted((c for c in seen if c.LAYOUT), key=lambda c: f"{c.__module__}.{c.__qualname__}")


MESSAGE_CLASSES = _all_message_classes()


def _capture_flow() -> tuple[list[EncodeCase], list[DecodeCase]]:
    """Every encode and decode call of the attest flow (both sides, SPDM 1.3 and 1.2), with its inputs."""
    encodes: list[EncodeCase] = []
    decodes: list[DecodeCase] = []
    original = codec._compiled

    def recording(cls: type[Message]) -> Any:
        layout, encode, decode = original(cls)

        def encode_rec(obj: Message, ctx: Any) -> bytes:
            encodes.append(EncodeCase(obj, ctx))
            return encode(obj, ctx)

        def decode_rec(klass: type[Message], r: Reader, ctx: Any, whole: bool) -> Any:
            decodes.append(DecodeCase(klass, r.data[r.pos:], ctx, whole))
            return decode(klass, r, ctx, whole)

        entry = codec._CODECS[cls] = (layout, encode_rec, decode_rec)
        return entry

    codec._compiled = recording  # type: ignore[assignment]
    codec._CODECS.clear()
    try:
        for version in (None, "1.2"):
            rig = FlowRig.build(version=version)
            rig.run()
            assert rig.ok
    finally:
        codec._compiled = original  # type: ignore[assignment]
        codec._CODECS.clear()
    return encodes, decodes


ENCODES, DECODES = _capture_flow()


def _outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        value = fn()
    except Exception as exc:  # the comparison is the point: whatever one side raises, the other must too
        return ("raised", type(exc), str(exc), getattr(exc, "field", None), getattr(exc, "offset", None))
    if isinstance(value, tuple):
        return ("ok",) + tuple(repr(v) for v in value)
    return ("ok", repr(value))


def _both(fn: Callable[[], Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    codec.use_generated_codecs(False)
    try:
        interpreted = _outcome(fn)
    finally:
        codec.use_generated_codecs(True)
    return _outcome(fn), interpreted


def _decode(case: DecodeCase) -> Callable[[], tuple[Message, int]]:
    def run() -> tuple[Message, int]:
        r = Reader(case.data, case.cls.NAME)
        msg = case.cls.decode_from(r, case.ctx, whole=case.whole)
        return msg, r.pos
    return run


def _encode(obj: Message, ctx: Any) -> Callable[[], bytes]:
    return lambda: obj.encode(ctx)


# ------------------------------------------------------------------ the flow as captured


def test_the_flow_exercises_the_generated_codecs() -> None:
    classes = {type(c.obj) for c in ENCODES} | {c.cls for c in DECODES}
    assert len(ENCODES) > 400 and len(DECODES) > 300 and len(classes) > 30


def test_every_captured_encode_and_decode_agrees() -> None:
    for case in ENCODES:
        generated, interpreted = _both(_encode(case.obj, case.ctx))
        assert generated == interpreted and generated[0] == "ok", case
    for dcase in DECODES:
        generated, interpreted = _both(_decode(dcase))
        assert generated == interpreted and generated[0] == "ok", dcase


def test_generated_source_is_kept_for_debugging() -> None:
    msg = next(c.obj for c in ENCODES if type(c.obj).__name__ == "VendorDefinedRequest")
    msg.encode()
    source = codec._CODECS[type(msg)][1].__source__
    assert "def encode(self, ctx):" in source and "_encode_generic" in source


# ------------------------------------------------------------------ mutated and random inputs


def _mutate(data: bytes, op: str, at: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    i = at % len(data)
    if op == "flip":
        return data[:i] + bytes([data[i] ^ (1 << (value % 8))]) + data[i + 1:]
    if op == "set":
        return data[:i] + bytes([value]) + data[i + 1:]
    if op == "truncate":
        return data[:i]
    if op == "insert":
        return data[:i] + bytes([value]) + data[i:]
    return data + bytes([value]) * (1 + at % 5)  # append


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(DECODES) - 1), ops=st.lists(
    st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "append"]), st.integers(0, 4096),
              st.integers(0, 255)), min_size=1, max_size=3),
    ctx=st.sampled_from(CONTEXTS + ("captured",)), whole=st.booleans())
def test_mutated_messages_decode_alike(index: int, ops: list[tuple[str, int, int]], ctx: Any, whole: bool) -> None:
    case = DECODES[index]
    data = case.data
    for op, at, value in ops:
        data = _mutate(data, op, at, value)
    mutated = DecodeCase(case.cls, data, case.ctx if ctx == "captured" else ctx, whole)
    generated, interpreted = _both(_decode(mutated))
    assert generated == interpreted


@settings(max_examples=200, deadline=None)
@given(cls=st.sampled_from(MESSAGE_CLASSES), data=st.binary(max_size=120), ctx=st.sampled_from(CONTEXTS),
       whole=st.booleans())
def test_random_bytes_decode_alike_for_every_message_class(cls: type[Message], data: bytes, ctx: Any,
                                                          whole: bool) -> None:
    generated, interpreted = _both(_decode(DecodeCase(cls, data, ctx, whole)))
    assert generated == interpreted


ODD_VALUES: tuple[Any, ...] = (
    None, 0, 1, -1, 255, 256, 0xFFFF, 0x10000, 2**32, 2**64, True, 1.0, "text", b"", b"\x01", bytes(48),
    bytes(70000), bytearray(b"ab"), (), (1, 2),
)


def _fields(obj: Message) -> Iterator[str]:
    return (f.name for f in dataclasses.fields(obj))


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, len(ENCODES) - 1), pick=st.integers(0, 63), value=st.sampled_from(ODD_VALUES),
       ctx=st.sampled_from(CONTEXTS + ("captured",)))
def test_odd_field_values_encode_alike(index: int, pick: int, value: Any, ctx: Any) -> None:
    case = ENCODES[index]
    names = list(_fields(case.obj))
    if not names:
        return
    broken = copy.copy(case.obj)
    object.__setattr__(broken, names[pick % len(names)], value)  # past the validators: encode must cope
    generated, interpreted = _both(_encode(broken, case.ctx if ctx == "captured" else ctx))
    assert generated == interpreted


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__qualname__)
def test_every_class_compiles(cls: type[Message]) -> None:
    from sim.wire.codegen import compile_codec

    encode, decode = compile_codec(cls, tuple(f.name for f in dataclasses.fields(cls)))
    assert callable(encode) and callable(decode)


# ------------------------------------------------------------------ the unusual spec shapes


def _odd(len24: int, marks: int, leaves: list[bytes], refs: list[int], rest: bytes) -> OddShapes:
    return OddShapes(
        be16=0x1234, len24=len24, marks=Marks(marks), open=Shade.LIGHT,
        leaves=tuple(Leaf(Shade.DARK, b) for b in leaves), nrefs=len(refs), refs=tuple(refs),
        first=Leaf(Shade.LIGHT, b"abcd"), sized=bytes(len24 % 5), rest=rest,
        lo=Shade.DARK if len24 & 1 else None, hi=7 if len24 & 1 else None, maybe=9 if marks & Marks.Y else None)


odd_messages = st.builds(
    _odd, len24=st.integers(0, 40), marks=st.sampled_from([0, 1, 4, 5]),
    leaves=st.lists(st.binary(min_size=0, max_size=8).map(lambda b: b[:len(b) // 4 * 4]), max_size=3),
    refs=st.lists(st.integers(0, 2**32 - 1), max_size=3), rest=st.binary(max_size=6))


@settings(max_examples=200, deadline=None)
@given(msg=odd_messages, ctx=st.sampled_from([PadCtx(), PadCtx(0), None]), cut=st.integers(0, 80),
       flip=st.integers(0, 80 * 8), mutate=st.sampled_from(["none", "cut", "flip", "extend"]), whole=st.booleans())
def test_unusual_spec_shapes_agree(msg: OddShapes, ctx: Any, cut: int, flip: int, mutate: str, whole: bool) -> None:
    generated, interpreted = _both(_encode(msg, ctx))
    assert generated == interpreted
    if generated[0] != "ok":
        return
    data = msg.encode(ctx)
    if mutate == "cut":
        data = data[:cut]
    elif mutate == "flip" and data:
        raw = bytearray(data)
        raw[(flip // 8) % len(raw)] ^= 1 << (flip % 8)
        data = bytes(raw)
    elif mutate == "extend":
        data += b"\x00\x01"
    generated, interpreted = _both(_decode(DecodeCase(OddShapes, data, ctx, whole)))
    assert generated == interpreted
    if mutate == "none" and whole:
        assert generated == ("ok", repr(msg), repr(len(data)))


def test_unusual_shapes_take_the_generated_path() -> None:
    """The generated code handles these itself (no silent fallback to the interpreter on good input)."""
    msg = _odd(7, 5, [b"abcd"], [1, 2], b"xy")
    data = msg.encode(PadCtx())
    calls: list[str] = []
    original_encode, original_decode = OddShapes._encode_generic, OddShapes._decode_generic

    def spy_encode(self: Message, ctx: Any = None) -> bytes:
        calls.append("encode")
        return original_encode(self, ctx)

    def spy_decode(cls: type[Message], r: Reader, ctx: Any = None, *, whole: bool = False) -> Message:
        calls.append("decode")
        return original_decode.__func__(cls, r, ctx, whole=whole)  # type: ignore[attr-defined]

    OddShapes._encode_generic = spy_encode  # type: ignore[method-assign]
    OddShapes._decode_generic = classmethod(spy_decode)  # type: ignore[method-assign, assignment]
    try:
        assert OddShapes.decode(data, PadCtx()) == msg and msg.encode(PadCtx()) == data
        assert calls == []
        with pytest.raises(codec.DecodeError):
            OddShapes.decode(data[:5], PadCtx())
        assert calls == ["decode"]  # a bad input is reported by the interpreter
    finally:
        del OddShapes._encode_generic, OddShapes._decode_generic
