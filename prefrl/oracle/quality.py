"""How well an oracle's value function ranks held-out states, and a re-measurement of its checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from scipy.stats import pearsonr, spearmanr

from prefrl.envs import EnvSpec, load_env_spec
from prefrl.evaluation import evaluate_policy
from prefrl.oracle.loading import Oracle, load_oracle
from prefrl.oracle.returns import expert_states_and_returns, weaker_policies

__all__ = ["evaluate_oracle", "value_quality", "value_quality_with_critic"]

#: (states, untruncated Monte-Carlo returns) of one rollout set of the value-quality check
StatesAndReturns = tuple[np.ndarray, np.ndarray]


def _quality_rollouts(
    oracle: Oracle, episodes: int, seed: int, tolerance: float
) -> dict[str, StatesAndReturns]:
    """The held-out states of :func:`value_quality`: the expert's mean action, its stochastic policy and
    mixed-skill starts."""
    spec, gamma, expert = oracle.spec, oracle.gamma, oracle.policy("expert")
    # seeded action noise, and skill levels built on first use (their networks draw initial weights),
    # without touching the caller's random stream
    with th.random.fork_rng(devices=[]):
        rollouts = {
            "deterministic": expert_states_and_returns(expert, spec, gamma, episodes, seed, tolerance)
        }
        th.manual_seed(seed)
        stochastic = oracle.policy("expert", deterministic=False)
        rollouts["stochastic"] = expert_states_and_returns(stochastic, spec, gamma, episodes, seed, tolerance)
        rollouts["mixed"] = expert_states_and_returns(
            expert, spec, gamma, episodes, seed + 50_000, tolerance, behaviours=weaker_policies(oracle, seed)
        )
    return rollouts


def _quality_scores(value: Callable[[np.ndarray], np.ndarray], rollouts: dict[str, StatesAndReturns]) -> dict:
    (x, g), (x_stoch, g_stoch), (x_mixed, g_mixed) = (
        rollouts[k] for k in ("deterministic", "stochastic", "mixed")
    )
    v, v_stoch, v_mixed = value(x), value(x_stoch), value(x_mixed)
    # transient: the lower half of the observed return range, i.e. states clearly short of the steady
    # regime (a median split would put half of the steady states in as soon as they are the majority)
    transient = g < 0.5 * (g.min() + g.max())
    return {
        "spearman": float(spearmanr(v, g).statistic),
        "pearson": float(pearsonr(v, g).statistic),
        "spearman_transient": float(spearmanr(v[transient], g[transient]).statistic),
        "states": len(v),
        "transient_states": int(transient.sum()),
        "spearman_stochastic": float(spearmanr(v_stoch, g_stoch).statistic),
        "pearson_stochastic": float(pearsonr(v_stoch, g_stoch).statistic),
        "spearman_mixed": float(spearmanr(v_mixed, g_mixed).statistic),
        "pearson_mixed": float(pearsonr(v_mixed, g_mixed).statistic),
        "mixed_states": len(v_mixed),
    }


def value_quality(
    oracle: Oracle, episodes: int = 20, seed: int = 12_345, tolerance: float = 0.01, corrected: bool = True
) -> dict[str, float]:
    """How well ``V*`` ranks held-out expert states against their Monte-Carlo discounted return.

    The critic estimates the discounted return *without* the time limit (SB3 bootstraps at
    truncations), so each state's target must not be cut off by the env's horizon either: the expert is
    rolled out for ``horizon + tail`` steps, where ``gamma ** tail <= tolerance``, and the targets are the
    discounted returns over ``tail`` steps from each of the states of the first ``horizon`` steps (a real
    termination still ends the return). Returns Spearman and Pearson correlations over those states, and
    Spearman over the *transient* states (Monte-Carlo return in the lower half of the observed range: the
    expert has not yet reached its steady regime). Once an expert sits in its steady regime (a cheetah at
    full speed), returns differ by less than the critic's error, and on chaotic envs partly by what the
    state does not determine, which drags the all-state Spearman down although ``V`` is accurate
    (Pendulum's equilibrium needed a ranking loss in its correction: :mod:`prefrl.oracle.value_correction`).

    The headline figures roll out the expert's mean action, the policy scored and used as ``V*``'s
    stand-in. ``*_stochastic`` repeat the check on rollouts that sample the expert's own stochastic
    policy: that is the policy the critic was trained to evaluate, so it separates critic error from the
    gap between the stochastic and the deterministic policy. ``*_mixed`` repeat it on mixed-skill states:
    a skill level or a random policy acts up to a random step, then the expert takes over (the states a
    ``regret`` rater evaluates ``V*`` on; targets are the expert's returns from there).
    ``corrected=False`` measures the plain critic of an oracle with a Monte-Carlo value correction.
    """
    rollouts = _quality_rollouts(oracle, episodes, seed, tolerance)
    return _quality_scores(lambda obs: oracle.value(obs, corrected=corrected), rollouts)


def value_quality_with_critic(
    oracle: Oracle, episodes: int = 20, seed: int = 12_345, tolerance: float = 0.01
) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`value_quality` of ``V*`` and of the plain critic, from one set of rollouts (the costly part)."""
    rollouts = _quality_rollouts(oracle, episodes, seed, tolerance)
    corrected = _quality_scores(oracle.value, rollouts)
    plain = _quality_scores(lambda obs: oracle.value(obs, corrected=False), rollouts)
    return corrected, plain


def evaluate_oracle(
    env: str | Path | EnvSpec, episodes: int = 20, seed: int = 0, directory: Path | None = None
) -> dict[str, Any]:
    """Re-measure every checkpoint's return and the value function's Spearman correlation.

    The oracle is the one :func:`~prefrl.oracle.loading.load_oracle` uses (``directory``, else the user
    folder, else the shipped one); the report names its folder and where it was found.
    """
    oracle = load_oracle(load_env_spec(env), directory)
    report: dict[str, Any] = {
        "env": oracle.spec.name,
        "algo": oracle.manifest.algo,
        "directory": str(oracle.directory),
        "source": oracle.source,
    }
    for name in oracle.checkpoint_names:
        mean, std = evaluate_policy(oracle.policy(name), oracle.spec, n_episodes=episodes, seed=seed)
        report[name] = {"mean_return": mean, "std_return": std}
    report["value_quality"] = value_quality(oracle)
    return report
