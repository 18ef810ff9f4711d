"""Loading an env's oracle expert: its policy checkpoints and its value function.

The oracle supplies three things the rest of the testbed needs:

* ``V*(s)`` (and ``Q*(s, a)`` for a SAC expert) for the ``regret`` rater;
* ``R_oracle`` (with ``R_random``) anchoring the normalised score ``100 (R - R_rand) / (R_orc - R_rand)``;
* policy checkpoints at several skill levels between random and expert, for offline datasets (CPL).

Checkpoints are compact (network weights only, no optimiser or replay buffer). An env's oracle is looked
up, first match wins (:func:`resolve_oracle_dir`):

1. a directory given explicitly (``load_oracle(spec, directory=...)``, ``--from DIR``);
2. the user folder ``<user root>/<spec name>/`` (:func:`user_oracle_dir`), where ``prefrl oracle train``
   writes; the user root is ``$PREFRL_ORACLE_DIR``, else ``$XDG_CACHE_HOME/prefrl/oracles``, else
   ``~/.cache/prefrl/oracles`` (:func:`user_oracle_root`). A user folder that exists must hold a complete
   oracle: a damaged one is an error, never a silent fall-back to the shipped expert;
3. the shipped checkpoints ``prefrl/oracle/checkpoints/<checkpoint>/`` (:data:`CHECKPOINT_ROOT`; the env
   spec's ``oracle.checkpoint`` names the folder, default the spec name; ``prefrl oracle install`` writes
   them).

The loader logs (``logging``, INFO) which folder it used::

    oracle = load_oracle(load_env_spec("pendulum"))
    oracle.value(obs)            # V*(s), [N]
    oracle.q_value(obs, act)     # Q*(s, a), [N] (SAC experts)
    oracle.policy("expert")      # callable obs -> action; also "level0" .. "levelK" (worst to best)

**Complete folders only.** ``manifest.json`` is written last and seals the folder: ``"complete": true``
and ``files``, the sha256 of every file the oracle uses (expert, levels, value correction). The loader
refuses (:class:`~prefrl.errors.OracleError`, one line naming the folder and the fix) a folder whose
manifest is missing or not complete, or whose files are missing or differ from their recorded hash, so an
interrupted or hand-mixed folder is never half loaded. An accepted value correction records the sha256 of
the expert it was fitted to (``value_correction.expert_sha256``); next to any other expert it is refused,
not ignored (the stricter choice: ``regret`` never silently switches to the plain critic). Writers stage a
folder and rename it into place (:mod:`prefrl.oracle.storage`).

For a SAC expert ``V(s) = mean over a ~ pi(.|s) of min_j Q_j(s, a)`` (``n_action_samples`` draws, the same
standard-normal draws for every state); for a PPO expert ``V`` is its critic. Where the checkpoint has an
accepted Monte-Carlo correction (:mod:`prefrl.oracle.value_correction`), ``V`` and ``Q`` add its
``delta(s)``. Everything loads without pickle (``torch.load(weights_only=True)`` and JSON). Loading never
imports training code: :mod:`prefrl.oracle.training` writes what this reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm

from prefrl.envs import ENV_DIR, EnvSpec, load_env_spec, make_env
from prefrl.errors import OracleError
from prefrl.networks import sb3_policy_kwargs
from prefrl.oracle.value_correction import ValueCorrection

__all__ = [
    "CHECKPOINT_ROOT",
    "ORACLE_DIR_ENV",
    "CheckpointInfo",
    "Oracle",
    "OracleManifest",
    "confined_path",
    "env_argument",
    "file_sha256",
    "forget_oracle",
    "is_plain_name",
    "is_shipped",
    "load_oracle",
    "load_value_correction",
    "normalise_obs",
    "oracle_dir",
    "oracle_value_functions",
    "read_manifest",
    "resolve_oracle_dir",
    "shipped_oracle_dir",
    "user_oracle_dir",
    "user_oracle_root",
    "verify_oracle",
]

logger = logging.getLogger(__name__)

#: the shipped experts, one folder per env (written by ``prefrl oracle install`` only)
CHECKPOINT_ROOT = Path(__file__).resolve().parent / "checkpoints"
ALGOS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "ppo": PPO}

#: environment variable naming the user oracle root (see :func:`user_oracle_root`)
ORACLE_DIR_ENV = "PREFRL_ORACLE_DIR"


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
    #: the Monte-Carlo value correction's fit report (``accepted``: whether ``V``/``Q`` use it;
    #: ``expert_sha256``: the expert checkpoint it was fitted to)
    value_correction: dict[str, Any] | None = None
    #: the gymnasium id the expert was trained on (checked against the spec when set)
    gym_id: str | None = None
    #: the env kwargs and horizon it was trained with (checked when set: a spec with other dynamics or
    #: another time limit, e.g. a user file named like a built-in, must not use this expert's V*)
    env_kwargs: dict[str, Any] | None = None
    horizon: int | None = None
    #: file name -> sha256 of every file the oracle uses; written last, with ``complete``
    files: dict[str, str] = field(default_factory=dict)
    #: True once every file was written: a folder without it is never loaded
    complete: bool = False

    @staticmethod
    def from_dict(data: dict[str, Any], where: str = "oracle manifest") -> OracleManifest:
        """The manifest of a ``manifest.json`` mapping.

        :param where: names the file in errors.
        :raises OracleError: a file name that is not a plain name inside the oracle folder, or an
            unknown algorithm
        """
        data = dict(data)
        if not isinstance(data.get("levels"), list):
            # every manifest prefrl writes lists its skill levels; without them datasets would silently
            # be built from the expert alone
            raise OracleError(f"{where} has no 'levels' list (a damaged or foreign manifest)")
        data["expert"] = CheckpointInfo(**data["expert"])
        data["levels"] = [CheckpointInfo(**level) for level in data["levels"]]
        manifest = OracleManifest(**data)
        names = [manifest.expert.file, *(level.file for level in manifest.levels), *manifest.files]
        for name in names:
            if not is_plain_name(name):
                raise OracleError(
                    f"{where} names the file {name!r}, which is not a plain file name inside the oracle "
                    "folder: refused (a crafted or damaged manifest)"
                )
        if manifest.algo not in ALGOS:
            raise OracleError(f"{where}: unknown algo {manifest.algo!r}; expected one of {sorted(ALGOS)}")
        return manifest

    def save(self, directory: Path) -> None:
        """Write ``manifest.json`` into the checkpoint ``directory`` (a temporary file renamed into place).

        ``complete`` and ``files`` are written as they are: :func:`prefrl.oracle.storage.seal_oracle`
        sets them.
        """
        path = Path(directory) / MANIFEST
        partial = path.with_name(MANIFEST + ".partial")
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(partial, path)

    def used_files(self) -> list[str]:
        """The files the oracle loads: expert, skill levels and an accepted value correction."""
        names = [self.expert.file, *(level.file for level in self.levels)]
        return [*names, CORRECTION_FILE] if self.correction_accepted else names

    @property
    def correction_accepted(self) -> bool:
        return bool((self.value_correction or {}).get("accepted"))


def is_plain_name(name: Any) -> bool:
    """Whether ``name`` is one plain file or folder name: no path separator, not ``.`` or ``..``."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(sep in name for sep in ("/", "\\", "\x00"))
    )


def confined_path(root: Path, name: str, what: str) -> Path:
    """``root / name``, refused unless ``name`` is a plain name whose resolved path stays inside ``root``.

    :param what: what ``name`` is, for the error (e.g. ``"oracle.checkpoint"``)
    :raises OracleError: a path (``../x``, ``/etc``) or a link leading out of ``root``
    """
    root = Path(root)
    path = root / name if is_plain_name(name) else None
    if path is None or not path.resolve().is_relative_to(root.resolve()):
        raise OracleError(f"{what} {name!r} is not a plain name inside {root}: refused")
    return path


def env_argument(spec: EnvSpec) -> str:
    """What to pass as ``--env`` for this spec: its name for a spec in ``envs/``, else its file."""
    if spec.path is not None and spec.path.resolve() != (ENV_DIR / f"{spec.name}.yaml").resolve():
        return str(spec.path)
    return spec.name


def _how_to_train(spec: EnvSpec) -> str:
    return f"train one with `prefrl oracle train --env {env_argument(spec)}`"


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

    def __init__(
        self,
        spec: EnvSpec,
        manifest: OracleManifest,
        directory: Path,
        n_action_samples: int = 16,
        source: str = "explicit",
    ):
        """Load the weights of a folder as they are; :func:`load_oracle` checks the folder first.

        :param source: where the folder was found: ``explicit``, ``user`` or ``shipped``.
        """
        self.spec = spec
        self.manifest = manifest
        self.directory = Path(directory)
        self.source = source
        self.n_action_samples = n_action_samples
        self._models: dict[str, BaseAlgorithm] = {}
        self._norms: dict[str, dict[str, np.ndarray]] = {}
        self.model = self._model("expert")
        self.norm = self._norms["expert"]
        accepted = manifest.correction_accepted
        self.correction = load_value_correction(self.directory, spec) if accepted else None

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
            path = confined_path(self.directory, self._info(name).file, "oracle checkpoint file")
            self._norms[name] = _load_weights(model, path, self.spec)
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
    fix = _how_to_correct(spec, directory)
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


def _how_to_correct(spec: EnvSpec, directory: Path) -> str:
    source = "" if Path(directory) == resolve_oracle_dir(spec)[0] else f" --from {directory}"
    return f"recompute it with `prefrl oracle correct-value --env {env_argument(spec)}{source}`"


def user_oracle_root() -> Path:
    """Where ``prefrl oracle train`` writes: ``$PREFRL_ORACLE_DIR``, else ``$XDG_CACHE_HOME/prefrl/oracles``,
    else ``~/.cache/prefrl/oracles`` (one folder per env spec name below it)."""
    given = os.environ.get(ORACLE_DIR_ENV)
    if given:
        return Path(given).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    # the XDG spec: a relative path is invalid and must be ignored
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "prefrl" / "oracles"


def user_oracle_dir(spec: EnvSpec) -> Path:
    """The spec's user oracle folder, ``<user root>/<spec name>/`` (also for a spec read from a file)."""
    return user_oracle_root() / spec.name


def shipped_oracle_dir(spec: EnvSpec) -> Path:
    """The spec's shipped oracle: ``oracle.checkpoint`` in the spec (default the spec name), a folder of
    :data:`CHECKPOINT_ROOT`.

    :raises OracleError: the name is a path or leads out of :data:`CHECKPOINT_ROOT`
    """
    name = (spec.oracle or {}).get("checkpoint") or spec.name
    return confined_path(CHECKPOINT_ROOT, name, f"env '{spec.name}': oracle.checkpoint")


def is_shipped(directory: Path) -> bool:
    """Whether ``directory`` lies in the shipped checkpoint tree (:data:`CHECKPOINT_ROOT`)."""
    return Path(directory).resolve().is_relative_to(CHECKPOINT_ROOT.resolve())


def _holds_anything(directory: Path) -> bool:
    return directory.is_dir() and any(directory.iterdir())


def resolve_oracle_dir(spec: EnvSpec, directory: Path | None = None) -> tuple[Path, str]:
    """``(folder, source)`` of the oracle :func:`load_oracle` uses (``explicit``, ``user`` or ``shipped``).

    An explicit ``directory`` wins; then the user folder, if it holds anything (it must then be a
    complete oracle: :func:`verify_oracle`); then the shipped checkpoints.
    """
    if directory is not None:
        return Path(directory), "shipped" if is_shipped(Path(directory)) else "explicit"
    user = user_oracle_dir(spec)
    if _holds_anything(user):
        return user, "user"
    return shipped_oracle_dir(spec), "shipped"


def oracle_dir(spec: EnvSpec) -> Path:
    """The folder the spec's oracle is loaded from: the user folder, else the shipped one."""
    return resolve_oracle_dir(spec)[0]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: (folder, settings of the spec it was checked against) -> oracle: a spec with other settings (a user file
#: named like a built-in) is checked again rather than handed the cached oracle
_CACHE: dict[tuple[str, str], Oracle] = {}


def forget_oracle(directory: Path) -> None:
    """Drop the cached oracle loaded from ``directory`` (after its files were rewritten)."""
    for key in [k for k in _CACHE if k[0] == str(directory)]:
        del _CACHE[key]


def load_oracle(spec: EnvSpec | str, directory: Path | None = None) -> Oracle:
    """Load (and cache) an env's oracle: ``directory``, else the user folder, else the shipped one.

    The folder must be complete (:func:`verify_oracle`); a clear :class:`OracleError` otherwise, or if
    there is none. Logs (INFO) which folder was used.
    """
    spec = load_env_spec(spec) if isinstance(spec, str) else spec
    directory, source = resolve_oracle_dir(spec, directory)
    key = (str(directory), repr((spec.gym_id, sorted(spec.kwargs.items()), spec.horizon)))
    if key not in _CACHE:
        manifest = read_manifest(spec, directory)
        _CACHE[key] = Oracle(spec, manifest, directory, source=source)
        logger.info(f"{spec.name}: using the {source} oracle in {directory}")
    return _CACHE[key]


def with_oracle_anchors(spec: EnvSpec) -> EnvSpec:
    """``spec``, or a copy with the normalisation anchors its oracle measured when the spec has none.

    A user spec gets anchors by training an oracle (``prefrl oracle train`` records them in the oracle's
    manifest, not in the spec file). A spec with anchors, or without a usable oracle, is returned as is.
    """
    if spec.has_normalisation:
        return spec
    try:
        manifest = load_oracle(spec).manifest
    except OracleError:
        return spec
    logger.info(f"{spec.name}: normalising scores with the anchors of its oracle ({manifest.command})")
    anchors = {"random_return": manifest.random_return, "oracle_return": manifest.oracle_return}
    return dataclasses.replace(spec, **anchors)


def _repair_hint(spec: EnvSpec, directory: Path) -> str:
    """How to get a usable oracle back in place of a damaged ``directory``."""
    if is_shipped(directory):
        return f"the shipped oracle is damaged: reinstall prefrl (or `git checkout -- {directory}`)"
    out = "" if directory == user_oracle_dir(spec) else f" --out {directory}"
    return f"re-run `prefrl oracle train --env {env_argument(spec)}{out}` or delete {directory}"


def read_manifest(
    spec: EnvSpec, directory: Path, verify: bool = True, skip: Iterable[str] = ()
) -> OracleManifest:
    """The manifest of the oracle in ``directory``, checked by :func:`verify_oracle` unless ``verify=False``.

    :param skip: files not to check (``correct-value`` replaces the value correction, so a damaged one
        does not stop it).
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        if not _holds_anything(directory):
            where = f"at {directory}"
            if directory == shipped_oracle_dir(spec):
                where += f" (nor in the user folder {user_oracle_dir(spec)})"
            raise OracleError(f"no oracle for env '{spec.name}' {where}; {_how_to_train(spec)}")
        raise OracleError(
            f"oracle folder {directory} has no {MANIFEST}: it is incomplete (an interrupted write?); "
            f"{_repair_hint(spec, directory)}"
        )
    try:
        manifest = OracleManifest.from_dict(json.loads(manifest_path.read_text()), str(manifest_path))
    except OracleError:
        raise
    except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as e:
        reason = (str(e).splitlines() or [""])[0][:100]
        raise OracleError(
            f"oracle manifest {manifest_path} is corrupted ({reason}); {_repair_hint(spec, directory)}"
        ) from None
    if verify:
        verify_oracle(spec, directory, manifest, skip)
    return manifest


def verify_oracle(spec: EnvSpec, directory: Path, manifest: OracleManifest, skip: Iterable[str] = ()) -> None:
    """Refuse a folder that is not one complete oracle, with one line naming the folder and the fix.

    Checks: the manifest is marked complete; it lists every file the oracle uses; each listed file exists
    with its recorded sha256; an accepted value correction was fitted to this expert; the expert was
    trained on the spec's gymnasium env.
    """
    directory, skip = Path(directory), set(skip)
    hint = _repair_hint(spec, directory)
    if not manifest.complete or not manifest.files:
        raise OracleError(
            f"oracle folder {directory} is incomplete (its {MANIFEST} is not marked complete: an "
            f"interrupted write, or written by an older prefrl); {hint}"
        )
    if manifest.gym_id is not None and manifest.gym_id != spec.gym_id:
        raise OracleError(
            f"the oracle in {directory} was trained on {manifest.gym_id}, env '{spec.name}' is "
            f"{spec.gym_id}; {_how_to_train(spec)}"
        )
    trained = {"kwargs": manifest.env_kwargs, "horizon": manifest.horizon}
    differing = [k for k, v in trained.items() if v is not None and v != getattr(spec, k)]
    if differing:
        shown = ", ".join(f"{k} {trained[k]!r} (spec: {getattr(spec, k)!r})" for k in differing)
        raise OracleError(
            f"the oracle in {directory} was trained with other env settings than spec '{spec.name}' "
            f"({spec.path}): {shown}; {_how_to_train(spec)}"
        )
    unlisted = [name for name in manifest.used_files() if name not in manifest.files]
    if unlisted:
        raise OracleError(
            f"oracle folder {directory} is incomplete ({MANIFEST} does not list {unlisted}); {hint}"
        )
    for name, expected in manifest.files.items():
        if name in skip:
            continue
        fix = _how_to_correct(spec, directory) if name == CORRECTION_FILE else hint
        path = confined_path(directory, name, f"{MANIFEST} file")
        if not path.is_file():
            raise OracleError(f"oracle folder {directory} is incomplete: {name} is missing; {fix}")
        if file_sha256(path) != expected:
            raise OracleError(
                f"oracle folder {directory} is damaged: {name} differs from the file its {MANIFEST} "
                f"recorded (truncated or replaced); {fix}"
            )
    if manifest.correction_accepted and CORRECTION_FILE not in skip:
        fitted_to = (manifest.value_correction or {}).get("expert_sha256")
        if fitted_to != manifest.files[manifest.expert.file]:
            raise OracleError(
                f"the value correction in {directory} was fitted to another expert than its "
                f"{manifest.expert.file}; {_how_to_correct(spec, directory)}"
            )


def oracle_value_functions(spec: EnvSpec) -> tuple[Callable, Callable | None]:
    """The regret rater's default ``(V*, Q*)``: the env's oracle (``Q*`` for SAC experts only)."""
    oracle = load_oracle(spec)
    return oracle.value, (oracle.q_value if oracle.manifest.algo == "sac" else None)
