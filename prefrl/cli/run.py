"""``prefrl run``, ``prefrl sweep`` and ``prefrl demo``: training one run, a grid of runs, the quick demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefrl.cli.echo import echo_progress
from prefrl.config import parse_overrides
from prefrl.demo import run_demo
from prefrl.errors import ConfigError
from prefrl.experiment import run_experiment
from prefrl.sweep import BACKENDS, RayNotInstalledError, import_ray, run_sweep

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add ``prefrl run``, ``prefrl sweep`` and ``prefrl demo``."""
    sub = subparsers
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
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="quick comparison on the default env: curves + summary")
    demo.add_argument("--out", default="results/demo")
    demo.add_argument("--seeds", type=int, default=None)
    demo.add_argument("--steps", type=int, default=None)
    demo.set_defaults(func=cmd_demo)

    add_sweep_parser(subparsers)


def cmd_run(args: argparse.Namespace) -> int:
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


def cmd_demo(args: argparse.Namespace) -> int:
    echo_progress("prefrl.demo")
    summary = run_demo(out=args.out, seeds=args.seeds, steps=args.steps)
    print(summary)
    return 0


def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prefrl sweep`` to an argparse sub-parser collection; returns the new parser."""
    p = subparsers.add_parser(
        "sweep",
        help="run a grid env x agent x rater x seed (resumable, parallel)",
        description="Run every (env, agent, rater, seed) cell as its own run directory under --out. "
        "Finished runs are skipped, so re-running the same command resumes an interrupted sweep.",
    )
    p.add_argument("--env", action="append", required=True, help="env spec(s), comma-separated or repeated")
    p.add_argument("--agent", action="append", required=True, help="agent(s), comma-separated or repeated")
    p.add_argument(
        "--rater",
        action="append",
        default=None,
        help="rater spec(s), comma-separated or repeated (e.g. partial_return,mistake:eps=0.2); "
        "agents that need no rater run once with rater 'none'",
    )
    p.add_argument("--seeds", default="3", help="a count n (seeds 0..n-1) or a list like 0,1,5")
    p.add_argument("--steps", type=int, default=None, help="env steps per run (default: agent config's)")
    p.add_argument("--queries", type=int, default=None, help="query budget per run")
    p.add_argument("--out", default="runs", help="sweep root directory (default: runs)")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs (default: number of cores)")
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--eval-freq", type=int, default=None, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every agent"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)
    return p


def _parse_seeds(text: str) -> int | list[int]:
    try:
        parts = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError as e:
        raise ConfigError(f"--seeds expects a count or a comma-separated list of ints, got '{text}'") from e
    if len(parts) == 1 and "," not in str(text):
        return parts[0]
    return parts


def cmd_sweep(args: argparse.Namespace) -> int:
    """``prefrl sweep``: exit 0 if the grid is complete, 1 if runs failed, 130 if interrupted."""
    if args.backend == "ray":
        try:
            import_ray()
        except RayNotInstalledError as e:
            print(f"prefrl sweep: error: {e}", file=sys.stderr)
            return 2
    result = run_sweep(
        envs=args.env,
        agents=args.agent,
        raters=args.rater,
        seeds=_parse_seeds(args.seeds),
        steps=args.steps,
        queries=args.queries,
        out=args.out,
        jobs=args.jobs,
        backend=args.backend,
        address=args.address,
        overrides=parse_overrides(args.set) or None,
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
        progress=False if args.no_progress else None,
    )
    print(result.summary())
    for outcome in result.failed:
        print(f"  failed: {outcome.cell.label}: {outcome.error}")
    if result.failed:
        print(f"  details: {Path(args.out) / 'failures.csv'} and each run's error.txt")
    if result.interrupted:
        return 130
    return 1 if result.failed else 0
