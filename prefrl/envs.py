"""Environment specs (``envs/*.yaml``), env construction and the reward-factor wrapper.

An env spec is declarative: the gymnasium id and kwargs, a fixed horizon, the default segment length, and
the list of *reward factors* (named per-step quantities with a sign and a weight such that the true reward
is ``r_t = sum_{f in reward} sign_f * weight_f * raw_f(t)``), plus the rater settings that depend on the
env: the HERON factor ranking, the intransitive criteria, the non-Markovian statistic and the score
normalisation anchors. Example::

    spec = load_env_spec("pendulum")        # or "Pendulum-v1", a path to a yaml file, or "gym:<id>"
    env = make_env(spec, seed=0)            # TimeLimit(horizon) + RewardFactorWrapper
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    info["factors"]                         # np.float64 [F], raw factor values in spec order
    venv = make_vec_env(spec, n_envs=4, seed=0)   # SB3 VecEnv, env i seeded seed + i

Factor sources are ``"info:<key>"`` (read from the env's ``info`` after the step),
``"computed:<fn>"`` (a function from :data:`COMPUTED_FACTORS`; e.g. Pendulum's costs are computed from
the state *before* the step, as gymnasium computes its reward) or ``"reward"`` (the env's own reward).

Where specs come from, by name: the folders in ``$PREFRL_SPEC_PATH`` (``os.pathsep``-separated), then
the folders that installed packages register under the ``prefrl.envs`` entry-point group, then the
built-in folder (:data:`ENV_DIR`). A user spec named like a built-in wins, with a one-line
:class:`SpecShadowWarning`. ``"gym:<id>[,key=value...]"`` builds a spec for any registered gymnasium env
(:func:`gym_env_spec`): the env's reward is its only factor and it has no oracle.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from prefrl.errors import SpecError
from prefrl.spec_utils import (
    check_int,
    check_keys,
    check_type,
    load_yaml,
    parse_value,
    shipped_spec_dir,
    suggest,
)

__all__ = [
    "COMPUTED_FACTORS",
    "DEFAULT_ENV",
    "ENV_DIR",
    "MAX_HORIZON",
    "NON_MARKOVIAN_STATISTICS",
    "SPEC_PATH_VARIABLE",
    "ComputedFactor",
    "CriterionSpec",
    "EnvSpec",
    "FactorSpec",
    "RewardFactorWrapper",
    "SpecShadowWarning",
    "gym_env_spec",
    "gym_make",
    "list_env_specs",
    "load_env_spec",
    "load_env_spec_file",
    "make_env",
    "make_vec_env",
    "spec_folders",
]

#: spec used when none is given
DEFAULT_ENV = "pendulum"
#: the built-in specs, one YAML file per environment (the checkout's envs/, or the wheel's copy)
ENV_DIR = shipped_spec_dir("envs")
#: environment variable listing extra spec folders (searched before the built-ins)
SPEC_PATH_VARIABLE = "PREFRL_SPEC_PATH"
#: entry-point group through which installed packages add spec folders
ENTRY_POINT_GROUP = "prefrl.envs"
#: prefix of a generated spec for a registered gymnasium env: ``gym:<id>[,key=value...]``
GYM_PREFIX = "gym:"
#: the longest horizon (and segment) a spec may declare: beyond it an episode never ends in practice
MAX_HORIZON = 1_000_000
#: trajectory-level statistics a non-Markovian rater may use
NON_MARKOVIAN_STATISTICS = ("min", "max", "mean", "final", "fraction_above")


# --------------------------------------------------------------------------------------------------
# Computed factors
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComputedFactor:
    """A reward factor computed by code rather than read from ``info``.

    :param fn: ``fn(unwrapped_env, action, info) -> float``; ``info`` is ``None`` for pre-step factors.
    :param pre_step: evaluate before ``env.step`` (on the state the action is applied to), as some
        envs (Pendulum) compute their reward from the pre-step state; otherwise after the step.
    """

    fn: Callable[[Any, np.ndarray, dict[str, Any] | None], float]
    pre_step: bool = False


def _angle_normalize(x: float) -> float:
    # same expression as gymnasium's pendulum.angle_normalize, so the reward identity is exact
    return ((x + np.pi) % (2 * np.pi)) - np.pi


def _pendulum_torque(env: Any, action: np.ndarray) -> float:
    # the env clips the torque to [-max_torque, max_torque] before using it
    u = float(np.asarray(action).reshape(-1)[0])
    return min(max(u, -env.max_torque), env.max_torque)


#: registry for ``source: computed:<name>``
COMPUTED_FACTORS: dict[str, ComputedFactor] = {
    # Pendulum-v1: cost terms of the reward, from the state before the step and the clipped torque
    "pendulum_angle_sq": ComputedFactor(lambda env, a, info: _angle_normalize(env.state[0]) ** 2, True),
    "pendulum_velocity_sq": ComputedFactor(lambda env, a, info: env.state[1] ** 2, True),
    "pendulum_torque_sq": ComputedFactor(lambda env, a, info: _pendulum_torque(env, a) ** 2, True),
    # MuJoCo planar walkers (qpos = [rootx, rootz, rooty, ...]), after the step
    "torso_height": ComputedFactor(lambda env, a, info: env.data.qpos[1]),
    "root_pitch_sq": ComputedFactor(lambda env, a, info: env.data.qpos[2] ** 2),
    # envs reporting a sideways velocity in info (Ant, Swimmer)
    "y_velocity_sq": ComputedFactor(lambda env, a, info: info["y_velocity"] ** 2),
    # Reacher: the two arm joints' angular speed
    "arm_speed_sq": ComputedFactor(lambda env, a, info: float(np.sum(env.data.qvel[:2] ** 2))),
}


# --------------------------------------------------------------------------------------------------
# Spec dataclasses
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactorSpec:
    """One named per-step reward factor (or non-reward feature).

    :param name: unique name within the spec, e.g. ``"reward_forward"``.
    :param sign: +1 (more is better) or -1 (a cost).
    :param source: ``"info:<key>"``, ``"computed:<fn>"`` (see :data:`COMPUTED_FACTORS`) or ``"reward"``
        (the env's own reward).
    :param description: human-readable meaning.
    :param in_reward: whether the factor is part of the true reward.
    :param weight: non-negative scale; ``utility = sign * weight * raw`` and the reward is the sum of the
        in-reward utilities.
    """

    name: str
    sign: float
    source: str
    description: str = ""
    in_reward: bool = True
    weight: float = 1.0

    @property
    def kind(self) -> str:
        """``"info"``, ``"computed"`` or ``"reward"``."""
        return self.source.split(":", 1)[0]

    @property
    def key(self) -> str:
        """The info key or computed-function name (empty for ``"reward"``)."""
        return self.source.partition(":")[2]


@dataclass(frozen=True)
class CriterionSpec:
    """One criterion of the intransitive panel: a weighting of factor utilities.

    The criterion's score of a segment is ``sum_t sum_f weights[f] * utility_f(t)``.
    """

    name: str
    weights: dict[str, float]


@dataclass(frozen=True)
class EnvSpec:
    """A validated environment spec (one ``envs/<name>.yaml``).

    ``non_markovian`` holds ``{"statistic": one of NON_MARKOVIAN_STATISTICS, "factor": name,
    "threshold": float (fraction_above only)}``. The statistic is taken over the factor's *utility*
    ``sign * weight * raw`` along the segment, so a larger statistic is always better (for a cost such as
    Pendulum's ``angle_sq``, ``fraction_above`` with threshold -0.1 is the fraction of steps with
    ``theta^2 < 0.1``).
    """

    name: str
    gym_id: str
    kwargs: dict[str, Any]
    horizon: int
    segment_length: int
    factors: tuple[FactorSpec, ...]
    heron_ranking: tuple[str, ...] = ()
    heron_margins: tuple[float, ...] = ()
    criteria: tuple[CriterionSpec, ...] = ()
    non_markovian: dict[str, Any] = field(default_factory=dict)
    random_return: float | None = None
    oracle_return: float | None = None
    oracle: dict[str, Any] = field(default_factory=lambda: {"algo": None, "checkpoint": None})
    path: Path | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The spec as the YAML mapping it is read from (``load_env_spec`` of its dump gives it back).

        Run directories store it (``env.yaml``), so a run reloads exactly the spec it was trained on,
        whether it came from a built-in, a user file or a ``gym:`` id.
        """
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        data.update(
            gym_id=self.gym_id,
            kwargs=dict(self.kwargs),
            horizon=self.horizon,
            segment_length=self.segment_length,
            factors=[
                {
                    "name": f.name,
                    "sign": f.sign,
                    "weight": f.weight,
                    "source": f.source,
                    "description": f.description,
                    "in_reward": f.in_reward,
                }
                for f in self.factors
            ],
        )
        if self.heron_ranking:
            data["heron"] = {"ranking": list(self.heron_ranking), "margins": list(self.heron_margins)}
        if self.criteria:
            data["intransitive"] = {
                "criteria": [{"name": c.name, "weights": dict(c.weights)} for c in self.criteria]
            }
        if self.non_markovian:
            data["non_markovian"] = dict(self.non_markovian)
        data["normalisation"] = {"random_return": self.random_return, "oracle_return": self.oracle_return}
        data["oracle"] = dict(self.oracle)
        return data

    # ---- factors -------------------------------------------------------------------------------
    @property
    def num_factors(self) -> int:
        return len(self.factors)

    @property
    def factor_names(self) -> list[str]:
        return [f.name for f in self.factors]

    @property
    def factor_signs(self) -> np.ndarray:
        """``[F]`` float64, +1 or -1."""
        return np.array([f.sign for f in self.factors], dtype=np.float64)

    @property
    def factor_weights(self) -> np.ndarray:
        """``[F]`` float64 non-negative weights."""
        return np.array([f.weight for f in self.factors], dtype=np.float64)

    @property
    def in_reward_mask(self) -> np.ndarray:
        """``[F]`` bool, True for factors that are part of the true reward."""
        return np.array([f.in_reward for f in self.factors], dtype=bool)

    @property
    def reward_weights(self) -> np.ndarray:
        """``[F]`` float64 ``sign * weight`` for in-reward factors, 0 otherwise: ``reward = factors @ w``."""
        return self.factor_signs * self.factor_weights * self.in_reward_mask

    def factor_index(self, name: str) -> int:
        """Position of factor ``name`` in the factor arrays."""
        names = self.factor_names
        if name not in names:
            raise KeyError(
                f"env spec '{self.name}' has no factor '{name}'{suggest(name, names)}; has {names}"
            )
        return names.index(name)

    def factor_utilities(self, factors: np.ndarray) -> np.ndarray:
        """``sign * weight * raw`` per factor: ``[..., F] -> [..., F]`` (larger is always better)."""
        factors = np.asarray(factors, dtype=np.float64)
        if factors.shape[-1] != self.num_factors:
            raise ValueError(
                f"factors have {factors.shape[-1]} entries in the last axis, env spec '{self.name}' "
                f"defines {self.num_factors}: {self.factor_names}"
            )
        return factors * (self.factor_signs * self.factor_weights)

    def reward_from_factors(self, factors: np.ndarray) -> np.ndarray:
        """The true reward reconstructed from raw factors, ``[..., F] -> [...]``."""
        return self.factor_utilities(factors) @ self.in_reward_mask.astype(np.float64)

    # ---- normalisation -------------------------------------------------------------------------
    @property
    def has_normalisation(self) -> bool:
        """True when both the random and the oracle return are set."""
        return self.random_return is not None and self.oracle_return is not None

    def normalise(self, returns: np.ndarray | float) -> np.ndarray:
        """Normalised score ``100 * (R - R_random) / (R_oracle - R_random)``, same shape as ``returns``."""
        if not self.has_normalisation:
            raise ValueError(
                f"env spec '{self.name}' ({self.path}) has no normalisation anchors: set "
                "normalisation.random_return and normalisation.oracle_return in its yaml"
            )
        assert self.random_return is not None and self.oracle_return is not None
        span = self.oracle_return - self.random_return
        return 100.0 * (np.asarray(returns, dtype=np.float64) - self.random_return) / span

    # ---- spaces --------------------------------------------------------------------------------
    @functools.cached_property
    def _spaces(self) -> tuple[gym.Space, gym.Space]:
        # building a MuJoCo env costs a few ms; cache the spaces (cached_property writes to __dict__
        # directly, so it works on a frozen dataclass). The first build also takes one step through the
        # factor wrapper: a kwarg the env only rejects when it runs, or a factor source it cannot serve,
        # fails here as a SpecError naming the spec instead of mid-rollout.
        env = gym_make(self)
        try:
            spaces = (env.observation_space, env.action_space)
            _first_step(env, self)
        finally:
            env.close()
        return spaces

    @property
    def observation_space(self) -> gym.Space:
        return self._spaces[0]

    @property
    def action_space(self) -> gym.Space:
        return self._spaces[1]

    @classmethod
    def default(cls) -> EnvSpec:
        """The default spec (:data:`DEFAULT_ENV`)."""
        return load_env_spec(DEFAULT_ENV)


# --------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------

_TOP_KEYS = (
    "name",
    "description",
    "gym_id",
    "kwargs",
    "horizon",
    "segment_length",
    "factors",
    "heron",
    "intransitive",
    "non_markovian",
    "normalisation",
    "oracle",
)
_REQUIRED_TOP = ("gym_id", "horizon", "factors")
_FACTOR_KEYS = ("name", "sign", "weight", "source", "description", "in_reward")


class SpecShadowWarning(UserWarning):
    """A user env spec has the name of a built-in one and is used instead of it."""


def _entry_point_folders() -> list[Path]:
    """Spec folders registered by installed packages (``prefrl.envs`` entry points).

    An entry point names a folder (a string or path) or a callable returning one or several.
    """
    folders: list[Path] = []
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        value = entry.load()
        value = value() if callable(value) else value
        items = [value] if isinstance(value, str | os.PathLike) else list(value)
        folders.extend(Path(item) for item in items)
    return folders


def spec_folders() -> list[Path]:
    """Folders searched for env specs by name, highest priority first.

    ``$PREFRL_SPEC_PATH`` entries, then entry-point folders, then the built-in :data:`ENV_DIR`.
    """
    user = [Path(p) for p in os.environ.get(SPEC_PATH_VARIABLE, "").split(os.pathsep) if p]
    return [*user, *_entry_point_folders(), ENV_DIR]


def _spec_files() -> dict[str, list[Path]]:
    """Spec name -> every file defining it, in search order (the first one is used)."""
    files: dict[str, list[Path]] = {}
    for folder in spec_folders():
        for path in sorted(folder.glob("*.y*ml")):
            if path.suffix in (".yaml", ".yml"):
                files.setdefault(path.stem, []).append(path)
    return files


def list_env_specs() -> list[str]:
    """Names of every env spec found by name (user folders, entry points, built-ins), sorted."""
    return sorted(_spec_files())


def load_env_spec(name_or_path: str | Path | EnvSpec = DEFAULT_ENV) -> EnvSpec:
    """Load and validate an env spec.

    :param name_or_path: a spec name (``"pendulum"``, searched in :func:`spec_folders`), a gymnasium id
        of a spec (``"Pendulum-v1"``, case-insensitive), a path to a yaml file, ``"gym:<id>[,k=v...]"``
        (:func:`gym_env_spec`), or an :class:`EnvSpec` (returned unchanged).
    :raises SpecError: unknown name or invalid file; the message names the file and the key.
    """
    if isinstance(name_or_path, EnvSpec):
        return name_or_path
    text = str(name_or_path)
    if text.startswith(GYM_PREFIX):
        return gym_env_spec(text)
    path = Path(text)
    if path.is_dir():
        raise SpecError(f"{path}: is a directory; give a spec file (my_env.yaml), a spec name or gym:<id>")
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return load_env_spec_file(path)
    files = _spec_files()
    if text in files or text.lower() in files:
        return load_env_spec_file(files[text if text in files else text.lower()][0])
    # a gymnasium id: match it against the specs' gym_id, case-insensitively
    for paths in files.values():
        gym_id = load_yaml(paths[0]).get("gym_id")
        if isinstance(gym_id, str) and gym_id.lower() == text.lower():
            return load_env_spec_file(paths[0])
    raise SpecError(
        f"unknown env '{text}'{suggest(text.lower(), files)}; available: {', '.join(sorted(files))} "
        f"(or a spec file path, or gym:<gymnasium id>)"
    )


def load_env_spec_file(path: str | Path, notice: bool = True) -> EnvSpec:
    """Load one spec file; with ``notice``, warn (:class:`SpecShadowWarning`) when it shadows a built-in.

    Run directories reload their stored spec with ``notice=False``: it is the spec the run was trained on.
    """
    path = Path(path)
    spec = _parse_spec(load_yaml(path), path)
    builtin = ENV_DIR / f"{spec.name}.yaml"
    if notice and builtin.is_file() and path.resolve() != builtin.resolve():
        warnings.warn(
            f"env '{spec.name}': using {path} instead of the built-in spec of that name",
            SpecShadowWarning,
            stacklevel=3,
        )
    return spec


def gym_env_spec(text: str) -> EnvSpec:
    """A generated spec for any registered gymnasium env: ``"gym:<id>[,key=value...]"``.

    ``key=value`` pairs are passed to ``gymnasium.make``, except ``horizon`` (default: the env's registered
    ``max_episode_steps``, else 1000) and ``segment_length`` (default ``min(50, horizon)``). The env's own
    reward is the only factor; there is no oracle and no normalisation anchors (normalised score NaN),
    so raters that need several factors or the oracle's V* refuse the spec with a clear error.

    :raises SpecError: unknown gymnasium id or malformed ``key=value`` list
    """
    body = text[len(GYM_PREFIX) :] if text.startswith(GYM_PREFIX) else text
    gym_id, *items = [part.strip() for part in body.split(",")]
    if gym_id not in gym.registry:
        raise SpecError(f"'{text}': no gymnasium env registered as '{gym_id}'{suggest(gym_id, gym.registry)}")
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"'{text}': expected key=value after the gymnasium id, got '{item}'")
        options[key.strip()] = parse_value(raw.strip())
    horizon = options.pop("horizon", gym.spec(gym_id).max_episode_steps or 1000)
    segment_length = options.pop("segment_length", min(50, horizon) if isinstance(horizon, int) else 50)
    data = {
        "name": text if text.startswith(GYM_PREFIX) else GYM_PREFIX + text,
        "description": f"gymnasium {gym_id} with its own reward (generated spec, no oracle)",
        "gym_id": gym_id,
        "kwargs": options,
        "horizon": horizon,
        "segment_length": segment_length,
        "factors": [{"name": "reward", "sign": 1, "source": "reward", "description": f"{gym_id}'s reward"}],
    }
    return _parse_spec(data, Path(text))


def _check_positive_int(value: Any, where: str, high: int | None = None) -> int:
    value = check_type(value, int, where)
    if value <= 0:
        raise SpecError(f"{where}: must be a positive integer, got {value}")
    return check_int(value, where, high=high)


def _check_factor_ref(name: Any, known: Sequence[str], where: str) -> str:
    name = check_type(name, str, where)
    if name not in known:
        raise SpecError(
            f"{where}: unknown factor '{name}'{suggest(name, known)}; defined factors: {', '.join(known)}"
        )
    return name


def _parse_factor(raw: Any, where: str) -> FactorSpec:
    check_keys(raw, _FACTOR_KEYS, where, required=("name", "sign", "source"))
    name = check_type(raw["name"], str, f"{where}.name")
    sign = check_type(raw["sign"], float, f"{where}.sign")
    if sign not in (1.0, -1.0):
        raise SpecError(f"{where}.sign: must be +1 or -1, got {sign}")
    weight = check_type(raw.get("weight", 1.0), float, f"{where}.weight")
    if weight < 0:
        raise SpecError(f"{where}.weight: must be >= 0 (the sign carries the direction), got {weight}")
    source = check_type(raw["source"], str, f"{where}.source")
    kind, _, key = source.partition(":")
    if source != "reward" and (kind not in ("info", "computed") or not key):
        raise SpecError(f"{where}.source: expected 'info:<key>', 'computed:<fn>' or 'reward', got '{source}'")
    if kind == "computed" and key not in COMPUTED_FACTORS:
        raise SpecError(
            f"{where}.source: unknown computed factor '{key}'{suggest(key, COMPUTED_FACTORS)}; "
            f"available: {', '.join(COMPUTED_FACTORS)}"
        )
    return FactorSpec(
        name=name,
        sign=sign,
        source=source,
        description=check_type(raw.get("description", ""), str, f"{where}.description"),
        in_reward=check_type(raw.get("in_reward", True), bool, f"{where}.in_reward"),
        weight=weight,
    )


def _parse_heron(raw: Any, names: list[str], where: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    check_keys(raw, ("ranking", "margins"), where, required=("ranking", "margins"))
    ranking = check_type(raw["ranking"], list, f"{where}.ranking")
    margins = check_type(raw["margins"], list, f"{where}.margins")
    if not ranking:
        raise SpecError(f"{where}.ranking: needs at least one factor")
    ranking = [_check_factor_ref(n, names, f"{where}.ranking[{i}]") for i, n in enumerate(ranking)]
    if len(set(ranking)) != len(ranking):
        raise SpecError(f"{where}.ranking: lists a factor twice: {ranking}")
    if len(margins) != len(ranking):
        raise SpecError(
            f"{where}.margins: needs one margin per ranking level ({len(ranking)}), got {len(margins)}"
        )
    margins = [check_type(m, float, f"{where}.margins[{i}]") for i, m in enumerate(margins)]
    if any(m < 0 for m in margins):
        raise SpecError(f"{where}.margins: must be >= 0, got {margins}")
    return tuple(ranking), tuple(margins)


def _parse_criteria(raw: Any, names: list[str], where: str) -> tuple[CriterionSpec, ...]:
    check_keys(raw, ("criteria",), where, required=("criteria",))
    items = check_type(raw["criteria"], list, f"{where}.criteria")
    if len(items) < 3:
        raise SpecError(
            f"{where}.criteria: an intransitive panel needs at least 3 criteria, got {len(items)}"
        )
    criteria = []
    for i, item in enumerate(items):
        at = f"{where}.criteria[{i}]"
        check_keys(item, ("name", "weights"), at, required=("name", "weights"))
        weights = check_type(item["weights"], dict, f"{at}.weights")
        if not weights:
            raise SpecError(f"{at}.weights: needs at least one factor")
        parsed = {
            _check_factor_ref(k, names, f"{at}.weights"): check_type(v, float, f"{at}.weights.{k}")
            for k, v in weights.items()
        }
        criteria.append(CriterionSpec(name=check_type(item["name"], str, f"{at}.name"), weights=parsed))
    crit_names = [c.name for c in criteria]
    if len(set(crit_names)) != len(crit_names):
        raise SpecError(f"{where}.criteria: duplicate criterion names {crit_names}")
    return tuple(criteria)


def _parse_non_markovian(raw: Any, names: list[str], where: str) -> dict[str, Any]:
    check_keys(raw, ("statistic", "factor", "threshold"), where, required=("statistic", "factor"))
    statistic = check_type(raw["statistic"], str, f"{where}.statistic")
    if statistic not in NON_MARKOVIAN_STATISTICS:
        raise SpecError(
            f"{where}.statistic: unknown statistic '{statistic}'"
            f"{suggest(statistic, NON_MARKOVIAN_STATISTICS)}; one of {', '.join(NON_MARKOVIAN_STATISTICS)}"
        )
    out: dict[str, Any] = {
        "statistic": statistic,
        "factor": _check_factor_ref(raw["factor"], names, f"{where}.factor"),
    }
    if statistic == "fraction_above":
        if "threshold" not in raw:
            raise SpecError(f"{where}: missing required key 'threshold' (needed by fraction_above)")
        out["threshold"] = check_type(raw["threshold"], float, f"{where}.threshold")
    elif "threshold" in raw:
        out["threshold"] = check_type(raw["threshold"], float, f"{where}.threshold")
    return out


def _parse_optional_float(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    return None if value is None else check_type(value, float, f"{where}.{key}")


def _parse_spec(data: dict[str, Any], path: Path) -> EnvSpec:
    """Validate the mapping read from ``path`` and build the :class:`EnvSpec`."""
    where = str(path)
    check_keys(data, _TOP_KEYS, where, required=_REQUIRED_TOP)
    gym_id = check_type(data["gym_id"], str, f"{where}: gym_id")
    kwargs = check_type(data.get("kwargs") or {}, dict, f"{where}: kwargs")
    for key in kwargs:
        check_type(key, str, f"{where}: kwargs key")
    horizon = _check_positive_int(data["horizon"], f"{where}: horizon", high=MAX_HORIZON)
    segment_length = _check_positive_int(
        data.get("segment_length", min(50, horizon)), f"{where}: segment_length"
    )
    if segment_length > horizon:
        raise SpecError(f"{where}: segment_length ({segment_length}) exceeds the horizon ({horizon})")

    raw_factors = check_type(data["factors"], list, f"{where}: factors")
    if not raw_factors:
        raise SpecError(f"{where}: factors: needs at least one factor")
    factors = tuple(_parse_factor(f, f"{where}: factors[{i}]") for i, f in enumerate(raw_factors))
    names = [f.name for f in factors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{where}: factors: duplicate factor names {duplicates}")
    if not any(f.in_reward for f in factors):
        raise SpecError(f"{where}: factors: at least one factor must have in_reward: true")

    heron_ranking: tuple[str, ...] = ()
    heron_margins: tuple[float, ...] = ()
    if data.get("heron") is not None:
        heron_ranking, heron_margins = _parse_heron(data["heron"], names, f"{where}: heron")
    criteria: tuple[CriterionSpec, ...] = ()
    if data.get("intransitive") is not None:
        criteria = _parse_criteria(data["intransitive"], names, f"{where}: intransitive")
    non_markovian: dict[str, Any] = {}
    if data.get("non_markovian") is not None:
        non_markovian = _parse_non_markovian(data["non_markovian"], names, f"{where}: non_markovian")

    norm = data.get("normalisation") or {}
    check_keys(norm, ("random_return", "oracle_return"), f"{where}: normalisation")
    random_return = _parse_optional_float(norm, "random_return", f"{where}: normalisation")
    oracle_return = _parse_optional_float(norm, "oracle_return", f"{where}: normalisation")
    if random_return is not None and oracle_return is not None and oracle_return == random_return:
        raise SpecError(f"{where}: normalisation: oracle_return equals random_return ({random_return})")

    oracle = data.get("oracle") or {}
    check_keys(oracle, ("algo", "checkpoint"), f"{where}: oracle")
    oracle = {"algo": oracle.get("algo"), "checkpoint": oracle.get("checkpoint")}
    for key, value in oracle.items():
        if value is not None:
            check_type(value, str, f"{where}: oracle.{key}")
    checkpoint = oracle["checkpoint"]
    # the name is joined to the shipped checkpoint folder: a path ('../..', '/etc') would escape it
    if checkpoint is not None and not re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*", checkpoint):
        raise SpecError(
            f"{where}: oracle.checkpoint: '{checkpoint}' is not a plain folder name (letters, digits, "
            "'_', '-', '+', '.'; no path separators, no leading '.'); it names a folder of the shipped "
            "checkpoints"
        )

    name = check_type(data.get("name", path.stem), str, f"{where}: name")
    if not re.fullmatch(r"[^/\\\x00]+", name) or name in (".", ".."):
        raise SpecError(f"{where}: name: '{name}' cannot name a spec (it is used in run directory paths)")
    return EnvSpec(
        name=name,
        description=check_type(data.get("description", ""), str, f"{where}: description"),
        gym_id=gym_id,
        kwargs=dict(kwargs),
        horizon=horizon,
        segment_length=segment_length,
        factors=factors,
        heron_ranking=heron_ranking,
        heron_margins=heron_margins,
        criteria=criteria,
        non_markovian=non_markovian,
        random_return=random_return,
        oracle_return=oracle_return,
        oracle=oracle,
        path=path,
    )


# --------------------------------------------------------------------------------------------------
# Env construction
# --------------------------------------------------------------------------------------------------


def gym_make(spec: EnvSpec, **extra: Any) -> gym.Env:
    """``gymnasium.make(spec.gym_id, **spec.kwargs, **extra)``; a spec gymnasium cannot build is a SpecError.

    An unknown or unregistered ``gym_id``, a missing dependency, or a kwarg the env rejects is the spec's
    fault, not a bug: the error names the spec file (``gym:`` specs: the text given) and what failed.
    """
    where = str(spec.path) if spec.path is not None else spec.name
    try:
        return gym.make(spec.gym_id, **{**spec.kwargs, **extra})
    except gym.error.Error as e:
        raise SpecError(f"{where}: gymnasium cannot make '{spec.gym_id}': {_first_line(e)}") from e
    except (TypeError, ValueError) as e:
        reason = f"{type(e).__name__}: {_first_line(e)}"
        raise SpecError(f"{where}: {spec.gym_id} rejects its kwargs {dict(spec.kwargs)}: {reason}") from e
    except ImportError as e:
        raise SpecError(f"{where}: '{spec.gym_id}' needs a module that is not installed: {e}") from e


def _first_step(env: gym.Env, spec: EnvSpec) -> None:
    """Reset ``env`` and take one step (a mid-range action) through :class:`RewardFactorWrapper`.

    :raises SpecError: the env or a factor fails on it (the spec's kwargs, gym_id or factor sources)
    """
    space = env.action_space
    if isinstance(space, gym.spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        action: Any = ((low + high) / 2).astype(space.dtype)
    else:
        action = space.sample()
    try:
        wrapped = RewardFactorWrapper(env, spec)
        wrapped.reset(seed=0)
        wrapped.step(action)
    except Exception as e:
        where = str(spec.path) if spec.path is not None else spec.name
        raise SpecError(
            f"{where}: {spec.gym_id} (kwargs {dict(spec.kwargs)}) fails on its first step: "
            f"{type(e).__name__}: {_first_line(e)}"
        ) from e


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


class RewardFactorWrapper(gym.Wrapper):
    """Adds ``info["factors"]``: the raw reward factors of the step, ``np.float64 [F]`` in spec order.

    Rewards, observations and termination are passed through unchanged.
    """

    def __init__(self, env: gym.Env, spec: EnvSpec) -> None:
        super().__init__(env)
        self.spec_ = spec
        self._base = env.unwrapped
        self._pre = [
            (i, COMPUTED_FACTORS[f.key])
            for i, f in enumerate(spec.factors)
            if f.kind == "computed" and COMPUTED_FACTORS[f.key].pre_step
        ]
        self._post_computed = [
            (i, COMPUTED_FACTORS[f.key])
            for i, f in enumerate(spec.factors)
            if f.kind == "computed" and not COMPUTED_FACTORS[f.key].pre_step
        ]
        self._info = [(i, f.key, f.name) for i, f in enumerate(spec.factors) if f.kind == "info"]
        self._reward = [i for i, f in enumerate(spec.factors) if f.kind == "reward"]

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        base = self._base
        factors = np.empty(self.spec_.num_factors, dtype=np.float64)
        for i, computed in self._pre:
            factors[i] = computed.fn(base, action, None)
        obs, reward, terminated, truncated, info = self.env.step(action)
        for i, key, name in self._info:
            if key not in info:
                raise KeyError(
                    f"env spec '{self.spec_.name}': factor '{name}' reads info['{key}'], which "
                    f"{self.spec_.gym_id} does not provide; info keys: {sorted(info)}"
                )
            factors[i] = info[key]
        for i, computed in self._post_computed:
            factors[i] = computed.fn(base, action, info)
        factors[self._reward] = reward
        info["factors"] = factors
        return obs, reward, terminated, truncated, info


def make_env(
    spec: EnvSpec | str = DEFAULT_ENV,
    seed: int | None = None,
    render_mode: str | None = None,
    max_episode_steps: int | None = None,
) -> gym.Env:
    """One environment: ``gymnasium.make(gym_id, max_episode_steps=horizon, **kwargs)`` + factor wrapper.

    Episodes last exactly ``spec.horizon`` steps unless the spec's kwargs enable termination.
    With ``seed``, the action space is seeded and the first ``reset()`` (without a seed) uses it.
    ``max_episode_steps`` overrides the horizon (e.g. to measure returns past the time limit).
    """
    spec = load_env_spec(spec)
    extra: dict[str, Any] = {}
    if render_mode is not None:
        extra["render_mode"] = render_mode
    env = gym_make(spec, max_episode_steps=max_episode_steps or spec.horizon, **extra)
    env = RewardFactorWrapper(env, spec)
    if seed is not None:
        env.action_space.seed(seed)
        # seeds the env's np_random now; a later reset() without a seed continues this stream
        env.reset(seed=seed)
    return env


def make_vec_env(
    spec: EnvSpec | str = DEFAULT_ENV,
    n_envs: int = 1,
    seed: int = 0,
    vec_env_cls: type[VecEnv] = DummyVecEnv,
    wrapper: Callable[[gym.Env], gym.Env] | None = None,
    vec_env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """An SB3 VecEnv of ``n_envs`` copies of :func:`make_env` (each in SB3's ``Monitor``).

    Env ``i`` is seeded ``seed + i`` at the first ``reset()``. ``wrapper`` (a gym wrapper class or
    function) is applied to each env over the ``Monitor``; use ``SubprocVecEnv`` as ``vec_env_cls`` for
    process-parallel envs.
    """
    spec = load_env_spec(spec)
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    return sb3_make_vec_env(
        functools.partial(make_env, spec),
        n_envs=n_envs,
        seed=seed,
        vec_env_cls=vec_env_cls,
        wrapper_class=wrapper,
        vec_env_kwargs=vec_env_kwargs,
    )


def record_normalisation(spec: EnvSpec, r_random: float, r_oracle: float) -> None:
    """Write the measured anchors into the env's YAML (keeps its comments and layout)."""
    text = spec.path.read_text()
    for key, value in (("random_return", r_random), ("oracle_return", r_oracle)):
        text, count = re.subn(rf"(\n\s+{key}:)\s*[^\n#]*", rf"\g<1> {value:.2f}", text, count=1)
        if count != 1:
            raise SpecError(f"{spec.path}: no 'normalisation.{key}' entry to record the measured value in")
    spec.path.write_text(text)
