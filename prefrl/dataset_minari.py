"""Offline preference datasets in Minari's format: export to, and import from, a Minari dataset.

`Minari <https://minari.farama.org>`_ is the Farama Foundation's format for offline RL datasets
(``minari.load_dataset``, ``MinariDataset.iterate_episodes``, ...). :func:`export_minari` writes a
dataset built by :func:`prefrl.datasets.build_dataset` as a Minari dataset (through
``minari.create_dataset_from_buffers``, HDF5 storage), with its preference labels and its provenance;
:func:`import_minari` reads it back into a prefrl ``.npz``. The round trip gives the same dataset: the
same arrays with the same dtypes, the same pairs and labels, the same provenance. Minari is the optional
extra ``prefrl[minari]``, imported only by these two functions.

Mapping (layout :data:`MINARI_LAYOUT`). prefrl keeps segments, not whole episodes (a build cuts every
rolled-out episode into ``horizon // H`` consecutive segments of ``H`` steps and drops the rest), so

* **Minari episode ``i`` is prefrl segment ``i``**, in the file's order; a preference pair ``(i, j)``
  names episodes ``i`` and ``j``. Per episode:

  - ``observations`` ``[H + 1, obs_dim]``: the segment's ``obs`` then its ``next_obs``;
  - ``actions`` ``[H, act_dim]`` and ``rewards`` ``[H]`` (the true reward);
  - ``terminations`` all False and ``truncations`` True at the last step only: a segment stops without
    reaching a terminal state (prefrl's done flag does not tell a termination from the time limit, and
    every shipped env spec runs to a fixed horizon, so an episode end is a time limit too);
  - ``infos``, like the observations one entry longer than the steps (entry 0 goes with the first
    observation, entry ``t + 1`` with step ``t``, as Minari's ``DataCollector`` records them):
    ``factors`` ``[H + 1, F]`` (the raw reward factors of each step, entry 0 NaN), ``done``
    ``[H + 1]`` (prefrl's done flag of each step, entry 0 False) and ``source`` ``[H + 1]`` (the
    oracle checkpoint the segment comes from, an index into ``provenance["checkpoints"]``).

* **Dataset metadata**: Minari's own fields - ``env_spec`` and ``eval_env_spec`` (the gymnasium id with
  the env spec's kwargs and its horizon as ``max_episode_steps``, so ``recover_environment()`` works),
  ``algorithm_name``, ``description``, and ``author``, ``author_email``, ``code_permalink`` when given -
  plus one key ``"prefrl"`` holding

  - ``layout``, ``prefrl_version``, ``exported`` (UTC time);
  - a summary: ``env``, ``gym_id``, ``horizon``, ``segment_length``, ``factor_names``, ``rater_spec``,
    ``rater``, ``seed``, ``noise``, ``pairs_mode``, ``num_segments``, ``num_pairs``;
  - ``build_command``: the ``prefrl dataset build`` command that rebuilds the data
    (:func:`prefrl.datasets.build_command`);
  - ``pairs`` ``[[i, j], ...]`` (episode ids) and ``labels`` ``[y, ...]`` with
    ``y = P(episode i preferred over episode j)``, 0.5 a tie, in the dataset's (random) order;
  - ``dtypes``: the dtype of every prefrl array, restored on import;
  - ``provenance``: the prefrl file's provenance, unchanged.

Where the data go: a Minari dataset ``NAMESPACE/NAME-vN`` lives in ``ROOT/NAMESPACE/NAME-vN/data``, with
``ROOT`` the ``root`` argument, else ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets`` (Minari
reads the variable; these functions set it for the duration of the call when ``root`` is given).

Command line (:mod:`prefrl.cli.dataset`)::

    prefrl dataset export DATASET --format minari --id NAMESPACE/NAME-v0 [--out DIR]
    prefrl dataset import ID_OR_PATH --out FILE [--minari-dir DIR]
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from prefrl.datasets import (
    DATASET_FORMAT,
    PreferenceDataset,
    build_command,
    load_dataset,
    save_dataset,
)
from prefrl.envs import EnvSpec, load_env_spec
from prefrl.errors import DatasetError, MissingExtraError
from prefrl.segments import validate_segments
from prefrl.types import PreferenceBatch, SegmentBatch

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORT_FORMATS",
    "MINARI_INSTALL",
    "MINARI_LAYOUT",
    "export_minari",
    "import_minari",
    "minari_root",
]

#: bumped whenever the mapping of the module docstring changes
MINARI_LAYOUT = 1
#: the formats ``prefrl dataset export`` writes
EXPORT_FORMATS = ("minari",)
#: install hint for the optional extra
MINARI_INSTALL = "pip install 'prefrl[minari]'"
#: the variable Minari reads its datasets root from
MINARI_PATH_ENV = "MINARI_DATASETS_PATH"
#: the key of prefrl's block in the Minari dataset metadata
METADATA_KEY = "prefrl"
#: the Minari storage written (its default; needs h5py, part of the extra)
DATA_FORMAT = "hdf5"
_SEGMENT_KEYS = ("obs", "act", "reward", "factors", "dones", "next_obs", "source")
_INFO_KEYS = ("factors", "done", "source")
#: Minari's reminders for the optional authorship fields (export leaves them out unless given)
_UNSET_WARNING = r"`(author|author_email|code_permalink)` is set to None"


# --------------------------------------------------------------------------------------------------
# Minari, lazily
# --------------------------------------------------------------------------------------------------


def _import_minari() -> Any:
    """The ``minari`` module; :class:`MissingExtraError` with the install command when it is missing."""
    try:
        import minari
    except ImportError as e:
        raise MissingExtraError(
            f"Minari export/import needs Minari, which is not installed ({e}); install it with: "
            f"{MINARI_INSTALL}"
        ) from e
    # Minari imports its HDF5 storage when it first reads or writes one: check h5py up front
    if importlib.util.find_spec("h5py") is None:
        raise MissingExtraError(
            f"Minari's HDF5 storage needs h5py, which is not installed; install it with: {MINARI_INSTALL}"
        )
    return minari


def minari_root(root: str | Path | None = None) -> Path:
    """The Minari datasets root: ``root``, else ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(MINARI_PATH_ENV)
    return Path(env) if env else Path.home() / ".minari" / "datasets"


@contextmanager
def _datasets_root(root: str | Path | None) -> Iterator[Path]:
    """Point Minari at ``root`` for the duration of the block (it reads ``$MINARI_DATASETS_PATH``)."""
    resolved = minari_root(root).expanduser().resolve()
    if root is None:
        yield resolved
        return
    previous = os.environ.get(MINARI_PATH_ENV)
    os.environ[MINARI_PATH_ENV] = str(resolved)
    try:
        yield resolved
    finally:
        if previous is None:
            os.environ.pop(MINARI_PATH_ENV, None)
        else:
            os.environ[MINARI_PATH_ENV] = previous


def _is_dataset_id(minari: Any, text: str) -> bool:
    """``NAMESPACE/NAME-vN`` (Minari's syntax: the namespace is optional, the version is not)."""
    try:
        minari.dataset.minari_dataset.parse_dataset_id(text)
    except (ValueError, TypeError):  # TypeError: no version (Minari's int(None))
        return False
    return True


def _check_dataset_id(minari: Any, dataset_id: str) -> None:
    if not _is_dataset_id(minari, dataset_id):
        raise DatasetError(
            f"'{dataset_id}' is not a Minari dataset id: expected NAMESPACE/NAME-vN, "
            "e.g. prefrl/pendulum-regret-v0"
        )


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------


def _gym_env_spec(spec: EnvSpec) -> gym.envs.registration.EnvSpec:
    """The registered gymnasium spec with the env spec's kwargs and its horizon as the time limit."""
    try:
        registered = gym.spec(spec.gym_id)
    except gym.error.Error as e:
        raise DatasetError(f"env '{spec.name}': gymnasium does not know {spec.gym_id} ({e})") from None
    return dataclasses.replace(
        registered, max_episode_steps=spec.horizon, kwargs={**registered.kwargs, **spec.kwargs}
    )


def _episode_buffers(minari: Any, segments: SegmentBatch) -> list[Any]:
    """One ``EpisodeBuffer`` per segment (module docstring)."""
    n, h = segments.num_segments, segments.length
    observations = np.concatenate([segments.obs, segments.next_obs[:, None]], axis=1)
    factors = np.concatenate(
        [np.full((n, 1, segments.factors.shape[2]), np.nan, segments.factors.dtype), segments.factors], axis=1
    )
    done = np.concatenate([np.zeros((n, 1), dtype=segments.dones.dtype), segments.dones], axis=1)
    terminations = np.zeros(h, dtype=bool)
    truncations = np.zeros(h, dtype=bool)
    truncations[-1] = True
    return [
        minari.data_collector.EpisodeBuffer(
            id=i,
            observations=observations[i],
            actions=segments.act[i],
            rewards=segments.reward[i],
            terminations=terminations,
            truncations=truncations,
            infos={
                "factors": factors[i],
                "done": done[i],
                "source": np.full(h + 1, segments.source[i], dtype=segments.source.dtype),
            },
        )
        for i in range(n)
    ]


def _prefrl_metadata(data: PreferenceDataset, spec: EnvSpec) -> dict[str, Any]:
    """The ``"prefrl"`` block of the Minari metadata (module docstring)."""
    prov, prefs = data.provenance, data.preferences
    params = prov.get("params", {})
    arrays = {**prefs.segments.to_dict(), "pairs": prefs.pairs, "labels": prefs.labels}
    return {
        "layout": MINARI_LAYOUT,
        "prefrl_version": _prefrl_version(),
        "exported": datetime.now(UTC).isoformat(),
        "env": spec.name,
        "gym_id": spec.gym_id,
        "horizon": spec.horizon,
        "segment_length": prefs.segments.length,
        "factor_names": spec.factor_names,
        "rater_spec": prov.get("rater_spec"),
        "rater": params.get("rater"),
        "seed": params.get("seed"),
        "noise": params.get("noise"),
        "pairs_mode": params.get("pairs"),
        "num_segments": prefs.segments.num_segments,
        "num_pairs": len(prefs),
        "build_command": build_command(prov),
        "pairs": prefs.pairs.tolist(),
        "labels": prefs.labels.tolist(),
        "dtypes": {key: str(np.asarray(value).dtype) for key, value in arrays.items()},
        "provenance": prov,
    }


def _describe(data: PreferenceDataset, spec: EnvSpec) -> tuple[str, str]:
    """``(algorithm_name, description)`` for Minari's metadata."""
    prov, prefs = data.provenance, data.preferences
    params = prov.get("params", {})
    oracle = prov.get("oracle", {}).get("algo") or "oracle"
    checkpoints = [c.get("name") for c in prov.get("checkpoints", [])]
    algorithm = f"prefrl: {oracle} oracle checkpoints {', '.join(map(str, checkpoints))}"
    if "noise" in params:
        algorithm += f" with Gaussian action noise {params['noise']} (fraction of the action half-range)"
    rater = prov.get("rater_spec") or params.get("rater")
    description = (
        f"prefrl offline preference dataset on {spec.name} ({spec.gym_id}, horizon {spec.horizon}): "
        f"{prefs.segments.num_segments} segments of {prefs.segments.length} steps, one per Minari "
        f"episode, and {len(prefs)} labelled pairs of them by the rater '{rater}'. The pairs (episode ids) "
        "and labels y = P(first preferred over second) are in metadata['prefrl'] with the provenance; "
        "infos hold the reward factors, prefrl's done flags and the source checkpoint of each step."
    )
    return algorithm, description


def _prefrl_version() -> str | None:
    try:
        return metadata.version("prefrl")
    except metadata.PackageNotFoundError:
        return None


def export_minari(
    dataset: PreferenceDataset | str | Path,
    dataset_id: str,
    root: str | Path | None = None,
    *,
    author: str | None = None,
    author_email: str | None = None,
    code_permalink: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a prefrl dataset as the Minari dataset ``dataset_id``; returns its directory.

    :param dataset: a loaded dataset or the path of its ``.npz`` (:func:`prefrl.datasets.build_dataset`).
    :param dataset_id: ``NAMESPACE/NAME-vN``, e.g. ``prefrl/pendulum-regret-v0``.
    :param root: Minari datasets root (default :func:`minari_root`); the dataset goes to
        ``root/dataset_id``.
    :param author: Minari ``author`` (optional, as ``author_email`` and ``code_permalink``).
    :param description: Minari ``description``; default: a summary of the data and the mapping.
    :param overwrite: replace an existing dataset with this id (else that is an error).
    :raises MissingExtraError: Minari is not installed.
    :raises DatasetError: a missing or invalid dataset file, a malformed id, an existing dataset.
    """
    minari = _import_minari()
    data = dataset if isinstance(dataset, PreferenceDataset) else load_dataset(dataset)
    spec = load_env_spec(data.provenance["params"]["env"])
    try:
        validate_segments(data.segments, spec)
    except ValueError as e:
        raise DatasetError(f"dataset {data.path} does not match env '{spec.name}': {e}") from None
    _check_dataset_id(minari, dataset_id)
    gym_spec = _gym_env_spec(spec)
    algorithm, summary = _describe(data, spec)
    with _datasets_root(root) as resolved:
        target = resolved / dataset_id
        if target.exists():
            if not overwrite:
                raise DatasetError(
                    f"a Minari dataset '{dataset_id}' already exists at {target}: bump its version "
                    "(-v1, ...) or overwrite it (--overwrite)"
                )
            minari.delete_dataset(dataset_id)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_UNSET_WARNING, category=UserWarning)
                created = minari.create_dataset_from_buffers(
                    dataset_id,
                    _episode_buffers(minari, data.segments),
                    env=gym_spec,
                    eval_env=gym_spec,
                    algorithm_name=algorithm,
                    author=author,
                    author_email=author_email,
                    code_permalink=code_permalink,
                    description=description or summary,
                    data_format=DATA_FORMAT,
                )
            created.storage.update_metadata({METADATA_KEY: _prefrl_metadata(data, spec)})
        except BaseException:
            # never leave a dataset without its labels behind
            shutil.rmtree(target, ignore_errors=True)
            raise
    logger.info(
        "exported %s (%d segments, %d labelled pairs) to the Minari dataset %s at %s",
        data.path,
        data.segments.num_segments,
        data.num_pairs,
        dataset_id,
        target,
    )
    return target


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------


def _open(minari: Any, source: str | Path, root: str | Path | None) -> Any:
    """The ``MinariDataset`` at a path (its directory or its ``data`` directory) or with an id."""
    path = Path(source).expanduser()
    if path.exists():
        data_path = path.parent if path.is_file() else path
        if not (data_path / "metadata.json").is_file():
            data_path = data_path / "data"
        if not (data_path / "metadata.json").is_file():
            raise DatasetError(f"{path} is not a Minari dataset directory (no data/metadata.json in it)")
        try:
            return minari.MinariDataset(data_path)
        except (ValueError, KeyError, OSError, AssertionError) as e:
            raise DatasetError(f"cannot read the Minari dataset at {path}: {e}") from None
    text = str(source)
    if not _is_dataset_id(minari, text):
        raise DatasetError(
            f"{text}: no such file or directory, and not a Minari dataset id (NAMESPACE/NAME-vN)"
        )
    with _datasets_root(root) as resolved:
        if not (resolved / text / "data").is_dir():
            raise DatasetError(
                f"no Minari dataset '{text}' under {resolved} (neither an existing path nor a local "
                f"dataset; set --minari-dir or ${MINARI_PATH_ENV})"
            )
        try:
            return minari.load_dataset(text)
        except (ValueError, KeyError, OSError, AssertionError) as e:
            raise DatasetError(f"cannot read the Minari dataset '{text}': {e}") from None


def _prefrl_block(dataset: Any, where: str) -> dict[str, Any]:
    block = dataset.storage.metadata.get(METADATA_KEY)
    if not isinstance(block, Mapping) or not {"pairs", "labels", "provenance"} <= set(block):
        raise DatasetError(
            f"the Minari dataset {where} has no prefrl preference labels (metadata['{METADATA_KEY}']): "
            "import reads datasets written by `prefrl dataset export`"
        )
    if block.get("layout") != MINARI_LAYOUT:
        raise DatasetError(
            f"the Minari dataset {where} has prefrl layout {block.get('layout')}, this prefrl reads "
            f"layout {MINARI_LAYOUT}; export it again"
        )
    fmt = block["provenance"].get("params", {}).get("format")
    if fmt != DATASET_FORMAT:
        raise DatasetError(
            f"the Minari dataset {where} holds a prefrl dataset of format {fmt}, this prefrl reads format "
            f"{DATASET_FORMAT}; rebuild and export it again"
        )
    return dict(block)


def _segments(dataset: Any, dtypes: Mapping[str, str], where: str) -> SegmentBatch:
    """The inverse of :func:`_episode_buffers`."""
    columns: dict[str, list[np.ndarray]] = {key: [] for key in _SEGMENT_KEYS}
    for episode in dataset.iterate_episodes():
        infos = episode.infos or {}
        missing = [key for key in _INFO_KEYS if key not in infos]
        if missing:
            raise DatasetError(f"the Minari dataset {where}: episode {episode.id} has no infos {missing}")
        observations = np.asarray(episode.observations)
        columns["obs"].append(observations[:-1])
        columns["next_obs"].append(observations[-1])
        columns["act"].append(np.asarray(episode.actions))
        columns["reward"].append(np.asarray(episode.rewards))
        columns["factors"].append(np.asarray(infos["factors"])[1:])
        columns["dones"].append(np.asarray(infos["done"])[1:])
        columns["source"].append(np.asarray(infos["source"])[0])
    if not columns["obs"]:
        raise DatasetError(f"the Minari dataset {where} has no episodes")
    try:
        arrays = {key: np.stack(values).astype(dtypes[key]) for key, values in columns.items()}
        return SegmentBatch(**arrays)
    except (ValueError, KeyError, TypeError) as e:  # ragged episodes, bad dtypes, ShapeError
        raise DatasetError(f"the Minari dataset {where} does not hold prefrl segments: {e}") from None


def import_minari(source: str | Path, out: str | Path, root: str | Path | None = None) -> Path:
    """Read a Minari dataset written by :func:`export_minari` back into a prefrl ``.npz``; returns ``out``.

    :param source: the Minari dataset's directory (or its ``data`` directory), or its id
        ``NAMESPACE/NAME-vN`` looked up under ``root``. An existing path wins over an id.
    :param out: the ``.npz`` to write (replaced if it exists).
    :param root: Minari datasets root for an id (default :func:`minari_root`).
    :raises MissingExtraError: Minari is not installed.
    :raises DatasetError: no such dataset, or one without prefrl's labels (not written by prefrl).
    """
    minari = _import_minari()
    dataset = _open(minari, source, root)
    where = f"'{dataset.id}' ({dataset.storage.data_path.parent})"
    block = _prefrl_block(dataset, where)
    dtypes = block.get("dtypes", {})
    segments = _segments(dataset, dtypes, where)
    try:
        pairs = np.asarray(block["pairs"], dtype=dtypes.get("pairs", "int64")).reshape(-1, 2)
        labels = np.asarray(block["labels"], dtype=dtypes.get("labels", "float64"))
        prefs = PreferenceBatch(segments, pairs, labels)
    except (ValueError, TypeError, IndexError) as e:
        raise DatasetError(f"the Minari dataset {where} has invalid prefrl pairs or labels: {e}") from None
    path = save_dataset(out, prefs, block["provenance"])
    load_dataset(path)  # what was written reads back
    logger.info(
        "imported the Minari dataset %s (%d segments, %d labelled pairs) to %s",
        dataset.id,
        segments.num_segments,
        len(prefs),
        path,
    )
    return path
