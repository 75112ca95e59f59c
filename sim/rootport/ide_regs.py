"""Root Port IDE: the IDE extended capability and the key slots that config space cannot reach.

Registers: the IDE capability (ID 0x30) exactly as PROTOCOLS.md §7.1 lays it out, built from the
shared :class:`sim.devices.config_space.IdeCapability` (IDE Capability, IDE Control, selective
stream blocks with Capability, Control, Status, RID Association 1/2 and address association
blocks). Each selective stream block is one entry of the Root Port's register-block pool (Linux
``pci_ide_stream_alloc`` draws from such a pool).

Key slots: per selective stream block, K0/K1 x Rx/Tx x PR/NPR/CPL, each a 256-bit key plus the
64-bit initial invocation field (IFV). No register maps them: real platforms reach them through
a private path (TDX: KCBAR under the SEAM SAI; Arm CCA: EL3 ``RP_IDE_KEY_PROGRAM``; AMD: the PSP
"via some internal bus mechanism", TRUST_MODELS.md §2/§5). :class:`KeyProgrammingPort` is that
path; it records which principal wrote every slot, which is how the trust models differ.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sim.crypto.aead import IDE_KEY_SIZE
from sim.devices.config_space import IdeCapability, IdeCapFlag, IdeStreamBlock, RegisterWrite
from sim.engine.trace import Channel, EventKind
from sim.wire.ide_km import IFV_BYTES, Direction, KeySet, SubStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from sim.rootport.root_port import RootPort

ROOT_PORT_IDE_FLAGS = IdeCapFlag.SELECTIVE | IdeCapFlag.IDE_KM | IdeCapFlag.TEE_LIMITED | IdeCapFlag.SELECTIVE_CONFIG
SLOTS_PER_STREAM = len(KeySet) * len(Direction) * len(SubStream)  # 12


def root_port_ide_capability(streams: int, addr_assoc: int,
                             on_stream_control: Callable[[IdeStreamBlock, RegisterWrite], None]) -> IdeCapability:
    """IDE capability of a Root Port: selective streams only (TEE-I/O needs selective streams,
    TRUST_MODELS.md §4), IDE_KM, TEE-limited streams, selective IDE for config requests."""
    if not 1 <= streams <= 256:
        raise ValueError("a Root Port has 1..256 selective stream register blocks")
    return IdeCapability(flags=ROOT_PORT_IDE_FLAGS, selective_assoc=(addr_assoc,) * streams,
                         on_stream_control=on_stream_control)


SlotKey = tuple[KeySet, Direction, SubStream]


@dataclasses.dataclass(frozen=True)
class KeySlot:
    """One programmed slot. ``ifv`` is the invocation field initial value (IV bytes 4..11)."""

    key: bytes
    ifv: int
    principal: str
    written_ns: int


class StreamKeySlots:
    """The 12 slots of one selective stream, which of them are live, and their invocation counters.

    Tx uses the key set most recently put into service by GO for that sub-stream; Rx accepts any
    live key set, chosen per TLP by the prefix K bit (that is what makes K0/K1 refresh seamless).
    """

    def __init__(self) -> None:
        self.slots: dict[SlotKey, KeySlot] = {}
        self.live: set[SlotKey] = set()
        self.tx_selected: dict[SubStream, KeySet] = {}
        self.counters: dict[SlotKey, int] = {}

    def program(self, slot: SlotKey, value: KeySlot) -> None:
        self.slots[slot] = value
        self.counters[slot] = value.ifv
        self.live.discard(slot)  # a reprogrammed slot must be put into service again by GO
        if slot[1] is Direction.TX and self.tx_selected.get(slot[2]) is slot[0]:
            del self.tx_selected[slot[2]]

    def go(self, slot: SlotKey) -> bool:
        if slot not in self.slots:
            return False
        self.live.add(slot)
        if slot[1] is Direction.TX:
            self.tx_selected[slot[2]] = slot[0]
        return True

    def stop(self, slot: SlotKey) -> None:
        self.live.discard(slot)
        if slot[1] is Direction.TX and self.tx_selected.get(slot[2]) is slot[0]:
            del self.tx_selected[slot[2]]

    def clear(self) -> None:
        self.slots.clear()
        self.live.clear()
        self.tx_selected.clear()
        self.counters.clear()

    def ready(self) -> bool:
        """Every sub-stream has a live Tx key set and at least one live Rx key set."""
        return all(ss in self.tx_selected and any((k, Direction.RX, ss) in self.live for k in KeySet)
                   for ss in SubStream)

    def next_tx(self, sub_stream: SubStream) -> tuple[KeySet, bytes, int] | None:
        """Key set, key and invocation value for the next Tx TLP of a sub-stream (advances the counter)."""
        k = self.tx_selected.get(sub_stream)
        if k is None:
            return None
        return (k, *self._take((k, Direction.TX, sub_stream)))

    def next_rx(self, key_set: KeySet, sub_stream: SubStream) -> tuple[bytes, int] | None:
        slot = (key_set, Direction.RX, sub_stream)
        if slot not in self.live:
            return None
        return self._take(slot)

    def _take(self, slot: SlotKey) -> tuple[bytes, int]:
        n = self.counters[slot]
        self.counters[slot] = n + 1
        return self.slots[slot].key, n


class KeySlotStatus(enum.IntEnum):
    """Result of a key-programming request (modeled on KP_ACK statuses, PROTOCOLS.md §6.2)."""

    SUCCESS = 0
    NOT_PERMITTED = 1       # this principal may not use the key-programming path
    NO_SUCH_STREAM = 2      # no selective stream register block with that index
    INVALID_KEY = 3         # key is not 32 bytes or IFV is not 8 bytes
    EMPTY_SLOT = 4          # GO for a slot with no key programmed
    PORT_DOWN = 5           # the port is contained (DPC) or its link is down: slots are held in reset


class KeyProgrammingPort:
    """The platform's private path to a Root Port's key slots.

    Every operation names the calling principal ("firmware.tsm", "vmm", ...), is traced on the
    key-slot channel (program carries the key and IFV bytes, so the exposure tracker sees who
    handled them), and records the principal per slot. ``allowed`` restricts who may call it;
    which principals are allowed is what a trust model declares.
    """

    def __init__(self, root_port: RootPort, *, allowed: Iterable[str] | None = None) -> None:
        self._rp = root_port
        self.allowed: frozenset[str] | None = None if allowed is None else frozenset(allowed)

    # -- operations -----------------------------------------------------------------------------------

    def program(self, principal: str, block: int, key_set: KeySet, direction: Direction, sub_stream: SubStream,
                key: bytes, ifv: bytes) -> KeySlotStatus:
        slot = (KeySet(key_set), Direction(direction), SubStream(sub_stream))
        status = self._check(principal, block)
        if status is KeySlotStatus.SUCCESS and (len(key) != IDE_KEY_SIZE or len(ifv) != IFV_BYTES):
            status = KeySlotStatus.INVALID_KEY
        if status is KeySlotStatus.SUCCESS:
            value = KeySlot(bytes(key), int.from_bytes(ifv, "big"), principal, self._rp.world.now)
            self._rp.stream_keys(block).program(slot, value)
            self._rp.world.exposure.observe_stored(self._rp.path, bytes(key) + bytes(ifv))
            self._rp.keys_changed(block)
        # the key bytes are traced only when the slot took them (a refused request stops at the path)
        self._trace(principal, "program", block, slot, status,
                    bytes(key) + bytes(ifv) if status is KeySlotStatus.SUCCESS else b"")
        return status

    def set_go(self, principal: str, block: int, key_set: KeySet, direction: Direction,
               sub_stream: SubStream) -> KeySlotStatus:
        slot = (KeySet(key_set), Direction(direction), SubStream(sub_stream))
        status = self._check(principal, block)
        if status is KeySlotStatus.SUCCESS:
            if self._rp.stream_keys(block).go(slot):
                self._rp.keys_changed(block)
            else:
                status = KeySlotStatus.EMPTY_SLOT
        self._trace(principal, "go", block, slot, status)
        return status

    def stop(self, principal: str, block: int, key_set: KeySet, direction: Direction,
             sub_stream: SubStream) -> KeySlotStatus:
        slot = (KeySet(key_set), Direction(direction), SubStream(sub_stream))
        status = self._check(principal, block, allow_down=True)
        if status is KeySlotStatus.SUCCESS:
            self._rp.stream_keys(block).stop(slot)
            self._rp.keys_changed(block)
        self._trace(principal, "stop", block, slot, status)
        return status

    def clear(self, principal: str, block: int) -> KeySlotStatus:
        status = self._check(principal, block, allow_down=True)
        if status is KeySlotStatus.SUCCESS:
            self._rp.stream_keys(block).clear()
            self._rp.keys_changed(block)
        self._trace(principal, "clear", block, None, status)
        return status

    # -- queries (what the principal bookkeeping is for) -----------------------------------------------

    def writer(self, block: int, key_set: KeySet, direction: Direction, sub_stream: SubStream) -> str | None:
        """The principal that wrote a slot, or None if it is empty."""
        slot = self._rp.stream_keys(block).slots.get((KeySet(key_set), Direction(direction), SubStream(sub_stream)))
        return None if slot is None else slot.principal

    def writers(self, block: int) -> dict[SlotKey, str]:
        return {k: v.principal for k, v in sorted(self._rp.stream_keys(block).slots.items())}

    # -- internals -------------------------------------------------------------------------------------

    def _check(self, principal: str, block: int, *, allow_down: bool = False) -> KeySlotStatus:
        if self.allowed is not None and principal not in self.allowed:
            return KeySlotStatus.NOT_PERMITTED
        if not 0 <= block < self._rp.stream_block_count:
            return KeySlotStatus.NO_SUCH_STREAM
        if not allow_down and not self._rp.keys_writable:
            return KeySlotStatus.PORT_DOWN
        return KeySlotStatus.SUCCESS

    def _trace(self, principal: str, op: str, block: int, slot: SlotKey | None, status: KeySlotStatus,
               data: bytes = b"") -> None:
        where = f"blk{block}" + ("" if slot is None else f" {slot[0].name} {slot[1].name} {slot[2].name}")
        self._rp.world.trace.emit(principal, self._rp.path, Channel.KEY_SLOT, data,
                                  f"{op} {where} -> {status.name}", kind=EventKind.KEY_SLOT,
                                  fields={"op": op, "block": block, "status": status.name,
                                          "key_set": None if slot is None else slot[0].name,
                                          "direction": None if slot is None else slot[1].name,
                                          "sub_stream": None if slot is None else slot[2].name})
