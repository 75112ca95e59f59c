"""AEAD: DSP0277 per-record IVs and the §8.2 vectors; IDE AES-GCM-256 with a 96-bit MAC."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.crypto.aead import (
    IDE_FIXED_CXL,
    SequenceNumberOrder,
    aead_decrypt,
    aead_encrypt,
    ide_decrypt,
    ide_encrypt,
    ide_iv,
    open_record,
    record_iv,
    seal_record,
)
from sim.crypto.algorithms import AeadSuite
from sim.crypto.errors import AeadError, CryptoError, UnsupportedAlgorithmError

KEY = bytes(range(32))
SALT = bytes(2 * i for i in range(12))


@pytest.mark.parametrize(
    ("seq", "aad_hex", "ct_hex", "mac_hex"),
    [
        (0, "33221100" "0000000000000000" "2200", "9bfed3b7043d3286603d861733d67f959a20",
         "3d4fac58cb706cf5a0270af673f0fe36"),
        (0xAA55AA55AA55AA55, "33221100" "55aa55aa55aa55aa" "2200", "0dea75eac691374994975263f8c08f6c1aa4",
         "0dcdb48ad6fa240479d5d8d2fe281914"),
    ],
)
def test_dsp0277_record_vectors(seq: int, aad_hex: str, ct_hex: str, mac_hex: str) -> None:
    """libspdm encode_decode.c KATs (PROTOCOLS.md §8.2) through our IV rule."""
    app = bytes(range(16))
    plaintext = len(app).to_bytes(2, "little") + app
    length = 2 + len(app) + 16
    aad = (0x00112233).to_bytes(4, "little") + seq.to_bytes(8, "little") + length.to_bytes(2, "little")
    assert aad.hex() == aad_hex
    ciphertext, tag = seal_record(AeadSuite.AES_256_GCM, KEY, SALT, seq, plaintext, aad)
    assert ciphertext.hex() == ct_hex
    assert tag.hex() == mac_hex
    assert open_record(AeadSuite.AES_256_GCM, KEY, SALT, seq, ciphertext, tag, aad) == plaintext
    with pytest.raises(AeadError):  # wrong sequence number → wrong IV
        open_record(AeadSuite.AES_256_GCM, KEY, SALT, seq + 1, ciphertext, tag, aad)


def test_record_iv_rules() -> None:
    salt = bytes(12)
    assert record_iv(salt, 0x0102030405060708) == bytes.fromhex("0807060504030201") + bytes(4)
    be = record_iv(salt, 0x0102030405060708, SequenceNumberOrder.BIG_ENDIAN_HIGH)
    assert be == bytes(4) + bytes.fromhex("0102030405060708")
    assert record_iv(SALT, 0) == SALT
    with pytest.raises(CryptoError):
        record_iv(SALT, 1 << 64)
    with pytest.raises(CryptoError):
        record_iv(SALT[:11], 0)


SUITES = [AeadSuite.AES_128_GCM, AeadSuite.AES_256_GCM, AeadSuite.CHACHA20_POLY1305]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SUITES), st.binary(max_size=300), st.binary(max_size=40), st.data())
def test_round_trip_and_tamper(suite: AeadSuite, plaintext: bytes, aad: bytes, data: st.DataObject) -> None:
    key = bytes(range(16 if suite is AeadSuite.AES_128_GCM else 32))
    iv = record_iv(SALT, 7)
    ciphertext, tag = aead_encrypt(suite, key, iv, plaintext, aad)
    assert len(ciphertext) == len(plaintext) and len(tag) == 16
    assert aead_decrypt(suite, key, iv, ciphertext, tag, aad) == plaintext
    blob = bytearray(ciphertext + tag + aad)
    bit = data.draw(st.integers(min_value=0, max_value=len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    n = len(ciphertext)
    with pytest.raises(AeadError):
        aead_decrypt(suite, key, iv, bytes(blob[:n]), bytes(blob[n : n + 16]), bytes(blob[n + 16 :]))


def test_aead_key_checks() -> None:
    with pytest.raises(CryptoError):
        aead_encrypt(AeadSuite.AES_256_GCM, bytes(16), bytes(12), b"", b"")
    with pytest.raises(UnsupportedAlgorithmError):
        aead_encrypt(AeadSuite.SM4_GCM, bytes(16), bytes(12), b"", b"")
    with pytest.raises(AeadError):
        aead_decrypt(AeadSuite.AES_256_GCM, bytes(32), bytes(12), b"", bytes(12), b"")


def test_ide_iv_layout() -> None:
    assert ide_iv(1) == bytes(4) + (1).to_bytes(8, "big")
    assert ide_iv(0x1122334455667788, IDE_FIXED_CXL).hex() == "800000001122334455667788"
    with pytest.raises(CryptoError):
        ide_iv(1 << 64)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=256), st.binary(min_size=0, max_size=16), st.data())
def test_ide_96bit_mac(payload: bytes, header: bytes, data: st.DataObject) -> None:
    key = bytes(range(100, 132))
    iv = ide_iv(data.draw(st.integers(min_value=0, max_value=2**64 - 1)))
    ciphertext, mac = ide_encrypt(key, iv, payload, header)
    assert len(mac) == 12
    # a GCM tag of 96 bits is the leftmost 96 bits of the full tag (SP 800-38D): check against AESGCM
    full = AESGCM(key).encrypt(iv, payload, header)
    assert ciphertext == full[:-16] and mac == full[-16:-4]
    assert ide_decrypt(key, iv, ciphertext, mac, header) == payload
    blob = bytearray(ciphertext + mac + header)
    bit = data.draw(st.integers(min_value=0, max_value=len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    n = len(ciphertext)
    with pytest.raises(AeadError):
        ide_decrypt(key, iv, bytes(blob[:n]), bytes(blob[n : n + 12]), bytes(blob[n + 12 :]))


def test_ide_rejects_wrong_sizes() -> None:
    with pytest.raises(AeadError):
        ide_decrypt(bytes(32), ide_iv(1), b"", bytes(16), b"")
    with pytest.raises(CryptoError):
        ide_encrypt(bytes(16), ide_iv(1), b"", b"")
