"""Base classes shared by every simulated rater (preference model).

A rater answers queries "is segment ``i`` preferred over segment ``j``?" for a batch of pairs indexing
one pool of segments. It returns labels under the project convention ``y = P(segment 1 preferred)``
(0.5 = tie) and drops skipped queries. Every random draw comes from the generator passed in, and every
rater counts the queries it answered (queries are a budget, like env steps).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from prefrl.errors import RaterError
from prefrl.types import PreferenceBatch, SegmentBatch, validate_pairs


class Rater(ABC):
    """A preference model: labels pairs of segments.

    Subclasses implement :meth:`_label`; :meth:`label` validates the pairs, removes skipped queries and
    counts the answered ones.
    """

    #: short registry name, e.g. ``"partial_return"``
    name: str = "rater"
    #: whether the rater is a :class:`ScoreRater` chain (one scalar score per segment); score-based
    #: noise wrappers (stochastic, equal, myopic) need one
    score_based: bool = False

    #: queries put to this rater, skipped ones included (``num_queries`` counts the answered ones)
    num_asked: int = 0

    def __init__(self) -> None:
        self.num_queries = 0
        self.num_asked = 0

    def label(self, segments: SegmentBatch, pairs: np.ndarray, rng: np.random.Generator) -> PreferenceBatch:
        """Label ``pairs`` (``[M, 2]`` indices into ``segments``); skipped queries are removed."""
        pairs = np.asarray(pairs)
        labels, answered = self.label_array(segments, pairs, rng)
        return PreferenceBatch(segments=segments, pairs=pairs[answered], labels=labels[answered])

    def label_array(
        self, segments: SegmentBatch, pairs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Label ``pairs`` and keep them aligned: ``(labels [M] float, answered [M] bool)``.

        Same draws and query count as :meth:`label`, but skipped queries stay in place (their label is
        NaN), so callers can match labels to pairs (cycle counts, SPO win rates, agreement).
        """
        pairs = np.asarray(pairs)
        validate_pairs(pairs, segments.num_segments)
        labels, answered = self._label(segments, pairs, rng)
        answered = np.asarray(answered, dtype=bool)
        self.num_asked += len(pairs)
        self.num_queries += int(np.count_nonzero(answered))
        if not answered.all():
            labels = np.where(answered, labels, np.nan)
        return labels, answered

    def label_pairs(
        self, first: SegmentBatch, second: SegmentBatch, rng: np.random.Generator
    ) -> PreferenceBatch:
        """Label ``first[k]`` against ``second[k]`` for every ``k`` (two equally long batches)."""
        if first.num_segments != second.num_segments:
            raise ValueError(
                f"both batches need the same number of segments, got {first.num_segments} and "
                f"{second.num_segments}"
            )
        if first.obs.shape[1:] != second.obs.shape[1:]:
            raise ValueError(f"segment shape mismatch: {first.obs.shape[1:]} vs {second.obs.shape[1:]}")
        n = first.num_segments
        pool = SegmentBatch.concatenate([first, second])
        pairs = np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1)
        return self.label(pool, pairs, rng)

    @abstractmethod
    def _label(
        self, segments: SegmentBatch, pairs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(labels [M] float, answered [M] bool)`` for every pair."""

    def reset_queries(self) -> None:
        self.num_queries = 0
        self.num_asked = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def preference_from_difference(
    diff: np.ndarray, beta: float, rng: np.random.Generator, soft: bool = False
) -> np.ndarray:
    """Bradley-Terry labels from score differences ``S(seg1) - S(seg2)``.

    ``beta = inf`` is deterministic: 1 if ``diff > 0``, 0 if ``diff < 0`` and 0.5 on exact ties.
    Finite ``beta`` samples a hard label from ``P(1 > 2) = sigmoid(beta * diff)``, or returns that
    probability itself when ``soft`` is set.
    """
    if np.isinf(beta):
        return (np.sign(diff) + 1.0) * 0.5
    # exp-based sigmoid without overflow warnings for large |beta * diff|
    prob = 0.5 * (1.0 + np.tanh(0.5 * beta * diff))
    if soft:
        return prob
    return (rng.random(diff.shape) < prob).astype(np.float64)


class ScoreRater(Rater):
    """A rater that scores each segment and compares scores with a Bradley-Terry model.

    ``P(seg1 > seg2) = sigmoid(beta * (S(seg1) - S(seg2)))``; ``beta = inf`` (default) is the
    noise-free rater. Subclasses implement :meth:`score`. Raters whose score is a sum over steps accept
    ``step_weights`` (used by the myopic wrapper); others raise.
    """

    #: whether :meth:`score` honours ``step_weights`` (a per-step weighted sum)
    supports_step_weights: bool = False
    score_based: bool = True

    def __init__(self, beta: float = float("inf"), soft: bool = False) -> None:
        super().__init__()
        if not beta >= 0:  # also rejects NaN
            raise RaterError(f"{self.name}: beta (inverse temperature) must be >= 0, got {beta}")
        self.beta = float(beta)
        self.soft = bool(soft)

    @abstractmethod
    def score(self, segments: SegmentBatch, step_weights: np.ndarray | None = None) -> np.ndarray:
        """Score every segment, ``[N]``; higher is better."""

    def score_difference(self, segments: SegmentBatch, pairs: np.ndarray) -> np.ndarray:
        scores = self.score(segments)
        return scores[pairs[:, 0]] - scores[pairs[:, 1]]

    def _label(
        self, segments: SegmentBatch, pairs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        diff = self.score_difference(segments, pairs)
        return self._decide(diff, segments, pairs, rng, self.beta, self.soft)

    def _decide(
        self,
        diff: np.ndarray,
        segments: SegmentBatch,
        pairs: np.ndarray,
        rng: np.random.Generator,
        beta: float,
        soft: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Turn score differences ``[M]`` into ``(labels [M], answered [M] bool)``.

        The decision hook of score-based noise wrappers: a wrapper calls its inner rater's ``_decide``
        and post-processes the labels (flip, tie, skip). ``beta``/``soft`` come from the outermost rater,
        so a stochastic wrapper changes the temperature of the whole chain.
        """
        labels = preference_from_difference(diff, beta, rng, soft=soft)
        return labels, np.ones(len(diff), dtype=bool)

    def _require_no_weights(self, step_weights: np.ndarray | None) -> None:
        if step_weights is not None:
            raise RaterError(f"{self.name} is not a per-step sum and cannot be made myopic")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta})"
