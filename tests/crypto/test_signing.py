"""SPDM signing rules (PROTOCOLS.md §3.3) and the ECDSA / RSA schemes, checked with cryptography."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from sim.crypto.algorithms import SIGNATURE_SIZE, BaseAsymAlgo, BaseHashAlgo
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.errors import KeyMismatchError, UnsupportedAlgorithmError
from sim.crypto.hashes import digest, hash_algorithm
from sim.crypto.keys import _rsa_numbers, generate_signing_key
from sim.crypto.signing import (
    SigningContext,
    sign,
    spdm_sign,
    spdm_signing_input,
    spdm_signing_prefix,
    spdm_verify,
    verify,
)

CHALLENGE = SigningContext.RESPONDER_CHALLENGE_AUTH


def test_prefix_worked_example_12_challenge_auth() -> None:
    expected = bytes.fromhex(
        "646d74662d7370646d2d76312e322e2a" * 4
        + "00000000"
        + "726573706f6e6465722d6368616c6c656e67655f61757468207369676e696e67"
    )
    assert spdm_signing_prefix(0x12, CHALLENGE) == expected
    th = bytes(range(48))
    assert spdm_signing_input(0x12, CHALLENGE, th) == expected + th


@pytest.mark.parametrize(
    ("context", "length"),
    [
        (SigningContext.RESPONDER_CHALLENGE_AUTH, 32),
        (SigningContext.REQUESTER_CHALLENGE_AUTH, 32),
        (SigningContext.RESPONDER_MEASUREMENTS, 30),
        (SigningContext.RESPONDER_KEY_EXCHANGE_RSP, 34),
        (SigningContext.REQUESTER_FINISH, 24),
        (SigningContext.RESPONDER_ENDPOINT_INFO, 31),
        (SigningContext.REQUESTER_ENDPOINT_INFO, 31),
    ],
)
def test_prefix_layout_for_every_context(context: SigningContext, length: int) -> None:
    prefix = spdm_signing_prefix(0x13, context)
    assert len(prefix) == 100
    assert prefix[:64] == b"dmtf-spdm-v1.3.*" * 4
    assert prefix[64 : 100 - length] == bytes(36 - length)
    assert prefix[100 - length :] == context.value.encode()


def test_no_prefix_before_12() -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        spdm_signing_prefix(0x11, CHALLENGE)


def test_rfc6979_p256_sha256_sample() -> None:
    """RFC 6979 A.2.5: our sign() is deterministic ECDSA, byte for byte."""
    key = ec.derive_private_key(0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721, ec.SECP256R1())
    sig = sign(BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256, key, b"sample")
    assert sig.hex() == (
        "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716"
        "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8"
    )


def _ecdsa_der(signature: bytes) -> bytes:
    half = len(signature) // 2
    return utils.encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))


ECDSA_CASES = [
    (BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256),
    (BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384),
    (BaseAsymAlgo.ECDSA_P521, BaseHashAlgo.SHA_512),
    (BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA3_384),
]


@pytest.mark.parametrize(("asym", "hash_algo"), ECDSA_CASES)
def test_ecdsa_spdm_12_round_trip_and_independent_check(asym: BaseAsymAlgo, hash_algo: BaseHashAlgo) -> None:
    key = generate_signing_key(asym, DeterministicRandom(b"seed", f"ecdsa.{asym.name}"))
    th = digest(hash_algo, b"A || Ct || KEY_EXCHANGE || KEY_EXCHANGE_RSP")
    ctx = SigningContext.RESPONDER_KEY_EXCHANGE_RSP
    sig = spdm_sign(0x12, asym, hash_algo, key, th, ctx)
    assert len(sig) == SIGNATURE_SIZE[asym]
    assert spdm_verify(0x12, asym, hash_algo, key.public_key(), th, sig, ctx)
    # cryptography, given M = prefix || hash, hashes M again and must accept the signature
    message = spdm_signing_input(0x12, ctx, th)
    key.public_key().verify(_ecdsa_der(sig), message, ec.ECDSA(hash_algorithm(hash_algo)))
    # wrong context, other version, other transcript, flipped bit: all rejected
    assert not spdm_verify(0x12, asym, hash_algo, key.public_key(), th, sig, CHALLENGE)
    assert not spdm_verify(0x13, asym, hash_algo, key.public_key(), th, sig, ctx)
    assert not spdm_verify(0x12, asym, hash_algo, key.public_key(), bytes(len(th)), sig, ctx)
    bad = bytes([sig[0] ^ 0x80]) + sig[1:]
    assert not spdm_verify(0x12, asym, hash_algo, key.public_key(), th, bad, ctx)
    assert not spdm_verify(0x12, asym, hash_algo, key.public_key(), th, sig[:-1], ctx)


def test_ecdsa_same_seed_same_signature_bytes() -> None:
    th = digest(BaseHashAlgo.SHA_384, b"transcript")
    sigs = []
    for _ in range(2):
        key = generate_signing_key(BaseAsymAlgo.ECDSA_P384, DeterministicRandom(b"det", "dev0"))
        sigs.append(spdm_sign(0x13, BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384, key, th, CHALLENGE))
    assert sigs[0] == sigs[1]
    other = generate_signing_key(BaseAsymAlgo.ECDSA_P384, DeterministicRandom(b"det", "dev1"))
    assert spdm_sign(0x13, BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384, other, th, CHALLENGE) != sigs[0]


def test_spdm_11_signs_the_raw_transcript() -> None:
    key = generate_signing_key(BaseAsymAlgo.ECDSA_P384, DeterministicRandom(b"seed", "v11"))
    transcript = b"GET_VERSION VERSION ... CHALLENGE CHALLENGE_AUTH-without-signature"
    th = digest(BaseHashAlgo.SHA_384, transcript)
    sig = spdm_sign(0x11, BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384, key, th, CHALLENGE)
    key.public_key().verify(_ecdsa_der(sig), transcript, ec.ECDSA(hashes.SHA384()))
    assert spdm_verify(0x10, BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384, key.public_key(), th, sig, CHALLENGE)
    assert not spdm_verify(0x12, BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384, key.public_key(), th, sig, CHALLENGE)


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    key = generate_signing_key(BaseAsymAlgo.RSAPSS_2048, DeterministicRandom(b"seed", "rsa2048"))
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def rsa3072() -> rsa.RSAPrivateKey:
    key = generate_signing_key(BaseAsymAlgo.RSASSA_3072, DeterministicRandom(b"seed", "rsa3072"))
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def test_rsa_keys_are_deterministic_and_sound(rsa2048: rsa.RSAPrivateKey) -> None:
    _rsa_numbers.cache_clear()  # regenerate for real, not from the cache
    again = generate_signing_key(BaseAsymAlgo.RSASSA_2048, DeterministicRandom(b"seed", "rsa2048"))
    assert again.private_numbers() == rsa2048.private_numbers()
    numbers = rsa2048.private_numbers()
    assert rsa2048.key_size == 2048 and numbers.p * numbers.q == numbers.public_numbers.n
    assert numbers.public_numbers.e == 65537


def _pss(hash_algo: BaseHashAlgo) -> padding.PSS:
    h = hash_algorithm(hash_algo)
    return padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)


@pytest.mark.parametrize("hash_algo", [BaseHashAlgo.SHA_256, BaseHashAlgo.SHA_384, BaseHashAlgo.SHA_512])
def test_rsa_pss_2048(rsa2048: rsa.RSAPrivateKey, hash_algo: BaseHashAlgo) -> None:
    asym = BaseAsymAlgo.RSAPSS_2048
    th = digest(hash_algo, b"measurements transcript")
    ctx = SigningContext.RESPONDER_MEASUREMENTS
    sig = spdm_sign(0x12, asym, hash_algo, rsa2048, th, ctx)
    assert len(sig) == 256
    rsa2048.public_key().verify(sig, spdm_signing_input(0x12, ctx, th), _pss(hash_algo), hash_algorithm(hash_algo))
    assert spdm_verify(0x12, asym, hash_algo, rsa2048.public_key(), th, sig, ctx)
    # deterministic without an rng; an rng picks the salt, and the result still verifies
    assert spdm_sign(0x12, asym, hash_algo, rsa2048, th, ctx) == sig
    salted = spdm_sign(0x12, asym, hash_algo, rsa2048, th, ctx, rng=DeterministicRandom(b"salt", ""))
    assert salted != sig
    assert salted == spdm_sign(0x12, asym, hash_algo, rsa2048, th, ctx, rng=DeterministicRandom(b"salt", ""))
    assert spdm_verify(0x12, asym, hash_algo, rsa2048.public_key(), th, salted, ctx)
    # PSS is not PKCS#1 v1.5
    assert not spdm_verify(0x12, BaseAsymAlgo.RSASSA_2048, hash_algo, rsa2048.public_key(), th, sig, ctx)
    tampered = sig[:-1] + bytes([sig[-1] ^ 1])
    assert not spdm_verify(0x12, asym, hash_algo, rsa2048.public_key(), th, tampered, ctx)


def test_rsa_pkcs1_2048_raw_message(rsa2048: rsa.RSAPrivateKey) -> None:
    sig = sign(BaseAsymAlgo.RSASSA_2048, BaseHashAlgo.SHA_256, rsa2048, b"message")
    rsa2048.public_key().verify(sig, b"message", padding.PKCS1v15(), hashes.SHA256())
    assert verify(BaseAsymAlgo.RSASSA_2048, BaseHashAlgo.SHA_256, rsa2048.public_key(), b"message", sig)
    assert not verify(BaseAsymAlgo.RSASSA_2048, BaseHashAlgo.SHA_256, rsa2048.public_key(), b"messagf", sig)


def test_rsa_3072_pkcs1_and_pss(rsa3072: rsa.RSAPrivateKey) -> None:
    th = digest(BaseHashAlgo.SHA_384, b"t")
    ssa = spdm_sign(0x13, BaseAsymAlgo.RSASSA_3072, BaseHashAlgo.SHA_384, rsa3072, th, CHALLENGE)
    message = spdm_signing_input(0x13, CHALLENGE, th)
    rsa3072.public_key().verify(ssa, message, padding.PKCS1v15(), hashes.SHA384())
    pss = spdm_sign(0x13, BaseAsymAlgo.RSAPSS_3072, BaseHashAlgo.SHA_384, rsa3072, th, CHALLENGE)
    assert len(ssa) == len(pss) == 384
    rsa3072.public_key().verify(pss, message, _pss(BaseHashAlgo.SHA_384), hashes.SHA384())
    with pytest.raises(InvalidSignature):
        rsa3072.public_key().verify(pss, message + b"x", _pss(BaseHashAlgo.SHA_384), hashes.SHA384())


def test_rsa_11_rule_raw_transcript(rsa2048: rsa.RSAPrivateKey) -> None:
    transcript = b"M1 of SPDM 1.1"
    th = digest(BaseHashAlgo.SHA_256, transcript)
    sig = spdm_sign(0x11, BaseAsymAlgo.RSAPSS_2048, BaseHashAlgo.SHA_256, rsa2048, th, CHALLENGE)
    rsa2048.public_key().verify(sig, transcript, _pss(BaseHashAlgo.SHA_256), hashes.SHA256())


def test_key_algorithm_mismatch(rsa2048: rsa.RSAPrivateKey) -> None:
    p256 = generate_signing_key(BaseAsymAlgo.ECDSA_P256, DeterministicRandom(b"s", "k"))
    th = digest(BaseHashAlgo.SHA_256, b"")
    with pytest.raises(KeyMismatchError):
        spdm_sign(0x12, BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_256, p256, th, CHALLENGE)
    with pytest.raises(KeyMismatchError):
        spdm_sign(0x12, BaseAsymAlgo.RSASSA_3072, BaseHashAlgo.SHA_256, rsa2048, th, CHALLENGE)
    with pytest.raises(UnsupportedAlgorithmError):
        spdm_sign(0x12, BaseAsymAlgo.EDDSA_ED25519, BaseHashAlgo.SHA_256, p256, th, CHALLENGE)
