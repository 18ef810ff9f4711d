"""The SB3-PPO template every PPO-based agent (ppo, rm_ppo, heron, spo) builds on.

:class:`PPOAgent` owns the SB3 training loop (with :class:`~prefrl.agents.off_policy.SACAgent`, through
their shared :class:`~prefrl.agents.sb3_agent.SB3Agent`). Subclasses add their idea through small hooks
instead of re-owning the loop:

* :meth:`PPOAgent.wrap_env` - wrap the training VecEnv (rm_ppo/heron substitute a learned reward here);
* :meth:`PPOAgent.rollout_buffer_class` / :meth:`PPOAgent.rollout_buffer_kwargs` - a custom rollout
  buffer (spo rewrites rewards in the buffer before advantages are computed);
* :meth:`PPOAgent.extra_callbacks` - SB3 callbacks run before the progress callback (rm_ppo refits its
  reward model at rollout end).

:class:`~prefrl.agents.sb3_agent.ProgressCallback` adapts the :class:`~prefrl.evaluation.ProgressHook` to
SB3's callback API.

**Saved policy.** :meth:`PPOAgent.save` writes SB3's ``policy.zip`` (an export for SB3 users:
``PPO.load`` reads it) and, beside it, what prefrl itself reads back without unpickling anything:
``policy.pt`` (the policy's state dict, read with ``torch.load(weights_only=True)``), ``policy.json``
(the spaces, ``use_sde`` and ``policy_kwargs`` that rebuild the network) and ``vecnormalize.json`` (the
observation statistics of ``normalize``). SB3's own loaders unpickle entries of ``policy.zip`` and of a
``vecnormalize.pkl`` (what runs wrote before), which can run code from a crafted file:
:meth:`PPOAgent.load_policy` uses them only for such older runs and only with ``trust=True``
(:mod:`prefrl.agents.sb3_agent` writes and reads these files).
"""

from __future__ import annotations

from typing import Any, ClassVar

from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer

from prefrl.agents.base import Schema

# the saved-policy files, the schedules and the progress callback were defined here before the SAC
# template shared them: the redundant aliases re-export them for code that imports them from here
from prefrl.agents.sb3_agent import LEGACY_NORMALIZATION_FILE as LEGACY_NORMALIZATION_FILE
from prefrl.agents.sb3_agent import NORMALIZATION_FILE as NORMALIZATION_FILE
from prefrl.agents.sb3_agent import POLICY_DESCRIPTION_FILE as POLICY_DESCRIPTION_FILE
from prefrl.agents.sb3_agent import POLICY_FORMAT as POLICY_FORMAT
from prefrl.agents.sb3_agent import POLICY_WEIGHTS_FILE as POLICY_WEIGHTS_FILE
from prefrl.agents.sb3_agent import ProgressCallback as ProgressCallback
from prefrl.agents.sb3_agent import SB3Agent, sb3_config_keys
from prefrl.agents.sb3_agent import linear_schedule as linear_schedule
from prefrl.agents.sb3_agent import parse_schedule as parse_schedule

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

#: SB3 PPO constructor arguments a config's ``ppo:`` section may set (the buffer comes from the hooks)
PPO_KEYS: tuple[str, ...] = sb3_config_keys(PPO, reserved=("rollout_buffer_class", "rollout_buffer_kwargs"))


#: SB3 ``custom_objects`` that replace PPO's pickled training-only attributes when a policy is loaded to act
_ACT_ONLY: dict[str, Any] = {
    "learning_rate": 0.0,
    "lr_schedule": linear_schedule(0.0),
    "clip_range": linear_schedule(0.0),
    "rollout_buffer_class": RolloutBuffer,
    "rollout_buffer_kwargs": {},
}


class PPOAgent(SB3Agent):
    """SB3 PPO on the training VecEnv, with hooks for preference-based variants.

    Config keys (beyond the common ones): ``ppo`` (SB3 PPO constructor kwargs; ``learning_rate`` and
    ``clip_range`` also accept ``"lin_<start>[_<end>]"``), ``normalize`` (``false``, ``true`` or
    VecNormalize kwargs: observation/reward normalisation, statistics reused by :meth:`predict`),
    ``vec_env`` (``"dummy"`` or ``"subproc"``).

    The training env stack is ``make_vec_env -> wrap_env -> VecNormalize`` (the normaliser is outermost so
    a learned reward sees raw observations).

    :meth:`save` writes ``policy.pt``, ``policy.json`` and, with ``normalize``, ``vecnormalize.json`` beside
    SB3's ``policy.zip``; :meth:`load_policy` reads them, and a run saved before these files existed (only
    ``policy.zip`` and ``vecnormalize.pkl``, read by unpickling) with ``trust=True`` only.
    """

    name = "ppo_template"
    sb3_class = PPO
    act_only = _ACT_ONLY
    legacy_files = (
        f"it was saved before prefrl's safe policy files, and its policy.zip / {LEGACY_NORMALIZATION_FILE}"
    )
    config_keys: ClassVar[Schema] = {"ppo": PPO_KEYS, "normalize": None, "vec_env": None}

    @classmethod
    def config_schema(cls) -> Schema:
        # subclasses only list their own keys in config_keys; the PPO ones are always allowed
        return {**super().config_schema(), **PPOAgent.config_keys, **cls.config_keys}

    model: PPO

    # ---- hooks for subclasses (and SB3Agent's wrap_env, extra_callbacks) ------------------------
    def rollout_buffer_class(self) -> type[RolloutBuffer] | None:
        """Rollout buffer class for SB3 PPO; ``None`` = SB3's default :class:`RolloutBuffer`."""
        return None

    def rollout_buffer_kwargs(self) -> dict[str, Any] | None:
        """Extra keyword arguments for the rollout buffer."""
        return None

    # ---- construction ---------------------------------------------------------------------------
    def vec_normalize_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        # normalised returns use the PPO discount unless the config says otherwise
        options.setdefault("gamma", float(self.config.get("ppo", {}).get("gamma", 0.99)))
        return options

    def _build_model(self) -> PPO:
        ppo_kwargs = dict(self.config.get("ppo", {}))
        for key in ("learning_rate", "clip_range", "clip_range_vf"):
            if ppo_kwargs.get(key) is not None:
                ppo_kwargs[key] = parse_schedule(ppo_kwargs[key], f"ppo.{key}")
        return self._sb3_model(
            PPO,
            rollout_buffer_class=self.rollout_buffer_class(),
            rollout_buffer_kwargs=self.rollout_buffer_kwargs(),
            **ppo_kwargs,
        )
