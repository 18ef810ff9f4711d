"""The SB3-SAC template every off-policy agent (sac, pebble) builds on.

:class:`SACAgent` owns the SB3 training loop, as :class:`~prefrl.agents.on_policy.PPOAgent` does for PPO.
Subclasses add their idea through small hooks instead of re-owning the loop:

* :meth:`SACAgent.wrap_env` - wrap the training VecEnv (a learned reward replaces the true one here);
* :meth:`SACAgent.replay_buffer_class` / :meth:`SACAgent.replay_buffer_kwargs` - a custom replay buffer
  (e.g. one whose stored rewards are relabelled when the reward model changes);
* :meth:`SACAgent.extra_callbacks` - SB3 callbacks run before the progress callback.

Progress rows come from the PPO template's :class:`~prefrl.agents.on_policy.ProgressCallback`: SB3 calls
SAC's rollout hooks around every ``train_freq`` env steps, so an evaluation at a rollout start scores the
policy right after the gradient steps on the steps counted so far.

**Saved policy.** :meth:`SACAgent.save` writes SB3's ``policy.zip`` (for SB3 users: ``SAC.load`` reads it)
and the files prefrl reads back without unpickling: ``policy.pt`` (the actor's state dict; the critics
never act), ``policy.json`` and, with ``normalize``, ``vecnormalize.json``, as the PPO template does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from prefrl.agents.base import Agent, PredictFn, Schema
from prefrl.agents.on_policy import (
    POLICY_DESCRIPTION_FILE,
    POLICY_WEIGHTS_FILE,
    ProgressCallback,
    _load_safe_policy,
    _load_sb3_policy,
    _save_policy,
    linear_schedule,
    parse_schedule,
)
from prefrl.envs import make_vec_env
from prefrl.errors import ConfigError, RunDirError, SpecError
from prefrl.evaluation import ProgressHook
from prefrl.networks import sb3_policy_kwargs
from prefrl.spec_utils import check_int, check_memory, check_range, check_type

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.raters.base import Rater

__all__ = ["SAC_KEYS", "SAC_POLICY_KEYS", "SACAgent", "validate_sac"]

# SB3 SAC constructor arguments owned by SACAgent (set from the run, the hooks or policy_kwargs);
# action_noise is an object no YAML value can give
_SAC_RESERVED = {
    "self",
    "policy",
    "env",
    "seed",
    "device",
    "verbose",
    "tensorboard_log",
    "policy_kwargs",
    "replay_buffer_class",
    "replay_buffer_kwargs",
    "action_noise",
    "_init_setup_model",
}
#: SB3 SAC constructor arguments a config's ``sac:`` section may set
SAC_KEYS: tuple[str, ...] = tuple(
    p for p in inspect.signature(SAC.__init__).parameters if p not in _SAC_RESERVED
)
#: SB3 SACPolicy arguments a config's ``policy_kwargs`` may set (``net_arch``: one list, actor and critics)
SAC_POLICY_KEYS = (
    "net_arch",
    "activation_fn",
    "log_std_init",
    "use_expln",
    "clip_mean",
    "n_critics",
    "share_features_extractor",
)

#: SB3 ``custom_objects`` replacing SAC's pickled training-only attributes when ``policy.zip`` is loaded
#: to act (``trust=True`` only); a one-transition buffer, since loading allocates ``buffer_size`` of them
_SAC_ACT_ONLY: dict[str, Any] = {
    "learning_rate": 0.0,
    "lr_schedule": linear_schedule(0.0),
    "replay_buffer_class": None,
    "replay_buffer_kwargs": {},
    "buffer_size": 1,
    "optimize_memory_usage": False,
    "n_steps": 1,
}

# sac settings that are integers, with their smallest value (gradient_steps -1: as many as env steps)
_INT_KEYS = {
    "buffer_size": 1,
    "learning_starts": 0,
    "batch_size": 1,
    "gradient_steps": -1,
    "n_steps": 1,
    "target_update_interval": 1,
    "sde_sample_freq": -1,
    "stats_window_size": 1,
}
_MAX_INT = 10**12


def validate_sac(sac: Mapping[str, Any], where: str, n_envs: int = 1) -> None:
    """Ranges of the Stable-Baselines3 SAC settings a config sets (keys it does not set keep SB3's defaults).

    ``gamma`` in [0, 1], ``tau`` in (0, 1]; ``learning_rate`` > 0 (or ``lin_<start>[_<end>]``); the counts
    integers (``buffer_size``, ``batch_size`` >= 1, ``learning_starts`` >= 0, ``gradient_steps`` >= -1);
    ``train_freq`` ``n`` or ``[n, "step"|"episode"]`` (episodes with one env only); ``ent_coef`` >= 0,
    ``"auto"`` or ``"auto_<initial value>"``; ``target_entropy`` a number or ``"auto"``; flags booleans.

    :raises ConfigError: naming ``where`` and the key
    """
    try:
        _validate_sac(sac, f"{where}.", n_envs)
    except ConfigError:
        raise
    except SpecError as e:
        raise ConfigError(str(e)) from None


def _validate_sac(sac: Mapping[str, Any], at: str, n_envs: int) -> None:
    if "gamma" in sac:
        check_range(check_type(sac["gamma"], float, at + "gamma"), at + "gamma", 0.0, 1.0)
    if "tau" in sac:
        check_range(check_type(sac["tau"], float, at + "tau"), at + "tau", 0.0, 1.0, low_open=True)
    if "learning_rate" in sac:
        rate = parse_schedule(sac["learning_rate"], at + "learning_rate")
        if not callable(rate):
            check_range(
                check_type(rate, float, at + "learning_rate"), at + "learning_rate", 0.0, low_open=True
            )
    for key, low in _INT_KEYS.items():
        if key in sac:
            check_int(sac[key], at + key, low, _MAX_INT)
    for key in ("use_sde", "use_sde_at_warmup", "optimize_memory_usage"):
        if key in sac:
            check_type(sac[key], bool, at + key)
    if "train_freq" in sac:
        _check_train_freq(sac["train_freq"], at + "train_freq", n_envs)
    if "ent_coef" in sac:
        _check_auto_or_number(sac["ent_coef"], at + "ent_coef", initial=True)
    if "target_entropy" in sac:
        _check_auto_or_number(sac["target_entropy"], at + "target_entropy", initial=False)


def _check_train_freq(value: Any, where: str, n_envs: int) -> None:
    """``n`` (env steps) or ``[n, "step"|"episode"]``; SB3 collects whole episodes from one env only."""
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[1] not in ("step", "episode"):
            raise SpecError(f"{where}: expected n or [n, 'step' | 'episode'], got {value!r}")
        check_int(value[0], where, 1, _MAX_INT)
        if value[1] == "episode" and n_envs > 1:
            raise SpecError(f"{where}: training every n episodes needs n_envs 1, got {n_envs}")
        return
    check_int(value, where, 1, _MAX_INT)


def _check_auto_or_number(value: Any, where: str, initial: bool) -> None:
    """A number (``>= 0`` for a coefficient), ``"auto"`` or, with ``initial``, ``"auto_<value > 0>"``."""
    if isinstance(value, str) and value.startswith("auto"):
        if value == "auto":
            return
        start = value.removeprefix("auto_")
        try:
            ok = initial and value.startswith("auto_") and float(start) > 0
        except ValueError:
            ok = False
        if not ok:
            form = "'auto' or 'auto_<initial value > 0>'" if initial else "'auto'"
            raise SpecError(f"{where}: expected a number or {form}, got {value!r}")
        return
    number = check_type(value, float, where)
    if initial:
        check_range(number, where, 0.0)


def _check_sac_policy_kwargs(policy_kwargs: Mapping[str, Any], where: str) -> None:
    """What SACPolicy needs beyond the common checks: one ``net_arch`` list, ``n_critics``, ``clip_mean``."""
    if isinstance(policy_kwargs.get("net_arch"), Mapping):
        raise ConfigError(
            f"{where}.net_arch: SAC takes one list of hidden sizes for the actor and the critics, "
            f"got {dict(policy_kwargs['net_arch'])!r}"
        )
    try:
        if "n_critics" in policy_kwargs:
            check_int(policy_kwargs["n_critics"], f"{where}.n_critics", 1, 100)
        if "clip_mean" in policy_kwargs:
            clip = check_type(policy_kwargs["clip_mean"], float, f"{where}.clip_mean")
            check_range(clip, f"{where}.clip_mean", 0.0, low_open=True)
        if "share_features_extractor" in policy_kwargs:
            check_type(policy_kwargs["share_features_extractor"], bool, f"{where}.share_features_extractor")
    except ConfigError:
        raise
    except SpecError as e:
        raise ConfigError(str(e)) from None


def _replay_bytes(venv: VecEnv, buffer_size: int, optimize_memory_usage: bool) -> float:
    """SB3 ReplayBuffer's arrays: observations (twice, unless shared), float32 actions, rewards, flags."""
    obs_bytes = float(np.prod(venv.observation_space.shape)) * np.dtype(venv.observation_space.dtype).itemsize
    act_bytes = float(np.prod(venv.action_space.shape)) * 4
    per_step = obs_bytes * (1 if optimize_memory_usage else 2) + act_bytes + 3 * 4
    return buffer_size * per_step


class SACAgent(Agent):
    """SB3 SAC on the training VecEnv, with hooks for preference-based variants.

    Config keys (beyond the common ones): ``sac`` (SB3 SAC constructor kwargs; ``learning_rate`` also
    accepts ``"lin_<start>[_<end>]"``), ``normalize`` (``false``, ``true`` or VecNormalize kwargs:
    observation normalisation only, statistics reused by :meth:`predict`), ``vec_env`` (``"dummy"`` or
    ``"subproc"``). ``policy_kwargs`` takes SACPolicy's :data:`SAC_POLICY_KEYS`.

    The training env stack is ``make_vec_env -> wrap_env -> VecNormalize`` (the normaliser is outermost so
    a learned reward sees raw observations). SB3 stores raw observations in the replay buffer and
    normalises sampled batches with the current statistics.
    """

    name = "sac_template"
    config_keys: ClassVar[Schema] = {"sac": SAC_KEYS, "normalize": None, "vec_env": None}

    @classmethod
    def config_schema(cls) -> Schema:
        # subclasses only list their own keys in config_keys; the SAC ones are always allowed
        schema = {**super().config_schema(), **SACAgent.config_keys, **cls.config_keys}
        schema["policy_kwargs"] = SAC_POLICY_KEYS
        return schema

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__(env_spec, config, rater, seed, device)
        where = f"agent '{self.name}' config"
        validate_sac(self.config.get("sac") or {}, f"{where}: sac", int(self.config["n_envs"]))
        _check_sac_policy_kwargs(self.config.get("policy_kwargs") or {}, f"{where}: policy_kwargs")
        set_random_seed(seed)
        self.venv: VecEnv = self._build_train_env()
        self.model: SAC = self._build_model()

    # ---- hooks for subclasses -------------------------------------------------------------------
    def wrap_env(self, venv: VecEnv) -> VecEnv:
        """Wrap the training VecEnv (before observation normalisation). Identity by default."""
        return venv

    def replay_buffer_class(self) -> type[ReplayBuffer] | None:
        """Replay buffer class for SB3 SAC; ``None`` = SB3's default (:class:`ReplayBuffer`)."""
        return None

    def replay_buffer_kwargs(self) -> dict[str, Any] | None:
        """Extra keyword arguments for the replay buffer."""
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
        if not isinstance(venv.action_space, spaces.Box):
            venv.close()
            raise SpecError(
                f"agent '{self.name}': SAC needs a continuous (Box) action space; env "
                f"'{self.env_spec.name}' has {venv.action_space}"
            )
        venv = self.wrap_env(venv)
        normalize = self.config.get("normalize", False)
        if normalize:
            norm_kwargs = dict(normalize) if isinstance(normalize, Mapping) else {}
            if norm_kwargs.get("norm_reward"):
                venv.close()
                # the reward scale sets SAC's trade-off against its entropy target: it stays the env's
                raise ConfigError(
                    f"agent '{self.name}' config: normalize.norm_reward: SAC normalises observations only"
                )
            venv = VecNormalize(venv, **{**norm_kwargs, "norm_reward": False})
        return venv

    def _build_model(self) -> SAC:
        sac_kwargs = dict(self.config.get("sac") or {})
        if sac_kwargs.get("learning_rate") is not None:
            sac_kwargs["learning_rate"] = parse_schedule(sac_kwargs["learning_rate"], "sac.learning_rate")
        if isinstance(sac_kwargs.get("train_freq"), list):
            sac_kwargs["train_freq"] = tuple(sac_kwargs["train_freq"])
        buffer_size = int(sac_kwargs.get("buffer_size", 1_000_000))
        check_memory(
            _replay_bytes(self.venv, buffer_size, bool(sac_kwargs.get("optimize_memory_usage", False))),
            f"sac.buffer_size {buffer_size}",
        )
        return SAC(
            "MlpPolicy",
            self.venv,
            policy_kwargs=sb3_policy_kwargs(self.config.get("policy_kwargs", {})),
            replay_buffer_class=self.replay_buffer_class(),
            replay_buffer_kwargs=self.replay_buffer_kwargs(),
            seed=self.seed,
            device=self.device,
            verbose=0,
            **sac_kwargs,
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
        without unpickling: ``policy.pt`` (the actor), ``policy.json`` and, with ``normalize``,
        ``vecnormalize.json``."""
        _save_policy(self.model, self.venv, Path(path))

    @classmethod
    def load_policy(cls, run_dir: str | Path, trust: bool = False) -> PredictFn:
        """The saved deterministic policy (the actor's mean action), normalising observations with the
        saved statistics.

        Reads ``policy.pt`` (``torch.load(weights_only=True)``), ``policy.json`` and ``vecnormalize.json``:
        nothing from the run directory can run code. A run without them (its policy had no safe
        description) has only SB3's ``policy.zip``, whose loader unpickles.

        :param trust: read such a run through SB3's loader anyway (only for folders you trust).
        :raises RunDirError: missing, damaged or inconsistent files, or only ``policy.zip`` without ``trust``
        """
        run_dir = Path(run_dir)
        if (run_dir / POLICY_WEIGHTS_FILE).is_file() or (run_dir / POLICY_DESCRIPTION_FILE).is_file():
            return _load_safe_policy(run_dir)
        if not trust:
            raise RunDirError(
                f"{run_dir} has no {POLICY_WEIGHTS_FILE}: its policy.zip can only be read by unpickling, "
                "which can run code from a crafted file; if you trust this folder, load it with --trust "
                "(trust=True)"
            )
        return _load_sb3_policy(run_dir, SAC, _SAC_ACT_ONLY)

    def close(self) -> None:
        self.venv.close()
