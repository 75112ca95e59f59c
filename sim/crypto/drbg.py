"""Seeded, deterministic byte streams: the only source of randomness in a simulation run.

Construction (documented because traces and identities depend on it bit for bit):

* ``root_key   = HMAC-SHA256(key = b"tiosim-drbg-v1", msg = seed)``
* ``stream_key = HMAC-SHA256(key = root_key, msg = b"path\\x00" || UTF-8(path))``
* ``block_i    = HMAC-SHA256(key = stream_key, msg = u64_be(i))`` for i = 0, 1, 2, ...
* the stream is ``block_0 || block_1 || ...``, handed out front to back.

This is HMAC in counter mode (the PRF construction of NIST SP 800-108 §4.1), keyed per
(seed, path). Two properties follow that the engine relies on:

* the stream is a pure function of (seed, path): ``bytes(3) + bytes(5) == bytes(8)`` of a fresh
  source, however the reads are split;
* ``child(name)`` is ``DeterministicRandom(seed, path + "." + name)``: a child's stream does not
  depend on how much of the parent was consumed, nor on the order in which children are made.
  So ``DeterministicRandom(s, "").child("rp0").child("dev0")`` equals
  ``DeterministicRandom(s, "rp0.dev0")``, matching the engine's component paths.

It is a simulation PRNG with a cryptographic construction (so derived keys look like real keys),
not an SP 800-90A DRBG: there is no reseeding, and anyone who knows the seed knows every secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from cryptography.hazmat.primitives import hashes, hmac

_DOMAIN = b"tiosim-drbg-v1"
_BLOCK = 32
T = TypeVar("T")


def _hmac_sha256(key: bytes, msg: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(msg)
    return mac.finalize()


def seed_to_bytes(seed: bytes | int | str) -> bytes:
    """Canonical bytes of a scenario seed: bytes as is, ints and strings as their UTF-8 text.

    Ints go through their decimal text so that negative and arbitrarily large seeds are accepted
    and ``7`` and ``"7"`` name the same run.
    """
    if isinstance(seed, bytes | bytearray | memoryview):
        return bytes(seed)
    if isinstance(seed, bool):
        raise TypeError("seed must be bytes, int or str, not bool")
    if isinstance(seed, int):
        return str(seed).encode()
    if isinstance(seed, str):
        return seed.encode()
    raise TypeError(f"seed must be bytes, int or str, not {type(seed).__name__}")


class DeterministicRandom:
    """A seeded byte stream for one component (see the module docstring for the construction)."""

    __slots__ = ("_seed", "_path", "_key", "_counter", "_buffer")

    def __init__(self, seed: bytes | int | str, path: str = "") -> None:
        self._seed = seed_to_bytes(seed)
        self._path = path
        root = _hmac_sha256(_DOMAIN, self._seed)
        self._key = _hmac_sha256(root, b"path\x00" + path.encode())
        self._counter = 0
        self._buffer = b""

    @property
    def seed(self) -> bytes:
        return self._seed

    @property
    def path(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"DeterministicRandom(path={self._path!r}, consumed={self._counter * _BLOCK - len(self._buffer)})"

    def child(self, name: str) -> DeterministicRandom:
        """An independent stream for a sub-component, named by extending the path with ``.name``."""
        if not name:
            raise ValueError("child name must not be empty")
        path = f"{self._path}.{name}" if self._path else name
        return DeterministicRandom(self._seed, path)

    def bytes(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream."""
        if n < 0:
            raise ValueError("n must be >= 0")
        while len(self._buffer) < n:
            self._buffer += _hmac_sha256(self._key, self._counter.to_bytes(8, "big"))
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def getrandbits(self, k: int) -> int:
        """A uniform integer in [0, 2**k): the top ``k`` bits of the next ceil(k/8) bytes, big-endian."""
        if k < 0:
            raise ValueError("k must be >= 0")
        if k == 0:
            return 0
        nbytes = (k + 7) // 8
        return int.from_bytes(self.bytes(nbytes), "big") >> (nbytes * 8 - k)

    def randbelow(self, n: int) -> int:
        """A uniform integer in [0, n) by rejection sampling (no modulo bias)."""
        if n <= 0:
            raise ValueError("n must be > 0")
        k = (n - 1).bit_length()
        while True:
            r = self.getrandbits(k)
            if r < n:
                return r

    def randint(self, a: int, b: int) -> int:
        """A uniform integer in [a, b], both ends included (like ``random.randint``)."""
        if b < a:
            raise ValueError(f"empty range [{a}, {b}]")
        return a + self.randbelow(b - a + 1)

    def random(self) -> float:
        """A uniform float in [0, 1) with 53 random bits."""
        return self.getrandbits(53) / (1 << 53)

    def choice(self, items: Sequence[T]) -> T:
        if not items:
            raise ValueError("cannot choose from an empty sequence")
        return items[self.randbelow(len(items))]

    def scalar(self, order: int) -> int:
        """A private scalar in [1, order-1] (FIPS 186-5 A.2.1: 64 extra bits, then reduce).

        Used for ECDSA/ECDHE private keys; the 64 surplus bits make the modulo bias negligible.
        """
        if order < 3:
            raise ValueError("order must be >= 3")
        c = self.getrandbits(order.bit_length() + 64)
        return c % (order - 1) + 1
