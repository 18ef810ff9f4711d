"""Offline preference datasets: pairing, build -> save -> load round trip, cache, corrupted files, progress,
CLI."""

from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np
import pytest

from prefrl.cli import dataset as cli_dataset
from prefrl.cli import main
from prefrl.datasets import (
    DATASET_FORMAT,
    build_command,
    build_dataset,
    dataset_dir,
    load_dataset,
    make_pairs,
    noisy_policy,
    save_dataset,
)
from prefrl.errors import DatasetError
from prefrl.types import PreferenceBatch, SegmentBatch

# 6 checkpoints x 1 episode x 4 segments of 50 steps: a few seconds on the CPU
TINY = {"episodes": 6, "segment": 50, "pairs": "sparse", "return_episodes": 0, "n_envs": 1}
TINY_ARGS = [
    "--episodes",
    "6",
    "--segment",
    "50",
    "--pairs",
    "sparse",
    "--return-episodes",
    "0",
    "--n-envs",
    "1",
]


@pytest.fixture(autouse=True)
def no_echo_left_behind():
    """The CLI's echo handler and log level would leak into later tests: restore the logger afterwards."""
    log = logging.getLogger("prefrl.datasets")
    level = log.level
    yield
    for handler in [h for h in log.handlers if getattr(h, "prefrl_echo", False)]:
        log.removeHandler(handler)
    log.setLevel(level)


# ---- pairing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, k", [(10, 1), (10, 4), (11, 3), (2, 2)])
def test_dense_pairs_put_every_segment_in_exactly_k_pairs(n, k):
    pairs = make_pairs(n, "dense", np.random.default_rng(0), pairs_per_segment=k)
    assert pairs.shape == (k * (n // 2), 2) and pairs.dtype == np.int64
    assert (pairs[:, 0] != pairs[:, 1]).all()
    counts = np.bincount(pairs.ravel(), minlength=n)
    if n % 2 == 0:
        assert (counts == k).all()
    else:  # one segment sits out each round
        assert counts.max() == k and counts.sum() == 2 * k * (n // 2)


@pytest.mark.parametrize("n", [8, 9, 100])
def test_sparse_pairs_are_disjoint(n):
    pairs = make_pairs(n, "sparse", np.random.default_rng(1))
    assert len(pairs) == n // 2
    assert len(np.unique(pairs)) == 2 * (n // 2)  # every segment in at most one pair


def test_int_pairs_and_order_is_random():
    rng = np.random.default_rng(2)
    pairs = make_pairs(50, 300, rng)
    assert pairs.shape == (300, 2) and (pairs[:, 0] != pairs[:, 1]).all()
    dense = make_pairs(1000, "dense", np.random.default_rng(3), pairs_per_segment=4)
    # pairs are shuffled across rounds: the first quarter is not one perfect matching
    assert len(np.unique(dense[:500])) < 1000


@pytest.mark.parametrize(
    "args, match",
    [((1, "dense"), "at least 2 segments"), ((10, "dnese"), "dense', 'sparse'"), ((10, 0), ">= 1")],
)
def test_pair_errors(args, match):
    with pytest.raises(DatasetError, match=match):
        make_pairs(*args, rng=np.random.default_rng(0))


def test_noisy_policy_stays_in_bounds_and_is_seeded():
    low, high = np.array([-2.0]), np.array([2.0])
    act = noisy_policy(lambda obs: np.full((len(obs), 1), 1.9), 5.0, low, high, np.random.default_rng(0))
    out = np.concatenate([act(np.zeros((100, 3))) for _ in range(10)])
    assert out.min() >= -2.0 and out.max() <= 2.0
    assert 0.2 < np.mean(out == 2.0) < 0.8  # large noise: clipped often, on both sides
    again = noisy_policy(lambda obs: np.full((len(obs), 1), 1.9), 5.0, low, high, np.random.default_rng(0))
    np.testing.assert_array_equal(again(np.zeros((100, 3))), out[:100])
    quiet = noisy_policy(lambda obs: np.full((len(obs), 1), 0.5), 0.0, low, high, np.random.default_rng(0))
    np.testing.assert_array_equal(quiet(np.zeros((4, 3))), 0.5)


# ---- build / load --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    directory = tmp_path_factory.mktemp("datasets")
    return directory, build_dataset("pendulum", "partial_return", directory=directory, **TINY)


def test_round_trip(built):
    directory, path = built
    assert path.parent == directory and path.suffix == ".npz" and path.name.startswith("pendulum-")
    data = load_dataset(path, "pendulum")
    segs, prefs = data.segments, data.preferences
    assert segs.obs.shape == (24, 50, 3) and segs.act.shape == (24, 50, 1) and len(prefs) == 12
    assert (np.abs(segs.act) <= 2.0).all()
    # 6 checkpoints (level0..level4, expert), one episode each, 4 segments per episode
    np.testing.assert_array_equal(np.bincount(segs.source), [4] * 6)
    # partial_return labels are the sign of the return difference
    returns = segs.returns
    expected = (returns[prefs.pairs[:, 0]] > returns[prefs.pairs[:, 1]]).astype(float)
    np.testing.assert_array_equal(prefs.labels, expected)
    prov = data.provenance
    assert prov["params"]["format"] == DATASET_FORMAT and prov["params"]["rater"].startswith("PartialReturn")
    assert prov["rater_spec"] == "partial_return" and prov["env_steps"] == 6 * 200
    assert [c["name"] for c in prov["checkpoints"]] == [
        "level0",
        "level1",
        "level2",
        "level3",
        "level4",
        "expert",
    ]
    assert all(np.isfinite(c["checkpoint_return"]) for c in prov["checkpoints"])
    assert {"created", "prefrl_version", "oracle", "tie_rate", "pairs_labelled"} <= set(prov)
    assert data.env_steps == 1200
    sub = data.take(5)
    np.testing.assert_array_equal(sub.preferences.pairs, prefs.pairs[:5])
    with pytest.raises(DatasetError, match="asked for 13 labelled pairs"):
        data.take(13)


def test_cache_is_reused_and_keyed_by_parameters(built):
    directory, path = built
    mtime = path.stat().st_mtime_ns
    assert build_dataset("pendulum", "partial_return", directory=directory, **TINY) == path
    assert path.stat().st_mtime_ns == mtime  # not rebuilt
    other = build_dataset("pendulum", "partial_return", directory=directory, **{**TINY, "seed": 1})
    assert other != path
    a, b = load_dataset(path), load_dataset(other)
    assert not np.array_equal(a.segments.obs, b.segments.obs)


def test_same_parameters_same_data(built, tmp_path):
    _, path = built
    again = build_dataset("pendulum", "partial_return", out=tmp_path / "copy.npz", **TINY)
    a, b = load_dataset(path), load_dataset(again)
    np.testing.assert_array_equal(a.segments.obs, b.segments.obs)
    np.testing.assert_array_equal(a.preferences.labels, b.preferences.labels)


def test_regret_labels_use_the_oracle(tmp_path):
    path = build_dataset("pendulum", "regret", directory=tmp_path, **TINY)
    data = load_dataset(path)
    # regret = return + V(s_H) - V(s_0): it must disagree with partial return on some pairs of 24 segments
    segs, prefs = data.segments, data.preferences
    by_return = segs.returns[prefs.pairs[:, 0]] > segs.returns[prefs.pairs[:, 1]]
    assert data.provenance["params"]["rater"].startswith("RegretRater")
    assert np.isin(prefs.labels, [0.0, 0.5, 1.0]).all() and len(by_return) == len(prefs)


def test_cache_directory_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFRL_DATA_DIR", str(tmp_path / "here"))
    assert dataset_dir() == tmp_path / "here"
    monkeypatch.delenv("PREFRL_DATA_DIR")
    assert dataset_dir().parts[-3:] == (".cache", "prefrl", "datasets")


@pytest.mark.parametrize(
    "kwargs, match",
    [({"pairs": "some"}, "pairs must be"), ({"segment": 500}, "segment must be"), ({"noise": -1.0}, "noise")],
)
def test_bad_build_parameters(tmp_path, kwargs, match):
    with pytest.raises(DatasetError, match=match):
        build_dataset("pendulum", "partial_return", directory=tmp_path, **{**TINY, **kwargs})


# ---- corrupted / mismatched files ----------------------------------------------------------------------
def _small_prefs(n: int = 4, h: int = 3) -> PreferenceBatch:
    segs = SegmentBatch(
        obs=np.zeros((n, h, 3)),
        act=np.zeros((n, h, 1)),
        reward=np.zeros((n, h)),
        factors=np.zeros((n, h, 3)),
        dones=np.zeros((n, h), dtype=bool),
        next_obs=np.zeros((n, 3)),
    )
    return PreferenceBatch(segs, np.array([[0, 1], [2, 3]]), np.array([1.0, 0.5]))


PROVENANCE = {"params": {"format": DATASET_FORMAT, "env": "pendulum"}, "env_steps": 0}


def test_garbage_file_is_reported(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(DatasetError, match=r"bad\.npz is corrupted"):
        load_dataset(path)


def test_truncated_file_is_reported(built, tmp_path):
    _, good = built
    path = tmp_path / "truncated.npz"
    path.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(DatasetError, match=r"truncated\.npz"):
        load_dataset(path)


def test_missing_file_and_missing_keys(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope.npz")
    path = tmp_path / "partial.npz"
    np.savez_compressed(path, obs=np.zeros((2, 3, 3)))
    with pytest.raises(DatasetError, match=r"partial\.npz is missing arrays \['act'"):
        load_dataset(path)


def test_inconsistent_arrays_are_reported(tmp_path):
    path = save_dataset(tmp_path / "ok.npz", _small_prefs(), PROVENANCE)
    assert load_dataset(path).num_pairs == 2
    with np.load(path) as data:
        arrays = dict(data)
    for key, value, match in [
        ("pairs", np.array([[0, 9]]), "pair indices"),
        ("labels", np.array([1.0, 0.0, 1.0]), "labels must be"),
        ("act", np.zeros((4, 2, 1)), "act has shape"),
        ("labels", np.array([1.5, 0.0]), r"\[0, 1\]"),
        ("provenance", np.array("{not json"), "not valid JSON"),
        ("provenance", np.array(json.dumps({"params": {"format": 0}})), "has format 0"),
    ]:
        bad = tmp_path / f"bad_{key}.npz"
        np.savez_compressed(bad, **{**arrays, key: value})
        with pytest.raises(DatasetError, match=match) as info:
            load_dataset(bad)
        assert bad.name in str(info.value)


def test_env_mismatch_is_reported(tmp_path):
    path = save_dataset(tmp_path / "p.npz", _small_prefs(), PROVENANCE)
    with pytest.raises(DatasetError, match="built on env 'pendulum', not 'halfcheetah'"):
        load_dataset(path, "halfcheetah")
    other = save_dataset(
        tmp_path / "q.npz", _small_prefs(), {**PROVENANCE, "params": {**PROVENANCE["params"]}}
    )
    load_dataset(other, "pendulum")  # matching dims pass


def test_corrupted_cache_file_is_rebuilt(tmp_path):
    path = build_dataset("pendulum", "partial_return", directory=tmp_path, **TINY)
    path.write_bytes(b"garbage")
    assert build_dataset("pendulum", "partial_return", directory=tmp_path, **TINY) == path
    assert load_dataset(path).num_pairs == 12


# ---- command line --------------------------------------------------------------------------------------
def test_cli_build(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli_dataset.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli.npz"
    args = parser.parse_args(
        ["dataset", "build", "--env", "pendulum", "--rater", "partial_return", "--episodes", "6",
         "--segment", "100", "--pairs", "5", "--return-episodes", "0", "--out", str(out)]
    )  # fmt: skip
    assert args.func(args) == 0
    assert str(out) in capsys.readouterr().out
    assert load_dataset(out).num_pairs == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["dataset", "build", "--env", "pendulum", "--pairs", "lots"])


def test_cli_build_reproduces_itself(tmp_path, capsys):
    """The provenance's build command, run again, gives the same data."""
    out = tmp_path / "first.npz"
    assert main(["dataset", "build", "--env", "pendulum", "--rater", "partial_return", *TINY_ARGS,
                 "--out", str(out)]) == 0  # fmt: skip
    command = build_command(load_dataset(out).provenance)
    assert command == (
        "prefrl dataset build --env pendulum --rater partial_return --episodes 6 --noise 0.3 --segment 50 "
        "--pairs sparse --seed 0 --n-envs 1 --return-episodes 0"
    )
    again = tmp_path / "again.npz"
    assert main([*command.split()[1:], "--out", str(again)]) == 0
    a, b = load_dataset(out), load_dataset(again)
    np.testing.assert_array_equal(a.segments.obs, b.segments.obs)
    np.testing.assert_array_equal(a.preferences.labels, b.preferences.labels)
    capsys.readouterr()


# ---- progress ------------------------------------------------------------------------------------------
def test_build_reports_progress_by_callback_and_log(tmp_path, caplog):
    calls = []
    with caplog.at_level(logging.INFO, logger="prefrl.datasets"):
        build_dataset(
            "pendulum",
            "partial_return",
            directory=tmp_path,
            progress=lambda done, total: calls.append((done, total)),
            **{**TINY, "return_episodes": 1},
        )
    total = (6 + 6 * 1) * 200  # every episode's rollout, then one return episode per checkpoint
    done = [d for d, _ in calls]
    assert {t for _, t in calls} == {total} and done[-1] == total
    assert done == sorted(set(done)) and len(done) > 100  # increasing, after every vectorised step
    lines = [r.getMessage() for r in caplog.records if "env steps" in r.getMessage()]
    assert [line.split(":")[1].split("%")[0].strip() for line in lines] == [
        str(p) for p in range(10, 101, 10)
    ]
    assert lines[-1] == f"dataset pendulum: 100% ({total}/{total} env steps)"
    # a cached dataset is not rolled out again: no progress
    calls.clear()
    build_dataset("pendulum", "partial_return", directory=tmp_path, progress=lambda *a: calls.append(a),
                  **{**TINY, "return_episodes": 1})  # fmt: skip
    assert calls == []


def test_cli_build_prints_a_line_every_10_percent_when_not_a_terminal(tmp_path, capsys):
    out = tmp_path / "p.npz"
    assert main(["dataset", "build", "--env", "pendulum", "--rater", "partial_return", *TINY_ARGS,
                 "--out", str(out)]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if line.endswith("env steps)")]
    assert progress[0] == "dataset pendulum:  10% (120/1200 env steps)" and len(progress) == 10
    assert progress[-1] == "dataset pendulum: 100% (1200/1200 env steps)"
    assert lines[-2] == str(out) and lines[-1].startswith("24 segments, 12 labelled pairs")


def test_cli_build_draws_a_bar_on_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_dataset, "_on_terminal", lambda: True)
    out = tmp_path / "p.npz"
    assert main(["dataset", "build", "--env", "pendulum", "--rater", "partial_return", *TINY_ARGS,
                 "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "rolling out: 100%" in text and "1.20k/1.20k" in text  # the bar, left at its end
    assert "env steps)" not in text  # no log lines under the bar
    assert text.splitlines()[-2].endswith(str(out))
