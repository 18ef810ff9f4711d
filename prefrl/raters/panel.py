"""Panel (pluralistic) rater: a population of raters with different preferences.

Each query is answered either by one member drawn uniformly at random (``mode="random"``: stochastic
preferences, a mixture of reward functions) or by the majority of all members (``mode="majority"``:
a Condorcet panel, which can be intransitive). By default the members are partial-return raters whose
per-factor utility weights are drawn around the env's reward, ``w_kf = exp(spread * N(0, 1))`` on the
in-reward factors, so the panel disagrees about trade-offs but not about what is good.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from prefrl.errors import RaterError
from prefrl.raters.base import Rater
from prefrl.raters.features import require_env_spec
from prefrl.raters.partial_return import PartialReturnRater
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec

PANEL_MODES = ("random", "majority")
#: the largest drawn panel (each member is a rater scoring every segment)
MAX_PANEL_MEMBERS = 10_000
#: the largest log-normal spread of drawn member weights
MAX_PANEL_SPREAD = 20.0


def draw_member_weights(
    env_spec: EnvSpec, num_members: int, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """Log-normal utility weights around 1 on the in-reward factors (0 elsewhere), ``[K, F]``."""
    noise = np.exp(spread * rng.standard_normal((num_members, env_spec.num_factors)))
    return noise * env_spec.in_reward_mask


class PanelRater(Rater):
    """A population of raters answering each query by a random member or by majority.

    :param members: the member raters; ``None`` draws ``num_members`` partial-return raters with
        utility weights around the env's reward (needs ``env_spec``).
    :param mode: ``"random"`` or ``"majority"`` (ties of the vote and pairs no member answers give 0.5
        and "skipped" respectively).
    :param env_spec: the env spec, for the drawn members.
    :param num_members: size of the drawn population (>= 2).
    :param spread: log-normal spread of the drawn weights (0 = all members equal the true reward).
    :param seed: seeds the draw of the members (fixed at construction; labels use ``label()``'s rng).
    """

    name = "panel"

    def __init__(
        self,
        members: Sequence[Rater] | None = None,
        mode: str = "random",
        env_spec: EnvSpec | None = None,
        num_members: int = 5,
        spread: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mode not in PANEL_MODES:
            raise RaterError(f"panel: mode must be one of {', '.join(PANEL_MODES)}, got {mode!r}")
        self.mode = mode
        self.member_weights: np.ndarray | None = None
        if members is None:
            spec = require_env_spec(env_spec, "panel (with drawn members)")
            if int(num_members) != num_members or not 2 <= num_members <= MAX_PANEL_MEMBERS:
                raise RaterError(
                    f"panel: num_members must be an integer in [2, {MAX_PANEL_MEMBERS:,}], got {num_members}"
                )
            if not 0 <= spread <= MAX_PANEL_SPREAD:
                # exp(spread * z) overflows to inf (NaN labels) for large spreads
                raise RaterError(f"panel: spread must lie in [0, {MAX_PANEL_SPREAD:g}], got {spread}")
            if int(seed) != seed or seed < 0:
                raise RaterError(f"panel: seed must be an integer >= 0, got {seed}")
            self.member_weights = draw_member_weights(
                spec, int(num_members), float(spread), np.random.default_rng(seed)
            )
            members = [PartialReturnRater(utility_weights=w, env_spec=spec) for w in self.member_weights]
        members = list(members)
        if not members:
            raise RaterError("panel: needs at least one member")
        for m in members:
            if not isinstance(m, Rater):
                raise RaterError(f"panel: members must be Raters, got {type(m).__name__}")
        self.members = members

    def _label(
        self, segments: SegmentBatch, pairs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        m, k = pairs.shape[0], len(self.members)
        labels = np.full(m, 0.5)
        answered = np.zeros(m, dtype=bool)
        if self.mode == "random":
            # each member answers only its own share of the queries: the work of a single rater
            choice = rng.integers(k, size=m)
            for j, member in enumerate(self.members):
                idx = np.flatnonzero(choice == j)
                if idx.size:
                    labels[idx], answered[idx] = member._label(segments, pairs[idx], rng)
            return labels, answered
        total = np.zeros(m, dtype=np.int64)
        for member in self.members:
            member_labels, member_answered = member._label(segments, pairs, rng)
            total += np.where(member_answered, np.sign(member_labels - 0.5), 0.0).astype(np.int64)
            answered |= member_answered
        labels = (np.sign(total) + 1.0) * 0.5
        return labels, answered

    def __repr__(self) -> str:
        return f"PanelRater(mode={self.mode!r}, members={len(self.members)})"
