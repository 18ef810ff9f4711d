"""The Stable-Baselines3 template the PPO and SAC templates share, and the policy files it saves.

:class:`SB3Agent` owns what :class:`~prefrl.agents.on_policy.PPOAgent` and
:class:`~prefrl.agents.off_policy.SACAgent` have in common: seeding, the training env stack
``make_vec_env -> wrap_env -> VecNormalize``, the SB3 training loop with its :class:`ProgressCallback`,
:meth:`~SB3Agent.predict` with the training normaliser, and the saved policy. A template adds its SB3
algorithm (:meth:`SB3Agent._build_model`), its buffer hooks and its checks; the agents built on a template
add their idea through its hooks:

* :meth:`SB3Agent.wrap_env` - wrap the training VecEnv (a learned reward replaces the true one here);
* :meth:`SB3Agent.extra_callbacks` - SB3 callbacks run before the progress callback.

:class:`ProgressCallback` adapts the :class:`~prefrl.evaluation.ProgressHook` to SB3's callback API.

**Saved policy.** :meth:`SB3Agent.save` writes SB3's ``policy.zip`` (an export for SB3 users:
``PPO.load`` / ``SAC.load`` read it) and, beside it, what prefrl itself reads back without unpickling
anything: ``policy.pt`` (the policy's state dict; SAC's actor only, its critics never act; read with
``torch.load(weights_only=True)``), ``policy.json`` (the spaces, ``use_sde`` and ``policy_kwargs`` that
rebuild the network) and ``vecnormalize.json`` (the observation statistics of ``normalize``). SB3's own
loaders unpickle entries of ``policy.zip`` and of a ``vecnormalize.pkl`` (what runs wrote before), which
can run code from a crafted file: :meth:`SB3Agent.load_policy` uses them only for such older runs and only
with ``trust=True``.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize
from stable_baselines3.sac.policies import SACPolicy

from prefrl.agents.base import Agent, PredictFn
from prefrl.envs import make_vec_env
from prefrl.errors import PrefrlError, RunDirError, SpecError
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
    "ProgressCallback",
    "SB3Agent",
    "linear_schedule",
    "parse_schedule",
    "sb3_config_keys",
]

logger = logging.getLogger(__name__)

AlgorithmT = TypeVar("AlgorithmT", bound=BaseAlgorithm)

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


# SB3 constructor arguments every template sets itself (from the run, its hooks or policy_kwargs)
_RESERVED = {
    "self",
    "policy",
    "env",
    "seed",
    "device",
    "verbose",
    "tensorboard_log",
    "policy_kwargs",
    "_init_setup_model",
}


def sb3_config_keys(algorithm: type[BaseAlgorithm], reserved: Iterable[str] = ()) -> tuple[str, ...]:
    """The constructor arguments of the SB3 ``algorithm`` a config section may set, in signature order:
    all but those the template sets itself (the run's, ``policy_kwargs``, and ``reserved``)."""
    owned = _RESERVED | set(reserved)
    return tuple(p for p in inspect.signature(algorithm.__init__).parameters if p not in owned)


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


class SB3Agent(Agent):
    """An SB3 algorithm trained on the training VecEnv: the part the PPO and SAC templates share.

    The training env stack is ``make_vec_env -> wrap_env -> VecNormalize`` (the normaliser is outermost so
    a learned reward sees raw observations; ``normalize`` is ``false``, ``true`` or VecNormalize kwargs,
    and its statistics are reused by :meth:`predict`). ``vec_env`` is ``"dummy"`` or ``"subproc"``.

    A template sets :attr:`sb3_class`, :attr:`act_only` and :attr:`legacy_files` and implements
    :meth:`_build_model`; it may check the config (:meth:`read_config`), the training env
    (:meth:`check_train_env`) and the normaliser's settings (:meth:`vec_normalize_kwargs`).
    """

    name = "sb3_template"
    #: the SB3 algorithm that writes (and, for older runs with ``trust=True``, reads) ``policy.zip``
    sb3_class: ClassVar[type[BaseAlgorithm]]
    #: SB3 ``custom_objects`` replacing its pickled training-only attributes when ``policy.zip`` is loaded
    #: to act
    act_only: ClassVar[Mapping[str, Any]]
    #: what a run without ``policy.pt`` holds that only unpickling reads (the start of the refusal's reason)
    legacy_files: ClassVar[str]

    model: BaseAlgorithm

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__(env_spec, config, rater, seed, device)
        self.read_config()
        set_random_seed(seed)
        self.venv: VecEnv = self._build_train_env()
        self.model = self._build_model()

    # ---- hooks for subclasses -------------------------------------------------------------------
    def wrap_env(self, venv: VecEnv) -> VecEnv:
        """Wrap the training VecEnv (before observation/reward normalisation). Identity by default."""
        return venv

    def extra_callbacks(self) -> list[BaseCallback]:
        """SB3 callbacks run before the progress callback; called at the start of every :meth:`learn`."""
        return []

    # ---- hooks for the templates ----------------------------------------------------------------
    def read_config(self) -> None:
        """Check and read ``self.config`` before the env and the model are built. Nothing by default."""

    def check_train_env(self, venv: VecEnv) -> None:
        """Refuse a training env the algorithm cannot use (closing it first). Accepts any by default."""

    def vec_normalize_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        """VecNormalize's arguments from the ``normalize`` mapping (``{}`` for ``true``); as given by default.

        :raises PrefrlError: settings the algorithm refuses (the training env is closed first)
        """
        return options

    @abstractmethod
    def _build_model(self) -> BaseAlgorithm:
        """The SB3 algorithm on :attr:`venv`, seeded with the run seed (see :meth:`_sb3_model`)."""

    def _sb3_model(self, algorithm: type[AlgorithmT], **kwargs: Any) -> AlgorithmT:
        """``algorithm``'s ``MlpPolicy`` on :attr:`venv` with the config's ``policy_kwargs``, the run's seed
        and device, silent; ``kwargs`` are the template's own arguments."""
        return algorithm(
            "MlpPolicy",
            self.venv,
            policy_kwargs=sb3_policy_kwargs(self.config.get("policy_kwargs", {})),
            seed=self.seed,
            device=self.device,
            verbose=0,
            **kwargs,
        )

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
        self.check_train_env(venv)
        venv = self.wrap_env(venv)
        normalize = self.config.get("normalize", False)
        if normalize:
            options = dict(normalize) if isinstance(normalize, Mapping) else {}
            try:
                norm_kwargs = self.vec_normalize_kwargs(options)
            except PrefrlError:
                venv.close()  # subproc workers must not outlive a refused setting
                raise
            venv = VecNormalize(venv, **norm_kwargs)
        return venv

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
        without unpickling: ``policy.pt`` (SAC: the actor), ``policy.json`` and, with ``normalize``,
        ``vecnormalize.json``."""
        _save_policy(self.model, self.venv, Path(path))

    @classmethod
    def load_policy(cls, run_dir: str | Path, trust: bool = False) -> PredictFn:
        """The saved deterministic policy (SAC: the actor's mean action), normalising observations with the
        saved statistics.

        Reads ``policy.pt`` (``torch.load(weights_only=True)``), ``policy.json`` and ``vecnormalize.json``:
        nothing from the run directory can run code. A run without them (saved before these files existed,
        or its policy had no safe description) has only SB3's ``policy.zip`` (and an older run's
        ``vecnormalize.pkl``), whose loaders unpickle (a crafted file runs code).

        :param trust: read such a run through SB3's loaders anyway (only for folders you trust).
        :raises RunDirError: missing, damaged or inconsistent files, or only SB3's files without ``trust``
        """
        run_dir = Path(run_dir)
        if (run_dir / POLICY_WEIGHTS_FILE).is_file() or (run_dir / POLICY_DESCRIPTION_FILE).is_file():
            return _load_safe_policy(run_dir)
        if not trust:
            raise RunDirError(
                f"{run_dir} has no {POLICY_WEIGHTS_FILE}: {cls.legacy_files} can only be read by unpickling, "
                "which can run code from a crafted file; if you trust this folder, load it with --trust "
                "(trust=True)"
            )
        return _load_sb3_policy(run_dir, cls.sb3_class, cls.act_only)

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


def _load_sb3_policy(run_dir: Path, algorithm: type[BaseAlgorithm], act_only: Mapping[str, Any]) -> PredictFn:
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
