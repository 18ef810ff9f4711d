"""Rater diagnostics: cycle rate, agreement, the `rate` report and its table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prefrl.diagnostics import agreement, cycle_rate, format_report, rate_report
from prefrl.envs import load_env_spec
from prefrl.errors import RaterError
from prefrl.raters import IntransitiveRater, PartialReturnRater, Rater, make_rater
from prefrl.segments import sample_triples
from prefrl.types import SegmentBatch

SPEC = load_env_spec("pendulum")


def factor_segments(factors: np.ndarray) -> SegmentBatch:
    n, h, _ = factors.shape
    return SegmentBatch(
        obs=np.zeros((n, h, 3)),
        act=np.zeros((n, h, 1)),
        reward=SPEC.reward_from_factors(factors),
        factors=factors,
        dones=np.zeros((n, h), dtype=bool),
        next_obs=np.zeros((n, 3)),
    )


def test_condorcet_triple_is_one_cycle():
    # utility sums per criterion (upright, calm, gentle): a = (3, 1, 2), b = (2, 3, 1), c = (1, 2, 3)
    utilities = np.array([[3.0, 1.0, 2.0], [2.0, 3.0, 1.0], [1.0, 2.0, 3.0]])
    factors = (-utilities / np.array([1.0, 0.1, 0.001]))[:, None, :]  # costs: utility = -w * raw
    segs = factor_segments(factors)
    triples = np.array([[0, 1, 2], [0, 2, 1]])
    rng = np.random.default_rng(0)
    assert cycle_rate(IntransitiveRater(SPEC), segs, triples, rng) == 1.0
    assert cycle_rate(PartialReturnRater(), segs, triples, rng) == 0.0


def test_intransitive_yields_cycles_where_partial_return_yields_none():
    segs = factor_segments(np.random.default_rng(0).random((300, 10, 3)))
    triples = sample_triples(300, 20_000, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    rate = cycle_rate(IntransitiveRater(SPEC), segs, triples, rng)
    assert rate > 0.02  # independent criteria: ~1/16 of triples cycle (Condorcet)
    assert cycle_rate(PartialReturnRater(), segs, triples, rng) == 0.0
    assert cycle_rate(make_rater("mistake:eps=0.3"), segs, triples, rng) > 0.1


class _SkipLastSegment(Rater):
    """Answers like the intransitive rater, but skips every pair involving segment 3."""

    name = "skip_last"

    def _label(self, segments, pairs, rng):
        labels = IntransitiveRater(SPEC)._label(segments, pairs, rng)[0]
        return labels, (pairs != 3).all(axis=1)


def test_cycle_rate_leaves_out_triples_with_skipped_queries():
    utilities = np.array([[3.0, 1.0, 2.0], [2.0, 3.0, 1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    segs = factor_segments((-utilities / np.array([1.0, 0.1, 0.001]))[:, None, :])
    rng = np.random.default_rng(0)
    # the second triple has skipped queries: 1 cycle out of 1 complete triple, not 1 out of 2
    assert cycle_rate(_SkipLastSegment(), segs, np.array([[0, 1, 2], [0, 1, 3]]), rng) == 1.0
    assert cycle_rate(_SkipLastSegment(), segs, np.array([[0, 1, 3]]), rng) == 0.0  # nothing complete
    with pytest.raises(ValueError, match=r"\[T, 3\]"):
        cycle_rate(PartialReturnRater(), segs, np.array([[0, 1]]), rng)


def test_agreement_counts_ties_as_half():
    assert agreement(np.array([1.0, 0.0, 0.5, 0.5]), np.array([1.0, 1.0, 1.0, 0.0])) == pytest.approx(0.5)
    assert np.isnan(agreement(np.array([]), np.array([])))


RATERS = ["oracle", "mistake:eps=0.5", "equal:eps=0.5", "skip:eps=0.9", "intransitive", "hierarchical"]


@pytest.fixture(scope="module")
def report():
    return rate_report(
        "pendulum", RATERS, num_pairs=2000, seed=3, num_segments=80, num_triples=2000, repeats=1
    )


def test_rate_report_fields(report):
    assert (report["env"], report["policy"], report["seed"]) == ("pendulum", "random", 3)
    assert (report["num_segments"], report["segment_length"], report["num_pairs"]) == (80, 50, 2000)
    rows = {row["rater"]: row for row in report["raters"]}
    assert list(rows) == RATERS
    oracle = rows["oracle"]
    assert oracle["queries"] == 2000 and oracle["agreement"] == 1.0
    assert oracle["skip_share"] == 0.0 and oracle["cycle_rate"] == 0.0
    assert abs(rows["mistake:eps=0.5"]["agreement"] - 0.5) < 4 * np.sqrt(0.25 / 2000)
    assert rows["mistake:eps=0.5"]["cycle_rate"] > 0.1
    assert rows["equal:eps=0.5"]["tie_share"] > 0.05
    skip = rows["skip:eps=0.9"]
    assert skip["skip_share"] > 0.05 and skip["queries"] == round(2000 * (1 - skip["skip_share"]))
    assert rows["intransitive"]["cycle_rate"] > 0.0
    assert all(row["pairs_per_s"] > 0 for row in rows.values())
    json.dumps(report)  # the CLI prints it as JSON


def test_rate_report_is_deterministic(report):
    again = rate_report(
        "pendulum", RATERS, num_pairs=2000, seed=3, num_segments=80, num_triples=2000, repeats=1
    )
    strip = [{k: v for k, v in row.items() if k != "pairs_per_s"} for row in report["raters"]]
    assert strip == [{k: v for k, v in row.items() if k != "pairs_per_s"} for row in again["raters"]]


def test_format_report_table(report):
    text = format_report(report)
    for name in RATERS:
        assert name in text
    assert "agree" in text and "cycles" in text and "pendulum" in text
    assert text.count("\n") >= len(RATERS) + 4


def test_bad_rater_spec_fails_before_collecting(monkeypatch):
    def no_rollouts(*args, **kwargs):
        raise AssertionError("segments collected before the rater specs were checked")

    monkeypatch.setattr("prefrl.segments.collect_segments", no_rollouts)
    with pytest.raises(RaterError, match="did you mean 'mistake'"):
        rate_report("pendulum", ["oracle", "mistak"], num_pairs=10)
    with pytest.raises(ValueError, match="num_pairs"):
        rate_report("pendulum", "oracle", num_pairs=0)
