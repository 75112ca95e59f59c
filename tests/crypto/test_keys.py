"""Deterministic key derivation and the curve-order constants it relies on."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sim.crypto.algorithms import BaseAsymAlgo
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.errors import UnsupportedAlgorithmError
from sim.crypto.keys import (
    CURVE_ORDER,
    asym_for_key,
    generate_signing_key,
    private_key_secret_bytes,
)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_curve_orders_are_exact(curve: ec.EllipticCurve) -> None:
    n = CURVE_ORDER[curve.name]
    assert n.bit_length() == curve.key_size
    ec.derive_private_key(n - 1, curve)  # the largest valid scalar is accepted
    with pytest.raises(ValueError):
        ec.derive_private_key(n, curve)  # n itself is out of range


@pytest.mark.parametrize("asym", [BaseAsymAlgo.ECDSA_P256, BaseAsymAlgo.ECDSA_P384, BaseAsymAlgo.ECDSA_P521])
def test_ec_keys_follow_seed_and_path(asym: BaseAsymAlgo) -> None:
    a = generate_signing_key(asym, DeterministicRandom(b"s", "dev0"))
    b = generate_signing_key(asym, DeterministicRandom(b"s", "dev0"))
    c = generate_signing_key(asym, DeterministicRandom(b"s", "dev1"))
    assert private_key_secret_bytes(a) == private_key_secret_bytes(b) != private_key_secret_bytes(c)
    assert asym_for_key(a) is asym
    assert len(private_key_secret_bytes(a)) == {256: 32, 384: 48, 521: 66}[a.curve.key_size]


def test_unsupported_key_algorithms() -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        generate_signing_key(BaseAsymAlgo.SM2_P256, DeterministicRandom(b"s", ""))
