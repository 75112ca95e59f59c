"""PSK_EXCHANGE (0xE6), PSK_EXCHANGE_RSP (0x66), PSK_FINISH (0xE7), PSK_FINISH_RSP (0x67) (PROTOCOLS.md §2.11).

The pre-shared-key handshake: no certificates and no signatures, so the only context sizes are
the measurement summary hash (``meas_summary_size``) and VerifyData (H). PSK_EXCHANGE_RSP always
carries ResponderVerifyData. TH1 ends before that field (:meth:`PskExchangeRsp.verify_part`).
"""

from __future__ import annotations

import dataclasses

from sim.wire.codec import Bytes, LengthOf, Reserved, u8, u16
from sim.wire.secured import session_id
from sim.wire.spdm.common import (
    DEFAULT_CONTEXT,
    MAX_OPAQUE_DATA_SIZE,
    MeasurementSummaryHashType,
    RequestCode,
    ResponseCode,
    SpdmContext,
    SpdmMessage,
    SpdmVersion,
    before,
    gate_field,
    header,
    since,
)
from sim.wire.spdm.key_exchange import SessionPolicy

HEADER_SIZE = 4


def _ctx(ctx: SpdmContext | None) -> SpdmContext:
    return DEFAULT_CONTEXT if ctx is None else ctx


@dataclasses.dataclass(frozen=True)
class PskExchange(SpdmMessage):
    """Requester: PSK hint, its context (nonce) and opaque data; SessionPolicy in param2 from SPDM 1.2."""

    CODE = RequestCode.PSK_EXCHANGE
    NAME = "PSK_EXCHANGE"
    LAYOUT = header(CODE, u8("hash_type", MeasurementSummaryHashType))[:3] + (
        u8("session_policy", SessionPolicy, when=since(SpdmVersion.V12)),
        Reserved(1, "param2", when=before(SpdmVersion.V12)),
        u16("req_session_id"),
        LengthOf("psk_hint_length", 2, "psk_hint"),
        LengthOf("requester_context_length", 2, "requester_context"),
        LengthOf("opaque_length", 2, "opaque_data"),
        Bytes("psk_hint", "psk_hint_length"),
        Bytes("requester_context", "requester_context_length"),
        Bytes("opaque_data", "opaque_length", max_size=MAX_OPAQUE_DATA_SIZE),
    )
    version: int
    hash_type: MeasurementSummaryHashType
    req_session_id: int
    psk_hint: bytes
    requester_context: bytes
    opaque_data: bytes = b""
    session_policy: SessionPolicy | None = None

    def __post_init__(self) -> None:
        gate_field(self, "session_policy", self.version >= SpdmVersion.V12, SessionPolicy(0))

    def summary(self) -> str:
        return (f"PSK_EXCHANGE req_session=0x{self.req_session_id:04x} hint={self.psk_hint.hex() or '-'} "
                f"meas_hash={self.hash_type.name}")


@dataclasses.dataclass(frozen=True)
class PskExchangeRsp(SpdmMessage):
    """Responder: its context, measurement summary, opaque data and ResponderVerifyData (always present)."""

    CODE = ResponseCode.PSK_EXCHANGE_RSP
    NAME = "PSK_EXCHANGE_RSP"
    LAYOUT = header(CODE, u8("heartbeat_period"), Reserved(1, "param2")) + (
        u16("rsp_session_id"),
        Reserved(2),
        LengthOf("responder_context_length", 2, "responder_context"),
        LengthOf("opaque_length", 2, "opaque_data"),
        Bytes("measurement_summary_hash", "meas_summary_size"),
        Bytes("responder_context", "responder_context_length"),
        Bytes("opaque_data", "opaque_length", max_size=MAX_OPAQUE_DATA_SIZE),
        Bytes("responder_verify_data", "hash_size"),
    )
    version: int
    heartbeat_period: int
    rsp_session_id: int
    measurement_summary_hash: bytes
    responder_context: bytes
    opaque_data: bytes
    responder_verify_data: bytes

    def verify_part(self, ctx: SpdmContext | None = None) -> bytes:
        """Everything but ResponderVerifyData: the TH1 transcript point of the PSK flow (§3.2)."""
        ctx = _ctx(ctx)
        return self.encode(ctx)[: -ctx.hash_size or None]

    th1_part = verify_part

    def session_id(self, req_session_id: int) -> int:
        return session_id(req_session_id, self.rsp_session_id)

    def summary(self) -> str:
        return f"PSK_EXCHANGE_RSP rsp_session=0x{self.rsp_session_id:04x} heartbeat={self.heartbeat_period}s"


@dataclasses.dataclass(frozen=True)
class PskFinish(SpdmMessage):
    """Requester's key confirmation: RequesterVerifyData (H) over the transcript up to its own header."""

    CODE = RequestCode.PSK_FINISH
    NAME = "PSK_FINISH"
    LAYOUT = header(CODE, Reserved(1, "param1"), Reserved(1, "param2")) + (
        Bytes("requester_verify_data", "hash_size"),
    )
    version: int
    requester_verify_data: bytes

    def verify_part(self, ctx: SpdmContext | None = None) -> bytes:
        """The PSK_FINISH header: what RequesterVerifyData covers."""
        return self.encode(ctx)[:HEADER_SIZE]

    def summary(self) -> str:
        return "PSK_FINISH"


@dataclasses.dataclass(frozen=True)
class PskFinishRsp(SpdmMessage):
    """The bare header: the responder accepted PSK_FINISH and both sides switch to data keys."""

    CODE = ResponseCode.PSK_FINISH_RSP
    NAME = "PSK_FINISH_RSP"
    LAYOUT = header(CODE, Reserved(1, "param1"), Reserved(1, "param2"))
    version: int

    def summary(self) -> str:
        return "PSK_FINISH_RSP"
