"""``tiosim decode``: print every field of DOE objects and SPDM / IDE_KM / TDISP messages."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.tree import Tree

from sim.commands import summary
from sim.commands.common import EXIT_FAILED, EXIT_OK, UserError, read_bytes, read_text
from sim.wire.codec import DecodeError
from sim.wire.dissect import KINDS, Conversation, Layer, dissect, parse_hex


def _render(layer: Layer, tree: Tree) -> None:
    for name, value in layer.fields:
        tree.add(f"[cyan]{name}[/cyan] = {value}")
    for child in layer.children:
        _render(child, tree.add(f"[bold]{child.title}[/bold]"))


def _print_layer(console: Console, layer: Layer, heading: str) -> None:
    tree = Tree(f"[bold]{heading}{layer.title}[/bold]")
    _render(layer, tree)
    console.print(tree)


def cmd_decode(args: argparse.Namespace, console: Console) -> int:
    items: list[tuple[str, bytes]] = []
    if args.pcap:
        from sim.engine.trace import parse_pcap

        try:
            capture = parse_pcap(read_bytes(args.pcap))
        except DecodeError as exc:
            raise UserError(f"{args.pcap}: not a pcap file: {exc}") from None
        items = [(f"{args.pcap} record {i + 1}: ", p.data) for i, p in enumerate(capture.packets)]
    elif args.file:
        text = read_text(args.file)
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
    # A capture is one conversation (or several interleaved): earlier records size the later ones.
    conversation = Conversation(args.hash, args.asym) if args.pcap else None
    failed = 0
    for label, data in items:
        try:
            layer = dissect(data, kind=args.kind, hash_name=args.hash or "sha384", asym_name=args.asym or "p384",
                            conversation=conversation)
        except DecodeError as exc:
            failed += 1
            console.print(f"[red]{label}cannot decode[/red] {len(data)} bytes: {exc}")
            continue
        _print_layer(console, layer, label)
    return EXIT_FAILED if failed else EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dec = sub.add_parser(
        "decode",
        help=summary("decode"),
        description="Decode bytes given as hex (spaces allowed), a file of hex lines (# starts a comment), "
                    "or a pcap of DOE objects (link type 292). Exits non-zero if any input does not decode.",
    )
    dec.add_argument("hex", nargs="*", help="the bytes, in hex")
    src = dec.add_mutually_exclusive_group()
    src.add_argument("--file", help="a text file with one message in hex per line")
    src.add_argument("--pcap", help="a pcap file of DOE data objects (as written by `tiosim run` or spdm-emu)")
    dec.add_argument("--as", dest="kind", choices=KINDS, default="auto",
                     help="what the bytes are (default: guess from the first bytes)")
    dec.add_argument("--hash", choices=["sha256", "sha384", "sha512"],
                     help="negotiated hash, sizes digest fields (default sha384; with --pcap, what the "
                          "capture's ALGORITHMS selected; given, it overrides that)")
    dec.add_argument("--asym", choices=["p256", "p384", "rsa2048", "rsa3072"],
                     help="negotiated signature algorithm, sizes signature and key-share fields (default p384; "
                          "with --pcap, what the capture's ALGORITHMS selected; given, it overrides that)")
    dec.set_defaults(func=cmd_decode)
