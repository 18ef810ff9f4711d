"""A new agent: hill climbing on a linear policy, steered by nothing but the rater's preferences.

Each iteration perturbs the policy's weights, rolls out the current and the perturbed policy from the
same start states, and asks the rater to compare their segments pairwise; the perturbation is kept when
the rater prefers it on most pairs. No reward ever reaches the agent, and every query counts against the
run's query budget. Registered with ``@prefrl.register_agent``, it runs through ``run_experiment``,
``prefrl run --agent hill_climb`` and sweeps like a built-in agent. Run it with
``python docs/examples/custom_agent.py``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

import prefrl
from prefrl.agents import Agent
from prefrl.agents.base import PredictFn
from prefrl.errors import SpecError
from prefrl.experiment import run_experiment
from prefrl.segments import collect_segments
from prefrl.spec_utils import ConfigSection
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.evaluation import ProgressHook
    from prefrl.raters import Rater


@dataclass(frozen=True)
class HillClimbConfig(ConfigSection):
    """The ``hill_climb:`` config section: its fields are the keys, their defaults the only defaults."""

    #: std of the Gaussian perturbation of the policy's weights
    sigma: float = 0.5
    #: segments per comparison of two policies (one query each)
    segments: int = 4

    def validate(self, where: str) -> None:
        if self.sigma <= 0 or self.segments < 1:
            raise SpecError(f"{where}: need sigma > 0 and segments >= 1, got {self.sigma}, {self.segments}")


def linear_actions(weights: np.ndarray, obs: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``clip([obs, 1] @ weights)``: actions ``[n, act_dim]`` of a linear policy for ``obs [n, obs_dim]``."""
    obs = np.asarray(obs, dtype=np.float64).reshape(len(obs), -1)
    return np.clip(np.hstack([obs, np.ones((len(obs), 1))]) @ weights, low, high)


@prefrl.register_agent
class HillClimbAgent(Agent):
    """Preference-driven hill climbing on a linear policy (an example of a user agent)."""

    name = "hill_climb"
    requires_rater = True
    # typed sections are validated when the config is loaded; no agents/hill_climb.yaml is needed
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {"hill_climb": HillClimbConfig}

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__(env_spec, config, rater, seed, device)
        self.options: HillClimbConfig = self.parse_sections(self.config)["hill_climb"]  # type: ignore[assignment]
        space = env_spec.action_space
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
        obs_dim = int(np.prod(env_spec.observation_space.shape))
        self.weights = np.zeros((obs_dim + 1, int(np.prod(space.shape))))
        self.accepted: list[bool] = []

    def _segments(self, weights: np.ndarray, seed: int) -> SegmentBatch:
        """``segments`` segments of the linear policy ``weights`` from env seed ``seed``."""

        def policy(obs: np.ndarray) -> np.ndarray:
            return linear_actions(weights, obs, self.low, self.high)

        return collect_segments(self.env_spec, policy, self.options.segments, seed=seed)

    def learn(self, total_steps: int, query_budget: int, callback: ProgressHook | None = None) -> None:
        """Climb until the env-step budget (or a positive query budget) is spent."""
        self.total_steps, self.query_budget = int(total_steps), int(query_budget)
        assert self.rater is not None
        per_iteration = 2 * self.options.segments * self.env_spec.segment_length
        env_steps = 0
        if callback is not None:
            callback.maybe_eval(env_steps, self)  # the evaluation at step 0
        while env_steps + per_iteration <= self.total_steps:
            if self.query_budget > 0 and self.num_queries + self.options.segments > self.query_budget:
                break
            candidate = self.weights + self.options.sigma * self.rng.standard_normal(self.weights.shape)
            # both policies start from the same states (same env seed): the comparison is fair
            start = int(self.rng.integers(2**31))
            prefs = self.rater.label_pairs(
                self._segments(candidate, start), self._segments(self.weights, start), self.rng
            )
            won = len(prefs) > 0 and float(prefs.labels.mean()) > 0.5  # y = P(candidate preferred)
            if won:
                self.weights = candidate
            self.accepted.append(won)
            env_steps += per_iteration
            if callback is not None:
                callback.maybe_eval(env_steps, self)
        if callback is not None:
            callback.on_end(env_steps, self)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return linear_actions(self.weights, obs, self.low, self.high)

    def metrics(self) -> dict[str, float]:
        """``accept_rate``: share of the perturbations the rater preferred (a progress.csv column)."""
        return {"accept_rate": float(np.mean(self.accepted)) if self.accepted else float("nan")}

    def save(self, path: str | Path) -> None:
        # plain JSON beside the given path: nothing loaded back from a run directory can execute code
        data = {"weights": self.weights.tolist(), "low": self.low.tolist(), "high": self.high.tolist()}
        Path(path).with_name("policy.json").write_text(json.dumps(data))

    @classmethod
    def load_policy(cls, run_dir: str | Path) -> PredictFn:
        data = json.loads((Path(run_dir) / "policy.json").read_text())
        weights, low, high = (np.asarray(data[key]) for key in ("weights", "low", "high"))
        return lambda obs: linear_actions(weights, obs, low, high)


def main(out: str | Path | None = None) -> Path:
    """Train the hill climber on Pendulum for 4000 env steps with a partial-return rater."""
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="prefrl-example-"))
    run_dir = run_experiment(
        env="pendulum",
        agent="hill_climb",
        rater="partial_return",
        seed=0,
        steps=4000,  # 10 iterations of 2 x 4 segments of 50 steps
        queries=40,
        out=out / "hill_climb",
        overrides={"hill_climb": {"sigma": 0.3}},  # checked against HillClimbConfig
        eval_freq=2000,
        n_eval_episodes=2,
    )
    progress = pd.read_csv(run_dir / "progress.csv")
    print(progress[["env_steps", "queries", "true_return_mean", "normalised_score", "accept_rate"]])
    return run_dir


if __name__ == "__main__":
    print(main())
