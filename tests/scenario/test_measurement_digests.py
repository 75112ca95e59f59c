"""A device's explicit measurement digests (``measurements.digests``) are what it reports, and guests judge them."""

from __future__ import annotations

from typing import Any

import pytest

from sim.crypto.algorithms import MeasurementHashAlgo
from sim.engine.world import World
from sim.protocols.spdm.profile import DeviceMeasurements, MeasuredItem
from sim.scenario.loader import ScenarioError, load_scenario_text
from sim.scenario.platform import DeviceSpec, PlatformSpec, PlatformSpecError, build_platform
from sim.scenario.run import run_scenario
from sim.wire.spdm.measurements import DmtfValueType

FIRMWARE_DIGEST = "ab" * 48  # what the device claims its firmware measures as (P-384 profile: 48 bytes)

SCENARIO = """\
name: digests
seed: 3
models: [thin-guest, fat]
platform:
  root_ports: [{id: rp0}]
  devices:
    - id: gpu0
      port: rp0
      measurements: {digests: {2: "%(reported)s"}}
      owner: tvm0
guests:
  - id: tvm0
    devices: [gpu0]
    policy:
      expected_measurements:
        gpu0: %(expected)s
timeline:
  - {event: boot, at: 0}
expect:
  - {expect: attestation, device: gpu0, by: guest, outcome: %(outcome)s}
"""


def _run(expected: str, outcome: str, reported: str = FIRMWARE_DIGEST) -> dict[str, Any]:
    text = SCENARIO % {"reported": reported, "expected": expected, "outcome": outcome}
    return run_scenario(load_scenario_text(text, "digests.yaml"))


def _held(result: dict[str, Any]) -> list[str]:
    return [f"[{m}] {e['text']}: {e['detail']}" for m, r in result["models"].items() for e in r["expectations"]
            if not e["held"]]


def test_guest_accepts_the_digest_the_device_reports() -> None:
    result = _run(f'{{digests: {{2: "{FIRMWARE_DIGEST}"}}}}', "ok")
    assert not _held(result), _held(result)


def test_guest_expecting_the_firmware_version_rejects_a_different_reported_digest() -> None:
    """The device runs "1.0.0" by default, but reports another digest for index 2: the guest's reference
    (the digest of firmware 1.0.0) no longer matches, in the thin and in the fat model."""
    result = _run('{firmware: "1.0.0"}', "failed")
    assert not _held(result), _held(result)
    assert _run('{firmware: "1.0.0"}', "ok", reported="cd" * 48)["ok"] is False


def test_an_index_the_device_does_not_digest_is_refused_at_load() -> None:
    text = SCENARIO % {"reported": FIRMWARE_DIGEST, "expected": '{firmware: "1.0.0"}', "outcome": "ok"}
    text = text.replace("digests: {2:", "digests: {5:")
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, "digests.yaml")
    assert "measurement index 5 is not one the device reports as a digest (those are 1, 2, 3, 4)" in str(caught.value)


def test_reported_digest_is_served_for_any_request_and_replaced_by_a_firmware_update() -> None:
    store = DeviceMeasurements("dev")
    value = bytes.fromhex(FIRMWARE_DIGEST)
    store.report_digest(2, value)
    for raw in (False, True):
        blocks = {b.index: b for b in store.blocks(0x13, MeasurementHashAlgo.SHA_384, raw=raw)}
        assert blocks[2].measurement.value == value and not blocks[2].raw_bit_stream
    store.update_firmware("2.0.0")
    block = {b.index: b for b in store.blocks(0x13, MeasurementHashAlgo.SHA_384)}[2]
    assert block.measurement.value != value
    with pytest.raises(ValueError, match="not one the device reports as a digest"):
        store.report_digest(5, value)


def test_digest_is_hashed_once_and_metered_by_the_bytes_hashed() -> None:
    item = MeasuredItem(2, DmtfValueType.MUTABLE_FIRMWARE, b"image" * 100)
    heard: list[int] = []
    first = item.block(MeasurementHashAlgo.SHA_384, raw=False, on_hash=heard.append)
    again = item.block(MeasurementHashAlgo.SHA_384, raw=False, on_hash=heard.append)
    assert first == again and heard == [500]
    item.block(MeasurementHashAlgo.SHA_256, raw=False, on_hash=heard.append)
    assert heard == [500, 500]


@pytest.mark.parametrize(("digests", "words"), [
    (((2, b"\x01" * 5),), "measurement digest 2 is 5 bytes, profile default-p384 reports 48-byte digests"),
    (((6, b"\x01" * 48),), "measurement index 6 is not one the device reports as a digest"),
])
def test_platform_refuses_digests_the_device_cannot_report(digests: tuple[tuple[int, bytes], ...], words: str) -> None:
    with pytest.raises(PlatformSpecError, match=words):
        build_platform(World(1), PlatformSpec(devices=(DeviceSpec(measurement_digests=digests),)))
