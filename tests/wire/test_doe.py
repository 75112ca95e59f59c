"""DOE data objects and discovery: worked examples (PROTOCOLS.md §1.3-1.4, INTEROP.md), length rules, fuzz."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.wire.codec import DecodeError, EncodeError
from sim.wire.doe import (
    MAX_LENGTH_DW,
    MAX_PAYLOAD_BYTES,
    PCI_SIG_VENDOR_ID,
    DiscoveryVersion,
    DoeDiscoveryRequest,
    DoeDiscoveryResponse,
    DoeObject,
    DoeObjectType,
    doe_length_dw,
    summarize,
)


def only_decode_error(decoder: Callable[[bytes], Any], data: bytes) -> None:
    try:
        decoder(data)
    except DecodeError:
        pass


# ------------------------------------------------------------------ known answers


def test_get_version_over_doe() -> None:
    wire = bytes.fromhex("01 00 01 00 03 00 00 00 10 84 00 00")
    obj = DoeObject.decode(wire)
    assert obj.vendor_id == PCI_SIG_VENDOR_ID
    assert obj.object_type is DoeObjectType.SPDM
    assert obj.payload == bytes.fromhex("10 84 00 00")
    assert obj.length_dw == 3
    assert DoeObject.pcisig(DoeObjectType.SPDM, bytes.fromhex("10840000")).encode() == wire


def test_version_listing_from_interop() -> None:
    wire = bytes.fromhex("01 00 01 00 06 00 00 00 10 04 00 00 00 05 00 10 00 11 00 12 00 13 00 14")
    obj = DoeObject.decode(wire)
    assert obj.object_type is DoeObjectType.SPDM
    assert obj.length_dw == 6 and len(obj.payload) == 16
    assert obj.payload[1] == 0x04 and obj.payload[5] == 5
    assert obj.encode() == wire


def test_discovery_request_example() -> None:
    wire = bytes.fromhex("01 00 00 00 03 00 00 00 00 00 00 00")
    obj = DoeObject.decode(wire)
    assert obj.object_type is DoeObjectType.DISCOVERY
    req = DoeDiscoveryRequest.decode(obj.payload)
    assert req == DoeDiscoveryRequest(index=0, version=DiscoveryVersion.CAP_V1)
    assert req.to_doe().encode() == wire


def test_discovery_response_example() -> None:
    wire = bytes.fromhex("01 00 00 00 03 00 00 00 01 00 01 02")
    rsp = DoeDiscoveryResponse.decode(DoeObject.decode(wire).payload)
    assert (rsp.vendor_id, rsp.data_object_type, rsp.next_index) == (1, 1, 2)
    assert rsp.object_type is DoeObjectType.SPDM
    assert rsp.to_doe().encode() == wire


def test_reference_responder_discovery_list() -> None:
    # INTEROP.md: index 0 -> (1, 0, next 1), 1 -> (1, SPDM, next 2), 2 -> (1, secured SPDM, next 0)
    answers = [DoeDiscoveryResponse(1, DoeObjectType.DISCOVERY, 1), DoeDiscoveryResponse(1, DoeObjectType.SPDM, 2),
               DoeDiscoveryResponse(1, DoeObjectType.SECURED_SPDM, 0)]
    wires = [a.to_doe().encode() for a in answers]
    assert wires[2] == bytes.fromhex("01 00 00 00 03 00 00 00 01 00 02 00")
    walked, index = [], 0
    while True:
        rsp = DoeDiscoveryResponse.decode(DoeObject.decode(wires[index]).payload)
        walked.append(rsp.object_type)
        index = rsp.next_index
        if index == 0:
            break
    assert walked == [DoeObjectType.DISCOVERY, DoeObjectType.SPDM, DoeObjectType.SECURED_SPDM]


def test_discovery_version_2() -> None:
    assert DoeDiscoveryRequest(3, DiscoveryVersion.CAP_V2).encode() == bytes([3, 2, 0, 0])
    with pytest.raises(DecodeError) as err:
        DoeDiscoveryRequest.decode(bytes([0, 1, 0, 0]))
    assert err.value.field == "version" and err.value.offset == 1


def test_discovery_request_reserved_bytes_ignored() -> None:
    assert DoeDiscoveryRequest.decode(bytes([2, 2, 0xAA, 0x55])) == DoeDiscoveryRequest(2, DiscoveryVersion.CAP_V2)


# ------------------------------------------------------------------ length and padding rules


def test_encode_pads_payload_to_dw() -> None:
    obj = DoeObject.pcisig(DoeObjectType.SPDM, b"\x12\x34\x56\x78\x9a")
    wire = obj.encode()
    assert len(wire) == 16 and wire[4] == 4
    assert wire[8:] == b"\x12\x34\x56\x78\x9a\x00\x00\x00"
    back = DoeObject.decode(wire)
    assert back.payload == b"\x12\x34\x56\x78\x9a\x00\x00\x00"  # pad bytes are the receiver's to strip
    assert back.encode() == wire


def test_empty_payload_is_two_dw() -> None:
    wire = DoeObject(PCI_SIG_VENDOR_ID, 1).encode()
    assert wire == bytes.fromhex("0100010002000000")
    assert DoeObject.decode(wire).payload == b""


def test_length_zero_means_2_pow_18_dw() -> None:
    obj = DoeObject(PCI_SIG_VENDOR_ID, DoeObjectType.SPDM, bytes(MAX_PAYLOAD_BYTES))
    wire = obj.encode()
    assert len(wire) == MAX_LENGTH_DW * 4
    assert int.from_bytes(wire[4:8], "little") == 0
    assert doe_length_dw(wire) == MAX_LENGTH_DW
    assert DoeObject.decode(wire) == obj


def test_payload_too_large_for_doe() -> None:
    with pytest.raises(EncodeError):
        DoeObject(PCI_SIG_VENDOR_ID, 1, bytes(MAX_PAYLOAD_BYTES + 1)).encode()


def test_doe_length_dw_reads_bits_17_0() -> None:
    assert doe_length_dw(bytes.fromhex("0100010003000000")) == 3
    assert doe_length_dw(bytes.fromhex("01000100030000fc")) == 3  # bits 31:18 reserved
    assert doe_length_dw(bytes.fromhex("0100010000000000")) == MAX_LENGTH_DW
    with pytest.raises(DecodeError) as err:
        doe_length_dw(b"\x01\x00\x01\x00\x03")
    assert err.value.field == "length"


def test_reserved_length_bits_ignored_on_decode() -> None:
    wire = bytearray(bytes.fromhex("01 00 01 00 03 00 00 00 10 84 00 00"))
    wire[7] = 0x80
    assert DoeObject.decode(bytes(wire)).payload == bytes.fromhex("10840000")


def test_reserved_byte_3_must_be_zero() -> None:
    wire = bytearray(bytes.fromhex("01 00 01 00 03 00 00 00 10 84 00 00"))
    wire[3] = 1
    with pytest.raises(DecodeError) as err:
        DoeObject.decode(bytes(wire))
    assert err.value.field == "reserved" and err.value.offset == 3


@pytest.mark.parametrize("wire", [
    "01 00 01 00 04 00 00 00 10 84 00 00",  # header claims one DW more than given
    "01 00 01 00 02 00 00 00 10 84 00 00",  # header claims one DW less than given
    "01 00 01 00 03 00 00 00 10 84 00",  # not whole DWs
    "01 00 01 00 01 00 00 00",  # shorter than its own header
    "01 00 01 00 00 00 00 00 10 84 00 00",  # 0 = 2^18 DW, far more than given
])
def test_length_mismatch_names_length(wire: str) -> None:
    with pytest.raises(DecodeError) as err:
        DoeObject.decode(bytes.fromhex(wire))
    assert err.value.field == "length" and err.value.offset == 4
    assert err.value.message == "DoeObject"


def test_truncated_header() -> None:
    with pytest.raises(DecodeError) as err:
        DoeObject.decode(bytes.fromhex("01 00 01"))
    assert err.value.field == "reserved"


def test_unknown_types_and_vendors_still_decode() -> None:
    vendor = DoeObject.decode(DoeObject(0x8086, 0x01, b"abcd").encode())
    assert vendor.vendor_id == 0x8086 and vendor.data_object_type == 1 and vendor.object_type is None
    future = DoeObject.decode(DoeObject(PCI_SIG_VENDOR_ID, 0x7E, b"").encode())
    assert future.data_object_type == 0x7E and future.object_type is None
    assert DoeObject(PCI_SIG_VENDOR_ID, 4).object_type is DoeObjectType.SECURED_SPDM_CONNECTION_ID


def test_summaries() -> None:
    assert summarize(DoeObject.pcisig(DoeObjectType.SECURED_SPDM, bytes(28))) == "DOE SECURED_SPDM len=9DW"
    assert summarize(DoeObject(0x1AB4, 0x33, b"")) == "DOE vid=0x1ab4 type=0x33 len=2DW"
    assert summarize(DoeDiscoveryRequest(1, DiscoveryVersion.CAP_V2)) == "DOE DISCOVERY index=1 version=2"
    assert summarize(DoeDiscoveryResponse(1, 2, 0)) == "DOE DISCOVERY_RESP SECURED_SPDM next=0"


# ------------------------------------------------------------------ property tests

u8s = st.integers(0, 0xFF)
dw_payloads = st.integers(0, 64).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))


@settings(max_examples=150)
@given(vendor=st.integers(0, 0xFFFF), dtype=u8s, payload=dw_payloads)
def test_roundtrip_aligned(vendor: int, dtype: int, payload: bytes) -> None:
    obj = DoeObject(vendor, dtype, payload)
    wire = obj.encode()
    assert len(wire) % 4 == 0 and doe_length_dw(wire) * 4 == len(wire)
    assert DoeObject.decode(wire) == obj


@settings(max_examples=150)
@given(payload=st.binary(max_size=300))
def test_roundtrip_unaligned_payload_gains_padding(payload: bytes) -> None:
    obj = DoeObject.pcisig(DoeObjectType.SPDM, payload)
    back = DoeObject.decode(obj.encode())
    pad = -len(payload) % 4
    assert back.payload == payload + bytes(pad)
    assert back.encode() == obj.encode()


@settings(max_examples=100)
@given(index=u8s, version=st.sampled_from(DiscoveryVersion))
def test_roundtrip_discovery_request(index: int, version: DiscoveryVersion) -> None:
    req = DoeDiscoveryRequest(index, version)
    assert DoeDiscoveryRequest.decode(req.encode()) == req
    assert DoeDiscoveryRequest.decode(DoeObject.decode(req.to_doe().encode()).payload) == req


@settings(max_examples=100)
@given(vendor=st.integers(0, 0xFFFF), dtype=u8s, nxt=u8s)
def test_roundtrip_discovery_response(vendor: int, dtype: int, nxt: int) -> None:
    rsp = DoeDiscoveryResponse(vendor, dtype, nxt)
    assert DoeDiscoveryResponse.decode(rsp.encode()) == rsp


# ------------------------------------------------------------------ fuzz: only DecodeError escapes

DECODERS: list[Callable[[bytes], Any]] = [DoeObject.decode, DoeDiscoveryRequest.decode, DoeDiscoveryResponse.decode,
                                          doe_length_dw]


@settings(max_examples=200)
@given(data=st.binary(max_size=64))
def test_fuzz_random_bytes(data: bytes) -> None:
    for decoder in DECODERS:
        only_decode_error(decoder, data)


@settings(max_examples=100)
@given(payload=dw_payloads, cut=st.integers(0, 300))
def test_fuzz_truncations_are_decode_errors(payload: bytes, cut: int) -> None:
    wire = DoeObject.pcisig(DoeObjectType.SPDM, payload).encode()
    cut %= len(wire)
    with pytest.raises(DecodeError):
        DoeObject.decode(wire[:cut])
    for decoder in DECODERS:
        only_decode_error(decoder, wire[:cut])
