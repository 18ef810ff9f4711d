"""CPL vs BC on offline preference datasets built from an env's shipped oracle (default HalfCheetah-v5).

Runs, one training at a time (finished runs are skipped); ``--env`` picks the env (``pendulum``,
``halfcheetah``) and the output folder results/cpl/<env>::

    # 1. cpl and bc on the same regret-labelled dataset, and cpl on partial_return labels of the same
    #    segments (same dataset seed: identical rollouts, only the labels differ); 3 seeds each
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cpl.py --env halfcheetah runs --seeds 0 1 2
    # 2. CPL gradient steps per second (no evaluation) at batch 96 pairs, official and the env's network
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cpl.py --env halfcheetah timing --steps 40
    #    (``timing --device cuda`` on a machine with a GPU writes timing_cuda.csv beside it)
    # 3. summary.csv, runs_final.csv, timing.csv, curves.png under results/cpl/<env>
    .venv/bin/python benchmarks/bench_cpl.py --env halfcheetah report

Settings are agents/cpl.yaml and agents/bc.yaml (their per-env entries). Datasets are cached under
results/cpl/<env>/runs/datasets (git-ignored). The dataset's own score is the normalised true return of its
noisy behaviour policies, weighted by their share of the episodes (recorded in the dataset).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd
import torch

from prefrl.spec_utils import PROJECT_ROOT

JOBS = (("cpl", "regret"), ("bc", "regret"), ("cpl", "partial_return"))
# set by main() from --env
ENV = "halfcheetah"
OUT = PROJECT_ROOT / "results" / "cpl" / ENV


def run_dir(agent: str, rater: str, seed: int) -> Path:
    return OUT / "runs" / f"{agent}_{rater}_s{seed}"


def cmd_runs(args: argparse.Namespace) -> None:
    from prefrl.experiment import run_experiment

    torch.set_num_threads(1)
    for seed in args.seeds:
        for agent, rater in JOBS:
            start = time.perf_counter()
            out = run_experiment(
                ENV, agent, rater, seed, steps=args.steps, out=run_dir(agent, rater, seed), progress_bar=False
            )
            final = pd.read_csv(out / "progress.csv").iloc[-1]
            print(
                f"{agent:3s} {rater:15s} seed {seed}: score {final['normalised_score']:7.1f} "
                f"return {final['true_return_mean']:8.1f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )


def cmd_timing(args: argparse.Namespace) -> None:
    """Gradient steps/s of CPL's ``learn`` (no evaluation), dataset already cached."""
    from prefrl.agents import get_agent_class, make_agent
    from prefrl.agents.base import resolve_device
    from prefrl.config import load_agent_config
    from prefrl.envs import load_env_spec
    from prefrl.raters import make_rater

    torch.set_num_threads(1)
    spec = load_env_spec(ENV)
    rows = []
    settings = {
        "official [512,512], batch 96": {
            "policy_kwargs": {"net_arch": [512, 512]},
            "offline": {"batch_size": 96},
        },
        f"{ENV} yaml net, batch 96": {"offline": {"batch_size": 96}},
        f"{ENV} yaml settings": {},
    }
    device = resolve_device(args.device, get_agent_class("cpl"))
    for label, overrides in settings.items():
        config = load_agent_config("cpl", ENV, overrides)
        agent = make_agent("cpl", spec, config, rater=make_rater("regret", spec), seed=0, device=device)
        agent.learn(2, 0)  # builds/loads the dataset, warms up
        start = time.perf_counter()
        agent.learn(args.steps, 0)  # reloads the cached dataset: measured separately below
        total = time.perf_counter() - start
        rate = agent._latest["train/grad_steps_per_s"]
        rows.append(
            {
                "setting": label,
                "device": device,
                "grad_steps": args.steps,
                "grad_steps_per_s": rate,
                "learn_s": total,
            }
        )
        print(f"{label} on {device}: {rate:.2f} grad steps/s ({total:.1f} s incl. dataset load)", flush=True)
    load = float(os.getloadavg()[0])
    # one file per device, so a GPU measurement sits beside the CPU one
    name = "timing.csv" if device == "cpu" else f"timing_{device.replace(':', '')}.csv"
    pd.DataFrame(rows).assign(load_avg_1min=load, torch_threads=1).to_csv(OUT / name, index=False)


def _dataset_score() -> tuple[float, float]:
    """(normalised score, true return) of the regret dataset's noisy behaviour policies."""
    from prefrl.datasets import load_dataset

    for path in sorted((OUT / "runs" / "datasets").glob(f"{ENV}-*.npz")):
        prov = load_dataset(path).provenance
        if prov["params"]["rater"].startswith("RegretRater"):
            return float(prov["mean_normalised_score"]), float(prov["mean_noisy_return"])
    raise SystemExit(f"no regret dataset under {OUT / 'runs' / 'datasets'}")


def cmd_report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, finals = [], []
    for path in sorted((OUT / "runs").glob("*_s*/progress.csv")):
        if not (path.parent / "done").exists():
            continue  # an unfinished run would mix a partial curve into the seed statistics
        head, seed = path.parent.name.rsplit("_s", 1)
        agent, rater = head.split("_", 1)
        df = pd.read_csv(path).assign(agent=agent, rater=rater, seed=int(seed))
        curves.append(df)
        last = df.iloc[-1]
        finals.append(
            {
                "agent": agent,
                "rater": rater,
                "seed": int(seed),
                "grad_steps": int(last["grad_steps"]),
                "labelled_pairs": int(last["labelled_pairs"]),
                "final_return": last["true_return_mean"],
                "final_score": last["normalised_score"],
                "best_score": df["normalised_score"].max(),
            }
        )
    if not finals:
        raise SystemExit(f"no finished runs under {OUT / 'runs'}: run `bench_cpl.py --env {ENV} runs` first")
    finals_df = pd.DataFrame(finals)
    finals_df.to_csv(OUT / "runs_final.csv", index=False)
    ds_score, ds_return = _dataset_score()
    summary = (
        finals_df.groupby(["agent", "rater"])
        .agg(
            seeds=("seed", "count"),
            final_score_mean=("final_score", "mean"),
            final_score_std=("final_score", "std"),
            final_return_mean=("final_return", "mean"),
            best_score_mean=("best_score", "mean"),
        )
        .reset_index()
    )
    summary = pd.concat(
        [
            summary,
            pd.DataFrame(
                [
                    {
                        "agent": "dataset",
                        "rater": "-",
                        "final_score_mean": ds_score,
                        "final_return_mean": ds_return,
                    }
                ]
            ),
        ],
        ignore_index=True,
    )
    summary.round(2).to_csv(OUT / "summary.csv", index=False)
    print(summary.round(1).to_string(index=False))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    all_curves = pd.concat(curves)
    for (agent, rater), group in all_curves.groupby(["agent", "rater"]):
        table = group.pivot_table(index="grad_steps", columns="seed", values="normalised_score")
        mean, std = table.mean(axis=1), table.std(axis=1).fillna(0.0)
        label = f"{agent} ({rater}, {table.shape[1]} seeds)"
        ax.plot(mean.index, mean.values, label=label)
        ax.fill_between(mean.index, mean - std, mean + std, alpha=0.2)
    ax.axhline(ds_score, color="k", ls="--", lw=1, label=f"dataset behaviour ({ds_score:.0f})")
    ax.axhline(100.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("gradient steps")
    ax.set_ylabel("normalised score (mean ± std over seeds)")
    ax.set_title(f"{ENV}: offline preference dataset (oracle checkpoints + action noise)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(OUT / "curves.png", dpi=120)
    print(f"wrote {OUT / 'summary.csv'}, {OUT / 'runs_final.csv'}, {OUT / 'curves.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="halfcheetah", help="env spec with a shipped oracle")
    sub = parser.add_subparsers(dest="command", required=True)
    runs = sub.add_parser("runs")
    runs.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    runs.add_argument("--steps", type=int, default=None, help="gradient steps (default: the yaml's)")
    runs.set_defaults(func=cmd_runs)
    timing = sub.add_parser("timing")
    timing.add_argument("--steps", type=int, default=40)
    timing.add_argument("--device", default="cpu", help="cpu, cuda, cuda:K or auto")
    timing.set_defaults(func=cmd_timing)
    report = sub.add_parser("report")
    report.set_defaults(func=cmd_report)
    args = parser.parse_args()
    global ENV, OUT
    ENV, OUT = args.env, PROJECT_ROOT / "results" / "cpl" / args.env
    os.environ.setdefault("PREFRL_DATA_DIR", str(OUT / "runs" / "datasets"))
    OUT.mkdir(parents=True, exist_ok=True)
    args.func(args)


if __name__ == "__main__":
    main()
