"""One SPDM secured session (DSP0277): keys, phases, sequence numbers, record sealing and key update.

A :class:`SecureSession` is one peer's view of a session. It owns the
:class:`~sim.crypto.key_schedule.SessionKeySchedule` (which reports every secret it derives to the
env's sink) and four 64-bit sequence counters — request/response × handshake/data — that start
at 0 and advance by one per record sent or received in that direction and phase (PROTOCOLS.md §5.2).

* ``seal(message)`` protects an SPDM message in the *own* direction (requester → REQUEST keys,
  responder → RESPONSE keys); ``open(record)`` checks and decrypts one from the peer.
* Handshake keys apply from TH1 until :meth:`enter_data_phase` (called with TH2 after FINISH_RSP),
  data keys after that.
* Key update follows libspdm (§4.2): :meth:`update_key` derives a direction's next key and keeps
  the old one as a backup until :meth:`commit_key_update`; ``open`` falls back to the backup once
  if the new receive key fails (the peer may not have switched yet), as libspdm does.

Records use the PCIe DOE framing by default (no sequence number on the wire, no random padding,
§5.3). A MAC-only session (MAC_CAP without ENCRYPT_CAP) is supported with ``encrypt=False``.
Failures are typed: :class:`SessionDecryptError` (bad MAC, malformed record or plaintext),
:class:`WrongSessionError` (the record names another session) and :class:`SessionStateError`.
"""

from __future__ import annotations

import enum
import hmac
from typing import Literal

from cryptography.exceptions import InvalidTag

from sim.crypto.aead import (
    AEAD_IV_SIZE,
    AEAD_TAG_SIZE,
    AeadCipher,
    SequenceNumberOrder,
    aead_cipher,
    aead_decrypt,
    aead_encrypt,
    record_iv,
)
from sim.crypto.algorithms import AeadSuite, BaseHashAlgo
from sim.crypto.errors import AeadError, CryptoError
from sim.crypto.key_schedule import Direction, Phase, SessionKeySchedule, TrafficKeys
from sim.protocols.env import ProtocolEnv
from sim.wire.codec import DecodeError
from sim.wire.secured import (
    PCI_DOE_FRAMING,
    MacOnlyRecord,
    SecuredFraming,
    SecuredPlaintext,
    SecuredRecord,
    req_session_id,
    rsp_session_id,
)
from sim.wire.spdm.session import KeyUpdateOperation

MAX_SEQUENCE_NUMBER = (1 << 64) - 1  # DSP0277: the counter must never wrap
# Records built and parsed in place (PROTOCOLS.md §5.1): the u16 Length covers the 2-byte
# ApplicationDataLength, the application data and the 16-byte MAC.
_MAX_FAST_APP_DATA = 0xFFFF - 2 - AEAD_TAG_SIZE
_MIN_RECORD_LENGTH = 2 + AEAD_TAG_SIZE

# HKDF invocations per key-schedule stage, for the crypto meter (§4.2).
_HKDF_SET_SECRET = 1  # Extract
_HKDF_HANDSHAKE = 2 * 4  # per direction: hs secret, finished key, key, iv
_HKDF_DATA = 1 + 1 + 2 * 3 + 1  # salt_1, master Extract, per direction (app secret, key, iv), export master
_HKDF_UPDATE = 3  # new secret, key, iv


class SessionRole(enum.Enum):
    REQUESTER = "requester"
    RESPONDER = "responder"

    @property
    def send_direction(self) -> Direction:
        return Direction.REQUEST if self is SessionRole.REQUESTER else Direction.RESPONSE

    @property
    def receive_direction(self) -> Direction:
        return Direction.RESPONSE if self is SessionRole.REQUESTER else Direction.REQUEST


class SessionState(enum.Enum):
    HANDSHAKE = "handshake"  # KEY_EXCHANGE done, FINISH not yet
    ESTABLISHED = "established"  # data keys in use
    ENDED = "ended"  # END_SESSION, decrypt error, heartbeat timeout or reset: keys gone


class SessionError(ValueError):
    """Base of every failure of a secured session."""


class SessionDecryptError(SessionError):
    """A record that does not authenticate or decode (the SPDM answer is ERROR DecryptError)."""


class WrongSessionError(SessionError):
    """A record whose SessionID is not this session's."""

    def __init__(self, expected: int, got: int) -> None:
        self.expected, self.got = expected, got
        super().__init__(f"record for session 0x{got:08x}, this is session 0x{expected:08x}")


class SessionStateError(SessionError):
    """An operation the session's state does not allow (ended, keys not derived, counter exhausted)."""


def record_session_id(record: bytes) -> int:
    """The SessionID at the front of a secured record, to route it to its session (DecodeError if short)."""
    if len(record) < 4:
        raise DecodeError("SecuredRecord", "session_id", 0, f"needs 4 bytes, only {len(record)} given")
    return int.from_bytes(record[:4], "little")


class _Channel:
    """One direction's current key as the record path uses it: the AEAD object and the IV salt as an integer.

    The per-record IV is the salt XOR the sequence number (PROTOCOLS.md §5.2): read as one 96-bit
    integer in the byte order that places the number where :func:`record_iv` does, that is one XOR.
    """

    __slots__ = ("keys", "cipher", "_salt", "_order")

    def __init__(self, keys: TrafficKeys, cipher: AeadCipher, order: SequenceNumberOrder) -> None:
        self.keys = keys
        self.cipher = cipher
        self._order: Literal["little", "big"] = "little" if order is SequenceNumberOrder.LITTLE_ENDIAN_LOW else "big"
        self._salt = int.from_bytes(keys.salt, self._order)

    def iv(self, seq: int) -> bytes:
        return (self._salt ^ seq).to_bytes(AEAD_IV_SIZE, self._order)


_SEQUENCE_KEYS: tuple[tuple[Direction, Phase], ...] = tuple((d, p) for d in Direction for p in Phase)


class SecureSession:
    """One peer's state of one SPDM session (see the module docstring)."""

    def __init__(
        self,
        session_id: int,
        role: SessionRole,
        version: int,
        hash_algo: BaseHashAlgo,
        aead: AeadSuite,
        env: ProtocolEnv,
        *,
        encrypt: bool = True,
        framing: SecuredFraming = PCI_DOE_FRAMING,
        sequence_order: SequenceNumberOrder = SequenceNumberOrder.LITTLE_ENDIAN_LOW,
        handshake_in_the_clear: bool = False,
        heartbeat_period: int = 0,
    ) -> None:
        if not 0 <= session_id <= 0xFFFFFFFF:
            raise ValueError(f"session id 0x{session_id:x} is not a u32")
        self.session_id = session_id
        self.role = SessionRole(role)
        self.version = version
        self.hash_algo = BaseHashAlgo(hash_algo)
        self.aead = AeadSuite(aead)
        self.env = env
        self.encrypt = encrypt
        self.framing = framing
        self.sequence_order = sequence_order
        self.handshake_in_the_clear = handshake_in_the_clear
        self.heartbeat_period = heartbeat_period
        self.keys = SessionKeySchedule(version, self.hash_algo, self.aead, sink=env.sink, owner=env.owner,
                                       name=f"session 0x{session_id:08x}")
        self.state = SessionState.HANDSHAKE
        self.phase = Phase.HANDSHAKE
        self.end_reason: str | None = None
        self._seq: dict[tuple[Direction, Phase], int] = dict.fromkeys(_SEQUENCE_KEYS, 0)
        self._backup_seq: dict[Direction, int] = {}
        self._handshake_keys_ready = False
        self._sid_bytes = session_id.to_bytes(4, "little")
        self._seq_size = int(self.framing.seq_num_size)
        self._seq_mask = (1 << (8 * self._seq_size)) - 1
        self._send_direction = self.role.send_direction
        self._receive_direction = self.role.receive_direction
        self._channels: dict[Direction, _Channel] = {}

    def __repr__(self) -> str:
        return (f"SecureSession(0x{self.session_id:08x}, {self.role.value}, {self.state.value}, "
                f"v{self.version >> 4}.{self.version & 0xF})")

    # --- identity -------------------------------------------------------------------------------

    @property
    def req_session_id(self) -> int:
        return req_session_id(self.session_id)

    @property
    def rsp_session_id(self) -> int:
        return rsp_session_id(self.session_id)

    @property
    def established(self) -> bool:
        return self.state is SessionState.ESTABLISHED

    @property
    def ended(self) -> bool:
        return self.state is SessionState.ENDED

    def sequence_number(self, direction: Direction, phase: Phase | None = None) -> int:
        """The next sequence number of one direction in one phase (default: the current phase)."""
        return self._seq[(Direction(direction), self.phase if phase is None else Phase(phase))]

    # --- key schedule stages --------------------------------------------------------------------

    def set_dhe_secret(self, shared_secret: bytes) -> None:
        """Handshake-Secret from the ECDHE shared secret (reported to the sink by the key schedule)."""
        self._alive()
        self.keys.set_dhe_secret(shared_secret)
        self.env.meter.hkdf(_HKDF_SET_SECRET)

    def derive_handshake_keys(self, th1_hash: bytes) -> None:
        """Handshake secrets, finished keys and handshake traffic keys from TH1."""
        self._alive()
        self.keys.derive_handshake(th1_hash)
        self.env.meter.hkdf(_HKDF_HANDSHAKE)
        self._handshake_keys_ready = True

    def verify_data(self, direction: Direction, transcript_hash: bytes) -> bytes:
        """HMAC(finished_key of ``direction``, transcript hash): a ResponderVerifyData / RequesterVerifyData."""
        self.env.meter.hash(len(transcript_hash))
        return self.keys.verify_data(direction, transcript_hash)

    def check_verify_data(self, direction: Direction, transcript_hash: bytes, received: bytes) -> bool:
        """Constant-time comparison of a peer's VerifyData with the expected value."""
        return hmac.compare_digest(self.verify_data(direction, transcript_hash), bytes(received))

    def enter_data_phase(self, th2_hash: bytes) -> None:
        """Derive the data keys from TH2 and switch both directions to them: the session is established."""
        self._alive()
        if self.phase is Phase.DATA:
            raise SessionStateError("the session is already in its data phase")
        self.keys.derive_data(th2_hash)
        self.env.meter.hkdf(_HKDF_DATA)
        self.phase = Phase.DATA
        self.state = SessionState.ESTABLISHED

    def end(self, reason: str = "end-session") -> None:
        """Forget the session: no more records either way (END_SESSION, DecryptError, reset...)."""
        self.state = SessionState.ENDED
        self.end_reason = reason

    # --- records ----------------------------------------------------------------------------------

    def _alive(self) -> None:
        if self.state is SessionState.ENDED:
            raise SessionStateError(f"session 0x{self.session_id:08x} has ended ({self.end_reason})")

    def _current_keys(self, direction: Direction) -> TrafficKeys:
        if self.phase is Phase.HANDSHAKE and not self._handshake_keys_ready:
            raise SessionStateError("handshake keys are not derived yet (TH1 missing)")
        try:
            return self.keys.keys(direction, self.phase)
        except CryptoError as exc:
            raise SessionStateError(str(exc)) from None

    def _next_seq(self, direction: Direction) -> int:
        seq = self._seq[(direction, self.phase)]
        if seq >= MAX_SEQUENCE_NUMBER:
            raise SessionStateError(f"{direction} {self.phase} sequence number exhausted")
        return seq

    def _channel(self, direction: Direction, keys: TrafficKeys) -> _Channel | None:
        """The AEAD object and IV base of ``keys``, built once per key rather than once per record.

        None when the salt is not an IV's size: the general path then reports it.
        """
        channel = self._channels.get(direction)
        if channel is None or channel.keys is not keys:
            if len(keys.salt) != AEAD_IV_SIZE:
                return None
            channel = self._channels[direction] = _Channel(keys, aead_cipher(self.aead, keys.key),
                                                           self.sequence_order)
        return channel

    def seal(self, message: bytes) -> bytes:
        """Protect one SPDM message in this peer's own direction; returns the record bytes (unpadded)."""
        self._alive()
        direction = self._send_direction
        keys = self._current_keys(direction)
        seq = self._next_seq(direction)
        channel = self._channel(direction, keys) if self.encrypt and len(message) <= _MAX_FAST_APP_DATA else None
        if channel is not None:
            # The record built directly: SessionID ‖ SeqNum ‖ Length is the AAD and the front of the
            # record, ciphertext ‖ tag follow (the same bytes SecuredRecord.encode would give).
            plaintext = len(message).to_bytes(2, "little") + message
            aad = self._sid_bytes + (seq & self._seq_mask).to_bytes(self._seq_size, "little") + \
                (len(plaintext) + AEAD_TAG_SIZE).to_bytes(2, "little")
            record = aad + channel.cipher.encrypt(channel.iv(seq), plaintext, aad)
            self.env.meter.aead(len(plaintext))
            self._seq[(direction, self.phase)] = seq + 1
            if self.env.observer is not None:
                self.env.observe(message)
            return record
        iv = record_iv(keys.salt, seq, self.sequence_order)
        size = self.framing.seq_num_size
        wire_seq = seq & ((1 << (8 * size)) - 1)
        if self.encrypt:
            plaintext = SecuredPlaintext(app_data=bytes(message)).encode()
            header = SecuredRecord(self.session_id, bytes(len(plaintext)), bytes(AEAD_TAG_SIZE), wire_seq, size)
            ciphertext, tag = aead_encrypt(self.aead, keys.key, iv, plaintext, header.aad())
            record = SecuredRecord(self.session_id, ciphertext, tag, wire_seq, size).encode()
            self.env.meter.aead(len(plaintext))
        else:
            shell = MacOnlyRecord(self.session_id, bytes(message), bytes(AEAD_TAG_SIZE), wire_seq, size)
            _, tag = aead_encrypt(self.aead, keys.key, iv, b"", shell.aad())
            record = MacOnlyRecord(self.session_id, bytes(message), tag, wire_seq, size).encode()
            self.env.meter.aead(len(message))
        self._seq[(direction, self.phase)] = seq + 1
        self.env.observe(message)
        return record

    def _decrypt(self, record: SecuredRecord | MacOnlyRecord, keys: TrafficKeys, seq: int) -> bytes:
        iv = record_iv(keys.salt, seq, self.sequence_order)
        if isinstance(record, SecuredRecord):
            self.env.meter.aead(len(record.ciphertext))
            plain = aead_decrypt(self.aead, keys.key, iv, record.ciphertext, record.mac, record.aad())
            try:
                return SecuredPlaintext.decode(plain).app_data
            except DecodeError as exc:
                raise SessionDecryptError(f"decrypted record does not frame an SPDM message: {exc}") from None
        self.env.meter.aead(len(record.app_data))
        aead_decrypt(self.aead, keys.key, iv, b"", record.mac, record.aad())
        return record.app_data

    def open(self, record: bytes) -> bytes:
        """Check and decrypt one record from the peer; returns the SPDM message it carries.

        The sequence number advances only on success. Raises WrongSessionError, SessionDecryptError
        or SessionStateError; the caller decides whether the session survives (the responder ends it).
        """
        self._alive()
        direction = self._receive_direction
        if self.encrypt:
            fast = self._open_fast(record, direction)
            if fast is not None:
                return fast
        try:
            parsed: SecuredRecord | MacOnlyRecord = (
                SecuredRecord.decode(record, self.framing) if self.encrypt else MacOnlyRecord.decode(record, self.framing))
        except DecodeError as exc:
            raise SessionDecryptError(f"malformed secured record: {exc}") from None
        if parsed.session_id != self.session_id:
            raise WrongSessionError(self.session_id, parsed.session_id)
        keys = self._current_keys(direction)
        seq = self._next_seq(direction)
        size = self.framing.seq_num_size
        if size and parsed.seq_num != seq & ((1 << (8 * size)) - 1):
            raise SessionDecryptError(f"record sequence number {parsed.seq_num} is not the expected {seq}")
        try:
            message = self._decrypt(parsed, keys, seq)
        except AeadError:
            if self.phase is Phase.DATA and direction in self._backup_seq:
                # The peer may not have switched to the new key yet: libspdm retries with the backup.
                message = self._open_with_backup(parsed, direction)
                self.env.observe(message)
                return message
            raise SessionDecryptError(f"record MAC check failed ({direction} {self.phase} seq {seq})") from None
        self._seq[(direction, self.phase)] = seq + 1
        self.env.observe(message)
        return message

    def _open_fast(self, record: bytes, direction: Direction) -> bytes | None:
        """``open`` for a well-formed encrypted record under the current key, parsed in place.

        None sends the record through the general path instead (malformed framing, wrong session,
        a MAC failure that may need the key-update backup, plaintext that does not frame a message),
        which raises the precise error; so this path only ever returns what that path would return.
        """
        size = self._seq_size
        head = 4 + size + 2
        if len(record) < head or record[:4] != self._sid_bytes:
            return None
        length = int.from_bytes(record[head - 2:head], "little")
        if length < _MIN_RECORD_LENGTH or not 0 <= len(record) - head - length <= self.framing.max_padding:
            return None
        keys = self._current_keys(direction)
        seq = self._next_seq(direction)
        if size and int.from_bytes(record[4:4 + size], "little") != seq & self._seq_mask:
            return None
        channel = self._channel(direction, keys)
        if channel is None:
            return None
        try:
            plain = channel.cipher.decrypt(channel.iv(seq), record[head:head + length], record[:head])
        except InvalidTag:
            return None
        app_length = int.from_bytes(plain[:2], "little")
        if len(plain) < 2 or len(plain) - 2 < app_length:
            return None
        self.env.meter.aead(length - AEAD_TAG_SIZE)
        self._seq[(direction, self.phase)] = seq + 1
        message = plain[2:2 + app_length]
        if self.env.observer is not None:
            self.env.observe(message)
        return message

    def _open_with_backup(self, parsed: SecuredRecord | MacOnlyRecord, direction: Direction) -> bytes:
        old_seq = self._backup_seq[direction]
        old_keys = self.keys.rollback_update(direction)
        self._seq[(direction, Phase.DATA)] = old_seq
        del self._backup_seq[direction]
        try:
            message = self._decrypt(parsed, old_keys, old_seq)
        except AeadError:
            raise SessionDecryptError(f"record MAC check failed under the new and the previous {direction} key") from None
        self._seq[(direction, Phase.DATA)] = old_seq + 1
        return message

    # --- key update (§4.2) ------------------------------------------------------------------------

    def update_key(self, direction: Direction) -> None:
        """Derive ``direction``'s next data key; its sequence number restarts at 0; the old key stays as backup."""
        self._alive()
        if self.phase is not Phase.DATA:
            raise SessionStateError("key update needs an established session")
        direction = Direction(direction)
        if direction in self._backup_seq:
            raise SessionStateError(f"a {direction} key update is already pending")
        self._backup_seq[direction] = self._seq[(direction, Phase.DATA)]
        self.keys.update(direction)
        self.env.meter.hkdf(_HKDF_UPDATE)
        self._seq[(direction, Phase.DATA)] = 0

    def commit_key_update(self, direction: Direction) -> None:
        """The new key of ``direction`` is confirmed: drop the backup."""
        direction = Direction(direction)
        self.keys.commit_update(direction)
        self._backup_seq.pop(direction, None)

    def rollback_key_update(self, direction: Direction) -> None:
        """Return ``direction`` to its previous key and sequence number (a key update that failed)."""
        direction = Direction(direction)
        if direction not in self._backup_seq:
            raise SessionStateError(f"no pending {direction} key update")
        self.keys.rollback_update(direction)
        self._seq[(direction, Phase.DATA)] = self._backup_seq.pop(direction)

    def key_update_pending(self, direction: Direction) -> bool:
        return Direction(direction) in self._backup_seq

    # Choreography helpers: who switches which key when (libspdm, §4.2).

    def responder_apply_key_update(self, operation: KeyUpdateOperation) -> None:
        """Responder, on a valid KEY_UPDATE and before sealing the ACK.

        UpdateKey: new request key (pending). UpdateAllKeys: new request key (pending) and new
        response key, committed at once so that the ACK already goes out under it. VerifyNewKey:
        the request key it arrived under is confirmed.
        """
        op = KeyUpdateOperation(operation)
        if op is KeyUpdateOperation.VERIFY_NEW_KEY:
            self.commit_key_update(Direction.REQUEST)
            return
        self.update_key(Direction.REQUEST)
        if op is KeyUpdateOperation.UPDATE_ALL_KEYS:
            self.update_key(Direction.RESPONSE)
            self.commit_key_update(Direction.RESPONSE)

    def requester_before_key_update(self, operation: KeyUpdateOperation) -> None:
        """Requester, after sealing KEY_UPDATE and before opening its ACK: UpdateAllKeys → new response key."""
        if KeyUpdateOperation(operation) is KeyUpdateOperation.UPDATE_ALL_KEYS:
            self.update_key(Direction.RESPONSE)

    def requester_after_key_update_ack(self, operation: KeyUpdateOperation) -> None:
        """Requester, after a good ACK to UpdateKey/UpdateAllKeys: confirm the response key, switch the request key.

        The next request (VERIFY_NEW_KEY) is then sealed under the new request key.
        """
        op = KeyUpdateOperation(operation)
        if op is KeyUpdateOperation.VERIFY_NEW_KEY:
            self.commit_key_update(Direction.REQUEST)
            return
        if op is KeyUpdateOperation.UPDATE_ALL_KEYS:
            self.commit_key_update(Direction.RESPONSE)
        self.update_key(Direction.REQUEST)
