"""A learned reward model as a run artefact: saved with everything needed to use it again, loaded back as
a reward for any SB3 algorithm.

Agents that learn a reward (``rm_ppo``, ``heron``) write two files into their run directory when they
save (:func:`save_reward_model`)::

    reward_model.pt     the ensemble's weights and input normaliser: a plain state dict of tensors
                        (``torch.save``), read back with ``torch.load(weights_only=True)``, which never
                        runs code from the file
    reward_model.json   what rebuilds and uses it: network architecture (members, hidden sizes,
                        activation), reward inputs (obs / obs_act / obs_factors) and feature dimension,
                        observation / action spaces and reward factors it was trained on, the input
                        normaliser's mean and std, the reward wrapper's output normalisation (running
                        mean, var, count, epsilon), the env spec name and gym id, and the weights
                        file's SHA-256

Using it::

    import prefrl
    from prefrl.envs import make_vec_env
    from stable_baselines3 import SAC

    venv = prefrl.load_reward_model("runs/pendulum/rm_ppo/partial_return/seed0", make_vec_env("pendulum"))
    SAC("MlpPolicy", venv).learn(10_000)      # SAC optimises the learned reward

* :func:`load_reward_model` - the learned reward (ensemble mean, normalised with the *saved* output
  statistics, frozen unless ``update_normalization=True``) replacing the env reward of a VecEnv: a
  :class:`~prefrl.rollout.LearnedRewardVecEnvWrapper`. The true reward stays in ``info["true_reward"]``,
  the raw ensemble mean in ``info["learned_reward"]``. Wrap the *raw* VecEnv (observation normalisation
  such as ``VecNormalize`` goes above it: the model was trained on raw observations). A model on
  ``obs_factors`` (heron's default) needs the env's reward factors in ``info["factors"]``:
  :func:`prefrl.envs.make_vec_env` provides them (:class:`~prefrl.envs.RewardFactorWrapper`).
* :func:`load_reward_fn` - the same reward as a function of arrays, ``reward(obs, act, factors=None)``
  (e.g. to relabel an offline dataset).
* :func:`load_reward_ensemble` - the :class:`~prefrl.reward_model.RewardEnsemble` itself and the parsed
  description (:class:`RewardModelInfo`).

Bad input is one line: a run directory without a reward model, a damaged or edited file
(:class:`~prefrl.errors.RunDirError`); a VecEnv whose spaces or factors do not match the model's
(:class:`~prefrl.errors.SpecError`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize

from prefrl.atomic_files import write_atomic
from prefrl.envs import RewardFactorWrapper, make_vec_env
from prefrl.errors import RunDirError, SpecError
from prefrl.networks import activation as activation_class
from prefrl.reward_model import REWARD_INPUTS, RewardEnsemble, feature_dim, reward_features
from prefrl.rollout import LearnedRewardVecEnvWrapper
from prefrl.run_dir import CONFIG_FILE, load_run_env_spec, read_run_config, write_json

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "REWARD_MODEL_FILE",
    "REWARD_WEIGHTS_FILE",
    "RewardFunction",
    "RewardModelInfo",
    "load_reward_ensemble",
    "load_reward_fn",
    "load_reward_model",
    "read_reward_model_info",
    "save_reward_model",
]

#: the description of a saved reward model, in the run directory
REWARD_MODEL_FILE = "reward_model.json"
#: its weights (a state dict of tensors only)
REWARD_WEIGHTS_FILE = "reward_model.pt"
#: ``format`` field of the description
FORMAT = "prefrl.reward_model"
#: ``format_version`` written by this prefrl; a description of another version is refused
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------
# The description
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardModelInfo:
    """A saved reward model's description (``reward_model.json``), validated.

    :param inputs: reward-model input mode, one of :data:`~prefrl.reward_model.REWARD_INPUTS`
    :param input_dim: ``D``, per-step features
    :param num_members: ensemble size ``K``
    :param net_arch: hidden layer sizes of each member
    :param activation: hidden activation name
    :param observation_shape: of the env it was trained on
    :param action_shape: idem
    :param action_low: bounds the actions are clipped to before they enter the model
    :param action_high: idem
    :param factor_names: the env spec's reward factors (the ``F`` trailing inputs for ``obs_factors``)
    :param input_mean: the ensemble's input normaliser, ``[D]``
    :param input_std: idem
    :param reward_normalization: the reward wrapper's output normalisation (``normalize``, ``epsilon``,
        ``mean``, ``var``, ``count``; see
        :meth:`~prefrl.rollout.LearnedRewardVecEnvWrapper.normalization_state`)
    :param env_spec: env spec name
    :param gym_id: gymnasium id of the env
    :param agent: the agent that learned it (``rm_ppo``, ``heron``, ...)
    :param weights_file: the weights file name, next to the description
    :param weights_sha256: its SHA-256
    :param path: where the description was read from (``None`` when built in memory)
    """

    inputs: str
    input_dim: int
    num_members: int
    net_arch: tuple[int, ...]
    activation: str
    observation_shape: tuple[int, ...]
    action_shape: tuple[int, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    factor_names: tuple[str, ...]
    input_mean: tuple[float, ...]
    input_std: tuple[float, ...]
    reward_normalization: dict[str, Any]
    env_spec: str
    gym_id: str
    agent: str | None
    weights_file: str
    weights_sha256: str
    path: Path | None = None

    @property
    def obs_dim(self) -> int:
        return math.prod(self.observation_shape)

    @property
    def act_dim(self) -> int:
        return math.prod(self.action_shape)

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)

    def architecture(self) -> dict[str, Any]:
        """``RewardEnsemble(**info.architecture())`` rebuilds the saved ensemble's shape."""
        return {
            "inputs": self.inputs,
            "input_dim": self.input_dim,
            "num_members": self.num_members,
            "net_arch": list(self.net_arch),
            "activation": self.activation,
        }

    def to_json(self) -> dict[str, Any]:
        """The JSON mapping written to ``reward_model.json`` (:func:`_parse_info` reads it back)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "agent": self.agent,
            "env": {"spec": self.env_spec, "gym_id": self.gym_id},
            "architecture": self.architecture(),
            "features": {
                "inputs": self.inputs,
                "dim": self.input_dim,
                "obs_dim": self.obs_dim,
                "act_dim": self.act_dim,
                "factor_names": list(self.factor_names),
            },
            "spaces": {
                "observation_shape": list(self.observation_shape),
                "action_shape": list(self.action_shape),
                "action_low": list(self.action_low),
                "action_high": list(self.action_high),
            },
            "input_normalization": {"mean": list(self.input_mean), "std": list(self.input_std)},
            "reward_normalization": dict(self.reward_normalization),
            "weights": {"file": self.weights_file, "sha256": self.weights_sha256},
        }


def _floats(array: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in np.asarray(array, dtype=np.float64).reshape(-1))


def _box(space: Any, what: str) -> spaces.Box:
    if not isinstance(space, spaces.Box):
        raise SpecError(f"a reward model needs a Box {what} space, got {space}")
    return space


# ---- parsing (every access checked: a damaged or edited file is one RunDirError line) -------------


class _Reader:
    """Typed access to the parsed JSON, naming the file and key of anything wrong."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str) -> RunDirError:
        return RunDirError(f"{self.path}: {message}; the file is damaged or was edited by hand")

    def get(self, data: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(data, dict) or key not in data:
            raise self.fail(f"missing '{where}{key}'")
        value = data[key]
        # bool is an int subclass: never accept it for a number
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise self.fail(f"'{where}{key}' has the wrong type ({type(value).__name__})")
        return value

    def ints(self, data: Any, key: str, where: str, minimum: int = 0) -> tuple[int, ...]:
        values = self.get(data, key, list, where)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values):
            raise self.fail(f"'{where}{key}' must be a list of integers >= {minimum}")
        return tuple(values)

    def numbers(self, data: Any, key: str, where: str, length: int | None = None) -> tuple[float, ...]:
        values = self.get(data, key, list, where)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise self.fail(f"'{where}{key}' must be a list of numbers")
        if length is not None and len(values) != length:
            raise self.fail(f"'{where}{key}' has {len(values)} entries, expected {length}")
        return tuple(float(v) for v in values)

    def number(self, data: Any, key: str, where: str) -> float:
        value = float(self.get(data, key, (int, float), where))
        if not math.isfinite(value):
            raise self.fail(f"'{where}{key}' is not finite")
        return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _parse_info(data: Any, path: Path) -> RewardModelInfo:
    r = _Reader(path)
    if not isinstance(data, dict):
        raise r.fail("not a JSON object")
    if data.get("format") != FORMAT:
        raise r.fail(f"not a prefrl reward model description ('format' is not '{FORMAT}')")
    version = r.get(data, "format_version", int, "")
    if version != FORMAT_VERSION:
        raise RunDirError(
            f"{path}: reward model format version {version}, this prefrl reads version {FORMAT_VERSION}"
        )
    arch = r.get(data, "architecture", dict, "")
    inputs = r.get(arch, "inputs", str, "architecture.")
    if inputs not in REWARD_INPUTS:
        raise r.fail(f"'architecture.inputs' is '{inputs}', not one of {', '.join(REWARD_INPUTS)}")
    input_dim = r.get(arch, "input_dim", int, "architecture.")
    num_members = r.get(arch, "num_members", int, "architecture.")
    net_arch = r.ints(arch, "net_arch", "architecture.", minimum=1)
    activation = r.get(arch, "activation", str, "architecture.")
    try:
        activation_class(activation, "architecture.activation")
    except SpecError as e:
        raise r.fail(str(e)) from None
    if input_dim < 1 or num_members < 1:
        raise r.fail("'architecture.input_dim' and 'architecture.num_members' must be >= 1")

    space = r.get(data, "spaces", dict, "")
    obs_shape = r.ints(space, "observation_shape", "spaces.")
    act_shape = r.ints(space, "action_shape", "spaces.")
    act_dim = math.prod(act_shape)
    action_low = r.numbers(space, "action_low", "spaces.", act_dim)
    action_high = r.numbers(space, "action_high", "spaces.", act_dim)

    features = r.get(data, "features", dict, "")
    factor_names = r.get(features, "factor_names", list, "features.")
    if not all(isinstance(name, str) for name in factor_names):
        raise r.fail("'features.factor_names' must be a list of names")
    expected = feature_dim(inputs, math.prod(obs_shape), act_dim, len(factor_names))
    if input_dim != expected:
        raise r.fail(
            f"'architecture.input_dim' is {input_dim} but inputs '{inputs}' of these spaces and factors "
            f"give {expected}"
        )

    norm_in = r.get(data, "input_normalization", dict, "")
    input_mean = r.numbers(norm_in, "mean", "input_normalization.", input_dim)
    input_std = r.numbers(norm_in, "std", "input_normalization.", input_dim)

    norm_out = r.get(data, "reward_normalization", dict, "")
    where = "reward_normalization."
    reward_normalization = {
        "normalize": r.get(norm_out, "normalize", bool, where),
        "epsilon": r.number(norm_out, "epsilon", where),
        "mean": r.number(norm_out, "mean", where),
        "var": r.number(norm_out, "var", where),
        "count": r.number(norm_out, "count", where),
    }
    if reward_normalization["var"] < 0 or reward_normalization["epsilon"] < 0:
        raise r.fail("'reward_normalization.var' and '.epsilon' must be >= 0")

    env = r.get(data, "env", dict, "")
    weights = r.get(data, "weights", dict, "")
    weights_file = r.get(weights, "file", str, "weights.")
    if Path(weights_file).name != weights_file:
        raise r.fail("'weights.file' must be a file name next to the description")
    agent = data.get("agent")
    return RewardModelInfo(
        inputs=inputs,
        input_dim=input_dim,
        num_members=num_members,
        net_arch=net_arch,
        activation=activation,
        observation_shape=obs_shape,
        action_shape=act_shape,
        action_low=action_low,
        action_high=action_high,
        factor_names=tuple(factor_names),
        input_mean=input_mean,
        input_std=input_std,
        reward_normalization=reward_normalization,
        env_spec=r.get(env, "spec", str, "env."),
        gym_id=r.get(env, "gym_id", str, "env."),
        agent=agent if isinstance(agent, str) else None,
        weights_file=weights_file,
        weights_sha256=r.get(weights, "sha256", str, "weights."),
        path=path,
    )


# --------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------


def save_reward_model(
    ensemble: RewardEnsemble,
    directory: str | Path,
    *,
    env_spec: EnvSpec,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    normalization: Mapping[str, Any] | None = None,
    agent: str | None = None,
) -> Path:
    """Write ``ensemble`` into ``directory`` as ``reward_model.pt`` + ``reward_model.json``; return the
    description's path.

    The weights go first and the description last (both atomically), so a description always names
    complete weights.

    :param ensemble: the trained reward model
    :param directory: the run directory (created if missing)
    :param env_spec: the env spec it was trained on (its name, gym id and reward factors are recorded)
    :param observation_space: the raw observation space the model saw (Box)
    :param action_space: the action space (Box; actions are clipped to it before entering the model)
    :param normalization: the reward wrapper's output normalisation,
        :meth:`~prefrl.rollout.LearnedRewardVecEnvWrapper.normalization_state`; ``None`` = no output
        normalisation (the raw ensemble mean is the reward)
    :param agent: the agent name, for the record
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    obs_space = _box(observation_space, "observation")
    act_space = _box(action_space, "action")
    if normalization is None:
        normalization = {"normalize": False, "epsilon": 1e-8, "mean": 0.0, "var": 1.0, "count": 0.0}
    # a plain dict of detached CPU tensors: torch.load(weights_only=True) reads it without running code
    state = {key: value.detach().cpu().clone() for key, value in ensemble.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    weights = directory / REWARD_WEIGHTS_FILE
    write_atomic(weights, payload)
    info = RewardModelInfo(
        inputs=ensemble.inputs,
        input_dim=ensemble.input_dim,
        num_members=ensemble.num_members,
        net_arch=tuple(ensemble.net_arch),
        activation=ensemble.activation,
        observation_shape=tuple(int(n) for n in obs_space.shape),
        action_shape=tuple(int(n) for n in act_space.shape),
        action_low=_floats(act_space.low),
        action_high=_floats(act_space.high),
        factor_names=tuple(env_spec.factor_names),
        input_mean=_floats(ensemble.input_mean),
        input_std=_floats(ensemble.input_std),
        reward_normalization={
            "normalize": bool(normalization["normalize"]),
            "epsilon": float(normalization["epsilon"]),
            "mean": float(normalization["mean"]),
            "var": float(normalization["var"]),
            "count": float(normalization["count"]),
        },
        env_spec=env_spec.name,
        gym_id=env_spec.gym_id,
        agent=agent,
        weights_file=REWARD_WEIGHTS_FILE,
        weights_sha256=hashlib.sha256(payload).hexdigest(),
    )
    path = directory / REWARD_MODEL_FILE
    write_json(path, info.to_json())
    return path


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _description_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory")
    path = run_dir / REWARD_MODEL_FILE
    if path.is_file():
        return path
    agent = ""
    if (run_dir / CONFIG_FILE).is_file():
        try:
            agent = f" (a run of agent '{read_run_config(run_dir)['agent']}')"
        except RunDirError:
            agent = ""
    legacy = (
        f"; its {REWARD_WEIGHTS_FILE} predates saved reward models and cannot be rebuilt"
        if (run_dir / REWARD_WEIGHTS_FILE).is_file()
        else ""
    )
    raise RunDirError(
        f"{run_dir} holds no reward model{agent}: no {REWARD_MODEL_FILE}; only agents that learn a reward "
        f"(rm_ppo, heron) save one{legacy}"
    )


def read_reward_model_info(run_dir: str | Path) -> RewardModelInfo:
    """The validated description ``run_dir/reward_model.json``.

    :raises RunDirError: no reward model there, or the file is not a valid description
    """
    path = _description_path(run_dir)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); the file is damaged or was edited") from None
    return _parse_info(data, path)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_reward_ensemble(run_dir: str | Path) -> tuple[RewardEnsemble, RewardModelInfo]:
    """The saved :class:`~prefrl.reward_model.RewardEnsemble` (in eval mode) and its description.

    The weights are read with ``torch.load(weights_only=True)`` (no code from the file runs) after their
    SHA-256 is checked against the description; the description's input normaliser must equal the one
    in the weights.

    :raises RunDirError: no reward model in ``run_dir``, or a missing, damaged or mismatching file
    """
    info = read_reward_model_info(run_dir)
    assert info.path is not None
    weights = info.path.with_name(info.weights_file)
    try:
        payload = weights.read_bytes()
    except FileNotFoundError:
        raise RunDirError(f"{weights}: missing (named by {info.path})") from None
    if hashlib.sha256(payload).hexdigest() != info.weights_sha256:
        raise RunDirError(f"{weights}: does not match the SHA-256 in {info.path}: damaged or replaced")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure: the file is not a plain tensor dict
        raise RunDirError(f"{weights}: not a readable weights file ({_first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunDirError(f"{weights}: not a state dict of tensors")
    ensemble = RewardEnsemble(**info.architecture())
    try:
        ensemble.load_state_dict(state)
    except RuntimeError as e:
        raise RunDirError(
            f"{weights}: does not fit the architecture in {info.path} ({_first_line(e)})"
        ) from None
    ensemble.eval()
    if _floats(ensemble.input_mean) != info.input_mean or _floats(ensemble.input_std) != info.input_std:
        raise RunDirError(
            f"{info.path}: 'input_normalization' differs from the normaliser in {weights}; the file was "
            "edited by hand"
        )
    return ensemble, info


# ---- the VecEnv ----------------------------------------------------------------------------------


def _vec_env_chain(venv: VecEnv) -> list[VecEnv]:
    chain = [venv]
    while isinstance(chain[-1], VecEnvWrapper):
        chain.append(chain[-1].venv)
    return chain


def check_venv(info: RewardModelInfo, venv: VecEnv) -> None:
    """Raise :class:`SpecError` (one line) unless ``venv`` can feed the reward model described by ``info``:
    the same observation and action spaces, raw observations, and the reward factors for ``obs_factors``."""
    model = f"the reward model of {info.path.parent if info.path else 'this run'}"
    obs_space, act_space = venv.observation_space, venv.action_space
    if not isinstance(obs_space, spaces.Box) or tuple(obs_space.shape) != info.observation_shape:
        raise SpecError(
            f"{model} was trained on observations of shape {info.observation_shape} ({info.gym_id}), the "
            f"VecEnv has {obs_space}"
        )
    if not isinstance(act_space, spaces.Box) or tuple(act_space.shape) != info.action_shape:
        raise SpecError(
            f"{model} was trained on actions of shape {info.action_shape} ({info.gym_id}), the VecEnv has "
            f"{act_space}"
        )
    low, high = _floats(act_space.low), _floats(act_space.high)
    if not (np.allclose(low, info.action_low) and np.allclose(high, info.action_high)):
        raise SpecError(
            f"{model} was trained on actions in [{list(info.action_low)}, {list(info.action_high)}] "
            f"({info.gym_id}), the VecEnv's bounds are [{list(low)}, {list(high)}]"
        )
    for layer in _vec_env_chain(venv):
        if isinstance(layer, VecNormalize) and layer.norm_obs:
            raise SpecError(
                f"{model} reads raw observations, the VecEnv normalises them (VecNormalize): wrap the raw "
                "VecEnv and put VecNormalize above the reward model"
            )
    if info.inputs == "obs_factors":
        _check_factors(info, venv, model)


def _check_factors(info: RewardModelInfo, venv: VecEnv, model: str) -> None:
    hint = f"build the VecEnv with prefrl.envs.make_vec_env('{info.env_spec}')"
    try:
        wrapped = venv.env_is_wrapped(RewardFactorWrapper)
    except (AttributeError, NotImplementedError):
        wrapped = [False]
    if not all(wrapped):
        raise SpecError(
            f"{model} reads the reward factors {list(info.factor_names)} (inputs 'obs_factors'), which "
            f"the VecEnv does not provide in info['factors']: {hint}"
        )
    base = _vec_env_chain(venv)[-1]
    if not isinstance(base, DummyVecEnv):  # other VecEnvs: the per-step dimension check remains
        return
    for env in base.envs:
        try:
            names = tuple(env.get_wrapper_attr("spec_").factor_names)
        except AttributeError:
            return
        if names != info.factor_names:
            raise SpecError(
                f"{model} reads the reward factors {list(info.factor_names)}, the VecEnv provides "
                f"{list(names)}: {hint}"
            )


def load_reward_model(
    run_dir: str | Path,
    venv: VecEnv | None = None,
    *,
    normalize: bool = True,
    update_normalization: bool = False,
    log_capacity: int = 10_000,
) -> LearnedRewardVecEnvWrapper:
    """The learned reward of ``run_dir`` replacing the env reward of ``venv``, for any SB3 algorithm.

    Per step the wrapper returns the ensemble-mean reward of (observation before the step, action
    clipped to the action space, reward factors), normalised as in training:
    ``(r - mean) / sqrt(var + epsilon)`` with the saved statistics. The true reward goes to
    ``info["true_reward"]`` and the raw ensemble mean to ``info["learned_reward"]``.

    :param run_dir: a finished run of an agent that learns a reward (rm_ppo, heron)
    :param venv: the *raw* VecEnv to wrap (no observation normalisation below the wrapper); ``None``
        builds one env of the saved env spec with :func:`prefrl.envs.make_vec_env`
    :param normalize: normalise with the saved output statistics (if the run normalised); off returns
        the raw ensemble mean
    :param update_normalization: keep updating the output statistics with the new rewards (off: frozen
        at the saved values, the reward the policy of the run was trained on)
    :param log_capacity: steps kept in the wrapper's rollout log
        (:meth:`~prefrl.rollout.LearnedRewardVecEnvWrapper.rollout_log`)
    :raises RunDirError: no reward model in ``run_dir``, or a damaged file
    :raises SpecError: ``venv`` does not match the model (spaces, normalised observations, missing factors)
    """
    ensemble, info = load_reward_ensemble(run_dir)
    if venv is None:
        venv = make_vec_env(load_run_env_spec(run_dir), n_envs=1)
    check_venv(info, venv)
    wrapper = LearnedRewardVecEnvWrapper(
        venv, ensemble, log_capacity=log_capacity, update_normalization=update_normalization
    )
    state = dict(info.reward_normalization)
    state["normalize"] = bool(state["normalize"]) and normalize
    wrapper.set_normalization_state(state)
    return wrapper


# ---- a function of arrays -------------------------------------------------------------------------


class RewardFunction:
    """A saved learned reward as a function of arrays: ``reward(obs, act, factors=None) -> [...]``.

    Computes exactly what :func:`load_reward_model`'s wrapper returns for the same transitions (actions
    clipped to the saved bounds, ensemble mean, saved output normalisation unless ``normalize=False``).
    No input mode reads the next observation, so none is taken.

    :param ensemble: the reward model
    :param info: its description (:func:`load_reward_ensemble`)
    :param normalize: apply the saved output normalisation
    """

    def __init__(self, ensemble: RewardEnsemble, info: RewardModelInfo, normalize: bool = True) -> None:
        self.ensemble = ensemble
        self.info = info
        norm = info.reward_normalization
        self.normalize = bool(norm["normalize"]) and normalize
        self._mean = np.float64(norm["mean"])
        self._scale = np.sqrt(np.float64(norm["var"]) + np.float64(norm["epsilon"]))
        self._low = np.asarray(info.action_low, dtype=np.float32)
        self._high = np.asarray(info.action_high, dtype=np.float32)
        self._predict = ensemble.numpy_predictor()

    def __call__(self, obs: np.ndarray, act: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        """Rewards ``[...]`` float32 of transitions ``obs [..., obs_dim]``, ``act [..., act_dim]`` and,
        for ``obs_factors`` models, ``factors [..., F]`` (raw reward factors of the steps)."""
        obs = np.asarray(obs, dtype=np.float32)
        act = np.asarray(act, dtype=np.float32)
        lead = obs.shape[:-1]
        if obs.shape[-1:] != (self.info.obs_dim,) or act.shape != (*lead, self.info.act_dim):
            raise SpecError(
                f"reward function: expected obs [..., {self.info.obs_dim}] and act [..., "
                f"{self.info.act_dim}] with the same leading shape, got {obs.shape} and {act.shape}"
            )
        if self.info.inputs == "obs_factors":
            if factors is None:
                raise SpecError(
                    f"reward function: this model reads the reward factors {list(self.info.factor_names)}; "
                    "pass factors [..., F]"
                )
            factors = np.asarray(factors, dtype=np.float64)
            if factors.shape != (*lead, self.info.num_factors):
                raise SpecError(
                    f"reward function: expected factors of shape {(*lead, self.info.num_factors)}, got "
                    f"{factors.shape}"
                )
        else:
            factors = np.zeros((*lead, 0))
        applied = np.clip(act, self._low, self._high)
        feats = reward_features(self.info.inputs, obs, applied, factors)
        flat = self._predict(feats.reshape(-1, feats.shape[-1]))
        if self.normalize:
            return ((flat - self._mean) / self._scale).astype(np.float32).reshape(lead)
        return flat.astype(np.float32).reshape(lead)


def load_reward_fn(run_dir: str | Path, *, normalize: bool = True) -> RewardFunction:
    """The learned reward of ``run_dir`` as a function of arrays (see :class:`RewardFunction`).

    :raises RunDirError: no reward model in ``run_dir``, or a damaged file
    """
    ensemble, info = load_reward_ensemble(run_dir)
    return RewardFunction(ensemble, info, normalize)
