"""DSP0277 record framing: libspdm KATs end to end with AES-GCM (PROTOCOLS.md §8.2), DOE binding rules, fuzz."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.wire.codec import DecodeError, EncodeError
from sim.wire.doe import DoeObject, DoeObjectType
from sim.wire.secured import (
    LIBSPDM_TEST_FRAMING,
    MCTP_FRAMING,
    PCI_DOE_FRAMING,
    MacOnlyRecord,
    SecuredFraming,
    SecuredPlaintext,
    SecuredRecord,
    SeqNumSize,
    req_session_id,
    rsp_session_id,
    session_id,
    summarize,
)

KEY = bytes(range(32))
SALT = bytes(2 * i for i in range(12))
SID = 0x00112233
APP = bytes(range(16))

KATS = [
    (0, "33221100 0000000000000000 2200", "9bfed3b7043d3286603d861733d67f959a20", "3d4fac58cb706cf5a0270af673f0fe36"),
    (0xAA55AA55AA55AA55, "33221100 55aa55aa55aa55aa 2200", "0dea75eac691374994975263f8c08f6c1aa4",
     "0dcdb48ad6fa240479d5d8d2fe281914"),
]


def iv_for(seq: int) -> bytes:
    """§5.2: the sequence number, 8 bytes LE, XORed into IV bytes 0..7."""
    seq_le = seq.to_bytes(8, "little") + bytes(4)
    return bytes(a ^ b for a, b in zip(SALT, seq_le, strict=True))


def only_decode_error(decoder: Callable[[bytes], Any], data: bytes) -> None:
    try:
        decoder(data)
    except DecodeError:
        pass


# ------------------------------------------------------------------ §8.2 known answers, end to end


@pytest.mark.parametrize(("seq", "aad_hex", "ct_hex", "mac_hex"), KATS)
def test_libspdm_record_kat_seal(seq: int, aad_hex: str, ct_hex: str, mac_hex: str) -> None:
    plaintext = SecuredPlaintext(APP).encode()
    assert plaintext == b"\x10\x00" + APP
    # Frame first with a placeholder: the AAD depends only on the header, which needs the ciphertext length.
    draft = SecuredRecord(SID, bytes(len(plaintext)), bytes(16), seq, SeqNumSize.EIGHT)
    assert draft.aad() == bytes.fromhex(aad_hex)
    sealed = AESGCM(KEY).encrypt(iv_for(seq), plaintext, draft.aad())
    record = SecuredRecord(SID, sealed[:-16], sealed[-16:], seq, SeqNumSize.EIGHT)
    assert record.ciphertext == bytes.fromhex(ct_hex)
    assert record.mac == bytes.fromhex(mac_hex)
    assert record.length == 0x22
    assert record.encode() == bytes.fromhex(aad_hex + ct_hex + mac_hex)


@pytest.mark.parametrize(("seq", "aad_hex", "ct_hex", "mac_hex"), KATS)
def test_libspdm_record_kat_open(seq: int, aad_hex: str, ct_hex: str, mac_hex: str) -> None:
    wire = bytes.fromhex(aad_hex + ct_hex + mac_hex)
    record = SecuredRecord.decode(wire, LIBSPDM_TEST_FRAMING)
    assert record.session_id == SID and record.seq_num == seq and record.seq_num_size == 8
    opened = AESGCM(KEY).decrypt(iv_for(record.seq_num), record.ciphertext + record.mac, record.aad())
    inner = SecuredPlaintext.decode(opened)
    assert inner.app_data == APP and inner.random_data == b""
    # a flipped AAD bit (here: the length) must break authentication
    bad = bytearray(record.aad())
    bad[-2] ^= 1
    with pytest.raises(InvalidTag):
        AESGCM(KEY).decrypt(iv_for(seq), record.ciphertext + record.mac, bytes(bad))


def test_kat_header_cannot_be_read_with_the_wrong_binding() -> None:
    wire = bytes.fromhex("".join(KATS[0][1:]).replace(" ", ""))
    # As a DOE record the 8 zero sequence bytes are read as Length 0 -> below the minimum.
    with pytest.raises(DecodeError) as err:
        SecuredRecord.decode(wire)
    assert err.value.field == "length"


# ------------------------------------------------------------------ PCIe DOE binding


def test_doe_record_layout_and_interop_end_session_shape() -> None:
    # INTEROP.md: an END_SESSION record over DOE is 9 DW: 01 00 02 00 09 00 00 00 | ff ff ff ff | 16 00 | ...
    record = SecuredRecord(0xFFFFFFFF, bytes(2 + 4), bytes(range(16)))
    assert record.length == 0x16
    obj = DoeObject.pcisig(DoeObjectType.SECURED_SPDM, record.encode())
    wire = obj.encode()
    assert wire[:14] == bytes.fromhex("01 00 02 00 09 00 00 00 ff ff ff ff 16 00")
    assert len(wire) == 9 * 4
    assert SecuredRecord.decode(DoeObject.decode(wire).payload) == record
    assert record.aad() == bytes.fromhex("ffffffff1600")


@pytest.mark.parametrize("pad", [1, 2, 3])
def test_doe_padding_after_record_is_accepted(pad: int) -> None:
    record = SecuredRecord(session_id(1, 2), b"\x03\x00abc", bytes(16))
    assert len(record.encode()) % 4 == 3
    assert SecuredRecord.decode(record.encode() + bytes(pad)) == record


def test_doe_padded_object_roundtrip() -> None:
    record = SecuredRecord(session_id(0xFFFE, 0xFFFD), b"\x05\x00hello", bytes(range(16)))
    payload = DoeObject.decode(DoeObject.pcisig(DoeObjectType.SECURED_SPDM, record.encode()).encode()).payload
    assert len(payload) > len(record.encode())
    assert SecuredRecord.decode(payload) == record


def test_more_than_a_dw_of_padding_is_refused() -> None:
    record = SecuredRecord(7, b"\x00\x00", bytes(16))
    with pytest.raises(DecodeError) as err:
        SecuredRecord.decode(record.encode() + bytes(4))
    assert err.value.field == "length"
    assert SecuredRecord.decode(record.encode() + bytes(4), allow_trailing=True) == record


def test_length_smaller_than_minimum() -> None:
    wire = (7).to_bytes(4, "little") + (17).to_bytes(2, "little") + bytes(17)
    with pytest.raises(DecodeError) as err:
        SecuredRecord.decode(wire)
    assert (err.value.field, err.value.offset) == ("length", 4)
    # the MAC-only form only needs the MAC
    assert MacOnlyRecord.decode((7).to_bytes(4, "little") + (16).to_bytes(2, "little") + bytes(16)).app_data == b""


def test_length_larger_than_data() -> None:
    wire = (7).to_bytes(4, "little") + (40).to_bytes(2, "little") + bytes(30)
    with pytest.raises(DecodeError) as err:
        SecuredRecord.decode(wire)
    assert err.value.field in ("ciphertext", "mac")


def test_session_id_helpers() -> None:
    sid = session_id(0x1234, 0xABCD)
    assert sid == 0xABCD1234
    assert (req_session_id(sid), rsp_session_id(sid)) == (0x1234, 0xABCD)
    # on the wire the requester's half comes first (§9.3)
    assert SecuredRecord(sid, b"\x00\x00", bytes(16)).encode()[:4] == bytes.fromhex("3412cdab")
    with pytest.raises(ValueError):
        session_id(0x10000, 0)


def test_sequence_number_must_fit_the_binding() -> None:
    with pytest.raises(EncodeError):
        SecuredRecord(1, b"\x00\x00", bytes(16), seq_num=1).encode()  # DOE carries no sequence number
    with pytest.raises(EncodeError):
        SecuredRecord(1, b"\x00\x00", bytes(16), seq_num=0x10000, seq_num_size=SeqNumSize.MCTP).encode()
    built = SecuredRecord.build(1, b"\x00\x00", bytes(16), sequence=0x123456, framing=MCTP_FRAMING)
    assert built.seq_num == 0x3456
    assert built.aad() == bytes.fromhex("01000000 5634 1200".replace(" ", ""))
    assert SecuredRecord.build(1, b"\x00\x00", bytes(16), sequence=99).seq_num == 0


def test_mac_only_record_with_aead() -> None:
    app = bytes.fromhex("12 e8 00 00")  # a HEARTBEAT in the clear, authenticated only
    draft = MacOnlyRecord(SID, app, bytes(16))
    assert draft.header() == bytes.fromhex("33221100 1400".replace(" ", ""))
    assert draft.aad() == draft.header() + app
    tag = AESGCM(KEY).encrypt(iv_for(0), b"", draft.aad())
    record = MacOnlyRecord(SID, app, tag)
    back = MacOnlyRecord.decode(record.encode() + bytes(2))
    assert back == record
    assert AESGCM(KEY).decrypt(iv_for(0), back.mac, back.aad()) == b""
    tampered = MacOnlyRecord.decode(record.encode()[:6] + b"\x13" + record.encode()[7:])
    with pytest.raises(InvalidTag):
        AESGCM(KEY).decrypt(iv_for(0), tampered.mac, tampered.aad())


def test_plaintext_with_random_padding() -> None:
    pt = SecuredPlaintext(b"\x12\x6c\x00\x00", b"\xaa" * 5)
    assert pt.encode() == b"\x04\x00\x12\x6c\x00\x00" + b"\xaa" * 5
    assert SecuredPlaintext.decode(pt.encode()) == pt
    with pytest.raises(DecodeError) as err:
        SecuredPlaintext.decode(b"\x09\x00abc")
    assert err.value.field == "app_data"


def test_summaries() -> None:
    assert summarize(SecuredRecord(0xFFFFFFFF, bytes(6), bytes(16))) == "SECURED sid=0xffffffff len=22"
    assert summarize(SecuredRecord(1, bytes(2), bytes(16), 5, SeqNumSize.MCTP)) == "SECURED sid=0x00000001 seq=5 len=18"
    assert summarize(MacOnlyRecord(2, b"ab", bytes(16))) == "SECURED-MAC sid=0x00000002 len=18"
    assert summarize(SecuredPlaintext(b"xyz")) == "SECURED-PLAIN app=3B random=0B"


# ------------------------------------------------------------------ property tests

FRAMINGS = st.sampled_from([PCI_DOE_FRAMING, MCTP_FRAMING, LIBSPDM_TEST_FRAMING])
u32s = st.integers(0, 0xFFFFFFFF)


@settings(max_examples=150)
@given(framing=FRAMINGS, sid=u32s, seq=st.integers(0, (1 << 64) - 1), ct=st.binary(min_size=2, max_size=200),
       mac=st.binary(min_size=16, max_size=16))
def test_roundtrip_encrypted_record(framing: SecuredFraming, sid: int, seq: int, ct: bytes, mac: bytes) -> None:
    record = SecuredRecord.build(sid, ct, mac, sequence=seq, framing=framing)
    wire = record.encode()
    assert SecuredRecord.decode(wire, framing) == record
    assert wire.startswith(record.aad()) and len(record.aad()) == 6 + framing.seq_num_size
    assert int.from_bytes(record.aad()[-2:], "little") == len(wire) - len(record.aad())


@settings(max_examples=100)
@given(framing=FRAMINGS, sid=u32s, seq=st.integers(0, (1 << 64) - 1), app=st.binary(max_size=200),
       mac=st.binary(min_size=16, max_size=16))
def test_roundtrip_mac_only_record(framing: SecuredFraming, sid: int, seq: int, app: bytes, mac: bytes) -> None:
    size = framing.seq_num_size
    record = MacOnlyRecord(sid, app, mac, seq & ((1 << (8 * size)) - 1), SeqNumSize(size))
    assert MacOnlyRecord.decode(record.encode(), framing) == record


@settings(max_examples=100)
@given(app=st.binary(max_size=300), rnd=st.binary(max_size=32))
def test_roundtrip_plaintext(app: bytes, rnd: bytes) -> None:
    pt = SecuredPlaintext(app, rnd)
    assert SecuredPlaintext.decode(pt.encode()) == pt


# ------------------------------------------------------------------ fuzz


def _decoders() -> list[Callable[[bytes], Any]]:
    out: list[Callable[[bytes], Any]] = [SecuredPlaintext.decode]
    for framing in (PCI_DOE_FRAMING, MCTP_FRAMING, LIBSPDM_TEST_FRAMING):
        out.append(lambda d, f=framing: SecuredRecord.decode(d, f))
        out.append(lambda d, f=framing: MacOnlyRecord.decode(d, f))
    return out


@settings(max_examples=200)
@given(data=st.binary(max_size=80))
def test_fuzz_random_bytes(data: bytes) -> None:
    for decoder in _decoders():
        only_decode_error(decoder, data)


@settings(max_examples=100)
@given(ct=st.binary(min_size=2, max_size=64), cut=st.integers(0, 200))
def test_fuzz_truncations(ct: bytes, cut: int) -> None:
    wire = SecuredRecord(5, ct, bytes(16)).encode()
    cut %= len(wire)
    with pytest.raises(DecodeError):
        SecuredRecord.decode(wire[:cut])
    for decoder in _decoders():
        only_decode_error(decoder, wire[:cut])


def test_unknown_sequence_number_size_is_refused() -> None:
    with pytest.raises(EncodeError):
        SecuredRecord(1, b"\x00\x00", bytes(16), 0, 3).encode()  # type: ignore[arg-type]
