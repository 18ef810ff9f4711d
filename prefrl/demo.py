"""``make demo`` / ``prefrl demo``: a quick comparison of every agent on the default environment.

Runs the agents of :data:`DEMO_GRID` on the default env (Pendulum-v1) for two seeds through
:func:`prefrl.sweep.run_sweep` (a process pool sized to the cores; finished runs are skipped, so an
interrupted demo resumes), then writes to ``out``:

* ``learning_curves.png`` / ``.svg``: normalised score vs env steps, IQM over seeds with 95% CIs;
* ``summary.csv`` / ``summary.md``: final score per agent (mean, IQM, queries, wall time);
* ``report.md``: the full report (:func:`prefrl.report.write_report`).

The budgets are small so the whole demo stays under 10 minutes on 2 cores; they are demo budgets,
not benchmark budgets (see ``results/`` for those).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefrl.agents import list_agents
from prefrl.analysis import load_runs, summary_table
from prefrl.envs import DEFAULT_ENV
from prefrl.plots import plot_learning_curves
from prefrl.report import write_report
from prefrl.sweep import run_sweep

#: (agents, rater): every agent learns from the same noise-free partial-return rater, except heron,
#: whose method is defined by the hierarchical rater over the env's ranked reward factors
logger = logging.getLogger(__name__)

DEMO_GRID: list[tuple[list[str], str]] = [
    (["ppo", "rm_ppo", "spo", "cpl", "bc"], "partial_return"),
    (["heron"], "hierarchical"),
]
DEMO_SEEDS = 2
#: env steps for the online agents (PPO solves Pendulum in ~30k steps; SPO needs 50-100k)
DEMO_ONLINE_STEPS = 100_000
#: gradient steps for the offline agents (cpl, bc) on the oracle's skill-graded dataset
DEMO_OFFLINE_STEPS = 2_000
OFFLINE_AGENTS = ("cpl", "bc")


def run_demo(out: str | Path = "results/demo", seeds: int | None = None, steps: int | None = None) -> str:
    """Run the demo grid; returns the summary table as Markdown text.

    :param out: output directory (runs go to ``out/runs``)
    :param seeds: seeds per agent (default :data:`DEMO_SEEDS`)
    :param steps: env steps for the online agents (default :data:`DEMO_ONLINE_STEPS`)
    """
    out = Path(out)
    seeds = seeds or DEMO_SEEDS
    online_steps = steps or DEMO_ONLINE_STEPS
    available = set(list_agents())
    budgets = {
        agent: {"total_steps": DEMO_OFFLINE_STEPS if agent in OFFLINE_AGENTS else online_steps}
        for agents, _ in DEMO_GRID
        for agent in agents
    }
    for agents, rater in DEMO_GRID:
        chosen = [agent for agent in agents if agent in available]
        if not chosen:
            continue
        result = run_sweep(
            DEFAULT_ENV,
            chosen,
            rater,
            seeds,
            out=out / "runs",
            agent_overrides={agent: budgets[agent] for agent in chosen},
            progress=True,
        )
        logger.info(result.summary())
        if result.interrupted:
            raise KeyboardInterrupt

    table = load_runs(out / "runs", only_done=True)
    plot_learning_curves(table, out / "learning_curves.png", y="auto")
    summary = summary_table(table, metric="normalised_score")
    summary.to_csv(out / "summary.csv", index=False)
    text = summary.to_markdown(index=False, floatfmt=".1f")
    (out / "summary.md").write_text(
        f"# prefrl demo on {DEFAULT_ENV}\n\nFinal normalised score (0 = random, 100 = oracle) of the "
        f"deterministic policy per agent ({seeds} seeds; online agents {online_steps} env steps, offline "
        f"agents {DEMO_OFFLINE_STEPS} gradient steps).\n\n{text}\n\n![learning curves](learning_curves.png)\n"
    )
    report = write_report(out / "runs", out=out / "report.md")
    logger.info(f"report: {report}")
    return text
