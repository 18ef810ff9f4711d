"""Oracle experts: a policy trained on the true reward plus its value function, per environment.

The oracle supplies three things the rest of the testbed needs:

* ``V*(s)`` (and ``Q*(s, a)`` for a SAC expert) for the ``regret`` rater;
* ``R_oracle`` (with ``R_random``) anchoring the normalised score ``100 (R - R_rand) / (R_orc - R_rand)``;
* policy checkpoints at several skill levels between random and expert, for offline datasets (CPL).

Checkpoints are compact (network weights only, no optimiser or replay buffer) and ship with the package
under ``prefrl/oracle_checkpoints/<env>/``; the env spec names the folder (``oracle.checkpoint``)::

    oracle = load_oracle(load_env_spec("pendulum"))
    oracle.value(obs)            # V*(s), [N]
    oracle.q_value(obs, act)     # Q*(s, a), [N] (SAC experts)
    oracle.policy("expert")      # callable obs -> action; also "level0" .. "levelK" (worst to best)

``prefrl oracle train --env ENV`` produces them; ``prefrl oracle eval --env ENV`` re-measures them.
For a SAC expert ``V(s) = mean over a ~ pi(.|s) of min_j Q_j(s, a)`` (``n_action_samples`` draws, the same
standard-normal draws for every state); for a PPO expert ``V`` is its critic. Where the checkpoint has an
accepted Monte-Carlo correction (:mod:`prefrl.value_correction`, ``prefrl oracle correct-value --env ENV``),
``V`` and ``Q`` add its ``delta(s)``.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.vec_env import VecNormalize

from prefrl.envs import EnvSpec, load_env_spec, make_env, make_vec_env
from prefrl.evaluation import evaluate_policy
from prefrl.spec_utils import PROJECT_ROOT, check_keys, deep_update, load_yaml
from prefrl.training_state import (
    META,
    SaveTrainingState,
    TrainingStateError,
    load_training_state,
    read_meta,
)
from prefrl.value_correction import (
    ValueCorrection,
    expert_states_and_returns,
    fit_value_correction,
    weaker_policies,
)

CHECKPOINT_ROOT = Path(__file__).resolve().parent / "oracle_checkpoints"
ALGOS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "ppo": PPO}
MANIFEST = "manifest.json"
ORACLE_CONFIG = PROJECT_ROOT / "agents" / "oracle.yaml"
ORACLE_KEYS = (
    "algo",
    "total_steps",
    "stop_return",
    "n_envs",
    "policy_kwargs",
    "sac",
    "ppo",
    "value_correction",
)
#: the value correction's weights, beside the expert's
CORRECTION_FILE = "value_correction.pt"
#: settings of ``value_correction`` in agents/oracle.yaml: fit_value_correction's arguments, their defaults
CORRECTION_DEFAULTS = {
    name: parameter.default
    for name, parameter in list(inspect.signature(fit_value_correction).parameters.items())[1:]
}
CORRECTION_KEYS = tuple(CORRECTION_DEFAULTS)
#: env steps between the evaluations that decide an early stop at ``stop_return``, and their episodes
STOP_EVAL_FREQ = 10_000
STOP_EVAL_EPISODES = 5
#: episodes per snapshot in the screen that picks the expert candidate and the skill levels
SCREEN_EPISODES = 5
#: env steps between saves of a SAC run's resumable training state
SAVE_STATE_EVERY = 50_000


def load_oracle_config(env_name: str, path: Path = ORACLE_CONFIG) -> dict[str, Any]:
    """``agents/oracle.yaml``: ``defaults`` merged with the env's entry under ``envs``."""
    data = load_yaml(path)
    check_keys(data, ("defaults", "envs"), str(path))
    config = dict(data.get("defaults") or {})
    config = deep_update(config, (data.get("envs") or {}).get(env_name, {}))
    check_keys(config, ORACLE_KEYS, f"{path} (env {env_name})", required=("algo", "total_steps"))
    correction = config.get("value_correction", {})
    if correction is not False:
        if not isinstance(correction, dict):
            raise ValueError(f"{path} (env {env_name}): value_correction must be a mapping or false")
        check_keys(correction, CORRECTION_KEYS, f"{path} (env {env_name}) value_correction")
    return config


class OracleError(ValueError):
    """A missing or unusable oracle checkpoint."""


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
    from prefrl.agents.base import build_policy_kwargs

    return ALGOS[algo](
        "MlpPolicy",
        make_env(spec, seed=seed),
        policy_kwargs=build_policy_kwargs(policy_kwargs),
        seed=seed,
        device="cpu",
    )


#: state-dict prefixes of value networks (SAC critics, PPO value head), left out of act-only checkpoints
CRITIC_PREFIXES = ("critic", "value_net", "vf", "mlp_extractor.value_net")
#: state-dict prefixes needed for training only, never saved
TRAINING_ONLY_PREFIXES = ("critic_target",)
#: prefix of the observation-normalisation statistics stored beside the weights (PPO with VecNormalize)
NORM_PREFIX = "normalization."


@dataclass
class Snapshot:
    """Policy weights at one training step plus the observation statistics they were trained with."""

    step: int
    state: dict[str, th.Tensor]
    norm: dict[str, th.Tensor]


def _normalisation_of(model: BaseAlgorithm) -> dict[str, th.Tensor]:
    """VecNormalize statistics of the model's env (empty if it has none)."""
    venv = model.get_env()
    if not isinstance(venv, VecNormalize):
        return {}
    return {
        "obs_mean": th.as_tensor(venv.obs_rms.mean, dtype=th.float64),
        "obs_var": th.as_tensor(venv.obs_rms.var, dtype=th.float64),
        "clip_obs": th.tensor(float(venv.clip_obs), dtype=th.float64),
        # the critic predicts returns of rewards divided by this scale
        "reward_scale": th.tensor(
            float(np.sqrt(venv.ret_rms.var + venv.epsilon)) if venv.norm_reward else 1.0, dtype=th.float64
        ),
    }


def _snapshot(model: BaseAlgorithm, step: int) -> Snapshot:
    state = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
    return Snapshot(step, state, _normalisation_of(model))


def _save_weights(snapshot: Snapshot, path: Path, actor_only: bool) -> None:
    # SAC's target critics only stabilise training; V and Q are read from the online critics
    state = {k: v for k, v in snapshot.state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    if actor_only:
        # skill-level checkpoints only need to act: keep the files small
        state = {k: v for k, v in state.items() if not k.startswith(CRITIC_PREFIXES)}
    # float16 halves the shipped size; weights are cast back to float32 on load
    state = {k: v.detach().cpu().to(th.float16) if v.is_floating_point() else v for k, v in state.items()}
    state.update({NORM_PREFIX + k: v for k, v in snapshot.norm.items()})  # statistics stay float64
    buffer = io.BytesIO()
    th.save(state, buffer)
    path.write_bytes(buffer.getvalue())


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


def _normalise(obs: np.ndarray, norm: dict[str, np.ndarray]) -> np.ndarray:
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
        return lambda obs: model.predict(_normalise(obs, norm), deterministic=deterministic)[0]

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
        obs_t = th.as_tensor(_normalise(obs, self.norm))
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
        obs_t = th.as_tensor(_normalise(obs, self.norm))
        # SAC's critics are trained on actions rescaled to [-1, 1]
        act_t = th.as_tensor(self.model.policy.scale_action(np.asarray(act)), dtype=th.float32)
        q = th.cat(self.model.policy.critic(obs_t, act_t), dim=1)
        q_value = th.min(q, dim=1).values.numpy().astype(np.float64)
        # the same shift as V's keeps the critic's advantages Q - V unchanged
        return q_value + self.correction.predict(obs) if self.correction is not None else q_value


def save_value_correction(directory: Path, correction: ValueCorrection) -> None:
    """Write ``value_correction.pt`` (float32 weights and the network's width)."""
    buffer = io.BytesIO()
    hidden = correction.net[0].out_features
    th.save({"hidden": th.tensor(hidden), **correction.state_dict()}, buffer)
    (directory / CORRECTION_FILE).write_bytes(buffer.getvalue())


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


def load_oracle(spec: EnvSpec | str, directory: Path | None = None) -> Oracle:
    """Load (and cache) the shipped oracle of an env; a clear :class:`OracleError` if none exists."""
    spec = load_env_spec(spec) if isinstance(spec, str) else spec
    directory = directory or oracle_dir(spec)
    key = str(directory)
    if key not in _CACHE:
        _CACHE[key] = Oracle(spec, _read_manifest(spec, directory), directory)
    return _CACHE[key]


def _read_manifest(spec: EnvSpec, directory: Path) -> OracleManifest:
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise OracleError(f"no oracle for env '{spec.name}' at {directory}; {_how_to_train(spec)}")
    try:
        return OracleManifest.from_dict(json.loads(manifest_path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise OracleError(
            f"oracle manifest {manifest_path} is corrupted ({e}); {_how_to_train(spec)}"
        ) from None


class _SnapshotCallback(BaseCallback):
    """Keeps an in-memory copy of the policy every ``every`` steps (candidate skill levels)."""

    def __init__(self, every: int):
        super().__init__()
        self.every = every
        self.snapshots: list[Snapshot] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.snapshots.append(_snapshot(self.model, self.num_timesteps))
        return True


class _StopAtWallTime(BaseCallback):
    """Ends training after ``seconds`` of wall time; the expert is then the best policy reached so far."""

    def __init__(self, seconds: float):
        super().__init__()
        self.deadline = time.time() + seconds

    def _on_step(self) -> bool:
        return time.time() < self.deadline


def _stop_at_return(spec: EnvSpec, stop_return: float, seed: int) -> EvalCallback:
    """SB3's evaluation callback that ends training once the deterministic policy reaches ``stop_return``.

    Caps the cost of SAC experts on a CPU: training stops at the quality target instead of running out
    the full step budget.
    """
    return EvalCallback(
        make_vec_env(spec, n_envs=1, seed=seed + 30_000),
        callback_on_new_best=StopTrainingOnRewardThreshold(reward_threshold=stop_return, verbose=1),
        n_eval_episodes=STOP_EVAL_EPISODES,
        eval_freq=STOP_EVAL_FREQ,
        deterministic=True,
        verbose=1,
    )


def default_state_dir(env: str, seed: int) -> Path:
    """Where a SAC oracle run keeps its resumable training state (model, replay buffer, snapshots)."""
    return PROJECT_ROOT / "runs" / "oracle_training" / f"{env}-seed{seed}"


def _train(
    spec: EnvSpec,
    algo: str,
    config: dict[str, Any],
    steps: int,
    seed: int,
    stop_return: float | None = None,
    max_minutes: float | None = None,
    state_dir: Path | None = None,
    resume: bool = False,
) -> tuple[BaseAlgorithm, list[Snapshot], float]:
    """Train with SB3; SAC from ``agents/oracle.yaml``, PPO with the tuned ``agents/ppo.yaml`` settings.

    SAC runs save their state to ``state_dir`` every ``SAVE_STATE_EVERY`` steps and when they end, and
    ``resume`` continues from it. Returns the model, the policy snapshots and the wall time of all sessions.
    """
    snapshots = _SnapshotCallback(every=max(steps // 40, 1))
    start = time.time()
    if algo == "sac":
        state_dir = Path(state_dir) if state_dir else default_state_dir(spec.name, seed)
        identity = {"env": spec.name, "seed": seed, "algo": algo}
        venv = make_vec_env(spec, n_envs=1, seed=seed)
        earlier_wall = 0.0
        if resume:
            model, saved, meta = load_training_state(SAC, state_dir, venv, expect=identity)
            snapshots.snapshots = [Snapshot(**snapshot) for snapshot in saved]
            earlier_wall = float(meta.get("wall_s", 0.0))
            print(f"resuming {spec.name} from step {model.num_timesteps} ({state_dir})", flush=True)
        else:
            if (state_dir / META).exists():
                try:
                    step = f"step {read_meta(state_dir).get('num_timesteps')}"
                except TrainingStateError:  # a damaged state cannot be resumed: starting afresh is the fix
                    step = "damaged"
                warnings.warn(
                    f"starting {spec.name} afresh: its saved training state in {state_dir} ({step}) will "
                    "be replaced; pass --resume to continue it",
                    stacklevel=3,
                )
            kwargs = dict(config.get("policy_kwargs", {}))
            model = SAC("MlpPolicy", venv, policy_kwargs=kwargs, seed=seed, device="cpu", **config["sac"])
        saver = SaveTrainingState(
            state_dir,
            SAVE_STATE_EVERY,
            meta=lambda: {**identity, "wall_s": earlier_wall + time.time() - start},
            extra=lambda: [asdict(snapshot) for snapshot in snapshots.snapshots],
        )
        callbacks: list[BaseCallback] = [snapshots, saver]
        if stop_return is not None:
            callbacks.append(_stop_at_return(spec, stop_return, seed))
        if max_minutes is not None:
            callbacks.append(_StopAtWallTime(60.0 * max_minutes))
        try:
            remaining = max(steps - model.num_timesteps, 0)
            model.learn(remaining, callback=callbacks, progress_bar=False, reset_num_timesteps=not resume)
        except KeyboardInterrupt:
            # hours of SAC training are not thrown away: Ctrl-C ends training like max_minutes does
            print(f"interrupted at step {model.num_timesteps}: saving the policies reached", flush=True)
        saver.save()
        return model, snapshots.snapshots, earlier_wall + time.time() - start
    if resume:
        raise OracleError("--resume is supported for SAC oracles only (PPO runs take minutes)")
    if stop_return is not None or max_minutes is not None:
        raise OracleError("stop_return and max_minutes are supported for SAC oracles only")

    from prefrl.agents.base import PPOAgent
    from prefrl.config import load_agent_config

    class SnapshottingPPO(PPOAgent):
        name = "ppo"

        def extra_callbacks(self) -> list[BaseCallback]:
            return [snapshots]

    ppo_config = load_agent_config("ppo", spec.name, {"ppo": config.get("ppo", {})})
    agent = SnapshottingPPO(spec, ppo_config, None, seed)
    agent.learn(steps, 0, callback=None)
    return agent.model, snapshots.snapshots, time.time() - start


def _policy_kwargs_of(spec: EnvSpec, algo: str, config: dict[str, Any]) -> dict[str, Any]:
    """The (serialisable) policy kwargs the expert was built with."""
    if algo == "sac":
        return dict(config.get("policy_kwargs", {}))
    from prefrl.config import load_agent_config

    return dict(load_agent_config("ppo", spec.name).get("policy_kwargs", {}))


def _pick_levels(returns: list[float], r_random: float, r_expert: float, n_levels: int) -> list[int]:
    """Indices of snapshots whose returns are closest to ``n_levels`` evenly spaced targets.

    Targets run from 10% to 90% of the way from random to expert, so the levels span the skill range.
    """
    targets = r_random + np.linspace(0.1, 0.9, n_levels) * (r_expert - r_random)
    chosen: list[int] = []
    for target in targets:
        order = np.argsort(np.abs(np.asarray(returns) - target))
        pick = next((int(i) for i in order if int(i) not in chosen), int(order[0]))
        chosen.append(pick)
    return sorted(set(chosen), key=lambda i: returns[i])


def train_oracle(
    env: str,
    steps: int | None = None,
    seed: int = 0,
    algo: str | None = None,
    out: Path | None = None,
    n_levels: int = 5,
    eval_episodes: int = 20,
    update_spec: bool = True,
    verbose: bool = True,
    stop_return: float | None = None,
    max_minutes: float | None = None,
    resume: bool = False,
    state_dir: Path | None = None,
    value_correction: dict[str, Any] | None = None,
) -> Path:
    """Train an expert on the true reward, save it with skill-level checkpoints, record R_random/R_oracle.

    Hyperparameters come from ``agents/oracle.yaml`` (defaults + per-env overrides). With ``stop_return``
    (argument, else the config's ``stop_return``) a SAC run ends early once a 5-episode evaluation reaches
    that mean return; with ``max_minutes`` it ends after that much wall time (the skill levels and the
    expert are then picked from what was reached). A SAC run keeps a resumable state (model, replay buffer,
    snapshots) in ``state_dir`` (default :func:`default_state_dir`); ``resume=True`` continues it up to
    ``steps`` in total, so an interrupted or capped run is not started over. The expert's value function
    then gets its Monte-Carlo correction (:func:`correct_value`; settings: the config's ``value_correction``,
    updated by the ``value_correction`` argument; ``value_correction: false`` in the config skips it).
    Returns the folder.
    """
    th.set_num_threads(1)
    spec = load_env_spec(env)
    config = load_oracle_config(spec.name)
    algo = (algo or config["algo"]).lower()
    if algo not in ALGOS:
        raise OracleError(f"unknown oracle algo '{algo}'; choose from {sorted(ALGOS)}")
    steps = int(steps or config["total_steps"])
    if stop_return is None and algo == "sac":
        stop_return = config.get("stop_return")
    hyper = dict(config.get(algo, {}))
    out = Path(out) if out else oracle_dir(spec)
    out.mkdir(parents=True, exist_ok=True)

    model, snapshots, wall = _train(
        spec, algo, config, steps, seed, stop_return, max_minutes, state_dir=state_dir, resume=resume
    )

    def evaluate_snapshot(snapshot: Snapshot, episodes: int) -> tuple[float, float]:
        model.policy.load_state_dict(snapshot.state)
        norm = {k: v.numpy() for k, v in snapshot.norm.items()}
        return evaluate_policy(
            lambda o: model.predict(_normalise(o, norm), deterministic=True)[0],
            spec,
            n_episodes=episodes,
            seed=seed + 10_000,
        )

    final = _snapshot(model, model.num_timesteps)
    if not snapshots or snapshots[-1].step != final.step:
        snapshots.append(final)  # a run stopped early ends between snapshots; its last policy is a level too
    rng = np.random.default_rng(seed)
    low, high = spec.action_space.low, spec.action_space.high
    r_random, r_random_std = evaluate_policy(
        lambda o: rng.uniform(low, high, size=(len(o), *low.shape)),
        spec,
        n_episodes=eval_episodes,
        seed=seed + 20_000,
    )
    screen_episodes = min(eval_episodes, SCREEN_EPISODES)
    quick = [evaluate_snapshot(snapshot, screen_episodes)[0] for snapshot in snapshots]
    r_expert, r_expert_std = evaluate_snapshot(final, eval_episodes)
    expert_snapshot = final
    # the expert is the better of the final policy and the best snapshot (training can regress late)
    best = int(np.argmax(quick)) if quick else -1
    if best >= 0 and quick[best] > r_expert:
        cand_ret, cand_std = evaluate_snapshot(snapshots[best], eval_episodes)
        if cand_ret > r_expert:
            expert_snapshot, r_expert, r_expert_std = snapshots[best], cand_ret, cand_std
    _save_weights(expert_snapshot, out / "expert.pt", actor_only=False)
    expert = CheckpointInfo("expert", expert_snapshot.step, r_expert, r_expert_std, "expert.pt")

    levels: list[CheckpointInfo] = []
    measured = []
    for index in _pick_levels(quick, r_random, r_expert, n_levels):
        mean, std = evaluate_snapshot(snapshots[index], min(eval_episodes, 10))
        measured.append((mean, std, index))
    # the short screen can misorder levels of a high-variance env (Ant: +-900 per episode), so the levels
    # are named by their measured return, worst first
    for rank, (mean, std, index) in enumerate(sorted(measured)):
        file = f"level{rank}.pt"
        _save_weights(snapshots[index], out / file, actor_only=True)
        levels.append(CheckpointInfo(f"level{rank}", snapshots[index].step, mean, std, file))

    manifest = OracleManifest(
        env=spec.name,
        algo=algo,
        policy_kwargs=_policy_kwargs_of(spec, algo, config),
        hyperparams=hyper,
        gamma=float(model.gamma),
        seed=seed,
        train_steps=int(model.num_timesteps),
        command=f"prefrl oracle train --env {spec.name} --steps {steps} --seed {seed} --algo {algo}"
        + (f" --stop-return {stop_return:g}" if stop_return is not None else "")
        + (f" --max-minutes {max_minutes:g}" if max_minutes is not None else "")
        + (" --resume" if resume else ""),
        random_return=r_random,
        random_return_std=r_random_std,
        oracle_return=r_expert,
        oracle_return_std=r_expert_std,
        eval_episodes=eval_episodes,
        expert=expert,
        levels=levels,
        train_wall_s=wall,
    )
    manifest.save(out)
    if config.get("value_correction") is not False:
        manifest = correct_value(spec, out, verbose=False, **(value_correction or {}))
    else:
        (out / CORRECTION_FILE).unlink(missing_ok=True)
        _CACHE.pop(str(out), None)
        manifest.value_quality = value_quality(load_oracle(spec, out))
        manifest.save(out)
    if update_spec:
        record_normalisation(spec, r_random, r_expert)
    if verbose:
        print(
            f"{spec.name}: oracle {algo} {r_expert:.1f} +- {r_expert_std:.1f}, random {r_random:.1f}, "
            f"levels {[round(level.mean_return, 1) for level in levels]}, V quality "
            f"{manifest.value_quality}, {wall:.0f}s -> {out}"
        )
    return out


#: (states, untruncated Monte-Carlo returns) of one rollout set of the value-quality check
StatesAndReturns = tuple[np.ndarray, np.ndarray]


def _quality_rollouts(
    oracle: Oracle, episodes: int, seed: int, tolerance: float
) -> dict[str, StatesAndReturns]:
    """The held-out states of :func:`value_quality`: the expert's mean action, its stochastic policy and
    mixed-skill starts."""
    spec, gamma, expert = oracle.spec, oracle.gamma, oracle.policy("expert")
    # seeded action noise, and skill levels built on first use (their networks draw initial weights),
    # without touching the caller's random stream
    with th.random.fork_rng(devices=[]):
        rollouts = {
            "deterministic": expert_states_and_returns(expert, spec, gamma, episodes, seed, tolerance)
        }
        th.manual_seed(seed)
        stochastic = oracle.policy("expert", deterministic=False)
        rollouts["stochastic"] = expert_states_and_returns(stochastic, spec, gamma, episodes, seed, tolerance)
        rollouts["mixed"] = expert_states_and_returns(
            expert, spec, gamma, episodes, seed + 50_000, tolerance, behaviours=weaker_policies(oracle, seed)
        )
    return rollouts


def _quality_scores(value: Callable[[np.ndarray], np.ndarray], rollouts: dict[str, StatesAndReturns]) -> dict:
    from scipy.stats import pearsonr, spearmanr

    (x, g), (x_stoch, g_stoch), (x_mixed, g_mixed) = (
        rollouts[k] for k in ("deterministic", "stochastic", "mixed")
    )
    v, v_stoch, v_mixed = value(x), value(x_stoch), value(x_mixed)
    # transient: the lower half of the observed return range, i.e. states clearly short of the steady
    # regime (a median split would put half of the steady states in as soon as they are the majority)
    transient = g < 0.5 * (g.min() + g.max())
    return {
        "spearman": float(spearmanr(v, g).statistic),
        "pearson": float(pearsonr(v, g).statistic),
        "spearman_transient": float(spearmanr(v[transient], g[transient]).statistic),
        "states": len(v),
        "transient_states": int(transient.sum()),
        "spearman_stochastic": float(spearmanr(v_stoch, g_stoch).statistic),
        "pearson_stochastic": float(pearsonr(v_stoch, g_stoch).statistic),
        "spearman_mixed": float(spearmanr(v_mixed, g_mixed).statistic),
        "pearson_mixed": float(pearsonr(v_mixed, g_mixed).statistic),
        "mixed_states": len(v_mixed),
    }


def value_quality(
    oracle: Oracle, episodes: int = 20, seed: int = 12_345, tolerance: float = 0.01, corrected: bool = True
) -> dict[str, float]:
    """How well ``V*`` ranks held-out expert states against their Monte-Carlo discounted return.

    The critic estimates the discounted return *without* the time limit (SB3 bootstraps at
    truncations), so each state's target must not be cut off by the env's horizon either: the expert is
    rolled out for ``horizon + tail`` steps, where ``gamma ** tail <= tolerance``, and the targets are the
    discounted returns over ``tail`` steps from each of the states of the first ``horizon`` steps (a real
    termination still ends the return). Returns Spearman and Pearson correlations over those states, and
    Spearman over the *transient* states (Monte-Carlo return in the lower half of the observed range: the
    expert has not yet reached its steady regime). Once an expert sits in its steady regime (a cheetah at
    full speed), returns differ by less than the critic's error, and on chaotic envs partly by what the
    state does not determine, which drags the all-state Spearman down although ``V`` is accurate
    (Pendulum's equilibrium needed a ranking loss in its correction: :mod:`prefrl.value_correction`).

    The headline figures roll out the expert's mean action, the policy scored and used as ``V*``'s
    stand-in. ``*_stochastic`` repeat the check on rollouts that sample the expert's own stochastic
    policy: that is the policy the critic was trained to evaluate, so it separates critic error from the
    gap between the stochastic and the deterministic policy. ``*_mixed`` repeat it on mixed-skill states:
    a skill level or a random policy acts up to a random step, then the expert takes over (the states a
    ``regret`` rater evaluates ``V*`` on; targets are the expert's returns from there).
    ``corrected=False`` measures the plain critic of an oracle with a Monte-Carlo value correction.
    """
    rollouts = _quality_rollouts(oracle, episodes, seed, tolerance)
    return _quality_scores(lambda obs: oracle.value(obs, corrected=corrected), rollouts)


def value_quality_with_critic(
    oracle: Oracle, episodes: int = 20, seed: int = 12_345, tolerance: float = 0.01
) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`value_quality` of ``V*`` and of the plain critic, from one set of rollouts (the costly part)."""
    rollouts = _quality_rollouts(oracle, episodes, seed, tolerance)
    corrected = _quality_scores(oracle.value, rollouts)
    plain = _quality_scores(lambda obs: oracle.value(obs, corrected=False), rollouts)
    return corrected, plain


def correct_value(
    env: str | EnvSpec, directory: Path | None = None, verbose: bool = True, **fit_kwargs: Any
) -> OracleManifest:
    """Fit the Monte-Carlo value correction of an oracle and record it with its effect on ``value_quality``.

    The fit's settings are the env's ``value_correction`` in agents/oracle.yaml, updated by ``fit_kwargs``
    (arguments of :func:`prefrl.value_correction.fit_value_correction`: episodes, steps, ...).
    An accepted correction is written to ``value_correction.pt``; a rejected one removes any old file, so
    ``V*`` is then the plain critic. The manifest records the fit report and the re-measured
    ``value_quality`` (held-out states never used by the fit). Returns the updated manifest.
    """
    spec = load_env_spec(env) if isinstance(env, str) else env
    directory = Path(directory) if directory else oracle_dir(spec)
    _CACHE.pop(str(directory), None)
    manifest = _read_manifest(spec, directory)
    # the fit starts from the plain critic, so a missing or damaged old correction does not stop it
    oracle = Oracle(spec, replace(manifest, value_correction=None), directory)
    settings = load_oracle_config(spec.name).get("value_correction") or {}
    settings = {**settings, **fit_kwargs}
    check_keys(settings, CORRECTION_KEYS, "value correction settings")
    correction, report = fit_value_correction(oracle, **settings)
    # every argument the fit ran with (defaults included, so a later change of a default does not make
    # the record wrong): what reproduces this fit
    manifest.value_correction = {**report.to_dict(), "settings": {**CORRECTION_DEFAULTS, **settings}}
    (directory / CORRECTION_FILE).unlink(missing_ok=True)
    if report.accepted:
        save_value_correction(directory, correction)
    manifest.save(directory)  # file and manifest agree even if the quality check below is cut short
    manifest.value_quality = value_quality(Oracle(spec, manifest, directory))
    manifest.save(directory)
    _CACHE.pop(str(directory), None)
    if verbose:
        verdict = "accepted" if report.accepted else "rejected (no gain over the plain critic)"
        before, after = report.validation_spearman_critic, report.validation_spearman_corrected
        print(
            f"{spec.name}: value correction {verdict}; validation Spearman {before:.3f} -> {after:.3f}; "
            f"held-out value quality {manifest.value_quality}"
        )
    return manifest


def record_normalisation(spec: EnvSpec, r_random: float, r_oracle: float) -> None:
    """Write the measured anchors into the env's YAML (keeps its comments and layout)."""
    text = spec.path.read_text()
    for key, value in (("random_return", r_random), ("oracle_return", r_oracle)):
        text, count = re.subn(rf"(\n\s+{key}:)\s*[^\n#]*", rf"\g<1> {value:.2f}", text, count=1)
        if count != 1:
            raise OracleError(f"{spec.path}: no 'normalisation.{key}' entry to record the measured value in")
    spec.path.write_text(text)


def evaluate_oracle(env: str, episodes: int = 20, seed: int = 0) -> dict[str, Any]:
    """Re-measure every checkpoint's return and the value function's Spearman correlation."""
    oracle = load_oracle(env)
    report: dict[str, Any] = {"env": oracle.spec.name, "algo": oracle.manifest.algo}
    for name in oracle.checkpoint_names:
        mean, std = evaluate_policy(oracle.policy(name), oracle.spec, n_episodes=episodes, seed=seed)
        report[name] = {"mean_return": mean, "std_return": std}
    report["value_quality"] = value_quality(oracle)
    return report


def oracle_value_functions(spec: EnvSpec) -> tuple[Callable, Callable | None]:
    """The regret rater's default ``(V*, Q*)``: the env's shipped oracle (``Q*`` for SAC experts only)."""
    oracle = load_oracle(spec)
    return oracle.value, (oracle.q_value if oracle.manifest.algo == "sac" else None)
