"""The hook through which every secret the crypto layer creates is reported.

The engine's exposure tracker implements :class:`SecretSink`; it then checks every payload
that crosses a boundary against the registered values (in each byte order they travel in).
Protocol code never needs to know whether anyone is listening: with no sink, nothing happens.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Protocol


class SecretClass(enum.StrEnum):
    """Kinds of secrets whose exposure the reports compare across trust models."""

    DEVICE_IDENTITY_KEY = "device-identity-key"     # a responder's (or requester's) signing key
    DHE_PRIVATE = "dhe-private"                     # an ephemeral ECDHE private scalar
    DHE_SHARED_SECRET = "dhe-shared-secret"         # the ECDHE shared secret of an SPDM session
    PSK = "psk"
    SPDM_SESSION_SECRET = "spdm-session-secret"     # handshake/master/app secrets, finished keys
    SPDM_SESSION_KEY = "spdm-session-key"           # AEAD keys and IVs of a session direction
    IDE_KEY = "ide-key"                             # an IDE sub-stream key (and its IFV)
    TDISP_NONCE = "tdisp-nonce"                     # START_INTERFACE nonce issued at LOCK
    GUEST_CHANNEL_KEY = "guest-channel-key"         # per-guest AES-256-GCM key of the guest<->firmware channel


@dataclasses.dataclass(frozen=True)
class SecretRecord:
    label: str               # e.g. "session 0xfffdfffe rsp app key"
    secret_class: SecretClass
    owner: str               # the component that created it, e.g. "dev0.dsm"
    value: bytes


class SecretSink(Protocol):
    def register(self, record: SecretRecord) -> None: ...


class SecretList:
    """A sink that keeps every record in order; what tests and the CLI use."""

    def __init__(self) -> None:
        self.records: list[SecretRecord] = []

    def register(self, record: SecretRecord) -> None:
        self.records.append(record)

    def by_class(self, secret_class: SecretClass) -> list[SecretRecord]:
        return [r for r in self.records if r.secret_class is secret_class]
