"""SPDM over NVMe Security Send / Receive (QEMU's spdm_trans=nvme framing): codec, device side, socket server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.interop.device import build_socket_device
from sim.interop.emu_socket import EmuCommand, EmuFrame, EmuTransport, read_frame, write_frame
from sim.interop.nvme import (
    HEADER_BYTES,
    SECURITY_PROTOCOL_DMTF_SPDM,
    NvmeSpdmEndpoint,
    NvmeStatus,
    StorageHeader,
    StorageOperation,
    discovery_response,
    split_send,
    status_bytes,
)
from sim.interop.server import EmuServer
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeObjectType
from sim.wire.spdm import decode_spdm
from sim.wire.spdm.version import Version

TIMEOUT = 5.0
GET_VERSION = bytes.fromhex("10 84 00 00")


def test_header_bytes_are_little_endian_and_packed() -> None:
    header = StorageHeader.for_operation(StorageOperation.MESSAGE, 4)
    assert header.encode() == bytes.fromhex("e8 14 00 04 00 00 00")  # 0xE8, SPSP 0x0014 (5 << 2), length 4
    assert len(header.encode()) == HEADER_BYTES
    assert header.operation == StorageOperation.MESSAGE and header.connection_id == 0


@given(st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF_FFFF))
def test_header_round_trip(protocol: int, spsp: int, length: int) -> None:
    header = StorageHeader(protocol, spsp, length)
    assert StorageHeader.decode(header.encode()) == header
    assert header.operation == (spsp & 0xFC) >> 2 and header.connection_id == spsp & 3


@given(st.binary(max_size=64))
def test_random_send_payloads_only_raise_decode_error(data: bytes) -> None:
    try:
        header, body = split_send(data)
    except DecodeError:
        return
    assert len(body) == header.length


@given(st.binary(max_size=64))
def test_endpoint_never_raises_on_random_frames(data: bytes) -> None:
    endpoint = NvmeSpdmEndpoint(lambda message: b"\x10\x7f\x00\x00")
    assert endpoint.send(data) in NvmeStatus
    status, out = endpoint.receive(data)
    assert status in NvmeStatus and (status is NvmeStatus.SUCCESS or out == b"")


def _device_endpoint() -> NvmeSpdmEndpoint:
    dsm = build_socket_device(seed=3).dsm
    return NvmeSpdmEndpoint(lambda message: dsm.handle_doe(DoeObjectType.SPDM, message))


def test_get_version_through_send_then_receive() -> None:
    endpoint = _device_endpoint()
    send = StorageHeader.for_operation(StorageOperation.MESSAGE, len(GET_VERSION)).encode() + GET_VERSION
    assert endpoint.send(send) is NvmeStatus.SUCCESS
    status, data = endpoint.receive(StorageHeader.for_operation(StorageOperation.MESSAGE, 0x1000).encode())
    assert status is NvmeStatus.SUCCESS
    assert isinstance(decode_spdm(data), Version)
    # the response was handed out once: a second receive is a sequence error
    status, data = endpoint.receive(StorageHeader.for_operation(StorageOperation.MESSAGE, 0x1000).encode())
    assert status is NvmeStatus.SEQUENCE_ERROR and data == b""


def test_receive_truncates_to_the_allocation_length() -> None:
    endpoint = _device_endpoint()
    endpoint.send(StorageHeader.for_operation(StorageOperation.MESSAGE, 4).encode() + GET_VERSION)
    status, data = endpoint.receive(StorageHeader.for_operation(StorageOperation.MESSAGE, 3).encode())
    assert status is NvmeStatus.SUCCESS and len(data) == 3


@pytest.mark.parametrize(("payload", "words"), [
    (StorageHeader(0xEA, 5 << 2, 4).encode() + GET_VERSION, "not DMTF SPDM"),
    (StorageHeader(SECURITY_PROTOCOL_DMTF_SPDM, 0x0100 | 5 << 2, 4).encode() + GET_VERSION, "SPSP1"),
    (StorageHeader(SECURITY_PROTOCOL_DMTF_SPDM, 5 << 2 | 1, 4).encode() + GET_VERSION, "connection id 1"),
    (StorageHeader.for_operation(StorageOperation.SECURED_MESSAGE, 4).encode() + GET_VERSION, "secured"),
    (StorageHeader.for_operation(StorageOperation.DISCOVERY, 4).encode() + GET_VERSION, "cannot be sent"),
    (StorageHeader.for_operation(StorageOperation.MESSAGE, 9).encode() + GET_VERSION, "header says 9"),
    (bytes.fromhex("e8 14"), "StorageHeader"),
])
def test_send_refusals_name_the_problem(payload: bytes, words: str) -> None:
    endpoint = _device_endpoint()
    assert endpoint.send(payload) is NvmeStatus.INVALID_FIELD
    assert words in endpoint.refusals[-1]


def test_discovery_and_bad_receives() -> None:
    endpoint = _device_endpoint()
    status, data = endpoint.receive(StorageHeader.for_operation(StorageOperation.DISCOVERY, 64).encode())
    assert status is NvmeStatus.SUCCESS and data == discovery_response() and len(data) == 32
    assert endpoint.receive(StorageHeader.for_operation(StorageOperation.MESSAGE, 0).encode())[0] is \
        NvmeStatus.INVALID_FIELD
    assert endpoint.receive(StorageHeader.for_operation(StorageOperation.PENDING_INFO, 8).encode())[0] is \
        NvmeStatus.INVALID_FIELD
    assert endpoint.receive(b"\xe8")[0] is NvmeStatus.INVALID_FIELD


@contextmanager
def nvme_server() -> Iterator[tuple[EmuServer, int]]:
    device = build_socket_device(seed=4)
    nvme = NvmeSpdmEndpoint(lambda message: device.dsm.handle_doe(DoeObjectType.SPDM, message))
    server = EmuServer(device.target, port=0, client_timeout=TIMEOUT, nvme=nvme)
    _, port = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server, port
    finally:
        server.stop()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_qemu_style_exchange_over_the_socket() -> None:
    """IF_SEND -> 2-byte big-endian status; IF_RECV -> status, then the data frame (hw/nvme/ctrl.c's order)."""
    with nvme_server() as (server, port), socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        header = StorageHeader.for_operation(StorageOperation.MESSAGE, 4).encode()
        write_frame(sock, EmuFrame(EmuCommand.STORAGE_IF_SEND, EmuTransport.NVME, header + GET_VERSION))
        ack = read_frame(sock)
        assert (ack.command, ack.transport, ack.payload) == (EmuCommand.STORAGE_ACK_STATUS, EmuTransport.NVME,
                                                             status_bytes(NvmeStatus.SUCCESS))
        recv = StorageHeader.for_operation(StorageOperation.MESSAGE, 0x1200).encode()
        write_frame(sock, EmuFrame(EmuCommand.STORAGE_IF_RECV, EmuTransport.NVME, recv))
        assert read_frame(sock).payload == b"\x00\x00"
        assert isinstance(decode_spdm(read_frame(sock).payload), Version)
        # a refused receive: status only, no data frame follows
        write_frame(sock, EmuFrame(EmuCommand.STORAGE_IF_RECV, EmuTransport.NVME, recv))
        assert read_frame(sock).payload == status_bytes(NvmeStatus.SEQUENCE_ERROR)
        write_frame(sock, EmuFrame(EmuCommand.STORAGE_IF_SEND, EmuTransport.NVME, b"\x01"))
        assert read_frame(sock).payload == status_bytes(NvmeStatus.INVALID_FIELD)
        write_frame(sock, EmuFrame(0x1234, EmuTransport.NVME, b""))
        assert read_frame(sock).command == EmuCommand.UNKNOWN
        write_frame(sock, EmuFrame(EmuCommand.SHUTDOWN, EmuTransport.NVME, b""))
        assert read_frame(sock).command == EmuCommand.SHUTDOWN
    assert server.result.stop_reason is not None
