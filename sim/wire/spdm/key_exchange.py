"""KEY_EXCHANGE (0xE4) and KEY_EXCHANGE_RSP (0x64), SPDM 1.1+ (PROTOCOLS.md §2.10).

Sizes come from the negotiated algorithms in :class:`SpdmContext`: ExchangeData is D bytes,
MeasurementSummaryHash is ``meas_summary_size`` (H or 0, decided by the request's param1),
Signature is S and ResponderVerifyData is H, absent when handshake-in-the-clear is negotiated.
The transcript needs the response cut at two points (§3.2), given by :meth:`KeyExchangeRsp.signed_part`
and :meth:`KeyExchangeRsp.verify_part`.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from sim.wire.codec import Bits, Bytes, EncodeError, LengthOf, Reserved, format_value, u8, u16
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

RANDOM_DATA_SIZE = 32
HEADER_SIZE = 4


class SessionPolicy(enum.IntFlag):
    """KEY_EXCHANGE byte 6 / PSK_EXCHANGE param2 (SPDM 1.2+; reserved in 1.1)."""

    TERMINATION_POLICY = 0x1  # keep the session across a runtime firmware update
    EVENT_ALL_POLICY = 0x2  # 1.3: subscribe the session to all events


class MutAuthRequested(enum.IntFlag):
    """KEY_EXCHANGE_RSP byte 6: whether and how the responder asks for mutual authentication."""

    REQUESTED = 0x1
    WITH_ENCAP_REQUEST = 0x2
    WITH_GET_DIGESTS = 0x4


def _ctx(ctx: SpdmContext | None) -> SpdmContext:
    return DEFAULT_CONTEXT if ctx is None else ctx


@dataclasses.dataclass(frozen=True)
class KeyExchange(SpdmMessage):
    """The requester's half of the DHE exchange; SessionPolicy exists from SPDM 1.2 on (None before)."""

    CODE = RequestCode.KEY_EXCHANGE
    NAME = "KEY_EXCHANGE"
    LAYOUT = header(CODE, u8("hash_type", MeasurementSummaryHashType), u8("slot_id")) + (
        u16("req_session_id"),
        u8("session_policy", SessionPolicy, when=since(SpdmVersion.V12)),
        Reserved(1, "session_policy", when=before(SpdmVersion.V12)),
        Reserved(1),
        Bytes("random_data", RANDOM_DATA_SIZE),
        Bytes("exchange_data", "dhe_size"),
        LengthOf("opaque_length", 2, "opaque_data"),
        Bytes("opaque_data", "opaque_length", max_size=MAX_OPAQUE_DATA_SIZE),
    )
    version: int
    hash_type: MeasurementSummaryHashType
    slot_id: int
    req_session_id: int
    random_data: bytes
    exchange_data: bytes
    opaque_data: bytes = b""
    session_policy: SessionPolicy | None = None

    def __post_init__(self) -> None:
        # 1.2+: defaults to no policy bits; 1.1: must stay None (a zero value is normalised to None)
        gate_field(self, "session_policy", self.version >= SpdmVersion.V12, SessionPolicy(0))

    def summary(self) -> str:
        return (f"KEY_EXCHANGE req_session=0x{self.req_session_id:04x} slot={self.slot_id} "
                f"meas_hash={self.hash_type.name}")


@dataclasses.dataclass(frozen=True)
class KeyExchangeRsp(SpdmMessage):
    """The responder's half: its DHE value, signature and (unless in the clear) ResponderVerifyData."""

    CODE = ResponseCode.KEY_EXCHANGE_RSP
    NAME = "KEY_EXCHANGE_RSP"
    LAYOUT = header(CODE, u8("heartbeat_period"), Reserved(1, "param2")) + (
        u16("rsp_session_id"),
        u8("mut_auth_requested", MutAuthRequested),
        Bits("req_slot_id_param", 1, [("req_slot_id", 0, 4, None)]),
        Bytes("random_data", RANDOM_DATA_SIZE),
        Bytes("exchange_data", "dhe_size"),
        Bytes("measurement_summary_hash", "meas_summary_size"),
        LengthOf("opaque_length", 2, "opaque_data"),
        Bytes("opaque_data", "opaque_length", max_size=MAX_OPAQUE_DATA_SIZE),
        Bytes("signature", "sig_size"),
        Bytes("responder_verify_data", "hash_size", when=lambda v, ctx: not ctx.handshake_in_the_clear),
    )
    version: int
    heartbeat_period: int
    rsp_session_id: int
    mut_auth_requested: MutAuthRequested
    req_slot_id: int
    random_data: bytes
    exchange_data: bytes
    measurement_summary_hash: bytes
    opaque_data: bytes
    signature: bytes
    responder_verify_data: bytes | None = None

    def encode(self, ctx: Any = None) -> bytes:
        ctx = _ctx(ctx)
        if (self.responder_verify_data is None) != ctx.handshake_in_the_clear:
            raise EncodeError("ResponderVerifyData must be present exactly when the handshake is not in the clear")
        return super().encode(ctx)

    def signed_part(self, ctx: SpdmContext | None = None) -> bytes:
        """The bytes up to the end of OpaqueData: what the responder's signature covers (§3.2)."""
        ctx = _ctx(ctx)
        return self.verify_part(ctx)[: -ctx.sig_size or None]

    def verify_part(self, ctx: SpdmContext | None = None) -> bytes:
        """The bytes including Signature but not ResponderVerifyData: the TH1 transcript point (§3.2)."""
        ctx = _ctx(ctx)
        full = self.encode(ctx)
        return full if ctx.handshake_in_the_clear else full[: -ctx.hash_size or None]

    th1_part = verify_part

    def session_id(self, req_session_id: int) -> int:
        return session_id(req_session_id, self.rsp_session_id)

    def summary(self) -> str:
        mut = f" mut_auth={format_value(self.mut_auth_requested)}" if self.mut_auth_requested else ""
        return (f"KEY_EXCHANGE_RSP rsp_session=0x{self.rsp_session_id:04x} "
                f"heartbeat={self.heartbeat_period}s{mut}")
