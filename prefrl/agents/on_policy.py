"""The SB3-PPO template every PPO-based agent (ppo, rm_ppo, heron, spo) builds on.

:class:`PPOAgent` owns the SB3 training loop. Subclasses add their idea through small hooks instead of
re-owning the loop:

* :meth:`PPOAgent.wrap_env` - wrap the training VecEnv (rm_ppo/heron substitute a learned reward here);
* :meth:`PPOAgent.rollout_buffer_class` / :meth:`PPOAgent.rollout_buffer_kwargs` - a custom rollout
  buffer (spo rewrites rewards in the buffer before advantages are computed);
* :meth:`PPOAgent.extra_callbacks` - SB3 callbacks run before the progress callback (rm_ppo refits its
  reward model at rollout end).

:class:`ProgressCallback` adapts the :class:`~prefrl.evaluation.ProgressHook` to SB3's callback API.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from prefrl.agents.base import Agent, PredictFn, Schema
from prefrl.envs import make_vec_env
from prefrl.errors import SpecError
from prefrl.evaluation import ProgressHook
from prefrl.networks import sb3_policy_kwargs
from prefrl.run_dir import load_run_env_spec

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.raters.base import Rater

__all__ = [
    "PPO_KEYS",
    "PPOAgent",
    "ProgressCallback",
    "linear_schedule",
    "parse_schedule",
]

# SB3 PPO constructor arguments owned by PPOAgent (set from the run, the hooks or policy_kwargs)
_PPO_RESERVED = {
    "self",
    "policy",
    "env",
    "seed",
    "device",
    "verbose",
    "tensorboard_log",
    "policy_kwargs",
    "rollout_buffer_class",
    "rollout_buffer_kwargs",
    "_init_setup_model",
}
PPO_KEYS: tuple[str, ...] = tuple(
    p for p in inspect.signature(PPO.__init__).parameters if p not in _PPO_RESERVED
)


def linear_schedule(start: float, end: float = 0.0) -> Callable[[float], float]:
    """SB3 schedule going linearly from ``start`` (progress_remaining 1) to ``end`` (progress_remaining 0)."""

    def schedule(progress_remaining: float) -> float:
        return end + progress_remaining * (start - end)

    return schedule


def parse_schedule(value: Any, where: str) -> float | Callable[[float], float]:
    """A float, or an rl-zoo-style string ``"lin_<start>"`` / ``"lin_<start>_<end>"`` (linear decay)."""
    if isinstance(value, str):
        try:  # PyYAML reads "3e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
        parts = value.split("_")
        try:
            if parts[0] != "lin" or len(parts) not in (2, 3):
                raise ValueError
            return linear_schedule(*(float(p) for p in parts[1:]))
        except ValueError:
            raise SpecError(
                f"{where}: expected a number, 'lin_<start>' or 'lin_<start>_<end>', got {value!r}"
            ) from None
    return float(value)


#: SB3 ``custom_objects`` that replace PPO's pickled training-only attributes when a policy is loaded to act
_ACT_ONLY: dict[str, Any] = {
    "learning_rate": 0.0,
    "lr_schedule": linear_schedule(0.0),
    "clip_range": linear_schedule(0.0),
    "rollout_buffer_class": RolloutBuffer,
    "rollout_buffer_kwargs": {},
}


class PPOAgent(Agent):
    """SB3 PPO on the training VecEnv, with hooks for preference-based variants.

    Config keys (beyond the common ones): ``ppo`` (SB3 PPO constructor kwargs; ``learning_rate`` and
    ``clip_range`` also accept ``"lin_<start>[_<end>]"``), ``normalize`` (``false``, ``true`` or
    VecNormalize kwargs: observation/reward normalisation, statistics reused by :meth:`predict`),
    ``vec_env`` (``"dummy"`` or ``"subproc"``).

    The training env stack is ``make_vec_env -> wrap_env -> VecNormalize`` (the normaliser is outermost so
    a learned reward sees raw observations).
    """

    name = "ppo_template"
    config_keys: ClassVar[Schema] = {"ppo": PPO_KEYS, "normalize": None, "vec_env": None}

    @classmethod
    def config_schema(cls) -> Schema:
        # subclasses only list their own keys in config_keys; the PPO ones are always allowed
        return {**super().config_schema(), **PPOAgent.config_keys, **cls.config_keys}

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__(env_spec, config, rater, seed, device)
        set_random_seed(seed)
        self.venv: VecEnv = self._build_train_env()
        self.model: PPO = self._build_model()

    # ---- hooks for subclasses -------------------------------------------------------------------
    def wrap_env(self, venv: VecEnv) -> VecEnv:
        """Wrap the training VecEnv (before observation/reward normalisation). Identity by default."""
        return venv

    def rollout_buffer_class(self) -> type[RolloutBuffer] | None:
        """Rollout buffer class for SB3 PPO; ``None`` = SB3's default :class:`RolloutBuffer`."""
        return None

    def rollout_buffer_kwargs(self) -> dict[str, Any] | None:
        """Extra keyword arguments for the rollout buffer."""
        return None

    def extra_callbacks(self) -> list[BaseCallback]:
        """SB3 callbacks run before the progress callback; called at the start of every :meth:`learn`."""
        return []

    # ---- construction ---------------------------------------------------------------------------
    def _build_train_env(self) -> VecEnv:
        vec_env_name = self.config.get("vec_env", "dummy")
        vec_env_classes = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
        if vec_env_name not in vec_env_classes:
            raise SpecError(f"vec_env: expected 'dummy' or 'subproc', got {vec_env_name!r}")
        venv = make_vec_env(
            self.env_spec,
            n_envs=int(self.config["n_envs"]),
            seed=self.seed,
            vec_env_cls=vec_env_classes[vec_env_name],
        )
        venv = self.wrap_env(venv)
        normalize = self.config.get("normalize", False)
        if normalize:
            norm_kwargs = dict(normalize) if isinstance(normalize, Mapping) else {}
            # normalised returns use the PPO discount unless the config says otherwise
            norm_kwargs.setdefault("gamma", float(self.config.get("ppo", {}).get("gamma", 0.99)))
            venv = VecNormalize(venv, **norm_kwargs)
        return venv

    def _build_model(self) -> PPO:
        ppo_kwargs = dict(self.config.get("ppo", {}))
        for key in ("learning_rate", "clip_range", "clip_range_vf"):
            if ppo_kwargs.get(key) is not None:
                ppo_kwargs[key] = parse_schedule(ppo_kwargs[key], f"ppo.{key}")
        return PPO(
            "MlpPolicy",
            self.venv,
            policy_kwargs=sb3_policy_kwargs(self.config.get("policy_kwargs", {})),
            rollout_buffer_class=self.rollout_buffer_class(),
            rollout_buffer_kwargs=self.rollout_buffer_kwargs(),
            seed=self.seed,
            device=self.device,
            verbose=0,
            **ppo_kwargs,
        )

    # ---- Agent API --------------------------------------------------------------------------------
    def learn(self, total_steps: int, query_budget: int, callback: ProgressHook | None = None) -> None:
        self.total_steps = int(total_steps)
        self.query_budget = int(query_budget)
        callbacks = list(self.extra_callbacks())
        if callback is not None:
            callback.attach_sb3_logger(self.model)
            callbacks.append(ProgressCallback(callback, self))
        self.model.learn(self.total_steps, callback=CallbackList(callbacks), progress_bar=self.progress_bar)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        if isinstance(self.venv, VecNormalize):
            # training statistics, never fresh ones: evaluation must see what the policy was trained on
            obs = self.venv.normalize_obs(obs)
        action, _ = self.model.predict(obs, deterministic=deterministic)
        return action

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.model.save(path)
        if isinstance(self.venv, VecNormalize):
            self.venv.save(path.with_name("vecnormalize.pkl"))

    @classmethod
    def load_policy(cls, run_dir: str | Path) -> PredictFn:
        """The saved SB3 policy (``policy.zip``), normalising observations as ``vecnormalize.pkl`` says."""
        run_dir = Path(run_dir)
        spec = load_run_env_spec(run_dir)
        # training-only objects are not restored: acting needs the policy weights alone, and pickled
        # schedules or buffer classes would break when prefrl's modules move
        model = PPO.load(run_dir / "policy.zip", device="cpu", custom_objects=_ACT_ONLY)
        normalize = None
        if (run_dir / "vecnormalize.pkl").is_file():
            normalize = VecNormalize.load(str(run_dir / "vecnormalize.pkl"), make_vec_env(spec, n_envs=1))
            normalize.training = False

        def predict(obs: np.ndarray) -> np.ndarray:
            if normalize is not None:
                obs = normalize.normalize_obs(obs)
            action, _ = model.predict(obs, deterministic=True)
            return action

        return predict

    def close(self) -> None:
        self.venv.close()


class ProgressCallback(BaseCallback):
    """SB3 callback driving a :class:`ProgressHook`.

    Each row also gets the latest scalars recorded on the SB3 logger (``model.logger.record``), except
    ``time/``: SB3's ``train/`` losses and whatever an agent records during a rollout (e.g. ``spo/...``).

    Evaluations happen at step 0, at the first rollout boundary after every ``eval_freq`` env steps
    (counted over all parallel envs) and after the final update. Evaluating at a rollout *start* (right
    after a PPO update) rather than mid-rollout means the row at ``env_steps = k`` scores the policy
    trained on exactly ``k`` env steps, and the last row scores the final policy.
    """

    def __init__(self, hook: ProgressHook, agent: Agent) -> None:
        super().__init__()
        self.hook = hook
        self.agent = agent
        self._latest: dict[str, float] = {}

    def _snapshot(self) -> dict[str, float]:
        # SB3 clears the logger at every dump (right after each rollout, before the update): values
        # recorded during a rollout are caught at rollout end, train/ values at the next rollout start
        for key, value in self.model.logger.name_to_value.items():
            if not key.startswith("time/") and isinstance(value, int | float | np.number):
                self._latest[key] = float(value)
        return dict(self._latest)

    def _on_training_start(self) -> None:
        self.hook.maybe_eval(self.num_timesteps, self.agent)

    def _on_rollout_start(self) -> None:
        if self.hook.due(self.num_timesteps):
            self.hook.on_eval(self.num_timesteps, self.agent, self._snapshot())

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._snapshot()

    def _on_training_end(self) -> None:
        self.hook.on_end(self.num_timesteps, self.agent, self._snapshot())
