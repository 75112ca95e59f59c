"""AEAD for DSP0277 secured messages and for PCIe IDE TLPs.

DSP0277 (PROTOCOLS.md §5.2): AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305 by AeadSuite, 12-byte IV,
16-byte tag. The per-record IV is the session "iv" salt XOR the 64-bit sequence number: by default
(DSP0277 1.2+, libspdm's default) the number as 8 bytes little-endian XORed into IV bytes 0..7;
optionally (the libspdm big-endian option for 1.0/1.1) big-endian into IV bytes 4..11.

IDE (PROTOCOLS.md §7.2): AES-GCM with a 256-bit key and a 96-bit (12-byte) MAC, IV = 4-byte fixed
field ‖ 8-byte invocation field. ``AESGCM`` always makes 16-byte tags, so IDE goes through the
lower-level ``Cipher(AES, GCM)``: GCM's shorter tag is by definition the leftmost bits of the full
tag (NIST SP 800-38D §7.1), so encrypt truncates, and decrypt passes the 12-byte tag with
``min_tag_length=12``.
"""

from __future__ import annotations

import enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from sim.crypto.algorithms import AeadSuite
from sim.crypto.errors import AeadError, CryptoError, UnsupportedAlgorithmError

AEAD_IV_SIZE = 12
AEAD_TAG_SIZE = 16
IDE_KEY_SIZE = 32
IDE_MAC_SIZE = 12
IDE_FIXED_PCIE = 0x00000000
IDE_FIXED_CXL = 0x80000000  # [S, TEEIO]

AEAD_KEY_SIZE: dict[AeadSuite, int] = {
    AeadSuite.AES_128_GCM: 16,
    AeadSuite.AES_256_GCM: 32,
    AeadSuite.CHACHA20_POLY1305: 32,
}


class SequenceNumberOrder(enum.Enum):
    """How the 64-bit record sequence number is folded into the IV salt (§5.2)."""

    LITTLE_ENDIAN_LOW = "le"   # 8 bytes LE XOR IV[0:8] (DSP0277 1.2+, libspdm default)
    BIG_ENDIAN_HIGH = "be"     # 8 bytes BE XOR IV[4:12] (libspdm option for DSP0277 1.0/1.1)


def aead_key_size(suite: AeadSuite) -> int:
    try:
        return AEAD_KEY_SIZE[AeadSuite(suite)]
    except KeyError:
        raise UnsupportedAlgorithmError(f"AeadSuite {suite!r} is not supported") from None


def record_iv(
    salt: bytes, sequence_number: int, order: SequenceNumberOrder = SequenceNumberOrder.LITTLE_ENDIAN_LOW
) -> bytes:
    """The IV of one DSP0277 record: ``salt`` XOR the sequence number placed per ``order``."""
    if len(salt) != AEAD_IV_SIZE:
        raise CryptoError(f"IV salt must be {AEAD_IV_SIZE} bytes, got {len(salt)}")
    if not 0 <= sequence_number < 1 << 64:
        raise CryptoError("sequence number out of 64-bit range")
    # Read as one 96-bit integer, the salt's bytes 0..7 are the low bytes in little-endian order and
    # its bytes 4..11 the low bytes in big-endian order: one integer XOR places the number either way.
    if order is SequenceNumberOrder.LITTLE_ENDIAN_LOW:
        return (int.from_bytes(salt, "little") ^ sequence_number).to_bytes(AEAD_IV_SIZE, "little")
    return (int.from_bytes(salt, "big") ^ sequence_number).to_bytes(AEAD_IV_SIZE, "big")


AeadCipher = AESGCM | ChaCha20Poly1305


def aead_cipher(suite: AeadSuite, key: bytes) -> AeadCipher:
    """The ``cryptography`` AEAD object for one key; a session keeps it for as long as the key lives.

    Its ``encrypt(iv, plaintext, aad)`` returns ciphertext ‖ 16-byte tag, and ``decrypt`` raises
    ``cryptography.exceptions.InvalidTag``; :func:`aead_encrypt` / :func:`aead_decrypt` wrap both.
    """
    size = aead_key_size(suite)
    if len(key) != size:
        raise CryptoError(f"{AeadSuite(suite)!r} key must be {size} bytes, got {len(key)}")
    if suite == AeadSuite.CHACHA20_POLY1305:
        return ChaCha20Poly1305(key)
    return AESGCM(key)


def _check_iv(iv: bytes) -> None:
    if len(iv) != AEAD_IV_SIZE:
        raise CryptoError(f"IV must be {AEAD_IV_SIZE} bytes, got {len(iv)}")


def aead_encrypt(suite: AeadSuite, key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """Encrypt and authenticate; returns (ciphertext, 16-byte tag)."""
    _check_iv(iv)
    out = aead_cipher(suite, key).encrypt(iv, plaintext, aad)
    return out[:-AEAD_TAG_SIZE], out[-AEAD_TAG_SIZE:]


def aead_decrypt(suite: AeadSuite, key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
    """Check the tag and decrypt; AeadError if anything was altered (or key/IV are wrong)."""
    _check_iv(iv)
    if len(tag) != AEAD_TAG_SIZE:
        raise AeadError(f"tag must be {AEAD_TAG_SIZE} bytes, got {len(tag)}")
    try:
        return aead_cipher(suite, key).decrypt(iv, ciphertext + tag, aad)
    except InvalidTag:
        raise AeadError("AEAD tag mismatch") from None


def seal_record(
    suite: AeadSuite,
    key: bytes,
    salt: bytes,
    sequence_number: int,
    plaintext: bytes,
    aad: bytes,
    order: SequenceNumberOrder = SequenceNumberOrder.LITTLE_ENDIAN_LOW,
) -> tuple[bytes, bytes]:
    """:func:`aead_encrypt` with the DSP0277 per-record IV."""
    return aead_encrypt(suite, key, record_iv(salt, sequence_number, order), plaintext, aad)


def open_record(
    suite: AeadSuite,
    key: bytes,
    salt: bytes,
    sequence_number: int,
    ciphertext: bytes,
    tag: bytes,
    aad: bytes,
    order: SequenceNumberOrder = SequenceNumberOrder.LITTLE_ENDIAN_LOW,
) -> bytes:
    """:func:`aead_decrypt` with the DSP0277 per-record IV."""
    return aead_decrypt(suite, key, record_iv(salt, sequence_number, order), ciphertext, tag, aad)


# --- PCIe IDE ---------------------------------------------------------------------------------


def ide_iv(invocation: int, fixed: int = IDE_FIXED_PCIE) -> bytes:
    """IDE IV: fixed field (4 bytes) ‖ invocation field (8 bytes), both big-endian [S/U, §7.2]."""
    if not 0 <= fixed < 1 << 32:
        raise CryptoError("IDE fixed field out of 32-bit range")
    if not 0 <= invocation < 1 << 64:
        raise CryptoError("IDE invocation field out of 64-bit range")
    return fixed.to_bytes(4, "big") + invocation.to_bytes(8, "big")


def _check_ide_key(key: bytes) -> None:
    if len(key) != IDE_KEY_SIZE:
        raise CryptoError(f"IDE key must be {IDE_KEY_SIZE} bytes, got {len(key)}")


def ide_encrypt(key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """AES-256-GCM with a 96-bit MAC; returns (ciphertext, 12-byte MAC)."""
    _check_ide_key(key)
    _check_iv(iv)
    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    enc.authenticate_additional_data(aad)
    ciphertext = enc.update(plaintext) + enc.finalize()
    return ciphertext, enc.tag[:IDE_MAC_SIZE]


def ide_decrypt(key: bytes, iv: bytes, ciphertext: bytes, mac: bytes, aad: bytes) -> bytes:
    """Check the 96-bit MAC and decrypt; AeadError on mismatch."""
    _check_ide_key(key)
    _check_iv(iv)
    if len(mac) != IDE_MAC_SIZE:
        raise AeadError(f"IDE MAC must be {IDE_MAC_SIZE} bytes, got {len(mac)}")
    dec = Cipher(algorithms.AES(key), modes.GCM(iv, mac, min_tag_length=IDE_MAC_SIZE)).decryptor()
    dec.authenticate_additional_data(aad)
    plaintext = dec.update(ciphertext)
    try:
        return plaintext + dec.finalize()
    except InvalidTag:
        raise AeadError("IDE MAC mismatch") from None
