"""BC: behaviour cloning on an offline preference dataset (the reference for ``cpl``).

The same policy, data, budgets and evaluation as :mod:`prefrl.agents.cpl` (all from
:mod:`prefrl.agents.offline`); the loss is the negative log-likelihood ``mean_t -log pi(a_t|s_t)`` of the
cloned segments' actions (for the fixed-variance policy: the squared error to the actions rescaled to
[-1, 1]). ``bc.data`` picks what is cloned:

* ``preferred`` (default; the official ``sft`` baseline's ``pos`` data): the preferred segment of every
  labelled pair, both segments of a tie, and a segment as many times as it wins (dense data);
* ``all``: every segment that appears in a labelled pair, once (plain BC on the behaviour data).

``offline.batch_size`` counts segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from prefrl.agents.offline import OfflineAgent
from prefrl.agents.registry import register_agent
from prefrl.datasets import PreferenceDataset
from prefrl.spec_utils import ConfigSection

__all__ = ["BCAgent", "cloned_segments"]


@dataclass(frozen=True)
class BCConfig(ConfigSection):
    """The ``bc:`` section."""

    #: preferred: the preferred segment of every pair, both of a tie (the official sft ``pos`` data);
    #: all: every segment of the labelled pairs once
    data: Literal["preferred", "all"] = "preferred"


def cloned_segments(pairs: np.ndarray, labels: np.ndarray, data: str = "preferred") -> np.ndarray:
    """Indices of the segments BC clones, ``[K]`` int64.

    :param pairs: ``[M, 2]`` labelled pairs.
    :param labels: ``[M]`` ``y = P(segment 1 preferred)``.
    :param data: ``"preferred"`` (winner of each pair with multiplicity, both segments of a tie) or
        ``"all"`` (each segment in a pair once).
    """
    if data == "all":
        return np.unique(pairs)
    if data != "preferred":
        raise ValueError(f"data must be 'preferred' or 'all', got {data!r}")
    return np.concatenate([pairs[labels >= 0.5, 0], pairs[labels <= 0.5, 1]]).astype(np.int64)


@register_agent
class BCAgent(OfflineAgent):
    """Behaviour cloning of the preferred (or all) segments of an offline preference dataset."""

    name = "bc"
    description = "offline behaviour cloning of the preferred segments of an oracle dataset (cpl baseline)"
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {
        **OfflineAgent.config_sections,
        "bc": BCConfig,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data = self.sections["bc"].data  # type: ignore[attr-defined]

    def setup_data(self, data: PreferenceDataset) -> int:
        prefs = data.preferences
        # an index list rather than gathered copies: dense data repeats winners many times
        self._chosen = torch.as_tensor(
            cloned_segments(prefs.pairs, prefs.labels, self.data), device=self.device
        )
        self._obs = self.to_tensor(data.segments.obs)
        self._act = self.normalised_actions(data.segments.act)
        return len(self._chosen)

    def compute_loss(self, index: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        seg = self._chosen[index]
        loss = -self.policy.log_prob(self._obs[seg], self._act[seg]).mean()
        return loss, {"bc_loss": float(loss.detach())}
