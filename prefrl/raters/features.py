"""Segment features shared by the raters: reward-factor utilities and per-step weights.

A factor's *utility* is ``sign * weight * raw`` (see :meth:`prefrl.envs.EnvSpec.factor_utilities`), so a
larger utility is always better and the true reward is the sum of the in-reward utilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prefrl.errors import RaterError
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec


def require_env_spec(env_spec: EnvSpec | None, rater_name: str) -> EnvSpec:
    """Return ``env_spec`` or raise a :class:`RaterError` saying ``rater_name`` needs one."""
    if env_spec is None:
        raise RaterError(
            f"the {rater_name} rater reads the reward factors from an env spec; pass env_spec "
            "(e.g. prefrl.envs.load_env_spec('pendulum'))"
        )
    return env_spec


def utility_sums(segments: SegmentBatch, env_spec: EnvSpec) -> np.ndarray:
    """Segment sums of the factor utilities, ``[N, H, F] -> [N, F]``.

    Utilities are a per-factor scale of the raw factors, so summing the raw factors over the segment
    first and scaling once is exact and ``H`` times cheaper than scaling every step.
    """
    return env_spec.factor_utilities(segments.factors.sum(axis=1))


def step_utilities(segments: SegmentBatch, env_spec: EnvSpec, factor: int) -> np.ndarray:
    """Per-step utility of one factor (by index), ``[N, H]``."""
    scale = env_spec.factor_signs[factor] * env_spec.factor_weights[factor]
    return segments.factors[:, :, factor] * scale


def discount_weights(length: int, gamma: float) -> np.ndarray:
    """``gamma^t`` for ``t = 0 .. length-1``, ``[length]`` float64."""
    return gamma ** np.arange(length, dtype=np.float64)


def check_step_weights(step_weights: np.ndarray | None, length: int) -> np.ndarray | None:
    """Validate optional per-step weights against the segment length ``H``."""
    if step_weights is None:
        return None
    step_weights = np.asarray(step_weights, dtype=np.float64)
    if step_weights.shape != (length,):
        raise RaterError(f"step_weights must have shape [H]=({length},), got {step_weights.shape}")
    return step_weights


def check_finite_param(value: float | None, name: str, rater: str) -> float | None:
    """``value`` as a float if it is a finite number (``None`` passes through), else :class:`RaterError`.

    NaN or an infinite threshold or margin would make every comparison a tie (or none), silently.
    """
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RaterError(f"{rater}: {name} must be a number, got {value!r}") from None
    if not np.isfinite(number):
        raise RaterError(f"{rater}: {name} must be a finite number, got {number}")
    return number


def check_unit_interval(value: float, name: str, rater: str, open_low: bool = False) -> float:
    """Check ``value`` lies in ``[0, 1]`` (``(0, 1]`` with ``open_low``) and return it as a float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise RaterError(f"{rater}: {name} must be a number, got {value!r}") from None
    low_ok = value > 0.0 if open_low else value >= 0.0
    if not (low_ok and value <= 1.0):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise RaterError(f"{rater}: {name} must lie in {interval}, got {value}")
    return value
