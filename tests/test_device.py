"""``--device``: SB3's convention (auto, cpu, cuda[:k]); CPU is the default where there is no CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prefrl.agents import get_agent_class
from prefrl.agents.base import resolve_device
from prefrl.cli import main
from prefrl.errors import SpecError
from prefrl.experiment import run_experiment
from prefrl.reward_model import RewardEnsemble, RewardModelTrainer
from prefrl.sweep import run_sweep

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize("agent", ["ppo", "rm_ppo", "cpl", "bc"])
def test_auto_is_the_cpu_without_cuda_and_cuda_only_where_it_pays(agent: str) -> None:
    cls = get_agent_class(agent)
    expected = "cuda" if cls.gpu_pays and torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", cls) == expected
    assert resolve_device("cpu", cls) == "cpu"
    assert get_agent_class("cpl").gpu_pays and not get_agent_class("ppo").gpu_pays


@pytest.mark.parametrize(("device", "match"), [("gpu", "unknown device"), ("mps", "cpu or cuda")])
def test_bad_devices_fail_clearly(device: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        resolve_device(device, get_agent_class("ppo"))


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SpecError, match="no CUDA device is available"):
        resolve_device("cuda", get_agent_class("cpl"))
    code = main(
        ["run", "--env", "pendulum", "--agent", "ppo", "--device", "cuda", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no CUDA device" in err[0]
    assert not (tmp_path / "r").exists()  # refused before anything was written
    with pytest.raises(SpecError, match="no CUDA device"):
        run_sweep("pendulum", "ppo", None, 1, steps=64, out=tmp_path / "s", device="cuda", progress=False)


def test_the_device_is_recorded_and_not_a_setting(tmp_path: Path) -> None:
    out = tmp_path / "run"
    kwargs = dict(
        seed=0,
        steps=64,
        out=out,
        overrides={"ppo": {"n_steps": 32, "batch_size": 32}},
        eval_freq=64,
        n_eval_episodes=1,
        progress_bar=False,
    )
    run_experiment("pendulum", "ppo", None, device="cpu", **kwargs)
    assert json.loads((out / "meta.json").read_text())["device"] == "cpu"
    # the same run asked for with another device is found done, not refused as other settings
    assert run_experiment("pendulum", "ppo", None, device="auto", **kwargs) == out


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(NO_CUDA, reason="no CUDA"))]
)
def test_reward_model_takes_and_gives_numpy_on_any_device(device: str) -> None:
    ensemble = RewardEnsemble("obs_act", 4, num_members=2, net_arch=[8], seed=0).to(device)
    assert ensemble.device.type == device
    features = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    mean = ensemble.predict_mean(features)
    assert isinstance(mean, np.ndarray) and mean.shape == (5, 3)
    np.testing.assert_allclose(ensemble.numpy_predictor()(features.reshape(-1, 4)), mean.ravel(), atol=1e-5)
    trainer = RewardModelTrainer(ensemble, batch_size=4, epochs=2)
    assert trainer.optimizer.param_groups[0]["params"][0].device.type == device
