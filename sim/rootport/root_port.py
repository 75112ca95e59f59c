"""A PCIe Root Port: config space (type 1 header, PCIe, PM, IDE, DPC if built with it), key slots, link below.

Software reaches the port through :meth:`RootPort.cfg_read` / :meth:`RootPort.cfg_write` (traced
on the config channel, DW-granular with byte enables). The key slots behind the IDE capability
are reachable only through :attr:`RootPort.key_port` (:class:`~sim.rootport.ide_regs.KeyProgrammingPort`).

IDE stream state (Status bits 3:0, PROTOCOLS.md §7.1) is computed, never written: a selective
stream is Secure exactly when its Enable bit is set, its key slots are ready (a live Tx key set
and a live Rx key set for PR, NPR and CPL), the link is up, and no integrity failure has been seen
since Enable was last cleared. The per-TLP check against the endpoint's keys happens on the link.

Events that take the link down (DPC containment, Secondary Bus Reset, Link Disable, a surprise
down) make every stream Insecure and clear every key slot: "on reset all IDE streams transition
to Insecure and all keys are invalidated" (TRUST_MODELS.md §1, §4). [U] Enable bits are left as
software wrote them; software has to re-key (and may re-enable) after recovery.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from sim.crypto.aead import ide_decrypt, ide_encrypt, ide_iv
from sim.crypto.errors import AeadError
from sim.devices.config_space import (
    ConfigHeader,
    ConfigSpace,
    HeaderType,
    IdeStreamBlock,
    IdeStreamState,
    LnkCtl,
    PcieCapability,
    PcieDeviceType,
    PowerManagementCapability,
    RegisterWrite,
)
from sim.engine.faults import FaultKind, FaultRequest
from sim.engine.timing import ComponentClass
from sim.engine.trace import Channel, EventKind
from sim.rootport.dpc import DpcCapability, DpcStatus, DpcTriggerReason, DpcTriggerReasonExt, ErrorSeverity
from sim.rootport.ide_regs import KeyProgrammingPort, StreamKeySlots, root_port_ide_capability
from sim.rootport.link import Link, LinkReset, LinkState, Side
from sim.wire.codec import DecodeError
from sim.wire.ide_km import KeySet, SubStream
from sim.wire.tlp import CompletionHeader, MemRequestHeader, Tlp, TlpHeader, decode_tlp

if TYPE_CHECKING:
    from sim.engine.world import World

PLACEHOLDER_VENDOR_ID = 0x1234  # QEMU's test vendor ID: a simulated part names no real vendor
ROOT_PORT_DEVICE_ID = 0x7D10
CLASS_PCI_BRIDGE = 0x060400
BRIDGE_CONTROL_DW = 0x3C
BRIDGE_CTL_SBR = 1 << (16 + 6)  # Bridge Control (0x3E) bit 6, Secondary Bus Reset
SBR_HOLD_NS = 2_000_000  # Linux pci_reset_secondary_bus holds SBR for 2 ms
IDE_SEL_CTL_DEFAULT = 1 << 22
LINK_SPEED_GEN5 = 5
LINK_WIDTH = 16


def bdf(bus: int, device: int, function: int) -> int:
    return (bus & 0xFF) << 8 | (device & 0x1F) << 3 | (function & 0x7)


class HostMemory:
    """Sparse host memory behind the Root Complex: the target of device DMA (4 KiB pages)."""

    PAGE = 4096

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}

    def write(self, address: int, data: bytes) -> None:
        for i, b in enumerate(data):
            page = self._pages.setdefault((address + i) // self.PAGE, bytearray(self.PAGE))
            page[(address + i) % self.PAGE] = b

    def read(self, address: int, length: int) -> bytes:
        out = bytearray(length)
        for i in range(length):
            page = self._pages.get((address + i) // self.PAGE)
            if page is not None:
                out[i] = page[(address + i) % self.PAGE]
        return bytes(out)


@dataclasses.dataclass
class _StreamRuntime:
    block: IdeStreamBlock
    keys: StreamKeySlots
    failed: bool = False
    owner: str | None = None  # who allocated the register block from the pool


class RootPort:
    """One Root Port with ``streams`` selective IDE stream register blocks."""

    def __init__(self, world: World, path: str = "rp0", *, bus: int = 0, device: int = 1, function: int = 0,
                 segment: int = 0, streams: int = 4, addr_assoc: int = 1,
                 key_principals: set[str] | None = None, dpc: bool = True) -> None:
        self.world = world
        self.path = path
        self.segment = segment
        self.requester_id = bdf(bus, device, function)
        world.register(path, self, ComponentClass.HARDWARE)
        self.config = ConfigSpace(ConfigHeader(vendor_id=PLACEHOLDER_VENDOR_ID, device_id=ROOT_PORT_DEVICE_ID,
                                               class_code=CLASS_PCI_BRIDGE, header_type=HeaderType.BRIDGE))
        self.pcie = PcieCapability(device_type=PcieDeviceType.ROOT_PORT, flr_capable=False,
                                   max_link_speed=LINK_SPEED_GEN5, max_link_width=LINK_WIDTH,
                                   on_link_control=self._link_control_written)
        self.config.add_capability(self.pcie)
        self.config.add_capability(PowerManagementCapability())
        self.ide = root_port_ide_capability(streams, addr_assoc, self._stream_control_written)
        self.config.add_ext_capability(self.ide)
        # without DPC (``dpc=False``) the capability is absent: errors from below never contain the link
        self.dpc: DpcCapability | None = None
        if dpc:
            self.dpc = DpcCapability(source_id=self.requester_id, on_contain=self._contained,
                                     on_release=self._released)
            self.config.add_ext_capability(self.dpc)
        self.config.add_write_observer(self._config_written)
        self._streams = [_StreamRuntime(b, StreamKeySlots()) for b in self.ide.selective_blocks()]
        self.key_port = KeyProgrammingPort(self, allowed=key_principals)
        self.host_memory = HostMemory()
        self.tee_memory: list[tuple[int, int]] = []  # [base, limit) of confidential-guest memory
        self.link: Link | None = None
        self.stream_listeners: list[Callable[[int, IdeStreamState], None]] = []
        self.integrity_listeners: list[Callable[[int], None]] = []
        self.completion_listeners: list[Callable[[Tlp], None]] = []
        # the DPC interrupt (MSI): called on containment when DPC Interrupt Enable is set
        self.dpc_listeners: list[Callable[[DpcTriggerReason, DpcTriggerReasonExt | None], None]] = []
        self.pcie.set_link(up=False)
        if self.dpc is not None:
            world.faults.offer(path, FaultKind.DPC_TRIGGER, self._fault)
        world.faults.offer(path, FaultKind.HOT_RESET, self._fault)

    # -- config space (software's view) ---------------------------------------------------------------

    def cfg_read(self, offset: int, size: int = 4, *, by: str) -> int:
        value = self.config.read(offset, size)
        self.world.trace.emit(by, self.path, Channel.CONFIG, value.to_bytes(size, "little"),
                              f"CfgRd 0x{offset:03x}/{size} -> 0x{value:0{2 * size}x}", kind=EventKind.CONFIG_READ,
                              fields={"offset": offset, "size": size})
        return value

    def cfg_write(self, offset: int, value: int, size: int = 4, *, by: str) -> None:
        self.world.trace.emit(by, self.path, Channel.CONFIG, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"),
                              f"CfgWr 0x{offset:03x}/{size} <- 0x{value:0{2 * size}x}", kind=EventKind.CONFIG_WRITE,
                              fields={"offset": offset, "size": size})
        self.config.write(offset, value, size)

    # -- selective stream register-block pool -------------------------------------------------------

    @property
    def stream_block_count(self) -> int:
        return len(self._streams)

    def allocate_stream_block(self, owner: str) -> int | None:
        """Take a free selective stream register block (software bookkeeping, like Linux's RP pool)."""
        for s in self._streams:
            if s.owner is None:
                s.owner = owner
                return s.block.index
        return None

    def release_stream_block(self, block: int) -> None:
        self._streams[block].owner = None

    def block_owner(self, block: int) -> str | None:
        return self._streams[block].owner

    def stream_keys(self, block: int) -> StreamKeySlots:
        return self._streams[block].keys

    def stream_state(self, block: int) -> IdeStreamState:
        return self.ide.state(self._streams[block].block)

    def block_for_stream_id(self, stream_id: int) -> int | None:
        """The enabled selective block whose Control register carries this Stream ID."""
        for s in self._streams:
            if self.ide.enabled(s.block) and self.ide.stream_id(s.block) == stream_id:
                return s.block.index
        return None

    @property
    def keys_writable(self) -> bool:
        """Key slots are held in reset while the port is contained."""
        return self.dpc is None or not self.dpc.triggered

    def keys_changed(self, block: int) -> None:
        self._evaluate(self._streams[block])

    # -- link ------------------------------------------------------------------------------------------

    def attach_link(self, link: Link) -> None:
        if self.link is not None:
            raise ValueError(f"{self.path} already has a link")
        self.link = link
        self.pcie.set_link(up=link.state is LinkState.UP, speed=LINK_SPEED_GEN5, width=LINK_WIDTH)

    @property
    def link_up(self) -> bool:
        return self.link is not None and self.link.state is LinkState.UP

    def link_state_changed(self, state: LinkState) -> None:
        up = state is LinkState.UP
        self.pcie.set_link(up=up, speed=LINK_SPEED_GEN5 if up else 0, width=LINK_WIDTH if up else 0)
        if state is LinkState.DOWN:
            for s in self._streams:
                s.keys.clear()
                s.failed = False
        for s in self._streams:
            self._evaluate(s)

    def send_tlp(self, tlp: Tlp | bytes, *, tee: bool = False) -> None:
        """Send a TLP to the endpoint (MMIO from the host or a guest, or a completion to a DMA read);
        ``tee`` sets the IDE prefix's T bit (a TVM's access to its TDI, or the completion of a TEE read)."""
        if self.link is None:
            raise RuntimeError(f"{self.path} has no link")
        self.link.send(Side.ROOT_PORT, tlp.encode() if isinstance(tlp, Tlp) else bytes(tlp), tee=tee)

    def posted_write_settle_ns(self, floor_ns: int) -> int:
        """How long to wait after a device sent posted writes (MWr, all sent at once, no completion)
        before their data is certainly in host memory: a round trip of the link below, but never less
        than ``floor_ns`` (a caller's fixed wait, which covers the default hop: keeping it keeps traces
        of runs at the default link latency as they were)."""
        hop = self.link.hop_ns if self.link is not None else 0
        return max(floor_ns, 2 * hop)

    def protect_tee_memory(self, base: int, size: int) -> None:
        """Mark host memory as a confidential guest's: only TEE requests (T=1, arrived in a Secure IDE
        stream) may read or write it, as a TEE-IO platform's IOMMU enforces for TDI DMA."""
        self.tee_memory.append((base, base + size))

    def _touches_tee_memory(self, address: int, length: int) -> bool:
        return any(address < limit and base < address + length for base, limit in self.tee_memory)

    def receive_tlp(self, data: bytes, *, tee: bool = False) -> None:
        """A plain (already IDE-checked) TLP from below: DMA to host memory, or a completion.

        ``tee`` says the TLP carried T=1 inside a Secure stream; others never reach TEE memory.
        """
        try:
            tlp = decode_tlp(data)
        except DecodeError as exc:
            self.world.trace.emit(self.path, self.path, Channel.LINK, b"", f"malformed TLP from below: {exc}",
                                  kind=EventKind.TLP_MALFORMED)
            if self.dpc is not None:
                self.dpc.uncorrectable_error()  # a Malformed TLP is an uncorrectable (fatal) error
            return
        if not isinstance(tlp, Tlp):
            return
        header = tlp.header
        if isinstance(header, CompletionHeader):
            for listener in list(self.completion_listeners):
                listener(tlp)
            return
        if not tee and self._touches_tee_memory(header.address, 4 * header.length_dw):
            self.world.trace.emit(self.path, self.path, Channel.LINK, b"",
                                  f"refused {header.summary()}: TEE memory takes only T=1 requests in a Secure stream",
                                  kind=EventKind.TEE_REFUSED, fields={"at": "memory"})
            return
        if header.is_write:
            self.host_memory.write(header.address, tlp.data)
        else:
            data_out = self.host_memory.read(header.address, 4 * header.length_dw)
            cpl = CompletionHeader.with_data(self.requester_id, header.requester_id, header.tag, header.length_dw)
            self.send_tlp(Tlp(cpl, data_out), tee=tee)

    def error_message(self, severity: ErrorSeverity, source_id: int) -> bool:
        """ERR_FATAL / ERR_NONFATAL received from below; returns whether DPC triggered."""
        self.world.trace.emit(self.link.endpoint_path if self.link else "?", self.path, Channel.LINK, b"",
                              f"ERR_{severity.name} from {source_id:04x}", kind=EventKind.ERROR_MESSAGE,
                              fields={"severity": severity.name, "requester": source_id})
        return self.dpc is not None and self.dpc.error_received(severity, source_id)

    def surprise_link_down(self) -> None:
        """The link was lost without software asking: a Surprise Down error (uncorrectable)."""
        if self.dpc is not None:
            self.dpc.uncorrectable_error()

    def hot_reset(self, *, by: str, hold_ns: int = SBR_HOLD_NS) -> None:
        """Pulse Secondary Bus Reset as Linux does: set SBR, wait ``hold_ns``, clear it."""
        ctl = self.cfg_read(BRIDGE_CONTROL_DW, 4, by=by)
        self.cfg_write(BRIDGE_CONTROL_DW, ctl | BRIDGE_CTL_SBR, 4, by=by)
        self.world.call_later(hold_ns, lambda: self.cfg_write(
            BRIDGE_CONTROL_DW, self.config.read(BRIDGE_CONTROL_DW) & ~BRIDGE_CTL_SBR, 4, by=by))

    # -- IdePortCrypto (what the link calls) --------------------------------------------------------

    def ide_tx_stream(self, header: TlpHeader) -> int | None:
        """The Secure stream a TLP to the endpoint travels in: by address association (memory
        requests), by RID association (completions), else the stream marked Default."""
        secure = [s for s in self._streams if self.ide.state(s.block) is IdeStreamState.SECURE]
        for s in secure:
            if isinstance(header, MemRequestHeader) and self._address_match(s.block, header.address):
                return self.ide.stream_id(s.block)
            if isinstance(header, CompletionHeader) and self._rid_match(s.block, header.requester_id):
                return self.ide.stream_id(s.block)
        for s in secure:
            if self.ide.control(s.block) & IDE_SEL_CTL_DEFAULT:
                return self.ide.stream_id(s.block)
        return None

    def ide_seal(self, stream_id: int, sub_stream: SubStream, aad: bytes,
                 plaintext: bytes) -> tuple[KeySet, bytes, bytes] | None:
        block = self.block_for_stream_id(stream_id)
        if block is None:
            return None
        taken = self._streams[block].keys.next_tx(sub_stream)
        if taken is None:
            return None
        key_set, key, invocation = taken
        ciphertext, mac = ide_encrypt(key, ide_iv(invocation), plaintext, aad)
        return key_set, ciphertext, mac

    def ide_open(self, stream_id: int, sub_stream: SubStream, key_set: KeySet, aad: bytes,
                 ciphertext: bytes, mac: bytes) -> bytes | None:
        block = self.block_for_stream_id(stream_id)
        if block is None:
            return None  # no stream with that ID here: a key mismatch
        s = self._streams[block]
        taken = s.keys.next_rx(key_set, sub_stream) if self.ide.state(s.block) is IdeStreamState.SECURE else None
        if taken is not None:
            key, invocation = taken
            try:
                return ide_decrypt(key, ide_iv(invocation), ciphertext, mac, aad)
            except AeadError:
                pass
        self._integrity_failed(s, detected_here=True)
        return None

    def ide_fail_message(self, stream_id: int) -> None:
        block = self.block_for_stream_id(stream_id)
        if block is not None:
            self._integrity_failed(self._streams[block], detected_here=False)

    # -- internals ------------------------------------------------------------------------------------

    def _integrity_failed(self, s: _StreamRuntime, *, detected_here: bool) -> None:
        """Detected here: stream Insecure and its keys invalidated. Reported by the partner (IDE Fail
        Message): stream Insecure and Status bit 31 set. Either way it stays Insecure until software
        clears Enable."""
        s.failed = True
        if detected_here:
            s.keys.clear()
        self._evaluate(s)
        if not detected_here:
            self.ide.set_state(s.block, IdeStreamState.INSECURE, integrity_fail=True)
        self.world.trace.emit(self.path, self.path, Channel.IDE, b"",
                              f"stream blk{s.block.index} id={self.ide.stream_id(s.block)} integrity failure "
                              f"({'detected' if detected_here else 'IDE Fail Message received'})",
                              kind=EventKind.IDE_INTEGRITY, fields={"block": s.block.index,
                                                                    "stream": self.ide.stream_id(s.block),
                                                                    "detected_here": detected_here})
        for listener in list(self.integrity_listeners):
            listener(s.block.index)

    def _evaluate(self, s: _StreamRuntime) -> None:
        secure = (self.ide.enabled(s.block) and s.keys.ready() and self.link_up and not s.failed)
        new = IdeStreamState.SECURE if secure else IdeStreamState.INSECURE
        old = self.ide.state(s.block)
        if new is old:
            return
        self.ide.set_state(s.block, new)
        self.world.trace.emit(self.path, self.path, Channel.IDE, b"",
                              f"stream blk{s.block.index} id={self.ide.stream_id(s.block)} {new.name}",
                              kind=EventKind.STREAM_STATE, fields={"block": s.block.index,
                                                                   "stream": self.ide.stream_id(s.block),
                                                                   "state": new.name})
        for listener in list(self.stream_listeners):
            listener(s.block.index, new)

    def _stream_control_written(self, blk: IdeStreamBlock, w: RegisterWrite) -> None:
        s = self._streams[blk.index]
        if not w.new & 1:
            s.failed = False  # clearing Enable is how software acknowledges a failure
        self._evaluate(s)

    def _address_match(self, blk: IdeStreamBlock, address: int) -> bool:
        for a in range(blk.n_assoc):
            base = blk.base + 0x14 + 12 * a
            a1, a2, a3 = (self.ide.read_dw(base), self.ide.read_dw(base + 4), self.ide.read_dw(base + 8))
            if not a1 & 1:
                continue
            lo = (a3 << 32) | ((a1 >> 8) & 0xFFF) << 20
            hi = (a2 << 32) | ((a1 >> 20) & 0xFFF) << 20 | 0xFFFFF
            if lo <= address <= hi:
                return True
        return False

    def _rid_match(self, blk: IdeStreamBlock, rid: int) -> bool:
        r1, r2 = self.ide.read_dw(blk.base + 0x0C), self.ide.read_dw(blk.base + 0x10)
        if not r2 & 1:
            return False
        return ((r2 >> 8) & 0xFFFF) <= rid <= ((r1 >> 8) & 0xFFFF)

    def _config_written(self, _space: ConfigSpace, w: RegisterWrite) -> None:
        if w.offset == BRIDGE_CONTROL_DW and w.changed & BRIDGE_CTL_SBR and self.link is not None:
            if w.new & BRIDGE_CTL_SBR:
                self.link.hold_down("sbr", LinkReset.HOT_RESET)
            else:
                self.link.release("sbr")

    def _link_control_written(self, w: RegisterWrite) -> None:
        if self.link is None:
            return
        if w.changed & LnkCtl.LINK_DISABLE:
            if w.new & LnkCtl.LINK_DISABLE:
                self.link.hold_down("link-disable", LinkReset.LINK_DOWN)
            else:
                self.link.release("link-disable")
        elif w.pulses & LnkCtl.RETRAIN_LINK:
            self.world.trace.emit(self.path, self.link.path, Channel.LINK, b"", "retrain link requested",
                                  kind=EventKind.DPC, fields={"event": "retrain"})

    def _contained(self, reason: DpcTriggerReason, ext: DpcTriggerReasonExt | None) -> None:
        why = reason.name if ext is None else f"{reason.name}/{ext.name}"
        self.world.trace.emit(self.path, self.path, Channel.LINK, b"", f"DPC triggered ({why}): link contained",
                              kind=EventKind.DPC, fields={"event": "triggered", "reason": why})
        if self.link is not None:
            self.link.hold_down("dpc", LinkReset.DPC)
        else:
            self.link_state_changed(LinkState.DOWN)
        if self.dpc is not None and self.dpc.status & DpcStatus.INTERRUPT:
            for listener in list(self.dpc_listeners):
                listener(reason, ext)

    def _released(self) -> None:
        self.world.trace.emit(self.path, self.path, Channel.LINK, b"", "DPC released by software",
                              kind=EventKind.DPC, fields={"event": "released"})
        if self.link is not None:
            self.link.release("dpc")

    def _fault(self, req: FaultRequest) -> None:
        if req.kind is FaultKind.DPC_TRIGGER:
            severity = str(req.params.get("severity", "fatal"))
            if severity == "uncorrectable":
                if self.dpc is not None:
                    self.dpc.uncorrectable_error()
            else:
                self.error_message(ErrorSeverity(severity), self.link_partner_rid())
        elif req.kind is FaultKind.HOT_RESET:
            self.hot_reset(by="faults")

    def link_partner_rid(self) -> int:
        """RID of function 0 on the secondary bus (the endpoint below), from the bus-number register."""
        secondary = (self.config.read(0x18) >> 8) & 0xFF
        return bdf(secondary, 0, 0)
