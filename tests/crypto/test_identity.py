"""Deterministic identities, the SPDM chain container, loading from files, chain verification."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sim.crypto import identity as identity_mod
from sim.crypto import keys as keys_mod
from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.errors import CertificateFormatError, KeyMismatchError
from sim.crypto.hashes import digest
from sim.crypto.identity import (
    NOT_BEFORE,
    OID_DMTF_DEVICE_INFO,
    OID_DMTF_EKU_REQUESTER_AUTH,
    OID_DMTF_EKU_RESPONDER_AUTH,
    OID_DMTF_SPDM_EXTENSION,
    ChainStatus,
    Identity,
    build_identity,
    issue_certificate,
    load_identity,
    load_trusted_roots,
    parse_spdm_cert_chain,
    spdm_cert_chain,
    split_der_certificates,
    verify_chain,
    verify_spdm_cert_chain,
)
from sim.crypto.keys import generate_signing_key, private_key_secret_bytes
from sim.crypto.secrets import SecretClass, SecretList
from sim.crypto.signing import SigningContext, spdm_verify

P384, SHA384 = BaseAsymAlgo.ECDSA_P384, BaseHashAlgo.SHA_384
AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _clear_caches() -> None:
    identity_mod._identity.cache_clear()
    identity_mod._ca_pair.cache_clear()
    keys_mod._rsa_numbers.cache_clear()


@pytest.fixture(scope="module")
def dev0() -> Identity:
    return build_identity(b"seed", "dev0", P384, SHA384)


def test_same_seed_byte_identical_chain() -> None:
    _clear_caches()
    a = build_identity(b"seed", "dev0", P384, SHA384).chain_der
    _clear_caches()
    b = build_identity(b"seed", "dev0", P384, SHA384).chain_der
    assert a == b
    _clear_caches()
    assert build_identity(b"other seed", "dev0", P384, SHA384).chain_der != a


def test_rsa_identity_deterministic_with_ecdsa_cas() -> None:
    kwargs = {"ca_name": "vendor", "ca_asym_algo": P384}
    _clear_caches()
    a = build_identity(b"seed", "nic", BaseAsymAlgo.RSAPSS_2048, BaseHashAlgo.SHA_256, **kwargs)
    _clear_caches()
    b = build_identity(b"seed", "nic", BaseAsymAlgo.RSAPSS_2048, BaseHashAlgo.SHA_256, **kwargs)
    assert a.chain_der == b.chain_der
    assert verify_chain(a.chain_der, [a.root], at=AT, asym_algo=BaseAsymAlgo.RSAPSS_2048).ok
    th = digest(BaseHashAlgo.SHA_256, b"t")
    sig = a.spdm_sign(0x12, th, SigningContext.RESPONDER_CHALLENGE_AUTH)
    assert spdm_verify(0x12, BaseAsymAlgo.RSAPSS_2048, BaseHashAlgo.SHA_256, a.public_key, th, sig,
                       SigningContext.RESPONDER_CHALLENGE_AUTH)


def test_names_and_fleets(dev0: Identity) -> None:
    dev1 = build_identity(b"seed", "dev1", P384, SHA384)
    assert dev1.chain_der != dev0.chain_der
    assert private_key_secret_bytes(dev1.private_key) != private_key_secret_bytes(dev0.private_key)
    a = build_identity(b"seed", "gpu0", P384, SHA384, ca_name="acme")
    b = build_identity(b"seed", "gpu1", P384, SHA384, ca_name="acme")
    assert a.certificates_der[:2] == b.certificates_der[:2] and a.leaf != b.leaf
    assert verify_chain(b.chain_der, [a.root], at=AT).ok  # one trusted root for the fleet


def test_structure_and_extensions(dev0: Identity) -> None:
    root, inter, leaf = dev0.certificates
    assert [split_der_certificates(dev0.chain_der)] == [list(dev0.certificates_der)]
    assert root.subject == root.issuer and inter.issuer == root.subject and leaf.issuer == inter.subject
    assert leaf.not_valid_before_utc == NOT_BEFORE and leaf.not_valid_after_utc.year == 9999
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert inter.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    spdm = leaf.extensions.get_extension_for_oid(OID_DMTF_SPDM_EXTENSION).value
    # SEQUENCE { SEQUENCE { OID 1.3.6.1.4.1.412.274.2 } }
    assert spdm.value == bytes.fromhex("300e300c060a2b0601040183 1c821202".replace(" ", ""))
    [other] = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert isinstance(other, x509.OtherName) and other.type_id == OID_DMTF_DEVICE_INFO
    assert other.value == b"\x0c\x10tiosim:dev0:dev0"
    assert root.signature_hash_algorithm is not None and root.signature_hash_algorithm.name == "sha384"


def test_spdm_cert_chain_container(dev0: Identity) -> None:
    container = dev0.spdm_cert_chain()
    assert int.from_bytes(container[:2], "little") == len(container) == 4 + 48 + len(dev0.chain_der)
    assert container[2:4] == b"\x00\x00"
    assert container[4:52] == digest(SHA384, dev0.certificates_der[0])
    assert container[52:] == dev0.chain_der
    assert dev0.spdm_cert_chain_digest() == digest(SHA384, container)
    under256 = dev0.spdm_cert_chain(BaseHashAlgo.SHA_256)
    assert len(under256) == len(container) - 16
    parsed = parse_spdm_cert_chain(SHA384, container)
    assert parsed.certificates_der == dev0.certificates_der and parsed.root_hash_matches
    for bad in (container[:-1], container[:2] + b"\x01\x00" + container[4:], container[:10]):
        with pytest.raises(CertificateFormatError):
            parse_spdm_cert_chain(SHA384, bad)


def test_sink_gets_leaf_key(dev0: Identity) -> None:
    sink = SecretList()
    ident = build_identity(b"seed", "dev0", P384, SHA384, sink=sink, owner="rp0.dev0")
    [record] = sink.records
    assert record.secret_class is SecretClass.DEVICE_IDENTITY_KEY and record.owner == "rp0.dev0"
    assert record.value == ident.private_key.private_numbers().private_value.to_bytes(48, "big")


def test_load_from_files(tmp_path: Path, dev0: Identity) -> None:
    chain = tmp_path / "bundle_responder.certchain.der"
    chain.write_bytes(dev0.chain_der)
    pem_key = tmp_path / "end_responder.key"
    pem_key.write_bytes(dev0.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    der_key = dev0.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    sink = SecretList()
    loaded = load_identity(chain, pem_key, SHA384, name="dev0", sink=sink, owner="host")
    assert loaded.chain_der == dev0.chain_der and loaded.asym_algo is P384
    assert loaded.spdm_cert_chain() == dev0.spdm_cert_chain()
    assert sink.records[0].value == private_key_secret_bytes(dev0.private_key)
    assert load_identity(dev0.chain_der, der_key, SHA384).leaf == dev0.leaf
    pem_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in dev0.certificates)
    assert load_identity(pem_chain, der_key, SHA384).chain_der == dev0.chain_der
    other_key = generate_signing_key(P384, DeterministicRandom(b"x", "y")).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(KeyMismatchError):
        load_identity(chain, other_key, SHA384)
    roots_file = tmp_path / "roots.pem"
    roots_file.write_bytes(dev0.root.public_bytes(serialization.Encoding.PEM))
    assert load_trusted_roots(roots_file, dev0.certificates_der[0]) == [dev0.root, dev0.root]
    for garbage in (b"\x30\x82\xff", b"not der", b"-----BEGIN CERTIFICATE-----\nzz\n-----END CERTIFICATE-----\n"):
        with pytest.raises(CertificateFormatError):
            load_trusted_roots(garbage)
    with pytest.raises(CertificateFormatError):
        load_identity(chain, b"garbage", SHA384)
    with pytest.raises(CertificateFormatError):
        load_identity(tmp_path / "missing.der", pem_key, SHA384)


# --- verification: success and each failure reason -----------------------------------------------


def test_verify_ok_variants(dev0: Identity) -> None:
    result = verify_chain(dev0.chain_der, [dev0.root], at=AT, asym_algo=P384, cert_hash_algo=SHA384)
    assert result.ok and result.status is ChainStatus.OK
    assert result.leaf_public_key is not None
    assert verify_chain(list(dev0.certificates), [dev0.certificates_der[0]], at=AT).ok
    assert verify_chain(dev0.certificates_der[1:], [dev0.root], at=AT).ok  # root left out of the chain
    assert verify_spdm_cert_chain(SHA384, dev0.spdm_cert_chain(), [dev0.root], at=AT).ok


def _leaf(dev0: Identity, **overrides: object) -> x509.Certificate:
    _, inter, _ = dev0.certificates
    inter_key = generate_signing_key(P384, DeterministicRandom(b"seed", "identity").child("ca:dev0")
                                     .child(P384.name).child("intermediate-key"))
    args: dict[str, object] = {
        "subject_cn": "test leaf", "public_key": dev0.public_key, "issuer_key": inter_key, "issuer": inter,
        "hash_algo": SHA384, "serial": 99, "ca": False,
    }
    args.update(overrides)
    return issue_certificate(**args)  # type: ignore[arg-type]


def test_helper_rebuilds_a_valid_leaf(dev0: Identity) -> None:
    root, inter, _ = dev0.certificates
    assert verify_chain([root, inter, _leaf(dev0)], [root], at=AT).ok


def test_failure_reasons(dev0: Identity) -> None:
    root, inter, leaf = dev0.certificates
    stranger = build_identity(b"seed", "stranger", P384, SHA384)
    forger = generate_signing_key(P384, DeterministicRandom(b"evil", "k"))
    not_ca_inter = issue_certificate(
        subject_cn="tiosim dev0 intermediate CA", public_key=inter.public_key(),  # type: ignore[arg-type]
        issuer_key=generate_signing_key(P384, DeterministicRandom(b"seed", "identity").child("ca:dev0")
                                        .child(P384.name).child("root-key")),
        issuer=root, hash_algo=SHA384, serial=5, ca=False)
    no_cert_sign_inter = issue_certificate(
        subject_cn="tiosim dev0 intermediate CA", public_key=inter.public_key(),  # type: ignore[arg-type]
        issuer_key=generate_signing_key(P384, DeterministicRandom(b"seed", "identity").child("ca:dev0")
                                        .child(P384.name).child("root-key")),
        issuer=root, hash_algo=SHA384, serial=6, ca=True, key_cert_sign=False)
    cases: list[tuple[list[x509.Certificate] | bytes, ChainStatus, dict[str, object]]] = [
        (b"", ChainStatus.EMPTY, {}),
        (b"\x30\x03\x02\x01\x01", ChainStatus.MALFORMED, {}),
        (b"\x04\x00", ChainStatus.MALFORMED, {}),
        (stranger.chain_der, ChainStatus.UNTRUSTED_ROOT, {}),
        ([root, inter, _leaf(dev0, issuer_key=forger)], ChainStatus.BAD_SIGNATURE, {}),
        ([root, leaf, inter], ChainStatus.ISSUER_MISMATCH, {}),
        ([root, not_ca_inter, leaf], ChainStatus.BASIC_CONSTRAINTS, {}),
        ([root, inter, _leaf(dev0, ca=True)], ChainStatus.BASIC_CONSTRAINTS, {}),
        ([root, no_cert_sign_inter, leaf], ChainStatus.CA_LACKS_KEY_CERT_SIGN, {}),
        ([root, inter, _leaf(dev0, digital_signature=False)], ChainStatus.LEAF_LACKS_DIGITAL_SIGNATURE, {}),
        ([root, inter, _leaf(dev0, key_usage=False)], ChainStatus.LEAF_LACKS_DIGITAL_SIGNATURE, {}),
        ([root, inter, _leaf(dev0, not_before=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))],
         ChainStatus.NOT_YET_VALID, {}),
        ([root, inter, _leaf(dev0, not_after=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))], ChainStatus.EXPIRED, {}),
        (dev0.chain_der, ChainStatus.NOT_YET_VALID, {"at": dt.datetime(2023, 12, 31)}),
        (dev0.chain_der, ChainStatus.ALGORITHM_MISMATCH, {"asym_algo": BaseAsymAlgo.ECDSA_P256}),
        (dev0.chain_der, ChainStatus.ALGORITHM_MISMATCH, {"cert_hash_algo": BaseHashAlgo.SHA_256}),
        ([root, inter, _leaf(dev0, extended_key_usage=[OID_DMTF_EKU_REQUESTER_AUTH])],
         ChainStatus.LEAF_NOT_FOR_RESPONDER, {"responder": True}),
    ]
    for chain, status, extra in cases:
        kwargs: dict[str, object] = {"at": AT, **extra}
        result = verify_chain(chain, [root], **kwargs)  # type: ignore[arg-type]
        assert result.status is status, (status, result)
        assert not result.ok
    # a first certificate that claims the trusted root as issuer but was not signed by it
    fake_inter = issue_certificate(
        subject_cn="fake", public_key=forger.public_key(), issuer_key=forger, issuer=root,
        hash_algo=SHA384, serial=7, ca=True)
    assert verify_chain([fake_inter], [root], at=AT).status is ChainStatus.BAD_SIGNATURE


def test_responder_leaf_eku(dev0: Identity) -> None:
    """libspdm's rule for a responder's leaf: an EKU naming only requester authentication is refused; with
    responder authentication too, or for a requester's own chain, it is fine. SPDM containers (CERTIFICATE,
    a TSM's evidence) are responders' chains by default."""
    root, inter, _ = dev0.certificates
    requester_only = _leaf(dev0, extended_key_usage=[OID_DMTF_EKU_REQUESTER_AUTH])
    both = _leaf(dev0, extended_key_usage=[OID_DMTF_EKU_REQUESTER_AUTH, OID_DMTF_EKU_RESPONDER_AUTH])
    assert verify_chain([root, inter, both], [root], at=AT, responder=True).ok
    assert verify_chain([root, inter, requester_only], [root], at=AT).ok  # a requester's chain
    der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in (root, inter, requester_only))
    container = spdm_cert_chain(SHA384, split_der_certificates(der))
    result = verify_spdm_cert_chain(SHA384, container, [root], at=AT)
    assert result.status is ChainStatus.LEAF_NOT_FOR_RESPONDER and result.index == 2
    assert verify_spdm_cert_chain(SHA384, container, [root], at=AT, responder=False).ok


def test_spdm_container_root_hash_mismatch(dev0: Identity) -> None:
    container = bytearray(dev0.spdm_cert_chain())
    container[4] ^= 1
    result = verify_spdm_cert_chain(SHA384, bytes(container), [dev0.root], at=AT)
    assert result.status is ChainStatus.ROOT_HASH_MISMATCH
    assert verify_spdm_cert_chain(SHA384, bytes(container[:-3]), [dev0.root], at=AT).status is ChainStatus.MALFORMED


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_openssl_cli_agrees(tmp_path: Path, dev0: Identity) -> None:
    """An independent verifier accepts our chain at a fixed time and rejects a forged leaf."""
    root, inter, leaf = dev0.certificates
    forged = _leaf(dev0, issuer_key=generate_signing_key(P384, DeterministicRandom(b"evil", "k")))
    for name, cert in (("root", root), ("inter", inter), ("leaf", leaf), ("forged", forged)):
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def openssl_verify(target: str) -> int:
        args = ["openssl", "verify", "-attime", str(int(AT.timestamp())), "-CAfile", str(tmp_path / "root.pem"),
                "-untrusted", str(tmp_path / "inter.pem"), str(tmp_path / target)]
        return subprocess.run(args, capture_output=True, check=False).returncode

    assert openssl_verify("leaf.pem") == 0
    assert openssl_verify("forged.pem") != 0


def test_certificate_with_an_invalid_version_field_is_malformed_not_an_exception() -> None:
    """x509.InvalidVersion is not a ValueError: a tampered version byte must still be a typed result."""
    from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo
    from sim.crypto.identity import ChainStatus, build_identity, verify_chain

    ident = build_identity(5, "version-tamper", BaseAsymAlgo.ECDSA_P256, BaseHashAlgo.SHA_256)
    ders = ident.certificates_der
    leaf = bytearray(ders[-1])
    marker = leaf.find(bytes.fromhex("a003020102"))  # [0] EXPLICIT INTEGER 2 = v3
    assert marker > 0
    leaf[marker + 4] = 7  # no such X.509 version
    result = verify_chain([*ders[:-1], bytes(leaf)], [ders[0]], at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert result.status is ChainStatus.MALFORMED
