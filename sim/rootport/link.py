"""The PCIe link between a Root Port and an endpoint: TLP bytes, hop latency, IDE, resets.

What crosses the link is exactly the byte string of a TLP (``sim.wire.tlp``). When the sending
port has a Secure selective IDE stream for a TLP, the link frames it as an IDE TLP (PROTOCOLS.md
§7.2): IDE prefix (0x92, stream ID, sub-stream, K, T) ‖ header ‖ AES-GCM-256 ciphertext of the
payload ‖ 96-bit MAC, with IV = 0x00000000 ‖ invocation counter (starting at the slot's IFV,
+1 per TLP per sub-stream) and the header as AAD. The receiving port checks the MAC with its Rx
key; a failure (MAC mismatch or no matching live key: a key mismatch) sets the receiver's stream
Insecure, is traced on the IDE channel, reported to ``on_integrity_failure`` listeners, and the
partner port receives the IDE Fail Message one hop later (its Status bit 31, PROTOCOLS.md §7.1).

Each end supplies its IDE hardware through :class:`IdePortCrypto` (the Root Port and
``sim.devices.endpoint.Endpoint`` implement it). An end without one sends and receives TLPs in the
clear; an end that seals its own TLPs sends bytes that already carry the IDE prefix, and the link
carries those unchanged.

Configuration requests to the endpoint are routed through the link too (:meth:`Link.cfg_read`,
:meth:`Link.cfg_write`): traced, and answered with all ones while the link is not up, which is
what software reads when a Configuration Request gets no completion.

An interposer (an adversary or a test probe) sees exactly the bytes on the wire and may return
modified bytes or None to drop them. The link goes down and up (training takes the timing
model's ``link-training`` time) and delivers reset signals to the endpoint's hook.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sim.engine.faults import FaultKind, FaultRequest
from sim.engine.timing import ComponentClass, Op
from sim.engine.trace import Channel, EventKind
from sim.wire.codec import DecodeError
from sim.wire.ide_km import KeySet, SubStream
from sim.wire.tlp import (
    IDE_PREFIX_BYTE,
    CompletionHeader,
    IdePrefix,
    IdeTlp,
    Tlp,
    TlpHeader,
    decode_tlp,
)

if TYPE_CHECKING:
    from sim.engine.world import World
    from sim.rootport.root_port import RootPort


class LinkState(enum.StrEnum):
    UP = "up"              # DL_Active: TLPs flow
    DOWN = "down"          # no link (disabled, contained, in reset, or lost)
    TRAINING = "training"  # on its way up; TLPs are dropped


class LinkReset(enum.StrEnum):
    """Why the endpoint below lost its link; each is a conventional reset for the endpoint
    (TRUST_MODELS.md §3: DPC, SBR and D3cold are conventional resets; a DL_Down at an upstream
    port resets the device as a hot reset does [S])."""

    HOT_RESET = "hot-reset"          # Secondary Bus Reset at the Root Port
    DPC = "dpc"                      # Downstream Port Containment
    LINK_DOWN = "link-down"          # link disabled by software or lost


class Side(enum.StrEnum):
    ROOT_PORT = "root-port"
    ENDPOINT = "endpoint"


def sub_stream_of(header: TlpHeader) -> SubStream:
    """Posted writes travel in PR, reads in NPR, completions in CPL (§6.2 / §7.2)."""
    if isinstance(header, CompletionHeader):
        return SubStream.CPL
    return SubStream.PR if header.has_data else SubStream.NPR


class IdePortCrypto(Protocol):
    """One end's IDE hardware, as the link uses it."""

    def ide_tx_stream(self, header: TlpHeader) -> int | None:
        """Stream ID a TLP with this header must be sent in (a Secure stream), or None for the clear."""
        ...

    def ide_seal(self, stream_id: int, sub_stream: SubStream, aad: bytes,
                 plaintext: bytes) -> tuple[KeySet, bytes, bytes] | None:
        """(key set, ciphertext, 96-bit MAC) with the live Tx key; None if it cannot transmit."""
        ...

    def ide_open(self, stream_id: int, sub_stream: SubStream, key_set: KeySet, aad: bytes,
                 ciphertext: bytes, mac: bytes) -> bytes | None:
        """The plaintext, or None on an integrity failure (the port then makes the stream Insecure)."""
        ...

    def ide_fail_message(self, stream_id: int) -> None:
        """The partner port reports an integrity failure on this stream (IDE Fail Message)."""
        ...


Interposer = Callable[[Side, bytes], bytes | None]
"""Sees (sender side, wire bytes); returns the bytes to deliver (maybe modified) or None to drop."""


ConfigReader = Callable[[int, int], int]               # (function, DW offset) -> value
ConfigWriter = Callable[[int, int, int, int], None]   # (function, DW offset, value, byte enable)
ALL_ONES = 0xFFFF_FFFF


@dataclasses.dataclass
class _EndpointHooks:
    path: str
    receive: Callable[[bytes], None]
    reset: Callable[[LinkReset], None] | None
    state: Callable[[LinkState], None] | None
    ide: IdePortCrypto | None
    config_read: ConfigReader | None
    config_write: ConfigWriter | None


class LinkPort:
    """The endpoint's handle on its link (what ``sim.devices`` calls)."""

    def __init__(self, link: Link) -> None:
        self._link = link

    @property
    def up(self) -> bool:
        return self._link.state is LinkState.UP

    def send_tlp(self, data: bytes, *, tee: bool = False) -> None:
        """Send a plain TLP upstream (the link applies IDE when the endpoint's stream is Secure, with the
        prefix's T bit from ``tee``: a TDI's TEE request). Bytes already IDE-prefixed are carried unchanged."""
        self._link.send(Side.ENDPOINT, bytes(data), tee=tee)


class Link:
    """A Root Port to endpoint link.

    ``hop_ns`` overrides the timing model's ``link-hop`` cost; the link-training time comes from
    the timing model too (component class "hardware").
    """

    def __init__(self, world: World, root_port: RootPort, *, hop_ns: int | None = None,
                 initially_up: bool = True) -> None:
        self.world = world
        self.root_port = root_port
        self.path = f"{root_port.path}.link"
        world.register(self.path, self, ComponentClass.HARDWARE)
        self.hop_ns = world.cost(self.path, Op.LINK_HOP) if hop_ns is None else hop_ns
        self.state = LinkState.UP if initially_up else LinkState.DOWN
        self._endpoint: _EndpointHooks | None = None
        self._generation = 0  # bumps on every down: TLPs in flight from an older generation are lost
        self._holds: set[str] = set()  # reasons the link is held down (SBR asserted, DPC, Link Disable)
        self.interposer: Interposer | None = None
        self.interposer_name = "interposer"
        self._pending_faults: list[FaultRequest] = []
        self.integrity_listeners: list[Callable[[Side, int], None]] = []
        self.stats = {"sent": 0, "delivered": 0, "dropped": 0, "ide": 0, "integrity_failures": 0}
        root_port.attach_link(self)
        for kind in (FaultKind.LINK_DOWN, FaultKind.LINK_UP, FaultKind.DROP_TLP, FaultKind.CORRUPT_TLP):
            world.faults.offer(self.path, kind, self._fault)

    # -- wiring -------------------------------------------------------------------------------------

    def connect_endpoint(self, path: str, *, receive: Callable[[bytes], None],
                         reset: Callable[[LinkReset], None] | None = None,
                         state: Callable[[LinkState], None] | None = None,
                         ide: IdePortCrypto | None = None,
                         config_read: ConfigReader | None = None,
                         config_write: ConfigWriter | None = None) -> LinkPort:
        """Attach the endpoint: its TLP receive callback, reset and link-state hooks, IDE hardware
        and config-space access functions."""
        if self._endpoint is not None:
            raise ValueError(f"{self.path} already has an endpoint ({self._endpoint.path})")
        self._endpoint = _EndpointHooks(path, receive, reset, state, ide, config_read, config_write)
        return LinkPort(self)

    # -- configuration requests to the endpoint -------------------------------------------------------

    def cfg_read(self, function: int, offset: int, *, by: str) -> int:
        """A Type 1 config read routed to the endpoint (DW offset); all ones when nothing answers."""
        ep = self._endpoint
        ok = ep is not None and ep.config_read is not None and self.state is LinkState.UP
        value = ep.config_read(function, offset) if ok else ALL_ONES  # type: ignore[union-attr,misc]
        self.world.trace.emit(by, self.endpoint_path, Channel.CONFIG, value.to_bytes(4, "little"),
                              f"CfgRd fn{function} 0x{offset:03x} -> 0x{value:08x}" + ("" if ok else " (no link)"),
                              kind=EventKind.CONFIG_READ, fields={"function": function, "offset": offset, "ok": ok})
        return value

    def cfg_write(self, function: int, offset: int, value: int, byte_enable: int = 0xF, *, by: str) -> bool:
        """A Type 1 config write routed to the endpoint; False when it could not be delivered."""
        ep = self._endpoint
        ok = ep is not None and ep.config_write is not None and self.state is LinkState.UP
        self.world.trace.emit(by, self.endpoint_path, Channel.CONFIG, (value & ALL_ONES).to_bytes(4, "little"),
                              f"CfgWr fn{function} 0x{offset:03x} be={byte_enable:x} <- 0x{value:08x}"
                              + ("" if ok else " (no link)"), kind=EventKind.CONFIG_WRITE,
                              fields={"function": function, "offset": offset, "byte_enable": byte_enable, "ok": ok})
        if ok:
            ep.config_write(function, offset, value, byte_enable)  # type: ignore[union-attr,misc]
        return ok

    @property
    def endpoint_path(self) -> str:
        return self._endpoint.path if self._endpoint is not None else f"{self.root_port.path}.(empty)"

    def set_interposer(self, interposer: Interposer | None, name: str = "interposer") -> None:
        self.interposer = interposer
        self.interposer_name = name

    # -- TLPs ---------------------------------------------------------------------------------------

    def send(self, side: Side, plain: bytes, *, tee: bool = False) -> None:
        """A port puts a TLP on the link: IDE framing (T bit = ``tee``), trace, interposer, hop latency,
        delivery."""
        src, dst = self._ends(side)
        if self.state is not LinkState.UP:
            self._drop(src, dst, plain, f"link {self.state}", by="link-down")
            return
        wire = self._protect(side, plain, tee)
        self.stats["sent"] += 1
        observers = (self.interposer_name,) if self.interposer is not None else ()
        self.world.trace.emit(src, dst, Channel.TLP, wire, _summary(wire), observers=observers, kind=EventKind.TLP)
        if self.interposer is not None:
            changed = self.interposer(side, wire)
            if changed is None:
                self._drop(self.interposer_name, dst, wire, "dropped by interposer", by="interposer")
                return
            if changed != wire:
                self.world.trace.emit(self.interposer_name, dst, Channel.TLP, changed,
                                      "modified by interposer: " + _summary(changed), kind=EventKind.TLP_MODIFIED,
                                      fields={"by": "interposer"})
                wire = bytes(changed)
        wire = self._apply_one_shot_faults(src, dst, wire)
        if wire is None:
            return
        generation = self._generation
        self.world.call_later(self.hop_ns, lambda: self._arrive(side, wire, generation))

    def _protect(self, side: Side, plain: bytes, tee: bool) -> bytes:
        ide = self._ide(side)
        if ide is None or plain[:1] == bytes([IDE_PREFIX_BYTE]):
            return plain
        try:
            tlp = decode_tlp(plain)
        except DecodeError:
            return plain  # malformed bytes travel as they are; the receiver deals with them
        if not isinstance(tlp, Tlp):
            return plain
        stream_id = ide.ide_tx_stream(tlp.header)
        if stream_id is None:
            return plain
        sub = sub_stream_of(tlp.header)
        aad = tlp.header.encode()
        sealed = ide.ide_seal(stream_id, sub, aad, tlp.data)
        if sealed is None:
            return plain  # [U] a stream that cannot transmit: the TLP goes in the clear, the receiver decides
        key_set, ciphertext, mac = sealed
        self.stats["ide"] += 1
        prefix = IdePrefix(stream_id=stream_id, sub_stream=sub, key_set=key_set, tee=int(tee))
        return IdeTlp(prefix, tlp.header, ciphertext, mac).encode()

    def _arrive(self, sender: Side, wire: bytes, generation: int) -> None:
        src, dst = self._ends(sender)
        if generation != self._generation or self.state is not LinkState.UP:
            self._drop(src, dst, wire, "lost in flight (link went down)", by="link-down")
            return
        receiver = Side.ENDPOINT if sender is Side.ROOT_PORT else Side.ROOT_PORT
        plain: bytes | None = wire
        if wire[:1] == bytes([IDE_PREFIX_BYTE]):
            plain = self._unprotect(receiver, wire)
            if plain is None:
                return
        self.stats["delivered"] += 1
        if receiver is Side.ROOT_PORT:
            # T=1 (a TDI's TEE request) counts only when it arrived inside a Secure stream (§7.2 prefix T bit)
            tee = wire[:1] == bytes([IDE_PREFIX_BYTE]) and IdePrefix.decode(wire[:4]).tee == 1
            self.root_port.receive_tlp(plain, tee=tee)
        elif self._endpoint is not None:
            self._endpoint.receive(plain)

    def _unprotect(self, receiver: Side, wire: bytes) -> bytes | None:
        """Check and decrypt an IDE TLP at the receiver; None (and an integrity failure) if it fails."""
        ide = self._ide(receiver)
        try:
            itlp = IdeTlp.decode(wire)
        except DecodeError as exc:
            self._integrity_failure(receiver, None, f"malformed IDE TLP: {exc}")
            return None
        stream_id = itlp.prefix.stream_id
        if ide is None:
            self._integrity_failure(receiver, stream_id, "receiver has no IDE")
            return None
        if itlp.mac is None:
            self._integrity_failure(receiver, stream_id, "aggregated IDE TLPs are not modeled")
            return None
        plain_data = ide.ide_open(stream_id, SubStream(itlp.prefix.sub_stream), KeySet(itlp.prefix.key_set),
                                  itlp.header_bytes(), itlp.ciphertext, itlp.mac)
        if plain_data is None:
            self._integrity_failure(receiver, stream_id, "MAC check failed or no live key")
            return None
        return Tlp(itlp.header, plain_data).encode()

    def _integrity_failure(self, receiver: Side, stream_id: int | None, why: str) -> None:
        self.stats["integrity_failures"] += 1
        who = self.root_port.path if receiver is Side.ROOT_PORT else self.endpoint_path
        self.world.trace.emit(who, who, Channel.IDE, b"",
                              f"integrity check failed stream={stream_id if stream_id is not None else '?'}: {why}",
                              kind=EventKind.IDE_INTEGRITY, fields={"stream": stream_id, "detected_here": True})
        if stream_id is None:
            return
        for listener in list(self.integrity_listeners):
            listener(receiver, stream_id)
        # the detecting port tells its partner with an IDE Fail Message, one hop later
        partner = Side.ENDPOINT if receiver is Side.ROOT_PORT else Side.ROOT_PORT

        def deliver_fail() -> None:
            if self.state is not LinkState.UP:
                return
            ide = self._ide(partner)
            if ide is not None:
                ide.ide_fail_message(stream_id)
        self.world.call_later(self.hop_ns, deliver_fail)

    def _apply_one_shot_faults(self, src: str, dst: str, wire: bytes) -> bytes | None:
        while self._pending_faults:
            req = self._pending_faults.pop(0)
            if req.kind is FaultKind.DROP_TLP:
                self._drop(src, dst, wire, "dropped by injected fault", by="fault")
                return None
            if req.kind is FaultKind.CORRUPT_TLP and wire:
                bit = req.rng.randint(0, 8 * len(wire) - 1)
                damaged = bytearray(wire)
                damaged[bit // 8] ^= 1 << (bit % 8)
                wire = bytes(damaged)
                self.world.trace.emit("faults", dst, Channel.TLP, wire, f"corrupted (bit {bit}): " + _summary(wire),
                                      kind=EventKind.TLP_CORRUPTED, fields={"bit": bit})
        return wire

    def _drop(self, src: str, dst: str, data: bytes, why: str, *, by: str) -> None:
        self.stats["dropped"] += 1
        self.world.trace.emit(src, dst, Channel.LINK, b"", f"TLP dropped ({why}), {len(data)} bytes",
                              kind=EventKind.TLP_DROPPED, fields={"by": by, "bytes": len(data)})

    # -- link state ---------------------------------------------------------------------------------

    def hold_down(self, reason: str, reset: LinkReset | None) -> None:
        """Take the link down and keep it down until ``release(reason)``; signal ``reset`` below."""
        self._holds.add(reason)
        self._go_down(reason, reset)

    def release(self, reason: str) -> None:
        """Drop one hold; when none is left the link trains and comes up."""
        self._holds.discard(reason)
        self.train()

    def train(self) -> None:
        """Start link training (no effect while held down or already up/training)."""
        if self._holds or self.state is not LinkState.DOWN:
            return
        self._set_state(LinkState.TRAINING, "training")
        generation = self._generation
        delay = self.world.cost(self.path, Op.LINK_TRAINING)

        def done() -> None:
            if generation == self._generation and self.state is LinkState.TRAINING and not self._holds:
                self._set_state(LinkState.UP, "link up (DL_Active)")
        self.world.call_later(delay, done)

    def endpoint_power_changed(self, powered: bool) -> None:
        """The endpoint lost or regained main power (D3cold entry/exit). Entry is coordinated by
        software (L2/L3 Ready), so it is not a Surprise Down error; the endpoint resets itself."""
        if powered:
            self._holds.discard("endpoint-power")
            self.train()
        else:
            self._holds.add("endpoint-power")
            self._go_down("endpoint power removed (D3cold)", None)

    def surprise_down(self) -> None:
        """The physical link is lost (not software's doing): a reset below and an error at the port."""
        self._go_down("surprise link down", LinkReset.LINK_DOWN)
        self.root_port.surprise_link_down()

    def _go_down(self, why: str, reset: LinkReset | None) -> None:
        was = self.state
        self._generation += 1
        if was is not LinkState.DOWN:
            self._set_state(LinkState.DOWN, f"link down ({why})")
        if reset is not None and self._endpoint is not None:
            self.world.trace.emit(self.root_port.path, self._endpoint.path, Channel.LINK, b"", f"reset signal: {reset}",
                                  kind=EventKind.RESET_SIGNAL, fields={"reset": str(reset)})
            if self._endpoint.reset is not None:
                self._endpoint.reset(reset)

    def _set_state(self, state: LinkState, summary: str) -> None:
        self.state = state
        self.world.trace.emit(self.path, self.endpoint_path, Channel.LINK, b"", summary, kind=EventKind.LINK_STATE,
                              fields={"state": str(state)})
        self.root_port.link_state_changed(state)
        if self._endpoint is not None and self._endpoint.state is not None:
            self._endpoint.state(state)

    # -- faults -------------------------------------------------------------------------------------

    def _fault(self, req: FaultRequest) -> None:
        if req.kind is FaultKind.LINK_DOWN:
            self.surprise_down()
        elif req.kind is FaultKind.LINK_UP:
            self.train()
        else:
            self._pending_faults.append(req)

    # -- helpers ------------------------------------------------------------------------------------

    def _ends(self, side: Side) -> tuple[str, str]:
        rp, ep = self.root_port.path, self.endpoint_path
        return (rp, ep) if side is Side.ROOT_PORT else (ep, rp)

    def _ide(self, side: Side) -> IdePortCrypto | None:
        if side is Side.ROOT_PORT:
            return self.root_port
        return self._endpoint.ide if self._endpoint is not None else None


def _summary(wire: bytes) -> str:
    try:
        return decode_tlp(wire).summary()
    except DecodeError as exc:
        return f"undecodable TLP ({exc.field} at byte {exc.offset})"



class PluggableEndpoint(IdePortCrypto, Protocol):
    """What :func:`plug_in` needs from an endpoint model (``sim.devices.endpoint.Endpoint`` fits)."""

    on_power_change: Callable[[bool], None] | None

    def receive_tlp(self, data: bytes) -> None: ...

    def on_link_reset(self, reason: str) -> None: ...

    def on_link_state(self, state: str) -> None: ...

    def config_read(self, function: int, offset: int) -> int: ...

    def config_write(self, function: int, offset: int, value: int, byte_enable: int = 0xF) -> None: ...

    def attach_link(self, port: LinkPort, *, up: bool = True, link_applies_ide: bool = False) -> None: ...


def plug_in(link: Link, path: str, endpoint: PluggableEndpoint) -> LinkPort:
    """Wire an endpoint model to a link in one place: TLPs both ways (the link applies IDE with the
    endpoint's keys), reset and link-state signals, config requests, and D3cold power changes."""
    port = link.connect_endpoint(path, receive=endpoint.receive_tlp, reset=endpoint.on_link_reset,
                                 state=endpoint.on_link_state, ide=endpoint, config_read=endpoint.config_read,
                                 config_write=endpoint.config_write)
    endpoint.on_power_change = link.endpoint_power_changed
    endpoint.attach_link(port, up=link.state is LinkState.UP, link_applies_ide=True)
    return port
