"""The link: DMA over a Secure selective stream is real AES-GCM-256 ciphertext with a 96-bit MAC,
tampering is caught, key mismatches are caught, and the link carries resets and state."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sim.devices.config_space import IdeStreamState
from sim.engine.exposure import Exposure
from sim.engine.trace import Channel
from sim.rootport.link import LinkReset, LinkState, Side
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.tlp import IDE_PREFIX_BYTE, IdeTlp, Tlp, decode_tlp
from tests.platform.rootport_testbench import IFV, build, key_stream

PLAINTEXT = bytes(range(0x40, 0x80))  # 64 bytes, DW-aligned, recognisable


def _independent_open(key: bytes, invocation: int, itlp: IdeTlp) -> bytes:
    """Decrypt with `cryptography` directly (not the simulator's helpers): IV = 0^4 ‖ counter, AAD = header."""
    iv = bytes(4) + invocation.to_bytes(8, "big")
    dec = Cipher(algorithms.AES(key), modes.GCM(iv, itlp.mac, min_tag_length=12)).decryptor()
    dec.authenticate_additional_data(itlp.header_bytes())
    return dec.update(itlp.ciphertext) + dec.finalize()


def test_dma_over_secure_stream_is_ciphertext_on_the_wire() -> None:
    p = build()
    keys = key_stream(p, stream_id=5)
    assert p.rp.stream_state(0) is IdeStreamState.SECURE
    assert p.ep.dma_write(0, 0x2000, PLAINTEXT)
    assert p.ep.dma_write(0, 0x2040, PLAINTEXT[::-1])
    p.world.run()
    assert p.rp.host_memory.read(0x2000, 64) == PLAINTEXT
    assert p.rp.host_memory.read(0x2040, 64) == PLAINTEXT[::-1]
    wires = [e.data for e in p.sink.on(Channel.TLP) if e.source == p.ep_path]
    assert len(wires) == 2
    for n, wire in enumerate(wires):
        assert wire[0] == IDE_PREFIX_BYTE
        assert PLAINTEXT not in wire and PLAINTEXT[::-1] not in wire
        assert PLAINTEXT[:16] not in wire
        itlp = decode_tlp(wire)
        assert isinstance(itlp, IdeTlp)
        assert itlp.prefix.stream_id == 5 and itlp.prefix.sub_stream is SubStream.PR
        assert len(itlp.mac or b"") == 12
        # the invocation counter starts at the IFV (1) and advances once per TLP of the sub-stream
        expected = PLAINTEXT if n == 0 else PLAINTEXT[::-1]
        assert _independent_open(keys.upstream[SubStream.PR], 1 + n, itlp) == expected
    # a wrong counter value does not authenticate: the IV really is 0^4 ‖ counter
    with pytest.raises(InvalidTag):
        _independent_open(keys.upstream[SubStream.PR], 1, decode_tlp(wires[1]))  # type: ignore[arg-type]


def test_the_t_bit_on_the_wire_is_the_requests_and_only_t1_reaches_tee_memory() -> None:
    """The link seals for the endpoint with the T bit the endpoint asked for: a plain (T=0) DMA over the
    Secure stream does not reach TEE memory, a TEE request (T=1) does; completions carry the request's T."""
    p = build()
    key_stream(p, stream_id=5)
    p.rp.protect_tee_memory(0x10000, 0x1000)
    assert p.ep.dma_write(0, 0x10000, PLAINTEXT)
    p.world.run()
    assert p.rp.host_memory.read(0x10000, 64) == bytes(64)
    assert p.ep.dma_write(0, 0x10040, PLAINTEXT, tee=True)
    p.world.run()
    assert p.rp.host_memory.read(0x10040, 64) == PLAINTEXT
    up = [decode_tlp(e.data) for e in p.sink.on(Channel.TLP) if e.source == p.ep_path]
    assert [t.prefix.tee for t in up if isinstance(t, IdeTlp)] == [0, 1]
    rid = p.ep.requester_id(0)  # RID association, so that completions to the device use the stream
    p.rp.cfg_write(0x100 + 0x0C + 0x0C, rid << 8, by="host")
    p.rp.cfg_write(0x100 + 0x0C + 0x10, rid << 8 | 1, by="host")
    got: list[bytes] = []
    assert p.ep.dma_read(0, 0x10040, 64, lambda status, data: got.append(data), tee=True)
    p.world.run()
    assert got == [PLAINTEXT]
    down = [decode_tlp(e.data) for e in p.sink.on(Channel.TLP) if e.source == "rp0"]
    assert [t.prefix.tee for t in down if isinstance(t, IdeTlp)] == [1]


def test_dma_read_completion_comes_back_encrypted_in_cpl_substream() -> None:
    p = build()
    key_stream(p, stream_id=9)
    # RID association on the RP block: the endpoint's RID 01:00.0 (valid), so completions pick the stream
    rid = p.ep.requester_id(0)
    p.rp.cfg_write(0x100 + 0x0C + 0x0C, rid << 8, by="host")
    p.rp.cfg_write(0x100 + 0x0C + 0x10, rid << 8 | 1, by="host")
    p.rp.host_memory.write(0x8000, PLAINTEXT)
    got: list[tuple[object, bytes]] = []
    assert p.ep.dma_read(0, 0x8000, 64, lambda status, data: got.append((status, data)))
    p.world.run()
    assert got and got[0][1] == PLAINTEXT
    down = [e for e in p.sink.on(Channel.TLP) if e.source == "rp0"]
    assert len(down) == 1 and down[0].data[0] == IDE_PREFIX_BYTE
    itlp = decode_tlp(down[0].data)
    assert isinstance(itlp, IdeTlp) and itlp.prefix.sub_stream is SubStream.CPL
    assert PLAINTEXT not in down[0].data


def test_tampered_tlp_is_caught_and_stream_goes_insecure() -> None:
    p = build()
    key_stream(p, stream_id=5)
    failures: list[tuple[Side, int]] = []
    rp_failures: list[int] = []
    p.link.integrity_listeners.append(lambda side, sid: failures.append((side, sid)))
    p.rp.integrity_listeners.append(rp_failures.append)
    seen: list[bytes] = []

    def flip_one_bit(side: Side, wire: bytes) -> bytes:
        seen.append(wire)
        damaged = bytearray(wire)
        damaged[20] ^= 0x01  # inside the ciphertext (prefix 4 + 3DW header 12 = 16)
        return bytes(damaged)

    p.link.set_interposer(flip_one_bit, "adversary")
    assert p.ep.dma_write(0, 0x3000, PLAINTEXT)
    p.world.run()
    assert len(seen) == 1 and seen[0][0] == IDE_PREFIX_BYTE  # the interposer saw exactly the wire bytes
    assert p.rp.host_memory.read(0x3000, 64) == bytes(64)  # nothing was written
    assert failures == [(Side.ROOT_PORT, 5)] and rp_failures == [0]
    assert p.rp.stream_state(0) is IdeStreamState.INSECURE
    assert not p.rp.stream_keys(0).slots  # detected here: the keys are invalidated
    # the device heard the IDE Fail Message: its Status bit 31 is set and its stream is Insecure
    assert p.ep.ide_cap.reg(p.ep.ide_cap.selective_blocks()[0].status).value >> 31 == 1
    assert p.ep.secure_stream() is None
    ide_events = [e.summary for e in p.sink.on(Channel.IDE)]
    assert any("integrity check failed stream=5" in s for s in ide_events)
    assert any("INSECURE" in s for s in ide_events)
    # the adversary is recorded as an observer of the bytes it saw; the keys stay NEVER for it
    assert p.world.exposure.matrix().get(p.world.exposure.records[0].secret_class, "adversary") is Exposure.NEVER


def test_key_mismatch_is_an_integrity_failure() -> None:
    p = build()
    key_stream(p, stream_id=5)
    # reprogram the device's PR Tx key with a different key (K1, then switch Tx to it): RP has no K1 Rx key
    assert p.ep.ide.program(0, 5, KeySet.K1, Direction.TX, SubStream.PR, b"\x11" * 32, IFV) == 0
    assert p.ep.ide.set_go(0, 5, KeySet.K1, Direction.TX, SubStream.PR)
    assert p.ep.dma_write(0, 0x4000, PLAINTEXT)
    p.world.run()
    assert p.rp.stream_state(0) is IdeStreamState.INSECURE
    assert p.rp.host_memory.read(0x4000, 64) == bytes(64)


def test_clear_tlps_flow_when_no_stream_is_secure() -> None:
    p = build()
    assert p.ep.dma_write(0, 0x5000, PLAINTEXT)
    p.world.run()
    wire = [e.data for e in p.sink.on(Channel.TLP)][0]
    assert PLAINTEXT in wire and isinstance(decode_tlp(wire), Tlp)
    assert p.rp.host_memory.read(0x5000, 64) == PLAINTEXT


def test_hop_latency_and_interposer_drop() -> None:
    p = build()
    t0 = p.world.now
    p.ep.dma_write(0, 0x100, b"\xaa" * 4)
    p.world.run()
    assert p.world.now - t0 == p.link.hop_ns > 0
    p.link.set_interposer(lambda side, wire: None, "eve")
    p.ep.dma_write(0, 0x200, b"\xbb" * 4)
    p.world.run()
    assert p.rp.host_memory.read(0x200, 4) == bytes(4)
    assert p.link.stats["dropped"] == 1


def test_injected_corruption_and_drop_of_tlps() -> None:
    p = build()
    key_stream(p, stream_id=5)
    p.world.faults.inject("rp0.link", "drop-tlp")
    p.ep.dma_write(0, 0x100, PLAINTEXT)
    p.world.run()
    assert p.rp.host_memory.read(0x100, 64) == bytes(64)
    assert p.rp.stream_state(0) is IdeStreamState.SECURE  # a lost TLP is not an integrity failure here
    p.world.faults.inject("rp0.link", "corrupt-tlp")
    p.ep.dma_write(0, 0x200, PLAINTEXT)
    p.world.run()
    assert p.rp.host_memory.read(0x200, 64) == bytes(64)


def test_link_down_resets_endpoint_and_clears_keys_and_retrains() -> None:
    p = build()
    key_stream(p, stream_id=5)
    resets: list[LinkReset] = []
    original = p.ep.on_link_reset

    def spy(reason: LinkReset) -> None:
        resets.append(reason)
        original(reason)

    p.link._endpoint.reset = spy  # type: ignore[union-attr]
    p.world.faults.inject("rp0.link", "link-down")
    assert p.link.state is LinkState.DOWN and resets == [LinkReset.LINK_DOWN]
    assert p.rp.stream_state(0) is IdeStreamState.INSECURE and not p.rp.stream_keys(0).slots
    assert p.ep.ide.slot_count() == 0  # the device lost its keys too (conventional reset)
    assert p.link.cfg_read(0, 0, by="host") == 0xFFFF_FFFF
    p.world.faults.inject("rp0.link", "link-up")
    assert p.link.state is LinkState.TRAINING
    p.world.run()
    assert p.link.state is LinkState.UP
    assert p.link.cfg_read(0, 0, by="host") != 0xFFFF_FFFF


def test_tlps_in_flight_are_lost_when_the_link_drops() -> None:
    p = build()
    p.ep.dma_write(0, 0x100, PLAINTEXT)
    p.link.surprise_down()
    p.world.run()
    assert p.rp.host_memory.read(0x100, 64) == bytes(64)
    assert any("lost in flight" in e.summary for e in p.sink.on(Channel.LINK))


def test_d3cold_takes_the_link_down_without_dpc_and_power_up_retrains() -> None:
    p = build()
    key_stream(p, stream_id=5)
    p.rp.cfg_write(0x100 + 0x8C + 6, 0x9, 2, by="kernel")  # DPC enabled: D3cold must still not trigger it
    p.world.faults.inject("rp0.dev0", "d3cold-entry")
    assert p.link.state is LinkState.DOWN
    assert not p.rp.dpc.triggered
    assert p.rp.stream_state(0) is IdeStreamState.INSECURE and not p.rp.stream_keys(0).slots
    assert p.ep.ide.slot_count() == 0
    p.world.faults.inject("rp0.link", "link-up")  # nothing trains while the endpoint has no power
    assert p.link.state is LinkState.DOWN
    p.world.faults.inject("rp0.dev0", "d3cold-exit")
    p.world.run()
    assert p.link.state is LinkState.UP and p.ep.link_up
