"""Platform builder: a declarative :class:`PlatformSpec` → Root Ports, links, endpoints and their DSMs.

Naming (one scheme, used everywhere): Root Port ``"rpN"`` (the spec's name), its link ``"rpN.link"``,
the endpoint below it ``"<port>.<device id>"`` (e.g. ``"rp0.dev0"``) and that endpoint's device
security manager ``"<port>.<device id>.dsm"``. Device ids are unique across the platform; a Root Port
has one link and therefore at most one device. :class:`Platform` looks everything up by device id.

What the builder does is what hardware and pre-boot platform firmware do before the OS runs:

* each Root Port at bus 0, device N+1, with its selective-stream register pool (``streams``), the
  key-programming principals the trust model allows, a DPC capability with its trigger enabled (``dpc``;
  without it the port has no DPC capability at all), bus numbers
  (primary 0, secondary = subordinate = N+1) and a 16 MiB memory window programmed;
* each endpoint on the secondary bus (device 0) with one function per TDI function number, BARs from the
  TDIs' MMIO ranges, addresses assigned inside the port's window (BIOS-style). Memory Space / Bus Master
  Enable are left to the OS (``sim.host``), which also saves and restores this state across resets;
* each device's DSM: the ``DeviceSecurityManager`` of ``sim.protocols.dsm`` around an ``SpdmResponder``
  built from a named ``ResponderProfile`` and a deterministic identity (``build_identity(seed, name,
  ca_name=...)``; devices of one vendor share a CA, so a verifier can trust one root). The DSM's secrets
  go to ``world.exposure`` with owner = the DSM's path; the endpoint's DOE mailbox calls the DSM, and the
  DSM programs the endpoint's IDE engine through the endpoint's ``DsmHardware`` handle.

DOE timing: an answer becomes ready after one firmware dispatch, one register access per DW moved through
the mailbox, and the crypto the DSM performed for it (its ``CryptoMeter``), all at device-mcu costs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

from sim.crypto.hashes import hash_size, measurement_base_hash
from sim.crypto.identity import Identity, build_identity, load_identity
from sim.devices.config_space import Bar, BarKind
from sim.devices.doe_mailbox import DoeOutcome, DoeRequest
from sim.devices.endpoint import Endpoint, FunctionSpec
from sim.engine.timing import ComponentClass, Op
from sim.engine.world import World
from sim.protocols.dsm import DeviceSecurityManager
from sim.protocols.env import CryptoMeter, ProtocolEnv
from sim.protocols.spdm.profile import ResponderProfile, make_profile
from sim.protocols.spdm.responder import SpdmResponder
from sim.protocols.tdisp import BarRange, TdiDefinition
from sim.rootport.dpc import DPC_CAP_CTL, DpcCtl, DpcTriggerEnable
from sim.rootport.link import Link, plug_in
from sim.rootport.root_port import RootPort
from sim.wire.tdisp import InterfaceId, InterfaceInfo

PORT_WINDOW_BASE = 0xC000_0000   # first Root Port's memory window (32-bit space, below 4 GiB)
PORT_WINDOW_SIZE = 0x0100_0000   # 16 MiB per Root Port
DEFAULT_CA = "tiosim-vendor"
DOE_INTERRUPT_VECTOR = 0


class PlatformSpecError(ValueError):
    """A platform spec that cannot be built (duplicate ids, unknown port, BARs that do not fit)."""


# --------------------------------------------------------------------------------------------
# Spec (plain dataclasses; the scenario loader fills them from YAML)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MmioRangeSpec:
    """One BAR of a TDI's function: its index (0-5; 64-bit BARs take two slots) and size in bytes."""

    bar: int = 0
    size: int = 0x4000


@dataclasses.dataclass(frozen=True)
class ReportSpec:
    """A configured interface report: BAR-relative ranges and the report's fixed fields (TdiDefinition's)."""

    ranges: tuple[BarRange, ...] = ()
    interface_info: InterfaceInfo = InterfaceInfo.DMA_WITHOUT_PASID
    msi_x_message_control: int = 0
    lnr_control: int = 0
    tph_control: int = 0
    device_specific_info: bytes = b""


@dataclasses.dataclass(frozen=True)
class TdiSpec:
    """A TDISP interface: one function of the device and the MMIO ranges it exposes."""

    function: int = 0
    mmio: tuple[MmioRangeSpec, ...] = (MmioRangeSpec(),)
    name: str = ""   # the scenario's TDI id, for reports
    report: ReportSpec | None = None   # None: every BAR whole, DMA without PASID


@dataclasses.dataclass(frozen=True)
class RootPortSpec:
    """A Root Port: its name, selective IDE stream register pool, DPC and key-slot principals."""

    name: str = "rp0"
    streams: int = 4
    dpc: bool = True                              # a DPC capability, trigger on ERR_FATAL enabled; False: none
    key_principals: frozenset[str] | None = None  # who may use the key-programming path (None: anyone)
    addr_assoc: int = 1
    link_hop_ns: int | None = None                # one-hop latency of the link below (None: timing model)


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """An endpoint with a DSM on function 0.

    ``identity_seed`` None means the world's seed; ``identity_name`` None means the device id. Devices
    that share ``ca`` share a root CA. ``cert_chain`` + ``key`` load the identity from files instead
    (e.g. libspdm's sample responder chain); then ``ca`` only labels the device.
    """

    id: str = "dev0"
    port: str = "rp0"
    profile: str = "default-p384"
    firmware_version: str = "1.0.0"
    identity_seed: int | str | None = None
    identity_name: str | None = None
    ca: str = DEFAULT_CA
    tdis: tuple[TdiSpec, ...] = (TdiSpec(),)
    selective_streams: int = 1
    cert_chain: bytes | str | Path | None = None  # identity from files instead of the seed (chain + leaf key)
    key: bytes | str | Path | None = None
    doe_interrupt: bool = False   # DOE capability advertises an interrupt (the host may wait on it)
    measurement_digests: tuple[tuple[int, bytes], ...] = ()  # (index, digest) reported instead of measured


@dataclasses.dataclass(frozen=True)
class PlatformSpec:
    root_ports: tuple[RootPortSpec, ...] = (RootPortSpec(),)
    devices: tuple[DeviceSpec, ...] = (DeviceSpec(),)

    @classmethod
    def uniform(cls, count: int, *, streams: int = 4, profile: str = "default-p384", ca: str = DEFAULT_CA,
                tdis: tuple[TdiSpec, ...] = (TdiSpec(),), dpc: bool = True,
                key_principals: frozenset[str] | None = None) -> PlatformSpec:
        """``count`` Root Ports rp0..rpN-1, each with one device dev0..devN-1 of the same kind."""
        ports = tuple(RootPortSpec(f"rp{i}", streams=streams, dpc=dpc, key_principals=key_principals)
                      for i in range(count))
        devices = tuple(DeviceSpec(f"dev{i}", f"rp{i}", profile=profile, ca=ca, tdis=tdis) for i in range(count))
        return cls(ports, devices)


# --------------------------------------------------------------------------------------------
# Built platform
# --------------------------------------------------------------------------------------------


class DoeInterruptLine:
    """The MSI of a DOE mailbox: the mailbox raises it, the host driver listens."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[int], None]] = []
        self.count = 0

    def raise_(self, vector: int) -> None:
        self.count += 1
        for listener in list(self.listeners):
            listener(vector)


@dataclasses.dataclass
class DeviceHandle:
    """Everything built for one device."""

    id: str
    spec: DeviceSpec
    path: str            # the endpoint, e.g. "rp0.dev0"
    dsm_path: str        # its DSM, e.g. "rp0.dev0.dsm"
    endpoint: Endpoint
    root_port: RootPort
    link: Link
    dsm: DeviceSecurityManager
    responder: SpdmResponder
    identity: Identity
    profile: ResponderProfile
    env: ProtocolEnv
    doe_irq: DoeInterruptLine
    port_index: int      # N of "rpN" in build order; also the secondary bus number - 1

    @property
    def secondary_bus(self) -> int:
        return self.endpoint.bus


@dataclasses.dataclass
class Platform:
    world: World
    spec: PlatformSpec
    root_ports: dict[str, RootPort]
    links: dict[str, Link]
    devices: list[DeviceHandle]

    def device(self, device_id: str) -> DeviceHandle:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(f"no device '{device_id}' (devices: {', '.join(d.id for d in self.devices) or 'none'})")

    def device_at(self, path: str) -> DeviceHandle:
        """The device whose endpoint path (or DSM path) is ``path``."""
        for d in self.devices:
            if path in (d.path, d.dsm_path):
                return d
        raise KeyError(f"no device at '{path}'")

    def endpoint(self, device_id: str) -> Endpoint:
        return self.device(device_id).endpoint

    def root_port(self, device_id: str) -> RootPort:
        return self.device(device_id).root_port

    def link(self, device_id: str) -> Link:
        return self.device(device_id).link

    def dsm(self, device_id: str) -> DeviceSecurityManager:
        return self.device(device_id).dsm

    def identity(self, device_id: str) -> Identity:
        return self.device(device_id).identity

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.devices)

    def root_certificates(self, ca: str | None = None) -> list[x509.Certificate]:
        """The distinct root certificates of the devices (of one CA if given): a policy's trust anchors."""
        out: list[x509.Certificate] = []
        for d in self.devices:
            if (ca is None or d.spec.ca == ca) and d.identity.root not in out:
                out.append(d.identity.root)
        return out

    def trusted_roots(self, ca: str | None = None) -> list[bytes]:
        """DER of the distinct root certificates of the devices (of one CA if given), in device order."""
        out: list[bytes] = []
        for d in self.devices:
            if ca is not None and d.spec.ca != ca:
                continue
            der = d.identity.certificates_der[0]
            if der not in out:
                out.append(der)
        return out


# --------------------------------------------------------------------------------------------
# DSM construction
# --------------------------------------------------------------------------------------------


def _make_dsm(profile: ResponderProfile, identity: Identity, env: ProtocolEnv, spec: DeviceSpec,
              bus: int) -> DeviceSecurityManager:
    """The device security manager: SPDM responder + IDE_KM + TDISP, one TDI per TdiSpec."""
    tdis = [tdi_definition(InterfaceId.for_function(bus << 8 | t.function), t) for t in spec.tdis]
    return DeviceSecurityManager.build(profile, identity, env, tdis=tdis)


def tdi_definition(interface_id: InterfaceId, spec: TdiSpec) -> TdiDefinition:
    """The DSM's definition of one TDI: its function and, when configured, its report layout."""
    r = spec.report
    if r is None:
        return TdiDefinition(interface_id, function=spec.function)
    return TdiDefinition(interface_id, function=spec.function, interface_info=r.interface_info, bar_ranges=r.ranges,
                         msi_x_message_control=r.msi_x_message_control, lnr_control=r.lnr_control,
                         tph_control=r.tph_control, device_specific_info=r.device_specific_info)


def meter_cost_ns(world: World, path: str, meter: CryptoMeter) -> int:
    """Drain ``meter`` and price its operations at the component class of ``path``."""
    return world.price_ops(path, ((str(item.op), item.nbytes) for item in meter.drain()))


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------


def _functions(spec: DeviceSpec) -> list[FunctionSpec]:
    if not spec.tdis:
        return [FunctionSpec()]
    numbers = sorted({t.function for t in spec.tdis})
    if numbers[0] < 0 or numbers[-1] > 7:
        raise PlatformSpecError(f"device '{spec.id}': TDI functions must be 0..7, got {numbers}")
    count = numbers[-1] + 1
    bars_of: dict[int, dict[int, Bar]] = {n: {} for n in range(count)}
    for tdi in spec.tdis:
        for r in tdi.mmio:
            if r.bar in bars_of[tdi.function]:
                raise PlatformSpecError(f"device '{spec.id}': function {tdi.function} BAR {r.bar} given twice")
            try:
                bars_of[tdi.function][r.bar] = Bar(r.size, BarKind.MEM64)
            except ValueError as exc:
                raise PlatformSpecError(f"device '{spec.id}' function {tdi.function} BAR {r.bar}: {exc}") from None
    out = []
    for n in range(count):
        bars = bars_of[n] or {0: Bar(0x4000, BarKind.MEM64)}
        # Each 64-bit BAR takes its slot and the next of a type-0 header's six; check here so that a bad
        # layout is a PlatformSpecError naming the device, not a ValueError from the config header.
        owner_of: dict[int, int] = {}
        for i in sorted(bars):
            for slot in range(i, i + bars[i].slots):
                if slot > 5:
                    raise PlatformSpecError(f"device '{spec.id}' function {n} BAR {i}: a 64-bit BAR takes slots {i} "
                                            f"and {i + 1}, an endpoint has slots 0-5 (expected BAR 0-4)")
                if slot in owner_of:
                    raise PlatformSpecError(f"device '{spec.id}' function {n} BAR {i}: slot {slot} is taken by "
                                            f"64-bit BAR {owner_of[slot]} (expected BARs at least 2 apart)")
                owner_of[slot] = i
        out.append(FunctionSpec(bars=bars))
    return out


def _check(spec: PlatformSpec) -> None:
    names = [p.name for p in spec.root_ports]
    if len(set(names)) != len(names):
        raise PlatformSpecError(f"duplicate Root Port names in {names}")
    ids = [d.id for d in spec.devices]
    if len(set(ids)) != len(ids):
        raise PlatformSpecError(f"duplicate device ids in {ids}")
    used: dict[str, str] = {}
    for d in spec.devices:
        if d.port not in names:
            raise PlatformSpecError(f"device '{d.id}' names port '{d.port}', which is not one of {names}")
        if d.port in used:
            raise PlatformSpecError(f"devices '{used[d.port]}' and '{d.id}' are both below '{d.port}' "
                                    "(one link, one device)")
        used[d.port] = d.id
        if not d.id or "." in d.id:
            raise PlatformSpecError(f"device id '{d.id}' must be non-empty and contain no '.'")
        functions = [t.function for t in d.tdis]
        if len(set(functions)) != len(functions):
            raise PlatformSpecError(f"device '{d.id}': one TDI per function (functions {functions})")


def _enable_dpc(rp: RootPort) -> None:
    """Pre-boot: DPC on ERR_FATAL with its interrupt (what Linux's DPC service driver sets up too)."""
    if rp.dpc is None or rp.dpc.offset is None:
        raise PlatformSpecError(f"Root Port '{rp.path}' has no DPC capability to enable")
    ctl = int(DpcTriggerEnable.FATAL) | int(DpcCtl.INT_EN)
    rp.config.write(rp.dpc.offset + DPC_CAP_CTL + 2, ctl, 2)


def layout_bars(functions: Sequence[Sequence[tuple[int, int]]]) -> tuple[list[list[tuple[int, int]]], int]:
    """BIOS-style placement of BARs in a port's window: function by function, largest BAR first, each
    aligned to its size. ``functions`` lists each function's (BAR index, size); returns each function's
    (BAR index, offset in the window) and the bytes the layout spans. Scenario validation uses the span
    to refuse what would not fit before anything is built."""
    cursor = 0
    placed: list[list[tuple[int, int]]] = []
    for bars in functions:
        offsets = []
        for index, size in sorted(bars, key=lambda b: -b[1]):
            cursor = -(-cursor // size) * size
            offsets.append((index, cursor))
            cursor += size
        placed.append(offsets)
    return placed, cursor


def _assign_resources(rp: RootPort, ep: Endpoint, window: int) -> None:
    """Pre-boot (BIOS) resource assignment: bus numbers, the port's memory window, endpoint BARs."""
    bus = ep.bus
    rp.config.write(0x18, 0 | bus << 8 | bus << 16)
    limit = window + PORT_WINDOW_SIZE - 1
    rp.config.write(0x20, (window >> 16) & 0xFFF0 | (limit >> 16 & 0xFFF0) << 16)
    functions = list(ep.functions.values())
    placed, span = layout_bars([[(i, bar.size) for i, bar in fn.header.bars.items()] for fn in functions])
    if span > PORT_WINDOW_SIZE:
        raise PlatformSpecError(f"BARs of {ep.name} do not fit the {PORT_WINDOW_SIZE:#x}-byte port window")
    for fn, offsets in zip(functions, placed, strict=True):
        for i, offset in offsets:
            address = window + offset
            ep.config_write(fn.number, 0x10 + 4 * i, address & 0xFFFF_FFF0)
            if fn.header.bars[i].kind is BarKind.MEM64:
                ep.config_write(fn.number, 0x14 + 4 * i, address >> 32)


def build_platform(world: World, spec: PlatformSpec | None = None) -> Platform:
    """Create and register every Root Port, link, endpoint and DSM of ``spec`` (see the module docstring)."""
    spec = spec or PlatformSpec()
    _check(spec)
    root_ports: dict[str, RootPort] = {}
    links: dict[str, Link] = {}
    port_index: dict[str, int] = {}
    for i, p in enumerate(spec.root_ports):
        rp = RootPort(world, p.name, bus=0, device=i + 1, streams=p.streams, addr_assoc=p.addr_assoc,
                      key_principals=set(p.key_principals) if p.key_principals is not None else None,
                      dpc=p.dpc)  # dpc: false means no DPC capability at all, not one left disabled
        if p.dpc:
            _enable_dpc(rp)
        root_ports[p.name] = rp
        links[p.name] = Link(world, rp, hop_ns=p.link_hop_ns)
        port_index[p.name] = i
    devices: list[DeviceHandle] = []
    for d in spec.devices:
        devices.append(_build_device(world, d, root_ports[d.port], links[d.port], port_index[d.port]))
    return Platform(world, spec, root_ports, links, devices)


def _identity(world: World, d: DeviceSpec, profile: ResponderProfile, owner: str) -> Identity:
    if (d.cert_chain is None) != (d.key is None):
        raise PlatformSpecError(f"device '{d.id}': an identity from files needs both cert_chain and key")
    if d.cert_chain is not None and d.key is not None:
        try:
            identity = load_identity(d.cert_chain, d.key, profile.hash_algos[0], name=d.identity_name or d.id,
                                     sink=world.exposure, owner=owner)
        except (ValueError, TypeError, OSError) as exc:
            raise PlatformSpecError(f"device '{d.id}': cannot load its identity: {exc}") from None
        if identity.asym_algo not in profile.asym_algos:
            raise PlatformSpecError(f"device '{d.id}': identity key is {identity.asym_algo.name}, profile "
                                    f"'{profile.name}' signs with {[a.name for a in profile.asym_algos]}")
        return identity
    return build_identity(world.seed if d.identity_seed is None else d.identity_seed, d.identity_name or d.id,
                          profile.asym_algos[0], profile.hash_algos[0], ca_name=d.ca, sink=world.exposure,
                          owner=owner)


def _build_device(world: World, d: DeviceSpec, rp: RootPort, link: Link, index: int) -> DeviceHandle:
    path = f"{rp.path}.{d.id}"
    dsm_path = f"{path}.dsm"
    try:
        profile = make_profile(d.profile, d.id, d.firmware_version)
    except KeyError as exc:
        raise PlatformSpecError(f"device '{d.id}': {exc.args[0]}") from None
    digest_size = hash_size(measurement_base_hash(profile.measurement_hash_algo))
    for measurement_index, value in d.measurement_digests:
        if len(value) != digest_size:
            raise PlatformSpecError(f"device '{d.id}': measurement digest {measurement_index} is {len(value)} "
                                    f"bytes, profile {d.profile} reports {digest_size}-byte digests")
        try:
            profile.measurements.report_digest(measurement_index, value)
        except ValueError as exc:
            raise PlatformSpecError(f"device '{d.id}': {exc}") from None
    env = world.protocol_env(dsm_path)
    identity = _identity(world, d, profile, dsm_path)
    dsm = _make_dsm(profile, identity, env, d, index + 1)
    irq = DoeInterruptLine()
    ep = Endpoint(d.id, functions=_functions(d), dsm=dsm, bus=index + 1, device=0,
                  selective_streams=d.selective_streams,
                  doe_interrupt_vector=DOE_INTERRUPT_VECTOR if d.doe_interrupt else None)
    ep.mailbox.raise_interrupt = irq.raise_
    world.register(path, ep, ComponentClass.HARDWARE)
    world.register(dsm_path, dsm, ComponentClass.DEVICE_MCU)

    def response_delay(request: DoeRequest, outcome: DoeOutcome) -> int:
        dws = len(request.raw) // 4 + len(outcome.response) // 4
        return (world.cost(dsm_path, Op.FW_COMMAND_DISPATCH) + dws * world.cost(dsm_path, Op.CONFIG_DW_ACCESS)
                + meter_cost_ns(world, dsm_path, env.meter))

    ep.attach_world(world, path, register=False, response_delay_ns=response_delay)
    plug_in(link, path, ep)
    _assign_resources(rp, ep, PORT_WINDOW_BASE + index * PORT_WINDOW_SIZE)
    return DeviceHandle(d.id, d, path, dsm_path, ep, rp, link, dsm, dsm.spdm, identity, profile, env, irq, index)


def tdi_function_ids(handle: DeviceHandle) -> Sequence[int]:
    """Requester IDs of the device's TDI functions (the TDISP INTERFACE_ID FUNCTION_ID values)."""
    return [handle.endpoint.requester_id(t.function) for t in handle.spec.tdis]
