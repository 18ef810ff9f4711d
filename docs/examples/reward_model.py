"""Reusing a learned reward: train SB3's SAC on the reward model of an rm_ppo run.

An ``rm_ppo`` (or ``heron``) run saves its reward model in the run directory (``reward_model.pt``: weights
only, loaded with ``torch.load(weights_only=True)``; ``reward_model.json``: architecture, inputs, spaces
and normalisation). :func:`prefrl.load_reward_model` puts it back on any VecEnv as a wrapper that replaces
the env reward by the learned one, so any SB3 algorithm can optimise it. Run it with
``python docs/examples/reward_model.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from stable_baselines3 import SAC

import prefrl
from prefrl.envs import make_vec_env
from prefrl.experiment import run_experiment


def main(out: str | Path | None = None) -> float:
    """Learn a reward with rm_ppo, train SAC on it for 300 steps; return learned-vs-true correlation."""
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="prefrl-example-"))
    run_dir = run_experiment(
        env="pendulum",
        agent="rm_ppo",
        rater="partial_return",
        seed=0,
        steps=1024,
        queries=60,
        out=out / "rm_ppo",
        overrides={"n_envs": 1, "ppo": {"n_steps": 512, "batch_size": 64, "n_epochs": 2}},
        eval_freq=1024,
        n_eval_episodes=1,
    )

    # wrap the RAW env: observation normalisation (VecNormalize) would go above the wrapper
    venv = prefrl.load_reward_model(run_dir, make_vec_env("pendulum", n_envs=1, seed=1))
    model = SAC(
        "MlpPolicy", venv, learning_starts=100, batch_size=64, policy_kwargs={"net_arch": [64, 64]}, seed=0
    )
    model.learn(300)

    # the wrapper keeps the true reward in info: compare the two along one episode of the SAC policy
    learned, true = [], []
    obs = venv.reset()
    for _ in range(200):
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, _, infos = venv.step(action)
        learned.append(float(reward[0]))
        true.append(float(infos[0]["true_reward"]))
    corr = float(np.corrcoef(learned, true)[0, 1])
    print(f"learned vs true reward along a SAC episode: Pearson {corr:.2f}")
    venv.close()
    return corr


if __name__ == "__main__":
    main()
