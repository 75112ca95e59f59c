"""TLP headers and IDE TLP framing: hand-assembled header bytes, AES-GCM-256 with a 96-bit MAC, round trips, fuzz."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.wire.codec import DecodeError
from sim.wire.ide_km import KeySet, SubStream
from sim.wire.tlp import (
    IDE_MAC_BYTES,
    IDE_PREFIX_BYTE,
    AddressType,
    CompletionHeader,
    CplStatus,
    IdePrefix,
    IdeTlp,
    MemRequestHeader,
    Tlp,
    TlpAttr,
    TlpFmt,
    TlpType,
    decode_tlp,
    decode_tlp_header,
    ide_iv,
    invocation_from_ifv,
    summarize,
)


def only_decode_error(decoder: Callable[[bytes], Any], data: bytes) -> None:
    try:
        decoder(data)
    except DecodeError:
        pass


# ------------------------------------------------------------------ header bytes assembled by hand


def test_mrd_3dw() -> None:
    hdr = MemRequestHeader.read(0x0100, 0x01, 0xFEDC_BA98)
    assert hdr.fmt is TlpFmt.NO_DATA_3DW and hdr.last_be == 0
    assert hdr.encode() == bytes.fromhex("00000001 0100010f fedcba98".replace(" ", ""))
    assert decode_tlp_header(hdr.encode()) == hdr
    assert Tlp(hdr).encode() == hdr.encode()  # a read carries no data


def test_mwr_4dw_with_data() -> None:
    hdr = MemRequestHeader.write(0x0008, 0x20, 0x1_2345_6780, 2)
    assert hdr.fmt is TlpFmt.DATA_4DW
    tlp = Tlp(hdr, bytes(range(8)))
    assert tlp.encode() == bytes.fromhex("60000002 000820ff 00000001 23456780 0001020304050607".replace(" ", ""))
    assert decode_tlp(tlp.encode()) == tlp


def test_length_1024_is_encoded_as_zero() -> None:
    hdr = MemRequestHeader.read(0x0100, 0, 0x1000, 1024)
    assert hdr.encode()[:4] == bytes(4)
    assert decode_tlp_header(hdr.encode()).length_dw == 1024
    with pytest.raises(ValueError):
        MemRequestHeader.read(0x0100, 0, 0x1000, 1025)


def test_dw0_bit_positions() -> None:
    hdr = MemRequestHeader.read(0x0100, 0x3FF, 0x1000, 1, tc=7, ep=1,
                                attr=TlpAttr.NO_SNOOP | TlpAttr.RELAXED_ORDERING | TlpAttr.ID_BASED_ORDERING)
    wire = hdr.encode()
    # byte 1: T9 (0x80) | TC=7 (0x70) | T8 (0x08) | Attr[2] (0x04); byte 2: EP (0x40) | Attr[1:0] (0x30)
    assert wire[:4] == bytes([0x00, 0xFC, 0x70, 0x01])
    assert wire[6] == 0xFF  # tag bits 7:0
    back = decode_tlp_header(wire)
    assert back == hdr and back.tag == 0x3FF and back.attr == TlpAttr(7)
    translated = MemRequestHeader.read(0x0100, 0, 0x1000, at=AddressType.TRANSLATED, th=1, ph=2)
    assert translated.encode()[1:3] == bytes([0x01, 0x08]) and translated.encode()[11] == 0x02


def test_completions() -> None:
    cpld = CompletionHeader.with_data(0x0200, 0x0100, 0x2C, 1, byte_count=4096, lower_address=0x40)
    assert cpld.encode() == bytes.fromhex("4a000001 02000000 01002c40".replace(" ", ""))
    assert decode_tlp_header(cpld.encode()).byte_count == 4096
    ur = CompletionHeader.without_data(0x0200, 0x0100, 5, CplStatus.UR)
    assert ur.encode() == bytes.fromhex("0a000001 02002004 01000500".replace(" ", ""))
    assert decode_tlp(Tlp(ur).encode()) == Tlp(ur)
    locked = CompletionHeader(TlpFmt.DATA_3DW, TlpType.CPL_LOCKED, 1, 2, 3)
    assert decode_tlp_header(locked.encode()) == locked


def test_ecrc_is_carried_opaquely() -> None:
    hdr = MemRequestHeader.write(0x0100, 1, 0x2000, 1, td=1)
    tlp = Tlp(hdr, b"abcd", b"\x11\x22\x33\x44")
    assert tlp.encode()[-4:] == b"\x11\x22\x33\x44" and tlp.encode()[2] & 0x80
    assert decode_tlp(tlp.encode()) == tlp
    with pytest.raises(ValueError):
        Tlp(hdr, b"abcd")


def test_validation() -> None:
    with pytest.raises(ValueError):
        MemRequestHeader(TlpFmt.NO_DATA_3DW, TlpType.MEM, 0, 0, 1 << 32)  # 3DW cannot reach 4 GiB
    with pytest.raises(ValueError):
        MemRequestHeader.read(0, 0, 0x1002)  # not DW aligned
    with pytest.raises(ValueError):
        MemRequestHeader(TlpFmt.DATA_3DW, TlpType.MEM_LOCKED, 0, 0, 0)
    with pytest.raises(ValueError):
        CompletionHeader(TlpFmt.DATA_4DW, TlpType.CPL, 0, 0, 0)
    with pytest.raises(ValueError):
        Tlp(MemRequestHeader.write(0, 0, 0, 2), bytes(4))
    # a 4DW header below 4 GiB is kept as sent
    low4 = MemRequestHeader(TlpFmt.NO_DATA_4DW, TlpType.MEM, 0x0100, 0, 0x1000)
    assert len(low4.encode()) == 16 and decode_tlp_header(low4.encode()) == low4


def test_decode_errors() -> None:
    cfg_read = bytes.fromhex("04000001 0100000f 01000010")
    with pytest.raises(DecodeError) as err:
        decode_tlp(cfg_read)
    assert err.value.field == "header.dw0"
    with pytest.raises(DecodeError) as err:
        decode_tlp_header(bytes.fromhex("e0000001 0100000f 01000010"))  # fmt 111 is reserved
    assert err.value.field == "fmt"
    with pytest.raises(DecodeError) as err:
        decode_tlp_header(bytes.fromhex("92000100 0000000f 01000010"))  # a prefix where the header belongs
    assert err.value.field == "dw0"
    with pytest.raises(DecodeError):
        decode_tlp(b"")
    with pytest.raises(DecodeError) as err:
        decode_tlp(bytes.fromhex("00000001 0000000f 00000c00") + b"x")
    assert err.value.field == "(end)"
    with pytest.raises(DecodeError) as err:
        decode_tlp_header(bytes.fromhex("00000c01 0000000f 00000c00"))  # AT = 11b is reserved
    assert err.value.field == "at"
    with pytest.raises(DecodeError):
        decode_tlp(bytes.fromhex("40000002 0100000f 00001000 00000000"))  # MWr missing one data DW


# ------------------------------------------------------------------ IDE


def test_ide_prefix_bytes() -> None:
    prefix = IdePrefix(stream_id=0x17, sub_stream=SubStream.NPR, key_set=KeySet.K1, pr_sent_counter=3)
    assert prefix.encode() == bytes([IDE_PREFIX_BYTE, 3, 0x17, 0x10 | 0x04 | 0x02 | 0x01])
    assert IdePrefix.decode(prefix.encode()) == prefix
    bare = IdePrefix(1, SubStream.CPL, mac_present=0, tee=0, pcrc=1)
    assert bare.encode()[3] == 0x28
    with pytest.raises(DecodeError) as err:
        IdePrefix.decode(bytes([0x92, 0, 1, 0x30]))
    assert err.value.field == "sub_stream"
    with pytest.raises(DecodeError) as err:
        IdePrefix.decode(bytes([0x91, 0, 1, 0x00]))
    assert err.value.field == "prefix_type"


def test_iv_from_ifv() -> None:
    ifv = bytes.fromhex("0000000000000001")  # spdm-emu's initial invocation field (§6.3)
    assert invocation_from_ifv(ifv) == 1
    assert ide_iv(1) == bytes.fromhex("00000000 0000000000000001".replace(" ", ""))
    assert ide_iv(2, fixed=0x80000000)[:4] == b"\x80\x00\x00\x00"
    with pytest.raises(ValueError):
        ide_iv(1 << 64)


def _seal(key: bytes, invocation: int, header: MemRequestHeader | CompletionHeader, payload: bytes) -> IdeTlp:
    prefix = IdePrefix(stream_id=1, sub_stream=SubStream.PR)
    draft = IdeTlp(prefix, header, bytes(len(payload)), bytes(IDE_MAC_BYTES))
    sealed = AESGCM(key).encrypt(ide_iv(invocation), payload, draft.header_bytes())
    return IdeTlp(prefix, header, sealed[:-16], sealed[-16:][:IDE_MAC_BYTES])  # a GCM tag truncated to 96 bits


def _open(key: bytes, invocation: int, tlp: IdeTlp) -> bytes:
    assert tlp.mac is not None
    dec = Cipher(algorithms.AES(key), modes.GCM(ide_iv(invocation), tlp.mac, min_tag_length=IDE_MAC_BYTES)).decryptor()
    dec.authenticate_additional_data(tlp.header_bytes())
    return dec.update(tlp.ciphertext) + dec.finalize()


def test_ide_tlp_aes_gcm_96_bit_mac() -> None:
    key = bytes(range(0x80, 0xA0))
    payload = b"secret DMA data!" * 2
    hdr = MemRequestHeader.write(0x0100, 9, 0x8000_0000, len(payload) // 4)
    tlp = _seal(key, 1, hdr, payload)
    wire = tlp.encode()
    assert wire[0] == IDE_PREFIX_BYTE and len(wire) == 4 + 12 + len(payload) + IDE_MAC_BYTES
    assert payload not in wire and hdr.encode() in wire
    back = decode_tlp(wire)
    assert isinstance(back, IdeTlp) and back == tlp
    assert _open(key, 1, back) == payload
    with pytest.raises(InvalidTag):
        _open(key, 2, back)  # wrong invocation counter
    flipped = bytearray(wire)
    flipped[4 + 11] ^= 0x04  # one address bit in the header (AAD)
    with pytest.raises(InvalidTag):
        _open(key, 1, IdeTlp.decode(bytes(flipped)))


def test_ide_tlp_read_has_mac_but_no_payload() -> None:
    key = bytes(32)
    hdr = MemRequestHeader.read(0x0100, 1, 0x1000, 4)
    tlp = _seal(key, 7, hdr, b"")
    assert len(tlp.encode()) == 4 + 12 + IDE_MAC_BYTES
    assert _open(key, 7, IdeTlp.decode(tlp.encode())) == b""


def test_ide_tlp_mac_and_pcrc_flags() -> None:
    hdr = MemRequestHeader.write(0x0100, 1, 0x1000, 1)
    no_mac = IdeTlp(IdePrefix(1, SubStream.PR, mac_present=0), hdr, bytes(4))
    assert len(no_mac.encode()) == 4 + 12 + 4 and IdeTlp.decode(no_mac.encode()) == no_mac
    with_pcrc = IdeTlp(IdePrefix(1, SubStream.PR, pcrc=1), hdr, bytes(8), bytes(12))
    assert IdeTlp.decode(with_pcrc.encode()) == with_pcrc
    with pytest.raises(ValueError):
        IdeTlp(IdePrefix(1, SubStream.PR), hdr, bytes(4))  # M set, MAC missing
    with pytest.raises(ValueError):
        IdeTlp(IdePrefix(1, SubStream.PR, mac_present=0), hdr, bytes(4), bytes(12))
    with pytest.raises(ValueError):
        IdeTlp(IdePrefix(1, SubStream.PR), hdr, bytes(5), bytes(12))


def test_summaries() -> None:
    hdr = MemRequestHeader.write(0x0100, 5, 0x1000, 2)
    assert summarize(Tlp(hdr, bytes(8))) == "MWr32 rid=01:00.0 tag=5 addr=0x1000 len=2DW"
    assert summarize(MemRequestHeader.read(0x0100, 1, 1 << 40)) == "MRd64 rid=01:00.0 tag=1 addr=0x10000000000 len=1DW"
    ide = IdeTlp(IdePrefix(2, SubStream.NPR), MemRequestHeader.read(0x0100, 1, 0x1000), b"", bytes(12))
    assert summarize(ide) == "IDE stream=2 NPR K0 ctr=0 TM MRd32 rid=01:00.0 tag=1 addr=0x1000 len=1DW"
    cpl = CompletionHeader.with_data(0x0200, 0x0100, 3, 1)
    assert summarize(cpl) == "CplD cid=02:00.0 rid=01:00.0 tag=3 SC bc=4 len=1DW"


# ------------------------------------------------------------------ property tests

bit = st.integers(0, 1)
common = {"tc": st.integers(0, 7), "attr": st.integers(0, 7).map(TlpAttr), "ln": bit, "th": bit, "td": bit, "ep": bit}
mem_headers = st.builds(
    MemRequestHeader,
    fmt=st.sampled_from([TlpFmt.NO_DATA_3DW, TlpFmt.NO_DATA_4DW, TlpFmt.DATA_3DW, TlpFmt.DATA_4DW]),
    tlp_type=st.just(TlpType.MEM),
    requester_id=st.integers(0, 0xFFFF), tag=st.integers(0, 0x3FF),
    address=st.integers(0, (1 << 30) - 1).map(lambda a: a * 4),
    length_dw=st.integers(1, 16), first_be=st.integers(0, 15), last_be=st.integers(0, 15),
    at=st.sampled_from(AddressType), ph=st.integers(0, 3), **common,
)
cpl_headers = st.builds(
    CompletionHeader,
    fmt=st.sampled_from([TlpFmt.NO_DATA_3DW, TlpFmt.DATA_3DW]), tlp_type=st.sampled_from([TlpType.CPL,
                                                                                        TlpType.CPL_LOCKED]),
    completer_id=st.integers(0, 0xFFFF), requester_id=st.integers(0, 0xFFFF), tag=st.integers(0, 0x3FF),
    status=st.sampled_from(CplStatus), byte_count=st.integers(1, 4096), lower_address=st.integers(0, 127),
    length_dw=st.integers(1, 16), bcm=bit, **common,
)
headers = st.one_of(mem_headers, cpl_headers)


@st.composite
def plain_tlps(draw: st.DrawFn) -> Tlp:
    hdr = draw(headers)
    data = draw(st.binary(min_size=hdr.data_bytes, max_size=hdr.data_bytes))
    ecrc = draw(st.binary(min_size=4, max_size=4)) if hdr.td else None
    return Tlp(hdr, data, ecrc)


@st.composite
def ide_tlps(draw: st.DrawFn) -> IdeTlp:
    hdr = draw(headers.filter(lambda h: not h.td))
    prefix = draw(st.builds(IdePrefix, stream_id=st.integers(0, 255), sub_stream=st.sampled_from(SubStream),
                            key_set=st.sampled_from(KeySet), pr_sent_counter=st.integers(0, 255), mac_present=bit,
                            pcrc=bit, tee=bit))
    n = hdr.data_bytes + (4 if prefix.pcrc else 0)
    ct = draw(st.binary(min_size=n, max_size=n))
    mac = draw(st.binary(min_size=12, max_size=12)) if prefix.mac_present else None
    return IdeTlp(prefix, hdr, ct, mac)


@settings(max_examples=200)
@given(hdr=headers)
def test_roundtrip_headers(hdr: MemRequestHeader | CompletionHeader) -> None:
    wire = hdr.encode()
    assert len(wire) == hdr.header_bytes
    assert decode_tlp_header(wire) == hdr


@settings(max_examples=150)
@given(tlp=plain_tlps())
def test_roundtrip_plain_tlps(tlp: Tlp) -> None:
    assert decode_tlp(tlp.encode()) == tlp


@settings(max_examples=150)
@given(tlp=ide_tlps())
def test_roundtrip_ide_tlps(tlp: IdeTlp) -> None:
    wire = tlp.encode()
    assert decode_tlp(wire) == tlp
    assert wire[4:4 + tlp.header.header_bytes] == tlp.header_bytes()


def test_layouts_match_attributes() -> None:
    for cls in (MemRequestHeader, CompletionHeader, Tlp, IdePrefix, IdeTlp):
        cls.check_layout()


# ------------------------------------------------------------------ fuzz


@settings(max_examples=300)
@given(data=st.binary(max_size=64))
def test_fuzz_random_bytes(data: bytes) -> None:
    only_decode_error(decode_tlp, data)
    only_decode_error(decode_tlp_header, data)
    only_decode_error(decode_tlp, bytes([IDE_PREFIX_BYTE]) + data)
    only_decode_error(IdePrefix.decode, data[:4])


@settings(max_examples=150)
@given(tlp=st.one_of(plain_tlps(), ide_tlps()), cut=st.integers(0, 500))
def test_fuzz_truncations(tlp: Tlp | IdeTlp, cut: int) -> None:
    wire = tlp.encode()
    cut %= len(wire)
    with pytest.raises(DecodeError):
        decode_tlp(wire[:cut])
