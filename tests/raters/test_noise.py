"""B-Pref noise wrappers: statistics of stochastic / mistake / skip / equal / myopic, and composition."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.envs import load_env_spec
from prefrl.errors import RaterError
from prefrl.raters import (
    Equal,
    IntransitiveRater,
    Mistake,
    Myopic,
    NonMarkovianRater,
    PartialReturnRater,
    RegretRater,
    Skip,
    Stochastic,
)
from prefrl.types import SegmentBatch

SPEC = load_env_spec("pendulum")


def segments_with_rewards(reward: np.ndarray, seed: int = 0) -> SegmentBatch:
    """Segments with the given per-step rewards ``[N, H]`` (random factors and observations)."""
    rng = np.random.default_rng(seed)
    n, h = reward.shape
    return SegmentBatch(
        obs=rng.standard_normal((n, h, 3)),
        act=rng.uniform(-2, 2, (n, h, 1)),
        reward=reward,
        factors=rng.random((n, h, SPEC.num_factors)),
        dones=np.zeros((n, h), dtype=bool),
        next_obs=rng.standard_normal((n, 3)),
    )


def random_segments(n: int = 500, h: int = 10, shift: float = 0.0, seed: int = 0) -> SegmentBatch:
    rng = np.random.default_rng(seed)
    return segments_with_rewards(rng.standard_normal((n, h)) + shift, seed)


def binomial_tol(p: float, m: int, sigmas: float = 4.0) -> float:
    return sigmas * np.sqrt(max(p * (1 - p), 1e-12) / m)


# --------------------------------------------------------------------------------------------------
# mistake
# --------------------------------------------------------------------------------------------------


def test_mistake_eps_0_1_agrees_90_percent_on_20k_pairs(random_pairs):
    segs = random_segments()
    pairs = random_pairs(len(segs), 20_000)
    truth = PartialReturnRater().label(segs, pairs, np.random.default_rng(0)).labels
    assert not np.any(truth == 0.5)
    labels = Mistake(PartialReturnRater(), eps=0.1).label(segs, pairs, np.random.default_rng(0)).labels
    assert abs(np.mean(labels == truth) - 0.9) < 0.02
    assert set(np.unique(labels)) == {0.0, 1.0}


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3, 0.5, 1.0])
def test_mistake_flip_rate_matches_eps(random_pairs, eps):
    segs = random_segments()
    m = 20_000
    pairs = random_pairs(len(segs), m)
    truth = PartialReturnRater().label(segs, pairs, np.random.default_rng(0)).labels
    labels = Mistake(PartialReturnRater(), eps=eps).label(segs, pairs, np.random.default_rng(1)).labels
    assert abs(np.mean(labels != truth) - eps) <= binomial_tol(eps, m)


def test_mistake_keeps_ties(random_pairs):
    segs = segments_with_rewards(np.ones((4, 3)))  # all returns equal
    pairs = random_pairs(4, 100)
    labels = Mistake(PartialReturnRater(), eps=1.0).label(segs, pairs, np.random.default_rng(0)).labels
    np.testing.assert_array_equal(labels, 0.5)


def test_mistake_over_a_rater_without_scores(random_pairs):
    rng = np.random.default_rng(0)
    factors = rng.random((300, 10, 3))
    segs = SegmentBatch(
        obs=np.zeros((300, 10, 3)),
        act=np.zeros((300, 10, 1)),
        reward=SPEC.reward_from_factors(factors),
        factors=factors,
        dones=np.zeros((300, 10), dtype=bool),
        next_obs=np.zeros((300, 3)),
    )
    m = 20_000
    pairs = random_pairs(300, m)
    base = IntransitiveRater(SPEC)
    wrapped = Mistake(IntransitiveRater(SPEC), eps=0.2)
    assert not wrapped.score_based
    truth = base.label(segs, pairs, np.random.default_rng(0)).labels
    labels = wrapped.label(segs, pairs, np.random.default_rng(0)).labels
    assert abs(np.mean(labels != truth) - 0.2) <= binomial_tol(0.2, m)
    with pytest.raises(RaterError, match="no per-segment score"):
        wrapped.score(segs)


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_mistake_rejects_eps_outside_unit_interval(eps):
    with pytest.raises(RaterError, match=r"eps must lie in \[0, 1\]"):
        Mistake(PartialReturnRater(), eps=eps)


# --------------------------------------------------------------------------------------------------
# stochastic
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_stochastic_matches_sigmoid_frequencies(beta):
    diffs = np.array([-2.0, -0.5, 0.0, 0.4, 1.5])
    # segment 0 has return 0, segment k+1 has return diffs[k]: pair (k+1, 0) has difference diffs[k]
    reward = np.concatenate([[0.0], diffs])[:, None]
    segs = segments_with_rewards(reward)
    m = 20_000
    pairs = np.concatenate([np.tile([[k + 1, 0]], (m, 1)) for k in range(len(diffs))])
    labels = Stochastic(PartialReturnRater(), beta=beta).label(segs, pairs, np.random.default_rng(0)).labels
    freq = labels.reshape(len(diffs), m).mean(axis=1)
    expected = 1.0 / (1.0 + np.exp(-beta * diffs))
    assert np.all(np.abs(freq - expected) <= [binomial_tol(p, m) for p in expected])


def test_stochastic_soft_and_deterministic_limits(random_pairs):
    segs = random_segments(n=50)
    pairs = random_pairs(50, 500)
    diff = segs.returns[pairs[:, 0]] - segs.returns[pairs[:, 1]]
    soft = Stochastic(PartialReturnRater(), beta=0.7, soft=True).label(segs, pairs, np.random.default_rng(0))
    np.testing.assert_allclose(soft.labels, 1 / (1 + np.exp(-0.7 * diff)))
    hard = Stochastic(PartialReturnRater(), beta=float("inf")).label(segs, pairs, np.random.default_rng(0))
    np.testing.assert_array_equal(hard.labels, (np.sign(diff) + 1) / 2)
    coin = Stochastic(PartialReturnRater(), beta=0.0).label(segs, pairs, np.random.default_rng(0))
    assert abs(coin.labels.mean() - 0.5) < binomial_tol(0.5, len(pairs))


@pytest.mark.parametrize("beta", [-1.0, "abc"])
def test_stochastic_rejects_bad_beta(beta):
    with pytest.raises(RaterError, match="beta"):
        Stochastic(PartialReturnRater(), beta=beta)


# --------------------------------------------------------------------------------------------------
# skip
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "eps"), [(0, 10, 0.1), (0, 10, 0.5), (-10, 0, 0.1), (-10, 0, 0.6), (-5, 5, 0.3)]
)
def test_skip_drops_exactly_the_pairs_below_threshold(random_pairs, low, high, eps):
    rng = np.random.default_rng(0)
    # segment returns spread uniformly over [low, high], so the threshold cuts off a visible share
    segs = segments_with_rewards(np.repeat(rng.uniform(low, high, (400, 1)) / 10, 10, axis=1))
    pairs = random_pairs(400, 5000)
    returns = segs.returns
    margin = returns.mean()
    floor = min(0.0, returns.min())
    threshold = floor + eps * (margin - floor)
    rater = Skip(PartialReturnRater(), eps=eps)
    assert rater.skip_threshold(segs) == pytest.approx(threshold)
    prefs = rater.label(segs, pairs, np.random.default_rng(0))
    keep = ~((returns[pairs[:, 0]] < threshold) & (returns[pairs[:, 1]] < threshold))
    assert 0 < keep.sum() < len(pairs)
    np.testing.assert_array_equal(prefs.pairs, pairs[keep])
    truth = PartialReturnRater().label(segs, pairs[keep], np.random.default_rng(0)).labels
    np.testing.assert_array_equal(prefs.labels, truth)
    assert rater.num_queries == keep.sum()


def test_skip_threshold_is_b_pref_for_non_negative_returns():
    segs = segments_with_rewards(np.abs(np.random.default_rng(0).standard_normal((100, 5))))
    rater = Skip(PartialReturnRater(), eps=0.3)
    assert rater.skip_threshold(segs) == pytest.approx(0.3 * segs.returns.mean())
    assert Skip(PartialReturnRater(), eps=0.3, margin=10.0).skip_threshold(segs) == pytest.approx(3.0)
    assert Skip(PartialReturnRater(), threshold=-1.0).skip_threshold(segs) == -1.0


def test_skip_with_eps_zero_skips_nothing_even_for_negative_rewards(random_pairs):
    segs = random_segments(n=200, shift=-5.0)
    pairs = random_pairs(200, 3000)
    assert len(Skip(PartialReturnRater(), eps=0.0).label(segs, pairs, np.random.default_rng(0))) == 3000


# --------------------------------------------------------------------------------------------------
# equal
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shift", "eps", "margin"), [(1.0, 0.1, None), (-2.0, 0.2, None), (0.0, 0.5, 4.0)])
def test_equal_ties_exactly_within_the_margin(random_pairs, shift, eps, margin):
    segs = random_segments(n=300, shift=shift)
    pairs = random_pairs(300, 5000)
    diff = segs.returns[pairs[:, 0]] - segs.returns[pairs[:, 1]]
    width = eps * abs(segs.returns.mean() if margin is None else margin)
    rater = Equal(PartialReturnRater(), eps=eps, margin=margin)
    assert rater.tie_width(segs) == pytest.approx(width)
    labels = rater.label(segs, pairs, np.random.default_rng(0)).labels
    inside = np.abs(diff) < width
    assert 0 < inside.sum() < len(pairs)
    np.testing.assert_array_equal(labels[inside], 0.5)
    np.testing.assert_array_equal(labels[~inside], (np.sign(diff[~inside]) + 1) / 2)


def test_equal_needs_a_score():
    with pytest.raises(RaterError, match="needs a score-based rater"):
        Equal(IntransitiveRater(SPEC))


# --------------------------------------------------------------------------------------------------
# myopic
# --------------------------------------------------------------------------------------------------


def test_myopic_prefers_late_reward_over_the_same_reward_early():
    h = 10
    reward = np.zeros((2, h))
    reward[0, -1] = 1.0  # late
    reward[1, 0] = 1.0  # early
    segs = segments_with_rewards(reward)
    pairs = np.array([[0, 1], [1, 0]])
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(PartialReturnRater().label(segs, pairs, rng).labels, [0.5, 0.5])
    rater = Myopic(PartialReturnRater(), gamma=0.9)
    np.testing.assert_array_equal(rater.label(segs, pairs, rng).labels, [1.0, 0.0])
    np.testing.assert_allclose(rater.score(segs), [1.0, 0.9 ** (h - 1)])


def test_myopic_weights_and_composition_with_regret():
    segs = random_segments(n=40)
    rater = Myopic(PartialReturnRater(), gamma=0.8)
    weights = 0.8 ** np.arange(segs.length - 1, -1, -1)
    np.testing.assert_allclose(rater.myopic_weights(segs.length), weights)
    np.testing.assert_allclose(rater.score(segs), segs.reward @ weights)
    np.testing.assert_allclose(Myopic(PartialReturnRater(), gamma=1.0).score(segs), segs.returns)
    regret = Myopic(RegretRater(value_fn=lambda o: np.zeros(len(o))), gamma=0.8)
    np.testing.assert_allclose(regret.score(segs), segs.reward @ weights)
    twice = Myopic(Myopic(PartialReturnRater(), gamma=0.8), gamma=0.5)
    np.testing.assert_allclose(
        twice.score(segs), segs.reward @ (weights * 0.5 ** np.arange(segs.length - 1, -1, -1))
    )


@pytest.mark.parametrize("gamma", [0.0, -0.5, 1.1])
def test_myopic_rejects_gamma_outside_0_1(gamma):
    with pytest.raises(RaterError, match=r"gamma must lie in \(0, 1\]"):
        Myopic(PartialReturnRater(), gamma=gamma)


def test_myopic_needs_a_per_step_sum():
    with pytest.raises(RaterError, match="per-step sum"):
        Myopic(NonMarkovianRater(SPEC))
    with pytest.raises(RaterError, match="score-based"):
        Myopic(IntransitiveRater(SPEC))


# --------------------------------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------------------------------


def test_myopic_then_stochastic_then_mistake_composes(random_pairs):
    segs = random_segments()
    m = 20_000
    pairs = random_pairs(len(segs), m)
    chain = Mistake(Stochastic(Myopic(PartialReturnRater(), gamma=0.9), beta=2.0), eps=0.1)
    assert chain.score_based and chain.beta == 2.0
    myopic_scores = Myopic(PartialReturnRater(), gamma=0.9).score(segs)
    np.testing.assert_allclose(chain.score(segs), myopic_scores)
    diff = myopic_scores[pairs[:, 0]] - myopic_scores[pairs[:, 1]]
    p_first = 1 / (1 + np.exp(-2.0 * diff))
    expected = 0.9 * p_first + 0.1 * (1 - p_first)  # P(y = 1) after a flip with prob 0.1
    labels = chain.label(segs, pairs, np.random.default_rng(0)).labels
    assert abs(labels.mean() - expected.mean()) <= binomial_tol(0.5, m)


def test_stochastic_over_equal_keeps_the_ties(random_pairs):
    segs = random_segments(n=200)
    pairs = random_pairs(200, 3000)
    equal = Equal(PartialReturnRater(), eps=0.2)
    width = equal.tie_width(segs)
    diff = segs.returns[pairs[:, 0]] - segs.returns[pairs[:, 1]]
    labels = Stochastic(equal, beta=0.5).label(segs, pairs, np.random.default_rng(0)).labels
    np.testing.assert_array_equal(labels == 0.5, np.abs(diff) < width)


def test_mistake_and_skip_over_score_raters_stay_score_based():
    inner = Skip(Mistake(PartialReturnRater()))
    assert inner.score_based and inner.supports_step_weights
    chain = Stochastic(Myopic(inner, gamma=0.9), beta=1.0)  # wrappers nest in any order
    segs = random_segments(n=30)
    np.testing.assert_allclose(chain.score(segs), Myopic(PartialReturnRater(), gamma=0.9).score(segs))
    assert "Mistake(eps=0.1" in repr(chain)


def test_wrappers_need_a_rater():
    with pytest.raises(RaterError, match="can only wrap a Rater"):
        Mistake("partial_return")
    with pytest.raises(RaterError, match="score-based"):
        Stochastic(Mistake(IntransitiveRater(SPEC)))
