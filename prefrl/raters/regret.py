"""Regret rater (Knox et al. 2022; the preference model of CPL, Hejna et al. 2024).

A segment's score is its negated regret under the optimal policy, ``S = -regret = sum_t A*(s_t, a_t)``.
Two forms are offered:

* ``form="value"`` (the deterministic-transition form used by CPL's code): the advantages telescope,
  ``S = sum_t gamma^t r_t + gamma^H V*(s_H) - V*(s_0)``, so only ``V*`` at the two ends is needed.
* ``form="advantage"``: ``S = sum_t gamma^t (Q*(s_t, a_t) - V*(s_t))``; needs ``q_fn``.

``gamma`` defaults to 1.0: segments are short compared to the discount horizon, preferences are about
what happened inside the segment, and CPL's own labels use no discount inside the segment.

``V*``/``Q*`` come from the env's oracle (:mod:`prefrl.oracle`). The oracle module plugs itself in as the
default with :func:`set_default_value_fn_provider`, so ``make_rater("regret", spec)`` works without
passing functions; until then (or for a hand-built value function) pass ``value_fn``/``q_fn``.
Terminal states: envs run with a fixed horizon (truncation, not termination), so ``V*(s_H)`` is always
bootstrapped; ``dones`` are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from prefrl.errors import RaterError
from prefrl.raters.base import ScoreRater
from prefrl.raters.features import check_step_weights, check_unit_interval, discount_weights
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec

#: ``value_fn(obs [N, obs_dim]) -> V*(obs) [N]``
ValueFn = Callable[[np.ndarray], np.ndarray]
#: ``q_fn(obs [N, obs_dim], act [N, act_dim]) -> Q*(obs, act) [N]``
QFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: ``provider(env_spec) -> value_fn`` or ``(value_fn, q_fn)``
ValueFnProvider = Callable[["EnvSpec"], "ValueFn | tuple[ValueFn, QFn | None]"]

REGRET_FORMS = ("value", "advantage")

_default_provider: ValueFnProvider | None = None


def set_default_value_fn_provider(provider: ValueFnProvider | None) -> None:
    """Register the function that supplies ``V*`` (and optionally ``Q*``) for an env spec.

    The regret rater calls it when no ``value_fn`` is passed. ``provider(env_spec)`` returns either a
    value function or a ``(value_fn, q_fn)`` tuple. ``None`` removes the registered provider.
    """
    global _default_provider
    _default_provider = provider


def get_default_value_fn_provider() -> ValueFnProvider | None:
    """The provider registered with :func:`set_default_value_fn_provider`, or ``None``."""
    return _default_provider


def _evaluate(fn: Callable[..., np.ndarray], what: str, n: int, *args: np.ndarray) -> np.ndarray:
    """Call a value/Q function and check it returns one float per input row, ``[n]``."""
    out = np.asarray(fn(*args), dtype=np.float64)
    if out.size != n:
        raise RaterError(f"regret: {what} returned {out.size} values for {n} inputs (shape {out.shape})")
    return out.reshape(n)


class RegretRater(ScoreRater):
    """Score = negated regret of the segment under an oracle value function.

    :param value_fn: ``V*(obs [N, obs_dim]) -> [N]``; ``None`` asks the registered default provider
        (needs ``env_spec``), and raises if there is none.
    :param q_fn: ``Q*(obs [N, obs_dim], act [N, act_dim]) -> [N]``; required by ``form="advantage"``.
    :param form: ``"value"`` (telescoped, deterministic transitions) or ``"advantage"``.
    :param gamma: discount in ``(0, 1]`` (default 1.0, no discount inside the segment).
    :param beta: Bradley-Terry inverse temperature; ``inf`` = deterministic.
    :param soft: return the preference probability instead of a sampled label.
    :param env_spec: passed to the default value-function provider.
    """

    name = "regret"
    supports_step_weights = True

    def __init__(
        self,
        value_fn: ValueFn | None = None,
        q_fn: QFn | None = None,
        form: str = "value",
        gamma: float = 1.0,
        beta: float = float("inf"),
        soft: bool = False,
        env_spec: EnvSpec | None = None,
    ) -> None:
        super().__init__(beta=beta, soft=soft)
        if form not in REGRET_FORMS:
            raise RaterError(f"regret: form must be one of {', '.join(REGRET_FORMS)}, got {form!r}")
        self.form = form
        self.gamma = check_unit_interval(gamma, "gamma", self.name, open_low=True)
        if value_fn is None and _default_provider is not None and env_spec is not None:
            provided = _default_provider(env_spec)
            value_fn, provided_q = provided if isinstance(provided, tuple) else (provided, None)
            q_fn = q_fn if q_fn is not None else provided_q
        if value_fn is None:
            raise RaterError(
                "regret: an oracle value function is needed; pass value_fn (V*(obs [N, obs_dim]) -> [N]) "
                "or register one with prefrl.raters.regret.set_default_value_fn_provider"
            )
        if form == "advantage" and q_fn is None:
            raise RaterError(
                "regret: form='advantage' needs q_fn (Q*(obs [N, obs_dim], act [N, act_dim]) -> [N]); "
                "use form='value' with a value function only"
            )
        self.value_fn = value_fn
        self.q_fn = q_fn

    def score(self, segments: SegmentBatch, step_weights: np.ndarray | None = None) -> np.ndarray:
        """``-regret`` per segment, ``[N]`` (``step_weights`` weight the per-step advantages)."""
        n, h = segments.num_segments, segments.length
        step_weights = check_step_weights(step_weights, h)
        weights = discount_weights(h, self.gamma)
        if step_weights is not None:
            weights = weights * step_weights
        if self.form == "advantage":
            return self.advantages(segments) @ weights
        if step_weights is None:
            # telescoped: only V at the first and the last state (2N evaluations instead of N(H+1))
            ends_obs = np.concatenate([segments.obs[:, 0], segments.next_obs])
            ends = _evaluate(self.value_fn, "value_fn", 2 * n, ends_obs)
            return segments.reward @ weights + self.gamma**h * ends[n:] - ends[:n]
        # per-step one-step advantages r_t + gamma V(s_{t+1}) - V(s_t); they telescope to the form
        # above when all weights are 1, and let the myopic wrapper weight each step
        states = np.concatenate([segments.obs, segments.next_obs[:, None]], axis=1)
        values = _evaluate(self.value_fn, "value_fn", n * (h + 1), states.reshape(n * (h + 1), -1))
        values = values.reshape(n, h + 1)
        advantages = segments.reward + self.gamma * values[:, 1:] - values[:, :-1]
        return advantages @ weights

    def advantages(self, segments: SegmentBatch) -> np.ndarray:
        """``Q*(s_t, a_t) - V*(s_t)`` per step, ``[N, H]`` (needs ``q_fn``)."""
        if self.q_fn is None:
            raise RaterError("regret: advantages need q_fn (Q*(obs, act) -> [N])")
        n, h = segments.num_segments, segments.length
        obs = segments.obs.reshape(n * h, -1)
        act = segments.act.reshape(n * h, -1)
        q = _evaluate(self.q_fn, "q_fn", n * h, obs, act)
        v = _evaluate(self.value_fn, "value_fn", n * h, obs)
        return (q - v).reshape(n, h)

    def __repr__(self) -> str:
        return f"RegretRater(form={self.form!r}, gamma={self.gamma}, beta={self.beta})"
