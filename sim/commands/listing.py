"""``tiosim list scenarios|models|profiles|strategies|events``: what ships, one line of explanation each.

Every line is read from where the thing is defined: a scenario's ``# Question:`` comment, the trust-model
table's summary, the responder profile's algorithms, the adversary installer table, the timeline event's
schema docstring. Nothing here is a second copy of those descriptions.
"""

from __future__ import annotations

import argparse
import enum
import typing
from pathlib import Path

from rich.console import Console

from sim.commands import summary
from sim.commands.common import EXIT_OK


class What(enum.StrEnum):
    SCENARIOS = "scenarios"
    MODELS = "models"
    PROFILES = "profiles"
    STRATEGIES = "strategies"
    EVENTS = "events"


SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"


def _question(path: Path) -> str:
    """The ``# Question:`` comment at the top of a scenario file (``# Question (context): ...`` too), one line."""
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("Question") and ":" in text:
            lines = [text.split(":", 1)[1].strip()]
        elif lines and text:
            lines.append(text)
        elif lines:
            break
    return " ".join(lines) or "(no # Question: line)"


def scenarios(root: Path = SCENARIO_DIR) -> list[tuple[str, str]]:
    return [(str(p.relative_to(root.parent)) if root == SCENARIO_DIR else str(p), _question(p))
            for p in sorted(root.glob("*.yaml"))]


def models() -> list[tuple[str, str]]:
    from sim.scenario.trust_models import WIRINGS

    return [(str(m), w.summary) for m, w in WIRINGS.items()]


def profiles() -> list[tuple[str, str]]:
    from sim.protocols.spdm.profile import PROFILES, make_profile

    out = []
    for name in sorted(PROFILES):
        p = make_profile(name)
        algos = ", ".join(a.name for a in (*p.asym_algos, *p.hash_algos, *p.dhe_groups))
        out.append((name, f"SPDM responder: {algos}"
                          + ("; KEY_EXCHANGE handshake in the clear" if p.handshake_in_the_clear else "")))
    return out


def strategies() -> list[tuple[str, str]]:
    from sim.adversary.strategies import INSTALLERS
    from sim.scenario.schema import AdversaryStrategy

    return [(str(s), "what a compromised " + ", ".join(str(c) for c, t in INSTALLERS if t is s) + " can do")
            for s in AdversaryStrategy]


def events() -> list[tuple[str, str]]:
    from pydantic import BaseModel

    from sim.scenario import schema

    found: dict[str, str] = {}
    for obj in vars(schema).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and "event" in getattr(obj, "model_fields", {}):
            for kind in typing.get_args(obj.model_fields["event"].annotation):
                if isinstance(kind, schema.EventKind):
                    found[str(kind)] = " ".join((obj.__doc__ or "").split())
    return [(str(k), found.get(str(k), "(undocumented)")) for k in schema.EventKind]


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    rows = {What.SCENARIOS: scenarios, What.MODELS: models, What.PROFILES: profiles,
            What.STRATEGIES: strategies, What.EVENTS: events}[What(args.what)]()
    width = max((len(name) for name, _ in rows), default=0)
    for name, text in rows:
        console.print(f"{name:<{width}}  {text}", markup=False, highlight=False)
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("list", help=summary("list"),
                       description="List what ships, one line each: scenarios (their # Question: line), trust "
                                   "models, device profiles, adversary strategies, timeline event kinds.")
    p.add_argument("what", choices=[w.value for w in What])
    p.set_defaults(func=cmd_list)
