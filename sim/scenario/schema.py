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
    AfterValidator,
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
from sim.protocols.spdm.profile import DeviceMeasurements
from sim.protocols.tsm import Phase  # noqa: F401  (milestones are the securing flow's phases)
from sim.scenario.platform import PORT_WINDOW_SIZE, layout_bars
from sim.wire.tdisp import TdiState

# --- closed sets --------------------------------------------------------------------------------


class TrustModel(enum.StrEnum):
    """A trust model: who attests and keys a device. fat: a firmware TSM does SPDM, IDE_KM and TDISP for
    every device; thin-host: the host kernel attests and keys every device, a firmware key-slot service
    writes the Root Port's key slots; thin-guest: as thin-host for the devices the host keeps, while a
    confidential guest attests, keys and locks the devices assigned to it; thin-vmm: as thin-guest without
    the firmware service, so the VMM writes the Root Port's key slots for the guest."""

    FAT = "fat"                # a firmware TSM does SPDM, IDE_KM and TDISP
    THIN_HOST = "thin-host"    # thin key-slot firmware; the host kernel attests and keys every device
    THIN_GUEST = "thin-guest"  # thin key-slot firmware; a confidential guest attests and keys its devices
    THIN_VMM = "thin-vmm"      # no firmware service: the VMM writes the Root Port key slots for the guest


class FatReconnectMode(enum.StrEnum):
    """Fat model only: who reconnects a device the firmware TSM lost to a reset. none: nobody (as in the
    merged kernel code), the device stays unconnected; host-initiated: after its recovery the host issues a
    new connect and re-binds the TDIs that were bound."""

    NONE = "none"                      # as merged upstream: nobody; the device stays unconnected
    HOST_INITIATED = "host-initiated"  # the host re-issues DEV_CONNECT and re-binds the guests' TDIs


class SpdmProfileName(enum.StrEnum):
    """A device's SPDM responder profile. default-p384: SPDM 1.0-1.3, ECDSA P-384, SHA-384 (48-byte
    measurement digests); default-p384-clear: the same with the handshake in the clear; p256: SPDM 1.0-1.3,
    ECDSA P-256, SHA-256 (32-byte measurement digests)."""

    DEFAULT_P384 = "default-p384"
    DEFAULT_P384_CLEAR = "default-p384-clear"
    P256 = "p256"

    @property
    def digest_size(self) -> int:
        """Bytes of a measurement digest under this profile's measurement hash."""
        return 32 if self is SpdmProfileName.P256 else 48


class EventKind(enum.StrEnum):
    """What a timeline entry does (its `event:` key)."""

    BOOT = "boot"
    ASSIGN = "assign"
    DMA = "dma"
    MMIO = "mmio"
    DPC = "dpc"
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
    """Seen from the device: a DMA write stores deterministic data into its owner's memory (posted MWr TLPs);
    a DMA read fetches it (MRd TLPs, at most 32 outstanding, each failing after a 50 ms completion timeout),
    after the owner has placed that data there."""

    READ = "read"
    WRITE = "write"


class AdversaryComponent(enum.StrEnum):
    """A component an adversary event can compromise: the device's security manager, the fat firmware TSM,
    the thin key-slot service, the host kernel, the VMM, an interposer on the link, or a second device on
    the Root Port."""

    DEVICE_DSM = "device-dsm"
    FAT_TSM = "fat-tsm"
    THIN_KEYSLOT = "thin-keyslot"
    HOST_KERNEL = "host-kernel"
    VMM = "vmm"
    LINK_INTERPOSER = "link-interposer"
    SECOND_DEVICE = "second-device"


class AdversaryStrategy(enum.StrEnum):
    """What a compromised component does from then on (sim/adversary/strategies.py lists what each
    strategy means for each component, and the pairs that do not apply)."""

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
    """What an expectation checks (its `expect:` key)."""

    TDI_STATE = "tdi_state"
    STREAM_STATE = "stream_state"
    ATTESTATION = "attestation"
    EXPOSURE = "exposure"
    LATENCY = "latency"
    TRACE_DIGEST = "trace_digest"


class TdiStateName(enum.StrEnum):
    """A TDISP interface (TDI) state by name; a TDI starts in CONFIG_UNLOCKED."""

    CONFIG_UNLOCKED = "CONFIG_UNLOCKED"
    CONFIG_LOCKED = "CONFIG_LOCKED"
    RUN = "RUN"
    ERROR = "ERROR"

    def wire(self) -> TdiState:
        return TdiState[self.value]


class StreamState(enum.StrEnum):
    """A device's IDE stream state: secure only while both the Root Port and the endpoint report the
    stream Secure; a stream starts insecure."""

    SECURE = "secure"
    INSECURE = "insecure"


class Verifier(enum.StrEnum):
    """Who judged a device's evidence: the fat firmware TSM, the host kernel, or a guest (thin-guest and
    thin-vmm: the guest's own attestation; fat: its acceptance of the TSM's report)."""

    FAT_TSM = "fat-tsm"
    HOST_KERNEL = "host-kernel"
    GUEST = "guest"


class AttestationOutcome(enum.StrEnum):
    """A verifier's verdict on a device."""

    OK = "ok"
    FAILED = "failed"


class ExposureComponent(enum.StrEnum):
    """A role whose view of secrets the exposure tracker measures; every component playing the role in a
    run counts (several devices' DSMs, several guests)."""

    DEVICE_DSM = "device-dsm"
    ROOT_PORT = "root-port"
    LINK = "link"
    FAT_TSM = "fat-tsm"
    THIN_KEYSLOT = "thin-keyslot"
    HOST_KERNEL = "host-kernel"
    VMM = "vmm"
    GUEST = "guest"


class ExposureLimit(enum.StrEnum):
    """How much of a secret a component had, in increasing order: never (no bytes of it), ciphertext (only
    encrypted), plaintext (saw it in the clear), generated (created it)."""

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
    """A latency measured in the run, in ns. time_to_secure and fleet_time_to_secure: from boot until the
    stream is first secure (the largest over the devices considered); recovery: from each fault (dpc, flr,
    d3cold, hot_reset, link_down, second_requester) until the device is back as it was just before it;
    insecure_window: total time the stream was insecure after it first became secure."""

    TIME_TO_SECURE = "time_to_secure"              # boot -> stream first secure
    RECOVERY = "recovery"                          # a fault -> stream (and running TDIs) as before it again
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


def format_duration(ns: int) -> str:
    """``ns`` as a scenario file would write it: the largest unit that keeps it short ("1s", "1.5ms", "250ns"),
    so a bound read back to its author matches what they wrote rather than a count of nanoseconds."""
    for unit in ("s", "ms", "us"):
        if ns < _NS_PER_UNIT[unit]:
            continue
        value = Decimal(ns) / _NS_PER_UNIT[unit]
        if value == value.to_integral_value() or 1 <= value < 1000 and value == value.quantize(Decimal("0.001")):
            return f"{value.normalize():f}{unit}"
    return f"{ns}ns"


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
DMA_MAX_BYTES = 16 << 20
"""Largest DMA event: the run moves one TLP per 256 B, so 16 MiB is already 65536 TLPs."""


def _dma_size(value: int) -> int:
    """Refuse a DMA the run would take too long to simulate (a 16 MiB read already takes about a minute)."""
    if value > DMA_MAX_BYTES:
        raise PydanticCustomError("size", "DMA too large: the run moves one TLP per 256 B (expected at most 16MiB "
                                  "= {most} bytes, got {got} bytes)", {"most": DMA_MAX_BYTES, "got": value})
    return value


DmaSize = Annotated[ByteSize, AfterValidator(_dma_size), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 1, "maximum": DMA_MAX_BYTES},
              {"type": "string", "pattern": SIZE_PATTERN,
               "description": "a number with a unit: B, KiB, MiB, GiB (at most 16MiB)"}]
})]
"""Bytes of one DMA event, 1 B to 16 MiB; in YAML an integer or a string with a unit ("64KiB")."""
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
    """A Root Port with its pool of selective IDE streams and optional DPC; at most one device sits behind it."""

    id: Id
    """Unique Root Port id, referenced by devices and by port events and expectations."""
    ide_streams: Annotated[int, Field(strict=True, ge=1, le=256)] = 4
    """How many selective IDE streams (and key-slot sets) the port offers."""
    dpc: Annotated[bool, Field(strict=True)] = True
    """Whether the port implements Downstream Port Containment."""
    link_latency: Duration | None = None
    """Latency of one hop on the link below this port: integer ns or a duration string such as '400ns'
    (default: the timing model's hardware link-hop cost, 250 ns unless timing overrides it)."""


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
    """A device's identity: either a certificate chain derived from the seed under a named CA ({ca: NAME})
    or files ({cert_chain: FILE, key: FILE}); not both."""

    ca: Id | None = None
    """Name of the CA hierarchy; devices with the same ca share root and intermediate."""
    cert_chain: FilePath | None = None
    """A certificate chain file (PEM or concatenated DER), root first; a relative path is relative to the
    scenario file's folder. Goes with key."""
    key: FilePath | None = None
    """The leaf's private key file (unencrypted PEM or DER); a relative path is relative to the scenario file's
    folder. Goes with cert_chain."""

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
    """What the device measures: the firmware version it runs (and explicit digests, see digests)."""

    firmware: Text = "1.0.0"
    """Firmware version; the firmware digest (index 2) and version string (index 5) derive from it."""
    digests: dict[MeasurementIndex, HexDigest] = {}
    """Digests the device reports instead of measuring, by index, in hex, sized for the profile's hash:
    1 immutable ROM, 2 mutable firmware, 3 hardware config, 4 firmware config (the indices it reports as
    digests). An explicit index 2 stands until a firmware_update event measures the new firmware."""


MMIO_PAGE = 4096
"""Bytes of one MMIO page (a range's `pages` unit)."""
MMIO_MAX_PAGES = PORT_WINDOW_SIZE // MMIO_PAGE
"""The most pages one range can have: the whole of a Root Port's memory window (16 MiB)."""
DEFAULT_MMIO_PAGES = 4
"""Pages of the range a function gets when no TDI gives it one (16 KiB in BAR 0, as the platform builds it)."""
MMIO_MAX_BAR = 4
"""The highest BAR index a range can use: a 64-bit BAR takes its slot and the next, of slots 0-5."""
_PAGE_COUNTS = [1 << n for n in range(MMIO_MAX_PAGES.bit_length())]


def _bar_index(value: int) -> int:
    """Every range is a 64-bit BAR, two of a function's six slots: BAR 5 has no slot above it."""
    if value > MMIO_MAX_BAR:
        raise PydanticCustomError("bar", "BAR {got} cannot be a 64-bit BAR: it takes slots {got} and {above}, and a "
                                  "function has slots 0-5 (expected 0-{most})",
                                  {"got": value, "above": value + 1, "most": MMIO_MAX_BAR})
    return value


def _bar_pages(value: int) -> int:
    """A range becomes one BAR, whose size must be a power of two that fits the port's window."""
    if value & (value - 1) or value > MMIO_MAX_PAGES:
        raise PydanticCustomError("pages", "bad page count: a BAR's size is a power of two and at most the Root "
                                  "Port's 16 MiB window (expected one of 1, 2, 4, ... {most}, got {got})",
                                  {"most": MMIO_MAX_PAGES, "got": value})
    return value


class MmioRange(_Model):
    """One MMIO range of a TDI: a 64-bit memory BAR of its function and its size. A 64-bit BAR takes two
    slots of the function's six (bar and bar + 1), so BARs of one function are at least 2 apart (0, 2, 4)."""

    bar: Annotated[int, Field(strict=True, ge=0), AfterValidator(_bar_index),
                   WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MMIO_MAX_BAR})]
    """BAR index, 0-4: a 64-bit BAR takes slots bar and bar + 1 (of 0-5), so BARs of one function are at least 2
    apart, such as 0, 2 and 4."""
    pages: Annotated[int, Field(strict=True, ge=1), AfterValidator(_bar_pages),
                     WithJsonSchema({"type": "integer", "enum": _PAGE_COUNTS})]
    """Size in 4 KiB pages: a power of two, 1 to 4096 (16 MiB, a Root Port's whole window)."""


class ReportRangeAttribute(enum.StrEnum):
    """MMIO_RANGE attributes of a TDI report range (TDISP §11.3.11)."""

    MSIX_TABLE = "msix_table"
    MSIX_PBA = "msix_pba"
    NON_TEE_MEM = "non_tee_mem"
    MEM_ATTR_UPDATABLE = "mem_attr_updatable"


class ReportFlag(enum.StrEnum):
    """INTERFACE_INFO bits of a TDI report that the device states (NO_FW_UPDATE follows the LOCK request)."""

    DMA_WITHOUT_PASID = "dma_without_pasid"
    DMA_WITH_PASID = "dma_with_pasid"
    ATS = "ats"
    PRS = "prs"


U16 = Annotated[int, Field(strict=True, ge=0, le=0xFFFF)]


class ReportRange(_Model):
    """One MMIO range of a TDI's interface report: a part of one of the TDI's BARs. Its address in the report is
    the BAR's base when the TDI is locked, plus `offset` (plus the TSM's reporting offset)."""

    bar: Annotated[int, Field(strict=True, ge=0, le=MMIO_MAX_BAR)]
    """The BAR, one of the TDI's `mmio` ranges (BAR 0 when the TDI has none)."""
    offset: Annotated[int, Field(strict=True, ge=0)] = 0
    """Bytes from the BAR's base, a multiple of 4096."""
    size: Annotated[int, Field(strict=True, ge=MMIO_PAGE)]
    """Bytes, a multiple of 4096; offset + size must stay inside the BAR."""
    attributes: list[ReportRangeAttribute] = []
    """MSI-X table / PBA, non-TEE memory, memory attributes updatable."""
    range_id: U16 | None = None
    """RANGE_ID in the report (default: the BAR index)."""


class InterfaceReport(_Model):
    """What the TDI's DEVICE_INTERFACE_REPORT says, when it must match a real device (such as the QEMU device in
    front of `tiosim serve-device`). Without it the report lists each BAR whole."""

    mmio: list[ReportRange] = []
    """The ranges in report order; they must not overlap."""
    flags: list[ReportFlag] = [ReportFlag.DMA_WITHOUT_PASID]
    """INTERFACE_INFO bits (default: DMA without PASID)."""
    msi_x_message_control: U16 = 0
    """MSI-X Message Control reported under LOCK_MSIX (needs an msix_table range when nonzero)."""
    lnr_control: U16 = 0
    """LNR control register value."""
    tph_control: U16 = 0
    """TPH control register value, reported under LOCK_MSIX."""
    device_specific_info: Annotated[str, StringConstraints(strict=True, pattern=r"^([0-9a-fA-F]{2})*$")] = ""
    """Device-specific bytes at the end of the report, in hex."""


class Tdi(_Model):
    """A TDISP interface (TDI): one function of the device and the MMIO it owns. When a device is assigned
    to a guest (fat, thin-guest, thin-vmm), the TDI of function 0 is locked and started; TDIs of other
    functions stay unlocked."""

    id: Id
    """TDI id, unique within the device; referenced by tdi_state expectations and expected_reports."""
    function: Annotated[int, Field(strict=True, ge=0, le=7)] = 0
    """The PCIe function of the device that this TDI is, 0-7 (one TDI per function; the device has functions 0
    up to the highest named, each without a TDI getting one 16 KiB BAR)."""
    mmio: list[MmioRange] = []
    """The TDI's MMIO ranges (default when empty: one 16 KiB range in BAR 0). With those of the device's other
    functions they must fit the Root Port's 16 MiB memory window, each BAR aligned to its size."""
    report: InterfaceReport | None = None
    """The TDI's interface report layout (default: every BAR whole, DMA without PASID)."""


class Device(_Model):
    """An endpoint with a device security manager (DSM: the SPDM responder, IDE_KM and TDISP), behind one
    Root Port."""

    id: Id
    """Unique device id, referenced by guests, events and expectations."""
    port: Id
    """The Root Port the device sits behind."""
    profile: SpdmProfileName = SpdmProfileName.DEFAULT_P384
    """SPDM responder profile: versions, algorithms and the measurement digest size."""
    identity: Identity = Identity(ca="default")
    """The device's certificate chain and key (default: derived from the seed under the CA named 'default')."""
    measurements: Measurements = Measurements()
    """What the device reports in SPDM MEASUREMENTS."""
    tdis: list[Tdi] = []
    """TDISP interfaces (default when empty: one TDI on function 0 that the scenario cannot name)."""
    owner: Id = HOST
    """'host' (the host kernel keeps it) or the id of the guest it is assigned to at boot."""

    @model_validator(mode="after")
    def _digest_sizes(self) -> Device:
        indices = DeviceMeasurements().digest_indices()
        unknown = sorted(set(self.measurements.digests) - set(indices))
        if unknown:
            raise PydanticCustomError(
                "digest_index", "measurement index {index} is not one the device reports as a digest (those are "
                "{indices})", {"index": unknown[0], "indices": ", ".join(map(str, indices))})
        size = self.profile.digest_size
        bad = [i for i, d in self.measurements.digests.items() if len(d) != 2 * size]
        if bad:
            raise PydanticCustomError(
                "digest_size", "measurement digest {index} has the wrong size for profile {profile} (expected "
                "{size} bytes = {hex} hex digits)",
                {"index": bad[0], "profile": str(self.profile), "size": size, "hex": 2 * size})
        return self


class Platform(_Model):
    """The hardware: Root Ports and the devices behind them."""

    root_ports: Annotated[list[RootPort], Field(min_length=1)]
    """At least one Root Port."""
    devices: list[Device] = []
    """Endpoints, each behind its own Root Port."""


# --- guests ---------------------------------------------------------------------------------------


class TrustedRoot(_Model):
    """A root certificate the guest trusts: a CA derived from the seed ({ca: NAME}) or a file ({file: PATH});
    exactly one."""

    ca: Id | None = None
    """Name of a CA, as in a device's identity.ca."""
    file: FilePath | None = None
    """A certificate file (PEM or DER); a relative path is relative to the scenario file's folder."""

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
    """Expected firmware version: the firmware digest (index 2) this device reports when running it."""
    digests: dict[MeasurementIndex, HexDigest] = {}
    """Expected digests by measurement index (1..254), in hex."""

    @model_validator(mode="after")
    def _something(self) -> ExpectedMeasurements:
        if self.firmware is None and not self.digests:
            raise PydanticCustomError("expected_measurements", "give 'firmware' or 'digests' (or both)")
        return self


class ExpectedReport(_Model):
    """TDISP interface-report fields the guest requires before it accepts one TDI, the one named by `device`
    and `tdi`; the guest's other TDIs and devices are judged without it. An omitted field is not checked.
    Entries naming the same TDI combine field by field; entries that contradict each other (a field true in
    one and false in another, or `mmio` lists of different lengths) are rejected."""

    device: Id
    """A device of this guest."""
    tdi: Id
    """A TDI of that device."""
    no_fw_update: Annotated[bool, Field(strict=True)] | None = None
    """Required value of the report's NO_FW_UPDATE bit (firmware updates refused while locked)."""
    dma_without_pasid: Annotated[bool, Field(strict=True)] | None = None
    """Required value of the report's DMA-without-PASID bit."""
    dma_with_pasid: Annotated[bool, Field(strict=True)] | None = None
    """Required value of the report's DMA-with-PASID bit."""
    ats: Annotated[bool, Field(strict=True)] | None = None
    """Required value of the report's ATS-enabled bit."""
    prs: Annotated[bool, Field(strict=True)] | None = None
    """Required value of the report's PRS-enabled bit."""
    mmio: list[MmioRange] | None = None
    """The report must list exactly this many MMIO ranges (only the count is compared)."""


class GuestPolicy(_Model):
    """How a guest judges the evidence of devices assigned to it."""

    trusted_roots: list[TrustedRoot] = [TrustedRoot(ca="default")]
    """Root certificates a device's chain must end in (default: the CA named 'default')."""
    expected_measurements: dict[Id, ExpectedMeasurements] = {}
    """Reference values by device id (a device of this guest); devices not listed are not compared."""
    expected_reports: list[ExpectedReport] = []
    """Interface-report fields required before a TDI is accepted, per TDI: each entry applies only to the TDI
    it names; a TDI no entry names has no interface-report requirement."""
    require_signed_measurements: Annotated[bool, Field(strict=True)] = True
    """Whether the device's measurements must come signed."""

    @model_validator(mode="after")
    def _reports_agree(self) -> GuestPolicy:
        seen: dict[tuple[str, str], list[tuple[int, ExpectedReport]]] = {}
        for j, rep in enumerate(self.expected_reports):
            for k, earlier in seen.get((rep.device, rep.tdi), []):
                for name in ("no_fw_update", "dma_without_pasid", "dma_with_pasid", "ats", "prs", "mmio"):
                    mine, theirs = getattr(rep, name), getattr(earlier, name)
                    if mine is None or theirs is None:
                        continue
                    if (len(mine) != len(theirs)) if name == "mmio" else (mine != theirs):
                        raise PydanticCustomError(
                            "report_conflict", "expected_reports[{j}].{field} contradicts expected_reports[{k}] "
                            "for device '{device}' TDI '{tdi}'", {"j": j, "field": name, "k": k,
                                                                   "device": rep.device, "tdi": rep.tdi})
            seen.setdefault((rep.device, rep.tdi), []).append((j, rep))
        return self


class Guest(_Model):
    """A confidential guest (TVM) and the devices it may be given."""

    id: Id
    """Unique guest id (not 'host'); a device's owner and events refer to it."""
    devices: list[Id] = []
    """Devices this guest accepts: assigned at boot (the device's owner) or by an assign event."""
    policy: GuestPolicy = GuestPolicy()
    """How the guest verifies its devices."""

    _unique_devices = field_validator("devices")(lambda v: _unique(v, "device"))


# --- timing ---------------------------------------------------------------------------------------

TimingOverrides = dict[ComponentClass, dict[Op, Duration]]


# --- timeline -------------------------------------------------------------------------------------


class During(_Model):
    """Trigger at the moment a device reaches a securing-flow milestone (the occurrence-th time)."""

    device: Id
    """The device whose milestone triggers the event."""
    phase: Phase
    """Milestone: a phase of the securing flow, reached as it starts: VCA, CERTIFICATE (first GET_DIGESTS or
    GET_CERTIFICATE), CHALLENGE, MEASUREMENTS (first GET_MEASUREMENTS), KEY_EXCHANGE, FINISH, KEY_PROG, K_SET_GO,
    and, for a device given to a guest (fat, thin-guest, thin-vmm), LOCK, REPORT, START, RUN. A phase the flow
    skips is not reached."""
    occurrence: Count = 1
    """Which time the device reaches the milestone, counted over the whole run (1 = the first)."""


class After(_Model):
    """Trigger a delay after a device reaches a securing-flow milestone (the occurrence-th time)."""

    device: Id
    """The device whose milestone triggers the event."""
    phase: Phase
    """Milestone: a phase of the securing flow, reached as it starts: VCA, CERTIFICATE (first GET_DIGESTS or
    GET_CERTIFICATE), CHALLENGE, MEASUREMENTS (first GET_MEASUREMENTS), KEY_EXCHANGE, FINISH, KEY_PROG, K_SET_GO,
    and, for a device given to a guest (fat, thin-guest, thin-vmm), LOCK, REPORT, START, RUN. A phase the flow
    skips is not reached."""
    occurrence: Count = 1
    """Which time the device reaches the milestone, counted over the whole run (1 = the first)."""
    delay: Duration = 0
    """Time from the milestone to the event: integer ns or a duration string such as '150ms'."""


class _Event(_Model):
    """Fields every event shares: exactly one trigger and an optional trust-model filter."""

    at: Duration | None = None
    """At this simulated time since the start of the run: integer ns or a duration string such as '5ms'."""
    during: During | None = None
    """At the moment a device reaches a securing-flow milestone."""
    after: After | None = None
    """A delay after a device reaches a securing-flow milestone."""
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
    """The platform boots: the host kernel starts and the devices are secured as the trust model says; devices
    owned by a guest are then assigned to it. Without a boot event, boot happens at 0."""

    event: Literal[EventKind.BOOT]
    """The event kind."""


class AssignEvent(_Event):
    """The VMM assigns a device to a guest, which then secures it (thin-guest, thin-vmm) or accepts the
    firmware's binding (fat); under thin-host the host keeps the device."""

    event: Literal[EventKind.ASSIGN]
    """The event kind."""
    device: Id
    """A device the guest lists in its devices."""
    guest: Id
    """The guest that receives the device."""


class DmaEvent(_Event):
    """The device moves deterministic data to or from its owner's memory (the guest's, or the host's) by DMA;
    the run records whether the data arrived intact."""

    event: Literal[EventKind.DMA]
    """The event kind."""
    device: Id
    """The device doing DMA."""
    bytes: DmaSize
    """Amount of data, at most 16 MiB: integer bytes or a string with a unit B, KiB, MiB or GiB, such as
    '64KiB'."""
    direction: DmaDirection = DmaDirection.WRITE
    """write: the device stores the data into the owner's memory. read: the owner places the data, then the
    device fetches it with Memory Reads. A read that gets no completion (refused, e.g. a non-TEE request to a
    guest's TEE memory; lost to a reset or link down) fails after the 50 ms completion timeout."""


class MmioEvent(_Event):
    """A guest writes 8 bytes at offset 0 of an MMIO range of the device: the first range of the named TDI
    (its function and BAR), or of the device's function-0 TDI when no TDI is named."""

    event: Literal[EventKind.MMIO]
    """The event kind."""
    device: Id
    """The device written to."""
    guest: Id
    """The guest doing the write."""
    tdi: Id | None = None
    """A TDI of the device: the write goes to its function, at the BAR of its first MMIO range (BAR 0 when it
    lists none)."""


class DpcEvent(_Event):
    """Software triggers Downstream Port Containment on a Root Port: the link goes down and the device
    behind it is reset. The host's DPC handling releases containment (clears Trigger Status, as Linux's
    dpc_reset_link does) and recovers the device; there is no separate release event."""

    event: Literal[EventKind.DPC]
    """The event kind."""
    port: Id
    """The Root Port."""


class D3ColdEvent(_Event):
    """The host puts a device into D3cold (power removed)."""

    event: Literal[EventKind.D3COLD]
    """The event kind."""
    device: Id
    """The device."""


class D3ColdExitEvent(_Event):
    """The host brings a device back from D3cold."""

    event: Literal[EventKind.D3COLD_EXIT]
    """The event kind."""
    device: Id
    """The device."""


class FlrEvent(_Event):
    """The host issues a Function Level Reset of one function of a device."""

    event: Literal[EventKind.FLR]
    """The event kind."""
    device: Id
    """The device."""
    function: Annotated[int, Field(strict=True, ge=0, le=7)] = 0
    """The function to reset, 0-7: 0 or the function of one of the device's TDIs."""


class HotResetEvent(_Event):
    """The host resets the device behind a Root Port."""

    event: Literal[EventKind.HOT_RESET]
    """The event kind."""
    port: Id
    """The Root Port."""


class LinkDownEvent(_Event):
    """The link below a Root Port goes down unexpectedly (surprise link down)."""

    event: Literal[EventKind.LINK_DOWN]
    """The event kind."""
    port: Id
    """The Root Port."""


class LinkUpEvent(_Event):
    """The link below a Root Port trains again."""

    event: Literal[EventKind.LINK_UP]
    """The event kind."""
    port: Id
    """The Root Port."""


class KeyRefreshEvent(_Event):
    """The device's owner programs the other IDE key set on both ends and switches the stream to it."""

    event: Literal[EventKind.KEY_REFRESH]
    """The event kind."""
    device: Id
    """The device."""


class FirmwareUpdateEvent(_Event):
    """The device now runs another firmware version: its firmware digest and version string change."""

    event: Literal[EventKind.FIRMWARE_UPDATE]
    """The event kind."""
    device: Id
    """The device."""
    version: Text
    """The new firmware version."""


class SecondRequesterEvent(_Event):
    """Another requester sends GET_VERSION to the device, resetting its SPDM state."""

    event: Literal[EventKind.SECOND_REQUESTER]
    """The event kind."""
    device: Id
    """The device."""


class DoeAbortEvent(_Event):
    """A DOE Abort on the device's mailbox: partial and pending objects are discarded."""

    event: Literal[EventKind.DOE_ABORT]
    """The event kind."""
    device: Id
    """The device."""


class DropDoeEvent(_Event):
    """The next DOE objects sent to the device's mailbox (count of them) are lost on their way in."""

    event: Literal[EventKind.DROP_DOE]
    """The event kind."""
    device: Id
    """The device."""
    count: Count = 1
    """How many objects are lost, one each, starting with the next (1 or more)."""


class CorruptDoeEvent(_Event):
    """One bit flips in each of the next DOE objects sent to the device's mailbox (count of them): payload
    byte 0 bit 0 in the first, the next bit in each following one."""

    event: Literal[EventKind.CORRUPT_DOE]
    """The event kind."""
    device: Id
    """The device."""
    count: Count = 1
    """How many objects are hit, one each, starting with the next (1 or more)."""


class AdversaryEvent(_Event):
    """From the trigger on, a component is compromised and acts against the protocol with a strategy. A pair
    that does not apply under a trust model is skipped, with a note in the result."""

    event: Literal[EventKind.ADVERSARY]
    """The event kind."""
    component: AdversaryComponent
    """The compromised component."""
    strategy: AdversaryStrategy
    """What it does."""
    device: Id | None = None
    """Limit the adversary to one device's traffic (default: every device)."""


Event = Annotated[
    BootEvent | AssignEvent | DmaEvent | MmioEvent | DpcEvent | D3ColdEvent | D3ColdExitEvent
    | FlrEvent | HotResetEvent | LinkDownEvent | LinkUpEvent | KeyRefreshEvent | FirmwareUpdateEvent
    | SecondRequesterEvent | DoeAbortEvent | DropDoeEvent | CorruptDoeEvent | AdversaryEvent,
    Field(discriminator="event"),
]


# --- expectations ---------------------------------------------------------------------------------


class _Expectation(_Model):
    at: When = "end"
    """When to check: 'end' (after the run) or a simulated time, as integer ns or a duration string such as
    '500ms'."""
    models: ModelFilter | None = None
    """Only under these trust models (default: all the scenario runs)."""

    @property
    def kind(self) -> ExpectKind:
        return ExpectKind(getattr(self, "expect"))  # noqa: B009 - every subclass defines it


class TdiStateExpectation(_Expectation):
    """A TDI is in a given TDISP state."""

    expect: Literal[ExpectKind.TDI_STATE]
    """The expectation kind."""
    device: Id
    """The device."""
    tdi: Id
    """One of the device's TDIs."""
    state: TdiStateName
    """The state it must be in."""


class StreamStateExpectation(_Expectation):
    """The IDE stream of a device, or of every device behind a Root Port, is in a given state."""

    expect: Literal[ExpectKind.STREAM_STATE]
    """The expectation kind."""
    device: Id | None = None
    """The device (give device or port, not both)."""
    port: Id | None = None
    """The Root Port (give device or port, not both)."""
    state: StreamState
    """The state the stream must be in."""

    @model_validator(mode="after")
    def _one_target(self) -> StreamStateExpectation:
        if (self.device is None) == (self.port is None):
            raise PydanticCustomError("target", "stream_state names exactly one of 'device' or 'port'")
        return self


class AttestationExpectation(_Expectation):
    """A verifier's latest verdict on a device (by the check's time) has a given outcome."""

    expect: Literal[ExpectKind.ATTESTATION]
    """The expectation kind."""
    device: Id
    """The device."""
    by: Verifier
    """Whose verdict."""
    guest: Id | None = None
    """With by: guest, which guest (default: the one guest that lists the device)."""
    outcome: AttestationOutcome
    """The verdict it must have."""
    reason: FailureReason | None = None
    """With outcome: failed, a failure reason the verdict must name."""

    @model_validator(mode="after")
    def _consistent(self) -> AttestationExpectation:
        if self.reason is not None and self.outcome is AttestationOutcome.OK:
            raise PydanticCustomError("attestation", "'reason' only goes with outcome: failed")
        if self.guest is not None and self.by is not Verifier.GUEST:
            raise PydanticCustomError("attestation", "'guest' only goes with by: guest")
        return self


class ExposureExpectation(_Expectation):
    """A component had at most a given exposure to every secret of a class."""

    expect: Literal[ExpectKind.EXPOSURE]
    """The expectation kind."""
    component: ExposureComponent
    """The component's role."""
    secret: SecretClass
    """The class of secret."""
    at_most: ExposureLimit
    """The most it may have had."""


class LatencyExpectation(_Expectation):
    """A latency measured in the run is at most a bound; a latency never reached fails."""

    expect: Literal[ExpectKind.LATENCY]
    """The expectation kind."""
    metric: LatencyMetric
    """What is measured."""
    device: Id | None = None
    """One device (default: every device, and the largest value counts)."""
    max: Duration
    """Upper bound: integer ns or a duration string such as '2s'."""


class TraceDigestExpectation(_Expectation):
    """The run's trace digest under one trust model (pins byte-identical behaviour); under other models it
    holds without being checked."""

    expect: Literal[ExpectKind.TRACE_DIGEST]
    """The expectation kind."""
    model: TrustModel
    """The trust model whose trace is pinned."""
    sha256: Annotated[str, StringConstraints(strict=True, pattern=SHA256_HEX_PATTERN, to_lower=True)]
    """The expected trace digest: SHA-256 in hex, as result.json reports it (trace_digest)."""


Expectation = Annotated[
    TdiStateExpectation | StreamStateExpectation | AttestationExpectation | ExposureExpectation
    | LatencyExpectation | TraceDigestExpectation,
    Field(discriminator="expect"),
]


# --- the scenario ---------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


class Scenario(_Model):
    """One tiosim scenario file: the platform to build, what happens on it, and what must hold, run under
    one or more trust models."""

    name: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]
    """The scenario's name (1-200 characters), as summaries and result.json show it."""
    description: Text = ""
    """Free text, up to 4000 characters."""
    seed: Annotated[int, Field(strict=True)]
    """Every key, nonce and identity derives from it: same seed, same bytes."""
    models: Annotated[list[TrustModel], Field(min_length=1)] = list(TrustModel)
    """Trust models to run the scenario under (default: all four)."""
    fat_reconnect: FatReconnectMode = FatReconnectMode.NONE
    """Fat model: whether the host reconnects (and re-binds) a device after a reset (default: none)."""
    platform: Platform
    """Root Ports and devices."""
    guests: list[Guest] = []
    """Confidential guests and their verification policies."""
    timing: TimingOverrides = {}
    """Cost overrides: {component class: {operation: cost}}, each cost in integer ns or a duration string such
    as '2ms' (per-KiB operations: the cost of 1 KiB). Other costs keep their defaults (sim/engine/timing.py)."""
    timeline: list[Event] = []
    """Events: what happens, when."""
    expect: list[Expectation] = []
    """What must hold; a run fails if any expectation does not."""

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


def _window_bytes(d: Device) -> int:
    """Bytes of its Root Port's memory window the device's BARs span, laid out by the platform builder's
    :func:`~sim.scenario.platform.layout_bars`. Functions below the highest TDI function that have no TDI,
    and TDIs without ranges, get one 16 KiB BAR 0."""
    default = [(0, DEFAULT_MMIO_PAGES * MMIO_PAGE)]
    bars: dict[int, list[tuple[int, int]]] = {}
    for t in d.tdis:
        bars.setdefault(t.function, []).extend([(r.bar, r.pages * MMIO_PAGE) for r in t.mmio] or default)
    return layout_bars([bars.get(f, default) for f in range(max(bars, default=0) + 1)])[1]


def _device_mmio_problems(base: Loc, d: Device) -> list[tuple[Loc, str]]:
    """What the platform builder would refuse in a device's TDIs: two TDIs on one function, 64-bit BARs whose
    slot pairs overlap, and BARs that do not fit the Root Port's memory window."""
    problems: list[tuple[Loc, str]] = []
    functions: dict[int, str] = {}
    for j, t in enumerate(d.tdis):
        if t.function in functions:
            problems.append(((*base, "tdis", j, "function"), f"function {t.function} already has TDI "
                             f"'{functions[t.function]}' (expected one TDI per function)"))
            continue
        functions[t.function] = t.id
        slots: dict[int, int] = {}  # slot -> the BAR that takes it
        for k, r in enumerate(t.mmio):
            taken = [slots[n] for n in (r.bar, r.bar + 1) if n in slots]
            if r.bar in taken:
                problems.append(((*base, "tdis", j, "mmio", k, "bar"), f"BAR {r.bar} of function {t.function} is "
                                 "given twice (expected each BAR once)"))
            elif taken:
                problems.append(((*base, "tdis", j, "mmio", k, "bar"),
                                 f"BAR {r.bar} overlaps BAR {taken[0]} of function {t.function}: each range is a "
                                 f"64-bit BAR taking two slots (BAR {taken[0]}: {taken[0]} and {taken[0] + 1}) "
                                 "(expected BARs at least 2 apart, such as 0, 2, 4)"))
            else:
                slots[r.bar] = slots[r.bar + 1] = r.bar
    if not problems and (need := _window_bytes(d)) > PORT_WINDOW_SIZE:
        problems.append(((*base, "tdis"), f"the MMIO of device '{d.id}' spans {need >> 10} KiB of its Root Port's "
                         f"memory window, each BAR aligned to its size and each function without a TDI taking "
                         f"{DEFAULT_MMIO_PAGES * MMIO_PAGE >> 10} KiB (expected at most "
                         f"{PORT_WINDOW_SIZE >> 20} MiB = {MMIO_MAX_PAGES} pages)"))
    return problems


def report_problems(base: Loc, d: Device) -> list[tuple[Loc, str]]:
    """A TDI report layout the device could not produce: ranges outside the TDI's BARs, unaligned, overlapping,
    or MSI-X control without a table."""
    problems: list[tuple[Loc, str]] = []
    for j, t in enumerate(d.tdis):
        if t.report is None:
            continue
        loc: Loc = (*base, "tdis", j, "report")
        bars = {r.bar: r.pages * MMIO_PAGE for r in t.mmio} or {0: DEFAULT_MMIO_PAGES * MMIO_PAGE}
        spans: list[tuple[int, int, int, int]] = []  # bar, start, end, index
        for k, r in enumerate(t.report.mmio):
            at: Loc = (*loc, "mmio", k)
            if r.bar not in bars:
                problems.append(((*at, "bar"), f"TDI '{t.id}' has no BAR {r.bar} (expected one of its mmio BARs: "
                                 f"{', '.join(map(str, sorted(bars)))})"))
                continue
            for name, value in (("offset", r.offset), ("size", r.size)):
                if value % MMIO_PAGE:
                    problems.append(((*at, name), f"{name} 0x{value:x} is not a multiple of 4096 (report ranges are "
                                     "4 KiB pages)"))
            if r.offset + r.size > bars[r.bar]:
                problems.append(((*at, "size"), f"offset 0x{r.offset:x} + size 0x{r.size:x} runs past the end of BAR "
                                 f"{r.bar} (0x{bars[r.bar]:x} bytes)"))
            for other_bar, start, end, other in spans:
                if other_bar == r.bar and r.offset < end and start < r.offset + r.size:
                    problems.append((at, f"range overlaps range {other} in BAR {r.bar} (expected disjoint ranges)"))
            spans.append((r.bar, r.offset, r.offset + r.size, k))
        for attr in (ReportRangeAttribute.MSIX_TABLE, ReportRangeAttribute.MSIX_PBA):
            marked = [k for k, r in enumerate(t.report.mmio) if attr in r.attributes]
            if len(marked) > 1:
                problems.append(((*loc, "mmio", marked[1], "attributes"),
                                 f"{attr} is already range {marked[0]} (expected at most one)"))
        if t.report.msi_x_message_control and not any(ReportRangeAttribute.MSIX_TABLE in r.attributes
                                                       for r in t.report.mmio):
            problems.append(((*loc, "msi_x_message_control"), "MSI-X message control is set but no range is the "
                             "msix_table (expected an mmio range with attributes: [msix_table])"))
    return problems


def reference_problems(s: Scenario) -> list[tuple[Loc, str]]:
    """Every dangling or duplicate reference, with the location of the offending value."""
    problems: list[tuple[Loc, str]] = []
    ports: dict[str, RootPort] = {}
    for p in s.platform.root_ports:
        ports.setdefault(p.id, p)
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
        problems += _device_mmio_problems(base, d)
        problems += report_problems(base, d)
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
            if ev.guest in guests and ev.device in devices and ev.device not in guests[ev.guest].devices:
                problems.append(((*loc, "device"), f"guest '{ev.guest}' does not list '{ev.device}' in its devices, "
                                                   "so it cannot reach its MMIO (expected one of: "
                                                   f"{', '.join(guests[ev.guest].devices) or 'none'})"))
        if isinstance(ev, AssignEvent) and ev.guest in guests and ev.device in devices:
            if ev.device not in guests[ev.guest].devices:
                problems.append(((*loc, "device"), f"guest '{ev.guest}' does not list '{ev.device}' in its devices "
                                                   "(expected it there before it can be assigned)"))
            elif devices[ev.device].owner == ev.guest:
                problems.append(((*loc, "device"), f"guest '{ev.guest}' already has '{ev.device}' from boot "
                                                   f"(its owner: {ev.guest}); assigning it again would break its "
                                                   f"running TDI (expected a device whose owner is not "
                                                   f"'{ev.guest}')"))
        if isinstance(ev, DpcEvent) and ev.port in ports and not ports[ev.port].dpc:
            problems.append(((*loc, "port"), f"port '{ev.port}' has no DPC (dpc: false) (expected a port with "
                                             "dpc: true; hot_reset or link_down reset a device without DPC)"))
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
        if isinstance(ex, StreamStateExpectation) and ex.port in ports and ex.port not in taken:
            problems.append(((*loc, "port"), f"root port '{ex.port}' has no device behind it, so it has no stream "
                                             "and any state would hold (expected a port with a device: "
                                             f"{', '.join(sorted(set(taken) & set(ports))) or 'none'})"))
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
