"""Offline preference datasets (CPL-style): oracle rollouts at several skill levels, cut and labelled.

:func:`build_dataset` rolls out every skill-graded checkpoint of the env's oracle (``level0`` ..
``levelK`` and ``expert``, see :mod:`prefrl.oracle`) with Gaussian action noise, cuts the episodes into
segments, pairs them and labels the pairs with any rater. The result is one compressed ``.npz`` file
holding the segment arrays, the pairs, the labels and the full provenance as JSON, cached by content:
its name derives from a hash of every build parameter, so the same call reuses the same file::

    path = build_dataset("pendulum", "regret", episodes=300, noise=0.3, segment=64, pairs="dense")
    data = load_dataset(path)            # validated; DatasetError names the file and the problem
    data.preferences                     # PreferenceBatch: segments [N, H, ...], pairs [M, 2], labels [M]

Pairing modes (the CPL paper's "dense" and "sparse" data):

* ``"dense"``: ``pairs_per_segment`` rounds; each round is a random perfect matching of the segments,
  so every segment appears in exactly ``pairs_per_segment`` pairs (one per round);
* ``"sparse"``: one round: fixed disjoint pairs, every segment in exactly one pair;
* an int ``M``: ``M`` uniform random pairs of distinct segments.

Pairs are stored in random order, so the first ``m`` pairs are a uniform subset (``take(m)``).
Action noise has std ``noise * (high - low) / 2`` per dimension (a fraction of the action half-range,
so ``noise = 0.3`` is the CPL paper's 0.3 on [-1, 1] actions) and the noisy action is clipped to the
bounds. The cache directory is ``$PREFRL_DATA_DIR`` or ``~/.cache/prefrl/datasets``.

Progress. A build counts the env steps it has rolled out (the checkpoints' rollouts, then their return
measurements); it logs an INFO line on this module's logger every ~10% and, given ``progress``, calls
``progress(done, total)`` after every vectorised step (``prefrl dataset build`` draws a bar from it on a
terminal and shows the log lines otherwise). :func:`build_command` gives the ``prefrl dataset build``
command line that rebuilds a dataset from its provenance.

Command line (:mod:`prefrl.cli.dataset`; export / import to Minari: :mod:`prefrl.dataset_minari`)::

    prefrl dataset build --env pendulum --rater regret [--episodes N] [--noise S] [--segment 64]
                         [--pairs dense|sparse|N] [--seed S] [--n-envs N] [--out PATH]
    prefrl dataset export DATASET --format minari --id NAMESPACE/NAME-v0 [--out DIR]
    prefrl dataset import ID_OR_PATH --out FILE
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from prefrl.atomic_files import atomic_path
from prefrl.envs import EnvSpec, load_env_spec
from prefrl.errors import DatasetError, OracleError, SpecError
from prefrl.evaluation import episode_returns
from prefrl.oracle import load_oracle, oracle_dir
from prefrl.oracle.loading import MANIFEST
from prefrl.raters import make_rater
from prefrl.segments import collect_segments, sample_pairs, validate_segments
from prefrl.spec_utils import ConfigSection, check_int, check_range
from prefrl.types import PreferenceBatch, SegmentBatch

logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_FORMAT",
    "DatasetConfig",
    "DatasetError",
    "PreferenceDataset",
    "ProgressFn",
    "build_command",
    "build_dataset",
    "dataset_dir",
    "dataset_params",
    "dataset_path",
    "load_dataset",
    "make_pairs",
    "rater_identity",
    "save_dataset",
]

#: bumped whenever the file layout or the meaning of a build parameter changes (invalidates the cache)
DATASET_FORMAT = 1
#: named pairing modes (an int is also accepted: that many random pairs)
PAIR_MODES = ("dense", "sparse")
#: environment variable overriding the cache directory
DATA_DIR_ENV = "PREFRL_DATA_DIR"
#: segment arrays stored in the file (SegmentBatch fields)
_SEGMENT_KEYS = ("obs", "act", "reward", "factors", "dones", "next_obs", "source")
_REQUIRED_KEYS = (*_SEGMENT_KEYS, "pairs", "labels", "provenance")
#: ``progress(done, total)``: env steps rolled out so far and in all
ProgressFn = Callable[[int, int], None]
#: a build logs its progress every this fraction of its env steps
LOG_EVERY = 0.1


# --------------------------------------------------------------------------------------------------
# The loaded dataset
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetConfig(ConfigSection):
    """How an offline dataset is built (the ``dataset:`` section of cpl / bc; ``prefrl dataset build``).

    These are the defaults of :func:`build_dataset` and of the command line.
    """

    #: an existing dataset file to use instead of building one
    path: str | None = None
    #: episodes rolled out, split evenly over the oracle's checkpoints (skill levels and expert)
    episodes: int = 500
    #: Gaussian action-noise std as a fraction of the action half-range
    noise: float = 0.3
    #: steps per segment ``H``
    segment: int = 64
    #: dense | sparse | a number of random pairs
    pairs: Literal["dense", "sparse"] | int = "dense"
    #: dense pairing: pairs each segment takes part in
    pairs_per_segment: int = 8
    #: the dataset's seed (fixed: every run seed trains on the same data)
    seed: int = 0
    #: parallel envs of the rollouts
    n_envs: int = 8
    #: episodes per checkpoint measuring its noisy return (provenance only)
    return_episodes: int = 10

    def validate(self, where: str) -> None:
        if isinstance(self.pairs, int) and self.pairs < 1:
            raise SpecError(f"{where}.pairs: the number of pairs must be >= 1, got {self.pairs}")
        for key in ("episodes", "segment", "pairs_per_segment", "n_envs"):
            check_int(getattr(self, key), f"{where}.{key}", low=1)
        check_int(self.return_episodes, f"{where}.return_episodes", low=0)  # 0: no return measured
        check_int(self.seed, f"{where}.seed", low=0, high=2**32 - 1)
        check_range(self.noise, f"{where}.noise", low=0.0)

    def build_kwargs(self) -> dict[str, Any]:
        """The arguments of :func:`build_dataset` (everything but ``path``)."""
        kwargs = asdict(self)
        kwargs.pop("path")
        return kwargs


_DEFAULTS = DatasetConfig()


@dataclass(frozen=True)
class PreferenceDataset:
    """A loaded offline preference dataset.

    :param path: the file it was read from.
    :param preferences: segments ``[N, H, ...]``, pairs ``[M, 2]`` and labels ``[M]`` (``y = P(1 > 2)``).
    :param provenance: how it was built (env, rater, checkpoints and their returns, seeds, noise, ...).
    """

    path: Path
    preferences: PreferenceBatch
    provenance: dict[str, Any]

    @property
    def segments(self) -> SegmentBatch:
        return self.preferences.segments

    @property
    def num_pairs(self) -> int:
        return len(self.preferences)

    @property
    def env_steps(self) -> int:
        """Env steps rolled out to build the dataset (episodes x horizon)."""
        return int(self.provenance.get("env_steps", 0))

    def take(self, num_pairs: int) -> PreferenceDataset:
        """The first ``num_pairs`` labelled pairs (a uniform subset: pairs are stored shuffled)."""
        if not 0 < num_pairs <= self.num_pairs:
            raise DatasetError(
                f"{self.path}: asked for {num_pairs} labelled pairs, the dataset has {self.num_pairs} "
                "(build a larger one: more episodes, or more pairs per segment)"
            )
        prefs = self.preferences
        subset = PreferenceBatch(prefs.segments, prefs.pairs[:num_pairs], prefs.labels[:num_pairs])
        return PreferenceDataset(self.path, subset, self.provenance)


# --------------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------------


def make_pairs(
    num_segments: int, mode: str | int, rng: np.random.Generator, pairs_per_segment: int = 8
) -> np.ndarray:
    """``[M, 2]`` int64 pairs of distinct segment indices, in random order (see the module docstring).

    :param num_segments: ``N``, segments in the pool.
    :param mode: ``"dense"`` (``pairs_per_segment`` random perfect matchings, ``M = k * floor(N / 2)``),
        ``"sparse"`` (one matching, ``M = floor(N / 2)``) or an int (that many uniform random pairs).
    :param rng: the only source of randomness.
    :param pairs_per_segment: ``k`` for ``"dense"``.
    """
    if num_segments < 2:
        raise DatasetError(f"need at least 2 segments to make pairs, got {num_segments}")
    if isinstance(mode, int | np.integer) and not isinstance(mode, bool):
        if mode < 1:
            raise DatasetError(f"the number of pairs must be >= 1, got {mode}")
        return sample_pairs(num_segments, int(mode), rng)
    if mode not in PAIR_MODES:
        raise DatasetError(f"pairs must be 'dense', 'sparse' or a positive int, got {mode!r}")
    rounds = 1 if mode == "sparse" else int(pairs_per_segment)
    if rounds < 1:
        raise DatasetError(f"pairs_per_segment must be >= 1, got {pairs_per_segment}")
    half = num_segments // 2
    # each round: a random permutation cut into consecutive couples = a random perfect matching (with
    # N odd, one random segment sits the round out)
    matchings = [rng.permutation(num_segments)[: 2 * half].reshape(half, 2) for _ in range(rounds)]
    pairs = np.concatenate(matchings).astype(np.int64)
    return pairs[rng.permutation(len(pairs))]


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def dataset_dir(directory: str | Path | None = None) -> Path:
    """The cache directory: ``directory``, else ``$PREFRL_DATA_DIR``, else ``~/.cache/prefrl/datasets``."""
    if directory is not None:
        return Path(directory)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path.home() / ".cache" / "prefrl" / "datasets"


def _oracle_fingerprint(spec: EnvSpec) -> str:
    """Hash of the oracle's manifest: a retrained oracle (new checkpoints) gives new datasets."""
    manifest = oracle_dir(spec) / MANIFEST
    if not manifest.is_file():
        raise OracleError(
            f"no oracle for env '{spec.name}' at {manifest.parent}: a dataset needs its skill-graded "
            f"checkpoints; train one with `prefrl oracle train --env {spec.name}`"
        )
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]


def rater_identity(rater: Any) -> str:
    """The cache identity of a built rater: the spec string it carries (``rater.spec``), else its repr.

    A spec string given to :func:`build_dataset` is built first, so ``"regret"`` from the command line
    and the rater ``run_experiment`` builds from ``"regret"`` share one cache file.
    """
    spec = getattr(rater, "spec", None)
    return spec.strip() if isinstance(spec, str) else repr(rater)


def dataset_params(
    env: EnvSpec | str,
    rater: str,
    episodes: int = 500,
    noise: float = 0.3,
    segment: int = 64,
    pairs: str | int = "dense",
    pairs_per_segment: int = 8,
    seed: int = 0,
    n_envs: int = 8,
) -> dict[str, Any]:
    """The validated build parameters of :func:`build_dataset`: what the cache key is computed from.

    ``rater`` is the rater's identity (:func:`rater_identity`).
    """
    spec = load_env_spec(env)
    if isinstance(pairs, str) and pairs.strip().isdigit():
        pairs = int(pairs)
    if not (pairs in PAIR_MODES or (isinstance(pairs, int) and not isinstance(pairs, bool) and pairs > 0)):
        raise DatasetError(f"pairs must be 'dense', 'sparse' or a positive int, got {pairs!r}")
    if not (isinstance(episodes, int) and episodes >= 1):
        raise DatasetError(f"episodes must be a positive int, got {episodes!r}")
    if not (isinstance(segment, int) and 1 <= segment <= spec.horizon):
        raise DatasetError(f"segment must be an int in [1, horizon={spec.horizon}], got {segment!r}")
    if not (isinstance(noise, int | float) and noise >= 0.0 and np.isfinite(noise)):
        raise DatasetError(f"noise must be a finite number >= 0, got {noise!r}")
    if not (isinstance(pairs_per_segment, int) and pairs_per_segment >= 1):
        raise DatasetError(f"pairs_per_segment must be a positive int, got {pairs_per_segment!r}")
    return {
        "format": DATASET_FORMAT,
        "env": spec.name,
        "gym_id": spec.gym_id,
        "horizon": spec.horizon,
        "oracle": _oracle_fingerprint(spec),
        "rater": rater,
        "episodes": int(episodes),
        "noise": float(noise),
        "segment": int(segment),
        "pairs": pairs,
        # only dense pairing uses k: keep it out of the key otherwise, so equal datasets share a file
        "pairs_per_segment": int(pairs_per_segment) if pairs == "dense" else None,
        "seed": int(seed),
        "n_envs": int(n_envs),
    }


def dataset_path(params: Mapping[str, Any], directory: str | Path | None = None) -> Path:
    """``<dir>/<env>-<hash of params>.npz``: the cache file of a dataset built with ``params``."""
    digest = hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:20]
    return dataset_dir(directory) / f"{params['env']}-{digest}.npz"


# --------------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------------


def noisy_policy(
    act_fn: Callable[[np.ndarray], np.ndarray],
    noise: float,
    low: np.ndarray,
    high: np.ndarray,
    rng: np.random.Generator,
) -> Callable[[np.ndarray], np.ndarray]:
    """``obs -> clip(act_fn(obs) + N(0, (noise * (high - low) / 2)^2), low, high)``, noise from ``rng``."""
    std = noise * (np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)) / 2.0

    def act(obs: np.ndarray) -> np.ndarray:
        action = np.asarray(act_fn(obs), dtype=np.float64)
        if noise > 0.0:
            action = action + rng.normal(size=action.shape) * std
        return np.clip(action, low, high).astype(np.float32)

    return act


def _split_evenly(total: int, parts: int) -> list[int]:
    """``total`` items over ``parts`` bins, sizes differing by at most one (larger bins last)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i >= parts - extra else 0) for i in range(parts)]


def _make_rater(rater: Any, spec: EnvSpec) -> Any:

    if not isinstance(rater, str):
        return rater
    # regret raters find the oracle's V*/Q* through the provider registered in prefrl.raters
    return make_rater(rater, spec)


class _BuildProgress:
    """Counts a build's env steps: logs every :data:`LOG_EVERY` of ``total``, feeds ``callback``."""

    def __init__(self, total: int, label: str, callback: ProgressFn | None = None) -> None:
        self.total, self.label, self.callback = max(int(total), 1), label, callback
        self.done = 0
        self._next_log = LOG_EVERY

    def update(self, done: int) -> None:
        done = min(int(done), self.total)
        if done <= self.done:
            return
        self.done = done
        if self.callback is not None:
            self.callback(done, self.total)
        fraction = done / self.total
        if fraction >= self._next_log - 1e-9:
            logger.info("%s: %3.0f%% (%d/%d env steps)", self.label, 100 * fraction, done, self.total)
            # the next multiple of LOG_EVERY above this one (a large jump logs once)
            self._next_log = (int(fraction / LOG_EVERY + 1e-9) + 1) * LOG_EVERY

    def counting(
        self, act: Callable[[np.ndarray], np.ndarray], steps: int
    ) -> Callable[[np.ndarray], np.ndarray]:
        """``act`` that advances the count by one per env it is called for, by at most ``steps`` in all."""
        start = self.done

        def counted(obs: np.ndarray) -> np.ndarray:
            action = act(obs)
            self.update(min(self.done + len(obs), start + steps))
            return action

        return counted


def _prefrl_version() -> str | None:
    try:
        return metadata.version("prefrl")
    except metadata.PackageNotFoundError:
        return None


def build_dataset(
    env: EnvSpec | str,
    rater: Any,
    episodes: int = _DEFAULTS.episodes,
    noise: float = _DEFAULTS.noise,
    segment: int = _DEFAULTS.segment,
    pairs: str | int = _DEFAULTS.pairs,
    pairs_per_segment: int = _DEFAULTS.pairs_per_segment,
    seed: int = _DEFAULTS.seed,
    out: str | Path | None = None,
    directory: str | Path | None = None,
    n_envs: int = _DEFAULTS.n_envs,
    return_episodes: int = _DEFAULTS.return_episodes,
    rebuild: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Build (or reuse from the cache) an offline preference dataset; return its ``.npz`` path.

    :param env: env spec or its name; its oracle must exist (``prefrl oracle train --env ENV``).
    :param rater: a rater spec string (``"regret"``, ``"partial_return+mistake:eps=0.1"``) or a built
        :class:`~prefrl.raters.base.Rater`. A string ``regret`` uses the oracle's ``V*`` / ``Q*``.
    :param episodes: episodes rolled out in total, split evenly over the checkpoints (all levels and
        the expert); each yields ``horizon // segment`` consecutive segments.
    :param noise: Gaussian action-noise std as a fraction of the action half-range; clipped to bounds.
    :param segment: ``H``, steps per segment.
    :param pairs: ``"dense"``, ``"sparse"`` or a number of random pairs (module docstring).
    :param pairs_per_segment: pairs each segment appears in with ``"dense"``.
    :param seed: seeds the rollouts, the action noise, the pairing and the rater's draws.
    :param out: write here instead of the cache file (the cache is not consulted).
    :param directory: cache directory (default :func:`dataset_dir`).
    :param n_envs: parallel envs per checkpoint rollout (env ``i`` seeded from ``seed`` and ``i``).
    :param return_episodes: episodes per checkpoint to measure the noisy behaviour policy's true return
        (recorded in the provenance; 0 skips it).
    :param rebuild: build even if the cache file exists.
    :param progress: called as ``progress(done, total)`` with the env steps rolled out so far and in
        all, after every vectorised step of the rollouts (not called when the cache is reused). The
        build also logs an INFO line every ~10% on this module's logger.
    """
    spec = load_env_spec(env)
    rater_obj = _make_rater(rater, spec)
    identity = rater_identity(rater_obj)
    params = dataset_params(spec, identity, episodes, noise, segment, pairs, pairs_per_segment, seed, n_envs)
    path = Path(out) if out is not None else dataset_path(params, directory)
    if out is None and path.is_file() and not rebuild:
        try:
            cached = load_dataset(path, spec)
        except DatasetError as e:
            logger.warning("%s; rebuilding it", e)
        else:
            if cached.provenance.get("params") == json.loads(json.dumps(params)):
                logger.info("reusing cached dataset %s", path)
                return path
            logger.warning("%s was built with other parameters (hash collision?); rebuilding it", path)

    start = time.perf_counter()
    oracle = load_oracle(spec)
    names = oracle.checkpoint_names
    if len(names) < 2:
        # an expert-only dataset has no spread of skill: refuse rather than build it silently
        raise DatasetError(
            f"the {spec.name} oracle has no skill levels (its manifest lists only the expert); an offline "
            "dataset needs checkpoints between random and expert: retrain it with `prefrl oracle train`"
        )
    if episodes < len(names):
        raise DatasetError(f"episodes ({episodes}) must be at least the number of checkpoints ({len(names)})")
    per_episode = spec.horizon // segment
    low, high = spec.action_space.low, spec.action_space.high
    # independent streams for every checkpoint's rollouts/noise, for the pairing and for the rater
    seq = np.random.SeedSequence(seed)
    rollout_seqs, pair_seq, rater_seq = seq.spawn(len(names)), *seq.spawn(2)
    counts = _split_evenly(episodes, len(names))
    # env steps: every episode's rollout, then every checkpoint's return measurement
    tracker = _BuildProgress(
        (episodes + len(names) * max(return_episodes, 0)) * spec.horizon,
        f"dataset {spec.name}",
        progress,
    )
    batches, checkpoints = [], []
    for source, (name, count, child) in enumerate(zip(names, counts, rollout_seqs, strict=True)):
        env_seed, noise_seed, eval_seed = (int(s) for s in child.generate_state(3) % (2**31 - 1))
        act = noisy_policy(oracle.policy(name), noise, low, high, np.random.default_rng(noise_seed))
        steps, done_before = count * spec.horizon, tracker.done
        batch = collect_segments(
            spec,
            tracker.counting(act, steps),
            count * per_episode,
            segment,
            seed=env_seed,
            n_envs=min(n_envs, count),
            source=source,
        )
        tracker.update(done_before + steps)
        batches.append(batch)
        info: dict[str, Any] = {
            "name": name,
            "source": source,
            "episodes": count,
            "segments": batch.num_segments,
            "checkpoint_return": oracle.checkpoint_return(name),
            "env_seed": env_seed,
            "noise_seed": noise_seed,
            "mean_segment_return": float(batch.returns.mean()),
        }
        if return_episodes > 0:
            eval_act = noisy_policy(oracle.policy(name), noise, low, high, np.random.default_rng(eval_seed))
            steps, done_before = return_episodes * spec.horizon, tracker.done
            counted = tracker.counting(eval_act, steps)
            returns = episode_returns(counted, spec, return_episodes, seed=eval_seed)
            tracker.update(done_before + steps)
            info["noisy_return"] = float(returns.mean())
            info["noisy_return_std"] = float(returns.std())
        checkpoints.append(info)
    segments = SegmentBatch.concatenate(batches)
    pair_idx = make_pairs(
        segments.num_segments, params["pairs"], np.random.default_rng(pair_seq), pairs_per_segment
    )
    prefs = rater_obj.label(segments, pair_idx, np.random.default_rng(rater_seq))
    if len(prefs) == 0:
        raise DatasetError(f"the rater {rater_obj!r} skipped every one of the {len(pair_idx)} pairs")

    provenance = {
        "params": params,
        "return_episodes": int(return_episodes),
        "rater_spec": rater if isinstance(rater, str) else None,
        "rater_repr": repr(rater_obj),
        # the full spec the data was collected on (a user spec file or gym: id may not exist elsewhere)
        "env_spec": spec.to_dict(),
        "checkpoints": checkpoints,
        "oracle": {
            "algo": oracle.manifest.algo,
            "command": oracle.manifest.command,
            "random_return": oracle.manifest.random_return,
            "oracle_return": oracle.manifest.oracle_return,
        },
        "env_steps": int(episodes * spec.horizon),
        "num_segments": segments.num_segments,
        "pairs_requested": len(pair_idx),
        "pairs_labelled": len(prefs),
        "tie_rate": prefs.tie_rate,
        "mean_segment_return": float(segments.returns.mean()),
        "prefrl_version": _prefrl_version(),
        "numpy_version": np.__version__,
        "created": datetime.now(UTC).isoformat(),
        "build_s": round(time.perf_counter() - start, 3),
    }
    if return_episodes > 0:
        # the dataset's behaviour return: every checkpoint weighted by its share of the episodes
        weights = np.array([c["episodes"] for c in checkpoints], dtype=np.float64)
        noisy = np.array([c["noisy_return"] for c in checkpoints])
        provenance["mean_noisy_return"] = float(weights @ noisy / weights.sum())
        if spec.has_normalisation:
            provenance["mean_normalised_score"] = float(spec.normalise(provenance["mean_noisy_return"]))
    save_dataset(path, prefs, provenance)
    logger.info("built dataset %s (%d pairs, %.1f s)", path, len(prefs), provenance["build_s"])
    return path


def build_command(provenance: Mapping[str, Any]) -> str | None:
    """The ``prefrl dataset build`` command that rebuilds the dataset with this provenance.

    ``None`` when the dataset was built with a rater object rather than a spec string (no command line
    names it). ``--return-episodes`` is given when the provenance records it (files built before it
    did leave it out: it changes the provenance, not the data).
    """
    params = provenance.get("params", {})
    rater = provenance.get("rater_spec")
    if not isinstance(rater, str) or "env" not in params:
        return None
    args = [
        "prefrl dataset build",
        f"--env {params['env']}",
        f"--rater {shlex.quote(rater)}",
        f"--episodes {params['episodes']}",
        f"--noise {params['noise']}",
        f"--segment {params['segment']}",
        f"--pairs {params['pairs']}",
    ]
    if params.get("pairs_per_segment") is not None:
        args.append(f"--pairs-per-segment {params['pairs_per_segment']}")
    args += [f"--seed {params['seed']}", f"--n-envs {params['n_envs']}"]
    if "return_episodes" in provenance:
        args.append(f"--return-episodes {provenance['return_episodes']}")
    return " ".join(args)


def save_dataset(path: str | Path, prefs: PreferenceBatch, provenance: Mapping[str, Any]) -> Path:
    """Write one compressed ``.npz`` atomically (a killed build never leaves a half-written cache file).

    ``provenance`` must hold ``params`` with ``format`` = :data:`DATASET_FORMAT` and ``env`` for
    :func:`load_dataset` to accept the file; ``env_steps`` is read by the offline agents.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = prefs.segments.to_dict()
    arrays.update(pairs=prefs.pairs, labels=prefs.labels, provenance=np.array(json.dumps(provenance)))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


# --------------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------------


def load_dataset(path: str | Path, env_spec: EnvSpec | str | None = None) -> PreferenceDataset:
    """Read and validate a dataset file.

    :param path: the ``.npz`` written by :func:`build_dataset`.
    :param env_spec: if given, also check that the dataset was built on this env and that its
        observation/action dimensions match it.
    :raises DatasetError: missing or unreadable file, missing keys, inconsistent shapes, bad labels or
        an env mismatch; the message names the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _REQUIRED_KEYS if key not in data.files]
            if missing:
                raise DatasetError(f"dataset {path} is missing arrays {missing} (not a prefrl dataset?)")
            arrays = {key: data[key] for key in _REQUIRED_KEYS}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DatasetError(
            f"dataset {path} is corrupted or not an .npz file ({type(e).__name__}: {e})"
        ) from None
    try:
        provenance = json.loads(str(arrays.pop("provenance")))
    except json.JSONDecodeError as e:
        raise DatasetError(f"dataset {path}: provenance is not valid JSON ({e})") from None
    fmt = provenance.get("params", {}).get("format")
    if fmt != DATASET_FORMAT:
        raise DatasetError(
            f"dataset {path} has format {fmt}, this prefrl reads format {DATASET_FORMAT}; rebuild it"
        )
    try:
        segments = SegmentBatch(**{key: arrays[key] for key in _SEGMENT_KEYS})
        prefs = PreferenceBatch(segments, arrays["pairs"], arrays["labels"])
    except (ValueError, IndexError) as e:  # ShapeError is a ValueError
        raise DatasetError(f"dataset {path} has inconsistent arrays: {e}") from None
    if env_spec is not None:
        spec = load_env_spec(env_spec)
        built_on = provenance["params"].get("env")
        if built_on != spec.name:
            raise DatasetError(f"dataset {path} was built on env '{built_on}', not '{spec.name}'")
        try:
            validate_segments(segments, spec)
        except ValueError as e:
            raise DatasetError(f"dataset {path} does not match env '{spec.name}': {e}") from None
    return PreferenceDataset(path, prefs, provenance)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
