"""``make demo`` / ``prefrl demo``: a quick comparison of every agent on the default environment.

Runs the groups of :data:`DEMO_GRID` on the default env (Pendulum-v1) for two seeds through
:func:`prefrl.sweep.run_sweep` (a process pool sized to the cores; finished runs are skipped, so an
interrupted demo resumes), then writes to ``out``:

* ``learning_curves.png`` / ``.svg``: normalised score, IQM over seeds with 95% CIs; online agents against
  env steps, the offline agents (cpl, p_iql, bc) in a panel of their own against gradient steps;
* ``summary.csv`` / ``summary.md``: final score per agent (mean, IQM, queries, wall time), and per row one
  phrase on the labels and budget it had and, where a row is expected to be low, why;
* ``report.md``: the full report (:func:`prefrl.report.write_report`).

Every agent gets the labels its method is defined on: rm_ppo and spo the noise-free partial-return rater,
heron the hierarchical rater over the env's ranked reward factors, and cpl the regret rater under the
oracle's ``V*`` (CPL reads its policy's log-likelihood as the optimal advantage, i.e. the regret model of
Hejna et al. 2024), with bc as its baseline on the same dataset. A group whose rater cannot be built for
the env (no oracle, so no ``V*`` and no offline dataset) is skipped, and the summary says so.

The budgets are small so the whole demo stays under 10 minutes on 2 cores; they are demo budgets, not
benchmark budgets (see ``results/`` for those). Measured on the 2-core development machine, one thread per
run: cpl ~45 s and bc ~20 s per 1000 gradient steps (evaluations included).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from prefrl.agents import get_agent_class, list_agents
from prefrl.analysis import load_runs, summary_table
from prefrl.envs import DEFAULT_ENV, load_env_spec
from prefrl.errors import PrefrlError
from prefrl.plots import plot_learning_curves
from prefrl.raters import make_rater
from prefrl.report import write_report
from prefrl.sweep import run_sweep

logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_GRID",
    "DEMO_OFFLINE_STEPS",
    "DEMO_ONLINE_STEPS",
    "DEMO_SEEDS",
    "LOW_SCORE",
    "DemoGroup",
    "row_notes",
    "run_demo",
]


@dataclass(frozen=True)
class DemoGroup:
    """Agents of the demo that share a rater and a budget, and what the summary says about them.

    :param agents: agent names (unknown ones are left out of the demo, not fatal)
    :param rater: rater spec the group learns from (agents that need none run with ``none``)
    :param labels: one short phrase on the labels, for the summary ("noise-free partial-return labels")
    :param offline: the budget is :data:`DEMO_OFFLINE_STEPS` gradient steps, not env steps
    :param notes: ``{agent: why its row is expected to be low}``, only for such rows
    :param steps: the group's own budget (env or gradient steps), instead of the demo's online/offline one
    """

    agents: tuple[str, ...]
    rater: str
    labels: str
    offline: bool = False
    notes: Mapping[str, str] = field(default_factory=dict)
    steps: int | None = None


#: the demo grid, run group by group
DEMO_GRID: list[DemoGroup] = [
    DemoGroup(("ppo",), "none", "true env reward, no queries (the reference)"),
    # SAC learns Pendulum in ~5k env steps but runs ~10x slower per step than PPO on a CPU
    DemoGroup(("sac",), "none", "true env reward, no queries (off-policy reference)", steps=10_000),
    DemoGroup(("rm_ppo", "spo"), "partial_return", "noise-free partial-return labels"),
    DemoGroup(("pebble",), "partial_return", "noise-free partial-return labels (off-policy)", steps=10_000),
    DemoGroup(
        ("heron",),
        "hierarchical",
        "HERON's hierarchical factor comparisons",
        notes={
            "heron": "if low: a seed can collapse late (1 of 3 benchmark seeds ended at 24, results/heron)"
        },
    ),
    DemoGroup(
        ("cpl", "p_iql", "bc"),
        "regret",
        "regret labels (oracle V*) on the oracle's noisy dataset",
        offline=True,
        notes={
            "cpl": "offline on a CPU budget (official: 500k steps): near its dataset's own behaviour "
            "(64, results/cpl/pendulum), not the online agents' level",
            "bc": "clones the preferred segments of a noisy dataset: about its behaviour's level (64)",
        },
    ),
]
DEMO_SEEDS = 2
#: env steps for the online agents (PPO solves Pendulum in ~30k steps; SPO needs 50-100k)
DEMO_ONLINE_STEPS = 100_000
#: gradient steps for the offline agents (cpl, p_iql, bc): 4000 take cpl ~3 min, p_iql ~1 min and bc ~1.5 min
#: per seed on one core, which keeps the demo around 10 minutes on 2 cores; cpl's contrastive phase gets 2400
#: steps after the 40% BC warm-up
DEMO_OFFLINE_STEPS = 4_000
#: a final normalised score below this, on a row without a note, gets one saying it is lower than expected
LOW_SCORE = 70.0


def _table_rater(agent: str, rater: str) -> str:
    """The rater a run of ``agent`` records: ``none`` for agents that use no rater."""
    return rater if get_agent_class(agent).requires_rater else "none"


def _rater_problem(rater: str, env: str) -> str | None:
    """Why ``rater`` cannot label ``env``'s segments (e.g. no oracle for ``regret``), or ``None``."""
    if rater == "none":
        return None
    try:
        make_rater(rater, load_env_spec(env))
    except PrefrlError as e:
        return str(e)
    return None


def row_notes(
    summary: pd.DataFrame, grid: list[DemoGroup], online_steps: int, offline_steps: int
) -> pd.DataFrame:
    """``summary`` with a ``setting`` (labels and budget) and a ``note`` (why a row is low) per row.

    :param summary: :func:`prefrl.analysis.summary_table` rows (``agent``, ``rater``, ``mean``,
        ``queries``)
    :param grid: the groups that produced the rows
    """
    available = set(list_agents())
    groups = {(a, _table_rater(a, g.rater)): g for g in grid for a in g.agents if a in available}
    settings, notes = [], []
    for row in summary.itertuples():
        group = groups.get((row.agent, row.rater))
        if group is None:
            settings.append("")
            notes.append("")
            continue
        queries = int(getattr(row, "queries", 0) or 0)
        if group.offline:
            budget = f"{group.steps or offline_steps:,} gradient steps on {queries:,} labelled pairs"
        else:
            steps = group.steps or online_steps
            budget = f"{steps:,} env steps" + (f", {queries:,} queries" if queries else "")
        settings.append(f"{group.labels}; {budget}")
        note = group.notes.get(row.agent, "")
        if not note and row.mean < LOW_SCORE:
            note = f"below {LOW_SCORE:.0f}, not expected in this setting: see learning_curves.png"
        notes.append(note)
    return summary.assign(setting=settings, note=notes)


def run_demo(
    out: str | Path = "results/demo",
    seeds: int | None = None,
    steps: int | None = None,
    offline_steps: int | None = None,
) -> str:
    """Run the demo grid; returns the summary table as Markdown text.

    :param out: output directory (runs go to ``out/runs``)
    :param seeds: seeds per agent (default :data:`DEMO_SEEDS`)
    :param steps: env steps for the online agents (default :data:`DEMO_ONLINE_STEPS`)
    :param offline_steps: gradient steps for the offline agents (default :data:`DEMO_OFFLINE_STEPS`)
    """
    out = Path(out)
    seeds = seeds or DEMO_SEEDS
    online_steps = steps or DEMO_ONLINE_STEPS
    offline_steps = offline_steps or DEMO_OFFLINE_STEPS
    available = set(list_agents())
    skipped = []
    for group in DEMO_GRID:
        chosen = [agent for agent in group.agents if agent in available]
        if not chosen:
            continue
        problem = _rater_problem(group.rater, DEFAULT_ENV)
        if problem is not None:
            logger.warning("demo: skipping %s: %s", ", ".join(chosen), problem)
            skipped.append(f"- {', '.join(chosen)} ({group.rater}): skipped, {problem}")
            continue
        budget = {"total_steps": group.steps or (offline_steps if group.offline else online_steps)}
        result = run_sweep(
            DEFAULT_ENV,
            chosen,
            None if group.rater == "none" else group.rater,
            seeds,
            out=out / "runs",
            agent_overrides={agent: budget for agent in chosen},
            progress=True,
        )
        logger.info(result.summary())
        if result.interrupted:
            raise KeyboardInterrupt

    table = load_runs(out / "runs", only_done=True)
    plot_learning_curves(table, out / "learning_curves.png", y="auto")
    summary = row_notes(
        summary_table(table, metric="normalised_score"), DEMO_GRID, online_steps, offline_steps
    )
    summary.to_csv(out / "summary.csv", index=False)
    # env_steps of an offline row is its dataset's size, not a budget: the setting column says both
    text = summary.drop(columns=["env_steps"], errors="ignore").to_markdown(index=False, floatfmt=".1f")
    extra = "\n\n" + "\n".join(skipped) if skipped else ""
    (out / "summary.md").write_text(
        f"# prefrl demo on {DEFAULT_ENV}\n\nFinal normalised score (0 = random, 100 = oracle) of the "
        f"deterministic policy per agent ({seeds} seeds). `setting`: the labels and budget each agent had "
        f"(online agents {online_steps:,} env steps, SAC-based ones less, offline agents {offline_steps:,} "
        "gradient steps); "
        f"`note`: why a row is expected to be low.\n\n{text}{extra}\n\n"
        "![learning curves](learning_curves.png)\n"
    )
    report = write_report(out / "runs", out=out / "report.md")
    logger.info(f"report: {report}")
    return text + extra
