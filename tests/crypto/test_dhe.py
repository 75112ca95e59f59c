"""ECDHE (PROTOCOLS.md §2.6): agreement, wire sizes, determinism, peer-value validation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sim.crypto.algorithms import DHE_SIZE, DheGroup
from sim.crypto.dhe import EcdheKeyPair, decode_public_value
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.errors import InvalidPublicValueError, UnsupportedAlgorithmError
from sim.crypto.secrets import SecretClass, SecretList

GROUPS = [DheGroup.SECP_256_R1, DheGroup.SECP_384_R1, DheGroup.SECP_521_R1]
CURVES = {DheGroup.SECP_256_R1: ec.SECP256R1, DheGroup.SECP_384_R1: ec.SECP384R1, DheGroup.SECP_521_R1: ec.SECP521R1}


@pytest.mark.parametrize("group", GROUPS)
def test_both_sides_agree(group: DheGroup) -> None:
    req = EcdheKeyPair.generate(group, DeterministicRandom(b"s", "req"))
    rsp = EcdheKeyPair.generate(group, DeterministicRandom(b"s", "rsp"))
    assert len(req.public_value) == len(rsp.public_value) == DHE_SIZE[group]
    secret = req.shared_secret(rsp.public_value)
    assert secret == rsp.shared_secret(req.public_value)
    assert len(secret) == DHE_SIZE[group] // 2
    # independent check: cryptography's own ECDH from a SEC1 point built from X || Y
    peer = ec.EllipticCurvePublicKey.from_encoded_point(CURVES[group](), b"\x04" + req.public_value)
    own = ec.derive_private_key(int.from_bytes(rsp.private_bytes(), "big"), CURVES[group]())
    assert own.exchange(ec.ECDH(), peer).rjust(len(secret), b"\x00") == secret
    # X || Y really is the uncompressed point without its 0x04
    assert peer.public_numbers().x.to_bytes(len(secret), "big") == req.public_value[: len(secret)]


def test_deterministic_and_reported() -> None:
    sink = SecretList()
    a = EcdheKeyPair.generate(DheGroup.SECP_384_R1, DeterministicRandom(b"seed", "dev0"), sink=sink, owner="dev0")
    b = EcdheKeyPair.generate(DheGroup.SECP_384_R1, DeterministicRandom(b"seed", "dev0"))
    c = EcdheKeyPair.generate(DheGroup.SECP_384_R1, DeterministicRandom(b"seed", "dev1"))
    assert a.public_value == b.public_value != c.public_value
    [record] = sink.records
    assert record.secret_class is SecretClass.DHE_PRIVATE and record.owner == "dev0"
    assert record.value == a.private_bytes() and len(record.value) == 48


@pytest.mark.parametrize("group", GROUPS)
def test_invalid_peer_values_rejected(group: DheGroup) -> None:
    pair = EcdheKeyPair.generate(group, DeterministicRandom(b"s", "x"))
    good = EcdheKeyPair.generate(group, DeterministicRandom(b"s", "y")).public_value
    width = len(good) // 2
    off_curve = good[:-1] + bytes([good[-1] ^ 0x01])
    out_of_field = b"\xff" * len(good)
    for bad in (good[:-1], good + b"\x00", off_curve, out_of_field, bytes(len(good))):
        with pytest.raises(InvalidPublicValueError):
            pair.shared_secret(bad)
    with pytest.raises(InvalidPublicValueError):
        decode_public_value(group, good[:width])


def test_unsupported_groups() -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        EcdheKeyPair.generate(DheGroup.FFDHE_2048, DeterministicRandom(b"s", ""))
    with pytest.raises(UnsupportedAlgorithmError):
        decode_public_value(DheGroup.SM2_P256, bytes(64))
