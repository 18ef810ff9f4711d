"""Training an env's oracle expert on the true reward, and fitting its value correction.

``prefrl oracle train --env ENV|PATH.yaml [--out DIR]`` trains an expert (SAC from ``agents/oracle.yaml``,
or PPO with the tuned ``agents/ppo.yaml`` settings), keeps policy snapshots, picks the expert and the
skill levels from them, measures ``R_random`` / ``R_oracle`` and writes what :mod:`prefrl.oracle.loading`
reads: ``{expert,level*}.pt``, ``value_correction.pt`` and ``manifest.json`` (which records the anchors;
the env YAML is not touched) in the user folder ``<user root>/<spec name>/``
(:func:`prefrl.oracle.loading.user_oracle_dir`) or ``--out DIR``, never in the shipped checkpoints
(``prefrl oracle install`` copies a finished oracle there). The folder is staged and renamed into place
when complete (:mod:`prefrl.oracle.storage`), so an interrupted run leaves the previous oracle, if any,
as it was. The expert's value function gets its Monte-Carlo correction (:func:`correct_value`).

Progress goes to this module's logger (``prefrl oracle`` shows it): a line every ~10% of the training
steps with the mean return of recent episodes (or SB3's progress bar with ``progress_bar=True``), then
the evaluation, value-correction and value-quality phases. SAC runs are resumable: their training state
(:mod:`prefrl.oracle.training_state`) lives beside the output folder, ``<out>.training/seed<S>/``
(:func:`default_state_dir`).
"""

from __future__ import annotations

import inspect
import io
import logging
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.vec_env import VecNormalize

from prefrl.agents.on_policy import PPOAgent
from prefrl.config import load_agent_config
from prefrl.envs import EnvSpec, load_env_spec, make_vec_env
from prefrl.errors import OracleError, TrainingStateError
from prefrl.evaluation import evaluate_policy
from prefrl.oracle.loading import (
    ALGOS,
    CORRECTION_FILE,
    CRITIC_PREFIXES,
    NORM_PREFIX,
    TRAINING_ONLY_PREFIXES,
    CheckpointInfo,
    Oracle,
    OracleManifest,
    env_argument,
    file_sha256,
    is_shipped,
    normalise_obs,
    read_manifest,
    resolve_oracle_dir,
    user_oracle_dir,
)
from prefrl.oracle.quality import value_quality
from prefrl.oracle.storage import copy_oracle_files, refuse_package_tree, seal_oracle, staged_oracle_dir
from prefrl.oracle.training_state import META, SaveTrainingState, read_meta, restore_training_state
from prefrl.oracle.value_correction import ValueCorrection, fit_value_correction
from prefrl.spec_utils import check_keys, deep_update, load_yaml, shipped_spec_dir

__all__ = ["correct_value", "default_state_dir", "load_oracle_config", "train_oracle"]

logger = logging.getLogger(__name__)

ORACLE_CONFIG = shipped_spec_dir("agents") / "oracle.yaml"
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


#: progress lines per training run (without a progress bar)
PROGRESS_LINES = 10


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
            raise OracleError(f"{path} (env {env_name}): value_correction must be a mapping or false")
        check_keys(correction, CORRECTION_KEYS, f"{path} (env {env_name}) value_correction")
    return config


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


def save_value_correction(directory: Path, correction: ValueCorrection) -> None:
    """Write ``value_correction.pt`` (float32 weights and the network's width)."""
    buffer = io.BytesIO()
    hidden = correction.net[0].out_features
    th.save({"hidden": th.tensor(hidden), **correction.state_dict()}, buffer)
    (directory / CORRECTION_FILE).write_bytes(buffer.getvalue())


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


def default_state_dir(out: Path, seed: int) -> Path:
    """Where a SAC oracle run writing to ``out`` keeps its resumable training state (model, replay buffer,
    snapshots): ``<out>.training/seed<S>/``, beside the oracle folder (which is replaced as a whole)."""
    out = Path(out)
    return out.with_name(out.name + ".training") / f"seed{seed}"


class _LogProgress(BaseCallback):
    """Logs ``oracle ENV: 30000/100000 steps, mean return -812.3`` every ``total / PROGRESS_LINES`` steps."""

    def __init__(self, env_name: str, total: int):
        super().__init__()
        self.env_name, self.total = env_name, int(total)
        self.every = max(self.total // PROGRESS_LINES, 1)
        self.next_at = 0

    def _on_training_start(self) -> None:
        # a resumed run starts past 0: the next line is due at the next multiple of `every`
        self.next_at = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            episodes = [info["r"] for info in self.model.ep_info_buffer or []]
            recent = f"mean return {np.mean(episodes):.1f}" if episodes else "no episode finished yet"
            logger.info(f"oracle {self.env_name}: {self.num_timesteps}/{self.total} steps, {recent}")
            self.next_at = (self.num_timesteps // self.every + 1) * self.every
        return True


class _SnapshottingPPO(PPOAgent):
    """PPO on the true reward that keeps policy snapshots (the PPO oracle's candidate skill levels)."""

    name = "ppo"

    def __init__(
        self,
        spec: EnvSpec,
        config: dict[str, Any],
        snapshots: _SnapshotCallback,
        seed: int,
        progress: list[BaseCallback],
    ) -> None:
        self.snapshots, self.progress = snapshots, progress
        super().__init__(spec, config, None, seed)

    def extra_callbacks(self) -> list[BaseCallback]:
        return [self.snapshots, *self.progress]


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
    progress_bar: bool = False,
    trust: bool = False,
) -> tuple[BaseAlgorithm, list[Snapshot], float]:
    """Train with SB3; SAC from ``agents/oracle.yaml``, PPO with the tuned ``agents/ppo.yaml`` settings.

    SAC runs save their state to ``state_dir`` every ``SAVE_STATE_EVERY`` steps and when they end, and
    ``resume`` continues from it (``trust``: also a state an older prefrl pickled, see
    :func:`~prefrl.oracle.training_state.restore_training_state`). Progress: SB3's bar with
    ``progress_bar``, else a log line every ~10%.
    Returns the model, the policy snapshots and the wall time of all sessions.
    """
    snapshots = _SnapshotCallback(every=max(steps // 40, 1))
    progress: list[BaseCallback] = [] if progress_bar else [_LogProgress(spec.name, steps)]
    start = time.time()
    if algo == "sac":
        assert state_dir is not None
        state_dir = Path(state_dir)
        identity = {"env": spec.name, "seed": seed, "algo": algo}
        venv = make_vec_env(spec, n_envs=1, seed=seed)
        earlier_wall = 0.0
        if not resume and (state_dir / META).exists():
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
        # a resumed run is built from the same config, then gets the saved weights, optimisers, counters
        # and buffer (nothing of the state is unpickled)
        model = SAC("MlpPolicy", venv, policy_kwargs=kwargs, seed=seed, device="cpu", **config["sac"])
        if resume:
            saved, meta = restore_training_state(model, state_dir, expect=identity, trust=trust)
            snapshots.snapshots = [Snapshot(**snapshot) for snapshot in saved]
            earlier_wall = float(meta.get("wall_s", 0.0))
            logger.info(f"resuming {spec.name} from step {model.num_timesteps} ({state_dir})")
        saver = SaveTrainingState(
            state_dir,
            SAVE_STATE_EVERY,
            meta=lambda: {**identity, "wall_s": earlier_wall + time.time() - start},
            extra=lambda: [asdict(snapshot) for snapshot in snapshots.snapshots],
        )
        callbacks: list[BaseCallback] = [snapshots, saver, *progress]
        if stop_return is not None:
            callbacks.append(_stop_at_return(spec, stop_return, seed))
        if max_minutes is not None:
            callbacks.append(_StopAtWallTime(60.0 * max_minutes))
        try:
            remaining = max(steps - model.num_timesteps, 0)
            model.learn(
                remaining, callback=callbacks, progress_bar=progress_bar, reset_num_timesteps=not resume
            )
        except KeyboardInterrupt:
            # hours of SAC training are not thrown away: Ctrl-C ends training like max_minutes does
            logger.info(
                f"oracle {spec.name}: interrupted at step {model.num_timesteps}: keeping the policies "
                "reached (press Ctrl-C again to stop without writing an oracle)"
            )
        saver.save()
        return model, snapshots.snapshots, earlier_wall + time.time() - start
    if resume:
        raise OracleError("--resume is supported for SAC oracles only (PPO runs take minutes)")
    if stop_return is not None or max_minutes is not None:
        raise OracleError("stop_return and max_minutes are supported for SAC oracles only")

    ppo_config = load_agent_config("ppo", spec.name, {"ppo": config.get("ppo", {})})
    agent = _SnapshottingPPO(spec, ppo_config, snapshots, seed, progress)
    agent.progress_bar = progress_bar
    agent.learn(steps, 0, callback=None)
    return agent.model, snapshots.snapshots, time.time() - start


def _policy_kwargs_of(spec: EnvSpec, algo: str, config: dict[str, Any]) -> dict[str, Any]:
    """The (serialisable) policy kwargs the expert was built with."""
    if algo == "sac":
        return dict(config.get("policy_kwargs", {}))
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
    env: str | Path | EnvSpec,
    steps: int | None = None,
    seed: int = 0,
    algo: str | None = None,
    out: Path | None = None,
    n_levels: int = 5,
    eval_episodes: int = 20,
    verbose: bool = True,
    stop_return: float | None = None,
    max_minutes: float | None = None,
    resume: bool = False,
    state_dir: Path | None = None,
    value_correction: dict[str, Any] | None = None,
    progress_bar: bool = False,
    trust: bool = False,
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

    :param env: an env spec name, a path to a spec YAML, or an :class:`EnvSpec`.
    :param out: the oracle folder (default: the user folder, :func:`prefrl.oracle.loading.user_oracle_dir`);
        it is replaced as a whole once the new oracle is complete. The shipped checkpoints are refused.
    :param progress_bar: SB3's progress bar instead of a log line every ~10% of the steps.
    :param trust: with ``resume``, also read a training state saved by an older prefrl as SB3's pickled
        ``model.zip`` (a crafted file runs code: only for states you wrote yourself).
    :returns: the folder. ``R_random`` / ``R_oracle`` are in its manifest; the env YAML is not changed.
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
    out = Path(out) if out else user_oracle_dir(spec)
    refuse_package_tree(out, spec)
    state_dir = Path(state_dir) if state_dir else default_state_dir(out, seed)
    if algo == "sac":
        refuse_package_tree(state_dir, spec)
    logger.info(
        f"oracle {spec.name}: training {algo} for {steps} steps -> {out}"
        + (f" (training state: {state_dir})" if algo == "sac" else "")
    )
    try:
        model, snapshots, wall = _train(
            spec, algo, config, steps, seed, stop_return, max_minutes, state_dir, resume, progress_bar, trust
        )
        with staged_oracle_dir(out) as staged:
            manifest = _save_oracle(
                spec, algo, config, hyper, model, snapshots, wall, staged, steps, seed, n_levels,
                eval_episodes, stop_return, max_minutes, resume, value_correction,
            )  # fmt: skip
    except KeyboardInterrupt:
        kept = f"; resume from its training state with --resume ({state_dir})" if algo == "sac" else ""
        logger.info(f"oracle {spec.name}: interrupted: {out} left as it was{kept}")
        raise
    if verbose:
        logger.info(
            f"{spec.name}: oracle {algo} {manifest.oracle_return:.1f} +- {manifest.oracle_return_std:.1f}, "
            f"random {manifest.random_return:.1f}, levels "
            f"{[round(level.mean_return, 1) for level in manifest.levels]}, V quality "
            f"{manifest.value_quality}, {wall:.0f}s -> {out}"
        )
    return out


def _save_oracle(
    spec: EnvSpec,
    algo: str,
    config: dict[str, Any],
    hyper: dict[str, Any],
    model: BaseAlgorithm,
    snapshots: list[Snapshot],
    wall: float,
    out: Path,
    steps: int,
    seed: int,
    n_levels: int,
    eval_episodes: int,
    stop_return: float | None,
    max_minutes: float | None,
    resume: bool,
    value_correction: dict[str, Any] | None,
) -> OracleManifest:
    """Pick and measure the expert and the skill levels, write them, fit the correction, seal ``out``."""

    def evaluate_snapshot(snapshot: Snapshot, episodes: int) -> tuple[float, float]:
        model.policy.load_state_dict(snapshot.state)
        norm = {k: v.numpy() for k, v in snapshot.norm.items()}
        return evaluate_policy(
            lambda o: model.predict(normalise_obs(o, norm), deterministic=True)[0],
            spec,
            n_episodes=episodes,
            seed=seed + 10_000,
        )

    final = _snapshot(model, model.num_timesteps)
    if not snapshots or snapshots[-1].step != final.step:
        snapshots.append(final)  # a run stopped early ends between snapshots; its last policy is a level too
    screen_episodes = min(eval_episodes, SCREEN_EPISODES)
    logger.info(
        f"oracle {spec.name}: measuring the random policy and the expert ({eval_episodes} episodes each) "
        f"and screening {len(snapshots)} snapshots ({screen_episodes} episodes each)"
    )
    rng = np.random.default_rng(seed)
    low, high = spec.action_space.low, spec.action_space.high
    r_random, r_random_std = evaluate_policy(
        lambda o: rng.uniform(low, high, size=(len(o), *low.shape)),
        spec,
        n_episodes=eval_episodes,
        seed=seed + 20_000,
    )
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
        command=f"prefrl oracle train --env {env_argument(spec)} --steps {steps} --seed {seed} --algo {algo}"
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
        gym_id=spec.gym_id,
        env_kwargs=dict(spec.kwargs),
        horizon=spec.horizon,
    )
    if config.get("value_correction") is not False:
        settings = {**(config.get("value_correction") or {}), **(value_correction or {})}
        manifest = _fit_correction(spec, out, manifest, settings)
    else:
        logger.info(f"oracle {spec.name}: measuring the value quality (no value correction configured)")
        manifest.value_quality = value_quality(Oracle(spec, manifest, out))
    return seal_oracle(out, manifest)


def _fit_correction(
    spec: EnvSpec, directory: Path, manifest: OracleManifest, settings: dict[str, Any]
) -> OracleManifest:
    """Fit the value correction of the expert in ``directory`` (a staged folder), write it if accepted
    and measure the value quality; returns the manifest recording both (not yet sealed)."""
    check_keys(settings, CORRECTION_KEYS, "value correction settings")
    (directory / CORRECTION_FILE).unlink(missing_ok=True)
    # the fit starts from the plain critic
    manifest = replace(manifest, value_correction=None, value_quality=None, files={}, complete=False)
    oracle = Oracle(spec, manifest, directory)
    logger.info(f"oracle {spec.name}: fitting the value correction of its expert")
    correction, report = fit_value_correction(oracle, **settings)
    # every argument the fit ran with (defaults included, so a later change of a default does not make
    # the record wrong): what reproduces this fit; and the expert it belongs to
    manifest.value_correction = {
        **report.to_dict(),
        "settings": {**CORRECTION_DEFAULTS, **settings},
        "expert_sha256": file_sha256(directory / manifest.expert.file),
    }
    if report.accepted:
        save_value_correction(directory, correction)
    verdict = "accepted" if report.accepted else "rejected (no gain over the plain critic)"
    before, after = report.validation_spearman_critic, report.validation_spearman_corrected
    logger.info(
        f"oracle {spec.name}: value correction {verdict}; validation Spearman {before:.3f} -> {after:.3f}; "
        "measuring the value quality"
    )
    manifest.value_quality = value_quality(Oracle(spec, manifest, directory))
    return manifest


def correct_value(
    env: str | Path | EnvSpec,
    directory: Path | None = None,
    out: Path | None = None,
    verbose: bool = True,
    **fit_kwargs: Any,
) -> OracleManifest:
    """Fit the Monte-Carlo value correction of an oracle and record it with its effect on ``value_quality``.

    The fit's settings are the env's ``value_correction`` in agents/oracle.yaml, updated by ``fit_kwargs``
    (arguments of :func:`prefrl.oracle.value_correction.fit_value_correction`: episodes, steps, ...).
    An accepted correction is written to ``value_correction.pt`` with the sha256 of the expert it was fitted
    to; a rejected one leaves none, so ``V*`` is then the plain critic. The manifest records the fit report
    and the re-measured ``value_quality`` (held-out states never used by the fit).

    :param directory: the oracle to correct (default: the one :func:`~prefrl.oracle.loading.load_oracle`
        uses, user folder before shipped). Its old value correction may be missing or damaged.
    :param out: where the corrected oracle goes (default: ``directory`` itself when given and not shipped,
        else the user folder); written as a whole, staged and renamed into place. Never the shipped tree.
    :returns: the new (sealed) manifest.
    """
    spec = load_env_spec(env)
    source = resolve_oracle_dir(spec, Path(directory) if directory else None)[0]
    if out is not None:
        target = Path(out)
    elif directory is not None and not is_shipped(source):
        target = source
    else:
        target = user_oracle_dir(spec)
    refuse_package_tree(target, spec)
    # the old correction is replaced, so only the expert and the levels must be intact
    manifest = read_manifest(spec, source, skip=(CORRECTION_FILE,))
    settings = load_oracle_config(spec.name).get("value_correction") or {}
    settings = {**settings, **fit_kwargs}
    check_keys(settings, CORRECTION_KEYS, "value correction settings")
    logger.info(f"{spec.name}: correcting the value function of the oracle in {source} -> {target}")
    with staged_oracle_dir(target) as staged:
        copy_oracle_files(manifest, source, staged, correction=False)
        manifest = seal_oracle(staged, _fit_correction(spec, staged, manifest, settings))
    if verbose:
        logger.info(f"{spec.name}: held-out value quality {manifest.value_quality} -> {target}")
    return manifest
