"""Benchmark: pebble (SAC on a reward learned from preferences) against sac (true reward) and rm_ppo.

Part ``pendulum`` (through :func:`prefrl.sweep.run_sweep`: resumable, finished runs are skipped):

* ``pebble`` with 100 and 200 queries, 30k env steps;
* ``sac`` on the true reward, 30k env steps;
* ``rm_ppo`` with 100 and 200 queries, 100k env steps (its agents/rm_ppo.yaml Pendulum settings);

5 seeds each, the noise-free ``partial_return`` rater, evaluated every 2k env steps (rm_ppo: 10k) on 10
episodes. Writes ``<results>/pendulum.csv`` and ``pendulum.md``: the normalised score at 10k, 20k and 30k
env steps for pebble and sac and at 100k for rm_ppo; median, and IQM and mean with 95% stratified-bootstrap
CIs over seeds (:func:`prefrl.analysis.final_score_summary`, 2,000 resamples), queries and wall time::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pebble.py pendulum --jobs 2

Part ``halfcheetah``: pebble (1,400 queries) and sac, 200k env steps, 3 seeds; a seed's pebble and sac run
at the same time, one per core, so each pebble/sac wall-time ratio compares runs made under the same machine
load. Each run is a one-cell :func:`run_sweep` (resumable; a resumed benchmark's ratios then mix loads).
Writes ``<results>/halfcheetah.csv`` (one row per run: final score, wall time, CPU time, pebble/sac ratios
per seed, relabel and fit seconds) and ``halfcheetah.md``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pebble.py halfcheetah

``--cells`` runs a subset (``pebble-q100``, ``pebble-q200``, ``sac``, ``rm_ppo-q100``, ``rm_ppo-q200``),
``--seeds`` other seeds; ``--report`` only aggregates the finished runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prefrl.analysis import final_score_summary, load_runs, score_cells
from prefrl.sweep import run_sweep

RATER = "partial_return"
PENDULUM_COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pebble.py pendulum --jobs 2"
HALFCHEETAH_COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pebble.py halfcheetah"


@dataclass(frozen=True)
class Cell:
    """One row of the Pendulum grid: an agent at a query budget, its steps and the steps it is scored at."""

    name: str
    agent: str
    queries: int
    steps: int
    eval_freq: int
    score_steps: tuple[int, ...]


PENDULUM_CELLS = (
    Cell("pebble-q100", "pebble", 100, 30_000, 2_000, (10_000, 20_000, 30_000)),
    Cell("pebble-q200", "pebble", 200, 30_000, 2_000, (10_000, 20_000, 30_000)),
    Cell("sac", "sac", 0, 30_000, 2_000, (10_000, 20_000, 30_000)),
    Cell("rm_ppo-q100", "rm_ppo", 100, 100_000, 10_000, (100_000,)),
    Cell("rm_ppo-q200", "rm_ppo", 200, 100_000, 10_000, (100_000,)),
)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("part", choices=("pendulum", "halfcheetah"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0-4 (halfcheetah 0-2)")
    parser.add_argument("--cells", nargs="+", default=None, choices=[c.name for c in PENDULUM_CELLS])
    parser.add_argument("--jobs", type=int, default=2, help="parallel runs (pendulum part)")
    parser.add_argument("--report", action="store_true", help="only aggregate the finished runs")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_pebble"))
    parser.add_argument("--results", type=Path, default=Path("results/pebble"))
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    if args.part == "pendulum":
        pendulum(args)
    else:
        halfcheetah(args)


# ---- Pendulum ---------------------------------------------------------------------------------------


def pendulum(args: argparse.Namespace) -> None:
    seeds = args.seeds if args.seeds is not None else list(range(5))
    cells = [c for c in PENDULUM_CELLS if args.cells is None or c.name in args.cells]
    for cell in [] if args.report else cells:
        result = run_sweep(
            "pendulum",
            cell.agent,
            RATER if cell.queries else None,
            seeds,
            steps=cell.steps,
            queries=cell.queries,
            out=args.runs / "pendulum" / cell.name,
            jobs=args.jobs,
            eval_freq=cell.eval_freq,
            n_eval_episodes=10,
            device="cpu",
        )
        print(f"[pebble] pendulum {cell.name}: {result.summary()}", flush=True)
        if result.interrupted:
            return
    rows = []
    for cell in PENDULUM_CELLS:
        table = load_runs(args.runs / "pendulum" / cell.name, only_done=True)
        if table.empty:
            continue
        for step in cell.score_steps:
            # at the budget, the run's last evaluation: PPO's rollouts of 4,096 steps end at 102,400
            upto = table if step == cell.steps else table[table["env_steps"] <= step]
            rows.append(score_row(cell, upto, step))
    out = pd.DataFrame(rows).round(2)
    out.to_csv(args.results / "pendulum.csv", index=False)
    (args.results / "pendulum.md").write_text(pendulum_markdown(out))
    print(out.to_string(index=False))


def score_row(cell: Cell, table: pd.DataFrame, step: int) -> dict:
    """Median, IQM and mean (95% CIs) over seeds of each run's last evaluation at or before ``step``."""
    return {
        "cell": cell.name,
        "agent": cell.agent,
        "queries_budget": cell.queries,
        "env_steps": step,
        **final_score_summary(table),
        "commit": run_commits(table),
    }


def run_commits(table: pd.DataFrame) -> str:
    """The git commits (short) the runs of ``table`` were made at, from their meta.json."""
    commits = set()
    for run_dir in table["run_dir"].unique():
        meta = json.loads((Path(run_dir) / "meta.json").read_text())
        commits.add(str(meta.get("git_commit", "?"))[:7] + ("+" if meta.get("git_dirty") else ""))
    return " ".join(sorted(commits))


def pendulum_markdown(table: pd.DataFrame) -> str:
    lines = [
        "# pebble vs sac and rm_ppo on Pendulum-v1",
        "",
        "Produced by",
        "",
        f"    {PENDULUM_COMMAND}",
        "",
        "(runs under `runs/bench_pebble/pendulum/`, git-ignored; `pendulum.csv` is the table below).",
        "The noise-free `partial_return` rater; agents/pebble.yaml's,",
        "agents/sac.yaml's and agents/rm_ppo.yaml's Pendulum settings; normalised score of the",
        "deterministic policy on 10 episodes at the given env step (pebble and sac are evaluated every 2k",
        "steps, rm_ppo every 10k; at the budget the run's last evaluation, rm_ppo's at 102,400); IQM",
        "and mean with 95% stratified-bootstrap CIs over seeds (2,000 resamples); `wall s`: mean wall",
        "time of the runs up to that step (`--jobs` runs at a time on a shared machine); `code`: the",
        "commit the runs were made at (`+`: with uncommitted changes), from",
        "their meta.json (a cell is re-run only when its settings change).",
        "",
        "| agent | queries | env steps | seeds | median | worst seed | IQM [95% CI] | mean [95% CI] "
        "| wall s | code |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.agent} | {row.queries_budget} | {row.env_steps:,} | {row.seeds} | {row.median:.1f} | "
            f"{row.min:.1f} | {score_cells(row)} | {row.wall_s:.0f} | {row.commit} |"
        )
    return "\n".join(lines) + "\n"


# ---- HalfCheetah ------------------------------------------------------------------------------------


def halfcheetah(args: argparse.Namespace) -> None:
    seeds = args.seeds if args.seeds is not None else list(range(3))
    rows = []
    for seed in seeds:
        cpu = {}
        if not args.report:
            # the seed's pebble and sac run at the same time, one per core, so both see the same load
            with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
                futures = {agent: pool.submit(run_halfcheetah, agent, seed, args.runs) for agent in HC_AGENTS}
                for agent, future in futures.items():
                    interrupted, cpu[agent] = future.result()
                    print(f"[pebble] halfcheetah {agent} seed {seed}: cpu {cpu[agent]:.0f} s", flush=True)
                    if interrupted:
                        return
        for agent in HC_AGENTS:
            run_dir = hc_run_dir(args.runs, agent, seed)
            if not (run_dir / "done").is_file():
                continue
            rows.append(halfcheetah_row(run_dir, agent, seed, cpu.get(agent)))
            table = write_halfcheetah(rows, args.results)  # after every run: a stopped benchmark keeps it
    if rows:
        print(table.to_string(index=False))


HC_AGENTS = ("pebble", "sac")


def hc_run_dir(runs: Path, agent: str, seed: int) -> Path:
    rater = RATER if agent == "pebble" else "none"
    return runs / "halfcheetah" / agent / "halfcheetah" / agent / rater / f"seed{seed}"


def run_halfcheetah(agent: str, seed: int, runs: Path) -> tuple[bool, float]:
    """One 200k-step run (a one-cell resumable sweep); returns (interrupted, CPU seconds of its worker)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_sweep(
        "halfcheetah",
        agent,
        RATER if agent == "pebble" else None,
        [seed],
        steps=200_000,
        queries=1_400 if agent == "pebble" else 0,
        out=runs / "halfcheetah" / agent,
        jobs=1,
        eval_freq=20_000,
        n_eval_episodes=10,
        device="cpu",
    )
    # the sweep's worker process has been reaped when run_sweep returns, so its CPU time is counted here
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result.interrupted, cpu_s


def halfcheetah_row(run_dir: Path, agent: str, seed: int, cpu_s: float | None) -> dict:
    """One run: final score, wall and CPU time (CPU time of a skipped run is the one first recorded)."""
    last = pd.read_csv(run_dir / "progress.csv").iloc[-1]
    wall = json.loads((run_dir / "meta.json").read_text())["wall_s"]
    cpu_file = run_dir / "bench_cpu.json"
    if not cpu_file.is_file() and cpu_s is not None:
        cpu_file.write_text(json.dumps({"cpu_s": cpu_s}))
    return {
        "agent": agent,
        "seed": seed,
        "env_steps": int(last["env_steps"]),
        "queries_asked": int(last.get("queries_asked", 0)),
        "normalised_score": float(last["normalised_score"]),
        "true_return_mean": float(last["true_return_mean"]),
        "wall_s": float(wall),
        "cpu_s": float(json.loads(cpu_file.read_text())["cpu_s"]) if cpu_file.is_file() else np.nan,
        "rm_fit_s": float(last.get("rm_fit_s", np.nan)),
        "rm_relabel_s": float(last.get("rm_relabel_s", np.nan)),
        "rm_relabels": float(last.get("rm_relabels", np.nan)),
    }


def write_halfcheetah(rows: list[dict], results: Path) -> pd.DataFrame:
    """The runs so far with pebble's wall- and CPU-time ratios to the same seed's sac run."""
    table = pd.DataFrame(rows)
    sac = table[table["agent"] == "sac"].set_index("seed")
    table["wall_ratio_to_sac"] = table["wall_s"] / table["seed"].map(sac["wall_s"])
    table["cpu_ratio_to_sac"] = table["cpu_s"] / table["seed"].map(sac["cpu_s"])
    table = table.round(3)
    table.to_csv(results / "halfcheetah.csv", index=False)
    lines = [
        "# pebble vs sac on HalfCheetah-v5: score and wall time",
        "",
        "Produced by",
        "",
        f"    {HALFCHEETAH_COMMAND}",
        "",
        "(runs under `runs/bench_pebble/halfcheetah/`, git-ignored; `halfcheetah.csv` has every column).",
        "200k env steps; pebble with 1,400 queries of the noise-free",
        "`partial_return` rater; agents/pebble.yaml's and agents/sac.yaml's HalfCheetah settings; a seed's",
        "pebble and sac at the same time, one per core (one thread each); final normalised score of the",
        "deterministic policy on 10 episodes; `ratio`: pebble's wall (CPU) time over the same seed's sac.",
        "",
        "| agent | seed | score | return | wall s | CPU s | wall ratio | CPU ratio | relabel s | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    pairs = int(table.groupby("seed")["agent"].nunique().eq(2).sum())
    if pairs < 3:
        lines[1:1] = [
            "",
            f"**Partial: {pairs} of the 3 seeds finished** (the command resumes; until then this is not a "
            "comparison across seeds).",
        ]
    for row in table.itertuples():
        lines.append(
            f"| {row.agent} | {row.seed} | {row.normalised_score:.1f} | {row.true_return_mean:.0f} | "
            f"{row.wall_s:.0f} | {row.cpu_s:.0f} | {row.wall_ratio_to_sac:.2f} | "
            f"{row.cpu_ratio_to_sac:.2f} | {row.rm_relabel_s:.1f} | {row.rm_fit_s:.1f} |"
        )
    (results / "halfcheetah.md").write_text("\n".join(lines) + "\n")
    return table


if __name__ == "__main__":
    main()
