"""Hash, HMAC and HKDF over the negotiated SPDM BaseHashAlgo (PROTOCOLS.md §2.6, §4.1).

Everything is a thin, typed wrapper over ``cryptography`` so that protocol code selects primitives
by the SPDM bit it negotiated and never names a ``cryptography`` class itself.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from sim.crypto.algorithms import HASH_SIZE, BaseHashAlgo, MeasurementHashAlgo
from sim.crypto.errors import UnsupportedAlgorithmError

_HASHES: dict[BaseHashAlgo, type[hashes.HashAlgorithm]] = {
    BaseHashAlgo.SHA_256: hashes.SHA256,
    BaseHashAlgo.SHA_384: hashes.SHA384,
    BaseHashAlgo.SHA_512: hashes.SHA512,
    BaseHashAlgo.SHA3_256: hashes.SHA3_256,
    BaseHashAlgo.SHA3_384: hashes.SHA3_384,
    BaseHashAlgo.SHA3_512: hashes.SHA3_512,
    BaseHashAlgo.SM3_256: hashes.SM3,
}

_MEASUREMENT_TO_BASE: dict[MeasurementHashAlgo, BaseHashAlgo] = {
    MeasurementHashAlgo.SHA_256: BaseHashAlgo.SHA_256,
    MeasurementHashAlgo.SHA_384: BaseHashAlgo.SHA_384,
    MeasurementHashAlgo.SHA_512: BaseHashAlgo.SHA_512,
    MeasurementHashAlgo.SHA3_256: BaseHashAlgo.SHA3_256,
    MeasurementHashAlgo.SHA3_384: BaseHashAlgo.SHA3_384,
    MeasurementHashAlgo.SHA3_512: BaseHashAlgo.SHA3_512,
    MeasurementHashAlgo.SM3_256: BaseHashAlgo.SM3_256,
}


# One shared instance per algorithm: they are stateless descriptors, and protocol code asks for one
# on every hash it takes.
_INSTANCES: dict[BaseHashAlgo, hashes.HashAlgorithm] = {algo: cls() for algo, cls in _HASHES.items()}


def hash_algorithm(algo: BaseHashAlgo) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash object for exactly one BaseHashAlgo bit."""
    if type(algo) is BaseHashAlgo or type(algo) is int:
        shared = _INSTANCES.get(algo)
        if shared is not None:
            return shared
    cls = _HASHES.get(BaseHashAlgo(algo))
    if cls is None:
        raise UnsupportedAlgorithmError(f"BaseHashAlgo {algo!r} is not exactly one known hash")
    return cls()


def hash_size(algo: BaseHashAlgo) -> int:
    """H, the digest size in bytes."""
    try:
        return HASH_SIZE[BaseHashAlgo(algo)]
    except KeyError:
        raise UnsupportedAlgorithmError(f"BaseHashAlgo {algo!r} is not exactly one known hash") from None


def measurement_base_hash(algo: MeasurementHashAlgo) -> BaseHashAlgo:
    """The BaseHashAlgo that computes a MeasurementHashAlgo digest (raw bit stream has none)."""
    try:
        return _MEASUREMENT_TO_BASE[MeasurementHashAlgo(algo)]
    except KeyError:
        raise UnsupportedAlgorithmError(f"MeasurementHashAlgo {algo!r} has no digest") from None


def digest(algo: BaseHashAlgo, data: bytes) -> bytes:
    h = hashes.Hash(hash_algorithm(algo))
    h.update(data)
    return h.finalize()


def hmac_digest(algo: BaseHashAlgo, key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hash_algorithm(algo))
    mac.update(data)
    return mac.finalize()


def hmac_verify(algo: BaseHashAlgo, key: bytes, data: bytes, tag: bytes) -> bool:
    """Constant-time HMAC check (``cryptography``'s ``HMAC.verify``)."""
    mac = hmac.HMAC(key, hash_algorithm(algo))
    mac.update(data)
    try:
        mac.verify(tag)
    except InvalidSignature:
        return False
    return True


def hkdf_extract(algo: BaseHashAlgo, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2): PRK = HMAC-Hash(salt, IKM); an empty salt means H zero bytes.

    Written as the HMAC it is defined to be, which works on every ``cryptography`` release
    (``HKDF.extract`` only appeared recently).
    """
    if not salt:
        salt = bytes(hash_size(algo))
    return hmac_digest(algo, salt, ikm)


def hkdf_expand(algo: BaseHashAlgo, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3) with ``cryptography``'s HKDFExpand."""
    return HKDFExpand(algorithm=hash_algorithm(algo), length=length, info=info).derive(prk)


class TranscriptHash:
    """An incremental hash of an SPDM transcript that can be read at any checkpoint.

    ``digest()`` does not end the hash, so TH1 can be taken and the transcript extended to TH2.
    ``fork()`` copies the state, e.g. to hash "transcript so far + FINISH header" on the side.
    """

    def __init__(self, algo: BaseHashAlgo, data: bytes = b"") -> None:
        self.algo = BaseHashAlgo(algo)
        self._ctx = hashes.Hash(hash_algorithm(self.algo))
        self._length = 0
        if data:
            self.update(data)

    def __len__(self) -> int:
        """Bytes absorbed so far (useful in traces and assertions)."""
        return self._length

    def update(self, data: bytes) -> TranscriptHash:
        self._ctx.update(data)
        self._length += len(data)
        return self

    def digest(self) -> bytes:
        return self._ctx.copy().finalize()

    def fork(self) -> TranscriptHash:
        other = TranscriptHash.__new__(TranscriptHash)
        other.algo = self.algo
        other._ctx = self._ctx.copy()
        other._length = self._length
        return other
