"""Saved reward models: the artefact in the run directory, loading it back as a reward for SB3 algorithms,
exact round trips, and one-line errors for bad run directories, damaged files and mismatching envs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import prefrl
from prefrl.agents import make_agent
from prefrl.config import load_agent_config
from prefrl.envs import load_env_spec, make_vec_env
from prefrl.errors import PrefrlError, RunDirError, SpecError
from prefrl.experiment import run_experiment
from prefrl.raters import make_rater
from prefrl.reward_artifact import (
    REWARD_MODEL_FILE,
    REWARD_WEIGHTS_FILE,
    load_reward_ensemble,
    load_reward_fn,
    load_reward_model,
    read_reward_model_info,
    save_reward_model,
)
from prefrl.reward_model import RewardEnsemble, feature_dim, reward_features
from prefrl.rollout import LearnedRewardVecEnvWrapper

#: rollouts of 2 envs x 128 steps: a 512-step run has 2 rollouts and 2 refits
TINY = {
    "n_envs": 2,
    "ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 1},
    "reward_model": {"net_arch": [16], "initial_epochs": 5, "epochs": 2},
}


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_experiment(
        "pendulum",
        "rm_ppo",
        "partial_return",
        seed=0,
        steps=512,
        queries=20,
        out=tmp_path_factory.mktemp("artefact") / "rm_ppo",
        overrides=TINY,
        eval_freq=256,
        n_eval_episodes=1,
        progress_bar=False,
    )


@pytest.fixture(scope="module")
def heron_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_experiment(
        "pendulum",
        "heron",
        "hierarchical",
        seed=0,
        steps=512,
        queries=512,
        out=tmp_path_factory.mktemp("artefact") / "heron",
        overrides={**TINY, "reward_model": {"net_arch": [16], "initial_epochs": 2}},
        eval_freq=256,
        n_eval_episodes=1,
        progress_bar=False,
    )


def step_randomly(venv, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Step ``venv`` with random actions (partly outside the bounds); the transitions and what it returned."""
    rng = np.random.default_rng(seed)
    obs = venv.reset()
    record: dict[str, list] = {"obs": [], "act": [], "reward": [], "learned": [], "true": [], "factors": []}
    for _ in range(steps):
        act = rng.uniform(-3.0, 3.0, size=(venv.num_envs, 1)).astype(np.float32)
        record["obs"].append(obs)
        record["act"].append(act)
        obs, reward, _, infos = venv.step(act)
        record["reward"].append(reward)
        record["learned"].append([info["learned_reward"] for info in infos])
        record["true"].append([info["true_reward"] for info in infos])
        record["factors"].append([info["factors"] for info in infos])
    return {key: np.asarray(value) for key, value in record.items()}


# ---- the artefact ------------------------------------------------------------------------------------


def test_run_writes_a_self_describing_artefact(rm_run: Path) -> None:
    data = json.loads((rm_run / REWARD_MODEL_FILE).read_text())
    assert data["architecture"] == {
        "inputs": "obs_act",
        "input_dim": 4,
        "num_members": 3,
        "net_arch": [16],
        "activation": "relu",
    }
    assert data["env"] == {"spec": "pendulum", "gym_id": "Pendulum-v1"}
    assert data["agent"] == "rm_ppo"
    assert data["spaces"]["observation_shape"] == [3] and data["spaces"]["action_low"] == [-2.0]
    assert len(data["input_normalization"]["mean"]) == 4
    norm = data["reward_normalization"]
    assert norm["normalize"] is True and norm["count"] > 1 and norm["var"] > 0


def test_artefact_files_need_no_pickle(rm_run: Path, tmp_path: Path) -> None:
    # weights_only refuses anything but tensors and plain containers: no code from the file can run
    state = torch.load(rm_run / REWARD_WEIGHTS_FILE, weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert {"input_mean", "input_std"} <= state.keys()
    json.loads((rm_run / REWARD_MODEL_FILE).read_text())  # plain JSON
    assert {p.name for p in rm_run.iterdir() if p.name.startswith("reward_model")} == {
        REWARD_MODEL_FILE,
        REWARD_WEIGHTS_FILE,
    }


def test_save_load_round_trip_is_exact(tmp_path: Path, pendulum) -> None:
    d = feature_dim("obs_factors", 3, 1, pendulum.num_factors)
    ensemble = RewardEnsemble("obs_factors", d, num_members=2, net_arch=(8, 4), activation="tanh", seed=3)
    rng = np.random.default_rng(0)
    ensemble.set_input_normalization(rng.normal(2.0, 3.0, size=(100, d)))
    norm = {"normalize": True, "epsilon": 1e-8, "mean": 0.123456789, "var": 2.5e-3, "count": 1234.0001}
    save_reward_model(
        ensemble,
        tmp_path,
        env_spec=pendulum,
        observation_space=pendulum.observation_space,
        action_space=pendulum.action_space,
        normalization=norm,
        agent="heron",
    )
    loaded, info = load_reward_ensemble(tmp_path)
    for key, value in ensemble.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    feats = rng.normal(size=(7, 5, d)).astype(np.float32)
    np.testing.assert_array_equal(ensemble.predict_steps(feats), loaded.predict_steps(feats))
    assert info.reward_normalization == norm
    assert info.architecture() == ensemble.architecture()
    assert (info.net_arch, info.activation, info.num_members) == ((8, 4), "tanh", 2)
    assert info.factor_names == tuple(pendulum.factor_names)


def test_agent_save_load_gives_the_trained_model(tmp_path: Path, pendulum) -> None:
    config = load_agent_config("rm_ppo", "pendulum", TINY)
    agent = make_agent("rm_ppo", pendulum, config, rater=make_rater("partial_return", pendulum), seed=1)
    agent.learn(256, 10)
    agent.save(tmp_path / "policy.zip")
    loaded, info = load_reward_ensemble(tmp_path)
    feats = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    np.testing.assert_array_equal(agent.reward_model.predict_steps(feats), loaded.predict_steps(feats))
    assert info.reward_normalization == agent.reward_env.normalization_state()
    agent.close()


# ---- the learned reward as a VecEnv ------------------------------------------------------------------


def test_wrapper_returns_the_normalised_ensemble_mean(rm_run: Path) -> None:
    ensemble, info = load_reward_ensemble(rm_run)
    venv = prefrl.load_reward_model(rm_run, make_vec_env("pendulum", n_envs=2, seed=5))
    assert isinstance(venv, LearnedRewardVecEnvWrapper)
    saved = info.reward_normalization
    rec = step_randomly(venv, 60)
    applied = np.clip(rec["act"], -2.0, 2.0)
    expected_raw = ensemble.predict_mean(reward_features("obs_act", rec["obs"], applied, rec["factors"]))
    expected = (expected_raw - saved["mean"]) / np.sqrt(saved["var"] + saved["epsilon"])
    np.testing.assert_allclose(rec["learned"], expected_raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec["reward"], expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(rec["reward"], rec["true"])
    # frozen statistics: stepping did not move them
    assert venv.normalization_state() == saved
    # the array function gives exactly what the wrapper returned
    reward_fn = prefrl.load_reward_fn(rm_run)
    np.testing.assert_array_equal(reward_fn(rec["obs"], rec["act"]), rec["reward"])
    np.testing.assert_allclose(
        load_reward_fn(rm_run, normalize=False)(rec["obs"], rec["act"]), rec["learned"], rtol=1e-6
    )
    venv.close()


def test_normalisation_updates_only_when_asked(rm_run: Path) -> None:
    saved = read_reward_model_info(rm_run).reward_normalization
    venv = load_reward_model(rm_run, make_vec_env("pendulum"), update_normalization=True)
    step_randomly(venv, 10)
    assert venv.normalization_state()["count"] == pytest.approx(saved["count"] + 10)
    raw = load_reward_model(rm_run, make_vec_env("pendulum"), normalize=False)
    rec = step_randomly(raw, 5)
    np.testing.assert_allclose(rec["reward"], rec["learned"], rtol=1e-6)


def test_default_venv_is_the_saved_env(rm_run: Path) -> None:
    venv = load_reward_model(rm_run)
    assert venv.num_envs == 1 and venv.observation_space.shape == (3,)
    step_randomly(venv, 3)


def test_sb3_ppo_learns_on_the_learned_reward(rm_run: Path) -> None:
    venv = load_reward_model(rm_run, make_vec_env("pendulum", n_envs=1, seed=2))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(128)  # within the first episode: no timeout bootstrap is added to the buffer's rewards
    np.testing.assert_array_equal(model.rollout_buffer.rewards, venv.rollout_log(last=64).rewards)


def test_sb3_sac_learns_on_the_learned_reward(rm_run: Path) -> None:
    venv = load_reward_model(rm_run, make_vec_env("pendulum", n_envs=1, seed=3))
    model = SAC("MlpPolicy", venv, learning_starts=50, batch_size=32, buffer_size=1000, seed=0, device="cpu")
    model.learn(200)
    log = venv.rollout_log()
    assert log.rewards.shape == (200, 1)
    np.testing.assert_array_equal(model.replay_buffer.rewards[:200], log.rewards)


def test_heron_model_reads_the_factors(heron_run: Path) -> None:
    info = read_reward_model_info(heron_run)
    assert info.inputs == "obs_factors" and info.agent == "heron" and info.num_members == 1
    venv = load_reward_model(heron_run, make_vec_env("pendulum", n_envs=2))
    rec = step_randomly(venv, 20)
    reward_fn = load_reward_fn(heron_run)
    np.testing.assert_array_equal(reward_fn(rec["obs"], rec["act"], rec["factors"]), rec["reward"])
    PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, device="cpu").learn(64)
    with pytest.raises(SpecError, match="reward factors"):
        reward_fn(rec["obs"], rec["act"])


# ---- bad input ---------------------------------------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and isinstance(error.value, PrefrlError)
    return text


def test_run_without_reward_model(tmp_path: Path, tiny_ppo: dict) -> None:
    run_dir = run_experiment(
        "pendulum",
        "ppo",
        None,
        seed=0,
        steps=128,
        out=tmp_path / "ppo",
        overrides=tiny_ppo,
        eval_freq=128,
        n_eval_episodes=1,
        progress_bar=False,
    )
    with pytest.raises(RunDirError, match="holds no reward model") as error:
        load_reward_model(run_dir, make_vec_env("pendulum"))
    assert "agent 'ppo'" in one_line(error)
    with pytest.raises(RunDirError, match="not a directory"):
        load_reward_model(tmp_path / "missing")
    # a run saved before reward models became artefacts: bare weights, nothing to rebuild them from
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(RewardEnsemble("obs_act", 4).state_dict(), legacy / REWARD_WEIGHTS_FILE)
    with pytest.raises(RunDirError, match="predates"):
        load_reward_model(legacy)


def copy_artefact(run_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in (REWARD_MODEL_FILE, REWARD_WEIGHTS_FILE):
        shutil.copy(run_dir / name, target / name)
    return target


def edit_json(run_dir: Path, edit) -> None:
    path = run_dir / REWARD_MODEL_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["architecture"].update(net_arch=[32]), "does not fit the architecture"),
        (lambda d: d["architecture"].update(inputs="obs"), "input_dim"),
        (lambda d: d["architecture"].update(activation="swishy"), "activation"),
        (lambda d: d["input_normalization"]["mean"].__setitem__(0, 0.5), "input_normalization"),
        (lambda d: d["input_normalization"].update(std=[1.0]), "has 1 entries"),
        (lambda d: d["reward_normalization"].pop("var"), "missing 'reward_normalization.var'"),
        (lambda d: d["reward_normalization"].update(mean="0.1"), "wrong type"),
        (lambda d: d["weights"].update(sha256="0" * 64), "SHA-256"),
        (lambda d: d["weights"].update(file="../policy.zip"), "file name"),
        (lambda d: d.update(format_version=99), "format version 99"),
        (lambda d: d.update(format="something"), "not a prefrl reward model"),
    ],
)
def test_tampered_description_is_refused(rm_run: Path, tmp_path: Path, edit, match: str) -> None:
    run_dir = copy_artefact(rm_run, tmp_path / "copy")
    edit_json(run_dir, edit)
    with pytest.raises(RunDirError, match=match) as error:
        load_reward_model(run_dir, make_vec_env("pendulum"))
    one_line(error)


def test_damaged_files_are_refused(rm_run: Path, tmp_path: Path) -> None:
    run_dir = copy_artefact(rm_run, tmp_path / "copy")
    path = run_dir / REWARD_MODEL_FILE
    path.write_text(path.read_text()[:100])
    with pytest.raises(RunDirError, match="not valid JSON") as error:
        load_reward_ensemble(run_dir)
    one_line(error)
    run_dir = copy_artefact(rm_run, tmp_path / "copy2")
    (run_dir / REWARD_WEIGHTS_FILE).unlink()
    with pytest.raises(RunDirError, match="missing"):
        load_reward_ensemble(run_dir)


class _RunsCode:
    """Unpickling this would run ``os.system``: a weights file must never be able to do that."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_that_would_run_code_are_refused(rm_run: Path, tmp_path: Path) -> None:
    run_dir = copy_artefact(rm_run, tmp_path / "copy")
    marker = tmp_path / "ran"
    torch.save({"input_mean": _RunsCode(marker)}, run_dir / REWARD_WEIGHTS_FILE)
    digest = hashlib.sha256((run_dir / REWARD_WEIGHTS_FILE).read_bytes()).hexdigest()
    edit_json(run_dir, lambda d: d["weights"].update(sha256=digest))  # even with a matching checksum
    with pytest.raises(RunDirError, match="not a readable weights file") as error:
        load_reward_ensemble(run_dir)
    one_line(error)
    assert not marker.exists()


def test_mismatching_venv_is_refused(rm_run: Path, heron_run: Path) -> None:
    car = DummyVecEnv([lambda: gym.make("MountainCarContinuous-v0")])
    with pytest.raises(SpecError, match=r"observations of shape \(3,\)") as error:
        load_reward_model(rm_run, car)
    one_line(error)
    normalised = VecNormalize(make_vec_env("pendulum"))
    with pytest.raises(SpecError, match="raw observations"):
        load_reward_model(rm_run, normalised)
    # an obs_factors model on an env without the factor wrapper
    plain = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    with pytest.raises(SpecError, match="does not provide") as error:
        load_reward_model(heron_run, plain)
    assert "make_vec_env('pendulum')" in one_line(error)
    # an obs_act model does not need the factors
    load_reward_model(rm_run, plain)


def test_env_spec_of_another_name_is_checked(heron_run: Path, tmp_path: Path) -> None:
    run_dir = copy_artefact(heron_run, tmp_path / "copy")
    spec = load_env_spec("pendulum")
    names = list(reversed(spec.factor_names))
    edit_json(run_dir, lambda d: d["features"].update(factor_names=names))
    with pytest.raises(SpecError, match="reward factors"):
        load_reward_model(run_dir, make_vec_env(spec))
