"""Query selection rules (prefrl.query_selection): each must pick a known pair on a constructed case."""

from __future__ import annotations

import time

import numpy as np
import pytest

from prefrl.errors import ConfigError, PrefrlError, SpecError
from prefrl.query_selection import (
    SELECTION_RULES,
    binary_entropy,
    kcenter_greedy,
    pair_features,
    select_queries,
)
from prefrl.reward_model import RewardEnsemble


def _candidates(num: int) -> np.ndarray:
    return np.stack([np.arange(num), np.arange(num) + 1], axis=1)


def _agreeing_probs(num: int, members: int = 3) -> np.ndarray:
    """``[K, C]``: all members predict the same confident probability for every candidate."""
    return np.full((members, num), 0.99)


def _random_inputs(num: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "member_probs": rng.uniform(size=(3, num)),
        "pair_features": rng.normal(size=(num, 6)),
        "labelled_features": rng.normal(size=(4, 6)),
    }


# ---- uncertainty rules ---------------------------------------------------------------------------


def test_disagreement_picks_the_pair_members_disagree_on():
    probs = _agreeing_probs(10)
    probs[:, 3] = 0.6  # agreeing at an uncertain value: no disagreement
    probs[:, 6] = [0.1, 0.9, 0.5]
    probs[:, 8] = [0.4, 0.6, 0.5]
    picked = select_queries("disagreement", _candidates(10), 2, np.random.default_rng(0), member_probs=probs)
    assert picked.tolist() == [6, 8]


def test_disagreement_ties_keep_candidate_order():
    probs = _agreeing_probs(6)
    probs[:, [4, 1, 5]] = np.array([[0.2, 0.2, 0.2], [0.8, 0.8, 0.8], [0.5, 0.5, 0.5]])
    picked = select_queries("disagreement", _candidates(6), 3, np.random.default_rng(0), member_probs=probs)
    assert picked.tolist() == [1, 4, 5]


def test_entropy_picks_the_pair_predicted_closest_to_half():
    probs = _agreeing_probs(10)
    probs[:, 4] = 0.5
    probs[:, 7] = 0.3
    picked = select_queries("entropy", _candidates(10), 2, np.random.default_rng(0), member_probs=probs)
    assert picked.tolist() == [4, 7]


def test_entropy_is_the_mean_of_member_entropies_not_the_entropy_of_the_mean():
    """B-Pref averages the members' entropies: confident members that contradict each other (mean 0.5)
    score low, members agreeing on 0.7 score high. Disagreement ranks the same two the other way round."""
    probs = _agreeing_probs(5, members=2)
    probs[:, 1] = [0.01, 0.99]
    probs[:, 3] = [0.7, 0.7]
    rng = np.random.default_rng(0)
    assert select_queries("entropy", _candidates(5), 1, rng, member_probs=probs).tolist() == [3]
    assert select_queries("disagreement", _candidates(5), 1, rng, member_probs=probs).tolist() == [1]


def test_binary_entropy():
    h = binary_entropy(np.array([0.0, 0.5, 1.0, 0.2, 0.8]))
    assert h[1] == pytest.approx(np.log(2))
    assert h[0] == pytest.approx(0.0, abs=1e-9) and h[2] == pytest.approx(0.0, abs=1e-9)
    assert h[3] == pytest.approx(h[4]) == pytest.approx(-(0.2 * np.log(0.2) + 0.8 * np.log(0.8)))


# ---- k-center ------------------------------------------------------------------------------------

# 2-D pair features: two near the labelled cluster at the origin, A far right, B next to A, C far down
KCENTER_POINTS = np.array([[0.1, 0.0], [0.0, 0.2], [10.0, 0.0], [9.5, 0.5], [0.0, -6.0]])
LABELLED = np.array([[0.0, 0.0], [0.1, 0.1], [-0.1, 0.0]])


def test_kcenter_picks_the_farthest_from_the_labelled_then_far_from_both():
    picked = select_queries(
        "kcenter", _candidates(5), 2, np.random.default_rng(0),
        pair_features=KCENTER_POINTS, labelled_features=LABELLED,
    )  # fmt: skip
    # A (10 from the cluster) first; then C (6 from the cluster, 11.7 from A) beats B (0.7 from A)
    assert picked.tolist() == [2, 4]


@pytest.mark.parametrize("seed", range(5))
def test_kcenter_without_labels_starts_at_random_then_goes_far(seed):
    points = np.random.default_rng(100 + seed).normal(size=(30, 4))
    picked = select_queries(
        "kcenter", _candidates(30), 2, np.random.default_rng(seed),
        pair_features=points, labelled_features=np.empty((0, 4)),
    )  # fmt: skip
    distances = np.linalg.norm(points - points[picked[0]], axis=1)
    assert picked[1] == np.argmax(distances)


def _naive_kcenter(features: np.ndarray, labelled: np.ndarray, num: int) -> list[int]:
    """Recompute every candidate's distance to all labelled and picked vectors at every step."""
    picked: list[int] = []
    for _ in range(num):
        centres = np.concatenate([labelled, features[picked]])
        dist = np.linalg.norm(features[:, None, :] - centres[None, :, :], axis=-1).min(axis=1)
        dist[picked] = -1.0
        picked.append(int(np.argmax(dist)))
    return picked


@pytest.mark.parametrize("seed", range(3))
def test_kcenter_running_minimum_matches_the_naive_recomputation(seed):
    rng = np.random.default_rng(seed)
    features, labelled = rng.normal(size=(60, 5)), rng.normal(size=(7, 5))
    fast = kcenter_greedy(features, labelled, 15, np.random.default_rng(0))
    assert fast.tolist() == _naive_kcenter(features, labelled, 15)


def test_kcenter_with_duplicate_candidates_still_picks_distinct_ones():
    features = np.zeros((4, 3))
    picked = kcenter_greedy(features, np.zeros((1, 3)), 4, np.random.default_rng(0))
    assert sorted(picked.tolist()) == [0, 1, 2, 3]


# ---- uncertainty, then k-center ------------------------------------------------------------------


def _preselect_case(rule: str) -> dict:
    """Index 0 is the farthest from the labelled origin but certain; 1 is far and uncertain; 2 is the
    most uncertain but next to the labelled pair; the rest are certain and near the origin."""
    features = np.zeros((8, 2))
    features[:, 0] = [20.0, 8.0, 0.5, 0.2, 0.1, 0.3, 0.2, 0.1]
    probs = _agreeing_probs(8)
    if rule == "kcenter_disagreement":
        probs[:, 1], probs[:, 2] = [0.2, 0.8, 0.5], [0.05, 0.95, 0.5]
    else:
        probs[:, 1], probs[:, 2] = 0.4, 0.5
    return {"member_probs": probs, "pair_features": features, "labelled_features": np.zeros((1, 2))}


@pytest.mark.parametrize("rule", ["kcenter_disagreement", "kcenter_entropy"])
def test_kcenter_after_preselection_skips_the_far_certain_pair(rule):
    inputs = _preselect_case(rule)
    rng = np.random.default_rng(0)
    pick = select_queries(rule, _candidates(8), 1, rng, preselect_factor=2, **inputs)
    assert pick.tolist() == [1]  # far and uncertain: not 0 (certain) nor 2 (uncertain but close)
    assert select_queries("kcenter", _candidates(8), 1, rng, **inputs).tolist() == [0]
    uncertainty_only = rule.removeprefix("kcenter_")
    assert select_queries(uncertainty_only, _candidates(8), 1, rng, **inputs).tolist() == [2]


@pytest.mark.parametrize("rule", ["kcenter_disagreement", "kcenter_entropy"])
def test_preselecting_everything_is_plain_kcenter(rule):
    inputs = _random_inputs(40, seed=3)
    rng = np.random.default_rng(0)
    combined = select_queries(rule, _candidates(40), 5, rng, preselect_factor=8, **inputs)
    assert combined.tolist() == select_queries("kcenter", _candidates(40), 5, rng, **inputs).tolist()


@pytest.mark.parametrize("rule", ["kcenter_disagreement", "kcenter_entropy"])
@pytest.mark.parametrize(("factor", "expected"), [(None, 4), (6, 5)])
def test_default_preselection_keeps_five_per_query(rule, factor, expected):
    """Uncertainty decreases with the index. With 1 query the default keeps candidates 0-4 and picks the
    farthest of them (4); candidate 5, far away but only 6th most uncertain, needs a factor of 6."""
    features = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [100.0], [0.0], [0.0], [0.0], [0.0]])
    if rule == "kcenter_disagreement":
        spread = np.linspace(0.3, 0.05, 10)
        probs = np.stack([0.5 - spread, 0.5 + spread])
    else:
        probs = np.stack([np.linspace(0.5, 0.95, 10)] * 2)
    factor_arg = {} if factor is None else {"preselect_factor": factor}
    picked = select_queries(
        rule, _candidates(10), 1, np.random.default_rng(0), member_probs=probs,
        pair_features=features, labelled_features=np.zeros((1, 1)), **factor_arg,
    )  # fmt: skip
    assert picked.tolist() == [expected]


# ---- every rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", SELECTION_RULES)
@pytest.mark.parametrize(("num", "quota"), [(50, 5), (50, 50), (7, 100), (50, 0), (0, 3)])
def test_every_rule_returns_min_quota_c_distinct_indices(rule, num, quota):
    picked = select_queries(rule, _candidates(num), quota, np.random.default_rng(1), **_random_inputs(num))
    assert picked.dtype == np.int64
    assert len(picked) == min(quota, num)
    assert len(set(picked.tolist())) == len(picked)
    assert all(0 <= i < num for i in picked)


@pytest.mark.parametrize("rule", SELECTION_RULES)
def test_every_rule_is_reproducible_under_a_seed(rule):
    inputs = _random_inputs(40, seed=2)
    inputs["labelled_features"] = np.empty((0, 6))  # the k-center first pick is random then
    runs = [select_queries(rule, _candidates(40), 8, np.random.default_rng(7), **inputs) for _ in range(2)]
    assert runs[0].tolist() == runs[1].tolist()


def test_uniform_depends_on_the_seed_and_covers_the_candidates():
    picks = [select_queries("uniform", _candidates(100), 10, np.random.default_rng(s)) for s in range(20)]
    assert len({tuple(p.tolist()) for p in picks}) == 20
    assert len(set(np.concatenate(picks).tolist())) > 80  # not stuck on a few indices


def test_rules_accept_a_reward_ensembles_probabilities():
    rng = np.random.default_rng(0)
    ensemble = RewardEnsemble("obs", 3, num_members=3, net_arch=(8,), seed=1)
    features = rng.normal(size=(12, 5, 3)).astype(np.float32)
    candidates = np.array([(i, j) for i in range(12) for j in range(i + 1, 12)])
    probs = ensemble.preference_probabilities(features, candidates)
    for rule in SELECTION_RULES:
        picked = select_queries(
            rule, candidates, 10, rng, member_probs=probs,
            pair_features=pair_features(features, candidates), labelled_features=np.empty((0, 30)),
        )  # fmt: skip
        assert len(set(picked.tolist())) == 10


# ---- pair features -------------------------------------------------------------------------------


def test_pair_features_concatenate_both_flattened_segments_in_pair_order():
    seg = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    feats = pair_features(seg, np.array([[0, 2], [2, 0], [3, 1]]))
    assert feats.shape == (3, 12)
    np.testing.assert_array_equal(feats[0], np.concatenate([seg[0].ravel(), seg[2].ravel()]))
    np.testing.assert_array_equal(feats[1], np.concatenate([seg[2].ravel(), seg[0].ravel()]))
    np.testing.assert_array_equal(feats[2, :6], seg[3].ravel())


# ---- errors --------------------------------------------------------------------------------------


def test_unknown_rule_is_a_spec_error_with_a_hint():
    with pytest.raises(SpecError, match=r"unknown query selection rule 'kcentre'.*did you mean 'kcenter'"):
        select_queries("kcentre", _candidates(5), 2, np.random.default_rng(0))


@pytest.mark.parametrize("rule", ["disagreement", "kcenter_disagreement"])
def test_disagreement_needs_an_ensemble(rule):
    inputs = _random_inputs(5)
    inputs["member_probs"] = inputs["member_probs"][:1]
    with pytest.raises(SpecError, match=r"ensemble_size >= 2"):
        select_queries(rule, _candidates(5), 2, np.random.default_rng(0), **inputs)


def test_entropy_works_with_a_single_member():
    probs = np.array([[0.9, 0.5, 0.99]])
    assert select_queries(
        "entropy", _candidates(3), 1, np.random.default_rng(0), member_probs=probs
    ).tolist() == [1]


@pytest.mark.parametrize(
    ("rule", "missing"),
    [
        ("disagreement", "member_probs"),
        ("entropy", "member_probs"),
        ("kcenter", "pair_features"),
        ("kcenter", "labelled_features"),
        ("kcenter_entropy", "member_probs"),
        ("kcenter_disagreement", "pair_features"),
    ],
)
def test_missing_inputs_are_caller_bugs(rule, missing):
    inputs = _random_inputs(5)
    del inputs[missing]
    with pytest.raises(ValueError, match=missing) as info:
        select_queries(rule, _candidates(5), 2, np.random.default_rng(0), **inputs)
    assert not isinstance(info.value, PrefrlError)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"member_probs": np.full((3, 4), 0.5)}, "member_probs must be"),
        ({"pair_features": np.zeros((5, 6, 1))}, "pair_features must be"),
        ({"labelled_features": np.zeros((2, 3))}, "labelled_features must be"),
        ({"candidates": np.zeros((5, 3), dtype=int)}, "candidates must be"),
        ({"quota": -1}, "quota must be"),
    ],
)
def test_bad_shapes_are_caller_bugs(change, match):
    args = {"candidates": _candidates(5), "quota": 2, **_random_inputs(5), **change}
    with pytest.raises(ValueError, match=match) as info:
        select_queries("kcenter_disagreement", rng=np.random.default_rng(0), **args)
    assert not isinstance(info.value, PrefrlError)


def test_preselect_factor_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="preselect_factor"):
        select_queries(
            "kcenter_entropy", _candidates(5), 2, np.random.default_rng(0), preselect_factor=0.5,
            **_random_inputs(5),
        )  # fmt: skip


# ---- cost ----------------------------------------------------------------------------------------


def test_kcenter_on_5000_candidates_is_fast():
    """C = 5000 candidates of 2 x 50 steps x 20 features, 100 queries, 500 labelled pairs: ~0.2 s on one
    core; the bound leaves room for a loaded machine."""
    rng = np.random.default_rng(0)
    segments = rng.normal(size=(1000, 50, 20)).astype(np.float32)
    candidates = rng.integers(1000, size=(5000, 2))
    features = pair_features(segments, candidates)
    labelled = rng.normal(size=(500, features.shape[1])).astype(np.float32)
    start = time.perf_counter()
    picked = select_queries(
        "kcenter", candidates, 100, rng, pair_features=features, labelled_features=labelled
    )
    assert time.perf_counter() - start < 2.0
    assert len(set(picked.tolist())) == 100
