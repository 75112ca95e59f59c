"""The state channel for emulators: device-side events as JSON lines, and the state query (docs/emulator-events.md).

An emulator that puts ``tiosim serve-device`` behind a virtual function (QEMU's ``spdm_port``) must know
what the device decided, not only what bytes went by: once a TDI is locked and in RUN its DMA carries
the TEE bit (T = 1) and targets the confidential guest's memory instead of the shared one. Two views:

* :class:`EventLog` turns every DSM event (SPDM connection and session changes, IDE_KM key actions,
  TDI transitions) and every reset into one JSON object per line, written as it happens, with a
  sequence number that orders them across all served devices;
* :func:`answer_query` answers the QUERY command of the socket protocol (``EmuCommand.TIOSIM_QUERY``):
  a JSON request in, a JSON answer out, never an exception — malformed input gets ``{"ok": false,
  "error": ...}`` naming what is wrong, and the connection stays usable.

Both read only public state: the DSM's events, its TDISP responder's TDI table and the endpoint's IDE
engine; sessions are tracked from the SPDM events themselves.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import threading
from collections.abc import Callable
from typing import Any, TextIO

from sim.devices.endpoint import Endpoint
from sim.protocols.dsm import DeviceSecurityManager, DsmEvent
from sim.protocols.ide_km import IdeKmEvent
from sim.protocols.spdm.responder import ConnectionNegotiated, SessionEnded, SessionEstablished, VersionReset
from sim.protocols.tdisp import TdiTransition
from sim.wire.tdisp import TdiState

MAX_QUERY_BYTES = 0x1_0000  # a query is a small JSON object; anything larger is refused unread


class EventType(enum.StrEnum):
    """The ``event`` field of a line."""

    SPDM_CONNECTION = "spdm-connection"  # version and algorithms negotiated (or reset by GET_VERSION)
    SPDM_SESSION = "spdm-session"  # a secured session came up or went down
    IDE_KEY = "ide-key"  # an IDE_KM action on one key slot (programmed, go, stop, revoked, refused)
    IDE_STREAM = "ide-stream"  # a stream's keys became ready in both directions (GO) or stopped being (STOP)
    TDI = "tdi"  # a TDI changed TDISP state
    RESET = "reset"  # the device was reset (through the query channel)
    CONFIG_WRITE = "config-write"  # an emulator mirrored a guest's config-space write (through the query channel)
    CLIENT = "client"  # a socket client connected or left


class ResetKind(enum.StrEnum):
    CONVENTIONAL = "conventional"  # hot reset / DPC / D3cold: every TDI to CONFIG_UNLOCKED, SPDM and IDE forgotten
    FLR = "flr"  # function-level reset of one function: its TDIs to ERROR


class QueryOp(enum.StrEnum):
    STATE = "state"
    RESET = "reset"
    CONFIG_READ = "config-read"
    CONFIG_WRITE = "config-write"


CONFIG_SPACE_BYTES = 4096


def t_bit(state: TdiState) -> bool:
    """Whether the TDI's DMA carries the TEE bit: only in RUN (TDISP §11.2: CONFIG_LOCKED DMA is refused or T = 0)."""
    return state is TdiState.RUN


@dataclasses.dataclass
class DeviceView:
    """What the state channel knows of one served device."""

    device_id: str
    port: int
    profile: str
    endpoint: Endpoint
    dsm: DeviceSecurityManager
    lock: threading.Lock
    tdi_names: dict[int, str]  # FUNCTION_ID -> the scenario's TDI id
    sessions: dict[int, str] = dataclasses.field(default_factory=dict)  # session id -> "up"
    ready_streams: set[int] = dataclasses.field(default_factory=set)

    def tdis(self) -> list[dict[str, Any]]:
        out = []
        for rt in sorted(self.dsm.tdisp.tdis.values(), key=lambda r: r.definition.interface_id.function_id):
            fid = rt.definition.interface_id.function_id
            out.append({"tdi": self.tdi_names.get(fid, ""), "function": rt.definition.function,
                        "interface_id": f"0x{fid:04x}", "state": rt.state.name, "t_bit": t_bit(rt.state),
                        "session_id": rt.session_id, "stream_id": rt.stream_id})
        return out

    def streams(self) -> list[dict[str, Any]]:
        ide = self.endpoint.ide
        out = []
        for sid in ide.stream_ids():
            keys = ide.stream(sid)
            out.append({"stream_id": sid, "ready": ide.ready(sid),
                        "key_slots": 0 if keys is None else len(keys.slots),
                        "integrity_failed": bool(keys is not None and keys.integrity_failed)})
        return out

    def state(self) -> dict[str, Any]:
        return {"device": self.device_id, "port": self.port, "profile": self.profile,
                "sessions": sorted(self.sessions), "tdis": self.tdis(), "streams": self.streams()}


class EventLog:
    """One JSON line per device-side change, to ``out`` (a text file or stdout); thread-safe.

    ``out`` None keeps only the in-memory list (:attr:`lines`, for tests and the CLI's summary).
    """

    def __init__(self, out: TextIO | None = None, *, keep: bool = False) -> None:
        self.out = out
        self.keep = keep
        self.lines: list[dict[str, Any]] = []
        self.devices: dict[str, DeviceView] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def attach(self, view: DeviceView) -> None:
        """Follow one device's DSM from now on."""
        self.devices[view.device_id] = view
        view.dsm.add_listener(lambda event: self._on_dsm(view, event))

    def emit(self, device_id: str, event: EventType, **fields: Any) -> None:
        with self._lock:
            self._seq += 1
            line = {"seq": self._seq, "device": device_id, "event": str(event), **fields}
            if self.keep:
                self.lines.append(line)
            if self.out is not None:
                self.out.write(json.dumps(line, sort_keys=False) + "\n")
                self.out.flush()

    def _on_dsm(self, view: DeviceView, event: DsmEvent) -> None:
        d = view.device_id
        if isinstance(event, ConnectionNegotiated):
            self.emit(d, EventType.SPDM_CONNECTION, state="negotiated", version=f"{event.version >> 4}.{event.version & 0xF}",
                      base_asym=event.base_asym.name, base_hash=event.base_hash.name)
        elif isinstance(event, VersionReset):
            self.emit(d, EventType.SPDM_CONNECTION, state="reset")
        elif isinstance(event, SessionEstablished):
            view.sessions[event.session_id] = "up"
            self.emit(d, EventType.SPDM_SESSION, state="up", session_id=event.session_id)
        elif isinstance(event, SessionEnded):
            view.sessions.pop(event.session_id, None)
            self.emit(d, EventType.SPDM_SESSION, state="down", session_id=event.session_id, reason=str(event.reason))
        elif isinstance(event, IdeKmEvent):
            slot: dict[str, Any] = {}
            if event.slot is not None:
                port, stream, key_set, direction, sub_stream = event.slot
                slot = {"port_index": port, "stream_id": stream, "key_set": key_set.name,
                        "direction": direction.name, "sub_stream": sub_stream.name}
            self.emit(d, EventType.IDE_KEY, action=event.kind, session_id=event.session_id, **slot)
            self._streams_changed(view)
        elif isinstance(event, TdiTransition):
            fid = event.interface_id.function_id
            self.emit(d, EventType.TDI, tdi=view.tdi_names.get(fid, ""), interface_id=f"0x{fid:04x}",
                      **{"from": event.old.name, "to": event.new.name},
                      trigger=getattr(event.trigger, "name", str(event.trigger)), session_id=event.session_id,
                      t_bit=t_bit(event.new))

    def _streams_changed(self, view: DeviceView) -> None:
        ide = view.endpoint.ide
        ready = {sid for sid in ide.stream_ids() if ide.ready(sid)}
        for sid in sorted(ready - view.ready_streams):
            self.emit(view.device_id, EventType.IDE_STREAM, stream_id=sid, state="GO")
        for sid in sorted(view.ready_streams - ready):
            self.emit(view.device_id, EventType.IDE_STREAM, stream_id=sid, state="STOP")
        view.ready_streams = ready

    def reset(self, view: DeviceView, kind: ResetKind, function: int = 0) -> None:
        """Reset the device as an emulator's FLR or hot reset would, under the device's lock; emitted first."""
        with view.lock:
            self.emit(view.device_id, EventType.RESET, kind=str(kind),
                      **({"function": function} if kind is ResetKind.FLR else {}))
            if kind is ResetKind.CONVENTIONAL:
                view.endpoint.conventional_reset()
                view.sessions.clear()  # the responder forgets its sessions without ending them one by one
            else:
                view.endpoint.function_level_reset(function)
                if function == 0 and view.dsm.function0_flr_clears_security:
                    view.sessions.clear()
            self._streams_changed(view)

    def config_write(self, view: DeviceView, function: int, offset: int, value: int) -> None:
        """Mirror one config-space DW write (e.g. the guest placing a BAR), as the function would take it."""
        with view.lock:
            self.emit(view.device_id, EventType.CONFIG_WRITE, function=function, offset=offset, value=value)
            view.endpoint.config_write(function, offset, value)

    def config_read(self, view: DeviceView, function: int, offset: int) -> int:
        with view.lock:
            return view.endpoint.config_read(function, offset) & 0xFFFF_FFFF

    def state(self) -> dict[str, Any]:
        views = list(self.devices.values())
        out = []
        for v in views:
            with v.lock:
                out.append(v.state())
        return {"ok": True, "devices": out}


class QueryError(ValueError):
    """A query that cannot be answered; the message goes back to the client."""


def _parse(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_QUERY_BYTES:
        raise QueryError(f"query of {len(payload)} bytes exceeds the limit of {MAX_QUERY_BYTES}")
    if not payload.strip(b"\x00 \n"):
        return {"op": str(QueryOp.STATE)}
    try:
        text = payload.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise QueryError(f"query is not UTF-8 (byte {exc.start})") from None
    try:
        request = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueryError(f"query is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise QueryError("query nests too deeply") from None
    if not isinstance(request, dict):
        raise QueryError(f"query must be a JSON object, got {type(request).__name__}")
    return request


def answer_query(log: EventLog, payload: bytes) -> dict[str, Any]:
    """The answer to one query (module docstring); errors are answers too."""
    try:
        request = _parse(payload)
        op = request.get("op", str(QueryOp.STATE))
        if op not in QueryOp._value2member_map_:
            raise QueryError(f"unknown op {op!r} (expected one of: {', '.join(QueryOp)})")
        if op == QueryOp.STATE:
            return log.state()
        device = request.get("device")
        if len(log.devices) == 1 and device is None:
            device = next(iter(log.devices))
        if not isinstance(device, str) or device not in log.devices:
            raise QueryError(f"{op} needs \"device\": one of {', '.join(sorted(log.devices))}")
        if op in (QueryOp.CONFIG_READ, QueryOp.CONFIG_WRITE):
            return _config(log, log.devices[device], QueryOp(op), request)
        kind = request.get("kind", str(ResetKind.CONVENTIONAL))
        if kind not in ResetKind._value2member_map_:
            raise QueryError(f"unknown reset kind {kind!r} (expected one of: {', '.join(ResetKind)})")
        view = log.devices[device]
        function = request.get("function", 0)
        if kind == ResetKind.FLR and (isinstance(function, bool) or not isinstance(function, int)
                                      or function not in view.endpoint.functions):
            raise QueryError(f"flr needs \"function\": one of {sorted(view.endpoint.functions)}")
        log.reset(view, ResetKind(kind), function if kind == ResetKind.FLR else 0)
        return log.state()
    except QueryError as exc:
        return {"ok": False, "error": str(exc)}


def _int_field(request: dict[str, Any], name: str, low: int, high: int, what: str) -> int:
    value = request.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise QueryError(f"\"{name}\" must be {what}")
    return value


def _config(log: EventLog, view: DeviceView, op: QueryOp, request: dict[str, Any]) -> dict[str, Any]:
    functions = sorted(view.endpoint.functions)
    function = request.get("function", 0)
    if isinstance(function, bool) or function not in functions:
        raise QueryError(f"\"function\" must be one of {functions}")
    offset = _int_field(request, "offset", 0, CONFIG_SPACE_BYTES - 4, "a config-space offset 0-4092")
    if offset % 4:
        raise QueryError(f"\"offset\" {offset} is not DW-aligned (expected a multiple of 4)")
    if op is QueryOp.CONFIG_WRITE:
        log.config_write(view, function, offset, _int_field(request, "value", 0, 0xFFFF_FFFF, "a u32 (0-4294967295)"))
    return {"ok": True, "value": log.config_read(view, function, offset), **log.state()}


def encode_answer(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer).encode()


QueryHandler = Callable[[bytes], bytes]


def query_handler(log: EventLog) -> QueryHandler:
    """What the socket server calls for a QUERY frame's payload."""
    return lambda payload: encode_answer(answer_query(log, payload))
