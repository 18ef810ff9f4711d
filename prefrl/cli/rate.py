"""``prefrl rate`` (label segment pairs, print rater diagnostics) and ``prefrl list``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefrl.agents import get_agent_class, list_agents
from prefrl.cli.values import int_in, seed
from prefrl.diagnostics import MAX_RATE_PAIRS, format_report, rate_report
from prefrl.envs import DEFAULT_ENV, list_env_specs, load_env_spec
from prefrl.errors import PrefrlError
from prefrl.raters import list_raters

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add ``prefrl rate`` and ``prefrl list``."""
    sub = subparsers
    rate = sub.add_parser(
        "rate",
        help="label segment pairs with raters and print diagnostics",
        description="Sample pairs of segments, label them with every rater and print per rater: queries "
        "answered, tie and skip shares, agreement with noise-free partial_return labels, cycle rate and "
        "throughput.",
    )
    rate.add_argument(
        "--env", default=DEFAULT_ENV, help="env spec name (one of `prefrl list`'s environments) or path"
    )
    rate.add_argument(
        "--rater",
        action="append",
        required=True,
        help="rater spec NAME[:KEY=VALUE,...][+WRAPPER...], repeatable; names: " + ", ".join(list_raters()),
    )
    rate.add_argument(
        "--pairs",
        type=int_in(1, MAX_RATE_PAIRS),
        default=10_000,
        help="segment pairs to label (in chunks: memory does not grow with it, time does)",
    )
    rate.add_argument(
        "--policy",
        default="random",
        help="policy that generates the segments: random, mixed (the oracle's skill levels and a random "
        "policy) or oracle:CHECKPOINT",
    )
    rate.add_argument("--seed", type=seed, default=0, help="seeds the segments, the pairs and the raters")
    rate.add_argument("--json", action="store_true", help="print one JSON object")
    rate.set_defaults(func=cmd_rate)

    lst = sub.add_parser(
        "list",
        help="list environments, agents and raters, one line of description each",
        description="Every environment spec, agent and rater (with its parameters' defaults).",
    )
    lst.set_defaults(func=cmd_list)


def cmd_rate(args: argparse.Namespace) -> int:
    spec = load_env_spec(args.env)
    report = rate_report(spec, args.rater, num_pairs=args.pairs, policy=args.policy, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def env_description(name: str) -> str:
    """One line about an env spec: its description, else its gymnasium id; an invalid spec says why."""
    try:
        spec = load_env_spec(name)
    except PrefrlError as e:
        return f"(invalid spec: {e})"
    return getattr(spec, "description", "") or f"{spec.gym_id}, {spec.horizon} steps"


def _section(title: str, rows: dict[str, str]) -> list[str]:
    width = max((len(name) for name in rows), default=0)
    return [f"{title}:", *(f"  {name:<{width}}  {text}".rstrip() for name, text in rows.items())]


def cmd_list(args: argparse.Namespace) -> int:
    """``prefrl list``: one line per environment, agent and rater."""
    envs = {name: env_description(name) for name in list_env_specs()}
    agents = {name: get_agent_class(name).description for name in list_agents()}
    lines = [
        *_section("environments", envs),
        "",
        *_section("agents", agents),
        "",
        *_section("raters", dict(list_raters())),
        "  (a rater spec is NAME[:KEY=VALUE,...][+WRAPPER...], e.g. regret+mistake:eps=0.1)",
    ]
    print("\n".join(lines))
    return 0
