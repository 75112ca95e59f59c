"""The thin key-slot service on a real platform: slots written by "firmware", ownership
enforced, the guest channel is real AES-256-GCM that the carrier sees only as ciphertext."""

from __future__ import annotations

import dataclasses

from sim.crypto.secrets import SecretClass, SecretRecord
from sim.engine.exposure import Exposure
from sim.engine.runner import SimGen
from sim.engine.timing import ComponentClass
from sim.engine.trace import Channel, MemorySink
from sim.engine.world import World
from sim.firmware.commands import (
    AllocateStream,
    AllocateStreamRsp,
    FwBody,
    FwCommandId,
    FwFrame,
    FwStatus,
    GuestChannelMessage,
    ProgramKey,
    ReleaseStream,
    SetGo,
    SetStop,
    decode_frame,
    request,
)
from sim.firmware.keyslot_service import (
    KEYSLOT_PRINCIPAL,
    GuestChannelEnd,
    GuestChannelSender,
    KeySlotClient,
    KeySlotService,
)
from sim.scenario.platform import Platform, PlatformSpec, build_platform
from sim.wire.ide_km import Direction, KeySet, SubStream

IFV = (1).to_bytes(8, "big")


@dataclasses.dataclass
class Bench:
    world: World
    platform: Platform
    service: KeySlotService
    sink: MemorySink


def bench(streams: int = 2) -> Bench:
    world = World(7)
    sink = MemorySink()
    world.trace.subscribe(sink)
    platform = build_platform(world, PlatformSpec.uniform(2, streams=streams))
    return Bench(world, platform, KeySlotService(world, platform), sink)


def run(b: Bench, gen: SimGen[object]) -> object:
    proc = b.world.process(gen)
    b.world.run()
    assert proc.ok
    return proc.value


def calls(b: Bench, caller: str, *bodies: FwBody) -> list[FwFrame]:
    def proc() -> SimGen[list[FwFrame]]:
        out = []
        for body in bodies:
            out.append((yield from b.service.call(caller, body)))
        return out
    return run(b, proc())  # type: ignore[return-value]


def program_all(root_port: int, block: int, rng_bytes: bytes) -> list[FwBody]:
    bodies: list[FwBody] = []
    i = 0
    for direction in Direction:
        for sub in SubStream:
            bodies.append(ProgramKey(root_port, block, KeySet.K0, direction, sub, rng_bytes[i:i + 32], IFV))
            i += 32
    for direction in (Direction.RX, Direction.TX):
        for sub in SubStream:
            bodies.append(SetGo(root_port, block, KeySet.K0, direction, sub))
    return bodies


def test_host_programs_slots_as_firmware_keyslot() -> None:
    b = bench()
    keys = bytes(range(256)) * 1
    [alloc] = calls(b, "host", AllocateStream(0, 0x0100))
    assert alloc.status is FwStatus.SUCCESS and isinstance(alloc.body, AllocateStreamRsp)
    block = alloc.body.block
    rp = b.platform.root_ports["rp0"]
    assert rp.block_owner(block) == "host"
    answers = calls(b, "host", *program_all(0, block, keys[:192]))
    assert [a.status for a in answers] == [FwStatus.SUCCESS] * 12
    writers = rp.key_port.writers(block)
    assert len(writers) == 6 and set(writers.values()) == {KEYSLOT_PRINCIPAL}
    assert rp.stream_keys(block).ready()
    assert rp.stream_keys(block).slots[(KeySet.K0, Direction.RX, SubStream.PR)].key == keys[:32]
    # every command crossed the firmware boundary as real bytes, and each slot write is traced
    fw = [e for e in b.sink.on(Channel.FIRMWARE) if e.source == "host"]
    assert len(fw) == 13 and decode_frame(fw[1].data).command is FwCommandId.PROGRAM_KEY
    assert keys[:32] in fw[1].data
    ks = [e for e in b.sink.on(Channel.KEY_SLOT) if e.source == KEYSLOT_PRINCIPAL]
    assert len(ks) == 12 and keys[:32] in ks[0].data


def test_stream_not_allocated_to_caller_is_refused() -> None:
    b = bench()
    [alloc] = calls(b, "guest0", AllocateStream(0, 0x0100))
    block = alloc.body.block  # type: ignore[attr-defined]
    rp = b.platform.root_ports["rp0"]
    key = bytes(range(32))
    refused = calls(b, "host",
                    ProgramKey(0, block, KeySet.K0, Direction.TX, SubStream.PR, key, IFV),
                    SetGo(0, block, KeySet.K0, Direction.TX, SubStream.PR),
                    SetStop(0, block, KeySet.K0, Direction.TX, SubStream.PR),
                    ReleaseStream(0, block),
                    ProgramKey(0, block + 1, KeySet.K0, Direction.TX, SubStream.PR, key, IFV),  # never allocated
                    ProgramKey(9, 0, KeySet.K0, Direction.TX, SubStream.PR, key, IFV))          # no such port
    assert [f.status for f in refused] == [FwStatus.NOT_PERMITTED] * 5 + [FwStatus.INVALID_PARAMETER]
    assert rp.key_port.writers(block) == {} and rp.key_port.writers(block + 1) == {}
    assert rp.block_owner(block) == "guest0"
    # the refused key never reached a slot or the key-slot channel
    assert not any(key in e.data for e in b.sink.on(Channel.KEY_SLOT))


def test_release_clears_slots_and_pool_and_stream_ids() -> None:
    b = bench(streams=2)
    a1, a2, a3 = calls(b, "host", AllocateStream(0, 0x100), AllocateStream(0, 0x100), AllocateStream(0, 0x100))
    assert a1.status is a2.status is FwStatus.SUCCESS and a3.status is FwStatus.NO_RESOURCES
    ids = {a1.body.stream_id, a2.body.stream_id}  # type: ignore[attr-defined]
    assert len(ids) == 2
    # stream ids are unique below the host bridge, across Root Ports
    [other] = calls(b, "host", AllocateStream(1, 0x200))
    assert other.body.stream_id not in ids  # type: ignore[attr-defined]
    block = a1.body.block  # type: ignore[attr-defined]
    calls(b, "host", *program_all(0, block, bytes(range(192))))
    rp = b.platform.root_ports["rp0"]
    assert rp.stream_keys(block).ready()
    [rel] = calls(b, "host", ReleaseStream(0, block))
    assert rel.status is FwStatus.SUCCESS
    assert rp.key_port.writers(block) == {} and rp.block_owner(block) is None
    [again] = calls(b, "host", AllocateStream(0, 0x100))
    assert again.status is FwStatus.SUCCESS and again.body.block == block  # type: ignore[attr-defined]


class Carrier:
    """A stand-in for the VMM: relays sealed frames, and can replay or tamper with them."""

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.seen: list[bytes] = []
        self.replay_next: bytes | None = None
        self.flip_next = False

    def __call__(self, frame: bytes, plaintext: bytes | None) -> SimGen[tuple[bytes, bytes | None]]:
        self.seen.append(frame)
        if self.replay_next is not None:
            frame, self.replay_next = self.replay_next, None
        if self.flip_next:
            raw = bytearray(frame)
            raw[-20] ^= 1
            frame, self.flip_next = bytes(raw), False
        return (yield from self.b.service.command_sealed("vmm", frame, secured_plaintext=plaintext))


def test_guest_channel_is_ciphertext_to_the_carrier() -> None:
    b = bench()
    b.world.register("guest0", object(), ComponentClass.GUEST_VCPU)
    end = b.service.launch_guest("guest0")
    assert isinstance(end, GuestChannelEnd)
    carrier = Carrier(b)
    client = KeySlotClient(GuestChannelSender(b.world, "guest0", end, carrier))
    key = b.world.rng("guest0").bytes(32)
    b.world.exposure.register(SecretRecord("guest ide key", SecretClass.IDE_KEY, "guest0", key))

    def proc() -> SimGen[list[FwFrame]]:
        alloc = yield from client.call(AllocateStream(0, 0x100))
        prog = yield from client.call(ProgramKey(0, alloc.body.block, KeySet.K0, Direction.RX, SubStream.PR,
                                                 key, IFV))
        return [alloc, prog]

    alloc, prog = run(b, proc())  # type: ignore[misc]
    assert alloc.status is FwStatus.SUCCESS and prog.status is FwStatus.SUCCESS
    rp = b.platform.root_ports["rp0"]
    assert rp.block_owner(alloc.body.block) == "guest0"
    assert rp.key_port.writer(alloc.body.block, KeySet.K0, Direction.RX, SubStream.PR) == KEYSLOT_PRINCIPAL
    # the carrier's bytes are a sealed GUEST_CHANNEL frame without the key in any byte order
    assert all(decode_frame(f).command is FwCommandId.GUEST_CHANNEL for f in carrier.seen)
    assert not any(key in f or key[::-1] in f for f in carrier.seen)
    exp = b.world.exposure
    assert exp.exposure("guest ide key", "vmm") is Exposure.SAW_CIPHERTEXT_ONLY
    assert exp.exposure("guest ide key", "firmware") is Exposure.SAW_PLAINTEXT
    assert exp.exposure("guest ide key", "rp0") is Exposure.SAW_PLAINTEXT
    assert exp.exposure("guest ide key", "host") is Exposure.NEVER
    assert exp.exposure("guest channel key guest0", "guest0") is Exposure.SAW_PLAINTEXT
    assert exp.exposure("guest channel key guest0", "vmm") is Exposure.NEVER
    assert exp.exposure("guest channel key guest0", "firmware") is Exposure.GENERATED


def test_guest_channel_refuses_replay_and_tampering() -> None:
    b = bench()
    b.world.register("guest0", object(), ComponentClass.GUEST_VCPU)
    end = b.service.launch_guest("guest0")
    carrier = Carrier(b)
    client = KeySlotClient(GuestChannelSender(b.world, "guest0", end, carrier))

    def proc() -> SimGen[list[FwFrame]]:
        first = yield from client.call(AllocateStream(0, 0x100))
        carrier.replay_next = carrier.seen[0]        # the VMM replays the first (allocate) message
        replayed = yield from client.call(AllocateStream(0, 0x100))
        carrier.flip_next = True                     # and flips a ciphertext bit of the next one
        tampered = yield from client.call(AllocateStream(0, 0x100))
        return [first, replayed, tampered]

    first, replayed, tampered = run(b, proc())  # type: ignore[misc]
    assert first.status is FwStatus.SUCCESS
    assert replayed.status is FwStatus.BAD_SEQUENCE
    assert tampered.status is FwStatus.DECRYPT_FAILED
    rp = b.platform.root_ports["rp0"]
    assert [rp.block_owner(i) for i in range(rp.stream_block_count)] == ["guest0", None]
    # a forged message for another guest id is refused too
    forged = GuestChannelMessage(99, 0, 0, b"x", bytes(16))
    answer = run(b, b.service.command("vmm", request(forged).encode()))
    assert decode_frame(answer).status is FwStatus.INVALID_PARAMETER  # type: ignore[arg-type]


def test_unsupported_and_malformed_commands() -> None:
    b = bench()
    answer = run(b, b.service.command("host", b"\x03\x00\x00\x00\x00"))
    assert decode_frame(answer).status is FwStatus.INVALID_COMMAND  # type: ignore[arg-type]
    from sim.firmware.commands import DevConnect
    [f] = calls(b, "host", DevConnect(1))
    assert f.status is FwStatus.UNSUPPORTED


def test_one_core_serializes_commands() -> None:
    b = bench()
    done: list[tuple[str, int]] = []

    def caller(name: str) -> SimGen[None]:
        yield from b.service.call(name, AllocateStream(0, 0x100))
        done.append((name, b.world.now))

    b.world.process(caller("host"))
    b.world.process(caller("guest0"))
    b.world.run()
    core = b.service.core
    assert core.max_depth == 2
    first, second = core.records
    assert first.wait_ns == 0 and second.wait_ns > 0
    assert second.started_ns >= first.finished_ns


def test_thin_host_secures_its_devices_through_the_service() -> None:
    """The host kernel's securing flow with the service as its key path (the thin-host wiring)."""
    from sim.firmware.keyslot_service import KeySlotRequestHandler
    from sim.host.kernel import HostKernel, HostPolicy
    from sim.protocols.spdm.policy import VerificationPolicy

    world = World(2)
    platform = build_platform(world, PlatformSpec.uniform(2, key_principals=frozenset({KEYSLOT_PRINCIPAL})))
    host = HostKernel(world, platform, HostPolicy(
        verification=VerificationPolicy.trusting(*(d.identity for d in platform.devices))))
    service = KeySlotService(world, platform)
    host.platform_handler = KeySlotRequestHandler(platform, KeySlotClient.direct(service, "host"),
                                                  enable=host.enable_stream, disable=host.disable_stream)
    host.start()
    world.run()
    assert all(d.secured for d in host.devices.values())
    for rp in platform.root_ports.values():
        assert rp.stream_state(0).name == "SECURE"
        assert set(rp.key_port.writers(0).values()) == {KEYSLOT_PRINCIPAL}
        assert rp.block_owner(0) == "host"
    commands = [r.command for r in service.core.records]
    assert commands.count("ALLOCATE_STREAM") == 2 and commands.count("PROGRAM_KEY") == 12
    assert commands.count("SET_GO") == 12
    m = world.exposure.matrix()
    assert m.get(SecretClass.IDE_KEY, "host") is Exposure.GENERATED
    assert m.get(SecretClass.IDE_KEY, "firmware") is Exposure.SAW_PLAINTEXT
