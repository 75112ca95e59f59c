"""The ``tiosim`` command line.

Every user-facing failure is reported as one line naming what was wrong (file, field, byte
offset) with a non-zero exit status; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.tree import Tree

from sim.wire.codec import DecodeError
from sim.wire.dissect import KINDS, Layer, dissect, parse_hex

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A problem with what the user gave us, reported without a traceback."""


def _render(layer: Layer, tree: Tree) -> None:
    for name, value in layer.fields:
        tree.add(f"[cyan]{name}[/cyan] = {value}")
    for child in layer.children:
        _render(child, tree.add(f"[bold]{child.title}[/bold]"))


def _print_layer(console: Console, layer: Layer, heading: str) -> None:
    tree = Tree(f"[bold]{heading}{layer.title}[/bold]")
    _render(layer, tree)
    console.print(tree)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None


def cmd_decode(args: argparse.Namespace, console: Console) -> int:
    items: list[tuple[str, bytes]] = []
    if args.pcap:
        from sim.engine.trace import parse_pcap

        try:
            capture = parse_pcap(_read_bytes(args.pcap))
        except DecodeError as exc:
            raise UserError(f"{args.pcap}: not a pcap file: {exc}") from None
        items = [(f"{args.pcap} record {i + 1}: ", p.data) for i, p in enumerate(capture.packets)]
    elif args.file:
        text = _read_text(args.file)
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                items.append((f"{args.file}:{lineno}: ", parse_hex(line)))
            except ValueError as exc:
                raise UserError(f"{args.file}:{lineno}: {exc}") from None
    else:
        if not args.hex:
            raise UserError("decode needs bytes: give HEX, --file FILE or --pcap FILE")
        try:
            items = [("", parse_hex(" ".join(args.hex)))]
        except ValueError as exc:
            raise UserError(str(exc)) from None
    failed = 0
    for label, data in items:
        try:
            layer = dissect(data, kind=args.kind, hash_name=args.hash, asym_name=args.asym)
        except DecodeError as exc:
            failed += 1
            console.print(f"[red]{label}cannot decode[/red] {len(data)} bytes: {exc}")
            continue
        _print_layer(console, layer, label)
    return EXIT_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiosim",
        description="Discrete-event simulator of trusted PCIe I/O (DOE, SPDM, IDE_KM, TDISP).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    dec = sub.add_parser(
        "decode",
        help="decode DOE objects or SPDM / IDE_KM / TDISP messages and print every field",
        description="Decode bytes given as hex (spaces allowed), a file of hex lines (# starts a comment), "
                    "or a pcap of DOE objects (link type 292). Exits non-zero if any input does not decode.",
    )
    dec.add_argument("hex", nargs="*", help="the bytes, in hex")
    src = dec.add_mutually_exclusive_group()
    src.add_argument("--file", help="a text file with one message in hex per line")
    src.add_argument("--pcap", help="a pcap file of DOE data objects (as written by `tiosim run` or spdm-emu)")
    dec.add_argument("--as", dest="kind", choices=KINDS, default="auto",
                     help="what the bytes are (default: guess from the first bytes)")
    dec.add_argument("--hash", default="sha384", choices=["sha256", "sha384", "sha512"],
                     help="negotiated hash, sizes digest fields (default sha384)")
    dec.add_argument("--asym", default="p384", choices=["p256", "p384", "rsa2048", "rsa3072"],
                     help="negotiated signature algorithm, sizes signature fields (default p384)")
    dec.set_defaults(func=cmd_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    console = Console(highlight=False, soft_wrap=True)
    try:
        return int(args.func(args, console))
    except UserError as exc:
        Console(stderr=True, highlight=False).print(f"[red]tiosim {args.command}:[/red] {exc}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
