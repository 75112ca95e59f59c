"""The fat firmware TSM: a PSP-like security processor that does all of SPDM, IDE_KM and TDISP itself.

Modeled on AMD SEV-TIO and Intel TDX Connect (TRUST_MODELS.md §2): the host kernel is "a mere DOE
proxy" and the guest "a dumb receiver of the firmware's attestation results" (the 2023 thread).

* **One core, one command at a time.** Every command queues for :class:`~sim.firmware.core.FirmwareCore`
  (a ``simpy.Resource`` of capacity 1, like TDX's ``tdx_ext_lock``); a command that talks to the
  device keeps the core through its whole DOE loop. Queue depth over time and the wait of every
  command are recorded.
* **DOE proxying.** The firmware runs the one securing flow (:mod:`sim.protocols.tsm`) with
  :func:`sim.engine.runner.drive` at firmware-core costs. Its DOE transport does not reach the
  device: it answers the host's command with status SPDM_REQUEST and the DOE object; the host's
  driver (:meth:`FatTsm.issue`, the ``sev_tio_continue`` loop) exchanges it through
  ``host.forward_doe`` and re-issues the command with kind CONTINUE and the answer. Each hop is a
  real frame on Channel.FIRMWARE; secured records carry ``secured_plaintext`` so that the host is
  scored as having seen ciphertext only. Every hop costs ``Op.FW_COMMAND_DISPATCH`` on both sides.
* **Key slots.** The flow's platform requests are served by the firmware itself through the Root
  Port's private key path (principal ``"firmware"``, traced on Channel.KEY_SLOT); the stream's
  config registers (not secret) are programmed by the host kernel as SEV-TIO's ``dsm_connect`` does
  (``host.enable_stream``), or through the firmware's fabric access when the host offers no routine.
* **Guests.** :meth:`FatTsm.launch_guest` creates the guest's sealed channel
  (:mod:`sim.firmware.guest_channel`, the SEV-SNP VMPCK pattern) and returns the guest's end. A
  GUEST_REQUEST arrives only sealed, as the plaintext of a GUEST_CHANNEL command that the VMM and the
  host's driver carry (and serve its SPDM_REQUESTs) without reading it; its answer is sealed the same
  way. A GUEST_CHANNEL frame that fails to open is refused, and so is a plain GUEST_REQUEST (from the
  host or anyone): the VMM can neither rewrite the evidence nor START a TDI in the guest's name.
* **TDIs.** TDI_BIND locks a TDI to a guest (TDISP LOCK, bound to the firmware's session) and reads
  its report; the guest's GUEST_REQUEST TDI_INFO returns the report and SHA-384 digests of the
  certificate chain, the measurements and the report (SEV-TIO TDI_INFO); STATE_CHANGE starts it
  (LOCKED -> RUN only, ``pci_tsm_req_scope``); TDI_STATUS / TDI_STATE read the device's TDISP state.
  A TDI_BIND whose LOCK is refused STOPs the TDI (legal in every TDISP state) and LOCKs once more, so
  a TDI an FLR or a lost session left in ERROR can be bound again.
* **Key refresh.** ROLL_KEY (AMD's out-of-tree SEV-TIO command set, §2) programs the other key set
  of the device's stream on both ends in the connecting session, switches to it and retires the old
  set (``tsm.refresh_keys``); :meth:`FatTsm.roll_key` is the host driver's call.
* **Resets.** The merged PCI/TSM code has no hook that reconnects after a reset or resume
  (TRUST_MODELS.md §1, "inf."): with ``fat_reconnect="none"`` (the default) a reset device stays
  unconnected until someone issues a new DEV_CONNECT; ``"host-initiated"`` models a host that does so
  (DEV_DISCONNECT FORCE, then DEV_CONNECT) when its recovery is done, then TDI_BINDs again every TDI
  that was bound (to the same guest) and tells :attr:`FatTsm.rebind_listeners` (the VMM, which tells
  the guest to re-accept: TDI_INFO, verify, START). Either way :attr:`FatTsm.reconnects` records the
  window. An FLR of function 0 is treated the same way: whether it took the DSM's SPDM session and
  IDE keys is device-specific (TRUST_MODELS.md §3 only says an FLR of *another* function keeps them),
  and the firmware cannot tell without talking to the device, so a host-initiated reconnect follows
  it too. An FLR of another function only sends its TDIs to ERROR; the guest asks for a re-bind.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

import simpy

from sim.crypto.algorithms import BaseHashAlgo
from sim.crypto.hashes import digest
from sim.engine.runner import SimGen, drive
from sim.engine.timing import ComponentClass, Op
from sim.engine.world import World
from sim.firmware.commands import (
    DOE_COMMANDS,
    DevConnect,
    DevConnectRsp,
    DevCreate,
    DevCreateRsp,
    DevDisconnect,
    DevReclaim,
    DisconnectFlag,
    DoeResult,
    Empty,
    FwBody,
    FwCommandId,
    FwFrame,
    FwRequestKind,
    FwStatus,
    GuestChannelMessage,
    GuestRequest,
    GuestRequestType,
    GuestStateRsp,
    RollKey,
    RollKeyRsp,
    SpdmContinue,
    SpdmRequest,
    TdiBind,
    TdiBindRsp,
    TdiInfo,
    TdiReport,
    TdiReportRsp,
    TdiStatus,
    TdiStatusRsp,
    TdiUnbind,
    TioFeature,
    TioStatusRsp,
    continuation,
    decode_frame,
    error,
    request,
    response,
)
from sim.firmware.core import (
    FIRMWARE_PATH,
    CommandRecord,
    FirmwareCore,
    enable_selective_stream,
    peek_secured_record,
    trace_phase,
)
from sim.firmware.guest_channel import GuestChannelEnd, GuestChannelError, create_guest_channel
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Outbound
from sim.protocols.ide_km import PcisigFailure
from sim.protocols.spdm.outcome import Ok
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SpdmRequester
from sim.protocols.tdisp import TdispRequester
from sim.protocols.tsm import (
    AllocateStream,
    EnableStream,
    Phase,
    PhaseMark,
    ProgramRootPortKey,
    ReleaseStream,
    RootPortKeySet,
    SecuredDevice,
    TsmFailure,
    lock_and_report,
    refresh_keys,
    secure_device,
    start_interface,
    teardown,
)
from sim.rootport.ide_regs import KeySlotStatus
from sim.scenario.platform import DeviceHandle, Platform
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import SubStream
from sim.wire.tdisp import InterfaceId, LockInterfaceFlags, TdiState

FIRMWARE_PRINCIPAL = "firmware"
MAX_STREAM_ID = 255


class FatReconnect(enum.StrEnum):
    """What happens after a device reset under the fat model."""

    NONE = "none"                        # faithful to the merged code: nobody reconnects
    HOST_INITIATED = "host-initiated"    # the host re-issues DEV_CONNECT after its recovery


class FatDeviceState(enum.StrEnum):
    CREATED = "created"
    CONNECTED = "connected"
    FAILED = "failed"                    # the last connect failed
    DISCONNECTED = "disconnected"


@dataclasses.dataclass
class FatTdi:
    function: int
    guest_id: int
    interface: InterfaceId
    view: SecuredDevice                  # the device's SecuredDevice with this TDI's interface/nonce/report
    state: TdiState = TdiState.CONFIG_LOCKED


@dataclasses.dataclass
class FatDevice:
    handle: int
    device_id: str
    device: DeviceHandle
    state: FatDeviceState = FatDeviceState.CREATED
    requester: SpdmRequester | None = None
    env: ProtocolEnv | None = None
    secured: SecuredDevice | None = None
    block: int | None = None
    stream_id: int | None = None
    tdis: dict[int, FatTdi] = dataclasses.field(default_factory=dict)
    connected_ns: int | None = None
    last_failure: TsmFailure | None = None


@dataclasses.dataclass
class ReconnectRecord:
    """One reset of a connected device and what the fat model did about it."""

    device: str
    reset_ns: int
    reason: str
    reconnected_ns: int | None = None
    ok: bool | None = None
    rebound: list[int] = dataclasses.field(default_factory=list)   # functions bound again after the reconnect
    rebind_failed: list[int] = dataclasses.field(default_factory=list)

    def window_ns(self, now: int) -> int:
        """How long the device has been (or was) without a firmware connection."""
        return (self.reconnected_ns if self.reconnected_ns is not None else now) - self.reset_ns


@dataclasses.dataclass
class _Active:
    """The command that holds the core, and its SPDM_REQUEST dialogue with its caller."""

    caller: str
    command: FwCommandId
    to_caller: simpy.Store
    from_caller: simpy.Store
    sessions: dict[int, Any] = dataclasses.field(default_factory=dict)
    request_plaintext: bytes | None = None
    awaiting_secured: bool = False
    answer_plaintext: bytes | None = None   # the final answer's sealed content (GUEST_CHANNEL), for the trace


class _CommandFailed(Exception):
    def __init__(self, status: FwStatus, reason: str) -> None:
        self.status = status
        super().__init__(reason)


class FatTsm:
    """Component ``"firmware"`` (firmware-core): the fat TSM. See the module docstring."""

    def __init__(self, world: World, platform: Platform, host: Any, *,
                 policy: VerificationPolicy | None = None, requester_config: RequesterConfig | None = None,
                 fat_reconnect: FatReconnect | str = FatReconnect.NONE, path: str = FIRMWARE_PATH,
                 lock_flags: LockInterfaceFlags = LockInterfaceFlags.NO_FW_UPDATE) -> None:
        self.world = world
        self.platform = platform
        self.host = host
        self.path = path
        world.register(path, self, ComponentClass.FIRMWARE_CORE)
        self.core = FirmwareCore(world, path)
        # The firmware gathers evidence; the guest verifies it (Kaplan, TRUST_MODELS.md §5). Its own
        # policy only pins the device vendors' roots so that a session is with a certified key.
        self.policy = policy if policy is not None else VerificationPolicy.trusting(
            *(d.identity for d in platform.devices))
        self.requester_config = requester_config or RequesterConfig()
        self.fat_reconnect = FatReconnect(fat_reconnect)
        self.lock_flags = lock_flags
        self.devices: dict[int, FatDevice] = {}
        self.reconnects: list[ReconnectRecord] = []
        self.phase_listeners: list[Callable[[PhaseMark], None]] = []
        # (device id, function): a TDI bound again to its guest after a host-initiated reconnect
        self.rebind_listeners: list[Callable[[str, int], None]] = []
        self.doe_hops = 0
        self._guests: dict[int, str] = {}
        self._channels: dict[int, GuestChannelEnd] = {}
        self._rng = world.rng(f"{path}.tsm")
        self._active: _Active | None = None
        self._connects = 0
        if hasattr(host, "listeners"):
            host.listeners.append(self._on_host_event)

    # ==============================================================================================
    # guests and lookups
    # ==============================================================================================

    def launch_guest(self, guest: str) -> GuestChannelEnd:
        """Register a confidential guest at launch and create its sealed channel; returns the guest's end
        (its ``guest_id`` is the id the guest's requests carry and TDI_BIND names)."""
        guest_id = len(self._guests) + 1
        self._guests[guest_id] = guest
        firmware_end, guest_end = create_guest_channel(self.world, self.world.rng(f"{self.path}.guest-channel").bytes,
                                                       self.path, guest, guest_id)
        self._channels[guest_id] = firmware_end
        return guest_end

    def guest_name(self, guest_id: int) -> str | None:
        return self._guests.get(guest_id)

    def handle_of(self, device_id: str) -> int | None:
        return next((h for h, d in self.devices.items() if d.device_id == device_id), None)

    def device(self, device_id: str) -> FatDevice:
        handle = self.handle_of(device_id)
        if handle is None:
            raise KeyError(f"the firmware has no device '{device_id}' (DEV_CREATE it first)")
        return self.devices[handle]

    # ==============================================================================================
    # the command mailbox (firmware side)
    # ==============================================================================================

    def command(self, caller: str, frame: bytes) -> SimGen[bytes]:
        """One command or CONTINUE re-issue from ``caller``; returns the answer frame's bytes."""
        yield self.core.caller_dispatch(caller)
        try:
            decoded = decode_frame(frame)
        except DecodeError as exc:
            self.core.trace_in(caller, frame)
            answer = error(_raw_command(frame), FwStatus.INVALID_COMMAND, str(exc)).encode()
            self.core.trace_out(caller, answer)
            return answer
        if decoded.is_request and decoded.kind is FwRequestKind.CONTINUE:
            return (yield from self._continue(caller, frame, decoded))
        self.core.trace_in(caller, frame, secured_plaintext=self._sealed_content(decoded))
        active = _Active(caller, decoded.command, simpy.Store(self.world.env), simpy.Store(self.world.env))
        self.world.process(self._serve(active, decoded))
        answer, plain = yield active.to_caller.get()
        self.core.trace_out(caller, answer, secured_plaintext=plain)
        return answer

    def _continue(self, caller: str, frame: bytes, decoded: FwFrame) -> SimGen[bytes]:
        active = self._active
        if active is None or active.caller != caller or active.command is not decoded.command:
            self.core.trace_in(caller, frame)
            answer = error(decoded.command, FwStatus.INVALID_STATE, "no such command waits for an SPDM response")
            self.core.trace_out(caller, answer.encode())
            return answer.encode()
        body = decoded.body
        assert isinstance(body, SpdmContinue)
        plain = None
        if active.awaiting_secured and body.result is DoeResult.RESPONSE:
            plain = peek_secured_record(active.sessions, body.payload, outgoing=False)
        self.core.trace_in(caller, frame, secured_plaintext=plain)
        if plain is not None:  # the firmware is the session's end: it reads the message
            self.world.exposure.observe_stored(self.path, plain)
        active.from_caller.put(body)
        answer, answer_plain = yield active.to_caller.get()
        self.core.trace_out(caller, answer, secured_plaintext=answer_plain)
        return answer

    def _serve(self, active: _Active, frame: FwFrame) -> SimGen[None]:
        def body(record: CommandRecord) -> SimGen[FwFrame]:
            self._active = active
            try:
                return (yield from self._execute(active, frame))
            finally:
                self._active = None

        # a sealed GUEST_CHANNEL frame is served as the GUEST_REQUEST it carries: recorded under that name
        name = FwCommandId.GUEST_REQUEST.name if frame.command is FwCommandId.GUEST_CHANNEL else frame.command.name
        out: FwFrame = yield from self.core.run(name, active.caller, lambda rec: _stamped(body, rec))
        active.to_caller.put((out.encode(), active.answer_plaintext))

    def _sealed_content(self, frame: FwFrame) -> bytes | None:
        """What a sealed guest frame carries (trace bookkeeping for its carrier; the channel is unchanged)."""
        if not isinstance(frame.body, GuestChannelMessage):
            return None
        end = self._channels.get(frame.body.guest_id)
        return None if end is None else end.peek(frame.body)

    def _execute(self, active: _Active, frame: FwFrame) -> SimGen[FwFrame]:
        if not frame.is_request:
            return error(frame.command, FwStatus.INVALID_COMMAND, "not a request")
        handler = self._handlers().get(frame.command)
        if handler is None:
            return error(frame.command, FwStatus.UNSUPPORTED, "the fat TSM offers no key-slot service to callers")
        try:
            return (yield from handler(active, frame.body))
        except _CommandFailed as exc:
            return error(frame.command, exc.status, str(exc))

    def _handlers(self) -> dict[FwCommandId, Callable[[_Active, Any], SimGen[FwFrame]]]:
        return {
            FwCommandId.TIO_STATUS: self._tio_status,
            FwCommandId.DEV_CREATE: self._dev_create,
            FwCommandId.DEV_CONNECT: self._dev_connect,
            FwCommandId.DEV_DISCONNECT: self._dev_disconnect,
            FwCommandId.DEV_RECLAIM: self._dev_reclaim,
            FwCommandId.ROLL_KEY: self._roll_key,
            FwCommandId.TDI_BIND: self._tdi_bind,
            FwCommandId.TDI_UNBIND: self._tdi_unbind,
            FwCommandId.TDI_REPORT: self._tdi_report,
            FwCommandId.TDI_STATUS: self._tdi_status,
            FwCommandId.GUEST_REQUEST: self._plain_guest_request,
            FwCommandId.GUEST_CHANNEL: self._guest_channel,
        }

    # ==============================================================================================
    # the host's side: the SPDM_REQUEST / continue loop (sev_tio_continue)
    # ==============================================================================================

    def issue(self, frame: bytes, *, caller: str = "host") -> SimGen[bytes]:
        """Host driver: issue a command and serve its SPDM_REQUESTs until a final answer arrives.

        Each SPDM_REQUEST's DOE object goes to the device through ``host.forward_doe`` (the host's
        DOE driver); the answer, or NO_RESPONSE, is re-issued as a CONTINUE of the same command.
        """
        answer = yield from self.command(caller, frame)
        while True:
            try:
                decoded = decode_frame(answer)
            except DecodeError:
                return answer
            if decoded.status is not FwStatus.SPDM_REQUEST:
                return answer
            req = decoded.body
            assert isinstance(req, SpdmRequest)
            dev = self.devices.get(req.dev_handle)   # the host driver's table, filled at DEV_CREATE
            plain = self._active.request_plaintext if self._active is not None else None
            rsp = None
            if dev is not None:
                self.doe_hops += 1
                rsp = yield from self.host.forward_doe(dev.device_id, req.object_type, req.payload,
                                                       secured_plaintext=plain)
            cont = SpdmContinue(DoeResult.RESPONSE, bytes(rsp)) if rsp is not None else \
                SpdmContinue(DoeResult.NO_RESPONSE)
            answer = yield from self.command(caller, continuation(decoded.command, cont).encode())

    def host_call(self, body: FwBody, *, caller: str = "host", command: FwCommandId | None = None
                  ) -> SimGen[FwFrame]:
        """Encode ``body`` as a request, run it through :meth:`issue` and decode the final answer."""
        answer = yield from self.issue(request(body, command=command).encode(), caller=caller)
        return decode_frame(answer)

    def connect(self, device_id: str, *, caller: str = "host") -> SimGen[FwFrame]:
        """What the host's ``tsm/connect`` does: DEV_CREATE (once) and DEV_CONNECT."""
        handle = self.handle_of(device_id)
        if handle is None:
            d = self.platform.device(device_id)
            created = yield from self.host_call(DevCreate(d.endpoint.requester_id(0), d.port_index,
                                                          d.root_port.segment), caller=caller)
            if created.status is not FwStatus.SUCCESS:
                return created
            assert isinstance(created.body, DevCreateRsp)
            handle = created.body.dev_handle
        return (yield from self.host_call(DevConnect(handle), caller=caller))

    def roll_key(self, device_id: str, *, caller: str = "host") -> SimGen[FwFrame]:
        """What a host driver's key-refresh does (SEV-TIO ROLL_KEY): returns the decoded answer."""
        handle = self.handle_of(device_id)
        if handle is None:
            return error(FwCommandId.ROLL_KEY, FwStatus.INVALID_DEVICE, f"no handle for {device_id}")
        return (yield from self.host_call(RollKey(handle), caller=caller))

    # ==============================================================================================
    # the firmware's transport and platform-request handler for the securing flow
    # ==============================================================================================

    def _transport(self, active: _Active, dev: FatDevice) -> Callable[[Any], SimGen[Any]]:
        def transport(message: Any) -> SimGen[Any]:
            if isinstance(message, Outbound):
                return (yield from self._doe_via_host(active, dev, message))
            if isinstance(message, PhaseMark):
                trace_phase(self.world, self.path, dev.device.path, message)
                for listener in list(self.phase_listeners):
                    listener(message)
                return None
            return (yield from self._platform_request(dev, message))
        return transport

    def _doe_via_host(self, active: _Active, dev: FatDevice, out: Outbound) -> SimGen[bytes | None]:
        secured = DoeObjectType(out.object_type) is DoeObjectType.SECURED_SPDM
        plain = peek_secured_record(active.sessions, out.payload, outgoing=True) if secured else None
        active.request_plaintext = plain
        active.awaiting_secured = secured
        frame = response(active.command, FwStatus.SPDM_REQUEST,
                         SpdmRequest(dev.handle, DoeObjectType(out.object_type), bytes(out.payload)))
        active.to_caller.put((frame.encode(), plain))
        cont: SpdmContinue = yield active.from_caller.get()
        yield self.world.delay(self.path, Op.FW_COMMAND_DISPATCH)   # the re-entry into the firmware
        active.request_plaintext = None
        return cont.payload if cont.result is DoeResult.RESPONSE else None

    def _platform_request(self, dev: FatDevice, req: Any) -> SimGen[Any]:
        rp = dev.device.root_port
        if isinstance(req, AllocateStream):
            block = rp.allocate_stream_block(FIRMWARE_PRINCIPAL)
            stream_id = self._free_stream_id()
            if block is None or stream_id is None:
                if block is not None:
                    rp.release_stream_block(block)
                return None
            dev.block, dev.stream_id = block, stream_id
            return stream_id
        if dev.block is None or getattr(req, "stream_id", getattr(getattr(req, "key", None), "stream_id", None)) \
                != dev.stream_id:
            return False
        if isinstance(req, ProgramRootPortKey):
            yield self.world.delay(self.path, Op.CONFIG_DW_ACCESS)
            k = req.key
            st = rp.key_port.program(FIRMWARE_PRINCIPAL, dev.block, k.key_set, k.root_port_direction,
                                     k.sub_stream, k.key, k.ifv)
            return st is KeySlotStatus.SUCCESS
        if isinstance(req, RootPortKeySet):
            ok = True
            for sub in SubStream:
                yield self.world.delay(self.path, Op.CONFIG_DW_ACCESS)
                op = rp.key_port.set_go if req.go else rp.key_port.stop
                ok = op(FIRMWARE_PRINCIPAL, dev.block, req.key_set, req.direction, sub) is KeySlotStatus.SUCCESS and ok
            return ok
        if isinstance(req, EnableStream):
            # SEV-TIO's host programs the stream registers and enables the stream around DEV_CONNECT
            # (dsm_connect, §2); the host kernel's routine does it when there is one.
            if hasattr(self.host, "enable_stream"):
                return (yield from self.host.enable_stream(dev.device_id, dev.block, req.stream_id))
            return (yield from enable_selective_stream(self.world, dev.device, dev.block, req.stream_id,
                                                       by=self.path))
        if isinstance(req, ReleaseStream):
            if hasattr(self.host, "disable_stream"):
                yield from self.host.disable_stream(dev.device_id, dev.block, req.stream_id)
            self._release(dev)
            return True
        return None

    def _release(self, dev: FatDevice) -> None:
        if dev.block is not None:
            rp = dev.device.root_port
            rp.key_port.clear(FIRMWARE_PRINCIPAL, dev.block)
            rp.release_stream_block(dev.block)
        dev.block = dev.stream_id = None

    def _free_stream_id(self) -> int | None:
        used = {d.stream_id for d in self.devices.values() if d.stream_id is not None}
        return next((i for i in range(1, MAX_STREAM_ID + 1) if i not in used), None)

    def _run_flow(self, active: _Active, dev: FatDevice, flow: Any) -> SimGen[Any]:
        assert dev.env is not None and dev.requester is not None
        active.sessions = dev.requester.sessions
        return (yield from drive(self.world, self.path, dev.env.meter, flow, self._transport(active, dev)))

    # ==============================================================================================
    # command handlers
    # ==============================================================================================

    def _dev(self, handle: int) -> FatDevice:
        dev = self.devices.get(handle)
        if dev is None:
            raise _CommandFailed(FwStatus.INVALID_DEVICE, f"no device handle {handle}")
        return dev

    def _connected(self, handle: int) -> FatDevice:
        dev = self._dev(handle)
        if dev.state is not FatDeviceState.CONNECTED or dev.secured is None:
            raise _CommandFailed(FwStatus.INVALID_STATE, f"device {dev.device_id} is not connected")
        return dev

    def _tdi(self, dev: FatDevice, function: int) -> FatTdi:
        tdi = dev.tdis.get(function)
        if tdi is None:
            raise _CommandFailed(FwStatus.INVALID_TDI, f"function {function} of {dev.device_id} is not bound")
        return tdi

    def _tio_status(self, active: _Active, body: Empty) -> SimGen[FwFrame]:
        yield self.world.timeout(0)
        bound = sum(len(d.tdis) for d in self.devices.values())
        return response(FwCommandId.TIO_STATUS, body=TioStatusRsp(TioFeature.FAT_TSM | TioFeature.GUEST_CHANNEL, len(self.devices), bound,
                                                                  len(self.core.records)))

    def _dev_create(self, active: _Active, body: DevCreate) -> SimGen[FwFrame]:
        yield self.world.timeout(0)
        for d in self.platform.devices:
            if d.port_index == body.root_port and d.endpoint.requester_id(0) == body.rid \
                    and d.root_port.segment == body.segment:
                existing = self.handle_of(d.id)
                if existing is not None:
                    return response(FwCommandId.DEV_CREATE, body=DevCreateRsp(existing))
                handle = len(self.devices) + 1
                self.devices[handle] = FatDevice(handle, d.id, d)
                return response(FwCommandId.DEV_CREATE, body=DevCreateRsp(handle))
        raise _CommandFailed(FwStatus.INVALID_DEVICE, f"no device {body.rid:04x} below Root Port {body.root_port}")

    def _dev_connect(self, active: _Active, body: DevConnect) -> SimGen[FwFrame]:
        dev = self._dev(body.dev_handle)
        if dev.state is FatDeviceState.CONNECTED:
            raise _CommandFailed(FwStatus.INVALID_STATE, f"{dev.device_id} is already connected")
        self._connects += 1
        dev.env = self.world.protocol_env(self.path, self._rng.child(f"{dev.device_id}:{self._connects}"))
        dev.requester = SpdmRequester(self.requester_config, self.policy, dev.env)
        dev.tdis.clear()
        result = yield from self._run_flow(active, dev, secure_device(dev.requester, dev.env, dev.device_id))
        if isinstance(result, TsmFailure):
            dev.state, dev.last_failure, dev.secured = FatDeviceState.FAILED, result, None
            self._release(dev)
            raise _CommandFailed(FwStatus.ATTESTATION_FAILED, str(result))
        dev.secured = result.value
        dev.state, dev.connected_ns = FatDeviceState.CONNECTED, self.world.now
        assert dev.block is not None and dev.stream_id is not None
        return response(FwCommandId.DEV_CONNECT, body=DevConnectRsp(dev.handle, dev.block, dev.stream_id,
                                                                     dev.secured.session.session_id))

    def _dev_disconnect(self, active: _Active, body: DevDisconnect) -> SimGen[FwFrame]:
        dev = self._dev(body.dev_handle)
        force = bool(body.flags & DisconnectFlag.FORCE)
        if dev.tdis and not force:
            raise _CommandFailed(FwStatus.INVALID_STATE, f"{dev.device_id} has bound TDIs (use FORCE)")
        detail = ""
        # FORCE frees the firmware's state without talking to the device (it may have been reset and
        # lost its session: every exchange would end in the host's 1 s DOE timeout).
        if not force and dev.secured is not None and dev.requester is not None:
            for tdi in list(dev.tdis.values()):
                stop = yield from self._run_flow(active, dev, TdispRequester.over_session(
                    dev.requester, dev.secured.session).stop(tdi.interface))
                if isinstance(stop, PcisigFailure):
                    detail = f"STOP {tdi.function}: {stop}"
            dev.secured.interface = None
            result = yield from self._run_flow(active, dev, teardown(dev.requester, dev.env, dev.secured))
            if isinstance(result, TsmFailure):
                detail = str(result)
        dev.tdis.clear()
        self._release(dev)
        dev.secured = None
        dev.state = FatDeviceState.DISCONNECTED
        if detail and not force:
            raise _CommandFailed(FwStatus.ATTESTATION_FAILED, detail)
        return response(FwCommandId.DEV_DISCONNECT)

    def _dev_reclaim(self, active: _Active, body: DevReclaim) -> SimGen[FwFrame]:
        yield self.world.timeout(0)
        dev = self._dev(body.dev_handle)
        if dev.state is FatDeviceState.CONNECTED:
            raise _CommandFailed(FwStatus.INVALID_STATE, f"{dev.device_id} is connected (disconnect first)")
        del self.devices[body.dev_handle]
        return response(FwCommandId.DEV_RECLAIM)

    def _roll_key(self, active: _Active, body: RollKey) -> SimGen[FwFrame]:
        dev = self._connected(body.dev_handle)
        assert dev.secured is not None and dev.requester is not None and dev.env is not None
        if dev.secured.session.ended:
            raise _CommandFailed(FwStatus.INVALID_STATE, f"the session with {dev.device_id} has ended")
        result = yield from self._run_flow(active, dev, refresh_keys(dev.requester, dev.env, dev.secured,
                                                                     retire_old=True))
        if isinstance(result, TsmFailure):
            raise _CommandFailed(FwStatus.ATTESTATION_FAILED, str(result))
        return response(FwCommandId.ROLL_KEY, body=RollKeyRsp(dev.handle, dev.secured.stream_id,
                                                              dev.secured.keys.key_set))

    def _tdi_bind(self, active: _Active, body: TdiBind) -> SimGen[FwFrame]:
        dev = self._connected(body.dev_handle)
        if body.guest_id not in self._guests:
            raise _CommandFailed(FwStatus.INVALID_PARAMETER, f"no guest {body.guest_id}")
        if body.function in dev.tdis:
            raise _CommandFailed(FwStatus.INVALID_STATE, f"function {body.function} is already bound")
        if body.function not in dev.device.endpoint.functions:
            raise _CommandFailed(FwStatus.INVALID_TDI, f"{dev.device_id} has no function {body.function}")
        assert dev.secured is not None and dev.requester is not None
        interface = InterfaceId(dev.device.endpoint.requester_id(body.function))
        view = dataclasses.replace(dev.secured, interface=None, nonce=None, report=None, running=False)
        result = yield from self._run_flow(active, dev, lock_and_report(dev.requester, view, interface,
                                                                         self.lock_flags))
        if isinstance(result, TsmFailure) and result.phase is Phase.LOCK:
            # LOCK leaves only CONFIG_UNLOCKED: a TDI an FLR or a lost session left in ERROR (or still
            # locked by a session that is gone) is STOPped first, which is legal in every state (§3)
            stop = yield from self._run_flow(active, dev, TdispRequester.over_session(
                dev.requester, dev.secured.session).stop(interface))
            if not isinstance(stop, PcisigFailure):
                result = yield from self._run_flow(active, dev, lock_and_report(dev.requester, view, interface,
                                                                                 self.lock_flags))
        if isinstance(result, TsmFailure):
            raise _CommandFailed(FwStatus.ATTESTATION_FAILED, str(result))
        dev.tdis[body.function] = FatTdi(body.function, body.guest_id, interface, view)
        return response(FwCommandId.TDI_BIND, body=TdiBindRsp(TdiState.CONFIG_LOCKED))

    def _tdi_unbind(self, active: _Active, body: TdiUnbind) -> SimGen[FwFrame]:
        dev = self._connected(body.dev_handle)
        tdi = self._tdi(dev, body.function)
        assert dev.secured is not None and dev.requester is not None
        stop = yield from self._run_flow(active, dev, TdispRequester.over_session(
            dev.requester, dev.secured.session).stop(tdi.interface))
        del dev.tdis[body.function]
        if isinstance(stop, PcisigFailure):
            raise _CommandFailed(FwStatus.ATTESTATION_FAILED, str(stop))
        return response(FwCommandId.TDI_UNBIND)

    def _tdi_report(self, active: _Active, body: TdiReport) -> SimGen[FwFrame]:
        dev = self._connected(body.dev_handle)
        tdi = self._tdi(dev, body.function)
        assert dev.secured is not None and dev.requester is not None
        got = yield from self._run_flow(active, dev, TdispRequester.over_session(
            dev.requester, dev.secured.session).get_report(tdi.interface))
        if isinstance(got, PcisigFailure):
            raise _CommandFailed(FwStatus.ATTESTATION_FAILED, str(got))
        tdi.view.report = got.value
        return response(FwCommandId.TDI_REPORT, body=TdiReportRsp(got.value.raw))

    def _read_state(self, active: _Active, dev: FatDevice, tdi: FatTdi) -> SimGen[TdiState | None]:
        assert dev.secured is not None and dev.requester is not None
        if dev.secured.session.ended:
            return None
        got = yield from self._run_flow(active, dev, TdispRequester.over_session(
            dev.requester, dev.secured.session).state(tdi.interface))
        if not isinstance(got, Ok):
            return None
        tdi.state = got.value
        return got.value

    def _tdi_status(self, active: _Active, body: TdiStatus) -> SimGen[FwFrame]:
        dev = self._connected(body.dev_handle)
        tdi = self._tdi(dev, body.function)
        state = yield from self._read_state(active, dev, tdi)
        if state is None:
            raise _CommandFailed(FwStatus.ATTESTATION_FAILED, f"{dev.device_id} does not answer in its session")
        secure = dev.block is not None and dev.device.root_port.stream_state(dev.block).name == "SECURE"
        return response(FwCommandId.TDI_STATUS, body=TdiStatusRsp(state, int(secure)))

    def _plain_guest_request(self, active: _Active, body: GuestRequest) -> SimGen[FwFrame]:
        yield self.world.timeout(0)
        raise _CommandFailed(FwStatus.NOT_PERMITTED, "a GUEST_REQUEST is accepted only sealed on the guest's "
                                                     "channel (GUEST_CHANNEL)")

    def _guest_channel(self, active: _Active, body: GuestChannelMessage) -> SimGen[FwFrame]:
        """Open a sealed GUEST_REQUEST, serve it for the channel's guest, seal the answer (also a refusal)."""
        end = self._channels.get(body.guest_id)
        if end is None:
            raise _CommandFailed(FwStatus.INVALID_PARAMETER, f"no guest channel {body.guest_id}")
        yield self.world.delay(self.path, Op.AEAD_PER_KIB, nbytes=len(body.ciphertext))
        try:
            inner = end.open(body)
        except GuestChannelError as exc:
            raise _CommandFailed(exc.status, str(exc)) from None
        self.world.exposure.observe_stored(self.path, inner)
        try:
            frame = decode_frame(inner)
        except DecodeError as exc:
            out = error(FwCommandId.GUEST_REQUEST, FwStatus.INVALID_COMMAND, str(exc))
        else:
            if not frame.is_request or frame.kind is not FwRequestKind.NEW \
                    or not isinstance(frame.body, GuestRequest):
                out = error(frame.command, FwStatus.INVALID_COMMAND, "the guest channel carries only GUEST_REQUEST")
            elif frame.body.guest_id != body.guest_id:
                out = error(FwCommandId.GUEST_REQUEST, FwStatus.NOT_PERMITTED,
                            f"guest {body.guest_id}'s channel carries a request of guest {frame.body.guest_id}")
            else:
                try:
                    out = yield from self._guest_request(active, frame.body)
                except _CommandFailed as exc:
                    out = error(FwCommandId.GUEST_REQUEST, exc.status, str(exc))
        plain = out.encode()
        yield self.world.delay(self.path, Op.AEAD_PER_KIB, nbytes=len(plain))
        active.answer_plaintext = plain
        return response(FwCommandId.GUEST_CHANNEL, FwStatus.SUCCESS, end.seal(plain))

    def _guest_request(self, active: _Active, body: GuestRequest) -> SimGen[FwFrame]:
        dev = self._connected(body.dev_handle)
        tdi = self._tdi(dev, body.function)
        if tdi.guest_id != body.guest_id:
            raise _CommandFailed(FwStatus.NOT_PERMITTED, f"function {body.function} of {dev.device_id} is not "
                                                         f"bound to guest {body.guest_id}")
        if body.request is GuestRequestType.TDI_INFO:
            return (yield from self._tdi_info(dev, tdi))
        if body.request is GuestRequestType.TDI_STATE:
            state = yield from self._read_state(active, dev, tdi)
            if state is None:
                raise _CommandFailed(FwStatus.ATTESTATION_FAILED, f"{dev.device_id} does not answer in its session")
            return response(FwCommandId.GUEST_REQUEST, body=GuestStateRsp(state))
        # STATE_CHANGE: LOCKED -> RUN only
        if tdi.state is not TdiState.CONFIG_LOCKED:
            raise _CommandFailed(FwStatus.INVALID_STATE, f"TDI is {tdi.state.name}, START needs CONFIG_LOCKED")
        assert dev.requester is not None
        started = yield from self._run_flow(active, dev, start_interface(dev.requester, tdi.view))
        if isinstance(started, TsmFailure):
            raise _CommandFailed(FwStatus.ATTESTATION_FAILED, str(started))
        tdi.state = TdiState.RUN
        return response(FwCommandId.GUEST_REQUEST, body=GuestStateRsp(TdiState.RUN))

    def _tdi_info(self, dev: FatDevice, tdi: FatTdi) -> SimGen[FwFrame]:
        assert dev.secured is not None
        att = dev.secured.attestation
        certs = bytes(att.cert_chain)
        meas = b"".join(b.encode() for b in att.measurements)
        report = tdi.view.report.raw if tdi.view.report is not None else b""
        yield self.world.delay(self.path, Op.HASH_PER_KIB, nbytes=len(certs) + len(meas) + len(report))
        info = TdiInfo(tdi.state, _sha384(certs), _sha384(meas), _sha384(report), certs, meas, report)
        return response(FwCommandId.GUEST_REQUEST, body=info)

    # ==============================================================================================
    # resets (fat_reconnect)
    # ==============================================================================================

    def _on_host_event(self, event: Any) -> None:
        kind = str(getattr(event, "kind", ""))
        handle = self.handle_of(getattr(event, "device", ""))
        if handle is None:
            return
        dev = self.devices[handle]
        host_record = getattr(event, "record", None)
        if kind in ("error-detected", "d3cold-entered") and dev.state is FatDeviceState.CONNECTED:
            self.reconnects.append(ReconnectRecord(dev.device_id, self.world.now, kind))
        elif kind == "reset-done":
            record = self._open_record(dev)
            if record is None and dev.state is FatDeviceState.CONNECTED:
                # a reset with no loss notice first (a Secondary Bus Reset): the window opened at the reset
                started = getattr(host_record, "started_ns", self.world.now)
                record = ReconnectRecord(dev.device_id, started, str(getattr(host_record, "cause", kind)))
                self.reconnects.append(record)
            if record is not None and self.fat_reconnect is FatReconnect.HOST_INITIATED:
                self.world.process(self._host_reconnect(dev, record))
        elif kind == "flr" and getattr(host_record, "function", None) == 0 \
                and dev.state is FatDeviceState.CONNECTED and not getattr(host_record, "failed", ""):
            record = ReconnectRecord(dev.device_id, getattr(host_record, "started_ns", self.world.now), "flr")
            self.reconnects.append(record)
            if self.fat_reconnect is FatReconnect.HOST_INITIATED:
                self.world.process(self._host_reconnect(dev, record))

    def _open_record(self, dev: FatDevice) -> ReconnectRecord | None:
        return next((r for r in reversed(self.reconnects) if r.device == dev.device_id
                     and r.reconnected_ns is None), None)

    def _host_reconnect(self, dev: FatDevice, record: ReconnectRecord) -> SimGen[None]:
        """A host that reconnects after recovery: DEV_DISCONNECT FORCE (drop stale state), DEV_CONNECT,
        then TDI_BIND of every TDI that was bound, to the same guest; the guests hear of each re-bind."""
        bound = sorted((fn, tdi.guest_id) for fn, tdi in dev.tdis.items())
        yield from self.host_call(DevDisconnect(dev.handle, DisconnectFlag.FORCE))
        answer = yield from self.host_call(DevConnect(dev.handle))
        record.ok = answer.status is FwStatus.SUCCESS
        record.reconnected_ns = self.world.now
        if not record.ok:
            return
        for function, guest_id in bound:
            got = yield from self.host_call(TdiBind(dev.handle, function, guest_id))
            (record.rebound if got.status is FwStatus.SUCCESS else record.rebind_failed).append(function)
            if got.status is FwStatus.SUCCESS:
                for listener in list(self.rebind_listeners):
                    listener(dev.device_id, function)


def _sha384(data: bytes) -> bytes:
    return digest(BaseHashAlgo.SHA_384, data)


def _raw_command(frame: bytes) -> FwCommandId:
    raw = int.from_bytes(frame[:2], "little") & 0x7FFF if len(frame) >= 2 else 0
    try:
        return FwCommandId(raw)
    except ValueError:
        return FwCommandId.TIO_STATUS


def _stamped(body: Callable[[CommandRecord], SimGen[FwFrame]], record: CommandRecord) -> SimGen[FwFrame]:
    out = yield from body(record)
    record.status = out.status.name if out.status is not None else ""
    return out


__all__ = ["DOE_COMMANDS", "FatDevice", "FatDeviceState", "FatReconnect", "FatTdi", "FatTsm", "ReconnectRecord"]
