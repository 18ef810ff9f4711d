"""Quality of every shipped oracle: expert return, value-function ranking, regret vs partial return.

For each env with a checkpoint under prefrl/oracle/checkpoints (or the envs given)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/oracle_quality.py [ENV ...]

writes results/oracles/quality.csv with one row per env:

* the manifest's measured returns (random, expert, skill levels) and the issue's target;
* ``prefrl.oracle.quality.value_quality_with_critic``: Spearman / Pearson of ``V*`` against the Monte-Carlo
  return of held-out expert states (20 episodes, untruncated targets), and Spearman on the transient states;
  ``*_stochastic``: the same on rollouts of the expert's own stochastic policy (the one its critic evaluates);
  ``*_mixed``: the same on mixed-skill states (a skill level or a random policy acts up to a random step,
  then the expert takes over; targets are the expert's returns from there);
  ``critic_*``: the same for the plain critic, without the Monte-Carlo value correction;
  ``value_corrected``: whether the oracle's ``V*`` uses an accepted correction;
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

from prefrl.analysis import upsert_rows
from prefrl.diagnostics import rate_report
from prefrl.oracle import load_oracle, oracle_dir
from prefrl.oracle.loading import CHECKPOINT_ROOT
from prefrl.oracle.quality import value_quality_with_critic
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
    quality, critic = value_quality_with_critic(oracle)
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
        "value_corrected": oracle.correction is not None,
        "critic_v_spearman": critic["spearman"],
        "critic_v_pearson": critic["pearson"],
        "critic_v_spearman_transient": critic["spearman_transient"],
        "critic_v_spearman_stochastic": critic["spearman_stochastic"],
        "v_spearman_mixed": quality["spearman_mixed"],
        "v_pearson_mixed": quality["pearson_mixed"],
        "critic_v_spearman_mixed": critic["spearman_mixed"],
        "critic_v_pearson_mixed": critic["pearson_mixed"],
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
    path = PROJECT_ROOT / "results" / "oracles" / "quality.csv"
    if not sys.argv[1:]:
        path.unlink(missing_ok=True)  # all shipped envs: a fresh table
    upsert_rows(path, rows)  # measuring some envs again keeps the others' rows
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
