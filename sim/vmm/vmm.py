"""The VMM: assigns devices to confidential guests and carries everything they cannot reach themselves.

A confidential guest has no DOE mailbox, no firmware mailbox and no Root Port key path of its own;
every such request leaves the guest (a VM exit) and is carried by the VMM, which is *not* trusted by
the guest (TRUST_MODELS.md §5-6; the TDISP spec: the "TSM is permitted to use an untrusted channel
(e.g., proxy through the VMM)"). What the VMM relays, per trust model (``trust-design.md``):

* thin-guest / thin-vmm: the guest's DOE objects, to the host kernel's DOE driver
  (``host.forward_doe``). Inside an SPDM session they are secured records: every relay hop is
  traced with the record bytes and, as ``secured_plaintext``, the message inside (simulator
  bookkeeping the guest supplies), so the exposure tracker scores the VMM SAW_CIPHERTEXT_ONLY;
* thin-guest: sealed guest <-> firmware channel frames to the thin key-slot service (ciphertext);
* thin-vmm: there is no firmware service, so the guest hands its IDE keys *in the clear* to the VMM,
  which writes the Root Port key slots itself (principal ``"vmm"``) — the VMM sees the keys and joins
  the guest's TCB, the trade-off Lukas Wunner names in the 2023 thread;
* fat: the guest's GUEST_REQUESTs, sealed in GUEST_CHANNEL frames under the guest's channel key
  (:mod:`sim.firmware.guest_channel`), to the host's fat-TSM driver, which runs the SPDM_REQUEST
  loop; the hops are traced with the sealed content as ``secured_plaintext`` (ciphertext to VMM
  and host), and the answers come back sealed.

The VMM also tells a guest when the host reports a reset (DPC, hot reset, D3cold, FLR) of a device
assigned to it, so the guest can re-run its flow (thin) or re-accept (fat), and (fat) when the TSM
driver re-bound the guest's TDIs after reconnecting a reset device. A fat guest cannot STOP a TDI
itself (``pci_tsm_req_scope`` STATE_CHANGE allows only UNLOCKED->LOCKED and LOCKED->RUN, and bind /
unbind are host-side link operations, TRUST_MODELS.md §1-2), so after an FLR it asks the VMM to
re-bind: TDI_UNBIND (STOP) and TDI_BIND (LOCK) through the host's TSM driver (:meth:`Vmm.rebind_tdi`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from sim.engine.runner import SimGen
from sim.engine.timing import ComponentClass, Op
from sim.engine.trace import Channel, EventKind
from sim.engine.world import World
from sim.firmware.commands import FwFrame, TdiBind, TdiUnbind, frame_fields
from sim.firmware.commands import summarize as summarize_frame
from sim.firmware.core import enable_selective_stream
from sim.firmware.keyslot_service import KeySlotService
from sim.scenario.platform import Platform
from sim.wire.doe import DoeObject, DoeObjectType

VMM_PATH = "vmm"
VMM_PRINCIPAL = "vmm"
# Host kernel events (``sim.host.kernel.HostEventKind`` values) the VMM passes on to a device's guest:
# the device was lost (contained / powered off), and the device is usable again.
LOST_EVENT_KINDS = frozenset({"error-detected", "d3cold-entered"})
BACK_EVENT_KINDS = frozenset({"recovered"})
FLR_NOTICE = "flr"          # a function of the device went through an FLR (its TDIs are in ERROR)
REBOUND_NOTICE = "rebound"  # fat: the TSM driver reconnected the device and re-bound the guest's TDIs
RESET_EVENT_KINDS = LOST_EVENT_KINDS | BACK_EVENT_KINDS | {FLR_NOTICE}


class DoeForwarder(Protocol):
    """What the VMM needs from the host kernel (``sim.host.kernel.HostKernel``)."""

    def forward_doe(self, device: str, object_type: DoeObjectType, payload: bytes,
                    secured_plaintext: bytes | None = None) -> SimGen[bytes | None]: ...


class GuestSide(Protocol):
    """What the VMM needs from a guest (``sim.vmm.guest.Guest``)."""

    name: str

    def on_reset_notice(self, device: str, reason: str) -> None: ...


class FirmwareRelayTarget(Protocol):
    """The key-slot service's sealed-frame entry (``KeySlotService.command_sealed``)."""

    def command_sealed(self, caller: str, frame: bytes, *,
                       secured_plaintext: bytes | None = None) -> SimGen[tuple[bytes, bytes | None]]: ...


class GuestRequestTarget(Protocol):
    """The fat TSM's host-side driver entry (``FatTsm.issue``), which runs the SPDM_REQUEST loop."""

    def issue(self, frame: bytes, *, caller: str = "host") -> SimGen[bytes]: ...


@dataclasses.dataclass(frozen=True)
class ResetNotice:
    device: str
    guest: str
    reason: str
    time_ns: int


class RelayRefused(Exception):
    """A guest asked the VMM to carry something for a device that is not assigned to it."""


def doe_object_bytes(object_type: DoeObjectType | int, payload: bytes) -> bytes:
    """The DOE data object (header + DW-padded payload) a relay hop carries, as the mailbox would see it."""
    return DoeObject.pcisig(DoeObjectType(object_type), payload).encode()


class Vmm:
    """Component ``"vmm"`` (host-cpu). See the module docstring."""

    def __init__(self, world: World, host: DoeForwarder, firmware: object | None = None, *,
                 platform: Platform | None = None, path: str = VMM_PATH, register: bool = True) -> None:
        self.world = world
        self.host = host
        self.firmware = firmware
        self.path = path
        if register:
            world.register(path, self, ComponentClass.HOST_CPU)
        self.platform = platform if platform is not None else getattr(host, "platform", None)
        self.guests: dict[str, GuestSide] = {}
        self.assignments: dict[str, str] = {}
        self.notices: list[ResetNotice] = []
        self.relayed_doe = 0
        self.relayed_firmware = 0
        self._slot_service: KeySlotService | None = None
        listeners = getattr(host, "listeners", None)
        if isinstance(listeners, list):
            listeners.append(self._on_host_event)
        rebound = getattr(firmware, "rebind_listeners", None)
        if isinstance(rebound, list):
            rebound.append(self._on_rebound)

    # -- guests and devices ----------------------------------------------------------------------------

    def attach_guest(self, guest: GuestSide) -> None:
        if guest.name in self.guests:
            raise ValueError(f"guest '{guest.name}' is already attached")
        self.guests[guest.name] = guest

    def assign(self, device: str, guest: str) -> None:
        """Pass ``device`` through to ``guest`` (the host stops using it; its SPDM belongs to the guest)."""
        if guest not in self.guests:
            raise KeyError(f"no guest '{guest}' attached to the VMM")
        owner = self.assignments.get(device)
        if owner is not None and owner != guest:
            raise ValueError(f"device '{device}' is already assigned to '{owner}'")
        self.assignments[device] = guest
        self.world.trace.emit(self.path, guest, Channel.LINK, b"", f"assign {device} to {guest}", kind=EventKind.VMM,
                              fields={"what": "assign", "device": device})

    def unassign(self, device: str) -> None:
        guest = self.assignments.pop(device, None)
        if guest is not None:
            self.world.trace.emit(self.path, guest, Channel.LINK, b"", f"unassign {device} from {guest}", kind=EventKind.VMM,
                              fields={"what": "unassign", "device": device})

    def owner_of(self, device: str) -> str | None:
        return self.assignments.get(device)

    def _check(self, guest: str, device: str) -> None:
        if self.assignments.get(device) != guest:
            raise RelayRefused(f"device '{device}' is not assigned to '{guest}'")

    def _vm_exit(self, guest: str) -> Any:
        """A guest leaves to the VMM and comes back: one trapped access on the guest's class."""
        try:
            return self.world.delay(guest, Op.CONFIG_DW_ACCESS)
        except KeyError:
            return self.world.timeout(self.world.timing.cost(ComponentClass.GUEST_VCPU, Op.CONFIG_DW_ACCESS))

    # -- DOE relay (thin-guest / thin-vmm) ------------------------------------------------------------

    def relay_doe(self, guest: str, device: str, object_type: DoeObjectType, payload: bytes, *,
                  secured_plaintext: bytes | None = None,
                  response_plaintext: Callable[[bytes], bytes | None] | None = None) -> SimGen[bytes | None]:
        """Carry one DOE object guest -> VMM -> host (-> device) and the answer back.

        ``secured_plaintext`` / ``response_plaintext`` are the guest's bookkeeping for secured records
        (the message inside the request, and a function that finds it in the answer); the VMM never
        reads them, they only label the trace hops for the exposure tracker.
        """
        self._check(guest, device)
        data = doe_object_bytes(object_type, payload)
        self.world.trace.emit(guest, self.path, Channel.DOE, data, f"relay {DoeObjectType(object_type).name} "
                              f"for {device}", secured_plaintext=secured_plaintext,
                              kind=EventKind.VMM_RELAY, fields={"device": device, "hop": "request"})
        yield self._vm_exit(guest)
        yield self.world.delay(self.path, Op.FW_COMMAND_DISPATCH)  # into the host kernel (ioctl)
        self.world.trace.emit(self.path, "host", Channel.DOE, data, f"relay {DoeObjectType(object_type).name} "
                              f"for {device}", secured_plaintext=secured_plaintext,
                              kind=EventKind.VMM_RELAY, fields={"device": device, "hop": "request"})
        self.relayed_doe += 1
        answer = yield from self.host.forward_doe(device, DoeObjectType(object_type), payload,
                                                  secured_plaintext=secured_plaintext)
        if answer is None:
            self.world.trace.emit(self.path, guest, Channel.DOE, b"", f"no response from {device}",
                                  kind=EventKind.DOE_NO_RESPONSE, fields={"device": device})
            return None
        plain = response_plaintext(answer) if response_plaintext is not None else None
        back = doe_object_bytes(object_type, answer)
        self.world.trace.emit("host", self.path, Channel.DOE, back, f"response from {device}",
                              secured_plaintext=plain, kind=EventKind.VMM_RELAY,
                              fields={"device": device, "hop": "response"})
        self.world.trace.emit(self.path, guest, Channel.DOE, back, f"response from {device}",
                              secured_plaintext=plain, kind=EventKind.VMM_RELAY,
                              fields={"device": device, "hop": "response"})
        return answer

    # -- guest <-> firmware channel (thin-guest) ------------------------------------------------------

    def relay_sealed(self, guest: str, frame: bytes, plaintext: bytes | None) -> SimGen[tuple[bytes, bytes | None]]:
        """Carry a sealed GUEST_CHANNEL frame to the key-slot service and its sealed answer back.

        ``plaintext`` is the sealed frame's content, for the trace only (the VMM cannot read it).
        """
        target = self.firmware
        if not hasattr(target, "command_sealed"):
            raise RelayRefused("this platform's firmware offers no guest channel")
        self.world.trace.emit(guest, self.path, Channel.FIRMWARE, frame, summarize_frame(frame),
                              secured_plaintext=plaintext, kind=EventKind.FIRMWARE_MESSAGE,
                              fields=frame_fields(frame))
        yield self._vm_exit(guest)
        self.relayed_firmware += 1
        answer, answer_plain = yield from target.command_sealed(self.path, frame,  # type: ignore[union-attr]
                                                                secured_plaintext=plaintext)
        self.world.trace.emit(self.path, guest, Channel.FIRMWARE, answer, summarize_frame(answer),
                              secured_plaintext=answer_plain, kind=EventKind.FIRMWARE_MESSAGE,
                              fields=frame_fields(answer))
        return answer, answer_plain

    def sealed_relay_for(self, guest: str) -> Callable[[bytes, bytes | None], SimGen[tuple[bytes, bytes | None]]]:
        """The relay function a guest's :class:`~sim.firmware.keyslot_service.GuestChannelSender` uses."""
        return lambda frame, plain: self.relay_sealed(guest, frame, plain)

    # -- keys in the clear (thin-vmm) -----------------------------------------------------------------

    @property
    def slot_service(self) -> KeySlotService:
        """The VMM's own key-slot hypercall handler: the thin service's logic, run by the VMM with
        principal "vmm" (the Root Port must allow that principal; thin-vmm declares it)."""
        if self._slot_service is None:
            if self.platform is None:
                raise RelayRefused("the VMM needs the platform to reach Root Port key slots")
            self._slot_service = KeySlotService(self.world, self.platform, path=self.path,
                                                principal=VMM_PRINCIPAL, register=False,
                                                channel=Channel.KEY_SLOT)
        return self._slot_service

    def key_slot_hypercall(self, guest: str, frame: bytes) -> SimGen[bytes]:
        """A key-slot command frame from ``guest`` in the clear (traced guest -> vmm with the key)."""
        yield self._vm_exit(guest)
        answer = yield from self.slot_service.command(guest, frame)
        return answer

    def hypercall_sender_for(self, guest: str) -> Callable[[bytes], SimGen[bytes]]:
        return lambda frame: self.key_slot_hypercall(guest, frame)

    # -- fat: guest requests to the TSM ---------------------------------------------------------------

    def relay_guest_request(self, guest: str, device: str, frame: bytes, *, secured_plaintext: bytes | None = None,
                            response_plaintext: Callable[[bytes], bytes | None] | None = None) -> SimGen[bytes]:
        """Carry a guest's (sealed) GUEST_CHANNEL frame about ``device`` guest -> VMM -> host's TSM driver
        -> firmware, and the answer back.

        ``secured_plaintext`` / ``response_plaintext`` are the guest's bookkeeping (the sealed request's
        content, and a function that finds the sealed answer's); the VMM never reads them, they only
        label the trace hops for the exposure tracker.
        """
        self._check(guest, device)
        target = self.firmware
        if not hasattr(target, "issue"):
            raise RelayRefused("this platform's firmware is not a fat TSM")
        self.world.trace.emit(guest, self.path, Channel.FIRMWARE, frame, summarize_frame(frame),
                              secured_plaintext=secured_plaintext, kind=EventKind.FIRMWARE_MESSAGE,
                              fields=frame_fields(frame))
        yield self._vm_exit(guest)
        yield self.world.delay(self.path, Op.FW_COMMAND_DISPATCH)  # KVM -> host TSM driver
        self.world.trace.emit(self.path, "host", Channel.FIRMWARE, frame, summarize_frame(frame),
                              secured_plaintext=secured_plaintext, kind=EventKind.FIRMWARE_MESSAGE,
                              fields=frame_fields(frame))
        self.relayed_firmware += 1
        answer = yield from target.issue(frame, caller="host")  # type: ignore[union-attr]
        plain = response_plaintext(answer) if response_plaintext is not None else None
        self.world.trace.emit("host", self.path, Channel.FIRMWARE, answer, summarize_frame(answer),
                              secured_plaintext=plain, kind=EventKind.FIRMWARE_MESSAGE,
                              fields=frame_fields(answer))
        self.world.trace.emit(self.path, guest, Channel.FIRMWARE, answer, summarize_frame(answer),
                              secured_plaintext=plain, kind=EventKind.FIRMWARE_MESSAGE,
                              fields=frame_fields(answer))
        return answer

    # -- stream registers (not secret: the host programs them for the guest, via VFIO) ---------------

    def enable_stream(self, guest: str, device: str, block: int, stream_id: int) -> SimGen[bool]:
        """Set up and enable the guest's selective stream on both ends (config registers)."""
        self._check(guest, device)
        yield self._vm_exit(guest)
        self.world.trace.emit(guest, self.path, Channel.LINK, b"", f"enable stream {stream_id} of {device}", kind=EventKind.VMM,
                              fields={"what": "enable stream", "device": device})
        if hasattr(self.host, "enable_stream"):
            return (yield from self.host.enable_stream(device, block, stream_id))  # type: ignore[attr-defined]
        if self.platform is None:
            return False
        return (yield from enable_selective_stream(self.world, self.platform.device(device), block, stream_id,
                                                   by=self.path))

    def disable_stream(self, guest: str, device: str, block: int, stream_id: int) -> SimGen[bool]:
        self._check(guest, device)
        yield self._vm_exit(guest)
        self.world.trace.emit(guest, self.path, Channel.LINK, b"", f"disable stream {stream_id} of {device}", kind=EventKind.VMM,
                              fields={"what": "disable stream", "device": device})
        if hasattr(self.host, "disable_stream"):
            yield from self.host.disable_stream(device, block, stream_id)  # type: ignore[attr-defined]
        return True

    # -- fat: binding a TDI to the guest ----------------------------------------------------------------

    def bind_tdi(self, device: str, function: int = 0) -> SimGen[FwFrame]:
        """Fat model: ask the TSM (through the host's driver) to bind and lock a TDI for the device's guest."""
        guest = self.assignments.get(device)
        target = self.firmware
        if guest is None or not hasattr(target, "host_call"):
            raise RelayRefused(f"device '{device}' is not assigned, or the firmware is not a fat TSM")
        guest_id = getattr(self.guests[guest], "guest_id", None)
        handle = target.handle_of(device)  # type: ignore[union-attr]
        if guest_id is None or handle is None:
            raise RelayRefused(f"the TSM knows no guest id for '{guest}' or no handle for '{device}'")
        yield self.world.delay(self.path, Op.FW_COMMAND_DISPATCH)
        return (yield from target.host_call(TdiBind(handle, function, guest_id)))  # type: ignore[union-attr]

    def rebind_tdi(self, guest: str, device: str, function: int = 0) -> SimGen[FwFrame]:
        """Fat model, on the guest's request: TDI_UNBIND (TDISP STOP: ERROR -> CONFIG_UNLOCKED) then
        TDI_BIND (LOCK) through the host's TSM driver; returns the TDI_BIND answer. An UNBIND refusal
        (nothing bound, or the device no longer answers in the TSM's session) does not stop the BIND:
        the TSM forgets the TDI either way, and BIND says whether the TDI can be locked again."""
        self._check(guest, device)
        target = self.firmware
        handle = target.handle_of(device) if hasattr(target, "handle_of") else None  # type: ignore[union-attr]
        if handle is None or not hasattr(target, "host_call"):
            raise RelayRefused(f"the firmware is not a fat TSM, or it has no handle for '{device}'")
        yield self._vm_exit(guest)
        self.world.trace.emit(guest, self.path, Channel.LINK, b"", f"re-bind {device} fn{function}", kind=EventKind.VMM,
                              fields={"what": "re-bind", "device": device})
        yield self.world.delay(self.path, Op.FW_COMMAND_DISPATCH)
        yield from target.host_call(TdiUnbind(handle, function))  # type: ignore[union-attr]
        return (yield from self.bind_tdi(device, function))

    # -- resets ---------------------------------------------------------------------------------------

    def _on_host_event(self, event: object) -> None:
        kind = str(getattr(event, "kind", ""))
        if kind in RESET_EVENT_KINDS:
            self.notify_reset(str(getattr(event, "device", "")), kind)

    def _on_rebound(self, device: str, function: int) -> None:
        self.notify_reset(device, REBOUND_NOTICE)

    def notify_reset(self, device: str, reason: str) -> None:
        """Upcall from the host: ``device`` was reset (DPC, hot reset, D3cold, FLR...). Tell its guest."""
        self.world.trace.emit("host", self.path, Channel.LINK, b"", f"reset of {device}: {reason}", kind=EventKind.VMM,
                              fields={"what": "reset of", "device": device})
        guest = self.assignments.get(device)
        if guest is None:
            return
        self.notices.append(ResetNotice(device, guest, reason, self.world.now))
        self.world.trace.emit(self.path, guest, Channel.LINK, b"", f"reset notice {device}: {reason}", kind=EventKind.VMM,
                              fields={"what": "reset notice", "device": device})
        self.guests[guest].on_reset_notice(device, reason)
