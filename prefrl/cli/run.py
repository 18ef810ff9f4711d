"""``prefrl run``, ``prefrl sweep`` and ``prefrl demo``: training one run, a grid of runs, the quick demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefrl.agents import list_agents
from prefrl.analysis import FinalEvaluation, final_evaluation
from prefrl.cli.echo import echo_progress
from prefrl.cli.values import seed
from prefrl.config import parse_overrides
from prefrl.demo import DEMO_OFFLINE_STEPS, DEMO_ONLINE_STEPS, DEMO_SEEDS, run_demo
from prefrl.envs import DEFAULT_ENV
from prefrl.errors import ConfigError
from prefrl.experiment import run_experiment
from prefrl.raters import list_raters
from prefrl.sweep import BACKENDS, RayNotInstalledError, import_ray, run_sweep

__all__ = ["add_parser"]


def _agent_help() -> str:
    return f"agent: one of {', '.join(list_agents())} (see `prefrl list`)"


def _rater_help() -> str:
    return (
        "rater spec NAME[:KEY=VALUE,...][+WRAPPER...], e.g. partial_return or regret+mistake:eps=0.2; "
        f"names: {', '.join(list_raters())}"
    )


ENV_HELP = "env spec name (one of `prefrl list`'s environments), gymnasium id or path to a spec YAML"


def add_parser(subparsers: Any) -> None:
    """Add ``prefrl run``, ``prefrl sweep`` and ``prefrl demo``."""
    sub = subparsers
    run = sub.add_parser(
        "run",
        help="train one agent on one env (one run directory)",
        description="Train one agent and write one run directory; ends with the final true return and "
        "normalised score of the deterministic policy.",
    )
    run.add_argument("--env", default=DEFAULT_ENV, help=ENV_HELP)
    run.add_argument("--agent", required=True, help=_agent_help())
    run.add_argument(
        "--rater",
        default=None,
        help=_rater_help() + " (default: none; agents that learn from preferences need one)",
    )
    run.add_argument("--seed", type=seed, default=0, help="run seed")
    run.add_argument(
        "--steps",
        type=int,
        default=None,
        help="env steps for online agents, gradient steps for offline ones (cpl, p_iql, bc) (default: the "
        "agent config's total_steps)",
    )
    run.add_argument(
        "--queries",
        type=int,
        default=None,
        help="rater query budget; cpl/p_iql/bc: labelled pairs taken from the dataset, 0 = all (default: the "
        "agent config's)",
    )
    run.add_argument("--out", default=None, help="run directory (default: runs/ENV/AGENT/RATER/seedS)")
    run.add_argument(
        "--eval-freq", type=int, default=None, help="steps between evaluations (default: the agent config's)"
    )
    run.add_argument(
        "--eval-episodes",
        type=int,
        default=None,
        help="episodes per evaluation (default: the agent config's)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="config override, repeatable; nested keys with dots, e.g. ppo.learning_rate=3e-4",
    )
    run.add_argument(
        "--beside",
        action="store_true",
        help="if --out holds a finished run with other settings, write this run next to it (OUT-HASH) "
        "instead of stopping",
    )
    add_device_argument(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo",
        help="quick comparison on the default env: curves + summary",
        description=f"Train every agent of the demo grid on {DEFAULT_ENV} and write learning curves, "
        "summary.md and report.md.",
    )
    demo.add_argument("--out", default="results/demo", help="output directory")
    demo.add_argument("--seeds", type=int, default=DEMO_SEEDS, help="seeds per agent")
    demo.add_argument("--steps", type=int, default=DEMO_ONLINE_STEPS, help="env steps of the online agents")
    demo.add_argument(
        "--offline-steps",
        type=int,
        default=DEMO_OFFLINE_STEPS,
        help="gradient steps of the offline agents (cpl, p_iql, bc)",
    )
    demo.set_defaults(func=cmd_demo)

    add_sweep_parser(subparsers)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda[:k]`` (SB3's convention)."""
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (CUDA when available, for the agents it speeds up: cpl, p_iql, bc), cpu, "
        "cuda or cuda:K (default: %(default)s)",
    )


def cmd_run(args: argparse.Namespace) -> int:
    run_dir = run_experiment(
        env=args.env,
        agent=args.agent,
        rater=args.rater,
        seed=args.seed,
        steps=args.steps,
        queries=args.queries,
        out=args.out,
        overrides=parse_overrides(args.set or []),
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
        beside=args.beside,
        device=args.device,
    )
    print(format_final(final_evaluation(run_dir)))
    print(f"run directory: {run_dir}")
    return 0


def format_final(final: FinalEvaluation) -> str:
    """``final: return -152.3 +- 9.8, normalised score 96.1 (deterministic policy, 10 episodes, ...)``."""
    score = f"{final.normalised_score:.1f}" if final.has_normalised_score else "n/a (env has no anchors)"
    episodes = "" if final.episodes is None else f", {final.episodes} episode{'s' * (final.episodes != 1)}"
    # offline agents spend no queries while they learn: their count is the dataset's labelled pairs
    queries = "labelled pairs" if final.step_unit == "gradient steps" else "queries"
    return (
        f"final: return {final.true_return:.1f} +- {final.true_return_std:.1f}, normalised score {score} "
        f"(deterministic policy{episodes}; {final.steps:,} {final.step_unit}, {final.queries:,} {queries})"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    echo_progress("prefrl.demo")
    summary = run_demo(out=args.out, seeds=args.seeds, steps=args.steps, offline_steps=args.offline_steps)
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
    p.add_argument(
        "--env", action="append", required=True, help="env spec(s), comma-separated or repeated; " + ENV_HELP
    )
    p.add_argument(
        "--agent",
        action="append",
        required=True,
        help="agent(s), comma-separated or repeated; each " + _agent_help().removeprefix("agent: "),
    )
    p.add_argument(
        "--rater",
        action="append",
        default=None,
        help="rater spec(s), comma-separated or repeated (e.g. partial_return,mistake:eps=0.2); "
        "agents that need no rater run once with rater 'none'; names: " + ", ".join(list_raters()),
    )
    p.add_argument("--seeds", default="3", help="a count n (seeds 0..n-1) or a list like 0,1,5")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="env steps per run, gradient steps for cpl/p_iql/bc (default: each agent config's)",
    )
    p.add_argument(
        "--queries", type=int, default=None, help="query budget per run (default: each agent config's)"
    )
    p.add_argument("--out", default="runs", help="sweep root directory")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs (default: number of cores)")
    p.add_argument(
        "--backend", choices=BACKENDS, default="local", help="where runs execute: " + ", ".join(BACKENDS)
    )
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument(
        "--eval-freq", type=int, default=None, help="steps between evaluations (default: each agent config's)"
    )
    p.add_argument(
        "--eval-episodes",
        type=int,
        default=None,
        help="episodes per evaluation (default: each agent config's)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="config override for every agent, repeatable",
    )
    p.add_argument(
        "--beside",
        action="store_true",
        help="runs finished with other settings are kept: the new ones go next to them (seedK-HASH) "
        "instead of stopping the sweep",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_argument(p)
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
    """``prefrl sweep``: exit 0 if no run failed (runs left to a concurrent sweep included), 1 if runs
    failed, 130 if interrupted."""
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
        overrides=parse_overrides(args.set or []) or None,
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
        progress=False if args.no_progress else None,
        beside=args.beside,
        device=args.device,
    )
    print(result.summary())
    for outcome in result.failed:
        print(f"  failed: {outcome.cell.label}: {outcome.error}")
    for outcome in result.locked:
        print(f"  running elsewhere: {outcome.error}")
    if result.failed:
        print(f"  details: {Path(args.out) / 'failures.csv'} and each run's error.txt")
    if result.interrupted:
        return 130
    return 1 if result.failed else 0
