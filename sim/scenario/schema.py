"""The typed model of a scenario file: platform, guests, timing, timeline and expectations.

A scenario is YAML (see ``scenarios/``) validated by these pydantic models. Every model forbids
unknown keys, every closed set of values is an enum, and every duration is stored as integer ns,
so the simulation that consumes a :class:`Scenario` never re-parses user text. The loader
(:mod:`sim.scenario.loader`) maps each validation error back to the file, line and key path.

Cross-references (a device's port exists, ids are unique, an event names an existing device...)
are checked by :func:`reference_problems`; :class:`Scenario` runs it after field validation and
raises one error listing them all, unless the validation context asks for the list instead
(``context={"reference_problems": []}``, which is what the loader does to give each its own line).
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sim.crypto.identity import load_certificates, load_private_key
from sim.crypto.secrets import SecretClass
from sim.engine.exposure import Exposure
from sim.engine.timing import ComponentClass, Op
from sim.protocols.spdm.outcome import FailureReason
from sim.protocols.tsm import Phase  # noqa: F401  (milestones are the securing flow's phases)
from sim.wire.tdisp import TdiState

# --- closed sets --------------------------------------------------------------------------------


class TrustModel(enum.StrEnum):
    """Who attests and keys a device (DESIGN.md; TRUST_MODELS.md §5-6)."""

    FAT = "fat"                # a firmware TSM does SPDM, IDE_KM and TDISP
    THIN_HOST = "thin-host"    # thin key-slot firmware; the host kernel attests and keys every device
    THIN_GUEST = "thin-guest"  # thin key-slot firmware; a confidential guest attests and keys its devices
    THIN_VMM = "thin-vmm"      # no firmware service: the VMM writes the Root Port key slots for the guest


class FatReconnectMode(enum.StrEnum):
    """Fat model only: who reconnects a device the firmware lost to a reset (``sim.firmware.fat_tsm``)."""

    NONE = "none"                      # as merged upstream: nobody; the device stays unconnected
    HOST_INITIATED = "host-initiated"  # the host re-issues DEV_CONNECT and re-binds the guests' TDIs


class SpdmProfileName(enum.StrEnum):
    """Named responder profiles (``sim.protocols.spdm.profile.PROFILES``)."""

    DEFAULT_P384 = "default-p384"
    DEFAULT_P384_CLEAR = "default-p384-clear"
    P256 = "p256"

    @property
    def digest_size(self) -> int:
        """Bytes of a measurement digest under this profile's measurement hash."""
        return 32 if self is SpdmProfileName.P256 else 48


class EventKind(enum.StrEnum):
    """What a timeline entry does (the ``event:`` key)."""

    BOOT = "boot"
    ASSIGN = "assign"
    DMA = "dma"
    MMIO = "mmio"
    DPC = "dpc"
    DPC_RELEASE = "dpc_release"
    D3COLD = "d3cold"
    D3COLD_EXIT = "d3cold_exit"
    FLR = "flr"
    HOT_RESET = "hot_reset"
    LINK_DOWN = "link_down"
    LINK_UP = "link_up"
    KEY_REFRESH = "key_refresh"
    FIRMWARE_UPDATE = "firmware_update"
    SECOND_REQUESTER = "second_requester"
    DOE_ABORT = "doe_abort"
    DROP_DOE = "drop_doe"
    CORRUPT_DOE = "corrupt_doe"
    ADVERSARY = "adversary"


class DmaDirection(enum.StrEnum):
    """Seen from the device: a DMA read fetches memory, a DMA write stores to it."""

    READ = "read"
    WRITE = "write"


class AdversaryComponent(enum.StrEnum):
    """Components an adversary event can compromise."""

    DEVICE_DSM = "device-dsm"
    FAT_TSM = "fat-tsm"
    THIN_KEYSLOT = "thin-keyslot"
    HOST_KERNEL = "host-kernel"
    VMM = "vmm"
    LINK_INTERPOSER = "link-interposer"
    SECOND_DEVICE = "second-device"


class AdversaryStrategy(enum.StrEnum):
    """What a compromised component does."""

    RECORD = "record"
    MODIFY = "modify"
    DROP = "drop"
    REORDER = "reorder"
    REPLAY = "replay"
    SUBSTITUTE_IDENTITY = "substitute-identity"
    SUBSTITUTE_MEASUREMENTS = "substitute-measurements"
    PROGRAM_KNOWN_KEYS = "program-known-keys"
    LIE_IN_REPORT = "lie-in-report"
    SKIP_REAUTH = "skip-reauth"
    REPROGRAM_AFTER_ACCEPT = "reprogram-after-accept"


class ExpectKind(enum.StrEnum):
    """What an expectation checks (the ``expect:`` key)."""

    TDI_STATE = "tdi_state"
    STREAM_STATE = "stream_state"
    ATTESTATION = "attestation"
    EXPOSURE = "exposure"
    LATENCY = "latency"
    TRACE_DIGEST = "trace_digest"


class TdiStateName(enum.StrEnum):
    """TDISP TDI states by name (TRUST_MODELS.md §3); :meth:`wire` gives the wire value."""

    CONFIG_UNLOCKED = "CONFIG_UNLOCKED"
    CONFIG_LOCKED = "CONFIG_LOCKED"
    RUN = "RUN"
    ERROR = "ERROR"

    def wire(self) -> TdiState:
        return TdiState[self.value]


class StreamState(enum.StrEnum):
    """IDE stream state as the Root Port's IDE status register reports it."""

    SECURE = "secure"
    INSECURE = "insecure"


class Verifier(enum.StrEnum):
    """Who runs the SPDM requester and judges a device's evidence."""

    FAT_TSM = "fat-tsm"
    HOST_KERNEL = "host-kernel"
    GUEST = "guest"


class AttestationOutcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"


class ExposureComponent(enum.StrEnum):
    """Components whose view of secrets the exposure tracker reports (TRUST_MODELS.md §6)."""

    DEVICE_DSM = "device-dsm"
    ROOT_PORT = "root-port"
    LINK = "link"
    FAT_TSM = "fat-tsm"
    THIN_KEYSLOT = "thin-keyslot"
    HOST_KERNEL = "host-kernel"
    VMM = "vmm"
    GUEST = "guest"


class ExposureLimit(enum.StrEnum):
    """The most a component may have had of a secret class; ordered like the engine's Exposure."""

    NEVER = "never"
    CIPHERTEXT = "ciphertext"
    PLAINTEXT = "plaintext"
    GENERATED = "generated"

    def exposure(self) -> Exposure:
        return _EXPOSURE_OF_LIMIT[self]


_EXPOSURE_OF_LIMIT = {
    ExposureLimit.NEVER: Exposure.NEVER,
    ExposureLimit.CIPHERTEXT: Exposure.SAW_CIPHERTEXT_ONLY,
    ExposureLimit.PLAINTEXT: Exposure.SAW_PLAINTEXT,
    ExposureLimit.GENERATED: Exposure.GENERATED,
}


class LatencyMetric(enum.StrEnum):
    """Latencies the reports compute from the trace (TRUST_MODELS.md §6, metric 4)."""

    TIME_TO_SECURE = "time_to_secure"              # boot or assign -> stream secure (and TDI RUN if any)
    RECOVERY = "recovery"                          # reset/DPC/D3cold -> secure again
    INSECURE_WINDOW = "insecure_window"            # total time a device's traffic ran without IDE
    FLEET_TIME_TO_SECURE = "fleet_time_to_secure"  # boot -> every device secure


HOST = "host"  # the owner name of a device the host kernel keeps

# --- value types ----------------------------------------------------------------------------------

ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
HEX_DIGEST_PATTERN = r"^([0-9a-fA-F]{64}|[0-9a-fA-F]{96}|[0-9a-fA-F]{128})$"
SHA256_HEX_PATTERN = r"^[0-9a-fA-F]{64}$"
DURATION_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s)\s*$"
SIZE_PATTERN = r"^\s*(\d+)\s*(B|KiB|MiB|GiB)\s*$"

# What each pattern means, for error messages that a user can act on.
PATTERN_DESCRIPTIONS = {
    ID_PATTERN: "an id: a letter, then up to 63 letters, digits, '-' or '_'",
    HEX_DIGEST_PATTERN: "a SHA-256, -384 or -512 digest in hex (64, 96 or 128 hex digits)",
    SHA256_HEX_PATTERN: "a SHA-256 digest in hex (64 hex digits)",
}

_DURATION_RE = re.compile(DURATION_PATTERN)
_SIZE_RE = re.compile(SIZE_PATTERN)
_NS_PER_UNIT = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_BYTES_PER_UNIT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def _got(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(value: object) -> int:
    """Integer ns from an int (ns) or a string with a unit: "250ns", "3us", "5ms", "1.5s"."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError("duration", "bad duration (expected integer ns or a string like '3us', "
                                  "'5ms', '1.5s', got {got})", {"got": _got(value)})
    if isinstance(value, int):
        if value < 0:
            raise PydanticCustomError("duration", "negative duration (expected ns >= 0, got {got})",
                                      {"got": value})
        return value
    match = _DURATION_RE.match(value)
    if not match:
        raise PydanticCustomError("duration", "bad duration (expected integer ns or a number with a unit ns, us, "
                                  "ms or s, like '250ns', '3us', '1.5s', got {got})", {"got": _got(value)})
    try:
        ns = Decimal(match.group(1)) * _NS_PER_UNIT[match.group(3)]
    except InvalidOperation:  # pragma: no cover - the pattern only admits decimal numbers
        raise PydanticCustomError("duration", "bad duration number (got {got})", {"got": _got(value)}) from None
    if ns != ns.to_integral_value():
        raise PydanticCustomError("duration", "duration is not a whole number of ns (expected a multiple of 1 ns, "
                                  "got {got})", {"got": _got(value)})
    return int(ns)


def parse_size(value: object) -> int:
    """Bytes from an int or a string with a unit: "64B", "4KiB", "2MiB", "1GiB"."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError("size", "bad size (expected integer bytes or a string like '4KiB', got {got})",
                                  {"got": _got(value)})
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if not match:
            raise PydanticCustomError("size", "bad size (expected integer bytes or a number with a unit B, KiB, "
                                      "MiB or GiB, like '4KiB', got {got})", {"got": _got(value)})
        value = int(match.group(1)) * _BYTES_PER_UNIT[match.group(2)]
    if value < 1:
        raise PydanticCustomError("size", "size must be at least 1 byte (got {got})", {"got": value})
    return value


def parse_when(value: object) -> int | str:
    """``end`` (the end of the run) or a duration."""
    if value == "end":
        return "end"
    if isinstance(value, str) and not _DURATION_RE.match(value):
        raise PydanticCustomError("when", "bad time (expected 'end', integer ns or a duration like '5ms', "
                                  "got {got})", {"got": _got(value)})
    return parse_duration(value)


def _resolve_file(value: object, info: ValidationInfo) -> Path:
    """A file path, relative to the scenario file's folder; checked to exist when loading from disk."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("path", "bad file path (expected a non-empty string, got {got})",
                                  {"got": _got(value)})
    path = Path(value)
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get("base_dir")
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if context.get("check_files") and not path.is_file():
        raise PydanticCustomError("path", "file not found (expected an existing file, got {got})",
                                  {"got": str(path)})
    return path


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "description": "nanoseconds"},
        {"type": "string", "pattern": DURATION_PATTERN, "description": "a number with a unit: ns, us, ms or s"},
    ]
}

Id = Annotated[str, StringConstraints(strict=True, pattern=ID_PATTERN)]
Text = Annotated[str, StringConstraints(strict=True, max_length=4000)]
Duration = Annotated[int, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
"""Integer ns; in YAML an integer (ns) or a string with a unit ("250ns", "3us", "5ms", "1.5s")."""
ByteSize = Annotated[int, BeforeValidator(parse_size), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 1},
              {"type": "string", "pattern": SIZE_PATTERN, "description": "a number with a unit: B, KiB, MiB, GiB"}]
})]
When = Annotated[int | Literal["end"], BeforeValidator(parse_when), WithJsonSchema({
    "anyOf": [{"const": "end"}, *_DURATION_SCHEMA["anyOf"]]
})]
"""When an expectation is checked: ``end`` or a simulated time."""
FilePath = Annotated[Path, BeforeValidator(_resolve_file), WithJsonSchema({"type": "string", "minLength": 1})]
Count = Annotated[int, Field(strict=True, ge=1)]
HexDigest = Annotated[str, StringConstraints(strict=True, pattern=HEX_DIGEST_PATTERN, to_lower=True)]
MeasurementIndex = Annotated[int, Field(ge=1, le=254)]


def _unique(items: list[Any], what: str) -> list[Any]:
    dups = sorted({str(x) for x, n in Counter(items).items() if n > 1})
    if dups:
        raise PydanticCustomError("unique", "duplicate {what} (expected each once, got {dups} more than once)",
                                  {"what": what, "dups": ", ".join(dups)})
    return items


ModelFilter = Annotated[list[TrustModel], Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# --- platform -------------------------------------------------------------------------------------


class RootPort(_Model):
    """A Root Port with its pool of selective IDE streams and optional DPC."""

    id: Id
    ide_streams: Annotated[int, Field(strict=True, ge=1, le=256)] = 4
    """How many selective IDE streams (and key-slot sets) the port offers."""
    dpc: Annotated[bool, Field(strict=True)] = True
    """Whether the port implements Downstream Port Containment."""
    link_latency: Duration | None = None
    """Override of the one-hop link latency below this port (default: the timing model's link-hop)."""


def _check_certificates(path: Path, key: str) -> None:
    """Raise a validation error unless ``path`` holds at least one parseable certificate."""
    try:
        certificates = load_certificates(path)
    except ValueError as exc:
        raise PydanticCustomError("certificates", "{key} holds no readable certificate ({why})",
                                  {"key": key, "why": str(exc)}) from None
    if not certificates:
        raise PydanticCustomError("certificates", "{key} holds no certificate (expected PEM or DER, got an empty "
                                  "file)", {"key": key})


class Identity(_Model):
    """Either a deterministic identity under a named CA (derived from the seed) or files."""

    ca: Id | None = None
    """Name of the CA hierarchy; devices with the same ca share root and intermediate."""
    cert_chain: FilePath | None = None
    """A certificate chain (PEM or concatenated DER), root first."""
    key: FilePath | None = None
    """The leaf's private key (unencrypted PEM or DER)."""

    @model_validator(mode="after")
    def _one_form(self) -> Identity:
        files = (self.cert_chain is not None, self.key is not None)
        if self.ca is not None and any(files):
            raise PydanticCustomError("identity", "identity takes either 'ca' or 'cert_chain' + 'key', not both")
        if self.ca is None and not all(files):
            raise PydanticCustomError("identity", "identity needs 'ca' (a CA name) or both 'cert_chain' and 'key' "
                                      "(files)")
        return self

    @model_validator(mode="after")
    def _files_parse(self, info: ValidationInfo) -> Identity:
        context = info.context if isinstance(info.context, dict) else {}
        if not context.get("check_files") or self.cert_chain is None or self.key is None:
            return self
        _check_certificates(self.cert_chain, "cert_chain")
        try:
            load_private_key(self.key)
        except (ValueError, TypeError) as exc:
            raise PydanticCustomError("identity", "key is not a private key ({why})", {"why": str(exc)}) from None
        return self


class Measurements(_Model):
    """What the device measures: the firmware version it runs and optional digests that override."""

    firmware: Text = "1.0.0"
    """Firmware version; the firmware digest (index 2) and version string (index 5) derive from it."""
    digests: dict[MeasurementIndex, HexDigest] = {}
    """Explicit digests by measurement index (1..254), replacing the derived ones (e.g. tampered firmware)."""


class MmioRange(_Model):
    bar: Annotated[int, Field(strict=True, ge=0, le=5)]
    pages: Annotated[int, Field(strict=True, ge=1)]
    """Size in 4 KiB pages."""


class Tdi(_Model):
    """A TDISP interface: one function of the device and the MMIO it owns."""

    id: Id
    function: Annotated[int, Field(strict=True, ge=0, le=255)] = 0
    mmio: list[MmioRange] = []


class Device(_Model):
    """An endpoint with a DSM, behind one Root Port."""

    id: Id
    port: Id
    """The Root Port the device sits behind."""
    profile: SpdmProfileName = SpdmProfileName.DEFAULT_P384
    identity: Identity = Identity(ca="default")
    measurements: Measurements = Measurements()
    tdis: list[Tdi] = []
    owner: Id = HOST
    """'host' (the host kernel keeps it) or the id of the guest it is assigned to at boot."""

    @model_validator(mode="after")
    def _digest_sizes(self) -> Device:
        size = self.profile.digest_size
        bad = [i for i, d in self.measurements.digests.items() if len(d) != 2 * size]
        if bad:
            raise PydanticCustomError(
                "digest_size", "measurement digest {index} has the wrong size for profile {profile} (expected "
                "{size} bytes = {hex} hex digits)",
                {"index": bad[0], "profile": str(self.profile), "size": size, "hex": 2 * size})
        return self


class Platform(_Model):
    root_ports: Annotated[list[RootPort], Field(min_length=1)]
    devices: list[Device] = []


# --- guests ---------------------------------------------------------------------------------------


class TrustedRoot(_Model):
    """A root certificate the guest trusts: a named CA from the seed, or a file."""

    ca: Id | None = None
    file: FilePath | None = None

    @model_validator(mode="after")
    def _one_form(self) -> TrustedRoot:
        if (self.ca is None) == (self.file is None):
            raise PydanticCustomError("trusted_root", "a trusted root is either {ca: NAME} or {file: PATH}, "
                                      "exactly one")
        return self

    @model_validator(mode="after")
    def _file_parses(self, info: ValidationInfo) -> TrustedRoot:
        context = info.context if isinstance(info.context, dict) else {}
        if context.get("check_files") and self.file is not None:
            _check_certificates(self.file, "file")
        return self


class ExpectedMeasurements(_Model):
    """Reference values for one device: a firmware version (digests derived), explicit digests, or both."""

    firmware: Text | None = None
    digests: dict[MeasurementIndex, HexDigest] = {}

    @model_validator(mode="after")
    def _something(self) -> ExpectedMeasurements:
        if self.firmware is None and not self.digests:
            raise PydanticCustomError("expected_measurements", "give 'firmware' or 'digests' (or both)")
        return self


class ExpectedReport(_Model):
    """TDI report fields the guest insists on before accepting a TDI (None = don't care)."""

    device: Id
    tdi: Id
    no_fw_update: Annotated[bool, Field(strict=True)] | None = None
    dma_without_pasid: Annotated[bool, Field(strict=True)] | None = None
    dma_with_pasid: Annotated[bool, Field(strict=True)] | None = None
    ats: Annotated[bool, Field(strict=True)] | None = None
    prs: Annotated[bool, Field(strict=True)] | None = None
    mmio: list[MmioRange] | None = None
    """The MMIO ranges the report must list, in order; omit to accept the TDI's configured ranges."""


class GuestPolicy(_Model):
    """How a guest judges the evidence of devices assigned to it."""

    trusted_roots: list[TrustedRoot] = [TrustedRoot(ca="default")]
    expected_measurements: dict[Id, ExpectedMeasurements] = {}
    """Reference values by device id."""
    expected_reports: list[ExpectedReport] = []
    require_signed_measurements: Annotated[bool, Field(strict=True)] = True


class Guest(_Model):
    """A confidential guest (TVM)."""

    id: Id
    devices: list[Id] = []
    """Devices this guest accepts: assigned at boot (the device's owner) or by an assign event."""
    policy: GuestPolicy = GuestPolicy()

    _unique_devices = field_validator("devices")(lambda v: _unique(v, "device"))


# --- timing ---------------------------------------------------------------------------------------

TimingOverrides = dict[ComponentClass, dict[Op, Duration]]


# --- timeline -------------------------------------------------------------------------------------


class During(_Model):
    """While ``device`` is in ``phase`` (the ``occurrence``-th time it gets there)."""

    device: Id
    phase: Phase
    occurrence: Count = 1


class After(_Model):
    """``delay`` after ``device`` completes ``phase`` (the ``occurrence``-th time)."""

    device: Id
    phase: Phase
    occurrence: Count = 1
    delay: Duration = 0


class _Event(_Model):
    """Fields every event shares: exactly one trigger and an optional trust-model filter."""

    at: Duration | None = None
    """At this simulated time."""
    during: During | None = None
    after: After | None = None
    models: ModelFilter | None = None
    """Only under these trust models (default: all the scenario runs)."""

    @model_validator(mode="after")
    def _one_trigger(self) -> _Event:
        given = [name for name in ("at", "during", "after") if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "trigger", "an event needs exactly one trigger (expected one of at, during, after, got {got})",
                {"got": " and ".join(given) if given else "none"})
        return self

    @property
    def kind(self) -> EventKind:
        return EventKind(getattr(self, "event"))  # noqa: B009 - every subclass defines it

    @property
    def trigger(self) -> int | During | After:
        """The one trigger: a time in ns, a During or an After."""
        trigger = self.at if self.at is not None else self.during if self.during is not None else self.after
        assert trigger is not None  # guaranteed by _one_trigger
        return trigger


class BootEvent(_Event):
    event: Literal[EventKind.BOOT]


class AssignEvent(_Event):
    """The VMM assigns ``device`` to ``guest``, which then attests it (thin-guest) or accepts it."""

    event: Literal[EventKind.ASSIGN]
    device: Id
    guest: Id


class DmaEvent(_Event):
    event: Literal[EventKind.DMA]
    device: Id
    bytes: ByteSize
    direction: DmaDirection = DmaDirection.WRITE


class MmioEvent(_Event):
    """``guest`` accesses the device's MMIO (through a TDI's range when ``tdi`` is given)."""

    event: Literal[EventKind.MMIO]
    device: Id
    guest: Id
    tdi: Id | None = None


class DpcEvent(_Event):
    event: Literal[EventKind.DPC]
    port: Id


class DpcReleaseEvent(_Event):
    event: Literal[EventKind.DPC_RELEASE]
    port: Id


class D3ColdEvent(_Event):
    event: Literal[EventKind.D3COLD]
    device: Id


class D3ColdExitEvent(_Event):
    event: Literal[EventKind.D3COLD_EXIT]
    device: Id


class FlrEvent(_Event):
    event: Literal[EventKind.FLR]
    device: Id
    function: Annotated[int, Field(strict=True, ge=0, le=255)] = 0


class HotResetEvent(_Event):
    event: Literal[EventKind.HOT_RESET]
    port: Id


class LinkDownEvent(_Event):
    event: Literal[EventKind.LINK_DOWN]
    port: Id


class LinkUpEvent(_Event):
    event: Literal[EventKind.LINK_UP]
    port: Id


class KeyRefreshEvent(_Event):
    event: Literal[EventKind.KEY_REFRESH]
    device: Id


class FirmwareUpdateEvent(_Event):
    event: Literal[EventKind.FIRMWARE_UPDATE]
    device: Id
    version: Text


class SecondRequesterEvent(_Event):
    """Another requester sends GET_VERSION to the device, resetting its SPDM state."""

    event: Literal[EventKind.SECOND_REQUESTER]
    device: Id


class DoeAbortEvent(_Event):
    event: Literal[EventKind.DOE_ABORT]
    device: Id


class DropDoeEvent(_Event):
    event: Literal[EventKind.DROP_DOE]
    device: Id
    count: Count = 1


class CorruptDoeEvent(_Event):
    event: Literal[EventKind.CORRUPT_DOE]
    device: Id
    count: Count = 1


class AdversaryEvent(_Event):
    """From the trigger on, ``component`` acts against the protocol with ``strategy``."""

    event: Literal[EventKind.ADVERSARY]
    component: AdversaryComponent
    strategy: AdversaryStrategy
    device: Id | None = None
    """Limit the adversary to one device's traffic (default: every device)."""


Event = Annotated[
    BootEvent | AssignEvent | DmaEvent | MmioEvent | DpcEvent | DpcReleaseEvent | D3ColdEvent | D3ColdExitEvent
    | FlrEvent | HotResetEvent | LinkDownEvent | LinkUpEvent | KeyRefreshEvent | FirmwareUpdateEvent
    | SecondRequesterEvent | DoeAbortEvent | DropDoeEvent | CorruptDoeEvent | AdversaryEvent,
    Field(discriminator="event"),
]


# --- expectations ---------------------------------------------------------------------------------


class _Expectation(_Model):
    at: When = "end"
    """When to check: 'end' (after the run) or a simulated time."""
    models: ModelFilter | None = None
    """Only under these trust models (default: all the scenario runs)."""

    @property
    def kind(self) -> ExpectKind:
        return ExpectKind(getattr(self, "expect"))  # noqa: B009 - every subclass defines it


class TdiStateExpectation(_Expectation):
    expect: Literal[ExpectKind.TDI_STATE]
    device: Id
    tdi: Id
    state: TdiStateName


class StreamStateExpectation(_Expectation):
    """The IDE stream of a device, or of every device behind a port."""

    expect: Literal[ExpectKind.STREAM_STATE]
    device: Id | None = None
    port: Id | None = None
    state: StreamState

    @model_validator(mode="after")
    def _one_target(self) -> StreamStateExpectation:
        if (self.device is None) == (self.port is None):
            raise PydanticCustomError("target", "stream_state names exactly one of 'device' or 'port'")
        return self


class AttestationExpectation(_Expectation):
    expect: Literal[ExpectKind.ATTESTATION]
    device: Id
    by: Verifier
    guest: Id | None = None
    """With ``by: guest``: which guest (default: the one guest that lists the device)."""
    outcome: AttestationOutcome
    reason: FailureReason | None = None
    """With ``outcome: failed``: the failure reason the verifier must report."""

    @model_validator(mode="after")
    def _consistent(self) -> AttestationExpectation:
        if self.reason is not None and self.outcome is AttestationOutcome.OK:
            raise PydanticCustomError("attestation", "'reason' only goes with outcome: failed")
        if self.guest is not None and self.by is not Verifier.GUEST:
            raise PydanticCustomError("attestation", "'guest' only goes with by: guest")
        return self


class ExposureExpectation(_Expectation):
    """``component`` had at most ``at_most`` of any secret of class ``secret``."""

    expect: Literal[ExpectKind.EXPOSURE]
    component: ExposureComponent
    secret: SecretClass
    at_most: ExposureLimit


class LatencyExpectation(_Expectation):
    expect: Literal[ExpectKind.LATENCY]
    metric: LatencyMetric
    device: Id | None = None
    max: Duration


class TraceDigestExpectation(_Expectation):
    """The run's trace digest under ``model`` (pins byte-identical behaviour)."""

    expect: Literal[ExpectKind.TRACE_DIGEST]
    model: TrustModel
    sha256: Annotated[str, StringConstraints(strict=True, pattern=SHA256_HEX_PATTERN, to_lower=True)]


Expectation = Annotated[
    TdiStateExpectation | StreamStateExpectation | AttestationExpectation | ExposureExpectation
    | LatencyExpectation | TraceDigestExpectation,
    Field(discriminator="expect"),
]


# --- the scenario ---------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


class Scenario(_Model):
    """One scenario file: what to build, what happens, and what must hold."""

    name: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]
    description: Text = ""
    seed: Annotated[int, Field(strict=True)]
    """Every key, nonce and identity derives from it: same seed, same bytes."""
    models: Annotated[list[TrustModel], Field(min_length=1)] = list(TrustModel)
    """Trust models to run the scenario under (default: all four)."""
    fat_reconnect: FatReconnectMode = FatReconnectMode.NONE
    """Fat model: whether the host reconnects (and re-binds) a device after a reset (default: none)."""
    platform: Platform
    guests: list[Guest] = []
    timing: TimingOverrides = {}
    """Cost overrides: {component class: {operation: duration}}, names as in sim.engine.timing."""
    timeline: list[Event] = []
    expect: list[Expectation] = []

    _unique_models = field_validator("models")(lambda v: _unique(v, "trust model"))

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Scenario:
        problems = reference_problems(self)
        context = info.context if isinstance(info.context, dict) else {}
        sink = context.get("reference_problems")
        if isinstance(sink, list):
            sink.extend(problems)
        elif problems:
            listing = "; ".join(f"{format_loc(loc)}: {msg}" for loc, msg in problems)
            raise PydanticCustomError("reference", "{listing}", {"listing": listing})
        return self

    def device(self, device_id: str) -> Device:
        return next(d for d in self.platform.devices if d.id == device_id)

    def guest(self, guest_id: str) -> Guest:
        return next(g for g in self.guests if g.id == guest_id)


def format_loc(loc: Iterable[str | int]) -> str:
    """``platform.devices[0].port`` from ``("platform", "devices", 0, "port")``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _duplicates(items: Iterable[tuple[Loc, str]], what: str) -> Iterator[tuple[Loc, str]]:
    seen: dict[str, Loc] = {}
    for loc, ident in items:
        if ident in seen:
            yield loc, f"duplicate {what} id '{ident}' (expected unique, first used at {format_loc(seen[ident])})"
        else:
            seen[ident] = loc


def _missing(kind: str, name: str, known: Iterable[str]) -> str:
    names = sorted(known)
    return f"unknown {kind} '{name}' (expected one of: {', '.join(names)})" if names else \
        f"unknown {kind} '{name}' (no {kind}s are defined)"


def reference_problems(s: Scenario) -> list[tuple[Loc, str]]:
    """Every dangling or duplicate reference, with the location of the offending value."""
    problems: list[tuple[Loc, str]] = []
    ports = {p.id for p in s.platform.root_ports}
    devices: dict[str, Device] = {}  # the first of duplicate ids counts; the others are reported below
    for d in s.platform.devices:
        devices.setdefault(d.id, d)
    guests: dict[str, Guest] = {}
    for g in s.guests:
        guests.setdefault(g.id, g)
    models = set(s.models)

    problems += _duplicates(((("platform", "root_ports", i, "id"), p.id) for i, p in enumerate(s.platform.root_ports)),
                            "root port")
    problems += _duplicates(((("platform", "devices", i, "id"), d.id) for i, d in enumerate(s.platform.devices)),
                            "device")
    problems += _duplicates(((("guests", i, "id"), g.id) for i, g in enumerate(s.guests)), "guest")
    for i, g in enumerate(s.guests):
        if g.id == HOST:
            problems.append((("guests", i, "id"), f"'{HOST}' is reserved for the host kernel (expected another id)"))

    def need(loc: Loc, kind: str, name: str | None, known: Iterable[str]) -> None:
        if name is not None and name not in known:
            problems.append((loc, _missing(kind, name, known)))

    def need_tdi(loc: Loc, device: str, tdi: str | None) -> None:
        known = sorted(t.id for t in devices[device].tdis) if device in devices else []
        if tdi is not None and device in devices and tdi not in known:
            problems.append((loc, f"device '{device}' has no TDI '{tdi}' (expected one of: {', '.join(known)})"
                             if known else f"device '{device}' has no TDI '{tdi}' (it defines no tdis)"))

    def need_models(loc: Loc, subset: list[TrustModel] | None) -> None:
        for j, m in enumerate(subset or []):
            if m not in models:
                problems.append(((*loc, j), f"trust model '{m}' is not run by this scenario (expected one of: "
                                            f"{', '.join(s.models)})"))

    taken: dict[str, str] = {}  # root port -> the device behind it (a Root Port has one link, one endpoint)
    for i, d in enumerate(s.platform.devices):
        base: Loc = ("platform", "devices", i)
        need((*base, "port"), "root port", d.port, ports)
        if d.port in taken and taken[d.port] != d.id:
            problems.append(((*base, "port"), f"root port '{d.port}' already has device '{taken[d.port]}' behind it "
                                              f"(expected a root port with no device; one endpoint per Root Port)"))
        taken.setdefault(d.port, d.id)
        problems += _duplicates((((*base, "tdis", j, "id"), t.id) for j, t in enumerate(d.tdis)), f"TDI ({d.id})")
        if d.owner != HOST:
            if d.owner not in guests:
                problems.append(((*base, "owner"), f"unknown owner '{d.owner}' (expected '{HOST}' or a guest id: "
                                                   f"{', '.join(sorted(guests)) or 'none defined'})"))
            elif d.id not in guests[d.owner].devices:
                problems.append(((*base, "owner"), f"guest '{d.owner}' does not list '{d.id}' in its devices "
                                                   f"(expected it there, or owner: {HOST})"))

    for i, g in enumerate(s.guests):
        for j, dev in enumerate(g.devices):
            need(("guests", i, "devices", j), "device", dev, devices)
        for dev in g.policy.expected_measurements:
            if dev not in g.devices:
                problems.append((("guests", i, "policy", "expected_measurements", dev),
                                 f"device '{dev}' is not one of this guest's devices (expected one of: "
                                 f"{', '.join(g.devices) or 'none'})"))
        for j, rep in enumerate(g.policy.expected_reports):
            loc: Loc = ("guests", i, "policy", "expected_reports", j)
            if rep.device not in g.devices:
                problems.append(((*loc, "device"), f"device '{rep.device}' is not one of this guest's devices "
                                                   f"(expected one of: {', '.join(g.devices) or 'none'})"))
            need_tdi((*loc, "tdi"), rep.device, rep.tdi)

    for i, ev in enumerate(s.timeline):
        loc = ("timeline", i)
        device = getattr(ev, "device", None)
        need((*loc, "device"), "device", device, devices)
        need((*loc, "port"), "root port", getattr(ev, "port", None), ports)
        need((*loc, "guest"), "guest", getattr(ev, "guest", None), guests)
        for name in ("during", "after"):
            trig = getattr(ev, name)
            if trig is not None:
                need((*loc, name, "device"), "device", trig.device, devices)
        need_models((*loc, "models"), ev.models)
        if isinstance(ev, MmioEvent):
            need_tdi((*loc, "tdi"), ev.device, ev.tdi)
        if isinstance(ev, AssignEvent) and ev.guest in guests and ev.device in devices \
                and ev.device not in guests[ev.guest].devices:
            problems.append(((*loc, "device"), f"guest '{ev.guest}' does not list '{ev.device}' in its devices "
                                               "(expected it there before it can be assigned)"))
        if isinstance(ev, FlrEvent) and ev.device in devices and ev.function != 0:
            functions = sorted({t.function for t in devices[ev.device].tdis} | {0})
            if ev.function not in functions:
                problems.append(((*loc, "function"), f"device '{ev.device}' has no function {ev.function} "
                                                     f"(expected one of: {', '.join(map(str, functions))})"))

    for i, ex in enumerate(s.expect):
        loc = ("expect", i)
        device = getattr(ex, "device", None)
        need((*loc, "device"), "device", device, devices)
        need((*loc, "port"), "root port", getattr(ex, "port", None), ports)
        need_models((*loc, "models"), ex.models)
        if isinstance(ex, TdiStateExpectation):
            need_tdi((*loc, "tdi"), ex.device, ex.tdi)
        if isinstance(ex, TraceDigestExpectation) and ex.model not in models:
            problems.append(((*loc, "model"), f"trust model '{ex.model}' is not run by this scenario (expected "
                                              f"one of: {', '.join(s.models)})"))
        if isinstance(ex, AttestationExpectation) and ex.by is Verifier.GUEST and ex.device in devices:
            holders = [g.id for g in s.guests if ex.device in g.devices]
            if ex.guest is not None:
                need((*loc, "guest"), "guest", ex.guest, guests)
                if ex.guest in guests and ex.guest not in holders:
                    problems.append(((*loc, "guest"), f"guest '{ex.guest}' does not list '{ex.device}' in its "
                                                      "devices"))
            elif len(holders) != 1:
                problems.append(((*loc, "by"), f"by: guest needs 'guest:' here: {len(holders)} guests list "
                                               f"'{ex.device}' (expected exactly one)"))
    return problems


def attesting_guest(scenario: Scenario, expectation: AttestationExpectation) -> str | None:
    """The guest an attestation expectation with ``by: guest`` refers to (explicit or the only holder)."""
    if expectation.by is not Verifier.GUEST:
        return None
    if expectation.guest is not None:
        return expectation.guest
    return next(g.id for g in scenario.guests if expectation.device in g.devices)
