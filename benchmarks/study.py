"""The benchmark study (results/study/): every agent under every rater, >= 5 seeds, IQM with 95% CIs.

One command per part; each is resumable (``prefrl sweep`` skips finished runs, ``prefrl evaluate`` skips
evaluated ones), so a stopped part is continued by running the same command again::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study.py PART [--jobs N] [--seeds 0 1 2 3 4]
    .venv/bin/python benchmarks/study.py PART --report      # tables from the finished runs only

Parts (budgets in :data:`PARTS`; cost estimates in results/study/PLAN.md):

* ``pendulum`` - online agents x the ten raters of :data:`PENDULUM_RATERS`: rm_ppo, heron and spo (PPO,
  100k env steps), pebble (SAC, 30k env steps); rm_ppo, heron and pebble with the same 500-query budget,
  spo with its own (its comparisons are counted and shown); ppo and sac on the true reward as references.
* ``pendulum-offline`` - cpl, p_iql and bc x the ten raters on one dataset per rater (the same rollouts),
  equal gradient steps (agents/*.yaml's Pendulum settings).
* ``halfcheetah`` - HalfCheetah-v5, 500k env steps: ppo, and rm_ppo (1,400 queries) and spo x
  partial_return, regret, intransitive, mistake:eps=0.1.
* ``query-efficiency`` - rm_ppo, heron (100k steps) and pebble (30k steps) with 100, 300 and 1,000 queries
  on Pendulum, partial_return; its figure and its score-by-budget table add part 1's 500-query cells
  (the same agents and settings under ``partial_return``) as a fourth budget.

After a part's runs, every finished run gets its final evaluation (``prefrl evaluate``: 20 deterministic
episodes on one fixed set of held-out start states), and the part's table is written to
``results/study/<part>.csv`` and ``.md``: per cell, seeds, median, worst seed, IQM and mean of the final
normalised score with 95% stratified-bootstrap CIs (2,000 resamples), queries asked / answered and wall
time, and every finished run's final score to ``results/study/<part>_runs.csv`` (what
``benchmarks/study_assumptions.py`` reads). Raw runs stay under ``runs/study/<part>/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from prefrl.analysis import final_score_summary, final_scores, load_runs, score_cells
from prefrl.final_evaluation import DEFAULT_EPISODES, evaluate_final_runs
from prefrl.plots import save_figure
from prefrl.sweep import run_sweep

#: the study's Pendulum raters: the spec names as ``prefrl list`` shows them (wrappers on partial_return)
PENDULUM_RATERS = (
    "partial_return",
    "regret",
    "stoc",
    "mistake",
    "skip",
    "equal",
    "myopic",
    "intransitive",
    "non_markovian",
    "panel",
)
HALFCHEETAH_RATERS = ("partial_return", "regret", "intransitive", "mistake:eps=0.1")
QUERY_BUDGETS = (100, 300, 1000)


@dataclass(frozen=True)
class Block:
    """One ``run_sweep`` call: agents sharing a budget, under the given raters (``None``: no rater)."""

    name: str
    env: str
    agents: tuple[str, ...]
    raters: tuple[str, ...] | None
    steps: int | None  # None: the agent config's (offline agents: gradient steps)
    queries: int | None  # None: the agent config's
    eval_freq: int | None = None
    n_eval_episodes: int | None = None
    #: per-agent config overrides, ``{agent: {...}}``
    agent_overrides: dict[str, dict[str, Any]] | None = None


PARTS: dict[str, tuple[Block, ...]] = {
    "pendulum": (
        Block("ppo", "pendulum", ("ppo",), None, 100_000, 0, 10_000, 5),
        Block("sac", "pendulum", ("sac",), None, 30_000, 0, 2_000, 5),
        Block("ppo-rm", "pendulum", ("rm_ppo", "heron"), PENDULUM_RATERS, 100_000, 500, 10_000, 5),
        Block("spo", "pendulum", ("spo",), PENDULUM_RATERS, 100_000, None, 10_000, 5),
        Block("pebble", "pendulum", ("pebble",), PENDULUM_RATERS, 30_000, 500, 2_000, 5),
    ),
    "pendulum-offline": (Block("offline", "pendulum", ("cpl", "p_iql", "bc"), PENDULUM_RATERS, None, None),),
    "halfcheetah": (
        Block("ppo", "halfcheetah", ("ppo",), None, 500_000, 0, 50_000, 5),
        Block("rm", "halfcheetah", ("rm_ppo", "spo"), HALFCHEETAH_RATERS, 500_000, 1_400, 50_000, 5),
    ),
    "query-efficiency": tuple(
        Block(f"{family}-q{q}", "pendulum", agents, ("partial_return",), steps, q, freq, 5, overrides)
        for q in QUERY_BUDGETS
        for family, agents, steps, freq, overrides in (
            ("ppo", ("rm_ppo", "heron"), 100_000, 10_000, None),
            # pebble's 15 Pendulum query points ask 50 queries each: 1,000 need 100 per point
            (
                "sac",
                ("pebble",),
                30_000,
                2_000,
                {"pebble": {"pebble": {"queries_per_point": max(50, q // 10)}}},
            ),
        )
    ),
}


def run_part(part: str, seeds: list[int], jobs: int, runs: Path) -> bool:
    """Run (or resume) every block of ``part``; True when all finished (False: interrupted)."""
    for block in PARTS[part]:
        start = time.time()
        result = run_sweep(
            block.env,
            list(block.agents),
            list(block.raters) if block.raters else None,
            seeds,
            steps=block.steps,
            queries=block.queries,
            out=runs / part / block.name,
            jobs=jobs,
            eval_freq=block.eval_freq,
            n_eval_episodes=block.n_eval_episodes,
            agent_overrides=block.agent_overrides,
            device="cpu",
        )
        print(f"[study] {part}/{block.name}: {result.summary()} ({time.time() - start:.0f} s)", flush=True)
        if result.interrupted:
            return False
    return True


def evaluate_part(part: str, runs: Path) -> None:
    """The final evaluation of every finished run of ``part`` (evaluated runs are read back)."""
    for outcome in evaluate_final_runs([runs / part], episodes=DEFAULT_EPISODES):
        if outcome.error is not None:
            print(f"[study] cannot evaluate {outcome.run_dir}: {outcome.error}", flush=True)


#: the columns of ``results/study/<part>_runs.csv``: one row per finished run, what the reports read
RUN_COLUMNS = (
    "block",
    "env",
    "agent",
    "rater",
    "seed",
    "normalised_score",
    "true_return_mean",
    "score_source",
    "final_episodes",
    "env_steps",
    "queries_asked",
    "queries_answered",
    "wall_s",
)


def block_tables(part: str, runs: Path) -> list[tuple[Block, pd.DataFrame]]:
    """Each block of ``part`` with its finished runs' rows (blocks without any are left out)."""
    tables = []
    for block in PARTS[part]:
        root = runs / part / block.name
        table = load_runs(root, only_done=True) if root.is_dir() else pd.DataFrame()
        if not table.empty:
            tables.append((block, table))
    return tables


def part_runs(tables: list[tuple[Block, pd.DataFrame]]) -> pd.DataFrame:
    """One row per finished run (:data:`RUN_COLUMNS`): its final score and budgets."""
    frames = [final_scores(t).assign(block=b.name).reindex(columns=list(RUN_COLUMNS)) for b, t in tables]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RUN_COLUMNS))


def part_table(tables: list[tuple[Block, pd.DataFrame]]) -> pd.DataFrame:
    """One row per (block, env, agent, rater) of the finished runs (see the module docstring)."""
    rows = []
    for block, table in tables:
        for (env, agent, rater), cell in table.groupby(["env", "agent", "rater"], sort=True):
            last = final_scores(cell)
            rows.append(
                {
                    "block": block.name,
                    "env": env,
                    "agent": agent,
                    "rater": rater,
                    "queries_budget": block.queries,
                    "final_eval_runs": int((last["score_source"] == "final_eval").sum()),
                    **final_score_summary(cell),
                }
            )
    return pd.DataFrame(rows)


def write_table(part: str, table: pd.DataFrame, results: Path, extra: Sequence[str] = ()) -> Path:
    """``results/<part>.csv`` and ``.md`` (the command that regenerates them on top; ``extra`` lines after
    the table)."""
    results.mkdir(parents=True, exist_ok=True)
    table.round(3).to_csv(results / f"{part}.csv", index=False)
    lines = [
        f"# Study part `{part}`",
        "",
        "Produced by (resumable; `--report` only rewrites this table from the finished runs):",
        "",
        f"    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study.py {part}",
        "",
        "Final normalised score per run: the end-of-run evaluation (20 deterministic episodes on fixed",
        "held-out start states, `prefrl evaluate`) where the run has one (`final eval` column), else its",
        "last progress evaluation. IQM and mean over seeds with 95% stratified-bootstrap CIs (2,000",
        "resamples); `asked`/`answered`: mean rater queries per run; `wall s`: mean wall time per run.",
        "",
        "| block | agent | rater | seeds | final eval | median | worst | IQM [95% CI] | mean [95% CI] "
        "| asked | answered | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        seeds = f"{r.seeds}" + ("" if r.seeds >= 5 else " (< 5: not reported)")
        lines.append(
            f"| {r.block} | {r.agent} | {r.rater} | {seeds} | {r.final_eval_runs} | {r.median:.1f} | "
            f"{r.min:.1f} | {score_cells(r)} | {r.queries_asked:.0f} | "
            f"{r.queries_answered:.0f} | {r.wall_s:.0f} |"
        )
    path = results / f"{part}.md"
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return path


#: query-efficiency's agents, whose part-1 cells under this rater are its 500-query budget
QUERY_EFFICIENCY_AGENTS = ("rm_ppo", "heron", "pebble")
QUERY_EFFICIENCY_RATER = "partial_return"


def with_part1_budget(table: pd.DataFrame, runs: Path) -> pd.DataFrame:
    """Part 4's cells plus part 1's cells of the same agents under ``partial_return`` (500 queries)."""
    part1 = part_table(block_tables("pendulum", runs))
    if part1.empty:
        return table
    keep = part1["agent"].isin(QUERY_EFFICIENCY_AGENTS) & (part1["rater"] == QUERY_EFFICIENCY_RATER)
    return pd.concat([table, part1[keep]], ignore_index=True)


def query_efficiency_markdown(table: pd.DataFrame) -> list[str]:
    """Score by budget: one row per agent, one column per query budget (IQM [95% CI], worst seed)."""
    budgets = sorted(int(q) for q in table["queries_budget"].unique())
    lines = [
        "| agent | " + " | ".join(f"{q} queries" for q in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for agent in QUERY_EFFICIENCY_AGENTS:
        cells = []
        for q in budgets:
            row = table[(table["agent"] == agent) & (table["queries_budget"] == q)]
            if row.empty or int(row.iloc[0]["seeds"]) < 5:
                cells.append("-")
                continue
            r = row.iloc[0]
            cells.append(f"{r['iqm']:.1f} [{r['iqm_low']:.1f}, {r['iqm_high']:.1f}] (worst {r['min']:.1f})")
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    return lines


def query_efficiency_figure(table: pd.DataFrame, results: Path) -> list[Path]:
    """Part 4's figure: IQM normalised score (95% CI) against the query budget, one line per agent."""
    table = table[table["seeds"] >= 5]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, (agent, rows) in enumerate(table.sort_values("queries_budget").groupby("agent", sort=True)):
        # a small horizontal offset per agent so the error bars at one budget do not hide each other
        budgets = rows["queries_budget"].to_numpy(float) * (1.0 + 0.04 * (k - 1))
        errors = [rows["iqm"] - rows["iqm_low"], rows["iqm_high"] - rows["iqm"]]
        ax.errorbar(budgets, rows["iqm"], yerr=errors, marker="o", capsize=3, label=agent)
    ax.set_xscale("log")
    ax.minorticks_off()
    budgets = sorted(int(q) for q in table["queries_budget"].unique())
    ax.set_xticks(budgets, [str(q) for q in budgets])
    ax.set_xlabel("rater queries (partial_return)")
    ax.set_ylabel("final normalised score, IQM (95% CI)")
    ax.set_title("Pendulum-v1: score vs query budget (5 seeds)")
    ax.legend()
    return save_figure(fig, results / "query-efficiency")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(5)))
    parser.add_argument("--jobs", type=int, default=2, help="parallel runs")
    parser.add_argument("--report", action="store_true", help="only write the table of the finished runs")
    parser.add_argument("--runs", type=Path, default=Path("runs/study"))
    parser.add_argument("--results", type=Path, default=Path("results/study"))
    args = parser.parse_args()
    if not args.report:
        finished = run_part(args.part, args.seeds, args.jobs, args.runs)
        evaluate_part(args.part, args.runs)
        if not finished:
            print("[study] interrupted: run the same command again to resume", flush=True)
    tables = block_tables(args.part, args.runs)
    table = part_table(tables)
    if table.empty:
        print(f"[study] {args.part}: no finished runs yet")
        return
    extra: list[str] = []
    if args.part == "query-efficiency":
        combined = with_part1_budget(table, args.runs)
        print(query_efficiency_figure(combined, args.results))
        extra = [
            "",
            "## Score by query budget (Pendulum, partial_return, 5 seeds)",
            "",
            "IQM of the final normalised score [95% CI] and the worst seed; the 500-query column is part",
            "1's cell of the same agent and settings (`results/study/pendulum.md`). Figure:",
            "`query-efficiency.png`.",
            "",
            *query_efficiency_markdown(combined),
        ]
    print(write_table(args.part, table, args.results, extra))
    part_runs(tables).to_csv(args.results / f"{args.part}_runs.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
