"""prefrl.feedback: query schedules, unique pairs, asked / answered counters."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.errors import SpecError
from prefrl.feedback import SCHEDULES, QueryCounter, QueryPool, query_allowance
from prefrl.segments import collect_segments

#: 100 rollouts of 1,000 env steps (100k steps)
ENDS = 1000 * np.arange(1, 101)


def _spent(kind: str, progress: float, **kwargs) -> float:
    """Share of the budget (without an up-front share) allowed by ``progress`` of training."""
    allowance = query_allowance(100_000, ENDS, 0.0, kind, **kwargs)
    return allowance[int(progress * len(ENDS)) - 1] / 100_000


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize(("budget", "rollouts"), [(500, 25), (7, 10), (100, 1)])
def test_allowance_is_cumulative_and_ends_at_budget(kind: str, budget: int, rollouts: int) -> None:
    allowance = query_allowance(budget, 512 * np.arange(1, rollouts + 1), 0.25, kind)
    assert allowance.shape == (rollouts,) and allowance[-1] == budget
    assert np.all(np.diff(allowance) >= 0) and allowance[0] >= int(0.25 * budget)


@pytest.mark.parametrize(
    ("kind", "kwargs", "at_10", "at_50"),
    [
        ("constant", {}, 0.10, 0.50),
        ("linear", {}, 0.19, 0.75),  # 1 - (1 - x)^2
        ("hyperbolic", {}, np.log(1.1) / np.log(2), np.log(1.5) / np.log(2)),
        # T0 = 2e6 env steps over 100k steps: almost constant
        ("christiano", {}, np.log(1.005) / np.log(1.05), np.log(1.025) / np.log(1.05)),
        # T0 = 10k over 100k steps: ln(1 + T/T0) / ln(11)
        ("christiano", {"t0": 1e4}, np.log(2) / np.log(11), np.log(6) / np.log(11)),
        # harmonic over 100 rollouts: H_10 / H_100 and H_50 / H_100
        ("front_loaded", {}, 2.928968 / 5.187378, 4.499205 / 5.187378),
    ],
)
def test_share_spent_at_10_and_50_percent_of_training(kind, kwargs, at_10, at_50) -> None:
    assert _spent(kind, 0.1, **kwargs) == pytest.approx(at_10, abs=1e-3)
    assert _spent(kind, 0.5, **kwargs) == pytest.approx(at_50, abs=1e-3)


def test_initial_share_is_asked_after_the_first_rollout() -> None:
    allowance = query_allowance(1000, ENDS, 0.25, "constant")
    assert allowance[0] == 250 + 7  # 250 up front, then 750 / 100 per rollout (rounded down)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "inverse"}, "unknown schedule"),
        ({"kind": "linaer"}, "did you mean 'linear'"),
        ({"initial_share": 1.5}, "initial_query_share"),
        ({"kind": "christiano", "t0": 0}, "christiano_t0"),
    ],
)
def test_allowance_rejects_bad_values(kwargs, match) -> None:
    options = {"budget": 10, "rollout_ends": [10, 20], "initial_share": 0.25, **kwargs}
    with pytest.raises(SpecError, match=match):
        query_allowance(**options)


def test_counter_charges_asked_or_answered() -> None:
    asked, answered = QueryCounter("asked"), QueryCounter("answered")
    for counter in (asked, answered):
        counter.record(10, 7)
        counter.record(5, 5)
    assert (asked.charged, answered.charged) == (15, 12)
    with pytest.raises(SpecError, match="unknown mode"):
        QueryCounter("both")
    with pytest.raises(ValueError):
        asked.record(3, 4)


@pytest.fixture(scope="module")
def segments(pendulum):
    return collect_segments(pendulum, "random", 30, segment_length=10, seed=0)


def test_pool_never_offers_an_asked_pair_and_widens_when_short(segments) -> None:
    pool = QueryPool(recent_rollouts=1, buffer_rollouts=3)
    for k in range(3):
        pool.add(segments[10 * k : 10 * (k + 1)])  # 3 rollouts of 10 segments (45 pairs each)
    rng = np.random.default_rng(0)
    asked: set[frozenset] = set()
    for _ in range(12):  # 12 x 30 = 360 of the 435 pairs among 30 segments
        _, ids, candidates = pool.window(30, 60, rng)
        assert len(candidates) >= 30
        chosen = candidates[:30]
        keys = {frozenset(ids[p].tolist()) for p in chosen}
        assert len(keys) == 30 and not keys & asked  # distinct and never asked before
        assert all(i != j for i, j in chosen)
        pool.mark_asked(ids, chosen)
        asked |= keys
    assert pool.num_asked == 360
    _, ids, rest = pool.window(100, 200, rng)
    assert len(rest) == 435 - 360  # fewer than the quota: everything left, the remainder stays due
    with pytest.raises(RuntimeError, match="asked twice"):
        pool.mark_asked(ids, np.array([[rest[0][1], rest[0][0]], rest[0]]))


def test_pool_samples_large_windows_without_repeats(segments) -> None:
    pool = QueryPool(1, 1)
    big = type(segments).concatenate([segments] * 30)  # 900 segments: 404,550 pairs, sampled not enumerated
    pool.add(big)
    _, ids, candidates = pool.window(1000, 5000, np.random.default_rng(0))
    keys = {frozenset(ids[p].tolist()) for p in candidates}
    assert len(candidates) == 5000 == len(keys)
