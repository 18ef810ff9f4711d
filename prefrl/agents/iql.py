"""IQL: implicit Q-learning (Kostrikov et al., ICLR 2022): losses, critics, and one critic update.

A compact IQL because d3rlpy (2.8.1) pins gymnasium==1.0.0 (and needs gym, h5py, scikit-learn) while prefrl
runs on a newer gymnasium, so it cannot be installed beside our pins.

IQL never queries the policy for out-of-dataset actions. With transitions ``(s, a, r, s', done)``::

    V loss   expectile_tau( min_k Q_target_k(s, a) - V(s) )          (tau > 0.5: an upper expectile)
    Q loss   sum_k ( Q_k(s, a) - [r + gamma (1 - done) V(s')] )^2
    policy   -mean( min(exp(beta * A), max_weight) * log pi(a|s) ),   A = min_k Q_target_k(s, a) - V(s)

the last being advantage-weighted regression (AWR) on the dataset's actions; ``Q_target`` follows ``Q``
by Polyak averaging. The losses are pure functions (:func:`expectile_loss`, :func:`iql_value_loss`,
:func:`td_target`, :func:`iql_q_loss`, :func:`awr_weights`, :func:`awr_policy_loss`);
:class:`IQLCritic` holds the twin Q, its target and V with their optimisers, and
:meth:`IQLCritic.update` runs one V and one Q step in the order of the authors' code (V first; the
advantage and the TD target then use the updated V).

The policy is not here: the offline agents' deterministic ``tanh`` policy
(:class:`~prefrl.agents.offline.DeterministicTanhPolicy`) serves AWR through its fixed-variance Gaussian
log-likelihood ``log pi(a|s) = -||mu(s) - a||^2``, exactly as the CPL authors' P-IQL baseline does (their
actor loss is ``exp_adv * mse(mu(s), a)``); the IQL paper uses a state-dependent Gaussian instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "IQLCritic",
    "TwinQ",
    "ValueNet",
    "awr_policy_loss",
    "awr_weights",
    "expectile_loss",
    "iql_q_loss",
    "iql_value_loss",
    "mlp",
    "polyak_update",
    "td_target",
]


# --------------------------------------------------------------------------------------------------
# Losses (pure functions)
# --------------------------------------------------------------------------------------------------


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Asymmetric squared loss ``mean(|tau - 1(diff < 0)| * diff^2)`` (a scalar).

    Minimising it over a constant ``v`` with ``diff = x - v`` gives the ``tau``-expectile of ``x``:
    ``tau > 0.5`` weighs positive ``diff`` (``v`` below ``x``, an under-estimate) more than negative.

    :param diff: ``target - prediction``, any shape.
    :param tau: expectile in ``(0, 1)``; 0.5 is half the mean squared error.
    """
    if not 0.0 < tau < 1.0:
        raise ValueError(f"the expectile tau must lie in (0, 1), got {tau}")
    weight = torch.abs(tau - (diff < 0).to(diff.dtype))
    return (weight * diff.square()).mean()


def iql_value_loss(q_target_min: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """IQL's value loss: the ``tau``-expectile regression of ``V(s)`` onto ``min_k Q_target_k(s, a)``.

    :param q_target_min: ``[B]`` the target critics' minimum (no gradient flows into it).
    :param v: ``[B]`` ``V(s)``.
    :param tau: expectile in ``(0, 1)`` (IQL: 0.7 on locomotion).
    """
    if q_target_min.shape != v.shape:
        raise ValueError(f"q_target_min and v must have the same shape, got {q_target_min.shape}, {v.shape}")
    return expectile_loss(q_target_min.detach() - v, tau)


def td_target(reward: torch.Tensor, done: torch.Tensor, next_v: torch.Tensor, gamma: float) -> torch.Tensor:
    """The Q target ``r + gamma * (1 - done) * V(s')``, ``[B]``, without gradient.

    :param reward: ``[B]`` rewards.
    :param done: ``[B]`` 1 where the episode ended at this step (no bootstrap), else 0 (bool or float).
    :param next_v: ``[B]`` ``V(s')``.
    :param gamma: discount in ``[0, 1]``.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    not_done = 1.0 - done.to(reward.dtype)
    return (reward + gamma * not_done * next_v).detach()


def iql_q_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Twin-critic regression ``mean((q1 - target)^2) + mean((q2 - target)^2)`` (the target detached).

    :param q1: ``[B]`` first critic.
    :param q2: ``[B]`` second critic.
    :param target: ``[B]`` :func:`td_target`.
    """
    if not q1.shape == q2.shape == target.shape:
        raise ValueError(
            f"q1, q2 and target must have the same shape, got {q1.shape}, {q2.shape}, {target.shape}"
        )
    target = target.detach()
    return (q1 - target).square().mean() + (q2 - target).square().mean()


def awr_weights(advantage: torch.Tensor, beta: float, max_weight: float = 100.0) -> torch.Tensor:
    """``min(exp(beta * A), max_weight)``, detached (computed as ``exp(min(beta A, log max_weight))`` so a
    large advantage never overflows).

    :param advantage: ``[B]`` advantages.
    :param beta: inverse temperature ``> 0`` (IQL: 3.0 on locomotion; the CPL code's ``beta`` is its
        inverse, 0.3333).
    :param max_weight: the clip (IQL and CPL code: 100).
    """
    if not beta > 0.0 or not max_weight > 0.0:
        raise ValueError(f"beta and max_weight must be > 0, got {beta}, {max_weight}")
    scaled = (beta * advantage.detach()).clamp(max=math.log(max_weight))
    return torch.exp(scaled)


def awr_policy_loss(
    log_prob: torch.Tensor, advantage: torch.Tensor, beta: float, max_weight: float = 100.0
) -> torch.Tensor:
    """Advantage-weighted regression ``-mean(awr_weights(A) * log pi(a|s))`` (a scalar).

    :param log_prob: ``[B]`` ``log pi(a|s)`` of the dataset actions (gradients flow into the policy).
    :param advantage: ``[B]`` advantages (detached here: the critics are not trained by this loss).
    :param beta: inverse temperature ``> 0``.
    :param max_weight: clip of the weights.
    """
    if log_prob.shape != advantage.shape:
        raise ValueError(
            f"log_prob and advantage must have the same shape, got {log_prob.shape}, {advantage.shape}"
        )
    return -(awr_weights(advantage, beta, max_weight) * log_prob).mean()


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


def mlp(
    in_dim: int, net_arch: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """``Linear -> activation`` per hidden width, then a linear output layer (PyTorch's default init)."""
    layers: list[nn.Module] = []
    last = int(in_dim)
    for width in net_arch:
        layers += [nn.Linear(last, int(width)), activation()]
        last = int(width)
    layers.append(nn.Linear(last, int(out_dim)))
    return nn.Sequential(*layers)


class _StandardisedObs(nn.Module):
    """Holds fixed observation statistics (buffers, saved with the weights) and standardises with them."""

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def set_obs_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise observations with ``(obs - mean) / std`` from now on (std floored at 1e-6)."""
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-6))

    def standardise(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std


class TwinQ(_StandardisedObs):
    """Two independent critics ``Q_k(s, a)``: ``[B, obs], [B, act] -> [2, B]``.

    :param obs_dim: observation size.
    :param act_dim: action size (actions rescaled to ``[-1, 1]``).
    :param net_arch: hidden layer sizes of each critic.
    :param activation: hidden activation class.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        net_arch: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(obs_dim)
        self.critics = nn.ModuleList([mlp(obs_dim + act_dim, net_arch, 1, activation) for _ in range(2)])

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.standardise(obs), act], dim=-1)
        return torch.stack([critic(x).squeeze(-1) for critic in self.critics])


class ValueNet(_StandardisedObs):
    """The state value ``V(s)``: ``[B, obs] -> [B]``.

    :param obs_dim: observation size.
    :param net_arch: hidden layer sizes.
    :param activation: hidden activation class.
    """

    def __init__(
        self, obs_dim: int, net_arch: Sequence[int] = (256, 256), activation: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__(obs_dim)
        self.net = mlp(obs_dim, net_arch, 1, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardise(obs)).squeeze(-1)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, polyak: float) -> None:
    """``target <- polyak * source + (1 - polyak) * target``, parameter by parameter (buffers copied)."""
    if not 0.0 < polyak <= 1.0:
        raise ValueError(f"polyak must lie in (0, 1], got {polyak}")
    for tgt, src in zip(target.parameters(), source.parameters(), strict=True):
        tgt.lerp_(src, polyak)
    for tgt, src in zip(target.buffers(), source.buffers(), strict=True):
        tgt.copy_(src)


# --------------------------------------------------------------------------------------------------
# The critic update
# --------------------------------------------------------------------------------------------------


class IQLCritic(nn.Module):
    """Twin Q, its Polyak target and V, with their Adam optimisers; :meth:`update` is one IQL critic step.

    :param obs_dim: observation size.
    :param act_dim: action size (rescaled to ``[-1, 1]``).
    :param net_arch: hidden sizes of every critic network.
    :param activation: hidden activation class.
    :param expectile: ``tau`` of the value loss.
    :param gamma: discount.
    :param polyak: target update rate.
    :param q_learning_rate: Adam learning rate of the twin Q.
    :param v_learning_rate: Adam learning rate of V.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        net_arch: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.ReLU,
        expectile: float = 0.7,
        gamma: float = 0.99,
        polyak: float = 0.005,
        q_learning_rate: float = 3e-4,
        v_learning_rate: float = 3e-4,
    ) -> None:
        super().__init__()
        self.q = TwinQ(obs_dim, act_dim, net_arch, activation)
        self.q_target = TwinQ(obs_dim, act_dim, net_arch, activation)
        self.q_target.load_state_dict(self.q.state_dict())
        self.q_target.requires_grad_(False)
        self.v = ValueNet(obs_dim, net_arch, activation)
        self.expectile, self.gamma, self.polyak = expectile, gamma, polyak
        self.q_optimizer = torch.optim.Adam(self.q.parameters(), lr=q_learning_rate)
        self.v_optimizer = torch.optim.Adam(self.v.parameters(), lr=v_learning_rate)

    def set_obs_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise the observations of every critic network with ``mean`` and ``std``."""
        for net in (self.q, self.q_target, self.v):
            net.set_obs_normalisation(mean, std)

    def update(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        done: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One V step, one Q step and a target update on a minibatch of transitions.

        :param obs: ``[B, obs_dim]``; :param act: ``[B, act_dim]`` in ``[-1, 1]``; :param reward: ``[B]``;
            :param next_obs: ``[B, obs_dim]``; :param done: ``[B]`` (1: no bootstrap).
        :returns: the advantages ``min_k Q_target_k(s, a) - V(s)`` ``[B]`` (detached, after the V step)
            for the policy's AWR loss, and scalars to log (``q_loss``, ``v_loss``, ``q_mean``, ``v_mean``,
            ``advantage_mean``).
        """
        with torch.no_grad():
            q_target_min = self.q_target(obs, act).min(dim=0).values
        v_loss = iql_value_loss(q_target_min, self.v(obs), self.expectile)
        self.v_optimizer.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_optimizer.step()

        with torch.no_grad():
            v, next_v = self.v(torch.cat([obs, next_obs])).chunk(2)
            advantage = q_target_min - v
            target = td_target(reward, done, next_v, self.gamma)
        q1, q2 = self.q(obs, act)
        q_loss = iql_q_loss(q1, q2, target)
        self.q_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_optimizer.step()
        polyak_update(self.q_target, self.q, self.polyak)
        return advantage, {
            "q_loss": float(q_loss.detach()),
            "v_loss": float(v_loss.detach()),
            "q_mean": float(q1.detach().mean()),
            "v_mean": float(v.mean()),
            "advantage_mean": float(advantage.mean()),
        }
