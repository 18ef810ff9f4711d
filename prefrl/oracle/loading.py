"""Loading an env's oracle expert: its policy checkpoints and its value function.

The oracle supplies three things the rest of the testbed needs:

* ``V*(s)`` (and ``Q*(s, a)`` for a SAC expert) for the ``regret`` rater;
* ``R_oracle`` (with ``R_random``) anchoring the normalised score ``100 (R - R_rand) / (R_orc - R_rand)``;
* policy checkpoints at several skill levels between random and expert, for offline datasets (CPL).

Checkpoints are compact (network weights only, no optimiser or replay buffer) and ship with the package
under ``prefrl/oracle/checkpoints/<env>/``; the env spec names the folder (``oracle.checkpoint``)::

    oracle = load_oracle(load_env_spec("pendulum"))
    oracle.value(obs)            # V*(s), [N]
    oracle.q_value(obs, act)     # Q*(s, a), [N] (SAC experts)
    oracle.policy("expert")      # callable obs -> action; also "level0" .. "levelK" (worst to best)

For a SAC expert ``V(s) = mean over a ~ pi(.|s) of min_j Q_j(s, a)`` (``n_action_samples`` draws, the same
standard-normal draws for every state); for a PPO expert ``V`` is its critic. Where the checkpoint has an
accepted Monte-Carlo correction (:mod:`prefrl.oracle.value_correction`), ``V`` and ``Q`` add its
``delta(s)``. Loading never imports training code: :mod:`prefrl.oracle.training` writes what this reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm

from prefrl.envs import EnvSpec, load_env_spec, make_env
from prefrl.errors import OracleError
from prefrl.networks import sb3_policy_kwargs
from prefrl.oracle.value_correction import ValueCorrection

__all__ = [
    "CHECKPOINT_ROOT",
    "CheckpointInfo",
    "Oracle",
    "OracleManifest",
    "forget_oracle",
    "load_oracle",
    "load_value_correction",
    "normalise_obs",
    "oracle_dir",
    "oracle_value_functions",
    "read_manifest",
]

CHECKPOINT_ROOT = Path(__file__).resolve().parent / "checkpoints"
ALGOS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "ppo": PPO}


MANIFEST = "manifest.json"


#: the value correction's weights, beside the expert's
CORRECTION_FILE = "value_correction.pt"


@dataclass
class CheckpointInfo:
    """One saved policy: its name, the training step it was taken at and its measured true return."""

    name: str
    step: int
    mean_return: float
    std_return: float
    file: str


@dataclass
class OracleManifest:
    """What ``manifest.json`` records next to the weights (provenance included)."""

    env: str
    algo: str
    policy_kwargs: dict[str, Any]
    hyperparams: dict[str, Any]
    gamma: float
    seed: int
    train_steps: int
    command: str
    random_return: float
    random_return_std: float
    oracle_return: float
    oracle_return_std: float
    eval_episodes: int
    expert: CheckpointInfo
    levels: list[CheckpointInfo] = field(default_factory=list)
    value_quality: dict[str, float] | None = None
    train_wall_s: float | None = None
    #: the Monte-Carlo value correction's fit report (``accepted``: whether ``V``/``Q`` use it)
    value_correction: dict[str, Any] | None = None

    @staticmethod
    def from_dict(data: dict[str, Any]) -> OracleManifest:
        data = dict(data)
        data["expert"] = CheckpointInfo(**data["expert"])
        data["levels"] = [CheckpointInfo(**level) for level in data.get("levels", [])]
        return OracleManifest(**data)

    def save(self, directory: Path) -> None:
        """Write ``manifest.json`` into the checkpoint ``directory``."""
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n")


def _how_to_train(spec: EnvSpec) -> str:
    return f"train one with `prefrl oracle train --env {spec.name}`"


def _build_model(spec: EnvSpec, algo: str, policy_kwargs: dict[str, Any], seed: int = 0) -> BaseAlgorithm:
    """An untrained SB3 model with the right architecture, to load saved weights into."""
    return ALGOS[algo](
        "MlpPolicy",
        make_env(spec, seed=seed),
        policy_kwargs=sb3_policy_kwargs(policy_kwargs),
        seed=seed,
        device="cpu",
    )


#: state-dict prefixes of value networks (SAC critics, PPO value head), left out of act-only checkpoints
CRITIC_PREFIXES = ("critic", "value_net", "vf", "mlp_extractor.value_net")


#: state-dict prefixes needed for training only, never saved
TRAINING_ONLY_PREFIXES = ("critic_target",)


#: prefix of the observation-normalisation statistics stored beside the weights (PPO with VecNormalize)
NORM_PREFIX = "normalization."


def _load_weights(model: BaseAlgorithm, path: Path, spec: EnvSpec) -> dict[str, np.ndarray]:
    """Load weights into ``model``; returns the stored observation-normalisation statistics."""
    try:
        state = th.load(path, map_location="cpu", weights_only=True)
        norm = {k[len(NORM_PREFIX) :]: v.numpy() for k, v in state.items() if k.startswith(NORM_PREFIX)}
        state = {k: v.float() for k, v in state.items() if not k.startswith(NORM_PREFIX)}
        missing, unexpected = model.policy.load_state_dict(state, strict=False)
    except FileNotFoundError:
        raise OracleError(f"oracle checkpoint {path} is missing; {_how_to_train(spec)}") from None
    except Exception as e:  # torch raises many types for a truncated or foreign file
        reason = (str(e).splitlines() or [""])[0][:100]
        raise OracleError(
            f"oracle checkpoint {path} is corrupted ({type(e).__name__}: {reason}); {_how_to_train(spec)}"
        ) from None
    actor_missing = [k for k in missing if not k.startswith(CRITIC_PREFIXES)]
    if unexpected or actor_missing:
        raise OracleError(
            f"oracle checkpoint {path} does not match the {model.__class__.__name__} architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); {_how_to_train(spec)}"
        )
    return norm


def normalise_obs(obs: np.ndarray, norm: dict[str, np.ndarray]) -> np.ndarray:
    """Apply VecNormalize's observation transform with stored statistics (identity without them)."""
    if not norm:
        return np.asarray(obs, dtype=np.float32)
    scaled = (np.asarray(obs) - norm["obs_mean"]) / np.sqrt(norm["obs_var"] + 1e-8)
    return np.clip(scaled, -norm["clip_obs"], norm["clip_obs"]).astype(np.float32)


class Oracle:
    """A loaded expert: acts, and evaluates ``V*`` / ``Q*`` on batches of numpy observations."""

    def __init__(self, spec: EnvSpec, manifest: OracleManifest, directory: Path, n_action_samples: int = 16):
        self.spec = spec
        self.manifest = manifest
        self.directory = directory
        self.n_action_samples = n_action_samples
        self._models: dict[str, BaseAlgorithm] = {}
        self._norms: dict[str, dict[str, np.ndarray]] = {}
        self.model = self._model("expert")
        self.norm = self._norms["expert"]
        accepted = bool((manifest.value_correction or {}).get("accepted"))
        self.correction = load_value_correction(directory, spec) if accepted else None

    @property
    def gamma(self) -> float:
        return self.manifest.gamma

    @property
    def checkpoint_names(self) -> list[str]:
        """Skill levels from worst to best, then ``expert``."""
        return [level.name for level in self.manifest.levels] + ["expert"]

    def _info(self, name: str) -> CheckpointInfo:
        for info in [*self.manifest.levels, self.manifest.expert]:
            if info.name == name:
                return info
        raise OracleError(f"{self.spec.name} oracle has no checkpoint '{name}'; have {self.checkpoint_names}")

    def _model(self, name: str) -> BaseAlgorithm:
        if name not in self._models:
            model = _build_model(self.spec, self.manifest.algo, self.manifest.policy_kwargs)
            self._norms[name] = _load_weights(model, self.directory / self._info(name).file, self.spec)
            model.policy.set_training_mode(False)
            self._models[name] = model
        return self._models[name]

    def policy(self, name: str = "expert", deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
        """An ``obs [N, d] -> act [N, a]`` function for one checkpoint (the mean action by default)."""
        model, norm = self._model(name), self._norms[name]
        return lambda obs: model.predict(normalise_obs(obs, norm), deterministic=deterministic)[0]

    def checkpoint_return(self, name: str) -> float:
        return self._info(name).mean_return

    def value(self, obs: np.ndarray, corrected: bool = True) -> np.ndarray:
        """``V*(s)`` for a batch of observations ``[N, obs_dim]`` -> ``[N]`` (true-reward units).

        :param corrected: add the checkpoint's Monte-Carlo correction ``delta(s)`` if it has one.
        """
        value = self._critic_value(obs)
        return value + self.correction.predict(obs) if corrected and self.correction is not None else value

    @th.no_grad()
    def _critic_value(self, obs: np.ndarray) -> np.ndarray:
        obs_t = th.as_tensor(normalise_obs(obs, self.norm))
        policy = self.model.policy
        if isinstance(self.model, SAC):
            if policy.actor.use_sde:
                raise OracleError(
                    f"{self.spec.name}: V* of a gSDE SAC expert is not supported (set use_sde false)"
                )
            mean, log_std, _ = policy.actor.get_action_dist_params(obs_t)
            # every state gets the same standard-normal draws (common random numbers), so V is a smooth,
            # deterministic function of the state alone: with draws per batch row, a state's V depended on
            # its position in the batch, and Pendulum's equilibrium states got noise of std 0.016 against
            # return differences below 1e-5
            noise = self._action_noise(mean.shape[-1])[:, None, :]
            actions = th.tanh(mean + log_std.exp() * noise)  # SAC's squashed actions in [-1, 1]
            samples, n = noise.shape[0], obs_t.shape[0]
            repeated = obs_t.expand(samples, *obs_t.shape).reshape(samples * n, -1)
            q = th.min(th.cat(policy.critic(repeated, actions.reshape(samples * n, -1)), dim=1), dim=1).values
            return q.view(samples, n).mean(dim=0).numpy().astype(np.float64)
        scale = float(self.norm["reward_scale"]) if self.norm else 1.0
        return scale * policy.predict_values(obs_t).squeeze(-1).numpy().astype(np.float64)

    def _action_noise(self, action_dim: int) -> th.Tensor:
        """``n_action_samples`` fixed standard-normal draws in antithetic pairs ``(eps, -eps)``."""
        half = th.randn((self.n_action_samples + 1) // 2, action_dim, generator=th.Generator().manual_seed(0))
        return th.cat([half, -half])[: self.n_action_samples]

    @th.no_grad()
    def q_value(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """``Q*(s, a)`` (min over the twin critics, plus ``delta(s)`` if corrected) -> ``[N]``; SAC only."""
        if not isinstance(self.model, SAC):
            raise OracleError(f"{self.spec.name} oracle is {self.manifest.algo}: it has no Q function")
        obs_t = th.as_tensor(normalise_obs(obs, self.norm))
        # SAC's critics are trained on actions rescaled to [-1, 1]
        act_t = th.as_tensor(self.model.policy.scale_action(np.asarray(act)), dtype=th.float32)
        q = th.cat(self.model.policy.critic(obs_t, act_t), dim=1)
        q_value = th.min(q, dim=1).values.numpy().astype(np.float64)
        # the same shift as V's keeps the critic's advantages Q - V unchanged
        return q_value + self.correction.predict(obs) if self.correction is not None else q_value


def load_value_correction(directory: Path, spec: EnvSpec) -> ValueCorrection:
    """Read ``value_correction.pt``; a missing or damaged file is an :class:`OracleError` naming the fix."""
    path = directory / CORRECTION_FILE
    fix = f"recompute it with `prefrl oracle correct-value --env {spec.name}`"
    try:
        state = th.load(path, map_location="cpu", weights_only=True)
        hidden = int(state.pop("hidden"))
        correction = ValueCorrection(int(state["net.0.weight"].shape[1]), hidden)
        correction.load_state_dict(state)
    except FileNotFoundError:
        raise OracleError(
            f"the oracle's manifest names a value correction but {path} is missing; {fix}"
        ) from None
    except Exception as e:  # torch raises many types for a truncated or foreign file
        reason = (str(e).splitlines() or [""])[0][:100]
        raise OracleError(
            f"value correction {path} is corrupted ({type(e).__name__}: {reason}); {fix}"
        ) from None
    obs_dim = int(np.prod(spec.observation_space.shape))
    if correction.net[0].in_features != obs_dim:
        raise OracleError(
            f"value correction {path} expects {correction.net[0].in_features}-dim observations, env "
            f"'{spec.name}' has {obs_dim}; {fix}"
        )
    return correction.eval()


def oracle_dir(spec: EnvSpec) -> Path:
    """Where the spec's oracle lives (``oracle.checkpoint`` in the spec, default the spec name)."""
    name = (spec.oracle or {}).get("checkpoint") or spec.name
    path = Path(name)
    return path if path.is_absolute() else CHECKPOINT_ROOT / path


_CACHE: dict[str, Oracle] = {}


def forget_oracle(directory: Path) -> None:
    """Drop the cached oracle loaded from ``directory`` (after its files were rewritten)."""
    _CACHE.pop(str(directory), None)


def load_oracle(spec: EnvSpec | str, directory: Path | None = None) -> Oracle:
    """Load (and cache) the shipped oracle of an env; a clear :class:`OracleError` if none exists."""
    spec = load_env_spec(spec) if isinstance(spec, str) else spec
    directory = directory or oracle_dir(spec)
    key = str(directory)
    if key not in _CACHE:
        _CACHE[key] = Oracle(spec, read_manifest(spec, directory), directory)
    return _CACHE[key]


def read_manifest(spec: EnvSpec, directory: Path) -> OracleManifest:
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise OracleError(f"no oracle for env '{spec.name}' at {directory}; {_how_to_train(spec)}")
    try:
        return OracleManifest.from_dict(json.loads(manifest_path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise OracleError(
            f"oracle manifest {manifest_path} is corrupted ({e}); {_how_to_train(spec)}"
        ) from None


def oracle_value_functions(spec: EnvSpec) -> tuple[Callable, Callable | None]:
    """The regret rater's default ``(V*, Q*)``: the env's shipped oracle (``Q*`` for SAC experts only)."""
    oracle = load_oracle(spec)
    return oracle.value, (oracle.q_value if oracle.manifest.algo == "sac" else None)
