"""IDE_KM over SPDM (PROTOCOLS.md §6.1-§6.3): the device's responder and the key-programming requester.

The responder answers QUERY, KEY_PROG, K_SET_GO and K_SET_STOP against the device's key slots
(:class:`IdeKeySlots`, implemented by ``sim.devices.ide_engine.IdeEngine``) and remembers which
SPDM session programmed every slot: TDISP LOCK may only succeed when all six sub-stream keys of
the default stream came through the session that sends the LOCK (TRUST_MODELS.md §3, TDISP
§11.3.8), and ending that session must take its keys away (§11.4.5).

Requests that IDE_KM cannot answer in-protocol (QUERY_RESP and K_GOSTOP_ACK carry no status) come
back as an :class:`IdeKmRejection`; the device security manager turns that into the SPDM ERROR
the envelope allows (the libspdm/spdm-emu responders also fail such requests at the SPDM level).

The requester side (:class:`IdeKmRequester`) draws fresh keys from ``env.rng`` and returns them, so
the party that runs it (host kernel, firmware TSM or guest) can program the Root Port's slots
through its own path in the order TRUST_MODELS.md §4 gives: KEY_PROG to the endpoint, program the
Root Port, GO Rx (endpoint, then Root Port), GO Tx (endpoint, then Root Port).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, ClassVar, NoReturn, Protocol, TypeVar

from sim.crypto.aead import IDE_KEY_SIZE
from sim.crypto.secrets import SecretClass
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Flow, Outbound
from sim.protocols.spdm.outcome import Failure, FailureReason, Ok
from sim.wire.codec import DecodeError
from sim.wire.ide_km import (
    IFV_BYTES,
    MIN_REGISTER_DWS,
    Direction,
    IdeKmMessage,
    IdeKmObjectId,
    KeyProg,
    KeySet,
    KGoStopAck,
    KpAck,
    KpAckStatus,
    KSetGo,
    KSetStop,
    Query,
    QueryResp,
    SubStream,
    decode_ide_km,
)
from sim.wire.pcisig import PCISIG_VENDOR_ID, STANDARD_ID_PCISIG, ProtocolId
from sim.wire.spdm.common import ErrorCode
from sim.wire.tdisp import TdispErrorCode

SUB_STREAMS: tuple[SubStream, ...] = (SubStream.PR, SubStream.NPR, SubStream.CPL)
DIRECTIONS: tuple[Direction, ...] = (Direction.RX, Direction.TX)
KEY_PROG_BYTES = 47  # §6.2
SELECTOR_BYTES = 7  # KP_ACK, K_SET_GO, K_SET_STOP, K_GOSTOP_ACK
INITIAL_IFV = (1).to_bytes(IFV_BYTES, "big")  # §6.3: spdm-emu and the "initial invocation field = 1" convention

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# What the responder needs from the device hardware
# --------------------------------------------------------------------------------------------


class IdeKeySlots(Protocol):
    """The device IDE engine as IDE_KM drives it (``sim.devices.ide_engine.IdeEngine`` has this shape).

    ``program`` returns the KP_ACK status; ``set_go`` / ``set_stop`` return whether anything
    changed (GO of an empty slot, or STOP of one, does nothing).
    """

    def program(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
                sub_stream: SubStream, key: bytes, ifv: bytes) -> KpAckStatus: ...

    def set_go(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
               sub_stream: SubStream) -> bool: ...

    def set_stop(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
                 sub_stream: SubStream) -> bool: ...


class IdePortInfo(Protocol):
    """What QUERY_RESP reports for one port (``sim.devices.security_manager.IdePortInfo`` has this shape)."""

    @property
    def port_index(self) -> int: ...

    @property
    def max_port_index(self) -> int: ...

    @property
    def dev_func(self) -> int: ...  # device << 3 | function

    @property
    def bus(self) -> int: ...

    @property
    def segment(self) -> int: ...

    @property
    def register_dws(self) -> tuple[int, ...]: ...


class IdePortProvider(Protocol):
    """The register-block provider for QUERY_RESP; None means the port index is not supported."""

    def ide_query(self, port_index: int) -> IdePortInfo | None: ...


@dataclasses.dataclass(frozen=True)
class IdePort:
    """A plain :class:`IdePortInfo`."""

    port_index: int
    max_port_index: int
    dev_func: int
    bus: int
    segment: int
    register_dws: tuple[int, ...]


class StaticIdePorts:
    """An :class:`IdePortProvider` over a fixed list of ports (tests, the emulator socket device)."""

    def __init__(self, ports: Sequence[IdePort]) -> None:
        self._ports = {p.port_index: p for p in ports}

    def ide_query(self, port_index: int) -> IdePort | None:
        return self._ports.get(port_index)


def ide_register_block(stream_ids: Sequence[int], *, addr_assoc: int = 1, enabled: bool = False,
                       tee_limited: bool = True) -> tuple[int, ...]:
    """A selective-IDE-only register block as QUERY_RESP carries it (§6.2 order, §7.1 bit layout).

    IDE Capability (Selective, IDE_KM, [TEE-Limited], stream count - 1), IDE Control, then per
    selective stream: Capability (address-association count), Control (Stream ID in 31:24, the
    first stream marked Default), Status, RID Association 1/2 and the address-association DWs.
    """
    if not stream_ids or len(stream_ids) > 256 or not 0 <= addr_assoc <= 15:
        raise ValueError("1..256 selective streams, 0..15 address associations")
    cap = (1 << 1) | (1 << 6) | ((len(stream_ids) - 1) << 16) | ((1 << 24) if tee_limited else 0)
    dws = [cap, 0]
    for i, sid in enumerate(stream_ids):
        control = (sid & 0xFF) << 24 | (1 << 22 if i == 0 else 0) | (1 if enabled else 0)
        dws += [addr_assoc, control, 0, 0xFFFF << 8, 1]
        dws += [0, 0, 0] * addr_assoc
    return tuple(dws)


class InMemoryIdeKeySlots:
    """A real, self-contained :class:`IdeKeySlots`: stores keys and IFVs and enforces the KP_ACK rules.

    ``ports`` port indices, at most ``max_streams`` distinct stream IDs at once (more is
    UNSUPPORTED_VALUE), optionally only the ``stream_ids`` the register block configures.
    """

    def __init__(self, *, ports: int = 1, max_streams: int = 1, stream_ids: Iterable[int] | None = None) -> None:
        self.ports = ports
        self.max_streams = max_streams
        self.stream_ids = None if stream_ids is None else frozenset(stream_ids)
        self.keys: dict[tuple[int, int, KeySet, Direction, SubStream], tuple[bytes, bytes]] = {}
        self.armed: set[tuple[int, int, KeySet, Direction, SubStream]] = set()

    def program(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
                sub_stream: SubStream, key: bytes, ifv: bytes) -> KpAckStatus:
        if not 0 <= port_index < self.ports:
            return KpAckStatus.UNSUPPORTED_PORT_INDEX
        if len(key) != IDE_KEY_SIZE or len(ifv) != IFV_BYTES:
            return KpAckStatus.INCORRECT_LENGTH
        if self.stream_ids is not None and stream_id not in self.stream_ids:
            return KpAckStatus.UNSUPPORTED_VALUE
        in_use = {(p, s) for p, s, *_ in self.keys}
        if (port_index, stream_id) not in in_use and len(in_use) >= self.max_streams:
            return KpAckStatus.UNSUPPORTED_VALUE
        slot = (port_index, stream_id, key_set, direction, sub_stream)
        self.armed.discard(slot)  # a new key is never used before its GO
        self.keys[slot] = (bytes(key), bytes(ifv))
        return KpAckStatus.SUCCESS

    def set_go(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
               sub_stream: SubStream) -> bool:
        slot = (port_index, stream_id, key_set, direction, sub_stream)
        if slot not in self.keys:
            return False
        if direction is Direction.TX:  # one Tx key set per sub-stream transmits
            self.armed.discard((port_index, stream_id, KeySet(1 - key_set), direction, sub_stream))
        self.armed.add(slot)
        return True

    def set_stop(self, port_index: int, stream_id: int, key_set: KeySet, direction: Direction,
                 sub_stream: SubStream) -> bool:
        slot = (port_index, stream_id, key_set, direction, sub_stream)
        self.armed.discard(slot)
        return self.keys.pop(slot, None) is not None

    def clear_all(self) -> None:
        self.keys.clear()
        self.armed.clear()

    def ready(self, stream_id: int, port_index: int = 0) -> bool:
        """Both directions of all three sub-streams have an armed key (the stream may go Secure)."""
        return all(any((port_index, stream_id, ks, d, s) in self.armed for ks in KeySet)
                   for d in DIRECTIONS for s in SUB_STREAMS)


# --------------------------------------------------------------------------------------------
# Responder
# --------------------------------------------------------------------------------------------


class IdeKmRejectReason(enum.Enum):
    """Why a request got no IDE_KM answer; each maps to the SPDM ERROR the DSM sends instead."""

    NO_SESSION = "no-session"  # IDE_KM outside a secured session
    MALFORMED = "malformed"  # undecodable, wrong length where no status field exists, reserved values
    UNSUPPORTED_OBJECT = "unsupported-object"  # unknown Object ID, or a response object sent as a request
    UNSUPPORTED_PORT = "unsupported-port"  # QUERY / GO / STOP for a port index the device lacks
    NOT_PROGRAMMED = "not-programmed"  # K_SET_GO of a key set that holds no key


@dataclasses.dataclass(frozen=True)
class IdeKmRejection:
    reason: IdeKmRejectReason
    detail: str

    def spdm_error(self, spdm_version: int) -> ErrorCode:
        """The SPDM ErrorCode for this rejection (SessionRequired exists from SPDM 1.2 on)."""
        if self.reason is IdeKmRejectReason.NO_SESSION:
            return ErrorCode.SESSION_REQUIRED if spdm_version >= 0x12 else ErrorCode.UNEXPECTED_REQUEST
        return ErrorCode.INVALID_REQUEST


class IdeKeyStatus(enum.Enum):
    """Whether a stream's keys satisfy TDISP LOCK for a given session (TDISP §11.3.8, Table 11-12)."""

    COMPLETE = "complete"  # all six {Rx,Tx}x{PR,NPR,CPL} programmed, every one through this session
    INCOMPLETE = "incomplete"  # some sub-stream has no key
    OTHER_SESSION = "other-session"  # some key of the stream came through another session (or none)


SlotId = tuple[int, int, KeySet, Direction, SubStream]  # port, stream, key set, direction, sub-stream


@dataclasses.dataclass(frozen=True)
class IdeKmEvent:
    """What the responder did, for the trace: 'programmed', 'go', 'stop', 'refused', 'revoked'."""

    kind: str
    slot: SlotId | None
    session_id: int | None
    detail: str = ""


IdeKmResult = bytes | IdeKmRejection


class IdeKmResponder:
    """The device's IDE_KM responder (sans-IO): IDE_KM object bytes in, IDE_KM object bytes out.

    ``handle`` takes the message after the Protocol ID byte. ``require_session`` (default) refuses
    every request that did not arrive inside a secured SPDM session (§6.1).
    """

    def __init__(self, slots: IdeKeySlots, port_info: IdePortProvider, env: ProtocolEnv, *,
                 require_session: bool = True) -> None:
        self.slots = slots
        self.ports = port_info
        self.env = env
        self.require_session = require_session
        self.programmed_by: dict[SlotId, int | None] = {}
        self.events: list[IdeKmEvent] = []
        self._listeners: list[Callable[[IdeKmEvent], None]] = []

    def add_listener(self, callback: Callable[[IdeKmEvent], None]) -> None:
        self._listeners.append(callback)

    def _emit(self, event: IdeKmEvent) -> None:
        self.events.append(event)
        for cb in list(self._listeners):
            cb(event)

    # --- request handling ---

    def handle(self, session_id: int | None, message: bytes) -> IdeKmResult:
        """Answer one IDE_KM request: response bytes, or a rejection to turn into an SPDM ERROR."""
        message = bytes(message)
        if session_id is None and self.require_session:
            return IdeKmRejection(IdeKmRejectReason.NO_SESSION, "IDE_KM requires a secured SPDM session")
        if not message:
            return IdeKmRejection(IdeKmRejectReason.MALFORMED, "empty IDE_KM message")
        handler = _RESPONDER_HANDLERS.get(message[0])
        if handler is None:
            return IdeKmRejection(IdeKmRejectReason.UNSUPPORTED_OBJECT,
                                  f"object id 0x{message[0]:02x} is not an IDE_KM request")
        return getattr(self, handler)(session_id, message)

    def _query(self, session_id: int | None, message: bytes) -> IdeKmResult:
        try:
            req = Query.decode(message)
        except DecodeError as exc:
            return IdeKmRejection(IdeKmRejectReason.MALFORMED, str(exc))
        port = self.ports.ide_query(req.port_index)
        if port is None:
            return IdeKmRejection(IdeKmRejectReason.UNSUPPORTED_PORT, f"port index {req.port_index}")
        regs = tuple(port.register_dws)
        if len(regs) < MIN_REGISTER_DWS:  # a device without an IDE register block cannot do IDE_KM
            return IdeKmRejection(IdeKmRejectReason.UNSUPPORTED_PORT, f"port {req.port_index} has no IDE registers")
        return QueryResp(port_index=req.port_index, function=port.dev_func & 0x7, device=(port.dev_func >> 3) & 0x1F,
                         bus=port.bus, segment=port.segment, max_port_index=port.max_port_index,
                         registers=regs).encode()

    def _key_prog(self, session_id: int | None, message: bytes) -> IdeKmResult:
        if len(message) < SELECTOR_BYTES:
            return IdeKmRejection(IdeKmRejectReason.MALFORMED,
                                  f"KEY_PROG of {len(message)} bytes is too short to acknowledge")
        stream_id, kss, port_index = message[3], message[5], message[6]
        if len(message) != KEY_PROG_BYTES:
            return _kp_ack(stream_id, kss, port_index, KpAckStatus.INCORRECT_LENGTH)
        if self.ports.ide_query(port_index) is None:
            return _kp_ack(stream_id, kss, port_index, KpAckStatus.UNSUPPORTED_PORT_INDEX)
        try:
            req = KeyProg.decode(message)
        except DecodeError:  # the only field left that can fail is the sub-stream (bits 7:4 > CPL)
            return _kp_ack(stream_id, kss, port_index, KpAckStatus.UNSUPPORTED_VALUE)
        status = self.slots.program(req.port_index, req.stream_id, req.key_set, req.direction, req.sub_stream,
                                    req.key, req.ifv)
        slot = (req.port_index, req.stream_id, req.key_set, req.direction, req.sub_stream)
        if status is KpAckStatus.SUCCESS:
            self.programmed_by[slot] = session_id
            self._emit(IdeKmEvent("programmed", slot, session_id))
        else:
            self._emit(IdeKmEvent("refused", slot, session_id, f"KEY_PROG {status.name}"))
        return _kp_ack(stream_id, kss, port_index, status)

    def _go_stop(self, session_id: int | None, message: bytes) -> IdeKmResult:
        go = message[0] == IdeKmObjectId.K_SET_GO
        try:
            req: KSetGo | KSetStop = KSetGo.decode(message) if go else KSetStop.decode(message)
        except DecodeError as exc:
            return IdeKmRejection(IdeKmRejectReason.MALFORMED, str(exc))
        if self.ports.ide_query(req.port_index) is None:
            return IdeKmRejection(IdeKmRejectReason.UNSUPPORTED_PORT, f"port index {req.port_index}")
        slot = (req.port_index, req.stream_id, req.key_set, req.direction, req.sub_stream)
        if go:
            if not self.slots.set_go(*slot):
                self._emit(IdeKmEvent("refused", slot, session_id, "K_SET_GO of an empty key set"))
                return IdeKmRejection(IdeKmRejectReason.NOT_PROGRAMMED,
                                      f"stream {req.stream_id} {req.key_set.name} {req.direction.name} "
                                      f"{req.sub_stream.name} holds no key")
            self._emit(IdeKmEvent("go", slot, session_id))
        else:
            self.slots.set_stop(*slot)  # stopping an empty slot is harmless and still acknowledged
            self.programmed_by.pop(slot, None)
            self._emit(IdeKmEvent("stop", slot, session_id))
        return KGoStopAck(stream_id=req.stream_id, key_set=req.key_set, direction=req.direction,
                          sub_stream=req.sub_stream, port_index=req.port_index).encode()

    # --- session binding (TDISP) ---

    def key_status(self, stream_id: int, session_id: int, port_index: int = 0) -> IdeKeyStatus:
        """Whether the stream's keys were all programmed, and all through ``session_id`` (LOCK's rule)."""
        mine = {s for s, by in self.programmed_by.items() if s[0] == port_index and s[1] == stream_id}
        if any(self.programmed_by[s] != session_id for s in mine):
            return IdeKeyStatus.OTHER_SESSION
        covered = {(s[3], s[4]) for s in mine}
        if not all((d, sub) in covered for d in DIRECTIONS for sub in SUB_STREAMS):
            return IdeKeyStatus.INCOMPLETE
        return IdeKeyStatus.COMPLETE

    def streams_of_session(self, session_id: int | None) -> set[int]:
        return {s[1] for s, by in self.programmed_by.items() if by == session_id}

    def revoke_session(self, session_id: int | None) -> list[SlotId]:
        """The session ended: stop and erase every key it programmed (its streams go Insecure, §11.4.5)."""
        gone = [s for s, by in self.programmed_by.items() if by == session_id]
        for slot in gone:
            self.slots.set_stop(*slot)
            del self.programmed_by[slot]
            self._emit(IdeKmEvent("revoked", slot, session_id, "SPDM session ended"))
        return gone

    def reset(self) -> None:
        """Conventional reset: the hardware loses its keys; forget (and erase) every slot we knew of."""
        for slot in list(self.programmed_by):
            self.slots.set_stop(*slot)
        self.programmed_by.clear()


# The request each IDE_KM object ID is answered by (method names, so that subclasses can override them).
_RESPONDER_HANDLERS: dict[int, str] = {
    IdeKmObjectId.QUERY: "_query",
    IdeKmObjectId.KEY_PROG: "_key_prog",
    IdeKmObjectId.K_SET_GO: "_go_stop",
    IdeKmObjectId.K_SET_STOP: "_go_stop",
}


_KEY_SETS = (KeySet(0), KeySet(1))  # by KeySubStream bit 0
_DIRECTIONS = (Direction(0), Direction(1))  # by KeySubStream bit 1


def _kp_ack(stream_id: int, key_sub_stream: int, port_index: int, status: KpAckStatus) -> bytes:
    """KP_ACK echoing the request's StreamID, KeySubStream byte and PortIndex exactly as received."""
    sub = (key_sub_stream >> 4) & 0xF
    return KpAck(stream_id=stream_id, status=status, key_set=_KEY_SETS[key_sub_stream & 1],
                 direction=_DIRECTIONS[(key_sub_stream >> 1) & 1],
                 sub_stream=SubStream._value2member_map_.get(sub, sub),  # a reserved value stays visible
                 port_index=port_index, reserved_bits=(key_sub_stream >> 2) & 0x3).encode()


# --------------------------------------------------------------------------------------------
# Requester
# --------------------------------------------------------------------------------------------


class PcisigFailureReason(enum.StrEnum):
    """Why an IDE_KM or TDISP exchange did not give the expected answer."""

    NO_RESPONSE = "no-response"  # nothing came back (timeout, dropped object, no answer outside a session)
    SPDM_FAILURE = "spdm-failure"  # the SPDM layer failed (ERROR response, session gone, decrypt failure)
    MALFORMED_RESPONSE = "malformed-response"  # the response payload does not decode
    UNEXPECTED_RESPONSE = "unexpected-response"  # wrong object/message, or echoed fields differ
    KP_ACK_STATUS = "kp-ack-status"  # KP_ACK with a status other than SUCCESS (see ``kp_ack_status``)
    TDISP_ERROR = "tdisp-error"  # TDISP_ERROR (see ``tdisp_error``)
    BAD_REPORT = "bad-report"  # the reassembled interface report does not decode or is inconsistent
    INVALID_STATE = "invalid-state"  # the flow was started out of order (e.g. START before LOCK)


@dataclasses.dataclass(frozen=True)
class PcisigFailure:
    """A failed IDE_KM / TDISP exchange; ``exchange`` names the request (e.g. 'KEY_PROG stream=1 K0 TX NPR').

    Shaped like :class:`sim.protocols.spdm.outcome.Failure` (``ok`` is False) so callers can branch
    on ``result.ok`` for both; ``spdm`` keeps the SPDM layer's own failure when there was one.
    """

    reason: PcisigFailureReason
    detail: str
    exchange: str
    kp_ack_status: KpAckStatus | None = None
    tdisp_error: TdispErrorCode | None = None
    spdm: Failure | None = None
    ok: ClassVar[bool] = False

    def unwrap(self) -> NoReturn:
        raise PcisigFlowFailed(self)

    def __str__(self) -> str:
        extra = self.kp_ack_status.name if self.kp_ack_status is not None else (
            self.tdisp_error.name if self.tdisp_error is not None else "")
        return f"{self.exchange}: {self.reason.value}{f' [{extra}]' if extra else ''}: {self.detail}"


class PcisigFlowFailed(RuntimeError):
    """Raised by :meth:`PcisigFailure.unwrap`, for callers (tests, scripts) that prefer an exception."""

    def __init__(self, failure: PcisigFailure) -> None:
        self.failure = failure
        super().__init__(str(failure))


PcisigOutcome = Ok[T] | PcisigFailure
VendorReply = bytes | PcisigFailure
# Sends one PCI-SIG vendor payload (Protocol ID byte + message) and returns the response payload.
VendorTransport = Callable[[bytes], Flow[VendorReply]]


def spdm_vendor_transport(requester: SpdmVendorRequester, session: object) -> VendorTransport:
    """A :data:`VendorTransport` over an SPDM requester's secured session (PCI-SIG envelope, §6.1)."""

    def send(payload: bytes) -> Flow[VendorReply]:
        result = yield from requester.vendor_request(session, STANDARD_ID_PCISIG, PCISIG_VENDOR_ID, payload)
        return normalize_vendor_reply(result, "VENDOR_DEFINED")

    return send


class SpdmVendorRequester(Protocol):
    """The part of ``sim.protocols.spdm.requester.SpdmRequester`` the PCI-SIG requesters use."""

    def vendor_request(self, session: Any, standard_id: int, vendor_id: bytes,
                       payload: bytes) -> Flow[Any]: ...


def normalize_vendor_reply(result: object, exchange: str) -> VendorReply:
    """Turn what an SPDM requester's vendor flow returned into payload bytes or a :class:`PcisigFailure`.

    ``Ok(bytes)`` (or plain bytes) is the response payload; ``Ok(None)`` / None mean no response;
    an SPDM :class:`Failure` is kept inside the PcisigFailure.
    """
    if isinstance(result, Ok):
        result = result.value
    if isinstance(result, bytes | bytearray):
        return bytes(result)
    payload = getattr(result, "payload", None)  # a decoded VENDOR_DEFINED_RESPONSE
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if result is None:
        return PcisigFailure(PcisigFailureReason.NO_RESPONSE, "no response", exchange)
    if isinstance(result, Failure):
        kind = (PcisigFailureReason.NO_RESPONSE if result.reason is FailureReason.NO_RESPONSE
                else PcisigFailureReason.SPDM_FAILURE)
        return PcisigFailure(kind, str(result), exchange, spdm=result)
    return PcisigFailure(PcisigFailureReason.MALFORMED_RESPONSE, f"unexpected vendor reply {result!r}", exchange)


@dataclasses.dataclass(frozen=True)
class ProgrammedKey:
    """One key the requester generated and the device acknowledged.

    ``direction`` is the device's (KEY_PROG's) view; the Root Port uses the same key in the
    opposite direction (:attr:`root_port_direction`).
    """

    stream_id: int
    key_set: KeySet
    direction: Direction
    sub_stream: SubStream
    key: bytes
    ifv: bytes
    port_index: int = 0

    @property
    def root_port_direction(self) -> Direction:
        return Direction.TX if self.direction is Direction.RX else Direction.RX


@dataclasses.dataclass(frozen=True)
class StreamKeys:
    """The six keys of one key set of a stream, as programmed into the endpoint."""

    stream_id: int
    key_set: KeySet
    keys: tuple[ProgrammedKey, ...]

    def key_for(self, direction: Direction, sub_stream: SubStream) -> ProgrammedKey:
        for k in self.keys:
            if k.direction is direction and k.sub_stream is sub_stream:
                return k
        raise KeyError((direction, sub_stream))


def _send_ide_km(transport: VendorTransport, msg: IdeKmMessage, exchange: Callable[[], str]
                 ) -> Generator[Outbound, bytes | None, IdeKmMessage | PcisigFailure]:
    """One IDE_KM round trip; ``exchange`` names it in a failure (written only when there is one)."""
    reply = yield from transport(bytes([ProtocolId.IDE_KM]) + msg.encode())
    if isinstance(reply, PcisigFailure):
        return dataclasses.replace(reply, exchange=exchange())
    if not reply or reply[0] != ProtocolId.IDE_KM:
        return PcisigFailure(PcisigFailureReason.MALFORMED_RESPONSE, "not an IDE_KM payload", exchange())
    try:
        return decode_ide_km(reply[1:])
    except DecodeError as exc:
        return PcisigFailure(PcisigFailureReason.MALFORMED_RESPONSE, str(exc), exchange())


def _echo_of(msg: KpAck | KGoStopAck) -> tuple[int, KeySet, Direction, SubStream, int]:
    return msg.stream_id, msg.key_set, msg.direction, msg.sub_stream, msg.port_index


class IdeKmRequester:
    """IDE_KM requester flows (sans-IO generators over a :data:`VendorTransport`).

    Every flow returns ``Ok(result)`` or a :class:`PcisigFailure`; none raises on peer behaviour.
    Keys are reported to ``env.sink`` as :attr:`SecretClass.IDE_KEY` when generated.
    """

    def __init__(self, transport: VendorTransport, env: ProtocolEnv) -> None:
        self.transport = transport
        self.env = env

    @classmethod
    def over_session(cls, requester: SpdmVendorRequester, session: object, env: ProtocolEnv) -> IdeKmRequester:
        """IDE_KM through an SPDM requester's secured session."""
        return cls(spdm_vendor_transport(requester, session), env)

    def query(self, port_index: int = 0) -> Flow[PcisigOutcome[QueryResp]]:
        def exchange() -> str:
            return f"QUERY port={port_index}"

        rsp = yield from _send_ide_km(self.transport, Query(port_index), exchange)
        if isinstance(rsp, PcisigFailure):
            return rsp
        if not isinstance(rsp, QueryResp) or rsp.port_index != port_index:
            return PcisigFailure(PcisigFailureReason.UNEXPECTED_RESPONSE, rsp.summary(), exchange())
        return Ok(rsp)

    def new_key(self, stream_id: int, key_set: KeySet, direction: Direction, sub_stream: SubStream,
                port_index: int = 0) -> ProgrammedKey:
        """A fresh 256-bit key from ``env.rng`` with the initial IFV (§6.3), reported as an IDE key."""
        key = self.env.rng.bytes(IDE_KEY_SIZE)
        if self.env.sink is not None:  # the label is only written for a sink that keeps it
            label = f"ide stream {stream_id} {key_set.name} {direction.name} {sub_stream.name} port {port_index}"
            self.env.report(label, SecretClass.IDE_KEY, key)
        return ProgrammedKey(stream_id, key_set, direction, sub_stream, key, INITIAL_IFV, port_index)

    def program_key(self, key: ProgrammedKey) -> Flow[PcisigOutcome[ProgrammedKey]]:
        """One KEY_PROG; the KP_ACK must echo the slot and report SUCCESS."""
        def exchange() -> str:
            return f"KEY_PROG stream={key.stream_id} {key.key_set.name} {key.direction.name} {key.sub_stream.name}"

        req = KeyProg(stream_id=key.stream_id, key_set=key.key_set, direction=key.direction,
                      sub_stream=key.sub_stream, key=key.key, ifv=key.ifv, port_index=key.port_index)
        rsp = yield from _send_ide_km(self.transport, req, exchange)
        if isinstance(rsp, PcisigFailure):
            return rsp
        want = (key.stream_id, key.key_set, key.direction, key.sub_stream, key.port_index)
        if not isinstance(rsp, KpAck) or _echo_of(rsp) != want:
            return PcisigFailure(PcisigFailureReason.UNEXPECTED_RESPONSE, rsp.summary(), exchange())
        if rsp.status is not KpAckStatus.SUCCESS:
            return PcisigFailure(PcisigFailureReason.KP_ACK_STATUS, f"KP_ACK status {rsp.status.name}", exchange(),
                                 kp_ack_status=rsp.status)
        return Ok(key)

    def program(self, stream_id: int, key_set: KeySet = KeySet.K0,
                port_index: int = 0) -> Flow[PcisigOutcome[StreamKeys]]:
        """KEY_PROG all six {Rx,Tx}x{PR,NPR,CPL} keys of a key set with fresh keys; returns them."""
        done: list[ProgrammedKey] = []
        for direction in DIRECTIONS:
            for sub in SUB_STREAMS:
                result = yield from self.program_key(self.new_key(stream_id, key_set, direction, sub, port_index))
                if isinstance(result, PcisigFailure):
                    return result
                done.append(result.value)
        return Ok(StreamKeys(stream_id, key_set, tuple(done)))

    def _selector(self, cls: type[KSetGo] | type[KSetStop], stream_id: int, key_set: KeySet,
                  directions: Sequence[Direction], port_index: int) -> Flow[PcisigOutcome[None]]:
        for direction in directions:
            for sub in SUB_STREAMS:
                def exchange(direction: Direction = direction, sub: SubStream = sub) -> str:
                    return f"{cls.NAME} stream={stream_id} {key_set.name} {direction.name} {sub.name}"

                req = cls(stream_id=stream_id, key_set=key_set, direction=direction, sub_stream=sub,
                          port_index=port_index)
                rsp = yield from _send_ide_km(self.transport, req, exchange)
                if isinstance(rsp, PcisigFailure):
                    return rsp
                if not isinstance(rsp, KGoStopAck) or _echo_of(rsp) != (stream_id, key_set, direction, sub,
                                                                        port_index):
                    return PcisigFailure(PcisigFailureReason.UNEXPECTED_RESPONSE, rsp.summary(), exchange())
        return Ok(None)

    def go(self, stream_id: int, key_set: KeySet = KeySet.K0, directions: Sequence[Direction] = DIRECTIONS,
           port_index: int = 0) -> Flow[PcisigOutcome[None]]:
        """K_SET_GO for the three sub-streams of each direction, in the order given (Rx before Tx, §4)."""
        return (yield from self._selector(KSetGo, stream_id, key_set, directions, port_index))

    def stop(self, stream_id: int, key_set: KeySet = KeySet.K0,
             directions: Sequence[Direction] = (Direction.TX, Direction.RX),
             port_index: int = 0) -> Flow[PcisigOutcome[None]]:
        """K_SET_STOP for the three sub-streams of each direction (Tx first, TRUST_MODELS.md §4)."""
        return (yield from self._selector(KSetStop, stream_id, key_set, directions, port_index))

    def setup(self, stream_id: int, key_set: KeySet = KeySet.K0,
              port_index: int = 0) -> Flow[PcisigOutcome[StreamKeys]]:
        """QUERY, program the six keys, GO Rx then Tx: the endpoint half of bringing a stream up.

        A caller that must interleave Root Port programming (§4 order) uses :meth:`program` and
        :meth:`go` per direction instead.
        """
        q = yield from self.query(port_index)
        if isinstance(q, PcisigFailure):
            return q
        return (yield from self._program_and_go(stream_id, key_set, port_index))

    def refresh(self, stream_id: int, current: KeySet,
                port_index: int = 0) -> Flow[PcisigOutcome[StreamKeys]]:
        """Key refresh: program the other key set with fresh keys, then GO Rx and GO Tx on it."""
        return (yield from self._program_and_go(stream_id, KeySet(1 - current), port_index))

    def _program_and_go(self, stream_id: int, key_set: KeySet, port_index: int) -> Flow[PcisigOutcome[StreamKeys]]:
        keys = yield from self.program(stream_id, key_set, port_index)
        if isinstance(keys, PcisigFailure):
            return keys
        for direction in DIRECTIONS:
            r = yield from self.go(stream_id, key_set, (direction,), port_index)
            if isinstance(r, PcisigFailure):
                return r
        return keys
