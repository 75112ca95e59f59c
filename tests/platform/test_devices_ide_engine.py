"""Device IDE engine: IDE_KM key slots, GO/STOP, invocation counters and AES-GCM-256 / 96-bit MAC."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.devices.ide_engine import SUB_STREAMS, IdeEngine, IdeEngineError, IdeIntegrityError
from sim.wire.ide_km import Direction, KeySet, KpAckStatus, SubStream, dw_reverse

# PROTOCOLS.md §6.3 worked example: the key as it travels in KEY_PROG, and IFV 1
WIRE_KEY = bytes.fromhex("524125dfe0026e05eb7f8befd9d4399701b84e6af71d2403b4245ecd2027cd9c")
KEY = dw_reverse(WIRE_KEY)
IFV = (1).to_bytes(8, "big")
KEY_B = bytes(range(32))


def keyed_pair(stream_id: int = 3, key_set: KeySet = KeySet.K0) -> tuple[IdeEngine, IdeEngine]:
    """A device engine and a partner whose Rx key is the device's Tx key and vice versa."""
    dev, partner = IdeEngine(), IdeEngine()
    for ss in SUB_STREAMS:
        for eng, tx_key, rx_key in ((dev, KEY, KEY_B), (partner, KEY_B, KEY)):
            assert eng.program(0, stream_id, key_set, Direction.TX, ss, tx_key, IFV) is KpAckStatus.SUCCESS
            assert eng.program(0, stream_id, key_set, Direction.RX, ss, rx_key, IFV) is KpAckStatus.SUCCESS
    for eng in (dev, partner):
        assert not eng.ready(stream_id)
        for ss in SUB_STREAMS:
            assert eng.set_go(0, stream_id, key_set, Direction.RX, ss)
            assert eng.set_go(0, stream_id, key_set, Direction.TX, ss)
        assert eng.ready(stream_id)
    return dev, partner


def test_key_as_programmed_matches_the_worked_example() -> None:
    assert KEY[:8] == bytes.fromhex("df254152056e02e0")


def test_seal_known_answer_against_independent_aes_gcm() -> None:
    dev, _ = keyed_pair()
    aad, data = bytes.fromhex("40000001000000ff"), b"payload!" * 4
    first = dev.seal(3, SubStream.PR, aad, data)
    second = dev.seal(3, SubStream.PR, aad, data)
    for sealed, invocation in ((first, 1), (second, 2)):
        iv = bytes(4) + invocation.to_bytes(8, "big")  # fixed 0 ‖ invocation field starting at the IFV
        full = AESGCM(KEY).encrypt(iv, data, aad)
        assert sealed.invocation == invocation
        assert sealed.ciphertext == full[:-16] and sealed.mac == full[-16:-4]  # 96-bit MAC = leftmost 12 bytes
        assert sealed.key_set is KeySet.K0
    assert first.ciphertext != second.ciphertext


def test_partner_opens_what_the_device_seals_in_each_sub_stream() -> None:
    dev, partner = keyed_pair()
    for ss in SUB_STREAMS:
        for n in range(3):
            aad, data = bytes([ss, n]) * 6, f"{ss.name}-{n}".encode() * 3
            s = dev.seal(3, ss, aad, data)
            assert partner.open(3, ss, s.key_set, aad, s.ciphertext, s.mac) == data
            back = partner.seal(3, ss, aad, data[::-1])
            assert dev.open(3, ss, back.key_set, aad, back.ciphertext, back.mac) == data[::-1]


def test_tampering_fails_the_stream() -> None:
    dev, partner = keyed_pair()
    s = dev.seal(3, SubStream.NPR, b"hdr", b"secret data")
    bad = bytes([s.ciphertext[0] ^ 1]) + s.ciphertext[1:]
    with pytest.raises(IdeIntegrityError):
        partner.open(3, SubStream.NPR, s.key_set, b"hdr", bad, s.mac)
    assert not partner.ready(3)
    # once failed, even good TLPs are refused until the keys are replaced
    s2 = dev.seal(3, SubStream.NPR, b"hdr", b"more")
    with pytest.raises(IdeIntegrityError):
        partner.open(3, SubStream.NPR, s2.key_set, b"hdr", s2.ciphertext, s2.mac)


def test_replayed_tlp_fails_because_the_counter_moved_on() -> None:
    dev, partner = keyed_pair()
    s = dev.seal(3, SubStream.PR, b"h", b"once")
    assert partner.open(3, SubStream.PR, s.key_set, b"h", s.ciphertext, s.mac) == b"once"
    with pytest.raises(IdeIntegrityError):
        partner.open(3, SubStream.PR, s.key_set, b"h", s.ciphertext, s.mac)


def test_kp_ack_statuses() -> None:
    eng = IdeEngine(max_streams=1)
    assert eng.program(1, 0, KeySet.K0, Direction.TX, SubStream.PR, KEY, IFV) is KpAckStatus.UNSUPPORTED_PORT_INDEX
    assert eng.program(0, 0, KeySet.K0, Direction.TX, SubStream.PR, KEY[:16], IFV) is KpAckStatus.INCORRECT_LENGTH
    assert eng.program(0, 0, KeySet.K0, Direction.TX, SubStream.PR, KEY, IFV[:4]) is KpAckStatus.INCORRECT_LENGTH
    assert eng.program(0, 0, KeySet.K0, Direction.TX, SubStream.PR, KEY, IFV) is KpAckStatus.SUCCESS
    # a second stream ID does not fit an engine with one stream register block
    assert eng.program(0, 1, KeySet.K0, Direction.TX, SubStream.PR, KEY, IFV) is KpAckStatus.UNSUPPORTED_VALUE
    assert eng.slot_count() == 1


def test_go_needs_a_programmed_slot_and_stop_erases() -> None:
    eng = IdeEngine()
    assert not eng.set_go(0, 5, KeySet.K0, Direction.TX, SubStream.PR)
    dev, _ = keyed_pair(stream_id=5)
    assert dev.slot_count() == 6  # K0 x {Rx, Tx} x {PR, NPR, CPL}
    assert dev.set_stop(0, 5, KeySet.K0, Direction.TX, SubStream.CPL)
    assert not dev.ready(5)
    with pytest.raises(IdeEngineError):
        dev.seal(5, SubStream.PR, b"", b"x")
    assert not dev.set_stop(0, 5, KeySet.K0, Direction.TX, SubStream.CPL)  # nothing left there
    for ss in SUB_STREAMS:
        for d in Direction:
            dev.set_stop(0, 5, KeySet.K0, d, ss)
    assert dev.stream_ids() == () and dev.slot_count() == 0


def test_key_refresh_switches_sets_without_losing_tlps_in_flight() -> None:
    dev, partner = keyed_pair()
    in_flight = dev.seal(3, SubStream.PR, b"h", b"old key")
    new_key = bytes(reversed(KEY))
    # refresh: program K1 on both ends, arm Rx first, then switch Tx (TRUST_MODELS.md §4 order)
    for ss in SUB_STREAMS:
        assert partner.program(0, 3, KeySet.K1, Direction.RX, ss, new_key, IFV) is KpAckStatus.SUCCESS
        assert dev.program(0, 3, KeySet.K1, Direction.TX, ss, new_key, IFV) is KpAckStatus.SUCCESS
        assert partner.set_go(0, 3, KeySet.K1, Direction.RX, ss)
        assert dev.set_go(0, 3, KeySet.K1, Direction.TX, ss)
    fresh = dev.seal(3, SubStream.PR, b"h", b"new key")
    assert fresh.key_set is KeySet.K1
    assert partner.open(3, SubStream.PR, KeySet.K1, b"h", fresh.ciphertext, fresh.mac) == b"new key"
    assert partner.open(3, SubStream.PR, KeySet.K0, b"h", in_flight.ciphertext, in_flight.mac) == b"old key"


def test_reprogramming_an_armed_slot_disarms_it() -> None:
    dev, _ = keyed_pair()
    assert dev.program(0, 3, KeySet.K0, Direction.TX, SubStream.PR, KEY_B, IFV) is KpAckStatus.SUCCESS
    assert not dev.ready(3)
    assert dev.set_go(0, 3, KeySet.K0, Direction.TX, SubStream.PR)
    assert dev.ready(3)


def test_clear_and_change_notifications_and_stored_values() -> None:
    changes: list[int] = []
    stored: list[bytes] = []
    eng = IdeEngine(max_streams=2, on_change=changes.append, observe_stored=stored.append)
    eng.program(0, 7, KeySet.K0, Direction.RX, SubStream.CPL, KEY, IFV)
    assert changes == [7] and stored == [KEY + IFV]
    assert eng.has_key(KEY)
    eng.clear()
    assert eng.slot_count() == 0 and not eng.has_key(KEY) and changes == [7, 7]


def test_fail_message_marks_stream_failed() -> None:
    dev, _ = keyed_pair()
    dev.mark_failed(3)
    assert not dev.ready(3)


def test_invocation_counter_exhaustion_refuses_to_reuse_an_iv() -> None:
    eng = IdeEngine()
    top = (2**64 - 1).to_bytes(8, "big")
    for ss in SUB_STREAMS:
        for d in Direction:
            eng.program(0, 0, KeySet.K0, d, ss, KEY, top)
            eng.set_go(0, 0, KeySet.K0, d, ss)
    eng.seal(0, SubStream.PR, b"", b"last IV")
    with pytest.raises(IdeEngineError):
        eng.seal(0, SubStream.PR, b"", b"would wrap")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=256), st.binary(min_size=1, max_size=24), st.sampled_from(SUB_STREAMS),
       st.integers(0, 8 * 24 - 1))
def test_any_payload_round_trips_and_any_bit_flip_in_aad_is_caught(data: bytes, aad: bytes, ss: SubStream,
                                                                   bit: int) -> None:
    dev, partner = keyed_pair()
    s = dev.seal(3, ss, aad, data)
    bit %= 8 * len(aad)
    flipped = bytearray(aad)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IdeIntegrityError):
        partner.open(3, ss, s.key_set, bytes(flipped), s.ciphertext, s.mac)
    _, partner2 = keyed_pair()
    assert partner2.open(3, ss, s.key_set, aad, s.ciphertext, s.mac) == data
