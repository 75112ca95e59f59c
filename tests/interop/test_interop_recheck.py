"""Byte-exact regressions from the interop re-check against DMTF's spdm_requester_emu (notes/interop-results.md).

Each request below is copied from the requester's log of a run against ``tiosim serve-device --ide-port-index 1``
(only the random IDE key bytes are ours); each expected answer is what the requester accepted in that run.
The PCIe IDE_KM / TDISP exchanges are the APP flow the requester runs after FINISH; the CXL IDE_KM QUERY
(VendorID 0x1E98) must be refused with ERROR UnsupportedRequest, ErrorData = 0xFE (DSP0274, PROTOCOLS.md §2.3),
because the socket device is PCIe-only.
"""

from __future__ import annotations

import argparse
import io

import pytest
from rich.console import Console

from sim.commands import serve_device as serve_cmd
from sim.commands.common import UserError
from sim.interop.device import SocketDevice, build_socket_device
from tests.protocols.spdm_responder_peer import Peer, PeerSession


def b(text: str) -> bytes:
    return bytes.fromhex(text)


def vdm_header(version: int, code: int) -> bytes:
    """SPDM VENDOR_DEFINED header up to the VendorID: StandardID 3 (PCI-SIG registry), VendorID length 2."""
    return bytes([version, code, 0, 0, 0x03, 0x00, 0x02])


PCISIG = b"\x01\x00"
CXL = b"\x98\x1e"


def vdm(version: int, vendor: bytes, payload: bytes, *, response: bool = False) -> bytes:
    code = 0x7E if response else 0xFE
    return vdm_header(version, code) + vendor + len(payload).to_bytes(2, "little") + payload


def connected(version: int, ide_port_index: int = 1) -> tuple[SocketDevice, Peer, PeerSession]:
    device = build_socket_device(seed=21, ide_port_index=ide_port_index)
    peer = Peer(device.dsm.spdm, device.identity, version=version, seed=21)
    return device, peer, peer.connect()


# --- IDE_KM as spdm_requester_emu drives it (PortIndex 1, stream 0, key set 0) -----------------------------

QUERY_PORT1 = b("00 00 00 01")
QUERY_RESP_PORT1 = b("00 01 00 01 e8 be 00 01 42 00 00 01 00 00 00 00 01 00 00 00") + bytes(28)
KEY_PROG_KEY = b("ec b5 3a 44 24 ae 67 43 eb 0e c6 4b 1b c4 4e 59 ea db 1b cb 4b 35 ea 6c 12 dd 05 20 77 11 74 d5")
SUB_STREAMS = (0x00, 0x10, 0x20, 0x02, 0x12, 0x22)  # Rx PR/NPR/CPL, Tx PR/NPR/CPL, key set 0


def key_ide_stream(peer: Peer, ps: PeerSession, version: int) -> None:
    """QUERY, then KEY_PROG + K_SET_GO for the six sub-streams, exactly as the reference requester sends them."""
    assert peer.secured(ps, vdm(version, PCISIG, QUERY_PORT1)) == vdm(version, PCISIG, QUERY_RESP_PORT1,
                                                                       response=True)
    for kss in SUB_STREAMS:
        tail = bytes([0x00, 0x00, kss, 0x01])  # StreamID 0, Reserved, KeySubStream, PortIndex 1
        key_prog = b"\x00\x02\x00\x00" + tail + KEY_PROG_KEY + b("00 00 00 00 01 00 00 00")
        assert peer.secured(ps, vdm(version, PCISIG, key_prog)) == vdm(
            version, PCISIG, b"\x00\x03\x00\x00" + tail, response=True)  # KP_ACK, Status 0
        assert peer.secured(ps, vdm(version, PCISIG, b"\x00\x04\x00\x00" + tail)) == vdm(
            version, PCISIG, b"\x00\x06\x00\x00" + tail, response=True)  # K_SET_GO → K_GOSTOP_ACK


@pytest.mark.parametrize("version", [0x12, 0x13])
def test_ide_km_flow_of_the_reference_requester(version: int) -> None:
    _, peer, ps = connected(version)
    key_ide_stream(peer, ps, version)
    for kss in SUB_STREAMS:
        tail = bytes([0x00, 0x00, kss, 0x01])
        assert peer.secured(ps, vdm(version, PCISIG, b"\x00\x05\x00\x00" + tail)) == vdm(
            version, PCISIG, b"\x00\x06\x00\x00" + tail, response=True)  # K_SET_STOP → K_GOSTOP_ACK


def test_ide_km_query_for_another_port_is_refused() -> None:
    _, peer, ps = connected(0x12, ide_port_index=0)
    assert peer.secured(ps, vdm(0x12, PCISIG, QUERY_PORT1)) == b("12 7f 01 00")  # InvalidRequest


# --- TDISP for interface 0xBEEF -------------------------------------------------------------------------

IFACE = b("ef be 00 00 00 00 00 00 00 00 00 00")


def tdisp(code: int, body: bytes = b"") -> bytes:
    return b"\x01\x10" + bytes([code]) + b"\x00\x00" + IFACE + body


TDISP_CAPS_RSP = tdisp(0x02, b("00 00 00 00 fe 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 07 00 00 00 00 34 01 01"))
LOCK_BODY = b("07 00 00 00 00 00 00 d0 00 00 00 00 00 00 00 00 00 00 00 00")  # flags 7, MMIO offset 0xD0000000
REPORT_RSP = tdisp(0x04, b("24 00 00 00 03 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 70 00 1c 00 00 00 00 00"
                           "04 00 00 00 00 00 00 00 00 00 00 00"))


def test_tdisp_flow_of_the_reference_requester() -> None:
    _, peer, ps = connected(0x12)
    key_ide_stream(peer, ps, 0x12)  # the requester keys the IDE stream before it locks the interface

    def ask(request: bytes) -> bytes:
        response = peer.secured(ps, vdm(0x12, PCISIG, request))
        assert response[:7] + response[7:9] == vdm_header(0x12, 0x7E) + PCISIG, response.hex()
        assert int.from_bytes(response[9:11], "little") == len(response) - 11
        return response[11:]

    state = tdisp(0x85)
    assert ask(tdisp(0x81)) == tdisp(0x01, b"\x01\x10")  # VERSION: one entry, 1.0
    assert ask(tdisp(0x82, bytes(4))) == TDISP_CAPS_RSP
    assert ask(state) == tdisp(0x05, b"\x00")  # CONFIG_UNLOCKED
    lock = ask(tdisp(0x83, LOCK_BODY))
    assert lock[:17] == tdisp(0x03) and len(lock) == 17 + 32  # START_INTERFACE_NONCE
    assert ask(state) == tdisp(0x05, b"\x01")  # CONFIG_LOCKED
    # MMIO range of function 7's BAR 0 (0xF0070000) reported at +0xD0000000: first page 0x1C0070, 4 pages
    assert ask(tdisp(0x84, b("00 00 40 00"))) == REPORT_RSP
    assert ask(tdisp(0x86, lock[17:])) == tdisp(0x06)
    assert ask(state) == tdisp(0x05, b"\x02")  # RUN
    assert ask(tdisp(0x87)) == tdisp(0x07)
    assert ask(state) == tdisp(0x05, b"\x00")


# --- what a PCIe-only device answers to the CXL exchanges ------------------------------------------------

@pytest.mark.parametrize("version", [0x12, 0x13])
def test_cxl_ide_km_query_gets_unsupported_request(version: int) -> None:
    _, peer, ps = connected(version)
    request = vdm(version, CXL, b("00 00 00 00"))
    assert request == bytes([version]) + b("fe 00 00 03 00 02 98 1e 04 00 00 00 00 00")
    assert peer.secured(ps, request) == bytes([version]) + b("7f 07 fe")  # UnsupportedRequest, ErrorData 0xFE
    # the session survives: the PCIe IDE_KM QUERY still answers afterwards
    assert peer.secured(ps, vdm(version, PCISIG, QUERY_PORT1))[:2] == bytes([version, 0x7E])


def test_cxl_tsp_get_version_gets_unsupported_request() -> None:
    _, peer, ps = connected(0x12)
    request = b("12 fe 00 00 03 00 02 98 1e 05 00 01 10 81 00 00")  # ProtocolID 1 (CXL TSP), GET_VERSION
    assert peer.secured(ps, request) == b("12 7f 07 fe")


# --- serve-device's option checks (found while scripting the runs) --------------------------------------

@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_device_port_out_of_range_is_a_user_error(port: str) -> None:
    parser = argparse.ArgumentParser()
    serve_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve-device", "--port", port])
    with pytest.raises(UserError, match=rf"--port {port}: a TCP port is 0-65535"):
        args.func(args, Console(file=io.StringIO()))
