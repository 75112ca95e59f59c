"""Hash/HMAC/HKDF wrappers: RFC 5869 vectors (PROTOCOLS.md §8.1) and hashlib cross-checks."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.crypto.algorithms import BaseHashAlgo, MeasurementHashAlgo
from sim.crypto.errors import UnsupportedAlgorithmError
from sim.crypto.hashes import (
    TranscriptHash,
    digest,
    hash_size,
    hkdf_expand,
    hkdf_extract,
    hmac_digest,
    hmac_verify,
    measurement_base_hash,
)

SHA256 = BaseHashAlgo.SHA_256


def test_rfc5869_case_1() -> None:
    ikm = b"\x0b" * 22
    salt = bytes(range(0x0D))
    info = bytes(range(0xF0, 0xFA))
    prk = hkdf_extract(SHA256, salt, ikm)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = hkdf_expand(SHA256, prk, info, 42)
    assert okm.hex() == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"


def test_rfc5869_case_3_empty_salt_and_info() -> None:
    prk = hkdf_extract(SHA256, b"", b"\x0b" * 22)
    assert prk.hex() == "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
    okm = hkdf_expand(SHA256, prk, b"", 42)
    assert okm.hex() == "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"


HASHLIB = {
    BaseHashAlgo.SHA_256: "sha256", BaseHashAlgo.SHA_384: "sha384", BaseHashAlgo.SHA_512: "sha512",
    BaseHashAlgo.SHA3_256: "sha3_256", BaseHashAlgo.SHA3_384: "sha3_384", BaseHashAlgo.SHA3_512: "sha3_512",
}


@pytest.mark.parametrize("algo", list(HASHLIB))
def test_digest_and_hmac_match_hashlib(algo: BaseHashAlgo) -> None:
    import hmac as std_hmac

    data = b"tiosim transcript bytes" * 7
    assert digest(algo, data) == hashlib.new(HASHLIB[algo], data).digest()
    assert len(digest(algo, data)) == hash_size(algo)
    assert hmac_digest(algo, b"k" * 20, data) == std_hmac.new(b"k" * 20, data, HASHLIB[algo]).digest()


def test_sm3_known_answer() -> None:
    """GB/T 32905 example 1: SM3("abc")."""
    assert digest(BaseHashAlgo.SM3_256, b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )


def test_hmac_verify() -> None:
    tag = hmac_digest(SHA256, b"key", b"msg")
    assert hmac_verify(SHA256, b"key", b"msg", tag)
    assert not hmac_verify(SHA256, b"key", b"msg", tag[:-1] + bytes([tag[-1] ^ 1]))
    assert not hmac_verify(SHA256, b"key", b"msg", b"short")


def test_unsupported_hash_selection() -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        digest(BaseHashAlgo.SHA_256 | BaseHashAlgo.SHA_384, b"x")
    with pytest.raises(UnsupportedAlgorithmError):
        measurement_base_hash(MeasurementHashAlgo.RAW_BIT_STREAM_ONLY)
    assert measurement_base_hash(MeasurementHashAlgo.SHA_384) is BaseHashAlgo.SHA_384


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_transcript_hash_checkpoints(parts: list[bytes]) -> None:
    th = TranscriptHash(BaseHashAlgo.SHA_384)
    so_far = b""
    for part in parts:
        th.update(part)
        so_far += part
        assert th.digest() == hashlib.sha384(so_far).digest()
    side = th.fork().update(b"FINISH header")
    assert side.digest() == hashlib.sha384(so_far + b"FINISH header").digest()
    assert th.digest() == hashlib.sha384(so_far).digest()  # fork left the original alone
    assert len(th) == len(so_far)
