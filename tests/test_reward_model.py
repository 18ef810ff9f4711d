"""Reward-model pieces: Bradley-Terry loss, ensemble, incremental trainer (the learned-reward VecEnv wrapper
is in test_rollout.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefrl.errors import SpecError
from prefrl.reward_model import (
    RewardEnsemble,
    RewardModelTrainer,
    bradley_terry_loss,
    feature_dim,
    preference_accuracy,
    reward_features,
)
from prefrl.types import PreferenceBatch, SegmentBatch

OBS_DIM, ACT_DIM, NUM_FACTORS, H = 3, 1, 2, 5
TRUE_W = np.array([1.0, -2.0, 0.5])


def synthetic_segments(n: int, rng: np.random.Generator, h: int = H) -> SegmentBatch:
    """Segments whose true per-step reward is linear in the observation."""
    obs = rng.normal(size=(n, h, OBS_DIM))
    reward = obs @ TRUE_W
    return SegmentBatch(
        obs=obs,
        act=rng.uniform(-1, 1, size=(n, h, ACT_DIM)),
        reward=reward,
        factors=rng.normal(size=(n, h, NUM_FACTORS)),
        dones=np.zeros((n, h), dtype=bool),
        next_obs=rng.normal(size=(n, OBS_DIM)),
    )


def labelled(n_segments: int, n_pairs: int, seed: int) -> PreferenceBatch:
    rng = np.random.default_rng(seed)
    segments = synthetic_segments(n_segments, rng)
    pairs = rng.integers(n_segments, size=(n_pairs, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    returns = segments.returns
    labels = (np.sign(returns[pairs[:, 0]] - returns[pairs[:, 1]]) + 1) / 2
    return PreferenceBatch(segments=segments, pairs=pairs.astype(np.int64), labels=labels)


def make_ensemble(inputs: str = "obs", members: int = 3, seed: int = 0) -> RewardEnsemble:
    dim = feature_dim(inputs, OBS_DIM, ACT_DIM, NUM_FACTORS)
    return RewardEnsemble(inputs, dim, num_members=members, net_arch=[32, 32], seed=seed)


# ---- loss -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [1.0, 0.0])
def test_loss_gradient_pushes_preferred_return_up(label: float) -> None:
    sum1 = torch.tensor([0.3, -1.0], requires_grad=True)
    sum2 = torch.tensor([0.1, 2.0], requires_grad=True)
    bradley_terry_loss(sum1, sum2, torch.full((2,), label)).backward()
    preferred, other = (sum1, sum2) if label == 1.0 else (sum2, sum1)
    # gradient descent raises the preferred segment's return and lowers the other one's
    assert torch.all(preferred.grad < 0)
    assert torch.all(other.grad > 0)


def test_tie_label_pulls_returns_together() -> None:
    sum1 = torch.tensor([2.0], requires_grad=True)
    sum2 = torch.tensor([-1.0], requires_grad=True)
    bradley_terry_loss(sum1, sum2, torch.tensor([0.5])).backward()
    assert sum1.grad.item() > 0 and sum2.grad.item() < 0  # descent lowers sum1, raises sum2


def test_loss_matches_formula_and_weights() -> None:
    sum1, sum2 = torch.tensor([[1.0, -0.5, 2.0]]), torch.tensor([[0.0, 0.5, 2.5]])
    y = torch.tensor([1.0, 0.0, 0.5])
    p = torch.sigmoid(sum1 - sum2)
    manual = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert torch.allclose(bradley_terry_loss(sum1, sum2, y), manual)
    # a zero weight removes a pair; weighted mean over the others
    w = torch.tensor([[1.0, 0.0, 3.0]])
    per_pair = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    expected = (per_pair[0, 0] + 3 * per_pair[0, 2]) / 4
    assert torch.allclose(bradley_terry_loss(sum1, sum2, y, w), expected)


@pytest.mark.parametrize("label", [1.0, 0.0])
def test_one_step_moves_predicted_returns_towards_label(label: float) -> None:
    rng = np.random.default_rng(0)
    ensemble = make_ensemble(members=1)
    feats = torch.as_tensor(reward_features("obs", *_parts(synthetic_segments(2, rng))))
    sums = ensemble(feats).sum(-1)  # [1, 2]
    before = (sums[0, 0] - sums[0, 1]).item()
    loss = bradley_terry_loss(sums[:, :1], sums[:, 1:], torch.tensor([label]))
    opt = torch.optim.SGD(ensemble.parameters(), lr=1e-2)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after_sums = ensemble(feats).sum(-1)
    after = (after_sums[0, 0] - after_sums[0, 1]).item()
    assert (after > before) if label == 1.0 else (after < before)


def _parts(segments: SegmentBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return segments.obs, segments.act, segments.factors


def test_preference_accuracy_ignores_ties() -> None:
    assert preference_accuracy(np.array([1.0, -1.0, 5.0]), np.array([1.0, 1.0, 0.5])) == 0.5
    assert np.isnan(preference_accuracy(np.array([1.0]), np.array([0.5])))


# ---- features and ensemble --------------------------------------------------------------------------


@pytest.mark.parametrize(("inputs", "dim"), [("obs", 3), ("obs_act", 4), ("obs_factors", 5)])
def test_reward_features(inputs: str, dim: int) -> None:
    segments = synthetic_segments(4, np.random.default_rng(0))
    feats = reward_features(inputs, *_parts(segments))
    assert feats.shape == (4, H, dim) == (4, H, feature_dim(inputs, OBS_DIM, ACT_DIM, NUM_FACTORS))
    np.testing.assert_allclose(feats[..., :OBS_DIM], segments.obs, rtol=1e-6)


def test_unknown_inputs_fail_clearly() -> None:
    with pytest.raises(SpecError, match="did you mean 'obs_act'"):
        reward_features("obs_acts", np.zeros((1, 3)), np.zeros((1, 1)), np.zeros((1, 2)))


def test_ensemble_members_differ_and_seed_reproduces() -> None:
    x = np.random.default_rng(0).normal(size=(10, OBS_DIM))
    preds = make_ensemble(seed=0).predict_steps(x)  # [K, 10]
    assert preds.shape == (3, 10)
    assert not np.allclose(preds[0], preds[1]) and not np.allclose(preds[1], preds[2])
    np.testing.assert_array_equal(preds, make_ensemble(seed=0).predict_steps(x))
    assert not np.allclose(preds, make_ensemble(seed=1).predict_steps(x))


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu"])
def test_numpy_predictor_matches_torch_and_tracks_updates(activation: str) -> None:
    ensemble = RewardEnsemble("obs", OBS_DIM, num_members=3, net_arch=[8, 8], activation=activation)
    x = np.random.default_rng(0).normal(size=(7, OBS_DIM)) * 3
    ensemble.set_input_normalization(x)
    version = ensemble.version
    np.testing.assert_allclose(ensemble.numpy_predictor()(x), ensemble.predict_mean(x), rtol=1e-4, atol=1e-6)
    trainer = RewardModelTrainer(ensemble, epochs=1)
    trainer.add(labelled(20, 40, seed=0))
    trainer.fit()
    assert ensemble.version > version  # wrappers holding a snapshot know to refresh it
    np.testing.assert_allclose(ensemble.numpy_predictor()(x), ensemble.predict_mean(x), rtol=1e-4, atol=1e-6)


def test_members_are_normalised_before_averaging() -> None:
    ensemble = make_ensemble(seed=0)
    x = np.random.default_rng(0).normal(size=(200, OBS_DIM))
    with torch.no_grad():  # member 0 on a 100x larger output scale
        ensemble.net.layers[-1].weight[0] *= 100.0
        ensemble.net.layers[-1].bias[0] += 50.0
    ensemble.set_member_normalization(x)
    raw = ensemble.predict_steps(x).astype(np.float64)  # [K, 200]
    z = (raw - raw.mean(axis=1, keepdims=True)) / raw.std(axis=1, keepdims=True)
    np.testing.assert_allclose(ensemble.predict_mean(x), z.mean(axis=0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ensemble.numpy_predictor()(x), z.mean(axis=0), rtol=1e-3, atol=1e-4)
    # a member's output scale does not change the reward: rescale member 0 again, renormalise
    reward = ensemble.predict_mean(x)
    with torch.no_grad():
        ensemble.net.layers[-1].weight[0] *= 7.0
        ensemble.net.layers[-1].bias[0] *= 7.0
    ensemble.set_member_normalization(x)
    np.testing.assert_allclose(ensemble.predict_mean(x), reward, rtol=1e-3, atol=1e-4)


def test_fit_refreshes_the_member_normalisation() -> None:
    ensemble = make_ensemble(seed=0)
    trainer = RewardModelTrainer(ensemble, epochs=2)
    trainer.add(labelled(20, 40, seed=0))
    trainer.fit()
    steps = ensemble.predict_steps(trainer._features).reshape(3, -1)
    np.testing.assert_allclose(ensemble.member_mean.numpy(), steps.mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ensemble.member_std.numpy(), steps.std(axis=1), rtol=1e-4, atol=1e-5)


def test_segment_returns_and_preference_probabilities() -> None:
    ensemble = make_ensemble()
    segments = synthetic_segments(6, np.random.default_rng(1))
    mean, std = ensemble.segment_returns(segments)
    steps = ensemble.predict_steps(ensemble.features(segments))  # [K, N, H]
    np.testing.assert_allclose(mean, steps.sum(-1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, steps.sum(-1).std(0), rtol=1e-5)
    pairs = np.array([[0, 1], [1, 0], [2, 2]])
    probs = ensemble.preference_probabilities(ensemble.features(segments), pairs)
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs[:, 0] + probs[:, 1], 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs[:, 2], 0.5)


# ---- trainer ----------------------------------------------------------------------------------------


def test_trainer_learns_a_linear_reward_and_reports_heldout_accuracy() -> None:
    ensemble = make_ensemble()
    trainer = RewardModelTrainer(ensemble, epochs=30, holdout_share=0.2, rng=np.random.default_rng(0))
    trainer.add(labelled(200, 600, seed=0))
    assert 0.1 < np.mean(trainer._heldout) < 0.3
    first_loss = trainer.fit(epochs=1)
    last_loss = trainer.fit()
    assert last_loss < first_loss
    assert trainer.heldout_accuracy > 0.85
    # the learned per-step reward correlates with the true one on fresh data
    fresh = synthetic_segments(50, np.random.default_rng(9))
    learned = ensemble.predict_mean(ensemble.features(fresh))
    assert np.corrcoef(learned.ravel(), fresh.reward.ravel())[0, 1] > 0.9
    metrics = trainer.metrics()
    assert {"rm_accuracy", "rm_new_accuracy", "rm_loss", "rm_pairs"} <= set(metrics)
    assert metrics["rm_pairs"] == trainer.num_pairs


def test_trainer_incremental_adds_and_bootstrap_differs_per_member() -> None:
    trainer = RewardModelTrainer(make_ensemble(), epochs=2, rng=np.random.default_rng(0))
    trainer.add(labelled(30, 100, seed=1))
    n1 = trainer.num_pairs
    trainer.fit()
    trainer.add(labelled(30, 100, seed=2))
    assert trainer.num_pairs > n1
    # pairs index the stored segments of their own batch
    assert trainer._features.shape[0] <= 60 and trainer._pairs.max() < trainer._features.shape[0]
    weights = trainer._weights
    assert weights.shape == (3, trainer.num_pairs)
    assert not np.array_equal(weights[0], weights[1])  # each member its own resample
    assert abs(weights.mean() - 1.0) < 0.2  # Poisson(1) counts
    # with the window, only the most recent training pairs are used
    trainer.max_train_pairs = 10
    idx = trainer._train_indices()
    assert len(idx) == 10 and idx.max() == np.flatnonzero(~trainer._heldout).max()


@pytest.mark.parametrize("stop_accuracy", [None, 0.9])
def test_fit_stops_at_the_training_accuracy_as_bpref(stop_accuracy: float | None) -> None:
    trainer = RewardModelTrainer(
        make_ensemble(),
        epochs=60,
        holdout_share=0.0,
        rng=np.random.default_rng(0),
        stop_accuracy=stop_accuracy,
    )
    trainer.add(labelled(100, 300, seed=3))
    trainer.fit()
    if stop_accuracy is None:
        assert trainer.last_epochs == 60 and "rm_fit_epochs" not in trainer.metrics()
        return
    # stopped after the first epoch above 90%, which the model reaches well before 60 epochs
    assert 1 <= trainer.last_epochs < 60 and trainer.last_train_accuracy > 0.9
    assert trainer.metrics()["rm_fit_epochs"] == trainer.last_epochs
    # the accuracy it stopped on is the members' share of correctly ordered training pairs (measured
    # during the epoch, so at most a little below the accuracy after it)
    assert trainer.train_accuracy >= 0.85
    # a model already above the threshold stops after one epoch
    trainer.fit()
    assert trainer.last_epochs == 1


def test_trainer_rejects_bad_settings() -> None:
    with pytest.raises(SpecError, match="stop_accuracy"):
        RewardModelTrainer(make_ensemble(), stop_accuracy=0.0)
    with pytest.raises(SpecError, match="holdout_share"):
        RewardModelTrainer(make_ensemble(), holdout_share=1.0)
    with pytest.raises(SpecError, match="max_train_pairs"):
        RewardModelTrainer(make_ensemble(), max_train_pairs=0)
