"""``make demo`` / ``prefrl demo``: a quick comparison on the default environment.

Runs each available agent of :data:`DEMO_AGENTS` (with one rater) on the default env for a few seeds in
a process pool sized to the cores, then writes learning curves and a summary table to ``out``. Finished
runs are skipped, so an interrupted demo resumes.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from prefrl.analysis import load_runs, summary_table
from prefrl.envs import DEFAULT_ENV
from prefrl.plots import plot_learning_curves

#: (agent, rater) pairs the demo compares, in order; agents not (yet) registered are left out
DEMO_AGENTS: list[tuple[str, str | None]] = [
    ("ppo", None),
    ("rm_ppo", "partial_return"),
    ("spo", "partial_return"),
    ("heron", "hierarchical"),
]
DEMO_SEEDS = 1
DEMO_STEPS = 100_000


def _run_one(job: tuple[str, str | None, int, int, str]) -> str:
    from prefrl.experiment import run_experiment

    agent, rater, seed, steps, out = job
    rater_dir = rater or "none"
    run_dir = Path(out) / "runs" / agent / rater_dir / f"seed{seed}"
    return str(
        run_experiment(
            env=DEFAULT_ENV,
            agent=agent,
            rater=rater,
            seed=seed,
            steps=steps,
            queries=None,
            out=run_dir,
            progress_bar=False,
        )
    )


def run_demo(out: str | Path = "results/demo", seeds: int | None = None, steps: int | None = None) -> str:
    """Run the demo grid and write ``learning_curves.png`` and ``summary.csv``/``summary.md`` to ``out``."""
    from prefrl.agents import list_agents

    out = Path(out)
    seeds = seeds or DEMO_SEEDS
    steps = steps or DEMO_STEPS
    available = set(list_agents())
    jobs = [
        (agent, rater, seed, steps, str(out))
        for agent, rater in DEMO_AGENTS
        if agent in available
        for seed in range(seeds)
    ]
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for run_dir in pool.map(_run_one, jobs):
            print(f"finished {run_dir}", flush=True)
    table = load_runs(out / "runs", only_done=True)
    plot_learning_curves(table, out / "learning_curves.png")
    summary = summary_table(table)
    summary.to_csv(out / "summary.csv", index=False)
    text = summary.to_markdown(index=False, floatfmt=".1f")
    (out / "summary.md").write_text(
        f"# prefrl demo on {DEFAULT_ENV}\n\nFinal deterministic true return per agent "
        f"({seeds} seed(s), {steps} env steps).\n\n{text}\n\n![learning curves](learning_curves.png)\n"
    )
    return text
