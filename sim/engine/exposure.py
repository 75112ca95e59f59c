"""Exposure tracking: which component saw which secret, measured from the bytes that moved.

Every secret the crypto layer creates is registered here (this class is the
:class:`sim.crypto.secrets.SecretSink`). From then on the tracker scans, by substring search:

* every traced payload (it subscribes to the trace bus): the two ends of the crossing and any
  observers have then seen the secret in plaintext;
* every value a component declares it keeps (:meth:`ExposureTracker.observe_stored`), e.g. a
  Root Port key slot or a device IDE engine register;

in each byte order a secret travels in: as is, byte-reversed, and reversed within each 4-byte
group (the IDE_KM KEY_PROG key/IFV order, PROTOCOLS.md §6.3).

Encrypted payloads are declared, not guessed: the sender of a secured record passes the record's
plaintext to the trace bus (``secured_plaintext``) or calls :meth:`observe_secured` /
:meth:`observe_ciphertext`; every secret inside it counts as SAW_CIPHERTEXT_ONLY for whoever
carried the record. A component's level only ever rises (NEVER < SAW_CIPHERTEXT_ONLY <
SAW_PLAINTEXT < GENERATED).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Iterable, Mapping

from sim.crypto.secrets import SecretClass, SecretRecord
from sim.engine.trace import TraceEvent

# Substring search on short values would report coincidences; every secret class the simulator
# registers is at least 8 bytes (IFVs) and usually 32 or more.
MIN_SCAN_LENGTH = 8
# Above this many byte variants, scanning switches from one `in` per variant to an 8-byte
# window index, whose cost grows with the payload size rather than the number of secrets.
_DIRECT_SCAN_LIMIT = 48


class Exposure(enum.IntEnum):
    """How much of a secret a component had; ordered, so max() merges observations."""

    NEVER = 0
    SAW_CIPHERTEXT_ONLY = 1
    SAW_PLAINTEXT = 2
    GENERATED = 3


def byte_variants(value: bytes) -> tuple[bytes, ...]:
    """The byte orders a secret can travel in: as is, fully reversed, reversed per 4-byte group."""
    out = [bytes(value), bytes(value[::-1])]
    if len(value) % 4 == 0:
        out.append(b"".join(value[i:i + 4][::-1] for i in range(0, len(value), 4)))
    unique: list[bytes] = []
    for v in out:
        if v not in unique:
            unique.append(v)
    return tuple(unique)


@dataclasses.dataclass
class _Tracked:
    record: SecretRecord
    variants: tuple[bytes, ...]
    seen: dict[str, Exposure]
    # when (simulated ns) the secret was registered, and when each component first reached each level:
    # "seen after the fault" and "seen at boot" are then different entries
    registered_ns: int = 0
    reached_ns: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ExposureMatrix:
    """Per secret class and component, the highest exposure of any secret of that class."""

    components: tuple[str, ...]
    secret_classes: tuple[SecretClass, ...]
    cells: Mapping[tuple[SecretClass, str], Exposure]
    secret_counts: Mapping[SecretClass, int]

    def get(self, secret_class: SecretClass, component: str) -> Exposure:
        return self.cells.get((secret_class, component), Exposure.NEVER)

    def to_json(self) -> dict[str, object]:
        """Stable form: fixed key names, classes in enum order, components sorted, names not numbers."""
        return {
            "components": list(self.components),
            "secret_classes": [str(c) for c in self.secret_classes],
            "secret_counts": {str(c): self.secret_counts.get(c, 0) for c in self.secret_classes},
            "matrix": {str(c): {comp: self.get(c, comp).name for comp in self.components}
                       for c in self.secret_classes},
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, indent=2)


class ExposureTracker:
    """Secret registry plus per-(secret, component) exposure levels."""

    def __init__(self, components: Callable[[], Iterable[str]] | None = None, *,
                 clock: Callable[[], int] | None = None) -> None:
        # `components` lists every component of the world, so that those who never saw anything
        # still appear as NEVER in the matrix; `clock` stamps the entries (None: all at 0).
        self._components = components or (lambda: ())
        self._clock = clock or (lambda: 0)
        self._secrets: list[_Tracked] = []
        self._by_label: dict[str, list[int]] = {}
        self._direct: list[tuple[bytes, int]] = []
        self._window: dict[bytes, list[tuple[bytes, int]]] = {}

    # -- registration (SecretSink) ---------------------------------------------------------------

    def register(self, record: SecretRecord) -> None:
        idx = len(self._secrets)
        variants = byte_variants(record.value) if len(record.value) >= MIN_SCAN_LENGTH else ()
        now = int(self._clock())
        self._secrets.append(_Tracked(record, variants, {record.owner: Exposure.GENERATED}, now,
                                      {record.owner: {Exposure.GENERATED.name: now}}))
        self._by_label.setdefault(record.label, []).append(idx)
        for v in variants:
            self._direct.append((v, idx))
            self._window.setdefault(v[:MIN_SCAN_LENGTH], []).append((v, idx))

    @property
    def records(self) -> tuple[SecretRecord, ...]:
        return tuple(t.record for t in self._secrets)

    # -- observations ------------------------------------------------------------------------------

    def find(self, data: bytes) -> list[SecretRecord]:
        """Registered secrets that occur in ``data`` in any of their byte orders."""
        return [self._secrets[i].record for i in sorted(self._find(data))]

    def observe_payload(self, components: Iterable[str], data: bytes) -> list[str]:
        """Bytes the given components handled in the clear; returns the labels found."""
        return self._mark(self._find(data), components, Exposure.SAW_PLAINTEXT)

    def observe_stored(self, component: str, data: bytes) -> list[str]:
        """A value a component keeps (a key slot, a register, a buffer); returns the labels found."""
        return self._mark(self._find(data), (component,), Exposure.SAW_PLAINTEXT)

    def observe_secured(self, components: Iterable[str], plaintext: bytes) -> list[str]:
        """The components carried an encrypted record whose plaintext is ``plaintext``."""
        return self._mark(self._find(plaintext), components, Exposure.SAW_CIPHERTEXT_ONLY)

    def observe_ciphertext(self, component: str, *labels: str) -> None:
        """The component carried ciphertext of the secrets with these labels (KeyError if unknown)."""
        for label in labels:
            if label not in self._by_label:
                raise KeyError(f"no secret registered with label '{label}'")
            self._mark(set(self._by_label[label]), (component,), Exposure.SAW_CIPHERTEXT_ONLY)

    def on_trace(self, event: TraceEvent) -> None:
        """Trace-bus sink: scan what crossed, and the declared plaintext of secured records."""
        if not self._secrets:
            return
        parties = (event.source, event.destination, *event.observers)
        if len(event.data) >= MIN_SCAN_LENGTH:  # shorter data (a config DW) cannot hold a tracked secret
            self.observe_payload(parties, event.data)
        if event.secured_plaintext:
            self.observe_secured(parties, event.secured_plaintext)

    # -- results ----------------------------------------------------------------------------------

    def exposure(self, label: str, component: str) -> Exposure:
        """Highest level over all secrets with this label (NEVER for an unknown label)."""
        return max((self._secrets[i].seen.get(component, Exposure.NEVER) for i in self._by_label.get(label, ())),
                   default=Exposure.NEVER)

    def per_secret(self) -> list[dict[str, object]]:
        """Per secret: label, class, owner and who saw it how (never the value itself)."""
        return [{
            "label": t.record.label,
            "class": str(t.record.secret_class),
            "owner": t.record.owner,
            "seen": {c: t.seen[c].name for c in sorted(t.seen)},
        } for t in self._secrets]

    def timeline(self) -> list[dict[str, object]]:
        """Per secret: label, class, owner, when it was registered and, per component, when it first
        reached each exposure level (simulated ns); never the value itself."""
        return [{
            "label": t.record.label,
            "class": str(t.record.secret_class),
            "owner": t.record.owner,
            "registered_ns": t.registered_ns,
            "reached_ns": {c: dict(sorted(levels.items())) for c, levels in sorted(t.reached_ns.items())},
        } for t in self._secrets]

    def matrix(self) -> ExposureMatrix:
        comps: set[str] = set(self._components())
        cells: dict[tuple[SecretClass, str], Exposure] = {}
        counts: dict[SecretClass, int] = {}
        for t in self._secrets:
            cls = t.record.secret_class
            counts[cls] = counts.get(cls, 0) + 1
            for comp, level in t.seen.items():
                comps.add(comp)
                if level > cells.get((cls, comp), Exposure.NEVER):
                    cells[(cls, comp)] = level
        return ExposureMatrix(tuple(sorted(comps)), tuple(SecretClass), cells, counts)

    # -- internals --------------------------------------------------------------------------------

    def _mark(self, indices: Iterable[int], components: Iterable[str], level: Exposure) -> list[str]:
        labels: list[str] = []
        comps = tuple(components)
        for i in sorted(indices):
            tracked = self._secrets[i]
            seen = tracked.seen
            for comp in comps:
                if level > seen.get(comp, Exposure.NEVER):
                    seen[comp] = level
                    tracked.reached_ns.setdefault(comp, {})[level.name] = int(self._clock())
            labels.append(self._secrets[i].record.label)
        return labels

    def _find(self, data: bytes) -> set[int]:
        if len(data) < MIN_SCAN_LENGTH or not self._direct:
            return set()
        data = bytes(data)
        if len(self._direct) <= _DIRECT_SCAN_LIMIT:
            return {idx for v, idx in self._direct if v in data}
        k = MIN_SCAN_LENGTH
        grams = {data[i:i + k] for i in range(len(data) - k + 1)}
        found: set[int] = set()
        for gram in grams & self._window.keys():
            for v, idx in self._window[gram]:
                if idx not in found and v in data:
                    found.add(idx)
        return found
