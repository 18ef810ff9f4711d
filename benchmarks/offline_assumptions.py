"""Table: the offline assumption study in miniature (cpl assumes regret, p_iql partial return, bc neither).

cpl, p_iql and bc learn from the same HalfCheetah-v5 segments (one cached dataset per rater: the same
rollouts, labelled by ``regret`` or by ``partial_return``), with equal gradient steps (agents/*.yaml:
5,000), 5 seeds each. Runs through ``prefrl sweep`` (resumable), then this script writes
``results/offline/halfcheetah.md`` and ``.csv``: final normalised score per agent x rater, median, IQM and
mean with 95% stratified-bootstrap CIs over seeds::

    OMP_NUM_THREADS=1 .venv/bin/prefrl sweep --env halfcheetah --agent cpl,p_iql,bc \\
        --rater regret,partial_return --seeds 5 --out runs/offline_mini --jobs 2
    .venv/bin/python benchmarks/offline_assumptions.py --runs runs/offline_mini

Only finished runs are aggregated; a cell with fewer than 5 finished seeds is marked as such.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from prefrl.analysis import final_score_summary, load_runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/offline_mini"))
    parser.add_argument("--out", type=Path, default=Path("results/offline/halfcheetah"))
    args = parser.parse_args()
    table = load_runs(args.runs, only_done=True)
    rows = []
    for (agent, rater), runs in table.groupby(["agent", "rater"], sort=True):
        rows.append({"agent": agent, "rater": rater, **final_score_summary(runs)})
    summary = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary.round(2).to_csv(args.out.with_suffix(".csv"), index=False)
    lines = [
        "| agent | labels | seeds | median | IQM [95% CI] | mean [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        seeds = f"{r.seeds}" + ("" if r.seeds >= 5 else " (fewer than 5: not a reported comparison)")
        lines.append(
            f"| {r.agent} | {r.rater} | {seeds} | {r.median:.1f} | "
            f"{r.iqm:.1f} [{r.iqm_low:.1f}, {r.iqm_high:.1f}] | "
            f"{r.mean:.1f} [{r.mean_low:.1f}, {r.mean_high:.1f}] |"
        )
    commands = __doc__.split("::")[1].split("Only finished")[0].strip()
    text = (
        "# Offline assumption study in miniature: HalfCheetah-v5\n\n"
        f"```\n{commands}\n```\n\n"
        "Final normalised score of the deterministic policy (last evaluation) after 5,000 gradient steps on "
        "the same segments, labelled by `regret` (cpl's assumption) or `partial_return` (p_iql's).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
