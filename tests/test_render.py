"""Headless rendering: Pendulum rollouts and labelled pairs, MuJoCo offscreen, clear errors without GL, and
every agent's saved policy loaded back (load_policy) and rendered (prefrl render --run)."""

from __future__ import annotations

import importlib.util

import imageio.v3 as iio
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize

import prefrl.experiment
from prefrl import cli, render
from prefrl.agents import make_agent
from prefrl.agents.offline import OfflineAgent
from prefrl.cli import render as cli_render
from prefrl.config import load_agent_config
from prefrl.experiment import run_experiment
from prefrl.raters import make_rater

TINY = {"n_envs": 2, "policy_kwargs": {"net_arch": [16]}, "ppo": {"n_steps": 64, "n_epochs": 1}}


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("render") / "run"
    return run_experiment("pendulum", "ppo", None, 0, steps=128, out=out, overrides=TINY, eval_freq=128,
                          n_eval_episodes=1, progress_bar=False)  # fmt: skip


def test_render_rollout_pendulum(pendulum_run, tmp_path):
    path = render.render_rollout(pendulum_run, tmp_path / "rollout.gif", max_steps=20, fps=10)
    frames = iio.imread(path)
    # 20 step frames (captions differ) + the last frame held (the GIF writer may merge repeated frames)
    assert 20 <= frames.shape[0] <= 20 + 5 and frames.shape[-1] == 3
    assert frames.std() > 0  # not a blank image


def test_render_pair_label_matches_returns(tmp_path):
    path, label = render.render_pair(
        "pendulum", "partial_return", tmp_path / "pair.gif", segment_length=15, fps=5
    )
    frames = iio.imread(path)
    assert 15 <= frames.shape[0] <= 15 + 5
    assert frames.shape[2] > frames.shape[1]  # two segments side by side
    # partial_return is deterministic: the verdict is the sign of the return difference (or a tie)
    assert label in (0.0, 0.5, 1.0)
    # same seed, same pair, same verdict
    _, again = render.render_pair(
        "pendulum", "partial_return", tmp_path / "pair2.gif", segment_length=15, fps=5
    )
    assert again == label


def test_policy_of_a_run_is_deterministic(pendulum_run):
    spec, predict = render.load_policy(pendulum_run)
    obs = np.random.default_rng(0).normal(size=(3, 3))
    assert spec.name == "pendulum"
    np.testing.assert_array_equal(predict(obs), predict(obs))


def test_bad_gl_backend_names_the_package(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "bogus")
    with pytest.raises(render.RenderError, match="apt-get install libosmesa6") as info:
        render.configure_gl()
    assert "bogus" in str(info.value) and "libegl1" in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("OpenGL.osmesa") is None, reason="PyOpenGL not installed")
def test_missing_osmesa_is_reported(monkeypatch):
    import ctypes.util

    if ctypes.util.find_library("OSMesa"):
        pytest.skip("libOSMesa is installed here: osmesa works")
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    with pytest.raises(render.RenderError, match="libosmesa6"):
        render.configure_gl()


def test_cli_render_without_gl_exits_cleanly(monkeypatch, tmp_path, capsys):
    import argparse

    monkeypatch.setenv("MUJOCO_GL", "bogus")
    parser = argparse.ArgumentParser()
    cli_render.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["render", "--env", "halfcheetah", "--pair", "--out", str(tmp_path / "p.gif")])
    assert args.func(args) == 3
    assert "apt-get install" in capsys.readouterr().err


def test_mp4_without_encoder_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("imageio_ffmpeg") or importlib.util.find_spec("av"):
        pytest.skip("a video encoder is installed")
    with pytest.raises(render.RenderError, match="imageio-ffmpeg"):
        render.write_video([np.zeros((8, 8, 3), np.uint8)] * 2, tmp_path / "v.mp4")


def test_render_pair_mujoco(tmp_path, monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    try:
        render.configure_gl()
    except render.RenderError as e:
        pytest.skip(f"no offscreen GL here: {e}")
    path, label = render.render_pair(
        "halfcheetah", "partial_return", tmp_path / "pair.gif", segment_length=5, fps=2, width=96, height=72
    )
    frames = iio.imread(path)
    assert 5 <= frames.shape[0] <= 5 + 2 and frames.shape[2] == 2 * 96
    assert label in (0.0, 0.5, 1.0)
    assert frames[:, -72:].std() > 5  # the MuJoCo scene, not a blank frame


# ---- every agent's saved policy: load_policy and `prefrl render --run` ---------------------------------
#: per agent: (rater, run options, config overrides), the tiny settings of the agents' own tiny-run tests
_TINY_PPO_RM = {"n_envs": 2, "ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2}}
_TINY_CPL = {
    "policy_kwargs": {"net_arch": [32, 32]},
    "offline": {"batch_size": 8, "learning_rate": 1e-3},
    "cpl": {"bc_fraction": 0.5},
    "dataset": {"episodes": 6, "segment": 50, "pairs": "dense", "pairs_per_segment": 4, "return_episodes": 0},
}
AGENT_RUNS = {
    "ppo": (None, {"steps": 128}, {}),  # on top of the tiny_ppo fixture
    "ppo-normalize": (None, {"steps": 128}, {"normalize": True}),
    "rm_ppo": (
        "partial_return",
        {"steps": 256, "queries": 30},
        {**_TINY_PPO_RM, "reward_model": {"net_arch": [16], "initial_epochs": 5, "epochs": 2}},
    ),
    "heron": (
        "hierarchical",
        {"steps": 256, "queries": 256},
        {**_TINY_PPO_RM, "reward_model": {"net_arch": [16], "initial_epochs": 2, "max_train_pairs": 512}},
    ),
    "spo": (
        "partial_return",
        {"steps": 200, "queries": 30},
        {
            "n_envs": 2,
            "policy_kwargs": {"net_arch": [16]},
            "ppo": {"n_steps": 100, "n_epochs": 1, "batch_size": 100},
            "spo": {"num_opponents": 3, "queue_size": 8},
        },
    ),
    "cpl": ("partial_return", {"steps": 40, "queries": 30}, _TINY_CPL),
    "cpl-normalize_obs": (
        "partial_return",
        {"steps": 40},
        {**_TINY_CPL, "offline": {**_TINY_CPL["offline"], "normalize_obs": True}},
    ),
    "bc": (
        "partial_return",
        {"steps": 40},
        {
            "policy_kwargs": {"net_arch": [32, 32]},
            "offline": {"batch_size": 16, "learning_rate": 1e-3, "dropout": 0.0},
            "dataset": {"episodes": 6, "segment": 50, "pairs": "sparse", "return_episodes": 0},
        },
    ),
}


@pytest.mark.parametrize("case", list(AGENT_RUNS))
def test_every_agents_run_loads_its_policy_and_renders(case, pendulum, tiny_ppo, tmp_path, monkeypatch):
    """``load_policy`` of a finished run acts exactly as the trained agent's deterministic policy, for
    every agent, and ``prefrl render --run`` renders it (it crashed on every cpl/bc run once)."""
    agent_name = case.split("-")[0]
    rater, options, overrides = AGENT_RUNS[case]
    if agent_name == "ppo":
        overrides = {**tiny_ppo, **overrides}
    monkeypatch.setenv("PREFRL_DATA_DIR", str(tmp_path / "data"))  # the offline agents' dataset cache
    trained, real_make_agent = [], prefrl.experiment.make_agent

    def recording_make_agent(*args, **kwargs):  # keeps the agent run_experiment trains
        trained.append(real_make_agent(*args, **kwargs))
        return trained[-1]

    monkeypatch.setattr(prefrl.experiment, "make_agent", recording_make_agent)
    run_dir = run_experiment("pendulum", agent_name, rater, 0, out=tmp_path / "run", overrides=overrides,
                             eval_freq=options["steps"], n_eval_episodes=1, progress_bar=False,
                             **options)  # fmt: skip
    assert len(trained) == 1 and trained[0].name == agent_name

    rng = np.random.default_rng(0)
    theta = rng.uniform(-np.pi, np.pi, 16)
    obs = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, 16)], axis=1).astype(np.float32)
    spec, predict = render.load_policy(run_dir)
    assert spec.name == "pendulum"
    actions = predict(obs)
    assert actions.shape == (16, 1) and np.all(np.abs(actions) <= 2.0)
    np.testing.assert_array_equal(actions, trained[0].predict(obs, deterministic=True))
    # a second route to the saved policy: SB3's own loader, or a fresh offline agent loading the weights
    if isinstance(trained[0], OfflineAgent):
        config = load_agent_config(agent_name, "pendulum", overrides)
        fresh = make_agent(agent_name, pendulum, config, rater=make_rater(rater, pendulum), seed=3)
        fresh.load_weights(run_dir / "policy.zip")
        expected = fresh.predict(obs)
    else:
        # SB3's own archive (kept as an export), on the trained normaliser's statistics
        model_obs = obs
        if isinstance(trained[0].venv, VecNormalize):
            model_obs = trained[0].venv.normalize_obs(obs)
        expected, _ = PPO.load(run_dir / "policy.zip", device="cpu").predict(model_obs, deterministic=True)
        assert (run_dir / "policy.pt").is_file() and (run_dir / "policy.json").is_file()
    np.testing.assert_array_equal(actions, expected)
    assert (run_dir / "vecnormalize.json").is_file() == (case == "ppo-normalize")
    assert not (run_dir / "vecnormalize.pkl").exists()  # nothing prefrl writes is read by unpickling

    out = tmp_path / "r.gif"
    argv = ["render", "--run", str(run_dir), "--out", str(out),
            "--steps", "5", "--width", "64", "--height", "64"]  # fmt: skip
    assert cli.main(argv) == 0
    assert out.is_file() and out.stat().st_size > 0
    frames = iio.imread(out)
    assert frames.shape[0] >= 5 and frames.shape[2:] == (64, 3)  # 64 wide; the caption adds rows
