"""Quality of every shipped oracle: expert return, value-function ranking, regret vs partial return.

For each env with a checkpoint under prefrl/oracle_checkpoints (or the envs given)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/oracle_quality.py [ENV ...]

writes results/oracles/quality.csv with one row per env:

* the manifest's measured returns (random, expert, skill levels) and the issue's target;
* ``prefrl.oracle.value_quality``: Spearman / Pearson of ``V*`` against the Monte-Carlo discounted return
  of held-out expert states (10 episodes, untruncated targets), and Spearman on the transient states;
  ``*_stochastic``: the same on rollouts of the expert's own stochastic policy (the one its critic evaluates);
* the agreement of ``regret`` (oracle ``V*``) with ``partial_return`` on 20,000 pairs of mixed-skill
  segments (random policy and every checkpoint in equal shares), as ``prefrl rate --policy mixed``.

The value-function figures are also written into each checkpoint's manifest.json (``value_quality``),
replacing the ones measured at the end of training with an older protocol.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd

from prefrl.diagnostics import rate_report
from prefrl.oracle import CHECKPOINT_ROOT, load_oracle, oracle_dir, value_quality
from prefrl.spec_utils import PROJECT_ROOT

#: the oracle issue's expert targets (mean true return)
TARGETS = {
    "pendulum": -200.0,
    "halfcheetah": 4000.0,
    "hopper": 2500.0,
    "walker2d": 3000.0,
    "ant": 2500.0,
    "swimmer": 100.0,
    "reacher": -6.0,
}


def measure(env: str) -> dict[str, object]:
    start = time.perf_counter()
    oracle = load_oracle(env)
    manifest = oracle.manifest
    quality = value_quality(oracle)
    manifest.value_quality = quality
    manifest.save(oracle_dir(oracle.spec))
    report = rate_report(env, ["partial_return", "regret"], 20_000, policy="mixed", seed=0, repeats=1)
    agreement = {row["rater"]: row["agreement"] for row in report["raters"]}["regret"]
    return {
        "env": env,
        "algo": manifest.algo,
        "train_steps": manifest.train_steps,
        "random_return": manifest.random_return,
        "oracle_return": manifest.oracle_return,
        "oracle_return_std": manifest.oracle_return_std,
        "target": TARGETS.get(env),
        "meets_target": manifest.oracle_return >= TARGETS[env] if env in TARGETS else None,
        "levels": " / ".join(f"{level.mean_return:.1f}" for level in manifest.levels),
        "v_spearman": quality["spearman"],
        "v_pearson": quality["pearson"],
        "v_spearman_transient": quality["spearman_transient"],
        "v_spearman_stochastic": quality["spearman_stochastic"],
        "v_pearson_stochastic": quality["pearson_stochastic"],
        "states": quality["states"],
        "transient_states": quality["transient_states"],
        "regret_vs_partial_agreement": agreement,
        "measure_s": time.perf_counter() - start,
    }


def main() -> None:
    shipped = sorted(p.name for p in CHECKPOINT_ROOT.iterdir() if (p / "manifest.json").is_file())
    envs = sys.argv[1:] or shipped
    rows = []
    for env in envs:
        rows.append(measure(env))
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    out = PROJECT_ROOT / "results" / "oracles"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "quality.csv"
    table = pd.DataFrame(rows)
    if path.is_file() and sys.argv[1:]:  # measuring some envs again keeps the others' rows
        old = pd.read_csv(path)
        table = pd.concat([old[~old["env"].isin(table["env"])], table], ignore_index=True)
    table.sort_values("env").round(4).to_csv(path, index=False)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
