"""The ``prefrl`` command line.

Sub-commands::

    prefrl run   --env ENV --agent AGENT [--rater R] --seed S [--steps N] [--queries Q] [--out DIR]
    prefrl rate  --env ENV --rater R1 [--rater R2 ...] --pairs N [--policy random] [--seed S] [--json]
    prefrl demo  [--out results/demo]
    prefrl oracle train --env ENV [--steps N] [--seed S] [--resume] | prefrl oracle eval --env ENV
    prefrl oracle correct-value --env ENV [--episodes N] [--fit-steps N] [--rank-weight W]
    prefrl dataset build --env ENV --rater R [--episodes N] [--noise S] [--segment 64] [--pairs P]
    prefrl sweep --env E1,E2 --agent A1,A2 --rater R1,R2 --seeds 5 [--jobs J] [--backend local|ray]
    prefrl plot DIR | prefrl report DIR | prefrl render --run DIR | --env ENV --pair
    prefrl list  (environments, agents, raters)

Errors in user input (unknown env, misspelled config key, bad rater parameter...) print one line naming
the problem and exit with status 2, without a traceback (set ``PREFRL_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from prefrl.raters.base import RaterError
from prefrl.spec_utils import SpecError
from prefrl.types import ShapeError

#: exceptions that mean "the user asked for something invalid" rather than a bug
USER_ERRORS: tuple[type[Exception], ...] = (
    SpecError,
    RaterError,
    ShapeError,
    ValueError,
    KeyError,
    FileNotFoundError,
)  # OracleError, DatasetError and RenderError-like input problems derive from ValueError


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["ppo.learning_rate=3e-4", "n_envs=2"]`` -> nested dict with YAML-parsed values."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set expects KEY=VALUE (e.g. ppo.learning_rate=3e-4), got '{item}'")
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _parse_value(value)
    return overrides


def _parse_value(raw: str) -> Any:
    """Numbers and booleans as the rater grammar parses them (``3e-4`` is a float, which YAML 1.1
    would keep a string), anything else (lists, mappings, strings) as YAML."""
    from prefrl.raters.registry import parse_value

    value = parse_value(raw)
    return yaml.safe_load(raw) if isinstance(value, str) else value


def _cmd_run(args: argparse.Namespace) -> int:
    from prefrl.experiment import run_experiment

    run_dir = run_experiment(
        env=args.env,
        agent=args.agent,
        rater=args.rater,
        seed=args.seed,
        steps=args.steps,
        queries=args.queries,
        out=args.out,
        overrides=parse_overrides(args.set),
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
    )
    print(f"run directory: {run_dir}")
    return 0


def _cmd_rate(args: argparse.Namespace) -> int:
    from prefrl.diagnostics import format_report, rate_report
    from prefrl.envs import load_env_spec

    spec = load_env_spec(args.env)
    report = rate_report(spec, args.rater, num_pairs=args.pairs, policy=args.policy, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from prefrl.demo import run_demo

    summary = run_demo(out=args.out, seeds=args.seeds, steps=args.steps)
    print(summary)
    return 0


def _cmd_oracle(args: argparse.Namespace) -> int:
    from prefrl import oracle

    if args.oracle_command == "train":
        oracle.train_oracle(
            args.env,
            steps=args.steps,
            seed=args.seed,
            algo=args.algo,
            n_levels=args.levels,
            stop_return=args.stop_return,
            max_minutes=args.max_minutes,
            resume=args.resume,
        )
    elif args.oracle_command == "correct-value":
        given = {
            "episodes": args.episodes,
            "validation_episodes": args.validation_episodes,
            "steps": args.fit_steps,
            "rank_weight": args.rank_weight,
            "seed": args.seed,
        }
        oracle.correct_value(args.env, **{key: value for key, value in given.items() if value is not None})
    else:
        print(json.dumps(oracle.evaluate_oracle(args.env, episodes=args.episodes, seed=args.seed), indent=2))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from prefrl.agents import list_agents
    from prefrl.envs import list_env_specs
    from prefrl.raters import list_raters

    print("environments:", ", ".join(list_env_specs()))
    print("agents:      ", ", ".join(list_agents()))
    print("raters:      ", ", ".join(list_raters()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefrl", description="Preference-based RL testbed on continuous control."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train one agent on one env (one run directory)")
    run.add_argument("--env", default="pendulum", help="env spec name (envs/*.yaml) or gymnasium id")
    run.add_argument("--agent", required=True, help="agent name (agents/*.yaml)")
    run.add_argument("--rater", default=None, help="rater spec, e.g. partial_return or mistake:eps=0.2")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--steps", type=int, default=None, help="env steps (default: the agent config's)")
    run.add_argument("--queries", type=int, default=None, help="rater query budget")
    run.add_argument("--out", default=None, help="run directory (default runs/ENV/AGENT/RATER/seedS)")
    run.add_argument("--eval-freq", type=int, default=None, help="env steps between evaluations")
    run.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable"
    )
    run.set_defaults(func=_cmd_run)

    rate = sub.add_parser("rate", help="label segment pairs with raters and print diagnostics")
    rate.add_argument("--env", default="pendulum")
    rate.add_argument("--rater", action="append", required=True, help="rater spec, repeatable")
    rate.add_argument("--pairs", type=int, default=10_000)
    rate.add_argument("--policy", default="random", help="policy that generates the segments")
    rate.add_argument("--seed", type=int, default=0)
    rate.add_argument("--json", action="store_true", help="print one JSON object")
    rate.set_defaults(func=_cmd_rate)

    demo = sub.add_parser("demo", help="quick comparison on the default env: curves + summary")
    demo.add_argument("--out", default="results/demo")
    demo.add_argument("--seeds", type=int, default=None)
    demo.add_argument("--steps", type=int, default=None)
    demo.set_defaults(func=_cmd_demo)

    orc = sub.add_parser("oracle", help="train or evaluate an env's oracle expert")
    orc_sub = orc.add_subparsers(dest="oracle_command", required=True)
    train = orc_sub.add_parser("train", help="train an expert on the true reward and save checkpoints")
    train.add_argument("--env", required=True)
    train.add_argument("--steps", type=int, default=None, help="default: agents/oracle.yaml")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--algo", choices=["sac", "ppo"], default=None)
    train.add_argument("--levels", type=int, default=5, help="skill-level checkpoints to keep")
    train.add_argument(
        "--stop-return",
        type=float,
        default=None,
        help="SAC: stop once a 5-episode evaluation reaches this mean return (default: agents/oracle.yaml)",
    )
    train.add_argument("--max-minutes", type=float, default=None, help="SAC: wall-time cap on training")
    train.add_argument(
        "--resume",
        action="store_true",
        help="SAC: continue the run saved under runs/oracle_training/ENV-seedS (up to --steps in total)",
    )
    evl = orc_sub.add_parser("eval", help="re-measure the shipped checkpoints and the value function")
    evl.add_argument("--env", required=True)
    evl.add_argument("--episodes", type=int, default=20)
    evl.add_argument("--seed", type=int, default=0)
    fix = orc_sub.add_parser(
        "correct-value", help="fit the Monte-Carlo correction of the shipped expert's value function"
    )
    fix.add_argument("--env", required=True)
    # defaults: the env's value_correction settings in agents/oracle.yaml
    fix.add_argument("--episodes", type=int, default=None, help="training rollouts of the expert")
    fix.add_argument("--validation-episodes", type=int, default=None, help="rollouts that pick the best fit")
    fix.add_argument("--fit-steps", type=int, default=None, help="Adam steps")
    fix.add_argument(
        "--rank-weight",
        type=float,
        default=None,
        help="weight of the pairwise ranking loss (0: squared error only)",
    )
    fix.add_argument("--seed", type=int, default=None)
    orc.set_defaults(func=_cmd_oracle)

    from prefrl.datasets import add_dataset_parser
    from prefrl.render import add_render_parser
    from prefrl.sweep import add_plot_parser, add_report_parser, add_sweep_parser

    for add_parser in (
        add_dataset_parser,
        add_sweep_parser,
        add_plot_parser,
        add_report_parser,
        add_render_parser,
    ):
        add_parser(sub)

    lst = sub.add_parser("list", help="list environments, agents and raters")
    lst.set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except USER_ERRORS as e:
        if os.environ.get("PREFRL_DEBUG"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"prefrl {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prefrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
