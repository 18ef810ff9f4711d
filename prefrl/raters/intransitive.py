"""Intransitive rater: a majority vote of K >= 3 criteria (Condorcet), which produces preference cycles.

Each criterion ``k`` is a weighting of the reward-factor utilities (listed in the env spec under
``intransitive.criteria``); its score of a segment is ``C_k(seg) = sum_t sum_f w_kf * utility_f(t)``.
Each criterion votes for the segment with the higher score (deterministically, or with a Bradley-Terry
draw when ``beta`` is finite; an exact tie abstains), and the label is the majority:
``y = 1`` if more criteria prefer segment 1, ``0`` if more prefer segment 2, ``0.5`` on a tied vote
(possible with an even K or abstentions). Three criteria that rank segments differently make the
majority relation cyclic (a > b, b > c, c > a) on some triples; :func:`prefrl.diagnostics.cycle_rate`
measures how often.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from prefrl.errors import RaterError
from prefrl.raters.base import Rater
from prefrl.raters.features import require_env_spec, utility_sums
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec


class IntransitiveRater(Rater):
    """Majority vote of K weighted-utility criteria.

    :param env_spec: the env spec (factor utilities and, by default, the criteria).
    :param criteria: ``{criterion name: {factor name: weight}}`` overriding ``env_spec.criteria``.
    :param beta: each criterion's inverse temperature; ``inf`` (default) = deterministic votes.
    """

    name = "intransitive"

    def __init__(
        self,
        env_spec: EnvSpec | None = None,
        criteria: Mapping[str, Mapping[str, float]] | None = None,
        beta: float = float("inf"),
    ) -> None:
        super().__init__()
        self.env_spec = require_env_spec(env_spec, self.name)
        if criteria is None:
            criteria = {c.name: c.weights for c in self.env_spec.criteria}
        if len(criteria) < 3:
            raise RaterError(
                f"intransitive: needs at least 3 criteria, env spec '{self.env_spec.name}' gives "
                f"{len(criteria)}; add them under intransitive.criteria in its yaml"
            )
        if not beta >= 0:
            raise RaterError(f"intransitive: beta (inverse temperature) must be >= 0, got {beta}")
        self.beta = float(beta)
        self.criterion_names: list[str] = list(criteria)
        # [F, K]: criterion k's weight on factor f's utility
        self.weights = np.zeros((self.env_spec.num_factors, len(criteria)))
        for k, weights in enumerate(criteria.values()):
            for factor, w in weights.items():
                try:
                    self.weights[self.env_spec.factor_index(factor), k] = float(w)
                except KeyError as e:
                    name = self.criterion_names[k]
                    raise RaterError(f"intransitive: criterion '{name}': {e.args[0]}") from None

    @property
    def num_criteria(self) -> int:
        return self.weights.shape[1]

    def criterion_scores(self, segments: SegmentBatch) -> np.ndarray:
        """Every criterion's score of every segment, ``[N, K]``."""
        return utility_sums(segments, self.env_spec) @ self.weights

    def votes(self, segments: SegmentBatch, pairs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each criterion's vote per pair, ``[M, K]`` in ``{+1 (segment 1), -1 (segment 2), 0 (abstain)}``."""
        # criterion-major [K, N] so each gather reads one contiguous row
        scores = np.ascontiguousarray(self.criterion_scores(segments).T)
        first, second = pairs[:, 0], pairs[:, 1]
        votes = np.empty((pairs.shape[0], self.num_criteria), dtype=np.int8)
        for k in range(self.num_criteria):  # K is small (3-5); the work is vectorised over pairs
            diff = scores[k][first] - scores[k][second]
            if np.isinf(self.beta):
                votes[:, k] = np.sign(diff)
            else:
                prob = 0.5 * (1.0 + np.tanh(0.5 * self.beta * diff))
                votes[:, k] = np.where(rng.random(diff.shape[0]) < prob, 1, -1)
        return votes

    def _label(
        self, segments: SegmentBatch, pairs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        total = self.votes(segments, pairs, rng).sum(axis=1, dtype=np.int64)
        labels = (np.sign(total) + 1.0) * 0.5
        return labels, np.ones(pairs.shape[0], dtype=bool)

    def __repr__(self) -> str:
        return f"IntransitiveRater(criteria={self.criterion_names}, beta={self.beta})"
