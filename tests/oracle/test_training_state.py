"""Saving and restoring an off-policy run (model + replay buffer) for resumable training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC

from prefrl.envs import load_env_spec, make_vec_env
from prefrl.errors import TrainingStateError
from prefrl.oracle.training_state import restore_training_state, save_training_state

IDENTITY = {"env": "pendulum", "seed": 0, "algo": "sac"}


def _sac(buffer_size: int = 1000) -> SAC:
    venv = make_vec_env(load_env_spec("pendulum"), n_envs=1, seed=0)
    kwargs = dict(net_arch=[16, 16])
    return SAC("MlpPolicy", venv, learning_starts=50, buffer_size=buffer_size, policy_kwargs=kwargs, seed=0)


@pytest.fixture(scope="module")
def trained() -> SAC:
    model = _sac()
    model.learn(300)
    return model


def test_round_trip_restores_model_buffer_and_payload(trained, tmp_path):
    save_training_state(trained, tmp_path, IDENTITY, extra={"snapshots": [1, 2]})
    # only the filled part of the buffer is written
    with np.load(tmp_path / "replay.npz") as data:
        assert len(data["observations"]) == 300
    model = _sac()  # built afresh from the same settings, as a resumed oracle run does
    extra, meta = restore_training_state(model, tmp_path, expect=IDENTITY)
    assert extra == {"snapshots": [1, 2]} and meta["num_timesteps"] == 300 == model.num_timesteps
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        restored, original = getattr(model.replay_buffer, name), getattr(trained.replay_buffer, name)
        np.testing.assert_array_equal(restored, original)
    assert model.replay_buffer.pos == trained.replay_buffer.pos
    for key, value in trained.policy.state_dict().items():
        th.testing.assert_close(model.policy.state_dict()[key], value)
    # the optimiser moments came back too, so training continues rather than restarts
    old, new = trained.actor.optimizer.state_dict(), model.actor.optimizer.state_dict()
    th.testing.assert_close(new["state"][0]["exp_avg"], old["state"][0]["exp_avg"])
    model.learn(100, reset_num_timesteps=False)
    assert model.num_timesteps == 400 and model.replay_buffer.pos == 400


def test_full_ring_buffer_round_trips(tmp_path):
    model = _sac(buffer_size=120)
    model.learn(200)  # wraps: pos 80, full
    save_training_state(model, tmp_path, IDENTITY)
    restored = _sac(buffer_size=120)
    restore_training_state(restored, tmp_path, expect=IDENTITY)
    buffer = restored.replay_buffer
    assert buffer.full and buffer.pos == 80
    np.testing.assert_array_equal(buffer.observations, model.replay_buffer.observations)


def test_mismatched_missing_and_corrupted_states_are_named(trained, tmp_path):
    fresh = _sac()
    with pytest.raises(TrainingStateError, match="nothing to resume"):
        restore_training_state(fresh, tmp_path / "none", expect=IDENTITY)
    save_training_state(trained, tmp_path, IDENTITY)
    with pytest.raises(TrainingStateError, match="seed=0, not 1"):
        restore_training_state(fresh, tmp_path, expect={**IDENTITY, "seed": 1})
    venv = make_vec_env(load_env_spec("pendulum"), n_envs=1, seed=0)
    wider = SAC("MlpPolicy", venv, buffer_size=1000, policy_kwargs=dict(net_arch=[32, 32]), seed=0)
    with pytest.raises(TrainingStateError, match=r"does not fit this model.*size mismatch"):
        restore_training_state(wider, tmp_path, expect=IDENTITY)  # another architecture in the config
    (tmp_path / "replay.npz").write_bytes(b"not an archive")
    with pytest.raises(TrainingStateError, match="corrupted training state"):
        restore_training_state(fresh, tmp_path, expect=IDENTITY)
    (tmp_path / "meta.json").write_text("{truncated")
    with pytest.raises(TrainingStateError, match="corrupted training state"):
        restore_training_state(fresh, tmp_path, expect=IDENTITY)


def test_failed_save_keeps_the_previous_state(trained, tmp_path, monkeypatch):
    save_training_state(trained, tmp_path, IDENTITY, extra="first")
    before = json.loads((tmp_path / "meta.json").read_text())

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(th, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(trained, tmp_path, {**IDENTITY, "wall_s": 5.0}, extra="second")
    monkeypatch.undo()
    extra, meta = restore_training_state(_sac(), tmp_path, expect=IDENTITY)
    assert extra == "first" and meta == before
