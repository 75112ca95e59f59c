"""Fat GUEST_REQUESTs travel sealed on the guest channel: the VMM relays ciphertext it cannot rewrite."""

from __future__ import annotations

import dataclasses

from sim.crypto.secrets import SecretClass
from sim.engine.exposure import Exposure
from sim.engine.runner import SimGen
from sim.engine.trace import Channel
from sim.firmware.commands import (
    FwCommandId,
    FwFrame,
    FwStatus,
    GuestChannelMessage,
    GuestRequest,
    GuestRequestType,
    TdiInfo,
    decode_frame,
    request,
    response,
)
from sim.firmware.guest_channel import GuestChannelEnd
from sim.firmware.keyslot_service import GuestChannelEnd as ReExportedEnd
from sim.vmm.guest import Guest, GuestPolicy
from sim.wire.tdisp import TdiState
from tests.firmware.fw_bench import Bench, build
from tests.firmware.test_fat_tsm import connect_bind_accept, fw


def _answer_hook(b: Bench, change: object) -> list[bytes]:
    """Replace the VMM's view of the fat TSM's ``issue`` so ``change(frame, answer)`` rewrites answers."""
    real = b.vmm.firmware
    seen: list[bytes] = []

    class Carrier:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def issue(self, frame: bytes, *, caller: str = "host") -> SimGen[bytes]:
            seen.append(frame)
            answer = yield from real.issue(frame, caller=caller)
            return change(frame, answer)  # type: ignore[operator]

    b.vmm.firmware = Carrier()
    return seen


def test_launch_gives_a_fat_guest_a_channel_end() -> None:
    b = build("fat")
    assert GuestChannelEnd is ReExportedEnd          # one implementation serves both firmware models
    assert isinstance(b.guest.channel, GuestChannelEnd) and b.guest.channel.is_guest
    assert b.guest.guest_id == b.guest.channel.guest_id == 1
    exp = b.world.exposure.matrix()
    assert exp.get(SecretClass.GUEST_CHANNEL_KEY, "guest0") is Exposure.SAW_PLAINTEXT
    assert exp.get(SecretClass.GUEST_CHANNEL_KEY, "vmm") is Exposure.NEVER


def test_the_vmm_and_host_relay_only_sealed_frames() -> None:
    b = build("fat")
    assert b.run(connect_bind_accept(b)) is True
    assert b.guest.tdi("dev0").state is TdiState.RUN
    hops = [e for e in b.sink.on(Channel.FIRMWARE)
            if (e.source, e.destination) in {("guest0", "vmm"), ("vmm", "host"), ("host", "vmm"), ("vmm", "guest0")}]
    assert len(hops) == 8                                     # TDI_INFO and STATE_CHANGE, four hops each
    for e in hops:
        frame = decode_frame(e.data)
        assert frame.command is FwCommandId.GUEST_CHANNEL and isinstance(frame.body, GuestChannelMessage)
        assert e.secured_plaintext and e.secured_plaintext not in e.data
    answers = [decode_frame(e.secured_plaintext).body for e in hops if e.destination == "guest0"]
    info = next(a for a in answers if isinstance(a, TdiInfo))
    assert info.certificates and not any(info.certificates in e.data for e in hops)
    # the plain GUEST_REQUEST never crosses the VMM or the host
    assert not any(decode_frame(e.data).command is FwCommandId.GUEST_REQUEST for e in hops)


def test_a_plain_guest_request_from_the_host_is_refused() -> None:
    b = build("fat")

    def flow() -> SimGen[FwFrame]:
        yield from fw(b).connect("dev0")
        yield from b.vmm.bind_tdi("dev0")
        start = GuestRequest(b.guest.guest_id or 0, fw(b).handle_of("dev0") or 0, 0, GuestRequestType.STATE_CHANGE)
        return (yield from fw(b).host_call(start))

    got = b.run(flow())
    assert got.status is FwStatus.NOT_PERMITTED
    assert fw(b).device("dev0").tdis[0].state is TdiState.CONFIG_LOCKED   # nobody STARTed it


def test_an_altered_answer_is_not_accepted() -> None:
    b = build("fat")

    def flip(frame: bytes, answer: bytes) -> bytes:
        body = decode_frame(answer).body
        if isinstance(body, GuestChannelMessage) and len(body.ciphertext) > 64:   # the TDI_INFO answer
            ct = bytearray(body.ciphertext)
            ct[100] ^= 0x80
            return response(FwCommandId.GUEST_CHANNEL, body=dataclasses.replace(body, ciphertext=bytes(ct))).encode()
        return answer

    _answer_hook(b, flip)
    assert b.run(connect_bind_accept(b)) is False
    rec = b.guest.tdi("dev0")
    assert rec.state is not TdiState.RUN and rec.failure_reason == "firmware-decrypt-failed"
    assert fw(b).device("dev0").tdis[0].state is TdiState.CONFIG_LOCKED   # no START was asked for


def test_a_forged_plain_success_is_not_accepted() -> None:
    b = build("fat")
    forged: list[bytes] = []

    def forge(frame: bytes, answer: bytes) -> bytes:
        body = decode_frame(answer).body
        if isinstance(body, GuestChannelMessage) and len(body.ciphertext) > 64:
            inner = decode_frame(fw(b)._channels[1].peek(body) or b"")
            out = response(FwCommandId.GUEST_REQUEST, body=inner.body).encode()   # the real evidence, unsealed
            forged.append(out)
            return out
        return answer

    _answer_hook(b, forge)
    assert b.run(connect_bind_accept(b)) is False and forged
    assert b.guest.tdi("dev0").failure_reason == "firmware-invalid-command"


def test_a_replayed_request_is_refused_by_the_firmware() -> None:
    b = build("fat")
    seen = _answer_hook(b, lambda frame, answer: answer)

    def flow() -> SimGen[tuple[FwFrame, FwFrame]]:
        yield from connect_bind_accept(b)
        state = yield from b.guest.guest_request("dev0", 0, GuestRequestType.TDI_STATE)
        replay = yield from fw(b).issue(seen[0])          # the sealed TDI_INFO request, sent again
        return state, decode_frame(replay)

    state, replay = b.run(flow())
    assert state.status is FwStatus.SUCCESS and len(seen) == 3
    assert replay.command is FwCommandId.GUEST_CHANNEL and replay.status is FwStatus.BAD_SEQUENCE


def test_another_guests_channel_cannot_ask_about_this_tdi() -> None:
    b = build("fat")
    other = Guest(b.world, "guest1", GuestPolicy(), b.vmm, b.firmware, "fat")
    assert other.channel is not None and other.guest_id == 2

    def flow() -> SimGen[FwFrame]:
        yield from connect_bind_accept(b)
        assert other.channel is not None
        # guest 1's request, sealed on guest 2's channel: the firmware takes the guest from the channel
        inner = request(GuestRequest(1, fw(b).handle_of("dev0") or 0, 0, GuestRequestType.TDI_INFO)).encode()
        sealed = decode_frame((yield from fw(b).issue(request(other.channel.seal(inner)).encode())))
        assert isinstance(sealed.body, GuestChannelMessage)
        return decode_frame(other.channel.open(sealed.body))

    got = b.run(flow())
    assert got.status is FwStatus.NOT_PERMITTED and b"carries a request of guest 1" in got.body.encode()
