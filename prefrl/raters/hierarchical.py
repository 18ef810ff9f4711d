"""Hierarchical rater of HERON (Bukharin et al.): compare reward factors in order of importance.

Factors are ranked (``env_spec.heron_ranking``, most important first). For a pair, level ``l`` compares
the segments' utility sums ``z_l = sum_t utility_l(t)`` (utilities carry the factor's sign, so larger is
better): if ``|z_l(1) - z_l(2)| > delta_l`` the segment with the larger ``z_l`` wins, otherwise the
comparison falls to level ``l + 1``. ``delta_l = sigma_l * std(z_l)`` with the standard deviation over
the segments of the batch being labelled (HERON's code uses the current minibatch, Bessel-corrected)
and ``sigma_l`` from ``env_spec.heron_margins``. If no level decides, the label is 0.5, or the pair is
dropped with ``drop_ties=True`` (what HERON's code does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from prefrl.errors import RaterError
from prefrl.raters.base import Rater
from prefrl.raters.features import require_env_spec, utility_sums
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec


class HierarchicalRater(Rater):
    """HERON's lexicographic comparison of ranked reward factors with per-level margins.

    :param env_spec: the env spec (factor utilities, default ranking and margins).
    :param ranking: factor names, most important first (default ``env_spec.heron_ranking``).
    :param margins: ``sigma_l`` per level (default ``env_spec.heron_margins``).
    :param margin: one ``sigma`` for every level (overrides ``margins``).
    :param drop_ties: drop pairs no level decides instead of labelling them 0.5.
    """

    name = "hierarchical"

    def __init__(
        self,
        env_spec: EnvSpec | None = None,
        ranking: Sequence[str] | None = None,
        margins: Sequence[float] | None = None,
        margin: float | None = None,
        drop_ties: bool = False,
    ) -> None:
        super().__init__()
        self.env_spec = require_env_spec(env_spec, self.name)
        ranking = list(ranking if ranking is not None else self.env_spec.heron_ranking)
        if not ranking:
            raise RaterError(
                f"hierarchical: env spec '{self.env_spec.name}' has no heron ranking; pass ranking"
            )
        try:
            self.levels = np.array([self.env_spec.factor_index(f) for f in ranking], dtype=np.int64)
        except KeyError as e:
            raise RaterError(f"hierarchical: {e.args[0]}") from None
        if margin is not None:
            margins = [float(margin)] * len(ranking)
        elif margins is None:
            margins = self.env_spec.heron_margins
        sigmas = np.asarray(margins, dtype=np.float64)
        if sigmas.shape != (len(ranking),):
            raise RaterError(f"hierarchical: need one margin per level ({len(ranking)}), got {len(sigmas)}")
        if not np.all((sigmas >= 0) & np.isfinite(sigmas)):
            raise RaterError(f"hierarchical: margins must be finite and >= 0, got {sigmas.tolist()}")
        self.ranking = ranking
        self.sigmas = sigmas
        self.drop_ties = bool(drop_ties)

    def level_values(self, segments: SegmentBatch) -> np.ndarray:
        """Utility sums ``z_l`` of the ranked factors, ``[N, L]``."""
        return utility_sums(segments, self.env_spec)[:, self.levels]

    def thresholds(self, values: np.ndarray) -> np.ndarray:
        """``delta_l = sigma_l * std(z_l)`` over the batch, ``[L]``."""
        ddof = 1 if values.shape[0] > 1 else 0
        return self.sigmas * values.std(axis=0, ddof=ddof)

    def _label(
        self, segments: SegmentBatch, pairs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        z = self.level_values(segments)
        delta = self.thresholds(z)
        diff = z[pairs[:, 0]] - z[pairs[:, 1]]  # [M, L]
        decisive = np.abs(diff) > delta  # strict, as in HERON
        decided = decisive.any(axis=1)
        level = decisive.argmax(axis=1)  # first decisive level (0 when none; masked below)
        winner = diff[np.arange(diff.shape[0]), level] > 0
        labels = np.where(decided, winner.astype(np.float64), 0.5)
        answered = decided if self.drop_ties else np.ones(pairs.shape[0], dtype=bool)
        return labels, answered

    def __repr__(self) -> str:
        return (
            f"HierarchicalRater(ranking={self.ranking}, margins={self.sigmas.tolist()}, "
            f"drop_ties={self.drop_ties})"
        )
