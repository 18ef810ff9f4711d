"""A new rater: a preference model that judges a segment by its bad moments, registered by name.

``QuantileRater`` scores a segment by a low quantile of its per-step rewards (quantile 0: the worst step),
a pessimistic teacher no per-step reward describes. Because it is a :class:`~prefrl.raters.ScoreRater`
(one score per segment, compared with a Bradley-Terry choice), the B-Pref noise wrappers compose with it
(``quantile_return+mistake:eps=0.1``). Run it with ``python docs/examples/custom_rater.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import prefrl
from prefrl.envs import load_env_spec
from prefrl.errors import RaterError
from prefrl.experiment import run_experiment
from prefrl.raters import ScoreRater, make_rater
from prefrl.segments import collect_segments, sample_pairs
from prefrl.types import SegmentBatch


class QuantileRater(ScoreRater):
    """Prefers the segment whose low quantile of per-step reward is higher (quantile 0: the worst step).

    :param quantile: which quantile of the segment's rewards is its score, in ``[0, 1]``.
    :param beta: Bradley-Terry inverse temperature; ``inf`` = deterministic.
    """

    name = "quantile_return"

    def __init__(self, quantile: float = 0.1, beta: float = float("inf")) -> None:
        super().__init__(beta=beta)  # ScoreRater checks beta and counts queries
        if not 0.0 <= quantile <= 1.0:
            # a PrefrlError subclass: the command line shows it as one line, exit status 2
            raise RaterError(f"{self.name}: quantile must lie in [0, 1], got {quantile}")
        self.quantile = float(quantile)

    def score(self, segments: SegmentBatch, step_weights: np.ndarray | None = None) -> np.ndarray:
        """The ``quantile`` of each segment's rewards, ``[N]``; higher is better."""
        self._require_no_weights(step_weights)  # not a per-step sum, so `myopic` cannot wrap it
        return np.quantile(segments.reward, self.quantile, axis=1)

    def __repr__(self) -> str:
        return f"QuantileRater(quantile={self.quantile}, beta={self.beta})"


# the name now works in every rater spec: make_rater, `prefrl run --rater`, sweeps, `prefrl rate`
prefrl.register_rater(
    "quantile_return",
    QuantileRater,
    params={"quantile": float, "beta": float},
    description="worst-moments teacher: a low quantile of the per-step rewards",
)

#: tiny budgets for the example runs: one env, 256-step rollouts, short evaluations
TINY = {
    "steps": 512,
    "queries": 30,
    "overrides": {"n_envs": 1, "ppo": {"n_steps": 256, "batch_size": 64, "n_epochs": 2}},
    "eval_freq": 256,
    "n_eval_episodes": 1,
}


def main(out: str | Path | None = None) -> list[Path]:
    """Label a few pairs with the new rater, then train rm_ppo with it by name and as an object."""
    spec = load_env_spec("pendulum")
    segments = collect_segments(spec, "random", num_segments=100, seed=0)
    pairs = sample_pairs(len(segments), 500, np.random.default_rng(0))
    # on random Pendulum segments the worst moment is the bottom of a fast swing, while the swings earn
    # the best sums: this teacher disagrees with a partial-return teacher on most pairs
    reference = make_rater("partial_return", spec).label(segments, pairs, np.random.default_rng(1)).labels
    for rater_spec in ("quantile_return:quantile=0", "quantile_return", "quantile_return+mistake:eps=0.1"):
        labels = make_rater(rater_spec, spec).label(segments, pairs, np.random.default_rng(1)).labels
        print(f"{rater_spec:35s} agrees with partial_return on {np.mean(labels == reference):.1%} of pairs")

    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="prefrl-example-"))
    by_name = run_experiment(
        env="pendulum",
        agent="rm_ppo",
        rater="quantile_return:quantile=0.25",
        seed=0,
        out=out / "by_name",
        **TINY,
    )
    as_object = run_experiment(
        env="pendulum",
        agent="rm_ppo",
        rater=QuantileRater(quantile=0.25),
        seed=0,
        out=out / "as_object",
        **TINY,
    )
    return [by_name, as_object]


if __name__ == "__main__":
    for run_dir in main():
        print(run_dir)
