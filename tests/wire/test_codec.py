"""The layout framework itself: one definition encodes and decodes; errors name field and offset."""

from __future__ import annotations

import dataclasses
import enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.wire.codec import (
    Array,
    Bits,
    Bytes,
    Const,
    DecodeError,
    EncodeError,
    LengthOf,
    Message,
    Reserved,
    Struct,
    format_value,
    u8,
    u16,
    u24,
)


class Colour(enum.IntEnum):
    RED = 1
    BLUE = 2


class Flags(enum.IntFlag):
    A = 1
    B = 2


@dataclasses.dataclass(frozen=True)
class Item(Message):
    LAYOUT = (u8("kind", Colour), LengthOf("n", 1, "data"), Bytes("data", "n"))
    kind: Colour
    data: bytes


@dataclasses.dataclass(frozen=True)
class Sample(Message):
    LAYOUT = (
        Const("magic", 1, 0xA5),
        Reserved(1),
        u16("count16"),
        u24("len24"),
        Bits("packed", 1, [("lo", 0, 4, None), ("hi", 4, 4, None)]),
        u8("flags", Flags),
        LengthOf("nitems", 1, "items"),
        Array("items", Item, count="nitems"),
        LengthOf("blob_len", 2, "blob"),
        Bytes("blob", "blob_len"),
        Bytes("tail", "hash_size"),
        Bytes("opt", 4, when=lambda v, ctx: v["count16"] > 100),
    )
    count16: int
    len24: int
    lo: int
    hi: int
    flags: Flags
    items: tuple[Item, ...]
    blob: bytes
    tail: bytes
    opt: bytes | None = None


@dataclasses.dataclass(frozen=True)
class Ctx:
    hash_size: int = 4


items_st = st.lists(
    st.builds(Item, kind=st.sampled_from(Colour), data=st.binary(max_size=20)), max_size=4
).map(tuple)


@st.composite
def samples(draw: st.DrawFn) -> Sample:
    count16 = draw(st.integers(0, 0xFFFF))
    return Sample(
        count16=count16,
        len24=draw(st.integers(0, 0xFFFFFF)),
        lo=draw(st.integers(0, 15)),
        hi=draw(st.integers(0, 15)),
        flags=Flags(draw(st.integers(0, 255))),
        items=draw(items_st),
        blob=draw(st.binary(max_size=40)),
        tail=draw(st.binary(min_size=4, max_size=4)),
        opt=draw(st.binary(min_size=4, max_size=4)) if count16 > 100 else None,
    )


def test_layout_matches_attributes() -> None:
    Sample.check_layout()
    Item.check_layout()


@given(samples())
def test_round_trip(msg: Sample) -> None:
    data = msg.encode(Ctx())
    assert Sample.decode(data, Ctx()) == msg


def test_known_bytes() -> None:
    msg = Sample(count16=0x0201, len24=0x050403, lo=1, hi=0xF, flags=Flags.B, items=(Item(Colour.BLUE, b"xy"),),
                 blob=b"\x07", tail=b"abcd", opt=b"WXYZ")
    assert msg.encode(Ctx()).hex() == ("a500" "0102" "030405" "f1" "02" "01" "02" "02" "7879" "0100" "07" "61626364"
                                       "5758595a")
    with pytest.raises(EncodeError, match="'opt'"):
        dataclasses.replace(msg, opt=None).encode(Ctx())


def test_errors_name_field_and_offset() -> None:
    good = Sample(count16=1, len24=0, lo=0, hi=0, flags=Flags.A, items=(Item(Colour.RED, b"z"),), blob=b"",
                  tail=b"1234").encode(Ctx())
    with pytest.raises(DecodeError) as e:
        Sample.decode(b"\x00" + good[1:], Ctx())
    assert (e.value.field, e.value.offset) == ("magic", 0)
    with pytest.raises(DecodeError) as e:
        Sample.decode(good[:10] + b"\x09" + good[11:], Ctx())  # item kind 9 is no Colour
    assert e.value.field == "items[0].kind" and e.value.offset == 10
    with pytest.raises(DecodeError) as e:
        Sample.decode(good[:-1], Ctx())
    assert e.value.field == "tail" and "needs 4 bytes" in e.value.reason
    with pytest.raises(DecodeError) as e:
        Sample.decode(good + b"\x00", Ctx())
    assert e.value.field == "(end)" and e.value.offset == len(good)
    assert Sample.decode(good + b"\x00", Ctx(), allow_trailing=True).tail == b"1234"


@given(st.binary(max_size=64))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        Sample.decode(data, Ctx())
    except DecodeError:
        pass


def test_encode_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(EncodeError):
        Sample(count16=1 << 16, len24=0, lo=0, hi=0, flags=Flags.A, items=(), blob=b"", tail=b"1234").encode(Ctx())
    with pytest.raises(EncodeError):
        Sample(count16=1, len24=0, lo=16, hi=0, flags=Flags.A, items=(), blob=b"", tail=b"1234").encode(Ctx())
    with pytest.raises(EncodeError):
        Sample(count16=1, len24=0, lo=0, hi=0, flags=Flags.A, items=(), blob=b"", tail=b"123").encode(Ctx())


def test_nested_struct_and_describe() -> None:
    @dataclasses.dataclass(frozen=True)
    class Outer(Message):
        LAYOUT = (u8("x"), Struct("inner", Item))
        x: int
        inner: Item

    msg = Outer(x=3, inner=Item(Colour.RED, b"\x01\x02"))
    assert Outer.decode(msg.encode()) == msg
    assert dict(msg.describe()) == {"x": 3, "inner.kind": Colour.RED, "inner.data": b"\x01\x02"}
    with pytest.raises(DecodeError) as e:
        Outer.decode(bytes([3, 7, 0]))
    assert e.value.field == "inner.kind" and e.value.offset == 1


def test_format_value() -> None:
    assert format_value(b"\x01\xff") == "01ff"
    assert format_value(Colour.BLUE) == "BLUE (0x2)"
    assert format_value(Flags.A | Flags.B) == "0x3 (A|B)"
    assert format_value(17) == "17 (0x11)"
