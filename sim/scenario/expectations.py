"""Scenario expectations: their one-line description, and whether one holds in a finished run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.scenario import schema as S
from sim.scenario.watch import insecure_windows, recoveries

if TYPE_CHECKING:
    from sim.scenario.run import ModelRun


def describe(exp: S.Expectation) -> str:
    when = "at end" if exp.at == "end" else f"at {S.format_duration(exp.at)}"
    if isinstance(exp, S.TdiStateExpectation):
        return f"tdi_state {exp.device}/{exp.tdi} == {exp.state} {when}"
    if isinstance(exp, S.StreamStateExpectation):
        return f"stream_state {exp.device or 'port ' + str(exp.port)} == {exp.state} {when}"
    if isinstance(exp, S.AttestationExpectation):
        reason = f" ({exp.reason})" if exp.reason else ""
        return f"attestation of {exp.device} by {exp.by} is {exp.outcome}{reason} {when}"
    if isinstance(exp, S.ExposureExpectation):
        return f"{exp.component} saw {exp.secret} at most {exp.at_most} {when}"
    if isinstance(exp, S.LatencyExpectation):
        return f"{exp.metric}{' of ' + exp.device if exp.device else ''} <= {S.format_duration(exp.max)}"
    if isinstance(exp, S.TraceDigestExpectation):
        return f"trace digest of {exp.model} == {exp.sha256[:16]}..."
    return str(exp.kind)


def evaluate(run: ModelRun, exp: S.Expectation, at_ns: int | None) -> tuple[bool, str]:
    """Whether ``exp`` holds in ``run`` (at ``at_ns``, or now at the end), and what was found."""
    if isinstance(exp, S.TdiStateExpectation):
        got = run.watch.devices[exp.device].tdi_state_at(exp.tdi, at_ns)
        return got == str(exp.state), got
    if isinstance(exp, S.StreamStateExpectation):
        devices = [exp.device] if exp.device else run._devices_behind(str(exp.port))
        states = {d: "secure" if run.watch.devices[d].stream_secure_at(at_ns) else "insecure" for d in devices}
        return all(s == str(exp.state) for s in states.values()), ", ".join(f"{d}: {s}" for d, s in states.items())
    if isinstance(exp, S.AttestationExpectation):
        got = run.attestation_at(exp.device, str(exp.by), at_ns, S.attesting_guest(run.scenario, exp))
        if got is None:
            return False, f"{exp.by} never attested {exp.device} in {run.model}"
        ok = bool(got["ok"])
        found = "ok" if ok else f"failed: {got.get('reason')}"
        found += f" (verdict at {got['at_ns']} ns)"
        if exp.outcome is S.AttestationOutcome.OK:
            return ok, found
        reason_ok = exp.reason is None or str(exp.reason) in str(got.get("reason"))
        return (not ok) and reason_ok, found
    if isinstance(exp, S.ExposureExpectation):
        level = run.exposure_of(exp.component, exp.secret)
        return level <= exp.at_most.exposure(), level.name.lower()
    if isinstance(exp, S.LatencyExpectation):
        value = latency(run, exp, at_ns)
        if value is None:
            return False, "never reached"
        return value <= exp.max, f"{value} ns"
    if isinstance(exp, S.TraceDigestExpectation):
        if exp.model is not run.model:
            return True, "another model's digest"
        got = run.world.trace.digest()
        return got == exp.sha256, got
    return False, f"unknown expectation {exp.kind}"


def latency(run: ModelRun, exp: S.LatencyExpectation, at_ns: int | None = None) -> int | None:
    """The metric's value as known at ``at_ns`` (a fixed ``at:`` check, made at that time) or at the end."""
    boot = run.boot_ns or 0
    # an open insecure window is counted up to the check: run.end_ns is only known once the run is over
    until = run.end_ns if at_ns is None else at_ns
    devices = [exp.device] if exp.device else list(run.watch.devices)
    values: list[int | None] = []
    for d in devices:
        rec = run.watch.devices[d]
        if exp.metric in (S.LatencyMetric.TIME_TO_SECURE, S.LatencyMetric.FLEET_TIME_TO_SECURE):
            t = rec.first_secure(boot)
            values.append(None if t is None else t - boot)
        elif exp.metric is S.LatencyMetric.RECOVERY:
            recs = recoveries(rec)
            values += [r["latency_ns"] for r in recs] or [0]
        elif exp.metric is S.LatencyMetric.INSECURE_WINDOW:
            values.append(sum(b - a for a, b in insecure_windows(rec, until)))
    if any(v is None for v in values):
        return None
    return max((v for v in values if v is not None), default=0)


