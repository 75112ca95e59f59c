"""SPDM key schedule (PROTOCOLS.md §4): the §8.3 vector row by row, BinConcat, PSK salts, reporting."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from sim.crypto.algorithms import AeadSuite, BaseHashAlgo
from sim.crypto.errors import CryptoError, UnsupportedAlgorithmError
from sim.crypto.hashes import hkdf_expand
from sim.crypto.key_schedule import (
    Direction,
    Phase,
    SecretSource,
    SessionKeySchedule,
    bin_concat,
    salt_0,
    verify_data,
    version_label,
)
from sim.crypto.secrets import SecretClass, SecretList

REQ, RSP = Direction.REQUEST, Direction.RESPONSE
SHARED = bytes(range(48))
TH1 = bytes(0xA0 + (i % 16) for i in range(48))
TH2 = bytes(0xB0 + (i % 16) for i in range(48))

VECTOR = {
    "handshake_secret": "360732e7447a7e51164ebc696c02061ead7f37c94691c4c830c8bb5ccc75ad69aa72ba3bc5d8112486c6d0c5c6b9e0be",
    "req_hs_secret": "426bd4773720dd2815704b03f4ec33e953748eac883ae4ffd4eb2f706b799dcbaeab4fd7a5a83586f2b27d6e80b255ad",
    "rsp_hs_secret": "d423bf9b55966a32681710ba65516532cae8fece00ef78321d55e0e821494cfedff4981aa75e45ea6b9a75870ccfb618",
    "req_finished": "bc08758a08ab28f979e6388799c366420236b197889eee89d2222eda403698130afe960f806c487f91e0f6e71d6643ee",
    "rsp_finished": "21ad7ba9aa657e2db6c6fac2335689b138d34618f9c81d538f7db1bdd92cd47cf2f431e3ed3a63af7599d29932767fe1",
    "req_hs_key": "fb11bfa3f8e1c0105ef1b1977e549ce90ea8c7ea93a7c98a4096dba1c4c10332",
    "req_hs_iv": "aa077e294e79f946dcd2f3dc",
    "rsp_hs_key": "81ad4bb7b520c2ecf27110e67e6a66a77e093702587f266acc833f124ab4b340",
    "rsp_hs_iv": "a100ec986e7c65ca46607031",
    "master_secret": "8640594d596156cff44e02500ff07a7fd5dd57435e8b6cf02472e2a95acc9160fa45a22a48c6b593e29084de1aba4982",
    "req_app_secret": "58fd0c95759ae6af648bca5c23a0c17c494d52e60f41146020f9d89af5d48ad4fb7129536bb0070390b31e13cecd7460",
    "rsp_app_secret": "c81e54be0c9907fc273da9707b65424ef812f42bbf1476727b1d0d32b7b8fb135ff5e9b1ca8c712eb515c245a03a9f0a",
    "export_master": "b2c482b38826ee8677708317e78300853e93038a25db8aeec51a2e149860dedd99bbafecb555a9afa876144ca39bdde3",
    "req_app_key": "99c24aec0de310cabcfe018518eb9be734fb413897397694b32f907a99a67e5d",
    "req_app_iv": "81e5d6ad3d893859d4f1438a",
    "rsp_app_key": "2ab87c44e0a001aa3beaa2e31765aab100c2872f765e98d74b7575d8f9f8c1d1",
    "rsp_app_iv": "f9b993b491703c5a348a033b",
    "req_app_upd": "e5764c3341debca4784023c9ea43097c1245cf9db3ad9fb006ba6b34eac41d82ce65636f86162c725472ae3a6e63400c",
    "rsp_app_upd": "2218d78c122aa70d8370b0fb0d5b2a9b02016731e20e5118d8f72f67188f5bc5a142f9f5aa694ba4cd777fbfd4d16eea",
}


def _schedule(sink: SecretList | None = None) -> SessionKeySchedule:
    ks = SessionKeySchedule(0x12, BaseHashAlgo.SHA_384, AeadSuite.AES_256_GCM, sink=sink, owner="dev0",
                            name="session 0xfffdfffe")
    ks.set_dhe_secret(SHARED)
    ks.derive_handshake(TH1)
    ks.derive_data(TH2)
    return ks


def test_spdm12_vector_every_row() -> None:
    ks = _schedule()
    got = {
        "handshake_secret": ks.handshake_secret,
        "req_hs_secret": ks.handshake_secret_of(REQ),
        "rsp_hs_secret": ks.handshake_secret_of(RSP),
        "req_finished": ks.finished_key(REQ),
        "rsp_finished": ks.finished_key(RSP),
        "req_hs_key": ks.keys(REQ, Phase.HANDSHAKE).key,
        "req_hs_iv": ks.keys(REQ, Phase.HANDSHAKE).salt,
        "rsp_hs_key": ks.keys(RSP, Phase.HANDSHAKE).key,
        "rsp_hs_iv": ks.keys(RSP, Phase.HANDSHAKE).salt,
        "master_secret": ks.master_secret,
        "req_app_secret": ks.app_secret(REQ),
        "rsp_app_secret": ks.app_secret(RSP),
        "export_master": ks.export_master_secret,
        "req_app_key": ks.keys(REQ, Phase.DATA).key,
        "req_app_iv": ks.keys(REQ, Phase.DATA).salt,
        "rsp_app_key": ks.keys(RSP, Phase.DATA).key,
        "rsp_app_iv": ks.keys(RSP, Phase.DATA).salt,
    }
    ks.update(REQ)
    ks.update(RSP)
    got["req_app_upd"] = ks.app_secret(REQ)
    got["rsp_app_upd"] = ks.app_secret(RSP)
    assert {k: v.hex() for k, v in got.items()} == VECTOR


def test_bin_concat_examples() -> None:
    assert bin_concat(0x12, 32, "key").hex() == "2000" "7370646d312e3220" "6b6579"
    assert bin_concat(0x12, 48, "req hs data", TH1) == bytes.fromhex(
        "3000" "7370646d312e3220" "7265712068732064617461") + TH1
    assert version_label(0x11) == b"spdm1.1 " and version_label(0x13) == b"spdm1.3 "
    with pytest.raises(UnsupportedAlgorithmError):
        version_label(0x10)


def test_updated_keys_rederive_from_new_secret() -> None:
    ks = _schedule()
    old = ks.keys(RSP, Phase.DATA)
    new = ks.update(RSP)
    assert new != old and ks.keys(RSP, Phase.DATA) == new
    new_secret = bytes.fromhex(VECTOR["rsp_app_upd"])
    assert new.key == hkdf_expand(BaseHashAlgo.SHA_384, new_secret, bin_concat(0x12, 32, "key"), 32)
    assert new.salt == hkdf_expand(BaseHashAlgo.SHA_384, new_secret, bin_concat(0x12, 12, "iv"), 12)
    assert ks.keys(REQ, Phase.DATA).key.hex() == VECTOR["req_app_key"]  # other direction untouched
    assert ks.rollback_update(RSP) == old and ks.app_secret(RSP).hex() == VECTOR["rsp_app_secret"]
    with pytest.raises(CryptoError):
        ks.rollback_update(RSP)
    ks.update(RSP)
    ks.commit_update(RSP)
    with pytest.raises(CryptoError):
        ks.rollback_update(RSP)


def test_verify_data_is_hmac_over_the_digest() -> None:
    ks = _schedule()
    th = hashlib.sha384(b"transcript up to FINISH").digest()
    expected = hmac.new(ks.finished_key(REQ), th, hashlib.sha384).digest()
    assert verify_data(BaseHashAlgo.SHA_384, ks.finished_key(REQ), th) == expected
    assert ks.verify_data(REQ, th) == expected
    assert ks.verify_data(RSP, th) != expected


@pytest.mark.parametrize(("version", "fill"), [(0x11, 0x00), (0x12, 0x00), (0x13, 0xFF)])
def test_psk_salt_0(version: int, fill: int) -> None:
    psk = b"TestPskData"
    ks = SessionKeySchedule(version, BaseHashAlgo.SHA_256, AeadSuite.AES_128_GCM)
    ks.set_psk(psk)
    assert ks.source is SecretSource.PSK
    assert ks.handshake_secret == hmac.new(bytes([fill]) * 32, psk, hashlib.sha256).digest()
    assert salt_0(version, BaseHashAlgo.SHA_256, SecretSource.DHE) == bytes(32)
    ks.derive_handshake(bytes(32))
    assert len(ks.keys(REQ, Phase.HANDSHAKE).key) == 16  # AES-128 key length flows into BinConcat


def test_order_and_size_errors() -> None:
    ks = SessionKeySchedule(0x12, BaseHashAlgo.SHA_384, AeadSuite.AES_256_GCM)
    with pytest.raises(CryptoError):
        ks.derive_handshake(TH1)
    ks.set_dhe_secret(SHARED)
    with pytest.raises(CryptoError):
        ks.set_dhe_secret(SHARED)
    with pytest.raises(CryptoError):
        ks.derive_handshake(TH1[:32])
    with pytest.raises(CryptoError):
        ks.keys(REQ, Phase.DATA)
    with pytest.raises(CryptoError):
        ks.update(REQ)
    with pytest.raises(UnsupportedAlgorithmError):
        SessionKeySchedule(0x10, BaseHashAlgo.SHA_384, AeadSuite.AES_256_GCM)


def test_sink_receives_every_secret() -> None:
    sink = SecretList()
    ks = _schedule(sink)
    ks.update(REQ)
    values = {r.label: r for r in sink.records}
    assert all(r.owner == "dev0" and r.label.startswith("session 0xfffdfffe ") for r in sink.records)
    assert values["session 0xfffdfffe dhe shared secret"].secret_class is SecretClass.DHE_SHARED_SECRET
    assert values["session 0xfffdfffe dhe shared secret"].value == SHARED
    session_secrets = {r.value for r in sink.by_class(SecretClass.SPDM_SESSION_SECRET)}
    for name in ("handshake_secret", "req_hs_secret", "rsp_hs_secret", "req_finished", "rsp_finished",
                 "master_secret", "req_app_secret", "rsp_app_secret", "export_master", "req_app_upd"):
        assert bytes.fromhex(VECTOR[name]) in session_secrets, name
    session_keys = {r.value for r in sink.by_class(SecretClass.SPDM_SESSION_KEY)}
    for name in ("req_hs_key", "req_hs_iv", "rsp_hs_key", "rsp_hs_iv", "req_app_key", "req_app_iv",
                 "rsp_app_key", "rsp_app_iv"):
        assert bytes.fromhex(VECTOR[name]) in session_keys, name
    assert ks.keys(REQ, Phase.DATA).key in session_keys  # the post-update key too
    # HS + 2×(hs secret, finished key) + Salt_1 + master + 2 app + export master + 1 update = 11
    assert len(sink.by_class(SecretClass.SPDM_SESSION_SECRET)) == 11
    assert len(sink.by_class(SecretClass.SPDM_SESSION_KEY)) == 10  # 2 dirs × 2 phases × (key, iv) + update
