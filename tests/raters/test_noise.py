"""B-Pref noise wrappers: statistics of stochastic / mistake / skip / equal / myopic, and composition."""

from __future__ import annotations

import itertools

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
    make_rater,
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


def expected_skip_threshold(returns: np.ndarray, eps: float) -> float:
    """The documented rule: B-Pref's ``eps * margin`` for a positive margin, else the floor rule."""
    margin = returns.mean()
    if margin > 0:
        return eps * margin
    floor = min(0.0, returns.min())
    return floor + eps * (margin - floor)


@pytest.mark.parametrize(
    ("low", "high", "eps"),
    # (-3, 7): positive margin with some negative returns (the HalfCheetah case); (-7, 3): negative
    # margin with returns of both signs (floor rule)
    [(0, 10, 0.1), (0, 10, 0.5), (-10, 0, 0.1), (-10, 0, 0.6), (-3, 7, 0.3), (-3, 7, 1.0), (-7, 3, 0.3)],
)
def test_skip_drops_exactly_the_pairs_at_or_below_threshold(random_pairs, low, high, eps):
    rng = np.random.default_rng(0)
    # segment returns spread uniformly over [low, high], so the threshold cuts off a visible share
    segs = segments_with_rewards(np.repeat(rng.uniform(low, high, (400, 1)) / 10, 10, axis=1))
    pairs = random_pairs(400, 5000)
    returns = segs.returns
    threshold = expected_skip_threshold(returns, eps)
    rater = Skip(PartialReturnRater(), eps=eps)
    assert rater.skip_threshold(segs) == pytest.approx(threshold)
    prefs = rater.label(segs, pairs, np.random.default_rng(0))
    keep = np.maximum(returns[pairs[:, 0]], returns[pairs[:, 1]]) > threshold
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
    # a positive margin keeps B-Pref's threshold when some returns are negative
    shifted = segments_with_rewards(segs.reward - 0.3)
    assert shifted.returns.min() < 0 < shifted.returns.mean()
    assert Skip(PartialReturnRater(), eps=0.3).skip_threshold(shifted) == pytest.approx(
        0.3 * shifted.returns.mean()
    )


# hand-built batches: returns of 4 segments of length 3 (exact in binary floating point), the label
# pairs, and B-Pref's labels worked out by hand (y = P(first preferred); None = skipped)
SKIP_PAIRS = np.array([[0, 1], [2, 0], [0, 3], [1, 2], [3, 1], [2, 3], [1, 0]])


@pytest.mark.parametrize(
    ("reward", "eps", "expected"),
    [
        pytest.param(
            # returns -2, 1.5, 4.5, 8: margin 3 > 0, threshold 0.5 * 3 = 1.5; segment 1 sits exactly at it
            # and counts as low, so (0, 1) is skipped. The old floor rule (threshold -2 + 0.5 * 5 = 0.5)
            # skipped nothing here.
            [[-1, -0.5, -0.5], [0.5, 0.5, 0.5], [1.5, 1.5, 1.5], [2, 3, 3]],
            0.5,
            [None, 1, 0, 0, 1, 0, None],
            id="positive-margin-negative-returns-at-threshold",
        ),
        pytest.param(
            # returns -2, 1.75, 4.5, 8: margin 3.0625, threshold 1.53125 < 1.75: nothing is skipped
            [[-1, -0.5, -0.5], [0.5, 0.5, 0.75], [1.5, 1.5, 1.5], [2, 3, 3]],
            0.5,
            [0, 1, 0, 0, 1, 0, 1],
            id="positive-margin-just-above-threshold",
        ),
        pytest.param(
            # returns -2, 0, 0, 8: margin 1.5 > 0 and eps = 0: threshold 0 is not positive, skipping is
            # off (B-Pref), although segments 1 and 2 are both at 0
            [[-1, -0.5, -0.5], [0, 0, 0], [0, 0, 0], [2, 3, 3]],
            0.0,
            [0, 1, 0, 0.5, 1, 0, 1],
            id="positive-margin-eps-0",
        ),
        pytest.param(
            # returns -9, -7, -3, -1: margin -5 <= 0, floor rule: floor -9, threshold -9 + 0.5 * 4 = -7;
            # segment 1 is exactly at it (B-Pref would skip nothing: its threshold is negative)
            [[-3, -3, -3], [-3, -2, -2], [-1, -1, -1], [0, -0.5, -0.5]],
            0.5,
            [None, 1, 0, 0, 1, 0, None],
            id="negative-margin-floor-rule",
        ),
        pytest.param(
            # same batch, eps 0.25: threshold -9 + 1 = -8, only segment 0 is low: nothing skipped
            [[-3, -3, -3], [-3, -2, -2], [-1, -1, -1], [0, -0.5, -0.5]],
            0.25,
            [0, 1, 0, 0, 1, 0, 1],
            id="negative-margin-one-low-segment",
        ),
        pytest.param(
            # all returns 0 (a sparse reward never reached): margin 0, floor 0, threshold 0 is not above
            # the floor: skipping is off even with eps = 1
            [[0, 0, 0]] * 4,
            1.0,
            [0.5] * 7,
            id="all-zero-returns",
        ),
    ],
)
def test_skip_matches_b_pref_on_hand_built_batches(reward, eps, expected):
    segs = segments_with_rewards(np.array(reward, dtype=np.float64))
    labels, answered = Skip(PartialReturnRater(), eps=eps).label_array(
        segs, SKIP_PAIRS, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(answered, [y is not None for y in expected])
    np.testing.assert_array_equal(labels[answered], [y for y in expected if y is not None])


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


# returns 4, 3.5, 1.5, 3 (margin 3) and, with gamma 0.5 (step weights 0.25, 0.5, 1), myopic scores
# 1, 3.5, 1.5, 3; a fifth segment (return 0.5, myopic 0.125) is added for the skip + equal chain
MYOPIC_REWARD = np.array([[4, 0, 0], [0, 0, 3.5], [0, 0, 1.5], [0, 0, 3], [0.5, 0, 0]], dtype=np.float64)
EQUAL_PAIRS = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
# B-Pref, eps 0.25, margin 3 (band 0.75): plain return differences 0.5, 2.5, 1, 2, 0.5, 1.5 give ties at
# (0, 1) and (1, 3); the others are decided on the myopic differences -0.5, -2, 2, -1.5. Deciding ties on
# the myopic differences (-2.5, -0.5, -2, 2, 0.5, -1.5) would tie (0, 2) instead of (0, 1).
EQUAL_MYOPIC_LABELS = [0.5, 0.0, 0.0, 1.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "build",
    [
        lambda: Equal(Myopic(PartialReturnRater(), gamma=0.5), eps=0.25),
        lambda: Myopic(Equal(PartialReturnRater(), eps=0.25), gamma=0.5),
        lambda: make_rater("myopic:gamma=0.5+equal:eps=0.25", SPEC),
        lambda: make_rater("equal:eps=0.25+myopic:gamma=0.5", SPEC),
        lambda: Stochastic(Equal(Myopic(PartialReturnRater(), gamma=0.5), eps=0.25), beta=float("inf")),
    ],
    ids=["equal(myopic)", "myopic(equal)", "spec-myopic-equal", "spec-equal-myopic", "stoc-inf"],
)
def test_equal_under_myopic_decides_ties_on_undiscounted_sums(build):
    segs = segments_with_rewards(MYOPIC_REWARD[:4])
    assert segs.returns.mean() == 3.0
    rater = build()
    np.testing.assert_allclose(rater.score(segs), [1.0, 3.5, 1.5, 3.0])  # the decision stays myopic
    np.testing.assert_allclose(rater.plain_score(segs), [4.0, 3.5, 1.5, 3.0])
    labels = rater.label(segs, EQUAL_PAIRS, np.random.default_rng(0)).labels
    np.testing.assert_array_equal(labels, EQUAL_MYOPIC_LABELS)


@pytest.mark.parametrize(("second_return", "expected"), [(0.75, 0.0), (0.7, 0.5), (-0.75, 1.0), (-0.7, 0.5)])
def test_equal_difference_exactly_at_the_band_is_not_a_tie(second_return, expected):
    # band eps * |margin| = 0.25 * 3 = 0.75 exactly; B-Pref's test is strict
    segs = segments_with_rewards(np.array([[0.0], [second_return]]))
    rater = Equal(PartialReturnRater(), eps=0.25, margin=3.0)
    assert rater.tie_width(segs) == 0.75
    labels = rater.label(segs, np.array([[0, 1]]), np.random.default_rng(0)).labels
    np.testing.assert_array_equal(labels, [expected])


@pytest.mark.parametrize(("eps", "margin"), [(0.0, 5.0), (0.3, 0.0)])
def test_equal_with_zero_band_gives_no_ties_but_exact_ties_stay_half(eps, margin):
    # eps = 0 or margin 0: an empty band; an exact return tie is still 0.5 (deterministic teacher)
    segs = segments_with_rewards(np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.5], [-1.0, 1.0]]))
    rater = Equal(PartialReturnRater(), eps=eps, margin=margin)
    assert rater.tie_width(segs) == 0.0
    labels = rater.label(segs, np.array([[0, 1], [1, 2], [2, 3], [3, 0]]), np.random.default_rng(0)).labels
    np.testing.assert_array_equal(labels, [0.5, 0.0, 1.0, 0.0])


def test_myopic_equal_tie_share_equals_equal_tie_share_on_a_non_negative_batch(random_pairs):
    # H = 50, gamma = 0.9 (the setting), non-negative rewards: the ties are decided on plain
    # sums, so the myopic teacher ties exactly as often as the plain one
    rng = np.random.default_rng(3)
    segs = segments_with_rewards(rng.exponential(1.0, (1000, 50)))
    m = 20_000
    pairs = random_pairs(1000, m)
    plain = Equal(PartialReturnRater(), eps=0.1).label(segs, pairs, np.random.default_rng(0)).labels
    myopic = Equal(Myopic(PartialReturnRater(), gamma=0.9), eps=0.1)
    labels = myopic.label(segs, pairs, np.random.default_rng(0)).labels
    share, myopic_share = np.mean(plain == 0.5), np.mean(labels == 0.5)
    diff = segs.returns[pairs[:, 0]] - segs.returns[pairs[:, 1]]
    expected = np.mean(np.abs(diff) < 0.1 * segs.returns.mean())
    assert 0.02 < share < 0.5
    assert abs(share - expected) <= binomial_tol(expected, m)
    assert abs(myopic_share - share) <= binomial_tol(share, m)
    # the band on the myopic-weighted difference (the old behaviour) ties several times as often
    scores = myopic.score(segs)
    weighted = np.mean(np.abs(scores[pairs[:, 0]] - scores[pairs[:, 1]]) < 0.1 * segs.returns.mean())
    assert weighted > 2 * share


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


# --------------------------------------------------------------------------------------------------
# B-Pref's order of the irrationalities, whatever the nesting order
# --------------------------------------------------------------------------------------------------

CHAIN_PAIRS = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3], [2, 4], [4, 0], [4, 2], [3, 4]])
# skip: margin 3, eps 0.5 -> threshold 1.5: segments 2 (return 1.5, at the threshold) and 4 (0.5) are low,
# so (2, 4) and (4, 2) are skipped; equal: band 0.75 on plain returns ties (0, 1) and (1, 3); the rest
# are decided on the myopic scores (gamma 0.5): (4, 0): 0.125 < 1, (3, 4): 3 > 0.125
CHAIN_LABELS = {
    0.0: [0.5, 0.0, 0.0, 1.0, 0.5, 0.0, None, 0.0, None, 1.0],
    # B-Pref flips every label, then overwrites the equal pairs with a tie
    1.0: [0.5, 1.0, 1.0, 0.0, 0.5, 1.0, None, 1.0, None, 0.0],
}
WRAPPERS = {
    "myopic": lambda inner: Myopic(inner, gamma=0.5),
    "equal": lambda inner: Equal(inner, eps=0.25, margin=3.0),
    "skip": lambda inner: Skip(inner, eps=0.5, margin=3.0),
}


@pytest.mark.parametrize("mistake", [0.0, 1.0])
@pytest.mark.parametrize("order", list(itertools.permutations([*WRAPPERS, "mistake"])), ids="+".join)
def test_any_wrapper_order_gives_b_prefs_labels(order, mistake):
    segs = segments_with_rewards(MYOPIC_REWARD)
    rater: object = PartialReturnRater()
    for name in order:
        rater = Mistake(rater, eps=mistake) if name == "mistake" else WRAPPERS[name](rater)
    labels, answered = rater.label_array(segs, CHAIN_PAIRS, np.random.default_rng(0))
    expected = CHAIN_LABELS[mistake]
    np.testing.assert_array_equal(answered, [y is not None for y in expected])
    np.testing.assert_array_equal(labels[answered], [y for y in expected if y is not None])


def test_the_same_chain_from_a_spec_string():
    segs = segments_with_rewards(MYOPIC_REWARD)
    spec = "myopic:gamma=0.5+equal:eps=0.25,margin=3.0+skip:eps=0.5,margin=3.0+mistake:eps=1.0"
    labels, answered = make_rater(spec, SPEC).label_array(segs, CHAIN_PAIRS, np.random.default_rng(0))
    expected = CHAIN_LABELS[1.0]
    np.testing.assert_array_equal(labels[answered], [y for y in expected if y is not None])


def test_stochastic_chains_give_the_same_labels_in_every_order(random_pairs):
    # the random draws do not depend on the nesting order either: Bradley-Terry draws, then the flips
    segs = random_segments(n=200, shift=0.3)  # returns around the fixed margin 3
    pairs = random_pairs(200, 2000)
    wrappers = {
        **WRAPPERS,
        "stoc": lambda inner: Stochastic(inner, beta=1.0),
        "mistake": lambda inner: Mistake(inner, eps=0.3),
    }
    results = []
    for order in itertools.permutations(wrappers):
        rater: object = PartialReturnRater()
        for name in order:
            rater = wrappers[name](rater)
        results.append(rater.label_array(segs, pairs, np.random.default_rng(7)))
    labels, answered = results[0]
    assert 0 < answered.sum() < len(pairs) and 0 < np.mean(labels == 0.5) < 0.5
    for other_labels, other_answered in results[1:]:
        np.testing.assert_array_equal(other_answered, answered)
        np.testing.assert_array_equal(other_labels, labels)


# --------------------------------------------------------------------------------------------------
# conventions: exact ties and beta = 0
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: PartialReturnRater(),
        lambda: Mistake(PartialReturnRater(), eps=1.0),
        lambda: Equal(PartialReturnRater(), eps=0.0),
    ],
    ids=["oracle", "mistake-1", "equal-eps-0"],
)
def test_exact_return_ties_are_half_under_a_deterministic_teacher(build):
    # B-Pref's strict comparison would give the first segment (y = 1), and flip it under mistakes
    segs = segments_with_rewards(np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]]))
    labels = build().label(segs, np.array([[0, 1], [1, 2], [2, 0]]), np.random.default_rng(0)).labels
    np.testing.assert_array_equal(labels, [0.5, 0.5, 0.5])


def test_myopic_decides_exact_ties_on_the_weighted_sums():
    # returns 1 and 2, myopic scores (gamma 0.5) 1 and 1: the decision score ties
    segs = segments_with_rewards(np.array([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]]))
    pairs = np.array([[0, 1], [1, 0]])
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(Myopic(PartialReturnRater(), gamma=0.5).label(segs, pairs, rng).labels, 0.5)
    np.testing.assert_array_equal(PartialReturnRater().label(segs, pairs, rng).labels, [0.0, 1.0])


def test_beta_zero_is_a_fair_coin_whatever_the_difference():
    # B-Pref would read beta <= 0 as its rational teacher; here beta is an inverse temperature
    segs = segments_with_rewards(np.array([[100.0], [0.0]]))
    m = 20_000
    pairs = np.tile([[0, 1]], (m, 1))
    hard = Stochastic(PartialReturnRater(), beta=0.0).label(segs, pairs, np.random.default_rng(0)).labels
    assert set(np.unique(hard)) == {0.0, 1.0}
    assert abs(hard.mean() - 0.5) <= binomial_tol(0.5, m)
    soft = Stochastic(PartialReturnRater(), beta=0.0, soft=True).label(
        segs, pairs[:3], np.random.default_rng(0)
    )
    np.testing.assert_array_equal(soft.labels, 0.5)
    rational = Stochastic(PartialReturnRater(), beta=float("inf")).label(
        segs, pairs[:3], np.random.default_rng(0)
    )
    np.testing.assert_array_equal(rational.labels, 1.0)
