"""In-session control messages, SPDM 1.1+ (PROTOCOLS.md §2.11): HEARTBEAT, KEY_UPDATE, END_SESSION.

All are header-only; their meaning is in param1/param2. They travel inside secured messages.
"""

from __future__ import annotations

import dataclasses
import enum

from sim.wire.codec import Reserved, format_value, u8
from sim.wire.spdm.common import RequestCode, ResponseCode, SpdmMessage, header


class KeyUpdateOperation(enum.IntEnum):
    """KEY_UPDATE / KEY_UPDATE_ACK param1."""

    UPDATE_KEY = 1  # requester-direction key only
    UPDATE_ALL_KEYS = 2  # both directions
    VERIFY_NEW_KEY = 3  # sent under the new key to confirm it


class EndSessionAttributes(enum.IntFlag):
    """END_SESSION param1."""

    # Set: the responder clears the negotiated state (VCA) kept for this session; clear: it may keep it.
    PRESERVE_NEGOTIATED_STATE_CLEAR = 0x1


_RESERVED_PARAMS = (Reserved(1, "param1"), Reserved(1, "param2"))


@dataclasses.dataclass(frozen=True)
class Heartbeat(SpdmMessage):
    """Keeps a session alive within its HeartbeatPeriod."""

    CODE = RequestCode.HEARTBEAT
    NAME = "HEARTBEAT"
    LAYOUT = header(CODE, *_RESERVED_PARAMS)
    version: int

    def summary(self) -> str:
        return "HEARTBEAT"


@dataclasses.dataclass(frozen=True)
class HeartbeatAck(SpdmMessage):
    CODE = ResponseCode.HEARTBEAT_ACK
    NAME = "HEARTBEAT_ACK"
    LAYOUT = header(CODE, *_RESERVED_PARAMS)
    version: int

    def summary(self) -> str:
        return "HEARTBEAT_ACK"


@dataclasses.dataclass(frozen=True)
class KeyUpdate(SpdmMessage):
    """Asks for a key update; ``tag`` is a random byte that the ACK echoes to pair the two."""

    CODE = RequestCode.KEY_UPDATE
    NAME = "KEY_UPDATE"
    LAYOUT = header(CODE, u8("operation", KeyUpdateOperation), u8("tag"))
    version: int
    operation: KeyUpdateOperation
    tag: int

    def summary(self) -> str:
        return f"KEY_UPDATE {self.operation.name} tag=0x{self.tag:02x}"


@dataclasses.dataclass(frozen=True)
class KeyUpdateAck(SpdmMessage):
    """Echoes the operation and tag of the KEY_UPDATE it answers."""

    CODE = ResponseCode.KEY_UPDATE_ACK
    NAME = "KEY_UPDATE_ACK"
    LAYOUT = header(CODE, u8("operation", KeyUpdateOperation), u8("tag"))
    version: int
    operation: KeyUpdateOperation
    tag: int

    def summary(self) -> str:
        return f"KEY_UPDATE_ACK {self.operation.name} tag=0x{self.tag:02x}"


@dataclasses.dataclass(frozen=True)
class EndSession(SpdmMessage):
    CODE = RequestCode.END_SESSION
    NAME = "END_SESSION"
    LAYOUT = header(CODE, u8("attributes", EndSessionAttributes), Reserved(1, "param2"))
    version: int
    attributes: EndSessionAttributes = EndSessionAttributes(0)

    @property
    def clear_negotiated_state(self) -> bool:
        return bool(self.attributes & EndSessionAttributes.PRESERVE_NEGOTIATED_STATE_CLEAR)

    def summary(self) -> str:
        return "END_SESSION" + (f" attributes={format_value(self.attributes)}" if self.attributes else "")


@dataclasses.dataclass(frozen=True)
class EndSessionAck(SpdmMessage):
    CODE = ResponseCode.END_SESSION_ACK
    NAME = "END_SESSION_ACK"
    LAYOUT = header(CODE, *_RESERVED_PARAMS)
    version: int

    def summary(self) -> str:
        return "END_SESSION_ACK"
