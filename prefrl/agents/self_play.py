"""Self-play mechanics of agents that reward trajectories by their win rate (SPO), separate from any agent.

* :func:`sample_opponents` and :func:`win_rates` - who is compared with whom, and the win-rate arithmetic;
* :class:`TrajectoryQueue` - a bounded FIFO of recent trajectories (opponents from earlier policies).

Recording the rollout, cutting it into trajectories and writing the rewards back into PPO's buffer are
shared with the reward-model agents and live in :mod:`prefrl.rollout`.
"""

from __future__ import annotations

import numpy as np

from prefrl.types import SegmentBatch

__all__ = ["TrajectoryQueue", "sample_opponents", "win_rates"]


# ---------------------------------------------------------------------------------------------------
# Win-rate arithmetic
# ---------------------------------------------------------------------------------------------------
def win_rates(pairs: np.ndarray, labels: np.ndarray, num_players: int) -> tuple[np.ndarray, np.ndarray]:
    """Win rate of each player from answered comparisons.

    Every comparison ``(i, j)`` with label ``y = P(i preferred over j)`` credits ``y`` to ``i`` and
    ``1 - y`` to ``j``; a tie (``y = 0.5``) is half a win for both. Only indices below ``num_players`` are
    players; larger indices are opponents (e.g. queued trajectories of older policies) that receive no
    credit. Skipped comparisons are simply absent from ``pairs``, so they do not count.

    :param pairs: ``[M, 2]`` int, answered comparisons (indices into one segment pool)
    :param labels: ``[M]`` float in ``[0, 1]``
    :param num_players: number of players ``N`` (pool indices ``0 .. N-1``)
    :return: ``(rates [N], counts [N])``: mean credit per player, and how many comparisons it took part in;
        a player with no answered comparison gets the neutral rate 0.5 (neither better nor worse than
        its opponents), so a skip-heavy rater does not push its trajectories either way.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.float64)
    if labels.shape != (pairs.shape[0],):
        raise ValueError(f"labels must be [M]={pairs.shape[0]}, got shape {labels.shape}")
    credit = np.zeros(num_players, dtype=np.float64)
    counts = np.zeros(num_players, dtype=np.int64)
    for side, side_credit in ((0, labels), (1, 1.0 - labels)):
        players = pairs[:, side]
        mine = players < num_players
        credit += np.bincount(players[mine], weights=side_credit[mine], minlength=num_players)
        counts += np.bincount(players[mine], minlength=num_players)
    rates = np.full(num_players, 0.5)
    seen = counts > 0
    rates[seen] = credit[seen] / counts[seen]
    return rates, counts


def sample_opponents(
    num_players: int, pool_size: int, num_opponents: int, rng: np.random.Generator
) -> np.ndarray:
    """Comparisons of every player with ``num_opponents`` distinct others from the pool.

    Players are pool indices ``0 .. num_players-1``; opponents are drawn uniformly without replacement
    from the whole pool (players included) minus the player itself. Which side of the pair the player
    takes is a fair coin, so a rater with a position bias favours nobody.

    :return: ``[num_players * num_opponents, 2]`` int pool indices, grouped by player
    """
    if num_opponents < 1:
        raise ValueError(f"num_opponents must be >= 1, got {num_opponents}")
    if not 0 < num_players <= pool_size:
        raise ValueError(f"need 0 < num_players ({num_players}) <= pool_size ({pool_size})")
    if num_opponents > pool_size - 1:
        raise ValueError(
            f"cannot draw {num_opponents} distinct opponents from a pool of {pool_size} trajectories "
            "(the player itself excluded); lower num_opponents or collect more trajectories per rollout"
        )
    # the K smallest of i.i.d. uniform keys are a uniform K-subset; keys index the pool without the player
    keys = rng.random((num_players, pool_size - 1))
    picks = np.argpartition(keys, num_opponents - 1, axis=1)[:, :num_opponents]
    players = np.arange(num_players)[:, None]
    opponents = picks + (picks >= players)  # skip over the player's own index
    first = np.broadcast_to(players, opponents.shape).reshape(-1)
    second = opponents.reshape(-1)
    swap = rng.random(first.shape[0]) < 0.5
    return np.stack([np.where(swap, second, first), np.where(swap, first, second)], axis=1)


# ---------------------------------------------------------------------------------------------------
# Opponent queue
# ---------------------------------------------------------------------------------------------------
class TrajectoryQueue:
    """Bounded FIFO of recent trajectories: pushing beyond ``capacity`` drops the oldest ones.

    :param capacity: maximum number of trajectories kept (``0`` keeps none)
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"queue capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self._batch: SegmentBatch | None = None

    def push(self, batch: SegmentBatch) -> None:
        """Append ``batch`` (newest last) and keep only the newest ``capacity`` trajectories."""
        if self.capacity == 0 or batch.num_segments == 0:
            return
        merged = batch if self._batch is None else SegmentBatch.concatenate([self._batch, batch])
        self._batch = merged[max(merged.num_segments - self.capacity, 0) :]

    @property
    def batch(self) -> SegmentBatch | None:
        """The queued trajectories, oldest first (``None`` while empty)."""
        return self._batch

    def __len__(self) -> int:
        return 0 if self._batch is None else self._batch.num_segments

    def clear(self) -> None:
        self._batch = None
