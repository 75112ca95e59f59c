"""One platform-firmware core: commands run one at a time, and the queue in front of it is measured.

A PSP-like security processor serves its mailbox with a single core; TDX Connect serializes its
SEAMCALLs with one lock (``tdx_ext_lock``, TRUST_MODELS.md §2, §6 metric 6: "serialization depth").
A command that needs the device holds the core across every DOE round trip of its SPDM_REQUEST
loop, which is exactly what makes a fleet of connects slow under the fat model. The core keeps a
time series of the queue depth (commands waiting plus the one in service) and, per command, when
it was queued, started and finished, so reports read waiting time instead of guessing it.

Every command that enters or leaves is traced on Channel.FIRMWARE with its real frame bytes
(:mod:`sim.firmware.commands`); entering costs ``Op.FW_COMMAND_DISPATCH`` on the caller's class (the
doorbell and world switch) and again on the firmware core (validation and scheduling).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import simpy

from sim.crypto.aead import aead_decrypt, record_iv
from sim.crypto.errors import CryptoError
from sim.devices.config_space import IdeStreamState
from sim.engine.runner import SimGen
from sim.engine.timing import Op
from sim.engine.trace import Channel, EventKind
from sim.engine.world import World
from sim.firmware.commands import frame_fields, summarize
from sim.protocols.spdm.session import SecureSession, SessionError, record_session_id
from sim.protocols.tsm import PhaseMark
from sim.scenario.platform import DeviceHandle
from sim.wire.codec import DecodeError
from sim.wire.secured import MacOnlyRecord, SecuredPlaintext, SecuredRecord

FIRMWARE_PATH = "firmware"


@dataclasses.dataclass
class CommandRecord:
    """One command's passage through the core (times in ns)."""

    command: str
    caller: str
    queued_ns: int
    started_ns: int = -1
    finished_ns: int = -1
    status: str = ""

    @property
    def wait_ns(self) -> int:
        return self.started_ns - self.queued_ns if self.started_ns >= 0 else -1

    @property
    def service_ns(self) -> int:
        return self.finished_ns - self.started_ns if self.finished_ns >= 0 else -1


class FirmwareCore:
    """The single core and its queue statistics (``depth_samples``: (time ns, depth) on every change)."""

    def __init__(self, world: World, path: str = FIRMWARE_PATH, *, channel: Channel = Channel.FIRMWARE) -> None:
        self.world = world
        self.path = path
        self.channel = channel
        self.resource = simpy.Resource(world.env, capacity=1)
        self.depth_samples: list[tuple[int, int]] = [(world.now, 0)]
        self.records: list[CommandRecord] = []
        self._depth = 0

    # -- statistics -----------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def max_depth(self) -> int:
        return max(d for _, d in self.depth_samples)

    def _set_depth(self, delta: int) -> None:
        self._depth += delta
        self.depth_samples.append((self.world.now, self._depth))

    # -- running commands ---------------------------------------------------------------------------

    def run(self, command: str, caller: str, body: Callable[[CommandRecord], SimGen[Any]]) -> SimGen[Any]:
        """Queue for the core, run ``body(record)`` (a SimPy generator) holding it, return its result."""
        record = CommandRecord(command, caller, self.world.now)
        self.records.append(record)
        self._set_depth(+1)
        try:
            with self.resource.request() as slot:
                yield slot
                record.started_ns = self.world.now
                yield self.world.delay(self.path, Op.FW_COMMAND_DISPATCH)
                result = yield from body(record)
        finally:
            record.finished_ns = self.world.now
            self._set_depth(-1)
        return result

    # -- tracing helpers ----------------------------------------------------------------------------

    def trace_in(self, caller: str, frame: bytes, *, secured_plaintext: bytes | None = None) -> None:
        self.world.trace.emit(caller, self.path, self.channel, frame, summarize(frame),
                              secured_plaintext=secured_plaintext, kind=EventKind.FIRMWARE_MESSAGE,
                              fields=frame_fields(frame))

    def trace_out(self, caller: str, frame: bytes, *, secured_plaintext: bytes | None = None) -> None:
        self.world.trace.emit(self.path, caller, self.channel, frame, summarize(frame),
                              secured_plaintext=secured_plaintext, kind=EventKind.FIRMWARE_MESSAGE,
                              fields=frame_fields(frame))

    def caller_dispatch(self, caller: str) -> simpy.Timeout:
        """The caller's cost of issuing one command (or re-issuing one after an SPDM_REQUEST)."""
        try:
            return self.world.delay(caller, Op.FW_COMMAND_DISPATCH)
        except KeyError:  # a caller that is not a registered component (a unit test): host-cpu cost
            return self.world.timeout(self.world.timing.cost("host-cpu", Op.FW_COMMAND_DISPATCH))


# ------------------------------------------------------------------------------------------------
# What a secured record carries: simulator bookkeeping for the exposure tracker
# ------------------------------------------------------------------------------------------------


def peek_secured_record(sessions: Mapping[int, object], record: bytes, *, outgoing: bool) -> bytes | None:
    """The SPDM message inside a secured record of one of the requester's ``sessions``, or None.

    A carrier of a secured record (host, VMM) must be traced with ``secured_plaintext`` so that the
    secrets inside count as SAW_CIPHERTEXT_ONLY for it (DESIGN.md "Measured, not asserted"). The
    requester that sealed (``outgoing``) or will open (not ``outgoing``) the record knows its
    content; this helper recovers it from the session's current keys and sequence numbers
    *without* changing the session (no counter advances, nothing is metered: it is bookkeeping,
    not work the requester does). ``sessions`` maps SessionID to a SessionHandle or SecureSession
    (``SpdmRequester.sessions``). Anything that is not such a record gives None.
    """
    try:
        handle = sessions.get(record_session_id(record))
        secure = getattr(handle, "secure", handle)
        if not isinstance(secure, SecureSession):
            return None
        direction = secure.role.send_direction if outgoing else secure.role.receive_direction
        seq = secure.sequence_number(direction) - (1 if outgoing else 0)
        if seq < 0:
            return None
        keys = secure.keys.keys(direction, secure.phase)
        if not secure.encrypt:
            return MacOnlyRecord.decode(record, secure.framing).app_data
        parsed = SecuredRecord.decode(record, secure.framing)
        plain = aead_decrypt(secure.aead, keys.key, record_iv(keys.salt, seq, secure.sequence_order),
                             parsed.ciphertext, parsed.mac, parsed.aad())
        return SecuredPlaintext.decode(plain).app_data
    except (DecodeError, CryptoError, SessionError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------
# Stream enable (config registers, not secret) and phase milestones
# ------------------------------------------------------------------------------------------------

IDE_SEL_CTL_ENABLE = 1 << 0
IDE_SEL_CTL_DEFAULT = 1 << 22
IDE_SEL_RID1 = 0x0C   # RID Association 1: RID limit [23:8]
IDE_SEL_RID2 = 0x10   # RID Association 2: valid [0], RID base [23:8]


def enable_selective_stream(world: World, handle: DeviceHandle, block: int, stream_id: int, *,
                            by: str) -> SimGen[bool]:
    """Program and enable one selective IDE stream on the Root Port (register block ``block``) and on
    the endpoint (its first selective block), Root Port first as SEV-TIO's ``dsm_connect`` does
    (TRUST_MODELS.md §2), through ordinary config writes by ``by`` (each costs a register access).

    Root Port block: RID association covering the device's bus (every function and VF), Stream ID,
    Default (one device per port, so it carries all TLPs to the device), Enable. Endpoint block:
    Stream ID, Enable. Returns whether the Root Port's Status reads Secure afterwards (Linux
    ``pci_ide_stream_enable`` fails with -ENXIO otherwise, §1).
    """
    rp = handle.root_port
    ep = handle.endpoint
    rp_cap = rp.ide.offset
    ep_cap = ep.ide_cap.offset
    if rp_cap is None or ep_cap is None or not 0 <= block < rp.stream_block_count:
        return False
    rp_blk = rp.ide.selective_blocks()[block]
    ep_blk = ep.ide_cap.selective_blocks()[0]
    bus = ep.bus
    ctl = (stream_id & 0xFF) << 24 | IDE_SEL_CTL_DEFAULT | IDE_SEL_CTL_ENABLE
    cost = world.cost(by, Op.CONFIG_DW_ACCESS) if by in world.components() else \
        world.timing.cost("host-cpu", Op.CONFIG_DW_ACCESS)
    for offset, value in ((rp_blk.base + IDE_SEL_RID1, (bus << 8 | 0xFF) << 8),
                          (rp_blk.base + IDE_SEL_RID2, (bus << 8) << 8 | 1),
                          (rp_blk.control, ctl)):
        yield world.timeout(cost)
        rp.cfg_write(rp_cap + offset, value, by=by)
    yield world.timeout(cost)
    handle.link.cfg_write(0, ep_cap + ep_blk.control, (stream_id & 0xFF) << 24 | IDE_SEL_CTL_ENABLE, by=by)
    yield world.timeout(cost)
    status = rp.cfg_read(rp_cap + rp_blk.status, by=by)
    return status & 0xF == int(IdeStreamState.SECURE)


def trace_phase(world: World, owner: str, device_path: str, mark: PhaseMark) -> None:
    """A securing-flow milestone (``sim.protocols.tsm.PhaseMark``), as a payload-free trace event."""
    world.milestone(owner, mark.device, device_path, str(mark.phase))
