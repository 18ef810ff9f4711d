"""Resumable off-policy training: save and restore an SB3 model together with its replay buffer.

Hours of SAC training on a CPU should survive a cut-off session. A state folder holds

* ``model.zip``: SB3's own save (weights, optimisers, entropy coefficient, step counter);
* ``replay.npz``: only the filled part of the replay buffer (a 1M-transition buffer is mostly empty early
  on, and SB3's pickle would store all of it);
* ``extra.pt``: what the caller keeps beside (e.g. policy snapshots): tensors, numbers, strings and
  containers of them, read with ``weights_only=True``;
* ``meta.json``: the run's identity and the wall time spent so far.

``prefrl oracle train`` keeps this state beside its output folder, ``<out>.training/seed<S>/`` (in the
user oracle folder by default, never in the package). ``model.zip`` is SB3's own format, which unpickles
some entries: resume only states you wrote yourself.

All files are written under temporary names before any is renamed into place, so a save that fails or is
killed while writing leaves the previous state intact.
A resumed run continues the same model and buffer but is not bit-identical to an uninterrupted one: the
environment restarts its episode and its random stream.
"""

from __future__ import annotations

import json
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
from stable_baselines3.common.vec_env import VecEnv

from prefrl.errors import TrainingStateError

META = "meta.json"
BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


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

    meta = {**meta, "num_timesteps": int(model.num_timesteps), "saved_at": time.time()}
    writers = {
        "replay.npz": write_buffer,
        "model.zip": model.save,
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


def read_meta(folder: Path) -> dict[str, Any]:
    """The state's ``meta.json``; a clear error if there is no complete state in ``folder``."""
    path = Path(folder) / META
    if not path.exists():
        raise TrainingStateError(f"no saved training state in {folder} (nothing to resume)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TrainingStateError(f"corrupted training state {path}: {err}") from err


def load_training_state(
    algo: type[OffPolicyAlgorithm], folder: Path, env: VecEnv, expect: dict[str, Any]
) -> tuple[OffPolicyAlgorithm, Any, dict[str, Any]]:
    """Restore ``(model, extra, meta)`` saved by :func:`save_training_state`.

    ``expect`` lists meta entries that must match (env, seed, algo): resuming someone else's run is an error.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    for key, value in expect.items():
        if meta.get(key) != value:
            raise TrainingStateError(
                f"training state in {folder} has {key}={meta.get(key)!r}, not {value!r}; "
                "resume with the same settings or delete the folder to start afresh"
            )
    try:
        model = algo.load(folder / "model.zip", env=env, device="cpu")
        with np.load(folder / "replay.npz") as data:
            arrays = {name: data[name] for name in (*BUFFER_FIELDS, "pos", "full")}
        # plain containers of tensors and numbers: no pickle needed
        extra = th.load(folder / "extra.pt", weights_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError) as err:
        raise TrainingStateError(f"corrupted training state in {folder}: {err}") from err
    buffer = model.replay_buffer
    n = len(arrays["observations"])
    if n > buffer.buffer_size or arrays["observations"].shape[1:] != buffer.observations.shape[1:]:
        raise TrainingStateError(f"replay buffer in {folder} does not fit this model's buffer")
    for name in BUFFER_FIELDS:
        getattr(buffer, name)[:n] = arrays[name]
    buffer.pos, buffer.full = int(arrays["pos"]), bool(arrays["full"])
    return model, extra, meta


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
