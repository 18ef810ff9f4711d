"""``prefrl oracle train | eval | correct-value``: an env's expert, its checkpoints, its value function."""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefrl.cli.echo import echo_progress
from prefrl.oracle.quality import evaluate_oracle
from prefrl.oracle.training import correct_value, train_oracle

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add ``prefrl oracle`` and its sub-commands."""
    sub = subparsers
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
    orc.set_defaults(func=cmd_oracle)


def cmd_oracle(args: argparse.Namespace) -> int:
    echo_progress("prefrl.oracle.training")
    if args.oracle_command == "train":
        train_oracle(
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
        correct_value(args.env, **{key: value for key, value in given.items() if value is not None})
    else:
        print(json.dumps(evaluate_oracle(args.env, episodes=args.episodes, seed=args.seed), indent=2))
    return 0
