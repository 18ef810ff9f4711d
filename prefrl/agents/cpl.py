"""CPL: contrastive preference learning (Hejna et al., ICLR 2024; official code jhejna/cpl).

Offline, no reward model and no RL. The policy's scaled log-likelihood plays the role of the optimal
advantage, so a segment's "regret score" is ``A(seg) = alpha * sum_t log pi(a_t|s_t)`` (no discount inside
the segment), and the preference likelihood is a Bradley-Terry model over these scores. With the
conservative bias ``lambda`` (the official ``contrastive_bias``) the loss of a pair with preferred
segment ``+`` and other ``-`` is::

    L = -log sigmoid(A+ - lambda * A-)

For a label ``y = P(segment 1 preferred)`` in ``[0, 1]`` the loss is the label-weighted sum of both
orderings, exactly as the official ``biased_bce_with_logits`` (whose ``y`` means the opposite: "2 is
preferred")::

    L = y * -log sigmoid(A1 - lambda A2) + (1 - y) * -log sigmoid(A2 - lambda A1)

so a tie (``y = 0.5``) pushes both segments up equally; ``lambda = 1`` is the symmetric logistic loss.
Training follows the official recipe: ``bc_fraction`` of the gradient steps behaviour cloning (a warm-up:
``mean(-log pi)`` over the segments), then a fresh optimiser, a linear learning-rate warm-up and
``cpl_loss + bc_coeff * bc_loss``. The official MetaWorld configs: alpha 0.1, lambda 0.5, bc_coeff 0,
Adam lr 1e-4, batch 96 comparisons, 200k BC + 300k CPL steps, LR warm-up 10k steps, [512, 512] MLP
with dropout 0.25 and a tanh output (see :mod:`prefrl.agents.offline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from prefrl.agents.offline import OfflineAgent, mean_or_nan
from prefrl.agents.registry import register_agent
from prefrl.datasets import PreferenceDataset
from prefrl.errors import SpecError
from prefrl.spec_utils import ConfigSection

__all__ = ["CPLAgent", "cpl_accuracy", "cpl_loss", "preferred_mask"]


@dataclass(frozen=True)
class CPLConfig(ConfigSection):
    """The ``cpl:`` section (defaults: the official MetaWorld configs of jhejna/cpl)."""

    ranges: ClassVar[dict[str, str]] = {"bc_coeff": "[0, inf)"}

    #: temperature: ``A(seg) = alpha * sum_t log pi(a_t|s_t)``
    alpha: float = 0.1
    #: conservative bias ``lambda`` in (0, 1] (official contrastive_bias); 1 = symmetric loss
    lam: float = 0.5
    #: weight of ``mean(-log pi)`` added to the CPL loss after the warm-up
    bc_coeff: float = 0.0
    #: segments of the BC term (warm-up and bc_coeff): all | preferred
    bc_data: Literal["all", "preferred"] = "all"
    #: share of the gradient steps spent on the BC warm-up (official 200k / 500k)
    bc_fraction: float = 0.4

    def validate(self, where: str) -> None:
        if self.alpha <= 0 or not 0 < self.lam <= 1:
            raise SpecError(
                f"{where}: need alpha > 0 and lam in (0, 1], got alpha={self.alpha}, lam={self.lam}"
            )
        if not 0.0 <= self.bc_fraction < 1.0:
            raise SpecError(f"{where}.bc_fraction must lie in [0, 1), got {self.bc_fraction}")


def _check_pair_shapes(logp1: torch.Tensor, logp2: torch.Tensor, y: torch.Tensor) -> None:
    if logp1.ndim != 2 or logp1.shape != logp2.shape:
        raise ValueError(
            f"logp1 and logp2 must both be [B, H] log-likelihoods, got {tuple(logp1.shape)} and "
            f"{tuple(logp2.shape)}"
        )
    if y.shape != logp1.shape[:1]:
        raise ValueError(f"labels y must be [B]={logp1.shape[0]}, got {tuple(y.shape)}")


def cpl_loss(
    logp1: torch.Tensor, logp2: torch.Tensor, y: torch.Tensor, alpha: float = 0.1, lam: float = 0.5
) -> torch.Tensor:
    """The CPL loss, averaged over pairs (a scalar tensor).

    :param logp1: ``log pi(a_t|s_t)`` along segment 1 of each pair, ``[B, H]``.
    :param logp2: the same for segment 2, ``[B, H]``.
    :param y: ``P(segment 1 preferred)`` in ``[0, 1]``, ``[B]``; 0.5 is a tie, soft labels are allowed.
    :param alpha: temperature: ``A(seg) = alpha * sum_t log pi``.
    :param lam: conservative bias ``lambda`` in ``(0, 1]`` (1 = symmetric logistic loss).
    """
    _check_pair_shapes(logp1, logp2, y)
    if not alpha > 0.0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0.0 < lam <= 1.0:
        raise ValueError(f"lam (the contrastive bias lambda) must lie in (0, 1], got {lam}")
    adv1, adv2 = alpha * logp1.sum(dim=1), alpha * logp2.sum(dim=1)
    y = y.to(adv1.dtype)
    # -log sigmoid(x) = softplus(-x): stable for any logit size
    loss = y * F.softplus(lam * adv2 - adv1) + (1.0 - y) * F.softplus(lam * adv1 - adv2)
    return loss.mean()


def cpl_accuracy(logp1: torch.Tensor, logp2: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per non-tied pair, whether the higher ``sum_t log pi`` is the preferred segment: ``[B'] bool``."""
    _check_pair_shapes(logp1, logp2, y)
    decided = y != 0.5
    return (logp1.sum(dim=1) > logp2.sum(dim=1))[decided] == (y > 0.5)[decided]


def preferred_mask(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, second)`` bool ``[B]``: the preferred side of each pair; a tie marks both sides."""
    return y >= 0.5, y <= 0.5


@register_agent
class CPLAgent(OfflineAgent):
    """Contrastive preference learning on an offline dataset (see the module docstring).

    ``cpl`` config section: ``alpha``, ``lam``, ``bc_coeff`` (weight of the BC term after warm-up),
    ``bc_data`` (``all`` segments or only the ``preferred`` ones, for the BC term), ``bc_fraction``
    (share of the gradient steps spent on the BC warm-up). ``offline.batch_size`` counts *pairs*, as in
    the official data loader (96 pairs = 192 segments per step).
    """

    name = "cpl"
    description = "offline contrastive preference learning on an oracle dataset (Hejna et al. 2024; regret)"
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {
        **OfflineAgent.config_sections,
        "cpl": CPLConfig,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: CPLConfig = self.sections["cpl"]  # type: ignore[assignment]
        self.alpha, self.lam = cfg.alpha, cfg.lam
        self.bc_coeff, self.bc_fraction, self.bc_data = cfg.bc_coeff, cfg.bc_fraction, cfg.bc_data
        self.bc_steps = 0

    def setup_data(self, data: PreferenceDataset) -> int:
        segments = data.segments
        self._obs = self.to_tensor(segments.obs)
        self._act = self.normalised_actions(segments.act)
        self._pairs = torch.as_tensor(data.preferences.pairs, device=self.device)
        self._labels = self.to_tensor(data.preferences.labels)
        return len(data.preferences)

    def on_step_start(self, step: int, total_steps: int) -> None:
        if step == 0:
            self.bc_steps = round(self.bc_fraction * total_steps)
        if step == self.bc_steps and step > 0:
            # as the official code: a fresh optimiser (and LR warm-up) when the CPL phase starts
            self.optimizer = self.make_optimizer()

    def learning_rate_scale(self, step: int, total_steps: int) -> float:
        if step < self.bc_steps:
            return 1.0  # no schedule during the BC warm-up (official)
        return super().learning_rate_scale(step - self.bc_steps, total_steps - self.bc_steps)

    def compute_loss(self, index: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        first, second = self._pairs[index, 0], self._pairs[index, 1]
        y = self._labels[index]
        seg = torch.cat([first, second])
        logp1, logp2 = self.policy.log_prob(self._obs[seg], self._act[seg]).chunk(2)
        if self.bc_data == "preferred":
            keep1, keep2 = preferred_mask(y)
            bc_loss = -torch.cat([logp1[keep1], logp2[keep2]]).mean()
        else:
            bc_loss = -torch.cat([logp1, logp2]).mean()
        contrastive = cpl_loss(logp1, logp2, y, self.alpha, self.lam)
        in_bc_phase = self.grad_steps < self.bc_steps
        loss = bc_loss if in_bc_phase else contrastive + self.bc_coeff * bc_loss
        with torch.no_grad():
            accuracy = mean_or_nan(cpl_accuracy(logp1, logp2, y))
        return loss, {
            "cpl_loss": float(contrastive.detach()),
            "bc_loss": float(bc_loss.detach()),
            "accuracy": accuracy,
            "bc_phase": float(in_bc_phase),
        }
