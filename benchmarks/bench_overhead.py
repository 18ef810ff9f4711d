"""Benchmark: the wall-time overhead of learning from preferences, per env step, against PPO.

Runs ``ppo`` (true reward), ``rm_ppo`` (``partial_return``), ``heron`` (``hierarchical``, segment pairs
under the same budget) and ``spo`` (``partial_return``, no query cap: its most expensive setting) one
after another in one process, seed by seed
with the agent order rotated each seed, so every ratio compares runs made side by side under the same
machine load. Every agent gets the same PPO settings: ``agents/ppo.yaml``'s for the env, with ``n_steps``
rounded to a multiple of the horizon (SPO compares whole trajectories). Evaluation is reduced to the
start and the end (2 episodes) so the timing is training. Writes ``<results>/<env>.csv`` (one row per
run: wall time, per-step time, ratio to the same seed's ppo) and prints the median ratios::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_overhead.py --env pendulum --steps 100000 \\
        --queries 500 --seeds 0 1 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_overhead.py --env halfcheetah --steps 200000 \\
        --queries 1400 --seeds 0 1 2

An untimed short run of every agent comes first (one-time costs of the process). ``--set KEY=VALUE``
overrides rm_ppo's and heron's configs (e.g. ``reward_model.refit_interval=0``: refit after every rollout;
use other ``--runs`` and ``--results``). Finished runs are skipped (``--runs``), so an interrupted benchmark
resumes; its ratios then mix loads.
Beside the wall time, each run's process CPU time is recorded (``cpu_s``; everything runs in this one
process on one thread): on a shared machine whose load changes during the benchmark, the CPU-time ratio
still compares the work done per env step, where the wall-time ratio also measures the neighbours.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from prefrl.config import load_agent_config, parse_overrides
from prefrl.envs import load_env_spec
from prefrl.experiment import run_experiment
from prefrl.spec_utils import deep_update

#: agent -> rater spec
RATERS = {"ppo": None, "rm_ppo": "partial_return", "heron": "hierarchical", "spo": "partial_return"}


def common_ppo_settings(env: str) -> dict:
    """The PPO settings every agent gets: ppo's tuned ones, ``n_steps`` a multiple of the horizon."""
    config = load_agent_config("ppo", env)
    horizon = load_env_spec(env).horizon
    ppo = dict(config["ppo"])
    ppo["n_steps"] = max(1, round(ppo["n_steps"] / horizon)) * horizon
    return {
        "n_envs": config["n_envs"],
        "normalize": config["normalize"],
        "policy_kwargs": config["policy_kwargs"],
        "ppo": ppo,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="pendulum")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500, help="budget of rm_ppo and heron")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--agents", nargs="+", default=list(RATERS), choices=list(RATERS))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_overhead"))
    parser.add_argument("--results", type=Path, default=Path("results/overhead"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of rm_ppo and heron (e.g. reward_model.refit_interval=0), repeatable",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    overrides = common_ppo_settings(args.env)
    learner_overrides = parse_overrides(args.set)
    # one short untimed run of every agent first: the process's one-time costs (imports on first use,
    # lazily built kernels) would otherwise land on whichever run comes first
    with tempfile.TemporaryDirectory() as warmup:
        for agent in args.agents:
            run_experiment(
                args.env,
                agent,
                RATERS[agent],
                seed=0,
                steps=2 * int(overrides["ppo"]["n_steps"]) * int(overrides["n_envs"]),
                queries=0 if agent in ("ppo", "spo") else 20,
                out=Path(warmup) / agent,
                overrides=overrides,
                n_eval_episodes=1,
                progress_bar=False,
            )
    rows = []
    for k, seed in enumerate(args.seeds):
        order = args.agents[k % len(args.agents) :] + args.agents[: k % len(args.agents)]
        for agent in order:
            out = args.runs / args.env / agent / f"seed{seed}"
            cpu_start = time.process_time()
            run_dir = run_experiment(
                args.env,
                agent,
                RATERS[agent],
                seed=seed,
                steps=args.steps,
                # spo: no cap (every comparison of its rollouts), its most expensive setting
                queries=0 if agent in ("ppo", "spo") else args.queries,
                out=out,
                overrides=deep_update(overrides, learner_overrides)
                if agent in ("rm_ppo", "heron")
                else overrides,
                eval_freq=args.steps,
                n_eval_episodes=2,
                progress_bar=False,
            )
            last = pd.read_csv(run_dir / "progress.csv").iloc[-1]
            wall = json.loads((run_dir / "meta.json").read_text())["wall_s"]
            cpu_file = run_dir / "bench_cpu.json"
            if not cpu_file.is_file():  # (a resumed benchmark skips finished runs: keep their CPU time)
                cpu_file.write_text(json.dumps({"cpu_s": time.process_time() - cpu_start}))
            cpu = json.loads(cpu_file.read_text())["cpu_s"]
            rows.append(
                {
                    "env": args.env,
                    "agent": agent,
                    "seed": seed,
                    "env_steps": int(last["env_steps"]),
                    "queries_asked": int(last.get("queries_asked", 0)),
                    "wall_s": wall,
                    "ms_per_step": 1000.0 * wall / int(last["env_steps"]),
                    "cpu_s": cpu,
                    "cpu_ms_per_step": 1000.0 * cpu / int(last["env_steps"]),
                    "rm_fit_s": float(last.get("rm_fit_s", math.nan)),
                }
            )
            print(f"[overhead] {args.env} {agent} seed {seed}: {wall:.1f} s, CPU {cpu:.1f} s", flush=True)
            # written after every run, so an interrupted benchmark keeps its finished part
            table = write_table(rows, args.results / f"{args.env}.csv")
    summary = table.groupby("agent")[["ratio_to_ppo", "cpu_ratio_to_ppo"]].agg(["median", "min", "max"])
    print(summary.round(3).to_string())


def write_table(rows: list[dict], path: Path) -> pd.DataFrame:
    """The runs so far with each run's ratio to the same seed's ppo (NaN until that ppo run exists)."""
    table = pd.DataFrame(rows)
    ppo = table[table["agent"] == "ppo"].set_index("seed")["ms_per_step"]
    table["ratio_to_ppo"] = table["ms_per_step"] / table["seed"].map(ppo)
    ppo_cpu = table[table["agent"] == "ppo"].set_index("seed")["cpu_ms_per_step"]
    table["cpu_ratio_to_ppo"] = table["cpu_ms_per_step"] / table["seed"].map(ppo_cpu)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table


if __name__ == "__main__":
    main()
