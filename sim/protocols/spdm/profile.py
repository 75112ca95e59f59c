"""What an SPDM responder offers: versions, capabilities, algorithms, slots and its measurements.

A :class:`ResponderProfile` is configuration (frozen). Algorithm tuples are in *priority order*:
the responder selects the first entry the requester also offers (PROTOCOLS.md §2.6), so the
selection is deterministic and one bit wide. The device's measurements live in a mutable
:class:`DeviceMeasurements` held by the profile, so that a firmware update
(:meth:`DeviceMeasurements.update_firmware`) changes what the next MEASUREMENTS reports and a
verifier comparing against its reference values notices.

Named profiles (fresh objects per call, so devices never share measurement state):

* ``default-p384`` — SPDM 1.0-1.3, ECDSA P-384, SHA-384, secp384r1, AES-256-GCM.
* ``p256`` — SPDM 1.0-1.3, ECDSA P-256, SHA-256, secp256r1, AES-256-GCM (AES-128-GCM and
  ChaCha20-Poly1305 also offered, lower priority).
* ``default-p384-clear`` — as default-p384 with HANDSHAKE_IN_THE_CLEAR.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

from sim.crypto.algorithms import (
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    KeyScheduleAlgo,
    MeasurementHashAlgo,
)
from sim.crypto.hashes import digest, measurement_base_hash
from sim.wire.spdm.common import CapabilityFlags, MeasurementSpec, SpdmVersion
from sim.wire.spdm.measurements import MEASUREMENT_INDEX_DEVICE_MODE, DmtfValueType, MeasurementBlock

# Capability bits that exist in each version's CAPABILITIES (§2.5); others are masked off on the wire.
_CAPS_SINCE: dict[int, CapabilityFlags] = {
    0x10: CapabilityFlags((1 << 6) - 1),
    0x11: CapabilityFlags((1 << 17) - 1),
    0x12: CapabilityFlags((1 << 22) - 1),
    0x13: CapabilityFlags((1 << 30) - 1),
}

# Value types defined only from SPDM 1.2 on: such blocks are not shown to 1.0/1.1 requesters.
_TYPES_SINCE_12 = frozenset({DmtfValueType.DEVICE_MODE, DmtfValueType.VERSION, DmtfValueType.SECURE_VERSION_NUMBER})

DEFAULT_CAPABILITIES = (
    CapabilityFlags.CERT_CAP | CapabilityFlags.CHAL_CAP | CapabilityFlags.MEAS_CAP_SIG
    | CapabilityFlags.MEAS_FRESH_CAP | CapabilityFlags.ENCRYPT_CAP | CapabilityFlags.MAC_CAP
    | CapabilityFlags.KEY_EX_CAP | CapabilityFlags.HBEAT_CAP | CapabilityFlags.KEY_UPD_CAP
)

# Capabilities this responder implements; anything else in a profile is refused (no MUT_AUTH,
# PSK, ENCAP, CHUNK, ...: advertising them without implementing them would mislead requesters).
IMPLEMENTED_CAPABILITIES = DEFAULT_CAPABILITIES | CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP | CapabilityFlags.CACHE_CAP \
    | CapabilityFlags.MEAS_CAP_NO_SIG

DSP0277_VERSIONS = (0x1200, 0x1100, 0x1000)  # secured-message versions offered, highest first (§5.5)


def capabilities_for_version(flags: CapabilityFlags, version: int) -> CapabilityFlags:
    """The flags as a CAPABILITIES of ``version`` may carry them (later bits masked off)."""
    return CapabilityFlags(int(flags) & int(_CAPS_SINCE[min(max(version, 0x10), 0x13)]))


@dataclasses.dataclass(frozen=True)
class DeviceMode:
    """The 16-byte raw value of the device-mode measurement (index 0xFE; libspdm spdm.h layout)."""

    operational_mode_capabilities: int = 0x3F  # manufacturing..decommissioned
    operational_mode_state: int = 0x04  # normal mode
    device_mode_capabilities: int = 0x1F
    device_mode_state: int = 0x00  # no debug mode active or ever active

    def encode(self) -> bytes:
        return struct.pack("<IIII", self.operational_mode_capabilities, self.operational_mode_state,
                           self.device_mode_capabilities, self.device_mode_state)


@dataclasses.dataclass(frozen=True)
class MeasuredItem:
    """One thing the device measures: its index, DMTF value type and the raw content.

    ``raw_only`` items are always reported as their raw bit stream (device mode, version string);
    the others as a digest under the negotiated MeasurementHashAlgo unless the requester asks for
    raw bit streams (1.2+). ``tcb`` items make up the TCB measurement summary hash.

    A device measures a component once, when it loads, and reports the stored digest afterwards:
    the digest under each algorithm is computed on first use and kept (the item is immutable; a
    firmware update replaces it). ``on_hash`` hears the bytes hashed when that happens.

    ``reported_digest`` is a digest given rather than measured (a scenario stating what a component
    measures as): it is what the device reports, under any measurement hash and even when raw bit
    streams are requested, since the DSM holds no image behind it.
    """

    index: int
    value_type: DmtfValueType
    content: bytes
    raw_only: bool = False
    tcb: bool = False
    reported_digest: bytes | None = None
    _digests: dict[MeasurementHashAlgo, bytes] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False)

    def block(self, hash_algo: MeasurementHashAlgo, *, raw: bool,
              on_hash: Callable[[int], object] | None = None) -> MeasurementBlock:
        """The DMTF measurement block of this item, as a digest or as the raw bit stream."""
        if self.reported_digest is not None:
            return MeasurementBlock.dmtf(self.index, self.value_type, self.reported_digest)
        if self.raw_only or raw or hash_algo == MeasurementHashAlgo.RAW_BIT_STREAM_ONLY:
            return MeasurementBlock.dmtf(self.index, self.value_type, self.content, raw_bit_stream=True)
        value = self._digests.get(hash_algo)
        if value is None:
            value = self._digests[hash_algo] = digest(measurement_base_hash(hash_algo), self.content)
            if on_hash is not None:
                on_hash(len(self.content))
        return MeasurementBlock.dmtf(self.index, self.value_type, value)


def firmware_image(version: str, name: str = "device") -> bytes:
    """A deterministic stand-in for a firmware image of ``version`` (what the firmware digest covers)."""
    return f"tiosim {name} firmware image version {version}\n".encode() * 64


class DeviceMeasurements:
    """The measurements a device reports, mutable so that firmware updates show up.

    ``generation`` counts changes; the responder compares it across a measurement transcript to
    fill the 1.2 ContentChanged field.
    """

    def __init__(self, name: str = "device", firmware_version: str = "1.0.0", *,
                 hardware_config: bytes | None = None, firmware_config: bytes | None = None,
                 device_mode: DeviceMode | None = None) -> None:
        self.name = name
        self.generation = 0
        self.firmware_version = firmware_version
        self._items: dict[int, MeasuredItem] = {}
        self.set(MeasuredItem(1, DmtfValueType.IMMUTABLE_ROM, f"tiosim {name} immutable boot ROM".encode() * 16,
                              tcb=True))
        self.set(MeasuredItem(2, DmtfValueType.MUTABLE_FIRMWARE, firmware_image(firmware_version, name)))
        self.set(MeasuredItem(3, DmtfValueType.HARDWARE_CONFIG,
                              hardware_config if hardware_config is not None else f"{name} straps: x16 gen5".encode()))
        self.set(MeasuredItem(4, DmtfValueType.FIRMWARE_CONFIG,
                              firmware_config if firmware_config is not None else f"{name} fw config: ide=on".encode()))
        self.set(MeasuredItem(5, DmtfValueType.VERSION, firmware_version.encode(), raw_only=True))
        self.set(MeasuredItem(MEASUREMENT_INDEX_DEVICE_MODE, DmtfValueType.DEVICE_MODE,
                              (device_mode or DeviceMode()).encode(), raw_only=True))
        self.generation = 0

    def set(self, item: MeasuredItem) -> None:
        """Add or replace the item at ``item.index`` (1..0xFE)."""
        if not 1 <= item.index <= 0xFE:
            raise ValueError(f"measurement index {item.index} is outside 1..254")
        self._items[item.index] = item
        self.generation += 1

    def digest_indices(self) -> tuple[int, ...]:
        """The indices the device reports as digests (the others are raw bit streams)."""
        return tuple(sorted(i for i, it in self._items.items() if not it.raw_only))

    def report_digest(self, index: int, value: bytes) -> None:
        """Report ``value`` as the digest of the item at ``index`` from now on (a firmware update of that
        item measures anew). ValueError for an index the device does not report as a digest."""
        item = self._items.get(index)
        if item is None or item.raw_only:
            raise ValueError(f"measurement index {index} is not one the device reports as a digest "
                             f"(those are {', '.join(map(str, self.digest_indices()))})")
        self.set(dataclasses.replace(item, reported_digest=bytes(value)))

    def update_firmware(self, version: str, image: bytes | None = None) -> None:
        """A firmware update: the mutable-firmware digest and the version string change."""
        self.firmware_version = version
        self.set(MeasuredItem(2, DmtfValueType.MUTABLE_FIRMWARE, image if image is not None
                              else firmware_image(version, self.name)))
        self.set(MeasuredItem(5, DmtfValueType.VERSION, version.encode(), raw_only=True))

    def items(self, version: int) -> list[MeasuredItem]:
        """The items visible at SPDM ``version``, by ascending index."""
        return [it for _, it in sorted(self._items.items())
                if version >= SpdmVersion.V12 or it.value_type not in _TYPES_SINCE_12]

    def item(self, index: int, version: int) -> MeasuredItem | None:
        return next((it for it in self.items(version) if it.index == index), None)

    def blocks(self, version: int, hash_algo: MeasurementHashAlgo, *, raw: bool = False,
               on_hash: Callable[[int], object] | None = None) -> list[MeasurementBlock]:
        return [it.block(hash_algo, raw=raw, on_hash=on_hash) for it in self.items(version)]

    def summary_blocks(self, version: int, hash_algo: MeasurementHashAlgo, *, tcb_only: bool,
                       on_hash: Callable[[int], object] | None = None) -> bytes:
        """The concatenated blocks (headers included) a MeasurementSummaryHash covers (§2.9)."""
        items = [it for it in self.items(version) if it.tcb or not tcb_only]
        return b"".join(it.block(hash_algo, raw=False, on_hash=on_hash).encode() for it in items)


@dataclasses.dataclass(frozen=True)
class ResponderProfile:
    """Configuration of one SPDM responder (see the module docstring)."""

    name: str = "default-p384"
    versions: tuple[int, ...] = (0x10, 0x11, 0x12, 0x13)
    capabilities: CapabilityFlags = DEFAULT_CAPABILITIES
    ct_exponent: int = 14  # CT = 2^14 µs ≈ 16 ms for signing responses
    data_transfer_size: int = 4096
    max_spdm_msg_size: int = 4096
    asym_algos: tuple[BaseAsymAlgo, ...] = (BaseAsymAlgo.ECDSA_P384,)
    hash_algos: tuple[BaseHashAlgo, ...] = (BaseHashAlgo.SHA_384,)
    dhe_groups: tuple[DheGroup, ...] = (DheGroup.SECP_384_R1,)
    aead_suites: tuple[AeadSuite, ...] = (AeadSuite.AES_256_GCM,)
    key_schedules: tuple[KeyScheduleAlgo, ...] = (KeyScheduleAlgo.SPDM,)
    measurement_spec: MeasurementSpec = MeasurementSpec.DMTF
    measurement_hash_algo: MeasurementHashAlgo = MeasurementHashAlgo.SHA_384
    secured_message_versions: tuple[int, ...] = DSP0277_VERSIONS
    heartbeat_period: int = 0  # seconds; 0 = no heartbeat required
    handshake_in_the_clear: bool = False
    slots: tuple[int, ...] = (0,)
    max_sessions: int = 4
    measurements: DeviceMeasurements = dataclasses.field(default_factory=DeviceMeasurements, compare=False)

    def __post_init__(self) -> None:
        bad_versions = [v for v in self.versions if v not in (0x10, 0x11, 0x12, 0x13)]
        if not self.versions or bad_versions:
            raise ValueError(f"profile {self.name}: versions must be a non-empty subset of 1.0-1.3, not {bad_versions}")
        caps = CapabilityFlags(self.capabilities)
        if self.handshake_in_the_clear:
            caps |= CapabilityFlags.HANDSHAKE_IN_THE_CLEAR_CAP
        unimplemented = caps & ~IMPLEMENTED_CAPABILITIES
        if unimplemented:
            raise ValueError(f"profile {self.name}: capabilities {unimplemented!r} are not implemented")
        if caps & CapabilityFlags.MEAS_CAP_SIG and caps & CapabilityFlags.MEAS_CAP_NO_SIG:
            raise ValueError(f"profile {self.name}: MEAS_CAP 11b is reserved (set one of the two bits)")
        object.__setattr__(self, "capabilities", caps)
        if not all(0 <= s < 8 for s in self.slots) or len(set(self.slots)) != len(self.slots):
            raise ValueError(f"profile {self.name}: slots must be distinct numbers 0-7")
        if self.data_transfer_size < 42 or self.data_transfer_size > self.max_spdm_msg_size:
            raise ValueError(f"profile {self.name}: need 42 <= DataTransferSize <= MaxSPDMmsgSize")
        if self.data_transfer_size != self.max_spdm_msg_size:
            raise ValueError(f"profile {self.name}: without CHUNK_CAP DataTransferSize must equal MaxSPDMmsgSize")
        if not 0 <= self.ct_exponent <= 31:
            raise ValueError(f"profile {self.name}: CTExponent must be 0..31")

    @property
    def measures(self) -> bool:
        return bool(self.capabilities & (CapabilityFlags.MEAS_CAP_SIG | CapabilityFlags.MEAS_CAP_NO_SIG))

    @property
    def signs_measurements(self) -> bool:
        return bool(self.capabilities & CapabilityFlags.MEAS_CAP_SIG)

    @property
    def slot_mask(self) -> int:
        return sum(1 << s for s in self.slots)

    def flags_for(self, version: int) -> CapabilityFlags:
        """CAPABILITIES.Flags as sent at ``version``."""
        return capabilities_for_version(self.capabilities, version)

    def replace(self, **changes: object) -> ResponderProfile:
        """A copy with some fields changed (and, unless given, fresh measurements of the same firmware)."""
        if "measurements" not in changes:
            changes["measurements"] = DeviceMeasurements(self.measurements.name, self.measurements.firmware_version)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _default_p384(device: str = "device", firmware_version: str = "1.0.0") -> ResponderProfile:
    return ResponderProfile(name="default-p384", measurements=DeviceMeasurements(device, firmware_version))


def _default_p384_clear(device: str = "device", firmware_version: str = "1.0.0") -> ResponderProfile:
    return ResponderProfile(name="default-p384-clear", handshake_in_the_clear=True,
                            measurements=DeviceMeasurements(device, firmware_version))


def _p256(device: str = "device", firmware_version: str = "1.0.0") -> ResponderProfile:
    return ResponderProfile(
        name="p256",
        asym_algos=(BaseAsymAlgo.ECDSA_P256,),
        hash_algos=(BaseHashAlgo.SHA_256,),
        dhe_groups=(DheGroup.SECP_256_R1,),
        aead_suites=(AeadSuite.AES_256_GCM, AeadSuite.AES_128_GCM, AeadSuite.CHACHA20_POLY1305),
        measurement_hash_algo=MeasurementHashAlgo.SHA_256,
        measurements=DeviceMeasurements(device, firmware_version),
    )


PROFILES: dict[str, Callable[..., ResponderProfile]] = {
    "default-p384": _default_p384,
    "default-p384-clear": _default_p384_clear,
    "p256": _p256,
}


def make_profile(name: str, device: str = "device", firmware_version: str = "1.0.0") -> ResponderProfile:
    """A fresh named profile for one device; KeyError lists the known names."""
    try:
        factory = PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown responder profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
    return factory(device, firmware_version)
