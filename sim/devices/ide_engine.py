"""The device side of PCIe IDE: key slots per stream and sub-stream, GO/STOP, invocation counters, AES-GCM.

IDE_KM (PROTOCOLS.md §6.2) addresses one key slot by (stream ID, key set K0/K1, direction Rx/Tx,
sub-stream PR/NPR/CPL); each slot holds a 256-bit key and the 8-byte initial invocation field
value (IFV). K_SET_GO arms a key set: for Tx the newest GO'd set is the one used to send (the K bit
of the IDE prefix, §7.2); for Rx every GO'd set is accepted, which is what lets a key refresh
switch sets without dropping TLPs in flight (TRUST_MODELS.md §4: "refresh programs the other key set
and sends GO"). K_SET_STOP disarms and erases the slot.

Per-TLP crypto is AES-256-GCM with a 96-bit MAC and IV = 0x00000000 ‖ invocation field, which
starts at the IFV and increments once per TLP per slot (§7.2, [U] on the exact increment rule).

Lifetime (TRUST_MODELS.md §1, §3): everything is erased by a conventional reset; D3hot keeps it
(No_Soft_Reset, PCIe §6.33.8); an FLR of a function other than 0 keeps it. The engine itself only
offers :meth:`IdeEngine.clear`; the endpoint decides when to call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sim.crypto.aead import IDE_KEY_SIZE, ide_decrypt, ide_encrypt, ide_iv
from sim.crypto.errors import AeadError
from sim.wire.ide_km import IFV_BYTES, Direction, KeySet, KpAckStatus, SubStream

SUB_STREAMS = (SubStream.PR, SubStream.NPR, SubStream.CPL)
MAX_INVOCATION = (1 << 64) - 1


class IdeEngineError(RuntimeError):
    """A TLP could not be protected: no armed Tx key for the stream, or the invocation counter ran out."""


class IdeIntegrityError(Exception):
    """A received IDE TLP failed its MAC check or used a key set that is not armed; the stream is now insecure."""


SlotKey = tuple[KeySet, Direction, SubStream]


@dataclass
class KeySlot:
    """One programmed key: the AES key, its IFV, and the next invocation field value to use."""

    key: bytes
    ifv: bytes
    next_invocation: int

    @classmethod
    def from_ifv(cls, key: bytes, ifv: bytes) -> KeySlot:
        return cls(key, ifv, int.from_bytes(ifv, "big"))


@dataclass
class IdeStreamKeys:
    """Key material and armed key sets of one stream ID."""

    stream_id: int
    slots: dict[SlotKey, KeySlot] = field(default_factory=dict)
    rx_armed: dict[SubStream, set[KeySet]] = field(default_factory=dict)
    tx_current: dict[SubStream, KeySet] = field(default_factory=dict)
    integrity_failed: bool = False

    def ready(self) -> bool:
        """Both directions of all three sub-streams have an armed, programmed key set."""
        return not self.integrity_failed and all(
            s in self.tx_current and self.rx_armed.get(s) for s in SUB_STREAMS)


@dataclass(frozen=True)
class SealedPayload:
    """An encrypted TLP payload: which key set sealed it, the invocation used, ciphertext and 96-bit MAC."""

    key_set: KeySet
    invocation: int
    ciphertext: bytes
    mac: bytes


class IdeEngine:
    """Device IDE key slots for up to ``max_streams`` stream IDs on ``ports`` port indices (usually one).

    ``on_change(stream_id)`` fires whenever a stream's readiness may have changed (the endpoint then
    updates its IDE Status registers). ``observe_stored(value)`` is told about every key and IFV the
    engine keeps, so the exposure tracker can count the device as holding them.
    """

    def __init__(self, *, max_streams: int = 1, ports: int = 1,
                 on_change: Callable[[int], None] | None = None,
                 observe_stored: Callable[[bytes], None] | None = None) -> None:
        if max_streams < 1 or ports < 1:
            raise ValueError("an IDE engine needs at least one stream and one port")
        self.max_streams = max_streams
        self.ports = ports
        self.on_change = on_change
        self.observe_stored = observe_stored
        # told about every slot operation that took effect: (op, stream id, slot or None, key+IFV or b"");
        # the endpoint traces them, so the device side of keying shows in the trace as the Root Port's does
        self.on_slot: Callable[[str, int, tuple[KeySet, Direction, SubStream] | None, bytes], None] | None = None
        self._streams: dict[int, IdeStreamKeys] = {}

    # --- IDE_KM side (the DSM calls these) ---
    def program(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
                sub_stream: SubStream, key: bytes, ifv: bytes) -> KpAckStatus:
        """KEY_PROG: store one key + IFV. The returned status goes into KP_ACK.

        Reprogramming a slot disarms it until the next K_SET_GO (the same rule as the Root Port's
        key slots): a key never changes under traffic without an explicit GO.
        """
        if not 0 <= port_index < self.ports:
            return KpAckStatus.UNSUPPORTED_PORT_INDEX
        if len(key) != IDE_KEY_SIZE or len(ifv) != IFV_BYTES:
            return KpAckStatus.INCORRECT_LENGTH
        if not 0 <= stream_id <= 0xFF:
            return KpAckStatus.UNSUPPORTED_VALUE
        stream = self._streams.get(stream_id)
        if stream is None:
            if len(self._streams) >= self.max_streams:
                return KpAckStatus.UNSUPPORTED_VALUE
            stream = self._streams[stream_id] = IdeStreamKeys(stream_id)
        self._disarm(stream, key_set, direction, sub_stream)
        stream.slots[(key_set, direction, sub_stream)] = KeySlot.from_ifv(bytes(key), bytes(ifv))
        if self.observe_stored is not None:
            self.observe_stored(bytes(key) + bytes(ifv))
        self._slot("program", stream_id, (key_set, direction, sub_stream), bytes(key) + bytes(ifv))
        self._changed(stream_id)
        return KpAckStatus.SUCCESS

    def set_go(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
               sub_stream: SubStream) -> bool:
        """K_SET_GO: arm a programmed key set. False (nothing changes) when the slot is empty."""
        stream = self._streams.get(stream_id)
        if not 0 <= port_index < self.ports or stream is None or (key_set, direction, sub_stream) not in stream.slots:
            return False
        if direction is Direction.TX:
            stream.tx_current[sub_stream] = key_set
        else:
            stream.rx_armed.setdefault(sub_stream, set()).add(key_set)
        self._slot("go", stream_id, (key_set, direction, sub_stream))
        self._changed(stream_id)
        return True

    def set_stop(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
                 sub_stream: SubStream) -> bool:
        """K_SET_STOP: disarm and erase a key slot. False when there was nothing to stop."""
        stream = self._streams.get(stream_id)
        if not 0 <= port_index < self.ports or stream is None:
            return False
        existed = stream.slots.pop((key_set, direction, sub_stream), None) is not None
        self._disarm(stream, key_set, direction, sub_stream)
        if not stream.slots:
            del self._streams[stream_id]
        if existed:
            self._slot("stop", stream_id, (key_set, direction, sub_stream))
        self._changed(stream_id)
        return existed

    # --- hardware side ---
    def ready(self, stream_id: int) -> bool:
        stream = self._streams.get(stream_id)
        return stream is not None and stream.ready()

    def stream_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._streams))

    def stream(self, stream_id: int) -> IdeStreamKeys | None:
        return self._streams.get(stream_id)

    def slot_count(self) -> int:
        """How many key slots hold a key (0 after a conventional reset)."""
        return sum(len(s.slots) for s in self._streams.values())

    def has_key(self, key: bytes) -> bool:
        return any(slot.key == key for s in self._streams.values() for slot in s.slots.values())

    def clear(self) -> None:
        """Erase every key and arming (conventional reset, or an FLR of the DSM function under that policy)."""
        ids = list(self._streams)
        self._streams.clear()
        for sid in ids:
            self._slot("clear", sid, None)
            self._changed(sid)

    def seal(self, stream_id: int, sub_stream: SubStream, aad: bytes, plaintext: bytes) -> SealedPayload:
        """Encrypt one outgoing TLP payload with the current Tx key set of the sub-stream."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.ready():
            raise IdeEngineError(f"IDE stream {stream_id} is not ready to transmit")
        key_set = stream.tx_current[sub_stream]
        slot = stream.slots[(key_set, Direction.TX, sub_stream)]
        invocation = self._take_invocation(slot)
        ciphertext, mac = ide_encrypt(slot.key, ide_iv(invocation), plaintext, aad)
        return SealedPayload(key_set, invocation, ciphertext, mac)

    def open(self, stream_id: int, sub_stream: SubStream, key_set: KeySet, aad: bytes,
             ciphertext: bytes, mac: bytes) -> bytes:
        """Check and decrypt one incoming TLP payload. A failure marks the stream failed (-> Insecure)."""
        stream = self._streams.get(stream_id)
        if stream is None or key_set not in stream.rx_armed.get(sub_stream, set()) or stream.integrity_failed:
            self._fail(stream)
            raise IdeIntegrityError(f"IDE stream {stream_id}: no armed Rx key {key_set.name} for {sub_stream.name}")
        slot = stream.slots[(key_set, Direction.RX, sub_stream)]
        try:
            invocation = self._take_invocation(slot)
            return ide_decrypt(slot.key, ide_iv(invocation), ciphertext, mac, aad)
        except (AeadError, IdeEngineError) as exc:
            self._fail(stream)
            raise IdeIntegrityError(f"IDE stream {stream_id} {sub_stream.name}: {exc}") from None

    def mark_failed(self, stream_id: int) -> None:
        """The stream stops being usable until its keys are stopped and reprogrammed (integrity failure)."""
        self._fail(self._streams.get(stream_id))

    # --- internals ---
    @staticmethod
    def _disarm(stream: IdeStreamKeys, key_set: KeySet, direction: Direction, sub_stream: SubStream) -> None:
        if direction is Direction.TX:
            if stream.tx_current.get(sub_stream) is key_set:
                del stream.tx_current[sub_stream]
        else:
            stream.rx_armed.get(sub_stream, set()).discard(key_set)

    @staticmethod
    def _take_invocation(slot: KeySlot) -> int:
        if slot.next_invocation > MAX_INVOCATION:
            raise IdeEngineError("IDE invocation counter exhausted: the key must be refreshed")
        value = slot.next_invocation
        slot.next_invocation += 1
        return value

    def _fail(self, stream: IdeStreamKeys | None) -> None:
        if stream is not None and not stream.integrity_failed:
            stream.integrity_failed = True
            self._changed(stream.stream_id)

    def _slot(self, op: str, stream_id: int, slot: tuple[KeySet, Direction, SubStream] | None,
              data: bytes = b"") -> None:
        if self.on_slot is not None:
            self.on_slot(op, stream_id, slot, data)

    def _changed(self, stream_id: int) -> None:
        if self.on_change is not None:
            self.on_change(stream_id)
