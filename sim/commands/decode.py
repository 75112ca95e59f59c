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


# What the bytes of a trace.jsonl line are, by its channel; other channels carry no message to decode.
TRACE_KINDS = {"doe": "doe", "tlp": "tlp"}


def _file_items(path: str) -> tuple[list[tuple[str, bytes]], dict[int, str]]:
    """The messages of a file: hex lines (# starts a comment), or trace.jsonl lines (a JSON object with
    ``channel`` and ``data``), of which the DOE objects and TLPs are decoded in order."""
    import json

    items: list[tuple[str, bytes]] = []
    kinds: dict[int, str] = {}
    for lineno, raw in enumerate(read_text(path).splitlines(), 1):
        if raw.lstrip().startswith("{"):
            try:
                event = json.loads(raw)
                channel, data = str(event["channel"]), str(event["data"])
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{path}:{lineno}: not a trace.jsonl event (JSON with channel and data): "
                                f"{exc}") from None
            if channel not in TRACE_KINDS or not data:
                continue
            try:
                payload = bytes.fromhex(data)
            except ValueError:
                raise UserError(f"{path}:{lineno}: data: not hex") from None
            kinds[len(items)] = TRACE_KINDS[channel]
            items.append((f"{path}:{lineno}: t={event.get('t')} {event.get('from')} -> {event.get('to')}: ",
                          payload))
            continue
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            items.append((f"{path}:{lineno}: ", parse_hex(line)))
        except ValueError as exc:
            raise UserError(f"{path}:{lineno}: {exc}") from None
    return items, kinds


def cmd_decode(args: argparse.Namespace, console: Console) -> int:
    items: list[tuple[str, bytes]] = []
    kinds: dict[int, str] = {}  # per item, what a trace.jsonl line's channel says it is
    if args.pcap:
        from sim.engine.trace import parse_pcap

        try:
            capture = parse_pcap(read_bytes(args.pcap))
        except DecodeError as exc:
            raise UserError(f"{args.pcap}: not a pcap file: {exc}") from None
        items = [(f"{args.pcap} record {i + 1}: ", p.data) for i, p in enumerate(capture.packets)]
    elif args.file:
        items, kinds = _file_items(args.file)
    else:
        if not args.hex:
            raise UserError("decode needs bytes: give HEX, --file FILE or --pcap FILE")
        try:
            items = [("", parse_hex(" ".join(args.hex)))]
        except ValueError as exc:
            raise UserError(str(exc)) from None
    # A capture is one conversation (or several interleaved): earlier records size the later ones.
    conversation = Conversation(args.hash, args.asym) if args.pcap or kinds else None
    failed = 0
    for i, (label, data) in enumerate(items):
        try:
            layer = dissect(data, kind=kinds.get(i, args.kind) if args.kind == "auto" else args.kind, hash_name=args.hash or "sha384", asym_name=args.asym or "p384",
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
        description="Decode bytes given as hex (spaces allowed), a file of hex lines (# starts a comment) or "
                    "a trace.jsonl (its DOE objects and TLPs, in order, as one conversation), or a pcap of DOE objects (link type 292). Exits non-zero if any input does not decode.",
    )
    dec.add_argument("hex", nargs="*", help="the bytes, in hex")
    src = dec.add_mutually_exclusive_group()
    src.add_argument("--file", help="a text file with one message in hex per line, or a trace.jsonl written by `tiosim run`")
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
