"""PCI/PCIe configuration space of one function: header, capability lists, register semantics.

Software reaches a device only through these registers, so they behave like hardware: 4 KiB per
function, DW-granular accesses with byte enables, RO / RW / RW1C / write-1-to-pulse bits, BARs with
the write-all-ones sizing rule, a classic capability list from 0x40 (PCI Express 0x10, Power
Management 0x01) and an extended capability list from 0x100 (DOE 0x2E, IDE 0x30, anything else a
caller plugs in). Capabilities are objects that own their registers; the space assigns their offsets
and computes every next pointer when they are added (the cocotbext-pcie idea, without side effects
in constructors).

Reads never have side effects (the DOE read mailbox advances on a *write*, PROTOCOLS.md §1.2), so
:func:`find_capability` / :func:`find_ext_capability` can walk the lists exactly like a kernel
driver, through nothing but a DW read function.

Register bit positions follow Linux ``include/uapi/linux/pci_regs.h`` (PCI_COMMAND_*, PCI_STATUS_*,
PCI_EXP_*, PCI_PM_*), DOE per PROTOCOLS.md §1.1-1.2 and IDE per §7.1.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

CONFIG_SPACE_SIZE = 4096
LEGACY_SPACE_END = 0x100
FIRST_CLASSIC_CAP = 0x40
FIRST_EXT_CAP = 0x100
CAP_FIND_TTL = 48  # Linux PCI_FIND_CAP_TTL: bounds a walk over a looping list
DW_MASK = 0xFFFF_FFFF


class ConfigAccessError(ValueError):
    """A config access outside 4 KiB, misaligned, or of an unsupported size (a caller bug, not device input)."""


class ResetKind(enum.Enum):
    """Which reset a register block sees. Conventional = cold/warm/hot (DPC, SBR, D3cold)."""

    CONVENTIONAL = "conventional"
    FLR = "flr"
    SOFT = "soft"  # D3hot -> D0 with No_Soft_Reset = 0: function state lost, link kept


class CapabilityId(enum.IntEnum):
    """Classic (8-bit) capability IDs used here."""

    POWER_MANAGEMENT = 0x01
    MSI = 0x05
    PCI_EXPRESS = 0x10
    MSIX = 0x11


class ExtCapabilityId(enum.IntEnum):
    """Extended (16-bit) capability IDs used here."""

    AER = 0x0001
    DPC = 0x001D
    DOE = 0x002E
    IDE = 0x0030


class Command(enum.IntFlag):
    """Command register (0x04, 16 bits)."""

    IO_SPACE = 0x0001
    MEMORY_SPACE = 0x0002  # MSE
    BUS_MASTER = 0x0004  # BME
    PARITY_ERROR_RESPONSE = 0x0040
    SERR = 0x0100
    INTX_DISABLE = 0x0400


class Status(enum.IntFlag):
    """Status register (0x06, 16 bits)."""

    INTERRUPT = 0x0008
    CAP_LIST = 0x0010
    MASTER_DATA_PARITY = 0x0100
    SIG_TARGET_ABORT = 0x0800
    REC_TARGET_ABORT = 0x1000
    REC_MASTER_ABORT = 0x2000
    SIG_SYSTEM_ERROR = 0x4000
    DETECTED_PARITY = 0x8000


STATUS_RW1C = (Status.MASTER_DATA_PARITY | Status.SIG_TARGET_ABORT | Status.REC_TARGET_ABORT
               | Status.REC_MASTER_ABORT | Status.SIG_SYSTEM_ERROR | Status.DETECTED_PARITY)


class HeaderType(enum.IntEnum):
    """Header layout (0x0E bits 6:0)."""

    ENDPOINT = 0  # type 0
    BRIDGE = 1  # type 1 (Root Ports and switch ports)


class BarKind(enum.Enum):
    """What a Base Address Register decodes."""

    MEM32 = "mem32"
    MEM64 = "mem64"
    IO = "io"


class PowerState(enum.IntEnum):
    """PMCSR PowerState (bits 1:0). D3cold has no encoding: power is off, nothing answers."""

    D0 = 0
    D1 = 1
    D2 = 2
    D3HOT = 3


class PmcsrBit(enum.IntFlag):
    """PM Control/Status (PM cap + 4)."""

    NO_SOFT_RESET = 0x0008
    PME_ENABLE = 0x0100
    PME_STATUS = 0x8000


class PcieDeviceType(enum.IntEnum):
    """PCI Express Capabilities register bits 7:4 (Device/Port Type)."""

    ENDPOINT = 0x0
    LEGACY_ENDPOINT = 0x1
    ROOT_PORT = 0x4
    UPSTREAM_SWITCH_PORT = 0x5
    DOWNSTREAM_SWITCH_PORT = 0x6
    RC_INTEGRATED_ENDPOINT = 0x9


class DevCtl(enum.IntFlag):
    """Device Control (PCIe cap + 0x08, 16 bits)."""

    CORRECTABLE_ERR_REPORTING = 0x0001
    NONFATAL_ERR_REPORTING = 0x0002
    FATAL_ERR_REPORTING = 0x0004
    UNSUPPORTED_REQ_REPORTING = 0x0008
    RELAXED_ORDERING = 0x0010
    PAYLOAD_MASK = 0x00E0
    EXTENDED_TAG = 0x0100
    NO_SNOOP = 0x0800
    READ_REQ_MASK = 0x7000
    INITIATE_FLR = 0x8000  # write 1 to start an FLR; always reads 0


class DevSta(enum.IntFlag):
    """Device Status (PCIe cap + 0x0A, 16 bits)."""

    CORRECTABLE_ERR = 0x0001
    NONFATAL_ERR = 0x0002
    FATAL_ERR = 0x0004
    UNSUPPORTED_REQ = 0x0008
    TRANSACTIONS_PENDING = 0x0020


class LnkCtl(enum.IntFlag):
    """Link Control (PCIe cap + 0x10, 16 bits)."""

    ASPM_MASK = 0x0003
    LINK_DISABLE = 0x0010
    RETRAIN_LINK = 0x0020  # write 1 to retrain; reads 0
    COMMON_CLOCK = 0x0040
    EXTENDED_SYNCH = 0x0080


class LnkSta(enum.IntFlag):
    """Link Status (PCIe cap + 0x12, 16 bits)."""

    SPEED_MASK = 0x000F
    WIDTH_MASK = 0x03F0
    LINK_TRAINING = 0x0800
    DLL_LINK_ACTIVE = 0x2000


DEVCAP_FLR = 1 << 28  # Device Capabilities: Function Level Reset Capability
LNKCAP_DLLLARC = 1 << 20  # Link Capabilities: Data Link Layer Link Active Reporting Capable


def byte_enable_mask(byte_enable: int) -> int:
    """Expand a 4-bit byte enable into a 32-bit bit mask (0b0011 -> 0x0000FFFF)."""
    if not 0 <= byte_enable <= 0xF:
        raise ConfigAccessError(f"byte enable 0x{byte_enable:x} is not 4 bits")
    return sum(0xFF << (8 * i) for i in range(4) if byte_enable >> i & 1)


# --------------------------------------------------------------------------------------------
# Registers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterWrite:
    """What one DW write did to one register: passed to hooks and to space-wide observers."""

    register: Register
    old: int
    new: int
    pulses: int  # write-1-to-trigger bits that were written as 1 (they never stick)
    data: int  # the written DW, already masked by byte enables
    byte_mask: int
    offset: int = -1  # absolute config offset once known (filled in by ConfigSpace)

    @property
    def name(self) -> str:
        return self.register.name

    @property
    def changed(self) -> int:
        return self.old ^ self.new


WriteHook = Callable[[RegisterWrite], None]


@dataclass(eq=False)
class Register:
    """One 32-bit register. Bits are RO unless named in ``rw``, ``rw1c`` or ``pulse``.

    ``pulse`` bits accept a write of 1, report it to the hook, and always read 0 (Initiate FLR,
    DOE Go/Abort, Retrain Link). ``read_hook`` overlays a live value for hardware-driven bits.
    ``keep_on_flr`` marks registers an FLR leaves alone (link registers, sticky error logs).
    """

    name: str
    reset: int = 0
    rw: int = 0
    rw1c: int = 0
    pulse: int = 0
    write_hook: WriteHook | None = None
    read_hook: Callable[[int], int] | None = None
    keep_on_flr: bool = False
    value: int = field(init=False)

    def __post_init__(self) -> None:
        self.value = self.reset & DW_MASK

    def read(self) -> int:
        v = self.value & ~self.pulse & DW_MASK
        return (self.read_hook(v) if self.read_hook else v) & DW_MASK

    def write(self, data: int, byte_mask: int = DW_MASK) -> RegisterWrite:
        data &= byte_mask
        old = self.value
        new = (old & ~(self.rw & byte_mask)) | (data & self.rw)
        new &= ~(data & self.rw1c)
        self.value = new & DW_MASK
        event = RegisterWrite(self, old, self.value, data & self.pulse, data, byte_mask)
        if self.write_hook is not None:
            self.write_hook(event)
        return event

    def set_bits(self, bits: int, on: bool = True) -> None:
        """Hardware-side update (ignores the software access masks)."""
        self.value = (self.value | bits) if on else (self.value & ~bits)
        self.value &= DW_MASK

    def set_field(self, mask: int, value: int) -> None:
        """Hardware-side update of a multi-bit field given by its mask."""
        shift = (mask & -mask).bit_length() - 1
        self.value = (self.value & ~mask) | ((value << shift) & mask)

    def do_reset(self, kind: ResetKind) -> None:
        if kind is ResetKind.FLR and self.keep_on_flr:
            return
        self.value = self.reset & DW_MASK


class RegisterBlock:
    """A set of registers at DW offsets relative to a base. Unimplemented DWs read 0, ignore writes."""

    size: int = 0

    def __init__(self) -> None:
        self._regs: dict[int, Register] = {}

    def define(self, rel: int, reg: Register) -> Register:
        if rel % 4 or rel < 0 or (self.size and rel >= self.size):
            raise ValueError(f"{type(self).__name__}: bad register offset 0x{rel:x}")
        self._regs[rel] = reg
        return reg

    def reg(self, rel: int) -> Register:
        """The register at a relative DW offset (for model code that drives hardware bits)."""
        return self._regs[rel]

    def registers(self) -> Iterator[tuple[int, Register]]:
        yield from sorted(self._regs.items())

    def read_dw(self, rel: int) -> int:
        r = self._regs.get(rel)
        return r.read() if r is not None else 0

    def write_dw(self, rel: int, data: int, byte_mask: int = DW_MASK) -> RegisterWrite | None:
        r = self._regs.get(rel)
        return r.write(data, byte_mask) if r is not None else None

    def reset(self, kind: ResetKind) -> None:
        for r in self._regs.values():
            r.do_reset(kind)


# --------------------------------------------------------------------------------------------
# Header (type 0 / type 1) and BARs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """A BAR definition. ``size`` is a power of two (>= 16 for memory, >= 4 for I/O)."""

    size: int
    kind: BarKind = BarKind.MEM32
    prefetchable: bool = False

    def __post_init__(self) -> None:
        minimum = 4 if self.kind is BarKind.IO else 16
        if self.size < minimum or self.size & (self.size - 1):
            raise ValueError(f"BAR size {self.size} must be a power of two >= {minimum}")
        if self.kind is not BarKind.MEM64 and self.size > 1 << 31:
            raise ValueError("a 32-bit BAR cannot exceed 2 GiB")

    @property
    def type_bits(self) -> int:
        if self.kind is BarKind.IO:
            return 0x1
        bits = 0x4 if self.kind is BarKind.MEM64 else 0x0
        return bits | (0x8 if self.prefetchable else 0)

    @property
    def slots(self) -> int:
        return 2 if self.kind is BarKind.MEM64 else 1


class ConfigHeader(RegisterBlock):
    """The first 64 bytes: identity, Command/Status, BARs, capabilities pointer.

    Type 0 has six BAR slots; type 1 (bridges, Root Ports) has two plus bus numbers, windows and
    Bridge Control (with Secondary Bus Reset, bit 6 of 0x3E).
    """

    size = 0x40

    def __init__(self, *, vendor_id: int, device_id: int, class_code: int, revision: int = 0,
                 header_type: HeaderType = HeaderType.ENDPOINT, multifunction: bool = False,
                 subsystem_vendor_id: int = 0, subsystem_id: int = 0, interrupt_pin: int = 0,
                 bars: dict[int, Bar] | None = None) -> None:
        super().__init__()
        self.header_type = header_type
        self.bars: dict[int, Bar] = dict(bars or {})
        nslots = 6 if header_type is HeaderType.ENDPOINT else 2
        used: set[int] = set()
        for i, bar in self.bars.items():
            span = {i, i + 1} if bar.slots == 2 else {i}
            if max(span) >= nslots or span & used:
                raise ValueError(f"BAR {i} does not fit the {header_type.name} header")
            used |= span
        self.define(0x00, Register("id", reset=vendor_id | device_id << 16))
        self.command = self.define(0x04, Register(
            "command", reset=0,
            rw=int(Command.IO_SPACE | Command.MEMORY_SPACE | Command.BUS_MASTER | Command.PARITY_ERROR_RESPONSE
                   | Command.SERR | Command.INTX_DISABLE),
            rw1c=int(STATUS_RW1C) << 16))
        self.define(0x08, Register("class_revision", reset=revision | (class_code & 0xFFFFFF) << 8))
        htype = int(header_type) | (0x80 if multifunction else 0)
        self.define(0x0C, Register("cacheline_header", reset=htype << 16, rw=0xFF))
        for i in range(nslots):
            self._define_bar(i)
        if header_type is HeaderType.ENDPOINT:
            self.define(0x2C, Register("subsystem", reset=subsystem_vendor_id | subsystem_id << 16))
        else:
            self.define(0x18, Register("bus_numbers", rw=0x00FF_FFFF, keep_on_flr=True))
            self.define(0x20, Register("memory_window", rw=0xFFF0_FFF0))
            self.define(0x24, Register("prefetch_window", rw=0xFFF0_FFF0, reset=0x0001_0001))
            self.define(0x28, Register("prefetch_base_upper", rw=DW_MASK))
            self.define(0x2C, Register("prefetch_limit_upper", rw=DW_MASK))
        self.cap_ptr = self.define(0x34, Register("capabilities_pointer"))
        self.define(0x3C, Register(
            "interrupt", reset=(interrupt_pin & 0xFF) << 8,
            rw=0xFF | ((0x0043 << 16) if header_type is HeaderType.BRIDGE else 0)))  # bridge ctl: parity, SERR, SBR

    def _define_bar(self, i: int) -> None:
        rel = 0x10 + 4 * i
        bar = self.bars.get(i)
        upper_of = self.bars.get(i - 1)
        if bar is not None:
            addr_mask = 0xFFFF_FFFC if bar.kind is BarKind.IO else 0xFFFF_FFF0
            rw = addr_mask & ~(min(bar.size, 1 << 32) - 1) & DW_MASK
            self.define(rel, Register(f"bar{i}", reset=bar.type_bits, rw=rw))
        elif upper_of is not None and upper_of.kind is BarKind.MEM64:
            rw = DW_MASK & ~((upper_of.size >> 32) - 1) if upper_of.size > 1 << 32 else DW_MASK
            self.define(rel, Register(f"bar{i}_upper", rw=rw & DW_MASK))
        # an absent BAR stays unimplemented: reads 0, ignores writes (sizing reads back 0)

    @property
    def vendor_id(self) -> int:
        return self.read_dw(0) & 0xFFFF

    @property
    def device_id(self) -> int:
        return self.read_dw(0) >> 16

    @property
    def command_bits(self) -> Command:
        return Command(self.command.value & 0xFFFF)

    def bar_address(self, i: int) -> int:
        """The base address software has programmed into BAR ``i`` (the sizing pattern included)."""
        bar = self.bars[i]
        low = self.read_dw(0x10 + 4 * i) & (0xFFFF_FFFC if bar.kind is BarKind.IO else 0xFFFF_FFF0)
        if bar.kind is BarKind.MEM64:
            low |= self.read_dw(0x14 + 4 * i) << 32
        return low

    def decode_memory(self, address: int, length: int = 1) -> tuple[int, int] | None:
        """(BAR index, offset) that claims a memory request, or None. Needs Memory Space Enable."""
        if not self.command_bits & Command.MEMORY_SPACE:
            return None
        for i, bar in self.bars.items():
            if bar.kind is BarKind.IO:
                continue
            base = self.bar_address(i)
            if base and base <= address and address + length <= base + bar.size:
                return i, address - base
        return None


# --------------------------------------------------------------------------------------------
# Capabilities
# --------------------------------------------------------------------------------------------


class Capability(RegisterBlock):
    """A classic capability. Header DW: ID (7:0), next pointer (15:8), capability-specific bits (31:16).

    Subclasses define the register at relative 0 for the upper 16 bits (or leave it) and their
    other registers; the space fills in ``offset`` and ``next_offset``.
    """

    cap_id: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.offset: int | None = None
        self.next_offset = 0
        self.define(0, Register("cap_header"))  # subclasses redefine it for their bits 31:16

    def read_dw(self, rel: int) -> int:
        v = super().read_dw(rel)
        if rel == 0:
            v = (v & 0xFFFF_0000) | (self.next_offset & 0xFF) << 8 | (self.cap_id & 0xFF)
        return v

    def write_dw(self, rel: int, data: int, byte_mask: int = DW_MASK) -> RegisterWrite | None:
        if rel == 0:
            byte_mask &= 0xFFFF_0000
        return super().write_dw(rel, data, byte_mask)


class ExtendedCapability(RegisterBlock):
    """A PCIe extended capability. Header DW: ID (15:0), version (19:16), next offset (31:20)."""

    cap_id: int = 0
    version: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.offset: int | None = None
        self.next_offset = 0

    def read_dw(self, rel: int) -> int:
        if rel == 0:
            return (self.cap_id & 0xFFFF) | (self.version & 0xF) << 16 | (self.next_offset & 0xFFC) << 20
        return super().read_dw(rel)

    def write_dw(self, rel: int, data: int, byte_mask: int = DW_MASK) -> RegisterWrite | None:
        if rel == 0:
            return None
        return super().write_dw(rel, data, byte_mask)


class PowerManagementCapability(Capability):
    """Power Management (ID 0x01): PMC in the header DW, PMCSR at +4.

    Only D0 and D3hot are supported (PMC D1/D2 support bits clear); a write of an unsupported state
    is completed but changes nothing (PCI PM 1.2 §5.4.1 / Linux pci_set_power_state checks).
    ``on_power_state(old, new)`` fires on every accepted transition. No_Soft_Reset (PMCSR bit 3)
    defaults to 1: an IDE-capable device keeps its state across D3hot (PCIe §6.33.8, TRUST_MODELS §1).
    """

    cap_id = CapabilityId.POWER_MANAGEMENT
    size = 0x08

    def __init__(self, *, no_soft_reset: bool = True,
                 on_power_state: Callable[[PowerState, PowerState], None] | None = None) -> None:
        super().__init__()
        self.on_power_state = on_power_state
        pmc = 0x0003  # PM spec version 1.2; no D1/D2, no PME from any state
        self.define(0, Register("pmc", reset=pmc << 16))
        reset = int(PmcsrBit.NO_SOFT_RESET) if no_soft_reset else 0
        self.pmcsr = self.define(4, Register(
            "pmcsr", reset=reset, rw=0x3 | int(PmcsrBit.PME_ENABLE), rw1c=int(PmcsrBit.PME_STATUS),
            write_hook=self._pmcsr_written))

    @property
    def power_state(self) -> PowerState:
        return PowerState(self.pmcsr.value & 0x3)

    @property
    def no_soft_reset(self) -> bool:
        return bool(self.pmcsr.value & PmcsrBit.NO_SOFT_RESET)

    def _pmcsr_written(self, w: RegisterWrite) -> None:
        old, new = PowerState(w.old & 3), PowerState(w.new & 3)
        if new in (PowerState.D1, PowerState.D2):
            self.pmcsr.set_field(0x3, old)  # unsupported state: ignored
            return
        if old != new and self.on_power_state is not None:
            self.on_power_state(old, new)


class PcieCapability(Capability):
    """PCI Express capability (ID 0x10), version 2, 0x3C bytes.

    Device Control bit 15 (Initiate FLR) calls ``on_flr``; Link Control Retrain Link / Link Disable
    call ``on_link_control``. Link Status is driven by the owner through :meth:`set_link`.
    """

    cap_id = CapabilityId.PCI_EXPRESS
    size = 0x3C

    def __init__(self, *, device_type: PcieDeviceType = PcieDeviceType.ENDPOINT, flr_capable: bool = True,
                 max_link_speed: int = 4, max_link_width: int = 16,
                 on_flr: Callable[[], None] | None = None,
                 on_link_control: Callable[[RegisterWrite], None] | None = None) -> None:
        super().__init__()
        self.on_flr = on_flr
        self.on_link_control = on_link_control
        self.device_type = device_type
        flags = 0x2 | int(device_type) << 4
        self.define(0x00, Register("pcie_flags", reset=flags << 16))
        devcap = (DEVCAP_FLR if flr_capable else 0) | 0x1  # max payload 256 B
        self.define(0x04, Register("devcap", reset=devcap))
        self.devctl = self.define(0x08, Register(
            "devctl_devsta", reset=0x2810, rw=0x7FFF,  # every Device Control bit but Initiate FLR is RW
            pulse=int(DevCtl.INITIATE_FLR) if flr_capable else 0,
            rw1c=0x000F << 16, write_hook=self._devctl_written))
        lnkcap = (max_link_speed & 0xF) | (max_link_width & 0x3F) << 4 | LNKCAP_DLLLARC
        self.define(0x0C, Register("lnkcap", reset=lnkcap, keep_on_flr=True))
        self.lnkctl = self.define(0x10, Register(
            "lnkctl_lnksta", rw=0x01C3 | int(LnkCtl.LINK_DISABLE), pulse=int(LnkCtl.RETRAIN_LINK),
            rw1c=0xC000 << 16, write_hook=self._lnkctl_written, keep_on_flr=True))
        self.define(0x24, Register("devcap2", reset=0x0001_0000))
        self.define(0x28, Register("devctl2", rw=0x0000_043F))
        self.define(0x2C, Register("lnkcap2", reset=((1 << (max_link_speed + 1)) - 2) & 0xFE,
                                       keep_on_flr=True))  # Supported Link Speeds Vector, bits 7:1
        self.define(0x30, Register("lnkctl2", rw=0x0000_000F, reset=max_link_speed, keep_on_flr=True))

    def _devctl_written(self, w: RegisterWrite) -> None:
        if w.pulses & DevCtl.INITIATE_FLR and self.on_flr is not None:
            self.on_flr()

    def _lnkctl_written(self, w: RegisterWrite) -> None:
        if self.on_link_control is not None and (w.pulses or (w.changed & LnkCtl.LINK_DISABLE)):
            self.on_link_control(w)

    def set_link(self, *, up: bool, speed: int = 0, width: int = 0) -> None:
        """Hardware side: reflect the link in Link Status (speed, width, DLL Link Active)."""
        sta = (speed & 0xF) | (width & 0x3F) << 4 | int(LnkSta.DLL_LINK_ACTIVE) if up else 0
        self.lnkctl.value = (self.lnkctl.value & 0xFFFF) | sta << 16

    @property
    def link_up(self) -> bool:
        return bool((self.lnkctl.value >> 16) & LnkSta.DLL_LINK_ACTIVE)

    def set_transactions_pending(self, pending: bool) -> None:
        self.devctl.set_bits(int(DevSta.TRANSACTIONS_PENDING) << 16, pending)


# --- DOE (PROTOCOLS.md §1.1-1.2) -------------------------------------------------------------


class DoeRegister(enum.IntEnum):
    """DOE register offsets from the capability base (§1.2)."""

    CAPABILITIES = 0x04
    CONTROL = 0x08
    STATUS = 0x0C
    WRITE_DATA = 0x10
    READ_DATA = 0x14


class DoeControl(enum.IntFlag):
    ABORT = 1 << 0
    INTERRUPT_ENABLE = 1 << 1
    GO = 1 << 31


class DoeStatus(enum.IntFlag):
    BUSY = 1 << 0
    INTERRUPT_STATUS = 1 << 1
    ERROR = 1 << 2
    DATA_OBJECT_READY = 1 << 31


class DoeRegisterTarget(Protocol):
    """What sits behind a DOE capability's registers: the mailbox model (``sim.devices.doe_mailbox``)."""

    def read_register(self, reg: DoeRegister) -> int: ...

    def write_register(self, reg: DoeRegister, value: int) -> None: ...

    def reset(self, kind: ResetKind) -> None: ...


class DoeCapability(ExtendedCapability):
    """DOE extended capability (0x2E): the five registers are forwarded to the mailbox model.

    The mailbox registers are DW-access only (§1.2): a write with partial byte enables is dropped.
    """

    cap_id = ExtCapabilityId.DOE
    size = 0x18

    def __init__(self, mailbox: DoeRegisterTarget, *, version: int = 2) -> None:
        super().__init__()
        self.mailbox = mailbox
        self.version = version

    def read_dw(self, rel: int) -> int:
        if rel == 0:
            return super().read_dw(0)
        if rel in DoeRegister._value2member_map_:
            return self.mailbox.read_register(DoeRegister(rel)) & DW_MASK
        return 0

    def write_dw(self, rel: int, data: int, byte_mask: int = DW_MASK) -> RegisterWrite | None:
        if rel in DoeRegister._value2member_map_ and byte_mask == DW_MASK:
            self.mailbox.write_register(DoeRegister(rel), data & DW_MASK)
        return None

    def reset(self, kind: ResetKind) -> None:
        self.mailbox.reset(kind)


# --- IDE (PROTOCOLS.md §7.1) -------------------------------------------------------------------


class IdeCapFlag(enum.IntFlag):
    """IDE Capability register (cap + 0x04) flag bits."""

    LINK = 1 << 0
    SELECTIVE = 1 << 1
    FLOW_THROUGH = 1 << 2
    PARTIAL_HEADER_ENCRYPTION = 1 << 3
    AGGREGATION = 1 << 4
    PCRC = 1 << 5
    IDE_KM = 1 << 6
    SELECTIVE_CONFIG = 1 << 7
    TEE_LIMITED = 1 << 24


class IdeStreamState(enum.IntEnum):
    """Link/Selective IDE Stream Status bits 3:0."""

    INSECURE = 0
    SECURE = 2


class IdeStreamKind(enum.Enum):
    LINK = "link"
    SELECTIVE = "selective"


IDE_CTL_ENABLE = 1 << 0
IDE_STS_INTEGRITY_FAIL = 1 << 31
IDE_LINK_CTL_RW = 0xFF3F_FDFD  # enable, aggregation, PCRC, partial header, algorithm, TC, stream id
IDE_SEL_CTL_RW = 0xFFFF_FFFD  # the link bits plus config-requests enable, default stream, TEE-limited


def ide_ctl_stream_id(ctl: int) -> int:
    return (ctl >> 24) & 0xFF


@dataclass(frozen=True)
class IdeStreamBlock:
    """Where one stream's registers live inside the IDE capability (relative offsets)."""

    kind: IdeStreamKind
    index: int
    control: int
    status: int
    base: int  # first DW of the block (= control for link blocks, the capability DW for selective)
    n_assoc: int = 0


class IdeCapability(ExtendedCapability):
    """IDE extended capability (0x30) with link and selective stream register blocks (§7.1).

    Stream Status is hardware-driven: the owner calls :meth:`set_state`. A write that changes a
    stream's Control register calls ``on_stream_control(block, RegisterWrite)``; other writes go to
    the space's observers as usual (TDISP: IDE register changes on a locked TDI are config changes).
    Integrity Check Fail (Status bit 31) is modeled RW1C [U].
    """

    cap_id = ExtCapabilityId.IDE
    version = 1

    def __init__(self, *, flags: IdeCapFlag = IdeCapFlag.SELECTIVE | IdeCapFlag.IDE_KM,
                 link_tcs: int = 0, selective_assoc: tuple[int, ...] = (1,), algorithm: int = 0,
                 on_stream_control: Callable[[IdeStreamBlock, RegisterWrite], None] | None = None) -> None:
        super().__init__()
        if link_tcs and not flags & IdeCapFlag.LINK:
            flags |= IdeCapFlag.LINK
        if selective_assoc:
            flags |= IdeCapFlag.SELECTIVE
        if not 0 <= link_tcs <= 8 or len(selective_assoc) > 256:
            raise ValueError("IDE capability: link TCs 0..8, at most 256 selective streams")
        self.on_stream_control = on_stream_control
        self.blocks: list[IdeStreamBlock] = []
        cap = int(flags) | (algorithm & 0x1F) << 8
        if link_tcs:
            cap |= (link_tcs - 1) << 13
        if selective_assoc:
            cap |= (len(selective_assoc) - 1) << 16
        self.define(0x04, Register("ide_cap", reset=cap))
        self.define(0x08, Register("ide_ctl", rw=int(IdeCapFlag.FLOW_THROUGH) if flags & IdeCapFlag.FLOW_THROUGH
                                   else 0))
        rel = 0x0C
        self.size = 0x0C + 8 * link_tcs + sum(20 + 12 * n for n in selective_assoc)
        for i in range(link_tcs):
            blk = IdeStreamBlock(IdeStreamKind.LINK, i, rel, rel + 4, rel)
            self.define(rel, Register(f"link{i}_ctl", rw=IDE_LINK_CTL_RW, write_hook=self._ctl_hook(blk)))
            self.define(rel + 4, Register(f"link{i}_sts", rw1c=IDE_STS_INTEGRITY_FAIL))
            self.blocks.append(blk)
            rel += 8
        for i, n in enumerate(selective_assoc):
            if not 0 <= n <= 15:
                raise ValueError("at most 15 address association blocks per stream")
            blk = IdeStreamBlock(IdeStreamKind.SELECTIVE, i, rel + 4, rel + 8, rel, n)
            self.define(rel, Register(f"sel{i}_cap", reset=n))
            self.define(rel + 4, Register(f"sel{i}_ctl", rw=IDE_SEL_CTL_RW, write_hook=self._ctl_hook(blk)))
            self.define(rel + 8, Register(f"sel{i}_sts", rw1c=IDE_STS_INTEGRITY_FAIL))
            self.define(rel + 0x0C, Register(f"sel{i}_rid1", rw=0x00FF_FF00))
            self.define(rel + 0x10, Register(f"sel{i}_rid2", rw=0xFFFF_FF01))
            for a in range(n):
                base = rel + 0x14 + 12 * a
                self.define(base, Register(f"sel{i}_addr{a}_1", rw=0xFFFF_FF01))
                self.define(base + 4, Register(f"sel{i}_addr{a}_2", rw=DW_MASK))
                self.define(base + 8, Register(f"sel{i}_addr{a}_3", rw=DW_MASK))
            self.blocks.append(blk)
            rel += 20 + 12 * n

    def _ctl_hook(self, blk: IdeStreamBlock) -> WriteHook:
        def hook(w: RegisterWrite) -> None:
            if w.changed and self.on_stream_control is not None:
                self.on_stream_control(blk, w)
        return hook

    def block(self, kind: IdeStreamKind, index: int) -> IdeStreamBlock:
        for b in self.blocks:
            if b.kind is kind and b.index == index:
                return b
        raise KeyError(f"no {kind.value} IDE stream block {index}")

    def selective_blocks(self) -> list[IdeStreamBlock]:
        return [b for b in self.blocks if b.kind is IdeStreamKind.SELECTIVE]

    def control(self, blk: IdeStreamBlock) -> int:
        return self.reg(blk.control).value

    def enabled(self, blk: IdeStreamBlock) -> bool:
        return bool(self.control(blk) & IDE_CTL_ENABLE)

    def stream_id(self, blk: IdeStreamBlock) -> int:
        return ide_ctl_stream_id(self.control(blk))

    def state(self, blk: IdeStreamBlock) -> IdeStreamState:
        v = self.reg(blk.status).value & 0xF
        return IdeStreamState(v) if v in IdeStreamState._value2member_map_ else IdeStreamState.INSECURE

    def set_state(self, blk: IdeStreamBlock, state: IdeStreamState, *, integrity_fail: bool = False) -> None:
        """Hardware side: the engine reports Secure/Insecure (and a received integrity-fail message)."""
        r = self.reg(blk.status)
        r.set_field(0xF, int(state))
        if integrity_fail:
            r.set_bits(IDE_STS_INTEGRITY_FAIL)

    def register_dws(self) -> tuple[int, ...]:
        """The register block as IDE_KM QUERY_RESP carries it (§6.2): every DW after the header."""
        return tuple(self.read_dw(rel) for rel in range(4, self.size, 4))


# --------------------------------------------------------------------------------------------
# The config space of one function
# --------------------------------------------------------------------------------------------


ConfigWriteObserver = Callable[["ConfigSpace", RegisterWrite], None]
C = TypeVar("C", bound=RegisterBlock)


class ConfigSpace:
    """4 KiB configuration space of one function.

    ``add_capability`` / ``add_ext_capability`` place capability objects (classic from 0x40,
    extended from 0x100), link them and return them. Software-visible accesses are
    :meth:`read_dw` / :meth:`write_dw` (with byte enables) and the sized :meth:`read` / :meth:`write`.
    Every write is reported to observers with the absolute offset, so the endpoint can see BAR,
    Command and IDE changes without the capabilities knowing about TDISP.
    """

    def __init__(self, header: ConfigHeader) -> None:
        self.header = header
        self._classic: list[Capability] = []
        self._extended: list[ExtendedCapability] = []
        self._observers: list[ConfigWriteObserver] = []
        self._next_classic = FIRST_CLASSIC_CAP
        self._next_ext = FIRST_EXT_CAP

    # --- building ---
    def add_capability(self, cap: Capability) -> Capability:
        size = (cap.size + 3) & ~3
        if cap.offset is not None:
            raise ValueError(f"{type(cap).__name__} is already placed at 0x{cap.offset:x}")
        if self._next_classic + size > LEGACY_SPACE_END:
            raise ValueError("classic capabilities do not fit below 0x100")
        cap.offset = self._next_classic
        self._next_classic += size
        if self._classic:
            self._classic[-1].next_offset = cap.offset
        else:
            self.header.cap_ptr.reset = self.header.cap_ptr.value = cap.offset
            self.header.command.reset |= int(Status.CAP_LIST) << 16
            self.header.command.value |= int(Status.CAP_LIST) << 16
        self._classic.append(cap)
        return cap

    def add_ext_capability(self, cap: ExtendedCapability) -> ExtendedCapability:
        size = (cap.size + 3) & ~3
        if cap.offset is not None:
            raise ValueError(f"{type(cap).__name__} is already placed at 0x{cap.offset:x}")
        if self._next_ext + size > CONFIG_SPACE_SIZE:
            raise ValueError("extended capabilities do not fit in 4 KiB")
        cap.offset = self._next_ext
        self._next_ext += size
        if self._extended:
            self._extended[-1].next_offset = cap.offset
        self._extended.append(cap)
        return cap

    def capabilities(self) -> tuple[Capability, ...]:
        return tuple(self._classic)

    def ext_capabilities(self) -> tuple[ExtendedCapability, ...]:
        return tuple(self._extended)

    def get(self, cls: type[C]) -> C:
        """The first capability of a Python type (model-side direct access, not a register walk)."""
        for cap in (*self._classic, *self._extended):
            if isinstance(cap, cls):
                return cap
        raise KeyError(f"no {cls.__name__} in this config space")

    def add_write_observer(self, observer: ConfigWriteObserver) -> None:
        self._observers.append(observer)

    # --- accesses ---
    def _block_at(self, offset: int) -> tuple[RegisterBlock, int] | None:
        if offset < self.header.size:
            return self.header, offset
        caps: list[Capability] | list[ExtendedCapability] = (
            self._classic if offset < LEGACY_SPACE_END else self._extended)
        for cap in caps:
            assert cap.offset is not None
            if cap.offset <= offset < cap.offset + ((cap.size + 3) & ~3):
                return cap, offset - cap.offset
        return None

    @staticmethod
    def _check(offset: int, size: int = 4) -> None:
        if size not in (1, 2, 4):
            raise ConfigAccessError(f"config access size {size} (1, 2 or 4 only)")
        if offset < 0 or offset + size > CONFIG_SPACE_SIZE or offset % size:
            raise ConfigAccessError(f"config offset 0x{offset:x} size {size} is outside 4 KiB or misaligned")

    def read_dw(self, offset: int) -> int:
        self._check(offset)
        hit = self._block_at(offset)
        return hit[0].read_dw(hit[1]) if hit else 0

    def write_dw(self, offset: int, value: int, byte_enable: int = 0xF) -> None:
        self._check(offset)
        mask = byte_enable_mask(byte_enable)
        hit = self._block_at(offset)
        if hit is None or not mask:
            return
        event = hit[0].write_dw(hit[1], value & DW_MASK, mask)
        if event is not None:
            event = RegisterWrite(event.register, event.old, event.new, event.pulses, event.data, event.byte_mask,
                                  offset)
            for obs in list(self._observers):
                obs(self, event)

    def read(self, offset: int, size: int = 4) -> int:
        self._check(offset, size)
        dw = self.read_dw(offset & ~3)
        shift = 8 * (offset & 3)
        return (dw >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        self._check(offset, size)
        shift = 8 * (offset & 3)
        be = ((1 << size) - 1) << (offset & 3)
        self.write_dw(offset & ~3, (value & ((1 << (8 * size)) - 1)) << shift, be)

    def reset(self, kind: ResetKind) -> None:
        """Return registers to their reset values (FLR keeps registers marked ``keep_on_flr``)."""
        self.header.reset(kind)
        for cap in (*self._classic, *self._extended):
            cap.reset(kind)

    # --- convenience for model code ---
    @property
    def command(self) -> Command:
        return self.header.command_bits

    def dump(self) -> bytes:
        """All 4 KiB as software would read them (useful for traces and golden tests)."""
        return b"".join(self.read_dw(o).to_bytes(4, "little") for o in range(0, CONFIG_SPACE_SIZE, 4))


# --------------------------------------------------------------------------------------------
# Driver-style capability walks (registers only)
# --------------------------------------------------------------------------------------------


DwReader = Callable[[int], int]


def find_capability(read_dw: DwReader, cap_id: int) -> int | None:
    """Offset of the first classic capability with ``cap_id``, walking from 0x34 like Linux pci_find_capability."""
    if not (read_dw(0x04) >> 16) & Status.CAP_LIST:
        return None
    pos = read_dw(0x34) & 0xFC
    for _ in range(CAP_FIND_TTL):
        if pos < FIRST_CLASSIC_CAP:
            return None
        header = read_dw(pos)
        if header & 0xFF == 0xFF:
            return None
        if header & 0xFF == cap_id:
            return pos
        pos = (header >> 8) & 0xFC
    return None


def find_ext_capability(read_dw: DwReader, cap_id: int, start: int = 0) -> int | None:
    """Offset of the first extended capability with ``cap_id`` after ``start`` (Linux pci_find_next_ext_capability)."""
    for pos, found, _version in walk_ext_capabilities(read_dw):
        if found == cap_id and pos > start:
            return pos
    return None


def walk_capabilities(read_dw: DwReader) -> list[tuple[int, int]]:
    """Every (offset, id) on the classic list, in list order."""
    out: list[tuple[int, int]] = []
    if not (read_dw(0x04) >> 16) & Status.CAP_LIST:
        return out
    pos = read_dw(0x34) & 0xFC
    for _ in range(CAP_FIND_TTL):
        if pos < FIRST_CLASSIC_CAP:
            break
        header = read_dw(pos)
        out.append((pos, header & 0xFF))
        pos = (header >> 8) & 0xFC
    return out


def walk_ext_capabilities(read_dw: DwReader) -> list[tuple[int, int, int]]:
    """Every (offset, id, version) on the extended list, in list order."""
    out: list[tuple[int, int, int]] = []
    pos = FIRST_EXT_CAP
    for _ in range((CONFIG_SPACE_SIZE - FIRST_EXT_CAP) // 8):
        header = read_dw(pos)
        if header in (0, DW_MASK):
            break
        out.append((pos, header & 0xFFFF, (header >> 16) & 0xF))
        pos = (header >> 20) & 0xFFC
        if pos < FIRST_EXT_CAP:
            break
    return out
