"""``prefrl rate`` (label segment pairs, print rater diagnostics) and ``prefrl list``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefrl.agents import list_agents
from prefrl.diagnostics import format_report, rate_report
from prefrl.envs import list_env_specs, load_env_spec
from prefrl.raters import list_raters

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add ``prefrl rate`` and ``prefrl list``."""
    sub = subparsers
    rate = sub.add_parser("rate", help="label segment pairs with raters and print diagnostics")
    rate.add_argument("--env", default="pendulum")
    rate.add_argument("--rater", action="append", required=True, help="rater spec, repeatable")
    rate.add_argument("--pairs", type=int, default=10_000)
    rate.add_argument("--policy", default="random", help="policy that generates the segments")
    rate.add_argument("--seed", type=int, default=0)
    rate.add_argument("--json", action="store_true", help="print one JSON object")
    rate.set_defaults(func=cmd_rate)

    lst = sub.add_parser("list", help="list environments, agents and raters")
    lst.set_defaults(func=cmd_list)


def cmd_rate(args: argparse.Namespace) -> int:
    spec = load_env_spec(args.env)
    report = rate_report(spec, args.rater, num_pairs=args.pairs, policy=args.policy, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    print("environments:", ", ".join(list_env_specs()))
    print("agents:      ", ", ".join(list_agents()))
    print("raters:      ", ", ".join(list_raters()))
    return 0
