"""Result dicts shaped like notes/results-format.md, built for the report tests.

The exposure part is produced by the engine's real ExposureTracker (secrets registered, then
payloads observed), so the tests also pin that the report reads what ExposureMatrix.to_json() writes.
"""

from __future__ import annotations

import copy
import hashlib
import os

from sim.crypto.secrets import SecretClass, SecretRecord
from sim.engine.exposure import ExposureTracker

COMPONENTS = ("gpu0.dsm", "rp0", "fat-tsm", "thin-keyslot", "host-kernel", "vmm", "guest")

# Which component generates the IDE / SPDM keys in each model, who then holds them in plaintext and
# who carries them as ciphertext (TRUST_MODELS.md §6).
_PLAN: dict[str, dict[str, object]] = {
    "fat": {"absent": {"thin-keyslot"}, "keys_by": "fat-tsm", "ide_plain": {"rp0", "gpu0.dsm"},
            "spdm_ct": {"host-kernel", "vmm"}},
    "thin-host": {"absent": {"fat-tsm"}, "keys_by": "host-kernel", "ide_plain": {"rp0", "gpu0.dsm", "thin-keyslot"},
                  "spdm_ct": set()},
    "thin-guest": {"absent": {"fat-tsm"}, "keys_by": "guest", "ide_plain": {"rp0", "gpu0.dsm", "thin-keyslot"},
                   "spdm_ct": {"vmm", "host-kernel"}},
    "thin-vmm": {"absent": {"fat-tsm", "thin-keyslot"}, "keys_by": "guest", "ide_plain": {"rp0", "gpu0.dsm", "vmm"},
                 "spdm_ct": {"vmm", "host-kernel"}},
}


def exposure_json(model: str) -> dict[str, object]:
    plan = _PLAN[model]
    comps = [c for c in COMPONENTS if c not in plan["absent"]]
    tracker = ExposureTracker(lambda: comps)
    owner = str(plan["keys_by"])
    ide = SecretRecord("stream 1 K0 tx key", SecretClass.IDE_KEY, owner, os.urandom(32))
    spdm = SecretRecord("session app key", SecretClass.SPDM_SESSION_KEY, owner, os.urandom(32))
    ident = SecretRecord("gpu0 identity", SecretClass.DEVICE_IDENTITY_KEY, "gpu0.dsm", os.urandom(48))
    for rec in (ide, spdm, ident):
        tracker.register(rec)
    for comp in sorted(plan["ide_plain"]):
        tracker.observe_stored(comp, b"\x00" * 4 + ide.value)
    tracker.observe_payload(["gpu0.dsm"], spdm.value)
    tracker.observe_secured(sorted(plan["spdm_ct"]), b"hdr" + spdm.value)
    return tracker.matrix().to_json()


def _device(model: str, *, secure_at: int, tdis: bool = True, fault: bool = True) -> dict[str, object]:
    run_at = secure_at + 4_000_000
    dev: dict[str, object] = {
        "owner": "host" if model == "thin-host" else "tvm0",
        "secured_by": str(_PLAN[model]["keys_by"]),
        "attestation": {"ok": True, "by": str(_PLAN[model]["keys_by"]), "reason": None, "phase": None},
        "time_to_secure_ns": secure_at,
        "time_to_run_ns": None if model == "thin-host" or not tdis else run_at,
        "stream": {"id": 1, "state": "secure", "key_set": "K0"},
        "tdis": {"tdi0": "RUN"} if tdis and model != "thin-host" else {},
        "insecure_windows": [[60_000_000, 60_000_000 + secure_at]] if fault else [],
        "recoveries": [{"fault": "dpc", "at_ns": 60_000_000, "recovered_at_ns": 60_000_000 + secure_at,
                        "latency_ns": secure_at, "by": str(_PLAN[model]["keys_by"])}] if fault else [],
        "tdi_transitions": [],
        "stream_transitions": [{"t_ns": 0, "state": "insecure"}, {"t_ns": secure_at, "state": "secure"}],
    }
    if fault:
        dev["stream_transitions"] += [{"t_ns": 60_000_000, "state": "insecure"},  # type: ignore[operator]
                                      {"t_ns": 60_000_000 + secure_at, "state": "secure"}]
    if model == "fat":
        # The runner's per-verifier form: the TSM attests, then the guest accepts the TSM's report.
        dev["attestation"] = {"fat-tsm": {"ok": True, "reason": None, "at_ns": secure_at - 1000},
                              "guest": {"ok": True, "reason": None, "at_ns": run_at, "guest": "tvm0"}}
    by = "host" if model == "thin-host" else ("firmware" if model == "fat" else "tvm0")
    dev["phases"] = [{"t_ns": secure_at // 8 * k, "phase": phase, "by": by}
                     for k, phase in enumerate(("VCA", "KEY_EXCHANGE", "KEY_PROG", "K_SET_GO"), start=1)]
    if dev["tdis"]:
        dev["tdi_transitions"] = [{"t_ns": 0, "tdi": "tdi0", "state": "CONFIG_UNLOCKED"},
                                  {"t_ns": secure_at + 1_000_000, "tdi": "tdi0", "state": "CONFIG_LOCKED"},
                                  {"t_ns": run_at, "tdi": "tdi0", "state": "RUN"}]
        if fault:
            dev["tdi_transitions"] += [  # type: ignore[operator]
                {"t_ns": 60_000_000, "tdi": "tdi0", "state": "ERROR"},
                {"t_ns": 60_000_000 + secure_at + 100, "tdi": "tdi0", "state": "CONFIG_UNLOCKED"},
                {"t_ns": 60_000_000 + secure_at + 2_000_000, "tdi": "tdi0", "state": "RUN"}]
    return dev


_SECURE_AT = {"fat": 41_234_567, "thin-host": 30_000_000, "thin-guest": 35_500_000, "thin-vmm": 35_400_000}


def model_result(model: str, *, devices: int = 2, tdis: bool = True, fault: bool = True) -> dict[str, object]:
    secure_at = _SECURE_AT[model]
    devs = {f"gpu{i}": _device(model, secure_at=secure_at + i * 1_000_000, tdis=tdis, fault=fault and i == 0)
            for i in range(devices)}
    out: dict[str, object] = {
        "model": model,
        "trace_digest": hashlib.sha256(model.encode()).hexdigest(),
        "trace_events": 1234 + len(model),
        "end_ns": 150_000_000,
        "devices": devs,
        "fleet": {"devices": devices, "secured": devices,
                  "time_to_secure_ns": secure_at + (devices - 1) * 1_000_000},
        "forwarded": {"host-kernel": 240, "vmm": 120 if model != "thin-host" else 0},
        "crypto_ops": {str(_PLAN[model]["keys_by"]): {"ecdsa-p384-verify": 3, "ecdh-p384": 1, "aes-256-gcm": 40},
                       "gpu0.dsm": {"ecdsa-p384-sign": 2, "ecdh-p384": 1}},
        "exposure": exposure_json(model),
        "expectations": [
            {"index": 0, "text": "tdi_state gpu0/tdi0 == RUN at end", "held": True, "detail": "RUN"},
            {"index": 1, "text": "exposure vmm ide-key at most never", "held": model != "thin-vmm",
             "detail": "vmm saw ide-key: plaintext" if model == "thin-vmm" else "never"},
        ],
        "sequence": [
            {"t_ns": 1000, "from": "host-kernel", "to": "gpu0", "channel": "doe",
             "summary": "SPDM 1.2 GET_VERSION"},
            {"t_ns": 2500, "from": "gpu0", "to": "host-kernel", "channel": "doe",
             "summary": "SPDM 1.2 VERSION [1.0, 1.1, 1.2] | <ok>"},
            {"t_ns": 9000, "from": "vmm", "to": "gpu0", "channel": "doe",
             "summary": "secured 0xfffdfffe `IDE_KM KEY_PROG` *stream* 1"},
        ],
        "trusted_base": None,
        "roles": {"gpu0.dsm": "device-dsm", "rp0": "root-port", "host-kernel": "host-kernel", "vmm": "vmm",
                  **({"guest": "guest"} if model != "thin-host" else {}),
                  **({"fat-tsm": "fat-tsm"} if model == "fat" else {}),
                  **({"thin-keyslot": "thin-keyslot"} if model in ("thin-host", "thin-guest") else {})},
        "wiring": f"{model}: how the {_PLAN[model]['keys_by']} secures devices.",
        "notes": ["gpu0 assigned to tvm0 stays host-owned"] if model == "thin-host" else [],
    }
    # Thin-host and thin-vmm have no firmware command queue: one omits the key, the other sets it null.
    if model == "fat":
        out["firmware"] = {"commands": 130, "max_queue_depth": 3,
                           "queue_depth": [[0, 0], [1_000_000, 1], [2_000_000, 3], [5_000_000, 0]]}
    elif model == "thin-guest":
        out["firmware"] = {"commands": 12, "max_queue_depth": 1, "queue_depth": [[0, 0], [30_000_000, 1],
                                                                                 [30_100_000, 0]]}
    elif model == "thin-vmm":
        out["firmware"] = None
    return out


def make_result(models: tuple[str, ...] = ("fat", "thin-guest", "thin-vmm"), **kwargs: object) -> dict[str, object]:
    runs = {m: model_result(m, **kwargs) for m in models}  # type: ignore[arg-type]
    return {
        "format": 1,
        "tool": "tiosim 0.1.0",
        "scenario": {"name": "passthrough-guest", "file": "scenarios/passthrough-guest.yaml", "seed": 42,
                     "description": "One device passed through to a confidential guest."},
        "ok": all(e["held"] for r in runs.values() for e in r["expectations"]),  # type: ignore[index, attr-defined]
        "models": runs,
    }


def clone(result: dict[str, object]) -> dict[str, object]:
    return copy.deepcopy(result)
