"""SPO acceptance benchmark on Pendulum-v1: score with the partial-return rater, and speed against PPO.

Three steps, each resumable (finished runs are skipped), run one training at a time::

    # 1. training runs: spo (partial_return) and ppo on the true reward with SPO's PPO settings
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_spo.py runs --seeds 0 1 2 --steps 200000
    # 2. wall time per env step, spo vs ppo, same PPO settings, training only (no evaluation), interleaved
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_spo.py timing --steps 40000 --repeats 2
    # 3. results/spo/summary.csv, results/spo/timing.csv, results/spo/curves.png
    .venv/bin/python benchmarks/bench_spo.py report

Normalised score = 100 * (R - R_random) / (R_oracle - R_random) with the anchors of envs/pendulum.yaml.
Raw runs go to results/spo/runs/ (git-ignored); the summary files and the plot are committed.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd
import torch
import yaml

from prefrl.config import load_agent_config
from prefrl.envs import load_env_spec
from prefrl.spec_utils import PROJECT_ROOT

OUT = PROJECT_ROOT / "results" / "spo"
ENV = "pendulum"


def ppo_overrides() -> dict:
    """PPO on the true reward with exactly SPO's PPO settings on the env (network, n_envs, ppo section)."""
    spo = load_agent_config("spo", ENV)
    return {key: spo[key] for key in ("n_envs", "ppo", "policy_kwargs", "normalize")}


#: SPO variants for ablations: name -> agent config overrides
SPO_VARIANTS: dict[str, dict] = {
    "spo": {},
    # no learning-rate decay (earlier 200k-step SPO runs collapsed late without it)
    "spo_constant_lr": {"ppo": {"learning_rate": 1e-3}},
}


def run_dir(variant: str, rater: str, seed: int) -> Path:
    return OUT / "runs" / f"{variant}_{rater}_s{seed}"


def cmd_runs(args: argparse.Namespace) -> None:
    from prefrl.experiment import run_experiment

    torch.set_num_threads(1)
    jobs = [
        ("spo", variant, args.rater, seed, SPO_VARIANTS[variant])
        for variant in args.variants
        for seed in args.seeds
    ]
    jobs += [("ppo", "ppo", "none", seed, ppo_overrides()) for seed in args.ppo_seeds]
    for agent, variant, rater, seed, overrides in jobs:
        start = time.perf_counter()
        out = run_experiment(
            ENV, agent, None if rater == "none" else rater, seed, steps=args.steps,
            out=run_dir(variant, rater, seed), overrides=overrides, progress_bar=False,
        )  # fmt: skip
        final = pd.read_csv(out / "progress.csv").iloc[-1]
        print(
            f"{variant:15s} {rater:15s} seed {seed}: score {final['normalised_score']:7.1f} "
            f"return {final['true_return_mean']:8.1f} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


def timed(fn: Callable[..., Any], totals: dict[str, float], key: str) -> Callable[..., Any]:
    """``fn`` that adds its wall time to ``totals[key]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    return wrapper


def time_learn(agent_name: str, steps: int, seed: int) -> dict[str, float]:
    """Wall time of ``agent.learn(steps)`` (no evaluation) with the benchmark's settings.

    For spo, also the time inside SPO's own code: the relabel hook (cutting, pairing, rater, win rates)
    and the recorder (its step_wait minus the wrapped envs' step_wait).
    """
    from prefrl.agents import make_agent
    from prefrl.raters import make_rater

    spec = load_env_spec(ENV)
    if agent_name == "spo":
        config, rater = load_agent_config("spo", ENV), make_rater("partial_return", spec)
    else:
        config, rater = load_agent_config("ppo", ENV, ppo_overrides()), None
    agent = make_agent(agent_name, spec, config, rater=rater, seed=seed)
    agent.progress_bar = False
    totals = {"relabel_s": 0.0, "recorder_s": 0.0, "env_s": 0.0}
    if agent_name == "spo":
        buffer, recorder = agent.model.rollout_buffer, agent._recorder
        buffer.relabel_hook = timed(buffer.relabel_hook, totals, "relabel_s")
        # instance attributes shadow the methods VecEnv.step calls
        recorder.step_wait = timed(recorder.step_wait, totals, "recorder_s")
        recorder.venv.step_wait = timed(recorder.venv.step_wait, totals, "env_s")
    start = time.perf_counter()
    agent.learn(steps, 0)
    elapsed = time.perf_counter() - start
    agent.close()
    own = totals["relabel_s"] + max(totals["recorder_s"] - totals["env_s"], 0.0)
    return {"seconds": elapsed, "relabel_s": totals["relabel_s"], "spo_own_s": own}


def cmd_timing(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    rows = []
    for repeat in range(args.repeats):
        # interleaved, first one then the other first, so load from other processes and warm-up
        # effects hit both agents alike
        for agent in ("ppo", "spo") if repeat % 2 == 0 else ("spo", "ppo"):
            result = time_learn(agent, args.steps, seed=repeat)
            rows.append({"agent": agent, "repeat": repeat, "steps": args.steps, **result})
            per_step = 1e6 * result["seconds"] / args.steps
            print(
                f"{agent}: {result['seconds']:.1f} s for {args.steps} steps ({per_step:.0f} us/step); "
                f"SPO's own code {result['spo_own_s']:.2f} s",
                flush=True,
            )
    table = pd.DataFrame(rows)
    table["us_per_step"] = 1e6 * table["seconds"] / table["steps"]
    OUT.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT / "timing.csv", index=False, float_format="%.3f")
    best = table.groupby("agent")["us_per_step"].min()
    median = table.groupby("agent")["us_per_step"].median()
    spo = table[table["agent"] == "spo"]
    own = (spo["spo_own_s"] / spo["seconds"]).median()
    print(
        f"spo / ppo wall time per env step: best-of-{args.repeats} {best['spo'] / best['ppo']:.3f}, "
        f"median {median['spo'] / median['ppo']:.3f}; SPO's own code: {100 * own:.1f}% of spo's time"
    )


def load_progress() -> pd.DataFrame:
    frames = []
    for path in sorted((OUT / "runs").glob("*/progress.csv")):
        if not (path.parent / "done").exists():
            continue
        frame = pd.read_csv(path)
        run = yaml.safe_load((path.parent / "config.yaml").read_text())
        frame["agent"], frame["rater"], frame["seed"] = run["agent"], run["rater"], run["seed"]
        frame["variant"] = path.parent.name.rsplit("_s", 1)[0]
        frames.append(frame)
    if not frames:
        raise SystemExit(f"no finished runs under {OUT / 'runs'}; run the 'runs' step first")
    return pd.concat(frames, ignore_index=True)


def first_step_at(run: pd.DataFrame, score: float) -> int:
    """First evaluated env step with a normalised score >= ``score`` (-1 if never)."""
    reached = run.loc[run["normalised_score"] >= score, "env_steps"]
    return int(reached.iloc[0]) if len(reached) else -1


def cmd_report(args: argparse.Namespace) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = load_progress()
    rows = []
    for (variant, agent, rater, seed), run in table.groupby(["variant", "agent", "rater", "seed"]):
        run = run.sort_values("env_steps")
        last = run.iloc[-1]
        rows.append(
            {
                "variant": variant, "agent": agent, "rater": rater, "seed": seed,
                "env_steps": int(last["env_steps"]),
                "final_return": last["true_return_mean"], "final_score": last["normalised_score"],
                "mean_score_last3": run["normalised_score"].iloc[-3:].mean(),
                "best_score": run["normalised_score"].max(), "queries": int(last["queries"]),
                "wall_s": last["wall_s"],
                "first_step_score_ge_70": first_step_at(run, 70.0),
            }
        )  # fmt: skip
    summary = pd.DataFrame(rows)
    summary.to_csv(OUT / "summary.csv", index=False, float_format="%.2f")
    print(summary.to_string(index=False))
    print("\nmedian final normalised score per variant:")
    print(summary.groupby("variant")["final_score"].median().to_string())

    fig, (ax, ax_win) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"spo_partial_return": "C0", "ppo_none": "C1"}
    for index, (variant, group) in enumerate(table.groupby("variant")):
        label = variant.replace("_none", " (true reward)")
        color = colors.get(variant, f"C{index + 2}")
        for axis, column in ((ax, "normalised_score"), (ax_win, "mean_win_rate")):
            if column not in group or group[column].isna().all():
                continue
            pivot = group.pivot_table(index="env_steps", columns="seed", values=column)
            for seed in pivot.columns:
                axis.plot(pivot.index, pivot[seed], color=color, alpha=0.3, lw=0.8)
            median_label = f"{label}, median of {pivot.shape[1]} seeds"
            axis.plot(pivot.index, pivot.median(axis=1), color=color, lw=2, label=median_label)
    ax.axhline(70, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="env steps", ylabel="normalised score", title="Pendulum-v1: true return (normalised)")
    ax.legend(loc="lower right")
    ax_win.axhline(0.5, color="grey", ls="--", lw=0.8)
    ax_win.set(xlabel="env steps", ylabel="mean win rate", title="SPO: win rate of the latest rollout")
    ax_win.legend(loc="upper right")
    for axis in (ax, ax_win):
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
    fig.tight_layout()
    fig.savefig(OUT / "curves.png", dpi=120)
    print(f"wrote {OUT / 'summary.csv'} and {OUT / 'curves.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    runs = sub.add_parser("runs", help="training runs (skips finished ones)")
    runs.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    runs.add_argument("--ppo-seeds", type=int, nargs="*", default=[0])
    runs.add_argument("--steps", type=int, default=200_000)
    runs.add_argument("--rater", default="partial_return")
    runs.add_argument("--variants", nargs="+", default=["spo"], choices=sorted(SPO_VARIANTS))
    timing = sub.add_parser("timing", help="wall time per env step, spo vs ppo")
    timing.add_argument("--steps", type=int, default=40_000)
    timing.add_argument("--repeats", type=int, default=2)
    sub.add_parser("report", help="summary.csv and curves.png from finished runs")
    args = parser.parse_args()
    {"runs": cmd_runs, "timing": cmd_timing, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
