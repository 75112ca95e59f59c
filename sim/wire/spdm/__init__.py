"""SPDM messages (DSP0274 1.0-1.3). Importing the package registers every message with ``decode_spdm``."""

from sim.wire.spdm import (  # noqa: F401  (imported for their registration side effect)
    algorithms,
    capabilities,
    certificates,
    challenge,
    chunk,
    common,
    encapsulated,
    error,
    finish,
    key_exchange,
    measurements,
    opaque,
    psk,
    session,
    vendor,
    version,
)
from sim.wire.spdm.common import SPDM_MESSAGES, SpdmContext, SpdmMessage, decode_spdm

__all__ = ["SPDM_MESSAGES", "SpdmContext", "SpdmMessage", "decode_spdm"]
