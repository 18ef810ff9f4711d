"""prefrl.reward_learning: the preference-reward loop on its own, driven by a tiny agent loop without RL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from prefrl.envs import EnvSpec
from prefrl.errors import SpecError
from prefrl.feedback import query_allowance
from prefrl.raters import make_rater
from prefrl.reward_learning import FeedbackConfig, PreferenceRewardLearner, RewardModelConfig
from prefrl.segments import collect_segments
from prefrl.types import PreferenceBatch, SegmentBatch

#: a small, fast reward model; refit whenever new labels arrived
SMALL_RM = {"net_arch": [16], "initial_epochs": 3, "epochs": 1, "refit_interval": 0}
#: env steps between the query points of the fake agent below (a rollout of 2 envs x 128 steps)
STEPS_PER_POINT = 256
#: Pendulum-v1's observation (cos, sin, angular velocity) and action (torque) sizes
PENDULUM_OBS_DIM, PENDULUM_ACT_DIM = 3, 1


def make_learner(
    spec: EnvSpec,
    rater: str = "partial_return",
    feedback: dict | None = None,
    reward_model: dict | None = None,
    cls: type[PreferenceRewardLearner] = PreferenceRewardLearner,
    seed: int = 0,
) -> PreferenceRewardLearner:
    return cls(
        FeedbackConfig.from_mapping(feedback or {}, "feedback"),
        RewardModelConfig.from_mapping({**SMALL_RM, **(reward_model or {})}, "reward_model"),
        obs_dim=PENDULUM_OBS_DIM,
        act_dim=PENDULUM_ACT_DIM,
        num_factors=spec.num_factors,
        rater=make_rater(rater, spec),
        seed=seed,
    )


def point_segments(spec: EnvSpec, index: int, num_segments: int = 10) -> SegmentBatch:
    """The segments one query point of a fake agent recorded: random-policy pendulum segments."""
    return collect_segments(spec, "random", num_segments, segment_length=10, seed=100 + index)


def run_loop(
    learner: PreferenceRewardLearner,
    spec: EnvSpec,
    budget: int,
    num_points: int,
    num_segments: int = 10,
) -> tuple[list[int], list[int]]:
    """A minimal agent: record, ask, maybe refit at every query point; ``(charged after each point,
    env steps of each refit)``."""
    learner.plan(budget, STEPS_PER_POINT * np.arange(1, num_points + 1))
    charged, fits = [], []
    for index in range(num_points):
        env_steps = STEPS_PER_POINT * (index + 1)
        learner.add_segments(point_segments(spec, index, num_segments))
        learner.ask(index)
        charged.append(learner.num_queries)
        if learner.refit_due(index, env_steps):
            learner.refit(env_steps)
            fits.append(env_steps)
    return charged, fits


def labelled_pairs(learner: PreferenceRewardLearner) -> list[frozenset]:
    """Every labelled pair as the set of its two segments' contents (the trainer's stored features)."""
    features = learner.trainer._features
    assert features is not None
    return [frozenset((features[i].tobytes(), features[j].tobytes())) for i, j in learner.trainer._pairs]


# ---- schedule and counters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "share", "budget"), [("linear", 0.25, 40), ("constant", 0.0, 37), ("christiano", 0.5, 90)]
)
def test_ask_spends_the_allowance_at_the_planned_points(
    pendulum: EnvSpec, schedule: str, share: float, budget: int
) -> None:
    learner = make_learner(
        pendulum, feedback={"schedule": schedule, "initial_query_share": share, "selection": "uniform"}
    )
    charged, _ = run_loop(learner, pendulum, budget, num_points=4, num_segments=15)  # 105 pairs a point
    expected = query_allowance(budget, STEPS_PER_POINT * np.arange(1, 5), share, schedule)
    np.testing.assert_array_equal(learner.allowance, expected)
    assert charged == expected.tolist()  # every point asks exactly what its cumulative allowance allows
    assert learner.num_queries == learner.queries_asked == learner.trainer.num_pairs == budget
    assert learner.rater.num_queries == budget


def test_nothing_is_asked_without_a_plan(pendulum: EnvSpec) -> None:
    learner = make_learner(pendulum)
    learner.add_segments(point_segments(pendulum, 0))
    assert learner.ask(0) == 0 and learner.queries_asked == 0
    assert not learner.refit_due(0, STEPS_PER_POINT)


@pytest.mark.parametrize("selection", ["uniform", "disagreement", "kcenter_entropy"])
def test_pairs_are_unique_and_older_segments_fill_in(pendulum: EnvSpec, selection: str) -> None:
    # 6 segments per point (15 pairs) but 60 queries over 4 points: the latest point alone runs short, so
    # the buffered points supply the rest; no pair is ever asked twice
    learner = make_learner(pendulum, feedback={"selection": selection, "pool_rollouts": 1})
    run_loop(learner, pendulum, 60, num_points=4, num_segments=6)
    assert learner.queries_asked == learner.queries_answered == 60 == learner.query_pool.num_asked
    pairs = labelled_pairs(learner)
    assert len(pairs) == len(set(pairs)) == 60


def test_what_cannot_be_asked_stays_due(pendulum: EnvSpec) -> None:
    # 3 segments at the first point have only 3 pairs, but the whole budget is due at once
    learner = make_learner(pendulum, feedback={"initial_query_share": 1.0, "selection": "uniform"})
    learner.plan(10, [256, 512])
    learner.add_segments(point_segments(pendulum, 0, num_segments=3))
    assert learner.ask(0) == 3 and learner.queries_due(0) == 7
    learner.add_segments(point_segments(pendulum, 1, num_segments=5))
    learner.ask(1)
    assert learner.num_queries == 10 and learner.queries_due(1) == 0


@pytest.mark.parametrize(
    ("budget_mode", "charged"), [("asked", "queries_asked"), ("answered", "queries_answered")]
)
def test_skipped_queries_count_as_the_budget_mode_says(
    pendulum: EnvSpec, budget_mode: str, charged: str
) -> None:
    learner = make_learner(
        pendulum,
        rater="partial_return+skip:eps=0.9",
        feedback={"budget": budget_mode, "selection": "uniform"},
    )
    run_loop(learner, pendulum, 30, num_points=3)
    assert learner.queries_answered < learner.queries_asked  # the skip teacher dropped some
    assert learner.num_queries == getattr(learner, charged) == 30
    assert learner.trainer.num_pairs == learner.queries_answered  # only answered queries are labels


# ---- refit policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refit_every", "refit_interval", "fits_at"),
    [(1, 0, [256, 512, 768, 1024]), (2, 0, [256, 768]), (1, 512, [256, 768]), (1, 10_000, [256])],
)
def test_refits_follow_new_labels_and_both_intervals(
    pendulum: EnvSpec, refit_every: int, refit_interval: int, fits_at: list[int]
) -> None:
    learner = make_learner(
        pendulum,
        feedback={"selection": "uniform"},
        reward_model={"refit_every": refit_every, "refit_interval": refit_interval},
    )
    _, fits = run_loop(learner, pendulum, 40, num_points=4)  # labels at every point
    assert fits == fits_at
    assert learner.trainer.num_fits == len(fits_at)


def test_no_refit_without_new_labels(pendulum: EnvSpec) -> None:
    learner = make_learner(pendulum, feedback={"initial_query_share": 1.0, "selection": "uniform"})
    learner.plan(20, [256, 512, 768])  # the whole budget at the first point: nothing new afterwards
    learner.add_segments(point_segments(pendulum, 0))
    learner.ask(0)
    assert learner.refit_due(0, 256)
    version = learner.reward_model.version
    loss = learner.refit(256)
    assert np.isfinite(loss) and learner.reward_model.version > version
    learner.add_segments(point_segments(pendulum, 1))
    assert learner.ask(1) == 0 and not learner.refit_due(1, 10_000)


def test_the_first_fit_runs_initial_epochs(pendulum: EnvSpec) -> None:
    learner = make_learner(pendulum, reward_model={"initial_epochs": 4, "epochs": 1, "batch_size": 8})
    epochs = []
    fit = learner.trainer.fit
    learner.trainer.fit = lambda e=None: (epochs.append(e), fit(e))[1]  # type: ignore[method-assign]
    run_loop(learner, pendulum, 40, num_points=3)
    assert epochs == [4, None, None]  # then the trainer's own epochs per refit


# ---- learning ---------------------------------------------------------------------------------------


def test_the_learned_reward_ranks_segments_like_the_true_reward(pendulum: EnvSpec) -> None:
    learner = make_learner(pendulum, reward_model={"initial_epochs": 30, "epochs": 5})
    run_loop(learner, pendulum, 200, num_points=5, num_segments=30)
    test = collect_segments(pendulum, "random", 200, segment_length=10, seed=7)
    predicted = learner.reward_model.predict_mean(learner.reward_model.features(test)).sum(axis=1)
    assert np.corrcoef(predicted, test.returns)[0, 1] > 0.7
    metrics = learner.metrics()
    assert {"rm_accuracy", "rm_new_accuracy", "rm_loss", "rm_pairs", "rm_fit_s"} <= set(metrics)
    assert metrics["rm_pairs"] == 200


# ---- extension points -------------------------------------------------------------------------------


class FirstSegmentAgainstAll(PreferenceRewardLearner):
    """Compares the latest point's first segment with each other one, ignoring the selection rule."""

    def collect_preferences(self, quota: int) -> PreferenceBatch | None:
        segments = self.query_pool.latest()
        pairs = np.stack([np.zeros(len(segments) - 1), np.arange(1, len(segments))], axis=1)[:quota]
        prefs = self.rater.label(segments, pairs.astype(np.int64), self.rng)
        self.query_counter.record(len(pairs), len(prefs))
        return prefs


def test_a_subclass_decides_what_is_compared(pendulum: EnvSpec) -> None:
    learner = make_learner(pendulum, cls=FirstSegmentAgainstAll, feedback={"initial_query_share": 1.0})
    learner.plan(5, [256, 512])
    segments = point_segments(pendulum, 0)
    learner.add_segments(segments)
    assert learner.ask(0) == 5 and learner.queries_asked == 5
    # the stored pairs are the subclass's: segment 0 against segments 1..5
    first = learner.trainer._features[learner.trainer._pairs[:, 0]]
    expected = learner.reward_model.features(segments[np.zeros(5, dtype=np.int64)])
    np.testing.assert_array_equal(first, expected)
    assert learner.query_pool.num_asked == 0  # the base class's pair bookkeeping was not used


def test_save_writes_a_loadable_description(pendulum: EnvSpec, tmp_path: Path) -> None:
    learner = make_learner(pendulum)
    run_loop(learner, pendulum, 20, num_points=2)
    box = spaces.Box(-np.inf, np.inf, shape=(PENDULUM_OBS_DIM,), dtype=np.float32)
    path = learner.save(
        tmp_path,
        env_spec=pendulum,
        observation_space=box,
        action_space=spaces.Box(-2.0, 2.0, shape=(PENDULUM_ACT_DIM,), dtype=np.float32),
        agent="pebble",
    )
    assert (tmp_path / "reward_model.pt").exists()
    assert json.loads(Path(path).read_text())["agent"] == "pebble"


# ---- bad input --------------------------------------------------------------------------------------


def test_a_budget_of_zero_fails_clearly(pendulum: EnvSpec) -> None:
    with pytest.raises(SpecError, match="query budget > 0"):
        make_learner(pendulum).plan(0, [256])


def test_disagreement_needs_an_ensemble(pendulum: EnvSpec) -> None:
    with pytest.raises(SpecError, match="ensemble_size >= 2"):
        make_learner(
            pendulum, feedback={"selection": "kcenter_disagreement"}, reward_model={"ensemble_size": 1}
        )
