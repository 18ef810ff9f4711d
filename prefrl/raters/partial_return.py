"""Partial-return rater (Christiano et al. 2017; Knox et al. 2022): prefer the segment with more reward.

``S(seg) = sum_t discount^t * r_t`` and ``P(1 > 2) = sigmoid(beta * (S1 - S2))``; ``beta = inf`` (the
default) is the noise-free rater, B-Pref's ``oracle`` teacher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prefrl.errors import RaterError
from prefrl.raters.base import ScoreRater
from prefrl.raters.features import check_step_weights, check_unit_interval, discount_weights, require_env_spec
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec


class PartialReturnRater(ScoreRater):
    """Score = (discounted) sum of the segment's rewards.

    :param beta: inverse temperature of the Bradley-Terry choice; ``inf`` = deterministic.
    :param discount: per-step discount ``gamma`` inside the segment, in ``(0, 1]`` (1 = plain sum).
    :param soft: return ``sigmoid(beta * diff)`` itself instead of sampling a hard label.
    :param utility_weights: ``[F]`` weights on the factor utilities; the per-step reward becomes
        ``sum_f utility_weights[f] * sign_f * weight_f * raw_f(t)`` (a rater with its own idea of the
        reward, used by the panel). ``None`` uses the true reward ``segments.reward``.
    :param env_spec: needed with ``utility_weights`` (factor signs and weights).
    """

    name = "partial_return"
    supports_step_weights = True

    def __init__(
        self,
        beta: float = float("inf"),
        discount: float = 1.0,
        soft: bool = False,
        utility_weights: np.ndarray | None = None,
        env_spec: EnvSpec | None = None,
    ) -> None:
        super().__init__(beta=beta, soft=soft)
        self.discount = check_unit_interval(discount, "discount", self.name, open_low=True)
        self.env_spec = env_spec
        self._reward_weights: np.ndarray | None = None
        if utility_weights is not None:
            spec = require_env_spec(env_spec, f"{self.name} (with utility_weights)")
            utility_weights = np.asarray(utility_weights, dtype=np.float64)
            if utility_weights.shape != (spec.num_factors,):
                raise RaterError(
                    f"{self.name}: utility_weights must have one entry per factor of '{spec.name}' "
                    f"({spec.num_factors}: {spec.factor_names}), got shape {utility_weights.shape}"
                )
            # raw factor -> reward weights, so scoring is one matrix product over the factors
            self._reward_weights = utility_weights * spec.factor_signs * spec.factor_weights
        self.utility_weights = utility_weights

    def step_rewards(self, segments: SegmentBatch) -> np.ndarray:
        """The per-step reward this rater sums, ``[N, H]``."""
        if self._reward_weights is None:
            return segments.reward
        return segments.factors @ self._reward_weights

    def score(self, segments: SegmentBatch, step_weights: np.ndarray | None = None) -> np.ndarray:
        """``sum_t discount^t * step_weights[t] * r_t`` per segment, ``[N]``."""
        rewards = self.step_rewards(segments)
        step_weights = check_step_weights(step_weights, segments.length)
        if self.discount == 1.0 and step_weights is None:
            return rewards.sum(axis=1)
        weights = discount_weights(segments.length, self.discount)
        if step_weights is not None:
            weights = weights * step_weights
        return rewards @ weights

    def __repr__(self) -> str:
        extra = "" if self.utility_weights is None else f", utility_weights={self.utility_weights.tolist()}"
        return f"PartialReturnRater(beta={self.beta}, discount={self.discount}{extra})"
