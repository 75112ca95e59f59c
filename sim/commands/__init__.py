"""One module per ``tiosim`` subcommand (or pair of them), each with ``add_parser(subparsers)``.

``COMMANDS`` is the one table of subcommands: the module that implements each and its one-line help.
``tiosim --help`` is built from it alone, so a command's module (and what it imports: the scenario
schema, SimPy, cryptography) is imported only when that command runs or its own help is asked for.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "run": Command("sim.commands.run", "run scenario files under one or all of their trust models"),
    "compare": Command("sim.commands.run", "run every trust model of a scenario and write a comparison report"),
    "validate": Command("sim.commands.validate", "check scenario files against the schema"),
    "list": Command("sim.commands.listing",
                    "list shipped scenarios, trust models, device profiles, adversary strategies or event kinds"),
    "new": Command("sim.commands.new", "write a starter scenario that validates and runs"),
    "decode": Command("sim.commands.decode",
                      "decode DOE objects, TLPs or SPDM / IDE_KM / TDISP messages and print every field"),
    "serve-device": Command("sim.commands.serve_device",
                            "serve one simulated device over DMTF's emulator socket protocol (PCI_DOE transport)"),
    "attest": Command("sim.commands.attest",
                      "attest a device over DMTF's emulator socket protocol, then key IDE and drive TDISP"),
    "bench": Command("sim.commands.bench",
                     "measure the simulator's own speed: start-up, the attest flow against its crypto, a platform"),
    "campaign": Command("sim.commands.campaign",
                        "random fault campaigns over a scenario: invariants on every run, failures shrunk to YAML"),
    "completion": Command("sim.commands.completion", "print a bash or zsh completion script for tiosim"),
}


def summary(name: str) -> str:
    """The one-line help of subcommand ``name`` (what ``tiosim --help`` lists)."""
    return COMMANDS[name].summary
