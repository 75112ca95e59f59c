"""Adversaries: a compromised component keeps its place in the flow and follows one strategy.

The (component, strategy) → installer table is :data:`INSTALLERS`; the pairs that make no sense for a
component (the link produces no report, the DSM forwards nothing ...) are listed once, with the reason,
in :data:`NOT_APPLICABLE`. An installer wraps the component's public hooks on a built run, before or
during the run, and acts on real bytes only:

* DOE carriers (the host's ``forward_doe``, the VMM's path to the host, a link interposer in front of
  the device's DOE mailbox) pass the real object, change bytes of it (**modify**: one bit of the
  first MEASUREMENTS response, which the device signed), withhold it (**drop**: the first secured
  record, the requester then sees the DOE timeout), send an earlier real object again (**replay**:
  the first secured request in place of the third), answer as an impostor with its own certified
  identity (**substitute-identity**: a complete DSM built around another identity), or rewrite the
  firmware digest in measurements (**substitute-measurements**);
* the link interposer does the same to TLPs (``Link.set_interposer``): a flipped bit in an IDE TLP,
  a dropped TLP, two TLPs swapped, a TLP sent twice;
* a second device on the port injects TLPs upstream (a forged DMA write with the TDI's Requester ID,
  or a captured IDE TLP sent again);
* whoever can reach Root Port key slots writes keys it knows through *its own* key path
  (``KeyProgrammingPort`` with its principal, or the key-slot service as its caller), and the Root
  Port or the service refuses it where the trust model does not allow that principal;
* the fat TSM lies in the evidence it hands the guest (TDI_INFO, re-digested, before it seals it), the
  DSM in the report it builds (through its TDISP hooks) or about the firmware it runs;
* in the fat model the VMM carries the guest's GUEST_REQUESTs sealed on the guest channel: it drops
  or replays the sealed frame, flips a ciphertext bit (**modify**), or rewrites the TDI_INFO evidence
  inside the ciphertext (**substitute-identity** / **substitute-measurements**): granted the plaintext
  (the evidence is public: the device's certificates and firmware digests), it XORs its rewrite into
  the AES-GCM ciphertext (CTR mode is malleable) but cannot fix the tag, so the guest's open fails;
* the host or the VMM withholds reset notices (**skip-reauth**), or re-programs the stream after the
  guest accepted the TDI (**reprogram-after-accept**).

Every action is traced from the compromised component on ``Channel.FAULT`` with the bytes it put in
place ("adversary <component>/<strategy>: ..."), so the properties (``sim.adversary.properties``) can
quote it as evidence. **substitute-measurements** has a premise: the device runs a firmware image the
guest's policy rejects (:data:`DOWNGRADE_FIRMWARE`), and the adversary tries to hide it. The sweep runs
that premise once with nobody compromised, to tell what the adversary adds.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from sim.crypto.algorithms import BaseHashAlgo
from sim.crypto.hashes import digest
from sim.crypto.identity import Identity, build_identity
from sim.crypto.secrets import SecretClass, SecretRecord
from sim.engine.trace import Channel
from sim.engine.trace import EventKind as TraceKind
from sim.firmware.commands import (
    FwCommandId,
    FwStatus,
    GuestChannelMessage,
    ProgramKey,
    TdiInfo,
    decode_frame,
    error,
    response,
)
from sim.firmware.fat_tsm import FIRMWARE_PRINCIPAL, FatTsm
from sim.firmware.keyslot_service import KEYSLOT_PRINCIPAL, KeySlotClient, KeySlotService
from sim.host.doe_driver import DOE_TIMEOUT_NS
from sim.host.kernel import HostEventKind
from sim.protocols.dsm import DeviceSecurityManager
from sim.protocols.spdm.profile import make_profile
from sim.rootport.ide_regs import KeySlotStatus
from sim.rootport.link import LinkState, Side
from sim.scenario.schema import AdversaryComponent as C
from sim.scenario.schema import AdversaryStrategy as S
from sim.scenario.schema import EventKind, TrustModel
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeObjectType
from sim.wire.ide_km import Direction, KeySet, SubStream
from sim.wire.spdm.common import ResponseCode
from sim.wire.tdisp import InterfaceInfo, LockInterfaceFlags, TdiReport
from sim.wire.tlp import IDE_PREFIX_BYTE, MemRequestHeader, Tlp, decode_tlp

if TYPE_CHECKING:
    from sim.scenario.platform import DeviceHandle
    from sim.scenario.run import ModelRun

SimGen = Generator[Any, Any, Any]

DOWNGRADE_FIRMWARE = "0.9.0"          # the image the substitute-measurements premise flashes
IMPOSTOR_CA = "impostor-ca"           # the impostor's own CA: no policy trusts it
REPROGRAM_DELAY_NS = 1_000_000        # reprogram-after-accept acts 1 ms after the guest accepted
FORGED_WRITE_DELAY_NS = 50_000        # the second device writes after the genuine DMA has settled
FORGED_BYTE = 0xEE
RESET_EVENTS = frozenset({EventKind.DPC, EventKind.D3COLD, EventKind.FLR, EventKind.HOT_RESET,
                          EventKind.LINK_DOWN})
REPLAY_AT = 3                         # replay: the third secured request is replaced by the first


class Outcome(enum.StrEnum):
    INSTALLED = "installed"
    NOT_APPLICABLE = "not-applicable"


# ----------------------------------------------------------------------------------------------------
# the static table: pairs that make no sense for a component, whatever the trust model
# ----------------------------------------------------------------------------------------------------

_FORWARDS_NOTHING = "it forwards no DOE object or TLP: it is an end of every exchange it takes part in"
_NO_KEY_PATH = "it has no path to Root Port key slots"
_NO_REPORT = "it produces no report or evidence"
_NO_REAUTH = "it does not decide whether anyone re-authenticates after a reset"
_NO_RESET = "the scenario has no reset (DPC, hot reset, D3cold, FLR, link down) to skip re-authentication after"
_HOST_OWNS = "the host forwards no DOE object for anyone else in this model (it owns every device)"
_VMM_IDLE = "the VMM relays nothing of an assigned device in this model (the host keeps it)"
_DOE_SYNC = ("DOE carries one object at a time per mailbox (PCIe r6.0 §6.30): a relay cannot hold one object and "
             "pass a later one; holding is a drop, a late answer is a replay")

NOT_APPLICABLE: dict[tuple[C, S], str] = {
    **{(C.DEVICE_DSM, s): _FORWARDS_NOTHING for s in (S.MODIFY, S.DROP, S.REORDER, S.REPLAY)},
    (C.DEVICE_DSM, S.PROGRAM_KNOWN_KEYS): _NO_KEY_PATH + " (it holds its own keys anyway: see record)",
    (C.DEVICE_DSM, S.SKIP_REAUTH): _NO_REAUTH,
    (C.DEVICE_DSM, S.REPROGRAM_AFTER_ACCEPT): "its stream is keyed by the requester over IDE_KM; it cannot re-key "
                                              "the Root Port end",
    **{(C.FAT_TSM, s): _FORWARDS_NOTHING for s in (S.MODIFY, S.DROP, S.REORDER, S.REPLAY)},
    (C.FAT_TSM, S.SUBSTITUTE_IDENTITY): "it is the verifier; misstating what it verified is lie-in-report",
    (C.FAT_TSM, S.SKIP_REAUTH): "with fat_reconnect none nobody re-authenticates after a reset, honest or not "
                                "(liveness shows the gap)",
    **{(C.THIN_KEYSLOT, s): _FORWARDS_NOTHING for s in (S.MODIFY, S.DROP, S.REORDER, S.REPLAY)},
    (C.THIN_KEYSLOT, S.SUBSTITUTE_IDENTITY): "it never sees the device or its identity",
    (C.THIN_KEYSLOT, S.SUBSTITUTE_MEASUREMENTS): "it never sees measurements",
    (C.THIN_KEYSLOT, S.LIE_IN_REPORT): _NO_REPORT + " (only command statuses)",
    (C.THIN_KEYSLOT, S.SKIP_REAUTH): _NO_REAUTH,
    (C.HOST_KERNEL, S.REORDER): _DOE_SYNC,
    (C.HOST_KERNEL, S.LIE_IN_REPORT): _NO_REPORT,
    (C.VMM, S.REORDER): _DOE_SYNC,
    (C.VMM, S.LIE_IN_REPORT): _NO_REPORT + " (altering a relayed report is modify)",
    (C.LINK_INTERPOSER, S.PROGRAM_KNOWN_KEYS): _NO_KEY_PATH,
    (C.LINK_INTERPOSER, S.LIE_IN_REPORT): _NO_REPORT,
    (C.LINK_INTERPOSER, S.SKIP_REAUTH): _NO_REAUTH,
    (C.LINK_INTERPOSER, S.REPROGRAM_AFTER_ACCEPT): "it cannot write stream registers or key slots",
    (C.SECOND_DEVICE, S.DROP): "it is not on the path of the first device's TLPs (ID- and address-routed)",
    (C.SECOND_DEVICE, S.REORDER): "it is not on the path of the first device's TLPs (ID- and address-routed)",
    (C.SECOND_DEVICE, S.SUBSTITUTE_IDENTITY): "configuration requests are ID-routed: it cannot answer the first "
                                              "device's DOE mailbox (a host that routes them to it is "
                                              "host-kernel/substitute-identity)",
    (C.SECOND_DEVICE, S.SUBSTITUTE_MEASUREMENTS): "it cannot answer the first device's DOE mailbox",
    (C.SECOND_DEVICE, S.PROGRAM_KNOWN_KEYS): _NO_KEY_PATH,
    (C.SECOND_DEVICE, S.LIE_IN_REPORT): _NO_REPORT,
    (C.SECOND_DEVICE, S.SKIP_REAUTH): _NO_REAUTH,
    (C.SECOND_DEVICE, S.REPROGRAM_AFTER_ACCEPT): "it cannot write the first device's stream registers or key slots",
}


# ----------------------------------------------------------------------------------------------------
# an installed adversary
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Action:
    time_ns: int
    summary: str
    data: bytes = b""


@dataclasses.dataclass(frozen=True)
class NotApplicable:
    """An installer declined: the pair makes no sense here (the reason says why)."""

    component: C
    strategy: S
    reason: str
    outcome: Outcome = Outcome.NOT_APPLICABLE


@dataclasses.dataclass
class Adversary:
    """One compromised component of one run: who, how, what it did and what it knows.

    ``paths`` are the world paths the component acts as (its knowledge is what they handled);
    ``known_keys`` are keys it chose or copied; ``firmware_truth`` records, per device, the image a
    lying DSM really runs (what its measurements do not show).
    """

    component: C
    strategy: S
    device: str | None
    paths: tuple[str, ...]
    run: ModelRun
    installed_ns: int = 0
    actions: list[Action] = dataclasses.field(default_factory=list)
    known_keys: list[bytes] = dataclasses.field(default_factory=list)
    firmware_truth: dict[str, str] = dataclasses.field(default_factory=dict)
    outcome: Outcome = Outcome.INSTALLED

    @property
    def path(self) -> str:
        return self.paths[0]

    @property
    def world(self) -> Any:
        return self.run.world

    def targets(self, device: str) -> bool:
        return self.device is None or device == self.device

    def devices(self) -> list[DeviceHandle]:
        return [h for h in self.run.platform.devices if self.targets(h.id)]

    def act(self, summary: str, data: bytes = b"", destination: str = "") -> None:
        """Record one action and trace it (Channel.FAULT, from the compromised component)."""
        self.actions.append(Action(self.world.now, summary, bytes(data)))
        self.world.trace.emit(self.path, destination or self.path, Channel.FAULT, bytes(data),
                              f"adversary {self.component}/{self.strategy}: {summary}", kind=TraceKind.ADVERSARY,
                              fields={"component": str(self.component), "strategy": str(self.strategy),
                                      "action": "act"})

    @property
    def first_action_ns(self) -> int | None:
        return self.actions[0].time_ns if self.actions else None

    def attacker_key(self, label: str) -> tuple[bytes, bytes]:
        """A fresh 256-bit key and 64-bit IFV from the adversary's own random stream (registered, so the
        exposure tracker follows them)."""
        rng = self.world.rng(f"{self.path}.adversary")
        key, ifv = rng.bytes(32), rng.bytes(8)
        self.world.exposure.register(SecretRecord(f"adversary key {label}", SecretClass.IDE_KEY, self.path, key))
        self.known_keys.append(key)
        return key, ifv


Installer = Callable[[Adversary], str | None]   # returns a reason when the pair does not apply in this run


# ----------------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------------


def component_paths(run: ModelRun, component: C, device: str | None = None) -> tuple[str, ...] | None:
    """The world paths a component acts as in ``run``; None when the trust model has no such component."""
    handles = [h for h in run.platform.devices if device is None or h.id == device]
    fw = run.actors.firmware
    if component is C.DEVICE_DSM:
        return tuple(p for h in handles for p in (h.dsm_path, h.path))
    if component is C.FAT_TSM:
        return (fw.path,) if isinstance(fw, FatTsm) else None
    if component is C.THIN_KEYSLOT:
        return (fw.path,) if isinstance(fw, KeySlotService) else None
    if component is C.HOST_KERNEL:
        return (run.host.path,)
    if component is C.VMM:
        return (run.actors.vmm.path,)
    if component is C.LINK_INTERPOSER:
        return tuple(dict.fromkeys(f"{h.link.path}.interposer" for h in handles))
    return tuple(dict.fromkeys(f"{h.root_port.path}.second-device" for h in handles))


def applicability(scenario: Any, model: TrustModel, component: C | str, strategy: S | str) -> str | None:
    """Why a pair cannot apply to ``scenario`` under ``model`` (None: it may), decided without building a run:
    the static table, components the model does not have, and strategies whose premise the scenario lacks."""
    from sim.scenario.trust_models import WIRINGS, Firmware

    comp, strat = C(component), S(strategy)
    static = NOT_APPLICABLE.get((comp, strat))
    if static is not None:
        return static
    wiring = WIRINGS[TrustModel(model)]
    if comp is C.FAT_TSM and wiring.firmware is not Firmware.FAT_TSM:
        return f"the {model} model has no {comp}"
    if comp is C.THIN_KEYSLOT and wiring.firmware is not Firmware.KEY_SLOT_SERVICE:
        return f"the {model} model has no {comp}"
    if strat is S.SKIP_REAUTH and not _scenario_resets(scenario, TrustModel(model)):
        return _NO_RESET
    relay = strat in (S.MODIFY, S.DROP, S.REPLAY, S.SUBSTITUTE_IDENTITY, S.SUBSTITUTE_MEASUREMENTS)
    if relay and wiring.guest_devices is None and wiring.firmware is not Firmware.FAT_TSM:
        if comp is C.HOST_KERNEL:
            return _HOST_OWNS
        if comp is C.VMM:
            return _VMM_IDLE
    return None


def install(run: ModelRun, component: C | str, strategy: S | str, device: str | None = None
            ) -> Adversary | NotApplicable:
    """Compromise ``component`` of ``run`` with ``strategy`` from now on (limited to ``device`` if given)."""
    comp, strat = C(component), S(strategy)
    static = NOT_APPLICABLE.get((comp, strat))
    if static is not None:
        return NotApplicable(comp, strat, static)
    paths = component_paths(run, comp, device)
    if not paths:
        return NotApplicable(comp, strat, f"the {run.model} model has no {comp}")
    adv = Adversary(comp, strat, device, paths, run, installed_ns=run.world.now)
    why = INSTALLERS[(comp, strat)](adv)
    if why is not None:
        return NotApplicable(comp, strat, why)
    run.world.trace.emit(adv.path, adv.path, Channel.FAULT, b"", f"adversary {comp}/{strat}: compromised from "
                         f"{run.world.now} ns" + (f", targets {device}" if device else ""), kind=TraceKind.ADVERSARY,
                         fields={"component": str(comp), "strategy": str(strat), "action": "installed",
                                 "device": device})
    return adv


def install_premise(run: ModelRun, strategy: S | str) -> str | None:
    """Set up what a strategy presupposes, with nobody compromised (the sweep's premise baseline);
    returns a reason when the strategy has no premise in this run."""
    if S(strategy) is not S.SUBSTITUTE_MEASUREMENTS:
        return "only substitute-measurements has a premise"
    for h in run.platform.devices:
        if _expected_firmware(run, h.id) is None:
            return f"no guest policy pins the firmware of {h.id}"
        _flash_downgrade(run, h)
    return None


# ----------------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------------


def _expected_firmware(run: ModelRun, device: str) -> str | None:
    """The firmware version a scenario guest's policy expects of ``device`` (None: no guest pins it)."""
    for g in run.scenario.guests:
        ref = g.policy.expected_measurements.get(device)
        if ref is not None and ref.firmware is not None:
            return ref.firmware
    return None


def _downgrade_for(expected: str) -> str:
    return DOWNGRADE_FIRMWARE if expected != DOWNGRADE_FIRMWARE else "0.8.0"


def _flash_downgrade(run: ModelRun, handle: DeviceHandle) -> tuple[str, str] | None:
    """The premise of substitute-measurements: the device now runs an image its guest's policy rejects."""
    expected = _expected_firmware(run, handle.id)
    if expected is None:
        return None
    rogue = _downgrade_for(expected)
    handle.responder.update_firmware(rogue)
    run.world.trace.emit("scenario", handle.path, Channel.FAULT, b"",
                         f"premise: {handle.id} runs firmware {rogue}, its guest's policy expects {expected}",
                         kind=TraceKind.PREMISE, fields={"device": handle.id, "firmware": rogue, "expected": expected})
    return expected, rogue


def _firmware_digest(run: ModelRun, device: str, version: str) -> bytes:
    from sim.scenario.policies import expected_firmware_digest

    return expected_firmware_digest(run.scenario, device, version)


def _impostor_identity(adv: Adversary, handle: DeviceHandle) -> Identity:
    """The impostor's own certified identity: same algorithms as the device, its own CA."""
    profile = handle.profile
    return build_identity(adv.world.seed, f"{handle.id}-impostor", profile.asym_algos[0], profile.hash_algos[0],
                          ca_name=IMPOSTOR_CA, sink=adv.world.exposure, owner=adv.path)


def _impostor_dsm(adv: Adversary, handle: DeviceHandle) -> DeviceSecurityManager:
    """A complete DSM (SPDM, IDE_KM, TDISP) with the device's profile and the impostor's own identity."""
    prof = make_profile(handle.spec.profile, handle.id, handle.profile.measurements.firmware_version)
    return DeviceSecurityManager.build(prof, _impostor_identity(adv, handle),
                                       adv.world.protocol_env(f"{adv.path}.impostor"))


def _pad(payload: bytes) -> bytes:
    return payload + bytes(-len(payload) % 4)


def _spdm_code(object_type: int, payload: bytes) -> int | None:
    if object_type != DoeObjectType.SPDM or len(payload) < 2:
        return None
    return payload[1]


class DoeTamper:
    """What a compromised DOE carrier does to the objects it passes (one strategy, first eligible object).

    ``intercept`` sees a request and says what to do: ("send", bytes), ("drop", None) or ("answer", bytes);
    ``respond`` sees the device's answer and returns what to pass back.
    """

    def __init__(self, adv: Adversary, destination: Callable[[str], str]) -> None:
        self.adv = adv
        self.destination = destination
        self.secured_requests: list[bytes] = []
        self.done = False
        self.impostors: dict[str, DeviceSecurityManager] = {}
        self.rewrites: dict[str, tuple[bytes, bytes]] = {}   # device -> (downgrade digest, expected digest)
        if adv.strategy is S.SUBSTITUTE_MEASUREMENTS:
            for h in adv.devices():
                flashed = _flash_downgrade(adv.run, h)
                if flashed is not None:
                    expected, rogue = flashed
                    self.rewrites[h.id] = (_firmware_digest(adv.run, h.id, rogue),
                                           _firmware_digest(adv.run, h.id, expected))

    def intercept(self, device: str, object_type: int, payload: bytes) -> tuple[str, bytes | None]:
        adv, strategy = self.adv, self.adv.strategy
        secured = object_type == DoeObjectType.SECURED_SPDM
        if strategy is S.SUBSTITUTE_IDENTITY:
            dsm = self.impostors.get(device)
            if dsm is None:
                dsm = self.impostors[device] = _impostor_dsm(adv, adv.run.platform.device(device))
                adv.act(f"answers {device}'s DOE mailbox as an impostor with its own identity (CA {IMPOSTOR_CA})",
                        destination=self.destination(device))
            answer = dsm.handle_doe(object_type, payload, adv.world.now / 1e9)
            return ("drop", None) if answer is None else ("answer", _pad(answer))
        if strategy is S.DROP and secured and not self.done:
            self.done = True
            adv.act(f"withholds a secured record for {device}", payload, self.destination(device))
            return "drop", None
        if strategy is S.REPLAY and secured:
            self.secured_requests.append(bytes(payload))
            if len(self.secured_requests) == REPLAY_AT and not self.done:
                self.done = True
                earlier = self.secured_requests[0]
                adv.act(f"replays the first secured request to {device} in place of the {REPLAY_AT}rd",
                        earlier, self.destination(device))
                return "send", earlier
        return "send", payload

    def respond(self, device: str, object_type: int, response_payload: bytes | None) -> bytes | None:
        adv, strategy = self.adv, self.adv.strategy
        if response_payload is None or _spdm_code(object_type, response_payload) != ResponseCode.MEASUREMENTS:
            return response_payload
        if strategy is S.MODIFY and not self.done and len(response_payload) > 12:
            self.done = True
            changed = bytearray(response_payload)
            changed[12] ^= 0x01   # a bit of the first measurement block, which the device signed
            adv.act(f"flips a bit in {device}'s MEASUREMENTS response", bytes(changed), device)
            return bytes(changed)
        if strategy is S.SUBSTITUTE_MEASUREMENTS and device in self.rewrites:
            rogue, expected = self.rewrites[device]
            if rogue in response_payload:
                changed_bytes = response_payload.replace(rogue, expected)
                adv.act(f"rewrites {device}'s firmware digest in MEASUREMENTS to the expected one", changed_bytes,
                        device)
                return changed_bytes
        return response_payload


class _Proxy:
    """Stands in for a component on another's side (the host kernel or the fat TSM as the VMM reaches
    them): the named methods are the adversary's, everything else is the real component's."""

    def __init__(self, inner: Any, **overrides: Callable[..., Any]) -> None:
        self._inner = inner
        for name, fn in overrides.items():
            setattr(self, name, fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _tampering_forward(adv: Adversary, tamper: DoeTamper, original: Callable[..., SimGen]) -> Callable[..., SimGen]:
    def forward_doe(device: str, object_type: Any, payload: bytes, secured_plaintext: bytes | None = None) -> SimGen:
        if not adv.targets(device):
            return (yield from original(device, object_type, payload, secured_plaintext=secured_plaintext))
        what, data = tamper.intercept(device, int(object_type), bytes(payload))
        if what == "drop":
            yield adv.world.timeout(DOE_TIMEOUT_NS)   # the requester's side waits out the DOE timeout
            return None
        if what == "answer":
            yield adv.world.timeout(0)
            return data
        assert data is not None
        answer = yield from original(device, object_type, data, secured_plaintext=secured_plaintext)
        return tamper.respond(device, int(object_type), answer)
    return forward_doe


class _MailboxBackendProxy:
    """Sits between the link and the device's DOE mailbox backend (an interposer on the config TLPs)."""

    def __init__(self, adv: Adversary, device: str, inner: Any, tamper: DoeTamper | None) -> None:
        self._adv, self._device, self._inner, self._tamper = adv, device, inner, tamper

    def handle_doe(self, data_object_type: int, payload: bytes, now: float | None = None) -> bytes | None:
        adv = self._adv
        adv.world.exposure.observe_payload(adv.paths, bytes(payload))   # config TLPs cross the link in the clear
        answer: bytes | None
        if self._tamper is None:
            answer = self._inner.handle_doe(data_object_type, payload)
        else:
            what, data = self._tamper.intercept(self._device, data_object_type, bytes(payload))
            if what == "drop":
                return None
            if what == "answer":
                return data
            assert data is not None
            answer = self._tamper.respond(self._device, data_object_type,
                                          self._inner.handle_doe(data_object_type, data))
        if answer is not None:
            adv.world.exposure.observe_payload(adv.paths, bytes(answer))
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _on_phase(adv: Adversary, phase: str, action: Callable[[str], None], *, once: bool = True) -> None:
    """Call ``action(device)`` when a targeted device reaches a securing-flow milestone."""
    fired: set[str] = set()

    def listener(device: str, reached: str, _owner: str) -> None:
        if reached == phase and adv.targets(device) and not (once and device in fired):
            fired.add(device)
            action(device)
    adv.world.milestone_listeners.append(listener)


def _on_accepted(adv: Adversary, action: Callable[[str], None]) -> None:
    """Call ``action(device)`` once the device's owner accepted it: its TDI reached RUN, or (a device the
    host keeps, which has no TDI) the host secured it."""
    done: set[str] = set()

    def once(device: str) -> None:
        if device not in done:
            done.add(device)
            adv.world.call_later(REPROGRAM_DELAY_NS, lambda: action(device))
    _on_phase(adv, "RUN", once)

    def host_listener(event: Any) -> None:
        if event.kind is HostEventKind.SECURED and adv.targets(event.device) and \
                adv.run.actors.vmm.owner_of(event.device) is None:
            once(event.device)
    adv.run.host.listeners.append(host_listener)


def _latest_block(handle: DeviceHandle) -> tuple[int, KeySet] | None:
    """The Root Port block (and key set) whose slots were written last: the stream being keyed."""
    rp = handle.root_port
    best: tuple[int, int, KeySet] | None = None
    for block in range(rp.stream_block_count):
        for (key_set, _d, _s), slot in rp.stream_keys(block).slots.items():
            if best is None or slot.written_ns > best[0]:
                best = (slot.written_ns, block, key_set)
    return None if best is None else (best[1], best[2])


def _write_known_keys(adv: Adversary, handle: DeviceHandle, *, go: bool, why: str) -> None:
    """Write attacker-chosen keys into the six slots of the device's stream through the component's own
    key path; the Root Port (or the key-slot service) decides whether it may."""
    where = _latest_block(handle)
    if where is None:
        adv.act(f"finds no keyed stream of {handle.id} to overwrite")
        return
    block, key_set = where
    rp = handle.root_port
    run = adv.run
    for direction in Direction:
        for sub in SubStream:
            key, ifv = adv.attacker_key(f"{handle.id} blk{block} {key_set.name} {direction.name} {sub.name}")
            adv.act(f"{why}: writes its own key into {rp.path} blk{block} {key_set.name} {direction.name} "
                    f"{sub.name}", key + ifv, rp.path)
            if adv.component is C.HOST_KERNEL and isinstance(run.actors.firmware, KeySlotService):
                _program_via_service(adv, run.actors.firmware, handle, block, key_set, direction, sub, key, ifv, go)
                continue
            principal = {C.VMM: "vmm", C.HOST_KERNEL: "host", C.THIN_KEYSLOT: KEYSLOT_PRINCIPAL,
                         C.FAT_TSM: FIRMWARE_PRINCIPAL}[adv.component]
            status = rp.key_port.program(principal, block, key_set, direction, sub, key, ifv)
            if status is KeySlotStatus.SUCCESS and go:
                rp.key_port.set_go(principal, block, key_set, direction, sub)


def _program_via_service(adv: Adversary, service: KeySlotService, handle: DeviceHandle, block: int,
                         key_set: KeySet, direction: Direction, sub: SubStream, key: bytes, ifv: bytes,
                         go: bool) -> None:
    """The host's key path in thin models is the key-slot service, as caller "host"; it refuses streams the
    host did not allocate."""
    from sim.firmware.commands import SetGo

    client = KeySlotClient.direct(service, adv.run.host.path)
    index = service.root_port_index(handle.root_port)

    def proc() -> SimGen:
        got = yield from client.call(ProgramKey(index, block, key_set, direction, sub, key, ifv))
        if got.status is FwStatus.SUCCESS and go:
            yield from client.call(SetGo(index, block, key_set, direction, sub))
    adv.world.process(proc())


# ----------------------------------------------------------------------------------------------------
# installers, per component
# ----------------------------------------------------------------------------------------------------


def _record(adv: Adversary) -> str | None:
    """Read and record everything it handles: its knowledge is what the exposure tracker saw it handle
    (nothing to change in the flow). The link interposer also reads the DOE objects on the wire."""
    if adv.component is C.LINK_INTERPOSER:
        for h in adv.devices():
            h.link.set_interposer(lambda side, wire: wire, f"{h.link.path}.interposer")
            h.endpoint.mailbox.backend = _MailboxBackendProxy(adv, h.id, h.endpoint.mailbox.backend, None)
    if adv.component is C.SECOND_DEVICE:
        for path in adv.paths:
            if path not in adv.world.components():
                adv.world.register(path, adv)
    return None


def _host_doe(adv: Adversary) -> str | None:
    run = adv.run
    if run.wiring.guest_devices is None and not isinstance(run.actors.firmware, FatTsm):
        return _HOST_OWNS
    tamper = DoeTamper(adv, lambda device: run.platform.device(device).path)
    run.host.forward_doe = _tampering_forward(adv, tamper, run.host.forward_doe)  # type: ignore[method-assign]
    return None


def _vmm_doe(adv: Adversary) -> str | None:
    run = adv.run
    vmm = run.actors.vmm
    if isinstance(run.actors.firmware, FatTsm):
        return _vmm_guest_requests(adv)
    if run.wiring.guest_devices is None:
        return _VMM_IDLE
    tamper = DoeTamper(adv, lambda device: run.host.path)
    vmm.host = _Proxy(vmm.host, forward_doe=_tampering_forward(adv, tamper, vmm.host.forward_doe))
    return None


def _rewrite_tdi_info(adv: Adversary, info: TdiInfo, device: str) -> TdiInfo | None:
    """The evidence a carrier or the fat TSM hands the guest, changed per the strategy, re-digested."""
    strategy = adv.strategy
    certs, meas, report = info.certificates, info.measurements, info.report
    if strategy is S.SUBSTITUTE_IDENTITY:
        certs = _impostor_identity(adv, adv.run.platform.device(device)).spdm_cert_chain(BaseHashAlgo.SHA_384)
    elif strategy is S.SUBSTITUTE_MEASUREMENTS:
        expected = _expected_firmware(adv.run, device)
        if expected is None:
            return None
        rogue = _firmware_digest(adv.run, device, _downgrade_for(expected))
        if rogue not in meas:
            return None
        meas = meas.replace(rogue, _firmware_digest(adv.run, device, expected))
    elif strategy is S.LIE_IN_REPORT:
        try:
            decoded = TdiReport.decode(report)
        except DecodeError:
            return None
        report = dataclasses.replace(decoded, interface_info=InterfaceInfo(decoded.interface_info)
                                     | InterfaceInfo.NO_FW_UPDATE).encode()
    elif strategy is S.MODIFY and report:
        flipped = bytearray(report)
        flipped[-1] ^= 0x01
        return dataclasses.replace(info, report=bytes(flipped))   # blind: the digest no longer matches
    else:
        return None

    def sha(b: bytes) -> bytes:
        return digest(BaseHashAlgo.SHA_384, b)

    return dataclasses.replace(info, certificates=certs, measurements=meas, report=report,
                               certificates_digest=sha(certs), measurements_digest=sha(meas), report_digest=sha(report))


def _sealed_request_device(adv: Adversary, frame: bytes) -> str | None:
    """The device a sealed guest request is (most likely) about, from the frame alone: the guest id in the
    clear header names the guest, and the VMM knows which devices it assigned to that guest (a guest with
    several is ambiguous: only for frames the VMM did not relay itself, with no ``device:`` limit)."""
    try:
        decoded = decode_frame(frame)
    except DecodeError:
        return None
    fw = adv.run.actors.firmware
    if not isinstance(decoded.body, GuestChannelMessage) or not isinstance(fw, FatTsm):
        return None
    guest = fw.guest_name(decoded.body.guest_id)
    assigned = [d for d, g in adv.run.actors.vmm.assignments.items() if g == guest]
    return next((d for d in assigned if adv.targets(d)), assigned[0] if assigned else None)


def _known_plaintext(adv: Adversary, message: GuestChannelMessage) -> bytes | None:
    """The sealed answer's content, granted to the adversary: TDI_INFO evidence is public (certificates
    from GET_CERTIFICATE, the firmware's published digests), so the strongest carrier knows it. Read
    through the firmware's end without changing the channel (simulator bookkeeping, not a key leak)."""
    fw = adv.run.actors.firmware
    end = getattr(fw, "_channels", {}).get(message.guest_id)
    return None if end is None else end.peek(message)


def _rewrite_sealed_answer(adv: Adversary, answer: bytes, device: str, destination: str) -> bytes:
    """Tamper with a sealed TDI_INFO answer on the wire: flip a ciphertext bit (modify), or XOR the
    re-digested rewrite of the evidence into the ciphertext (substitutions); the tag stays as it was."""
    try:
        decoded = decode_frame(answer)
    except DecodeError:
        return answer
    sealed = decoded.body
    if decoded.status is not FwStatus.SUCCESS or not isinstance(sealed, GuestChannelMessage):
        return answer
    plain = _known_plaintext(adv, sealed)
    try:
        inner = decode_frame(plain) if plain is not None else None
    except DecodeError:
        inner = None
    if inner is None or plain is None or not isinstance(inner.body, TdiInfo):
        return answer
    ct = sealed.ciphertext
    if adv.strategy is S.MODIFY:
        new_ct = ct[:-1] + bytes([ct[-1] ^ 0x01])
        what = "flips a bit of the sealed TDI_INFO answer"
    else:
        changed = _rewrite_tdi_info(adv, inner.body, device)
        if changed is None:
            return answer
        new_plain = response(FwCommandId.GUEST_REQUEST, FwStatus.SUCCESS, changed).encode()
        # CTR keystream = ciphertext XOR known plaintext; beyond its end the keystream is unknown
        new_ct = bytes(c ^ o ^ n for c, o, n in zip(ct, plain, new_plain, strict=False)) + new_plain[len(ct):]
        what = "XORs altered TDI_INFO evidence into the sealed answer (the tag is left as it was)"
    out = response(FwCommandId.GUEST_CHANNEL, FwStatus.SUCCESS,
                   dataclasses.replace(sealed, ciphertext=new_ct)).encode()
    adv.act(f"{what} for {device}", out, destination)
    return out


def _vmm_guest_requests(adv: Adversary) -> str | None:
    """Fat model: the VMM carries the guest's sealed GUEST_REQUEST frames (GUEST_CHANNEL) to the host's
    TSM driver and back; it tampers with the sealed bytes, which the firmware or the guest refuses."""
    run = adv.run
    vmm, fw = run.actors.vmm, run.actors.firmware
    strategy = adv.strategy
    for h in adv.devices():
        if strategy is S.SUBSTITUTE_MEASUREMENTS:
            _flash_downgrade(run, h)
    seen: list[bytes] = []
    state = {"done": False}
    # the device each sealed frame in transit is about: the guest names it when it hands the VMM the frame
    # (as it names the TDI to bind), so the VMM tells one device's requests from another's of the same guest
    relaying: dict[bytes, str] = {}
    relay = vmm.relay_guest_request

    def relay_guest_request(guest: str, device: str, frame: bytes, **kwargs: Any) -> SimGen:
        relaying[bytes(frame)] = device
        try:
            return (yield from relay(guest, device, frame, **kwargs))
        finally:
            relaying.pop(bytes(frame), None)

    def issue(frame: bytes, *, caller: str = "host") -> SimGen:
        device = relaying.get(bytes(frame))
        if device is None and adv.device is None:
            device = _sealed_request_device(adv, frame)
        if device is None or not adv.targets(device):
            return (yield from fw.issue(frame, caller=caller))
        seen.append(bytes(frame))
        if strategy is S.DROP and not state["done"]:
            state["done"] = True
            adv.act(f"withholds a sealed GUEST_REQUEST of {device}", frame, "host")
            yield adv.world.timeout(DOE_TIMEOUT_NS)
            return error(FwCommandId.GUEST_CHANNEL, FwStatus.BUSY, "no answer").encode()
        if strategy is S.REPLAY and len(seen) == 2 and not state["done"]:
            state["done"] = True
            adv.act(f"replays the first sealed GUEST_REQUEST of {device} in place of the second", seen[0], "host")
            frame = seen[0]
        answer = yield from fw.issue(frame, caller=caller)
        if strategy in (S.MODIFY, S.SUBSTITUTE_IDENTITY, S.SUBSTITUTE_MEASUREMENTS) and not state["done"]:
            changed = _rewrite_sealed_answer(adv, answer, device, vmm.owner_of(device) or vmm.path)
            if changed != answer:
                state["done"] = strategy is S.MODIFY
                return changed
        return answer

    vmm.firmware = _Proxy(fw, issue=issue)
    vmm.relay_guest_request = relay_guest_request  # type: ignore[method-assign]
    return None


def _link_tlps(adv: Adversary) -> str | None:
    """TLP strategies of the interposer: act on the first data-carrying TLP the device sends."""
    strategy = adv.strategy
    for h in adv.devices():
        link = h.link
        name = f"{link.path}.interposer"
        state: dict[str, Any] = {"done": False, "held": None, "reinjected": set()}

        def eligible(side: Side, wire: bytes) -> bool:
            if side is not Side.ENDPOINT:
                return False
            try:
                tlp = decode_tlp(wire)
            except DecodeError:
                return False
            header = tlp.header
            return isinstance(header, MemRequestHeader) and header.is_write

        def interposer(side: Side, wire: bytes, link: Any = link, state: dict[str, Any] = state,
                       device: str = h.id, endpoint: str = h.path, rp: str = h.root_port.path) -> bytes | None:
            if wire in state["reinjected"]:
                state["reinjected"].discard(wire)
                return wire
            if state["done"] or not eligible(side, wire):
                return wire
            if strategy is S.MODIFY:
                state["done"] = True
                changed = bytearray(wire)
                changed[-1] ^= 0x01   # the last byte: inside the MAC of an IDE TLP, the payload otherwise
                adv.act(f"flips a bit of a TLP from {device}", bytes(changed), rp)
                return bytes(changed)
            if strategy is S.DROP:
                state["done"] = True
                adv.act(f"drops a TLP from {device}", wire, rp)
                return None
            if strategy is S.REPLAY:
                state["done"] = True
                copy = bytes(wire)
                state["reinjected"].add(copy)
                adv.act(f"sends a TLP from {device} a second time", copy, rp)
                adv.world.call_later(1, lambda: link.send(Side.ENDPOINT, copy))
                return wire
            if strategy is S.REORDER:
                if state["held"] is None:
                    state["held"] = bytes(wire)
                    adv.act(f"holds a TLP from {device}", wire, rp)
                    return None
                held = state["held"]
                state["done"] = True
                state["reinjected"].add(held)
                adv.act(f"lets the next TLP from {device} pass, then the held one", held, rp)
                adv.world.call_later(1, lambda: link.send(Side.ENDPOINT, held))
                return wire
            return wire

        link.set_interposer(interposer, name)
        h.endpoint.mailbox.backend = _MailboxBackendProxy(adv, h.id, h.endpoint.mailbox.backend, None)
    return None


def _link_doe(adv: Adversary) -> str | None:
    tamper = DoeTamper(adv, lambda device: adv.run.platform.device(device).dsm_path)
    for h in adv.devices():
        h.link.set_interposer(lambda side, wire: wire, f"{h.link.path}.interposer")
        h.endpoint.mailbox.backend = _MailboxBackendProxy(adv, h.id, h.endpoint.mailbox.backend, tamper)
    return None


def _second_device(adv: Adversary) -> str | None:
    """Inject TLPs upstream from a second function on the port: a forged write (modify) or a replay."""
    _record(adv)
    strategy = adv.strategy
    for h in adv.devices():
        link = h.link
        me = f"{h.root_port.path}.second-device"
        state = {"done": False}

        def watch(event: Any, h: Any = h, link: Any = link, me: str = me, state: dict[str, bool] = state) -> None:
            if state["done"] or event.channel is not Channel.TLP or event.source != h.path:
                return
            try:
                tlp = decode_tlp(event.data)
            except DecodeError:
                return
            header = tlp.header
            if not (isinstance(header, MemRequestHeader) and header.is_write):
                return
            state["done"] = True
            if strategy is S.REPLAY:
                if event.data[:1] != bytes([IDE_PREFIX_BYTE]):
                    return
                copy = bytes(event.data)

                def replay() -> None:
                    adv.act(f"sends a captured IDE TLP of {h.id} again", copy, h.root_port.path)
                    link.send(Side.ENDPOINT, copy)
                adv.world.call_later(FORGED_WRITE_DELAY_NS, replay)
                return
            size = 4 * header.length_dw
            forged = Tlp(MemRequestHeader.write(header.requester_id, 0xA5, header.address, size // 4),
                         bytes([FORGED_BYTE]) * size).encode()

            def inject(h: Any = h, link: Any = link, me: str = me, forged: bytes = forged, header: Any = header,
                       size: int = size) -> None:
                adv.act(f"writes {size} forged bytes to 0x{header.address:x} as {h.id} (Requester ID "
                        f"0x{header.requester_id:04x})", forged, h.root_port.path)
                # its own TLP, in the clear: it has no IDE keys of the first device's stream, so it cannot go
                # through Link.send (which would seal it with the first device's engine)
                adv.world.trace.emit(me, h.root_port.path, Channel.TLP, forged, "TLP from a second device: "
                                     + decode_tlp(forged).summary(), kind=TraceKind.TLP_INJECTED,
                                     fields={"by": "second-device"})
                if link.state is LinkState.UP:
                    adv.world.call_later(link.hop_ns, lambda: h.root_port.receive_tlp(forged))
            adv.world.call_later(FORGED_WRITE_DELAY_NS, inject)
        adv.world.trace.subscribe(watch)
    return None


def _dsm_identity(adv: Adversary) -> str | None:
    tamper = DoeTamper(adv, lambda device: adv.run.host.path)
    for h in adv.devices():
        h.endpoint.mailbox.backend = _DsmFace(adv, h.id, h.endpoint.mailbox.backend, tamper)
    return None


class _DsmFace(_MailboxBackendProxy):
    """The compromised DSM answering its own mailbox (no link observation: it is the device)."""

    def handle_doe(self, data_object_type: int, payload: bytes, now: float | None = None) -> bytes | None:
        assert self._tamper is not None
        what, data = self._tamper.intercept(self._device, data_object_type, bytes(payload))
        if what == "answer":
            return data
        return None if what == "drop" else self._inner.handle_doe(data_object_type, payload)


def _dsm_measurements(adv: Adversary) -> str | None:
    """The device runs an image its guest's policy rejects, and keeps signing the expected measurements."""
    for h in adv.devices():
        expected = _expected_firmware(adv.run, h.id)
        if expected is None:
            return f"no guest policy pins the firmware of {h.id}"
        rogue = _downgrade_for(expected)
        adv.firmware_truth[h.id] = rogue
        adv.act(f"{h.id} runs firmware {rogue} but reports the measurements of {expected}", destination=h.path)
    return None


class _LyingHooks:
    """The DSM's TDISP hooks, with the report's MMIO ranges shifted by one page (a lie the signature covers:
    the report travels in the session, built by the device itself)."""

    def __init__(self, adv: Adversary, device: str, inner: Any) -> None:
        self._adv, self._device, self._inner = adv, device, inner

    def mmio_ranges(self, tdi: Any) -> Any:
        ranges = self._inner.mmio_ranges(tdi)
        if not ranges:
            return ranges
        shifted = (dataclasses.replace(ranges[0], first_page=ranges[0].first_page + 1),) + tuple(ranges[1:])
        self._adv.act(f"{self._device}'s report places MMIO range 0 one page off its BAR")
        return shifted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _dsm_report(adv: Adversary) -> str | None:
    for h in adv.devices():
        h.dsm.tdisp.hooks = _LyingHooks(adv, h.id, h.dsm.tdisp.hooks)
    return None


def _fat_command(adv: Adversary) -> str | None:
    """The fat TSM's evidence to the guest (TDI_INFO), altered and re-digested before the TSM seals it:
    the guest channel protects the guest from its carriers, not from the firmware at its other end."""
    fw = adv.run.actors.firmware
    assert isinstance(fw, FatTsm)
    if adv.strategy is S.LIE_IN_REPORT and adv.device is None:
        fw.lock_flags = LockInterfaceFlags(0)
        adv.act("locks TDIs without NO_FW_UPDATE")
    elif adv.strategy is S.LIE_IN_REPORT:
        _lock_without_no_fw_update(adv, fw)
    if adv.strategy is S.SUBSTITUTE_MEASUREMENTS:
        for h in adv.devices():
            _flash_downgrade(adv.run, h)
    original = fw._tdi_info

    def tdi_info(dev: Any, tdi: Any) -> SimGen:
        out = yield from original(dev, tdi)
        if not adv.targets(dev.device_id) or out.status is not FwStatus.SUCCESS or not isinstance(out.body, TdiInfo):
            return out
        changed = _rewrite_tdi_info(adv, out.body, dev.device_id)
        if changed is None:
            return out
        lie = response(FwCommandId.GUEST_REQUEST, FwStatus.SUCCESS, changed)
        adv.act(f"hands the guest altered TDI_INFO evidence for {dev.device_id}", lie.encode(),
                fw.guest_name(tdi.guest_id) or "host")
        return lie
    fw._tdi_info = tdi_info  # type: ignore[method-assign]
    return None


def _key_port_targeted(adv: Adversary, service: KeySlotService, root_port: int) -> bool:
    """Whether a key-slot command for the service's Root Port ``root_port`` keys a targeted device's
    stream (one device per Root Port)."""
    return adv.device is None or any(service.root_port_index(h.root_port) == root_port for h in adv.devices())


def _lock_without_no_fw_update(adv: Adversary, fw: FatTsm) -> None:
    """The fat TSM locks only the targeted device's TDIs without NO_FW_UPDATE: its lock flags are changed
    for the TDI_BINDs of that device alone (the firmware core runs one command at a time, so no other
    device's bind runs while they are changed)."""
    bind = fw._tdi_bind
    adv.act(f"locks {adv.device}'s TDIs without NO_FW_UPDATE")

    def tdi_bind(active: Any, body: Any) -> SimGen:
        dev = fw.devices.get(body.dev_handle)
        if dev is None or not adv.targets(dev.device_id):
            return (yield from bind(active, body))
        honest, fw.lock_flags = fw.lock_flags, LockInterfaceFlags(0)
        try:
            return (yield from bind(active, body))
        finally:
            fw.lock_flags = honest
    fw._tdi_bind = tdi_bind  # type: ignore[method-assign]


def _known_keys(adv: Adversary) -> str | None:
    """Make the keys in the Root Port slots keys the component knows: where the keys it carries are
    readable to it, it keeps a copy (and passes them on); otherwise it writes its own over them at
    K_SET_GO through its own key path (refused where the Root Port does not allow its principal)."""
    run = adv.run
    comp = adv.component
    reads_keys = (comp in (C.FAT_TSM, C.THIN_KEYSLOT)
                  or (comp is C.VMM and run.model is TrustModel.THIN_VMM)
                  or (comp is C.HOST_KERNEL and run.wiring.guest_devices is None))
    if reads_keys:
        if comp is C.VMM:
            vmm = run.actors.vmm
            original = vmm.key_slot_hypercall

            def hypercall(guest: str, frame: bytes) -> SimGen:
                try:
                    body = decode_frame(frame).body
                except DecodeError:
                    body = None
                if isinstance(body, ProgramKey) and _key_port_targeted(adv, vmm.slot_service, body.root_port):
                    adv.known_keys.append(bytes(body.key))
                    adv.act("keeps a copy of a key it writes for the guest", body.key + body.ifv)
                return (yield from original(guest, frame))
            vmm.key_slot_hypercall = hypercall  # type: ignore[method-assign]
        else:
            whose = "" if adv.device is None else f" for {adv.device}"
            adv.act(f"keeps a copy of every key it programs{whose} (it reads them in the clear)")
        return None

    def overwrite(device: str) -> None:
        _write_known_keys(adv, run.platform.device(device), go=False, why="program-known-keys")
    _on_phase(adv, "K_SET_GO", overwrite)
    return None


def _reprogram(adv: Adversary) -> str | None:
    run = adv.run
    comp = adv.component

    def act(device: str) -> None:
        handle = run.platform.device(device)
        if comp is C.HOST_KERNEL:
            where = _latest_block(handle)
            sid = handle.endpoint.secure_stream()
            if where is None or sid is None:
                adv.act(f"finds no stream of {device} to re-program")
                return
            block = where[0]
            adv.act(f"re-programs {device}'s stream {sid} (disable, enable) after the owner accepted it",
                    destination=handle.path)

            def proc() -> SimGen:
                yield from run.host.disable_stream(device, block, sid)
                yield from run.host.enable_stream(device, block, sid)
            adv.world.process(proc())
            return
        _write_known_keys(adv, handle, go=True, why="reprogram-after-accept")
    _on_accepted(adv, act)
    return None


def _scenario_resets(scenario: Any, model: TrustModel, device: str | None = None) -> bool:
    """Whether the scenario resets a device under ``model`` (``device``: that one, by its id or its port)."""
    port = next((d.port for d in scenario.platform.devices if d.id == device), None)

    def hits(e: Any) -> bool:
        return device is None or getattr(e, "device", None) == device or \
            (port is not None and getattr(e, "port", None) == port)
    return any(e.kind in RESET_EVENTS and hits(e) for e in scenario.timeline if e.models is None or model in e.models)


def _skip_reauth(adv: Adversary) -> str | None:
    """The host resumes without re-authenticating and tells nobody of resets; the VMM swallows reset notices.
    Limited to one device, the host skips only that device's re-authentication (``HostPolicy.reauth_excluded``)."""
    run = adv.run
    if not _scenario_resets(run.scenario, run.model):
        return _NO_RESET
    if adv.device is not None and not _scenario_resets(run.scenario, run.model, adv.device):
        return f"the scenario has no reset (DPC, hot reset, D3cold, FLR, link down) of {adv.device}"
    if adv.component is C.HOST_KERNEL:
        if adv.device is None:
            run.host.policy = dataclasses.replace(run.host.policy, reauth_on_recovery=False)
        else:
            run.host.policy = dataclasses.replace(
                run.host.policy, reauth_excluded=run.host.policy.reauth_excluded | {adv.device})
        kinds = {HostEventKind.ERROR_DETECTED, HostEventKind.D3COLD_ENTERED, HostEventKind.RESET_DONE,
                 HostEventKind.RECOVERED, HostEventKind.FLR}
        wrapped = []
        for listener in list(run.host.listeners):
            def filtered(event: Any, listener: Any = listener) -> None:
                if event.kind in kinds and adv.targets(event.device):
                    if event.kind is HostEventKind.RECOVERED:
                        adv.act(f"resumes {event.device} without re-authentication and tells nobody of the reset")
                    return
                listener(event)
            wrapped.append(filtered)
        run.host.listeners[:] = wrapped
        # the reset policy switch stays under the real host's control for later-attached listeners
        return None
    vmm = run.actors.vmm
    original = vmm.notify_reset

    def notify_reset(device: str, reason: str) -> None:
        if adv.targets(device) and vmm.owner_of(device) is not None:
            adv.act(f"withholds the reset notice of {device} ({reason}) from its guest")
            return
        original(device, reason)
    vmm.notify_reset = notify_reset  # type: ignore[method-assign]
    return None


def _not_here(reason: str) -> Installer:
    return lambda adv: reason


INSTALLERS: dict[tuple[C, S], Installer] = {
    (C.DEVICE_DSM, S.RECORD): _record,
    (C.DEVICE_DSM, S.SUBSTITUTE_IDENTITY): _dsm_identity,
    (C.DEVICE_DSM, S.SUBSTITUTE_MEASUREMENTS): _dsm_measurements,
    (C.DEVICE_DSM, S.LIE_IN_REPORT): _dsm_report,
    (C.FAT_TSM, S.RECORD): _record,
    (C.FAT_TSM, S.SUBSTITUTE_MEASUREMENTS): _fat_command,
    (C.FAT_TSM, S.PROGRAM_KNOWN_KEYS): _known_keys,
    (C.FAT_TSM, S.LIE_IN_REPORT): _fat_command,
    (C.FAT_TSM, S.REPROGRAM_AFTER_ACCEPT): _reprogram,
    (C.THIN_KEYSLOT, S.RECORD): _record,
    (C.THIN_KEYSLOT, S.PROGRAM_KNOWN_KEYS): _known_keys,
    (C.THIN_KEYSLOT, S.REPROGRAM_AFTER_ACCEPT): _reprogram,
    (C.HOST_KERNEL, S.RECORD): _record,
    (C.HOST_KERNEL, S.MODIFY): _host_doe,
    (C.HOST_KERNEL, S.DROP): _host_doe,
    (C.HOST_KERNEL, S.REPLAY): _host_doe,
    (C.HOST_KERNEL, S.SUBSTITUTE_IDENTITY): _host_doe,
    (C.HOST_KERNEL, S.SUBSTITUTE_MEASUREMENTS): _host_doe,
    (C.HOST_KERNEL, S.PROGRAM_KNOWN_KEYS): _known_keys,
    (C.HOST_KERNEL, S.SKIP_REAUTH): _skip_reauth,
    (C.HOST_KERNEL, S.REPROGRAM_AFTER_ACCEPT): _reprogram,
    (C.VMM, S.RECORD): _record,
    (C.VMM, S.MODIFY): _vmm_doe,
    (C.VMM, S.DROP): _vmm_doe,
    (C.VMM, S.REPLAY): _vmm_doe,
    (C.VMM, S.SUBSTITUTE_IDENTITY): _vmm_doe,
    (C.VMM, S.SUBSTITUTE_MEASUREMENTS): _vmm_doe,
    (C.VMM, S.PROGRAM_KNOWN_KEYS): _known_keys,
    (C.VMM, S.SKIP_REAUTH): _skip_reauth,
    (C.VMM, S.REPROGRAM_AFTER_ACCEPT): _reprogram,
    (C.LINK_INTERPOSER, S.RECORD): _record,
    (C.LINK_INTERPOSER, S.MODIFY): _link_tlps,
    (C.LINK_INTERPOSER, S.DROP): _link_tlps,
    (C.LINK_INTERPOSER, S.REORDER): _link_tlps,
    (C.LINK_INTERPOSER, S.REPLAY): _link_tlps,
    (C.LINK_INTERPOSER, S.SUBSTITUTE_IDENTITY): _link_doe,
    (C.LINK_INTERPOSER, S.SUBSTITUTE_MEASUREMENTS): _link_doe,
    (C.SECOND_DEVICE, S.RECORD): _record,
    (C.SECOND_DEVICE, S.MODIFY): _second_device,
    (C.SECOND_DEVICE, S.REPLAY): _second_device,
}


def applicable_pairs() -> list[tuple[C, S]]:
    """Every (component, strategy) pair that has an installer, in table order."""
    return [(c, s) for c in C for s in S if (c, s) in INSTALLERS]


def table() -> list[dict[str, str]]:
    """The whole component × strategy table: implemented, or not applicable and why."""
    out = []
    for c in C:
        for s in S:
            if (c, s) in INSTALLERS:
                doc = (INSTALLERS[(c, s)].__doc__ or "").strip().splitlines()
                out.append({"component": str(c), "strategy": str(s), "status": "implemented",
                            "how": doc[0] if doc else ""})
            else:
                out.append({"component": str(c), "strategy": str(s), "status": "not-applicable",
                            "how": NOT_APPLICABLE.get((c, s), "not implemented")})
    return out


__all__ = ["DOWNGRADE_FIRMWARE", "INSTALLERS", "NOT_APPLICABLE", "Action", "Adversary", "DoeTamper", "NotApplicable",
           "Outcome", "applicability", "applicable_pairs", "component_paths", "install", "install_premise", "table"]
