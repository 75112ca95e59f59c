"""Decode any byte string this simulator puts on a wire into a tree of layers, for people.

Used by ``tiosim decode`` and by the trace's one-line summaries: DOE object → SPDM message →
PCI-SIG vendor payload → IDE_KM or TDISP. Secured records are shown as ciphertext (no keys here).
Decoding is stateless except through a :class:`Conversation`, which the caller owns (one per capture)
to carry what earlier messages negotiated into the sizing of later ones.
"""

from __future__ import annotations

import dataclasses
import re

import sim.wire.spdm  # noqa: F401  (importing the package registers every SPDM message)
from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo, DheGroup
from sim.wire.codec import DecodeError, Message, format_value
from sim.wire.doe import (
    HEADER_BYTES,
    PCI_SIG_VENDOR_ID,
    DoeDiscoveryRequest,
    DoeDiscoveryResponse,
    DoeObject,
    DoeObjectType,
    doe_length_dw,
)
from sim.wire.ide_km import decode_ide_km
from sim.wire.pcisig import decode_pcisig_payload, is_pcisig_envelope
from sim.wire.secured import SecuredRecord, session_id
from sim.wire.spdm.algorithms import Algorithms
from sim.wire.spdm.capabilities import Capabilities, GetCapabilities
from sim.wire.spdm.challenge import Challenge
from sim.wire.spdm.common import (
    CapabilityFlags,
    MeasurementSummaryHashType,
    RequestCode,
    ResponseCode,
    SpdmContext,
    SpdmMessage,
    SpdmVersion,
    decode_spdm,
)
from sim.wire.spdm.key_exchange import KeyExchange, KeyExchangeRsp
from sim.wire.spdm.psk import PskExchange, PskExchangeRsp
from sim.wire.spdm.version import GetVersion, Version
from sim.wire.tdisp import decode_tdisp
from sim.wire.tlp import decode_tlp

KINDS = ("auto", "doe", "spdm", "secured", "ide_km", "tdisp", "tlp", "discovery-request", "discovery-response")

_HASHES = {"sha256": BaseHashAlgo.SHA_256, "sha384": BaseHashAlgo.SHA_384, "sha512": BaseHashAlgo.SHA_512}
_ASYMS = {
    "p256": (BaseAsymAlgo.ECDSA_P256, DheGroup.SECP_256_R1),
    "p384": (BaseAsymAlgo.ECDSA_P384, DheGroup.SECP_384_R1),
    "rsa2048": (BaseAsymAlgo.RSAPSS_2048, DheGroup.SECP_384_R1),
    "rsa3072": (BaseAsymAlgo.RSAPSS_3072, DheGroup.SECP_384_R1),
}


@dataclasses.dataclass
class Layer:
    """One decoded protocol layer: a title, its fields (name, rendered value) and nested layers."""

    title: str
    fields: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    children: list[Layer] = dataclasses.field(default_factory=list)

    def lines(self, indent: int = 0) -> list[str]:
        pad = "  " * indent
        out = [pad + self.title]
        out += [f"{pad}  {name} = {value}" for name, value in self.fields]
        for child in self.children:
            out += child.lines(indent + 1)
        return out


def parse_hex(text: str) -> bytes:
    """Hex with optional spaces, colons, commas or 0x prefixes; ValueError says what is wrong."""
    cleaned = re.sub(r"0x|[\s:,_-]", "", text, flags=re.IGNORECASE)
    bad = re.search(r"[^0-9a-fA-F]", cleaned)
    if bad:
        raise ValueError(f"not hex: character {bad.group()!r} at position {bad.start()} of the digits")
    if len(cleaned) % 2:
        raise ValueError(f"odd number of hex digits ({len(cleaned)})")
    if not cleaned:
        raise ValueError("no bytes given")
    return bytes.fromhex(cleaned)


def context_for(hash_name: str = "sha384", asym_name: str = "p384") -> SpdmContext:
    """An SPDM decoding context for the named negotiated algorithms."""
    try:
        hash_algo = _HASHES[hash_name]
        asym, dhe = _ASYMS[asym_name]
    except KeyError as exc:
        raise ValueError(f"unknown algorithm name {exc.args[0]!r}") from None
    return SpdmContext.for_algorithms(hash_algo, asym, dhe, asym)


# A request whose Param1 MeasurementSummaryHashType decides whether its response holds a summary hash of H bytes.
_SUMMARY_RESPONSE = {
    RequestCode.CHALLENGE: ResponseCode.CHALLENGE_AUTH,
    RequestCode.KEY_EXCHANGE: ResponseCode.KEY_EXCHANGE_RSP,
    RequestCode.PSK_EXCHANGE: ResponseCode.PSK_EXCHANGE_RSP,
}
_MEASURES = CapabilityFlags.MEAS_CAP_NO_SIG | CapabilityFlags.MEAS_CAP_SIG
_MAX_OUTSTANDING = 256  # requests a response may still answer; bounds a capture whose responses went missing


class Conversation:
    """Follows the plain-text SPDM exchanges of a capture so that each message decodes with its context.

    Some SPDM field sizes are carried by no message: H, S, D follow from ALGORITHMS; whether
    CHALLENGE_AUTH, KEY_EXCHANGE_RSP or PSK_EXCHANGE_RSP holds a measurement summary hash follows from
    the request's MeasurementSummaryHashType (and the responder's MEAS_CAP); whether ResponderVerifyData
    is in KEY_EXCHANGE_RSP follows from both CAPABILITIES (HANDSHAKE_IN_THE_CLEAR). GET_MEASUREMENTS
    needs nothing kept: MEASUREMENTS sizes its optional signature from its own length.

    A pcap of DOE objects has no addresses, so a capture of several devices interleaves their
    conversations. A response is therefore tried with the context of each outstanding request it may
    answer (oldest first), then with every algorithm set the capture negotiated; the layer says so when
    the first choice did not fit. ``hash_name`` / ``asym_name`` pin H, or S and D, over what ALGORITHMS
    said (the user's explicit ``--hash`` / ``--asym``). Secured records (DSP0277) cannot be opened without
    the session keys; what is kept of them is which session KEY_EXCHANGE set up, in which SPDM version.
    """

    def __init__(self, hash_name: str | None = None, asym_name: str | None = None) -> None:
        self._pins = context_for(hash_name or "sha384", asym_name or "p384")
        self._pin_hash = hash_name is not None
        self._pin_asym = asym_name is not None
        self.ctx = self._pins  # the context of the connection negotiated last (before any: the pins or defaults)
        self.version: int | None = None  # the SPDM version the requester chose (header of GET_CAPABILITIES on)
        self.offered_versions: tuple[int, ...] = ()  # what the last VERSION listed
        self.sessions: dict[int, int] = {}  # session ID -> SPDM version of the exchange that set it up
        self._negotiated: list[SpdmContext] = []  # each distinct algorithm context seen, newest first
        self._outstanding: dict[int, list[SpdmContext]] = {}  # response code -> contexts of requests, oldest first
        self._req_sessions: list[int] = []  # ReqSessionIDs of KEY_EXCHANGE / PSK_EXCHANGE not yet answered
        self._req_flags: CapabilityFlags | None = None
        self._rsp_flags: CapabilityFlags | None = None
        # DOE discovery request and response are one DW each and may read both ways; a mailbox answers one
        # object before it takes the next, so in a capture they alternate: this says which one is next.
        self.discovery_answer_due = False

    def _pinned(self, ctx: SpdmContext) -> SpdmContext:
        if self._pin_hash:
            ctx = ctx.with_(hash_size=self._pins.hash_size)
        if self._pin_asym:
            ctx = ctx.with_(sig_size=self._pins.sig_size, dhe_size=self._pins.dhe_size,
                            req_sig_size=self._pins.req_sig_size)
        return ctx

    def candidates(self, code: int) -> list[SpdmContext]:
        """The contexts to try for a message with this code, most likely first."""
        out = list(self._outstanding.get(code, ()))
        for ctx in [self.ctx, *self._negotiated]:
            if code in _SUMMARY_RESPONSE.values():
                out += [ctx.with_(meas_summary_size=0), ctx.with_(meas_summary_size=ctx.hash_size)]
            else:
                out.append(ctx.with_(meas_summary_size=0))
        return list(dict.fromkeys(out))

    def decode(self, data: bytes, *, allow_trailing: bool) -> tuple[SpdmMessage, str | None]:
        """Decode one SPDM message in this conversation and learn from it.

        Returns the message and, when it fitted only a later candidate, a note of the sizes used.
        A message that fits no candidate raises the DecodeError of the most likely one.
        """
        code = data[1] if len(data) >= 2 else -1
        cands = self.candidates(code)
        first: DecodeError | None = None
        for i, ctx in enumerate(cands):
            try:
                msg = decode_spdm(data, ctx, allow_trailing=allow_trailing)
            except DecodeError as exc:
                first = first or exc
                continue
            self._answered(code, ctx)
            self.observe(msg)
            note = None
            if i:
                note = (f"H={ctx.hash_size} S={ctx.sig_size} D={ctx.dhe_size} summary={ctx.meas_summary_size} "
                        "(guessed: the capture interleaves conversations, or lacks the request)")
            return msg, note
        assert first is not None  # there is always at least one candidate
        raise first

    def _answered(self, code: int, ctx: SpdmContext) -> None:
        pending = self._outstanding.get(code)
        if pending and ctx in pending:
            pending.remove(ctx)
        elif pending:  # it fitted another device's sizes: some outstanding request was answered, say the oldest
            pending.pop(0)

    def observe(self, msg: SpdmMessage) -> None:
        """Learn what ``msg`` fixes for the messages after it."""
        if isinstance(msg, GetVersion):  # a new connection: nothing negotiated yet
            self.ctx, self.version = self._pins, None
            self._req_flags = self._rsp_flags = None
        elif isinstance(msg, Version):
            self.offered_versions = msg.spdm_versions
        elif isinstance(msg, GetCapabilities):
            self.version = msg.version
            self._req_flags = CapabilityFlags(msg.flags or 0)
        elif isinstance(msg, Capabilities):
            self._rsp_flags = CapabilityFlags(msg.flags or 0)
        elif isinstance(msg, Algorithms):
            both = (self._req_flags or CapabilityFlags(0)) & (self._rsp_flags or CapabilityFlags(0))
            try:
                ctx = self._pinned(msg.to_context(handshake_in_the_clear=bool(
                    both & CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP)))
            except ValueError:  # no single algorithm selected: keep what was known
                return
            self.ctx = ctx
            self._negotiated = [ctx, *(c for c in self._negotiated if c != ctx)]
        if isinstance(msg, Challenge | KeyExchange | PskExchange):
            measures = self._rsp_flags is None or bool(self._rsp_flags & _MEASURES)
            summary = self.ctx.hash_size if measures and msg.hash_type != MeasurementSummaryHashType.NONE else 0
            pending = self._outstanding.setdefault(_SUMMARY_RESPONSE[RequestCode(msg.CODE)], [])
            pending.append(self.ctx.with_(meas_summary_size=summary))
            del pending[:-_MAX_OUTSTANDING]
        if isinstance(msg, KeyExchange | PskExchange):
            self._req_sessions = [*self._req_sessions, msg.req_session_id][-_MAX_OUTSTANDING:]
        elif isinstance(msg, KeyExchangeRsp | PskExchangeRsp) and self._req_sessions:
            self.sessions[session_id(self._req_sessions.pop(0), msg.rsp_session_id)] = msg.version


def _fields(msg: Message) -> list[tuple[str, str]]:
    return [(name, format_value(value)) for name, value in msg.describe()]


def _title(msg: Message) -> str:
    summary = getattr(msg, "summary", None)
    return summary() if callable(summary) else type(msg).__name__


def _dotted(version: int) -> str:
    return SpdmVersion(version).dotted if version in SpdmVersion._value2member_map_ else f"0x{version:02x}"


def _spdm_layer(data: bytes, ctx: SpdmContext, *, padded: bool, conversation: Conversation | None = None) -> Layer:
    note = None
    if conversation is None:
        msg = decode_spdm(data, ctx, allow_trailing=padded)
    else:
        msg, note = conversation.decode(data, allow_trailing=padded)
    layer = Layer(f"SPDM {_dotted(msg.version)} {_title(msg)}", _fields(msg))
    if note:
        layer.fields.append(("(sizes)", note))
    layer.children += _vendor_children(msg)
    return layer


def _secured_layer(data: bytes, conversation: Conversation | None) -> Layer:
    """A DSP0277 record as framed: its plaintext needs the session keys, which no capture holds."""
    rec = SecuredRecord.decode(data)
    layer = Layer(_title(rec) + " (encrypted)", _fields(rec))
    if conversation is not None:
        version = conversation.sessions.get(rec.session_id)
        layer.fields.append(("(session)", "not set up in this capture" if version is None else
                             f"SPDM {_dotted(version)}, set up in this capture; no keys to open it"))
    return layer


def _vendor_children(msg: SpdmMessage) -> list[Layer]:
    standard_id = getattr(msg, "standard_id", None)
    vendor_id = getattr(msg, "vendor_id", None)
    payload = getattr(msg, "payload", None)
    if standard_id is None or vendor_id is None or payload is None or not is_pcisig_envelope(standard_id, vendor_id):
        return []
    try:
        inner = decode_pcisig_payload(payload)
    except DecodeError as exc:
        return [Layer(f"PCI-SIG payload does not decode: {exc}")]
    return [Layer(_title(inner), _fields(inner))]


def _discovery_layers(payload: bytes, conversation: Conversation | None = None) -> list[Layer]:
    """A discovery payload reads both ways (request and response are one DW each). In a conversation it is
    the request when no request is waiting for its answer, else that answer; alone, show what fits."""
    if conversation is not None:
        cls = DoeDiscoveryResponse if conversation.discovery_answer_due else DoeDiscoveryRequest
        try:
            msg = cls.decode(payload[:4])
        except DecodeError:
            pass
        else:
            conversation.discovery_answer_due = cls is DoeDiscoveryRequest
            return [Layer(f"{'request' if cls is DoeDiscoveryRequest else 'response'}: {_title(msg)}",
                          _fields(msg))]
    layers: list[Layer] = []
    plausible = {
        DoeDiscoveryRequest: payload[1:2] in (b"\x00", b"\x02") and payload[2:4] == b"\x00\x00",
        DoeDiscoveryResponse: payload[:2] not in (b"", b"\x00\x00", b"\x00"),
    }
    for cls, fits in plausible.items():
        if not fits:
            continue
        try:
            msg = cls.decode(payload[:4])
        except DecodeError:
            continue
        layers.append(Layer(f"as {'request' if cls is DoeDiscoveryRequest else 'response'}: {_title(msg)}",
                            _fields(msg)))
    if not layers:
        raise DecodeError("DoeDiscovery", "payload", HEADER_BYTES, "neither a discovery request nor a response")
    return layers


def _doe_layer(data: bytes, ctx: SpdmContext, conversation: Conversation | None = None) -> Layer:
    obj = DoeObject.decode(data)
    layer = Layer(_title(obj), _fields(obj))
    kind = obj.object_type
    try:
        if kind is DoeObjectType.DISCOVERY:
            layer.children += _discovery_layers(obj.payload, conversation)
        elif kind is DoeObjectType.SPDM:
            layer.children.append(_spdm_layer(obj.payload, ctx, padded=True, conversation=conversation))
        elif kind is DoeObjectType.SECURED_SPDM:
            layer.children.append(_secured_layer(obj.payload, conversation))
    except DecodeError as exc:
        raise DecodeError(exc.message, exc.field, exc.offset + HEADER_BYTES, exc.reason) from None
    return layer


def _looks_like_doe(data: bytes) -> bool:
    if len(data) < HEADER_BYTES or int.from_bytes(data[:2], "little") != PCI_SIG_VENDOR_ID or data[3] != 0:
        return False
    try:
        return doe_length_dw(data) * 4 == len(data)
    except DecodeError:
        return False


def _looks_like_tlp(data: bytes) -> bool:
    """A TLP (or IDE TLP) whose header decodes and whose length field accounts for every byte."""
    try:
        decode_tlp(data)
    except (DecodeError, ValueError):
        return False
    return True


def dissect(data: bytes, kind: str = "auto", *, hash_name: str = "sha384", asym_name: str = "p384",
            conversation: Conversation | None = None) -> Layer:
    """Decode ``data`` as ``kind`` (or guess it); DecodeError names the field and byte offset.

    With a ``conversation`` (one per capture, fed its objects in order), SPDM messages are sized by
    what the capture negotiated and requested so far, and the names passed to it override; without
    one, by ``hash_name`` / ``asym_name`` and no measurement summary hash.
    """
    ctx = context_for(hash_name, asym_name)
    if kind == "auto":
        if _looks_like_doe(data):
            kind = "doe"
        elif data and data[0] in SpdmVersion._value2member_map_:
            kind = "spdm"
        elif _looks_like_tlp(data):
            kind = "tlp"
        else:
            raise DecodeError("input", "(first bytes)", 0,
                              "neither a DOE object (vendor 0x0001, length matching), an SPDM message "
                              "(version byte 0x10-0x14) nor a TLP (header and length matching); say what it is "
                              "with --as")
    if kind == "doe":
        return _doe_layer(data, ctx, conversation)
    if kind == "spdm":
        return _spdm_layer(data, ctx, padded=False, conversation=conversation)
    if kind == "secured":
        return _secured_layer(data, conversation)
    if kind == "ide_km":
        msg: Message = decode_ide_km(data)
        return Layer("IDE_KM " + _title(msg), _fields(msg))
    if kind == "tdisp":
        msg = decode_tdisp(data)
        return Layer(_title(msg), _fields(msg))
    if kind == "tlp":  # as trace.jsonl records link traffic: a plain TLP, or an IDE TLP (prefix 0x92)
        tlp = decode_tlp(data)
        return Layer(_title(tlp), _fields(tlp))
    if kind == "discovery-request":
        req = DoeDiscoveryRequest.decode(data)
        return Layer(_title(req), _fields(req))
    if kind == "discovery-response":
        rsp = DoeDiscoveryResponse.decode(data)
        return Layer(_title(rsp), _fields(rsp))
    raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
