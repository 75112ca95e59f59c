"""Exposure tracker: who saw which secret, found by scanning real payloads in every byte order."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.crypto.secrets import SecretClass, SecretRecord
from sim.engine.exposure import Exposure, ExposureTracker, byte_variants
from sim.engine.trace import Channel
from sim.engine.world import World
from sim.wire.ide_km import Direction, KeyProg, KeySet, SubStream
from sim.wire.pcisig import encode_pcisig_payload

KEY = bytes.fromhex("df254152056e02e0ef8b7feb9739d4d96a4eb80103241df7cd5e24b49ccd2720")  # TEEIO example key (§6.3)
IFV = bytes.fromhex("0000000000000001")


def _world_with_parties() -> World:
    w = World(11)
    for path in ("firmware.tsm", "host", "vmm", "guest", "rp0", "rp0.dev0"):
        w.register(path, object())
    return w


def test_byte_variants() -> None:
    v = byte_variants(bytes(range(8)))
    assert v == (bytes(range(8)), bytes(range(7, -1, -1)), bytes([3, 2, 1, 0, 7, 6, 5, 4]))
    assert byte_variants(b"abcde") == (b"abcde", b"edcba")  # no DW variant for a partial DW


def test_ide_km_key_prog_dw_order_is_recognised() -> None:
    """The KEY_PROG wire order (§6.3: each DW of key and IFV byte-reversed) still counts as plaintext."""
    w = _world_with_parties()
    w.exposure.register(SecretRecord("ide s1 K0 TX PR", SecretClass.IDE_KEY, "firmware.tsm", KEY + IFV))
    msg = KeyProg(stream_id=1, key_set=KeySet.K0, direction=Direction.TX, sub_stream=SubStream.PR, port_index=0,
                  key=KEY, ifv=IFV)
    wire = encode_pcisig_payload(msg)
    assert KEY not in wire and KEY[::-1] not in wire  # really reordered on the wire
    assert bytes.fromhex("524125dfe0026e05") in wire  # PROTOCOLS.md §6.3 worked example bytes
    w.trace.emit("firmware.tsm", "host", Channel.DOE, wire, "KEY_PROG in the clear (pre-session, for the test)")
    assert w.exposure.exposure("ide s1 K0 TX PR", "host") is Exposure.SAW_PLAINTEXT
    assert w.exposure.exposure("ide s1 K0 TX PR", "firmware.tsm") is Exposure.GENERATED
    assert w.exposure.exposure("ide s1 K0 TX PR", "guest") is Exposure.NEVER


def test_byte_reversed_variant_is_recognised() -> None:
    w = _world_with_parties()
    w.exposure.register(SecretRecord("dhe priv", SecretClass.DHE_PRIVATE, "rp0.dev0", KEY))
    w.trace.emit("rp0.dev0", "host", Channel.DOE, b"\x00" * 5 + KEY[::-1] + b"\x01")
    assert w.exposure.exposure("dhe priv", "host") is Exposure.SAW_PLAINTEXT


def test_ciphertext_only_via_secured_record_and_explicit_api() -> None:
    w = _world_with_parties()
    w.exposure.register(SecretRecord("ide key", SecretClass.IDE_KEY, "guest", KEY))
    w.exposure.register(SecretRecord("nonce", SecretClass.TDISP_NONCE, "rp0.dev0", bytes(range(32))))
    record = bytes(range(200, 250))  # what a secured record looks like on the wire: no secret inside
    w.trace.emit("guest", "vmm", Channel.DOE, record, "secured", secured_plaintext=b"hdr" + KEY + b"tail")
    w.trace.emit("vmm", "host", Channel.DOE, record, "secured", secured_plaintext=b"hdr" + KEY + b"tail")
    assert w.exposure.exposure("ide key", "vmm") is Exposure.SAW_CIPHERTEXT_ONLY
    assert w.exposure.exposure("ide key", "host") is Exposure.SAW_CIPHERTEXT_ONLY
    assert w.exposure.exposure("ide key", "guest") is Exposure.GENERATED  # never downgraded
    w.exposure.observe_ciphertext("rp0", "nonce")
    assert w.exposure.exposure("nonce", "rp0") is Exposure.SAW_CIPHERTEXT_ONLY
    # a later plaintext sighting upgrades, a later ciphertext sighting does not downgrade
    w.exposure.observe_stored("vmm", b"..." + KEY)
    w.trace.emit("guest", "vmm", Channel.DOE, record, secured_plaintext=KEY)
    assert w.exposure.exposure("ide key", "vmm") is Exposure.SAW_PLAINTEXT
    with pytest.raises(KeyError):
        w.exposure.observe_ciphertext("rp0", "no such label")


def test_matrix_per_class_and_component_with_stable_json() -> None:
    def run() -> str:
        w = _world_with_parties()
        w.exposure.register(SecretRecord("k1", SecretClass.IDE_KEY, "firmware.tsm", KEY))
        w.exposure.register(SecretRecord("k2", SecretClass.IDE_KEY, "firmware.tsm", KEY[::-1] + b"\x77" * 4))
        w.exposure.register(SecretRecord("s1", SecretClass.SPDM_SESSION_KEY, "rp0.dev0", bytes(range(16, 48))))
        w.trace.emit("firmware.tsm", "rp0", Channel.KEY_SLOT, KEY)
        w.trace.emit("host", "rp0.dev0", Channel.DOE, b"x" * 40, secured_plaintext=bytes(range(16, 48)))
        m = w.exposure.matrix()
        assert m.get(SecretClass.IDE_KEY, "rp0") is Exposure.SAW_PLAINTEXT
        assert m.get(SecretClass.IDE_KEY, "firmware.tsm") is Exposure.GENERATED
        assert m.get(SecretClass.IDE_KEY, "vmm") is Exposure.NEVER
        assert m.get(SecretClass.SPDM_SESSION_KEY, "host") is Exposure.SAW_CIPHERTEXT_ONLY
        assert m.get(SecretClass.SPDM_SESSION_KEY, "rp0.dev0") is Exposure.GENERATED
        data = m.to_json()
        assert data["components"] == sorted(data["components"])  # type: ignore[arg-type]
        assert data["secret_classes"] == [c.value for c in SecretClass]
        assert data["matrix"]["ide-key"]["guest"] == "NEVER"  # type: ignore[index]
        assert data["secret_counts"]["ide-key"] == 2  # type: ignore[index]
        per = w.exposure.per_secret()
        assert per[0]["seen"] == {"firmware.tsm": "GENERATED", "rp0": "SAW_PLAINTEXT"}
        assert all("value" not in p for p in per)
        return m.to_json_text()

    first = run()
    assert first == run()
    assert json.loads(first)["matrix"]["spdm-session-key"]["host"] == "SAW_CIPHERTEXT_ONLY"


def test_short_secrets_are_not_substring_scanned() -> None:
    t = ExposureTracker()
    t.register(SecretRecord("tiny", SecretClass.PSK, "host", b"\x01\x02\x03"))
    assert t.observe_payload(["x"], b"\x00\x01\x02\x03\x04" * 4) == []
    t.observe_ciphertext("x", "tiny")
    assert t.exposure("tiny", "x") is Exposure.SAW_CIPHERTEXT_ONLY


@settings(max_examples=80, deadline=None)
@given(secrets=st.lists(st.binary(min_size=8, max_size=48), min_size=1, max_size=40, unique=True),
       picks=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 2)), max_size=6),
       filler=st.binary(max_size=64))
def test_window_index_agrees_with_direct_search(secrets: list[bytes], picks: list[tuple[int, int]],
                                                 filler: bytes) -> None:
    """Whatever the number of secrets (and so the search strategy), find() reports exactly the
    secrets one of whose variants occurs in the payload."""
    t = ExposureTracker()
    for i, s in enumerate(secrets):
        t.register(SecretRecord(f"s{i}", SecretClass.IDE_KEY, "owner", s))
    payload = bytearray(filler)
    for idx, variant in picks:
        v = byte_variants(secrets[idx % len(secrets)])
        payload += v[variant % len(v)] + filler[:3]
    found = {r.label for r in t.find(bytes(payload))}
    expected = {f"s{i}" for i, s in enumerate(secrets) if any(v in payload for v in byte_variants(s))}
    assert found == expected
