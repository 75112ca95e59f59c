"""One-line decoded summaries of the DOE objects crossing the socket, for ``serve-device``'s log."""

from __future__ import annotations

from sim.wire.codec import DecodeError
from sim.wire.dissect import Layer, dissect
from sim.wire.doe import DoeDiscoveryRequest, DoeDiscoveryResponse, DoeObject, DoeObjectType
from sim.wire.spdm import decode_spdm
from sim.wire.spdm.algorithms import Algorithms
from sim.wire.spdm.capabilities import Capabilities, GetCapabilities
from sim.wire.spdm.challenge import Challenge
from sim.wire.spdm.common import CapabilityFlags, MeasurementSummaryHashType, SpdmContext, SpdmMessage
from sim.wire.spdm.key_exchange import KeyExchange
from sim.wire.spdm.version import GetVersion


def _titles(layer: Layer) -> list[str]:
    """The titles of a dissected layer and all its descendants, outermost first."""
    out = [layer.title]
    for child in layer.children:
        out += _titles(child)
    return out


class ObjectDescriber:
    """One-line decoded summaries of DOE objects, sized by what the connection negotiated.

    Some SPDM fields have sizes the message does not carry (H, S, D from ALGORITHMS; whether a
    CHALLENGE_AUTH or KEY_EXCHANGE_RSP holds a measurement summary hash, from the request;
    whether ResponderVerifyData is in KEY_EXCHANGE_RSP, from both CAPABILITIES). This follows the
    plain-text exchanges to keep that context, decodes SPDM with it, and otherwise uses the
    dissector's summaries (``sim.wire.dissect``). Secured records stay ciphertext here.
    """

    def __init__(self) -> None:
        self.ctx = SpdmContext()
        self._req_flags = CapabilityFlags(0)
        self._rsp_flags = CapabilityFlags(0)
        self._summary_requested = False

    def _observe(self, msg: SpdmMessage) -> None:
        if isinstance(msg, GetVersion):
            self.ctx = SpdmContext()
        elif isinstance(msg, GetCapabilities) and msg.flags is not None:
            self._req_flags = CapabilityFlags(msg.flags)
        elif isinstance(msg, Capabilities) and msg.flags is not None:
            self._rsp_flags = CapabilityFlags(msg.flags)
        elif isinstance(msg, Algorithms):
            clear = bool(self._req_flags & self._rsp_flags & CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP)
            try:
                self.ctx = msg.to_context(handshake_in_the_clear=clear)
            except ValueError:
                pass
        elif isinstance(msg, Challenge | KeyExchange):
            self._summary_requested = msg.hash_type != MeasurementSummaryHashType.NONE
            self.ctx = self.ctx.with_(meas_summary_size=self.ctx.hash_size if self._summary_requested else 0)

    def _spdm(self, obj: DoeObject) -> str | None:
        try:
            msg = decode_spdm(obj.payload, self.ctx, allow_trailing=True)
        except DecodeError:
            return None
        self._observe(msg)
        summary = getattr(msg, "summary", None)
        title = summary() if callable(summary) else type(msg).__name__
        return f"{obj.summary()} | SPDM {msg.version >> 4}.{msg.version & 0xF} {title}"

    def describe(self, data: bytes, *, request: bool) -> str:
        try:
            obj = DoeObject.decode(data)
        except DecodeError as exc:
            return f"{len(data)} bytes, not a DOE object ({exc})"
        try:
            if obj.object_type is DoeObjectType.DISCOVERY:
                cls = DoeDiscoveryRequest if request else DoeDiscoveryResponse
                return cls.decode(obj.payload[:4]).summary()
            if obj.object_type is DoeObjectType.SPDM:
                line = self._spdm(obj)
                if line is not None:
                    return line
            layer = dissect(data, "doe")
        except DecodeError as exc:
            head = obj.payload[:4].hex(" ")
            return f"{obj.summary()} | {head} ... (does not decode: {exc})"
        return " | ".join(t for t in _titles(layer) if t)
