"""The SPDM 1.1-1.3 session key schedule (PROTOCOLS.md §4) and VerifyData.

One :class:`SessionKeySchedule` holds every secret of one session, derives them in the order the
protocol reaches its checkpoints (shared secret → TH1 → TH2 → key updates), and reports each one
to the secret sink when it is created:

* DHE_SHARED_SECRET — the ECDHE shared secret it was given (the PSK itself is not re-reported:
  whoever provisions a PSK reports it);
* SPDM_SESSION_SECRET — handshake secret, per-direction handshake secrets, finished keys, Salt_1,
  master secret, per-direction application secrets (and each key-update successor), export master;
* SPDM_SESSION_KEY — every AEAD key and IV salt, per direction and phase.
"""

from __future__ import annotations

import dataclasses
import enum

from sim.crypto.aead import AEAD_IV_SIZE, aead_key_size
from sim.crypto.algorithms import AeadSuite, BaseHashAlgo
from sim.crypto.errors import CryptoError, UnsupportedAlgorithmError
from sim.crypto.hashes import hash_size, hkdf_expand, hkdf_extract, hmac_digest
from sim.crypto.secrets import SecretClass, SecretRecord, SecretSink


class KeyLabel(enum.StrEnum):
    """BinConcat labels (§4.1), exact ASCII without NUL."""

    DERIVED = "derived"
    REQ_HS_DATA = "req hs data"
    RSP_HS_DATA = "rsp hs data"
    REQ_APP_DATA = "req app data"
    RSP_APP_DATA = "rsp app data"
    KEY = "key"
    IV = "iv"
    FINISHED = "finished"
    EXP_MASTER = "exp master"
    TRAFFIC_UPD = "traffic upd"


class Direction(enum.StrEnum):
    REQUEST = "req"    # requester → responder
    RESPONSE = "rsp"   # responder → requester


class Phase(enum.StrEnum):
    HANDSHAKE = "hs"
    DATA = "app"


class SecretSource(enum.Enum):
    DHE = "dhe"
    PSK = "psk"


_HS_LABEL = {Direction.REQUEST: KeyLabel.REQ_HS_DATA, Direction.RESPONSE: KeyLabel.RSP_HS_DATA}
_APP_LABEL = {Direction.REQUEST: KeyLabel.REQ_APP_DATA, Direction.RESPONSE: KeyLabel.RSP_APP_DATA}


def version_label(version: int) -> bytes:
    """The 8-byte BinConcat version string, e.g. b"spdm1.2 " (trailing space) for 0x12."""
    label = _VERSION_LABELS.get(version) if type(version) is int else None
    if label is not None:
        return label
    if not 0x11 <= version <= 0x1F:
        raise UnsupportedAlgorithmError(f"SPDM version 0x{version:02x} has no key schedule (sessions start at 1.1)")
    return f"spdm{version >> 4}.{version & 0xF} ".encode("ascii")


_VERSION_LABELS = {v: f"spdm{v >> 4}.{v & 0xF} ".encode("ascii") for v in range(0x11, 0x20)}


def bin_concat(version: int, length: int, label: str | bytes, context: bytes = b"") -> bytes:
    """BinConcat(Length, Label, Context) = u16 LE length ‖ "spdm1.x " ‖ label ‖ context (§4.1)."""
    if not 0 <= length <= 0xFFFF:
        raise CryptoError("BinConcat length out of u16 range")
    raw = label.encode("ascii") if isinstance(label, str) else label
    return length.to_bytes(2, "little") + version_label(version) + raw + context


def salt_0(version: int, hash_algo: BaseHashAlgo, source: SecretSource) -> bytes:
    """H zero bytes, except H bytes of 0xFF for PSK sessions from SPDM 1.3 on (§4.2)."""
    h = hash_size(hash_algo)
    if source is SecretSource.PSK and version >= 0x13:
        return b"\xff" * h
    return bytes(h)


def verify_data(hash_algo: BaseHashAlgo, finished_key: bytes, transcript_hash: bytes) -> bytes:
    """VerifyData = HMAC-Hash(finished_key, Hash(transcript)) — over the digest (§3.2, §9 item 4)."""
    return hmac_digest(hash_algo, finished_key, transcript_hash)


@dataclasses.dataclass(frozen=True)
class TrafficKeys:
    """The AEAD key and the 12-byte IV salt of one direction in one phase (sequence numbers live in
    the protocol layer, which also resets them to 0 after a key update)."""

    key: bytes
    salt: bytes

    def __repr__(self) -> str:  # never print key material by accident
        return f"TrafficKeys(key=<{len(self.key)} bytes>, salt=<{len(self.salt)} bytes>)"


class SessionKeySchedule:
    """All derived secrets of one SPDM session.

    ``version`` is the negotiated SPDMVersion byte (0x11-0x13; the BinConcat string follows it),
    ``name`` prefixes every secret label (e.g. "session 0xfffdfffe"), ``owner`` is the component
    that holds this copy of the schedule (each peer has its own).
    """

    def __init__(
        self,
        version: int,
        hash_algo: BaseHashAlgo,
        aead: AeadSuite,
        *,
        sink: SecretSink | None = None,
        owner: str = "",
        name: str = "session",
    ) -> None:
        version_label(version)  # validates
        self.version = version
        self.hash_algo = BaseHashAlgo(hash_algo)
        self.aead = AeadSuite(aead)
        self.hash_size = hash_size(self.hash_algo)
        self.key_size = aead_key_size(self.aead)
        self._sink = sink
        self._owner = owner
        self.name = name
        self.source: SecretSource | None = None
        self._handshake_secret: bytes | None = None
        self._master_secret: bytes | None = None
        self._export_master_secret: bytes | None = None
        self._hs_secret: dict[Direction, bytes] = {}
        self._finished_key: dict[Direction, bytes] = {}
        self._app_secret: dict[Direction, bytes] = {}
        self._keys: dict[tuple[Direction, Phase], TrafficKeys] = {}
        self._backup: dict[Direction, tuple[bytes, TrafficKeys]] = {}
        self.update_count: dict[Direction, int] = {Direction.REQUEST: 0, Direction.RESPONSE: 0}

    # --- helpers ------------------------------------------------------------------------------

    def _report(self, label: str, secret_class: SecretClass, value: bytes) -> None:
        if self._sink is not None:
            self._sink.register(SecretRecord(f"{self.name} {label}", secret_class, self._owner, value))

    def _expand(self, secret: bytes, label: KeyLabel, context: bytes, length: int) -> bytes:
        return hkdf_expand(self.hash_algo, secret, bin_concat(self.version, length, label.value, context), length)

    def _traffic_keys(self, secret: bytes, direction: Direction, phase: Phase, note: str = "") -> TrafficKeys:
        keys = TrafficKeys(
            key=self._expand(secret, KeyLabel.KEY, b"", self.key_size),
            salt=self._expand(secret, KeyLabel.IV, b"", AEAD_IV_SIZE),
        )
        self._report(f"{direction} {phase} key{note}", SecretClass.SPDM_SESSION_KEY, keys.key)
        self._report(f"{direction} {phase} iv{note}", SecretClass.SPDM_SESSION_KEY, keys.salt)
        return keys

    @staticmethod
    def _need(value: bytes | None, what: str) -> bytes:
        if value is None:
            raise CryptoError(f"{what} is not derived yet")
        return value

    # --- stages -------------------------------------------------------------------------------

    def set_dhe_secret(self, shared_secret: bytes) -> None:
        """Handshake-Secret = HKDF-Extract(Salt_0, ECDHE shared secret)."""
        self._set_ikm(shared_secret, SecretSource.DHE)
        self._report("dhe shared secret", SecretClass.DHE_SHARED_SECRET, shared_secret)
        self._report("handshake secret", SecretClass.SPDM_SESSION_SECRET, self.handshake_secret)

    def set_psk(self, psk: bytes) -> None:
        """Handshake-Secret = HKDF-Extract(Salt_0, PSK); Salt_0 is 0xFF×H from 1.3 on."""
        self._set_ikm(psk, SecretSource.PSK)
        self._report("handshake secret", SecretClass.SPDM_SESSION_SECRET, self.handshake_secret)

    def _set_ikm(self, ikm: bytes, source: SecretSource) -> None:
        if self._handshake_secret is not None:
            raise CryptoError("the session's shared secret is already set")
        if not ikm:
            raise CryptoError("empty shared secret")
        self.source = source
        self._handshake_secret = hkdf_extract(self.hash_algo, salt_0(self.version, self.hash_algo, source), ikm)

    def derive_handshake(self, th1_hash: bytes) -> None:
        """From TH1: both handshake secrets, finished keys and handshake traffic keys."""
        hs = self._need(self._handshake_secret, "handshake secret")
        self._check_hash(th1_hash, "TH1")
        for direction in Direction:
            secret = self._expand(hs, _HS_LABEL[direction], th1_hash, self.hash_size)
            self._hs_secret[direction] = secret
            self._report(f"{direction} hs secret", SecretClass.SPDM_SESSION_SECRET, secret)
            fk = self._expand(secret, KeyLabel.FINISHED, b"", self.hash_size)
            self._finished_key[direction] = fk
            self._report(f"{direction} finished key", SecretClass.SPDM_SESSION_SECRET, fk)
            self._keys[(direction, Phase.HANDSHAKE)] = self._traffic_keys(secret, direction, Phase.HANDSHAKE)

    def derive_data(self, th2_hash: bytes) -> None:
        """From TH2: Salt_1, master secret, application secrets and keys, export master secret."""
        hs = self._need(self._handshake_secret, "handshake secret")
        self._check_hash(th2_hash, "TH2")
        salt_1 = self._expand(hs, KeyLabel.DERIVED, b"", self.hash_size)
        self._report("salt_1", SecretClass.SPDM_SESSION_SECRET, salt_1)
        ms = hkdf_extract(self.hash_algo, salt_1, bytes(self.hash_size))
        self._master_secret = ms
        self._report("master secret", SecretClass.SPDM_SESSION_SECRET, ms)
        for direction in Direction:
            secret = self._expand(ms, _APP_LABEL[direction], th2_hash, self.hash_size)
            self._app_secret[direction] = secret
            self._report(f"{direction} app secret", SecretClass.SPDM_SESSION_SECRET, secret)
            self._keys[(direction, Phase.DATA)] = self._traffic_keys(secret, direction, Phase.DATA)
        self._export_master_secret = self._expand(ms, KeyLabel.EXP_MASTER, th2_hash, self.hash_size)
        self._report("export master secret", SecretClass.SPDM_SESSION_SECRET, self._export_master_secret)

    def update(self, direction: Direction) -> TrafficKeys:
        """KEY_UPDATE: new app secret = Expand(old, BinConcat(H, "traffic upd"), H); new key and iv.

        The previous secret and keys are kept until :meth:`commit_update` or :meth:`rollback_update`,
        as libspdm does, so a failed VerifyNewKey can fall back. Sequence numbers restart at 0
        (the caller's business).
        """
        direction = Direction(direction)
        old = self._need(self._app_secret.get(direction), f"{direction} app secret")
        new = self._expand(old, KeyLabel.TRAFFIC_UPD, b"", self.hash_size)
        self.update_count[direction] += 1
        note = f" (update {self.update_count[direction]})"
        self._report(f"{direction} app secret{note}", SecretClass.SPDM_SESSION_SECRET, new)
        self._backup[direction] = (old, self._keys[(direction, Phase.DATA)])
        self._app_secret[direction] = new
        keys = self._traffic_keys(new, direction, Phase.DATA, note)
        self._keys[(direction, Phase.DATA)] = keys
        return keys

    def commit_update(self, direction: Direction) -> None:
        self._backup.pop(Direction(direction), None)

    def rollback_update(self, direction: Direction) -> TrafficKeys:
        direction = Direction(direction)
        if direction not in self._backup:
            raise CryptoError(f"no pending {direction} key update to roll back")
        secret, keys = self._backup.pop(direction)
        self._app_secret[direction] = secret
        self._keys[(direction, Phase.DATA)] = keys
        self.update_count[direction] -= 1
        return keys

    def _check_hash(self, value: bytes, what: str) -> None:
        if len(value) != self.hash_size:
            raise CryptoError(f"{what} must be {self.hash_size} bytes, got {len(value)}")

    # --- accessors ----------------------------------------------------------------------------

    @property
    def handshake_secret(self) -> bytes:
        return self._need(self._handshake_secret, "handshake secret")

    @property
    def master_secret(self) -> bytes:
        return self._need(self._master_secret, "master secret")

    @property
    def export_master_secret(self) -> bytes:
        return self._need(self._export_master_secret, "export master secret")

    def handshake_secret_of(self, direction: Direction) -> bytes:
        return self._need(self._hs_secret.get(Direction(direction)), f"{direction} hs secret")

    def app_secret(self, direction: Direction) -> bytes:
        return self._need(self._app_secret.get(Direction(direction)), f"{direction} app secret")

    def finished_key(self, direction: Direction) -> bytes:
        return self._need(self._finished_key.get(Direction(direction)), f"{direction} finished key")

    def keys(self, direction: Direction, phase: Phase) -> TrafficKeys:
        found = self._keys.get((direction, phase))  # members and their string values hash alike
        if found is None:
            found = self._keys.get((Direction(direction), Phase(phase)))
        if found is None:
            raise CryptoError(f"{direction} {phase} keys are not derived yet")
        return found

    def verify_data(self, direction: Direction, transcript_hash: bytes) -> bytes:
        """HMAC(finished_key of ``direction``, transcript_hash)."""
        self._check_hash(transcript_hash, "transcript hash")
        return verify_data(self.hash_algo, self.finished_key(direction), transcript_hash)
