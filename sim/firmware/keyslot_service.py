"""The thin key-slot service: the least a platform firmware must offer for OS- or guest-driven IDE.

Lukas Wunner's "thin" firmware (the 2023 thread; TRUST_MODELS.md §5) only "select[s] a free IDE
stream in the Root Port and writ[es] keys into it"; its nearest existing analogue is Arm's EL3
``RP_IDE_KEY_{PROGRAM,SET_GO,SET_STOP}`` service (§2). This service does exactly that and nothing
else: ALLOCATE_STREAM, PROGRAM_KEY, SET_GO, SET_STOP, RELEASE_STREAM (:mod:`sim.firmware.commands`).
It never speaks SPDM, never generates a key and never sees a device.

Callers and their keys:

* the host kernel (thin-host) sends PROGRAM_KEY in a plain command: host and firmware both see the
  key in the clear, which is what the TCB table says (§6);
* a confidential guest (thin-guest) cannot trust the VMM that carries its requests, so it talks to
  the firmware over a *guest channel*: AES-256-GCM under a per-guest key the firmware creates at
  guest launch (reported as SecretClass.GUEST_CHANNEL_KEY; in SEV-SNP this is the role of the VM
  platform communication keys in the guest's secrets page), with a sequence number per direction.
  The VMM relays only :class:`~sim.firmware.commands.GuestChannelMessage` ciphertext.

Ownership: a stream belongs to the principal that allocated it (the host, or the guest's name); every
later command on it from anyone else is NOT_PERMITTED. Slots are written through the Root Port's
key-programming path under the principal ``"firmware"`` (its own component name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from sim.crypto.aead import aead_decrypt, aead_encrypt
from sim.crypto.algorithms import AeadSuite
from sim.crypto.errors import AeadError, CryptoError
from sim.crypto.secrets import SecretClass, SecretRecord
from sim.engine.runner import SimGen
from sim.engine.timing import ComponentClass, Op
from sim.engine.trace import Channel
from sim.engine.world import World
from sim.firmware.commands import (
    AllocateStream,
    AllocateStreamRsp,
    FwBody,
    FwCommandId,
    FwFrame,
    FwStatus,
    GuestChannelMessage,
    ProgramKey,
    ReleaseStream,
    SetGo,
    SetStop,
    decode_frame,
    error,
    request,
    response,
)
from sim.firmware.core import FIRMWARE_PATH, CommandRecord, FirmwareCore
from sim.protocols import tsm
from sim.rootport.ide_regs import KeySlotStatus
from sim.rootport.root_port import RootPort
from sim.scenario.platform import Platform
from sim.wire.codec import DecodeError
from sim.wire.ide_km import SubStream

KEYSLOT_PRINCIPAL = FIRMWARE_PATH  # the firmware itself writes the slots: one component, one name in the trace
GUEST_CHANNEL_KEY_BYTES = 32
MAX_STREAM_ID = 255


class GuestChannelError(ValueError):
    """A guest-channel message that must be refused: wrong direction, replayed/reordered, or forged."""

    def __init__(self, status: FwStatus, reason: str) -> None:
        self.status = status
        super().__init__(reason)


class GuestChannelEnd:
    """One end (guest or firmware) of a guest <-> firmware channel.

    IV = direction (4 bytes, big-endian: 0 guest->firmware, 1 firmware->guest) ‖ sequence (8 bytes,
    big-endian), so no IV repeats under the one key; AAD = guest id, direction and sequence
    (:meth:`GuestChannelMessage.aad`). Each direction's sequence starts at 0; a receiver accepts only
    numbers above the last one it accepted, so a replayed or reordered message is refused while a
    message the carrier dropped (a denial of service it can always mount) does not wedge the channel.
    """

    def __init__(self, guest_id: int, key: bytes, *, is_guest: bool) -> None:
        if len(key) != GUEST_CHANNEL_KEY_BYTES:
            raise CryptoError(f"a guest channel key is {GUEST_CHANNEL_KEY_BYTES} bytes")
        self.guest_id = guest_id
        self._key = bytes(key)
        self.is_guest = is_guest
        self.send_seq = 0
        self.recv_seq = 0

    @property
    def _send_dir(self) -> int:
        return 0 if self.is_guest else 1

    @staticmethod
    def _iv(direction: int, sequence: int) -> bytes:
        return direction.to_bytes(4, "big") + sequence.to_bytes(8, "big")

    def seal(self, plaintext: bytes) -> GuestChannelMessage:
        shell = GuestChannelMessage(self.guest_id, self._send_dir, self.send_seq, b"", bytes(16))
        ciphertext, tag = aead_encrypt(AeadSuite.AES_256_GCM, self._key, self._iv(self._send_dir, self.send_seq),
                                       plaintext, shell.aad())
        self.send_seq += 1
        return dataclasses.replace(shell, ciphertext=ciphertext, tag=tag)

    def open(self, message: GuestChannelMessage) -> bytes:
        expected_dir = 1 - self._send_dir
        if message.guest_id != self.guest_id or message.to_guest != expected_dir:
            raise GuestChannelError(FwStatus.INVALID_PARAMETER,
                                    f"message for guest {message.guest_id} direction {message.to_guest} "
                                    f"on the channel of guest {self.guest_id}")
        if message.sequence < self.recv_seq:
            raise GuestChannelError(FwStatus.BAD_SEQUENCE,
                                    f"sequence {message.sequence}, expected {self.recv_seq} or later (replay or reorder)")
        try:
            plain = aead_decrypt(AeadSuite.AES_256_GCM, self._key, self._iv(expected_dir, message.sequence),
                                 message.ciphertext, message.tag, message.aad())
        except AeadError:
            raise GuestChannelError(FwStatus.DECRYPT_FAILED, "guest channel tag check failed") from None
        self.recv_seq = message.sequence + 1
        return plain


@dataclasses.dataclass
class StreamAllocation:
    owner: str
    root_port: int
    block: int
    stream_id: int
    rid: int


_KEY_SLOT_STATUS: dict[KeySlotStatus, FwStatus] = {
    KeySlotStatus.SUCCESS: FwStatus.SUCCESS,
    KeySlotStatus.NOT_PERMITTED: FwStatus.KEY_SLOT_ERROR,
    KeySlotStatus.NO_SUCH_STREAM: FwStatus.INVALID_PARAMETER,
    KeySlotStatus.INVALID_KEY: FwStatus.INVALID_PARAMETER,
    KeySlotStatus.EMPTY_SLOT: FwStatus.INVALID_STATE,
    KeySlotStatus.PORT_DOWN: FwStatus.KEY_SLOT_ERROR,
}


class KeySlotService:
    """Component ``"firmware"`` (firmware-core) offering only the key-slot commands."""

    def __init__(self, world: World, platform: Platform, *, path: str = FIRMWARE_PATH,
                 principal: str = KEYSLOT_PRINCIPAL, register: bool = True,
                 channel: Channel = Channel.FIRMWARE) -> None:
        # ``principal``/``path``/``channel`` let the VMM of the thin-vmm model reuse this logic as its
        # own (untrusted) key-slot hypercall handler: path "vmm", principal "vmm", Channel.KEY_SLOT.
        self.world = world
        self.platform = platform
        self.path = path
        self.principal = principal
        if register:
            world.register(path, self, ComponentClass.FIRMWARE_CORE)
        self.core = FirmwareCore(world, path, channel=channel)
        self._rng = world.rng(f"{path}.guest-channel")
        self._ports: list[RootPort] = list(platform.root_ports.values())
        self.allocations: dict[tuple[int, int], StreamAllocation] = {}
        self._channels: dict[int, GuestChannelEnd] = {}
        self._guest_names: dict[int, str] = {}

    # -- guests ---------------------------------------------------------------------------------------

    def launch_guest(self, guest: str) -> GuestChannelEnd:
        """Create the per-guest channel key at guest launch; returns the guest's end of the channel.

        The key reaches the guest inside its encrypted launch context, never through the VMM: it is
        recorded as stored by the guest (SAW_PLAINTEXT) and generated by the firmware.
        """
        guest_id = len(self._channels) + 1
        key = self._rng.bytes(GUEST_CHANNEL_KEY_BYTES)
        self.world.exposure.register(SecretRecord(f"guest channel key {guest}", SecretClass.GUEST_CHANNEL_KEY,
                                                  self.path, key))
        self.world.exposure.observe_stored(guest, key)
        self._channels[guest_id] = GuestChannelEnd(guest_id, key, is_guest=False)
        self._guest_names[guest_id] = guest
        return GuestChannelEnd(guest_id, key, is_guest=True)

    def guest_name(self, guest_id: int) -> str | None:
        return self._guest_names.get(guest_id)

    # -- the command mailbox --------------------------------------------------------------------------

    def command(self, caller: str, frame: bytes) -> SimGen[bytes]:
        """One command from ``caller`` (a SimPy generator): traced in and out with its bytes."""
        answer, _ = yield from self.command_sealed(caller, frame)
        return answer

    def command_sealed(self, caller: str, frame: bytes, *,
                       secured_plaintext: bytes | None = None) -> SimGen[tuple[bytes, bytes | None]]:
        """As :meth:`command`, for a carrier of sealed guest-channel frames: ``secured_plaintext`` is the
        sealed request's plaintext (simulator bookkeeping for the exposure tracker, never read by the
        service), and the answer comes with its own sealed plaintext (None if it is not sealed)."""
        yield self.core.caller_dispatch(caller)
        self.core.trace_in(caller, frame, secured_plaintext=secured_plaintext)
        command = _command_name(frame)
        answer, plain = yield from self.core.run(command, caller, lambda rec: self._execute(caller, frame, rec))
        self.core.trace_out(caller, answer, secured_plaintext=plain)
        return answer, plain

    def call(self, caller: str, body: FwBody) -> SimGen[FwFrame]:
        """Encode ``body`` as a request, send it as ``caller`` and decode the answer."""
        answer = yield from self.command(caller, request(body).encode())
        return decode_frame(answer)

    def _execute(self, caller: str, frame: bytes, record: CommandRecord) -> SimGen[tuple[bytes, bytes | None]]:
        plain: bytes | None = None
        try:
            decoded = decode_frame(frame)
        except DecodeError as exc:
            record.status = FwStatus.INVALID_COMMAND.name
            return error(_command_id(frame), FwStatus.INVALID_COMMAND, str(exc)).encode(), None
        if not decoded.is_request:
            out = error(decoded.command, FwStatus.INVALID_COMMAND, "not a request")
        elif decoded.command is FwCommandId.GUEST_CHANNEL:
            assert isinstance(decoded.body, GuestChannelMessage)
            out, plain = yield from self._guest_channel(decoded.body)
        else:
            out = yield from self._key_slot_command(caller, decoded)
        record.status = out.status.name if out.status is not None else ""
        return out.encode(), plain

    def _guest_channel(self, message: GuestChannelMessage) -> SimGen[tuple[FwFrame, bytes | None]]:
        end = self._channels.get(message.guest_id)
        if end is None:
            return error(FwCommandId.GUEST_CHANNEL, FwStatus.INVALID_PARAMETER,
                         f"no guest channel {message.guest_id}"), None
        yield self.world.delay(self.path, Op.AEAD_PER_KIB, nbytes=len(message.ciphertext))
        try:
            inner = end.open(message)
        except GuestChannelError as exc:
            return error(FwCommandId.GUEST_CHANNEL, exc.status, str(exc)), None
        principal = self._guest_names[message.guest_id]
        try:
            inner_frame = decode_frame(inner)
        except DecodeError as exc:
            inner_out = error(FwCommandId.GUEST_CHANNEL, FwStatus.INVALID_COMMAND, str(exc))
        else:
            if not inner_frame.is_request or inner_frame.command is FwCommandId.GUEST_CHANNEL:
                inner_out = error(inner_frame.command, FwStatus.INVALID_COMMAND, "not a key-slot request")
            else:
                inner_out = yield from self._key_slot_command(principal, inner_frame)
        plain = inner_out.encode()
        yield self.world.delay(self.path, Op.AEAD_PER_KIB, nbytes=len(plain))
        return response(FwCommandId.GUEST_CHANNEL, FwStatus.SUCCESS, end.seal(plain)), plain

    # -- key-slot commands ---------------------------------------------------------------------------

    def _key_slot_command(self, principal: str, frame: FwFrame) -> SimGen[FwFrame]:
        body = frame.body
        yield self.world.timeout(0)
        if isinstance(body, AllocateStream):
            return self._allocate(principal, body)
        if isinstance(body, ProgramKey | SetGo | SetStop | ReleaseStream):
            owned = self._owned(principal, frame.command, body.root_port, body.block)
            if isinstance(owned, FwFrame):
                return owned
            rp = self._ports[body.root_port]
            # the Root Port's private key path sits on an internal fabric: one register access per op
            yield self.world.delay(self.path, Op.CONFIG_DW_ACCESS)
            if isinstance(body, ProgramKey):
                # the key passes through the firmware's memory on its way to the slot
                self.world.exposure.observe_stored(self.path, body.key + body.ifv)
                st = rp.key_port.program(self.principal, body.block, body.key_set, body.direction,
                                         body.sub_stream, body.key, body.ifv)
            elif isinstance(body, SetGo):
                st = rp.key_port.set_go(self.principal, body.block, body.key_set, body.direction, body.sub_stream)
            elif isinstance(body, SetStop):
                st = rp.key_port.stop(self.principal, body.block, body.key_set, body.direction, body.sub_stream)
            else:
                return self._release(owned, rp)
            if st is not KeySlotStatus.SUCCESS:
                return error(frame.command, _KEY_SLOT_STATUS[st], f"key-programming path: {st.name}")
            return response(frame.command)
        return error(frame.command, FwStatus.UNSUPPORTED, "the thin key-slot service offers only key-slot commands")

    def _owned(self, principal: str, command: FwCommandId, root_port: int, block: int) -> StreamAllocation | FwFrame:
        if not 0 <= root_port < len(self._ports):
            return error(command, FwStatus.INVALID_PARAMETER, f"no Root Port {root_port}")
        alloc = self.allocations.get((root_port, block))
        if alloc is None:
            return error(command, FwStatus.NOT_PERMITTED, f"stream block {block} of Root Port {root_port} "
                                                          "is not allocated")
        if alloc.owner != principal:
            return error(command, FwStatus.NOT_PERMITTED, f"stream block {block} of Root Port {root_port} "
                                                          f"is not allocated to {principal}")
        return alloc

    def _allocate(self, principal: str, body: AllocateStream) -> FwFrame:
        if not 0 <= body.root_port < len(self._ports):
            return error(FwCommandId.ALLOCATE_STREAM, FwStatus.INVALID_PARAMETER, f"no Root Port {body.root_port}")
        stream_id = self._free_stream_id()
        rp = self._ports[body.root_port]
        block = rp.allocate_stream_block(principal) if stream_id is not None else None
        if block is None or stream_id is None:
            return error(FwCommandId.ALLOCATE_STREAM, FwStatus.NO_RESOURCES,
                         f"no free stream in {rp.path}'s pool")
        self.allocations[(body.root_port, block)] = StreamAllocation(principal, body.root_port, block, stream_id,
                                                                     body.rid)
        return response(FwCommandId.ALLOCATE_STREAM, FwStatus.SUCCESS,
                        AllocateStreamRsp(body.root_port, block, stream_id))

    def _release(self, alloc: StreamAllocation, rp: RootPort) -> FwFrame:
        st = rp.key_port.clear(self.principal, alloc.block)
        rp.release_stream_block(alloc.block)
        del self.allocations[(alloc.root_port, alloc.block)]
        if st is not KeySlotStatus.SUCCESS:
            return error(FwCommandId.RELEASE_STREAM, _KEY_SLOT_STATUS[st], f"slots not cleared: {st.name}")
        return response(FwCommandId.RELEASE_STREAM)

    def _free_stream_id(self) -> int | None:
        """Stream IDs are unique below the host bridge; the service owns their allocation (Linux
        passes ``stream_id=-1`` because "the TSM owns the stream_id allocation", §1)."""
        used = {a.stream_id for a in self.allocations.values()}
        return next((i for i in range(1, MAX_STREAM_ID + 1) if i not in used), None)

    def root_port_index(self, root_port: RootPort | str) -> int:
        path = root_port if isinstance(root_port, str) else root_port.path
        return next(i for i, rp in enumerate(self._ports) if rp.path == path)


# ------------------------------------------------------------------------------------------------
# Clients: the same commands, reached directly (host) or through the sealed guest channel
# ------------------------------------------------------------------------------------------------

FrameSender = Callable[[bytes], SimGen[bytes]]
# A carrier of sealed frames: (frame, plaintext of the sealed request) -> (answer, plaintext of the sealed answer).
SealedRelay = Callable[[bytes, bytes | None], SimGen[tuple[bytes, bytes | None]]]


class KeySlotClient:
    """Typed key-slot calls over any frame transport; returns decoded answer frames."""

    def __init__(self, send: FrameSender) -> None:
        self._send = send

    def call(self, body: FwBody) -> SimGen[FwFrame]:
        answer = yield from self._send(request(body).encode())
        return decode_frame(answer)

    @classmethod
    def direct(cls, service: KeySlotService, caller: str) -> KeySlotClient:
        """The host's client: plain commands into the firmware mailbox."""
        return cls(lambda frame: service.command(caller, frame))


class GuestChannelSender:
    """A :data:`FrameSender` for a guest: seal the key-slot frame on the guest's end, hand the
    GUEST_CHANNEL frame to ``relay`` (the VMM), open the sealed answer.

    Refusals by the firmware (bad sequence, forged tag) come back as plain error frames and are
    passed up unchanged.
    """

    def __init__(self, world: World, guest: str, end: GuestChannelEnd, relay: SealedRelay) -> None:
        self.world = world
        self.guest = guest
        self.end = end
        self.relay = relay

    def __call__(self, inner: bytes) -> SimGen[bytes]:
        yield self.world.delay(self.guest, Op.AEAD_PER_KIB, nbytes=len(inner))
        sealed = self.end.seal(inner)
        answer, _ = yield from self.relay(request(sealed).encode(), inner)
        frame = decode_frame(answer)
        if frame.status is not FwStatus.SUCCESS or not isinstance(frame.body, GuestChannelMessage):
            return answer
        yield self.world.delay(self.guest, Op.AEAD_PER_KIB, nbytes=len(frame.body.ciphertext))
        try:
            return self.end.open(frame.body)
        except GuestChannelError as exc:  # the carrier altered, replayed or redirected the answer
            return error(FwCommandId.GUEST_CHANNEL, exc.status, str(exc)).encode()


def _command_id(frame: bytes) -> FwCommandId:
    """Best-effort command id of a (possibly malformed) frame, for the error answer."""
    raw = int.from_bytes(frame[:2], "little") & 0x7FFF if len(frame) >= 2 else 0
    try:
        return FwCommandId(raw)
    except ValueError:
        return FwCommandId.TIO_STATUS


def _command_name(frame: bytes) -> str:
    raw = int.from_bytes(frame[:2], "little") & 0x7FFF if len(frame) >= 2 else -1
    try:
        return FwCommandId(raw).name
    except ValueError:
        return f"0x{raw:x}"


# ------------------------------------------------------------------------------------------------
# The securing flow's platform requests, answered through key-slot commands
# ------------------------------------------------------------------------------------------------

StreamSwitch = Callable[[str, int, int], SimGen[bool]]   # (device id, Root Port block, stream id) -> ok


class KeySlotRequestHandler:
    """Answers :mod:`sim.protocols.tsm` platform requests with key-slot commands over ``client``.

    Used by whoever runs the flow in a thin model: the host kernel (thin-host: a direct client, the
    host's own ``enable_stream``/``disable_stream``), or a guest (its sealed channel or the VMM
    hypercall, and the VMM for the stream registers). Call it as ``handler(device, request)``, the
    host kernel's ``PlatformRequestHandler`` shape. It remembers which Root Port block carries each
    stream it allocated.
    """

    def __init__(self, platform: Platform, client: KeySlotClient, enable: StreamSwitch,
                 disable: StreamSwitch | None = None) -> None:
        self.platform = platform
        self.client = client
        self.enable = enable
        self.disable = disable
        self.streams: dict[tuple[str, int], tuple[int, int]] = {}   # (device, stream id) -> (root port, block)

    def __call__(self, device: str, req: object) -> SimGen[object]:
        if isinstance(req, tsm.AllocateStream):
            handle = self.platform.device(device)
            got = yield from self.client.call(AllocateStream(handle.port_index, handle.endpoint.requester_id(0)))
            if got.status is not FwStatus.SUCCESS or not isinstance(got.body, AllocateStreamRsp):
                return None
            self.streams[(device, got.body.stream_id)] = (got.body.root_port, got.body.block)
            return got.body.stream_id
        stream_id = req.key.stream_id if isinstance(req, tsm.ProgramRootPortKey) else getattr(req, "stream_id", None)
        where = self.streams.get((device, stream_id)) if isinstance(stream_id, int) else None
        if where is None:
            return False
        rp, block = where
        if isinstance(req, tsm.ProgramRootPortKey):
            k = req.key
            got = yield from self.client.call(ProgramKey(rp, block, k.key_set, k.root_port_direction, k.sub_stream,
                                                         k.key, k.ifv))
            return got.status is FwStatus.SUCCESS
        if isinstance(req, tsm.RootPortKeySet):
            ok = True
            for sub in SubStream:
                cls = SetGo if req.go else SetStop
                got = yield from self.client.call(cls(rp, block, req.key_set, req.direction, sub))
                ok = ok and got.status is FwStatus.SUCCESS
            return ok
        if isinstance(req, tsm.EnableStream):
            return (yield from self.enable(device, block, req.stream_id))
        if isinstance(req, tsm.ReleaseStream):
            return (yield from self.release(device, req.stream_id))
        return None

    def release(self, device: str, stream_id: int) -> SimGen[bool]:
        """Disable the stream's registers (if a switch was given) and give the block back."""
        where = self.streams.pop((device, stream_id), None)
        if where is None:
            return False
        rp, block = where
        if self.disable is not None:
            yield from self.disable(device, block, stream_id)
        got = yield from self.client.call(ReleaseStream(rp, block))
        return got.status is FwStatus.SUCCESS

    def release_all(self, device: str) -> SimGen[None]:
        for dev, stream_id in list(self.streams):
            if dev == device:
                yield from self.release(device, stream_id)
