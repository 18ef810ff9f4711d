"""B-Pref simulated-teacher irrationalities (Lee et al. 2021) as composable rater wrappers.

Each wrapper takes an inner rater and changes one thing about how it answers:

=============  =====================================================================  ==========  =======
wrapper        effect                                                                 needs       default
=============  =====================================================================  ==========  =======
``Stochastic`` Bradley-Terry choice ``P(1 > 2) = sigmoid(beta * (S1 - S2))``          score       beta=1
``Mistake``    flip each label ``y -> 1 - y`` with probability ``eps`` (ties stay)    any rater   eps=0.1
``Skip``       drop pairs whose true returns are both ``<= eps * margin``             any rater   eps=0.1
``Equal``      label 0.5 when ``|S1 - S2| < eps * |margin|`` (``S`` without myopia)   score       eps=0.1
``Myopic``     weight step ``t`` by ``gamma^(H-1-t)`` (recent steps count more)       step sums   gamma=0.9
=============  =====================================================================  ==========  =======

*score* = a score-based rater (one scalar score per segment, ``rater.score_based``); *step sums* = a
score that is a per-step sum (``supports_step_weights``). Wrappers over score-based raters are score-based
themselves, so they nest in any order, e.g. ``Mistake(Stochastic(Myopic(PartialReturnRater())))``.
A chain is evaluated inside out: the score (with myopic weights) is computed once, the base rater draws
the Bradley-Terry label with the ``beta`` of the outermost ``Stochastic`` wrapper (its own ``beta`` if
there is none), then each wrapper post-processes the labels from the inside out (ties, flips, skips).
Queries are counted by the rater you call (the outermost).

**Order of the irrationalities.** B-Pref's teacher works through a pair in a fixed order: skip on the
plain (undiscounted) true returns, the equal test on the plain return sums, the myopic re-weighting, the
rational or Bradley-Terry label on the re-weighted sums, mistakes, and finally the equal pairs overwrite
their label with a tie. prefrl reproduces that order whatever the nesting order of the wrappers:

* myopic weights enter only the score that decides the label, wherever ``Myopic`` sits in the chain;
* ``Skip`` looks at the plain true returns ``segments.returns`` and ``Equal`` at the chain's score without
  myopic weights (:meth:`RaterWrapper.plain_score`), so neither sees the myopic re-weighting;
* a flip leaves 0.5 unchanged, so a tie survives ``Mistake`` on either side of ``Equal`` (B-Pref: the tie
  overwrites the flipped label), and ``Skip`` only changes which pairs are answered;
* the random draws are the base rater's Bradley-Terry draws, then one uniform per pair for each
  ``Mistake``, so one generator gives the same labels for every ordering of the wrappers.

**Margin.** B-Pref sets ``margin`` = mean true return of an episode scaled to the segment length, i.e.
the mean true return per segment; here it is measured on the batch being labelled (the mean of
``segments.returns`` over the pool), or fixed with ``margin=``.

**Sign convention for negative rewards.** B-Pref's thresholds assume a positive margin (its skip
threshold is ``eps * margin`` and skipping is off when that is not positive; its equal band
``|R1 - R2| < eps * margin`` is empty when the margin is negative). Here:

* ``Equal`` uses the band width ``eps * |margin|``, so cost-only envs (Pendulum) get ties too; for a
  positive margin this is B-Pref's band;
* ``Skip`` with a positive margin is B-Pref's rule exactly, also when some segment returns are negative
  (mixed-skill HalfCheetah segments: 13% negative returns, positive mean): threshold ``eps * margin``,
  and a pair is skipped when both true returns are at or below it;
* ``Skip`` with a margin ``<= 0`` (a cost-only env, where B-Pref would never skip) uses the floor rule
  ``threshold = floor + eps * (margin - floor)`` with ``floor = min(0, lowest segment return in the
  batch)``: the threshold lies between the worst segment and the mean, so ``eps = 1`` skips pairs whose
  segments are both at or below average. ``threshold=`` fixes the threshold in either case.

**Conventions** (boundary cases, and where they match or differ from B-Pref's labelling code):

* *Exact return ties, deterministic teacher* (``beta = inf``): label 0.5. B-Pref's rational label comes
  from a strict comparison, so an exact tie goes to the first segment of the pair, an artefact of the
  query's order; 0.5 keeps ``y(2, 1) = 1 - y(1, 2)`` and is what the equal teacher answers anyway. A tie is
  decided on the score that makes the decision, so under ``Myopic`` it is a tie of the weighted sums, as in
  B-Pref. ``Mistake`` leaves it at 0.5 (B-Pref would flip its arbitrary first-segment label).
* *A return exactly at the skip threshold* counts as low, as in B-Pref (a pair is kept only when the
  larger of its two returns is strictly above the threshold). Skipping is off when the threshold is not
  above the floor (0 for a positive margin, as B-Pref's "threshold > 0" test; the floor of the floor rule
  otherwise): ``eps = 0`` never skips, and a batch whose returns are all 0 is never skipped.
* *A difference exactly at the equal band* ``|S1 - S2| == eps * |margin|`` is not a tie (strict ``<``, as
  B-Pref). A band of width 0 (``eps = 0`` or a zero margin) gives no ties.
* *beta = 0*: a fair coin for a hard label, 0.5 for a soft one (``sigmoid(0)``); ``beta = inf`` is the
  rational teacher. B-Pref instead uses ``beta <= 0`` as a switch for its rational teacher (default -1).
  prefrl reads ``beta`` as an inverse temperature everywhere, so labels change continuously from coin flips
  (``beta -> 0``) to the rational teacher (``beta -> inf``) instead of jumping at 0. Under a finite
  ``beta`` an exact tie is a fair coin, as in B-Pref.
* *Mistake probability*: a label flips when a uniform draw ``u`` in ``[0, 1)`` has ``u < eps``, so the flip
  rate is exactly ``eps`` (B-Pref's ``<=`` differs only on an event of probability zero).
* *Equal over other raters*: ``S`` is the chain's score without myopic weights, i.e. the base rater's own
  score (``regret``: the negated regret; ``partial_return`` with ``discount < 1``: its discounted sum;
  ``partial_return``: the plain return, B-Pref's case). A teacher is indifferent in its own measure of the
  segments; the band ``eps * |margin|`` is still measured on true returns.

Label convention: B-Pref's label 1 means "segment 2 preferred"; ours is ``y = P(segment 1 preferred)``.
"""

from __future__ import annotations

import numpy as np

from prefrl.errors import RaterError
from prefrl.raters.base import Rater, ScoreRater
from prefrl.raters.features import check_finite_param, check_unit_interval
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

    def plain_score(self, segments: SegmentBatch) -> np.ndarray:
        """The chain's score without myopic weights, ``[N]``: the base rater's own score.

        B-Pref decides "equally preferable" on these sums, before its myopic re-weighting. The default
        walks down to the base rater and never applies a wrapper's step weights; a wrapper that changes
        the score in another way (not myopia) overrides this too.
        """
        if not self.score_based:
            raise RaterError(f"{self.name} over {self.inner.name} has no per-segment score")
        if isinstance(self.inner, RaterWrapper):
            return self.inner.plain_score(segments)
        return self.inner.score(segments)  # type: ignore[attr-defined]

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
    """Drop pairs whose segments both have true return at or below a threshold (B-Pref "skip").

    With a positive margin this is B-Pref's rule: ``threshold = eps * margin``. With a margin ``<= 0`` the
    cost-only floor rule ``threshold = floor + eps * (margin - floor)``, ``floor = min(0, min segment
    return)``. Skipping is off when the threshold is not above the floor (0 for a positive margin), so
    ``eps = 0`` skips nothing (module docstring: sign convention and conventions). Works over any rater;
    uses the plain true returns ``segments.returns``, never the rater's (possibly myopic) score.

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
        self.margin = check_finite_param(margin, "margin", self.name)
        self.threshold = check_finite_param(threshold, "threshold", self.name)

    def skip_threshold(self, segments: SegmentBatch) -> float:
        """The return threshold for this batch: a pair is skipped when both returns are ``<=`` it.

        ``-inf`` when skipping is off (the threshold is not above the floor, e.g. ``eps = 0``).
        """
        if self.threshold is not None:
            return self.threshold
        margin = measured_margin(segments) if self.margin is None else self.margin
        if margin > 0:
            # B-Pref's rule, whatever the sign of single returns
            floor = 0.0
            threshold = self.eps * margin
        else:
            floor = min(0.0, float(segments.returns.min()))
            threshold = floor + self.eps * (margin - floor)
        return threshold if threshold > floor else float("-inf")

    def skipped(self, segments: SegmentBatch, pairs: np.ndarray) -> np.ndarray:
        """``[M]`` bool: the pairs this wrapper drops (both true returns at or below the threshold)."""
        low = segments.returns <= self.skip_threshold(segments)  # [N], then gathered per pair
        pairs = np.asarray(pairs)
        return low[pairs[:, 0]] & low[pairs[:, 1]]

    def _postprocess(
        self,
        labels: np.ndarray,
        answered: np.ndarray,
        diff: np.ndarray | None,
        segments: SegmentBatch,
        pairs: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        return labels, answered & ~self.skipped(segments, pairs)

    def _params(self) -> str:
        return f"eps={self.eps}, margin={self.margin}, threshold={self.threshold}"


class Equal(RaterWrapper):
    """Label 0.5 ("equally preferable") when ``|S1 - S2| < eps * |margin|`` (B-Pref "equal").

    ``S`` is the chain's score without myopic weights (:meth:`RaterWrapper.plain_score`), wherever
    ``Myopic`` sits in the chain: B-Pref decides ties on the plain return sums before its myopic
    re-weighting (for ``partial_return`` ``S`` is exactly that sum). A difference exactly at the band
    is not a tie.

    :param inner: a score-based rater.
    :param eps: in ``[0, 1]`` (B-Pref default 0.1).
    :param margin: fixed margin instead of the batch's mean segment return.
    """

    name = "equal"
    requires_score = True

    def __init__(self, inner: Rater, eps: float = 0.1, margin: float | None = None) -> None:
        super().__init__(inner)
        self.eps = check_unit_interval(eps, "eps", self.name)
        self.margin = check_finite_param(margin, "margin", self.name)

    def tie_width(self, segments: SegmentBatch) -> float:
        """``eps * |margin|`` for this batch of segments."""
        margin = measured_margin(segments) if self.margin is None else self.margin
        return self.eps * abs(margin)

    def ties(self, segments: SegmentBatch, pairs: np.ndarray) -> np.ndarray:
        """``[M]`` bool: the pairs this wrapper labels 0.5 (plain score difference inside the band)."""
        scores = self.plain_score(segments)
        pairs = np.asarray(pairs)
        return np.abs(scores[pairs[:, 0]] - scores[pairs[:, 1]]) < self.tie_width(segments)

    def _postprocess(
        self,
        labels: np.ndarray,
        answered: np.ndarray,
        diff: np.ndarray | None,
        segments: SegmentBatch,
        pairs: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        # not `diff`: that one carries the myopic weights of the whole chain
        return np.where(self.ties(segments, pairs), 0.5, labels), answered

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
