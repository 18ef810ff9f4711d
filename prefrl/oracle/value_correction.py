"""Monte-Carlo correction of an oracle's value function.

An off-policy critic is trained by bootstrapping on a replay buffer of many past policies, with an entropy
bonus (SAC) or on normalised rewards (PPO), so it ranks the final expert's own states only roughly (Walker2d:
Spearman 0.73 against their Monte-Carlo discounted returns). The correction keeps the critic and adds a small
residual network fitted to what the critic gets wrong on the expert's own rollouts::

    V*(s) = V_critic(s) + delta(s),    Q*(s, a) = Q_critic(s, a) + delta(s)

``delta`` is trained by regression on ``G_t - V_critic(s_t)`` over the states of ``episodes`` rollouts of
the expert's mean action, with ``G_t`` the *untruncated* discounted return (as in
:func:`prefrl.oracle.quality.value_quality`); with ``rank_weight > 0`` also by a pairwise ranking loss that
orders states whose returns differ by less than the squared error resolves (:func:`pairwise_rank_loss`).
In a share of the rollouts (``mixed_share``) a skill level or a random policy acts first and the expert
takes over at a random step, so ``delta`` also sees the mixed-skill states a ``regret`` rater evaluates
``V*`` on, instead of extrapolating there.

Shifting ``Q`` by the same ``delta(s)`` leaves the critic's advantages ``Q - V`` (the ``regret`` rater's
``form=advantage``) unchanged. The last layer starts at zero, so training starts from the plain critic;
the weights with the best Spearman correlation on separate validation rollouts are kept, and the
correction is only accepted when that beats the plain critic by ``min_gain``. Training, validation and
the held-out states of ``value_quality`` come from disjoint reset seeds.

The fit logs its progress (this module's logger, INFO): the rollouts, then every ~10% of the steps the
best validation Spearman so far against the plain critic's.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch as th
from scipy.stats import spearmanr
from torch import nn

from prefrl.oracle.returns import expert_states_and_returns, weaker_policies

if TYPE_CHECKING:
    from prefrl.oracle.loading import Oracle

logger = logging.getLogger(__name__)

#: reset seeds of the correction's training and validation rollouts (value_quality holds out 12_345 + i)
TRAIN_SEED = 2_000_000
VALIDATION_SEED = 3_000_000


def pairwise_rank_loss(values: th.Tensor, returns: th.Tensor, temperature: float) -> th.Tensor:
    """RankNet loss (Burges et al., 2005) over the pairs of a batch whose returns differ.

    ``mean softplus(-sign(G_i - G_j) (V_i - V_j) / temperature)``: each pair costs ``log 2`` when its values
    tie and pulls them into the returns' order with the same strength however small the returns' difference
    is, which a squared error on returns spanning 1e-5 to 300 (Pendulum) does not.
    """
    order = th.sign(returns[:, None] - returns[None, :])
    margins = (values[:, None] - values[None, :]) / temperature
    differ = order != 0
    if not differ.any():
        return values.sum() * 0.0
    return nn.functional.softplus(-order * margins)[differ].mean()


class ValueCorrection(nn.Module):
    """``delta(s)``: an MLP on standardised observations, output in true-reward units."""

    def __init__(self, obs_dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        # zero output at the start: training begins from the plain critic
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("obs_mean", th.zeros(obs_dim))
        self.register_buffer("obs_std", th.ones(obs_dim))
        self.register_buffer("scale", th.ones(()))

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.scale * self.net((obs - self.obs_mean) / self.obs_std).squeeze(-1)

    @th.no_grad()
    def predict(self, obs: np.ndarray) -> np.ndarray:
        """``delta`` for a batch of raw observations ``[N, obs_dim]`` -> ``[N]`` (float64)."""
        return self(th.as_tensor(np.asarray(obs), dtype=th.float32)).numpy().astype(np.float64)


@dataclass
class CorrectionReport:
    """How the fit went; recorded in the oracle's manifest as ``value_correction``."""

    episodes: int
    validation_episodes: int
    train_states: int
    steps: int
    best_step: int
    validation_spearman_critic: float
    validation_spearman_corrected: float
    min_gain: float
    accepted: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def fit_value_correction(
    oracle: Oracle,
    episodes: int = 80,
    validation_episodes: int = 20,
    steps: int = 15_000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    hidden: int = 128,
    eval_every: int = 250,
    min_gain: float = 0.01,
    mixed_share: float = 0.5,
    rank_weight: float = 0.0,
    rank_temperature: float = 0.01,
    seed: int = 0,
) -> tuple[ValueCorrection, CorrectionReport]:
    """Fit ``delta`` on the expert's own rollouts; see the module docstring.

    :param oracle: the expert; its *uncorrected* critic is the base (``oracle.value(obs, corrected=False)``).
    :param episodes: training rollouts of the expert's mean action (reset seeds ``TRAIN_SEED + i``).
    :param validation_episodes: rollouts that pick the best weights (reset seeds ``VALIDATION_SEED + i``).
    :param steps: Adam steps on minibatches of ``batch_size`` states (cosine-decayed learning rate).
    :param mixed_share: share of the training and validation rollouts that start with a weaker policy
        (:func:`weaker_policies`) before the expert takes over: ``delta`` must not spoil ``V*`` on the
        mixed-skill states the ``regret`` rater sees, where a fit to the expert's own states alone
        extrapolates (Walker2d: agreement of regret with partial return fell from 88% to 79%).
    :param rank_weight: weight of :func:`pairwise_rank_loss` beside the squared error: the squared error
        fits the returns' scale, the ranking term their order where they differ by less than the critic's
        error (Pendulum's near-equilibrium states: held-out Spearman 0.63 without it, 0.88 with it). Off by
        default: on Hopper it traded Pearson 0.95 -> 0.88 for Spearman 0.90 -> 0.91, and Ant's larger fit
        gained nothing with it (0.013 on validation without it).
    :param rank_temperature: the value difference, in units of the residual's spread, at which a pair
        counts as confidently ordered.
    :param min_gain: the validation Spearman the correction must add to be accepted; a negligible gain
        is not worth a second network (HalfCheetah: +0.003 while its transient states ranked worse).
    :returns: the correction (best validation weights) and a report; ``report.accepted`` is False when no
        weights ranked the validation states at least ``min_gain`` better than the plain critic.
    """
    if episodes < 1 or validation_episodes < 1 or steps < 1:
        raise ValueError(
            f"episodes, validation_episodes and steps must be >= 1, got {episodes}, "
            f"{validation_episodes}, {steps}"
        )
    if not 0.0 <= mixed_share <= 1.0:
        raise ValueError(f"mixed_share must be in [0, 1], got {mixed_share}")
    if rank_weight < 0.0 or rank_temperature <= 0.0:
        raise ValueError(
            f"rank_weight must be >= 0 and rank_temperature > 0, got {rank_weight}, {rank_temperature}"
        )
    act = oracle.policy("expert", deterministic=True)

    def rollouts(count: int, first_seed: int) -> tuple[np.ndarray, np.ndarray]:
        mixed = round(mixed_share * count)
        parts = [
            expert_states_and_returns(act, oracle.spec, oracle.gamma, count - mixed, first_seed),
            expert_states_and_returns(
                act, oracle.spec, oracle.gamma, mixed, first_seed + count,
                behaviours=weaker_policies(oracle, first_seed),
            ),
        ]  # fmt: skip
        return np.concatenate([x for x, _ in parts]), np.concatenate([g for _, g in parts])

    name = oracle.spec.name
    logger.info(
        f"oracle {name}: value correction: rolling out {episodes} training and {validation_episodes} "
        "validation episodes"
    )
    x_train, g_train = rollouts(episodes, TRAIN_SEED)
    x_val, g_val = rollouts(validation_episodes, VALIDATION_SEED)
    v_train = oracle.value(x_train, corrected=False)
    v_val = oracle.value(x_val, corrected=False)

    th.manual_seed(seed)
    correction = ValueCorrection(x_train.shape[1], hidden)
    correction.obs_mean.copy_(th.as_tensor(x_train.mean(axis=0), dtype=th.float32))
    correction.obs_std.copy_(th.as_tensor(x_train.std(axis=0) + 1e-6, dtype=th.float32))
    correction.scale.fill_(float((g_train - v_train).std() + 1e-8))
    inputs = th.as_tensor(x_train, dtype=th.float32)
    critic_values = th.as_tensor(v_train, dtype=th.float32)
    returns = th.as_tensor(g_train, dtype=th.float32)

    def validation_spearman() -> float:
        return float(spearmanr(v_val + correction.predict(x_val), g_val).statistic)

    best_score, best_step, best_state = validation_spearman(), 0, copy.deepcopy(correction.state_dict())
    critic_score = best_score
    optimizer = th.optim.Adam(correction.net.parameters(), lr=learning_rate)
    schedule = th.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = th.Generator().manual_seed(seed)
    temperature = rank_temperature * float(correction.scale)
    report_every = max(steps // 10, 1)
    logger.info(f"oracle {name}: value correction: fitting on {len(x_train)} states, {steps} steps")
    for step in range(1, steps + 1):
        batch = th.randint(0, len(inputs), (batch_size,), generator=generator)
        values = critic_values[batch] + correction(inputs[batch])
        # the loss in units of the residual's spread keeps one learning rate right for every env
        loss = ((values - returns[batch]) ** 2).mean() / correction.scale**2
        if rank_weight > 0.0:
            loss = loss + rank_weight * pairwise_rank_loss(values, returns[batch], temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % eval_every == 0 or step == steps:
            score = validation_spearman()
            if score > best_score:
                best_score, best_step, best_state = score, step, copy.deepcopy(correction.state_dict())
        if step % report_every == 0:
            logger.info(
                f"oracle {name}: value correction: step {step}/{steps}, best validation Spearman "
                f"{best_score:.3f} (plain critic {critic_score:.3f})"
            )
    correction.load_state_dict(best_state)
    correction.eval()
    report = CorrectionReport(
        episodes=episodes,
        validation_episodes=validation_episodes,
        train_states=len(x_train),
        steps=steps,
        best_step=best_step,
        validation_spearman_critic=critic_score,
        validation_spearman_corrected=best_score,
        min_gain=min_gain,
        accepted=best_score >= critic_score + min_gain,
    )
    return correction, report
