"""``tiosim new NAME``: write a starter scenario that validates and runs, to be edited from there.

The file starts with its ``# Question:`` line (the rule every shipped scenario follows), names the
models asked for, and states only an expectation that holds under each of them: every device ends
with a secure IDE stream. ``tiosim run`` on it passes as written (a test checks it).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rich.console import Console

from sim.commands import summary
from sim.commands.common import EXIT_OK, UserError
from sim.scenario.schema import TrustModel

MODELS = tuple(m.value for m in TrustModel)
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_DEVICES = 32


def starter(name: str, devices: int, guest: bool, models: list[str]) -> str:
    """The YAML text of a starter scenario (one Root Port per device; with ``guest``, all passed to tvm0)."""
    owner = "tvm0" if guest else "host"
    ids = [f"dev{i}" for i in range(devices)]
    lines = [
        f"# Question: do {devices} device{'s' if devices > 1 else ''} "
        + ("passed through to a confidential guest" if guest else "kept by the host")
        + f" come up with a secure IDE stream under {', '.join(models)}?",
        "# (a starter written by `tiosim new`: edit the question, the platform and the expectations;",
        "#  docs/scenario-format.md documents every key, `tiosim list events` the timeline events)",
        f"name: {name}",
        "description: >",
        f"  Starter scenario: {devices} SPDM 1.3 device(s) (ECDSA P-384), each behind its own Root Port, "
        + ("assigned to the guest tvm0 from boot." if guest else "kept by the host."),
        "seed: 1",
        f"models: [{', '.join(models)}]",
        "",
        "platform:",
        "  root_ports:",
        *[f"    - {{id: rp{i}, ide_streams: 2, dpc: true}}" for i in range(devices)],
        "  devices:",
    ]
    for i, dev in enumerate(ids):
        lines += [f"    - id: {dev}", f"      port: rp{i}", "      profile: default-p384",
                  "      identity: {ca: vendor}", '      measurements: {firmware: "1.0.0"}', f"      owner: {owner}"]
        if guest:
            lines += ["      tdis:", "        - id: tdi0", "          function: 0",
                      "          mmio:", "            - {bar: 0, pages: 16}"]
    if guest:
        lines += ["", "guests:", "  - id: tvm0", f"    devices: [{', '.join(ids)}]", "    policy:",
                  "      trusted_roots: [{ca: vendor}]", "      expected_measurements:",
                  *[f'        {dev}: {{firmware: "1.0.0"}}' for dev in ids]]
    lines += ["", "timeline:", "  - {event: boot, at: 0}", "", "expect:",
              *[f"  - {{expect: stream_state, device: {dev}, state: secure}}" for dev in ids]]
    return "\n".join(lines) + "\n"


def cmd_new(args: argparse.Namespace, console: Console) -> int:
    if not NAME_RE.match(args.name):
        raise UserError(f"{args.name}: a scenario name is a letter, then up to 63 letters, digits, '-' or '_'")
    if not 1 <= args.devices <= MAX_DEVICES:
        raise UserError(f"--devices {args.devices}: expected 1..{MAX_DEVICES}")
    models = list(dict.fromkeys(args.model or (MODELS if args.guest else ("fat", "thin-host"))))
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise UserError(f"--model {unknown[0]}: expected one of {', '.join(MODELS)}")
    path = Path(args.out or f"{args.name}.yaml")
    if path.exists() and not args.force:
        raise UserError(f"{path}: exists; give --force to overwrite it or --out another file")
    try:
        path.write_text(starter(args.name, args.devices, args.guest, models), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror}") from None
    console.print(f"wrote {path}; next: tiosim validate {path} && tiosim run {path}", markup=False)
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("new", help=summary("new"),
                       description="Write NAME.yaml (or --out FILE): a scenario with its # Question: line, "
                                   "N devices behind their own Root Ports, kept by the host or (--guest) passed "
                                   "to a confidential guest, booted at 0, expecting secure IDE streams.")
    p.add_argument("name", metavar="NAME", help="the scenario's name (and file name)")
    p.add_argument("--devices", type=int, default=1, metavar="N", help="number of devices (default 1)")
    p.add_argument("--guest", action="store_true", help="pass the devices through to a confidential guest tvm0")
    p.add_argument("--model", action="append", metavar="M",
                   help=f"trust model to name (repeatable; default fat, thin-host; with --guest all: "
                        f"{', '.join(MODELS)})")
    p.add_argument("--out", metavar="FILE", help="where to write it (default NAME.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_new)
