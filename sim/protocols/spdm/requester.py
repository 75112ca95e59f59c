"""The SPDM requester (DSP0274 1.0-1.3): sans-IO flows that verify everything they receive.

Every public method returns a *flow* (:mod:`sim.protocols.flow`): a generator that yields the
DOE objects to send and receives the peer's answers, and finally returns an
:class:`~sim.protocols.spdm.outcome.Ok` with a verified result or a
:class:`~sim.protocols.spdm.outcome.Failure`. No exception ever reaches the driver.

What is verified, and against what:

* VCA — the highest version both sides support (capped by the config, at least the policy's
  minimum); each ALGORITHMS selection is exactly one bit that the requester offered and the
  policy accepts.
* Certificates — the chain is assembled from portions (pad bytes and portion bookkeeping
  checked), then its container framing, RootHash, issuance up to a trusted root, constraints,
  leaf key usage and validity (:func:`sim.crypto.identity.verify_spdm_cert_chain`), and its hash
  against DIGESTS.
* CHALLENGE_AUTH, MEASUREMENTS, KEY_EXCHANGE_RSP — signatures over M1/M2, L1/L2 and the
  KEY_EXCHANGE transcript with the leaf key, by the version's signing rule (PROTOCOLS.md §3.3);
  nonces and RequesterContext echoes; the measurement summary hash; reference measurements.
* Sessions — ResponderVerifyData (TH1, or FINISH_RSP in the clear), the DSP0277 version the
  responder selected, and every record's AEAD tag (:class:`~sim.protocols.spdm.session.SecureSession`).

Transcripts: messages enter exactly as the SPDM message (DOE pad bytes cut off, §1.3), through
the same :class:`~sim.protocols.spdm.transcript.ConnectionTranscript` reset rules the responder
applies. ERROR Busy is retried and ERROR ResponseNotReady answered with RESPOND_IF_READY, a
bounded number of times; a flow cannot sleep, so the RDT × RDTM wait the responder asks for is
left to the driver (``last_not_ready_wait_us`` records it).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Generator, Sequence
from typing import Any, NoReturn, TypeVar

from cryptography import x509

from sim.crypto.algorithms import SIGNATURE_SIZE, AeadSuite, BaseAsymAlgo, BaseHashAlgo, DheGroup, KeyScheduleAlgo
from sim.crypto.dhe import EcdheKeyPair
from sim.crypto.errors import CryptoError
from sim.crypto.hashes import digest, hash_size, measurement_base_hash
from sim.crypto.identity import (
    ChainStatus,
    load_der_certificate,
    split_der_certificates,
    verify_spdm_cert_chain,
)
from sim.crypto.keys import SigningPublicKey
from sim.crypto.signing import SigningContext, spdm_verify
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Flow, Outbound
from sim.protocols.spdm.outcome import (
    AttestationReport,
    ChallengeResult,
    ConnectionInfo,
    DigestsResult,
    Failure,
    FailureReason,
    MeasurementReport,
    NegotiatedAlgorithms,
    Ok,
    Outcome,
    VerifiedChain,
)
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.profile import capabilities_for_version
from sim.protocols.spdm.session import (
    SecureSession,
    SessionDecryptError,
    SessionError,
    SessionRole,
    SessionState,
    SessionStateError,
    WrongSessionError,
    record_session_id,
)
from sim.protocols.spdm.transcript import Buffer, ConnectionTranscript, SessionTranscript
from sim.wire.codec import DecodeError, EncodeError
from sim.wire.doe import DoeObjectType
from sim.wire.secured import session_id as make_session_id
from sim.wire.spdm.algorithms import Algorithms, AlgStruct, NegotiateAlgorithms, OtherParams
from sim.wire.spdm.capabilities import MIN_DATA_TRANSFER_SIZE, Capabilities, GetCapabilities
from sim.wire.spdm.certificates import MAX_SLOTS, Certificate, Digests, GetCertificate, GetDigests
from sim.wire.spdm.challenge import Challenge, ChallengeAuth
from sim.wire.spdm.common import (
    NONCE_SIZE,
    REQUESTER_CONTEXT_SIZE,
    AlgType,
    CapabilityFlags,
    ErrorCode,
    MeasurementSpec,
    MeasurementSummaryHashType,
    RegistryId,
    ResponseCode,
    SpdmContext,
    SpdmMessage,
    SpdmVersion,
    decode_spdm_sized,
)
from sim.wire.spdm.error import ErrorResponse, ResponseNotReadyData
from sim.wire.spdm.finish import Finish, FinishRsp
from sim.wire.spdm.key_exchange import KeyExchange, KeyExchangeRsp, MutAuthRequested, SessionPolicy
from sim.wire.spdm.measurements import (
    ContentChanged,
    GetMeasurements,
    MeasurementAttributes,
    MeasurementBlock,
    MeasurementOperation,
    Measurements,
)
from sim.wire.spdm.opaque import parse_secured_message_versions, supported_versions_opaque
from sim.wire.spdm.session import (
    EndSession,
    EndSessionAck,
    EndSessionAttributes,
    Heartbeat,
    HeartbeatAck,
    KeyUpdate,
    KeyUpdateAck,
    KeyUpdateOperation,
)
from sim.wire.spdm.vendor import VendorDefinedRequest, VendorDefinedResponse
from sim.wire.spdm.version import GetVersion, RespondIfReady, Version

T = TypeVar("T")
M = TypeVar("M", bound=SpdmMessage)

MAX_DOE_PADDING = 3  # DOE pads an SPDM message to a DW boundary (§1.3)
_REGISTRY_IDS: dict[int, RegistryId] = RegistryId._value2member_map_  # type: ignore[assignment]
SUPPORTED_SPDM_VERSIONS = (SpdmVersion.V10, SpdmVersion.V11, SpdmVersion.V12, SpdmVersion.V13)
DSP0277_VERSIONS = (0x1000, 0x1100, 0x1200)  # secured-message versions offered in KEY_EXCHANGE (§5.5)
MAX_CERT_CHAIN_SIZE = 0xFFFF  # the container's u16 Length (§2.7)
FIRST_REQ_SESSION_ID = 0xFFFF  # libspdm hands out ReqSessionIDs downwards from here

DEFAULT_REQUESTER_FLAGS = (
    CapabilityFlags.ENCRYPT_CAP | CapabilityFlags.MAC_CAP | CapabilityFlags.KEY_EX_CAP
    | CapabilityFlags.HBEAT_CAP | CapabilityFlags.KEY_UPD_CAP
)
# The flags this requester implements; MUT_AUTH, PSK, ENCAP, CHUNK are not (INTEROP.md: a requester
# that cannot do mutual authentication must not offer MUT_AUTH_CAP).
IMPLEMENTED_REQUESTER_FLAGS = DEFAULT_REQUESTER_FLAGS | CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP
_MEAS_CAP = CapabilityFlags.MEAS_CAP_SIG | CapabilityFlags.MEAS_CAP_NO_SIG


def parse_version(text: str | int) -> int:
    """An SPDM version byte from "1.2", "12", 0x12 or 12 (what ``--ver`` accepts)."""
    if isinstance(text, int):
        value = text if text >= 0x10 else (text // 10) << 4 | text % 10
    else:
        parts = text.strip().split(".")
        try:
            if len(parts) == 2:
                value = int(parts[0]) << 4 | int(parts[1])
            elif len(parts) == 1 and len(parts[0]) == 2:
                value = int(parts[0][0]) << 4 | int(parts[0][1])
            else:
                raise ValueError(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an SPDM version like 1.2") from None
    if value not in SUPPORTED_SPDM_VERSIONS:
        raise ValueError(f"SPDM version 0x{value:02x} is not one of 1.0-1.3")
    return value


@dataclasses.dataclass(frozen=True)
class RequesterConfig:
    """What the requester offers: versions, capabilities, algorithms, sizes and retry bounds.

    Algorithm fields are bitmasks of everything offered; the responder picks one bit of each.
    ``max_version`` caps the negotiation ("--ver 1.2").
    """

    versions: tuple[int, ...] = tuple(SUPPORTED_SPDM_VERSIONS)
    max_version: int | None = None
    flags: CapabilityFlags = DEFAULT_REQUESTER_FLAGS
    ct_exponent: int = 0
    data_transfer_size: int = 4096
    max_spdm_msg_size: int = 4096
    base_asym_algo: BaseAsymAlgo = BaseAsymAlgo.ECDSA_P256 | BaseAsymAlgo.ECDSA_P384
    base_hash_algo: BaseHashAlgo = BaseHashAlgo.SHA_256 | BaseHashAlgo.SHA_384
    dhe_groups: DheGroup = DheGroup.SECP_256_R1 | DheGroup.SECP_384_R1
    aead_suites: AeadSuite = AeadSuite.AES_128_GCM | AeadSuite.AES_256_GCM
    key_schedule: KeyScheduleAlgo = KeyScheduleAlgo.SPDM
    secured_message_versions: tuple[int, ...] = DSP0277_VERSIONS
    session_policy: SessionPolicy = SessionPolicy(0)
    cert_portion_length: int = 0x400  # libspdm's LIBSPDM_MAX_CERT_CHAIN_BLOCK_LEN
    max_busy_retries: int = 3
    max_not_ready_retries: int = 3

    def __post_init__(self) -> None:
        versions = tuple(sorted({int(v) for v in self.versions}))
        if not versions or any(v not in SUPPORTED_SPDM_VERSIONS for v in versions):
            raise ValueError(f"versions must be a non-empty subset of 1.0-1.3, not {self.versions}")
        object.__setattr__(self, "versions", versions)
        if self.max_version is not None:
            object.__setattr__(self, "max_version", parse_version(self.max_version))
        extra = CapabilityFlags(self.flags) & ~IMPLEMENTED_REQUESTER_FLAGS
        if extra:
            raise ValueError(f"requester capabilities {extra!r} are not implemented")
        if not MIN_DATA_TRANSFER_SIZE <= self.data_transfer_size <= self.max_spdm_msg_size:
            raise ValueError("need 42 <= data_transfer_size <= max_spdm_msg_size")
        if not 1 <= self.cert_portion_length <= 0xFFFF:
            raise ValueError("cert_portion_length must be 1..65535")
        if not self.secured_message_versions:
            raise ValueError("at least one DSP0277 version must be offered")

    @property
    def offered_versions(self) -> tuple[int, ...]:
        cap = self.max_version
        return tuple(v for v in self.versions if cap is None or v <= cap)

    def replace(self, **changes: Any) -> RequesterConfig:
        return dataclasses.replace(self, **changes)


class ConnectionState(enum.IntEnum):
    """How far the connection got (ordered, like libspdm's connection states)."""

    NOT_STARTED = 0
    NEGOTIATED = 1
    AUTHENTICATED = 2


@dataclasses.dataclass(eq=False)
class SessionHandle:
    """A requester's session: what ``start_session`` returns and the session flows take."""

    secure: SecureSession
    slot_id: int
    secured_message_version: int
    heartbeat_period: int
    measurement_summary_hash: bytes = b""
    # the per-session L buffer: GET_MEASUREMENTS / MEASUREMENTS inside this session since the last signed one
    measurement_log: bytearray = dataclasses.field(default_factory=bytearray, repr=False)

    @property
    def session_id(self) -> int:
        return self.secure.session_id

    @property
    def established(self) -> bool:
        return self.secure.established

    @property
    def ended(self) -> bool:
        return self.secure.ended

    def __repr__(self) -> str:
        return f"SessionHandle(0x{self.session_id:08x}, {self.secure.state.value})"


class _Abort(Exception):
    """Internal: ends a flow with a Failure (caught by the flow guard, never seen by drivers)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _fail(reason: FailureReason, message: str, detail: str, *, error_code: ErrorCode | None = None,
          error_data: int | None = None) -> NoReturn:
    raise _Abort(Failure(reason, detail, message, error_code, error_data))


def _one_bit(value: int) -> bool:
    return value != 0 and value & (value - 1) == 0


def _hex(version: int) -> str:
    return f"{version >> 4}.{version & 0xF}"


_Gen = Generator[Outbound, bytes | None, T]


class SpdmRequester:
    """One requester's connection to one responder (see the module docstring).

    ``config`` is what it offers, ``policy`` what it accepts, ``env`` its randomness, secret sink
    and crypto meter. State kept between flows: the negotiated version and algorithms, the
    connection transcript, digests and verified chains per slot, and open sessions.
    """

    def __init__(self, config: RequesterConfig | None = None, policy: VerificationPolicy | None = None,
                 env: ProtocolEnv | None = None) -> None:
        self.config = config if config is not None else RequesterConfig()
        self.policy = policy if policy is not None else VerificationPolicy()
        self.env = env if env is not None else ProtocolEnv.for_test("requester")
        self.transcript = ConnectionTranscript()
        self.sessions: dict[int, SessionHandle] = {}
        self.last_not_ready_wait_us = 0
        self._next_req_session_id = FIRST_REQ_SESSION_ID
        self._forget_connection()

    def _forget_connection(self) -> None:
        self.state = ConnectionState.NOT_STARTED
        self.version = SpdmVersion.V10
        self.info: ConnectionInfo | None = None
        self.ctx = SpdmContext()
        self.peer_flags = CapabilityFlags(0)
        self.algorithms: Algorithms | None = None
        self.digests: dict[int, bytes] | None = None
        self.chains: dict[int, VerifiedChain] = {}
        self.last_challenge: ChallengeResult | None = None
        self.last_measurements: MeasurementReport | None = None
        for handle in list(self.sessions.values()):
            handle.secure.end("version-reset")
        self.sessions.clear()

    # =============================================================================================
    # Public flows
    # =============================================================================================

    def init_connection(self) -> Flow[Outcome[ConnectionInfo]]:
        """GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS; a new GET_VERSION resets everything."""
        return self._guarded("GET_VERSION", self._init_connection())

    def get_digests(self) -> Flow[Outcome[DigestsResult]]:
        """GET_DIGESTS: the responder's provisioned slots and chain digests (kept to check chains against)."""
        return self._guarded("GET_DIGESTS", self._get_digests())

    def get_certificate(self, slot: int = 0) -> Flow[Outcome[VerifiedChain]]:
        """GET_CERTIFICATE in portions until RemainderLength is 0, then verify the chain by the policy."""
        return self._guarded("GET_CERTIFICATE", self._get_certificate(slot))

    def challenge(self, slot: int = 0, summary_type: MeasurementSummaryHashType = MeasurementSummaryHashType.NONE
                  ) -> Flow[Outcome[ChallengeResult]]:
        """CHALLENGE: verify CHALLENGE_AUTH's signature over M1/M2 with the slot's verified leaf key."""
        return self._guarded("CHALLENGE", self._challenge(slot, summary_type))

    def get_measurements(self, indices: Sequence[int] | None = None, *, signed: bool = True, slot: int = 0,
                         raw: bool = False, session: SessionHandle | None = None) -> Flow[Outcome[MeasurementReport]]:
        """GET_MEASUREMENTS for all indices (None) or the given ones; the last request is signed if ``signed``.

        Inside ``session`` the requests travel as secured records and the session's own L buffer
        is signed (1.2+: A ‖ L, as outside).
        """
        return self._guarded("GET_MEASUREMENTS", self._get_measurements(indices, signed, slot, raw, session))

    def attest(self, slot: int = 0, summary_type: MeasurementSummaryHashType = MeasurementSummaryHashType.ALL
               ) -> Flow[Outcome[AttestationReport]]:
        """VCA (if needed), digests, certificate, challenge and signed measurements → an AttestationReport."""
        return self._guarded("ATTEST", self._attest(slot, summary_type))

    def start_session(self, slot: int = 0, summary_type: MeasurementSummaryHashType = MeasurementSummaryHashType.NONE,
                      session_policy: SessionPolicy | None = None) -> Flow[Outcome[SessionHandle]]:
        """KEY_EXCHANGE + FINISH: an established secured session with the slot's certified key."""
        return self._guarded("KEY_EXCHANGE", self._start_session(slot, summary_type, session_policy))

    def secured_exchange(self, session: SessionHandle, message: bytes) -> Flow[Outcome[bytes]]:
        """Send one SPDM request inside ``session`` (DOE type 2) and return the response message.

        Any non-ERROR response is returned as the exact SPDM bytes; an ERROR is a Failure.
        """
        return self._guarded("SECURED", self._secured_exchange(session, bytes(message)))

    def vendor_request(self, session: SessionHandle | None, standard_id: int, vendor_id: bytes, payload: bytes
                       ) -> Flow[Outcome[bytes | None]]:
        """VENDOR_DEFINED_REQUEST (IDE_KM, TDISP) inside ``session`` (or in the clear when None).

        Returns the VENDOR_DEFINED_RESPONSE payload, or ``Ok(None)`` when the responder stayed silent
        (a TDISP message it must ignore, PROTOCOLS.md §6.1).
        """
        return self._guarded("VENDOR_DEFINED_REQUEST", self._vendor_request(session, standard_id, bytes(vendor_id),
                                                                            bytes(payload)))

    def heartbeat(self, session: SessionHandle) -> Flow[Outcome[None]]:
        """HEARTBEAT → HEARTBEAT_ACK inside the session."""
        return self._guarded("HEARTBEAT", self._heartbeat(session))

    def key_update(self, session: SessionHandle, operation: KeyUpdateOperation = KeyUpdateOperation.UPDATE_ALL_KEYS
                   ) -> Flow[Outcome[None]]:
        """KEY_UPDATE (UpdateKey or UpdateAllKeys), then VerifyNewKey under the new request key (§4.2)."""
        return self._guarded("KEY_UPDATE", self._key_update(session, operation))

    def end_session(self, session: SessionHandle, *, clear_negotiated_state: bool = False) -> Flow[Outcome[None]]:
        """END_SESSION → END_SESSION_ACK; the session's keys are forgotten either way."""
        return self._guarded("END_SESSION", self._end_session(session, clear_negotiated_state))

    # =============================================================================================
    # The flow guard and the exchange primitives
    # =============================================================================================

    def _guarded(self, name: str, inner: Generator[Outbound, bytes | None, T]) -> Flow[Outcome[T]]:
        """Run ``inner``; turn an abort into its Failure and any other exception into INTERNAL_ERROR."""
        try:
            value = yield from inner
        except _Abort as abort:
            return abort.failure
        except Exception as exc:  # a bug must never take the driver (SimPy process, socket client) down
            return Failure(FailureReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", name)
        return Ok(value)

    def _need_state(self, name: str, state: ConnectionState = ConnectionState.NEGOTIATED) -> None:
        if self.state < state:
            _fail(FailureReason.INVALID_STATE, name, f"the connection is {self.state.name}, needs {state.name}")

    def _peer_has(self, flag: CapabilityFlags) -> bool:
        return bool(int(self.peer_flags) & int(flag))  # as plain ints: IntFlag's & builds a new member

    def _both_have(self, flag: CapabilityFlags) -> bool:
        return bool(int(self.config.flags) & int(flag)) and self._peer_has(flag)

    def _send(self, name: str, request: bytes, session: SessionHandle | None,
              after_seal: Callable[[], None] | None, allow_silence: bool) -> _Gen[bytes | None]:
        """One transport round trip; opens secured answers; returns the SPDM response bytes (maybe padded)."""
        if session is None:
            answer = yield Outbound(DoeObjectType.SPDM, request)
            if answer is None:
                if allow_silence:
                    return None
                _fail(FailureReason.NO_RESPONSE, name, "no response to the request")
            return bytes(answer)
        secure = session.secure
        try:
            record = secure.seal(request)
        except SessionError as exc:
            _fail(FailureReason.SESSION_ENDED, name, str(exc))
        if after_seal is not None:
            after_seal()
        answer = yield Outbound(DoeObjectType.SECURED_SPDM, record, plaintext=request)
        if answer is None:
            if allow_silence:
                return None
            _fail(FailureReason.NO_RESPONSE, name, f"no response in session 0x{session.session_id:08x}")
        answer = bytes(answer)
        if len(answer) < 4:
            try:
                record_session_id(answer)  # says why it is no record
            except DecodeError as exc:
                _fail(FailureReason.MALFORMED_RESPONSE, name, str(exc))
        if int.from_bytes(answer[:4], "little") != secure.session_id:
            self._plain_error_instead_of_record(name, answer, session)
        try:
            return secure.open(answer)
        except (SessionDecryptError, WrongSessionError) as exc:
            self._drop_session(session, "decrypt-failed")
            _fail(FailureReason.DECRYPT_FAILED, name, str(exc))
        except SessionStateError as exc:
            _fail(FailureReason.SESSION_ENDED, name, str(exc))

    def _plain_error_instead_of_record(self, name: str, answer: bytes, session: SessionHandle) -> NoReturn:
        """A type-2 request answered by something that is not this session's record.

        A responder that no longer holds the session's keys can only answer in the clear (this
        simulator's responder seals its DecryptError, as libspdm does, but other peers may not).
        The flow's transport gives only bytes, so a plain ERROR is recognised by its header; a
        DecryptError ends the session, anything else is a malformed answer.
        """
        if len(answer) >= 4 and answer[0] >> 4 == 1 and answer[1] == ResponseCode.ERROR:
            try:
                error = ErrorResponse.decode(answer, self.ctx, allow_trailing=True)
            except DecodeError as exc:
                _fail(FailureReason.MALFORMED_RESPONSE, name, f"plain ERROR in place of a record: {exc}")
            if error.error_code == ErrorCode.DECRYPT_ERROR:
                self._drop_session(session, "peer-decrypt-error")
                _fail(FailureReason.SESSION_ENDED, name, "the responder could not decrypt the request and ended "
                      "the session", error_code=error.error_code, error_data=error.error_data)
            _fail(FailureReason.ERROR_RESPONSE, name, f"plain {error.summary()} in place of a secured record",
                  error_code=error.error_code, error_data=error.error_data)
        _fail(FailureReason.MALFORMED_RESPONSE, name,
              f"record for session 0x{int.from_bytes(answer[:4], 'little'):08x}, "
              f"expected 0x{session.session_id:08x}")

    def _drop_session(self, session: SessionHandle, reason: str) -> None:
        session.secure.end(reason)
        self.sessions.pop(session.session_id, None)

    def _decode(self, name: str, raw: bytes, expect: type[M] | None, ctx: SpdmContext, *, padded: bool,
                version: int) -> tuple[SpdmMessage, bytes]:
        """Decode a response: ERROR or ``expect`` (any message when None); returns it and its exact bytes."""
        if len(raw) < 4:
            _fail(FailureReason.MALFORMED_RESPONSE, name, f"truncated response of {len(raw)} bytes")
        code = raw[1]
        if expect is not None and code not in (ResponseCode.ERROR, expect.CODE):
            _fail(FailureReason.UNEXPECTED_RESPONSE, name,
                  f"response code 0x{code:02x}, expected {expect.NAME} (0x{expect.CODE:02x})")
        try:
            # the size a message decodes from is the size it re-encodes to (tests/wire/test_spdm_consumed.py)
            msg, size = decode_spdm_sized(raw, ctx, allow_trailing=padded)
        except (DecodeError, EncodeError, ValueError) as exc:
            _fail(FailureReason.MALFORMED_RESPONSE, name, str(exc))
        if len(raw) - size > (MAX_DOE_PADDING if padded else 0):
            _fail(FailureReason.MALFORMED_RESPONSE, name, f"{len(raw) - size} bytes follow the {msg.NAME} message")
        if not isinstance(msg, ErrorResponse) and msg.version != version:  # type: ignore[attr-defined]
            _fail(FailureReason.VERSION_MISMATCH, name,
                  f"{msg.NAME} carries version 0x{msg.version:02x}, expected 0x{version:02x}")  # type: ignore[attr-defined]
        return msg, raw[:size]

    def _roundtrip(self, name: str, request: bytes, expect: type[M] | None, ctx: SpdmContext | None = None, *,
                   session: SessionHandle | None = None, after_seal: Callable[[], None] | None = None,
                   allow_silence: bool = False) -> _Gen[tuple[Any, bytes] | None]:
        """Request → response, with Busy retries and ResponseNotReady → RESPOND_IF_READY.

        Returns (message, exact bytes), or None for silence when ``allow_silence``. The caller
        records request and response in the transcript: retries and ERRORs never enter it (§3).
        """
        ctx = self.ctx if ctx is None else ctx
        version = request[0]
        busy = not_ready = 0
        outgoing = request
        while True:
            raw = yield from self._send(name, outgoing, session, after_seal if outgoing is request else None,
                                        allow_silence)
            if raw is None:
                return None
            msg, exact = self._decode(name, raw, expect, ctx, padded=session is None, version=version)
            if not isinstance(msg, ErrorResponse):
                return msg, exact
            code = msg.error_code
            if code == ErrorCode.BUSY and busy < self.config.max_busy_retries:
                busy += 1
                outgoing = request
                continue
            if code == ErrorCode.RESPONSE_NOT_READY and isinstance(msg.extended, ResponseNotReadyData) \
                    and not_ready < self.config.max_not_ready_retries:
                data = msg.extended
                if data.request_code != request[1]:
                    _fail(FailureReason.MALFORMED_RESPONSE, name,
                          f"ResponseNotReady names request 0x{int(data.request_code):02x}, not 0x{request[1]:02x}")
                not_ready += 1
                self.last_not_ready_wait_us = data.wait_us
                outgoing = RespondIfReady(version=version, request_code=data.request_code, token=data.token).encode()
                continue
            if code == ErrorCode.DECRYPT_ERROR and session is not None:
                self._drop_session(session, "peer-decrypt-error")
                _fail(FailureReason.SESSION_ENDED, name, "the responder reported DecryptError and ended the session",
                      error_code=code, error_data=msg.error_data)
            if code == ErrorCode.REQUEST_RESYNCH:
                self._forget_connection()
            _fail(FailureReason.ERROR_RESPONSE, name, msg.summary(), error_code=code, error_data=msg.error_data)

    def _exchange(self, name: str, request: SpdmMessage, expect: type[M], ctx: SpdmContext | None = None, *,
                  session: SessionHandle | None = None, after_seal: Callable[[], None] | None = None
                  ) -> _Gen[tuple[bytes, M, bytes]]:
        """Encode ``request``, run the round trip; returns (request bytes, response, exact response bytes)."""
        req = request.encode(self.ctx)
        result = yield from self._roundtrip(name, req, expect, ctx, session=session, after_seal=after_seal)
        assert result is not None
        msg, exact = result
        return req, msg, exact

    def _before(self, code: int, session: SessionHandle | None = None) -> None:
        """The transcript resets that sending request ``code`` implies (same rules as the responder).

        A plain request applies the connection rules (libspdm_reset_message_buffer_via_request_code);
        a request inside a session touches only that session's measurement log, as libspdm resets
        the session's L rather than the connection's.
        """
        if session is None:
            self.transcript.before_request(code, negotiated=self.state >= ConnectionState.NEGOTIATED,
                                           authenticated=self.state >= ConnectionState.AUTHENTICATED)
        elif code != GetMeasurements.CODE:
            session.measurement_log.clear()

    def _rng_bytes(self, n: int) -> bytes:
        return self.env.rng.bytes(n)

    def _hash(self, data: bytes) -> bytes:
        self.env.meter.hash(len(data))
        return digest(self._base_hash, data)

    @property
    def _base_hash(self) -> BaseHashAlgo:
        assert self.algorithms is not None
        return BaseHashAlgo(self.algorithms.base_hash_sel)

    @property
    def _base_asym(self) -> BaseAsymAlgo:
        assert self.algorithms is not None
        return BaseAsymAlgo(self.algorithms.base_asym_sel)

    def _verify_signature(self, name: str, key: SigningPublicKey, transcript: bytes, signature: bytes,
                          context: SigningContext, what: str) -> None:
        th = self._hash(transcript)
        self._verify_hashed(name, key, th, signature, context, what)

    def _verify_hashed(self, name: str, key: SigningPublicKey, transcript_hash: bytes, signature: bytes,
                       context: SigningContext, what: str) -> None:
        self.env.meter.verify(self._base_asym)
        try:
            good = spdm_verify(self.version, self._base_asym, self._base_hash, key, transcript_hash, signature, context)
        except CryptoError as exc:
            _fail(FailureReason.BAD_SIGNATURE, name, f"{what}: {exc}")
        if not good:
            _fail(FailureReason.BAD_SIGNATURE, name, f"{what} signature does not verify with the slot's leaf key")

    def _chain_for(self, name: str, slot: int) -> VerifiedChain:
        chain = self.chains.get(slot)
        if chain is None:
            _fail(FailureReason.INVALID_STATE, name, f"no verified certificate chain for slot {slot} "
                                                     "(run get_certificate first)")
        return chain

    @staticmethod
    def _check_slot(name: str, slot: int) -> None:
        if not 0 <= slot < MAX_SLOTS:
            _fail(FailureReason.INVALID_STATE, name, f"slot {slot} is not 0..7 (provisioned public keys are not "
                                                     "supported)")

    # =============================================================================================
    # VCA
    # =============================================================================================

    def _init_connection(self) -> _Gen[ConnectionInfo]:
        self._forget_connection()
        self.transcript.reset()

        name = "GET_VERSION"
        req, ver, ver_raw = yield from self._exchange(name, GetVersion(), Version)
        ours = set(self.config.offered_versions)
        theirs = set(ver.spdm_versions)
        common = ours & theirs
        if not common:
            _fail(FailureReason.VERSION_MISMATCH, name, f"no common version: ours {sorted(_hex(v) for v in ours)}, "
                                                        f"theirs {sorted(_hex(v) for v in theirs)}")
        version = max(common)
        if version < self.policy.min_version:
            _fail(FailureReason.VERSION_MISMATCH, name, f"highest common version {_hex(version)} is below the "
                                                        f"policy minimum {_hex(self.policy.min_version)}")
        self.transcript.add_vca(req)
        self.transcript.add_vca(ver_raw)
        self.version = SpdmVersion(version)

        name = "GET_CAPABILITIES"
        request = self._capabilities_request(version)
        req, caps, caps_raw = yield from self._exchange(name, request, Capabilities)
        self._check_capabilities(name, caps)
        self.transcript.add_vca(req)
        self.transcript.add_vca(caps_raw)
        self.peer_flags = CapabilityFlags(caps.flags)

        name = "NEGOTIATE_ALGORITHMS"
        req, algs, algs_raw = yield from self._exchange(name, self._algorithms_request(version), Algorithms)
        negotiated = self._check_algorithms(name, algs)
        self.transcript.add_vca(req)
        self.transcript.add_vca(algs_raw)
        self.algorithms = algs
        self.ctx = algs.to_context()
        self.state = ConnectionState.NEGOTIATED
        self.info = ConnectionInfo(
            version=version,
            peer_versions=tuple(sorted(theirs)),
            peer_flags=self.peer_flags,
            peer_ct_exponent=caps.ct_exponent,
            peer_data_transfer_size=caps.data_transfer_size,
            peer_max_spdm_msg_size=caps.max_spdm_msg_size,
            algorithms=negotiated,
        )
        return self.info

    def _capabilities_request(self, version: int) -> GetCapabilities:
        if version < SpdmVersion.V11:
            return GetCapabilities(version=version)
        flags = capabilities_for_version(CapabilityFlags(self.config.flags), version)
        if version < SpdmVersion.V12:
            return GetCapabilities(version=version, ct_exponent=self.config.ct_exponent, flags=flags)
        return GetCapabilities(version=version, ct_exponent=self.config.ct_exponent, flags=flags,
                               data_transfer_size=self.config.data_transfer_size,
                               max_spdm_msg_size=self.config.max_spdm_msg_size)

    def _check_capabilities(self, name: str, caps: Capabilities) -> None:
        if caps.data_transfer_size is not None:
            if caps.data_transfer_size < MIN_DATA_TRANSFER_SIZE:
                _fail(FailureReason.MALFORMED_RESPONSE, name,
                      f"DataTransferSize {caps.data_transfer_size} is below {MIN_DATA_TRANSFER_SIZE}")
            if caps.max_spdm_msg_size is not None and caps.max_spdm_msg_size < caps.data_transfer_size:
                _fail(FailureReason.MALFORMED_RESPONSE, name, "MaxSPDMmsgSize is below DataTransferSize")
        flags = CapabilityFlags(caps.flags)
        if flags & _MEAS_CAP == _MEAS_CAP:
            _fail(FailureReason.MALFORMED_RESPONSE, name, "MEAS_CAP value 3 is reserved")

    def _algorithms_request(self, version: int) -> NegotiateAlgorithms:
        cfg = self.config
        structs: tuple[AlgStruct, ...] = ()
        if version >= SpdmVersion.V11:
            structs = (
                AlgStruct(AlgType.DHE, cfg.dhe_groups),
                AlgStruct(AlgType.AEAD, cfg.aead_suites),
                AlgStruct(AlgType.REQ_BASE_ASYM_ALG, cfg.base_asym_algo),
                AlgStruct(AlgType.KEY_SCHEDULE, cfg.key_schedule),
            )
        return NegotiateAlgorithms(
            version=version,
            base_asym_algo=cfg.base_asym_algo,
            base_hash_algo=cfg.base_hash_algo,
            measurement_specification=MeasurementSpec.DMTF,
            other_params_support=OtherParams.OPAQUE_DATA_FMT1 if version >= SpdmVersion.V12 else None,
            alg_structs=structs,
        )

    def _check_algorithms(self, name: str, algs: Algorithms) -> NegotiatedAlgorithms:
        cfg, pol = self.config, self.policy
        problems: list[str] = []

        def pick(label: str, value: int, offered: int, accepted: int, required: bool) -> None:
            if value == 0 and not required:
                return
            if not _one_bit(value):
                problems.append(f"{label} selection 0x{value:x} is not exactly one algorithm")
            elif not value & offered:
                problems.append(f"{label} selection 0x{value:x} was not offered (0x{offered:x})")
            elif not value & accepted:
                problems.append(f"{label} selection 0x{value:x} is not accepted by the policy")

        needs_asym = self._peer_has(CapabilityFlags.CERT_CAP | CapabilityFlags.CHAL_CAP
                                    | CapabilityFlags.MEAS_CAP_SIG | CapabilityFlags.KEY_EX_CAP)
        pick("BaseHashAlgo", int(algs.base_hash_sel), int(cfg.base_hash_algo), int(pol.accepted_hash), True)
        pick("BaseAsymAlgo", int(algs.base_asym_sel), int(cfg.base_asym_algo), int(pol.accepted_asym), needs_asym)
        measures = self._peer_has(_MEAS_CAP)
        if measures:
            if algs.measurement_specification_sel != MeasurementSpec.DMTF:
                problems.append("MeasurementSpecification is not DMTF")
            pick("MeasurementHashAlgo", int(algs.measurement_hash_algo), int(pol.accepted_measurement_hash),
                 int(pol.accepted_measurement_hash), True)
        if algs.ext_asym_sel or algs.ext_hash_sel or any(s.external for s in algs.alg_structs):
            problems.append("an extended algorithm was selected, none was offered")
        session = self.version >= SpdmVersion.V11 and self._both_have(CapabilityFlags.KEY_EX_CAP)
        if session:
            pick("DHE", int(algs.dhe_group or 0), int(cfg.dhe_groups), int(pol.accepted_dhe), True)
            pick("AEAD", int(algs.aead_suite or 0), int(cfg.aead_suites), int(pol.accepted_aead), True)
            pick("KeySchedule", int(algs.key_schedule or 0), int(cfg.key_schedule), int(KeyScheduleAlgo.SPDM), True)
        if self.version >= SpdmVersion.V12:
            selection = int(algs.other_params_selection or 0)
            opaque = selection & 0xF
            if opaque & ~int(OtherParams.OPAQUE_DATA_FMT1):
                problems.append(f"opaque data format selection 0x{opaque:x} was not offered")
            if selection & int(OtherParams.MULTI_KEY_CONN):
                problems.append("MultiKeyConn was selected, it was not offered")
            if session and not opaque:
                problems.append("no opaque data format selected; KEY_EXCHANGE needs Format 1")
        if problems:
            _fail(FailureReason.NO_COMMON_ALGORITHM, name, "; ".join(problems))
        try:
            algs.to_context()
        except ValueError as exc:
            _fail(FailureReason.NO_COMMON_ALGORITHM, name, str(exc))
        return NegotiatedAlgorithms(
            base_asym=BaseAsymAlgo(algs.base_asym_sel) if int(algs.base_asym_sel) else None,
            base_hash=BaseHashAlgo(algs.base_hash_sel),
            measurement_spec=MeasurementSpec(algs.measurement_specification_sel) if measures else None,
            measurement_hash=algs.measurement_hash_algo if measures else None,
            dhe=algs.dhe_group if session else None,
            aead=algs.aead_suite if session else None,
            key_schedule=algs.key_schedule if session else None,
        )

    # =============================================================================================
    # Digests and certificates
    # =============================================================================================

    def _need_cert_cap(self, name: str) -> None:
        self._need_state(name)
        if not self._peer_has(CapabilityFlags.CERT_CAP):
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "the responder does not offer CERT_CAP")

    def _get_digests(self) -> _Gen[DigestsResult]:
        name = "GET_DIGESTS"
        self._need_cert_cap(name)
        self._before(GetDigests.CODE)
        req, rsp, raw = yield from self._exchange(name, GetDigests(version=self.version), Digests)
        if rsp.key_info is not None:  # MultiKeyConn (1.3) is never offered, so these bytes cannot be there
            _fail(FailureReason.MALFORMED_RESPONSE, name, "DIGESTS carries MultiKeyConn key information")
        if rsp.supported_slot_mask is not None and rsp.slot_mask & ~rsp.supported_slot_mask:
            _fail(FailureReason.MALFORMED_RESPONSE, name, "provisioned slots outside the supported slot mask")
        self.transcript.add_b(req)
        self.transcript.add_b(raw)
        digests = rsp.by_slot()
        # a chain whose slot digest changed (or vanished) is no longer the device's
        for slot in list(self.chains):
            if digests.get(slot) != self.chains[slot].digest:
                del self.chains[slot]
        self.digests = digests
        return DigestsResult(rsp.slot_mask, dict(digests))

    def _get_certificate(self, slot: int) -> _Gen[VerifiedChain]:
        name = "GET_CERTIFICATE"
        self._check_slot(name, slot)
        self._need_cert_cap(name)
        if self.digests is not None and slot not in self.digests:
            _fail(FailureReason.INVALID_STATE, name, f"DIGESTS lists no certificate in slot {slot}")
        sizes = [self.config.cert_portion_length, self.config.data_transfer_size - 8]
        if self.info is not None and self.info.peer_data_transfer_size is not None:
            sizes.append(self.info.peer_data_transfer_size - 8)
        portion_max = max(1, min(sizes))
        chain = bytearray()
        total: int | None = None
        while total is None or len(chain) < total:
            want = portion_max if total is None else min(portion_max, total - len(chain))
            self._before(GetCertificate.CODE)
            request = GetCertificate(version=self.version, slot_id=slot, offset=len(chain), length=want)
            req, rsp, raw = yield from self._exchange(name, request, Certificate)
            portion = rsp.cert_chain
            if rsp.slot_id != slot:
                _fail(FailureReason.MALFORMED_RESPONSE, name, f"CERTIFICATE for slot {rsp.slot_id}, asked for {slot}")
            if len(portion) > want:
                _fail(FailureReason.MALFORMED_RESPONSE, name, f"portion of {len(portion)} bytes, asked for {want}")
            if not portion and rsp.remainder_length:
                _fail(FailureReason.MALFORMED_RESPONSE, name, "empty portion with bytes remaining")
            claimed = len(chain) + len(portion) + rsp.remainder_length
            if total is not None and claimed != total:
                _fail(FailureReason.MALFORMED_RESPONSE, name, f"chain size changed from {total} to {claimed} bytes")
            if claimed > MAX_CERT_CHAIN_SIZE:
                _fail(FailureReason.MALFORMED_RESPONSE, name, f"chain of {claimed} bytes exceeds the container limit")
            total = claimed
            self.transcript.add_b(req)
            self.transcript.add_b(raw)
            chain += portion
            if not portion:
                break
        return self._verify_chain(name, slot, bytes(chain))

    def _verify_chain(self, name: str, slot: int, chain: bytes) -> VerifiedChain:
        hash_algo, asym = self._base_hash, self._base_asym
        self.env.meter.hash(len(chain))
        try:
            result = verify_spdm_cert_chain(hash_algo, chain, self.policy.trusted_roots,
                                            at=self.policy.validation_time, asym_algo=asym)
        except x509.InvalidVersion as exc:  # a DER parse error that is not a ValueError
            _fail(FailureReason.CERT_CHAIN_INVALID, name, f"slot {slot}: malformed: {exc}")
        if not result.ok:
            reason = FailureReason.UNTRUSTED_ROOT if result.status is ChainStatus.UNTRUSTED_ROOT \
                else FailureReason.CERT_CHAIN_INVALID
            _fail(reason, name, f"slot {slot}: {result.status.value}: {result.detail}")
        assert result.leaf_public_key is not None
        h = hash_size(hash_algo)
        certs = tuple(split_der_certificates(chain[4 + h:]))
        for _ in certs[1:]:  # one signature check per issued certificate
            self.env.meter.verify(asym)
        leaf = load_der_certificate(certs[-1])
        chain_digest = digest(hash_algo, chain)
        if self.digests is not None and self.digests.get(slot) != chain_digest:
            _fail(FailureReason.DIGEST_MISMATCH, name, f"slot {slot}: Hash(chain) differs from the DIGESTS value")
        verified = VerifiedChain(slot=slot, chain=chain, digest=chain_digest, certificates_der=certs,
                                 leaf_subject=leaf.subject.rfc4514_string(), leaf_public_key=result.leaf_public_key)
        self.chains[slot] = verified
        return verified

    # =============================================================================================
    # CHALLENGE
    # =============================================================================================

    def _summary_size(self, summary_type: MeasurementSummaryHashType) -> int:
        if summary_type == MeasurementSummaryHashType.NONE or not self._peer_has(_MEAS_CAP):
            return 0
        return self.ctx.hash_size

    def _challenge(self, slot: int, summary_type: MeasurementSummaryHashType) -> _Gen[ChallengeResult]:
        name = "CHALLENGE"
        summary_type = MeasurementSummaryHashType(summary_type)
        self._check_slot(name, slot)
        self._need_state(name)
        if not self._peer_has(CapabilityFlags.CHAL_CAP):
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "the responder does not offer CHAL_CAP")
        if summary_type != MeasurementSummaryHashType.NONE and not self._peer_has(_MEAS_CAP):
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "a measurement summary needs MEAS_CAP")
        chain = self._chain_for(name, slot)
        nonce = self._rng_bytes(NONCE_SIZE)
        context = self._rng_bytes(REQUESTER_CONTEXT_SIZE) if self.version >= SpdmVersion.V13 else None
        self._before(Challenge.CODE)
        request = Challenge(version=self.version, slot_id=slot, hash_type=summary_type, nonce=nonce,
                            requester_context=context)
        ctx = self.ctx.with_(meas_summary_size=self._summary_size(summary_type))
        req, rsp, raw = yield from self._exchange(name, request, ChallengeAuth, ctx)
        if rsp.slot_id != slot or not rsp.slot_mask >> slot & 1:
            _fail(FailureReason.MALFORMED_RESPONSE, name,
                  f"CHALLENGE_AUTH names slot {rsp.slot_id} / mask 0x{rsp.slot_mask:02x}, asked for slot {slot}")
        if rsp.basic_mut_auth_req:
            _fail(FailureReason.MALFORMED_RESPONSE, name, "BasicMutAuthReq set, MUT_AUTH_CAP was not offered")
        if context is not None and rsp.requester_context != context:
            _fail(FailureReason.MALFORMED_RESPONSE, name, "RequesterContext is not echoed")
        if rsp.cert_chain_hash != chain.digest:
            _fail(FailureReason.DIGEST_MISMATCH, name, f"CertChainHash is not the hash of slot {slot}'s chain")
        self.transcript.add_c(req)
        self.transcript.add_c(raw[:len(raw) - len(rsp.signature)])
        m1 = self.transcript.m1m2()
        self.transcript.challenge_done()
        self._verify_signature(name, chain.leaf_public_key, m1, rsp.signature,
                               SigningContext.RESPONDER_CHALLENGE_AUTH, "CHALLENGE_AUTH")
        self.state = ConnectionState.AUTHENTICATED
        result = ChallengeResult(slot=slot, slot_mask=rsp.slot_mask, summary_type=summary_type,
                                 requester_nonce=nonce, responder_nonce=rsp.nonce,
                                 measurement_summary_hash=rsp.measurement_summary_hash, opaque_data=rsp.opaque_data)
        self.last_challenge = result
        return result

    # =============================================================================================
    # MEASUREMENTS
    # =============================================================================================

    def _get_measurements(self, indices: Sequence[int] | None, signed: bool, slot: int, raw: bool,
                          session: SessionHandle | None) -> _Gen[MeasurementReport]:
        name = "GET_MEASUREMENTS"
        self._check_slot(name, slot)
        self._need_state(name)
        if session is not None:
            self._need_session(name, session)
        if not self._peer_has(_MEAS_CAP):
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "the responder does not offer MEAS_CAP")
        if not signed and self.policy.require_signed_measurements:
            _fail(FailureReason.POLICY_VIOLATION, name, "the policy requires signed measurements")
        if signed and not self._peer_has(CapabilityFlags.MEAS_CAP_SIG):
            reason = FailureReason.POLICY_VIOLATION if self.policy.require_signed_measurements \
                else FailureReason.UNSUPPORTED_BY_PEER
            _fail(reason, name, "the responder cannot sign measurements (MEAS_CAP without signature)")
        chain = self._chain_for(name, slot) if signed else None
        if indices is None:
            ops: list[int] = [MeasurementOperation.ALL]
        else:
            ops = [int(i) for i in indices]
            if not ops or any(not 1 <= i <= 0xFE for i in ops) or len(set(ops)) != len(ops):
                _fail(FailureReason.INVALID_STATE, name, f"indices {ops} must be distinct values 1..254")
        blocks: dict[int, MeasurementBlock] = {}
        changed = ContentChanged.NO_DETECTION
        nonce = b""
        for n, op in enumerate(ops):
            sign_this = signed and n == len(ops) - 1
            block_list, changed, used_nonce = yield from self._one_measurement(name, op, sign_this, slot, raw, chain,
                                                                               session)
            if used_nonce:
                nonce = used_nonce
            for block in block_list:
                blocks[block.index] = block
        report = MeasurementReport(blocks=tuple(blocks[i] for i in sorted(blocks)), signed=signed,
                                   slot=slot if signed else None, content_changed=changed, requester_nonce=nonce,
                                   complete=indices is None)
        problems = self.policy.measurement_problems(report.blocks, requested=None if indices is None else ops)
        self.last_measurements = report
        if problems:
            _fail(FailureReason.MEASUREMENT_MISMATCH, name, "; ".join(problems))
        return report

    def _one_measurement(self, name: str, op: int, sign: bool, slot: int, raw: bool, chain: VerifiedChain | None,
                         session: SessionHandle | None
                         ) -> _Gen[tuple[tuple[MeasurementBlock, ...], ContentChanged, bytes]]:
        try:
            return (yield from self._one_measurement_inner(name, op, sign, slot, raw, chain, session))
        except _Abort:
            self._clear_measurement_log(session)  # a failed exchange ends L on both sides (libspdm)
            raise

    def _clear_measurement_log(self, session: SessionHandle | None) -> None:
        if session is None:
            self.transcript.clear(Buffer.L)
        else:
            session.measurement_log.clear()

    def _one_measurement_inner(self, name: str, op: int, sign: bool, slot: int, raw: bool,
                               chain: VerifiedChain | None, session: SessionHandle | None
                               ) -> _Gen[tuple[tuple[MeasurementBlock, ...], ContentChanged, bytes]]:
        attributes = MeasurementAttributes(0)
        if sign:
            attributes |= MeasurementAttributes.GENERATE_SIGNATURE
        if raw and self.version >= SpdmVersion.V12:
            attributes |= MeasurementAttributes.RAW_BIT_STREAM_REQUESTED
        nonce = self._rng_bytes(NONCE_SIZE) if sign else None
        context = self._rng_bytes(REQUESTER_CONTEXT_SIZE) if self.version >= SpdmVersion.V13 else None
        self._before(GetMeasurements.CODE, session)
        request = GetMeasurements(version=self.version, operation=op, attributes=attributes, nonce=nonce,
                                  slot_id=slot if sign and self.version >= SpdmVersion.V11 else None,
                                  requester_context=context)
        req, rsp, rsp_raw = yield from self._exchange(name, request, Measurements, session=session)
        if (rsp.signature is not None) != sign:
            _fail(FailureReason.MALFORMED_RESPONSE, name,
                  "signature missing" if sign else "a signature that was not requested (or trailing bytes)")
        if context is not None and rsp.requester_context != context:
            _fail(FailureReason.MALFORMED_RESPONSE, name, "RequesterContext is not echoed")
        if sign and self.version >= SpdmVersion.V11 and rsp.slot_id != slot:
            _fail(FailureReason.MALFORMED_RESPONSE, name, f"signed by slot {rsp.slot_id}, asked for slot {slot}")
        self._check_blocks(name, op, rsp.blocks)
        unsigned = rsp_raw[:len(rsp_raw) - len(rsp.signature)] if rsp.signature else rsp_raw
        if session is None:
            self.transcript.add_l(req)
            self.transcript.add_l(unsigned)
            l1 = self.transcript.l1l2(self.version)
        else:
            session.measurement_log += req + unsigned
            l1 = (self.transcript.vca if self.version >= SpdmVersion.V12 else b"") + bytes(session.measurement_log)
        if sign:
            assert chain is not None and rsp.signature is not None
            self._clear_measurement_log(session)
            self._verify_signature(name, chain.leaf_public_key, l1, rsp.signature,
                                   SigningContext.RESPONDER_MEASUREMENTS, "MEASUREMENTS")
        return rsp.blocks, ContentChanged(rsp.content_changed), nonce or b""

    def _check_blocks(self, name: str, op: int, blocks: tuple[MeasurementBlock, ...]) -> None:
        seen: set[int] = set()
        algo = self.algorithms.measurement_hash_algo if self.algorithms is not None else None
        size = None
        if algo is not None and int(algo) and _one_bit(int(algo)) and int(algo) != 1:
            size = hash_size(measurement_base_hash(algo))
        for block in blocks:
            if block.index in seen:
                _fail(FailureReason.MALFORMED_RESPONSE, name, f"index {block.index} reported twice")
            seen.add(block.index)
            if op != MeasurementOperation.ALL and block.index != op:
                _fail(FailureReason.MALFORMED_RESPONSE, name, f"block {block.index} in reply to a request for {op}")
            if not block.raw_bit_stream and size is not None and len(block.value) != size:
                _fail(FailureReason.MALFORMED_RESPONSE, name,
                      f"digest of index {block.index} is {len(block.value)} bytes, the hash gives {size}")
        if op != MeasurementOperation.ALL and len(blocks) > 1:
            _fail(FailureReason.MALFORMED_RESPONSE, name, f"{len(blocks)} blocks for one index")

    # =============================================================================================
    # Attestation
    # =============================================================================================

    def _attest(self, slot: int, summary_type: MeasurementSummaryHashType) -> _Gen[AttestationReport]:
        name = "ATTEST"
        summary_type = MeasurementSummaryHashType(summary_type)
        if self.state < ConnectionState.NEGOTIATED:
            yield from self._init_connection()
        self._need_cert_cap(name)
        measures = self._peer_has(_MEAS_CAP)
        if not measures:
            summary_type = MeasurementSummaryHashType.NONE
        yield from self._get_digests()
        chain = yield from self._get_certificate(slot)
        challenge: ChallengeResult | None = None
        if self._peer_has(CapabilityFlags.CHAL_CAP):
            challenge = yield from self._challenge(slot, summary_type)
        report: MeasurementReport | None = None
        if measures:
            signed = self._peer_has(CapabilityFlags.MEAS_CAP_SIG) or self.policy.require_signed_measurements
            report = yield from self._get_measurements(None, signed, slot, False, None)
        summary_verified = False
        if challenge is not None and report is not None and challenge.measurement_summary_hash:
            expected = self._summary_hash(summary_type, report.blocks)
            summary_verified = expected == challenge.measurement_summary_hash
            if not summary_verified and self.policy.require_summary_hash_match:
                _fail(FailureReason.SUMMARY_HASH_MISMATCH, name,
                      f"{summary_type.name} MeasurementSummaryHash differs from the hash of the reported blocks")
        if challenge is None and report is None:
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "the responder offers neither CHALLENGE nor measurements")
        assert self.info is not None
        return AttestationReport(
            requester=self.env.owner,
            version=self.version,
            peer_versions=self.info.peer_versions,
            peer_flags=self.peer_flags,
            algorithms=self.info.algorithms,
            slot=slot,
            cert_chain=chain.chain,
            cert_chain_digest=chain.digest,
            leaf_subject=chain.leaf_subject,
            challenged=challenge is not None,
            challenge_nonce=challenge.requester_nonce if challenge else b"",
            summary_type=summary_type if challenge else MeasurementSummaryHashType.NONE,
            measurement_summary_hash=challenge.measurement_summary_hash if challenge else b"",
            summary_verified=summary_verified,
            measurements=report.blocks if report else (),
            measurements_signed=bool(report and report.signed),
            content_changed=report.content_changed if report else ContentChanged.NO_DETECTION,
        )

    def _summary_hash(self, summary_type: MeasurementSummaryHashType, blocks: Sequence[MeasurementBlock]) -> bytes:
        """Hash(concatenated blocks): all of them, or those whose type the policy counts as TCB (§2.9)."""
        chosen = [b for b in blocks if summary_type == MeasurementSummaryHashType.ALL
                  or b.value_type in self.policy.tcb_value_types]
        return self._hash(b"".join(b.encode() for b in chosen))

    # =============================================================================================
    # Sessions
    # =============================================================================================

    def _allocate_req_session_id(self) -> int:
        in_use = {h.secure.req_session_id for h in self.sessions.values()}
        candidate = self._next_req_session_id
        for _ in range(0x10000):
            if candidate not in in_use:
                break
            candidate = (candidate - 1) & 0xFFFF
        self._next_req_session_id = (candidate - 1) & 0xFFFF
        return candidate

    def _start_session(self, slot: int, summary_type: MeasurementSummaryHashType,
                       session_policy: SessionPolicy | None) -> _Gen[SessionHandle]:
        name = "KEY_EXCHANGE"
        summary_type = MeasurementSummaryHashType(summary_type)
        self._check_slot(name, slot)
        self._need_state(name)
        if self.version < SpdmVersion.V11:
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "SPDM 1.0 has no sessions")
        if not self._both_have(CapabilityFlags.KEY_EX_CAP):
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "KEY_EX_CAP is not supported by both sides")
        encrypt = self._both_have(CapabilityFlags.ENCRYPT_CAP) and self._both_have(CapabilityFlags.MAC_CAP)
        if not encrypt and not self._both_have(CapabilityFlags.MAC_CAP):
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "neither ENCRYPT_CAP+MAC_CAP nor MAC_CAP on both sides")
        if summary_type != MeasurementSummaryHashType.NONE and not self._peer_has(_MEAS_CAP):
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "a measurement summary needs MEAS_CAP")
        chain = self._chain_for(name, slot)
        algs = self.algorithms
        assert algs is not None and algs.dhe_group is not None and algs.aead_suite is not None
        in_clear = self._both_have(CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP)
        ctx = self.ctx.with_(meas_summary_size=self._summary_size(summary_type), handshake_in_the_clear=in_clear)

        req_sid = self._allocate_req_session_id()
        pair = EcdheKeyPair.generate(algs.dhe_group, self.env.rng, sink=self.env.sink, owner=self.env.owner,
                                     label=f"KEY_EXCHANGE 0x{req_sid:04x} ecdhe private key")
        policy = self.config.session_policy if session_policy is None else session_policy
        request = KeyExchange(
            version=self.version, hash_type=summary_type, slot_id=slot, req_session_id=req_sid,
            random_data=self._rng_bytes(32), exchange_data=pair.public_value,
            opaque_data=supported_versions_opaque(self.config.secured_message_versions, self.version),
            session_policy=SessionPolicy(policy) if self.version >= SpdmVersion.V12 else None,
        )
        self._before(KeyExchange.CODE)
        ke, rsp, raw = yield from self._exchange(name, request, KeyExchangeRsp, ctx)

        # --- checks on KEY_EXCHANGE_RSP that need no crypto
        if rsp.mut_auth_requested & (MutAuthRequested.REQUESTED | MutAuthRequested.WITH_ENCAP_REQUEST
                                     | MutAuthRequested.WITH_GET_DIGESTS):
            _fail(FailureReason.MALFORMED_RESPONSE, name, "mutual authentication requested; MUT_AUTH_CAP was not "
                                                          "offered")
        if rsp.heartbeat_period and not self._both_have(CapabilityFlags.HBEAT_CAP):
            _fail(FailureReason.MALFORMED_RESPONSE, name, "HeartbeatPeriod set without HBEAT_CAP on both sides")
        try:
            versions = parse_secured_message_versions(rsp.opaque_data, self.version)
        except DecodeError as exc:
            _fail(FailureReason.MALFORMED_RESPONSE, name, f"opaque data: {exc}")
        if versions.selected is None or versions.selected not in self.config.secured_message_versions:
            _fail(FailureReason.VERSION_MISMATCH, name,
                  f"secured-message version {versions.selected!r} is not one of the offered "
                  f"{[hex(v) for v in self.config.secured_message_versions]}")
        sid = make_session_id(req_sid, rsp.rsp_session_id)
        if sid in self.sessions:
            _fail(FailureReason.MALFORMED_RESPONSE, name, f"session 0x{sid:08x} already exists")

        # --- signature over A ‖ Ct ‖ KEY_EXCHANGE ‖ KEY_EXCHANGE_RSP up to OpaqueData (§3.2)
        sig_size = SIGNATURE_SIZE[self._base_asym]
        th_end = len(raw) - (0 if in_clear else ctx.hash_size)
        signed_end = th_end - sig_size
        transcript = SessionTranscript(self._base_hash, self.transcript.vca, chain.digest, self.env.meter)
        sig_hash = transcript.key_exchange_signature_hash(ke, raw[:signed_end])
        self._verify_hashed(name, chain.leaf_public_key, sig_hash, rsp.signature,
                            SigningContext.RESPONDER_KEY_EXCHANGE_RSP, "KEY_EXCHANGE_RSP")

        # --- keys: shared secret, TH1, handshake keys, ResponderVerifyData
        try:
            shared = pair.shared_secret(rsp.exchange_data)
        except CryptoError as exc:
            _fail(FailureReason.MALFORMED_RESPONSE, name, f"ExchangeData: {exc}")
        self.env.meter.ecdh(algs.dhe_group)  # one op per exchange, key generation included (as the responder)
        secure = SecureSession(sid, SessionRole.REQUESTER, self.version, self._base_hash, AeadSuite(algs.aead_suite),
                               self.env, encrypt=encrypt, handshake_in_the_clear=in_clear,
                               heartbeat_period=rsp.heartbeat_period)
        handle = SessionHandle(secure=secure, slot_id=slot, secured_message_version=versions.selected,
                               heartbeat_period=rsp.heartbeat_period,
                               measurement_summary_hash=rsp.measurement_summary_hash)
        secure.set_dhe_secret(shared)
        th1 = transcript.th1(rsp.signature)
        secure.derive_handshake_keys(th1)
        if not in_clear:
            assert rsp.responder_verify_data is not None
            if not secure.check_verify_data(secure.role.receive_direction, th1, rsp.responder_verify_data):
                secure.end("bad-verify-data")
                _fail(FailureReason.BAD_VERIFY_DATA, name, "KEY_EXCHANGE_RSP ResponderVerifyData does not match TH1")
            transcript.add(rsp.responder_verify_data)
        last = self.last_measurements
        if summary_type != MeasurementSummaryHashType.NONE and last is not None and last.complete \
                and self.policy.require_summary_hash_match:
            expected = self._summary_hash(summary_type, last.blocks)
            if expected != rsp.measurement_summary_hash:
                secure.end("summary-hash-mismatch")
                _fail(FailureReason.SUMMARY_HASH_MISMATCH, name,
                      "KEY_EXCHANGE_RSP MeasurementSummaryHash differs from the last verified measurements")

        # --- FINISH (secured under the handshake keys unless the handshake is in the clear)
        self.sessions[sid] = handle
        try:
            yield from self._finish(handle, transcript, ctx, in_clear)
        except _Abort:
            self._drop_session(handle, "finish-failed")
            raise
        return handle

    def _finish(self, handle: SessionHandle, transcript: SessionTranscript, ctx: SpdmContext,
                in_clear: bool) -> _Gen[None]:
        name = "FINISH"
        secure = handle.secure
        header = Finish(version=self.version, requester_verify_data=bytes(ctx.hash_size)).encode(ctx)[:4]
        verify_hash = transcript.finish_verify_hash(header)
        verify_data = secure.verify_data(secure.role.send_direction, verify_hash)
        transcript.add(verify_data)
        request = Finish(version=self.version, requester_verify_data=verify_data)
        self._before(Finish.CODE, None if in_clear else handle)
        _, rsp, raw = yield from self._exchange(name, request, FinishRsp, ctx,
                                                session=None if in_clear else handle)
        if in_clear:
            assert rsp.responder_verify_data is not None
            rsp_hash = transcript.finish_rsp_verify_hash(raw[:4])
            if not secure.check_verify_data(secure.role.receive_direction, rsp_hash, rsp.responder_verify_data):
                _fail(FailureReason.BAD_VERIFY_DATA, name, "FINISH_RSP ResponderVerifyData does not match")
            th2 = transcript.th2(rsp.responder_verify_data)
        else:
            th2 = transcript.th2(raw)
        secure.enter_data_phase(th2)

    def _need_session(self, name: str, session: SessionHandle) -> None:
        secure = session.secure
        if secure.state is SessionState.ESTABLISHED and self.sessions.get(secure.session_id) is session:
            return  # the common case, answered without the properties below
        if session.ended or self.sessions.get(session.session_id) is not session:
            _fail(FailureReason.SESSION_ENDED, name, f"session 0x{session.session_id:08x} has ended "
                                                     f"({session.secure.end_reason or 'unknown to this requester'})")
        if not session.established:
            _fail(FailureReason.INVALID_STATE, name, f"session 0x{session.session_id:08x} is not established")

    def _secured_exchange(self, session: SessionHandle, message: bytes) -> _Gen[bytes]:
        name = "SECURED"
        self._need_session(name, session)
        if len(message) < 4:
            _fail(FailureReason.INVALID_STATE, name, "an SPDM request has at least 4 bytes")
        self._before(message[1], session)
        result = yield from self._roundtrip(name, message, None, session=session)
        assert result is not None
        return bytes(result[1])

    def _vendor_request(self, session: SessionHandle | None, standard_id: int, vendor_id: bytes,
                        payload: bytes) -> _Gen[bytes | None]:
        name = "VENDOR_DEFINED_REQUEST"
        self._need_state(name)
        if session is not None:
            self._need_session(name, session)
        registry = _REGISTRY_IDS.get(standard_id) if type(standard_id) is int else None
        request = VendorDefinedRequest(version=self.version, vendor_id=vendor_id, payload=payload,
                                       standard_id=registry if registry is not None else RegistryId(standard_id))
        self._before(VendorDefinedRequest.CODE, session)
        result = yield from self._roundtrip(name, request.encode(self.ctx), VendorDefinedResponse,
                                            session=session, allow_silence=True)
        if result is None:
            return None
        rsp = result[0]
        if rsp.standard_id != standard_id or rsp.vendor_id != vendor_id:
            _fail(FailureReason.UNEXPECTED_RESPONSE, name,
                  f"response for standard {int(rsp.standard_id)} vendor {rsp.vendor_id.hex()}, asked "
                  f"{standard_id} / {vendor_id.hex()}")
        return bytes(rsp.payload)

    def _heartbeat(self, session: SessionHandle) -> _Gen[None]:
        name = "HEARTBEAT"
        self._need_session(name, session)
        self._before(Heartbeat.CODE, session)
        yield from self._exchange(name, Heartbeat(version=self.version), HeartbeatAck, session=session)

    def _key_update(self, session: SessionHandle, op: KeyUpdateOperation) -> _Gen[None]:
        name = "KEY_UPDATE"
        op = KeyUpdateOperation(op)
        self._need_session(name, session)
        if op is KeyUpdateOperation.VERIFY_NEW_KEY:
            _fail(FailureReason.INVALID_STATE, name, "VerifyNewKey is sent by the key-update flow itself")
        if not self._both_have(CapabilityFlags.KEY_UPD_CAP):
            _fail(FailureReason.UNSUPPORTED_BY_PEER, name, "KEY_UPD_CAP is not supported by both sides")
        secure = session.secure
        for step in (op, KeyUpdateOperation.VERIFY_NEW_KEY):
            tag = self._rng_bytes(1)[0]
            self._before(KeyUpdate.CODE, session)
            _, ack, _ = yield from self._exchange(name, KeyUpdate(version=self.version, operation=step, tag=tag),
                                                  KeyUpdateAck, session=session,
                                                  after_seal=functools.partial(secure.requester_before_key_update, step))
            if ack.operation != step or ack.tag != tag:
                self._drop_session(session, "key-update-mismatch")
                _fail(FailureReason.MALFORMED_RESPONSE, name,
                      f"KEY_UPDATE_ACK {ack.operation.name}/0x{ack.tag:02x} answers {step.name}/0x{tag:02x}")
            secure.requester_after_key_update_ack(step)

    def _end_session(self, session: SessionHandle, clear_state: bool) -> _Gen[None]:
        name = "END_SESSION"
        self._need_session(name, session)
        attributes = EndSessionAttributes.PRESERVE_NEGOTIATED_STATE_CLEAR if clear_state else EndSessionAttributes(0)
        self._before(EndSession.CODE, session)
        try:
            yield from self._exchange(name, EndSession(version=self.version, attributes=attributes), EndSessionAck,
                                      session=session)
        finally:
            self._drop_session(session, "end-session")



