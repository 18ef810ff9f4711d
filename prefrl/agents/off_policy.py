"""The SB3-SAC template every off-policy agent (sac, pebble) builds on.

:class:`SACAgent` owns the SB3 training loop, as :class:`~prefrl.agents.on_policy.PPOAgent` does for PPO
(both through their shared :class:`~prefrl.agents.sb3_agent.SB3Agent`). Subclasses add their idea through
small hooks instead of re-owning the loop:

* :meth:`SACAgent.wrap_env` - wrap the training VecEnv (a learned reward replaces the true one here);
* :meth:`SACAgent.replay_buffer_class` / :meth:`SACAgent.replay_buffer_kwargs` - a custom replay buffer
  (e.g. one whose stored rewards are relabelled when the reward model changes);
* :meth:`SACAgent.extra_callbacks` - SB3 callbacks run before the progress callback.

Progress rows come from the PPO template's :class:`~prefrl.agents.sb3_agent.ProgressCallback`: SB3 calls
SAC's rollout hooks around every ``train_freq`` env steps, so an evaluation at a rollout start scores the
policy right after the gradient steps on the steps counted so far.

**Saved policy.** :meth:`SACAgent.save` writes SB3's ``policy.zip`` (for SB3 users: ``SAC.load`` reads it)
and the files prefrl reads back without unpickling: ``policy.pt`` (the actor's state dict; the critics
never act), ``policy.json`` and, with ``normalize``, ``vecnormalize.json``, as the PPO template does
(:mod:`prefrl.agents.sb3_agent` writes and reads these files).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecEnv

from prefrl.agents.base import Schema
from prefrl.agents.sb3_agent import SB3Agent, linear_schedule, parse_schedule, sb3_config_keys
from prefrl.errors import ConfigError, SpecError
from prefrl.spec_utils import check_int, check_memory, check_range, check_type

__all__ = ["SAC_KEYS", "SAC_POLICY_KEYS", "SACAgent", "validate_sac"]

#: SB3 SAC constructor arguments a config's ``sac:`` section may set (the buffer comes from the hooks;
#: action_noise is an object no YAML value can give)
SAC_KEYS: tuple[str, ...] = sb3_config_keys(
    SAC, reserved=("replay_buffer_class", "replay_buffer_kwargs", "action_noise")
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


class SACAgent(SB3Agent):
    """SB3 SAC on the training VecEnv, with hooks for preference-based variants.

    Config keys (beyond the common ones): ``sac`` (SB3 SAC constructor kwargs; ``learning_rate`` also
    accepts ``"lin_<start>[_<end>]"``), ``normalize`` (``false``, ``true`` or VecNormalize kwargs:
    observation normalisation only, statistics reused by :meth:`predict`), ``vec_env`` (``"dummy"`` or
    ``"subproc"``). ``policy_kwargs`` takes SACPolicy's :data:`SAC_POLICY_KEYS`.

    The training env stack is ``make_vec_env -> wrap_env -> VecNormalize`` (the normaliser is outermost so
    a learned reward sees raw observations). SB3 stores raw observations in the replay buffer and
    normalises sampled batches with the current statistics.

    :meth:`save` writes ``policy.pt`` (the actor), ``policy.json`` and, with ``normalize``,
    ``vecnormalize.json`` beside SB3's ``policy.zip``; :meth:`load_policy` reads them (the actor's mean
    action), and a run without them (its policy had no safe description: only ``policy.zip``, read by
    unpickling) with ``trust=True`` only.
    """

    name = "sac_template"
    sb3_class = SAC
    act_only = _SAC_ACT_ONLY
    legacy_files = "its policy.zip"
    config_keys: ClassVar[Schema] = {"sac": SAC_KEYS, "normalize": None, "vec_env": None}

    @classmethod
    def config_schema(cls) -> Schema:
        # subclasses only list their own keys in config_keys; the SAC ones are always allowed
        schema = {**super().config_schema(), **SACAgent.config_keys, **cls.config_keys}
        schema["policy_kwargs"] = SAC_POLICY_KEYS
        return schema

    model: SAC

    # ---- hooks for subclasses (and SB3Agent's wrap_env, extra_callbacks) ------------------------
    def replay_buffer_class(self) -> type[ReplayBuffer] | None:
        """Replay buffer class for SB3 SAC; ``None`` = SB3's default (:class:`ReplayBuffer`)."""
        return None

    def replay_buffer_kwargs(self) -> dict[str, Any] | None:
        """Extra keyword arguments for the replay buffer."""
        return None

    # ---- construction ---------------------------------------------------------------------------
    def read_config(self) -> None:
        where = f"agent '{self.name}' config"
        validate_sac(self.config.get("sac") or {}, f"{where}: sac", int(self.config["n_envs"]))
        _check_sac_policy_kwargs(self.config.get("policy_kwargs") or {}, f"{where}: policy_kwargs")

    def check_train_env(self, venv: VecEnv) -> None:
        if not isinstance(venv.action_space, spaces.Box):
            venv.close()
            raise SpecError(
                f"agent '{self.name}': SAC needs a continuous (Box) action space; env "
                f"'{self.env_spec.name}' has {venv.action_space}"
            )

    def vec_normalize_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        if options.get("norm_reward"):
            # the reward scale sets SAC's trade-off against its entropy target: it stays the env's
            raise ConfigError(
                f"agent '{self.name}' config: normalize.norm_reward: SAC normalises observations only"
            )
        return {**options, "norm_reward": False}

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
        return self._sb3_model(
            SAC,
            replay_buffer_class=self.replay_buffer_class(),
            replay_buffer_kwargs=self.replay_buffer_kwargs(),
            **sac_kwargs,
        )
