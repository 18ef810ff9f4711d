"""CPL: the loss (hand-computed values, lambda = 1, label-swap symmetry, ties, gradients), the training
phases, and a tiny end-to-end run through run_experiment."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from prefrl.agents import make_agent
from prefrl.agents.cpl import CPLAgent, cpl_accuracy, cpl_loss, preferred_mask
from prefrl.agents.offline import DeterministicTanhPolicy
from prefrl.config import load_agent_config
from prefrl.errors import SpecError
from prefrl.experiment import run_experiment
from prefrl.raters import make_rater

#: a small network and dataset: a run takes seconds
TINY = {
    "policy_kwargs": {"net_arch": [32, 32]},
    "offline": {"batch_size": 8, "learning_rate": 1e-3},
    "cpl": {"bc_fraction": 0.5},
    "dataset": {"episodes": 6, "segment": 50, "pairs": "dense", "pairs_per_segment": 4, "return_episodes": 0},
}


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ---- the loss ------------------------------------------------------------------------------------------
# segment 1: sum log pi = -2, segment 2: -4; alpha 0.5 -> A1 = -1, A2 = -2; lambda 0.5
# y = 1: -log sigmoid(A1 - 0.5 A2) = softplus(-(-1 + 1)) = log 2
# y = 0: -log sigmoid(A2 - 0.5 A1) = softplus(-(-2 + 0.5)) = softplus(1.5)
@pytest.mark.parametrize(
    "y, expected",
    [(1.0, math.log(2.0)), (0.0, softplus(1.5)), (0.5, 0.5 * math.log(2.0) + 0.5 * softplus(1.5))],
)
def test_loss_on_a_hand_computed_pair(y, expected):
    logp1 = torch.tensor([[-1.0, -1.0]])
    logp2 = torch.tensor([[-3.0, -1.0]])
    loss = cpl_loss(logp1, logp2, torch.tensor([y]), alpha=0.5, lam=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_averages_over_pairs_and_ignores_step_order():
    logp1 = torch.tensor([[-1.0, -1.0], [0.0, -2.0]])
    logp2 = torch.tensor([[-3.0, -1.0], [-1.0, -3.0]])
    y = torch.tensor([1.0, 0.0])
    # pair 2: A1 = -1, A2 = -2 (alpha 0.5) and y = 0 -> softplus(1.5); pair 1 as above with y = 1
    assert cpl_loss(logp1, logp2, y, 0.5, 0.5).item() == pytest.approx((math.log(2) + softplus(1.5)) / 2)
    shuffled = cpl_loss(logp1.flip(1), logp2.flip(1), y, 0.5, 0.5)
    assert shuffled.item() == pytest.approx(cpl_loss(logp1, logp2, y, 0.5, 0.5).item())


@pytest.mark.parametrize("alpha", [0.1, 1.0, 3.0])
def test_lambda_one_is_the_symmetric_logistic_loss(alpha):
    gen = torch.Generator().manual_seed(0)
    logp1, logp2 = -torch.rand(64, 10, generator=gen) * 5, -torch.rand(64, 10, generator=gen) * 5
    y = torch.rand(64, generator=gen)  # soft labels too
    logits = alpha * (logp1.sum(1) - logp2.sum(1))
    expected = F.binary_cross_entropy_with_logits(logits, y)
    torch.testing.assert_close(cpl_loss(logp1, logp2, y, alpha, lam=1.0), expected)


@pytest.mark.parametrize("lam", [0.25, 0.5, 1.0])
def test_label_swap_symmetry(lam):
    gen = torch.Generator().manual_seed(1)
    logp1, logp2 = -torch.rand(32, 7, generator=gen) * 3, -torch.rand(32, 7, generator=gen) * 3
    y = torch.tensor([0.0, 0.5, 1.0, 0.3]).repeat(8)
    torch.testing.assert_close(cpl_loss(logp1, logp2, y, 0.1, lam), cpl_loss(logp2, logp1, 1 - y, 0.1, lam))


def test_biased_loss_differs_from_the_symmetric_one_and_is_finite_for_large_logits():
    logp1, logp2 = torch.tensor([[-1.0]]), torch.tensor([[-2.0]])
    y = torch.tensor([1.0])
    assert cpl_loss(logp1, logp2, y, 1.0, 0.5).item() != pytest.approx(
        cpl_loss(logp1, logp2, y, 1.0, 1.0).item()
    )
    huge = cpl_loss(torch.full((2, 64), -1e4), torch.zeros(2, 64), torch.tensor([1.0, 0.0]), 1.0, 0.5)
    assert torch.isfinite(huge) and huge.item() > 1e5


@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_gradient_directions_preferred_up_other_down_ties_pull_both_up(lam):
    logp1 = torch.full((1, 4), -1.0, requires_grad=True)
    logp2 = torch.full((1, 4), -1.0, requires_grad=True)
    cpl_loss(logp1, logp2, torch.tensor([1.0]), 0.1, lam).backward()
    assert (logp1.grad < 0).all() and (logp2.grad > 0).all()  # descent raises 1, lowers 2
    logp1.grad = logp2.grad = None
    cpl_loss(logp1, logp2, torch.tensor([0.5]), 0.1, lam).backward()
    if lam < 1.0:  # the conservative bias makes a tie raise the likelihood of both segments
        assert (logp1.grad < 0).all() and (logp2.grad < 0).all()
    else:  # symmetric: a tie between equal segments is already optimal
        torch.testing.assert_close(logp1.grad, torch.zeros_like(logp1.grad))


def test_a_gradient_step_raises_the_preferred_segments_likelihood():
    torch.manual_seed(0)
    policy = DeterministicTanhPolicy(3, 1, net_arch=(16,), dropout=0.0)
    gen = torch.Generator().manual_seed(2)
    obs = torch.randn(2, 8, 3, generator=gen)
    act = torch.rand(2, 8, 1, generator=gen) * 2 - 1
    y = torch.tensor([1.0])
    before = policy.log_prob(obs, act).sum(1)
    opt = torch.optim.SGD(policy.parameters(), lr=0.05)
    logp = policy.log_prob(obs, act)
    cpl_loss(logp[:1], logp[1:], y, alpha=1.0, lam=0.5).backward()
    opt.step()
    after = policy.log_prob(obs, act).sum(1).detach()
    assert after[0] > before[0]  # the preferred segment is more likely
    assert after[0] - after[1] > before[0] - before[1]  # and more so than the other one


@pytest.mark.parametrize(
    "shapes, kwargs, match",
    [
        (((2, 3), (2, 4), (2,)), {}, r"both be \[B, H\]"),
        (((2, 3), (2, 3), (3,)), {}, r"y must be \[B\]"),
        (((2, 3), (2, 3), (2,)), {"lam": 0.0}, r"\(0, 1\]"),
        (((2, 3), (2, 3), (2,)), {"alpha": -1.0}, "alpha must be > 0"),
    ],
)
def test_loss_input_errors(shapes, kwargs, match):
    a, b, c = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        cpl_loss(a, b, c, **kwargs)


def test_accuracy_skips_ties_and_preferred_mask_marks_both_sides_of_a_tie():
    logp1 = torch.tensor([[0.0], [-1.0], [-1.0], [0.0]])
    logp2 = torch.tensor([[-1.0], [0.0], [0.0], [-1.0]])
    y = torch.tensor([1.0, 1.0, 0.5, 0.0])
    assert cpl_accuracy(logp1, logp2, y).tolist() == [True, False, False]
    first, second = preferred_mask(y)
    assert first.tolist() == [True, True, True, False] and second.tolist() == [False, False, True, True]


# ---- agent -----------------------------------------------------------------------------------------------
def test_phases_reset_the_optimiser_and_warm_up_the_learning_rate(pendulum):
    overrides = {
        **TINY,
        "cpl": {"bc_fraction": 0.25},
        "offline": {**TINY["offline"], "lr_warmup_fraction": 0.5},
    }
    config = load_agent_config("cpl", "pendulum", overrides)
    agent = CPLAgent(pendulum, config, rater=make_rater("partial_return", pendulum), seed=0)
    agent.on_step_start(0, 100)
    assert agent.bc_steps == 25
    first = agent.optimizer
    agent.on_step_start(24, 100)
    assert agent.optimizer is first and agent.learning_rate_scale(24, 100) == 1.0
    agent.on_step_start(25, 100)
    assert agent.optimizer is not first  # fresh Adam state for the CPL phase
    # linear warm-up over half of the 75 CPL steps, starting after the BC phase
    assert agent.learning_rate_scale(25, 100) == pytest.approx(1 / 37.5)
    assert agent.learning_rate_scale(99, 100) == 1.0


@pytest.mark.parametrize(
    "overrides, match", [({"cpl": {"lam": 2.0}}, "lam"), ({"cpl": {"bc_data": "pos"}}, "bc_data")]
)
def test_bad_config(pendulum, overrides, match):
    # the config layer rejects the value where it enters, before any agent is built
    with pytest.raises(SpecError, match=match):
        load_agent_config("cpl", "pendulum", overrides)
    config = {**load_agent_config("cpl", "pendulum"), **overrides}
    with pytest.raises(SpecError, match=match):  # and so does the agent, given the dict directly
        make_agent("cpl", pendulum, config, rater=make_rater("partial_return", pendulum))


def test_tiny_run_through_run_experiment(pendulum, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFRL_DATA_DIR", str(tmp_path / "data"))
    run_dir = run_experiment(
        "pendulum", "cpl", "regret", 0, steps=200, queries=30, out=tmp_path / "run", overrides=TINY,
        eval_freq=100, n_eval_episodes=2, progress_bar=False,
    )  # fmt: skip
    table = pd.read_csv(run_dir / "progress.csv")
    assert table["grad_steps"].tolist() == [0, 100, 200]
    assert (table["labelled_pairs"] == 30).all() and (table["queries"] == 30).all()
    assert (table["env_steps"] == 6 * 200).all()  # the dataset's rollout, constant
    assert table["true_return_mean"].notna().all() and table["normalised_score"].notna().all()
    assert {"train/cpl_loss", "train/bc_loss", "train/accuracy", "train/grad_steps_per_s"} <= set(
        table.columns
    )
    assert table["train/bc_phase"].tolist()[1:] == [1.0, 0.0]  # 100 BC steps, then CPL
    assert (run_dir / "done").is_file() and (run_dir / "policy.zip").is_file()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["rater"] == "regret"
    assert len(list((tmp_path / "data").glob("pendulum-*.npz"))) == 1

    # the saved policy reproduces the trained agent's deterministic actions
    config = load_agent_config("cpl", "pendulum", TINY)
    fresh = CPLAgent(pendulum, config, rater=make_rater("partial_return", pendulum), seed=3)
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    fresh.load_weights(run_dir / "policy.zip")
    again = CPLAgent(pendulum, config, rater=make_rater("partial_return", pendulum), seed=4)
    again.load_weights(run_dir / "policy.zip")
    np.testing.assert_allclose(fresh.predict(obs), again.predict(obs))
    assert (np.abs(fresh.predict(obs)) <= 2.0).all()


def test_same_seed_same_curve(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFRL_DATA_DIR", str(tmp_path / "data"))
    options = {
        "steps": 40,
        "out": None,
        "overrides": TINY,
        "eval_freq": 20,
        "n_eval_episodes": 2,
        "progress_bar": False,
    }
    tables = []
    for k in range(2):
        run_dir = run_experiment(
            "pendulum", "cpl", "partial_return", 7, **{**options, "out": tmp_path / f"r{k}"}
        )
        tables.append(pd.read_csv(run_dir / "progress.csv"))
    pd.testing.assert_series_equal(tables[0]["true_return_mean"], tables[1]["true_return_mean"])
    pd.testing.assert_series_equal(tables[0]["train/cpl_loss"], tables[1]["train/cpl_loss"])
