"""The Monte-Carlo value correction: rollouts, the residual fit, and how oracles store and use it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch as th
from scipy.stats import spearmanr

from prefrl.envs import load_env_spec, make_env
from prefrl.errors import OracleError
from prefrl.oracle import load_oracle, shipped_oracle_dir
from prefrl.oracle.loading import CORRECTION_FILE, MANIFEST, file_sha256, forget_oracle, read_manifest
from prefrl.oracle.returns import discounted_returns, expert_states_and_returns
from prefrl.oracle.storage import copy_oracle_files, seal_oracle
from prefrl.oracle.training import correct_value, load_oracle_config, save_value_correction
from prefrl.oracle.value_correction import ValueCorrection, fit_value_correction, pairwise_rank_loss

PENDULUM = load_env_spec("pendulum")
TINY = {"episodes": 4, "validation_episodes": 2, "steps": 200, "eval_every": 50}


def _swing(obs: np.ndarray) -> np.ndarray:
    """A fixed, deterministic controller: torque against the angular velocity."""
    return np.clip(-0.5 * obs[:, 2:3], -2.0, 2.0)


GAMMA, TOLERANCE = 0.9, 0.01
TAIL = int(np.ceil(np.log(TOLERANCE) / np.log(GAMMA)))


def _replay(seed: int, policy_at) -> tuple[np.ndarray, np.ndarray]:
    """One episode by hand, ``horizon + tail`` steps, ``policy_at(t)`` acting at step ``t``."""
    env = make_env(PENDULUM, seed=seed, max_episode_steps=PENDULUM.horizon + TAIL)
    obs, _ = env.reset(seed=seed)
    visited, rewards = [], []
    for t in range(PENDULUM.horizon + TAIL):
        visited.append(obs)
        obs, reward, *_ = env.step(policy_at(t)(obs[None])[0])
        rewards.append(reward)
    return np.asarray(visited), np.asarray(rewards)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.99])
def test_discounted_returns_match_the_definition(gamma):
    rewards = np.random.default_rng(0).standard_normal(30)
    expected = [sum(gamma**k * rewards[t + k] for k in range(len(rewards) - t)) for t in range(len(rewards))]
    np.testing.assert_allclose(discounted_returns(rewards, gamma), expected, atol=1e-10)
    # a window sums the same number of steps from every state (fewer only where the episode ends)
    windowed = [sum(gamma**k * rewards[t + k] for k in range(min(7, len(rewards) - t))) for t in range(30)]
    np.testing.assert_allclose(discounted_returns(rewards, gamma, window=7), windowed, atol=1e-10)


def test_rollouts_run_past_the_horizon_and_match_a_single_episode():
    states, returns = expert_states_and_returns(
        _swing, PENDULUM, GAMMA, episodes=3, seed=5, tolerance=TOLERANCE
    )
    assert states.shape == (3 * PENDULUM.horizon, 3) and returns.shape == (3 * PENDULUM.horizon,)
    # the second episode, rolled out alone for horizon + tail steps, gives the same states and returns
    visited, rewards = _replay(6, lambda t: _swing)
    second = slice(PENDULUM.horizon, 2 * PENDULUM.horizon)
    np.testing.assert_allclose(states[second], visited[: PENDULUM.horizon])
    # every kept state's return sums the same `tail` steps, however late it was visited
    expected = [GAMMA ** np.arange(TAIL) @ rewards[t : t + TAIL] for t in range(PENDULUM.horizon)]
    np.testing.assert_allclose(returns[second], expected)
    # the last kept state's return is not cut off at the horizon: the tail adds to it
    horizon_only = discounted_returns(rewards[: PENDULUM.horizon], GAMMA)
    assert abs(returns[second][-1] - horizon_only[-1]) > 1e-3


def test_mixed_skill_rollouts_keep_the_states_from_the_switch_on():
    """A weaker policy acts up to a random step, then the expert: the kept returns are the expert's."""

    def idle(obs):
        return np.zeros((len(obs), 1))

    states, returns = expert_states_and_returns(
        _swing, PENDULUM, GAMMA, episodes=2, seed=5, tolerance=TOLERANCE, behaviours=[idle]
    )
    switch = np.random.default_rng(5).integers(0, PENDULUM.horizon, size=2)
    assert len(states) == len(returns) == sum(PENDULUM.horizon - switch)
    # replay episode 0 by hand: idle up to the switch, then the controller
    visited, rewards = _replay(5, lambda t: idle if t < switch[0] else _swing)
    kept = PENDULUM.horizon - switch[0]
    np.testing.assert_allclose(states[:kept], visited[switch[0] : PENDULUM.horizon])
    expected = discounted_returns(rewards, GAMMA, window=TAIL)[switch[0] : PENDULUM.horizon]
    np.testing.assert_allclose(returns[:kept], expected)
    empty_states, empty_returns = expert_states_and_returns(_swing, PENDULUM, GAMMA, episodes=0, seed=0)
    assert empty_states.shape == (0, 3) and empty_returns.shape == (0,)


def test_correction_starts_at_zero_and_trains():
    correction = ValueCorrection(obs_dim=3, hidden=16)
    obs = th.randn(8, 3)
    assert th.equal(correction(obs), th.zeros(8))  # training starts from the plain critic
    loss = ((correction(obs) - 1.0) ** 2).mean()
    loss.backward()
    assert correction.net[-1].weight.grad.abs().sum() > 0
    assert correction.obs_mean.grad is None  # standardisation statistics are buffers, not parameters


def test_rank_loss_orders_pairs_whatever_their_return_gap():
    returns = th.tensor([0.0, 1e-5, 300.0])
    ordered = th.tensor([0.0, 1.0, 2.0], requires_grad=True)
    # only the returns' order counts: a gap of 1e-5 pulls as hard as one of 300
    loss = pairwise_rank_loss(ordered, returns, temperature=1.0).item()
    assert loss == pytest.approx(pairwise_rank_loss(ordered, th.tensor([0.0, 1.0, 2.0]), 1.0).item())
    tied = pairwise_rank_loss(th.zeros(3), returns, temperature=1.0)
    assert tied.item() == pytest.approx(np.log(2.0))
    backwards = pairwise_rank_loss(-ordered, returns, temperature=1.0)
    assert loss < tied < backwards
    assert pairwise_rank_loss(ordered * 100, returns, temperature=1.0) < 1e-3  # confident and right: ~0
    # gradient descent moves the values towards the returns' order
    misordered = th.tensor([1.0, 0.0, 2.0], requires_grad=True)
    pairwise_rank_loss(misordered, returns, temperature=1.0).backward()
    assert misordered.grad[0] > 0 > misordered.grad[1]
    # pairs with equal returns carry no gradient; no differing pair at all gives zero
    flat = th.tensor([3.0, -1.0], requires_grad=True)
    zero = pairwise_rank_loss(flat, th.tensor([2.0, 2.0]), temperature=1.0)
    zero.backward()
    assert zero.item() == 0.0 and th.equal(flat.grad, th.zeros(2))


def _oracle_with_critic(critic) -> SimpleNamespace:
    """A stand-in oracle: the fixed controller acts, ``critic`` is its uncorrected value function."""
    return SimpleNamespace(
        spec=PENDULUM,
        gamma=0.9,
        checkpoint_names=["expert"],  # no skill levels: mixed-skill rollouts start with random actions
        policy=lambda name="expert", deterministic=True: _swing,
        value=lambda obs, corrected=False: critic(np.asarray(obs)),
    )


def test_fit_repairs_a_critic_with_a_structured_error():
    """A critic off by a smooth function of the state: the residual network learns it back."""
    x_val, g_val = expert_states_and_returns(_swing, PENDULUM, 0.9, episodes=2, seed=3_000_000)
    truth_proxy = g_val  # the validation targets themselves

    def bad_critic(obs):
        return np.zeros(len(obs)) - 20.0 * obs[:, 0]  # ranks cos(theta) backwards

    base = spearmanr(bad_critic(x_val), truth_proxy).statistic
    oracle = _oracle_with_critic(bad_critic)
    correction, report = fit_value_correction(oracle, **{**TINY, "steps": 1500, "mixed_share": 0.0})
    assert report.accepted and report.best_step > 0
    assert report.validation_spearman_critic == pytest.approx(base)
    assert report.validation_spearman_corrected > base + 0.3
    corrected = bad_critic(x_val) + correction.predict(x_val)
    assert spearmanr(corrected, g_val).statistic == pytest.approx(report.validation_spearman_corrected)


def test_fit_rejects_a_correction_without_enough_gain():
    _, report = fit_value_correction(
        _oracle_with_critic(lambda obs: -np.abs(obs[:, 2])), **TINY, min_gain=2.0
    )
    assert not report.accepted


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"episodes": 0}, "must be >= 1"),
        ({"steps": 0}, "must be >= 1"),
        ({"validation_episodes": 0}, "must be >= 1"),
        ({"mixed_share": 1.5}, "mixed_share"),
        ({"rank_weight": -1.0}, "rank_weight"),
        ({"rank_temperature": 0.0}, "rank_temperature"),
    ],
)
def test_fit_rejects_bad_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        fit_value_correction(_oracle_with_critic(lambda obs: obs[:, 0]), **{**TINY, **bad})


@pytest.fixture
def pendulum_copy(tmp_path):
    """A private copy of the shipped Pendulum oracle without its value correction (tests must not
    rewrite the shipped one)."""
    shipped = shipped_oracle_dir(PENDULUM)
    directory = tmp_path / "pendulum"
    directory.mkdir()
    manifest = read_manifest(PENDULUM, shipped)
    copy_oracle_files(manifest, shipped, directory, correction=False)
    seal_oracle(directory, replace(manifest, value_correction=None))
    return directory


def test_correct_value_records_and_applies_the_correction(pendulum_copy):
    manifest = correct_value(PENDULUM, pendulum_copy, verbose=False, **TINY, min_gain=-1.0)
    assert manifest.value_correction["accepted"] and manifest.value_correction["settings"]["steps"] == 200
    # the correction names the expert it belongs to, and the folder is sealed again
    assert manifest.value_correction["expert_sha256"] == file_sha256(pendulum_copy / "expert.pt")
    assert manifest.complete
    assert manifest.files[CORRECTION_FILE] == file_sha256(pendulum_copy / CORRECTION_FILE)
    # the record holds every argument of the fit: Pendulum's config turns the ranking loss on, defaults too
    assert manifest.value_correction["settings"]["rank_weight"] == 1.0
    assert manifest.value_correction["settings"]["mixed_share"] == 0.5
    assert (pendulum_copy / CORRECTION_FILE).is_file()
    assert manifest.value_quality["states"] > 0
    oracle = load_oracle(PENDULUM, pendulum_copy)
    rng = np.random.default_rng(0)
    theta = rng.uniform(-np.pi, np.pi, 32)
    obs = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, 32)], axis=1)
    act = rng.uniform(-2, 2, (32, 1))
    delta = oracle.value(obs) - oracle.value(obs, corrected=False)
    np.testing.assert_allclose(delta, oracle.correction.predict(obs))
    assert np.abs(delta).max() > 0
    # V and Q move together, so the critic's advantages are unchanged
    plain_q = oracle.q_value(obs, act) - oracle.correction.predict(obs)
    np.testing.assert_allclose(
        oracle.q_value(obs, act) - oracle.value(obs), plain_q - oracle.value(obs, False)
    )

    # a rejected correction removes the old file: V* is the plain critic again
    manifest = correct_value(PENDULUM, pendulum_copy, verbose=False, **TINY, min_gain=2.0)
    assert not manifest.value_correction["accepted"] and not (pendulum_copy / CORRECTION_FILE).exists()
    assert load_oracle(PENDULUM, pendulum_copy).correction is None


def _reseal(directory):
    """Record the current files' hashes as a writer would (so only the checked property is wrong)."""
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["files"] = {name: file_sha256(directory / name) for name in manifest["files"]}
    (directory / MANIFEST).write_text(json.dumps(manifest))
    forget_oracle(directory)


def test_missing_corrupted_or_foreign_correction_says_how_to_fix(pendulum_copy):
    correct_value(PENDULUM, pendulum_copy, verbose=False, **TINY, min_gain=-1.0)
    path = pendulum_copy / CORRECTION_FILE

    def reload():
        forget_oracle(pendulum_copy)
        return load_oracle(PENDULUM, pendulum_copy)

    good = path.read_bytes()
    fix = f"prefrl oracle correct-value --env pendulum --from {pendulum_copy}"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(OracleError, match=rf"damaged: {CORRECTION_FILE} differs.*{fix}"):
        reload()
    _reseal(pendulum_copy)  # the manifest agrees with the truncated file: torch cannot read it
    with pytest.raises(OracleError, match=rf"corrupted.*{fix}"):
        reload()
    save_value_correction(pendulum_copy, ValueCorrection(obs_dim=5, hidden=8))
    _reseal(pendulum_copy)
    with pytest.raises(OracleError, match=r"expects 5-dim observations.*has 3"):
        reload()
    path.unlink()
    with pytest.raises(OracleError, match=rf"{CORRECTION_FILE} is missing.*{fix}"):
        reload()
    # and the fix the errors name works on such a folder, in place
    correct_value(PENDULUM, pendulum_copy, verbose=False, **TINY, min_gain=-1.0)
    assert reload().correction is not None


def test_a_correction_fitted_to_another_expert_is_refused(pendulum_copy, tmp_path):
    """A new expert beside the old value correction (what an interrupted in-place retraining left) is
    never used: the correction names the expert it was fitted to."""
    correct_value(PENDULUM, pendulum_copy, verbose=False, **TINY, min_gain=-1.0)
    # another expert (a skill level's weights would not load as an expert: take a perturbed copy)
    state = th.load(pendulum_copy / "expert.pt", weights_only=True)
    state = {k: v + 0.01 if v.is_floating_point() and not k.startswith("normalization.") else v
             for k, v in state.items()}  # fmt: skip
    th.save(state, pendulum_copy / "expert.pt")
    _reseal(pendulum_copy)  # even with every hash in order
    with pytest.raises(OracleError, match=r"fitted to another expert.*prefrl oracle correct-value"):
        load_oracle(PENDULUM, pendulum_copy)
    # a writer cannot seal such a folder either
    manifest = read_manifest(PENDULUM, pendulum_copy, verify=False)
    with pytest.raises(OracleError, match="fitted to another expert"):
        seal_oracle(pendulum_copy, manifest)
    # refitting makes it whole again
    correct_value(PENDULUM, pendulum_copy, verbose=False, **TINY, min_gain=-1.0)
    forget_oracle(pendulum_copy)
    assert load_oracle(PENDULUM, pendulum_copy).correction is not None


def test_config_settings_are_checked(tmp_path):
    config = tmp_path / "oracle.yaml"
    config.write_text("defaults:\n  algo: sac\n  total_steps: 10\n  value_correction:\n    episode: 3\n")
    with pytest.raises(ValueError, match="episode"):
        load_oracle_config("pendulum", config)
    config.write_text("defaults:\n  algo: sac\n  total_steps: 10\n  value_correction: false\n")
    assert load_oracle_config("pendulum", config)["value_correction"] is False
    assert set(load_oracle_config("pendulum")["value_correction"]) <= {
        "episodes",
        "validation_episodes",
        "steps",
        "rank_weight",
    }


def test_cli_passes_only_the_given_settings(monkeypatch):
    from prefrl import cli
    from prefrl.cli import oracle

    calls = []
    monkeypatch.setattr(oracle, "correct_value", lambda env, **kwargs: calls.append((env, kwargs)))
    assert (
        cli.main(["oracle", "correct-value", "--env", "hopper", "--episodes", "12", "--fit-steps", "99"]) == 0
    )
    assert calls == [("hopper", {"directory": None, "out": None, "episodes": 12, "steps": 99})]
    assert cli.main(["oracle", "correct-value", "--env", "ant", "--rank-weight", "0.5", "--out", "x"]) == 0
    assert calls[-1] == ("ant", {"directory": None, "out": Path("x"), "rank_weight": 0.5})
