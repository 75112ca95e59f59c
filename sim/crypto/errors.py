"""Typed errors of the crypto layer.

The crypto layer sits below the wire layer, so it cannot raise ``sim.wire.codec.DecodeError``;
its own errors subclass ``ValueError`` (as ``DecodeError`` does) so callers that parse untrusted
input can catch either with one ``except ValueError`` and map it to the response the spec demands.
"""

from __future__ import annotations


class CryptoError(ValueError):
    """Base of every error the crypto layer raises on purpose."""


class UnsupportedAlgorithmError(CryptoError):
    """An SPDM algorithm bit (or combination) this simulator does not implement."""


class KeyMismatchError(CryptoError):
    """A key does not fit the selected algorithm (wrong curve, wrong RSA size, wrong type)."""


class InvalidPublicValueError(CryptoError):
    """A peer's DHE public value is malformed or not a point on the negotiated curve."""


class AeadError(CryptoError):
    """AEAD authentication failed: the tag (MAC) does not match key, IV, AAD and ciphertext."""


class CertificateFormatError(CryptoError):
    """Certificate, certificate-chain or key bytes that cannot be parsed.

    ``offset`` (byte position in the parsed input) and ``index`` (which certificate of a chain)
    are set where known, so that a decoder above can name the byte.
    """

    def __init__(self, message: str, *, offset: int | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.index = index
