"""Deterministic signing keys derived from a DeterministicRandom, and key/algorithm bookkeeping.

``cryptography`` cannot generate keys from a caller-supplied random source, so:

* ECDSA keys: the private scalar comes from ``rng.scalar(n)`` (FIPS 186-5 A.2.1) and
  ``ec.derive_private_key`` builds the key.
* RSA keys: two probable primes are searched from DRBG output (a DRBG start with the top two bits
  set, so n has exactly the requested size; then the next candidate in a window of odd numbers
  sieved by the primes below 2^16 with gcd(e, p-1) = 1, e = 65537, that passes Miller-Rabin with
  DRBG-chosen bases), and ``rsa.RSAPrivateNumbers`` builds the key with CRT
  values from ``cryptography``'s ``rsa_crt_*`` helpers. This follows the shape of FIPS 186-5
  A.1.3 but is not a validated implementation; it exists so that a seed names a key.

RSA generation costs ~0.3 s (2048) to ~3 s (4096) in pure Python, so results are cached by
(seed, path, bits).
"""

from __future__ import annotations

import functools
import math

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sim.crypto.algorithms import BaseAsymAlgo
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.errors import KeyMismatchError, UnsupportedAlgorithmError

SigningPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
SigningPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_RSA_E = 65537
_MR_ROUNDS = 8  # FIPS 186-5 Table B.1 asks for 4-5 rounds at these sizes; 8 costs little more

ECDSA_CURVES: dict[BaseAsymAlgo, type[ec.EllipticCurve]] = {
    BaseAsymAlgo.ECDSA_P256: ec.SECP256R1,
    BaseAsymAlgo.ECDSA_P384: ec.SECP384R1,
    BaseAsymAlgo.ECDSA_P521: ec.SECP521R1,
}
RSA_BITS: dict[BaseAsymAlgo, int] = {
    BaseAsymAlgo.RSASSA_2048: 2048, BaseAsymAlgo.RSAPSS_2048: 2048,
    BaseAsymAlgo.RSASSA_3072: 3072, BaseAsymAlgo.RSAPSS_3072: 3072,
    BaseAsymAlgo.RSASSA_4096: 4096, BaseAsymAlgo.RSAPSS_4096: 4096,
}
RSA_PSS_ALGOS = frozenset({BaseAsymAlgo.RSAPSS_2048, BaseAsymAlgo.RSAPSS_3072, BaseAsymAlgo.RSAPSS_4096})

# Group orders (SEC 2 §2.4.2, §2.5.1, §2.6.1).
CURVE_ORDER: dict[str, int] = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
    "secp521r1": int(
        "01FF" + "FFFFFFFF" * 7 + "FFFFFFFA" + "51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409", 16
    ),
}


def _small_primes(limit: int) -> tuple[int, ...]:
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(limit) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, limit, i)))
    return tuple(i for i in range(3, limit) if sieve[i])


_SMALL_PRIMES = _small_primes(1 << 16)
_WINDOW = 8192


def curve_order(curve: ec.EllipticCurve) -> int:
    return CURVE_ORDER[curve.name]


def ec_key_from_rng(curve: ec.EllipticCurve, rng: DeterministicRandom) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(rng.scalar(curve_order(curve)), curve)


def _is_probable_prime(n: int, rng: DeterministicRandom, rounds: int = _MR_ROUNDS) -> bool:
    """Miller-Rabin with bases drawn from the DRBG (so the search itself is deterministic)."""
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        a = rng.randint(2, n - 2)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _rsa_prime(rng: DeterministicRandom, bits: int) -> int:
    """Incremental search from a DRBG start: sieve a window of odd candidates, then Miller-Rabin."""
    while True:
        start = rng.getrandbits(bits) | (0b11 << (bits - 2)) | 1
        alive = bytearray(b"\x01") * _WINDOW  # alive[k] ↔ start + 2k
        for p in _SMALL_PRIMES:
            # first k with start + 2k ≡ 0 (mod p): k ≡ -start · 2⁻¹ (mod p)
            k = (-start * ((p + 1) // 2)) % p
            alive[k::p] = bytes(len(range(k, _WINDOW, p)))
        for k in range(_WINDOW):
            if not alive[k]:
                continue
            candidate = start + 2 * k
            if candidate.bit_length() != bits or math.gcd(candidate - 1, _RSA_E) != 1:
                continue
            if _is_probable_prime(candidate, rng):
                return candidate


@functools.lru_cache(maxsize=64)
def _rsa_numbers(seed: bytes, path: str, bits: int) -> rsa.RSAPrivateNumbers:
    rng = DeterministicRandom(seed, path)
    half = bits // 2
    while True:
        p = _rsa_prime(rng, half)
        q = _rsa_prime(rng, bits - half)
        if abs(p - q) <= 1 << (half - 100):  # FIPS 186-5 A.1.3 step 5.4
            continue
        n = p * q
        lam = math.lcm(p - 1, q - 1)
        d = pow(_RSA_E, -1, lam)
        if n.bit_length() == bits and d > 1 << half:
            break
    if p < q:
        p, q = q, p
    public = rsa.RSAPublicNumbers(_RSA_E, n)
    return rsa.RSAPrivateNumbers(
        p=p, q=q, d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p), dmq1=rsa.rsa_crt_dmq1(d, q), iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=public,
    )


def rsa_key_from_rng(bits: int, rng: DeterministicRandom) -> rsa.RSAPrivateKey:
    """A deterministic RSA key for (rng.seed, rng.path, bits); does not consume ``rng``."""
    return _rsa_numbers(rng.seed, rng.path, bits).private_key()


def generate_signing_key(asym: BaseAsymAlgo, rng: DeterministicRandom) -> SigningPrivateKey:
    """The key for one BaseAsymAlgo bit, fully determined by (rng.seed, rng.path)."""
    asym = BaseAsymAlgo(asym)
    if asym in ECDSA_CURVES:
        return ec_key_from_rng(ECDSA_CURVES[asym](), DeterministicRandom(rng.seed, rng.path))
    if asym in RSA_BITS:
        return rsa_key_from_rng(RSA_BITS[asym], rng)
    raise UnsupportedAlgorithmError(f"no key generation for BaseAsymAlgo {asym!r}")


def asym_for_key(key: SigningPrivateKey | SigningPublicKey, *, rsa_pss: bool = False) -> BaseAsymAlgo:
    """The BaseAsymAlgo a key can serve (RSA keys serve both RSASSA and RSAPSS: pick with rsa_pss)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        for algo, curve in ECDSA_CURVES.items():
            if isinstance(key.curve, curve):
                return algo
        raise UnsupportedAlgorithmError(f"curve {key.curve.name} has no SPDM BaseAsymAlgo")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        for algo, bits in RSA_BITS.items():
            if bits == key.key_size and (algo in RSA_PSS_ALGOS) == rsa_pss:
                return algo
        raise UnsupportedAlgorithmError(f"RSA-{key.key_size} has no SPDM BaseAsymAlgo")
    raise UnsupportedAlgorithmError(f"unsupported key type {type(key).__name__}")


def check_key_fits(asym: BaseAsymAlgo, key: SigningPrivateKey | SigningPublicKey) -> None:
    """Raise KeyMismatchError unless ``key`` is of the curve / RSA size that ``asym`` names."""
    asym = BaseAsymAlgo(asym)
    if asym in ECDSA_CURVES:
        if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
            key.curve, ECDSA_CURVES[asym]
        ):
            return
    elif asym in RSA_BITS:
        if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size == RSA_BITS[asym]:
            return
    else:
        raise UnsupportedAlgorithmError(f"BaseAsymAlgo {asym!r} is not supported")
    raise KeyMismatchError(f"{type(key).__name__} does not fit {asym!r}")


def private_key_secret_bytes(key: SigningPrivateKey) -> bytes:
    """The bytes that *are* the secret, as they would appear in memory or on a wire.

    EC: the scalar, big-endian, fixed width. RSA: the private exponent d, big-endian, modulus width.
    This is what the exposure tracker searches for in payloads.
    """
    if isinstance(key, ec.EllipticCurvePrivateKey):
        width = (curve_order(key.curve).bit_length() + 7) // 8
        return key.private_numbers().private_value.to_bytes(width, "big")
    numbers = key.private_numbers()
    return numbers.d.to_bytes((key.key_size + 7) // 8, "big")
