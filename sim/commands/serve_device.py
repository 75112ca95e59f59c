"""``tiosim serve-device``: one simulated device behind DMTF's emulator socket protocol.

DMTF's ``spdm_requester_emu --trans PCI_DOE``, the SPDM-Responder-Validator and ``tiosim attest``
can connect to it as they would to ``spdm_responder_emu``. Each exchange is logged as one decoded
line; ``--pcap`` also writes every DOE object to a pcap file (link type 292) for ``spdm_dump``.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from rich.console import Console

from sim.commands import summary
from sim.commands.common import EXIT_FAILED, EXIT_OK, UserError
from sim.crypto.errors import CryptoError
from sim.interop.device import DEFAULT_PROFILE, DEFAULT_SEED, SocketDevice, build_socket_device
from sim.interop.emu_socket import DEFAULT_PORT
from sim.interop.server import LOOPBACK, EmuServer, StopReason
from sim.protocols.spdm.profile import PROFILES

MAX_TCP_PORT = 0xFFFF


def _open_pcap(path: str | None) -> BinaryIO | None:
    if path is None:
        return None
    try:
        return open(path, "wb")  # closed in cmd_serve_device's finally
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror}") from None


def build_device(args: argparse.Namespace) -> SocketDevice:
    """The device the options describe; one-line UserErrors for unusable files or combinations."""
    if (args.cert_chain is None) != (args.key is None):
        raise UserError("--cert-chain and --key go together")
    try:
        return build_socket_device(profile=args.profile, seed=args.seed, cert_chain=args.cert_chain, key=args.key,
                                   heartbeat_period=args.heartbeat_period, ide_port_index=args.ide_port_index)
    except (ValueError, CryptoError) as exc:
        raise UserError(str(exc)) from None


def describe_identity(device: SocketDevice, args: argparse.Namespace) -> str:
    root = device.identity.root
    fingerprint = hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()[:16]
    source = f"from {args.cert_chain}" if args.cert_chain else f"derived from seed {args.seed}"
    return (f"profile {device.profile.name}; identity {source}: {len(device.identity.certificates)} certificates, "
            f"root {root.subject.rfc4514_string()} (sha256 {fingerprint}...)")


def cmd_serve_device(args: argparse.Namespace, console: Console) -> int:
    if not 0 <= args.port <= MAX_TCP_PORT:  # socket.bind would raise OverflowError, not OSError
        raise UserError(f"--port {args.port}: a TCP port is 0-{MAX_TCP_PORT}")
    device = build_device(args)
    pcap = _open_pcap(args.pcap)

    def log(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    max_connections = 1 if args.once else args.max_connections
    server = EmuServer(device.target, host=args.host, port=args.port, max_connections=max_connections,
                       client_timeout=args.timeout, log=log, pcap=pcap)
    try:
        try:
            server.bind()
        except OSError as exc:
            raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        log(describe_identity(device, args))
        try:
            result = server.serve()
        except KeyboardInterrupt:
            server.stop()
            server.close()
            log("interrupted")
            return EXIT_OK
    finally:
        if pcap is not None:
            pcap.close()
    if result.stop_reason in (StopReason.SHUTDOWN, StopReason.MAX_CONNECTIONS):
        return EXIT_OK
    return EXIT_FAILED


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve-device",
        help=summary("serve-device"),
        description="Serve one simulated device (DOE mailbox, SPDM responder, IDE_KM, TDISP) over the socket "
                    "protocol of DMTF's spdm-emu, as spdm_responder_emu does: spdm_requester_emu --trans PCI_DOE, "
                    "the SPDM-Responder-Validator and `tiosim attest` can connect. Without --cert-chain/--key the "
                    "device's certificate chain is derived from --seed, and `tiosim attest` with the same --seed "
                    "trusts its root. The server keeps the device (and its SPDM state) across clients that end "
                    "with CONTINUE and exits on SHUTDOWN. Loopback only unless --host says otherwise.",
    )
    p.add_argument("--host", default=LOOPBACK, help=f"address to listen on (default {LOOPBACK})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 = any)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                   help=f"SPDM responder profile (default {DEFAULT_PROFILE})")
    p.add_argument("--cert-chain", metavar="FILE",
                   help="certificate chain, DER root-first (e.g. libspdm's bundle_responder.certchain.der) or PEM")
    p.add_argument("--key", metavar="FILE", help="the leaf certificate's private key (PEM or DER)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the device's identity and randomness (default {DEFAULT_SEED})")
    p.add_argument("--heartbeat-period", type=int, metavar="SECONDS",
                   help="HeartbeatPeriod offered in KEY_EXCHANGE_RSP (default: the profile's, 0 = none); "
                        "advertised only, never enforced: the socket device has no clock")
    p.add_argument("--ide-port-index", type=int, default=0, metavar="N",
                   help="the IDE_KM PortIndex of the device's IDE port (default 0; DMTF's spdm_requester_emu "
                        "asks for 1, so pass --ide-port-index 1 when it is the client)")
    p.add_argument("--once", action="store_true", help="serve one client, then exit")
    p.add_argument("--max-connections", type=int, metavar="N", help="exit after N clients")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="drop a client that sends nothing for this long (default 300)")
    p.add_argument("--pcap", metavar="FILE", help="write every DOE object to FILE (pcap, link type 292)")
    p.set_defaults(func=cmd_serve_device)

