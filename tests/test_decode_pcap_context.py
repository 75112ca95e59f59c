"""``tiosim decode --pcap`` follows the capture's conversation: the simulator's own doe.pcap decodes whole.

CHALLENGE_AUTH and KEY_EXCHANGE_RSP have fields sized by what was negotiated (H, S, D) and by the
request (measurement summary hash); a capture says both only in earlier records. Every record of every
model's pcap must decode, for P-384 devices, a P-256 device and a mix of both in one capture.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim.cli import main
from sim.crypto.algorithms import BaseAsymAlgo, BaseHashAlgo, DheGroup
from sim.engine.trace import parse_pcap
from sim.scenario.loader import load_scenario, load_scenario_text
from sim.scenario.run import run_scenario
from sim.wire.codec import DecodeError
from sim.wire.dissect import Conversation, dissect
from sim.wire.doe import DoeObject, DoeObjectType
from sim.wire.spdm.algorithms import Algorithms, AlgStruct
from sim.wire.spdm.capabilities import Capabilities, GetCapabilities
from sim.wire.spdm.challenge import Challenge
from sim.wire.spdm.common import (
    AlgType,
    CapabilityFlags,
    MeasurementHashAlgo,
    MeasurementSummaryHashType,
    RequestCode,
    ResponseCode,
)
from sim.wire.spdm.key_exchange import KeyExchange, KeyExchangeRsp

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
MODELS = ("fat", "thin-host", "thin-guest", "thin-vmm")


def _doc_example() -> str:
    """The example scenario of docs/scenario-format.md: a P-384 NIC and a P-256 GPU on one platform."""
    text = (ROOT / "docs" / "scenario-format.md").read_text(encoding="utf-8")
    section = re.search(r"^## Example\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "docs/scenario-format.md has no '## Example'"
    return re.findall(r"^```yaml\n(.*?)^```$", section.group(1), re.M | re.S)[0]


@pytest.fixture(scope="module")
def pcaps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """doe.pcap per (case, model): a shipped P-384 scenario under every model, a P-256 device, the doc mix."""
    out = tmp_path_factory.mktemp("pcaps")
    shipped = SCENARIOS / "passthrough-guest.yaml"
    base = (SCENARIOS / "single-device-boot.yaml").read_text(encoding="utf-8")
    assert base.count("profile: default-p384") == 1
    cases = {
        "p384": load_scenario(shipped),
        "p256": load_scenario_text(base.replace("profile: default-p384", "profile: p256"), str(SCENARIOS / "x.yaml")),
        "mixed": load_scenario_text(_doc_example(), str(ROOT / "docs" / "scenario-format.md")),
    }
    assert set(cases["p384"].models) == set(MODELS), "the shipped scenario should run under every model"
    found: dict[str, Path] = {}
    for case, scenario in cases.items():
        run_scenario(scenario, out_dir=out / case)
        for model in scenario.models:
            found[f"{case}/{model}"] = out / case / str(model) / "doe.pcap"
    return found


def _records(path: Path) -> list[bytes]:
    return [p.data for p in parse_pcap(path.read_bytes()).packets]


def _spdm_code(data: bytes) -> int | None:
    obj = DoeObject.decode(data)
    return obj.payload[1] if obj.object_type is DoeObjectType.SPDM else None


@pytest.mark.parametrize("case", ["p384/fat", "p384/thin-host", "p384/thin-guest", "p384/thin-vmm",
                                  "p256/fat", "p256/thin-host", "mixed/thin-guest", "mixed/thin-vmm"])
def test_every_record_of_the_simulators_pcap_decodes(case: str, pcaps: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = pcaps[case]
    records = _records(path)
    codes = [_spdm_code(r) for r in records]
    assert ResponseCode.CHALLENGE_AUTH in codes and ResponseCode.KEY_EXCHANGE_RSP in codes, "nothing to size"
    code = main(["decode", "--pcap", str(path)])
    out = re.sub(r"[\s│├└─]+", " ", capsys.readouterr().out)  # as one line, whatever the console width
    assert "cannot decode" not in out, out[out.find("cannot decode") - 200:][:600]
    assert code == 0
    assert len(re.findall(r" record \d+: DOE ", out)) == len(records)
    assert out.count("CHALLENGE_AUTH slot=") == codes.count(ResponseCode.CHALLENGE_AUTH)
    assert "(encrypted)" in out and "no keys to open it" in out and "not set up in this capture" not in out
    assert "(sizes)" not in out  # each response fitted its own request's context, no guessing


def test_the_fixed_context_could_not_decode_them(pcaps: dict[str, Path]) -> None:
    """Without following the conversation a CHALLENGE_AUTH with a summary hash does not decode (the defect)."""
    auth = next(r for r in _records(pcaps["p384/thin-host"]) if _spdm_code(r) == ResponseCode.CHALLENGE_AUTH)
    with pytest.raises(DecodeError, match="CHALLENGE_AUTH"):
        dissect(auth)
    p256 = next(r for r in _records(pcaps["p256/thin-host"]) if _spdm_code(r) == ResponseCode.CHALLENGE_AUTH)
    with pytest.raises(DecodeError, match="CHALLENGE_AUTH"):
        dissect(p256, hash_name="sha256", asym_name="p256")


def test_explicit_algorithms_override_what_the_capture_negotiated(pcaps: dict[str, Path],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = str(pcaps["p256/thin-host"])
    assert main(["decode", "--pcap", path, "--hash", "sha256", "--asym", "p256"]) == 0
    assert "cannot decode" not in capsys.readouterr().out
    assert main(["decode", "--pcap", path, "--asym", "p384"]) == 1  # S=96 pinned over the capture's P-256
    assert "CHALLENGE_AUTH.signature" in capsys.readouterr().out


def _feed(conv: Conversation, records: list[bytes]) -> list[str]:
    notes = []
    for data in records:
        layer = dissect(data, conversation=conv)
        notes += [value for child in layer.children for name, value in child.fields if name == "(sizes)"]
    return notes


def test_context_follows_algorithms_and_each_request(pcaps: dict[str, Path]) -> None:
    records = _records(pcaps["p256/thin-host"])
    codes = [_spdm_code(r) for r in records]
    conv = Conversation()
    assert (conv.ctx.hash_size, conv.ctx.sig_size) == (48, 96)  # nothing negotiated: the defaults
    algorithms = codes.index(ResponseCode.ALGORITHMS)
    assert _feed(conv, records[:algorithms + 1]) == []
    assert (conv.ctx.hash_size, conv.ctx.sig_size, conv.ctx.dhe_size) == (32, 64, 64)
    assert conv.version == 0x13 and 0x13 in conv.offered_versions
    challenge = codes.index(ResponseCode.CHALLENGE_AUTH) - 1
    _feed(conv, records[algorithms + 1:challenge + 1])
    assert [c.meas_summary_size for c in conv.candidates(ResponseCode.CHALLENGE_AUTH)][0] == 32
    auth = dissect(records[challenge + 1], conversation=conv).children[0]
    assert dict(auth.fields)["measurement_summary_hash"] != "(empty)"
    assert conv.candidates(ResponseCode.CHALLENGE_AUTH)[0].meas_summary_size == 0  # that request is answered
    _feed(conv, records[challenge + 2:])
    assert len(conv.sessions) == 1 and set(conv.sessions.values()) == {0x13}
    get_version = codes.index(RequestCode.GET_VERSION)
    _feed(conv, records[get_version:get_version + 1])  # a new connection starts from the defaults again
    assert conv.version is None and (conv.ctx.hash_size, conv.ctx.sig_size) == (48, 96)


def test_interleaved_devices_fall_back_to_what_the_capture_negotiated(pcaps: dict[str, Path]) -> None:
    """Two devices' objects in one capture: a request seen after the other device's ALGORITHMS still decodes."""
    a, b = _records(pcaps["p384/thin-host"]), _records(pcaps["p256/thin-host"])
    a_codes, b_codes = [_spdm_code(r) for r in a], [_spdm_code(r) for r in b]
    a_alg, a_auth = a_codes.index(ResponseCode.ALGORITHMS), a_codes.index(ResponseCode.CHALLENGE_AUTH)
    b_alg = b_codes.index(ResponseCode.ALGORITHMS)
    # A negotiates P-384, then B negotiates P-256, then A challenges: A's request is noted with B's sizes.
    order = a[:a_alg + 1] + b[:b_alg + 1] + a[a_alg + 1:a_auth + 1]
    conv = Conversation()
    notes = _feed(conv, order)
    assert len(notes) == 1 and "H=48 S=96" in notes[0] and "summary=48" in notes[0]
    strict = Conversation()
    _feed(strict, a[:a_alg + 1] + b[:b_alg + 1] + a[a_alg + 1:a_auth])
    strict._negotiated = [strict.ctx]  # forget A's P-384: then nothing fits, and the error names the field
    with pytest.raises(DecodeError, match="CHALLENGE_AUTH"):
        dissect(a[a_auth], conversation=strict)


def test_handshake_in_the_clear_moves_verify_data_and_summary_follows_meas_cap() -> None:
    """Both CAPABILITIES with HANDSHAKE_IN_THE_CLEAR: KEY_EXCHANGE_RSP has no ResponderVerifyData; a responder
    without MEAS_CAP sends no summary hash whatever the request's HashType."""
    h, s, d = 32, 64, 64
    clear = CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP | CapabilityFlags.KEY_EX_CAP
    dhe = AlgStruct(AlgType.DHE, DheGroup.SECP_256_R1)
    plain = [
        GetCapabilities(version=0x12, ct_exponent=0, flags=clear, data_transfer_size=4096, max_spdm_msg_size=4096),
        Capabilities(version=0x12, flags=clear | CapabilityFlags.MEAS_CAP_SIG, data_transfer_size=4096,
                     max_spdm_msg_size=4096),
        Algorithms(version=0x12, measurement_hash_algo=MeasurementHashAlgo.SHA_256,
                   base_asym_sel=BaseAsymAlgo.ECDSA_P256, base_hash_sel=BaseHashAlgo.SHA_256, alg_structs=(dhe,)),
        KeyExchange(version=0x12, hash_type=MeasurementSummaryHashType.TCB, slot_id=0, req_session_id=0xFFFE,
                    random_data=bytes(32), exchange_data=bytes(d)),
    ]
    conv = Conversation()
    for msg in plain:
        dissect(msg.encode(conv.ctx), "spdm", conversation=conv)
    assert conv.ctx.handshake_in_the_clear and (conv.ctx.hash_size, conv.ctx.sig_size) == (h, s)
    rsp_ctx = conv.ctx.with_(meas_summary_size=h)
    rsp = KeyExchangeRsp(version=0x12, heartbeat_period=0, rsp_session_id=0x1234, mut_auth_requested=0,
                         req_slot_id=0, random_data=bytes(32), exchange_data=bytes(d),
                         measurement_summary_hash=b"\x11" * h, opaque_data=b"", signature=b"\x22" * s)
    layer = dissect(rsp.encode(rsp_ctx), "spdm", conversation=conv)
    assert dict(layer.fields)["measurement_summary_hash"].startswith("1111") and "(sizes)" not in dict(layer.fields)
    assert conv.sessions == {0x1234FFFE: 0x12}
    with pytest.raises(DecodeError):  # the same bytes under the fixed context (H=48, no summary, verify data)
        dissect(rsp.encode(rsp_ctx), "spdm")
    conv.observe(Capabilities(version=0x12, flags=clear, data_transfer_size=4096, max_spdm_msg_size=4096))
    conv.observe(Challenge(version=0x12, slot_id=0, hash_type=MeasurementSummaryHashType.ALL, nonce=bytes(32)))
    assert conv.candidates(ResponseCode.CHALLENGE_AUTH)[0].meas_summary_size == 0  # no MEAS_CAP, no summary


def test_discovery_direction_follows_the_conversation(pcaps: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Request and response are one DW each; in a capture they alternate, so each record reads one way only."""
    assert main(["decode", "--pcap", str(pcaps["p384/thin-host"])]) == 0
    out = capsys.readouterr().out
    seen = re.findall(r"(request|response): DOE DISCOVERY", out)
    assert "as request" not in out and "as response" not in out
    assert seen[:6] == ["request", "response"] * 3 and len(seen) % 2 == 0
