"""How far an expert's discounted return is a function of its state at all: the ceiling of V's Spearman.

``value_quality`` ranks ``V*`` against the Monte-Carlo return of held-out expert states. In a chaotic env
(HalfCheetah, Ant) that return is partly unpredictable: re-running the expert from the *same* state,
rounded to float32 (the precision a critic reads it at), gives another return. This script measures it::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/return_reproducibility.py [ENV ...]   # default: 4 envs

For ``states`` states sampled from the 10 held-out episodes of ``value_quality`` (same reset seeds), it
re-runs the expert's mean action from ``copies`` copies of each state: the first rounded to float32, the
others with a relative perturbation of 1e-7, each for the ``tail`` steps its return sums (as in
``value_quality``: the same window from every state, past the time limit).
Columns of results/oracles/reproducibility.csv:

* ``spearman_g_rerun``: Spearman of the return with the return of the float32-rounded copy. If returns
  are a smooth function of the state plus independent chaotic noise, this is the share of their rank
  variance that the state determines, and ``sqrt`` of it bounds the Spearman any critic can reach;
* ``spearman_g_mean_copies``: Spearman of the return with the mean over the copies (the predictable part);
* ``spearman_v_g`` / ``spearman_v_mean_copies``: the shipped ``V*`` against either, on the same states;
* ``median_abs_rerun_diff`` and ``return_range``: how far a re-run moves the return, against its spread.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from scipy.stats import spearmanr

from prefrl.analysis import upsert_rows
from prefrl.envs import make_env
from prefrl.oracle import load_oracle
from prefrl.oracle.returns import discounted_returns, return_window
from prefrl.spec_utils import PROJECT_ROOT

DEFAULT_ENVS = ["pendulum", "halfcheetah", "ant", "walker2d"]
EPISODES, SEED, TOLERANCE = 10, 12_345, 0.01  # value_quality's held-out episodes


def _get_state(env) -> np.ndarray:
    u = env.unwrapped
    return (
        np.concatenate([u.data.qpos, u.data.qvel]) if hasattr(u, "data") else np.array(u.state, dtype=float)
    )


def _set_state(env, state: np.ndarray) -> np.ndarray:
    u = env.unwrapped
    if hasattr(u, "data"):
        u.set_state(state[: u.model.nq], state[u.model.nq :])
    else:
        u.state = state
    return u._get_obs()


def measure(env_name: str, states: int = 300, copies: int = 4, seed: int = 0) -> dict[str, object]:
    start = time.perf_counter()
    oracle = load_oracle(env_name)
    spec, gamma = oracle.spec, oracle.gamma
    act = oracle.policy("expert", deterministic=True)
    tail = return_window(gamma, spec.horizon, TOLERANCE)
    records = []  # (state, obs, return, steps its return sums)
    for episode in range(EPISODES):
        env = make_env(spec, seed=SEED + episode, max_episode_steps=spec.horizon + tail)
        obs, _ = env.reset(seed=SEED + episode)
        visited, rewards, done = [], [], False
        while not done:
            visited.append((_get_state(env), obs))
            obs, reward, terminated, truncated, _ = env.step(act(obs[None])[0])
            rewards.append(float(reward))
            done = terminated or truncated
        env.close()
        # value_quality's targets: the same `tail` steps from every state
        returns = discounted_returns(np.asarray(rewards), gamma, window=tail)
        for t in range(min(spec.horizon, len(visited))):
            records.append((*visited[t], returns[t], min(tail, len(rewards) - t)))
    rng = np.random.default_rng(seed)
    picked = [records[i] for i in rng.choice(len(records), size=min(states, len(records)), replace=False)]

    # re-runs, all copies of all states in lockstep with one batched policy call per step
    runs = []
    for copy in range(copies):
        for state, _, _, steps_left in picked:
            if copy == 0:
                perturbed = state.astype(np.float32).astype(np.float64)
            else:
                perturbed = state * (1.0 + 1e-7 * rng.standard_normal(state.shape))
            env = make_env(spec, seed=0, max_episode_steps=10**7)
            env.reset(seed=0)
            runs.append(
                {"env": env, "obs": _set_state(env, perturbed), "ret": 0.0, "disc": 1.0, "left": steps_left}
            )
    live = list(runs)
    while live:
        actions = act(np.stack([run["obs"] for run in live]))
        still = []
        for run, action in zip(live, actions, strict=True):
            run["obs"], reward, terminated, _, _ = run["env"].step(action)
            run["ret"] += run["disc"] * float(reward)
            run["disc"] *= gamma
            run["left"] -= 1
            if not terminated and run["left"] > 0:
                still.append(run)
        live = still
    reruns = np.array([run["ret"] for run in runs]).reshape(copies, len(picked))
    g = np.array([record[2] for record in picked])
    v = oracle.value(np.stack([record[1] for record in picked]))
    mean_copies = reruns.mean(axis=0)
    rerun = float(spearmanr(g, reruns[0]).statistic)
    return {
        "env": env_name,
        "states": len(picked),
        "copies": copies,
        "spearman_g_rerun": rerun,
        "spearman_ceiling": float(np.sqrt(max(rerun, 0.0))),
        "spearman_g_mean_copies": float(spearmanr(g, mean_copies).statistic),
        "spearman_v_g": float(spearmanr(v, g).statistic),
        "spearman_v_mean_copies": float(spearmanr(v, mean_copies).statistic),
        "median_abs_rerun_diff": float(np.median(np.abs(g - reruns[0]))),
        "return_range": float(g.max() - g.min()),
        "value_corrected": oracle.correction is not None,
        "measure_s": time.perf_counter() - start,
    }


def main() -> None:
    envs = sys.argv[1:] or DEFAULT_ENVS
    rows = []
    for env in envs:
        rows.append(measure(env))
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    out = PROJECT_ROOT / "results" / "oracles" / "reproducibility.csv"
    upsert_rows(out, rows)  # measuring some envs again keeps the others' rows
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
