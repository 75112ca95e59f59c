"""SPDM signatures: ECDSA (RFC 6979) and RSA (PKCS#1 v1.5, deterministic PSS), and the signing rules.

Wire form (PROTOCOLS.md §2.6): ECDSA signatures are r ‖ s, each big-endian and as wide as the curve
order; RSA signatures are the big-endian integer at modulus width.

The rules that say *what* is signed (§3.3):

* SPDM 1.0/1.1: the raw transcript M, hashed once by the signature scheme.
* SPDM 1.2+: M = the 100-byte combined prefix ‖ Hash(transcript), which the scheme hashes again.

Both are applied here from the transcript *hash*: for 1.0/1.1 "sign M" equals "sign the digest of M",
so the digest is handed to ``cryptography`` as ``Prehashed``. Protocol code therefore only has to keep
an incremental :class:`~sim.crypto.hashes.TranscriptHash`.

Determinism: ECDSA uses ``deterministic_signing=True`` (RFC 6979; cryptography >= 43 with
OpenSSL >= 3.2). RSA-PSS is randomised by its salt, and ``cryptography`` does not let the caller pick
the salt, so EMSA-PSS (RFC 8017 §9.1.1) is encoded here and the RSA private operation is done with
the key's CRT numbers; the salt is taken from a DeterministicRandom when one is given, else derived
as HMAC-Hash(d, mHash) from the key and the message. Every PSS signature made here is checked with
``cryptography``'s own PSS verifier before it is returned.
"""

from __future__ import annotations

import enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from sim.crypto.algorithms import SIGNATURE_SIZE, BaseAsymAlgo, BaseHashAlgo
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.errors import CryptoError, UnsupportedAlgorithmError
from sim.crypto.hashes import digest, hash_algorithm, hash_size, hmac_digest
from sim.crypto.keys import (
    ECDSA_CURVES,
    RSA_BITS,
    RSA_PSS_ALGOS,
    SigningPrivateKey,
    SigningPublicKey,
    check_key_fits,
    curve_order,
)

SPDM_PREFIX_SIZE = 100
_VERSION_PART = 64


class SigningContext(enum.StrEnum):
    """The SPDM 1.2+ signing context strings (PROTOCOLS.md §3.3), exact ASCII without NUL."""

    RESPONDER_CHALLENGE_AUTH = "responder-challenge_auth signing"
    REQUESTER_CHALLENGE_AUTH = "requester-challenge_auth signing"
    RESPONDER_MEASUREMENTS = "responder-measurements signing"
    RESPONDER_KEY_EXCHANGE_RSP = "responder-key_exchange_rsp signing"
    REQUESTER_FINISH = "requester-finish signing"
    RESPONDER_ENDPOINT_INFO = "responder-endpoint_info signing"
    REQUESTER_ENDPOINT_INFO = "requester-endpoint_info signing"


def _check_version(version: int) -> None:
    if not 0x10 <= version <= 0x1F:
        raise UnsupportedAlgorithmError(f"SPDM version byte 0x{version:02x} is not 1.x")


def uses_signing_prefix(version: int) -> bool:
    """True from SPDM 1.2 on, where the combined prefix rule applies."""
    _check_version(version)
    return version >= 0x12


def spdm_signing_prefix(version: int, context: SigningContext) -> bytes:
    """The 100-byte combined SPDM prefix: "dmtf-spdm-v1.N.*" ×4, zero pad, context (§3.3)."""
    if not uses_signing_prefix(version):
        raise UnsupportedAlgorithmError("SPDM 1.0/1.1 signatures have no prefix")
    context = SigningContext(context)
    prefix = _PREFIXES.get((version, context))
    if prefix is None:
        ctx = context.value.encode("ascii")
        part = f"dmtf-spdm-v{version >> 4}.{version & 0xF}.*".encode("ascii") * 4
        prefix = _PREFIXES[(version, context)] = part + bytes(SPDM_PREFIX_SIZE - _VERSION_PART - len(ctx)) + ctx
    return prefix


_PREFIXES: dict[tuple[int, SigningContext], bytes] = {}  # a few (version, context) pairs, each made once


def spdm_signing_input(version: int, context: SigningContext, transcript_hash: bytes) -> bytes:
    """M for SPDM 1.2+: prefix(100) ‖ Hash(transcript)."""
    return spdm_signing_prefix(version, context) + transcript_hash


# --- raw signature schemes -------------------------------------------------------------------


def _int_width(n: int) -> int:
    return (n.bit_length() + 7) // 8


def _mgf1(algo: BaseHashAlgo, seed: bytes, length: int) -> bytes:
    """MGF1 (RFC 8017 B.2.1); ``cryptography`` does not expose it on its own."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += digest(algo, seed + counter.to_bytes(4, "big"))
        counter += 1
    return bytes(out[:length])


def _emsa_pss_encode(algo: BaseHashAlgo, m_hash: bytes, salt: bytes, em_bits: int) -> bytes:
    """EMSA-PSS-ENCODE (RFC 8017 §9.1.1) from the message hash."""
    h_len = len(m_hash)
    em_len = (em_bits + 7) // 8
    if em_len < h_len + len(salt) + 2:
        raise CryptoError("RSA modulus too small for PSS with this hash and salt")
    h = digest(algo, bytes(8) + m_hash + salt)
    db = bytes(em_len - len(salt) - h_len - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(algo, h, len(db)), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    return bytes(masked) + h + b"\xbc"


def _rsa_private_op(key: rsa.RSAPrivateKey, m: int) -> int:
    """RSASP1 (RFC 8017 §5.2.1) with the CRT numbers of the key."""
    n = key.private_numbers()
    s1 = pow(m, n.dmp1, n.p)
    s2 = pow(m, n.dmq1, n.q)
    return s2 + n.q * ((s1 - s2) * n.iqmp % n.p)


def _pss_salt(key: rsa.RSAPrivateKey, algo: BaseHashAlgo, m_hash: bytes, rng: DeterministicRandom | None) -> bytes:
    if rng is not None:
        return rng.bytes(hash_size(algo))
    d = key.private_numbers().d
    return hmac_digest(algo, d.to_bytes(_int_width(d), "big"), b"tiosim-pss-salt" + m_hash)


def _sign_digest(
    asym: BaseAsymAlgo,
    hash_algo: BaseHashAlgo,
    key: SigningPrivateKey,
    m_hash: bytes,
    rng: DeterministicRandom | None,
) -> bytes:
    """Sign a message given its hash under ``hash_algo``; output in SPDM wire form."""
    prehashed = utils.Prehashed(hash_algorithm(hash_algo))
    if asym in ECDSA_CURVES:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        der = key.sign(m_hash, ec.ECDSA(prehashed, deterministic_signing=True))
        r, s = utils.decode_dss_signature(der)
        width = _int_width(curve_order(key.curve))
        return r.to_bytes(width, "big") + s.to_bytes(width, "big")
    assert isinstance(key, rsa.RSAPrivateKey)
    if asym in RSA_PSS_ALGOS:
        k = (key.key_size + 7) // 8
        salt = _pss_salt(key, hash_algo, m_hash, rng)
        em = _emsa_pss_encode(hash_algo, m_hash, salt, key.key_size - 1)
        signature = _rsa_private_op(key, int.from_bytes(em, "big")).to_bytes(k, "big")
        if not _verify_digest(asym, hash_algo, key.public_key(), m_hash, signature):
            raise CryptoError("internal PSS signature failed its own verification")
        return signature
    return key.sign(m_hash, padding.PKCS1v15(), prehashed)


def _pss_padding(hash_algo: BaseHashAlgo) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hash_algorithm(hash_algo)), salt_length=hash_size(hash_algo))


def _verify_digest(
    asym: BaseAsymAlgo,
    hash_algo: BaseHashAlgo,
    public_key: SigningPublicKey,
    m_hash: bytes,
    signature: bytes,
) -> bool:
    if len(signature) != SIGNATURE_SIZE[asym]:
        return False
    prehashed = utils.Prehashed(hash_algorithm(hash_algo))
    try:
        if asym in ECDSA_CURVES:
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            half = len(signature) // 2
            r = int.from_bytes(signature[:half], "big")
            s = int.from_bytes(signature[half:], "big")
            public_key.verify(utils.encode_dss_signature(r, s), m_hash, ec.ECDSA(prehashed))
        else:
            assert isinstance(public_key, rsa.RSAPublicKey)
            pad = _pss_padding(hash_algo) if asym in RSA_PSS_ALGOS else padding.PKCS1v15()
            public_key.verify(signature, m_hash, pad, prehashed)
    except (InvalidSignature, ValueError):
        return False
    return True


def _check_asym(asym: BaseAsymAlgo) -> BaseAsymAlgo:
    asym = BaseAsymAlgo(asym)
    if asym not in ECDSA_CURVES and asym not in RSA_BITS:
        raise UnsupportedAlgorithmError(f"BaseAsymAlgo {asym!r} is not supported for signing")
    return asym


def sign(
    asym: BaseAsymAlgo,
    hash_algo: BaseHashAlgo,
    key: SigningPrivateKey,
    message: bytes,
    rng: DeterministicRandom | None = None,
) -> bytes:
    """Sign ``message`` (hashed with ``hash_algo`` by the scheme) in SPDM wire form.

    ``rng`` only matters for RSA-PSS (the salt); ECDSA and PKCS#1 v1.5 are deterministic anyway.
    """
    asym = _check_asym(asym)
    check_key_fits(asym, key)
    return _sign_digest(asym, hash_algo, key, digest(hash_algo, message), rng)


def verify(
    asym: BaseAsymAlgo,
    hash_algo: BaseHashAlgo,
    public_key: SigningPublicKey,
    message: bytes,
    signature: bytes,
) -> bool:
    """True iff ``signature`` (SPDM wire form) is valid for ``message``; never raises on bad input."""
    asym = _check_asym(asym)
    check_key_fits(asym, public_key)
    return _verify_digest(asym, hash_algo, public_key, digest(hash_algo, message), signature)


def spdm_sign(
    version: int,
    asym: BaseAsymAlgo,
    hash_algo: BaseHashAlgo,
    key: SigningPrivateKey,
    transcript_hash: bytes,
    context: SigningContext,
    rng: DeterministicRandom | None = None,
) -> bytes:
    """Sign an SPDM transcript by the rule of ``version`` (the SPDMVersion byte, e.g. 0x12).

    ``transcript_hash`` is Hash(transcript) under ``hash_algo``. For 1.0/1.1 ``context`` is ignored
    (there is no prefix) and the signature is over the raw transcript.
    """
    asym = _check_asym(asym)
    check_key_fits(asym, key)
    _check_hash_len(hash_algo, transcript_hash)
    if uses_signing_prefix(version):
        m_hash = digest(hash_algo, spdm_signing_input(version, context, transcript_hash))
    else:
        m_hash = transcript_hash
    return _sign_digest(asym, hash_algo, key, m_hash, rng)


def spdm_verify(
    version: int,
    asym: BaseAsymAlgo,
    hash_algo: BaseHashAlgo,
    public_key: SigningPublicKey,
    transcript_hash: bytes,
    signature: bytes,
    context: SigningContext,
) -> bool:
    """Check an SPDM signature by the rule of ``version``; False on any mismatch."""
    asym = _check_asym(asym)
    check_key_fits(asym, public_key)
    _check_hash_len(hash_algo, transcript_hash)
    if uses_signing_prefix(version):
        m_hash = digest(hash_algo, spdm_signing_input(version, context, transcript_hash))
    else:
        m_hash = transcript_hash
    return _verify_digest(asym, hash_algo, public_key, m_hash, signature)


def _check_hash_len(hash_algo: BaseHashAlgo, transcript_hash: bytes) -> None:
    if len(transcript_hash) != hash_size(hash_algo):
        raise CryptoError(f"transcript hash is {len(transcript_hash)} bytes, {hash_algo!r} needs {hash_size(hash_algo)}")

