"""The host kernel: enumeration, the DOE driver, CMA-SPDM, DOE forwarding, DPC recovery, D3cold.

Component ``"host"`` (host-cpu). What it does, and which Linux behaviour it follows
(TRUST_MODELS.md §1):

* **Boot** — enumerate through config space (:mod:`sim.host.pci`), enable Memory Space and Bus Master,
  save config state, bring up each DOE mailbox (abort + discovery), then, when attestation is
  OS-native, secure every host-owned device (CMA-SPDM "authenticates on enumeration").
* **Securing** — the one securing flow (``sim.protocols.tsm.secure_device``, or another factory given as
  ``secure_flow``) driven by :func:`sim.engine.runner.drive` at the host's costs, with the DOE driver as
  transport and a platform-request handler (``platform_handler``) for the Root Port's key slots that the
  trust model wires (thin-host: the firmware key-slot service; :class:`DirectKeySlotHandler` writes them
  with principal "host", for tests). Stream registers are the host's config writes
  (:meth:`HostKernel.enable_stream`). With ``secure_streams`` off the host does CMA authentication only
  (VCA, digests, certificate, challenge, signed measurements), which is all Lukas Wunner's CMA series does.
* **Forwarding** — :meth:`HostKernel.forward_doe` carries DOE objects for the fat TSM's SPDM_REQUEST
  loop and the VMM relay; a device in recovery or powered off refuses at once (no mailbox access).
* **DPC recovery** (``pcie/err.c`` + ``dpc_reset_link``) — on the Root Port's DPC interrupt: stop driver
  access (error_detected), wait for the link to be inactive, clear DPC Trigger Status (containment
  released, the link retrains), wait for the secondary bus (Data Link Layer Link Active polled every
  1 ms, then 100 ms, then the device's Command register until it answers), restore config state,
  bring the DOE mailbox back, then — per policy, *before* the driver resumes — re-authenticate and
  re-key (OS-native, host-owned: ``pci_cma_reauthenticate`` in ``report_slot_reset``) or tell the
  listeners (the VMM for guest-owned devices, the firmware path when attestation is firmware-driven).
  Each recovery is a :class:`RecoveryRecord` with its latency and the IDE insecure window.
* **D3cold** — entry: save state, D3hot through PMCSR, then platform power off; exit: power on, wait
  for the link as above, restore, re-authenticate before the first driver access (``resume_noirq``).
  Secondary Bus Reset (:meth:`HostKernel.reset_device`) takes the same tail.
* **FLR** (:meth:`HostKernel.flr`, Linux ``pcie_flr``) — save and disable the function, wait for its
  pending transactions, set Initiate FLR in its Device Control, wait 100 ms, wait until it answers,
  restore that function's config. Not a conventional reset: Linux does not re-authenticate after it
  (CMA state survives FLR, TRUST_MODELS.md §1). The DSM has already moved the function's TDIs to
  ERROR (§3); the listeners (the VMM, the fat TSM driver) hear ``flr``. Only when the host owns the
  device, function 0 was reset and the endpoint's stream register then reads Insecure (its FLR took
  the IDE keys and the SPDM state, the endpoint's default policy) does the host re-secure it.
* **Key refresh** (:meth:`HostKernel.refresh_keys`) — in the session the device was secured with
  (TDISP §11.4.5), the other key set on both ends, GO, the old set stopped (``tsm.refresh_keys``).
* **Policy switch** — :class:`AttestationPolicy` is the proposed _OSC bit: ``os-native`` (the OS attests
  and re-keys the devices it owns) or ``firmware`` (platform firmware does; the OS only forwards DOE
  objects and reports resets).

State changes are traced with empty data from "host" to the device on ``Channel.LINK`` (recovery,
power, authentication) or ``Channel.IDE`` (a device secured / left insecure).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Generator
from typing import Any

import simpy

from sim.devices.config_space import DEVCAP_FLR, IDE_CTL_ENABLE, Command, IdeStreamState, LnkSta
from sim.engine.runner import drive
from sim.engine.timing import ComponentClass, Op
from sim.engine.trace import Channel, EventKind
from sim.engine.world import World
from sim.host.doe_driver import DoeDriver, DoeWaitMode
from sim.host.pci import ALL_ONES, DeviceEntry, DeviceTable, PciEnumerator
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import Flow, Outbound
from sim.protocols.spdm.outcome import Ok
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SpdmRequester
from sim.protocols.tsm import (
    AllocateStream,
    EnableStream,
    Phase,
    PhaseMark,
    ProgramRootPortKey,
    ReleaseStream,
    RootPortKeySet,
    SecuredDevice,
    SecuringOptions,
    TsmFailure,
    secure_device,
)
from sim.protocols.tsm import refresh_keys as tsm_refresh_keys
from sim.rootport.dpc import DPC_STATUS_SRC, DpcStatus, DpcTriggerReason, DpcTriggerReasonExt
from sim.rootport.ide_regs import KeySlotStatus
from sim.scenario.platform import DeviceHandle, Platform
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import SubStream

SimGen = Generator[Any, Any, Any]

HOST_PATH = "host"
NS_PER_MS = 1_000_000
LINK_POLL_NS = 1 * NS_PER_MS                 # pcie_wait_for_link_status: msleep(1) between LnkSta reads
LINK_WAIT_TIMEOUT_NS = 1_000 * NS_PER_MS     # PCIE_LINK_RETRAIN_TIMEOUT_MS
POST_LINK_DELAY_NS = 100 * NS_PER_MS         # PCIe r6.0 §6.6.1: 100 ms after link training before config requests
DEVICE_READY_TIMEOUT_NS = 60_000 * NS_PER_MS  # PCIE_RESET_READY_POLL_MS
SBR_HOLD_NS = 2 * NS_PER_MS                  # pci_reset_secondary_bus: msleep(2) with SBR set
FLR_WAIT_NS = 100 * NS_PER_MS                # pcie_flr: msleep(100) after Initiate FLR (PCIe r6.0 §6.6.2)
PENDING_POLLS = 4                            # pci_wait_for_pending: 4 tries, 100/200/400 ms apart
DEVCTL_INITIATE_FLR = 0x8000
DEVSTA_TRANSACTIONS_PENDING = 1 << 5
PMCSR_D3HOT = 0x3


class AttestationPolicy(enum.StrEnum):
    """Who attests and keys devices: the proposed _OSC bit."""

    OS_NATIVE = "os-native"
    FIRMWARE = "firmware"


class DeviceState(enum.StrEnum):
    ENUMERATED = "enumerated"  # found, mailbox up, not (yet) bound to a driver
    READY = "ready"            # driver bound: config, MMIO and DOE access allowed
    RECOVERING = "recovering"  # DPC / reset recovery in progress: no driver access
    SUSPENDED = "suspended"    # D3cold
    FAILED = "failed"          # recovery gave up (link or device never came back)


class RecoveryCause(enum.StrEnum):
    DPC = "dpc"
    HOT_RESET = "hot-reset"
    D3COLD = "d3cold"
    FLR = "flr"


class HostEventKind(enum.StrEnum):
    """What the kernel tells its listeners (VMM, firmware glue, tests)."""

    BOOTED = "booted"
    AUTHENTICATED = "authenticated"
    AUTH_FAILED = "auth-failed"
    SECURED = "secured"
    SECURE_FAILED = "secure-failed"
    ERROR_DETECTED = "error-detected"      # DPC fired: device contained, driver stopped
    RESET_DONE = "reset-done"              # link back, config restored, mailbox up; re-auth still to come
    RECOVERED = "recovered"                # driver resumed (after re-auth/re-key when the host does them)
    RECOVERY_FAILED = "recovery-failed"
    D3COLD_ENTERED = "d3cold-entered"
    FLR = "flr"                            # a function was reset and its config restored (record: function)
    KEYS_REFRESHED = "keys-refreshed"
    KEY_REFRESH_FAILED = "key-refresh-failed"


@dataclasses.dataclass(frozen=True)
class HostEvent:
    kind: HostEventKind
    device: str
    time_ns: int
    detail: str = ""
    record: RecoveryRecord | None = None


@dataclasses.dataclass
class RecoveryRecord:
    """One reset of one device, from the event to the driver resuming.

    ``insecure_since_ns`` is when the device's IDE stream left Secure (None if it was not Secure);
    ``secure_again_ns`` when a stream of the port became Secure again (None: not yet). ``function`` is
    the reset function of an FLR; ``reauth_failure`` the stable reason name (e.g. "measurement-mismatch")
    when the host's re-authentication failed.
    """

    device: str
    cause: RecoveryCause
    started_ns: int
    reason: str = ""
    link_up_ns: int | None = None
    restored_ns: int | None = None
    reauth_ns: int | None = None
    resumed_ns: int | None = None
    reauthenticated: bool | None = None   # None: the host did not try (not its job under the policy)
    rekeyed: bool | None = None
    insecure_since_ns: int | None = None
    secure_again_ns: int | None = None
    failed: str = ""
    function: int | None = None
    reauth_failure: str = ""

    @property
    def latency_ns(self) -> int | None:
        """Event → driver resumed."""
        return None if self.resumed_ns is None else self.resumed_ns - self.started_ns

    def insecure_window_ns(self, now: int | None = None) -> int | None:
        """How long the IDE stream stayed insecure; measured up to ``now`` while it still is."""
        if self.insecure_since_ns is None:
            return None
        end = self.secure_again_ns if self.secure_again_ns is not None else now
        return None if end is None else end - self.insecure_since_ns

    def unauthenticated_window_ns(self, now: int | None = None) -> int | None:
        """Event → re-authenticated (up to ``now`` if it never was)."""
        end = self.reauth_ns if self.reauthenticated else now
        return None if end is None else end - self.started_ns


@dataclasses.dataclass(frozen=True)
class HostPolicy:
    """The kernel's configuration: the _OSC attestation switch, what it owns, how it verifies.

    ``verification`` defaults to a policy that trusts no root, so attestation fails until the scenario
    names the roots (``VerificationPolicy(trusted_roots=platform.root_certificates(ca))``).
    """

    attestation_policy: AttestationPolicy = AttestationPolicy.OS_NATIVE
    verification: VerificationPolicy = VerificationPolicy()
    requester: RequesterConfig = RequesterConfig()
    host_owned: frozenset[str] | None = None      # device ids the host attests and keys (None: all)
    secure_at_boot: bool = True
    secure_streams: bool = True                   # attest + session + IDE stream (tsm); False: CMA only
    securing: SecuringOptions = SecuringOptions()
    reauth_on_recovery: bool = True
    # devices the recovery path resumes without re-authenticating even with reauth_on_recovery on
    # (a host compromised for one device's traffic only: adversary skip-reauth with ``device:``)
    reauth_excluded: frozenset[str] = frozenset()
    parallel_boot: bool = False                   # secure devices concurrently (async probing) or one by one
    doe_wait: DoeWaitMode = DoeWaitMode.POLL

    def owns(self, device: str) -> bool:
        return self.attestation_policy is AttestationPolicy.OS_NATIVE and (
            self.host_owned is None or device in self.host_owned)

    def reauthenticates(self, device: str) -> bool:
        """Whether the recovery path re-authenticates (and re-keys) ``device`` after a reset."""
        return self.owns(device) and self.reauth_on_recovery and device not in self.reauth_excluded


@dataclasses.dataclass
class SecureContext:
    """What a securing flow factory gets for one device."""

    kernel: HostKernel
    device: str
    handle: DeviceHandle
    entry: DeviceEntry
    env: ProtocolEnv
    requester: SpdmRequester
    options: SecuringOptions
    recovering: bool
    previous: Any   # the last securing result for this device (None the first time)


SecureFlowFactory = Callable[[SecureContext], Flow[Any]]
PlatformRequestHandler = Callable[[str, Any], SimGen]   # (device id, request) -> answer, as a SimPy generator


@dataclasses.dataclass
class HostDevice:
    """The kernel's per-device state."""

    entry: DeviceEntry
    handle: DeviceHandle
    state: DeviceState = DeviceState.ENUMERATED
    authenticated: bool = False
    secured: bool = False
    last_auth: Any = None
    last_secure: Any = None
    stream_secure: bool = False
    insecure_since: int | None = None   # when its IDE stream last left Secure (None: Secure, or never was)
    recovery: RecoveryRecord | None = None
    ready: simpy.Event | None = None
    requester: SpdmRequester | None = None   # the requester (and session) of the last securing, for key refresh
    env: ProtocolEnv | None = None


class HostKernel:
    """The host kernel (module docstring). ``start()`` boots it as a SimPy process."""

    def __init__(self, world: World, platform: Platform, policy: HostPolicy | None = None, *,
                 secure_flow: SecureFlowFactory | None = None,
                 platform_handler: PlatformRequestHandler | None = None,
                 listeners: list[Callable[[HostEvent], None]] | None = None, path: str = HOST_PATH) -> None:
        self.world = world
        self.platform = platform
        self.policy = policy or HostPolicy()
        self.path = path
        world.register(path, self, ComponentClass.HOST_CPU)
        self.driver = DoeDriver(world, path=path, wait_mode=self.policy.doe_wait)
        self.pci = PciEnumerator(world, path)
        self.secure_flow = secure_flow
        self.platform_handler = platform_handler
        self.listeners: list[Callable[[HostEvent], None]] = list(listeners or [])
        self.table = DeviceTable()
        self.devices: dict[str, HostDevice] = {}
        self.recoveries: list[RecoveryRecord] = []
        self.events: list[HostEvent] = []
        self.phases: list[tuple[int, str, str]] = []   # (time, device, tsm Phase) milestones
        self._stream_ids: set[int] = set()
        self.booted = world.env.event()
        self._rng = world.rng(path)

    # =============================================================================================
    # boot
    # =============================================================================================

    def start(self) -> simpy.Process:
        return self.world.process(self.boot())

    def boot(self) -> SimGen:
        started = self.world.now
        ports = {name: (rp, self.platform.links[name]) for name, rp in self.platform.root_ports.items()}
        self.table = yield from self.pci.enumerate(ports, lambda path: self.platform.device_at(path).id)
        for entry in self.table:
            yield from self._bring_up(entry)
        for rp_name, rp in self.platform.root_ports.items():
            rp.dpc_listeners.append(lambda reason, ext, rp_name=rp_name: self._on_dpc(rp_name, reason, ext))
            rp.stream_listeners.append(lambda block, state, rp_name=rp_name: self._on_stream(rp_name, block, state))
        if self.policy.attestation_policy is AttestationPolicy.OS_NATIVE and self.policy.secure_at_boot:
            owned = [d for d in self.table.ids() if self.policy.owns(d)]
            if self.policy.parallel_boot:
                procs = [self.world.process(self.secure(d)) for d in owned]
                if procs:
                    yield simpy.AllOf(self.world.env, procs)
            else:
                for d in owned:
                    yield from self.secure(d)
        for dev in self.devices.values():
            if dev.state is DeviceState.ENUMERATED:
                self._set_ready(dev)
        self._event(HostEventKind.BOOTED, "", f"{len(self.table)} devices in {self.world.now - started} ns")
        self.booted.succeed(self.world.now - started)
        return self.world.now - started

    def _bring_up(self, entry: DeviceEntry) -> SimGen:
        handle = self.platform.device(entry.id)
        dev = self.devices[entry.id] = HostDevice(entry, handle, ready=self.world.env.event())
        yield from self.pci.enable(handle.link, entry)
        yield from self.pci.save_state(handle.link, entry)
        if entry.doe is not None:
            self.driver.add_mailbox(entry.id, entry.path, handle.link, 0, entry.doe, irq=handle.doe_irq)
            yield from self.driver.init_mailbox(entry.id)
        doe = f"@0x{entry.doe:03x}" if entry.doe is not None else "none"
        self._trace(dev, Channel.LINK, f"enumerated: {len(entry.functions)} function(s), DOE {doe}, "
                                       f"IDE {entry.ide_selective_streams} selective stream(s)")

    # =============================================================================================
    # attestation and securing
    # =============================================================================================

    def device(self, device: str) -> HostDevice:
        try:
            return self.devices[device]
        except KeyError:
            raise KeyError(f"host has no device '{device}' (enumerated: {', '.join(self.devices)})") from None

    def env_for(self, device: str, purpose: str = "spdm") -> ProtocolEnv:
        """The host's protocol environment for one device: its own random stream, owner "host"."""
        return self.world.protocol_env(self.path, self._rng.child(f"{device}:{purpose}:{self.world.now}"))

    def authenticate(self, device: str) -> SimGen:
        """CMA-SPDM: VCA, digests, certificate, challenge, signed measurements, against the host's policy.
        Returns the requester outcome (``.ok`` tells)."""
        dev = self.device(device)
        env = self.env_for(device, "cma")
        requester = SpdmRequester(self.policy.requester, self.policy.verification, env)
        outcome = yield from drive(self.world, self.path, env.meter, requester.attest(), self._transport(device))
        dev.last_auth = outcome
        dev.authenticated = bool(getattr(outcome, "ok", False))
        if dev.authenticated:
            self._event(HostEventKind.AUTHENTICATED, device, f"authenticated ({_outcome_text(outcome)})")
        else:
            self._event(HostEventKind.AUTH_FAILED, device, f"authentication failed: {_outcome_text(outcome)}")
        return outcome

    def secure(self, device: str, *, recovering: bool = False) -> SimGen:
        """Secure a device with the securing flow (``sim.protocols.tsm.secure_device`` unless another
        factory was given): attest, session, IDE stream keyed on both ends. With ``secure_streams`` off
        this is CMA authentication only. Returns the flow's outcome (``.ok`` tells)."""
        dev = self.device(device)
        if not self.policy.secure_streams:
            return (yield from self.authenticate(device))
        previous = dev.last_secure
        if recovering and isinstance(previous, Ok) and isinstance(previous.value, SecuredDevice) \
                and self.platform_handler is not None:
            # the reset took the keys and the session; give the old stream back before keying a new one
            yield from self.platform_handler(device, ReleaseStream(device, previous.value.stream_id))
        env = self.env_for(device, "tsm")
        requester = SpdmRequester(self.policy.requester, self.policy.verification, env)
        if self.secure_flow is not None:
            ctx = SecureContext(self, device, dev.handle, dev.entry, env, requester, self.policy.securing,
                                recovering, previous)
            flow = self.secure_flow(ctx)
        else:
            flow = secure_device(requester, env, device, self.policy.securing)
        result = yield from drive(self.world, self.path, env.meter, flow, self._transport(device))
        dev.last_secure = result
        dev.requester, dev.env = requester, env
        ok = bool(getattr(result, "ok", False))
        dev.secured = ok
        dev.authenticated = ok or dev.authenticated
        if ok:
            self._event(HostEventKind.SECURED, device, f"secured ({_outcome_text(result)})", Channel.IDE)
        else:
            self._event(HostEventKind.SECURE_FAILED, device, f"securing failed: {_outcome_text(result)}", Channel.IDE)
        return result

    def refresh_keys(self, device: str) -> SimGen:
        """Refresh the IDE keys of a device the host secured: in the same SPDM session (TDISP §11.4.5),
        KEY_PROG of the other key set to the device, the Root Port's slots through the platform handler,
        GO in the §4 order, then the old set stopped on both ends. Returns the outcome
        (``Ok(StreamKeys)`` of the new set, or a :class:`~sim.protocols.tsm.TsmFailure`)."""
        dev = self.device(device)
        previous = dev.last_secure
        secured = previous.value if isinstance(previous, Ok) and isinstance(previous.value, SecuredDevice) else None
        why = ""
        if secured is None or dev.requester is None or dev.env is None or not dev.secured:
            why = "the host holds no secured session for it"
        elif secured.session.ended:
            why = "its SPDM session has ended"
        elif dev.state is not DeviceState.READY:
            why = f"the device is {dev.state}"
        if why:
            failure = TsmFailure(device, Phase.KEY_PROG, "not-secured", f"cannot refresh keys of {device}: {why}")
            self._event(HostEventKind.KEY_REFRESH_FAILED, device, str(failure), Channel.IDE)
            return failure
        assert secured is not None and dev.requester is not None and dev.env is not None
        old = secured.keys.key_set
        flow = tsm_refresh_keys(dev.requester, dev.env, secured, self.policy.securing.port_index, retire_old=True)
        result = yield from drive(self.world, self.path, dev.env.meter, flow, self._transport(device))
        if getattr(result, "ok", False):
            self._event(HostEventKind.KEYS_REFRESHED, device,
                        f"keys refreshed: stream {secured.stream_id} {old.name} -> {secured.keys.key_set.name}",
                        Channel.IDE)
        else:
            self._event(HostEventKind.KEY_REFRESH_FAILED, device, f"key refresh failed: {_outcome_text(result)}",
                        Channel.IDE)
        return result

    def _transport(self, device: str) -> Callable[[Any], SimGen]:
        def transport(message: Any) -> SimGen:
            if isinstance(message, Outbound):
                return (yield from self.driver.exchange(device, message.object_type, message.payload,
                                                        secured_plaintext=message.plaintext))
            if isinstance(message, PhaseMark):
                self.phases.append((self.world.now, device, str(message.phase)))
                self.world.milestone(self.path, device, self.device(device).entry.path, str(message.phase))
                return None
            if self.platform_handler is None:
                self._trace(self.device(device), Channel.IDE,
                            f"platform request {type(message).__name__} refused: no key-slot path wired")
                return None
            return (yield from self.platform_handler(device, message))
        return transport

    # =============================================================================================
    # IDE stream registers (pci_ide_stream_setup / enable / disable): config writes by the host
    # =============================================================================================

    def allocate_stream_id(self) -> int | None:
        """The lowest Stream ID not in use below this host bridge (one pool of 256, as Linux keeps)."""
        for sid in range(256):
            if sid not in self._stream_ids:
                self._stream_ids.add(sid)
                return sid
        return None

    def free_stream_id(self, stream_id: int) -> None:
        self._stream_ids.discard(stream_id)

    def enable_stream(self, device: str, block: int, stream_id: int) -> SimGen:
        """Program and enable one selective stream on both ends; True when the Root Port reads Secure.

        Root Port block ``block``: RID association = the device's bus, address association = the
        port's memory window, then Control = Stream ID | Enable. Endpoint: its first selective block
        not yet enabled, RID association = the Root Port, Control = Stream ID | Enable.
        """
        dev = self.device(device)
        rp, link, cfg = dev.handle.root_port, dev.handle.link, self.pci.cfg
        port_ide, ep_ide = dev.entry.port.ide, dev.entry.ide
        if port_ide is None or ep_ide is None:
            return False
        rp_blocks = yield from cfg.ide_selective_blocks(lambda off: cfg.rp_read(rp, off), port_ide)
        ep_blocks = yield from cfg.ide_selective_blocks(lambda off: cfg.ep_read(link, 0, off), ep_ide)
        if not 0 <= block < len(rp_blocks) or not ep_blocks:
            return False
        ep_block = None
        for off, _n in ep_blocks:
            ctl = yield from cfg.ep_read(link, 0, off + 4)
            if not ctl & IDE_CTL_ENABLE or (ctl >> 24) & 0xFF == stream_id:
                ep_block = off
                break
        if ep_block is None:
            return False
        bus = dev.entry.bus
        yield from cfg.ep_write(link, 0, ep_block + 0x0C, (dev.entry.port.requester_id & 0xFFFF) << 8)
        yield from cfg.ep_write(link, 0, ep_block + 0x10, (dev.entry.port.requester_id & 0xFFFF) << 8 | 1)
        yield from cfg.ep_write(link, 0, ep_block + 4, stream_id << 24 | IDE_CTL_ENABLE)
        off, n_assoc = rp_blocks[block]
        yield from cfg.rp_write(rp, off + 0x0C, (bus << 8 | 0xFF) << 8)
        yield from cfg.rp_write(rp, off + 0x10, (bus << 8) << 8 | 1)
        if n_assoc:
            window = yield from cfg.rp_read(rp, 0x20)
            base, limit = (window & 0xFFF0) << 16, ((window >> 16) & 0xFFF0) << 16 | 0xFFFFF
            yield from cfg.rp_write(rp, off + 0x14, 1 | ((base >> 20) & 0xFFF) << 8 | ((limit >> 20) & 0xFFF) << 20)
            yield from cfg.rp_write(rp, off + 0x18, limit >> 32)
            yield from cfg.rp_write(rp, off + 0x1C, base >> 32)
        yield from cfg.rp_write(rp, off + 4, stream_id << 24 | IDE_CTL_ENABLE)
        status = yield from cfg.rp_read(rp, off + 8)
        secure = status & 0xF == IdeStreamState.SECURE
        self._trace(dev, Channel.IDE, f"stream {stream_id} (Root Port block {block}) enabled: "
                                      f"{'Secure' if secure else 'Insecure'}")
        return secure

    def disable_stream(self, device: str, block: int, stream_id: int) -> SimGen:
        """Clear Enable on the Root Port block and on the endpoint block carrying ``stream_id``."""
        dev = self.device(device)
        rp, link, cfg = dev.handle.root_port, dev.handle.link, self.pci.cfg
        if dev.entry.port.ide is not None:
            rp_blocks = yield from cfg.ide_selective_blocks(lambda off: cfg.rp_read(rp, off), dev.entry.port.ide)
            if 0 <= block < len(rp_blocks):
                yield from cfg.rp_write(rp, rp_blocks[block][0] + 4, 0)
        if dev.entry.ide is not None and dev.state is not DeviceState.SUSPENDED:
            ep_blocks = yield from cfg.ide_selective_blocks(lambda off: cfg.ep_read(link, 0, off), dev.entry.ide)
            for off, _n in ep_blocks:
                ctl = yield from cfg.ep_read(link, 0, off + 4)
                if ctl != ALL_ONES and ctl & IDE_CTL_ENABLE and (ctl >> 24) & 0xFF == stream_id:
                    yield from cfg.ep_write(link, 0, off + 4, 0)

    # =============================================================================================
    # DOE forwarding (fat TSM SPDM_REQUEST loop, VMM relay)
    # =============================================================================================

    def forward_doe(self, device: str, object_type: DoeObjectType | int, payload: bytes,
                    secured_plaintext: bytes | None = None) -> SimGen:
        """Exchange one DOE object on behalf of someone else; None when there is no answer."""
        dev = self.devices.get(device)
        if dev is None or dev.state in (DeviceState.RECOVERING, DeviceState.SUSPENDED, DeviceState.FAILED):
            if dev is not None:
                self._trace(dev, Channel.LINK, f"DOE forward refused: device {dev.state}")
            return None
        return (yield from self.driver.exchange(device, object_type, payload, secured_plaintext=secured_plaintext))

    def note_secured_response(self, device: str, plaintext: bytes) -> None:
        """The owner of a session declares the plaintext of a response record the host carried
        (the host saw only its ciphertext; the exposure tracker records that)."""
        self.world.exposure.observe_secured((self.path,), plaintext)

    # =============================================================================================
    # DPC recovery, SBR, D3cold
    # =============================================================================================

    def _on_dpc(self, rp_name: str, reason: DpcTriggerReason, ext: DpcTriggerReasonExt | None) -> None:
        for dev in self.devices.values():
            if dev.handle.root_port.path == rp_name and dev.state is not DeviceState.RECOVERING:
                why = reason.name if ext is None else f"{reason.name}/{ext.name}"
                self.world.process(self._recover_dpc(dev, why))

    def _on_stream(self, rp_name: str, block: int, state: IdeStreamState) -> None:
        """Root Port stream state changes: when the device's IDE went insecure, and when it is secure again."""
        for dev in self.devices.values():
            rp = dev.handle.root_port
            if rp.path != rp_name:
                continue
            secure = any(rp.stream_state(b) is IdeStreamState.SECURE for b in range(rp.stream_block_count))
            if secure and not dev.stream_secure:
                dev.insecure_since = None
                rec = dev.recovery
                if rec is not None and rec.insecure_since_ns is not None and rec.secure_again_ns is None:
                    rec.secure_again_ns = self.world.now
            elif dev.stream_secure and not secure:
                dev.insecure_since = self.world.now
            dev.stream_secure = secure

    def _begin(self, dev: HostDevice, cause: RecoveryCause, reason: str) -> RecoveryRecord:
        rec = RecoveryRecord(dev.entry.id, cause, self.world.now, reason)
        rec.insecure_since_ns = dev.insecure_since if dev.insecure_since is not None else (
            self.world.now if dev.stream_secure else None)
        dev.recovery = rec
        self.recoveries.append(rec)
        dev.state = DeviceState.RECOVERING
        dev.ready = self.world.env.event()
        dev.authenticated = False
        dev.secured = False
        return rec

    def _recover_dpc(self, dev: HostDevice, why: str) -> SimGen:
        rec = self._begin(dev, RecoveryCause.DPC, why)
        rp = dev.handle.root_port
        port = dev.entry.port
        self._trace(dev, Channel.LINK, f"DPC event ({why}): contained, driver stopped")
        self._event(HostEventKind.ERROR_DETECTED, dev.entry.id, why, record=rec)
        dpc = port.dpc
        if dpc is None:
            return self._fail(dev, rec, "port has no DPC capability")
        status = yield from self.pci.cfg.rp_read(rp, dpc + DPC_STATUS_SRC)
        if status & DpcStatus.INTERRUPT:
            yield from self.pci.cfg.rp_write(rp, dpc + DPC_STATUS_SRC, int(DpcStatus.INTERRUPT), 2)
        # dpc_reset_link: link inactive, then release containment by clearing Trigger Status (RW1C)
        yield from self._wait_link(dev, up=False)
        yield from self.pci.cfg.rp_write(rp, dpc + DPC_STATUS_SRC, int(DpcStatus.TRIGGER), 2)
        self._trace(dev, Channel.LINK, "DPC trigger cleared: containment released")
        yield from self._bring_back(dev, rec)

    def reset_device(self, device: str) -> SimGen:
        """Secondary Bus Reset of the port above the device (pci_reset_bus_function), then the recovery tail."""
        dev = self.device(device)
        rec = self._begin(dev, RecoveryCause.HOT_RESET, "secondary bus reset")
        rp = dev.handle.root_port
        yield from self.pci.save_state(dev.handle.link, dev.entry)
        ctl = yield from self.pci.cfg.rp_read(rp, 0x3C)
        yield from self.pci.cfg.rp_write(rp, 0x3C, ctl | 1 << 22)
        self._trace(dev, Channel.LINK, "secondary bus reset asserted")
        yield self.world.timeout(SBR_HOLD_NS)
        yield from self.pci.cfg.rp_write(rp, 0x3C, ctl & ~(1 << 22))
        yield from self._bring_back(dev, rec)
        return rec

    def flr(self, device: str, function: int = 0) -> SimGen:
        """Function Level Reset of one function, the way Linux ``pcie_flr`` does it (module docstring).

        Returns the :class:`RecoveryRecord` (cause FLR; ``failed`` says why when the function cannot be
        reset). Function 0 carries the DOE mailbox: it is unusable (forwarding refused) until the FLR is
        over and the mailbox is brought up again; other functions leave the device usable throughout.
        """
        dev = self.device(device)
        rec = RecoveryRecord(device, RecoveryCause.FLR, self.world.now, f"FLR of function {function}",
                             function=function)
        self.recoveries.append(rec)
        info = next((f for f in dev.entry.functions if f.function == function), None)
        if dev.state not in (DeviceState.READY, DeviceState.ENUMERATED):
            rec.failed = f"the device is {dev.state}"
            return rec
        if info is None or info.pcie is None:
            rec.failed = f"{device} has no function {function} with a PCI Express capability"
            return rec
        link, cfg, devctl = dev.handle.link, self.pci.cfg, info.pcie + 8
        devcap = yield from cfg.ep_read(link, function, info.pcie + 4)
        if not devcap & DEVCAP_FLR:
            rec.failed = f"function {function} does not advertise FLR"
            return rec
        dev.recovery = rec
        was_ready = dev.state
        if function == 0:
            dev.state = DeviceState.RECOVERING
            if was_ready is DeviceState.READY:
                dev.ready = self.world.env.event()
        # pci_dev_save_and_disable: save, then Command = INTx Disable (no decoding, no bus mastering)
        yield from self.pci.save_state(link, dev.entry)
        yield from cfg.ep_write(link, function, 0x04, int(Command.INTX_DISABLE), 0x3)
        # pci_wait_for_pending_transaction: Transactions Pending in Device Status, 100/200/400 ms apart
        for attempt in range(PENDING_POLLS):
            status = yield from cfg.ep_read(link, function, devctl)
            if not (status >> 16) & DEVSTA_TRANSACTIONS_PENDING:
                break
            if attempt < PENDING_POLLS - 1:
                yield self.world.timeout((1 << attempt) * 100 * NS_PER_MS)
        control = yield from cfg.ep_read(link, function, devctl)
        yield from cfg.ep_write(link, function, devctl, (control & 0xFFFF) | DEVCTL_INITIATE_FLR, 0x3)
        self._trace(dev, Channel.LINK, f"FLR of function {function} initiated")
        yield self.world.timeout(FLR_WAIT_NS)
        if not (yield from self._wait_device(dev, function)):
            return self._fail(dev, rec, f"function {function} did not answer after FLR")
        only = dataclasses.replace(dev.entry, saved=tuple(x for x in dev.entry.saved if x.function == function))
        yield from self.pci.restore_state(link, only)
        if function == 0 and dev.entry.doe is not None:
            yield from self.driver.reinit(device)
        rec.restored_ns = self.world.now
        self._trace(dev, Channel.LINK, f"function {function} config restored after FLR")
        if function == 0 and dev.secured and self.policy.secure_streams:
            stream_id = dev.last_secure.value.stream_id if isinstance(dev.last_secure, Ok) else None
            if stream_id is None or not (yield from self._endpoint_stream_secure(dev, stream_id)):
                # the FLR of the DSM function took the IDE keys (and with them the SPDM session)
                rec.insecure_since_ns = rec.started_ns
                dev.secured = dev.authenticated = False
                self._trace(dev, Channel.IDE, "IDE stream Insecure after the FLR of function 0")
                if self.policy.reauthenticates(device):
                    yield from self._reauthenticate(dev, rec)
        if function == 0:
            if was_ready is DeviceState.READY:
                self._set_ready(dev)
            else:
                dev.state = was_ready
        rec.resumed_ns = self.world.now
        self._trace(dev, Channel.LINK, f"FLR of function {function} done after {rec.latency_ns} ns")
        self._event(HostEventKind.FLR, device, f"function {function}", record=rec)
        return rec

    def _endpoint_stream_secure(self, dev: HostDevice, stream_id: int) -> SimGen:
        """Whether the endpoint's selective stream block carrying ``stream_id`` reads Enabled and Secure."""
        ide, link, cfg = dev.entry.ide, dev.handle.link, self.pci.cfg
        if ide is None:
            return False
        blocks = yield from cfg.ide_selective_blocks(lambda off: cfg.ep_read(link, 0, off), ide)
        for off, _n in blocks:
            ctl = yield from cfg.ep_read(link, 0, off + 4)
            if ctl != ALL_ONES and ctl & IDE_CTL_ENABLE and (ctl >> 24) & 0xFF == stream_id:
                status = yield from cfg.ep_read(link, 0, off + 8)
                return bool(status & 0xF == IdeStreamState.SECURE)
        return False

    def enter_d3cold(self, device: str) -> SimGen:
        """Suspend: save state, D3hot via PMCSR, then platform power off (the endpoint loses everything)."""
        dev = self.device(device)
        link = dev.handle.link
        dev.state = DeviceState.SUSPENDED
        dev.ready = self.world.env.event()
        yield from self.pci.save_state(link, dev.entry)
        pm = dev.entry.function0.pm
        if pm is not None:
            pmcsr = yield from self.pci.cfg.ep_read(link, 0, pm + 4)
            yield from self.pci.cfg.ep_write(link, 0, pm + 4, (pmcsr & 0xFFFF & ~0x3) | PMCSR_D3HOT, 0x3)
        rec = RecoveryRecord(dev.entry.id, RecoveryCause.D3COLD, self.world.now, "runtime suspend to D3cold")
        rec.insecure_since_ns = dev.insecure_since if dev.insecure_since is not None else (
            self.world.now if dev.stream_secure else None)
        dev.recovery = rec
        self.recoveries.append(rec)
        dev.authenticated = False
        dev.secured = False
        self._trace(dev, Channel.LINK, "D3cold entry: platform removes main power")
        dev.handle.endpoint.enter_d3cold()
        self._event(HostEventKind.D3COLD_ENTERED, device, "powered off", record=rec)
        return rec

    def exit_d3cold(self, device: str) -> SimGen:
        """Resume: power on, wait for the link and the device, restore, re-authenticate before the driver."""
        dev = self.device(device)
        rec = dev.recovery
        if rec is None or rec.cause is not RecoveryCause.D3COLD or rec.resumed_ns is not None:
            rec = RecoveryRecord(dev.entry.id, RecoveryCause.D3COLD, self.world.now, "resume from D3cold")
            dev.recovery = rec
            self.recoveries.append(rec)
        rec.started_ns = self.world.now
        dev.state = DeviceState.RECOVERING
        self._trace(dev, Channel.LINK, "D3cold exit: platform restores main power")
        dev.handle.endpoint.exit_d3cold()
        yield from self._bring_back(dev, rec)
        return rec

    # -- the shared tail ------------------------------------------------------------------------------

    def _bring_back(self, dev: HostDevice, rec: RecoveryRecord) -> SimGen:
        link = dev.handle.link
        if not (yield from self._wait_link(dev, up=True)):
            return self._fail(dev, rec, "link did not come back within 1 s")
        rec.link_up_ns = self.world.now
        self._trace(dev, Channel.LINK, "link up; waiting 100 ms before config requests")
        yield self.world.timeout(POST_LINK_DELAY_NS)
        if not (yield from self._wait_device(dev)):
            return self._fail(dev, rec, "device did not answer config requests")
        yield from self.pci.restore_state(link, dev.entry)
        if dev.entry.doe is not None:
            yield from self.driver.reinit(dev.entry.id)
        rec.restored_ns = self.world.now
        self._trace(dev, Channel.LINK, "config state restored, DOE mailbox up")
        self._event(HostEventKind.RESET_DONE, dev.entry.id, str(rec.cause), record=rec)
        if self.policy.reauthenticates(dev.entry.id):
            yield from self._reauthenticate(dev, rec)
        self._set_ready(dev)
        rec.resumed_ns = self.world.now
        self._trace(dev, Channel.LINK, f"driver resumed after {rec.cause}: {rec.latency_ns} ns "
                                       f"(re-authenticated: {rec.reauthenticated})")
        self._event(HostEventKind.RECOVERED, dev.entry.id, str(rec.cause), record=rec)
        return rec

    def _reauthenticate(self, dev: HostDevice, rec: RecoveryRecord) -> SimGen:
        """Re-secure (or re-authenticate) before the driver resumes; the record keeps the outcome and,
        on failure, its stable reason (a device whose firmware changed fails with measurement-mismatch
        against a policy that pins the old digest)."""
        outcome = yield from self.secure(dev.entry.id, recovering=True)
        rec.reauth_ns = self.world.now
        rec.reauthenticated = bool(getattr(outcome, "ok", False))
        rec.rekeyed = dev.secured if self.policy.secure_streams else None
        rec.reauth_failure = "" if rec.reauthenticated else str(getattr(outcome, "reason", _outcome_text(outcome)))
        return outcome

    def _wait_link(self, dev: HostDevice, *, up: bool) -> SimGen:
        """Poll the Root Port's Link Status (DLL Link Active) every 1 ms, for at most 1 s."""
        rp = dev.handle.root_port
        pcie = dev.entry.port.pcie
        if pcie is None:
            return True
        deadline = self.world.now + LINK_WAIT_TIMEOUT_NS
        while True:
            value = yield from self.pci.cfg.rp_read(rp, pcie + 0x10)
            active = bool((value >> 16) & LnkSta.DLL_LINK_ACTIVE)
            if active == up:
                return True
            if self.world.now > deadline:
                return False
            yield self.world.timeout(LINK_POLL_NS)

    def _wait_device(self, dev: HostDevice, function: int = 0) -> SimGen:
        """pci_dev_wait: read Command until it is not all ones, sleeping 1, 2, 4 ... ms in between."""
        delay = NS_PER_MS
        waited = 0
        while True:
            value = yield from self.pci.cfg.ep_read(dev.handle.link, function, 0x04)
            if value != ALL_ONES:
                return True
            if waited > DEVICE_READY_TIMEOUT_NS:
                return False
            yield self.world.timeout(delay)
            waited += delay
            delay *= 2

    def _fail(self, dev: HostDevice, rec: RecoveryRecord, why: str) -> RecoveryRecord:
        rec.failed = why
        dev.state = DeviceState.FAILED
        self._trace(dev, Channel.LINK, f"recovery failed: {why}")
        self._event(HostEventKind.RECOVERY_FAILED, dev.entry.id, why, record=rec)
        return rec

    # =============================================================================================
    # helpers
    # =============================================================================================

    def _set_ready(self, dev: HostDevice) -> None:
        dev.state = DeviceState.READY
        if dev.ready is not None and not dev.ready.triggered:
            dev.ready.succeed()

    def notify_resets_to(self, target: Callable[[str, str], None], *,
                         when: HostEventKind = HostEventKind.RECOVERED,
                         devices: frozenset[str] | None = None) -> Callable[[HostEvent], None]:
        """Tell ``target(device, reason)`` about resets (e.g. ``Vmm.notify_reset``), by default once the
        device is usable again so that its owner can re-run the securing flow. Only devices the host
        does not re-secure itself are reported unless ``devices`` names them. Returns the listener."""
        def listener(event: HostEvent) -> None:
            if event.kind is not when or event.record is None:
                return
            wanted = devices is not None and event.device in devices
            if wanted or (devices is None and not self.policy.reauthenticates(event.device)):
                target(event.device, f"{event.record.cause}: {event.record.reason}")
        self.listeners.append(listener)
        return listener

    def wait_ready(self, device: str) -> simpy.Event:
        """An event that fires when the driver may access the device (already fired if it may now)."""
        dev = self.device(device)
        assert dev.ready is not None
        return dev.ready

    def _trace(self, dev: HostDevice, channel: Channel, summary: str, event: str = "step") -> None:
        """A host step traced; ``event`` is the HostEventKind value of a reported event ("step" otherwise)."""
        self.world.trace.emit(self.path, dev.entry.path, channel, b"", f"host: {dev.entry.id} {summary}",
                              kind=EventKind.HOST, fields={"device": dev.entry.id, "event": event})

    def _event(self, kind: HostEventKind, device: str, detail: str, channel: Channel = Channel.LINK, *,
               record: RecoveryRecord | None = None) -> None:
        event = HostEvent(kind, device, self.world.now, detail, record)
        self.events.append(event)
        if device and kind in (HostEventKind.AUTHENTICATED, HostEventKind.AUTH_FAILED, HostEventKind.SECURED,
                               HostEventKind.SECURE_FAILED, HostEventKind.KEYS_REFRESHED,
                               HostEventKind.KEY_REFRESH_FAILED):
            self._trace(self.device(device), channel, detail, kind.value)
        for listener in list(self.listeners):
            listener(event)


class DirectKeySlotHandler:
    """Answers the securing flow's platform requests by writing the Root Port's key slots itself,
    through :class:`~sim.rootport.ide_regs.KeyProgrammingPort` with ``principal`` (default "host").

    No public platform gives the OS such a path (TRUST_MODELS.md §1: "Linux never touches key
    slots"); this is the hypothetical OS-native key path, and what the host-kernel unit tests use.
    Trust models wire the firmware key-slot service (thin) or the firmware itself (fat) instead.
    Each slot write costs one config-DW access per key/IFV DW plus one for the command; GO/STOP one.
    Stream registers (association, Enable) are the kernel's config writes (:meth:`HostKernel.enable_stream`).
    """

    KEY_WRITE_DWS = 8 + 2 + 1  # 256-bit key, 64-bit IFV, control

    def __init__(self, kernel: HostKernel, principal: str = HOST_PATH) -> None:
        self.kernel = kernel
        self.principal = principal
        self.blocks: dict[tuple[str, int], int] = {}   # (device, stream id) -> Root Port block

    def __call__(self, device: str, request: Any) -> SimGen:
        k = self.kernel
        rp = k.device(device).handle.root_port
        kp = rp.key_port
        if isinstance(request, AllocateStream):
            block = rp.allocate_stream_block(self.principal)
            if block is None:
                return None
            sid = k.allocate_stream_id()
            if sid is None:
                rp.release_stream_block(block)
                return None
            self.blocks[(device, sid)] = block
            return sid
        if isinstance(request, ReleaseStream):
            block = self.blocks.pop((device, request.stream_id), None)
            if block is None:
                return False
            yield from k.disable_stream(device, block, request.stream_id)
            yield k.world.delay(k.path, Op.CONFIG_DW_ACCESS)
            kp.clear(self.principal, block)
            rp.release_stream_block(block)
            k.free_stream_id(request.stream_id)
            return True
        if isinstance(request, EnableStream):
            block = self.blocks.get((device, request.stream_id))
            if block is None:
                return False
            return (yield from k.enable_stream(device, block, request.stream_id))
        if isinstance(request, ProgramRootPortKey):
            key = request.key
            block = self.blocks.get((device, key.stream_id))
            if block is None:
                return False
            yield k.world.timeout(self.KEY_WRITE_DWS * k.world.cost(k.path, Op.CONFIG_DW_ACCESS))
            status = kp.program(self.principal, block, key.key_set, request.direction, key.sub_stream, key.key,
                                key.ifv)
            return status is KeySlotStatus.SUCCESS
        if isinstance(request, RootPortKeySet):
            block = self.blocks.get((device, request.stream_id))
            if block is None:
                return False
            ok = True
            for sub in SubStream:
                yield k.world.delay(k.path, Op.CONFIG_DW_ACCESS)
                op = kp.set_go if request.go else kp.stop
                ok = op(self.principal, block, request.key_set, request.direction, sub) is KeySlotStatus.SUCCESS and ok
            return ok
        return None


def _outcome_text(outcome: Any) -> str:
    if outcome is None:
        return "no result"
    if getattr(outcome, "ok", False):
        return "ok"
    return str(outcome)
