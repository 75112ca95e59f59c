"""PCI enumeration the way a kernel does it: by reading config registers, and nothing else.

The host knows its Root Ports (the host bridge lists them, as ACPI does) and the link below each;
everything else comes from config reads: header and class, the classic capability list (PCI
Express 0x10, Power Management 0x01), the extended list (DOE 0x2E, IDE 0x30, DPC 0x1D), BAR
sizes (the write-all-ones rule, with decoding off while sizing, as Linux ``__pci_read_base``), the
number of selective IDE stream register blocks. The result is a :class:`DeviceTable` the kernel
uses for the DOE driver, IDE setup, DPC recovery and power management.

Every access costs ``Op.CONFIG_DW_ACCESS`` at the caller's component class and is traced on
``Channel.CONFIG`` by the Root Port or the link.

:class:`ConfigAccess` also saves and restores the state a conventional reset wipes (BARs, Command,
Device Control), which the kernel does around DPC recovery, SBR and D3cold (``pci_save_state`` /
``pci_restore_state``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator
from typing import Any, Protocol

from sim.devices.config_space import (
    FIRST_CLASSIC_CAP,
    FIRST_EXT_CAP,
    BarKind,
    CapabilityId,
    Command,
    ExtCapabilityId,
    HeaderType,
)
from sim.engine.timing import Op
from sim.engine.world import World

SimGen = Generator[Any, Any, Any]
ALL_ONES = 0xFFFF_FFFF
CAP_WALK_LIMIT = 48                    # Linux PCI_FIND_CAP_TTL
EXT_CAP_WALK_LIMIT = (4096 - 256) // 8
TYPE0_BAR_SLOTS = 6
IDE_CAP_SELECTIVE = 1 << 1
IDE_CAP_LINK = 1 << 0


class RootPortConfig(Protocol):
    """A Root Port's own config space (``sim.rootport.root_port.RootPort`` fits)."""

    path: str

    def cfg_read(self, offset: int, size: int = 4, *, by: str) -> int: ...

    def cfg_write(self, offset: int, value: int, size: int = 4, *, by: str) -> None: ...


class EndpointConfig(Protocol):
    """Config requests below a Root Port (``sim.rootport.link.Link`` fits)."""

    @property
    def endpoint_path(self) -> str: ...

    def cfg_read(self, function: int, offset: int, *, by: str) -> int: ...

    def cfg_write(self, function: int, offset: int, value: int, byte_enable: int = 0xF, *, by: str) -> bool: ...


# --------------------------------------------------------------------------------------------
# What enumeration finds
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BarInfo:
    index: int
    kind: BarKind
    size: int
    address: int
    prefetchable: bool


class _CapabilityOffsets:
    """Config-space offsets of the capabilities the kernel uses (None: not implemented), found by the walk."""

    caps: dict[CapabilityId | int, int]
    ext_caps: dict[ExtCapabilityId | int, int]

    @property
    def pcie(self) -> int | None:
        return self.caps.get(CapabilityId.PCI_EXPRESS)

    @property
    def pm(self) -> int | None:
        return self.caps.get(CapabilityId.POWER_MANAGEMENT)

    @property
    def doe(self) -> int | None:
        return self.ext_caps.get(ExtCapabilityId.DOE)

    @property
    def ide(self) -> int | None:
        return self.ext_caps.get(ExtCapabilityId.IDE)

    @property
    def dpc(self) -> int | None:
        return self.ext_caps.get(ExtCapabilityId.DPC)


@dataclasses.dataclass(frozen=True)
class FunctionInfo(_CapabilityOffsets):
    """One endpoint function as read from its registers."""

    function: int
    requester_id: int
    vendor_id: int
    device_id: int
    class_code: int
    multifunction: bool
    caps: dict[CapabilityId | int, int]        # capability id -> config offset
    ext_caps: dict[ExtCapabilityId | int, int]
    bars: tuple[BarInfo, ...]


@dataclasses.dataclass(frozen=True)
class PortInfo(_CapabilityOffsets):
    """A Root Port as read from its registers."""

    path: str
    requester_id: int
    secondary_bus: int
    caps: dict[CapabilityId | int, int]
    ext_caps: dict[ExtCapabilityId | int, int]
    ide_selective_streams: int


@dataclasses.dataclass(frozen=True)
class SavedFunctionState:
    function: int
    command: int
    bars: tuple[tuple[int, int], ...]   # (config offset, value) for every implemented BAR DW
    devctl: int | None


@dataclasses.dataclass
class DeviceEntry:
    """One device below one Root Port: what the kernel knows and keeps about it."""

    id: str                       # the platform's device id
    path: str                     # the endpoint's component path
    port: PortInfo
    functions: list[FunctionInfo]
    ide_selective_streams: int
    saved: tuple[SavedFunctionState, ...] = ()

    @property
    def function0(self) -> FunctionInfo:
        return self.functions[0]

    @property
    def doe(self) -> int | None:
        return self.function0.doe

    @property
    def ide(self) -> int | None:
        return self.function0.ide

    @property
    def bus(self) -> int:
        return self.port.secondary_bus


class DeviceTable:
    """The kernel's devices by platform device id, in enumeration order."""

    def __init__(self) -> None:
        self._entries: dict[str, DeviceEntry] = {}
        self.ports: dict[str, PortInfo] = {}

    def add(self, entry: DeviceEntry) -> None:
        self._entries[entry.id] = entry

    def get(self, device: str) -> DeviceEntry:
        try:
            return self._entries[device]
        except KeyError:
            raise KeyError(f"no enumerated device '{device}'") from None

    def __contains__(self, device: object) -> bool:
        return device in self._entries

    def __iter__(self) -> Iterator[DeviceEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> tuple[str, ...]:
        return tuple(self._entries)


# --------------------------------------------------------------------------------------------
# Config access with modeled cost
# --------------------------------------------------------------------------------------------


class ConfigAccess:
    """Config reads/writes issued by one component (its class sets the cost of each DW)."""

    def __init__(self, world: World, by: str = "host") -> None:
        self.world = world
        self.by = by
        self.accesses = 0

    def _cost(self) -> SimGen:
        self.accesses += 1
        yield self.world.delay(self.by, Op.CONFIG_DW_ACCESS)

    def rp_read(self, rp: RootPortConfig, offset: int, size: int = 4) -> SimGen:
        yield from self._cost()
        return rp.cfg_read(offset, size, by=self.by)

    def rp_write(self, rp: RootPortConfig, offset: int, value: int, size: int = 4) -> SimGen:
        yield from self._cost()
        rp.cfg_write(offset, value, size, by=self.by)

    def ep_read(self, link: EndpointConfig, function: int, offset: int) -> SimGen:
        yield from self._cost()
        return link.cfg_read(function, offset, by=self.by)

    def ep_write(self, link: EndpointConfig, function: int, offset: int, value: int,
                 byte_enable: int = 0xF) -> SimGen:
        yield from self._cost()
        return link.cfg_write(function, offset, value, byte_enable, by=self.by)

    # -- capability walks through a DW reader that is itself a SimPy generator --------------------

    def walk_caps(self, read: _Reader) -> SimGen:
        """{id: offset} of the classic list (first occurrence), as Linux pci_find_capability walks it."""
        found: dict[int, int] = {}
        status_cmd = yield from read(0x04)
        if status_cmd == ALL_ONES or not (status_cmd >> 16) & 0x10:
            return found
        pos = (yield from read(0x34)) & 0xFC
        for _ in range(CAP_WALK_LIMIT):
            if pos < FIRST_CLASSIC_CAP:
                break
            header = yield from read(pos)
            cap_id = header & 0xFF
            if cap_id == 0xFF:
                break
            found.setdefault(_cap_id(cap_id), pos)
            pos = (header >> 8) & 0xFC
        return found

    def walk_ext_caps(self, read: _Reader) -> SimGen:
        """{id: offset} of the extended list (first occurrence), from 0x100."""
        found: dict[int, int] = {}
        pos = FIRST_EXT_CAP
        for _ in range(EXT_CAP_WALK_LIMIT):
            header = yield from read(pos)
            if header in (0, ALL_ONES):
                break
            found.setdefault(_ext_cap_id(header & 0xFFFF), pos)
            pos = (header >> 20) & 0xFFC
            if pos < FIRST_EXT_CAP:
                break
        return found

    def ide_selective_blocks(self, read: _Reader, ide: int) -> SimGen:
        """(config offset, address-association count) of every selective stream block, from the
        registers (PROTOCOLS.md §7.1: link blocks of 8 bytes first, then 20 + 12 * nAssoc bytes each)."""
        cap = yield from read(ide + 4)
        if cap == ALL_ONES or not cap & IDE_CAP_SELECTIVE:
            return []
        pos = ide + 0x0C + (8 * (((cap >> 13) & 0x7) + 1) if cap & IDE_CAP_LINK else 0)
        blocks: list[tuple[int, int]] = []
        for _ in range(((cap >> 16) & 0xFF) + 1):
            n_assoc = (yield from read(pos)) & 0xF
            blocks.append((pos, n_assoc))
            pos += 20 + 12 * n_assoc
        return blocks

    def ide_stream_count(self, read: _Reader, ide: int | None) -> SimGen:
        """Selective IDE stream register blocks of an IDE capability (0 without Selective IDE)."""
        if ide is None:
            return 0
        cap = yield from read(ide + 4)
        if cap == ALL_ONES or not cap & IDE_CAP_SELECTIVE:
            return 0
        return ((cap >> 16) & 0xFF) + 1


_Reader = Any  # Callable[[int], SimGen] (kept loose: a bound generator method or a lambda)


def _cap_id(value: int) -> CapabilityId | int:
    return CapabilityId(value) if value in CapabilityId._value2member_map_ else value


def _ext_cap_id(value: int) -> ExtCapabilityId | int:
    return ExtCapabilityId(value) if value in ExtCapabilityId._value2member_map_ else value


# --------------------------------------------------------------------------------------------
# Enumeration
# --------------------------------------------------------------------------------------------


class PciEnumerator:
    """Walks Root Ports and the devices below them through config space (module docstring)."""

    def __init__(self, world: World, by: str = "host") -> None:
        self.cfg = ConfigAccess(world, by)

    def enumerate(self, ports: dict[str, tuple[RootPortConfig, EndpointConfig]],
                  device_id_of: Any = None) -> SimGen:
        """Enumerate every (Root Port, link) pair; ``device_id_of(endpoint_path)`` names each device
        (default: the endpoint path). Returns a :class:`DeviceTable`."""
        table = DeviceTable()
        for rp, link in ports.values():
            port = yield from self.read_port(rp)
            table.ports[rp.path] = port
            functions = yield from self.read_functions(link, port.secondary_bus)
            if not functions:
                continue
            path = link.endpoint_path
            ide_streams = yield from self.cfg.ide_stream_count(
                lambda off, link=link: self.cfg.ep_read(link, 0, off), functions[0].ide)
            name = device_id_of(path) if device_id_of is not None else path
            table.add(DeviceEntry(name, path, port, functions, ide_streams))
        return table

    def assign_unassigned(self, rp: RootPortConfig, link: EndpointConfig) -> SimGen:
        """pci_assign_unassigned_bus_resources for the device below one port: when its memory BARs read 0
        (it was reset after the firmware placed them, e.g. its link was lost while the host booted),
        place them in the port's memory window the way the firmware does (``layout_bars``)."""
        from sim.scenario.platform import layout_bars  # the one BAR layout (the firmware's)

        port = yield from self.read_port(rp)
        functions = yield from self.read_functions(link, port.secondary_bus)
        mem = [[b for b in f.bars if b.kind is not BarKind.IO and b.size] for f in functions]
        if not any(mem) or any(b.address for bars in mem for b in bars):
            return False
        window = yield from self.cfg.rp_read(rp, 0x20)
        base = (window & 0xFFF0) << 16
        placed, _span = layout_bars([[(b.index, b.size) for b in bars] for bars in mem])
        for f, bars, offsets in zip(functions, mem, placed, strict=True):
            kinds = {b.index: b.kind for b in bars}
            for index, offset in offsets:
                address = base + offset
                yield from self.cfg.ep_write(link, f.function, 0x10 + 4 * index, address & 0xFFFF_FFF0)
                if kinds[index] is BarKind.MEM64:
                    yield from self.cfg.ep_write(link, f.function, 0x14 + 4 * index, address >> 32)
        return True

    def read_port(self, rp: RootPortConfig) -> SimGen:
        def read(off: int) -> SimGen:
            return self.cfg.rp_read(rp, off)
        ident = yield from read(0x00)
        if ident == ALL_ONES:
            raise RuntimeError(f"Root Port {rp.path} does not answer config reads")
        caps = yield from self.cfg.walk_caps(read)
        ext = yield from self.cfg.walk_ext_caps(read)
        buses = yield from read(0x18)
        streams = yield from self.cfg.ide_stream_count(read, ext.get(ExtCapabilityId.IDE))
        rid = getattr(rp, "requester_id", 0)
        return PortInfo(rp.path, int(rid), (buses >> 8) & 0xFF, caps, ext, streams)

    def read_functions(self, link: EndpointConfig, bus: int) -> SimGen:
        """Probe function 0 and, for a multi-function device, 1..7 (vendor ID all ones = absent)."""
        out: list[FunctionInfo] = []
        for fn in range(8):
            ident = yield from self.cfg.ep_read(link, fn, 0x00)
            if ident == ALL_ONES or ident & 0xFFFF in (0xFFFF, 0x0000):
                if fn == 0:
                    return out
                continue
            info = yield from self.read_function(link, fn, ident, bus)
            out.append(info)
            if fn == 0 and not info.multifunction:
                break
        return out

    def read_function(self, link: EndpointConfig, fn: int, ident: int, bus: int) -> SimGen:
        def read(off: int) -> SimGen:
            return self.cfg.ep_read(link, fn, off)
        class_rev = yield from read(0x08)
        hdr = yield from read(0x0C)
        header_type = (hdr >> 16) & 0x7F
        multifunction = bool((hdr >> 16) & 0x80)
        caps = yield from self.cfg.walk_caps(read)
        ext = yield from self.cfg.walk_ext_caps(read)
        bars: tuple[BarInfo, ...] = ()
        if header_type == HeaderType.ENDPOINT:
            bars = yield from self.size_bars(link, fn)
        return FunctionInfo(fn, bus << 8 | fn, ident & 0xFFFF, ident >> 16, class_rev >> 8, multifunction,
                            caps, ext, bars)

    def size_bars(self, link: EndpointConfig, fn: int) -> SimGen:
        """Size every BAR (decoding off meanwhile) and keep its current address."""
        cmd = yield from self.cfg.ep_read(link, fn, 0x04)
        decode = cmd & (Command.MEMORY_SPACE | Command.IO_SPACE)
        if decode:
            yield from self.cfg.ep_write(link, fn, 0x04, cmd & 0xFFFF & ~decode, 0x3)
        bars: list[BarInfo] = []
        i = 0
        while i < TYPE0_BAR_SLOTS:
            off = 0x10 + 4 * i
            orig = yield from self.cfg.ep_read(link, fn, off)
            yield from self.cfg.ep_write(link, fn, off, ALL_ONES)
            probe = yield from self.cfg.ep_read(link, fn, off)
            yield from self.cfg.ep_write(link, fn, off, orig)
            if probe in (0, ALL_ONES) and orig == 0:
                i += 1
                continue
            if probe & 1:  # I/O BAR
                mask = probe & 0xFFFF_FFFC
                bars.append(BarInfo(i, BarKind.IO, (~mask & 0xFFFF) + 1 if mask else 0, orig & 0xFFFF_FFFC, False))
                i += 1
                continue
            is64 = (probe >> 1) & 0x3 == 0x2
            prefetch = bool(probe & 0x8)
            mask = probe & 0xFFFF_FFF0
            address = orig & 0xFFFF_FFF0
            if is64 and i + 1 < TYPE0_BAR_SLOTS:
                off_hi = off + 4
                orig_hi = yield from self.cfg.ep_read(link, fn, off_hi)
                yield from self.cfg.ep_write(link, fn, off_hi, ALL_ONES)
                probe_hi = yield from self.cfg.ep_read(link, fn, off_hi)
                yield from self.cfg.ep_write(link, fn, off_hi, orig_hi)
                mask |= probe_hi << 32
                address |= orig_hi << 32
                size = (~mask & 0xFFFF_FFFF_FFFF_FFFF) + 1 if mask else 0
                bars.append(BarInfo(i, BarKind.MEM64, size, address, prefetch))
                i += 2
            else:
                size = (~mask & 0xFFFF_FFFF) + 1 if mask else 0
                bars.append(BarInfo(i, BarKind.MEM32, size, address, prefetch))
                i += 1
        if decode:
            yield from self.cfg.ep_write(link, fn, 0x04, cmd & 0xFFFF, 0x3)
        return tuple(bars)

    # -- driver-side setup and state save/restore ----------------------------------------------------------

    def enable(self, link: EndpointConfig, entry: DeviceEntry) -> SimGen:
        """pci_enable_device + pci_set_master: Memory Space and Bus Master Enable on every function."""
        for f in entry.functions:
            cmd = yield from self.cfg.ep_read(link, f.function, 0x04)
            yield from self.cfg.ep_write(link, f.function, 0x04,
                                         (cmd & 0xFFFF) | Command.MEMORY_SPACE | Command.BUS_MASTER, 0x3)

    def save_state(self, link: EndpointConfig, entry: DeviceEntry) -> SimGen:
        """pci_save_state: Command, every implemented BAR DW, Device Control, per function."""
        saved: list[SavedFunctionState] = []
        for f in entry.functions:
            cmd = yield from self.cfg.ep_read(link, f.function, 0x04)
            bars: list[tuple[int, int]] = []
            for b in f.bars:
                for slot in range(2 if b.kind is BarKind.MEM64 else 1):
                    off = 0x10 + 4 * (b.index + slot)
                    bars.append((off, (yield from self.cfg.ep_read(link, f.function, off))))
            devctl = None
            if f.pcie is not None:
                devctl = (yield from self.cfg.ep_read(link, f.function, f.pcie + 8)) & 0x7FFF
            saved.append(SavedFunctionState(f.function, cmd & 0xFFFF, tuple(bars), devctl))
        entry.saved = tuple(saved)
        return entry.saved

    def restore_state(self, link: EndpointConfig, entry: DeviceEntry) -> SimGen:
        """pci_restore_state: BARs and Device Control first, Command last."""
        for s in entry.saved:
            for off, value in s.bars:
                yield from self.cfg.ep_write(link, s.function, off, value)
            f = next((f for f in entry.functions if f.function == s.function), None)
            if s.devctl is not None and f is not None and f.pcie is not None:
                yield from self.cfg.ep_write(link, s.function, f.pcie + 8, s.devctl, 0x3)
            yield from self.cfg.ep_write(link, s.function, 0x04, s.command, 0x3)
