"""The benchmarks at tiny size: the structure of their results, ratios computed from measured numbers.

Nothing here asserts a time: speed targets are reported by ``tiosim bench``, never tested. What is
tested is that the flow measured is the real attest flow (every step, the same bytes on the wire as
before the performance work), that the crypto workload is derived from the flow's meters, and that
the performance edits to the wire layer changed no bytes.
"""

from __future__ import annotations

import json
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import bench_platform, bench_protocol
from sim.bench.platform import measure_platform, profile_platform
from sim.bench.protocol import (
    TARGET_RATIO,
    CryptoWorkload,
    FlowRig,
    FlowTransport,
    ProtocolBenchResult,
    measure_protocol,
    profile_flow,
    time_flow,
)
from sim.cli import main as tiosim
from sim.commands.common import EXIT_OK, EXIT_USAGE
from sim.crypto.algorithms import AeadSuite, BaseHashAlgo
from sim.protocols.env import CryptoOp, MeteredOp
from sim.wire.codec import EncodeError
from sim.wire.secured import MAC_BYTES, MacOnlyRecord, SecuredRecord, SeqNumSize

# SHA-256 of every DOE object of the attest flow (requests and responses, in order) for seed 1, computed
# with the wire layer as it was before the performance edits (codec plans, LengthOf pre-encoding, record
# AAD without encode). A change here means different bytes on the wire: re-pin only for an intended change.
WIRE_SHA256 = {
    None: "94d2447151abcd6e0728444177d46355d00afb93db4363d614a6e5755053fb9c",
    "1.2": "83b257d644bed8d8a288f3a15b85c67d767ffc93ac5911442eff1df964b6b5f8",
}

ATTEST_STEPS = (
    "DOE discovery", "VCA", "GET_DIGESTS", "GET_CERTIFICATE", "CHALLENGE", "GET_MEASUREMENTS", "KEY_EXCHANGE/FINISH",
    "IDE_KM QUERY", "IDE_KM KEY_PROG x6", "IDE_KM K_SET_GO x6", "TDISP GET_VERSION", "TDISP GET_CAPABILITIES",
    "TDISP GET_DEVICE_INTERFACE_STATE (CONFIG_UNLOCKED)", "TDISP LOCK_INTERFACE",
    "TDISP GET_DEVICE_INTERFACE_STATE (CONFIG_LOCKED)", "TDISP GET_DEVICE_INTERFACE_REPORT", "TDISP START_INTERFACE",
    "TDISP GET_DEVICE_INTERFACE_STATE (RUN)", "TDISP STOP_INTERFACE",
    "TDISP GET_DEVICE_INTERFACE_STATE (CONFIG_UNLOCKED)", "IDE_KM K_SET_STOP x6", "END_SESSION",
)


@pytest.fixture(scope="module")
def protocol() -> ProtocolBenchResult:
    return measure_protocol(2)


# ------------------------------------------------------------------ the flow measured


@pytest.mark.parametrize("version", [None, "1.2"])
def test_flow_bytes_are_unchanged_by_the_performance_work(version: str | None) -> None:
    run = time_flow(version=version)
    assert run.wire_digest == WIRE_SHA256[version]
    assert run.steps and all(s.ok for s in run.steps)


def test_flow_is_the_whole_attest_procedure_through_either_transport() -> None:
    whole = time_flow()
    via_registers = time_flow(transport=FlowTransport.MAILBOX)
    assert tuple(s.step for s in whole.steps) == ATTEST_STEPS
    assert via_registers.wire_digest == whole.wire_digest and via_registers.exchanges == whole.exchanges
    assert whole.cpu_ns > 0 and whole.setup_ns > 0
    assert whole.suite.version == 0x13 and whole.suite.aead is AeadSuite.AES_256_GCM


def test_metered_ops_are_both_sides_of_the_flow() -> None:
    rig = FlowRig.build()
    rig.run()
    requester_totals = dict(rig.env.meter.totals)
    device_totals = dict(rig.device.dsm.env.meter.totals)
    ops = rig.metered_ops()
    counts: dict[CryptoOp, int] = {}
    for op in ops:
        counts[op.op] = counts.get(op.op, 0) + 1
    for kind in set(requester_totals) | set(device_totals):
        assert counts[kind] == requester_totals.get(kind, 0) + device_totals.get(kind, 0)
    # the device signs CHALLENGE_AUTH, MEASUREMENTS and KEY_EXCHANGE_RSP; each side does one ECDH
    assert counts[CryptoOp.ECDSA_P384_SIGN] == 3 and counts[CryptoOp.ECDH_P384] == 2
    assert counts[CryptoOp.ECDSA_P384_VERIFY] >= 3
    assert all(op.nbytes for op in ops if op.op in (CryptoOp.HASH_PER_KIB, CryptoOp.AEAD_PER_KIB))


# ------------------------------------------------------------------ the crypto workload


def test_workload_reexecutes_exactly_the_metered_ops() -> None:
    ops = [MeteredOp(CryptoOp.ECDSA_P256_SIGN), MeteredOp(CryptoOp.ECDSA_P384_VERIFY),
           MeteredOp(CryptoOp.ECDSA_P384_VERIFY), MeteredOp(CryptoOp.ECDH_P256), MeteredOp(CryptoOp.HASH_PER_KIB, 100),
           MeteredOp(CryptoOp.HASH_PER_KIB, 3000), MeteredOp(CryptoOp.AEAD_PER_KIB, 64), MeteredOp(CryptoOp.HKDF)]
    workload = CryptoWorkload(ops, BaseHashAlgo.SHA_384, AeadSuite.AES_256_GCM)
    assert workload.counts() == {CryptoOp.ECDSA_P256_SIGN: 1, CryptoOp.ECDSA_P384_VERIFY: 2, CryptoOp.ECDH_P256: 1,
                                 CryptoOp.HASH_PER_KIB: 2, CryptoOp.AEAD_PER_KIB: 1, CryptoOp.HKDF: 1}
    assert workload.byte_counts()[CryptoOp.HASH_PER_KIB] == 3100
    spent = workload.run()  # a verification that failed would raise here
    assert set(spent) == set(workload.counts()) and all(ns >= 0 for ns in spent.values()) and sum(spent.values()) > 0
    chacha = CryptoWorkload([MeteredOp(CryptoOp.AEAD_PER_KIB, 32)], BaseHashAlgo.SHA_256, AeadSuite.CHACHA20_POLY1305)
    assert set(chacha.run()) == {CryptoOp.AEAD_PER_KIB}


# ------------------------------------------------------------------ the protocol benchmark


def test_protocol_result_structure_and_ratio_from_measured_numbers(protocol: ProtocolBenchResult) -> None:
    r = protocol
    assert r.repeat == 2 and len(r.flow_ns) == len(r.crypto_ns) == len(r.setup_ns) == len(r.mailbox_flow_ns) == 2
    assert all(ns > 0 for ns in r.flow_ns + r.crypto_ns + r.mailbox_flow_ns)
    assert r.steps == ATTEST_STEPS and r.wire_digest == WIRE_SHA256[None] and r.exchanges > len(r.steps)
    # each crypto sample is the sum of its per-kind timings; the ratio is medians of the samples
    assert [sum(by_op.values()) for by_op in r.crypto_by_op_ns] == list(r.crypto_ns)
    assert r.ratio == statistics.median(r.flow_ns) / statistics.median(r.crypto_ns)
    assert r.mailbox_ratio == statistics.median(r.mailbox_flow_ns) / statistics.median(r.crypto_ns)
    assert r.target_met is (r.ratio <= TARGET_RATIO)
    assert r.run_ratios == tuple(f / c for f, c in zip(r.flow_ns, r.crypto_ns, strict=True))
    # the workload is the flow's metered operations, kind by kind
    assert r.op_counts == time_flow_counts()
    assert {c.op for c in r.op_costs()} == set(r.op_counts)


def time_flow_counts() -> dict[CryptoOp, int]:
    counts: dict[CryptoOp, int] = {}
    for op in time_flow().ops:
        counts[op.op] = counts.get(op.op, 0) + 1
    return counts


def test_protocol_report_and_json(protocol: ProtocolBenchResult) -> None:
    data = json.loads(json.dumps(protocol.to_dict()))
    assert data["ratio"] == protocol.ratio and data["target_ratio"] == TARGET_RATIO
    assert data["flow_cpu_ns"]["samples"] == list(protocol.flow_ns)
    assert data["run_ratios"]["median"] == statistics.median(protocol.run_ratios)
    assert data["wire_sha256"] == WIRE_SHA256[None] and data["spdm_version"] == "1.3"
    assert sum(op["count"] for op in data["crypto_ops"]) == sum(protocol.op_counts.values())
    text = "\n".join(protocol.lines())
    assert f"ratio:       {protocol.ratio:.2f}" in text and "ecdsa-p384-sign" in text and "DOE registers" in text


def test_measure_protocol_refuses_zero_repeats() -> None:
    with pytest.raises(ValueError):
        measure_protocol(0)


def test_profile_names_the_flow() -> None:
    text = profile_flow()
    assert "cumulative" in text and "run_flow" in text


# ------------------------------------------------------------------ the platform benchmark


def test_platform_bench_tiny() -> None:
    result = measure_platform(3, repeat=2)
    assert result.all_ok and result.endpoints == 3 and len(result.runs) == 2
    assert result.runs[0].trace_digest == result.runs[1].trace_digest  # same seed, same trace
    assert result.doe_s == statistics.median(r.doe_s for r in result.runs)
    lines = result.lines()
    assert lines[0] == "endpoints:               3" and "DOE round trips ok:      3/3" in lines
    data = result.to_dict()
    assert data["doe_ok"] == 3 and data["trace_events"] == result.runs[0].trace_events > 0
    assert "doe_discovery" in profile_platform(2)


def test_platform_script_keeps_its_output(capsys: pytest.CaptureFixture[str]) -> None:
    bench_platform.main(["--n", "2"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "endpoints", "DOE round trips ok", "build wall time", "DOE phase wall time", "memory after build",
        "peak memory (tracemalloc)", "simulated time", "trace events"]


# ------------------------------------------------------------------ the command and the script


def test_bench_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert tiosim(["bench", "all", "--repeat", "1", "--json", "--no-mailbox", "--n", "2"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    p = data["protocol"]
    assert p["ratio"] == p["flow_cpu_ns"]["median"] / p["crypto_cpu_ns"]["median"]
    assert p["mailbox_flow_cpu_ns"] is None and len(p["steps"]) == len(ATTEST_STEPS)
    assert data["platform"]["endpoints"] == 2 and data["platform"]["doe_ok"] == 2


def test_bench_command_text_with_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert tiosim(["bench", "--repeat", "1", "--no-mailbox", "--profile"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "ratio:" in out and "crypto CPU:" in out and "top Python hotspots" in out and "cumulative" in out


@pytest.mark.parametrize("argv", [["bench", "--repeat", "0"], ["bench", "platform", "--n", "0"]])
def test_bench_command_refuses_bad_sizes(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert tiosim(argv) == EXIT_USAGE
    assert "must be at least 1" in capsys.readouterr().err


def test_protocol_script_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_protocol.main(["--repeat", "1", "--no-mailbox", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["repeat"] == 1 and data["wire_sha256"] == WIRE_SHA256[None]


# ------------------------------------------------------------------ the record-header fast path


@settings(max_examples=150, deadline=None)
@given(sid=st.integers(0, 2**32 - 1), size=st.sampled_from(list(SeqNumSize)), seq=st.integers(0, 2**64 - 1),
       body=st.binary(max_size=300), mac=st.binary(min_size=MAC_BYTES, max_size=MAC_BYTES))
def test_record_aad_is_the_encoded_header(sid: int, size: SeqNumSize, seq: int, body: bytes, mac: bytes) -> None:
    seq &= (1 << (8 * size)) - 1
    header_len = 4 + int(size) + 2
    secured = SecuredRecord(sid, body, mac, seq, size)
    assert secured.aad() == secured.encode()[:header_len]
    mac_only = MacOnlyRecord(sid, body, mac, seq, size)
    assert mac_only.header() == mac_only.encode()[:header_len]
    assert mac_only.aad() == mac_only.encode()[:-MAC_BYTES]


@pytest.mark.parametrize("fields", [
    dict(session_id=2**32), dict(seq_num=1, seq_num_size=SeqNumSize.NONE), dict(mac=b"short"),
    dict(ciphertext=bytes(0x10000)),
])
def test_record_aad_of_an_unencodable_record_still_fails_like_encode(fields: dict[str, object]) -> None:
    base: dict[str, object] = dict(session_id=1, ciphertext=b"abc", mac=bytes(MAC_BYTES), seq_num=0,
                                   seq_num_size=SeqNumSize.NONE)
    record = SecuredRecord(**{**base, **fields})  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        record.encode()
    with pytest.raises(EncodeError):
        record.aad()
