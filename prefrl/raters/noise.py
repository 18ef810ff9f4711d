"""B-Pref simulated-teacher irrationalities (Lee et al. 2021) as composable rater wrappers.

Each wrapper takes an inner rater and changes one thing about how it answers:

=============  =====================================================================  ==========  =======
wrapper        effect                                                                 needs       default
=============  =====================================================================  ==========  =======
``Stochastic`` Bradley-Terry choice ``P(1 > 2) = sigmoid(beta * (S1 - S2))``          score       beta=1
``Mistake``    flip each label ``y -> 1 - y`` with probability ``eps`` (ties stay)    any rater   eps=0.1
``Skip``       drop pairs whose segments' true returns are both below a threshold     any rater   eps=0.1
``Equal``      label 0.5 when ``|S1 - S2| < eps * |margin|``                          score       eps=0.1
``Myopic``     weight step ``t`` by ``gamma^(H-1-t)`` (recent steps count more)       step sums   gamma=0.9
=============  =====================================================================  ==========  =======

*score* = a score-based rater (one scalar score per segment, ``rater.score_based``); *step sums* = a
score that is a per-step sum (``supports_step_weights``). Wrappers over score-based raters are score-based
themselves, so they nest in any order, e.g. ``Mistake(Stochastic(Myopic(PartialReturnRater())))``.
A chain is evaluated inside out: the score (with myopic weights) is computed once, the base rater draws
the Bradley-Terry label with the ``beta`` of the outermost ``Stochastic`` wrapper (its own ``beta`` if
there is none), then each wrapper post-processes the labels from the inside out (ties, flips, skips).
Queries are counted by the rater you call (the outermost).

**Margin.** B-Pref sets ``margin`` = mean true return of an episode scaled to the segment length, i.e.
the mean true return per segment; here it is measured on the batch being labelled (the mean of
``segments.returns`` over the pool), or fixed with ``margin=``.

**Sign convention for negative rewards.** B-Pref's thresholds assume non-negative rewards (its skip
threshold is ``eps * margin`` and its code disables skipping when that is not positive; its equal band
``|R1 - R2| < eps * margin`` is empty when the margin is negative). Here:

* ``Equal`` uses the band width ``eps * |margin|``, so cost-only envs (Pendulum) get ties too;
* ``Skip`` uses ``threshold = floor + eps * (margin - floor)`` with ``floor = min(0, lowest segment
  return in the batch)``. With non-negative returns this is exactly B-Pref's ``eps * margin``; with
  negative returns the threshold stays between the worst segment and the mean, so ``eps = 0`` skips
  nothing and ``eps = 1`` skips pairs whose segments are both below average. ``threshold=`` overrides.

Label convention: B-Pref's label 1 means "segment 2 preferred"; ours is ``y = P(segment 1 preferred)``.
"""

from __future__ import annotations

import numpy as np

from prefrl.errors import RaterError
from prefrl.raters.base import Rater, ScoreRater
from prefrl.raters.features import check_unit_interval
from prefrl.types import SegmentBatch


def _check_beta(beta: float, rater: str) -> float:
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise RaterError(f"{rater}: beta must be a number, got {beta!r}") from None
    if not beta >= 0:  # also rejects NaN
        raise RaterError(f"{rater}: beta (inverse temperature) must be >= 0, got {beta}")
    return beta


class RaterWrapper(ScoreRater):
    """Base class of the noise wrappers: delegates scoring and deciding to ``inner``.

    A wrapper is score-based exactly when its inner rater is (check ``score_based``, not
    ``isinstance(..., ScoreRater)``). Subclasses override :meth:`_postprocess` (label noise) and/or
    :meth:`score` (myopia), or the ``beta``/``soft`` properties (stochastic choice).

    :param inner: the rater to wrap.
    """

    name = "wrapper"
    #: wrappers that only make sense over a score-based rater set this
    requires_score: bool = False

    def __init__(self, inner: Rater) -> None:
        Rater.__init__(self)  # not ScoreRater.__init__: beta/soft are read from the inner rater
        if not isinstance(inner, Rater):
            raise RaterError(f"{self.name}: can only wrap a Rater, got {type(inner).__name__}")
        if self.requires_score and not inner.score_based:
            raise RaterError(
                f"{self.name} needs a score-based rater (one scalar score per segment), but "
                f"{inner.name} is not; wrap partial_return, regret or non_markovian instead"
            )
        self.inner = inner

    @property
    def score_based(self) -> bool:  # type: ignore[override]
        return self.inner.score_based

    @property
    def supports_step_weights(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.inner, "supports_step_weights", False))

    @property
    def beta(self) -> float:  # type: ignore[override]
        return float(getattr(self.inner, "beta", float("inf")))

    @property
    def soft(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.inner, "soft", False))

    def score(self, segments: SegmentBatch, step_weights: np.ndarray | None = None) -> np.ndarray:
        """The inner rater's score, ``[N]`` (only for score-based chains)."""
        if not self.score_based:
            raise RaterError(f"{self.name} over {self.inner.name} has no per-segment score")
        return self.inner.score(segments, step_weights)  # type: ignore[attr-defined]

    def _label(
        self, segments: SegmentBatch, pairs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.score_based:
            # score once with this wrapper's score(), then decide through the whole chain
            return ScoreRater._label(self, segments, pairs, rng)
        labels, answered = self.inner._label(segments, pairs, rng)
        return self._postprocess(labels, answered, None, segments, pairs, rng)

    def _decide(
        self,
        diff: np.ndarray,
        segments: SegmentBatch,
        pairs: np.ndarray,
        rng: np.random.Generator,
        beta: float,
        soft: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        labels, answered = self.inner._decide(diff, segments, pairs, rng, beta, soft)  # type: ignore[attr-defined]
        return self._postprocess(labels, answered, diff, segments, pairs, rng)

    def _postprocess(
        self,
        labels: np.ndarray,
        answered: np.ndarray,
        diff: np.ndarray | None,
        segments: SegmentBatch,
        pairs: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Change the inner labels ``[M]`` / answered mask ``[M]``; ``diff`` is ``None`` without scores."""
        return labels, answered

    def _params(self) -> str:
        return ""

    def __repr__(self) -> str:
        params = self._params()
        return f"{type(self).__name__}({params + ', ' if params else ''}inner={self.inner!r})"


def measured_margin(segments: SegmentBatch) -> float:
    """B-Pref's margin measured on a batch: the mean true return per segment."""
    return float(segments.returns.mean())


class Stochastic(RaterWrapper):
    """Bradley-Terry choice with inverse temperature ``beta`` on the inner score (B-Pref "stoc").

    :param inner: a score-based rater.
    :param beta: inverse temperature (B-Pref default 1.0); ``inf`` is deterministic.
    :param soft: return ``sigmoid(beta * diff)`` instead of a sampled hard label.
    """

    name = "stoc"
    requires_score = True

    def __init__(self, inner: Rater, beta: float = 1.0, soft: bool = False) -> None:
        super().__init__(inner)
        self._beta = _check_beta(beta, self.name)
        self._soft = bool(soft)

    @property
    def beta(self) -> float:  # type: ignore[override]
        return self._beta

    @property
    def soft(self) -> bool:  # type: ignore[override]
        return self._soft

    def _params(self) -> str:
        return f"beta={self._beta}" + (", soft=True" if self._soft else "")


class Mistake(RaterWrapper):
    """Flip each answered label ``y -> 1 - y`` with probability ``eps`` (B-Pref "mistake").

    Ties (0.5) are unchanged by a flip. Works over any rater.

    :param inner: any rater.
    :param eps: flip probability in ``[0, 1]`` (B-Pref default 0.1).
    """

    name = "mistake"

    def __init__(self, inner: Rater, eps: float = 0.1) -> None:
        super().__init__(inner)
        self.eps = check_unit_interval(eps, "eps", self.name)

    def _postprocess(
        self,
        labels: np.ndarray,
        answered: np.ndarray,
        diff: np.ndarray | None,
        segments: SegmentBatch,
        pairs: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        flip = rng.random(labels.shape[0]) < self.eps
        return np.where(flip, 1.0 - labels, labels), answered

    def _params(self) -> str:
        return f"eps={self.eps}"


class Skip(RaterWrapper):
    """Drop pairs whose segments both have true return below a threshold (B-Pref "skip").

    ``threshold = floor + eps * (margin - floor)``, ``floor = min(0, min segment return)`` (B-Pref's
    ``eps * margin`` for non-negative returns; see the module docstring for negative rewards).
    Works over any rater; uses the true returns ``segments.returns``, not the rater's score.

    :param inner: any rater.
    :param eps: in ``[0, 1]`` (B-Pref default 0.1).
    :param margin: fixed margin instead of the batch's mean segment return.
    :param threshold: fixed return threshold (overrides ``eps`` and ``margin``).
    """

    name = "skip"

    def __init__(
        self, inner: Rater, eps: float = 0.1, margin: float | None = None, threshold: float | None = None
    ) -> None:
        super().__init__(inner)
        self.eps = check_unit_interval(eps, "eps", self.name)
        self.margin = None if margin is None else float(margin)
        self.threshold = None if threshold is None else float(threshold)

    def skip_threshold(self, segments: SegmentBatch) -> float:
        """The return threshold for this batch of segments."""
        if self.threshold is not None:
            return self.threshold
        returns = segments.returns
        margin = measured_margin(segments) if self.margin is None else self.margin
        floor = min(0.0, float(returns.min()))
        return floor + self.eps * (margin - floor)

    def _postprocess(
        self,
        labels: np.ndarray,
        answered: np.ndarray,
        diff: np.ndarray | None,
        segments: SegmentBatch,
        pairs: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        threshold = self.skip_threshold(segments)
        low = segments.returns < threshold  # [N], then gathered per pair
        skipped = low[pairs[:, 0]] & low[pairs[:, 1]]
        return labels, answered & ~skipped

    def _params(self) -> str:
        return f"eps={self.eps}, margin={self.margin}, threshold={self.threshold}"


class Equal(RaterWrapper):
    """Label 0.5 ("equally preferable") when ``|S1 - S2| < eps * |margin|`` (B-Pref "equal").

    ``S`` is the inner rater's score (with myopic weights if the inner chain is myopic; B-Pref uses the
    undiscounted return, which is the same for ``partial_return``).

    :param inner: a score-based rater.
    :param eps: in ``[0, 1]`` (B-Pref default 0.1).
    :param margin: fixed margin instead of the batch's mean segment return.
    """

    name = "equal"
    requires_score = True

    def __init__(self, inner: Rater, eps: float = 0.1, margin: float | None = None) -> None:
        super().__init__(inner)
        self.eps = check_unit_interval(eps, "eps", self.name)
        self.margin = None if margin is None else float(margin)

    def tie_width(self, segments: SegmentBatch) -> float:
        """``eps * |margin|`` for this batch of segments."""
        margin = measured_margin(segments) if self.margin is None else self.margin
        return self.eps * abs(margin)

    def _postprocess(
        self,
        labels: np.ndarray,
        answered: np.ndarray,
        diff: np.ndarray | None,
        segments: SegmentBatch,
        pairs: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        assert diff is not None  # requires_score guarantees a score-based chain
        return np.where(np.abs(diff) < self.tie_width(segments), 0.5, labels), answered

    def _params(self) -> str:
        return f"eps={self.eps}, margin={self.margin}"


class Myopic(RaterWrapper):
    """Weight step ``t`` of a length-``H`` segment by ``gamma^(H-1-t)`` (B-Pref "myopic").

    The last step has weight 1 and earlier steps count less, as for a teacher who remembers the end of
    a segment best.

    :param inner: a score-based rater whose score is a per-step sum (``supports_step_weights``).
    :param gamma: in ``(0, 1]`` (B-Pref default 0.9; 1 = not myopic).
    """

    name = "myopic"
    requires_score = True

    def __init__(self, inner: Rater, gamma: float = 0.9) -> None:
        super().__init__(inner)
        if not getattr(inner, "supports_step_weights", False):
            raise RaterError(
                f"myopic needs a rater whose score is a per-step sum (partial_return, regret), "
                f"but {inner.name} is not"
            )
        self.gamma = check_unit_interval(gamma, "gamma", self.name, open_low=True)

    def myopic_weights(self, length: int) -> np.ndarray:
        """``gamma^(H-1-t)`` for ``t = 0 .. H-1``, ``[H]``."""
        return self.gamma ** np.arange(length - 1, -1, -1, dtype=np.float64)

    def score(self, segments: SegmentBatch, step_weights: np.ndarray | None = None) -> np.ndarray:
        weights = self.myopic_weights(segments.length)
        if step_weights is not None:
            weights = weights * np.asarray(step_weights, dtype=np.float64)
        return self.inner.score(segments, weights)  # type: ignore[attr-defined]

    def _params(self) -> str:
        return f"gamma={self.gamma}"
