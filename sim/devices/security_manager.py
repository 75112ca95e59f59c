"""The boundary between endpoint hardware and its DSM (Device Security Manager) firmware.

The endpoint model is hardware: registers, a DOE mailbox, an IDE engine, reset wires. The SPDM
responder, IDE_KM responder and TDISP state machines are firmware, written elsewhere as sans-IO
protocol engines. They meet here, in two directions:

* :class:`SecurityManager` — what the hardware calls: a DOE object arrived, a reset happened, a
  configuration register changed under a TDI.
* :class:`DsmHardware` — what the hardware offers the firmware: the IDE engine's key slots
  (program / GO / STOP, fed by IDE_KM), the port description IDE_KM QUERY_RESP reports, and a
  snapshot of each function's configuration that TDISP LOCK records and later compares.

Reset semantics (TRUST_MODELS.md §3, TDISP §11.4.8-9): a conventional reset (DPC, SBR/hot reset,
D3cold) loses SPDM state, sessions and IDE keys, and all TDIs return to CONFIG_UNLOCKED; an FLR
sends that function's TDIs to ERROR and, for a function other than 0, keeps SPDM and IDE.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sim.devices.config_space import BarKind, Command, PowerState
from sim.protocols.ide_km import IdeKeySlots


class ConfigChange(enum.StrEnum):
    """What changed under a function, as reported through ``config_changed`` (TDISP LOCKED/RUN -> ERROR causes)."""

    MSE_CLEARED = "mse-cleared"
    BME_CLEARED = "bme-cleared"
    BAR = "bar"
    IDE_REGISTERS = "ide-registers"
    IDE_STREAM_INSECURE = "ide-stream-insecure"  # a Secure stream dropped to Insecure (integrity failure, disable)
    POWER_STATE = "power-state"  # a PM transition that loses function state (No_Soft_Reset = 0)


@dataclass(frozen=True)
class BarConfig:
    """One BAR as software programmed it."""

    index: int
    address: int
    size: int
    kind: BarKind
    prefetchable: bool


@dataclass(frozen=True)
class TdiConfig:
    """The configuration of one function that a TDI lock freezes (TDISP CONFIG_LOCKED tracks it)."""

    function: int
    requester_id: int  # bus << 8 | device << 3 | function
    command: Command
    bars: tuple[BarConfig, ...]
    power_state: PowerState

    @property
    def memory_enabled(self) -> bool:
        return bool(self.command & Command.MEMORY_SPACE)

    @property
    def bus_master_enabled(self) -> bool:
        return bool(self.command & Command.BUS_MASTER)


@dataclass(frozen=True)
class IdePortInfo:
    """What IDE_KM QUERY_RESP reports for one port index (PROTOCOLS.md §6.2)."""

    port_index: int
    max_port_index: int
    dev_func: int  # device << 3 | function of the function holding the IDE capability
    bus: int
    segment: int
    register_dws: tuple[int, ...]  # IDE Capability, Control, link blocks, selective blocks


class DsmHardware(Protocol):
    """The hardware-side hooks the endpoint hands its DSM at :meth:`SecurityManager.attach`."""

    @property
    def ide(self) -> IdeKeySlots: ...

    def ide_query(self, port_index: int) -> IdePortInfo | None:
        """QUERY_RESP contents for a port index, or None when the index is not supported."""
        ...

    def functions(self) -> tuple[int, ...]:
        """Function numbers of the device (each one may host a TDI)."""
        ...

    def tdi_config(self, function: int) -> TdiConfig:
        """The function's current configuration, read straight from its config space."""
        ...


@runtime_checkable
class DoeBackend(Protocol):
    """Whatever answers SPDM (type 1) and secured SPDM (type 2) DOE objects behind a mailbox.

    ``payload`` is the DOE payload as received, including up to 3 pad bytes (§1.3). Return the
    response payload (the mailbox adds the DOE header and padding), or None for "no response"
    (e.g. a TDISP message outside a secured session must be ignored, §6.1).
    """

    def handle_doe(self, data_object_type: int, payload: bytes) -> bytes | None: ...


@runtime_checkable
class SecurityManager(DoeBackend, Protocol):
    """The DSM firmware as the endpoint hardware sees it."""

    def attach(self, hardware: DsmHardware) -> None:
        """Called once when the endpoint is built: the firmware's handle on its hardware."""
        ...

    def conventional_reset(self) -> None:
        """DPC, hot reset, D3cold: drop SPDM state and sessions; every TDI to CONFIG_UNLOCKED."""
        ...

    def function_level_reset(self, function: int) -> None:
        """FLR of one function: its TDIs to ERROR; SPDM kept unless the DSM function's own rules say otherwise."""
        ...

    def config_changed(self, function: int, what: str) -> None:
        """A register write changed a function's configuration (``what`` is a :class:`ConfigChange`)."""
        ...
