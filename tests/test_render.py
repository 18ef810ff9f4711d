"""Headless rendering: Pendulum rollouts and labelled pairs, MuJoCo offscreen, clear errors without GL."""

from __future__ import annotations

import importlib.util

import imageio.v3 as iio
import numpy as np
import pytest

from prefrl import render
from prefrl.cli import render as cli_render
from prefrl.experiment import run_experiment

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
