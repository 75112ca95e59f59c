"""A register-level DOE driver: how the socket server reaches the simulated device.

The socket device must be the same device the simulator runs, so requests do not go to the DSM
firmware directly: they go through function 0's DOE capability the way Linux ``drivers/pci/doe.c``
drives it (PROTOCOLS.md §1.2): check Busy/Error (abort first if set), write the object DW by DW to
Write Data, set Go, poll Status, then read each response DW from Read Data and write Read Data to
advance. Whatever the mailbox does with the object (answer, discard a wrong length, set Error,
answer DOE Discovery itself) is what the socket client sees.

The register model used here answers synchronously on Go (no SimPy scheduler is attached), so a
poll that finds neither Data Object Ready nor Busy means the mailbox dropped the object or the
firmware chose not to answer: what a real driver learns only after its 1 s timeout.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Protocol

from sim.devices.config_space import DoeControl, DoeRegister, DoeStatus, ExtCapabilityId, find_ext_capability
from sim.wire.doe import HEADER_BYTES, MAX_LENGTH_DW

DEFAULT_MAX_POLLS = 128  # Linux polls every 1/128 s for 1 s; here a poll costs no time, so this only bounds a stuck Busy


class MailboxResultKind(enum.StrEnum):
    RESPONSE = "response"
    NO_RESPONSE = "no-response"  # dropped (wrong length) or unanswered; a real driver times out after 1 s
    ERROR = "error"  # the mailbox set Error (undecodable header, unsupported type); the driver aborted


@dataclasses.dataclass(frozen=True)
class MailboxResult:
    kind: MailboxResultKind
    response: bytes = b""  # the whole response object (header included) for RESPONSE
    detail: str = ""


class ConfigAccess(Protocol):
    """Config-space DW access to a device's functions (what :class:`~sim.devices.endpoint.Endpoint` offers)."""

    def config_read(self, function: int, offset: int) -> int: ...

    def config_write(self, function: int, offset: int, value: int, byte_enable: int = 0xF) -> None: ...


class DoeTarget(Protocol):
    """Anything that takes one DOE object and gives the mailbox's answer."""

    def exchange(self, request: bytes) -> MailboxResult: ...


class DoeMailboxDriver:
    """Drive a DOE capability through config reads and writes of one function.

    ``read_dw(offset)`` / ``write_dw(offset, value)`` are config-space DW accesses of the function
    that carries the capability (for an :class:`~sim.devices.endpoint.Endpoint`, see
    :meth:`for_endpoint`). The capability is found by walking the extended capability list.
    """

    def __init__(self, read_dw: Callable[[int], int], write_dw: Callable[[int, int], None], *,
                 max_polls: int = DEFAULT_MAX_POLLS) -> None:
        self._read = read_dw
        self._write = write_dw
        self.max_polls = max_polls
        base = find_ext_capability(read_dw, ExtCapabilityId.DOE)
        if base is None:
            raise ValueError("the function has no DOE extended capability (ID 0x2E)")
        self.base = base
        self.aborts = 0

    @classmethod
    def for_endpoint(cls, endpoint: ConfigAccess, function: int = 0, *,
                     max_polls: int = DEFAULT_MAX_POLLS) -> DoeMailboxDriver:
        """A driver for one function of ``endpoint``."""
        return cls(lambda off: endpoint.config_read(function, off),
                   lambda off, v: endpoint.config_write(function, off, v), max_polls=max_polls)

    def _status(self) -> DoeStatus:
        return DoeStatus(self._read(self.base + DoeRegister.STATUS) & 0x8000_0007)

    def abort(self) -> bool:
        """DOE Abort; True when Busy and Error are clear afterwards (§1.2 "Timeouts and abort")."""
        self.aborts += 1
        self._write(self.base + DoeRegister.CONTROL, int(DoeControl.ABORT))
        return not self._status() & (DoeStatus.BUSY | DoeStatus.ERROR)

    def exchange(self, request: bytes) -> MailboxResult:
        status = self._status()
        if status & (DoeStatus.BUSY | DoeStatus.ERROR | DoeStatus.DATA_OBJECT_READY) and not self.abort():
            return MailboxResult(MailboxResultKind.ERROR, detail=f"mailbox stuck ({status!r}) even after Abort")
        padded = request + bytes(-len(request) % 4)
        for i in range(0, len(padded), 4):
            self._write(self.base + DoeRegister.WRITE_DATA, int.from_bytes(padded[i:i + 4], "little"))
        self._write(self.base + DoeRegister.CONTROL, int(DoeControl.GO))
        for _ in range(self.max_polls):
            status = self._status()
            if status & DoeStatus.ERROR:
                self.abort()
                return MailboxResult(MailboxResultKind.ERROR, detail="DOE Error set; aborted")
            if status & DoeStatus.DATA_OBJECT_READY:
                return self._read_response()
            if not status & DoeStatus.BUSY:
                return MailboxResult(MailboxResultKind.NO_RESPONSE, detail="no response (object dropped or unanswered)")
        self.abort()
        return MailboxResult(MailboxResultKind.NO_RESPONSE, detail=f"still Busy after {self.max_polls} polls; aborted")

    def _read_response(self) -> MailboxResult:
        dws: list[int] = []
        total = HEADER_BYTES // 4
        while len(dws) < total:
            if not self._status() & DoeStatus.DATA_OBJECT_READY:
                self.abort()
                return MailboxResult(MailboxResultKind.ERROR,
                                     detail=f"Data Object Ready cleared after {len(dws)} of {total} DW; aborted")
            dws.append(self._read(self.base + DoeRegister.READ_DATA) & 0xFFFF_FFFF)
            self._write(self.base + DoeRegister.READ_DATA, 0)
            if len(dws) == 2:
                total = (dws[1] & (MAX_LENGTH_DW - 1)) or MAX_LENGTH_DW
                if total < HEADER_BYTES // 4:
                    self.abort()
                    return MailboxResult(MailboxResultKind.ERROR, detail=f"response Length {total} DW; aborted")
        return MailboxResult(MailboxResultKind.RESPONSE, b"".join(dw.to_bytes(4, "little") for dw in dws))
