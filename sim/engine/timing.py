"""Timing model: how many simulated nanoseconds each operation costs, per class of component.

Simulated time is modeled time (DESIGN.md, "Principles"): a requester that runs on a slow device
microcontroller and one that runs on a host CPU take different times for the same SPDM flow, and
the reports compare those times across trust models. The defaults below are order-of-magnitude
figures; each carries the reasoning or public figure it comes from. Scenarios override any of them
per component class with a plain dict, e.g. ``{"device-mcu": {"ecdsa-p384-sign": 2_000_000}}``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

NS_PER_US = 1_000
NS_PER_MS = 1_000_000


class ComponentClass(enum.StrEnum):
    """Where an operation runs; each class has its own cost table."""

    DEVICE_MCU = "device-mcu"          # the endpoint's security microcontroller (DSM firmware)
    FIRMWARE_CORE = "firmware-core"    # a PSP-like platform security processor running the TSM
    HOST_CPU = "host-cpu"              # the host kernel on an application core
    GUEST_VCPU = "guest-vcpu"          # a confidential guest on a virtual CPU
    HARDWARE = "hardware"              # fixed-function logic (Root Port, link): only access/hop costs


class Op(enum.StrEnum):
    """Operations with a modeled cost. ``*_PER_KIB`` ops scale with the data size."""

    ECDSA_P256_SIGN = "ecdsa-p256-sign"
    ECDSA_P256_VERIFY = "ecdsa-p256-verify"
    ECDSA_P384_SIGN = "ecdsa-p384-sign"
    ECDSA_P384_VERIFY = "ecdsa-p384-verify"
    ECDH_P256 = "ecdh-p256"              # key generation + shared secret, one side
    ECDH_P384 = "ecdh-p384"
    HASH_PER_KIB = "hash-per-kib"        # SHA-256/384 over 1 KiB
    AEAD_PER_KIB = "aead-per-kib"        # AES-GCM over 1 KiB (encrypt or decrypt)
    HKDF = "hkdf"                        # one HKDF-Extract or -Expand (a few HMAC blocks)
    CONFIG_DW_ACCESS = "config-dw-access"  # one config-space DW read or write, issued by this class
    LINK_HOP = "link-hop"                # one TLP across one PCIe link
    FW_COMMAND_DISPATCH = "fw-command-dispatch"  # issue one command to platform firmware and get control back
    LINK_TRAINING = "link-training"      # a link below a port trains from Detect to L0 (after reset or DPC release)


E = TypeVar("E", bound=enum.StrEnum)

PER_KIB_OPS = frozenset({Op.HASH_PER_KIB, Op.AEAD_PER_KIB})


class TimingError(ValueError):
    """An override names an unknown component class or operation, or gives a bad value."""


# Defaults, in ns. Reasoning per entry; all are deliberately round numbers.
DEFAULTS: dict[ComponentClass, dict[Op, int]] = {
    # A Cortex-M33-class root of trust at ~200 MHz with a public-key accelerator (the usual DSM
    # design; e.g. STM32 PKA application notes quote P-256 sign in the low milliseconds, and
    # software-only micro-ecc on Cortex-M4 is tens of ms). P-384 costs ~2.5x P-256 (scalar
    # multiplication grows roughly with the cube of the field size).
    ComponentClass.DEVICE_MCU: {
        Op.ECDSA_P256_SIGN: 4 * NS_PER_MS,
        Op.ECDSA_P256_VERIFY: 8 * NS_PER_MS,      # verify = two scalar multiplications, ~2x sign
        Op.ECDSA_P384_SIGN: 10 * NS_PER_MS,
        Op.ECDSA_P384_VERIFY: 20 * NS_PER_MS,
        Op.ECDH_P256: 8 * NS_PER_MS,              # keygen + shared secret = two scalar mults
        Op.ECDH_P384: 20 * NS_PER_MS,
        Op.HASH_PER_KIB: 10 * NS_PER_US,          # hash engine ~100 MB/s
        Op.AEAD_PER_KIB: 5 * NS_PER_US,           # AES-GCM engine ~200 MB/s
        Op.HKDF: 20 * NS_PER_US,                  # ~4 HMAC blocks through the hash engine plus setup
        Op.CONFIG_DW_ACCESS: 100,                 # local register access on the device's own bus
        Op.LINK_HOP: 250,
        Op.FW_COMMAND_DISPATCH: 20 * NS_PER_US,   # DSM firmware task switch and message parse
    },
    # A PSP-like security processor (ARM Cortex-A5-class, a few hundred MHz) with a crypto
    # co-processor; sits on an internal bus, so its accesses to Root Port registers are slow.
    ComponentClass.FIRMWARE_CORE: {
        Op.ECDSA_P256_SIGN: int(1.5 * NS_PER_MS),
        Op.ECDSA_P256_VERIFY: 3 * NS_PER_MS,
        Op.ECDSA_P384_SIGN: 4 * NS_PER_MS,
        Op.ECDSA_P384_VERIFY: 8 * NS_PER_MS,
        Op.ECDH_P256: 3 * NS_PER_MS,
        Op.ECDH_P384: 8 * NS_PER_MS,
        Op.HASH_PER_KIB: 5 * NS_PER_US,
        Op.AEAD_PER_KIB: 3 * NS_PER_US,
        Op.HKDF: 15 * NS_PER_US,
        Op.CONFIG_DW_ACCESS: 2 * NS_PER_US,       # through an internal fabric (SMN-like), not ECAM
        Op.LINK_HOP: 250,
        # Mailbox doorbell, firmware scheduler and command validation: PSP-style commands are
        # reported in the tens to hundreds of microseconds before any crypto.
        Op.FW_COMMAND_DISPATCH: 50 * NS_PER_US,
    },
    # A current server core running OpenSSL-class code: `openssl speed` on x86-64 reports about
    # 40k P-256 signs/s and 15k verifies/s (nistz256), and about 1.5k/1k per second for P-384.
    ComponentClass.HOST_CPU: {
        Op.ECDSA_P256_SIGN: 25 * NS_PER_US,
        Op.ECDSA_P256_VERIFY: 70 * NS_PER_US,
        Op.ECDSA_P384_SIGN: 700 * NS_PER_US,
        Op.ECDSA_P384_VERIFY: 1 * NS_PER_MS,
        Op.ECDH_P256: 80 * NS_PER_US,
        Op.ECDH_P384: 1 * NS_PER_MS,
        Op.HASH_PER_KIB: 1 * NS_PER_US,           # SHA-256 with SHA-NI ~1 GB/s and more
        Op.AEAD_PER_KIB: 250,                     # AES-NI + CLMUL GCM, several GB/s
        Op.HKDF: 2 * NS_PER_US,
        Op.CONFIG_DW_ACCESS: 1 * NS_PER_US,       # non-posted ECAM read: a round trip to the Root Complex
        Op.LINK_HOP: 250,
        Op.FW_COMMAND_DISPATCH: 10 * NS_PER_US,   # ioctl into the kernel driver and a mailbox doorbell
    },
    # A confidential guest: compute runs at native speed plus a small tax; every config access and
    # every request that has to leave the guest costs a VM exit and a VMM round trip.
    ComponentClass.GUEST_VCPU: {
        Op.ECDSA_P256_SIGN: 28 * NS_PER_US,
        Op.ECDSA_P256_VERIFY: 77 * NS_PER_US,
        Op.ECDSA_P384_SIGN: 770 * NS_PER_US,
        Op.ECDSA_P384_VERIFY: int(1.1 * NS_PER_MS),
        Op.ECDH_P256: 88 * NS_PER_US,
        Op.ECDH_P384: int(1.1 * NS_PER_MS),
        Op.HASH_PER_KIB: int(1.1 * NS_PER_US),
        Op.AEAD_PER_KIB: 280,
        Op.HKDF: int(2.2 * NS_PER_US),
        Op.CONFIG_DW_ACCESS: 5 * NS_PER_US,       # trapped and emulated by the VMM (VM exit ~1-2 us each way)
        Op.LINK_HOP: 250,
        Op.FW_COMMAND_DISPATCH: 30 * NS_PER_US,   # guest -> VMM -> firmware, with two world switches
    },
    # Fixed-function hardware: only register and link costs are meaningful; crypto is inline.
    ComponentClass.HARDWARE: {
        Op.ECDSA_P256_SIGN: 0,
        Op.ECDSA_P256_VERIFY: 0,
        Op.ECDSA_P384_SIGN: 0,
        Op.ECDSA_P384_VERIFY: 0,
        Op.ECDH_P256: 0,
        Op.ECDH_P384: 0,
        Op.HASH_PER_KIB: 0,
        Op.AEAD_PER_KIB: 0,                       # inline IDE engines run at line rate
        Op.HKDF: 0,
        Op.CONFIG_DW_ACCESS: 100,
        # One hop = transaction + data link + physical layer latency of a Root Port to endpoint
        # link, commonly quoted in the low hundreds of ns.
        Op.LINK_HOP: 250,
        Op.FW_COMMAND_DISPATCH: 0,
    },
}


# Link training is a property of the link hardware, the same whoever waits for it. LTSSM training
# to L0 typically completes within tens of ms; PCIe lets a device take up to 100 ms after a
# conventional reset before it must answer configuration requests.
LINK_TRAINING_NS = 20 * NS_PER_MS
for _ops in DEFAULTS.values():
    _ops[Op.LINK_TRAINING] = LINK_TRAINING_NS


class TimingModel:
    """Cost lookup: ``cost(component_class, op, nbytes=...)`` in integer ns.

    ``overrides`` maps a component class name to ``{op name: ns}``; unknown names raise
    TimingError so that a misspelled scenario key never silently does nothing.
    """

    def __init__(self, overrides: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._table: dict[ComponentClass, dict[Op, int]] = {c: dict(ops) for c, ops in DEFAULTS.items()}
        for cls_name, ops in (overrides or {}).items():
            cls = _parse(ComponentClass, cls_name, "component class")
            if not isinstance(ops, Mapping):
                raise TimingError(f"timing override for '{cls_name}' must be a mapping of operation -> ns")
            for op_name, value in ops.items():
                op = _parse(Op, op_name, f"operation (in '{cls_name}')")
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise TimingError(f"timing override {cls_name}.{op_name} must be a non-negative integer ns, "
                                      f"got {value!r}")
                self._table[cls][op] = value

    def cost(self, component_class: ComponentClass | str, op: Op | str, *, nbytes: int | None = None) -> int:
        """Cost in ns; per-KiB ops need ``nbytes`` and are rounded up to whole bytes' worth of ns."""
        cls = _parse(ComponentClass, component_class, "component class")
        o = _parse(Op, op, "operation")
        base = self._table[cls][o]
        if o in PER_KIB_OPS:
            if nbytes is None:
                raise TimingError(f"operation '{o}' is priced per KiB: pass nbytes")
            return -(-base * nbytes // 1024)
        return base

    def table(self) -> dict[str, dict[str, int]]:
        """The fully resolved table (defaults + overrides), for writing next to a run's results."""
        return {str(c): {str(o): v for o, v in ops.items()} for c, ops in self._table.items()}


def _parse(enum_type: type[E], value: object, what: str) -> E:
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(str(value))
    except ValueError:
        known = ", ".join(m.value for m in enum_type)
        raise TimingError(f"unknown {what} '{value}'; expected one of: {known}") from None
