"""``prefrl oracle train | eval | correct-value | install``: an env's expert, its checkpoints, its value
function.

``--env`` takes an env spec name or a path to a spec YAML in every sub-command. ``train`` and
``correct-value`` write the user oracle folder (``$PREFRL_ORACLE_DIR/<spec name>``, default
``${XDG_CACHE_HOME:-~/.cache}/prefrl/oracles/<spec name>``) or ``--out DIR``, which the loader prefers to
the shipped experts; ``install`` (maintainers) copies a complete oracle into the package and records its
anchors in the env YAML. Progress goes to stdout (a line every ~10% of training, or SB3's progress bar on
a terminal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefrl.cli.echo import echo_progress
from prefrl.oracle.loading import ORACLE_DIR_ENV
from prefrl.oracle.quality import evaluate_oracle
from prefrl.oracle.storage import install_oracle
from prefrl.oracle.training import correct_value, train_oracle

__all__ = ["add_parser"]

ENV_HELP = "env spec name (see `prefrl list`) or path to a spec YAML"
USER_FOLDER = (
    f"${ORACLE_DIR_ENV}/ENV, else $XDG_CACHE_HOME/prefrl/oracles/ENV, else ~/.cache/prefrl/oracles/ENV "
    "(ENV: the spec's name)"
)
LOOKUP = f"the oracle the loader uses: the user folder ({USER_FOLDER}) if it exists, else the shipped one"


def add_parser(subparsers: Any) -> None:
    """Add ``prefrl oracle`` and its sub-commands."""
    sub = subparsers
    orc = sub.add_parser(
        "oracle",
        help="train, evaluate, correct or install an env's oracle expert",
        description="An env's oracle expert. Loading order: an explicit --from DIR, then the user folder "
        f"({USER_FOLDER}), then the shipped checkpoints. Only complete oracle folders are loaded.",
    )
    orc_sub = orc.add_subparsers(dest="oracle_command", required=True)
    train = orc_sub.add_parser(
        "train",
        help="train an expert on the true reward into the user folder (or --out)",
        description="Train an expert on the true reward, keep skill-level checkpoints, measure R_random and "
        "R_oracle (recorded in the oracle's manifest.json; the env YAML is not changed) and fit the value "
        "correction. The oracle folder is replaced only once the new one is complete.",
    )
    train.add_argument("--env", required=True, help=ENV_HELP)
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"oracle folder to write (default: the user folder, {USER_FOLDER}); not the shipped checkpoints",
    )
    train.add_argument("--steps", type=int, default=None, help="env steps (default: agents/oracle.yaml)")
    train.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    train.add_argument(
        "--algo", choices=["sac", "ppo"], default=None, help="(default: agents/oracle.yaml, per env)"
    )
    train.add_argument(
        "--levels", type=int, default=5, help="skill-level checkpoints to keep (default: %(default)s)"
    )
    train.add_argument(
        "--stop-return",
        type=float,
        default=None,
        help="SAC: stop once a 5-episode evaluation reaches this mean return (default: agents/oracle.yaml)",
    )
    train.add_argument(
        "--max-minutes", type=float, default=None, help="SAC: wall-time cap on training (default: none)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="SAC: continue the run whose training state is kept beside the output folder "
        "(OUT.training/seedS, e.g. ~/.cache/prefrl/oracles/ENV.training/seed0), up to --steps in total",
    )
    train.add_argument(
        "--trust",
        action="store_true",
        help="with --resume: also read a training state saved by an older prefrl as SB3's model.zip, "
        "which is UNPICKLED: a crafted file runs code. Only for states you wrote yourself",
    )
    evl = orc_sub.add_parser(
        "eval",
        help="re-measure an oracle's checkpoints and value function (prints its folder)",
        description=f"Re-measure {LOOKUP}, or the one in --from DIR. Prints JSON that names the folder.",
    )
    evl.add_argument("--env", required=True, help=ENV_HELP)
    evl.add_argument(
        "--from", dest="source", type=Path, default=None, help=f"oracle folder (default: {LOOKUP})"
    )
    evl.add_argument(
        "--episodes", type=int, default=20, help="episodes per checkpoint (default: %(default)s)"
    )
    evl.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    fix = orc_sub.add_parser(
        "correct-value",
        help="fit the Monte-Carlo correction of an oracle's value function",
        description="Fit the value correction of an oracle's expert and write the corrected oracle (staged "
        "and renamed into place). Fit settings default to the env's value_correction in agents/oracle.yaml.",
    )
    fix.add_argument("--env", required=True, help=ENV_HELP)
    fix.add_argument(
        "--from", dest="source", type=Path, default=None, help=f"oracle to correct (default: {LOOKUP})"
    )
    fix.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the corrected oracle goes (default: the --from folder, else the user folder; "
        "never the shipped checkpoints)",
    )
    # defaults: the env's value_correction settings in agents/oracle.yaml
    fix.add_argument(
        "--episodes", type=int, default=None, help="training rollouts of the expert (default: oracle.yaml)"
    )
    fix.add_argument(
        "--validation-episodes",
        type=int,
        default=None,
        help="rollouts that pick the best fit (default: oracle.yaml)",
    )
    fix.add_argument("--fit-steps", type=int, default=None, help="Adam steps (default: oracle.yaml)")
    fix.add_argument(
        "--rank-weight",
        type=float,
        default=None,
        help="weight of the pairwise ranking loss, 0: squared error only (default: oracle.yaml, else 0)",
    )
    fix.add_argument("--seed", type=int, default=None, help="(default: oracle.yaml, else 0)")
    ins = orc_sub.add_parser(
        "install",
        help="maintainers: copy a complete oracle into the shipped checkpoints, anchors into the env YAML",
        description="Copy a complete oracle (default: the user folder) into "
        "prefrl/oracle/checkpoints/<name>/ and record its measured R_random / R_oracle in the env spec "
        "YAML (normalisation). Incomplete or damaged oracles are refused.",
    )
    ins.add_argument("--env", required=True, help=ENV_HELP)
    ins.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        help=f"oracle folder to install (default: the user folder, {USER_FOLDER})",
    )
    orc.set_defaults(func=cmd_oracle)


def cmd_oracle(args: argparse.Namespace) -> int:
    if args.oracle_command == "train":
        echo_progress("prefrl.oracle")
        train_oracle(
            args.env,
            steps=args.steps,
            seed=args.seed,
            algo=args.algo,
            out=args.out,
            n_levels=args.levels,
            stop_return=args.stop_return,
            max_minutes=args.max_minutes,
            resume=args.resume,
            progress_bar=sys.stdout.isatty(),
            trust=args.trust,
        )
    elif args.oracle_command == "correct-value":
        echo_progress("prefrl.oracle")
        given = {
            "episodes": args.episodes,
            "validation_episodes": args.validation_episodes,
            "steps": args.fit_steps,
            "rank_weight": args.rank_weight,
            "seed": args.seed,
        }
        correct_value(
            args.env,
            directory=args.source,
            out=args.out,
            **{key: value for key, value in given.items() if value is not None},
        )
    elif args.oracle_command == "install":
        echo_progress("prefrl.oracle")
        install_oracle(args.env, source=args.source)
    else:
        # stdout is the JSON report alone: it names the folder the oracle came from
        report = evaluate_oracle(args.env, episodes=args.episodes, seed=args.seed, directory=args.source)
        print(json.dumps(report, indent=2))
    return 0
