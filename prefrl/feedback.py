"""The bookkeeping of asking a rater during training, shared by every agent that does (rm_ppo, heron).

Three pieces, each usable on its own:

* **Schedules** (:func:`query_allowance`): how a query budget ``Q`` is spread over training. A share ``s``
  is asked after the first rollout (the initial policy); the rest follows a label *rate* ``r(T)`` over env
  steps ``T`` in ``[0, N)``: the cumulative allowance after a rollout ending at step ``T_i`` is
  ``s Q + (1 - s) Q * int_0^{T_i} r / int_0^N r``, rounded down (the last rollout gets the whole budget).

  ==============  ==========================================  =============================================
  schedule        rate                                        source
  ==============  ==========================================  =============================================
  ``christiano``  ``r(T) = T0 / (T + T0)``, ``T0`` env steps  Christiano et al. 2017 (``T0 = 2e6`` frames)
  ``hyperbolic``  ``r(x) = 1 / (1 + x)``, ``x = T / N``       imitation's ``hyperbolic`` (progress in [0, 1])
  ``constant``    ``r = 1``                                   an equal share per env step
  ``linear``      ``r(x) = 1 - x``                            decays to zero at the end of training
  ``front_loaded`` ``w_k = 1 / (1 + k)`` per rollout ``k``    prefrl's rule before 0.2 (a harmonic series
                                                              over rollouts: most of the budget early)
  ==============  ==========================================  =============================================

* **Unique pairs** (:class:`QueryPool`): segments get run-wide ids as they arrive; a pair is the unordered
  set of two ids and is never asked twice in a run. Candidates are distinct pairs that were never asked,
  drawn from the segments of the last ``recent_rollouts`` rollouts, or from all ``buffer_rollouts`` kept
  when the recent ones have fewer unasked pairs than the quota. What cannot be asked now stays due: the
  allowance is cumulative, so the next rollout asks the remainder.

* **Counters** (:class:`QueryCounter`): ``asked`` (every query put to the rater, skipped ones included)
  and ``answered`` (labels received). ``budget = "asked"`` (default, as B-Pref: a skipped query still
  costs) or ``"answered"`` (skipped queries are asked again later) says which one the budget caps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from prefrl.errors import SpecError
from prefrl.spec_utils import suggest
from prefrl.types import SegmentBatch

__all__ = [
    "BUDGET_MODES",
    "SCHEDULES",
    "BudgetMode",
    "QueryCounter",
    "QueryPool",
    "Schedule",
    "query_allowance",
]

Schedule = Literal["christiano", "hyperbolic", "constant", "linear", "front_loaded"]
BudgetMode = Literal["asked", "answered"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
BUDGET_MODES: tuple[str, ...] = get_args(BudgetMode)

#: below this many pairs in the window all pairs are enumerated; above, candidates are sampled
_ENUMERATE_LIMIT = 200_000


# --------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------


def _rate_integral(kind: str, start: np.ndarray, end: np.ndarray, total: float, t0: float) -> np.ndarray:
    """``int_start^end r(T) dT`` of the continuous schedules (closed forms)."""
    if kind == "constant":
        return end - start
    if kind == "linear":
        return (end - start) - (end**2 - start**2) / (2.0 * total)
    if kind == "hyperbolic":
        return total * np.log((total + end) / (total + start))
    if kind == "christiano":
        return t0 * np.log((t0 + end) / (t0 + start))
    raise AssertionError(kind)


def query_allowance(
    budget: int,
    rollout_ends: np.ndarray | list[int],
    initial_share: float,
    kind: str = "christiano",
    t0: float = 2e6,
) -> np.ndarray:
    """Cumulative query allowance after each rollout, ``[R]`` int, non-decreasing, ending at ``budget``.

    :param budget: the query budget ``Q``
    :param rollout_ends: env steps at the end of each rollout (``T_0 < T_1 < ... < T_{R-1} = N``)
    :param initial_share: share ``s`` of the budget asked after the first rollout
    :param kind: one of :data:`SCHEDULES`
    :param t0: ``christiano``'s ``T0`` in env steps
    :raises SpecError: unknown schedule, share outside [0, 1], ``t0 <= 0``
    """
    if kind not in SCHEDULES:
        raise SpecError(
            f"feedback.schedule: unknown schedule '{kind}'{suggest(str(kind), SCHEDULES)}; "
            f"one of {', '.join(SCHEDULES)}"
        )
    if not 0.0 <= initial_share <= 1.0:
        raise SpecError(f"feedback.initial_query_share must lie in [0, 1], got {initial_share}")
    if not t0 > 0:
        raise SpecError(f"feedback.christiano_t0 must be > 0 env steps, got {t0}")
    ends = np.asarray(rollout_ends, dtype=np.float64)
    if ends.ndim != 1 or ends.size < 1 or np.any(np.diff(ends) <= 0) or ends[0] <= 0:
        raise ValueError(f"rollout_ends must be increasing positive env steps, got {rollout_ends!r}")
    if kind == "front_loaded":
        mass = 1.0 / (1.0 + np.arange(ends.size, dtype=np.float64))
    else:
        starts = np.concatenate([[0.0], ends[:-1]])
        mass = _rate_integral(kind, starts, ends, float(ends[-1]), float(t0))
    share = np.cumsum(mass) / mass.sum()
    cumulative = initial_share * budget + (1.0 - initial_share) * budget * share
    allowance = np.floor(cumulative + 1e-9).astype(np.int64)
    allowance[-1] = budget
    return allowance


# --------------------------------------------------------------------------------------------------
# Counters
# --------------------------------------------------------------------------------------------------


@dataclass
class QueryCounter:
    """Queries asked and answered in a run; ``charged`` is the count the budget caps."""

    budget: BudgetMode = "asked"
    asked: int = 0
    answered: int = 0

    def __post_init__(self) -> None:
        if self.budget not in BUDGET_MODES:
            raise SpecError(
                f"feedback.budget: unknown mode '{self.budget}'{suggest(str(self.budget), BUDGET_MODES)}; "
                f"one of {', '.join(BUDGET_MODES)}"
            )

    @property
    def charged(self) -> int:
        """Queries counted against the budget."""
        return self.asked if self.budget == "asked" else self.answered

    def record(self, asked: int, answered: int) -> None:
        """Count one batch of queries: ``asked`` put to the rater, ``answered`` labels received."""
        if not 0 <= answered <= asked:
            raise ValueError(f"answered ({answered}) must lie in [0, asked={asked}]")
        self.asked += int(asked)
        self.answered += int(answered)


# --------------------------------------------------------------------------------------------------
# Unique pairs
# --------------------------------------------------------------------------------------------------


def _pair_keys(pairs: np.ndarray) -> np.ndarray:
    """Order-insensitive int64 keys of global-id pairs ``[M, 2]`` (ids below 2^31)."""
    low, high = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    return low.astype(np.int64) << 32 | high.astype(np.int64)


class QueryPool:
    """Recent segments with run-wide ids, and the pairs already asked (never asked again).

    :param recent_rollouts: rollouts whose segments are the usual candidates
    :param buffer_rollouts: rollouts kept in all; their segments are used when the recent ones run out of
        unasked pairs (``>= recent_rollouts``)
    """

    def __init__(self, recent_rollouts: int = 2, buffer_rollouts: int = 8) -> None:
        if recent_rollouts < 1 or buffer_rollouts < recent_rollouts:
            raise SpecError(
                f"need 1 <= feedback.pool_rollouts ({recent_rollouts}) <= feedback.buffer_rollouts "
                f"({buffer_rollouts})"
            )
        self.recent_rollouts = recent_rollouts
        self._batches: deque[tuple[int, SegmentBatch]] = deque(maxlen=buffer_rollouts)
        self._next_id = 0
        self._asked = np.zeros(0, dtype=np.int64)  # sorted keys

    @property
    def num_asked(self) -> int:
        """Distinct pairs asked so far."""
        return int(self._asked.size)

    @property
    def num_segments(self) -> int:
        """Segments kept (all buffered rollouts)."""
        return sum(len(b) for _, b in self._batches)

    def latest(self) -> SegmentBatch:
        """The segments of the last rollout added."""
        if not self._batches:
            raise RuntimeError("no segments in the query pool yet")
        return self._batches[-1][1]

    def add(self, segments: SegmentBatch) -> None:
        """Append one rollout's segments (they get the next ids)."""
        self._batches.append((self._next_id, segments))
        self._next_id += len(segments)

    def window(
        self, quota: int, num_candidates: int, rng: np.random.Generator
    ) -> tuple[SegmentBatch, np.ndarray, np.ndarray]:
        """``(segments, ids, candidates)``: the smallest window with at least ``quota`` unasked pairs.

        The recent rollouts first; if they hold fewer than ``quota`` unasked pairs, every buffered rollout.
        ``candidates`` are up to ``num_candidates`` (``>= quota``) distinct unasked pairs drawn uniformly,
        as local indices ``[C, 2]`` into ``segments``; fewer when the window has fewer.
        """
        batches = list(self._batches)
        if not batches:
            raise RuntimeError("no segments in the query pool yet")
        num_candidates = max(num_candidates, quota)
        for count in (min(self.recent_rollouts, len(batches)), len(batches)):
            chosen = batches[len(batches) - count :]
            segments = SegmentBatch.concatenate([b for _, b in chosen])
            ids = np.concatenate([first + np.arange(len(b)) for first, b in chosen])
            pairs = self._unasked_pairs(ids, num_candidates, rng)
            if len(pairs) >= quota or count == len(batches):
                return segments, ids, pairs
        raise AssertionError("unreachable")

    def _unasked_pairs(self, ids: np.ndarray, wanted: int, rng: np.random.Generator) -> np.ndarray:
        """Up to ``wanted`` distinct unasked pairs of local indices, uniformly drawn."""
        n = len(ids)
        if n < 2:
            return np.zeros((0, 2), dtype=np.int64)
        if n * (n - 1) // 2 <= max(_ENUMERATE_LIMIT, 2 * wanted):
            i, j = np.triu_indices(n, k=1)
            pairs = np.stack([i, j], axis=1)
        else:  # many segments: sample, then drop repeats (order-insensitive)
            first = rng.integers(n, size=2 * wanted)
            second = rng.integers(n - 1, size=2 * wanted)
            second += second >= first
            pairs = np.unique(np.sort(np.stack([first, second], axis=1), axis=1), axis=0)
        pairs = pairs[~np.isin(_pair_keys(ids[pairs]), self._asked)]
        # a uniform subset in random order; which of two segments comes first is random too
        pairs = pairs[rng.permutation(len(pairs))[:wanted]]
        flip = rng.random(len(pairs)) < 0.5
        pairs[flip] = pairs[flip][:, ::-1]
        return pairs.astype(np.int64)

    def mark_asked(self, ids: np.ndarray, pairs: np.ndarray) -> None:
        """Record ``pairs`` (local indices into a window with these ``ids``) as asked."""
        keys = _pair_keys(ids[np.asarray(pairs, dtype=np.int64)])
        if np.isin(keys, self._asked).any() or len(np.unique(keys)) != len(keys):
            raise RuntimeError("a pair was asked twice: the query loop must only ask unasked pairs")
        self._asked = np.union1d(self._asked, keys)
