"""The simulated device that ``tiosim serve-device`` puts behind the socket, and its default identity.

It is an ordinary :class:`~sim.devices.endpoint.Endpoint` with a
:class:`~sim.protocols.dsm.DeviceSecurityManager` (SPDM + IDE_KM + TDISP), reached only through
its DOE mailbox registers (:class:`~sim.interop.doe_driver.DoeMailboxDriver`), so it is the same
device model the simulator runs.

Placement: the endpoint sits at bus 0xBE, device 0x1D with eight functions, so function 7 has
requester ID 0xBEEF — the TDISP interface (FUNCTION_ID 0xBEEF) that DMTF's ``spdm_requester_emu``
addresses (INTEROP.md); every function is a TDI. BARs are programmed and memory decoding enabled
the way enumeration would, so LOCK reports real MMIO ranges.

Identity: with no certificate files, the device's chain is the deterministic identity
:func:`default_identity` of the seed (root "tiosim socket root CA" → intermediate → leaf), and
``tiosim attest`` without ``--trusted-root`` trusts that root for every named profile, so the two
commands work together out of the box.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cryptography import x509

from sim.crypto.drbg import DeterministicRandom
from sim.crypto.identity import Identity, build_identity, load_identity
from sim.devices.config_space import Bar, BarKind, Command
from sim.devices.endpoint import Endpoint, FunctionSpec
from sim.interop.doe_driver import DoeMailboxDriver
from sim.protocols.dsm import DeviceSecurityManager
from sim.protocols.env import ProtocolEnv
from sim.protocols.spdm.profile import PROFILES, ResponderProfile, make_profile

DEFAULT_SEED = 1
DEFAULT_PROFILE = "default-p384"
DEVICE_NAME = "socket-device"
CA_NAME = "socket"
REFERENCE_TDI_FUNCTION_ID = 0xBEEF  # what spdm_requester_emu's TDISP exchanges address
BUS, DEVICE, FUNCTIONS = 0xBE, 0x1D, 8  # function 7 → requester ID 0xBEEF
BAR_SIZE = 0x4000
BAR_BASE = 0xF000_0000  # function n's BAR 0 at BAR_BASE + n * 0x10000


def default_identity(seed: int | str | bytes = DEFAULT_SEED, profile: str | ResponderProfile = DEFAULT_PROFILE
                     ) -> Identity:
    """The deterministic identity of the socket device for ``seed`` under the profile's algorithms."""
    prof = make_profile(profile) if isinstance(profile, str) else profile
    return build_identity(seed, DEVICE_NAME, prof.asym_algos[0], prof.hash_algos[0], ca_name=CA_NAME)


def default_trusted_roots(seed: int | str | bytes = DEFAULT_SEED) -> list[x509.Certificate]:
    """The roots of :func:`default_identity` for every named profile (what ``attest`` trusts by default)."""
    roots: list[x509.Certificate] = []
    for name in sorted(PROFILES):
        root = default_identity(seed, name).root
        if root not in roots:
            roots.append(root)
    return roots


@dataclasses.dataclass
class SocketDevice:
    """One device as served on the socket: its parts, and the register-level driver that reaches it."""

    profile: ResponderProfile
    identity: Identity
    endpoint: Endpoint
    dsm: DeviceSecurityManager
    target: DoeMailboxDriver


def _enumerate(endpoint: Endpoint) -> None:
    """What firmware enumeration does: place each function's BAR 0 and enable memory space and bus mastering."""
    for fn in endpoint.functions:
        base = BAR_BASE + fn * 0x10000
        endpoint.config_write(fn, 0x10, base & 0xFFFF_FFFF)
        endpoint.config_write(fn, 0x14, base >> 32)
        endpoint.config_write(fn, 0x04, int(Command.MEMORY_SPACE | Command.BUS_MASTER))


def build_socket_device(*, profile: str = DEFAULT_PROFILE, seed: int | str | bytes = DEFAULT_SEED,
                        cert_chain: str | Path | None = None, key: str | Path | None = None,
                        firmware_version: str = "1.0.0", heartbeat_period: int | None = None,
                        ide_port_index: int = 0) -> SocketDevice:
    """The device for ``serve-device``: a named profile, and either the seed's identity or one from files.

    ``cert_chain`` is a DER chain root-first (libspdm's ``bundle_responder.certchain.der``) or PEM;
    ``key`` the leaf's private key. ``heartbeat_period`` (seconds) overrides the profile's HeartbeatPeriod;
    the socket device has no clock (the mailbox hands the firmware none), so it never expires a session
    for a missing heartbeat. Raises ValueError / CryptoError with a message naming the problem.
    """
    prof = make_profile(profile, DEVICE_NAME, firmware_version)
    if heartbeat_period is not None:
        if not 0 <= heartbeat_period <= 0xFF:
            raise ValueError("the heartbeat period is one byte: 0-255 seconds")
        prof = prof.replace(heartbeat_period=heartbeat_period)
    if (cert_chain is None) != (key is None):
        raise ValueError("--cert-chain and --key go together")
    env = ProtocolEnv(DeterministicRandom(seed, DEVICE_NAME), DEVICE_NAME)
    if cert_chain is not None and key is not None:
        identity = load_identity(cert_chain, key, prof.hash_algos[0], name=DEVICE_NAME)
        if identity.asym_algo not in prof.asym_algos:
            raise ValueError(f"the key is {identity.asym_algo.name}, but profile {prof.name} signs with "
                             f"{', '.join(a.name or '?' for a in prof.asym_algos)}; pick a matching --profile")
    else:
        identity = default_identity(seed, prof)
    dsm = DeviceSecurityManager.build(prof, identity, env)
    functions = tuple(FunctionSpec(bars={0: Bar(BAR_SIZE, BarKind.MEM64)}) for _ in range(FUNCTIONS))
    endpoint = Endpoint(DEVICE_NAME, functions=functions, dsm=dsm, bus=BUS, device=DEVICE,
                        ide_port_index=ide_port_index)
    _enumerate(endpoint)
    return SocketDevice(prof, identity, endpoint, dsm, DoeMailboxDriver.for_endpoint(endpoint))
