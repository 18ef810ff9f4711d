"""Benchmark: rm_ppo and heron against PPO on the true reward (Pendulum-v1 by default).

Runs, one at a time and seed by seed (so the PPO / rm_ppo wall times are measured side by side under the
same machine load): ``ppo`` (true reward), ``rm_ppo`` (``partial_return`` rater, ``--queries`` labels)
and ``heron`` (``hierarchical`` rater, one query per state pair). Then writes, under ``--results``:

* ``rm_ppo/summary.csv`` and ``heron/summary.csv`` - one row per run (final true return, normalised
  score, queries, reward-model accuracy, reward correlation, wall time) and a median row per agent;
* ``rm_ppo/curves.png`` and ``heron/curves.png`` - normalised score vs env steps (median and range over
  seeds) against PPO on the true reward;
* ``rm_ppo/speed.csv`` - rm_ppo / ppo wall-time ratio per seed.

Run directories go to ``--runs`` (finished runs are skipped, so an interrupted benchmark resumes)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rm_ppo.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from prefrl.envs import load_env_spec
from prefrl.experiment import run_experiment

#: agent -> rater spec
RATERS = {"ppo": None, "rm_ppo": "partial_return", "heron": "hierarchical"}
COLORS = {"ppo": "tab:gray", "rm_ppo": "tab:blue", "heron": "tab:green"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="pendulum")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per run")
    parser.add_argument("--queries", type=int, default=500, help="rm_ppo query budget")
    parser.add_argument("--heron-queries", type=int, default=None, help="heron budget (default: --steps)")
    parser.add_argument("--agents", nargs="+", default=["rm_ppo", "ppo", "heron"], choices=list(RATERS))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_rm_ppo"))
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    return parser.parse_args()


def run_all(args: argparse.Namespace) -> dict[tuple[str, int], Path]:
    budgets = {"ppo": 0, "rm_ppo": args.queries, "heron": args.heron_queries or args.steps}
    dirs = {}
    for seed in args.seeds:
        for agent in args.agents:
            out = args.runs / args.env / agent / f"seed{seed}"
            print(f"[bench] {agent} seed {seed} -> {out}", flush=True)
            dirs[agent, seed] = run_experiment(
                args.env,
                agent,
                RATERS[agent],
                seed=seed,
                steps=args.steps,
                queries=budgets[agent],
                out=out,
                n_eval_episodes=args.n_eval_episodes,
                progress_bar=False,
            )
    return dirs


def summarise(dirs: dict[tuple[str, int], Path], env: str) -> pd.DataFrame:
    spec = load_env_spec(env)
    rows = []
    for (agent, seed), run_dir in dirs.items():
        progress = pd.read_csv(run_dir / "progress.csv")
        last = progress.iloc[-1]
        meta = json.loads((run_dir / "meta.json").read_text())
        rows.append(
            {
                "agent": agent,
                "seed": seed,
                "env_steps": int(last["env_steps"]),
                "queries": int(last["queries"]),
                "final_return": float(last["true_return_mean"]),
                "final_score": float(spec.normalise(last["true_return_mean"])),
                # mean of the last 3 evaluations: less sensitive to one lucky/unlucky evaluation
                "last3_score": float(spec.normalise(progress["true_return_mean"].iloc[-3:].mean())),
                "rm_accuracy": float(last.get("rm_accuracy", np.nan)),
                "reward_corr": float(last.get("reward_corr", np.nan)),
                "rm_fit_s": float(last.get("rm_fit_s", np.nan)),
                "wall_s": float(meta["wall_s"]),
            }
        )
    return pd.DataFrame(rows)


def with_median(df: pd.DataFrame) -> pd.DataFrame:
    numeric = df.drop(columns=["agent", "seed"])
    medians = numeric.groupby(df["agent"]).median().reset_index()
    medians["seed"] = "median"
    return pd.concat([df, medians[df.columns]], ignore_index=True)


def plot_curves(dirs: dict[tuple[str, int], Path], agents: list[str], env: str, path: Path) -> None:
    spec = load_env_spec(env)
    fig, ax = plt.subplots(figsize=(6, 4))
    for agent in agents:
        curves = [
            pd.read_csv(d / "progress.csv")[["env_steps", "true_return_mean"]]
            for (a, _), d in dirs.items()
            if a == agent
        ]
        if not curves:
            continue
        steps = curves[0]["env_steps"].to_numpy()
        n = min(len(c) for c in curves)
        scores = np.stack([spec.normalise(c["true_return_mean"].to_numpy()[:n]) for c in curves])
        label = f"{agent} ({len(curves)} seeds)"
        ax.plot(steps[:n], np.median(scores, axis=0), color=COLORS[agent], label=label)
        ax.fill_between(steps[:n], scores.min(0), scores.max(0), color=COLORS[agent], alpha=0.2)
    ax.axhline(0, color="k", lw=0.5)
    ax.axhline(100, color="k", lw=0.5, ls="--")
    ax.set_xlabel("env steps")
    ax.set_ylabel("normalised score (median, min-max)")
    ax.set_title(f"{spec.gym_id}: random = 0, oracle = 100")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    torch.set_num_threads(1)
    args = parse_args()
    dirs = run_all(args)
    df = summarise(dirs, args.env)
    for agent in ("rm_ppo", "heron"):
        if agent not in args.agents:
            continue
        out = args.results / agent
        out.mkdir(parents=True, exist_ok=True)
        subset = df[df["agent"].isin([agent, "ppo"])]
        with_median(subset).to_csv(out / "summary.csv", index=False, float_format="%.4g")
        plot_curves(dirs, ["ppo", agent], args.env, out / "curves.png")
        print(with_median(subset).to_string(index=False))
    if {"ppo", "rm_ppo"} <= set(args.agents):
        wall = df.pivot(index="seed", columns="agent", values="wall_s")
        speed = pd.DataFrame(
            {"seed": wall.index, "ppo_wall_s": wall["ppo"], "rm_ppo_wall_s": wall["rm_ppo"]}
        ).reset_index(drop=True)
        speed["ratio"] = speed["rm_ppo_wall_s"] / speed["ppo_wall_s"]
        speed.to_csv(args.results / "rm_ppo" / "speed.csv", index=False, float_format="%.4g")
        print(speed.to_string(index=False))
        print(f"median wall-time ratio rm_ppo / ppo: {speed['ratio'].median():.3f}")


if __name__ == "__main__":
    main()
