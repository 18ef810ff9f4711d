"""Table: rm_ppo against PPO on HalfCheetah-v5 at 1M env steps with 1,400 partial-return queries.

The issue's acceptance check of the query loop (median true return of rm_ppo >= 90% of ppo's, 3 seeds).
Reads finished (and unfinished) runs of two sweeps and writes ``results/halfcheetah/rm_ppo_1m.md``::

    OMP_NUM_THREADS=1 .venv/bin/prefrl sweep --env halfcheetah --agent ppo --seeds 3 --steps 1000000 \\
        --out runs/hc_1m --jobs 2
    OMP_NUM_THREADS=1 .venv/bin/prefrl sweep --env halfcheetah --agent rm_ppo --rater partial_return \\
        --seeds 3 --steps 1000000 --queries 1400 --out runs/hc_1m_v2 --jobs 2
    .venv/bin/python benchmarks/hc_rm_ppo_1m.py --ppo runs/hc_1m --rm-ppo runs/hc_1m_v2

(the ppo runs come from an earlier sweep; PPO's code did not change since). Final scores are the last
evaluation of each run (5 deterministic episodes); unfinished runs are listed and left out of the medians.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from prefrl.analysis import final_scores, load_runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ppo", type=Path, default=Path("runs/hc_1m"))
    parser.add_argument("--rm-ppo", type=Path, default=Path("runs/hc_1m_v2"))
    parser.add_argument("--out", type=Path, default=Path("results/halfcheetah/rm_ppo_1m.md"))
    args = parser.parse_args()

    tables = [load_runs(args.ppo), load_runs(args.rm_ppo)]
    table = pd.concat(
        [tables[0][tables[0]["agent"] == "ppo"], tables[1][tables[1]["agent"] == "rm_ppo"]], ignore_index=True
    )
    final = final_scores(table)
    rows = []
    for r in final.itertuples():
        asked = int(r.queries_asked) if pd.notna(r.queries_asked) else 0
        finished = "yes" if r.done else "no (running)"
        rows.append(
            f"| {r.agent} | {r.seed} | {int(r.env_steps):,} | {r.true_return_mean:.0f} | "
            f"{r.normalised_score:.1f} | {asked} | {finished} |"
        )
    done = final[final["done"].astype(bool)]
    medians = done.groupby("agent")["true_return_mean"].median()
    counts = done.groupby("agent").size()
    ppo, rm_ppo = medians.get("ppo", float("nan")), medians.get("rm_ppo", float("nan"))
    ratio = rm_ppo / ppo
    verdict = "met" if ratio >= 0.9 else "not met"
    text = f"""# rm_ppo vs ppo on HalfCheetah-v5, 1M env steps, 1,400 partial_return queries

```
{__doc__.split("::")[1].split("(the ppo")[0].strip()}
```

agents/ppo.yaml's and agents/rm_ppo.yaml's HalfCheetah settings (rl-zoo PPO; rm_ppo: linear schedule,
disagreement selection, unique pairs, asked budget, refits at most every 5,000 env steps, rewards of a
rollout computed at its end), final deterministic evaluation (5 episodes).

| agent | seed | env steps | final true return | normalised score | queries asked | finished |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Median final true return of the finished runs: ppo {ppo:.0f} ({counts.get("ppo", 0)} seeds),
rm_ppo {rm_ppo:.0f} ({counts.get("rm_ppo", 0)} seeds): rm_ppo / ppo = **{ratio:.2f}**
(target >= 0.90: {verdict}). With 3 seeds per agent this is the acceptance check of the query loop, not a
reported comparison (those need >= 5 seeds, see results/README.md).
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
