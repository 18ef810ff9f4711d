"""Resumable off-policy training: save and restore an SB3 model together with its replay buffer.

Hours of SAC training on a CPU should survive a cut-off session. A state folder holds

* ``model.pt``: the model's state dicts (policy, optimisers) and tensors (entropy coefficient), read back
  with ``torch.load(weights_only=True)`` into a model built afresh from the same config;
* ``replay.npz``: only the filled part of the replay buffer (a 1M-transition buffer is mostly empty early
  on), read with ``allow_pickle=False``;
* ``extra.pt``: what the caller keeps beside (e.g. policy snapshots): tensors, numbers, strings and
  containers of them, read with ``weights_only=True``;
* ``meta.json``: the run's identity, its step and update counters and the wall time spent so far.

Nothing in the folder is unpickled, so a crafted state cannot run code. States written by older prefrl
versions hold SB3's ``model.zip`` instead of ``model.pt``; SB3's loader unpickles entries of it, so
:func:`restore_training_state` reads one only with ``trust=True`` (``prefrl oracle train --resume
--trust``), for folders you wrote yourself.

``prefrl oracle train`` keeps this state beside its output folder, ``<out>.training/seed<S>/`` (in the
user oracle folder by default, never in the package).

All files are written under temporary names before any is renamed into place, so a save that fails or is
killed while writing leaves the previous state intact.
A resumed run continues the same model and buffer but is not bit-identical to an uninterrupted one: the
environment restarts its episode and its random stream.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from prefrl.errors import TrainingStateError

__all__ = [
    "BUFFER_FIELDS",
    "LEGACY_MODEL",
    "META",
    "MODEL",
    "SaveTrainingState",
    "read_meta",
    "restore_training_state",
    "save_training_state",
]

logger = logging.getLogger(__name__)

META = "meta.json"
#: the model's state dicts and tensors (``weights_only``)
MODEL = "model.pt"
#: SB3's pickled save of states written by older prefrl versions (read with ``trust=True`` only)
LEGACY_MODEL = "model.zip"
BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _torch_state(model: OffPolicyAlgorithm) -> dict[str, Any]:
    """``{"params": {name: state dict}, "variables": {name: tensor}}``: what SB3 itself saves, as tensors."""
    _, variable_names = model._get_torch_save_params()
    variables = {name: _attribute(model, name).detach().clone() for name in variable_names}
    return {"params": model.get_parameters(), "variables": variables}


def _attribute(model: BaseAlgorithm, name: str) -> Any:
    target: Any = model
    for part in name.split("."):
        target = getattr(target, part)
    return target


def save_training_state(
    model: OffPolicyAlgorithm, folder: Path, meta: dict[str, Any], extra: Any = None
) -> None:
    """Write ``model``, its replay buffer's filled part, ``extra`` and ``meta`` to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = model.replay_buffer
    if not isinstance(buffer, ReplayBuffer) or buffer.optimize_memory_usage:
        raise TrainingStateError("only a plain ReplayBuffer (optimize_memory_usage=False) can be saved")
    n = buffer.size()  # the filled part: pos, or all of it once the ring has wrapped
    arrays = {name: getattr(buffer, name)[:n] for name in BUFFER_FIELDS}
    arrays["pos"] = np.array(buffer.pos)
    arrays["full"] = np.array(buffer.full)

    def write_buffer(fh: Any) -> None:
        np.savez(fh, **arrays)

    meta = {
        **meta,
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(model._n_updates),
        "episode_num": int(model._episode_num),
        "saved_at": time.time(),
    }
    writers = {
        "replay.npz": write_buffer,
        MODEL: lambda fh: th.save(_torch_state(model), fh),
        "extra.pt": lambda fh: th.save(extra, fh),
        META: lambda fh: fh.write(json.dumps(meta, indent=2).encode()),
    }
    # every file is written in full before any is replaced (meta last): a save that fails or is killed
    # while writing leaves the previous state whole
    for name, write in writers.items():
        with open(folder / (name + ".tmp"), "wb") as fh:
            write(fh)
    for name in writers:
        os.replace(folder / (name + ".tmp"), folder / name)
    # an older version's pickled model is superseded by model.pt: never left to be loaded by mistake
    (folder / LEGACY_MODEL).unlink(missing_ok=True)


def read_meta(folder: Path) -> dict[str, Any]:
    """The state's ``meta.json``; a clear error if there is no complete state in ``folder``."""
    path = Path(folder) / META
    if not path.exists():
        raise TrainingStateError(f"no saved training state in {folder} (nothing to resume)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TrainingStateError(f"corrupted training state {path}: {err}") from err
    if not isinstance(meta, dict):
        raise TrainingStateError(f"corrupted training state {path}: not a JSON object")
    return meta


def _saved_model(
    model: OffPolicyAlgorithm, folder: Path, meta: dict[str, Any], trust: bool
) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """``(params, variables, counters)`` of the state in ``folder`` (``model.pt``, or with ``trust`` an
    older state's ``model.zip``)."""
    if (folder / MODEL).is_file():
        saved = th.load(folder / MODEL, map_location="cpu", weights_only=True)
        counters = {name: int(meta[name]) for name in ("num_timesteps", "n_updates", "episode_num")}
        return saved["params"], saved["variables"], counters
    if not (folder / LEGACY_MODEL).is_file():
        raise TrainingStateError(f"training state in {folder} is incomplete: {MODEL} is missing")
    if not trust:
        raise TrainingStateError(
            f"training state in {folder} was saved by an older prefrl as SB3's {LEGACY_MODEL}, which can "
            "only be read by unpickling (a crafted file runs code); resume it with --trust if you wrote "
            "it yourself, or delete the folder to start afresh"
        )
    logger.warning("%s: unpickling SB3's %s (trusted)", folder, LEGACY_MODEL)
    legacy = type(model).load(folder / LEGACY_MODEL, device="cpu")
    _, variable_names = legacy._get_torch_save_params()
    variables = {name: _attribute(legacy, name).detach() for name in variable_names}
    counters = {
        "num_timesteps": int(legacy.num_timesteps),
        "n_updates": int(legacy._n_updates),
        "episode_num": int(legacy._episode_num),
    }
    return legacy.get_parameters(), variables, counters


def restore_training_state(
    model: OffPolicyAlgorithm, folder: Path, expect: dict[str, Any], trust: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Restore the state :func:`save_training_state` wrote into ``model``; returns ``(extra, meta)``.

    ``model`` is built afresh from the run's config (same algorithm, architecture and buffer settings);
    its weights, optimisers, entropy coefficient, counters and replay buffer are replaced in place.
    ``expect`` lists meta entries that must match (env, seed, algo): resuming someone else's run is an
    error.

    :param trust: also read a state saved by an older prefrl (SB3's ``model.zip``, which is unpickled:
        a crafted file runs code); only for folders you wrote yourself.
    :raises TrainingStateError: no, another run's, an incomplete, a damaged or a mismatching state
    """
    folder = Path(folder)
    meta = read_meta(folder)
    for key, value in expect.items():
        if meta.get(key) != value:
            raise TrainingStateError(
                f"training state in {folder} has {key}={meta.get(key)!r}, not {value!r}; "
                "resume with the same settings or delete the folder to start afresh"
            )
    param_names, variable_names = model._get_torch_save_params()
    try:
        params, variables, counters = _saved_model(model, folder, meta, trust)
        if not isinstance(params, dict) or sorted(params) != sorted(param_names):
            raise TrainingStateError(f"training state in {folder} does not hold this model's parameters")
        if not isinstance(variables, dict) or sorted(variables) != sorted(variable_names):
            raise TrainingStateError(
                f"training state in {folder} holds {sorted(variables)}, this model needs "
                f"{sorted(variable_names)} (another ent_coef setting?); delete the folder to start afresh"
            )
        with np.load(folder / "replay.npz", allow_pickle=False) as data:
            arrays = {name: data[name] for name in (*BUFFER_FIELDS, "pos", "full")}
        # plain containers of tensors and numbers: no pickle needed
        extra = th.load(folder / "extra.pt", weights_only=True)
    except TrainingStateError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as err:
        raise TrainingStateError(f"corrupted training state in {folder}: {_reason(err)}") from err
    try:
        model.set_parameters(params, exact_match=True, device="cpu")
        with th.no_grad():
            for name, value in variables.items():
                _attribute(model, name).copy_(value)
    except (ValueError, RuntimeError, KeyError, TypeError) as err:
        raise TrainingStateError(
            f"training state in {folder} does not fit this model (settings changed since it was saved?): "
            f"{_reason(err)}; resume with the same settings or delete the folder to start afresh"
        ) from err
    buffer = model.replay_buffer
    assert isinstance(buffer, ReplayBuffer)
    n = len(arrays["observations"])
    if n > buffer.buffer_size or arrays["observations"].shape[1:] != buffer.observations.shape[1:]:
        raise TrainingStateError(f"replay buffer in {folder} does not fit this model's buffer")
    for name in BUFFER_FIELDS:
        getattr(buffer, name)[:n] = arrays[name]
    buffer.pos, buffer.full = int(arrays["pos"]), bool(arrays["full"])
    model.num_timesteps = counters["num_timesteps"]
    model._n_updates = counters["n_updates"]
    model._episode_num = counters["episode_num"]
    return extra, meta


def _reason(err: BaseException) -> str:
    """An error's text on one line (torch spreads a state-dict mismatch over several)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text[:300] or type(err).__name__


class SaveTrainingState(BaseCallback):
    """Saves the training state every ``every`` env steps (``extra()`` supplies the caller's payload)."""

    def __init__(self, folder: Path, every: int, meta: Any, extra: Any = None):
        super().__init__()
        self.folder, self.every = Path(folder), every
        self.meta, self.extra = meta, extra

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.save()
        return True

    def save(self) -> None:
        """Write the state now (also called when training ends or is interrupted)."""
        model = self.model
        assert isinstance(model, OffPolicyAlgorithm) and isinstance(model, BaseAlgorithm)
        save_training_state(model, self.folder, self.meta(), self.extra() if self.extra else None)
