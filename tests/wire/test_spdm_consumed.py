"""Bytes consumed by a decode equal the size of the message's re-encoding, for every SPDM message.

The requester and the responder learn an SPDM message's exact size (what enters a transcript,
without DOE pad bytes) from :func:`sim.wire.spdm.common.decode_spdm_sized` instead of encoding the
decoded message again. That is the same number exactly when, for every message that decodes,
``len(msg.encode(ctx)) == bytes consumed`` and the encode does not fail; checked here on the
messages of the attest flow, on those messages mutated, and on random bodies behind a valid
header for every SPDM message class, in every decoding context the protocol uses.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.bench.protocol import FlowRig
from sim.protocols.flow import Outbound
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeObjectType
from sim.wire.spdm.common import SPDM_MESSAGES, SpdmContext, decode_spdm, decode_spdm_sized

CONTEXTS = (  # before negotiation, P-384/SHA-384 and P-256/SHA-256 (summary hash, handshake in the clear), P-521
    SpdmContext(), SpdmContext(48, 96, 96, 0), SpdmContext(48, 96, 96, 0, 48), SpdmContext(48, 96, 96, 0, 0, True),
    SpdmContext(32, 64, 64, 0), SpdmContext(32, 64, 64, 64, 32, True), SpdmContext(64, 132, 132, 0),
)


def _flow_messages() -> list[bytes]:
    """The plain SPDM requests and responses of the attest flow at 1.3 and 1.2 (DOE padding included)."""
    out: list[bytes] = []
    for version in (None, "1.2"):
        rig = FlowRig.build(version=version)
        send = rig.transport

        def tap(msg: Outbound, send: Any = send) -> bytes | None:
            answer = send(msg)
            if msg.object_type == DoeObjectType.SPDM:
                out.append(bytes(msg.payload))
                if answer:
                    out.append(bytes(answer))
            elif msg.plaintext is not None:
                out.append(bytes(msg.plaintext))
            return answer

        rig.transport = tap  # type: ignore[method-assign]
        rig.run()
        assert rig.ok
    return out


FLOW_MESSAGES = _flow_messages()


def _check(data: bytes, ctx: SpdmContext) -> bool:
    """The property for one input; True when the input decoded at all (strictly or with padding)."""
    decoded = False
    for allow_trailing in (False, True):
        try:
            msg, consumed = decode_spdm_sized(data, ctx, allow_trailing=allow_trailing)
        except DecodeError:
            with pytest.raises(DecodeError):
                decode_spdm(data, ctx, allow_trailing=allow_trailing)
            continue
        decoded = True
        assert msg == decode_spdm(data, ctx, allow_trailing=allow_trailing)
        assert len(msg.encode(ctx)) == consumed <= len(data)  # the bytes may differ: reserved fields re-encode as 0
        if not allow_trailing:
            assert consumed == len(data)
    return decoded


def test_flow_messages_consume_exactly_their_encoding() -> None:
    assert len(FLOW_MESSAGES) > 40
    assert sum(_check(m, c) for m in FLOW_MESSAGES for c in CONTEXTS) >= len(FLOW_MESSAGES)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(FLOW_MESSAGES) - 1), at=st.integers(0, 4096), value=st.integers(0, 255),
       op=st.sampled_from(["set", "flip", "truncate", "append", "insert"]), ctx=st.sampled_from(CONTEXTS))
def test_mutated_flow_messages(index: int, at: int, value: int, op: str, ctx: SpdmContext) -> None:
    data = FLOW_MESSAGES[index]
    i = at % len(data)
    if op == "set":
        data = data[:i] + bytes([value]) + data[i + 1:]
    elif op == "flip":
        data = data[:i] + bytes([data[i] ^ (1 << (value % 8))]) + data[i + 1:]
    elif op == "truncate":
        data = data[:i]
    elif op == "insert":
        data = data[:i] + bytes([value]) + data[i:]
    else:
        data = data + bytes([value]) * (1 + at % 4)
    _check(data, ctx)


@settings(max_examples=300, deadline=None)
@given(code=st.sampled_from(sorted(SPDM_MESSAGES)), version=st.sampled_from([0x10, 0x11, 0x12, 0x13]),
       body=st.binary(max_size=200), ctx=st.sampled_from(CONTEXTS))
def test_random_bodies_of_every_spdm_message(code: int, version: int, body: bytes, ctx: SpdmContext) -> None:
    _check(bytes([version, code]) + body, ctx)


def test_sized_decode_reports_padding_separately() -> None:
    request = next(m for m in FLOW_MESSAGES if m[1] == 0x84)  # GET_VERSION
    msg, consumed = decode_spdm_sized(request + b"\0\0\0", SpdmContext(), allow_trailing=True)
    assert consumed == len(request) == len(msg.encode())
    with pytest.raises(DecodeError):
        decode_spdm_sized(request + b"\0", SpdmContext())
