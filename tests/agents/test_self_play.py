"""Self-play pieces of SPO: win-rate arithmetic, opponent sampling and the trajectory queue."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.agents.self_play import TrajectoryQueue, sample_opponents, win_rates
from prefrl.types import SegmentBatch


def make_segments(n: int, h: int = 4, source: int = 0, offset: float = 0.0) -> SegmentBatch:
    """``n`` segments whose reward sum is ``offset + index`` (so their identity is visible)."""
    reward = np.zeros((n, h))
    reward[:, 0] = offset + np.arange(n)
    return SegmentBatch(
        obs=np.zeros((n, h, 2)),
        act=np.zeros((n, h, 1)),
        reward=reward,
        factors=np.zeros((n, h, 1)),
        dones=np.zeros((n, h), dtype=bool),
        next_obs=np.zeros((n, 2)),
        source=np.full(n, source),
    )


# ---- win-rate arithmetic ------------------------------------------------------------------------------
def test_win_rate_of_a_trajectory_beating_all_others_is_one() -> None:
    # player 0 beats 1, 2, 3 whichever side it is on; 1 beats 2; 3 loses to everyone it meets
    pairs = np.array([[0, 1], [2, 0], [0, 3], [1, 2], [3, 1]])
    labels = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    rates, counts = win_rates(pairs, labels, num_players=4)
    np.testing.assert_allclose(rates, [1.0, 2 / 3, 0.0, 0.0])
    np.testing.assert_array_equal(counts, [3, 3, 2, 2])


def test_ties_count_one_half_and_skipped_comparisons_are_excluded() -> None:
    # 0 ties with 1 and beats 2; the (skipped) comparison 0-vs-3 is absent: 3 was never compared
    pairs = np.array([[0, 1], [2, 0]])
    labels = np.array([0.5, 0.0])
    rates, counts = win_rates(pairs, labels, num_players=4)
    np.testing.assert_allclose(rates, [0.75, 0.5, 0.0, 0.5])
    np.testing.assert_array_equal(counts, [2, 1, 1, 0])


def test_queued_opponents_get_no_credit_and_soft_labels_average() -> None:
    # indices >= num_players are older trajectories from the queue
    pairs = np.array([[0, 5], [4, 0], [1, 0]])
    labels = np.array([0.2, 0.9, 0.5])
    rates, counts = win_rates(pairs, labels, num_players=2)
    np.testing.assert_allclose(rates, [(0.2 + 0.1 + 0.5) / 3, 0.5])
    np.testing.assert_array_equal(counts, [3, 1])


def test_win_rates_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="labels must be"):
        win_rates(np.array([[0, 1]]), np.array([1.0, 0.0]), 2)


# ---- opponents ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("players", "pool", "k"), [(5, 5, 4), (8, 20, 3), (30, 50, 10)])
def test_sample_opponents_distinct_and_never_self(players: int, pool: int, k: int) -> None:
    rng = np.random.default_rng(0)
    pairs = sample_opponents(players, pool, k, rng)
    assert pairs.shape == (players * k, 2)
    assert pairs.min() >= 0 and pairs.max() < pool
    assert np.all(pairs[:, 0] != pairs[:, 1])
    # rows are grouped by player: each player starts exactly k comparisons with k distinct opponents
    for i, group in enumerate(pairs.reshape(players, k, 2)):
        assert np.all((group == i).sum(axis=1) == 1)
        others = group[group != i]
        assert len(np.unique(others)) == k


def test_sample_opponents_sides_are_balanced_and_opponents_uniform() -> None:
    rng = np.random.default_rng(1)
    pairs = sample_opponents(10, 40, 5, rng)
    players = np.repeat(np.arange(10), 5)
    first_share = np.mean(pairs[:, 0] == players)
    assert 0.4 < first_share < 0.6
    many = np.concatenate([sample_opponents(10, 40, 5, rng) for _ in range(200)])
    opponents = np.where(many[:, 0] == np.tile(players, 200), many[:, 1], many[:, 0])
    freq = np.bincount(opponents, minlength=40) / len(opponents)
    assert freq.min() > 0.5 / 39 and freq.max() < 2.0 / 39


def test_sample_opponents_rejects_too_many() -> None:
    with pytest.raises(ValueError, match="distinct opponents"):
        sample_opponents(4, 4, 4, np.random.default_rng(0))


# ---- queue -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [0, 3, 10, 25])
def test_queue_is_bounded_and_keeps_the_newest(capacity: int) -> None:
    queue = TrajectoryQueue(capacity)
    for step in range(6):
        queue.push(make_segments(4, source=step, offset=10 * step))
        assert len(queue) == min(capacity, 4 * (step + 1))
    if capacity:
        # newest last: the last pushed batch's segments end the queue, oldest ones were dropped
        expected = np.concatenate([10 * s + np.arange(4) for s in range(6)])[-capacity:]
        np.testing.assert_array_equal(queue.batch.returns, expected)
    else:
        assert queue.batch is None
