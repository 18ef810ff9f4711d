"""Monte-Carlo returns of an oracle's expert: the targets its value function is checked and corrected on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from prefrl.envs import EnvSpec, make_env

if TYPE_CHECKING:
    from prefrl.oracle.loading import Oracle

__all__ = ["discounted_returns", "expert_states_and_returns", "return_window", "weaker_policies"]


def discounted_returns(rewards: np.ndarray, gamma: float, window: int | None = None) -> np.ndarray:
    """``G_t = sum_{k < window} gamma^k r_{t+k}`` for every step of one episode (to its end by default)."""
    returns = np.zeros(len(rewards))
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    if window is not None and window < len(rewards):
        # drop what lies beyond the window: G_t - gamma^window G_{t+window}
        returns[:-window] -= gamma**window * returns[window:].copy()
    return returns


def return_window(gamma: float, horizon: int, tolerance: float = 0.01) -> int:
    """``tail``: the steps every target sums, the fewest with ``gamma ** tail <= tolerance`` (``horizon``
    for ``gamma = 1``)."""
    return int(np.ceil(np.log(tolerance) / np.log(gamma))) if gamma < 1.0 else horizon


Policy = Callable[[np.ndarray], np.ndarray]


def expert_states_and_returns(
    act: Policy,
    spec: EnvSpec,
    gamma: float,
    episodes: int,
    seed: int,
    tolerance: float = 0.01,
    behaviours: Sequence[Policy] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """States of the first ``horizon`` steps of ``episodes`` rollouts and the expert's untruncated returns.

    A critic estimates the return *without* the time limit (SB3 bootstraps at truncations), so each
    episode runs ``horizon + tail`` steps, where ``gamma ** tail <= tolerance``, and only the states of the
    first ``horizon`` steps are kept (a real termination still ends the return). Every kept state's return
    sums the same ``tail`` steps, so it is a function of the state alone and not of when it was visited:
    summed to the rollout's end, Pendulum's equilibrium state (60% of its steps) got returns ordered by
    time, which no value function can rank. The episodes run in lockstep with one batched call per policy
    and step: Swimmer's ``gamma = 0.9999`` needs 46k-step rollouts.

    With ``behaviours`` (weaker policies), episode ``i`` is driven by ``behaviours[i % len]`` up to a
    switch step drawn uniformly from ``[0, horizon)``, then by the expert; only the states from the switch
    on are kept, so their returns are the expert's, from states the expert would not visit by itself
    (the mixed-skill states a ``regret`` rater evaluates ``V*`` on).
    """
    obs_dim = int(np.prod(spec.observation_space.shape))
    if episodes == 0:
        return np.zeros((0, obs_dim)), np.zeros(0)
    tail = return_window(gamma, spec.horizon, tolerance)
    envs = [make_env(spec, seed=seed + i, max_episode_steps=spec.horizon + tail) for i in range(episodes)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    switch = np.zeros(episodes, dtype=int)
    if behaviours:
        switch = np.random.default_rng(seed).integers(0, spec.horizon, size=episodes)
    visited: list[list[np.ndarray]] = [[] for _ in envs]
    rewards: list[list[float]] = [[] for _ in envs]
    live, t = list(range(episodes)), 0
    while live:
        # group the live episodes by the policy that acts now: -1 is the expert
        groups: dict[int, list[int]] = {}
        for i in live:
            groups.setdefault(i % len(behaviours) if t < switch[i] else -1, []).append(i)
        still_live = []
        for policy, members in groups.items():
            actions = (act if policy < 0 else behaviours[policy])(np.stack([obs[i] for i in members]))
            for i, action in zip(members, actions, strict=True):
                if switch[i] <= t < spec.horizon:
                    visited[i].append(obs[i])
                obs[i], reward, terminated, truncated, _ = envs[i].step(action)
                rewards[i].append(float(reward))
                if not (terminated or truncated):
                    still_live.append(i)
        live, t = sorted(still_live), t + 1
    for env in envs:
        env.close()
    states = [np.asarray(v, dtype=np.float64).reshape(len(v), obs_dim) for v in visited]
    returns = [
        discounted_returns(np.asarray(r), gamma, window=tail)[first : first + len(v)]
        for r, v, first in zip(rewards, visited, switch, strict=True)
    ]
    return np.concatenate(states), np.concatenate(returns)


def weaker_policies(oracle: Oracle, seed: int) -> list[Policy]:
    """The oracle's skill levels and a uniform random policy: the behaviours of mixed-skill rollouts."""
    rng = np.random.default_rng(seed)
    low, high = oracle.spec.action_space.low, oracle.spec.action_space.high
    levels = [oracle.policy(name) for name in oracle.checkpoint_names if name != "expert"]
    return [*levels, lambda obs: rng.uniform(low, high, size=(len(obs), *low.shape))]
