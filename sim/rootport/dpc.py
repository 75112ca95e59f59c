"""Downstream Port Containment (DPC) extended capability of a Root Port.

Register layout from Linux ``include/uapi/linux/pci_regs.h`` (``PCI_EXP_DPC_*``), which follows
PCIe r6.0 §7.9.14; bit positions of DPC Control beyond those Linux names (Software Trigger,
bit 6) from the PCIe field order as published in public register definitions (Windows
``PCI_EXPRESS_DPC_CONTROL_REGISTER``: TriggerEnable[1:0], CompletionControl, InterruptEnable,
ErrCorEnable, PoisonedTlpEgressBlockingEnable, SoftwareTrigger, DlActiveErrCorEnable).

    +0x00  extended capability header (ID 0x001D)
    +0x04  DPC Capability (16 bits) | DPC Control (16 bits, at +0x06)
    +0x08  DPC Status (16 bits)     | DPC Error Source ID (16 bits, at +0x0A)

No RP PIO extensions (Capability bit 5 clear), so the block ends at +0x0C.

Semantics: when triggered (an uncorrectable error signalled from below while triggering is
enabled, or a software trigger) the port sets Trigger Status and contains the link below: the link
goes down, which the Root Port turns into "all streams Insecure, keys cleared, conventional reset
of the endpoint" (TRUST_MODELS.md §1, §3). Software releases containment by writing 1 to Trigger
Status (RW1C); the link then retrains (Linux ``dpc_reset_link``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from sim.devices.config_space import ExtCapabilityId, ExtendedCapability, Register, RegisterWrite

DPC_CAP_CTL = 0x04     # PCI_EXP_DPC_CAP (16 bits) and PCI_EXP_DPC_CTL (16 bits at 0x06)
DPC_STATUS_SRC = 0x08  # PCI_EXP_DPC_STATUS (16 bits) and PCI_EXP_DPC_SOURCE_ID (16 bits at 0x0A)
DPC_SIZE = 0x0C


class DpcCap(enum.IntFlag):
    """DPC Capability (cap + 0x04, low 16 bits)."""

    IRQ_MASK = 0x001F              # PCI_EXP_DPC_IRQ: interrupt message number
    RP_EXT = 0x0020                # PCI_EXP_DPC_CAP_RP_EXT
    POISONED_TLP = 0x0040          # PCI_EXP_DPC_CAP_POISONED_TLP
    SW_TRIGGER = 0x0080            # PCI_EXP_DPC_CAP_SW_TRIGGER
    DL_ACTIVE = 0x1000             # PCI_EXP_DPC_CAP_DL_ACTIVE


class DpcTriggerEnable(enum.IntEnum):
    """DPC Control bits 1:0."""

    DISABLED = 0
    FATAL = 1                      # PCI_EXP_DPC_CTL_EN_FATAL
    NONFATAL_OR_FATAL = 2          # PCI_EXP_DPC_CTL_EN_NONFATAL


class DpcCtl(enum.IntFlag):
    """DPC Control (cap + 0x06, 16 bits)."""

    TRIGGER_ENABLE_MASK = 0x0003
    COMPLETION_CONTROL = 0x0004
    INT_EN = 0x0008                # PCI_EXP_DPC_CTL_INT_EN
    ERR_COR_EN = 0x0010
    POISONED_TLP_EGRESS = 0x0020
    SW_TRIGGER = 0x0040            # write 1 to trigger; always reads 0
    DL_ACTIVE_ERR_COR = 0x0080


class DpcStatus(enum.IntFlag):
    """DPC Status (cap + 0x08, 16 bits)."""

    TRIGGER = 0x0001               # PCI_EXP_DPC_STATUS_TRIGGER (RW1C: writing 1 releases containment)
    REASON_MASK = 0x0006           # PCI_EXP_DPC_STATUS_TRIGGER_RSN
    INTERRUPT = 0x0008             # PCI_EXP_DPC_STATUS_INTERRUPT (RW1C)
    RP_BUSY = 0x0010               # PCI_EXP_DPC_RP_BUSY
    REASON_EXT_MASK = 0x0060       # PCI_EXP_DPC_STATUS_TRIGGER_RSN_EXT


class DpcTriggerReason(enum.IntEnum):
    """Trigger Reason (bits 2:1), with Reason Extension (bits 6:5) when Reason = 3."""

    UNCORRECTABLE = 0              # PCI_EXP_DPC_STATUS_TRIGGER_RSN_UNCOR: an uncorrectable error detected here
    ERR_NONFATAL = 1               # PCI_EXP_DPC_STATUS_TRIGGER_RSN_NFE: ERR_NONFATAL received from below
    ERR_FATAL = 2                  # PCI_EXP_DPC_STATUS_TRIGGER_RSN_FE: ERR_FATAL received from below
    IN_EXTENSION = 3               # PCI_EXP_DPC_STATUS_TRIGGER_RSN_IN_EXT


class DpcTriggerReasonExt(enum.IntEnum):
    RP_PIO = 0                     # PCI_EXP_DPC_STATUS_TRIGGER_RSN_RP_PIO
    SW_TRIGGER = 1                 # PCI_EXP_DPC_STATUS_TRIGGER_RSN_SW_TRIGGER (0x0020)


class ErrorSeverity(enum.Enum):
    """An error message a port can receive from the link below."""

    NONFATAL = "nonfatal"
    FATAL = "fatal"


DPC_CTL_RW = int(DpcCtl.TRIGGER_ENABLE_MASK | DpcCtl.COMPLETION_CONTROL | DpcCtl.INT_EN | DpcCtl.ERR_COR_EN
                 | DpcCtl.POISONED_TLP_EGRESS | DpcCtl.DL_ACTIVE_ERR_COR)


class DpcCapability(ExtendedCapability):
    """The DPC registers plus the trigger/release state machine.

    ``on_contain(reason)`` runs when the port enters containment; ``on_release()`` when software
    clears Trigger Status. The Root Port wires them to its link.
    """

    cap_id = ExtCapabilityId.DPC
    version = 1
    size = DPC_SIZE

    def __init__(self, *, source_id: int = 0, interrupt_message: int = 0,
                 on_contain: Callable[[DpcTriggerReason, DpcTriggerReasonExt | None], None] | None = None,
                 on_release: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.on_contain = on_contain
        self.on_release = on_release
        self._source_id = source_id & 0xFFFF
        cap = (interrupt_message & DpcCap.IRQ_MASK) | DpcCap.POISONED_TLP | DpcCap.SW_TRIGGER | DpcCap.DL_ACTIVE
        self.cap_ctl = self.define(DPC_CAP_CTL, Register(
            "dpc_cap_ctl", reset=int(cap), rw=DPC_CTL_RW << 16, pulse=int(DpcCtl.SW_TRIGGER) << 16,
            write_hook=self._ctl_written))
        self.status_src = self.define(DPC_STATUS_SRC, Register(
            "dpc_status_source", rw1c=int(DpcStatus.TRIGGER | DpcStatus.INTERRUPT), write_hook=self._status_written))

    # -- register views -----------------------------------------------------------------------------

    @property
    def control(self) -> DpcCtl:
        return DpcCtl((self.cap_ctl.value >> 16) & 0xFFFF)

    @property
    def status(self) -> DpcStatus:
        return DpcStatus(self.status_src.value & 0xFFFF)

    @property
    def trigger_enable(self) -> DpcTriggerEnable:
        v = int(self.control & DpcCtl.TRIGGER_ENABLE_MASK)
        return DpcTriggerEnable(v) if v in DpcTriggerEnable._value2member_map_ else DpcTriggerEnable.DISABLED

    @property
    def triggered(self) -> bool:
        return bool(self.status & DpcStatus.TRIGGER)

    @property
    def reason(self) -> DpcTriggerReason:
        return DpcTriggerReason((self.status_src.value >> 1) & 0x3)

    @property
    def reason_ext(self) -> DpcTriggerReasonExt | None:
        if self.reason is not DpcTriggerReason.IN_EXTENSION:
            return None
        v = (self.status_src.value >> 5) & 0x3
        return DpcTriggerReasonExt(v) if v in DpcTriggerReasonExt._value2member_map_ else None

    @property
    def source_id(self) -> int:
        return (self.status_src.value >> 16) & 0xFFFF

    # -- hardware-side events -----------------------------------------------------------------------

    def error_received(self, severity: ErrorSeverity, source_id: int | None = None) -> bool:
        """An ERR_FATAL / ERR_NONFATAL message from below; returns whether DPC triggered."""
        te = self.trigger_enable
        if te is DpcTriggerEnable.DISABLED:
            return False
        if severity is ErrorSeverity.NONFATAL and te is not DpcTriggerEnable.NONFATAL_OR_FATAL:
            return False
        reason = DpcTriggerReason.ERR_FATAL if severity is ErrorSeverity.FATAL else DpcTriggerReason.ERR_NONFATAL
        return self.trigger(reason, source_id=source_id)

    def uncorrectable_error(self) -> bool:
        """An unmasked uncorrectable error detected by the port itself (e.g. a surprise link down)."""
        if self.trigger_enable is DpcTriggerEnable.DISABLED:
            return False
        return self.trigger(DpcTriggerReason.UNCORRECTABLE)

    def trigger(self, reason: DpcTriggerReason, ext: DpcTriggerReasonExt | None = None, *,
                source_id: int | None = None) -> bool:
        """Enter containment (no effect while already triggered); returns whether it triggered now."""
        if self.triggered:
            return False
        value = int(DpcStatus.TRIGGER) | int(reason) << 1
        if reason is DpcTriggerReason.IN_EXTENSION and ext is not None:
            value |= int(ext) << 5
        if self.control & DpcCtl.INT_EN:
            value |= int(DpcStatus.INTERRUPT)
        src = self._source_id if source_id is None else source_id & 0xFFFF
        if reason not in (DpcTriggerReason.ERR_FATAL, DpcTriggerReason.ERR_NONFATAL):
            src = 0  # Error Source ID is only meaningful for received ERR_* messages
        self.status_src.value = value | src << 16
        if self.on_contain is not None:
            self.on_contain(reason, ext)
        return True

    # -- software writes ------------------------------------------------------------------------------

    def _ctl_written(self, w: RegisterWrite) -> None:
        if (w.pulses >> 16) & DpcCtl.SW_TRIGGER and self.trigger_enable is not DpcTriggerEnable.DISABLED:
            self.trigger(DpcTriggerReason.IN_EXTENSION, DpcTriggerReasonExt.SW_TRIGGER)

    def _status_written(self, w: RegisterWrite) -> None:
        was, now = w.old & DpcStatus.TRIGGER, w.new & DpcStatus.TRIGGER
        if was and not now:
            # Trigger Status cleared: reason and source are no longer valid; the link may retrain.
            self.status_src.value &= int(DpcStatus.INTERRUPT)
            if self.on_release is not None:
                self.on_release()
