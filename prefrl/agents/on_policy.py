"""The SB3-PPO template every PPO-based agent (ppo, rm_ppo, heron, spo) builds on.

:class:`PPOAgent` owns the SB3 training loop. Subclasses add their idea through small hooks instead of
re-owning the loop:

* :meth:`PPOAgent.wrap_env` - wrap the training VecEnv (rm_ppo/heron substitute a learned reward here);
* :meth:`PPOAgent.rollout_buffer_class` / :meth:`PPOAgent.rollout_buffer_kwargs` - a custom rollout
  buffer (spo rewrites rewards in the buffer before advantages are computed);
* :meth:`PPOAgent.extra_callbacks` - SB3 callbacks run before the progress callback (rm_ppo refits its
  reward model at rollout end).

:class:`ProgressCallback` adapts the :class:`~prefrl.evaluation.ProgressHook` to SB3's callback API.

**Saved policy.** :meth:`PPOAgent.save` writes SB3's ``policy.zip`` (an export for SB3 users:
``PPO.load`` reads it) and, beside it, what prefrl itself reads back without unpickling anything:
``policy.pt`` (the policy's state dict, read with ``torch.load(weights_only=True)``), ``policy.json``
(the spaces, ``use_sde`` and ``policy_kwargs`` that rebuild the network) and ``vecnormalize.json`` (the
observation statistics of ``normalize``). SB3's own loaders unpickle entries of ``policy.zip`` and of a
``vecnormalize.pkl`` (what runs wrote before), which can run code from a crafted file:
:meth:`PPOAgent.load_policy` uses them only for such older runs and only with ``trust=True``.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize
from stable_baselines3.sac.policies import SACPolicy

from prefrl.agents.base import Agent, PredictFn, Schema
from prefrl.envs import make_vec_env
from prefrl.errors import RunDirError, SpecError
from prefrl.evaluation import ProgressHook
from prefrl.networks import ACTIVATIONS, sb3_policy_kwargs
from prefrl.run_dir import load_run_env_spec

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.raters.base import Rater

__all__ = [
    "LEGACY_NORMALIZATION_FILE",
    "NORMALIZATION_FILE",
    "POLICY_DESCRIPTION_FILE",
    "POLICY_FORMAT",
    "POLICY_WEIGHTS_FILE",
    "PPO_KEYS",
    "PPOAgent",
    "ProgressCallback",
    "linear_schedule",
    "parse_schedule",
]

logger = logging.getLogger(__name__)

#: the policy's state dict (``torch.load(weights_only=True)``)
POLICY_WEIGHTS_FILE = "policy.pt"
#: what rebuilds the policy network (JSON): spaces, ``use_sde``, ``policy_kwargs``
POLICY_DESCRIPTION_FILE = "policy.json"
#: VecNormalize's observation and return statistics and settings (JSON)
NORMALIZATION_FILE = "vecnormalize.json"
#: SB3's pickled VecNormalize, written by runs before the safe files (read with ``trust=True`` only)
LEGACY_NORMALIZATION_FILE = "vecnormalize.pkl"
#: version of ``policy.json`` / ``vecnormalize.json``
POLICY_FORMAT = 1

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
        """SB3's ``policy.zip`` at ``path`` (for SB3 users) and, beside it, the files prefrl reads back
        without unpickling: ``policy.pt``, ``policy.json`` and, with ``normalize``, ``vecnormalize.json``."""
        _save_policy(self.model, self.venv, Path(path))

    @classmethod
    def load_policy(cls, run_dir: str | Path, trust: bool = False) -> PredictFn:
        """The saved deterministic policy, normalising observations with the saved statistics.

        Reads ``policy.pt`` (``torch.load(weights_only=True)``), ``policy.json`` and ``vecnormalize.json``:
        nothing from the run directory can run code. A run saved before these files existed has only
        SB3's ``policy.zip`` and ``vecnormalize.pkl``, whose loaders unpickle (a crafted file runs code).

        :param trust: read such an older run through SB3's loaders anyway (only for folders you trust).
        :raises RunDirError: missing, damaged or inconsistent files, or an older run without ``trust``
        """
        run_dir = Path(run_dir)
        if (run_dir / POLICY_WEIGHTS_FILE).is_file() or (run_dir / POLICY_DESCRIPTION_FILE).is_file():
            return _load_safe_policy(run_dir)
        if not trust:
            raise RunDirError(
                f"{run_dir} has no {POLICY_WEIGHTS_FILE}: it was saved before prefrl's safe policy files, "
                f"and its policy.zip / {LEGACY_NORMALIZATION_FILE} can only be read by unpickling, which "
                "can run code from a crafted file; if you trust this folder, load it with --trust "
                "(trust=True)"
            )
        return _load_sb3_policy(run_dir)

    def close(self) -> None:
        self.venv.close()


# ---- the saved policy: safe files and SB3's archive ------------------------------------------------------

#: SB3 policy classes prefrl rebuilds from ``policy.json`` (PPO's and SAC's ``MlpPolicy``)
_POLICY_CLASSES: dict[str, type[BasePolicy]] = {
    "ActorCriticPolicy": ActorCriticPolicy,
    "SACPolicy": SACPolicy,
}
#: ``policy_kwargs`` that ``policy.json`` may hold: plain values, plus the activation by name
_DESCRIBED_KWARGS = (
    "net_arch",
    "activation_fn",
    "ortho_init",
    "log_std_init",
    "full_std",
    "use_expln",
    "squash_output",
    "share_features_extractor",
    "normalize_images",
    "clip_mean",
    "n_critics",
)
#: numeric dtypes a saved space may have
_SPACE_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def _space_description(space: spaces.Space) -> dict[str, Any] | None:
    """A JSON description of a Box / Discrete / MultiDiscrete / MultiBinary space (``None``: other)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    return None


def _space_from_description(data: Any, where: str) -> spaces.Space:
    """The space :func:`_space_description` described; :class:`RunDirError` for anything else."""
    try:
        kind = data["type"]
        if kind == "Box":
            if str(data["dtype"]) not in _SPACE_DTYPES:
                raise ValueError(f"dtype {data['dtype']!r}")
            dtype = np.dtype(str(data["dtype"]))
            shape = tuple(int(n) for n in data["shape"])
            low = np.asarray(data["low"], dtype=np.float64).reshape(shape).astype(dtype)
            high = np.asarray(data["high"], dtype=np.float64).reshape(shape).astype(dtype)
            return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
        if kind == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data["start"]))
        if kind == "MultiDiscrete":
            return spaces.MultiDiscrete(np.asarray(data["nvec"], dtype=np.int64))
        if kind == "MultiBinary":
            return spaces.MultiBinary(data["n"])
        raise ValueError(f"unknown space type {kind!r}")
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{where}: not a valid space description ({e})") from None


def _saved_module(policy: BasePolicy) -> torch.nn.Module:
    """What ``policy.pt`` holds of ``policy``: SAC's actor (its critics never act), else all of it."""
    return policy.actor if isinstance(policy, SACPolicy) else policy


def _save_policy(model: BaseAlgorithm, venv: VecEnv, path: Path) -> None:
    """SB3's archive of ``model`` at ``path`` and, beside it, ``policy.pt`` (:func:`_saved_module`'s
    weights), ``policy.json`` and, when ``venv`` is a VecNormalize, ``vecnormalize.json``."""
    model.save(path)
    directory = path.parent
    normalizer = venv if isinstance(venv, VecNormalize) else None
    description = _policy_description(model, normalizer is not None)
    if normalizer is not None:
        (directory / NORMALIZATION_FILE).write_text(json.dumps(_normalization_state(normalizer), indent=2))
    if description is None:
        logger.warning(
            "%s: this policy's spaces or policy_kwargs have no safe description; only SB3's %s was "
            "written, which prefrl loads with trust=True (--trust) only",
            directory,
            path.name,
        )
        return
    torch.save(_saved_module(model.policy).state_dict(), directory / POLICY_WEIGHTS_FILE)
    (directory / POLICY_DESCRIPTION_FILE).write_text(json.dumps(description, indent=2))


def _policy_description(model: BaseAlgorithm, normalized: bool) -> dict[str, Any] | None:
    """``policy.json``: what rebuilds ``model.policy`` (``None`` if it holds something JSON cannot)."""
    # off-policy algorithms copy use_sde into policy_kwargs; the description records it on its own
    kwargs = {key: value for key, value in model.policy_kwargs.items() if key != "use_sde"}
    if not set(kwargs) <= set(_DESCRIBED_KWARGS) or type(model.policy) not in _POLICY_CLASSES.values():
        return None
    if "activation_fn" in kwargs:
        names = [name for name, module in ACTIVATIONS.items() if module is kwargs["activation_fn"]]
        if not names:
            return None
        kwargs["activation_fn"] = names[0]
    observation_space = _space_description(model.observation_space)
    action_space = _space_description(model.action_space)
    if observation_space is None or action_space is None:
        return None
    description = {
        "format": POLICY_FORMAT,
        "policy_class": type(model.policy).__name__,
        "observation_space": observation_space,
        "action_space": action_space,
        "use_sde": bool(model.use_sde),
        "policy_kwargs": kwargs,
        "normalization": NORMALIZATION_FILE if normalized else None,
    }
    try:
        json.dumps(description)
    except (TypeError, ValueError):
        return None
    return description


def _normalization_state(venv: VecNormalize) -> dict[str, Any]:
    """``vecnormalize.json``: VecNormalize's settings and running statistics (observations: Box only)."""

    def stats(rms: Any) -> dict[str, Any] | None:
        if rms is None or isinstance(rms, dict):
            return None
        return {
            "mean": np.asarray(rms.mean).tolist(),
            "var": np.asarray(rms.var).tolist(),
            "count": float(rms.count),
        }

    return {
        "format": POLICY_FORMAT,
        "norm_obs": bool(venv.norm_obs),
        "norm_reward": bool(venv.norm_reward),
        "clip_obs": float(venv.clip_obs),
        "clip_reward": float(venv.clip_reward),
        "gamma": float(venv.gamma),
        "epsilon": float(venv.epsilon),
        "obs_rms": stats(getattr(venv, "obs_rms", None)),
        "ret_rms": stats(venv.ret_rms),
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); the file is damaged or was edited") from None
    if not isinstance(data, dict) or data.get("format") != POLICY_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise RunDirError(f"{path}: format {found!r}, this prefrl reads format {POLICY_FORMAT}")
    return data


def _observation_normalizer(path: Path, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """VecNormalize's ``normalize_obs`` with the statistics of ``vecnormalize.json`` (the same arithmetic)."""
    data = _read_json(path)
    try:
        if not data["norm_obs"]:
            return lambda obs: obs
        mean = np.asarray(data["obs_rms"]["mean"], dtype=np.float64)
        var = np.asarray(data["obs_rms"]["var"], dtype=np.float64)
        clip, epsilon = float(data["clip_obs"]), float(data["epsilon"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{path}: not a valid normaliser ({type(e).__name__}: {e})") from None
    if mean.shape != shape or var.shape != shape:
        raise RunDirError(f"{path}: statistics of shape {mean.shape}, the policy observes {shape}")

    def normalize(obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - mean) / np.sqrt(var + epsilon), -clip, clip).astype(np.float32)

    return normalize


def _load_safe_policy(run_dir: Path) -> PredictFn:
    """The policy of ``policy.pt`` + ``policy.json`` (+ ``vecnormalize.json``): no unpickling."""
    where = run_dir / POLICY_DESCRIPTION_FILE
    description = _read_json(where)
    try:
        policy_class = _POLICY_CLASSES[description["policy_class"]]
        kwargs = dict(description["policy_kwargs"])
        use_sde = bool(description["use_sde"])
        normalization = description["normalization"]
        observation, action = description["observation_space"], description["action_space"]
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{where}: not a valid policy description (bad or missing {e})") from None
    unknown = sorted(set(kwargs) - set(_DESCRIBED_KWARGS))
    if unknown:
        raise RunDirError(f"{where}: policy_kwargs {unknown} cannot be rebuilt")
    observation_space = _space_from_description(observation, f"{where} observation_space")
    action_space = _space_from_description(action, f"{where} action_space")
    weights = run_dir / POLICY_WEIGHTS_FILE
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{weights} is missing (named by {where})") from None
    except Exception as e:  # any unpickling failure: the file is not a plain tensor dict
        raise RunDirError(f"{weights}: not a readable weights file ({_first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunDirError(f"{weights}: not a state dict of tensors")
    try:
        # the initial weights are overwritten: keep the caller's random stream
        with torch.random.fork_rng(devices=[]):
            policy = policy_class(
                observation_space,
                action_space,
                linear_schedule(0.0),
                use_sde=use_sde,
                **sb3_policy_kwargs(kwargs),
            )
        _saved_module(policy).load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        raise RunDirError(
            f"{weights}: does not fit the policy described in {where} ({_first_line(e)})"
        ) from None
    policy.set_training_mode(False)
    normalize = None
    if normalization is not None:
        if normalization != NORMALIZATION_FILE:
            raise RunDirError(f"{where}: normalization must be {NORMALIZATION_FILE!r} or null")
        normalize = _observation_normalizer(run_dir / NORMALIZATION_FILE, tuple(observation_space.shape))

    return _deterministic(policy, normalize)


def _load_sb3_policy(
    run_dir: Path, algorithm: type[BaseAlgorithm] = PPO, act_only: Mapping[str, Any] = _ACT_ONLY
) -> PredictFn:
    """SB3's own loaders (they unpickle): ``policy.zip`` and ``vecnormalize.pkl`` of an older run.

    :param algorithm: the SB3 class that wrote ``policy.zip``
    :param act_only: its ``custom_objects`` replacing the training-only attributes
    """
    spec = load_run_env_spec(run_dir)
    # training-only objects are not restored: acting needs the policy weights alone, and pickled
    # schedules or buffer classes would break when prefrl's modules move
    model = algorithm.load(run_dir / "policy.zip", device="cpu", custom_objects=dict(act_only))
    normalize: Callable[[np.ndarray], np.ndarray] | None = None
    if (run_dir / LEGACY_NORMALIZATION_FILE).is_file():
        stats = VecNormalize.load(str(run_dir / LEGACY_NORMALIZATION_FILE), make_vec_env(spec, n_envs=1))
        stats.training = False
        normalize = stats.normalize_obs  # type: ignore[assignment]
    elif (run_dir / NORMALIZATION_FILE).is_file():
        normalize = _observation_normalizer(
            run_dir / NORMALIZATION_FILE, tuple(model.observation_space.shape)
        )

    return _deterministic(model, normalize)


def _deterministic(acting: Any, normalize: Callable[[np.ndarray], np.ndarray] | None) -> PredictFn:
    """``obs -> action``: ``acting.predict`` (an SB3 policy or model), deterministic, on normalised obs."""

    def predict(obs: np.ndarray) -> np.ndarray:
        if normalize is not None:
            obs = normalize(obs)
        action, _ = acting.predict(obs, deterministic=True)
        return action

    return predict


def _first_line(error: BaseException) -> str:
    """The first line of an error's text, without terminal colour codes (torch's unpickler adds some)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


class ProgressCallback(BaseCallback):
    """SB3 callback driving a :class:`ProgressHook`.

    Each row also gets the latest scalars recorded on the SB3 logger (``model.logger.record``), except
    ``time/``: SB3's ``train/`` losses and whatever an agent records during a rollout (e.g. ``spo/...``).

    Evaluations happen at step 0, at the first rollout boundary after every ``eval_freq`` env steps
    (counted over all parallel envs) and after the final update. Evaluating at a rollout *start* (right
    after a PPO update, or after SAC's gradient steps for its last ``train_freq`` steps) rather than
    mid-rollout means the row at ``env_steps = k`` scores the policy trained on exactly ``k`` env steps,
    and the last row scores the final policy.
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
