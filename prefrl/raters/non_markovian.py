"""Non-Markovian rater: the score is a segment-level statistic that no per-step reward can express.

The statistic is taken over one factor's per-step *utility* ``u_t = sign * weight * raw`` (larger is
always better), configured in the env spec under ``non_markovian`` and overridable:

* ``min`` / ``max``: the worst / best moment of the segment (e.g. HalfCheetah's slowest speed);
* ``mean``: the average utility (Markovian on its own; kept for comparisons);
* ``final``: the utility at the last step;
* ``fraction_above``: the fraction of steps with ``u_t > threshold`` (e.g. Pendulum's share of steps
  near upright).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prefrl.errors import RaterError
from prefrl.raters.base import ScoreRater
from prefrl.raters.features import check_finite_param, require_env_spec, step_utilities
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec

STATISTICS = ("min", "max", "mean", "final", "fraction_above")


class NonMarkovianRater(ScoreRater):
    """Score = a statistic of one factor's utility over the segment.

    :param env_spec: the env spec (factor utilities and the default statistic/factor/threshold).
    :param statistic: one of ``min``, ``max``, ``mean``, ``final``, ``fraction_above``.
    :param factor: factor name.
    :param threshold: utility threshold of ``fraction_above``.
    :param beta: Bradley-Terry inverse temperature; ``inf`` = deterministic.
    :param soft: return the preference probability instead of a sampled label.
    """

    name = "non_markovian"

    def __init__(
        self,
        env_spec: EnvSpec | None = None,
        statistic: str | None = None,
        factor: str | None = None,
        threshold: float | None = None,
        beta: float = float("inf"),
        soft: bool = False,
    ) -> None:
        super().__init__(beta=beta, soft=soft)
        self.env_spec = require_env_spec(env_spec, self.name)
        defaults = dict(self.env_spec.non_markovian)
        self.statistic = statistic if statistic is not None else defaults.get("statistic")
        factor = factor if factor is not None else defaults.get("factor")
        threshold = threshold if threshold is not None else defaults.get("threshold")
        if self.statistic is None or factor is None:
            raise RaterError(
                f"non_markovian: env spec '{self.env_spec.name}' defines no non_markovian statistic; "
                "pass statistic and factor"
            )
        if self.statistic not in STATISTICS:
            raise RaterError(
                f"non_markovian: unknown statistic {self.statistic!r}; one of {', '.join(STATISTICS)}"
            )
        try:
            self.factor_index = self.env_spec.factor_index(factor)
        except KeyError as e:
            raise RaterError(f"non_markovian: {e.args[0]}") from None
        self.factor = factor
        if self.statistic == "fraction_above" and threshold is None:
            raise RaterError("non_markovian: statistic 'fraction_above' needs a threshold")
        self.threshold = check_finite_param(threshold, "threshold", self.name)

    def score(self, segments: SegmentBatch, step_weights: np.ndarray | None = None) -> np.ndarray:
        """The statistic per segment, ``[N]``."""
        self._require_no_weights(step_weights)
        u = step_utilities(segments, self.env_spec, self.factor_index)  # [N, H]
        if self.statistic == "min":
            return u.min(axis=1)
        if self.statistic == "max":
            return u.max(axis=1)
        if self.statistic == "mean":
            return u.mean(axis=1)
        if self.statistic == "final":
            return u[:, -1]
        return (u > self.threshold).mean(axis=1)

    def __repr__(self) -> str:
        return (
            f"NonMarkovianRater(statistic={self.statistic!r}, factor={self.factor!r}, "
            f"threshold={self.threshold}, beta={self.beta})"
        )
