"""What a run says about its faults and where it ended: the records a fault campaign checks.

Computed from the hardware watch (stream and TDI histories, fault marks), the host's recovery
records, the platform's final register state, and typed trace fields (channel, endpoints, payload
bytes) — never from summary text:

* ``faults`` — per injected fault: kind, target, time, outcome (``recovered`` / ``failed`` /
  ``superseded`` by the next fault / ``not-recoverable`` in this model), the reason when not
  recovered, latency, and the insecure windows it opened;
* ``final_state`` — per Root Port its link and containment, per device its power and the host
  driver's state, at the end of the run;
* ``key_programs`` — every IDE key written into a key slot (Root Port or device), by time and
  slot owner, as a fingerprint (SHA-256 prefix; the key itself never goes into result.json);
* ``spdm`` — per device, the times of KEY_EXCHANGE_RSP and of secured responses with their
  session IDs (a secured response after a reset with no key exchange since means a session survived).

The layout is documented in docs/result-format.md.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from sim.engine.trace import Channel
from sim.scenario import schema as S
from sim.scenario.watch import DeviceRecord, insecure_windows
from sim.wire.doe import DoeObjectType
from sim.wire.spdm.common import ResponseCode

if TYPE_CHECKING:
    from sim.scenario.run import ModelRun

KEY_IFV_BYTES = 32 + 8            # a key-slot write carries the 256-bit key and the 64-bit IFV
DOE_HEADER_BYTES = 8
FINGERPRINT_BYTES = 8

def fault_outcomes(run: ModelRun) -> list[dict[str, Any]]:
    """One entry per injected fault, in time order (module docstring)."""
    out: list[dict[str, Any]] = []
    end = run.end_ns
    for device, rec in run.watch.devices.items():
        handle = run.platform.device(device)
        port = handle.root_port.path
        wanted_tdis = _wanted_tdis(run, device, rec)
        wanted_secure = bool(rec.phases) or any(s == "secure" for _t, s in rec.stream)
        marks = rec.faults
        windows = insecure_windows(rec, end)
        for i, mark in enumerate(marks):
            nxt = marks[i + 1].at_ns if i + 1 < len(marks) else None
            back = _back_at(rec, mark.at_ns, nxt, wanted_secure, wanted_tdis)
            entry: dict[str, Any] = {
                "kind": mark.what,
                "device": device,
                "port": port,
                "function": _flr_function(run, device, mark.at_ns) if mark.what == "flr" else None,
                "at_ns": mark.at_ns,
                "recovered_at_ns": back,
                "latency_ns": None if back is None else back - mark.at_ns,
                "windows": [w for w in windows if w[1] > mark.at_ns and (nxt is None or w[0] < nxt)],
                "wanted": {"stream": "secure" if wanted_secure else "any", "tdis_in_run": sorted(wanted_tdis)},
            }
            if back is not None:
                entry.update(outcome="recovered", reason=None, reason_kind=None)
            else:
                entry.update(_why_not(run, device, mark.at_ns, nxt))
            out.append(entry)
    return sorted(out, key=lambda e: (e["at_ns"], e["device"]))


def _wanted_tdis(run: ModelRun, device: str, rec: DeviceRecord) -> set[str]:
    """TDIs the owner wants in RUN: those that reached RUN at some point, and the TDI of function 0 of a
    device given to a guest when the model passes devices through with TDISP (the assignment locks it)."""
    wanted = {n for _t, n, s in rec.tdis if s == "RUN"}
    spec = run.scenario.device(device)
    if spec.owner != S.HOST and run.wiring.guest_devices is not None:
        wanted |= {t.id for t in spec.tdis if t.function == 0}
    return wanted


def _back_at(rec: DeviceRecord, at: int, nxt: int | None, secure: bool, tdis: set[str]) -> int | None:
    """The first moment in [at, nxt) from which the device stays where its owner wants it until the next
    fault (or the end): a fault whose effect shows a few microseconds later has not recovered "at once"."""
    def good(t: int) -> bool:
        return (not secure or rec.stream_secure_at(t)) and all(rec.tdi_state_at(n, t) == "RUN" for n in tdis)

    times = sorted({at} | {t for t, _ in rec.stream if t >= at} | {t for t, _n, _s in rec.tdis if t >= at})
    times = [t for t in times if nxt is None or t < nxt]
    verdicts = [good(t) for t in times]
    back: int | None = None
    for t, ok in zip(times, verdicts, strict=True):
        if not ok:
            back = None
        elif back is None:
            back = t
    return back


def _flr_function(run: ModelRun, device: str, at: int) -> int | None:
    for r in run.host.recoveries:
        if r.device == device and r.function is not None and r.started_ns == at:
            return r.function
    return None


def _why_not(run: ModelRun, device: str, at: int, nxt: int | None) -> dict[str, Any]:
    """Why a fault did not end recovered: the stated reason and what kind of reason it is
    (``reason_kind``: next-fault, host-recovery, model, verdict), or None when nothing explains it."""
    def why(outcome: str, kind: str | None, reason: str | None) -> dict[str, Any]:
        return {"outcome": outcome, "reason": reason, "reason_kind": kind}

    if nxt is not None:
        return why("superseded", "next-fault", f"the next fault on {device} hit at {nxt} ns, before it recovered")
    for r in reversed(run.host.recoveries):
        if r.device == device and r.started_ns >= at and r.superseded_ns is None:
            if r.failed:
                return why("failed", "host-recovery", f"host recovery ({r.cause}) failed: {r.failed}")
            if r.reauthenticated is False:
                return why("failed", "host-recovery", f"host re-authentication failed: {r.reauth_failure}")
            break
    if run.model is S.TrustModel.FAT and run.scenario.fat_reconnect is S.FatReconnectMode.NONE:
        return why("not-recoverable", "model", "fat: the firmware TSM counts a reset as a lost connection and "
                                               "nobody reconnects (fat_reconnect: none, as merged upstream)")
    for (dev, verifier), log in sorted(run.attestation_log.items()):
        if dev == device and log and log[-1]["at_ns"] >= at and not log[-1]["ok"]:
            return why("failed", "verdict", f"{verifier} verdict after the fault: {log[-1]['reason']}")
    return why("failed", None, None)


def final_state(run: ModelRun) -> dict[str, Any]:
    """Link and containment per Root Port, power and host driver state per device, at the end."""
    ports = {}
    for name, rp in run.platform.root_ports.items():
        link = run.platform.links[name]
        ports[name] = {"link": str(link.state), "contained": bool(rp.dpc is not None and rp.dpc.triggered)}
    devices = {}
    for h in run.platform.devices:
        dev = run.host.devices.get(h.id)
        devices[h.id] = {"path": h.path, "port": h.root_port.path, "power": "D0" if h.endpoint.powered else "D3cold",
                         "host_state": None if dev is None else str(dev.state)}
    return {"ports": ports, "devices": devices}


def key_programs(run: ModelRun) -> list[dict[str, Any]]:
    """Every key-slot write with a key in it: where (the slot's owner path), and the key's fingerprint."""
    out = []
    for e in run.memory.events:
        if e.channel is Channel.KEY_SLOT and len(e.data) == KEY_IFV_BYTES:
            out.append({"t_ns": e.time_ns, "where": e.destination,
                        "key": hashlib.sha256(e.data[:32]).hexdigest()[:2 * FINGERPRINT_BYTES]})
    return out


def spdm_sessions(run: ModelRun) -> dict[str, list[dict[str, Any]]]:
    """Per device: its KEY_EXCHANGE_RSPs and secured responses (session ID), read from the DOE objects."""
    by_path = {h.path: h.id for h in run.platform.devices}
    out: dict[str, list[dict[str, Any]]] = {d: [] for d in by_path.values()}
    for e in run.memory.events:
        device = by_path.get(e.source)
        if device is None or e.channel is not Channel.DOE or len(e.data) < DOE_HEADER_BYTES + 4:
            continue
        kind, body = e.data[2], e.data[DOE_HEADER_BYTES:]
        if kind == DoeObjectType.SPDM and body[1] == ResponseCode.KEY_EXCHANGE_RSP:
            out[device].append({"t_ns": e.time_ns, "kind": "key_exchange_rsp"})
        elif kind == DoeObjectType.SECURED_SPDM:
            out[device].append({"t_ns": e.time_ns, "kind": "secured_rsp",
                                "session_id": int.from_bytes(body[:4], "little")})
    return out


def device_resets(run: ModelRun) -> dict[str, list[dict[str, Any]]]:
    """Per device, the resets its endpoint reported, and whether each took its keys and sessions."""
    return {d: [{"t_ns": t, "kind": k, "function": f, "clears_security": c} for t, k, f, c in rec.resets]
            for d, rec in run.watch.devices.items()}


def campaign_records(run: ModelRun) -> dict[str, Any]:
    """The result.json keys this module adds."""
    return {"faults": fault_outcomes(run), "final_state": final_state(run), "key_programs": key_programs(run),
            "spdm": spdm_sessions(run), "device_resets": device_resets(run),
            "exposure_log": run.world.exposure.timeline()}
