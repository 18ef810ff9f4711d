"""Typed, validated containers for trajectory segments and preference labels.

Everything is struct-of-arrays: a batch of ``N`` segments of ``H`` steps stores one ``[N, H, ...]``
array per field, so every rater is a vectorised numpy expression over the whole batch.

Label convention (defined once, used everywhere)::

    y = P(segment 1 is preferred over segment 2)   in [0, 1]
    y = 0.5                                         tie / "equally preferable"
    skipped queries are removed from the batch (never labelled)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from prefrl.errors import ShapeError


def _check_finite(name: str, array: np.ndarray) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


@dataclass(frozen=True)
class SegmentBatch:
    """``N`` trajectory segments of ``H`` consecutive steps each.

    :param obs: observations ``s_t`` before each step, ``[N, H, obs_dim]``.
    :param act: actions ``a_t``, ``[N, H, act_dim]``.
    :param reward: true environment rewards ``r_t``, ``[N, H]``.
    :param factors: raw reward factors per step (env spec order, see ``EnvSpec.factors``), ``[N, H, F]``.
    :param dones: episode ended after this step, ``[N, H]`` (bool).
    :param next_obs: observation after the last step ``s_H``, ``[N, obs_dim]``.
    :param source: where each segment came from (policy checkpoint id or training step), ``[N]`` int.
    """

    obs: np.ndarray
    act: np.ndarray
    reward: np.ndarray
    factors: np.ndarray
    dones: np.ndarray
    next_obs: np.ndarray
    source: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.obs.ndim != 3:
            raise ShapeError(f"obs must be [N, H, obs_dim], got shape {self.obs.shape}")
        n, h, obs_dim = self.obs.shape
        expected = {
            "act": (n, h),
            "reward": (n, h),
            "factors": (n, h),
            "dones": (n, h),
            "next_obs": (n, obs_dim),
        }
        for name, prefix in expected.items():
            shape = getattr(self, name).shape
            if shape[: len(prefix)] != prefix:
                raise ShapeError(
                    f"{name} has shape {shape}, expected leading dims {prefix} to match obs {self.obs.shape}"
                )
        if self.act.ndim != 3 or self.factors.ndim != 3 or self.reward.ndim != 2 or self.dones.ndim != 2:
            raise ShapeError(
                "expected act [N, H, act_dim], reward [N, H], factors [N, H, F], dones [N, H]; got "
                f"act {self.act.shape}, reward {self.reward.shape}, factors {self.factors.shape}, "
                f"dones {self.dones.shape}"
            )
        if self.next_obs.ndim != 2:
            raise ShapeError(f"next_obs must be [N, obs_dim], got {self.next_obs.shape}")
        for name in ("obs", "act", "reward", "factors", "next_obs"):
            _check_finite(name, getattr(self, name))
        if self.source is None:
            object.__setattr__(self, "source", np.zeros(n, dtype=np.int64))
        elif self.source.shape != (n,):
            raise ShapeError(f"source must be [N]={n}, got {self.source.shape}")

    @property
    def num_segments(self) -> int:
        return self.obs.shape[0]

    @property
    def length(self) -> int:
        """Steps per segment ``H``."""
        return self.obs.shape[1]

    @property
    def returns(self) -> np.ndarray:
        """Undiscounted true return of each segment, ``[N]``."""
        return self.reward.sum(axis=1)

    def __len__(self) -> int:
        return self.num_segments

    def __getitem__(self, index: np.ndarray | slice | int) -> SegmentBatch:
        """Select segments (keeps the batch dimension for an int index)."""
        if isinstance(index, int | np.integer):
            index = slice(int(index), int(index) + 1)
        return SegmentBatch(
            obs=self.obs[index],
            act=self.act[index],
            reward=self.reward[index],
            factors=self.factors[index],
            dones=self.dones[index],
            next_obs=self.next_obs[index],
            source=self.source[index],
        )

    @staticmethod
    def concatenate(batches: list[SegmentBatch]) -> SegmentBatch:
        """Stack several batches of the same segment length and dimensions."""
        if not batches:
            raise ValueError("cannot concatenate an empty list of segment batches")
        return SegmentBatch(
            **{
                name: np.concatenate([getattr(b, name) for b in batches])
                for name in ("obs", "act", "reward", "factors", "dones", "next_obs", "source")
            }
        )

    def to_dict(self) -> dict[str, np.ndarray]:
        return {
            name: getattr(self, name)
            for name in ("obs", "act", "reward", "factors", "dones", "next_obs", "source")
        }


@dataclass(frozen=True)
class PreferenceBatch:
    """Labelled pairs of segments, stored as indices into one segment pool.

    :param segments: the pool of segments the pairs index into.
    :param pairs: ``[M, 2]`` int indices ``(i, j)`` into ``segments``: segment 1 is ``i``, segment 2 is ``j``.
    :param labels: ``[M]`` float ``y = P(segment i preferred over segment j)``; 0.5 is a tie.
    """

    segments: SegmentBatch
    pairs: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        validate_pairs(self.pairs, self.segments.num_segments)
        if self.labels.shape != (self.pairs.shape[0],):
            raise ShapeError(f"labels must be [M]={self.pairs.shape[0]}, got {self.labels.shape}")
        _check_finite("labels", self.labels)
        if self.labels.size and (self.labels.min() < 0.0 or self.labels.max() > 1.0):
            raise ValueError("labels must lie in [0, 1] (y = P(segment 1 preferred))")

    def __len__(self) -> int:
        return self.pairs.shape[0]

    @property
    def first(self) -> SegmentBatch:
        return self.segments[self.pairs[:, 0]]

    @property
    def second(self) -> SegmentBatch:
        return self.segments[self.pairs[:, 1]]

    @property
    def tie_rate(self) -> float:
        return float(np.mean(self.labels == 0.5)) if len(self) else 0.0


def validate_pairs(pairs: np.ndarray, num_segments: int) -> None:
    """Raise a clear error unless ``pairs`` is an ``[M, 2]`` integer array of valid indices."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ShapeError(f"pairs must be [M, 2], got shape {pairs.shape}")
    if not np.issubdtype(pairs.dtype, np.integer):
        raise ShapeError(f"pairs must be integer indices, got dtype {pairs.dtype}")
    if pairs.size and (pairs.min() < 0 or pairs.max() >= num_segments):
        raise IndexError(f"pair indices must lie in [0, {num_segments}), got [{pairs.min()}, {pairs.max()}]")
