"""DoeObject's in-place header path against its layout (the one definition of the format)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.wire.codec import Message, Reader
from sim.wire.doe import MAX_PAYLOAD_BYTES, DoeObject


def _outcome(fn: Any) -> tuple[Any, ...]:
    try:
        value = fn()
    except Exception as exc:  # whatever one path raises, the other must raise alike
        return ("raised", type(exc), str(exc))
    return ("ok", repr(value))


def _by_layout_decode(data: bytes, allow_trailing: bool) -> DoeObject:
    return DoeObject._decode_generic(Reader(data, DoeObject.NAME), None, whole=not allow_trailing)


ODD: tuple[Any, ...] = (-1, 0x10000, 256, True, 1.5, "x", None)


@settings(max_examples=200, deadline=None)
@given(vid=st.one_of(st.integers(0, 0xFFFF), st.sampled_from(ODD)), kind=st.one_of(st.integers(0, 0xFF),
       st.sampled_from(ODD)), payload=st.one_of(st.binary(max_size=40), st.just(bytearray(b"abc")), st.just(None)))
def test_encode_matches_the_layout(vid: Any, kind: Any, payload: Any) -> None:
    obj = DoeObject(vid, kind, payload)
    assert _outcome(obj.encode) == _outcome(lambda: Message.encode(obj))
    assert _outcome(obj.encode) == _outcome(lambda: obj._encode_generic())


def test_encode_of_an_oversized_payload_fails_like_the_layout() -> None:
    obj = DoeObject(1, 2, bytes(MAX_PAYLOAD_BYTES + 1))
    fast, layout = _outcome(obj.encode), _outcome(obj._encode_generic)
    assert fast == layout and fast[0] == "raised"
    assert DoeObject(1, 2, bytes(MAX_PAYLOAD_BYTES)).encode()[4:8] == bytes(4)  # 2^18 DW is written as 0


@settings(max_examples=300, deadline=None)
@given(vid=st.integers(0, 0xFFFF), kind=st.integers(0, 0xFF), payload=st.binary(max_size=40),
       cut=st.integers(0, 60), extra=st.binary(max_size=5), flip=st.integers(0, 8 * 8 - 1),
       mutate=st.sampled_from(["none", "cut", "extend", "flip"]), allow_trailing=st.booleans())
def test_decode_matches_the_layout(vid: int, kind: int, payload: bytes, cut: int, extra: bytes, flip: int,
                                   mutate: str, allow_trailing: bool) -> None:
    data = DoeObject(vid, kind, payload).encode()
    if mutate == "cut":
        data = data[:cut]
    elif mutate == "extend":
        data += extra
    elif mutate == "flip":
        raw = bytearray(data)
        raw[flip // 8] ^= 1 << (flip % 8)
        data = bytes(raw)
    fast = _outcome(lambda: DoeObject.decode(data, allow_trailing=allow_trailing))
    assert fast == _outcome(lambda: _by_layout_decode(data, allow_trailing))
    if mutate == "none":
        assert fast == ("ok", repr(DoeObject(vid, kind, payload + bytes(-len(payload) % 4))))


def test_decode_of_other_buffer_types_goes_through_the_layout() -> None:
    data = DoeObject(1, 1, b"abcd").encode()
    assert DoeObject.decode(bytearray(data)) == DoeObject.decode(data) == DoeObject(1, 1, b"abcd")
