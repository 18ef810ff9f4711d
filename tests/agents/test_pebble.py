"""pebble: k-NN state entropy, the unsupervised phase, buffer relabelling, budgets and config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from prefrl.agents import make_agent
from prefrl.agents.pebble import PEBBLEAgent, knn_state_entropy, query_point_steps
from prefrl.config import load_agent_config
from prefrl.errors import ConfigError, SpecError
from prefrl.evaluation import ProgressHook, evaluate_policy
from prefrl.experiment import run_experiment
from prefrl.raters import make_rater
from prefrl.reward_model import reward_features

#: a tiny pebble: SAC updates from step 100 on a [16, 16] net, 200 unsupervised steps, a query point at
#: step 300 and every 200 steps after it; a [16] reward net refitted at every point with new labels
TINY = {
    "policy_kwargs": {"net_arch": [16, 16]},
    "sac": {"learning_starts": 100, "buffer_size": 2000, "batch_size": 32},
    "pebble": {"unsup_steps": 200, "query_interval": 200, "queries_per_point": None, "reset_update": 10},
    "reward_model": {"net_arch": [16], "initial_epochs": 5, "epochs": 2, "refit_interval": 0},
}
RM_COLUMNS = {"queries_asked", "queries_answered", "rm_accuracy", "rm_new_accuracy", "rm_loss", "rm_pairs"}


def tiny_agent(pendulum, seed: int = 0, **overrides) -> PEBBLEAgent:
    config = load_agent_config("pebble", "pendulum", {**TINY, **overrides})
    agent = make_agent("pebble", pendulum, config, rater=make_rater("partial_return", pendulum), seed=seed)
    assert isinstance(agent, PEBBLEAgent)
    return agent


def model_rewards(agent: PEBBLEAgent) -> np.ndarray:
    """The reward model's prediction for every stored transition, computed from the buffer's raw
    contents: the observation and the action the env applied (SAC stores it scaled to [-1, 1])."""
    buffer = agent.replay_buffer
    n = buffer.num_stored
    low, high = agent.reward_env.action_space.low, agent.reward_env.action_space.high
    applied = low + 0.5 * (buffer.actions[:n] + 1.0) * (high - low)
    features = reward_features("obs_act", buffer.observations[:n], applied, np.zeros((n, buffer.n_envs, 0)))
    return agent.reward_model.predict_mean(features)


# ---- the state-entropy estimate -------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4096])
def test_knn_state_entropy_is_the_kth_neighbour_distance(chunk_size: int) -> None:
    # Pythagorean distances: from (0, 0) the reference points lie at 0, 5, 10 and 13; from (6, 0) at 6,
    # 5, 8 and sqrt(1 + 144)
    reference = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [5.0, 12.0]])
    obs = torch.tensor([[0.0, 0.0], [6.0, 0.0]])
    expected = {1: [0.0, 5.0], 2: [5.0, 6.0], 3: [10.0, 8.0], 4: [13.0, np.sqrt(145.0)]}
    for k, distances in expected.items():
        got = knn_state_entropy(obs, reference, k, chunk_size=chunk_size)
        np.testing.assert_allclose(got.numpy(), distances, atol=1e-5)


def test_knn_state_entropy_matches_brute_force_on_random_points() -> None:
    generator = torch.Generator().manual_seed(0)
    obs, reference = torch.randn(7, 5, generator=generator), torch.randn(300, 5, generator=generator)
    brute = torch.sort(torch.linalg.norm(obs[:, None] - reference[None], dim=-1), dim=1).values
    for k in (1, 6, 300):
        got = knn_state_entropy(obs, reference, k, chunk_size=64)
        torch.testing.assert_close(got, brute[:, k - 1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("obs_shape", "reference_shape", "k", "match"),
    [
        ((2, 3), (4, 3), 5, r"k must lie in \[1, 4\]"),
        ((2, 3), (4, 3), 0, "k must"),
        ((2, 3), (4, 2), 1, "expected"),
    ],
)
def test_knn_state_entropy_refuses_bad_arguments(obs_shape, reference_shape, k, match) -> None:
    with pytest.raises(ValueError, match=match):
        knn_state_entropy(torch.zeros(obs_shape), torch.zeros(reference_shape), k)


# ---- the unsupervised phase, the relabel, the critic reset ----------------------------------------


def test_unsupervised_phase_uses_intrinsic_rewards_and_asks_nothing(pendulum) -> None:
    agent = tiny_agent(pendulum)
    hook = ProgressHook(pendulum, eval_freq=150, n_eval_episodes=1, seed=0)
    agent.learn(600, 30, hook)
    hook.close()
    rows = pd.DataFrame(hook.rows)
    # no query before the first query point (learning_starts 100 + unsup_steps 200), the first one there
    np.testing.assert_array_equal(agent.query_steps, [300, 500])
    assert (rows.loc[rows["env_steps"] < 300, "queries"] == 0).all()
    assert rows.loc[rows["env_steps"] == 300, "queries"].item() > 0
    assert rows["queries"].iloc[-1] == 30
    # SAC's gradient steps at env steps 101..299 sampled intrinsic rewards, none after
    buffer = agent.replay_buffer
    assert buffer.intrinsic_batches == 199 and not buffer.intrinsic
    # what an intrinsic batch holds: each next observation's (k+1)-th neighbour distance among the stored
    # next observations (the first is itself), over the running std of those distances
    buffer.intrinsic = True
    batch = buffer.sample(64)
    reference = torch.as_tensor(buffer.stored_next_observations())
    distances = knn_state_entropy(batch.next_observations, reference, agent.options.knn_k + 1)
    assert float(distances.min()) > 0
    scale = np.sqrt(buffer.entropy_rms.var)
    np.testing.assert_allclose(batch.rewards.numpy().ravel(), distances.numpy() / scale, rtol=1e-4)
    agent.close()


@pytest.mark.parametrize("n_envs", [1, 2])
def test_relabel_sets_every_stored_reward_to_the_model_prediction(pendulum, n_envs: int) -> None:
    agent = tiny_agent(pendulum, n_envs=n_envs)
    agent.learn(700, 40)
    buffer = agent.replay_buffer
    assert agent.num_relabels == agent.learner.trainer.num_fits >= 2
    # after training: older rows were relabelled by the last model, newer ones rewarded by it per step
    np.testing.assert_allclose(buffer.rewards[: buffer.num_stored], model_rewards(agent), atol=1e-4)
    buffer.rewards[:] = 123.0
    agent.relabel_replay_buffer()
    np.testing.assert_array_equal(buffer.rewards[: buffer.num_stored], model_rewards(agent))
    assert np.all(buffer.rewards[buffer.num_stored :] == 123.0)  # unused rows stay untouched
    assert agent.metrics()["rm_relabel_s"] > 0
    agent.close()


def test_critic_reset_reinitialises_both_critics_and_their_optimiser(pendulum) -> None:
    agent = tiny_agent(pendulum)
    agent.model.learn(300)  # some critic updates: the optimiser has state
    critic = agent.model.critic
    before = torch.cat([p.detach().flatten().clone() for q in critic.q_networks for p in q.parameters()])
    actor = torch.cat([p.detach().flatten().clone() for p in agent.model.actor.parameters()])
    assert critic.optimizer.state
    agent.reset_critic()
    after = torch.cat([p.detach().flatten() for q in critic.q_networks for p in q.parameters()])
    assert not torch.allclose(before, after)
    assert torch.equal(actor, torch.cat([p.detach().flatten() for p in agent.model.actor.parameters()]))
    for p, q in zip(critic.parameters(), agent.model.critic_target.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not critic.optimizer.state
    agent.close()


# ---- budgets and progress.csv ----------------------------------------------------------------------


@pytest.mark.parametrize(("queries_per_point", "selection"), [(None, "disagreement"), (12, "uniform")])
def test_budget_is_spent_with_unique_pairs_and_counted(
    tmp_path: Path, pendulum, queries_per_point, selection
):
    rater = make_rater("partial_return", pendulum)
    asked: list[frozenset] = []
    label_array = rater.label_array

    def recording_label_array(segments, pairs, rng):
        # a pair is identified by its two segments' contents, order-free
        for i, j in pairs:
            asked.append(frozenset((segments.obs[i].tobytes(), segments.obs[j].tobytes())))
        return label_array(segments, pairs, rng)

    rater.label_array = recording_label_array
    pebble = {**TINY["pebble"], "queries_per_point": queries_per_point}
    run_dir = run_experiment(
        "pendulum",
        "pebble",
        rater,
        seed=0,
        steps=700,
        queries=24,
        out=tmp_path / "run",
        overrides={**TINY, "pebble": pebble, "feedback": {"selection": selection}},
        eval_freq=350,
        n_eval_episodes=1,
        progress_bar=False,
    )
    progress = pd.read_csv(run_dir / "progress.csv")
    assert (run_dir / "reward_model.pt").is_file() and (run_dir / "reward_model.json").is_file()
    assert RM_COLUMNS | {"reward_corr", "rm_relabel_s", "rm_relabels"} <= set(progress.columns)
    last = progress.iloc[-1]
    assert last["queries"] == last["queries_asked"] == last["queries_answered"] == last["rm_pairs"] == 24
    assert progress["queries"].is_monotonic_increasing
    assert len(asked) == 24 == len(set(asked))  # every pair asked once
    assert -1.0 <= last["reward_corr"] <= 1.0
    if queries_per_point is not None:
        # B-Pref's schedule: 12 per point (points at 300 and 500) until the budget is spent
        queries = progress.set_index("env_steps")["queries"]
        np.testing.assert_array_equal(queries.loc[[0, 350, 700]], [0, 12, 24])


# ---- configuration errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pebble", "match"),
    [
        ({"knn_k": 0}, r"pebble.knn_k"),
        ({"unsup_steps": -1}, r"pebble.unsup_steps"),
        ({"query_interval": 0}, r"pebble.query_interval"),
        ({"queries_per_point": 0}, r"pebble.queries_per_point"),
        ({"reset_update": 2.5}, r"pebble.reset_update"),
        ({"reset_critic_after_unsup": "yes"}, r"pebble.reset_critic_after_unsup"),
        ({"knn": 3}, r"pebble: unknown key 'knn' \(did you mean 'knn_k'\?\)"),
    ],
)
def test_bad_pebble_values_are_refused_when_the_config_loads(pebble, match) -> None:
    with pytest.raises(SpecError, match=match) as error:
        load_agent_config("pebble", "pendulum", {"pebble": pebble})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "steps", "queries", "match"),
    [
        ({}, 300, 10, r"first query point .* = 300\) must come before the end of training \(300"),
        ({"pebble": {"queries_per_point": 5}}, 900, 40, r"queries_per_point 5 x 3 query points = 15 < .* 40"),
        ({}, 900, 0, r"query budget must be > 0"),
    ],
)
def test_budgets_that_cannot_work_are_refused_before_training(pendulum, overrides, steps, queries, match):
    agent = tiny_agent(pendulum, **{**overrides, "pebble": {**TINY["pebble"], **overrides.get("pebble", {})}})
    with pytest.raises(ConfigError, match=match):
        agent.learn(steps, queries)
    assert agent.model.num_timesteps == 0
    agent.close()


def test_query_points_start_after_the_unsupervised_phase() -> None:
    np.testing.assert_array_equal(query_point_steps(6000, 5000, 30000), [6000, 11000, 16000, 21000, 26000])
    np.testing.assert_array_equal(query_point_steps(0, 100, 250), [1, 101, 201])


# ---- learning ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pebble_beats_random_on_pendulum(pendulum) -> None:
    """pebble with agents/pebble.yaml's Pendulum settings and 100 queries swings the pendulum up by 10k
    steps (measured: normalised score 93 from 6k steps on, seed 0; 42 s on a shared 2-core machine)."""
    rng = np.random.default_rng(0)
    random_mean, _ = evaluate_policy(
        lambda obs: rng.uniform(-2, 2, size=(obs.shape[0], 1)).astype(np.float32), pendulum, 5, seed=0
    )
    config = load_agent_config("pebble", "pendulum")
    agent = make_agent("pebble", pendulum, config, rater=make_rater("partial_return", pendulum), seed=0)
    hook = ProgressHook(pendulum, eval_freq=10_000, n_eval_episodes=5, seed=0)
    agent.learn(10_000, 100, hook)
    hook.close()
    agent.close()
    assert agent.num_queries == 100
    assert random_mean < -900
    assert hook.rows[-1]["true_return_mean"] > random_mean + 600
