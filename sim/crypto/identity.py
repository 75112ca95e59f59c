"""Device identities: X.509 chains (root CA → intermediate CA → leaf) and the SPDM chain container.

Deterministic: keys come from :mod:`sim.crypto.keys` (seeded), serial numbers from the DRBG,
validity is fixed (notBefore 2024-01-01, notAfter 9999-12-31 23:59:59, the RFC 5280 "no well-defined
expiration" value), and ECDSA certificate signatures use RFC 6979 (``ecdsa_deterministic=True``,
cryptography >= 45); RSA certificates are signed with PKCS#1 v1.5, which is deterministic.
So the same (seed, name, algorithms) gives byte-identical DER.

Extensions follow what SPDM responders carry (DSP0274 §"Certificate requirements"; the libspdm
sample chains use the same set):

* CAs: basicConstraints CA:TRUE (critical, pathLen), keyUsage keyCertSign|cRLSign|digitalSignature
  (critical), subjectKeyIdentifier, authorityKeyIdentifier.
* Leaf: basicConstraints CA:FALSE (critical), keyUsage digitalSignature|nonRepudiation (critical),
  SKI/AKI, subjectAltName otherName id-DMTF-device-info (1.3.6.1.4.1.412.274.1) with a UTF8String,
  and the id-DMTF-SPDM-extension (1.3.6.1.4.1.412.274.6) holding one id-spdm-cert-oid entry
  id-DMTF-hardware-identity (1.3.6.1.4.1.412.274.2): a device-certificate-model leaf. The OIDs are
  from libspdm ``include/industry_standard/spdm.h`` and the encoding mirrors libspdm's
  ``unit_test/sample_key/openssl.cnf``.

Chain verification (:func:`verify_chain`) never reads the wall clock: the caller passes ``at``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo
from sim.crypto.drbg import DeterministicRandom, seed_to_bytes
from sim.crypto.errors import (
    CertificateFormatError,
    CryptoError,
    KeyMismatchError,
    UnsupportedAlgorithmError,
)
from sim.crypto.hashes import digest, hash_algorithm, hash_size
from sim.crypto.keys import (
    SigningPrivateKey,
    SigningPublicKey,
    asym_for_key,
    check_key_fits,
    generate_signing_key,
    private_key_secret_bytes,
)
from sim.crypto.secrets import SecretClass, SecretRecord, SecretSink
from sim.crypto.signing import SigningContext, spdm_sign

NOT_BEFORE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)

OID_DMTF_DEVICE_INFO = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.1")
OID_DMTF_HARDWARE_IDENTITY = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.2")
OID_DMTF_EKU_RESPONDER_AUTH = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.3")
OID_DMTF_EKU_REQUESTER_AUTH = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.4")
OID_DMTF_SPDM_EXTENSION = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.6")

SPDM_CERT_CHAIN_HEADER_SIZE = 4


# --- minimal DER helpers (lengths only; everything else is cryptography's job) ----------------


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _der_oid(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _der_tlv(0x06, bytes(body))


def spdm_extension_value(*oids: x509.ObjectIdentifier) -> bytes:
    """DER of id-spdm-cert-oids: SEQUENCE OF SEQUENCE { OID } (no certoid-definition)."""
    return _der_tlv(0x30, b"".join(_der_tlv(0x30, _der_oid(o)) for o in oids))


def split_der_certificates(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates by their outer SEQUENCE lengths (no other parsing).

    CertificateFormatError carries the byte ``offset`` and the certificate ``index`` at fault.
    """
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        def fail(reason: str, at: int) -> CertificateFormatError:
            return CertificateFormatError(f"byte {at}: {reason}", offset=at, index=len(out))

        if data[pos] != 0x30:
            raise fail(f"tag 0x{data[pos]:02x} is not a DER SEQUENCE (0x30)", pos)
        if pos + 2 > len(data):
            raise fail("truncated DER header", pos)
        first = data[pos + 1]
        if first < 0x80:
            length, header = first, 2
        elif first == 0x80 or first > 0x84:
            raise fail(f"length form 0x{first:02x} is not a definite DER length", pos + 1)
        else:
            n = first & 0x7F
            if pos + 2 + n > len(data):
                raise fail("truncated DER length", pos + 1)
            length, header = int.from_bytes(data[pos + 2 : pos + 2 + n], "big"), 2 + n
        end = pos + header + length
        if end > len(data):
            raise fail(f"certificate of {header + length} bytes runs past the chain end", pos)
        out.append(bytes(data[pos:end]))
        pos = end
    return out


# --- SPDM certificate chain container (PROTOCOLS.md §2.7) ---------------------------------------


def spdm_cert_chain(hash_algo: BaseHashAlgo, certificates_der: Sequence[bytes]) -> bytes:
    """Length (u16 LE, whole container) ‖ reserved (u16) ‖ RootHash = H(first cert) ‖ DER chain."""
    if not certificates_der:
        raise CryptoError("an SPDM certificate chain needs at least one certificate")
    chain = b"".join(certificates_der)
    total = SPDM_CERT_CHAIN_HEADER_SIZE + hash_size(hash_algo) + len(chain)
    if total > 0xFFFF:
        raise CryptoError(f"SPDM certificate chain of {total} bytes exceeds the u16 Length field")
    return total.to_bytes(2, "little") + b"\x00\x00" + digest(hash_algo, certificates_der[0]) + chain


def spdm_cert_chain_digest(hash_algo: BaseHashAlgo, container: bytes) -> bytes:
    """The slot digest of DIGESTS / CertChainHash of CHALLENGE_AUTH / Ct: H(whole container)."""
    return digest(hash_algo, container)


@dataclasses.dataclass(frozen=True)
class SpdmCertChain:
    """A parsed SPDM certificate chain container."""

    root_hash: bytes
    certificates_der: tuple[bytes, ...]
    hash_algo: BaseHashAlgo

    @property
    def root_hash_matches(self) -> bool:
        return digest(self.hash_algo, self.certificates_der[0]) == self.root_hash


def parse_spdm_cert_chain(hash_algo: BaseHashAlgo, data: bytes) -> SpdmCertChain:
    """Parse the container; CertificateFormatError on a bad length, reserved bytes or DER framing."""
    h = hash_size(hash_algo)
    if len(data) < SPDM_CERT_CHAIN_HEADER_SIZE + h + 2:
        raise CertificateFormatError(f"SPDM cert chain of {len(data)} bytes is shorter than header + RootHash")
    length = int.from_bytes(data[0:2], "little")
    if length != len(data):
        raise CertificateFormatError(f"SPDM cert chain Length field {length} != {len(data)} bytes given")
    if data[2:4] != b"\x00\x00":
        raise CertificateFormatError("SPDM cert chain reserved bytes are not zero")
    certs = split_der_certificates(data[SPDM_CERT_CHAIN_HEADER_SIZE + h :])
    if not certs:
        raise CertificateFormatError("SPDM cert chain holds no certificate")
    return SpdmCertChain(bytes(data[4 : 4 + h]), tuple(certs), BaseHashAlgo(hash_algo))


# --- certificates -------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tiosim"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _sign_builder(builder: x509.CertificateBuilder, key: SigningPrivateKey, hash_algo: BaseHashAlgo) -> x509.Certificate:
    algorithm = hash_algorithm(hash_algo)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        try:
            return builder.sign(key, algorithm, ecdsa_deterministic=True)  # type: ignore[arg-type]
        except TypeError as exc:  # cryptography < 45 has no ecdsa_deterministic
            raise UnsupportedAlgorithmError(
                f"deterministic ECDSA certificates need cryptography >= 45 ({exc})"
            ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        return builder.sign(key, algorithm, rsa_padding=padding.PKCS1v15())  # type: ignore[arg-type]
    raise UnsupportedAlgorithmError(f"cannot sign certificates with {type(key).__name__}")


def issue_certificate(
    *,
    subject_cn: str,
    public_key: SigningPublicKey,
    issuer_key: SigningPrivateKey,
    issuer: x509.Certificate | None,
    hash_algo: BaseHashAlgo,
    serial: int,
    ca: bool | None,
    path_length: int | None = None,
    digital_signature: bool = True,
    key_cert_sign: bool | None = None,
    key_usage: bool = True,
    not_before: dt.datetime = NOT_BEFORE,
    not_after: dt.datetime = NOT_AFTER,
    device_info: str | None = None,
    spdm_extension: bool = False,
    extended_key_usage: Sequence[x509.ObjectIdentifier] = (),
) -> x509.Certificate:
    """One X.509 v3 certificate; ``issuer=None`` makes it self-signed.

    ``ca=None`` omits basicConstraints; ``key_usage=False`` omits keyUsage; ``key_cert_sign``
    defaults to ``ca``. The many switches exist so tests and adversary scenarios can build
    deliberately wrong certificates with the same code as good ones.
    """
    subject = _name(subject_cn)
    issuer_name = issuer.subject if issuer is not None else subject
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    else:
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), True)
    if key_usage:
        cert_sign = bool(ca) if key_cert_sign is None else key_cert_sign
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=cert_sign,
                crl_sign=cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    builder = builder.add_extension(ski, False).add_extension(aki, False)
    if device_info is not None:
        other = x509.OtherName(OID_DMTF_DEVICE_INFO, _der_tlv(0x0C, device_info.encode()))
        builder = builder.add_extension(x509.SubjectAlternativeName([other]), False)
    if extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), False)
    if spdm_extension:
        value = spdm_extension_value(OID_DMTF_HARDWARE_IDENTITY)
        builder = builder.add_extension(x509.UnrecognizedExtension(OID_DMTF_SPDM_EXTENSION, value), False)
    return _sign_builder(builder, issuer_key, hash_algo)


def _serial(rng: DeterministicRandom) -> int:
    """A positive serial of at most 20 octets (RFC 5280 §4.1.2.2): 128 DRBG bits, top bit clear."""
    return (int.from_bytes(rng.bytes(16), "big") >> 1) | 1


@dataclasses.dataclass(frozen=True, eq=False)
class Identity:
    """A signing identity: certificates root-first, leaf last, and the leaf's private key."""

    name: str
    asym_algo: BaseAsymAlgo
    hash_algo: BaseHashAlgo
    certificates: tuple[x509.Certificate, ...]
    private_key: SigningPrivateKey = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not self.certificates:
            raise CryptoError("an identity needs at least one certificate")
        check_key_fits(self.asym_algo, self.private_key)
        if _public_der(self.private_key.public_key()) != _public_der(self.leaf.public_key()):
            raise KeyMismatchError("private key does not belong to the leaf certificate")

    @property
    def root(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[-1]

    @property
    def public_key(self) -> SigningPublicKey:
        return self.private_key.public_key()

    @functools.cached_property
    def certificates_der(self) -> tuple[bytes, ...]:
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in self.certificates)

    @property
    def chain_der(self) -> bytes:
        """Raw concatenated DER, root first (the libspdm ``bundle_*.certchain.der`` form)."""
        return b"".join(self.certificates_der)

    def spdm_cert_chain(self, hash_algo: BaseHashAlgo | None = None) -> bytes:
        """The SPDM certificate chain container under the negotiated hash (default: own)."""
        return spdm_cert_chain(hash_algo or self.hash_algo, self.certificates_der)

    def spdm_cert_chain_digest(self, hash_algo: BaseHashAlgo | None = None) -> bytes:
        algo = hash_algo or self.hash_algo
        return spdm_cert_chain_digest(algo, self.spdm_cert_chain(algo))

    def spdm_sign(
        self,
        version: int,
        transcript_hash: bytes,
        context: SigningContext,
        *,
        hash_algo: BaseHashAlgo | None = None,
        rng: DeterministicRandom | None = None,
    ) -> bytes:
        """:func:`sim.crypto.signing.spdm_sign` with this identity's key and algorithm."""
        return spdm_sign(
            version, self.asym_algo, hash_algo or self.hash_algo, self.private_key, transcript_hash, context, rng
        )


def _public_der(key: SigningPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _report_leaf_key(identity: Identity, sink: SecretSink | None, owner: str) -> None:
    if sink is not None:
        sink.register(
            SecretRecord(
                f"identity {identity.name} leaf private key",
                SecretClass.DEVICE_IDENTITY_KEY,
                owner,
                private_key_secret_bytes(identity.private_key),
            )
        )


@functools.lru_cache(maxsize=128)
def _ca_pair(
    seed: bytes, ca_name: str, asym: BaseAsymAlgo, hash_algo: BaseHashAlgo
) -> tuple[x509.Certificate, x509.Certificate, SigningPrivateKey]:
    base = DeterministicRandom(seed, "identity").child(f"ca:{ca_name}").child(asym.name)
    serials = base.child("serials")
    root_key = generate_signing_key(asym, base.child("root-key"))
    root = issue_certificate(
        subject_cn=f"tiosim {ca_name} root CA", public_key=root_key.public_key(), issuer_key=root_key,
        issuer=None, hash_algo=hash_algo, serial=_serial(serials), ca=True, path_length=1,
    )
    inter_key = generate_signing_key(asym, base.child("intermediate-key"))
    inter = issue_certificate(
        subject_cn=f"tiosim {ca_name} intermediate CA", public_key=inter_key.public_key(), issuer_key=root_key,
        issuer=root, hash_algo=hash_algo, serial=_serial(serials), ca=True, path_length=0,
    )
    return root, inter, inter_key


@functools.lru_cache(maxsize=256)
def _identity(
    seed: bytes, name: str, ca_name: str, asym: BaseAsymAlgo, ca_asym: BaseAsymAlgo, hash_algo: BaseHashAlgo
) -> Identity:
    root, inter, inter_key = _ca_pair(seed, ca_name, ca_asym, hash_algo)
    base = DeterministicRandom(seed, "identity").child(f"leaf:{name}").child(asym.name)
    leaf_key = generate_signing_key(asym, base.child("leaf-key"))
    leaf = issue_certificate(
        subject_cn=f"tiosim {name} device", public_key=leaf_key.public_key(), issuer_key=inter_key,
        issuer=inter, hash_algo=hash_algo, serial=_serial(base.child("serial")), ca=False,
        device_info=f"tiosim:{ca_name}:{name}", spdm_extension=True,
    )
    return Identity(name, asym, hash_algo, (root, inter, leaf), leaf_key)


def build_identity(
    seed: bytes | int | str,
    name: str,
    asym_algo: BaseAsymAlgo,
    hash_algo: BaseHashAlgo,
    *,
    ca_name: str | None = None,
    ca_asym_algo: BaseAsymAlgo | None = None,
    sink: SecretSink | None = None,
    owner: str = "",
) -> Identity:
    """The deterministic identity ``name`` under the CA hierarchy ``ca_name`` (default: ``name``).

    Devices that share a ``ca_name`` (and ``ca_asym_algo``) share root and intermediate: one trusted
    root for a fleet. The CA keys use ``ca_asym_algo`` (default: ``asym_algo``; an ECDSA CA over an
    RSA leaf saves the seconds that deterministic RSA key generation costs in pure Python). The leaf
    key depends only on (seed, name, asym_algo). Results are cached; the leaf private key is reported
    to ``sink`` as DEVICE_IDENTITY_KEY on every call (each caller is a holder of it).
    """
    asym = BaseAsymAlgo(asym_algo)
    ca_asym = BaseAsymAlgo(ca_asym_algo) if ca_asym_algo is not None else asym
    identity = _identity(
        seed_to_bytes(seed), name, ca_name if ca_name is not None else name, asym, ca_asym, BaseHashAlgo(hash_algo)
    )
    _report_leaf_key(identity, sink, owner)
    return identity


# --- loading from files ---------------------------------------------------------------------------


def _read(source: bytes | str | Path) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise CertificateFormatError(f"cannot read {source}: {exc}") from None


def load_certificates(source: bytes | str | Path) -> list[x509.Certificate]:
    """Certificates from PEM (one or more blocks) or raw concatenated DER, in file order."""
    data = _read(source)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(der) for der in split_der_certificates(data)]
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        if isinstance(exc, CertificateFormatError):
            raise
        raise CertificateFormatError(f"unparseable certificate data: {exc}") from None


def load_trusted_roots(*sources: bytes | str | Path) -> list[x509.Certificate]:
    """Trusted root certificates from DER/PEM files or bytes (each may hold several)."""
    roots: list[x509.Certificate] = []
    for source in sources:
        roots.extend(load_certificates(source))
    return roots


def load_private_key(source: bytes | str | Path) -> SigningPrivateKey:
    """An unencrypted private key in PEM or DER (PKCS#8 or the traditional formats)."""
    data = _read(source)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateFormatError(f"unparseable private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise UnsupportedAlgorithmError(f"unsupported private key type {type(key).__name__}")
    return key


def load_identity(
    chain: bytes | str | Path,
    private_key: bytes | str | Path,
    hash_algo: BaseHashAlgo,
    *,
    name: str = "",
    asym_algo: BaseAsymAlgo | None = None,
    sink: SecretSink | None = None,
    owner: str = "",
) -> Identity:
    """An Identity from a certificate chain (raw DER root-first, or PEM) and the leaf's key.

    ``asym_algo`` defaults to the key's algorithm (RSASSA for RSA keys; pass RSAPSS_* to use PSS).
    """
    certs = load_certificates(chain)
    if not certs:
        raise CertificateFormatError("certificate chain is empty")
    key = load_private_key(private_key)
    asym = BaseAsymAlgo(asym_algo) if asym_algo is not None else asym_for_key(key)
    identity = Identity(name or certs[-1].subject.rfc4514_string(), asym, BaseHashAlgo(hash_algo), tuple(certs), key)
    _report_leaf_key(identity, sink, owner)
    return identity


# --- verification ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def load_der_certificate(der: bytes) -> x509.Certificate:
    """``x509.load_der_x509_certificate``, parsed once per distinct DER (ValueError if it is none).

    Certificate objects are immutable and keep what they parsed (extensions, public key), so a
    requester that sees the same chain again (every re-attestation, every device of a model)
    skips the parsing; every signature along the chain is still verified each time.
    """
    return x509.load_der_x509_certificate(der)


class ChainStatus(enum.Enum):
    OK = "ok"
    EMPTY = "empty"
    MALFORMED = "malformed"
    ROOT_HASH_MISMATCH = "root-hash-mismatch"          # SPDM container RootHash != H(first cert)
    UNTRUSTED_ROOT = "untrusted-root"
    ISSUER_MISMATCH = "issuer-mismatch"                # issuer name != previous subject
    BAD_SIGNATURE = "bad-signature"
    BASIC_CONSTRAINTS = "basic-constraints"            # CA without CA:TRUE, CA leaf, pathLen exceeded
    CA_LACKS_KEY_CERT_SIGN = "ca-lacks-key-cert-sign"
    LEAF_LACKS_DIGITAL_SIGNATURE = "leaf-lacks-digital-signature"
    LEAF_NOT_FOR_RESPONDER = "leaf-not-for-responder"  # leaf extendedKeyUsage names requester authentication only
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    ALGORITHM_MISMATCH = "algorithm-mismatch"


@dataclasses.dataclass(frozen=True)
class ChainResult:
    status: ChainStatus
    detail: str = ""
    index: int | None = None                 # position in the chain (0 = first/root) of the culprit
    leaf_public_key: SigningPublicKey | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status is ChainStatus.OK


def _fail(status: ChainStatus, detail: str, index: int | None = None) -> ChainResult:
    return ChainResult(status, detail, index)


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> ChainStatus:
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return ChainStatus.BAD_SIGNATURE
    except (ValueError, TypeError):
        # ValueError: issuer name mismatch or signature algorithm/key type disagreement.
        return ChainStatus.ISSUER_MISMATCH if cert.issuer != issuer.subject else ChainStatus.BAD_SIGNATURE
    return ChainStatus.OK


def _as_utc(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def verify_chain(
    certificates: bytes | Sequence[bytes | x509.Certificate],
    trusted_roots: Sequence[bytes | x509.Certificate],
    *,
    at: dt.datetime,
    asym_algo: BaseAsymAlgo | None = None,
    cert_hash_algo: BaseHashAlgo | None = None,
    responder: bool = False,
) -> ChainResult:
    """Check a chain the way a requester does (first certificate root or root-issued, leaf last).

    Checks, in this order, each stopping at the first failure: parse; the first certificate is a
    trusted root or directly issued by one; each certificate is issued by the previous one (name and
    signature, by ``cryptography``'s ``verify_directly_issued_by``); basicConstraints (every
    non-leaf CA:TRUE within pathLen, leaf not a CA); keyUsage (CAs, if they carry it, keyCertSign;
    the leaf must carry digitalSignature — libspdm requires the extension; for a ``responder``'s chain,
    a leaf extendedKeyUsage naming DMTF requester authentication without responder authentication is
    refused, libspdm's rule); validity at ``at`` (naive
    = UTC; never the wall clock); the leaf key fits ``asym_algo`` and, when ``cert_hash_algo`` is
    given, every certificate is signed with that hash.
    """
    try:
        if isinstance(certificates, bytes | bytearray | memoryview):
            ders: list[bytes | x509.Certificate] = list(split_der_certificates(bytes(certificates)))
        else:
            ders = list(certificates)
        chain = [c if isinstance(c, x509.Certificate) else load_der_certificate(bytes(c)) for c in ders]
        roots = [r if isinstance(r, x509.Certificate) else load_der_certificate(bytes(r))
                 for r in trusted_roots]
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        return _fail(ChainStatus.MALFORMED, str(exc))
    if not chain:
        return _fail(ChainStatus.EMPTY, "no certificates")

    # 1. trust anchor
    first = chain[0]
    if first not in roots:  # certificates compare by their DER encoding
        candidates = [r for r in roots if r.subject == first.issuer]
        if not candidates:
            return _fail(ChainStatus.UNTRUSTED_ROOT, f"no trusted root for issuer {first.issuer.rfc4514_string()}", 0)
        if not any(_issued_by(first, r) is ChainStatus.OK for r in candidates):
            return _fail(ChainStatus.BAD_SIGNATURE, "first certificate is not signed by the trusted root", 0)

    # 2. issuance along the chain
    for i in range(1, len(chain)):
        status = _issued_by(chain[i], chain[i - 1])
        if status is not ChainStatus.OK:
            return _fail(status, f"certificate {i} is not issued by certificate {i - 1}", i)

    # 3. basic constraints
    last = len(chain) - 1
    for i, cert in enumerate(chain):
        bc = _ext(cert, x509.BasicConstraints)
        if i < last:
            if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
                return _fail(ChainStatus.BASIC_CONSTRAINTS, f"certificate {i} issues others but is not a CA", i)
            below = last - i - 1  # CA certificates below this one
            if bc.path_length is not None and below > bc.path_length:
                return _fail(ChainStatus.BASIC_CONSTRAINTS, f"certificate {i} pathLen {bc.path_length} exceeded", i)
        elif isinstance(bc, x509.BasicConstraints) and bc.ca and len(chain) > 1:
            return _fail(ChainStatus.BASIC_CONSTRAINTS, "leaf certificate is a CA", i)

    # 4. key usage
    for i, cert in enumerate(chain[:-1]):
        ku = _ext(cert, x509.KeyUsage)
        if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
            return _fail(ChainStatus.CA_LACKS_KEY_CERT_SIGN, f"certificate {i} may not sign certificates", i)
    leaf_ku = _ext(chain[-1], x509.KeyUsage)
    if not isinstance(leaf_ku, x509.KeyUsage) or not leaf_ku.digital_signature:
        return _fail(ChainStatus.LEAF_LACKS_DIGITAL_SIGNATURE, "leaf keyUsage lacks digitalSignature", last)
    leaf_eku = _ext(chain[-1], x509.ExtendedKeyUsage)
    if responder and isinstance(leaf_eku, x509.ExtendedKeyUsage) and OID_DMTF_EKU_REQUESTER_AUTH in leaf_eku \
            and OID_DMTF_EKU_RESPONDER_AUTH not in leaf_eku:
        return _fail(ChainStatus.LEAF_NOT_FOR_RESPONDER,
                     "leaf extendedKeyUsage is for requester authentication only", last)

    # 5. validity at the simulated time
    when = _as_utc(at)
    for i, cert in enumerate(chain):
        if when < cert.not_valid_before_utc:
            return _fail(ChainStatus.NOT_YET_VALID, f"certificate {i} valid from {cert.not_valid_before_utc}", i)
        if when > cert.not_valid_after_utc:
            return _fail(ChainStatus.EXPIRED, f"certificate {i} expired {cert.not_valid_after_utc}", i)

    # 6. algorithms
    leaf_key = chain[-1].public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return _fail(ChainStatus.ALGORITHM_MISMATCH, f"leaf key type {type(leaf_key).__name__}", last)
    if asym_algo is not None:
        try:
            check_key_fits(asym_algo, leaf_key)
        except (KeyMismatchError, UnsupportedAlgorithmError) as exc:
            return _fail(ChainStatus.ALGORITHM_MISMATCH, str(exc), last)
    if cert_hash_algo is not None:
        want = hash_algorithm(cert_hash_algo).name
        for i, cert in enumerate(chain):
            got = cert.signature_hash_algorithm
            if got is None or got.name != want:
                return _fail(ChainStatus.ALGORITHM_MISMATCH, f"certificate {i} signed with {got and got.name}", i)
    return ChainResult(ChainStatus.OK, "", None, leaf_key)


def verify_spdm_cert_chain(
    hash_algo: BaseHashAlgo,
    container: bytes,
    trusted_roots: Sequence[bytes | x509.Certificate],
    *,
    at: dt.datetime,
    asym_algo: BaseAsymAlgo | None = None,
    cert_hash_algo: BaseHashAlgo | None = None,
    responder: bool = True,
) -> ChainResult:
    """:func:`verify_chain` on an SPDM container, after checking its framing and RootHash (by default a
    responder's container: what CERTIFICATE and a TSM's evidence carry)."""
    try:
        parsed = parse_spdm_cert_chain(hash_algo, container)
    except CertificateFormatError as exc:
        return _fail(ChainStatus.MALFORMED, str(exc))
    if not parsed.root_hash_matches:
        return _fail(ChainStatus.ROOT_HASH_MISMATCH, "RootHash is not the hash of the first certificate", 0)
    return verify_chain(
        parsed.certificates_der, trusted_roots, at=at, asym_algo=asym_algo, cert_hash_algo=cert_hash_algo,
        responder=responder,
    )
