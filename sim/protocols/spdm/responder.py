"""The SPDM responder (DSP0274 1.0-1.3 with DSP0277 sessions), sans-IO.

``SpdmResponder(profile, identity, env)`` takes request bytes in and gives response bytes out:

* :meth:`SpdmResponder.handle` — a plain SPDM message (DOE data object type 1);
* :meth:`SpdmResponder.handle_secured` — a DSP0277 record (DOE type 2), answered with a record.

Every request first meets :data:`REQUEST_TABLE`, the one place where the connection state
machine lives: for each request code, which connection states allow it (or which ERROR the
others get), whether it belongs inside or outside a session, the version that introduced it,
the capabilities it needs, and the state it leads to. Handlers then validate the request body
and build the response. Whatever the input, the answer is either None (dropped, as libspdm
drops runts and records for unknown sessions) or one SPDM message; nothing raises.

What the responder tells its owner comes out as events (h11 style): :attr:`events` collects
:class:`VersionReset`, :class:`ConnectionNegotiated`, :class:`SessionEstablished` and
:class:`SessionEnded` until drained, and every listener registered with :meth:`add_listener`
is called at once (the device security manager moves TDIs to ERROR when their session ends).

Behaviour taken from libspdm where the specification leaves room (PROTOCOLS.md cites the files):

* A record that fails to authenticate gets ERROR DecryptError *sealed with that session's keys*,
  and the session is then freed (libspdm_rsp_receive_send.c); a record for an unknown session
  is dropped without answer.
* A wrong RequesterVerifyData in FINISH gets ERROR DecryptError and ends the session.
* GET_VERSION inside a session is UnexpectedRequest; outside, it resets the connection and ends
  every session. A GET_VERSION whose version byte is not 0x10 gets VersionMismatch (version 0x10).
* Transcript resets follow libspdm_reset_message_buffer_via_request_code (see transcript.py);
  a request inside a session resets only that session's measurement log.
* No MUT_AUTH, PSK, ENCAP or CHUNK: those requests get UnsupportedRequest and are never advertised.
  A response larger than the requester's DataTransferSize (1.2+) becomes ERROR ResponseTooLarge,
  except CERTIFICATE, whose portion is clamped to fit.

For requester tests, :meth:`SpdmResponder.inject_busy` and :meth:`SpdmResponder.inject_not_ready`
make the next requests answer ERROR Busy / ResponseNotReady (then served by RESPOND_IF_READY).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sim.crypto.algorithms import (
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    KeyScheduleAlgo,
    MeasurementHashAlgo,
)
from sim.crypto.dhe import EcdheKeyPair
from sim.crypto.errors import CryptoError
from sim.crypto.hashes import digest
from sim.crypto.identity import Identity
from sim.crypto.key_schedule import Direction
from sim.crypto.signing import SigningContext
from sim.protocols.env import ProtocolEnv
from sim.protocols.spdm.profile import ResponderProfile
from sim.protocols.spdm.session import (
    SecureSession,
    SessionError,
    SessionRole,
    SessionState,
)
from sim.protocols.spdm.transcript import Buffer, ConnectionTranscript, SessionTranscript
from sim.wire.codec import DecodeError, EncodeError
from sim.wire.spdm.algorithms import Algorithms, AlgStruct, NegotiateAlgorithms, OtherParams
from sim.wire.spdm.capabilities import MIN_DATA_TRANSFER_SIZE, Capabilities, CapabilitiesAttributes, GetCapabilities
from sim.wire.spdm.certificates import (
    MAX_SLOTS,
    Certificate,
    CertModel,
    Digests,
    GetCertificate,
    GetCertificateAttributes,
    GetDigests,
)
from sim.wire.spdm.challenge import Challenge, ChallengeAuth
from sim.wire.spdm.common import (
    NONCE_SIZE,
    AlgType,
    CapabilityFlags,
    ErrorCode,
    MeasurementSpec,
    MeasurementSummaryHashType,
    RequestCode,
    SpdmContext,
    decode_spdm_sized,
)
from sim.wire.spdm.error import ErrorResponse, ResponseNotReadyData
from sim.wire.spdm.finish import Finish, FinishAttributes, FinishRsp
from sim.wire.spdm.key_exchange import RANDOM_DATA_SIZE, KeyExchange, KeyExchangeRsp, MutAuthRequested
from sim.wire.spdm.measurements import (
    ContentChanged,
    GetMeasurements,
    MeasurementAttributes,
    MeasurementOperation,
    Measurements,
)
from sim.wire.spdm.opaque import parse_secured_message_versions, version_selection_opaque
from sim.wire.spdm.session import (
    EndSession,
    EndSessionAck,
    Heartbeat,
    HeartbeatAck,
    KeyUpdate,
    KeyUpdateAck,
    KeyUpdateOperation,
)
from sim.wire.spdm.vendor import VendorDefinedRequest, VendorDefinedResponse
from sim.wire.spdm.version import GetVersion, RespondIfReady, Version

# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------



class VendorRequestError(ValueError):
    """Raised by a vendor-defined handler to answer with a specific SPDM ERROR code.

    Any other ValueError from a handler means its payload did not parse: ERROR InvalidRequest.
    """

    def __init__(self, error_code: ErrorCode, detail: str = "") -> None:
        super().__init__(detail or error_code.name)
        self.error_code = error_code

class EndReason(enum.StrEnum):
    """Why a session ended."""

    END_SESSION = "end-session"  # the requester's END_SESSION
    DECRYPT_ERROR = "decrypt-error"  # a record or a FINISH that did not authenticate
    VERSION_RESET = "version-reset"  # GET_VERSION restarted the connection
    CONVENTIONAL_RESET = "conventional-reset"  # reset(): the device forgot everything
    HEARTBEAT_TIMEOUT = "heartbeat-timeout"  # nothing within 2 × HeartbeatPeriod


@dataclasses.dataclass(frozen=True)
class VersionReset:
    """A GET_VERSION was accepted: the connection (and every session) starts over."""


@dataclasses.dataclass(frozen=True)
class ConnectionNegotiated:
    """ALGORITHMS was sent: version and algorithms are fixed for this connection."""

    version: int
    base_asym: BaseAsymAlgo
    base_hash: BaseHashAlgo


@dataclasses.dataclass(frozen=True)
class SessionEstablished:
    session_id: int


@dataclasses.dataclass(frozen=True)
class SessionEnded:
    session_id: int
    reason: EndReason


ResponderEvent = VersionReset | ConnectionNegotiated | SessionEstablished | SessionEnded
Listener = Callable[[ResponderEvent], None]
VendorHandler = Callable[[int | None, int, bytes], bytes | None]

# --------------------------------------------------------------------------------------------
# The connection state machine: one table
# --------------------------------------------------------------------------------------------


class ConnectionState(enum.IntEnum):
    """libspdm's connection states, in order."""

    NOT_STARTED = 0
    AFTER_VERSION = 1
    AFTER_CAPABILITIES = 2
    NEGOTIATED = 3
    AFTER_DIGESTS = 4
    AFTER_CERTIFICATE = 5
    AUTHENTICATED = 6


class Scope(enum.Enum):
    """Where a request may travel."""

    PLAIN = "plain"  # outside any session; inside one → UnexpectedRequest
    SESSION = "session"  # inside an established session; outside → SessionRequired (1.2+) / Unspecified (1.1)
    EITHER = "either"  # outside, or inside an established session
    HANDSHAKE = "handshake"  # FINISH: the handshaking session (plain when the handshake is in the clear)


class Row(NamedTuple):
    """One row of :data:`REQUEST_TABLE`."""

    cells: tuple[ErrorCode | None, ...]  # per ConnectionState: None = allowed, else the ERROR code
    scope: Scope
    since: int  # SPDM version that introduced the request (older → UnsupportedRequest)
    rsp_cap: CapabilityFlags  # the responder must advertise all of these (else UnsupportedRequest)
    req_cap: CapabilityFlags  # ... and the requester too
    advance: ConnectionState | None  # connection state after a successful response (never lowered)


_ok = None
_UX = ErrorCode.UNEXPECTED_REQUEST
_NONE = CapabilityFlags(0)
_MEAS = CapabilityFlags.MEAS_CAP_SIG | CapabilityFlags.MEAS_CAP_NO_SIG  # either bit (checked specially)
_CS = ConnectionState

REQUEST_TABLE: dict[RequestCode, Row] = {
    #                                   NOT_STARTED AFTER_VER AFTER_CAP NEGOTIATED DIGESTS CERT  AUTH
    RequestCode.GET_VERSION: Row((_ok, _ok, _ok, _ok, _ok, _ok, _ok), Scope.PLAIN, 0x10,
                                 _NONE, _NONE, _CS.AFTER_VERSION),
    RequestCode.GET_CAPABILITIES: Row((_UX, _ok, _UX, _UX, _UX, _UX, _UX), Scope.PLAIN, 0x10,
                                      _NONE, _NONE, _CS.AFTER_CAPABILITIES),
    RequestCode.NEGOTIATE_ALGORITHMS: Row((_UX, _UX, _ok, _UX, _UX, _UX, _UX), Scope.PLAIN, 0x10,
                                          _NONE, _NONE, _CS.NEGOTIATED),
    RequestCode.GET_DIGESTS: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.EITHER, 0x10,
                                 CapabilityFlags.CERT_CAP, _NONE, _CS.AFTER_DIGESTS),
    RequestCode.GET_CERTIFICATE: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.EITHER, 0x10,
                                     CapabilityFlags.CERT_CAP, _NONE, _CS.AFTER_CERTIFICATE),
    RequestCode.CHALLENGE: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.PLAIN, 0x10,
                               CapabilityFlags.CHAL_CAP, _NONE, _CS.AUTHENTICATED),
    RequestCode.GET_MEASUREMENTS: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.EITHER, 0x10,
                                      _MEAS, _NONE, None),
    RequestCode.KEY_EXCHANGE: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.PLAIN, 0x11,
                                  CapabilityFlags.KEY_EX_CAP, CapabilityFlags.KEY_EX_CAP, None),
    RequestCode.FINISH: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.HANDSHAKE, 0x11,
                            CapabilityFlags.KEY_EX_CAP, CapabilityFlags.KEY_EX_CAP, None),
    RequestCode.HEARTBEAT: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.SESSION, 0x11,
                               CapabilityFlags.HBEAT_CAP, CapabilityFlags.HBEAT_CAP, None),
    RequestCode.KEY_UPDATE: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.SESSION, 0x11,
                                CapabilityFlags.KEY_UPD_CAP, CapabilityFlags.KEY_UPD_CAP, None),
    RequestCode.END_SESSION: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.SESSION, 0x11,
                                 _NONE, _NONE, None),
    RequestCode.VENDOR_DEFINED_REQUEST: Row((_UX, _UX, _UX, _ok, _ok, _ok, _ok), Scope.EITHER, 0x10,
                                            _NONE, _NONE, None),
    # Valid only after ERROR ResponseNotReady (see inject_not_ready); the handler checks what is pending.
    RequestCode.RESPOND_IF_READY: Row((_ok,) * 7, Scope.EITHER, 0x10, _NONE, _NONE, None),
}
# Every other code (PSK, CHUNK, ENCAP, CSR, SET_CERTIFICATE, events, endpoint info, response
# codes used as requests, unknown codes) is answered UnsupportedRequest with ErrorData = the code.

MAX_CT_EXPONENT = 31  # libspdm LIBSPDM_MAX_CT_EXPONENT
_REQUEST_CODES: Mapping[int, RequestCode] = RequestCode._value2member_map_  # type: ignore[assignment]


class _RequestError(Exception):
    """Raised by a handler to answer with an SPDM ERROR."""

    def __init__(self, code: ErrorCode, data: int = 0, extended: Any = b"") -> None:
        super().__init__(code.name)
        self.code, self.data, self.extended = code, data, extended


@dataclasses.dataclass(slots=True)
class _Reply:
    """A response and what must happen once it is on its way (sealed under the current keys)."""

    message: bytes
    after: Callable[[], None] | None = None
    is_error: bool = False


@dataclasses.dataclass
class _SessionSlot:
    """Per-session responder state next to the SecureSession itself."""

    session: SecureSession
    transcript: SessionTranscript
    measurement_log: bytearray = dataclasses.field(default_factory=bytearray)  # per-session L
    log_generation: int | None = None
    last_key_update: KeyUpdateOperation | None = None
    last_activity: float | None = None


@dataclasses.dataclass(frozen=True)
class _Deferred:
    """A request answered with ResponseNotReady, to be processed on RESPOND_IF_READY."""

    request: bytes
    session_id: int | None
    token: int


@dataclasses.dataclass
class _Negotiated:
    """What VCA fixed for this connection."""

    version: int = 0
    req_flags: CapabilityFlags = CapabilityFlags(0)
    rsp_flags: CapabilityFlags = CapabilityFlags(0)
    req_ct_exponent: int = 0
    req_data_transfer_size: int | None = None
    req_max_msg_size: int | None = None
    base_asym: BaseAsymAlgo = BaseAsymAlgo(0)
    base_hash: BaseHashAlgo = BaseHashAlgo(0)
    measurement_spec: MeasurementSpec = MeasurementSpec(0)
    measurement_hash: MeasurementHashAlgo = MeasurementHashAlgo(0)
    dhe: DheGroup = DheGroup(0)
    aead: AeadSuite = AeadSuite(0)
    key_schedule: KeyScheduleAlgo = KeyScheduleAlgo(0)
    other_params: OtherParams = OtherParams(0)

    def both(self, flag: CapabilityFlags) -> bool:
        # as plain ints: IntFlag's & builds a new member each time
        return bool(int(self.req_flags) & int(flag)) and bool(int(self.rsp_flags) & int(flag))


def _pick(priority: tuple[Any, ...], offered: int) -> int:
    """The first algorithm of ``priority`` whose bit the peer offered, else 0 (§2.6 selection)."""
    return next((int(a) for a in priority if int(offered) & int(a)), 0)


def _requester_flags_valid(flags: CapabilityFlags, version: int) -> bool:
    """The GET_CAPABILITIES flag combinations DSP0274 forbids (the checks libspdm makes)."""
    f = CapabilityFlags(flags)
    if version < 0x11:
        return True
    psk = (int(f) >> 10) & 3
    key_ex = bool(f & CapabilityFlags.KEY_EX_CAP)
    secure = bool(f & (CapabilityFlags.ENCRYPT_CAP | CapabilityFlags.MAC_CAP))
    if psk in (2, 3):
        return False
    if key_ex or psk:
        if not secure:
            return False
    elif secure or f & (CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP | CapabilityFlags.HBEAT_CAP
                        | CapabilityFlags.KEY_UPD_CAP):
        return False
    if not key_ex and psk == 1 and f & CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP:
        return False
    cert, pub = bool(f & CapabilityFlags.CERT_CAP), bool(f & CapabilityFlags.PUB_KEY_ID_CAP)
    if cert and pub:
        return False
    if not (cert or pub) and f & (CapabilityFlags.CHAL_CAP | CapabilityFlags.MUT_AUTH_CAP):
        return False
    if f & CapabilityFlags.MUT_AUTH_CAP and not (key_ex or f & CapabilityFlags.CHAL_CAP):
        return False
    if version == 0x11 and f & CapabilityFlags.MUT_AUTH_CAP and not f & CapabilityFlags.ENCAP_CAP:
        return False
    if version >= 0x13:
        ep_info, multi_key = (int(f) >> 22) & 3, (int(f) >> 26) & 3
        if ep_info == 3 or multi_key == 3 or (multi_key and (pub or not cert)):
            return False
    return True


# --------------------------------------------------------------------------------------------
# The responder
# --------------------------------------------------------------------------------------------


class SpdmResponder:
    """An SPDM responder for one device (see the module docstring).

    ``identity`` is the device's signing identity (all provisioned slots hold its chain), or a
    mapping slot → Identity; every identity must use one of the profile's asymmetric algorithms.
    """

    def __init__(self, profile: ResponderProfile, identity: Identity | Mapping[int, Identity],
                 env: ProtocolEnv) -> None:
        self.profile = profile
        self.env = env
        if isinstance(identity, Identity):
            self._identities: dict[int, Identity] = {slot: identity for slot in profile.slots}
        else:
            self._identities = {int(s): i for s, i in identity.items()}
            if set(self._identities) != set(profile.slots):
                raise ValueError(f"identities for slots {sorted(self._identities)} but the profile provisions "
                                 f"{sorted(profile.slots)}")
        algos = {i.asym_algo for i in self._identities.values()}
        self._asym_priority = tuple(a for a in profile.asym_algos if algos == {a})
        if self._identities and not self._asym_priority:
            raise ValueError(f"identity algorithms {algos} are not among the profile's {profile.asym_algos}")
        self.events: list[ResponderEvent] = []
        self._listeners: list[Listener] = []
        self._vendor_handlers: dict[tuple[int, bytes], VendorHandler] = {}
        self._chain_cache: dict[tuple[int, BaseHashAlgo], bytes] = {}
        self._busy = 0
        self._not_ready: tuple[int, int, int] = (0, 0, 0)  # (count, RDExponent, RDTM)
        self._init_connection()

    def _init_connection(self) -> None:
        self.state = ConnectionState.NOT_STARTED
        self.negotiated = _Negotiated()
        self.transcript = ConnectionTranscript()
        self._ctx = SpdmContext()
        self._sessions: dict[int, _SessionSlot] = {}
        self._latest_session_id: int | None = None
        self._log_generation: int | None = None
        self._now: float | None = None
        self._deferred: _Deferred | None = None

    # --- owner interface ------------------------------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(event)`` for every event as it happens (in addition to :attr:`events`)."""
        self._listeners.append(callback)

    def drain_events(self) -> list[ResponderEvent]:
        out, self.events = self.events, []
        return out

    def register_vendor_handler(self, standard_id: int, vendor_id: bytes | int, handler: VendorHandler) -> None:
        """Route VENDOR_DEFINED_REQUESTs of (StandardID, VendorID) to ``handler(session_id, version, payload)``.

        An int ``vendor_id`` is taken as the 2-byte little-endian form (PCI-SIG: 0x0001 → ``01 00``).
        The handler returns the response payload, or None for no response at all.
        """
        vid = vendor_id.to_bytes(2, "little") if isinstance(vendor_id, int) else bytes(vendor_id)
        self._vendor_handlers[(int(standard_id), vid)] = handler

    @property
    def version(self) -> int | None:
        """The negotiated SPDM version byte, once GET_CAPABILITIES fixed it."""
        return self.negotiated.version or None

    @property
    def context(self) -> SpdmContext:
        """The decoding context (H, S, D) of the negotiated algorithms, for whoever decodes the responses."""
        return self._ctx

    @property
    def sessions(self) -> dict[int, SecureSession]:
        """Live sessions by SessionID."""
        return {sid: slot.session for sid, slot in self._sessions.items()}

    def reset(self) -> None:
        """Conventional reset: every session ends and the connection is forgotten."""
        self._end_all_sessions(EndReason.CONVENTIONAL_RESET)
        self._init_connection()

    def inject_busy(self, count: int = 1) -> None:
        """Answer the next ``count`` requests (except GET_VERSION) with ERROR Busy (fault injection)."""
        self._busy = count

    def inject_not_ready(self, count: int = 1, *, rd_exponent: int = 10, rdtm: int = 2) -> None:
        """Answer the next ``count`` requests with ERROR ResponseNotReady; RESPOND_IF_READY then gets the answer.

        RDT = 2^``rd_exponent`` µs; the requester is to wait RDT × ``rdtm`` (§2.3). Fault injection
        for requester retry logic: the deferred request is processed only when fetched.
        """
        self._not_ready = (count, rd_exponent, rdtm)

    def update_firmware(self, version: str, image: bytes | None = None) -> None:
        """A firmware update: the mutable-firmware measurement changes (re-attestation will see it)."""
        self.profile.measurements.update_firmware(version, image)

    def get_timer(self) -> float | None:
        """The earliest time a session may expire for lack of heartbeats (None: nothing pending)."""
        deadlines = [slot.last_activity + 2 * slot.session.heartbeat_period for slot in self._sessions.values()
                     if slot.session.heartbeat_period and slot.last_activity is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """End the sessions that heard nothing for 2 × HeartbeatPeriod (DSP0274 HEARTBEAT)."""
        for sid, slot in list(self._sessions.items()):
            period = slot.session.heartbeat_period
            if period and slot.last_activity is not None and now - slot.last_activity > 2 * period:
                self._end_session(sid, EndReason.HEARTBEAT_TIMEOUT)

    # --- entry points -----------------------------------------------------------------------------

    def handle(self, message: bytes, now: float | None = None) -> bytes | None:
        """Answer one plain SPDM request (DOE padding tolerated); None = no response."""
        if now is not None:
            self._now = now
        reply = self._process(bytes(message), None)
        if reply is None:
            return None
        if reply.after is not None:
            reply.after()
        return reply.message

    def handle_secured(self, record: bytes, now: float | None = None) -> bytes | None:
        """Answer one secured record with a sealed record; None for records of unknown sessions."""
        if now is not None:
            self._now = now
        if len(record) < 4:
            return None  # no SessionID to route by (record_session_id's DecodeError)
        sid = int.from_bytes(record[:4], "little")
        slot = self._sessions.get(sid)
        if slot is None:
            return None  # libspdm: INVALID_SESSION is dropped, it cannot be answered under any key
        session = slot.session
        try:
            plain = session.open(record)
        except SessionError:
            error = self._error(ErrorCode.DECRYPT_ERROR)
            try:
                sealed = session.seal(error)
            except (SessionError, CryptoError):
                sealed = None
            self._end_session(sid, EndReason.DECRYPT_ERROR)
            return sealed
        if now is not None:
            slot.last_activity = now
        reply = self._process(plain, slot)
        if reply is None:
            return None
        try:
            sealed = session.seal(reply.message)
        except SessionError:  # e.g. the sequence number is exhausted: the session cannot go on
            self._end_session(sid, EndReason.DECRYPT_ERROR)
            return None
        if reply.after is not None:
            reply.after()
        return sealed

    # --- dispatch -------------------------------------------------------------------------------------

    def _error_version(self) -> int:
        return self.negotiated.version or 0x10

    def _error(self, code: ErrorCode, data: int = 0, extended: Any = b"", version: int | None = None) -> bytes:
        return ErrorResponse(version or self._error_version(), code, data, extended).encode()

    def _process(self, raw: bytes, slot: _SessionSlot | None) -> _Reply | None:
        if len(raw) < 4:
            return None  # no SPDM header: dropped (libspdm)
        injected = self._injected_error(raw, slot)
        if injected is not None:
            return injected
        try:
            return self._process_checked(raw, slot)
        except _RequestError as err:
            if raw[1] == RequestCode.GET_MEASUREMENTS:
                self._reset_log(slot)
            return _Reply(self._error(err.code, err.data, err.extended, self._error_version_for(raw)),
                          is_error=True)

    def _error_version_for(self, raw: bytes) -> int | None:
        """A GET_CAPABILITIES of a version we speak fixes the version before its fields are checked.

        So its ERROR already carries that version (libspdm; SPDM-Responder-Validator 2.4.3).
        """
        if raw[1] == RequestCode.GET_CAPABILITIES and not self.negotiated.version and raw[0] in self.profile.versions:
            return raw[0]
        return None

    def _injected_error(self, raw: bytes, slot: _SessionSlot | None) -> _Reply | None:
        code = raw[1]
        if code in (RequestCode.GET_VERSION, RequestCode.RESPOND_IF_READY):
            return None
        if self._busy > 0:
            self._busy -= 1
            return _Reply(self._error(ErrorCode.BUSY), is_error=True)
        count, rd_exponent, rdtm = self._not_ready
        if count > 0 and code in REQUEST_TABLE:
            self._not_ready = (count - 1, rd_exponent, rdtm)
            token = self.env.rng.randint(0, 0xFF)
            self._deferred = _Deferred(raw, slot.session.session_id if slot else None, token)
            data = ResponseNotReadyData(rd_exponent, RequestCode(code), token, rdtm)
            return _Reply(self._error(ErrorCode.RESPONSE_NOT_READY, extended=data), is_error=True)
        return None

    def _process_checked(self, raw: bytes, slot: _SessionSlot | None) -> _Reply | None:
        version, code = raw[0], raw[1]
        request_code = _REQUEST_CODES.get(code)
        row = REQUEST_TABLE.get(request_code) if request_code is not None else None  # type: ignore[arg-type]
        if row is None:
            raise _RequestError(ErrorCode.UNSUPPORTED_REQUEST, code)

        if request_code is RequestCode.GET_VERSION:
            if slot is not None:
                raise _RequestError(ErrorCode.UNEXPECTED_REQUEST)
            if version != 0x10:
                return _Reply(self._error(ErrorCode.VERSION_MISMATCH, version=0x10), is_error=True)
        elif request_code is not RequestCode.GET_CAPABILITIES and self.negotiated.version:
            if row.since > self.negotiated.version:
                raise _RequestError(ErrorCode.UNSUPPORTED_REQUEST, code)
            if version != self.negotiated.version:
                raise _RequestError(ErrorCode.VERSION_MISMATCH)

        verdict = row.cells[self.state]
        if verdict is not None:
            raise _RequestError(verdict)
        if request_code is RequestCode.GET_CAPABILITIES and version not in self.profile.versions:
            # Before looking at the fields (SPDM-Responder-Validator 2.2.4, libspdm).
            raise _RequestError(ErrorCode.VERSION_MISMATCH)
        self._check_capabilities(row, code)
        self._check_scope(row, slot)

        negotiated = self.state >= ConnectionState.NEGOTIATED
        if request_code is RequestCode.RESPOND_IF_READY:
            pass  # the deferred request applies its own transcript rules when it is processed
        elif slot is None and request_code is not RequestCode.GET_VERSION:
            self.transcript.before_request(code, negotiated=negotiated,
                                           authenticated=self.state >= ConnectionState.AUTHENTICATED)
            if code != RequestCode.GET_MEASUREMENTS:
                self._log_generation = None
        elif slot is not None and code != RequestCode.GET_MEASUREMENTS:
            self._reset_log(slot)

        try:
            # the size a request decodes from is the size it re-encodes to (tests/wire/test_spdm_consumed.py)
            msg, size = decode_spdm_sized(raw, self._ctx, allow_trailing=True)
            canonical = raw[:size]
        except (DecodeError, EncodeError):
            raise _RequestError(ErrorCode.INVALID_REQUEST) from None

        reply = self._HANDLERS[request_code](self, msg, canonical, slot)
        if reply is not None and not reply.is_error and row.advance is not None:
            if request_code in (RequestCode.GET_VERSION, RequestCode.GET_CAPABILITIES,
                                RequestCode.NEGOTIATE_ALGORITHMS):
                self.state = row.advance
            else:
                self.state = max(self.state, row.advance)
        return reply

    def _check_capabilities(self, row: Row, code: int) -> None:
        # flags as plain ints: IntFlag's & builds a new member each time
        rsp = int(self.negotiated.rsp_flags if self.negotiated.version else self.profile.capabilities)
        rsp_cap, req_cap = int(row.rsp_cap), int(row.req_cap)
        if rsp_cap == _MEAS:
            if not rsp & rsp_cap:
                raise _RequestError(ErrorCode.UNSUPPORTED_REQUEST, code)
        elif rsp_cap and (rsp & rsp_cap) != rsp_cap:
            raise _RequestError(ErrorCode.UNSUPPORTED_REQUEST, code)
        if req_cap and (int(self.negotiated.req_flags) & req_cap) != req_cap:
            raise _RequestError(ErrorCode.UNSUPPORTED_REQUEST, code)

    def _session_required(self) -> _RequestError:
        # SessionRequired exists from 1.2 on; 1.1 has only Unspecified (libspdm does the same).
        code = ErrorCode.SESSION_REQUIRED if self.negotiated.version >= 0x12 else ErrorCode.UNSPECIFIED
        return _RequestError(code)

    def _check_scope(self, row: Row, slot: _SessionSlot | None) -> None:
        if row.scope is Scope.PLAIN:
            if slot is not None:
                raise _RequestError(ErrorCode.UNEXPECTED_REQUEST)
        elif row.scope is Scope.SESSION:
            if slot is None:
                raise self._session_required()
            if slot.session.state is not SessionState.ESTABLISHED:
                raise _RequestError(ErrorCode.UNEXPECTED_REQUEST)
        elif row.scope is Scope.EITHER:
            if slot is not None and slot.session.state is not SessionState.ESTABLISHED:
                raise _RequestError(ErrorCode.UNEXPECTED_REQUEST)
        else:  # HANDSHAKE
            in_clear = self._handshake_in_the_clear()
            if in_clear == (slot is not None):
                raise self._session_required()

    def _handshake_in_the_clear(self) -> bool:
        return self.negotiated.both(CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP)

    def _check_size(self, response: bytes) -> None:
        """ResponseTooLarge (1.2+) for a response the requester cannot take in one message (no chunking)."""
        n = self.negotiated
        if n.version < 0x12 or n.req_data_transfer_size is None or n.req_max_msg_size is None:
            return
        limit = min(n.req_data_transfer_size, n.req_max_msg_size, self.profile.data_transfer_size)
        if len(response) > limit:
            raise _RequestError(ErrorCode.RESPONSE_TOO_LARGE, 0, len(response).to_bytes(4, "little"))

    # --- events -------------------------------------------------------------------------------------

    def _emit(self, event: ResponderEvent) -> None:
        self.events.append(event)
        for listener in list(self._listeners):
            listener(event)

    def _end_session(self, session_id: int, reason: EndReason) -> None:
        slot = self._sessions.pop(session_id, None)
        if slot is None:
            return
        slot.session.end(reason.value)
        if self._latest_session_id == session_id:
            self._latest_session_id = None
        self._emit(SessionEnded(session_id, reason))

    def _end_all_sessions(self, reason: EndReason) -> None:
        for sid in list(self._sessions):
            self._end_session(sid, reason)

    # --- helpers ------------------------------------------------------------------------------------

    def _cert_chain(self, slot_id: int) -> bytes:
        key = (slot_id, self.negotiated.base_hash)
        chain = self._chain_cache.get(key)
        if chain is None:
            chain = self._identities[slot_id].spdm_cert_chain(self.negotiated.base_hash)
            self._chain_cache[key] = chain
        return chain

    def _hash(self, data: bytes) -> bytes:
        self.env.meter.hash(len(data))
        return digest(self.negotiated.base_hash, data)

    def _sign(self, slot_id: int, transcript_hash: bytes, context: SigningContext) -> bytes:
        identity = self._identities[slot_id]
        self.env.meter.sign(identity.asym_algo)
        return identity.spdm_sign(self.negotiated.version, transcript_hash, context, hash_algo=self.negotiated.base_hash)

    def _check_slot(self, slot_id: int) -> None:
        if slot_id >= MAX_SLOTS or slot_id not in self._identities:
            raise _RequestError(ErrorCode.INVALID_REQUEST)

    def _summary_hash(self, hash_type: MeasurementSummaryHashType) -> bytes:
        """MeasurementSummaryHash of the requested type (TCB = the immutable-ROM items), or b"" for NONE."""
        if hash_type is MeasurementSummaryHashType.NONE:
            return b""
        n = self.negotiated
        if not self.profile.measures or not n.measurement_hash:
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        blocks = self.profile.measurements.summary_blocks(n.version, n.measurement_hash,
                                                          tcb_only=hash_type is MeasurementSummaryHashType.TCB,
                                                          on_hash=self.env.meter.hash)
        return self._hash(blocks)

    def _reset_log(self, slot: _SessionSlot | None) -> None:
        if slot is None:
            self.transcript.clear(Buffer.L)
            self._log_generation = None
        else:
            slot.measurement_log.clear()
            slot.log_generation = None

    # --- VCA ------------------------------------------------------------------------------------------

    def _on_get_version(self, msg: GetVersion, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        self._end_all_sessions(EndReason.VERSION_RESET)
        self._init_connection()
        response = Version.for_versions(*self.profile.versions).encode()
        self.transcript.add_vca(raw)
        self.transcript.add_vca(response)
        self._emit(VersionReset())
        return _Reply(response)

    def _on_get_capabilities(self, msg: GetCapabilities, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        version = msg.version
        if version not in self.profile.versions:
            raise _RequestError(ErrorCode.VERSION_MISMATCH)
        flags = CapabilityFlags(msg.flags or 0)
        if not _requester_flags_valid(flags, version):
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        if version >= 0x12:
            dts, max_msg = msg.data_transfer_size or 0, msg.max_spdm_msg_size or 0
            if dts < MIN_DATA_TRANSFER_SIZE or dts > max_msg:
                raise _RequestError(ErrorCode.INVALID_REQUEST)
            if not flags & CapabilityFlags.CHUNK_CAP and dts != max_msg:
                raise _RequestError(ErrorCode.INVALID_REQUEST)
        if version >= 0x11 and (msg.ct_exponent or 0) > MAX_CT_EXPONENT:
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        if (version >= 0x13 and msg.attributes and msg.attributes & CapabilitiesAttributes.SUPPORTED_ALGORITHMS
                and not flags & CapabilityFlags.CHUNK_CAP):
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        rsp_flags = self.profile.flags_for(version)
        # Without CHUNK_CAP the supported-algorithms block is not offered (attributes left 0).
        response = Capabilities(
            version=version, ct_exponent=self.profile.ct_exponent, flags=rsp_flags,
            data_transfer_size=self.profile.data_transfer_size if version >= 0x12 else None,
            max_spdm_msg_size=self.profile.max_spdm_msg_size if version >= 0x12 else None,
            attributes=CapabilitiesAttributes(0) if version >= 0x13 else None,
        ).encode()
        self.negotiated = _Negotiated(
            version=version, req_flags=flags, rsp_flags=rsp_flags, req_ct_exponent=msg.ct_exponent or 0,
            req_data_transfer_size=msg.data_transfer_size, req_max_msg_size=msg.max_spdm_msg_size,
        )
        self.transcript.add_vca(raw)
        self.transcript.add_vca(response)
        return _Reply(response)

    def _on_negotiate_algorithms(self, msg: NegotiateAlgorithms, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        n = self.negotiated
        if msg.limit_violations() or any(int(s.supported) == 0 for s in msg.alg_structs):
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        profile = self.profile
        measures = profile.measures and bool(msg.measurement_specification & MeasurementSpec.DMTF)
        meas_spec = MeasurementSpec.DMTF if measures and profile.measurement_spec & MeasurementSpec.DMTF \
            else MeasurementSpec(0)
        meas_hash = profile.measurement_hash_algo if meas_spec else MeasurementHashAlgo(0)
        base_asym = BaseAsymAlgo(_pick(self._asym_priority, msg.base_asym_algo))
        base_hash = BaseHashAlgo(_pick(profile.hash_algos, msg.base_hash_algo))
        signs = n.rsp_flags & (CapabilityFlags.CERT_CAP | CapabilityFlags.CHAL_CAP | CapabilityFlags.MEAS_CAP_SIG) \
            or n.both(CapabilityFlags.KEY_EX_CAP)
        if (signs or meas_spec) and not base_hash:
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        if signs and not base_asym:
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        choices = {
            AlgType.DHE: (profile.dhe_groups, DheGroup),
            AlgType.AEAD: (profile.aead_suites, AeadSuite),
            AlgType.KEY_SCHEDULE: (profile.key_schedules, KeyScheduleAlgo),
        }
        structs: list[AlgStruct] = []
        selected: dict[AlgType, int] = {}
        for s in msg.alg_structs:
            alg_type = AlgType(s.alg_type)
            if alg_type in choices:
                priority, flag_type = choices[alg_type]
                pick = _pick(priority, s.supported)
                selected[alg_type] = pick
                structs.append(AlgStruct(alg_type, flag_type(pick)))
            else:  # ReqBaseAsymAlg: no mutual authentication here, so nothing is selected
                structs.append(AlgStruct(alg_type, 0))
        if n.both(CapabilityFlags.KEY_EX_CAP) and not all(selected.get(t) for t in choices):
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        other = OtherParams(0)
        if msg.version >= 0x12 and msg.other_params_support and msg.other_params_support & OtherParams.OPAQUE_DATA_FMT1:
            other = OtherParams.OPAQUE_DATA_FMT1
        response = Algorithms(
            version=msg.version, measurement_hash_algo=meas_hash, base_asym_sel=base_asym, base_hash_sel=base_hash,
            measurement_specification_sel=meas_spec,
            other_params_selection=other if msg.version >= 0x12 else None,
            alg_structs=tuple(structs),
        ).encode()
        n.base_asym, n.base_hash, n.measurement_spec, n.measurement_hash = base_asym, base_hash, meas_spec, meas_hash
        n.dhe = DheGroup(selected.get(AlgType.DHE, 0))
        n.aead = AeadSuite(selected.get(AlgType.AEAD, 0))
        n.key_schedule = KeyScheduleAlgo(selected.get(AlgType.KEY_SCHEDULE, 0))
        n.other_params = other
        self._ctx = SpdmContext.for_algorithms(base_hash, base_asym, n.dhe or None) if base_hash and base_asym \
            else SpdmContext()
        self.transcript.add_vca(raw)
        self.transcript.add_vca(response)
        self._emit(ConnectionNegotiated(n.version, base_asym, base_hash))
        return _Reply(response)

    # --- certificates ---------------------------------------------------------------------------------

    def _on_get_digests(self, msg: GetDigests, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        digests = tuple(self._hash(self._cert_chain(s)) for s in sorted(self._identities))
        mask = self.profile.slot_mask
        response = Digests(msg.version, mask, digests,
                           supported_slot_mask=mask if msg.version >= 0x13 else None).encode(self._ctx)
        self._check_size(response)
        if slot is None:
            self.transcript.add_b(raw)
            self.transcript.add_b(response)
        return _Reply(response)

    def _on_get_certificate(self, msg: GetCertificate, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        self._check_slot(msg.slot_id)
        chain = self._cert_chain(msg.slot_id)
        if msg.attributes and msg.attributes & GetCertificateAttributes.SLOT_SIZE_REQUESTED:
            offset, portion = 0, b""
            remainder = len(chain)
        else:
            if msg.offset >= len(chain):
                raise _RequestError(ErrorCode.INVALID_REQUEST)
            limit = self.profile.data_transfer_size
            if self.negotiated.version >= 0x12 and self.negotiated.req_data_transfer_size:
                limit = min(limit, self.negotiated.req_data_transfer_size)
            length = min(msg.length, len(chain) - msg.offset, limit - 8)
            offset, portion = msg.offset, chain[msg.offset:msg.offset + length]
            remainder = len(chain) - offset - len(portion)
        response = Certificate(msg.version, msg.slot_id, remainder, portion,
                               cert_model=CertModel.NONE if msg.version >= 0x13 else None).encode(self._ctx)
        if slot is None:
            self.transcript.add_b(raw)
            self.transcript.add_b(response)
        return _Reply(response)

    # --- CHALLENGE ----------------------------------------------------------------------------------

    def _on_challenge(self, msg: Challenge, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        self._check_slot(msg.slot_id)
        summary = self._summary_hash(msg.hash_type)
        ctx = self._ctx.with_(meas_summary_size=len(summary))
        unsigned = ChallengeAuth(
            version=msg.version, slot_id=msg.slot_id, slot_mask=self.profile.slot_mask,
            cert_chain_hash=self._hash(self._cert_chain(msg.slot_id)), nonce=self.env.rng.bytes(NONCE_SIZE),
            signature=bytes(ctx.sig_size), measurement_summary_hash=summary,
            requester_context=msg.requester_context,
        )
        self._check_size(unsigned.encode(ctx))
        self.transcript.add_c(raw)
        self.transcript.add_c(unsigned.encode_without_signature(ctx))
        m1 = self.transcript.m1m2()
        signature = self._sign(msg.slot_id, self._hash(m1), SigningContext.RESPONDER_CHALLENGE_AUTH)
        response = dataclasses.replace(unsigned, signature=signature).encode(ctx)
        self.transcript.challenge_done()
        return _Reply(response)

    # --- MEASUREMENTS -------------------------------------------------------------------------------

    def _on_get_measurements(self, msg: GetMeasurements, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        n = self.negotiated
        store = self.profile.measurements
        if not n.measurement_spec or not n.measurement_hash:
            raise _RequestError(ErrorCode.UNEXPECTED_REQUEST)
        signed = msg.signature_requested
        if signed and not self.profile.signs_measurements:
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        slot_id = msg.slot_id or 0
        if signed:
            self._check_slot(slot_id)
        raw_requested = n.version >= 0x12 and bool(msg.attributes & MeasurementAttributes.RAW_BIT_STREAM_REQUESTED)
        op = msg.operation
        total = 0
        if op == MeasurementOperation.TOTAL_COUNT:
            blocks = []
            total = len(store.items(n.version))
        elif op == MeasurementOperation.ALL:
            blocks = store.blocks(n.version, n.measurement_hash, raw=raw_requested, on_hash=self.env.meter.hash)
        else:
            item = store.item(op, n.version)
            if item is None:
                raise _RequestError(ErrorCode.INVALID_REQUEST)
            blocks = [item.block(n.measurement_hash, raw=raw_requested, on_hash=self.env.meter.hash)]
        # ContentChanged (1.2+, signed responses): did the measurements change during this L?
        log_generation = self._log_generation if slot is None else slot.log_generation
        start = store.generation if log_generation is None else log_generation
        changed = ContentChanged.NO_DETECTION
        if signed and n.version >= 0x12:
            changed = ContentChanged.CHANGED if store.generation != start else ContentChanged.UNCHANGED
        ctx = self._ctx
        response_msg = Measurements(
            version=msg.version, nonce=self.env.rng.bytes(NONCE_SIZE), blocks=tuple(blocks),
            signature=bytes(ctx.sig_size) if signed else None, total_indices=total,
            slot_id=slot_id if signed else 0, content_changed=changed,
            requester_context=msg.requester_context,
        )
        self._check_size(response_msg.encode(ctx))
        unsigned = response_msg.encode_without_signature(ctx)
        log = self.transcript if slot is None else None
        if log is not None:
            log.add_l(raw)
            log.add_l(unsigned)
            l_bytes = log.l1l2(n.version)
            self._log_generation = start
        else:
            assert slot is not None
            slot.measurement_log += raw + unsigned
            l_bytes = (self.transcript.vca if n.version >= 0x12 else b"") + bytes(slot.measurement_log)
            slot.log_generation = start
        if not signed:
            return _Reply(unsigned)
        signature = self._sign(slot_id, self._hash(l_bytes), SigningContext.RESPONDER_MEASUREMENTS)
        self._reset_log(slot)
        return _Reply(unsigned + signature)

    # --- sessions -----------------------------------------------------------------------------------

    def _new_session_id(self, req_session_id: int) -> int:
        while True:
            rsp_id = self.env.rng.randint(1, 0xFFFE)
            sid = (rsp_id << 16) | req_session_id
            if sid not in self._sessions:
                return sid

    def _on_key_exchange(self, msg: KeyExchange, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        n = self.negotiated
        if not n.both(CapabilityFlags.MAC_CAP) and not n.both(CapabilityFlags.ENCRYPT_CAP):
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        if n.version >= 0x12 and n.other_params != OtherParams.OPAQUE_DATA_FMT1:
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        if not (n.dhe and n.aead and n.key_schedule):
            raise _RequestError(ErrorCode.UNEXPECTED_REQUEST)
        self._check_slot(msg.slot_id)
        summary = self._summary_hash(msg.hash_type)
        try:
            offered = parse_secured_message_versions(msg.opaque_data, n.version)
        except DecodeError:
            raise _RequestError(ErrorCode.INVALID_REQUEST) from None
        common = [v for v in self.profile.secured_message_versions
                  if offered.supported and any(v >> 8 == s >> 8 for s in offered.supported)]
        if not common:
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        if len(self._sessions) >= self.profile.max_sessions:
            raise _RequestError(ErrorCode.SESSION_LIMIT_EXCEEDED)

        session_id = self._new_session_id(msg.req_session_id)
        name = f"session 0x{session_id:08x}"
        pair = EcdheKeyPair.generate(n.dhe, self.env.rng, sink=self.env.sink, owner=self.env.owner,
                                     label=f"{name} responder ecdhe private key")
        self.env.meter.ecdh(n.dhe)
        try:
            shared = pair.shared_secret(msg.exchange_data)
        except CryptoError:
            raise _RequestError(ErrorCode.INVALID_REQUEST) from None
        in_clear = self._handshake_in_the_clear()
        heartbeat = self.profile.heartbeat_period if n.both(CapabilityFlags.HBEAT_CAP) else 0
        ctx = self._ctx.with_(meas_summary_size=len(summary), handshake_in_the_clear=in_clear)
        rsp = KeyExchangeRsp(
            version=msg.version, heartbeat_period=heartbeat, rsp_session_id=session_id >> 16,
            mut_auth_requested=MutAuthRequested(0), req_slot_id=0,
            random_data=self.env.rng.bytes(RANDOM_DATA_SIZE), exchange_data=pair.public_value,
            measurement_summary_hash=summary,
            opaque_data=version_selection_opaque(common[0], n.version),
            signature=bytes(ctx.sig_size),
            responder_verify_data=None if in_clear else bytes(ctx.hash_size),
        )
        self._check_size(rsp.encode(ctx))
        transcript = SessionTranscript(n.base_hash, self.transcript.vca, self._hash(self._cert_chain(msg.slot_id)),
                                       meter=self.env.meter)
        to_sign = transcript.key_exchange_signature_hash(raw, rsp.signed_part(ctx))
        signature = self._sign(msg.slot_id, to_sign, SigningContext.RESPONDER_KEY_EXCHANGE_RSP)
        th1 = transcript.th1(signature)
        session = SecureSession(session_id, SessionRole.RESPONDER, n.version, n.base_hash, n.aead, self.env,
                                encrypt=n.both(CapabilityFlags.ENCRYPT_CAP), handshake_in_the_clear=in_clear,
                                heartbeat_period=heartbeat)
        session.set_dhe_secret(shared)
        session.derive_handshake_keys(th1)
        verify = None
        if not in_clear:
            verify = session.verify_data(Direction.RESPONSE, th1)
            transcript.add(verify)
        response = dataclasses.replace(rsp, signature=signature, responder_verify_data=verify).encode(ctx)
        self._sessions[session_id] = _SessionSlot(session, transcript, last_activity=self._now)
        self._latest_session_id = session_id
        return _Reply(response)

    def _on_finish(self, msg: Finish, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        if slot is None:
            sid = self._latest_session_id
            slot = self._sessions.get(sid) if sid is not None else None
            if slot is None:
                raise self._session_required()
        session = slot.session
        if session.state is not SessionState.HANDSHAKE:
            raise _RequestError(ErrorCode.UNEXPECTED_REQUEST)
        if msg.attributes & FinishAttributes.SIGNATURE_INCLUDED:
            raise _RequestError(ErrorCode.INVALID_REQUEST)  # mutual authentication was not requested
        transcript = slot.transcript
        in_clear = session.handshake_in_the_clear
        verify_hash = transcript.finish_verify_hash(raw[:len(raw) - len(msg.requester_verify_data)])
        if not session.check_verify_data(Direction.REQUEST, verify_hash, msg.requester_verify_data):
            sid = session.session_id
            return _Reply(self._error(ErrorCode.DECRYPT_ERROR), after=lambda: self._end_session(
                sid, EndReason.DECRYPT_ERROR), is_error=True)
        transcript.add(msg.requester_verify_data)
        ctx = self._ctx.with_(handshake_in_the_clear=in_clear)
        if in_clear:
            header = FinishRsp(msg.version, bytes(ctx.hash_size)).encode(ctx)[:4]
            rsp_verify = session.verify_data(Direction.RESPONSE, transcript.finish_rsp_verify_hash(header))
            response = header + rsp_verify
            th2 = transcript.th2(rsp_verify)
        else:
            response = FinishRsp(msg.version).encode(ctx)
            th2 = transcript.th2(response)

        def establish() -> None:
            session.enter_data_phase(th2)
            self._emit(SessionEstablished(session.session_id))

        return _Reply(response, after=establish)

    def _on_heartbeat(self, msg: Heartbeat, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        return _Reply(HeartbeatAck(msg.version).encode())

    def _on_key_update(self, msg: KeyUpdate, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        assert slot is not None
        session = slot.session
        op = KeyUpdateOperation(msg.operation)
        if op is KeyUpdateOperation.VERIFY_NEW_KEY:
            if slot.last_key_update is None or not session.key_update_pending(Direction.REQUEST):
                raise _RequestError(ErrorCode.INVALID_REQUEST)
            session.responder_apply_key_update(op)
            slot.last_key_update = None
        else:
            if slot.last_key_update is not None:
                raise _RequestError(ErrorCode.INVALID_REQUEST)
            session.responder_apply_key_update(op)
            slot.last_key_update = op
        return _Reply(KeyUpdateAck(msg.version, op, msg.tag).encode())

    def _on_end_session(self, msg: EndSession, raw: bytes, slot: _SessionSlot | None) -> _Reply:
        assert slot is not None
        sid = slot.session.session_id
        return _Reply(EndSessionAck(msg.version).encode(), after=lambda: self._end_session(sid, EndReason.END_SESSION))

    # --- VENDOR_DEFINED -----------------------------------------------------------------------------

    def _on_vendor_defined(self, msg: VendorDefinedRequest, raw: bytes, slot: _SessionSlot | None) -> _Reply | None:
        handler = self._vendor_handlers.get((int(msg.standard_id), bytes(msg.vendor_id)))
        if handler is None:
            raise _RequestError(ErrorCode.UNSUPPORTED_REQUEST, RequestCode.VENDOR_DEFINED_REQUEST)
        session_id = slot.session.session_id if slot is not None else None
        try:
            payload = handler(session_id, msg.version, bytes(msg.payload))
        except VendorRequestError as exc:  # the protocol above refused, naming the ERROR to send
            raise _RequestError(exc.error_code) from None
        except ValueError:  # the protocol above could not parse its payload
            raise _RequestError(ErrorCode.INVALID_REQUEST) from None
        if payload is None:
            return None
        response = VendorDefinedResponse(msg.version, msg.standard_id, msg.vendor_id, bytes(payload))
        try:
            encoded = response.encode()
        except EncodeError:
            raise _RequestError(ErrorCode.UNSPECIFIED) from None
        self._check_size(encoded)
        return _Reply(encoded)

    def _on_respond_if_ready(self, msg: RespondIfReady, raw: bytes, slot: _SessionSlot | None) -> _Reply | None:
        deferred = self._deferred
        if deferred is None or deferred.session_id != (slot.session.session_id if slot else None):
            raise _RequestError(ErrorCode.UNEXPECTED_REQUEST)
        if msg.request_code != deferred.request[1] or msg.token != deferred.token:
            raise _RequestError(ErrorCode.INVALID_REQUEST)
        self._deferred = None
        return self._process_checked(deferred.request, slot)

    _HANDLERS: dict[RequestCode, Callable[[SpdmResponder, Any, bytes, _SessionSlot | None], _Reply | None]] = {
        RequestCode.GET_VERSION: _on_get_version,
        RequestCode.GET_CAPABILITIES: _on_get_capabilities,
        RequestCode.NEGOTIATE_ALGORITHMS: _on_negotiate_algorithms,
        RequestCode.GET_DIGESTS: _on_get_digests,
        RequestCode.GET_CERTIFICATE: _on_get_certificate,
        RequestCode.CHALLENGE: _on_challenge,
        RequestCode.GET_MEASUREMENTS: _on_get_measurements,
        RequestCode.KEY_EXCHANGE: _on_key_exchange,
        RequestCode.FINISH: _on_finish,
        RequestCode.HEARTBEAT: _on_heartbeat,
        RequestCode.KEY_UPDATE: _on_key_update,
        RequestCode.END_SESSION: _on_end_session,
        RequestCode.VENDOR_DEFINED_REQUEST: _on_vendor_defined,
        RequestCode.RESPOND_IF_READY: _on_respond_if_ready,
    }


__all__ = [
    "REQUEST_TABLE",
    "ConnectionNegotiated",
    "ConnectionState",
    "EndReason",
    "ResponderEvent",
    "Row",
    "Scope",
    "SessionEnded",
    "SessionEstablished",
    "SpdmResponder",
    "VersionReset",
]
