"""TDISP 1.0 messages and the TDI report: §6.4 example, payload sizes, report portions, round trips, fuzz."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.wire.codec import DecodeError
from sim.wire.pcisig import decode_pcisig_payload, encode_pcisig_payload
from sim.wire.tdisp import (
    HEADER_BYTES,
    TDISP_MESSAGES,
    TDISP_VERSION_1_0,
    BindP2pStreamRequest,
    BindP2pStreamResponse,
    DeviceInterfaceReport,
    DeviceInterfaceState,
    GetDeviceInterfaceReport,
    GetDeviceInterfaceState,
    GetTdispCapabilities,
    GetTdispVersion,
    InterfaceId,
    InterfaceInfo,
    LockInterfaceFlags,
    LockInterfaceRequest,
    LockInterfaceResponse,
    MmioRange,
    MmioRangeAttributes,
    SetMmioAttributeRequest,
    SetMmioAttributeResponse,
    StartInterfaceRequest,
    StartInterfaceResponse,
    StopInterfaceRequest,
    StopInterfaceResponse,
    TdiReport,
    TdispCapabilities,
    TdispError,
    TdispErrorCode,
    TdispMessage,
    TdispRequestCode,
    TdispResponseCode,
    TdispVendorErrorData,
    TdispVersion,
    TdiState,
    UnbindP2pStreamRequest,
    UnbindP2pStreamResponse,
    VdmRegistryId,
    VdmRequest,
    VdmResponse,
    decode_tdisp,
    report_portions,
    request_bitmap,
    summarize,
)

IF_0100 = InterfaceId(0x0100)


def only_decode_error(decoder: Callable[[bytes], Any], data: bytes) -> None:
    try:
        decoder(data)
    except DecodeError:
        pass


# ------------------------------------------------------------------ known answers


def test_get_tdisp_version_example() -> None:
    spdm = bytes.fromhex("12 fe 00 00 03 00 02 01 00 11 00 01 10 81 00 00 00 01 00 00 00 00 00 00 00 00 00 00")
    assert len(spdm) == 28
    payload = spdm[11:]
    assert int.from_bytes(spdm[9:11], "little") == len(payload) == 1 + HEADER_BYTES
    msg = decode_pcisig_payload(payload)
    assert isinstance(msg, GetTdispVersion)
    assert msg.tdisp_version == TDISP_VERSION_1_0
    assert msg.interface_id.requester_id == 0x0100
    assert (msg.interface_id.bus, msg.interface_id.device, msg.interface_id.function) == (1, 0, 0)
    assert msg.interface_id.segment is None and not msg.interface_id.segment_valid
    assert msg == GetTdispVersion(interface_id=InterfaceId.for_function(0x0100))
    assert encode_pcisig_payload(msg) == payload
    assert decode_tdisp(payload[1:]) == msg


def test_interface_id_helpers() -> None:
    plain = InterfaceId.for_function(0xBEEF)  # the reference requester's function id (INTEROP.md)
    assert plain.function_id == 0xBEEF and plain.encode() == bytes.fromhex("efbe0000") + bytes(8)
    seg = InterfaceId.for_function(0x3A10, segment=5)
    assert seg.function_id == 0x0105_3A10
    assert seg.segment_valid and seg.segment == 5 and seg.requester_id == 0x3A10
    assert str(seg) == "05:3a:02.0"
    # reserved bits of FUNCTION_ID survive a round trip; reserved bytes are ignored on decode
    raw = InterfaceId.decode((0xFE00_0001).to_bytes(4, "little") + b"\xff" * 8)
    assert raw.function_id == 0xFE00_0001 and raw.segment_valid is False
    with pytest.raises(ValueError):
        InterfaceId.for_function(0x10000)


def test_payload_sizes_from_the_table() -> None:
    caps = TdispCapabilities(req_msgs_supported=request_bitmap(TdispRequestCode),
                             lock_interface_flags_supported=LockInterfaceFlags.NO_FW_UPDATE, dev_addr_width=52,
                             num_req_this=1, num_req_all=1, interface_id=IF_0100)
    assert len(caps.encode()) == 44
    lock = LockInterfaceRequest(LockInterfaceFlags.LOCK_MSIX, default_stream_id=1, interface_id=IF_0100)
    assert len(lock.encode()) == 36
    assert len(LockInterfaceResponse(bytes(32), interface_id=IF_0100).encode()) == 48
    assert len(StartInterfaceRequest(bytes(32), interface_id=IF_0100).encode()) == 48
    assert len(GetTdispCapabilities(interface_id=IF_0100).encode()) == 20
    assert len(GetDeviceInterfaceReport(0, 0xFFFF, interface_id=IF_0100).encode()) == 20
    assert len(StopInterfaceRequest(interface_id=IF_0100).encode()) == 16
    assert len(SetMmioAttributeRequest(MmioRange(1, 1), interface_id=IF_0100).encode()) == 32


def test_capabilities_bitmap_and_fields() -> None:
    supported = [TdispRequestCode.GET_TDISP_VERSION, TdispRequestCode.LOCK_INTERFACE_REQUEST,
                 TdispRequestCode.VDM_REQUEST]
    caps = TdispCapabilities(request_bitmap(supported), LockInterfaceFlags.NO_FW_UPDATE | LockInterfaceFlags.BIND_P2P,
                             52, 2, 8, interface_id=IF_0100)
    wire = caps.encode()
    assert wire[20:36] == ((1 << 1) | (1 << 3) | (1 << 0xB)).to_bytes(16, "little")
    assert wire[36:38] == b"\x09\x00" and wire[38:41] == bytes(3) and wire[41:44] == bytes([52, 2, 8])
    back = decode_tdisp(wire)
    assert isinstance(back, TdispCapabilities)
    assert back.supported_requests() == tuple(supported)
    assert back.supports(0x83) and not back.supports(0x84) and not back.supports(0x01)


def test_lock_interface_signed_offset() -> None:
    lock = LockInterfaceRequest(LockInterfaceFlags.NO_FW_UPDATE | LockInterfaceFlags.LOCK_MSIX, 7,
                                mmio_reporting_offset=-0x1000, bind_p2p_address_mask=0xFFFF_0000,
                                interface_id=IF_0100)
    wire = lock.encode()
    assert wire[16:20] == bytes([0x05, 0x00, 7, 0])
    assert wire[20:28] == bytes.fromhex("00f0ffffffffffff")
    assert decode_tdisp(wire) == lock


def test_version_response_and_mismatch() -> None:
    rsp = TdispVersion((0x10, 0x11), interface_id=IF_0100)
    assert rsp.encode()[16:] == bytes([2, 0x10, 0x11])
    assert decode_tdisp(rsp.encode()) == rsp
    with pytest.raises(DecodeError):
        decode_tdisp(TdispVersion((0x10,), interface_id=IF_0100).encode()[:16] + b"\x00")  # count 0
    # a request in an unknown TDISP version still decodes, so the responder can answer VERSION_MISMATCH
    v2 = GetTdispVersion(interface_id=IF_0100, tdisp_version=0x20)
    assert decode_tdisp(v2.encode()).tdisp_version == 0x20


def test_state_and_error_enums_are_closed() -> None:
    ok = DeviceInterfaceState(TdiState.RUN, interface_id=IF_0100).encode()
    assert ok[16] == 2
    with pytest.raises(DecodeError) as err:
        decode_tdisp(ok[:16] + b"\x04")
    assert (err.value.field, err.value.offset) == ("tdi_state", 16)
    with pytest.raises(DecodeError) as err:
        decode_tdisp(bytes([0x10, 0x7F, 0, 0]) + bytes(12) + (2).to_bytes(4, "little") + bytes(4))
    assert err.value.field == "error_code"


def test_tdisp_error_layout_and_vendor_error() -> None:
    err = TdispError(TdispErrorCode.UNSUPPORTED_REQUEST, 0x8A, interface_id=IF_0100)
    assert err.encode()[16:] == bytes.fromhex("07000000 8a000000".replace(" ", ""))
    vendor = TdispError.vendor_specific(IF_0100, TdispVendorErrorData(VdmRegistryId.PCISIG, b"\x01\x00", b"\xde\xad"))
    assert vendor.error_code is TdispErrorCode.VENDOR_SPECIFIC_ERROR
    assert vendor.error_data == 6 and vendor.extended_error_data == bytes.fromhex("000201 00 dead".replace(" ", ""))
    back = decode_tdisp(vendor.encode())
    assert isinstance(back, TdispError) and back.vendor_error_data().vendor_data == b"\xde\xad"


def test_vdm_layout() -> None:
    req = VdmRequest(VdmRegistryId.CXL, b"\x98\x1e", b"payload", interface_id=IF_0100)
    assert req.encode()[16:] == bytes([1, 2, 0x98, 0x1E]) + b"payload"
    assert decode_tdisp(req.encode()) == req


def test_unknown_message_type() -> None:
    with pytest.raises(DecodeError) as err:
        decode_tdisp(bytes([0x10, 0x8C]) + bytes(14))  # SET_TDISP_CONFIG is post-1.0 and not modeled
    assert (err.value.field, err.value.offset) == ("message_type", 1)
    with pytest.raises(DecodeError):
        decode_tdisp(b"\x10")
    with pytest.raises(DecodeError) as err:
        decode_tdisp(bytes([0x10, 0x85]) + bytes(10))
    assert err.value.field == "interface_id.reserved"
    assert len(TDISP_MESSAGES) == len(TdispRequestCode) + len(TdispResponseCode)


# ------------------------------------------------------------------ the TDI report


def _sample_report() -> TdiReport:
    return TdiReport(
        interface_info=InterfaceInfo.NO_FW_UPDATE | InterfaceInfo.DMA_WITHOUT_PASID,
        mmio_ranges=(
            MmioRange(0xFE000, 16, MmioRangeAttributes(0), 0),
            MmioRange(0xFE010, 1, MmioRangeAttributes.MSIX_TABLE, 2),
            MmioRange(0xFE011, 1, MmioRangeAttributes.MSIX_PBA | MmioRangeAttributes.IS_NON_TEE_MEM, 2),
        ),
        device_specific_info=b"device-info-v1",
        msi_x_message_control=0x8003,
    )


def test_report_layout() -> None:
    report = _sample_report()
    wire = report.encode()
    assert len(wire) == 20 + 16 * 3 + 14
    assert wire[0:2] == b"\x03\x00" and wire[4:6] == b"\x03\x80"
    assert int.from_bytes(wire[12:16], "little") == 3
    assert wire[16:24] == (0xFE000).to_bytes(8, "little") and wire[24:28] == (16).to_bytes(4, "little")
    assert int.from_bytes(wire[16 + 48:20 + 48], "little") == 14
    assert report.mmio_ranges[0].address == 0xFE000000 and report.mmio_ranges[0].size == 0x10000
    assert TdiReport.decode(wire) == report


@pytest.mark.parametrize("portion", [1, 7, 40, 0xFFFF])
def test_report_in_portions_reassembles(portion: int) -> None:
    report = _sample_report().encode()
    got, offset = b"", 0
    while True:
        chunk, remainder = report_portions(report, offset, portion)
        msg = DeviceInterfaceReport(chunk, remainder, interface_id=IF_0100)
        back = decode_tdisp(msg.encode())
        assert isinstance(back, DeviceInterfaceReport) and back.report == chunk
        got += back.report
        offset += len(back.report)
        if back.remainder_length == 0:
            break
    assert TdiReport.decode(got) == _sample_report()


def test_report_count_beyond_data() -> None:
    wire = bytearray(_sample_report().encode())
    wire[12] = 9
    with pytest.raises(DecodeError) as err:
        TdiReport.decode(bytes(wire))
    assert err.value.field.startswith("mmio_ranges[")


def test_summaries() -> None:
    lock = LockInterfaceRequest(LockInterfaceFlags.LOCK_MSIX, 1, interface_id=IF_0100)
    assert summarize(lock) == "TDISP LOCK_INTERFACE_REQUEST if=01:00.0 stream=1 flags=0x4"
    assert summarize(DeviceInterfaceState(TdiState.CONFIG_LOCKED, interface_id=IF_0100)) == \
        "TDISP DEVICE_INTERFACE_STATE if=01:00.0 CONFIG_LOCKED"
    assert summarize(GetTdispVersion(interface_id=IF_0100, tdisp_version=0x20)) == \
        "TDISP GET_TDISP_VERSION if=01:00.0 v=0x20"
    assert summarize(_sample_report()) == "TDI_REPORT info=0x3 mmio_ranges=3 dev_info=14B"


# ------------------------------------------------------------------ property tests

u8s, u16s, u32s = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
nonces = st.binary(min_size=32, max_size=32)
mmio = st.builds(MmioRange, first_page=st.integers(0, (1 << 64) - 1), number_of_pages=u32s,
                 attributes=st.integers(0, 0xFFFF).map(MmioRangeAttributes), range_id=u16s)
reports = st.builds(TdiReport, interface_info=st.integers(0, 0xFFFF).map(InterfaceInfo),
                    mmio_ranges=st.lists(mmio, max_size=5).map(tuple), device_specific_info=st.binary(max_size=40),
                    msi_x_message_control=u16s, lnr_control=u16s, tph_control=u32s)
HEADER = {"interface_id": u32s.map(InterfaceId), "tdisp_version": u8s}
EMPTY = [GetTdispVersion, GetDeviceInterfaceState, StartInterfaceResponse, StopInterfaceRequest,
         StopInterfaceResponse, BindP2pStreamResponse, UnbindP2pStreamResponse, SetMmioAttributeResponse]
MESSAGES = st.one_of(
    *[st.builds(cls, **HEADER) for cls in EMPTY],
    st.builds(TdispVersion, versions=st.lists(u8s, min_size=1, max_size=8).map(tuple), **HEADER),
    st.builds(GetTdispCapabilities, tsm_caps=u32s, **HEADER),
    st.builds(TdispCapabilities, req_msgs_supported=st.integers(0, (1 << 128) - 1),
              lock_interface_flags_supported=u16s.map(LockInterfaceFlags), dev_addr_width=u8s, num_req_this=u8s,
              num_req_all=u8s, dsm_caps=u32s, **HEADER),
    st.builds(LockInterfaceRequest, flags=u16s.map(LockInterfaceFlags), default_stream_id=u8s,
              mmio_reporting_offset=st.integers(-(1 << 63), (1 << 63) - 1),
              bind_p2p_address_mask=st.integers(0, (1 << 64) - 1), **HEADER),
    st.builds(LockInterfaceResponse, start_interface_nonce=nonces, **HEADER),
    st.builds(GetDeviceInterfaceReport, offset=u16s, length=u16s, **HEADER),
    st.builds(DeviceInterfaceReport, report=st.binary(max_size=100), remainder_length=u16s, **HEADER),
    st.builds(DeviceInterfaceState, tdi_state=st.sampled_from(TdiState), **HEADER),
    st.builds(StartInterfaceRequest, start_interface_nonce=nonces, **HEADER),
    st.builds(BindP2pStreamRequest, p2p_stream_id=u8s, **HEADER),
    st.builds(UnbindP2pStreamRequest, p2p_stream_id=u8s, **HEADER),
    st.builds(SetMmioAttributeRequest, mmio_range=mmio, **HEADER),
    st.builds(VdmRequest, registry_id=st.sampled_from(VdmRegistryId), vendor_id=st.binary(max_size=4),
              vendor_data=st.binary(max_size=40), **HEADER),
    st.builds(VdmResponse, registry_id=st.sampled_from(VdmRegistryId), vendor_id=st.binary(max_size=4),
              vendor_data=st.binary(max_size=40), **HEADER),
    st.builds(TdispError, error_code=st.sampled_from(TdispErrorCode), error_data=u32s,
              extended_error_data=st.binary(max_size=40), **HEADER),
)


def test_strategies_cover_every_message() -> None:
    covered = {cls for cls in EMPTY} | {TdispVersion, GetTdispCapabilities, TdispCapabilities, LockInterfaceRequest,
                                        LockInterfaceResponse, GetDeviceInterfaceReport, DeviceInterfaceReport,
                                        DeviceInterfaceState, StartInterfaceRequest, BindP2pStreamRequest,
                                        UnbindP2pStreamRequest, SetMmioAttributeRequest, VdmRequest, VdmResponse,
                                        TdispError}
    assert covered == set(TDISP_MESSAGES.values())
    for cls in covered:
        cls.check_layout()
    for cls in (TdiReport, MmioRange, InterfaceId, TdispVendorErrorData):
        cls.check_layout()


@settings(max_examples=200)
@given(msg=MESSAGES)
def test_roundtrip_every_message(msg: TdispMessage) -> None:
    wire = msg.encode()
    assert wire[1] == msg.CODE and len(wire) >= HEADER_BYTES
    assert decode_tdisp(wire) == msg
    assert decode_pcisig_payload(encode_pcisig_payload(msg)) == msg
    assert summarize(msg).startswith(f"TDISP {msg.NAME} ")
    assert msg.is_request == (msg.CODE >= 0x80)


@settings(max_examples=100)
@given(report=reports)
def test_roundtrip_report(report: TdiReport) -> None:
    assert TdiReport.decode(report.encode()) == report


# ------------------------------------------------------------------ fuzz


@settings(max_examples=200)
@given(data=st.binary(max_size=80))
def test_fuzz_random_bytes(data: bytes) -> None:
    only_decode_error(decode_tdisp, data)
    only_decode_error(TdiReport.decode, data)
    only_decode_error(decode_pcisig_payload, b"\x01" + data)


@settings(max_examples=200)
@given(code=st.sampled_from(sorted(TDISP_MESSAGES)), body=st.binary(max_size=60))
def test_fuzz_valid_header_random_body(code: int, body: bytes) -> None:
    only_decode_error(decode_tdisp, bytes([0x10, code, 0, 0]) + bytes(12) + body)


@settings(max_examples=150)
@given(msg=MESSAGES, cut=st.integers(0, 500))
def test_fuzz_truncations(msg: TdispMessage, cut: int) -> None:
    wire = msg.encode()
    cut %= len(wire)
    if cut < HEADER_BYTES:
        with pytest.raises(DecodeError):
            decode_tdisp(wire[:cut])
    only_decode_error(decode_tdisp, wire[:cut])


@settings(max_examples=100)
@given(report=reports, cut=st.integers(0, 500))
def test_fuzz_report_truncations(report: TdiReport, cut: int) -> None:
    wire = report.encode()
    cut %= len(wire)
    with pytest.raises(DecodeError):
        TdiReport.decode(wire[:cut])
