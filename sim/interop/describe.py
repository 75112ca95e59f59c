"""One-line decoded summaries of the DOE objects crossing the socket, for ``serve-device``'s log."""

from __future__ import annotations

from sim.wire.codec import DecodeError
from sim.wire.dissect import Conversation, Layer, dissect
from sim.wire.doe import DoeDiscoveryRequest, DoeDiscoveryResponse, DoeObject, DoeObjectType


def _titles(layer: Layer) -> list[str]:
    """The titles of a dissected layer and all its descendants, outermost first."""
    out = [layer.title]
    for child in layer.children:
        out += _titles(child)
    return out


class ObjectDescriber:
    """One-line decoded summaries of DOE objects, sized by what the connection negotiated.

    Some SPDM field sizes are carried by no message; :class:`~sim.wire.dissect.Conversation` follows
    the plain-text exchanges to know them. Other objects get the dissector's summaries. Secured
    records stay ciphertext here.
    """

    def __init__(self) -> None:
        self.conversation = Conversation()

    def _spdm(self, obj: DoeObject) -> str | None:
        try:
            msg, _ = self.conversation.decode(obj.payload, allow_trailing=True)
        except DecodeError:
            return None
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
