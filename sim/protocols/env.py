"""What a sans-IO protocol object needs from its surroundings: randomness, a secret sink, a meter.

Protocol objects never sleep and never read a clock they were not given. They draw every random
byte from ``rng`` (so runs are deterministic), report every secret they create to ``sink`` under
their ``owner`` name (so the exposure tracker can follow it), and record each crypto operation in
``meter`` so that the engine can charge the simulated time of the component class they run on.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

from sim.crypto.algorithms import BaseAsymAlgo, DheGroup
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.secrets import SecretClass, SecretRecord, SecretSink


class CryptoOp(enum.StrEnum):
    """Metered operations; the values are the engine timing model's operation names."""

    ECDSA_P256_SIGN = "ecdsa-p256-sign"
    ECDSA_P256_VERIFY = "ecdsa-p256-verify"
    ECDSA_P384_SIGN = "ecdsa-p384-sign"
    ECDSA_P384_VERIFY = "ecdsa-p384-verify"
    ECDH_P256 = "ecdh-p256"
    ECDH_P384 = "ecdh-p384"
    HASH_PER_KIB = "hash-per-kib"
    AEAD_PER_KIB = "aead-per-kib"
    HKDF = "hkdf"


_SIGN = {BaseAsymAlgo.ECDSA_P256: CryptoOp.ECDSA_P256_SIGN, BaseAsymAlgo.ECDSA_P384: CryptoOp.ECDSA_P384_SIGN}
_VERIFY = {BaseAsymAlgo.ECDSA_P256: CryptoOp.ECDSA_P256_VERIFY, BaseAsymAlgo.ECDSA_P384: CryptoOp.ECDSA_P384_VERIFY}
_ECDH = {DheGroup.SECP_256_R1: CryptoOp.ECDH_P256, DheGroup.SECP_384_R1: CryptoOp.ECDH_P384}


@dataclasses.dataclass(frozen=True)
class MeteredOp:
    op: CryptoOp
    nbytes: int | None = None  # for the per-KiB operations


# MeteredOp is immutable, and a flow meters the same few (operation, size) pairs over and over: one
# shared instance per pair spares an object per record (bounded, in case sizes never repeat).
_SHARED_OPS: dict[tuple[CryptoOp, int | None], MeteredOp] = {}
_SHARED_OPS_MAX = 4096


class CryptoMeter:
    """An ordered log of the crypto operations a protocol object performed since the last drain.

    Algorithms without an entry in the timing model (RSA, P-521) are charged as the P-384 operation
    of the same kind: a documented approximation, not silence.
    """

    def __init__(self) -> None:
        self._ops: list[MeteredOp] = []
        self.totals: dict[CryptoOp, int] = {}

    def _add(self, op: CryptoOp, nbytes: int | None = None) -> None:
        item = _SHARED_OPS.get((op, nbytes))
        if item is None:
            item = MeteredOp(op, nbytes)
            if len(_SHARED_OPS) < _SHARED_OPS_MAX:
                _SHARED_OPS[(op, nbytes)] = item
        self._ops.append(item)
        self.totals[op] = self.totals.get(op, 0) + 1

    def sign(self, asym: BaseAsymAlgo) -> None:
        self._add(_SIGN.get(BaseAsymAlgo(asym), CryptoOp.ECDSA_P384_SIGN))

    def verify(self, asym: BaseAsymAlgo) -> None:
        self._add(_VERIFY.get(BaseAsymAlgo(asym), CryptoOp.ECDSA_P384_VERIFY))

    def ecdh(self, group: DheGroup) -> None:
        self._add(_ECDH.get(DheGroup(group), CryptoOp.ECDH_P384))

    def hash(self, nbytes: int) -> None:
        self._add(CryptoOp.HASH_PER_KIB, nbytes)

    def aead(self, nbytes: int) -> None:
        self._add(CryptoOp.AEAD_PER_KIB, nbytes)

    def hkdf(self, count: int = 1) -> None:
        for _ in range(count):
            self._add(CryptoOp.HKDF)

    def drain(self) -> list[MeteredOp]:
        ops, self._ops = self._ops, []
        return ops


@dataclasses.dataclass
class ProtocolEnv:
    """The per-component surroundings of a protocol object (see the module docstring)."""

    rng: DeterministicRandom
    owner: str
    sink: SecretSink | None = None
    meter: CryptoMeter = dataclasses.field(default_factory=CryptoMeter)
    # Called with (owner, bytes) for every plaintext the object decrypts or encrypts: the exposure
    # tracker learns that this component held whatever secrets those bytes carry (e.g. IDE keys
    # inside a KEY_PROG that only ever crossed a wire as ciphertext).
    observer: Callable[[str, bytes], object] | None = None

    @classmethod
    def for_test(cls, owner: str = "test", seed: bytes | int | str = 0) -> ProtocolEnv:
        return cls(DeterministicRandom(seed, owner), owner)

    def observe(self, plaintext: bytes) -> None:
        if self.observer is not None:
            self.observer(self.owner, bytes(plaintext))

    def report(self, label: str, secret_class: SecretClass, value: bytes) -> None:
        if self.sink is not None:
            self.sink.register(SecretRecord(label, secret_class, self.owner, bytes(value)))
