"""``tiosim attest``: attest a device over DMTF's emulator socket protocol, then key IDE and drive TDISP.

Connects to ``tiosim serve-device`` or DMTF's ``spdm_responder_emu --trans PCI_DOE`` and runs the
steps of :mod:`sim.interop.attest_flow`, printing each as it finishes (step, result, detail). The
exit status is 0 when every step passed, 1 naming the first failing step otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import BinaryIO

from rich.console import Console
from rich.table import Table

from sim.commands import summary
from sim.commands.common import EXIT_FAILED, EXIT_OK, UserError
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.errors import CryptoError
from sim.crypto.identity import load_trusted_roots
from sim.interop.attest_flow import DEFAULT_INTERFACE_FUNCTION_ID, AttestOptions, AttestProcedure, StepResult
from sim.interop.client import DEFAULT_TIMEOUT_S, EmuClient, EmuClientError, parse_host_port
from sim.interop.device import DEFAULT_SEED, default_trusted_roots
from sim.interop.emu_socket import EmuCommand
from sim.protocols.env import ProtocolEnv
from sim.protocols.flow import run_flow
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SpdmRequester, parse_version

OWNER = "attest"


def build_requester(args: argparse.Namespace) -> tuple[SpdmRequester, ProtocolEnv]:
    """The requester the options describe: version cap, trust anchors, seeded randomness."""
    try:
        max_version = parse_version(args.ver) if args.ver else None
    except ValueError as exc:
        raise UserError(f"--ver: {exc}") from None
    if args.trusted_root:
        try:
            roots = load_trusted_roots(*args.trusted_root)
        except CryptoError as exc:
            raise UserError(f"--trusted-root: {exc}") from None
        if not roots:
            raise UserError("--trusted-root: no certificates in the given files")
    else:
        roots = default_trusted_roots(args.seed)
    # a verifier talking to a real device checks validity now, not at the simulator's fixed instant
    policy = VerificationPolicy(trusted_roots=tuple(roots), validation_time=dt.datetime.now(dt.UTC))
    env = ProtocolEnv(DeterministicRandom(args.seed, OWNER), OWNER)
    return SpdmRequester(RequesterConfig(max_version=max_version), policy, env), env


def _open_pcap(path: str | None) -> BinaryIO | None:
    if path is None:
        return None
    try:
        return open(path, "wb")  # closed in cmd_attest's finally
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror}") from None


def _table(steps: list[StepResult]) -> Table:
    table = Table(title="tiosim attest", show_lines=False)
    table.add_column("step")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for s in steps:
        table.add_row(s.step, "[green]PASS[/green]" if s.ok else "[red]FAIL[/red]", s.detail)
    return table


def cmd_attest(args: argparse.Namespace, console: Console) -> int:
    try:
        host, port = parse_host_port(args.connect)
    except ValueError as exc:
        raise UserError(f"--connect: {exc}") from None
    requester, env = build_requester(args)
    options = AttestOptions(interface_function_id=args.interface, port_index=args.port_index,
                            stream_id=args.stream_id)

    def show(step: StepResult) -> None:
        if not args.table:
            mark = "[green]PASS[/green]" if step.ok else "[red]FAIL[/red]"
            console.print(f"{mark}  {step.step}: ", end="")
            console.print(step.detail, markup=False, highlight=False)

    procedure = AttestProcedure(requester, env, options, on_step=show)
    pcap = _open_pcap(args.pcap)
    client = EmuClient(host, port, timeout=args.timeout, pcap=pcap)
    try:
        try:
            client.connect()
        except EmuClientError as exc:
            show(StepResult("connect", False, str(exc)))
            console.print(f"[red]attest failed at step 'connect'[/red]: {exc}")
            return EXIT_FAILED

        steps = run_flow(procedure.run(), client.transport)
        if client.last_problem and not procedure.ok:
            steps[-1] = StepResult(steps[-1].step, False, f"{steps[-1].detail} (transport: {client.last_problem})")
        closed = client.close(EmuCommand.CONTINUE if args.keep_server else EmuCommand.SHUTDOWN)
    finally:
        client.close_socket()
        if pcap is not None:
            pcap.close()
    if args.table:
        console.print(_table(steps))
    failure = procedure.first_failure
    if failure is not None:
        console.print(f"[red]attest failed at step '{failure.step}'[/red]: ", end="")
        console.print(failure.detail, markup=False, highlight=False)
        return EXIT_FAILED
    ending = "CONTINUE" if args.keep_server else "SHUTDOWN"
    console.print(f"[green]attest: all {len(steps)} steps passed[/green]"
                  f"{'' if closed else f' (the server did not acknowledge {ending})'}")
    return EXIT_OK


def _int(text: str) -> int:
    return int(text, 0)


def _ranged(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer (decimal or 0x-prefixed) in low..high, else a usage error naming the range."""
    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low}..{high:#x}" if high > 255 else
                                             f"{text} is outside {low}..{high}")
        return value
    parse.__name__ = f"integer {low}..{high}"
    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "attest",
        help=summary("attest"),
        description="Connect to `tiosim serve-device` or DMTF's spdm_responder_emu (--trans PCI_DOE) and run: "
                    "DOE discovery, VCA, GET_DIGESTS, GET_CERTIFICATE (chain verified), CHALLENGE, signed "
                    "GET_MEASUREMENTS, KEY_EXCHANGE/FINISH, IDE_KM QUERY + KEY_PROG + K_SET_GO for all six "
                    "sub-streams, TDISP version, capabilities, lock, report, start, state, stop, IDE_KM "
                    "K_SET_STOP and END_SESSION. Prints each step; exits 1 naming the first failing step. "
                    "Without --trusted-root it trusts the root CA of serve-device's default identity for the same "
                    "--seed, so attest against our own serve-device works out of the box; against another "
                    "responder give its root (e.g. libspdm's ecp384/ca.cert.der).",
    )
    p.add_argument("--connect", required=True, metavar="HOST:PORT", help="the responder (port default 2323)")
    p.add_argument("--ver", choices=["1.2", "1.3"],
                   help="highest SPDM version to negotiate (default: the highest both support, up to 1.3; "
                        "TDISP needs 1.2+)")
    p.add_argument("--trusted-root", nargs="+", action="extend", metavar="FILE",
                   help="trusted root certificate(s), DER or PEM (default: serve-device's default root for --seed)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the requester's randomness and of the default trusted root (default {DEFAULT_SEED})")
    p.add_argument("--pcap", metavar="FILE", help="write every DOE object to FILE (pcap, link type 292)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"how long to wait for each answer (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--interface", type=_ranged(0, 0xFFFFFFFF), default=DEFAULT_INTERFACE_FUNCTION_ID, metavar="FUNCTION_ID",
                   help="TDISP interface FUNCTION_ID (default 0xBEEF, as spdm_requester_emu uses)")
    p.add_argument("--port-index", type=_ranged(0, 255), default=0, help="IDE_KM PortIndex, 0-255 (default 0)")
    p.add_argument("--stream-id", type=_ranged(0, 255), default=0,
                   help="IDE Stream ID to key and lock with, 0-255 (default 0)")
    p.add_argument("--keep-server", action="store_true",
                   help="end with CONTINUE (the server keeps running) instead of SHUTDOWN")
    p.add_argument("--table", action="store_true", help="print one table at the end instead of a line per step")
    p.set_defaults(func=cmd_attest)
