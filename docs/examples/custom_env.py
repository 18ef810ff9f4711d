"""A new environment: a user env spec (my_pendulum.yaml, next to this file) trained on with rm_ppo.

Run it with ``python docs/examples/custom_env.py``; it trains for a few seconds on tiny budgets and prints
where the run went. The same spec works on the command line::

    prefrl run --env docs/examples/my_pendulum.yaml --agent rm_ppo --rater partial_return --seed 0
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from prefrl.envs import load_env_spec
from prefrl.experiment import run_experiment

#: the spec file, found relative to this script so the example runs from any working directory
SPEC_FILE = Path(__file__).resolve().with_name("my_pendulum.yaml")


def main(out: str | Path | None = None) -> Path:
    """Load the spec, train rm_ppo on it for 512 env steps and return the run directory."""
    spec = load_env_spec(SPEC_FILE)  # validated: a typo in the YAML fails here, naming the key
    print(f"{spec.name}: {spec.gym_id} {spec.kwargs}, horizon {spec.horizon}, factors {spec.factor_names}")

    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="prefrl-example-"))
    run_dir = run_experiment(
        env=str(SPEC_FILE),  # a path to a spec file, a spec name, or "gym:<gymnasium id>"
        agent="rm_ppo",
        rater="partial_return",
        seed=0,
        steps=512,  # env steps: 2 PPO rollouts of 256 steps
        queries=30,  # preference labels
        out=out / "my_pendulum_rm_ppo",
        overrides={"ppo": {"n_steps": 256, "batch_size": 64, "n_epochs": 2}},
        eval_freq=256,
        n_eval_episodes=2,
    )
    progress = pd.read_csv(run_dir / "progress.csv")
    # no normalisation anchors in the spec: normalised_score is NaN, the true return is always there
    print(progress[["env_steps", "queries", "true_return_mean", "normalised_score"]].to_string(index=False))
    return run_dir


if __name__ == "__main__":
    print(main())
