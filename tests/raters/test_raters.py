"""Base raters: partial return, regret, non-Markovian, hierarchical (HERON), intransitive, panel."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.diagnostics import cycle_rate
from prefrl.envs import load_env_spec
from prefrl.errors import RaterError
from prefrl.raters import (
    HierarchicalRater,
    IntransitiveRater,
    Mistake,
    NonMarkovianRater,
    PanelRater,
    PartialReturnRater,
    RegretRater,
    make_rater,
    set_default_value_fn_provider,
)
from prefrl.raters.regret import get_default_value_fn_provider
from prefrl.types import SegmentBatch

SPEC = load_env_spec("pendulum")  # factors: angle_sq (w 1), velocity_sq (w 0.1), torque_sq (w 0.001), costs


def make_segments(
    factors: np.ndarray | None = None,
    n: int = 200,
    h: int = 10,
    seed: int = 0,
    obs: np.ndarray | None = None,
    next_obs: np.ndarray | None = None,
    reward: np.ndarray | None = None,
) -> SegmentBatch:
    """Synthetic Pendulum-shaped segments; reward = sum of the factor utilities unless given."""
    rng = np.random.default_rng(seed)
    if factors is None:
        factors = rng.random((n, h, SPEC.num_factors)) * np.array([4.0, 30.0, 4.0])
    n, h, _ = factors.shape
    return SegmentBatch(
        obs=rng.standard_normal((n, h, 3)) if obs is None else obs,
        act=rng.uniform(-2, 2, (n, h, 1)),
        reward=SPEC.reward_from_factors(factors) if reward is None else reward,
        factors=factors,
        dones=np.zeros((n, h), dtype=bool),
        next_obs=rng.standard_normal((n, 3)) if next_obs is None else next_obs,
    )


# --------------------------------------------------------------------------------------------------
# partial return
# --------------------------------------------------------------------------------------------------


def test_partial_return_prefers_higher_return_and_ties_exactly():
    reward = np.array([[1.0, 1.0], [0.0, 1.0], [2.0, 0.0]])
    segs = make_segments(factors=np.zeros((3, 2, 3)), reward=reward)
    prefs = PartialReturnRater().label(segs, np.array([[0, 1], [1, 0], [0, 2]]), np.random.default_rng(0))
    np.testing.assert_array_equal(prefs.labels, [1.0, 0.0, 0.5])


@pytest.mark.parametrize("discount", [1.0, 0.9, 0.5])
def test_partial_return_discounted_score(discount):
    segs = make_segments()
    expected = (segs.reward * discount ** np.arange(segs.length)).sum(axis=1)
    np.testing.assert_allclose(PartialReturnRater(discount=discount).score(segs), expected)


def test_partial_return_utility_weights_reproduce_the_true_reward():
    segs = make_segments()
    rater = PartialReturnRater(utility_weights=np.ones(3), env_spec=SPEC)
    np.testing.assert_allclose(rater.score(segs), segs.returns)
    only_angle = PartialReturnRater(utility_weights=np.array([1.0, 0, 0]), env_spec=SPEC)
    np.testing.assert_allclose(only_angle.score(segs), -segs.factors[:, :, 0].sum(axis=1))
    with pytest.raises(RaterError, match="one entry per factor"):
        PartialReturnRater(utility_weights=np.ones(2), env_spec=SPEC)
    with pytest.raises(RaterError, match="env spec"):
        PartialReturnRater(utility_weights=np.ones(3))


def test_soft_labels_are_the_sigmoid(random_pairs):
    segs = make_segments(n=50)
    pairs = random_pairs(50, 100)
    rater = PartialReturnRater(beta=0.3, soft=True)
    diff = segs.returns[pairs[:, 0]] - segs.returns[pairs[:, 1]]
    np.testing.assert_allclose(
        rater.label(segs, pairs, np.random.default_rng(0)).labels, 1 / (1 + np.exp(-0.3 * diff))
    )


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_negative_beta_rejected(bad):
    with pytest.raises(RaterError, match="beta"):
        PartialReturnRater(beta=bad)


@pytest.mark.parametrize("discount", [0.0, 1.5])
def test_bad_discount_rejected(discount):
    with pytest.raises(RaterError, match="discount"):
        PartialReturnRater(discount=discount)


def test_step_weights_shape_checked():
    with pytest.raises(RaterError, match="step_weights"):
        PartialReturnRater().score(make_segments(), step_weights=np.ones(3))


# --------------------------------------------------------------------------------------------------
# regret
# --------------------------------------------------------------------------------------------------


def test_regret_with_constant_value_equals_partial_return(random_pairs):
    segs = make_segments(n=300)
    pairs = random_pairs(300, 2000)
    regret = RegretRater(value_fn=lambda obs: np.full(len(obs), 7.0))
    np.testing.assert_allclose(regret.score(segs), segs.returns)
    weights = np.linspace(0.1, 1.0, segs.length)  # per-step path (used by myopic) telescopes the same way
    np.testing.assert_allclose(regret.score(segs, weights), PartialReturnRater().score(segs, weights))
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(
        regret.label(segs, pairs, rng).labels, PartialReturnRater().label(segs, pairs, rng).labels
    )


def _value_of_first_coordinate(obs: np.ndarray) -> np.ndarray:
    return obs[:, 0]


def test_regret_value_form_prefers_segment_ending_in_higher_value_state_on_equal_rewards():
    n, h = 2, 5
    obs = np.zeros((n, h, 3))
    next_obs = np.zeros((n, 3))
    next_obs[0, 0], next_obs[1, 0] = 1.0, 3.0  # segment 1 ends where V = 3
    segs = make_segments(factors=np.ones((n, h, 3)), obs=obs, next_obs=next_obs)
    assert segs.returns[0] == segs.returns[1]
    rater = RegretRater(value_fn=_value_of_first_coordinate)
    prefs = rater.label(segs, np.array([[0, 1], [1, 0]]), np.random.default_rng(0))
    np.testing.assert_array_equal(prefs.labels, [0.0, 1.0])
    # S = sum r + gamma^H V(s_H) - V(s_0)
    np.testing.assert_allclose(rater.score(segs), segs.returns + next_obs[:, 0])
    discounted = RegretRater(value_fn=_value_of_first_coordinate, gamma=0.5)
    np.testing.assert_allclose(
        discounted.score(segs), (segs.reward * 0.5 ** np.arange(h)).sum(1) + 0.5**h * next_obs[:, 0]
    )


def test_regret_value_form_per_step_path_matches_telescoped_form():
    segs = make_segments(n=40)
    rater = RegretRater(value_fn=lambda o: np.sin(o[:, 0]) + o[:, 1] ** 2, gamma=0.9)
    np.testing.assert_allclose(rater.score(segs, np.ones(segs.length)), rater.score(segs))


def test_regret_advantage_form_with_hand_built_q_and_v():
    n, h = 3, 4
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n, h, 3))
    segs = make_segments(factors=np.zeros((n, h, 3)), obs=obs)

    def v(o: np.ndarray) -> np.ndarray:
        return 2.0 * o[:, 0]

    def q(o: np.ndarray, a: np.ndarray) -> np.ndarray:
        return 2.0 * o[:, 0] - (a[:, 0] - o[:, 1]) ** 2  # optimal action a = obs[1], advantage <= 0

    rater = RegretRater(value_fn=v, q_fn=q, form="advantage")
    expected = -((segs.act[..., 0] - obs[..., 1]) ** 2).sum(axis=1)
    np.testing.assert_allclose(rater.score(segs), expected)
    np.testing.assert_allclose(rater.advantages(segs), -((segs.act[..., 0] - obs[..., 1]) ** 2))
    best = np.argmax(expected)
    other = (best + 1) % n
    assert rater.label(segs, np.array([[best, other]]), rng).labels[0] == 1.0


def test_regret_errors():
    with pytest.raises(RaterError, match="oracle value function"):
        RegretRater()
    with pytest.raises(RaterError, match="q_fn"):
        RegretRater(value_fn=_value_of_first_coordinate, form="advantage")
    with pytest.raises(RaterError, match="form"):
        RegretRater(value_fn=_value_of_first_coordinate, form="bogus")
    with pytest.raises(RaterError, match="gamma"):
        RegretRater(value_fn=_value_of_first_coordinate, gamma=0.0)
    bad = RegretRater(value_fn=lambda o: np.zeros(3))
    with pytest.raises(RaterError, match="returned 3 values"):
        bad.score(make_segments(n=5))


def test_regret_uses_registered_default_provider():
    previous = get_default_value_fn_provider()
    seen = []

    def provider(spec):
        seen.append(spec.name)
        return _value_of_first_coordinate, None

    try:
        set_default_value_fn_provider(provider)
        rater = make_rater("regret", SPEC)
        assert seen == ["pendulum"]
        assert rater.value_fn is _value_of_first_coordinate
        set_default_value_fn_provider(lambda spec: _value_of_first_coordinate)
        assert make_rater("regret", SPEC).value_fn is _value_of_first_coordinate
    finally:
        set_default_value_fn_provider(previous)


# --------------------------------------------------------------------------------------------------
# non-Markovian
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statistic", "reduce"),
    [
        ("min", lambda u: u.min(1)),
        ("max", lambda u: u.max(1)),
        ("mean", lambda u: u.mean(1)),
        ("final", lambda u: u[:, -1]),
        ("fraction_above", lambda u: (u > -1.0).mean(1)),
    ],
)
def test_non_markovian_statistics(statistic, reduce):
    segs = make_segments(n=50)
    rater = NonMarkovianRater(SPEC, statistic=statistic, factor="angle_sq", threshold=-1.0)
    utility = -segs.factors[:, :, 0]  # angle_sq: sign -1, weight 1
    np.testing.assert_allclose(rater.score(segs), reduce(utility))


def test_non_markovian_defaults_from_spec_and_is_not_a_step_sum():
    segs = make_segments(n=20)
    rater = NonMarkovianRater(SPEC)
    assert (rater.statistic, rater.factor, rater.threshold) == ("fraction_above", "angle_sq", -0.1)
    np.testing.assert_allclose(rater.score(segs), (segs.factors[:, :, 0] < 0.1).mean(1))
    with pytest.raises(RaterError, match="myopic"):
        rater.score(segs, step_weights=np.ones(segs.length))
    with pytest.raises(RaterError, match="unknown statistic"):
        NonMarkovianRater(SPEC, statistic="median")
    with pytest.raises(RaterError, match="no factor"):
        NonMarkovianRater(SPEC, factor="speed")
    with pytest.raises(RaterError, match="threshold"):
        NonMarkovianRater(load_env_spec("halfcheetah"), statistic="fraction_above")


def test_non_markovian_is_not_expressible_as_partial_return():
    # same total angle cost, different worst moment: partial return ties, min statistic does not
    factors = np.zeros((2, 4, 3))
    factors[0, :, 0] = [1.0, 1.0, 1.0, 1.0]
    factors[1, :, 0] = [0.0, 0.0, 0.0, 4.0]
    segs = make_segments(factors=factors)
    pair = np.array([[0, 1]])
    rng = np.random.default_rng(0)
    assert PartialReturnRater().label(segs, pair, rng).labels[0] == 0.5
    assert NonMarkovianRater(SPEC, statistic="min", factor="angle_sq").label(segs, pair, rng).labels[0] == 1.0


# --------------------------------------------------------------------------------------------------
# hierarchical (HERON)
# --------------------------------------------------------------------------------------------------


def heron_reference(z: np.ndarray, delta: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Per-pair loop over levels, as in HERON's code (ties -> nan)."""
    out = []
    for i, j in pairs:
        label = np.nan
        for level in range(z.shape[1]):
            if z[i, level] > z[j, level] + delta[level]:
                label = 1.0
                break
            if z[j, level] > z[i, level] + delta[level]:
                label = 0.0
                break
        out.append(label)
    return np.array(out)


@pytest.mark.parametrize("margin", [0.0, 0.3, 1.0, 3.0])
def test_hierarchical_matches_per_pair_reference(random_pairs, margin):
    segs = make_segments(n=120)
    pairs = random_pairs(120, 3000)
    rater = HierarchicalRater(SPEC, margin=margin)
    z = -segs.factors.sum(axis=1) * np.array([1.0, 0.1, 0.001])
    np.testing.assert_allclose(rater.level_values(segs), z)
    delta = margin * z.std(axis=0, ddof=1)
    np.testing.assert_allclose(rater.thresholds(z), delta)
    expected = heron_reference(z, delta, pairs)
    labels = rater.label(segs, pairs, np.random.default_rng(0)).labels
    np.testing.assert_array_equal(labels, np.nan_to_num(expected, nan=0.5))
    dropped = HierarchicalRater(SPEC, margin=margin, drop_ties=True).label(
        segs, pairs, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(dropped.pairs, pairs[~np.isnan(expected)])
    np.testing.assert_array_equal(dropped.labels, expected[~np.isnan(expected)])


def test_hierarchical_falls_through_exactly_when_first_level_within_margin():
    n = 40
    factors = np.zeros((n, 1, 3))
    factors[:, 0, 0] = np.arange(n)  # spread of the angle sums: delta_1 = 0.1 * std ~ 1.2
    factors[0, 0] = [5.0, 0.0, 0.0]
    factors[1, 0] = [5.5, 0.0, 0.0]  # angle gap 0.5 to segment 0, same velocity and torque
    factors[2, 0] = [5.5, 50.0, 0.0]  # angle gap 0.5 to segment 0, more velocity cost
    segs = make_segments(factors=factors)  # segment 3 has angle 3: gap 2 to segment 0
    rater = HierarchicalRater(SPEC, margins=[0.1, 0.1, 0.1])
    delta = rater.thresholds(rater.level_values(segs))
    assert 0.5 < delta[0] < 2.0 and delta[1] < 5.0 and delta[2] == 0.0
    pairs = np.array([[0, 1], [0, 2], [2, 0], [0, 3], [3, 0]])
    labels = rater.label(segs, pairs, np.random.default_rng(0)).labels
    # (0, 1): level 1 within the margin, levels 2 and 3 equal -> tie
    # (0, 2): level 1 within the margin -> level 2 decides for the calmer segment 0
    # (0, 3): level 1 gap above the margin decides for segment 3 although level 2 is equal
    np.testing.assert_array_equal(labels, [0.5, 1.0, 0.0, 0.0, 1.0])


def test_hierarchical_errors_and_ranking_override(random_pairs):
    with pytest.raises(RaterError, match="one margin per level"):
        HierarchicalRater(SPEC, margins=[0.1])
    with pytest.raises(RaterError, match="no factor"):
        HierarchicalRater(SPEC, ranking=["angle_sq", "height"])
    with pytest.raises(RaterError, match=">= 0"):
        HierarchicalRater(SPEC, margin=-1.0)
    rater = HierarchicalRater(SPEC, ranking=["torque_sq"], margins=[0.0])
    segs = make_segments(n=30)
    pairs = random_pairs(30, 100)
    z = -0.001 * segs.factors[:, :, 2].sum(1)
    expected = (np.sign(z[pairs[:, 0]] - z[pairs[:, 1]]) + 1) / 2
    np.testing.assert_array_equal(rater.label(segs, pairs, np.random.default_rng(0)).labels, expected)


# --------------------------------------------------------------------------------------------------
# intransitive
# --------------------------------------------------------------------------------------------------


def test_intransitive_majority_vote_of_criteria(random_pairs):
    segs = make_segments(n=60)
    pairs = random_pairs(60, 1000)
    rater = IntransitiveRater(SPEC)
    assert rater.criterion_names == ["upright", "calm", "gentle"]
    scores = -segs.factors.sum(axis=1) * np.array([1.0, 0.1, 0.001])  # one criterion per cost
    np.testing.assert_allclose(rater.criterion_scores(segs), scores)
    votes = np.sign(scores[pairs[:, 0]] - scores[pairs[:, 1]]).sum(axis=1)
    labels = rater.label(segs, pairs, np.random.default_rng(0)).labels
    np.testing.assert_array_equal(labels, (np.sign(votes) + 1) / 2)


def test_intransitive_even_panel_can_tie_and_beta_votes_are_random(random_pairs):
    criteria = {
        "a": {"angle_sq": 1.0},
        "b": {"velocity_sq": 1.0},
        "c": {"torque_sq": 1.0},
        "d": {"angle_sq": 1.0, "torque_sq": 1.0},
    }
    segs = make_segments(n=80)
    pairs = random_pairs(80, 2000)
    labels = IntransitiveRater(SPEC, criteria=criteria).label(segs, pairs, np.random.default_rng(0)).labels
    assert set(np.unique(labels)) == {0.0, 0.5, 1.0}
    noisy = IntransitiveRater(SPEC, beta=0.01)
    a = noisy.label(segs, pairs, np.random.default_rng(1)).labels
    b = noisy.label(segs, pairs, np.random.default_rng(2)).labels
    assert np.mean(a != b) > 0.1


def _cheetah_segments(per_step: list[dict[str, float]], h: int = 50) -> SegmentBatch:
    """HalfCheetah-shaped segments whose factors are constant per step (given as raw factor values)."""
    spec = load_env_spec("halfcheetah")
    names = [f.name for f in spec.factors]
    factors = np.array([[[row.get(name, 0.0) for name in names]] * h for row in per_step])
    n = len(per_step)
    return SegmentBatch(
        obs=np.zeros((n, h, 17)),
        act=np.zeros((n, h, 6)),
        reward=spec.reward_from_factors(factors),
        factors=factors,
        dones=np.zeros((n, h), dtype=bool),
        next_obs=np.zeros((n, 17)),
    )


def test_halfcheetah_panel_prefers_slow_running_to_standing_still_and_still_cycles():
    """The shipped HalfCheetah panel: progress wins for every judge, equal speeds can cycle."""
    rater = IntransitiveRater(load_env_spec("halfcheetah"))
    # per-step means measured on the oracle's slowest checkpoint (level0) and on zero actions
    slow_run = {
        "reward_forward": 0.86,
        "x_velocity": 0.86,
        "reward_ctrl": -0.034,
        "pitch_sq": 0.009,
        "torso_height": -0.115,
    }
    still = {"reward_forward": 0.0, "reward_ctrl": 0.0, "pitch_sq": 0.0028, "torso_height": -0.132}
    votes = rater.votes(_cheetah_segments([slow_run, still]), np.array([[0, 1]]), np.random.default_rng(0))
    assert (votes == 1).all()  # unanimous: a motionless cheetah is never the better segment
    # equal speed, each segment best on one secondary and worst on another: a Condorcet cycle
    base = {"reward_forward": 2.0, "x_velocity": 2.0}
    a = {**base, "reward_ctrl": -0.00, "pitch_sq": 0.02, "torso_height": -0.10}
    b = {**base, "reward_ctrl": -0.01, "pitch_sq": 0.00, "torso_height": -0.11}
    c = {**base, "reward_ctrl": -0.02, "pitch_sq": 0.01, "torso_height": -0.09}
    segs = _cheetah_segments([a, b, c])
    assert cycle_rate(rater, segs, np.array([[0, 1, 2]]), np.random.default_rng(0)) == 1.0


def test_intransitive_errors():
    with pytest.raises(RaterError, match="at least 3 criteria"):
        IntransitiveRater(SPEC, criteria={"a": {"angle_sq": 1.0}, "b": {"torque_sq": 1.0}})
    with pytest.raises(RaterError, match="criterion 'c'"):
        IntransitiveRater(SPEC, criteria={"a": {"angle_sq": 1}, "b": {"torque_sq": 1}, "c": {"speed": 1}})
    with pytest.raises(RaterError, match="env spec"):
        IntransitiveRater(None)
    with pytest.raises(RaterError, match="beta"):
        IntransitiveRater(SPEC, beta=-1)


# --------------------------------------------------------------------------------------------------
# panel
# --------------------------------------------------------------------------------------------------


def test_panel_majority_follows_the_majority_members(random_pairs):
    segs = make_segments(n=100)
    pairs = random_pairs(100, 5000)
    truth = PartialReturnRater()
    flipped = Mistake(PartialReturnRater(), eps=1.0)  # always answers the opposite
    majority = PanelRater([truth, flipped, PartialReturnRater()], mode="majority")
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(
        majority.label(segs, pairs, rng).labels, truth.label(segs, pairs, rng).labels
    )
    tie = PanelRater([truth, flipped], mode="majority").label(segs, pairs, rng).labels
    np.testing.assert_array_equal(tie, 0.5)


def test_panel_random_member_answers_each_query(random_pairs):
    segs = make_segments(n=100)
    m = 20_000
    pairs = random_pairs(100, m)
    truth = PartialReturnRater()
    panel = PanelRater([truth, Mistake(PartialReturnRater(), eps=1.0)], mode="random")
    agree = (
        panel.label(segs, pairs, np.random.default_rng(0)).labels
        == truth.label(segs, pairs, np.random.default_rng(0)).labels
    )
    # each query answered by one member drawn uniformly: agreement ~ 1/2
    assert abs(agree.mean() - 0.5) < 4 * np.sqrt(0.25 / m)


def test_panel_drawn_members_disagree_on_trade_offs_only(random_pairs):
    segs = make_segments(n=200)
    pairs = random_pairs(200, 5000)
    panel = PanelRater(env_spec=SPEC, num_members=5, spread=0.5, seed=3)
    assert panel.member_weights.shape == (5, 3)
    assert np.all(panel.member_weights > 0)
    same = PanelRater(env_spec=SPEC, num_members=5, spread=0.5, seed=3)
    np.testing.assert_array_equal(panel.member_weights, same.member_weights)
    truth = PartialReturnRater().label(segs, pairs, None).labels
    labels = panel.label(segs, pairs, np.random.default_rng(0)).labels
    agreement = np.mean(labels == truth)
    assert 0.6 < agreement < 1.0
    exact = PanelRater(env_spec=SPEC, spread=0.0, mode="majority")
    np.testing.assert_array_equal(exact.label(segs, pairs, np.random.default_rng(0)).labels, truth)


def test_panel_errors():
    with pytest.raises(RaterError, match="mode"):
        PanelRater(env_spec=SPEC, mode="vote")
    with pytest.raises(RaterError, match="num_members"):
        PanelRater(env_spec=SPEC, num_members=1)
    with pytest.raises(RaterError, match="spread"):
        PanelRater(env_spec=SPEC, spread=-0.1)
    with pytest.raises(RaterError, match="env spec"):
        PanelRater()
    with pytest.raises(RaterError, match="Raters"):
        PanelRater(members=[PartialReturnRater(), "oracle"])
    with pytest.raises(RaterError, match="at least one"):
        PanelRater(members=[])


# --------------------------------------------------------------------------------------------------
# shared behaviour: determinism, query counting, pair validation
# --------------------------------------------------------------------------------------------------

ALL_SPECS = [
    "partial_return",
    "partial_return:beta=0.05",
    "oracle",
    "regret:beta=0.1",
    "intransitive:beta=0.2",
    "non_markovian:beta=5",
    "hierarchical:drop_ties=true",
    "panel",
    "panel:mode=majority",
    "stoc",
    "mistake",
    "skip:eps=0.9",
    "equal:eps=0.5",
    "myopic+stoc:beta=0.1+mistake:eps=0.2",
    "intransitive+mistake+skip:eps=0.9",
]


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_same_seed_same_labels(random_pairs, spec):
    segs = make_segments(n=100)
    pairs = random_pairs(100, 3000)
    rater = make_rater(spec, SPEC, value_fn=_value_of_first_coordinate)
    a = rater.label(segs, pairs, np.random.default_rng(42))
    b = rater.label(segs, pairs, np.random.default_rng(42))
    np.testing.assert_array_equal(a.pairs, b.pairs)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert set(np.unique(a.labels)) <= {0.0, 0.5, 1.0}


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_empty_pair_batch(spec):
    rater = make_rater(spec, SPEC, value_fn=_value_of_first_coordinate)
    prefs = rater.label(make_segments(n=10), np.zeros((0, 2), dtype=np.int64), np.random.default_rng(0))
    assert len(prefs) == 0 and rater.num_queries == 0


@pytest.mark.parametrize(
    "spec", ["partial_return:beta=0.05", "mistake:eps=0.3", "panel", "intransitive:beta=0.1"]
)
def test_different_seeds_differ_for_random_raters(random_pairs, spec):
    segs = make_segments(n=100)
    pairs = random_pairs(100, 3000)
    rater = make_rater(spec, SPEC)
    a = rater.label(segs, pairs, np.random.default_rng(1)).labels
    b = rater.label(segs, pairs, np.random.default_rng(2)).labels
    assert np.mean(a != b) > 0.01


@pytest.mark.parametrize("spec", ["partial_return", "skip:eps=0.9", "hierarchical:drop_ties=true,margin=1.0"])
def test_query_counting(random_pairs, spec):
    segs = make_segments(n=100)
    pairs = random_pairs(100, 2000)
    rater = make_rater(spec, SPEC)
    assert rater.num_queries == 0
    first = rater.label(segs, pairs, np.random.default_rng(0))
    second = rater.label(segs, pairs[:500], np.random.default_rng(0))
    assert rater.num_queries == len(first) + len(second)
    labels, answered = rater.label_array(segs, pairs, np.random.default_rng(0))
    assert rater.num_queries == 2 * len(first) + len(second)
    np.testing.assert_array_equal(labels[answered], first.labels)
    assert np.all(np.isnan(labels[~answered]))
    rater.reset_queries()
    assert rater.num_queries == 0


def test_wrapped_rater_counts_on_the_outer_rater_only(random_pairs):
    inner = PartialReturnRater()
    outer = Mistake(inner)
    outer.label(make_segments(n=10), random_pairs(10, 30), np.random.default_rng(0))
    assert (outer.num_queries, inner.num_queries) == (30, 0)


def test_label_pairs_labels_first_against_second_and_checks_shapes():
    segs = make_segments(n=20)
    rater = PartialReturnRater()
    prefs = rater.label_pairs(segs[np.arange(10)], segs[np.arange(10, 20)], np.random.default_rng(0))
    expected = (np.sign(segs.returns[:10] - segs.returns[10:]) + 1) / 2
    np.testing.assert_array_equal(prefs.labels, expected)
    with pytest.raises(ValueError, match="same number of segments"):
        rater.label_pairs(segs[np.arange(10)], segs[np.arange(9)], np.random.default_rng(0))
    shorter = make_segments(n=10, h=5)
    with pytest.raises(ValueError, match="segment shape mismatch"):
        rater.label_pairs(segs[np.arange(10)], shorter, np.random.default_rng(0))


def test_invalid_pairs_rejected():
    segs = make_segments(n=10)
    rater = PartialReturnRater()
    with pytest.raises(IndexError):
        rater.label(segs, np.array([[0, 10]]), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[M, 2\]"):
        rater.label(segs, np.array([0, 1, 2]), np.random.default_rng(0))
