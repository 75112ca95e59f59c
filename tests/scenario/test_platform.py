"""build_platform: names, wiring (DOE mailbox -> DSM -> IDE engine), identities, determinism, spec errors."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from sim.crypto.secrets import SecretClass
from sim.devices.config_space import BarKind, find_ext_capability
from sim.engine.timing import ComponentClass, Op
from sim.engine.trace import MemorySink
from sim.engine.world import World
from sim.host.kernel import DirectKeySlotHandler, HostKernel, HostPolicy
from sim.protocols.dsm import DeviceSecurityManager
from sim.protocols.flow import Outbound, run_flow
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SpdmRequester
from sim.rootport.dpc import DpcTriggerEnable
from sim.scenario.platform import (
    PORT_WINDOW_BASE,
    PORT_WINDOW_SIZE,
    DeviceSpec,
    MmioRangeSpec,
    PlatformSpec,
    PlatformSpecError,
    RootPortSpec,
    TdiSpec,
    build_platform,
    tdi_function_ids,
)
from sim.wire.doe import DoeObject, DoeObjectType
from sim.wire.ide_km import Direction, KeySet, KpAckStatus, SubStream
from sim.wire.spdm.common import ResponseCode

GET_VERSION = bytes.fromhex("10840000")


def four_devices() -> PlatformSpec:
    ports = tuple(RootPortSpec(f"rp{i}", streams=2 + i) for i in range(4))
    devices = (
        DeviceSpec("nic0", "rp0", ca="vendor-a"),
        DeviceSpec("nic1", "rp1", ca="vendor-a"),
        DeviceSpec("gpu0", "rp2", profile="p256", ca="vendor-b",
                   tdis=(TdiSpec(0, (MmioRangeSpec(0, 0x10000),)), TdiSpec(1, (MmioRangeSpec(2, 0x4000),)))),
        DeviceSpec("ssd0", "rp3", ca="vendor-b", firmware_version="2.1.0"),
    )
    return PlatformSpec(ports, devices)


def test_components_are_named_and_classed_by_one_scheme() -> None:
    world = World(7)
    p = build_platform(world, four_devices())
    assert p.device_ids == ("nic0", "nic1", "gpu0", "ssd0")
    for d in p.devices:
        assert d.path == f"{d.spec.port}.{d.id}"
        assert d.dsm_path == f"{d.path}.dsm"
        assert world.component(d.path) is d.endpoint
        assert world.component_class(d.path) is ComponentClass.HARDWARE
        assert world.component_class(d.dsm_path) is ComponentClass.DEVICE_MCU
        assert world.component(f"{d.spec.port}.link") is d.link
        assert p.endpoint(d.id) is d.endpoint and p.root_port(d.id) is d.root_port and p.link(d.id) is d.link
        assert isinstance(p.dsm(d.id), DeviceSecurityManager)
    assert p.device_at("rp2.gpu0.dsm").id == "gpu0"
    with pytest.raises(KeyError, match="no device 'nope'"):
        p.device("nope")


def test_root_ports_get_their_pools_dpc_and_windows() -> None:
    world = World(7)
    p = build_platform(world, four_devices())
    for i, d in enumerate(p.devices):
        rp = d.root_port
        assert rp.stream_block_count == 2 + i
        assert rp.dpc.trigger_enable is DpcTriggerEnable.FATAL
        assert (rp.config.read(0x18) >> 8) & 0xFF == d.endpoint.bus == i + 1
        base = PORT_WINDOW_BASE + i * PORT_WINDOW_SIZE
        for fn in d.endpoint.functions.values():
            for bar_index, bar in fn.header.bars.items():
                address = fn.header.bar_address(bar_index)
                assert base <= address and address + bar.size <= base + PORT_WINDOW_SIZE
                assert address % bar.size == 0
    gpu = p.device("gpu0").endpoint
    assert sorted(gpu.functions) == [0, 1]
    assert gpu.functions[0].header.bars[0].size == 0x10000 and gpu.functions[0].header.bars[0].kind is BarKind.MEM64
    assert gpu.functions[1].header.bars[2].size == 0x4000
    assert tdi_function_ids(p.device("gpu0")) == [3 << 8, 3 << 8 | 1]


def test_identities_are_deterministic_and_share_a_root_per_vendor() -> None:
    a = build_platform(World(11), four_devices())
    b = build_platform(World(11), four_devices())
    c = build_platform(World(12), four_devices())
    for d in a.devices:
        assert d.identity.chain_der == b.identity(d.id).chain_der
        assert d.identity.chain_der != c.identity(d.id).chain_der
    # vendor-b signs a P-256 and a P-384 device: one CA hierarchy per key algorithm, so three roots
    assert len(a.trusted_roots()) == 3
    assert a.trusted_roots("vendor-a") == [a.identity("nic0").certificates_der[0]]
    assert a.root_certificates("vendor-a") == [a.identity("nic1").root]
    assert len(a.root_certificates()) == 3
    assert a.identity("nic0").certificates_der[0] == a.identity("nic1").certificates_der[0]
    assert a.identity("nic0").certificates_der[2] != a.identity("nic1").certificates_der[2]
    assert a.identity("gpu0").asym_algo.name == "ECDSA_P256"
    # an explicit identity seed overrides the world seed
    spec = PlatformSpec(devices=(DeviceSpec(identity_seed="fleet"),))
    assert build_platform(World(1), spec).identity("dev0").chain_der == \
        build_platform(World(2), spec).identity("dev0").chain_der


def test_dsm_secrets_are_owned_by_the_dsm_path() -> None:
    world = World(3)
    build_platform(world, PlatformSpec.uniform(2))
    keys = [r for r in world.exposure.records if r.secret_class is SecretClass.DEVICE_IDENTITY_KEY]
    assert sorted(r.owner for r in keys) == ["rp0.dev0.dsm", "rp1.dev1.dsm"]


def test_dsm_is_wired_to_the_endpoint_ide_engine_and_tdis() -> None:
    p = build_platform(World(3), four_devices())
    gpu = p.device("gpu0")
    # the DSM's IDE_KM key slots are the endpoint's IDE engine, under the endpoint's port index
    before = gpu.endpoint.ide.slot_count()
    status = gpu.dsm.ide_km.slots.program(gpu.endpoint.ide_port_index, 1, KeySet.K0, Direction.RX, SubStream.PR,
                                          bytes(32), bytes(8))
    assert status is KpAckStatus.SUCCESS and gpu.endpoint.ide.slot_count() == before + 1
    assert gpu.dsm.hardware is gpu.endpoint.hardware
    assert sorted(k[0] for k in gpu.dsm.tdisp.tdis) == [3 << 8, 3 << 8 | 1]
    assert gpu.responder is gpu.dsm.spdm


def _mailbox_exchange(world: World, ep, payload: bytes, object_type: DoeObjectType = DoeObjectType.SPDM,
                      control: int = 0):
    """Write one object straight into the endpoint's mailbox registers and run until it is answered."""
    doe = find_ext_capability(lambda o: ep.config_read(0, o), 0x2E)
    assert doe is not None
    raw = DoeObject.pcisig(object_type, payload).encode()
    for i in range(0, len(raw), 4):
        ep.config_write(0, doe + 0x10, int.from_bytes(raw[i:i + 4], "little"))
    start = world.now
    ep.config_write(0, doe + 0x08, 1 << 31 | control)
    while not ep.config_read(0, doe + 0x0C) >> 31:
        world.run(until=world.now + 1000)
        assert world.now - start < 1_000_000_000
    out = b""
    while ep.config_read(0, doe + 0x0C) >> 31:
        out += ep.config_read(0, doe + 0x14).to_bytes(4, "little")
        ep.config_write(0, doe + 0x14, 0)
    return DoeObject.decode(out).payload, world.now - start


def test_mailbox_reaches_the_dsm_and_charges_its_crypto_as_device_time() -> None:
    world = World(5)
    p = build_platform(world, PlatformSpec.uniform(1))
    ep = p.endpoint("dev0")
    rsp, elapsed = _mailbox_exchange(world, ep, GET_VERSION)
    assert rsp[1] == ResponseCode.VERSION
    dispatch = world.cost("rp0.dev0.dsm", Op.FW_COMMAND_DISPATCH)
    assert elapsed >= dispatch
    assert elapsed < dispatch + 100 * world.cost("rp0.dev0.dsm", Op.CONFIG_DW_ACCESS) + 1000
    # a signing response costs the device microcontroller's P-384 signature time on top
    requester = SpdmRequester(RequesterConfig(), VerificationPolicy.trusting(p.identity("dev0")))
    times: list[int] = []

    def transport(out: Outbound) -> bytes | None:
        payload, t = _mailbox_exchange(world, ep, out.payload, out.object_type)
        times.append(t)
        return payload

    report = run_flow(requester.attest(), transport)
    assert report.ok, report
    assert max(times) >= world.cost("rp0.dev0.dsm", Op.ECDSA_P384_SIGN)


def _boot_digest(seed: int) -> tuple[str, int]:
    world = World(seed)
    p = build_platform(world, four_devices())
    sink = MemorySink()
    world.trace.subscribe(sink)
    policy = HostPolicy(verification=VerificationPolicy.trusting(*[d.identity for d in p.devices]))
    kernel = HostKernel(world, p, policy)
    kernel.platform_handler = DirectKeySlotHandler(kernel)
    kernel.start()
    world.run(until=kernel.booted)
    assert all(d.secured for d in kernel.devices.values())
    return world.trace.digest(), len(sink)


def test_same_seed_same_boot_trace_digest() -> None:
    d1, n1 = _boot_digest(21)
    d2, n2 = _boot_digest(21)
    d3, _ = _boot_digest(22)
    assert (d1, n1) == (d2, n2)
    assert d1 != d3


@pytest.mark.parametrize(("spec", "message"), [
    (PlatformSpec(devices=(DeviceSpec("a"), DeviceSpec("a", "rp1"))), "duplicate device ids"),
    (PlatformSpec(devices=(DeviceSpec("a", "rp9"),)), "names port 'rp9'"),
    (PlatformSpec(devices=(DeviceSpec("a"), DeviceSpec("b"))), "both below 'rp0'"),
    (PlatformSpec((RootPortSpec(), RootPortSpec())), "duplicate Root Port names"),
    (PlatformSpec(devices=(DeviceSpec("a.b"),)), "contain no '.'"),
    (PlatformSpec(devices=(DeviceSpec(profile="nope"),)), "unknown responder profile"),
    (PlatformSpec(devices=(DeviceSpec(tdis=(TdiSpec(9),)),)), "functions must be 0..7"),
    (PlatformSpec(devices=(DeviceSpec(tdis=(TdiSpec(1), TdiSpec(1))),)), "one TDI per function"),
    (PlatformSpec(devices=(DeviceSpec(tdis=(TdiSpec(0, (MmioRangeSpec(0, 3000),)),)),)), "power of two"),
    (PlatformSpec(devices=(DeviceSpec(tdis=(TdiSpec(0, (MmioRangeSpec(0, 1 << 25),)),)),)), "do not fit"),
    (PlatformSpec(devices=(DeviceSpec(cert_chain=b"x"),)), "needs both cert_chain and key"),
    (PlatformSpec(devices=(DeviceSpec(cert_chain=b"junk", key=b"junk"),)), "cannot load its identity"),
])
def test_bad_specs_are_refused_with_a_reason(spec: PlatformSpec, message: str) -> None:
    with pytest.raises(PlatformSpecError, match=message):
        build_platform(World(1), spec)


def test_identity_from_files(tmp_path) -> None:
    donor = build_platform(World(99), PlatformSpec()).identity("dev0")
    chain = tmp_path / "chain.der"
    chain.write_bytes(donor.chain_der)
    key = tmp_path / "leaf.key"
    key.write_bytes(donor.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    world = World(1)
    p = build_platform(world, PlatformSpec(devices=(DeviceSpec(cert_chain=chain, key=key),)))
    assert p.identity("dev0").chain_der == donor.chain_der
    assert any(r.owner == "rp0.dev0.dsm" and r.secret_class is SecretClass.DEVICE_IDENTITY_KEY
               for r in world.exposure.records)
    wrong = PlatformSpec(devices=(DeviceSpec(profile="p256", cert_chain=chain, key=key),))
    with pytest.raises(PlatformSpecError, match="ECDSA_P384"):
        build_platform(World(1), wrong)


def test_doe_interrupt_line_is_wired() -> None:
    world = World(1)
    p = build_platform(world, PlatformSpec(devices=(DeviceSpec(doe_interrupt=True),)))
    ep = p.endpoint("dev0")
    doe = find_ext_capability(lambda o: ep.config_read(0, o), 0x2E)
    assert ep.config_read(0, doe + 4) & 1  # Interrupt Support advertised
    ep.config_write(0, doe + 0x08, 1 << 1)  # Interrupt Enable
    seen: list[int] = []
    p.device("dev0").doe_irq.listeners.append(seen.append)
    _mailbox_exchange(world, ep, GET_VERSION, control=1 << 1)
    assert seen == [0]
