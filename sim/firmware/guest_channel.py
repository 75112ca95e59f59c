"""The sealed guest <-> firmware channel: how a confidential guest talks to platform firmware through
a VMM it does not trust.

Both firmware models use it: the thin key-slot service (key-slot commands of thin-guest) and the fat
TSM (GUEST_REQUEST TDI_INFO / TDI_STATE / STATE_CHANGE). It is the SEV-SNP guest-message pattern:
the firmware creates a per-guest AES-256-GCM key at launch (the VM platform communication key in
the guest's secrets page; reported as SecretClass.GUEST_CHANNEL_KEY) that reaches the guest inside
its encrypted launch context, never through the VMM. The carrier relays only
:class:`~sim.firmware.commands.GuestChannelMessage` ciphertext (a GUEST_CHANNEL frame) and can
neither read, alter, replay, reorder nor redirect a message without the tag or sequence check
failing; all it can do is drop one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from sim.crypto.aead import aead_decrypt, aead_encrypt
from sim.crypto.algorithms import AeadSuite
from sim.crypto.errors import AeadError, CryptoError
from sim.crypto.secrets import SecretClass, SecretRecord
from sim.engine.runner import SimGen
from sim.engine.timing import Op
from sim.engine.world import World
from sim.firmware.commands import FwCommandId, FwStatus, GuestChannelMessage, decode_frame, error, request
from sim.wire.codec import DecodeError

GUEST_CHANNEL_KEY_BYTES = 32

# A carrier of sealed frames: (frame, plaintext of the sealed request) -> (answer, plaintext of the sealed answer).
SealedRelay = Callable[[bytes, bytes | None], SimGen[tuple[bytes, bytes | None]]]


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

    def peek(self, message: GuestChannelMessage) -> bytes | None:
        """The plaintext of a message this end receives or sent, or None, without changing the channel.

        Simulator bookkeeping only (labelling trace hops with ``secured_plaintext`` for the exposure
        tracker): no sequence check, no counter moves, nothing is metered.
        """
        if message.guest_id != self.guest_id or message.to_guest not in (0, 1):
            return None
        try:
            return aead_decrypt(AeadSuite.AES_256_GCM, self._key, self._iv(message.to_guest, message.sequence),
                                message.ciphertext, message.tag, message.aad())
        except (AeadError, CryptoError):
            return None


def create_guest_channel(world: World, rng_bytes: Callable[[int], bytes], owner: str, guest: str,
                         guest_id: int) -> tuple[GuestChannelEnd, GuestChannelEnd]:
    """A fresh channel key for ``guest`` made by firmware ``owner``: (firmware's end, guest's end).

    The key is registered as SecretClass.GUEST_CHANNEL_KEY generated by ``owner`` and recorded as
    stored by the guest (it arrives in the guest's encrypted launch context, not through the VMM).
    """
    key = rng_bytes(GUEST_CHANNEL_KEY_BYTES)
    world.exposure.register(SecretRecord(f"guest channel key {guest}", SecretClass.GUEST_CHANNEL_KEY, owner, key))
    world.exposure.observe_stored(guest, key)
    return GuestChannelEnd(guest_id, key, is_guest=False), GuestChannelEnd(guest_id, key, is_guest=True)


class GuestChannelSender:
    """A frame sender for a guest: seal the inner frame on the guest's end, hand the GUEST_CHANNEL frame
    to ``relay`` (the VMM), open the sealed answer; returns the inner answer frame's bytes.

    A refusal by the firmware (bad sequence, forged tag) comes back as a plain error frame and is
    passed up unchanged. Anything else that is not a sealed answer which opens (a forged plain
    "success", garbage, an altered, replayed or redirected answer) becomes a GUEST_CHANNEL error frame,
    so the caller never acts on bytes the carrier could have written. Sealing and opening happen as
    the message leaves and arrives (their AEAD cost is charged around them), so answers are opened in
    the order they arrive.
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
        try:
            frame = decode_frame(answer)
        except DecodeError as exc:
            return error(FwCommandId.GUEST_CHANNEL, FwStatus.INVALID_COMMAND, f"answer: {exc}").encode()
        if frame.status is not FwStatus.SUCCESS and frame.status is not None:
            return answer
        if frame.command is not FwCommandId.GUEST_CHANNEL or frame.is_request \
                or not isinstance(frame.body, GuestChannelMessage):
            return error(FwCommandId.GUEST_CHANNEL, FwStatus.INVALID_COMMAND,
                         "a success that is not sealed on the guest channel").encode()
        try:
            opened = self.end.open(frame.body)
        except GuestChannelError as exc:  # the carrier altered, replayed or redirected the answer
            opened = error(FwCommandId.GUEST_CHANNEL, exc.status, str(exc)).encode()
        yield self.world.delay(self.guest, Op.AEAD_PER_KIB, nbytes=len(frame.body.ciphertext))
        return opened
