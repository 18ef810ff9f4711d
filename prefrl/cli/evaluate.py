"""``prefrl evaluate DIR...``: the end-of-run evaluation of finished runs (:mod:`prefrl.final_evaluation`)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from prefrl.cli.values import int_in, seed
from prefrl.final_evaluation import (
    DEFAULT_EPISODES,
    FINAL_EVAL_FILE,
    FINAL_EVAL_SEED,
    MAX_EPISODES,
    FinalEvalOutcome,
    evaluate_final_runs,
)

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add ``prefrl evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score finished runs on many held-out episodes (the final score reports use)",
        description="Evaluate the saved deterministic policy of every finished run under the given "
        f"directories on held-out start states and write {FINAL_EVAL_FILE} into each run directory; "
        "plot, report and the analysis functions then use it as the run's final score. Runs already "
        "evaluated with the same episodes and seed are read back, so an interrupted call resumes.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="a run directory or a folder of them")
    parser.add_argument(
        "--episodes", type=int_in(1, MAX_EPISODES), default=DEFAULT_EPISODES, help="episodes per run"
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=FINAL_EVAL_SEED,
        help="seed of the first episode's start state (the same for every run: one test set)",
    )
    parser.add_argument("--force", action="store_true", help="evaluate again even where already done")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="read runs saved before prefrl's safe policy files by unpickling (only folders you trust)",
    )
    parser.set_defaults(func=cmd_evaluate)


def format_outcome(outcome: FinalEvalOutcome) -> str:
    """One line per run: its mean and std return, normalised score and episodes."""
    result = outcome.result
    assert result is not None
    line = f"{outcome.run_dir}: return {result.mean:.1f} +- {result.std:.1f} over {result.episodes} episodes"
    if not math.isnan(result.normalised_score):
        line += f", score {result.normalised_score:.1f}"
    return line + (" (already evaluated)" if outcome.reused else "")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``prefrl evaluate``: one line per run; runs that cannot be evaluated are listed and exit 2."""
    failed = evaluated = 0
    for outcome in evaluate_final_runs(
        args.dirs, args.episodes, args.seed, force=args.force, trust=args.trust
    ):
        if outcome.error is not None:
            failed += 1
            print(f"prefrl evaluate: error: {outcome.error}", file=sys.stderr)
        else:
            evaluated += 1
            print(format_outcome(outcome), flush=True)
    if evaluated + failed == 0:
        print(f"prefrl evaluate: error: no finished run under {', '.join(args.dirs)}", file=sys.stderr)
        return 2
    if failed:
        print(
            f"prefrl evaluate: {failed} of {evaluated + failed} run(s) could not be evaluated",
            file=sys.stderr,
        )
        return 2
    return 0
