"""The scenario model: value parsing, enums kept in step with the layers below, cross-references."""

from __future__ import annotations

import datetime
import typing
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sim.engine.exposure import Exposure
from sim.protocols.spdm.profile import PROFILES, make_profile
from sim.scenario import schema
from sim.scenario.schema import (
    After,
    AttestationExpectation,
    During,
    EventKind,
    ExpectKind,
    ExposureLimit,
    Phase,
    Scenario,
    SpdmProfileName,
    TdiStateName,
    TrustModel,
    attesting_guest,
    format_loc,
    parse_duration,
    parse_size,
    reference_problems,
)
from sim.wire.tdisp import TdiState


def base(**overrides: Any) -> dict[str, Any]:
    """A small valid scenario as plain data; keyword arguments replace top-level keys."""
    data: dict[str, Any] = {
        "name": "t",
        "seed": 7,
        "models": ["fat", "thin-guest"],
        "platform": {
            "root_ports": [{"id": "rp0"}, {"id": "rp1", "ide_streams": 1, "dpc": False, "link_latency": "300ns"}],
            "devices": [
                {"id": "dev0", "port": "rp0", "tdis": [{"id": "t0"}, {"id": "t1", "function": 1}]},
                {"id": "dev1", "port": "rp1", "profile": "p256", "owner": "g0"},
            ],
        },
        "guests": [{"id": "g0", "devices": ["dev0", "dev1"]}],
    }
    data.update(overrides)
    return data


def validate(data: dict[str, Any], **context: Any) -> Scenario:
    return Scenario.model_validate(data, context=context or None)


# --- durations and sizes --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ns"), [
    (0, 0), (250, 250), ("250ns", 250), ("3us", 3_000), ("3µs", 3_000), ("5ms", 5_000_000),
    ("1.5s", 1_500_000_000), (" 2 ms ", 2_000_000), ("0.5us", 500), (".25ms", 250_000), ("1.s", 10**9),
])
def test_duration_forms(text: int | str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("bad", [-1, "1.5ns", "3 weeks", "5", "", "ms", True, 1.5, None, [1], "1e3ms", "-3us"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(Exception) as info:  # PydanticCustomError is not a ValueError subclass
        parse_duration(bad)
    assert "duration" in str(info.value) and "expected" in str(info.value)


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(["ns", "us", "ms", "s"]))
@settings(max_examples=100)
def test_duration_units_scale(value: int, unit: str) -> None:
    factor = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9}[unit]
    assert parse_duration(f"{value}{unit}") == value * factor


def test_sizes() -> None:
    assert [parse_size(v) for v in (1, "64B", "4KiB", "2MiB", "1GiB")] == [1, 64, 4096, 2 << 20, 1 << 30]
    for bad in (0, "4KB", "4 kib", -5, 2.0, True):
        with pytest.raises(Exception, match="size"):
            parse_size(bad)


def test_durations_are_stored_as_ns_everywhere() -> None:
    s = validate(base(
        timing={"device-mcu": {"hkdf": "3us"}, "host-cpu": {"link-hop": 300}},
        timeline=[{"event": "boot", "at": "1ms"},
                  {"event": "d3cold", "device": "dev0", "after": {"device": "dev0", "phase": "RUN", "delay": "2us"}}],
        expect=[{"expect": "latency", "metric": "recovery", "max": "1.5s", "at": "20ms"}],
    ))
    assert s.timing == {"device-mcu": {"hkdf": 3000}, "host-cpu": {"link-hop": 300}}
    assert s.platform.root_ports[1].link_latency == 300
    assert s.timeline[0].at == 1_000_000 and s.timeline[0].trigger == 1_000_000
    trigger = s.timeline[1].trigger
    assert isinstance(trigger, After) and trigger.delay == 2000 and trigger.phase is Phase.RUN
    assert s.expect[0].at == 20_000_000 and s.expect[0].max == 1_500_000_000  # type: ignore[union-attr]


# --- enums stay in step with the layers they name -------------------------------------------------


def test_trust_models() -> None:
    assert [m.value for m in TrustModel] == ["fat", "thin-host", "thin-guest", "thin-vmm"]
    without_models = {k: v for k, v in base().items() if k != "models"}
    assert validate(without_models).models == list(TrustModel)  # the default: run under all four


def test_profile_names_match_the_responder_profiles() -> None:
    assert {p.value for p in SpdmProfileName} == set(PROFILES)
    for name in SpdmProfileName:
        profile = make_profile(name.value)
        # The size explicit digests are checked against is the profile's measurement hash size.
        assert name.digest_size == {"SHA_256": 32, "SHA_384": 48}[profile.measurement_hash_algo.name]


def test_tdi_state_names_map_to_wire_values() -> None:
    assert {s.value for s in TdiStateName} == {s.name for s in TdiState}
    assert TdiStateName.RUN.wire() is TdiState.RUN and TdiStateName.CONFIG_UNLOCKED.wire() == 0


def test_exposure_limits_follow_the_engine_order() -> None:
    levels = [limit.exposure() for limit in ExposureLimit]
    assert levels == sorted(Exposure) and len(set(levels)) == len(Exposure)


def _discriminated_literals(union: Any, key: str) -> set[str]:
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields[key].annotation)[0].value for m in members}


def test_event_and_expectation_unions_cover_their_kind_enums() -> None:
    assert _discriminated_literals(schema.Event, "event") == {k.value for k in EventKind}
    assert _discriminated_literals(schema.Expectation, "expect") == {k.value for k in ExpectKind}


def test_phases_are_in_protocol_order() -> None:
    assert list(Phase)[:6] == [Phase.VCA, Phase.CERTIFICATE, Phase.CHALLENGE, Phase.MEASUREMENTS,
                               Phase.KEY_EXCHANGE, Phase.FINISH]
    assert list(Phase)[-1] is Phase.RUN


# --- model rules ----------------------------------------------------------------------------------


def test_valid_scenario_defaults() -> None:
    s = validate(base())
    dev0 = s.device("dev0")
    assert dev0.profile is SpdmProfileName.DEFAULT_P384 and dev0.owner == "host"
    assert dev0.identity.ca == "default" and dev0.measurements.firmware == "1.0.0"
    assert s.platform.root_ports[0].ide_streams == 4 and s.platform.root_ports[0].dpc is True
    assert s.guest("g0").policy.require_signed_measurements is True
    assert [r.ca for r in s.guest("g0").policy.trusted_roots] == ["default"]
    with pytest.raises(ValidationError):
        s.platform.root_ports[0].dpc = False  # type: ignore[misc]  # frozen


def test_unknown_keys_are_errors_at_every_level() -> None:
    for mutate in (
        lambda d: d.update(extra=1),
        lambda d: d["platform"].update(switches=[]),
        lambda d: d["platform"]["devices"][0].update(vendor="x"),
        lambda d: d["platform"]["devices"][0]["tdis"][0].update(bars=[]),
        lambda d: d["guests"][0].update(memory="4G"),
    ):
        data = base()
        mutate(data)
        with pytest.raises(ValidationError) as info:
            validate(data)
        assert [e["type"] for e in info.value.errors()] == ["extra_forbidden"]


@pytest.mark.parametrize("trigger", [{}, {"at": 0, "during": {"device": "dev0", "phase": "LOCK"}},
                                     {"at": 0, "after": {"device": "dev0", "phase": "LOCK"}}])
def test_events_need_exactly_one_trigger(trigger: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one trigger"):
        validate(base(timeline=[{"event": "key_refresh", "device": "dev0", **trigger}]))


def test_during_trigger_and_kinds() -> None:
    s = validate(base(timeline=[
        {"event": "dpc", "port": "rp0", "during": {"device": "dev0", "phase": "KEY_PROG", "occurrence": 2}},
        {"event": "adversary", "component": "vmm", "strategy": "reprogram-after-accept", "at": 0,
         "models": ["thin-guest"]},
    ]))
    trigger = s.timeline[0].trigger
    assert isinstance(trigger, During) and trigger.phase is Phase.KEY_PROG and trigger.occurrence == 2
    assert [e.kind for e in s.timeline] == [EventKind.DPC, EventKind.ADVERSARY]


def test_identity_forms() -> None:
    def with_identity(identity: dict[str, Any]) -> dict[str, Any]:
        data = base()
        data["platform"]["devices"][0]["identity"] = identity
        return data

    assert validate(with_identity({"ca": "fleet"})).device("dev0").identity.ca == "fleet"
    files = validate(with_identity({"cert_chain": "c.pem", "key": "k.pem"}), base_dir="/x").device("dev0").identity
    assert files.cert_chain == Path("/x/c.pem") and files.key == Path("/x/k.pem")
    for bad in ({"ca": "a", "key": "k.pem"}, {"cert_chain": "c.pem"}, {}):
        with pytest.raises(ValidationError, match="identity"):
            validate(with_identity(bad))


def _write_identity(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA384()))
    chain, key_file = folder / "chain.pem", folder / "leaf.key"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_file


def test_identity_files_are_checked_when_asked(tmp_path: Path) -> None:
    chain, key_file = _write_identity(tmp_path)
    data = base()
    data["platform"]["devices"][0]["identity"] = {"cert_chain": chain.name, "key": key_file.name}
    data["guests"][0]["policy"] = {"trusted_roots": [{"file": chain.name}, {"ca": "default"}]}
    s = validate(data, base_dir=str(tmp_path), check_files=True)
    assert s.device("dev0").identity.cert_chain == chain
    assert s.guest("g0").policy.trusted_roots[0].file == chain

    (tmp_path / "junk.pem").write_text("not a certificate\n")
    data["platform"]["devices"][0]["identity"] = {"cert_chain": "junk.pem", "key": key_file.name}
    with pytest.raises(ValidationError, match="cert_chain holds no readable certificate"):
        validate(data, base_dir=str(tmp_path), check_files=True)
    data["platform"]["devices"][0]["identity"] = {"cert_chain": chain.name, "key": chain.name}
    with pytest.raises(ValidationError, match="key is not a private key"):
        validate(data, base_dir=str(tmp_path), check_files=True)
    data["platform"]["devices"][0]["identity"] = {"cert_chain": "missing.pem", "key": key_file.name}
    with pytest.raises(ValidationError, match="file not found"):
        validate(data, base_dir=str(tmp_path), check_files=True)


def test_explicit_digests_must_fit_the_profile() -> None:
    data = base()
    data["platform"]["devices"][0]["measurements"] = {"firmware": "2.0", "digests": {2: "AB" * 48}}
    s = validate(data)
    assert s.device("dev0").measurements.digests == {2: "ab" * 48}  # stored lower-case
    data["platform"]["devices"][1]["measurements"] = {"digests": {1: "ab" * 48}}  # dev1 is p256: 32 bytes
    with pytest.raises(ValidationError, match="wrong size for profile p256"):
        validate(data)
    data["platform"]["devices"][1]["measurements"] = {"digests": {255: "ab" * 32}}
    with pytest.raises(ValidationError, match="less than or equal to 254"):
        validate(data)


def test_expectation_rules() -> None:
    ok = validate(base(expect=[
        {"expect": "stream_state", "port": "rp0", "state": "insecure", "at": "5ms"},
        {"expect": "attestation", "device": "dev1", "by": "guest", "outcome": "failed", "reason": "untrusted-root"},
        {"expect": "exposure", "component": "vmm", "secret": "ide-key", "at_most": "never", "models": ["fat"]},
        {"expect": "trace_digest", "model": "fat", "sha256": "AB" * 32},
    ]))
    assert ok.expect[0].at == 5_000_000 and ok.expect[1].at == "end"
    assert ok.expect[3].sha256 == "ab" * 32  # type: ignore[union-attr]
    att = ok.expect[1]
    assert isinstance(att, AttestationExpectation) and attesting_guest(ok, att) == "g0"
    for bad, match in (
        ({"expect": "stream_state", "state": "secure"}, "exactly one of 'device' or 'port'"),
        ({"expect": "stream_state", "device": "dev0", "port": "rp0", "state": "secure"}, "exactly one"),
        ({"expect": "attestation", "device": "dev0", "by": "fat-tsm", "outcome": "ok", "reason": "bad-signature"},
         "'reason' only goes with outcome: failed"),
        ({"expect": "attestation", "device": "dev0", "by": "host-kernel", "guest": "g0", "outcome": "ok"},
         "'guest' only goes with by: guest"),
        ({"expect": "exposure", "component": "vmm", "secret": "ide-key", "at_most": "sometimes"}, "at_most"),
        ({"expect": "latency", "metric": "recovery", "max": "soon"}, "bad duration"),
        ({"expect": "tdi_state", "device": "dev0", "tdi": "t0", "state": "RUN", "at": "later"}, "bad time"),
        ({"expect": "trace_digest", "model": "fat", "sha256": "ab" * 31}, "String should match pattern"),
    ):
        with pytest.raises(ValidationError, match=match):
            validate(base(expect=[bad]))


# --- cross-references -----------------------------------------------------------------------------


def test_programmatic_validation_lists_every_dangling_reference() -> None:
    data = base(timeline=[{"event": "assign", "device": "devX", "guest": "g9", "at": 0}])
    data["platform"]["devices"][0]["port"] = "rp7"
    with pytest.raises(ValidationError) as info:
        validate(data)
    text = str(info.value)
    assert "platform.devices[0].port: unknown root port 'rp7' (expected one of: rp0, rp1)" in text
    assert "timeline[0].device: unknown device 'devX'" in text and "timeline[0].guest: unknown guest 'g9'" in text


def test_reference_problems_can_be_collected_instead() -> None:
    data = base()
    data["platform"]["devices"][1]["id"] = "dev0"
    sink: list[tuple[tuple[str | int, ...], str]] = []
    validate(data, reference_problems=sink)
    locs = [loc for loc, _ in sink]
    assert ("platform", "devices", 1, "id") in locs
    assert any("duplicate device id 'dev0'" in msg for _, msg in sink)


@pytest.mark.parametrize(("mutate", "loc", "fragment"), [
    (lambda d: d["platform"]["root_ports"].append({"id": "rp0"}), ("platform", "root_ports", 2, "id"),
     "duplicate root port id 'rp0'"),
    (lambda d: d["platform"]["devices"][0]["tdis"].append({"id": "t0", "function": 5}),
     ("platform", "devices", 0, "tdis", 2, "id"),
     "duplicate TDI (dev0) id 't0'"),
    (lambda d: d["guests"].append({"id": "g0"}), ("guests", 1, "id"), "duplicate guest id 'g0'"),
    (lambda d: d["guests"].append({"id": "host"}), ("guests", 1, "id"), "'host' is reserved"),
    (lambda d: d["guests"][0]["devices"].append("dev9"), ("guests", 0, "devices", 2), "unknown device 'dev9'"),
    (lambda d: d["guests"][0]["devices"].remove("dev1"), ("platform", "devices", 1, "owner"),
     "guest 'g0' does not list 'dev1'"),
    (lambda d: d["platform"]["devices"][0].update(owner="g5"), ("platform", "devices", 0, "owner"),
     "unknown owner 'g5'"),
    (lambda d: d["guests"][0].update(policy={"expected_measurements": {"dev7": {"firmware": "1"}}}),
     ("guests", 0, "policy", "expected_measurements", "dev7"), "not one of this guest's devices"),
    (lambda d: d["guests"][0].update(policy={"expected_reports": [{"device": "dev0", "tdi": "t5"}]}),
     ("guests", 0, "policy", "expected_reports", 0, "tdi"), "device 'dev0' has no TDI 't5'"),
    (lambda d: d.update(timeline=[{"event": "dpc", "port": "rp0", "during": {"device": "devQ", "phase": "LOCK"}}]),
     ("timeline", 0, "during", "device"), "unknown device 'devQ'"),
    (lambda d: d.update(timeline=[{"event": "flr", "device": "dev0", "function": 4, "at": 0}]),
     ("timeline", 0, "function"), "device 'dev0' has no function 4 (expected one of: 0, 1)"),
    (lambda d: d.update(timeline=[{"event": "mmio", "device": "dev1", "guest": "g0", "tdi": "t0", "at": 0}]),
     ("timeline", 0, "tdi"), "device 'dev1' has no TDI 't0' (it defines no tdis)"),
    (lambda d: d.update(timeline=[{"event": "boot", "at": 0, "models": ["thin-vmm"]}]),
     ("timeline", 0, "models", 0), "trust model 'thin-vmm' is not run by this scenario"),
    (lambda d: d.update(expect=[{"expect": "tdi_state", "device": "dev0", "tdi": "t9", "state": "RUN"}]),
     ("expect", 0, "tdi"), "device 'dev0' has no TDI 't9' (expected one of: t0, t1)"),
    (lambda d: d.update(expect=[{"expect": "trace_digest", "model": "thin-host", "sha256": "0" * 64}]),
     ("expect", 0, "model"), "trust model 'thin-host' is not run"),
    (lambda d: d.update(expect=[{"expect": "latency", "metric": "recovery", "device": "nope", "max": 1}]),
     ("expect", 0, "device"), "unknown device 'nope'"),
    (lambda d: d.update(guests=[{"id": "g0", "devices": ["dev0", "dev1"]}, {"id": "g1", "devices": ["dev0"]}],
                        expect=[{"expect": "attestation", "device": "dev0", "by": "guest", "outcome": "ok"}]),
     ("expect", 0, "by"), "2 guests list 'dev0'"),
    (lambda d: d.update(guests=[{"id": "g0", "devices": ["dev0", "dev1"]}, {"id": "g1"}],
                        expect=[{"expect": "attestation", "device": "dev0", "by": "guest", "guest": "g1",
                                 "outcome": "ok"}]),
     ("expect", 0, "guest"), "guest 'g1' does not list 'dev0'"),
])
def test_each_reference_problem_has_its_location(mutate: Any, loc: tuple[str | int, ...], fragment: str) -> None:
    data = base()
    mutate(data)
    sink: list[tuple[tuple[str | int, ...], str]] = []
    validate(data, reference_problems=sink)
    assert [loc_ for loc_, _ in sink] == [loc], sink
    assert fragment in sink[0][1]


def test_a_clean_scenario_has_no_reference_problems() -> None:
    assert reference_problems(validate(base())) == []


def test_models_are_nonempty_and_unique() -> None:
    with pytest.raises(ValidationError, match="duplicate trust model"):
        validate(base(models=["fat", "fat"]))
    with pytest.raises(ValidationError, match="at least 1 item"):
        validate(base(models=[]))


def test_format_loc() -> None:
    assert format_loc(("platform", "devices", 0, "tdis", 1, "id")) == "platform.devices[0].tdis[1].id"
    assert format_loc(()) == "" and format_loc(("timeline", 3)) == "timeline[3]"
