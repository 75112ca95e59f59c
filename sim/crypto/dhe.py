"""ECDHE for SPDM KEY_EXCHANGE (PROTOCOLS.md §2.6): secp256r1, secp384r1, secp521r1.

Wire forms: the public value ("ExchangeData") is X ‖ Y, each big-endian and as wide as the field,
without the 0x04 SEC1 prefix; the shared secret is the X coordinate at the same width. The FFDHE
and SM2 groups are not implemented.

Private scalars come from a DeterministicRandom (so a seed fixes every session's keys) and are
reported to the secret sink as DHE_PRIVATE when generated. The shared secret is *not* reported
here: the session key schedule that consumes it reports it as DHE_SHARED_SECRET, once.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sim.crypto.algorithms import DHE_SIZE, DheGroup
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.errors import InvalidPublicValueError, UnsupportedAlgorithmError
from sim.crypto.keys import curve_order
from sim.crypto.secrets import SecretClass, SecretRecord, SecretSink

DHE_CURVES: dict[DheGroup, type[ec.EllipticCurve]] = {
    DheGroup.SECP_256_R1: ec.SECP256R1,
    DheGroup.SECP_384_R1: ec.SECP384R1,
    DheGroup.SECP_521_R1: ec.SECP521R1,
}


def _curve(group: DheGroup) -> ec.EllipticCurve:
    cls = DHE_CURVES.get(DheGroup(group))
    if cls is None:
        raise UnsupportedAlgorithmError(f"DheGroup {group!r} is not supported (ECDHE only)")
    return cls()


def coordinate_size(group: DheGroup) -> int:
    """Bytes per coordinate (32, 48, 66); the public value is twice this."""
    return DHE_SIZE[DheGroup(group)] // 2


def decode_public_value(group: DheGroup, data: bytes) -> ec.EllipticCurvePublicKey:
    """Parse X ‖ Y; raise InvalidPublicValueError unless it is a valid point on the curve.

    ``cryptography`` rejects coordinates outside the field and points not on the curve; the point
    at infinity has no X ‖ Y encoding, and the NIST curves have cofactor 1, so nothing else is
    needed to rule out small-subgroup points.
    """
    curve = _curve(group)
    expected = DHE_SIZE[DheGroup(group)]
    if len(data) != expected:
        raise InvalidPublicValueError(f"{group!r} public value must be {expected} bytes, got {len(data)}")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + bytes(data))
    except ValueError as exc:
        raise InvalidPublicValueError(f"{group!r} public value is not a point on the curve: {exc}") from None


def encode_public_value(group: DheGroup, key: ec.EllipticCurvePublicKey) -> bytes:
    """X ‖ Y: the SEC1 uncompressed point (0x04 ‖ X ‖ Y, both at field width) without its prefix."""
    width = coordinate_size(group)
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if len(point) != 1 + 2 * width:  # the key is on another curve than the group says
        numbers = key.public_numbers()
        return numbers.x.to_bytes(width, "big") + numbers.y.to_bytes(width, "big")
    return point[1:]


class EcdheKeyPair:
    """One side's ephemeral ECDHE key for one KEY_EXCHANGE."""

    def __init__(self, group: DheGroup, private_key: ec.EllipticCurvePrivateKey, *, scalar: int | None = None) -> None:
        self.group = DheGroup(group)
        if not isinstance(private_key.curve, type(_curve(self.group))):
            raise UnsupportedAlgorithmError(f"key on {private_key.curve.name} does not match {self.group!r}")
        self._private_key = private_key
        self._scalar = scalar  # the private value when the caller made the key from it (spares a read-back)
        self._public_value: bytes | None = None

    @classmethod
    def generate(
        cls,
        group: DheGroup,
        rng: DeterministicRandom,
        *,
        sink: SecretSink | None = None,
        owner: str = "",
        label: str = "ecdhe private key",
    ) -> EcdheKeyPair:
        """A fresh key pair whose scalar is the next draw from ``rng`` (reported as DHE_PRIVATE)."""
        curve = _curve(group)
        scalar = rng.scalar(curve_order(curve))
        pair = cls(group, ec.derive_private_key(scalar, curve), scalar=scalar)
        if sink is not None:
            sink.register(SecretRecord(label, SecretClass.DHE_PRIVATE, owner, pair.private_bytes()))
        return pair

    def private_bytes(self) -> bytes:
        """The private scalar, big-endian at coordinate width (how it would sit in memory)."""
        value = self._scalar if self._scalar is not None else self._private_key.private_numbers().private_value
        return value.to_bytes(coordinate_size(self.group), "big")

    @property
    def public_value(self) -> bytes:
        """ExchangeData: X ‖ Y."""
        if self._public_value is None:
            self._public_value = encode_public_value(self.group, self._private_key.public_key())
        return self._public_value

    def shared_secret(self, peer_public_value: bytes) -> bytes:
        """The X coordinate of d·Q_peer; InvalidPublicValueError on a bad peer value."""
        peer = decode_public_value(self.group, peer_public_value)
        secret = self._private_key.exchange(ec.ECDH(), peer)
        return secret.rjust(coordinate_size(self.group), b"\x00")
