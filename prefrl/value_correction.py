"""Monte-Carlo correction of an oracle's value function.

An off-policy critic is trained by bootstrapping on a replay buffer of many past policies, with an entropy
bonus (SAC) or on normalised rewards (PPO), so it ranks the final expert's own states only roughly (Walker2d:
Spearman 0.73 against their Monte-Carlo discounted returns). The correction keeps the critic and adds a small
residual network fitted to what the critic gets wrong on the expert's own rollouts::

    V*(s) = V_critic(s) + delta(s),    Q*(s, a) = Q_critic(s, a) + delta(s)

``delta`` is trained by regression on ``G_t - V_critic(s_t)`` over the states of ``episodes`` rollouts of
the expert's mean action, with ``G_t`` the *untruncated* discounted return (as in
:func:`prefrl.oracle.value_quality`). Shifting ``Q`` by the same ``delta(s)`` leaves the critic's advantages
``Q - V`` (the ``regret`` rater's ``form=advantage``) unchanged. The last layer starts at zero, so training
starts from the plain critic; the weights with the best Spearman correlation on separate validation
rollouts are kept, and the correction is only accepted when that beats the plain critic. Training,
validation and the held-out states of ``value_quality`` come from disjoint reset seeds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch as th
from scipy.stats import spearmanr
from torch import nn

from prefrl.envs import EnvSpec, make_env

if TYPE_CHECKING:
    from prefrl.oracle import Oracle

#: reset seeds of the correction's training and validation rollouts (value_quality holds out 12_345 + i)
TRAIN_SEED = 2_000_000
VALIDATION_SEED = 3_000_000


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = sum_k gamma^k r_{t+k}`` for every step of one episode."""
    returns = np.zeros(len(rewards))
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def expert_states_and_returns(
    act: Callable[[np.ndarray], np.ndarray],
    spec: EnvSpec,
    gamma: float,
    episodes: int,
    seed: int,
    tolerance: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """States of the first ``horizon`` steps of ``episodes`` rollouts and their untruncated returns.

    A critic estimates the return *without* the time limit (SB3 bootstraps at truncations), so each
    episode runs ``horizon + tail`` steps, where ``gamma ** tail <= tolerance``, and only the states of the
    first ``horizon`` steps are kept (a real termination still ends the return). The episodes run in
    lockstep with one batched ``act`` call per step: Swimmer's ``gamma = 0.9999`` needs 46k-step rollouts.
    """
    tail = int(np.ceil(np.log(tolerance) / np.log(gamma))) if gamma < 1.0 else spec.horizon
    envs = [make_env(spec, seed=seed + i, max_episode_steps=spec.horizon + tail) for i in range(episodes)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    visited: list[list[np.ndarray]] = [[] for _ in envs]
    rewards: list[list[float]] = [[] for _ in envs]
    live = list(range(episodes))
    while live:
        actions = act(np.stack([obs[i] for i in live]))
        still_live = []
        for i, action in zip(live, actions, strict=True):
            if len(visited[i]) < spec.horizon:
                visited[i].append(obs[i])
            obs[i], reward, terminated, truncated, _ = envs[i].step(action)
            rewards[i].append(float(reward))
            if not (terminated or truncated):
                still_live.append(i)
        live = still_live
    for env in envs:
        env.close()
    states = np.concatenate([np.asarray(v) for v in visited])
    returns = np.concatenate(
        [discounted_returns(np.asarray(r), gamma)[: len(v)] for r, v in zip(rewards, visited, strict=True)]
    )
    return states, returns


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
    seed: int = 0,
) -> tuple[ValueCorrection, CorrectionReport]:
    """Fit ``delta`` on the expert's own rollouts; see the module docstring.

    :param oracle: the expert; its *uncorrected* critic is the base (``oracle.value(obs, corrected=False)``).
    :param episodes: training rollouts of the expert's mean action (reset seeds ``TRAIN_SEED + i``).
    :param validation_episodes: rollouts that pick the best weights (reset seeds ``VALIDATION_SEED + i``).
    :param steps: Adam steps on minibatches of ``batch_size`` states (cosine-decayed learning rate).
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
    act = oracle.policy("expert", deterministic=True)
    x_train, g_train = expert_states_and_returns(act, oracle.spec, oracle.gamma, episodes, TRAIN_SEED)
    x_val, g_val = expert_states_and_returns(
        act, oracle.spec, oracle.gamma, validation_episodes, VALIDATION_SEED
    )
    v_train = oracle.value(x_train, corrected=False)
    v_val = oracle.value(x_val, corrected=False)

    th.manual_seed(seed)
    correction = ValueCorrection(x_train.shape[1], hidden)
    residual = g_train - v_train
    correction.obs_mean.copy_(th.as_tensor(x_train.mean(axis=0), dtype=th.float32))
    correction.obs_std.copy_(th.as_tensor(x_train.std(axis=0) + 1e-6, dtype=th.float32))
    correction.scale.fill_(float(residual.std() + 1e-8))
    inputs = th.as_tensor(x_train, dtype=th.float32)
    targets = th.as_tensor(residual, dtype=th.float32)

    def validation_spearman() -> float:
        return float(spearmanr(v_val + correction.predict(x_val), g_val).statistic)

    best_score, best_step, best_state = validation_spearman(), 0, copy.deepcopy(correction.state_dict())
    critic_score = best_score
    optimizer = th.optim.Adam(correction.net.parameters(), lr=learning_rate)
    schedule = th.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = th.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        batch = th.randint(0, len(inputs), (batch_size,), generator=generator)
        # the loss in units of the residual's spread keeps one learning rate right for every env
        loss = ((correction(inputs[batch]) - targets[batch]) ** 2).mean() / correction.scale**2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % eval_every == 0 or step == steps:
            score = validation_spearman()
            if score > best_score:
                best_score, best_step, best_state = score, step, copy.deepcopy(correction.state_dict())
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
