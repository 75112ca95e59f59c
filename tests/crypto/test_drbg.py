"""DeterministicRandom: the construction is pinned, streams are pure functions of (seed, path)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.crypto.drbg import DeterministicRandom, seed_to_bytes


def _reference_stream(seed: bytes, path: str, n: int) -> bytes:
    """Independent re-implementation of the documented construction with the stdlib."""
    root = hmac.new(b"tiosim-drbg-v1", seed, hashlib.sha256).digest()
    key = hmac.new(root, b"path\x00" + path.encode(), hashlib.sha256).digest()
    out = b""
    i = 0
    while len(out) < n:
        out += hmac.new(key, i.to_bytes(8, "big"), hashlib.sha256).digest()
        i += 1
    return out[:n]


def test_matches_documented_construction() -> None:
    assert DeterministicRandom(b"seed", "rp0.dev0").bytes(100) == _reference_stream(b"seed", "rp0.dev0", 100)
    assert DeterministicRandom(b"", "").bytes(7) == _reference_stream(b"", "", 7)


def test_same_seed_same_bytes_different_seed_or_path_differs() -> None:
    a = DeterministicRandom(b"s1", "x").bytes(64)
    assert a == DeterministicRandom(b"s1", "x").bytes(64)
    assert a != DeterministicRandom(b"s2", "x").bytes(64)
    assert a != DeterministicRandom(b"s1", "y").bytes(64)


def test_int_and_str_seeds() -> None:
    assert seed_to_bytes(7) == seed_to_bytes("7") == b"7"
    assert DeterministicRandom(-3, "p").bytes(8) == DeterministicRandom(b"-3", "p").bytes(8)
    with pytest.raises(TypeError):
        seed_to_bytes(True)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=70), max_size=8))
def test_reads_can_be_split_anywhere(sizes: list[int]) -> None:
    rng = DeterministicRandom(b"split", "a.b")
    joined = b"".join(rng.bytes(n) for n in sizes)
    assert joined == DeterministicRandom(b"split", "a.b").bytes(sum(sizes))


def test_child_is_path_extension_and_independent_of_parent_use() -> None:
    root = DeterministicRandom(b"seed", "")
    root.bytes(1000)  # consuming the parent must not change children
    dev = root.child("rp0").child("dev0")
    assert dev.path == "rp0.dev0"
    assert dev.bytes(32) == DeterministicRandom(b"seed", "rp0.dev0").bytes(32)
    assert root.child("a").bytes(16) != root.child("b").bytes(16)
    with pytest.raises(ValueError):
        root.child("")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=0, max_value=2**70))
def test_randint_in_range(a: int, width: int) -> None:
    rng = DeterministicRandom(b"r", f"{a}:{width}")
    for _ in range(5):
        assert a <= rng.randint(a, a + width) <= a + width


def test_randint_covers_small_range_and_rejects_empty() -> None:
    rng = DeterministicRandom(b"cover", "")
    seen = {rng.randint(1, 6) for _ in range(300)}
    assert seen == {1, 2, 3, 4, 5, 6}
    assert rng.randint(5, 5) == 5
    with pytest.raises(ValueError):
        rng.randint(2, 1)


def test_random_choice_and_scalar() -> None:
    rng = DeterministicRandom(b"misc", "")
    values = [rng.random() for _ in range(200)]
    assert all(0.0 <= v < 1.0 for v in values) and len(set(values)) == 200
    assert rng.choice(["only"]) == "only"
    with pytest.raises(ValueError):
        rng.choice([])
    for order in (3, 7, 2**255 - 19):
        for _ in range(50):
            assert 1 <= rng.scalar(order) <= order - 1
