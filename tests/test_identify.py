"""Preference-model identification (prefrl.identify), `prefrl identify` and CSV label import."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from prefrl.cli import main
from prefrl.datasets import DATASET_FORMAT, load_dataset, save_dataset
from prefrl.errors import DatasetError, RaterError
from prefrl.identify import (
    BETA_SATURATED,
    CANDIDATE_MODELS,
    DEFAULT_MODELS,
    identify,
    pair_statistics,
    preference_log_likelihood,
)
from prefrl.label_import import import_labels_csv, read_labels_csv, write_labels_csv
from prefrl.raters import make_rater
from prefrl.types import PreferenceBatch, SegmentBatch

NUM_SEGMENTS, LENGTH, NUM_PAIRS = 600, 16, 3000
#: a hand-built V* for the regret rater: smooth in the observation, on the scale of the rewards
VALUE_WEIGHTS = np.array([1.0, -0.5, 2.0])


def value_fn(obs: np.ndarray) -> np.ndarray:
    return 3.0 * np.tanh(obs @ VALUE_WEIGHTS)


def make_segments(n: int = NUM_SEGMENTS, h: int = LENGTH, seed: int = 0) -> SegmentBatch:
    """Pendulum-shaped segments (obs 3, act 1, 3 factors) with standard-normal per-step rewards."""
    rng = np.random.default_rng(seed)
    return SegmentBatch(
        obs=rng.standard_normal((n, h, 3)),
        act=rng.uniform(-2, 2, (n, h, 1)),
        reward=rng.standard_normal((n, h)),
        factors=rng.random((n, h, 3)),
        dones=np.zeros((n, h), dtype=bool),
        next_obs=rng.standard_normal((n, 3)),
    )


SEGMENTS = make_segments()


def label(spec: str, num_pairs: int = NUM_PAIRS, seed: int = 1) -> PreferenceBatch:
    """``num_pairs`` random pairs of :data:`SEGMENTS` labelled by the rater ``spec``."""
    rng = np.random.default_rng(seed)
    first = rng.integers(NUM_SEGMENTS, size=num_pairs)
    pairs = np.stack([first, (first + 1 + rng.integers(NUM_SEGMENTS - 1, size=num_pairs)) % NUM_SEGMENTS], 1)
    return make_rater(spec, value_fn=value_fn).label(SEGMENTS, pairs, rng)


def save(prefs: PreferenceBatch, path, env: str = "pendulum", rater: str | None = None):
    provenance = {"params": {"format": DATASET_FORMAT, "env": env, "rater": rater}, "rater_spec": rater}
    return save_dataset(path, prefs, provenance)


# --------------------------------------------------------------------------------------------------
# likelihood
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [None, 0.0, 0.1, 0.3])
def test_log_likelihood_is_the_cross_entropy_of_the_flip_noise_model(eps):
    logits = torch.tensor([-3.0, -0.2, 0.0, 0.7, 4.0], dtype=torch.float64)
    labels = torch.tensor([0.0, 1.0, 0.5, 0.3, 1.0], dtype=torch.float64)
    p = torch.sigmoid(logits)
    if eps is not None:
        p = (1 - eps) * p + eps * (1 - p)
    expected = labels * torch.log(p) + (1 - labels) * torch.log(1 - p)
    eps_t = None if eps is None else torch.tensor(eps, dtype=torch.float64)
    torch.testing.assert_close(preference_log_likelihood(logits, labels, eps_t), expected)


def test_log_likelihood_stays_finite_with_gradients_at_huge_logits():
    logits = torch.tensor([-1e4, 1e4], dtype=torch.float64, requires_grad=True)
    ll = preference_log_likelihood(logits, torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert float(ll[1].detach()) == 0.0 and float(ll[0].detach()) == pytest.approx(-1e4)
    ll.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0] == pytest.approx(1.0)


def test_statistics_are_pair_differences_scaled_by_their_spread():
    prefs = label("partial_return", num_pairs=200)
    stats = pair_statistics(prefs, regret_scores=np.arange(NUM_SEGMENTS, dtype=float))
    returns = SEGMENTS.returns
    diff = returns[prefs.pairs[:, 0]] - returns[prefs.pairs[:, 1]]
    np.testing.assert_allclose(stats.return_diff.numpy() * stats.reward_scale, diff)
    assert stats.reward_scale == pytest.approx(diff.std())
    assert stats.regret_diff.std(correction=0).item() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# parameter recovery
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 5.0])
def test_partial_return_beta_is_recovered(beta):
    result = identify(label(f"partial_return:beta={beta}"), models="stoc", folds=2, bootstraps=0)
    assert result.fits["stoc"].params["beta"] == pytest.approx(beta, rel=0.2)


def test_soft_labels_recover_beta_through_the_cross_entropy():
    result = identify(label("partial_return:beta=2,soft=true"), models="stoc", folds=2, bootstraps=0)
    assert result.fits["stoc"].params["beta"] == pytest.approx(2.0, rel=0.05)


def test_mistake_eps_is_recovered():
    result = identify(label("mistake:eps=0.1", num_pairs=4000), models="mistake", folds=2, bootstraps=0)
    assert result.fits["mistake"].params["eps"] == pytest.approx(0.1, abs=0.02)


def test_myopic_gamma_is_recovered_and_deterministic_beta_is_flagged():
    result = identify(label("myopic:gamma=0.9"), models="myopic", folds=2, bootstraps=0)
    fit = result.fits["myopic"]
    assert fit.params["gamma"] == pytest.approx(0.9, abs=0.05)
    assert fit.at_bound == ("beta",)
    assert "beta>=" in result.table.loc[0, "params"]


def test_discounted_partial_return_recovers_its_discount():
    result = identify(
        label("partial_return:beta=3,discount=0.8"), models="partial_return", folds=2, bootstraps=0
    )
    params = result.fits["partial_return"].params
    assert params["discount"] == pytest.approx(0.8, abs=0.05)
    assert params["beta"] == pytest.approx(3.0, rel=0.2)
    assert result.fits["partial_return"].at_bound == ()


# --------------------------------------------------------------------------------------------------
# model selection
# --------------------------------------------------------------------------------------------------

#: generator rater spec -> the simplest candidate containing it
CONFUSION = {
    "partial_return:beta=2": "stoc",
    "stoc:beta=0.5": "stoc",
    "partial_return:beta=3,discount=0.85": "partial_return",
    "myopic:gamma=0.9": "myopic",
    "regret": "regret",
    "mistake:eps=0.1": "mistake",
    "regret+mistake:eps=0.1": "regret+mistake",
}


def test_the_generating_model_is_selected():
    models = [*DEFAULT_MODELS, "regret+mistake"]
    confusion = {
        generator: identify(label(generator), models=models, folds=2, bootstraps=0, value_fn=value_fn).winner
        for generator in CONFUSION
    }
    assert confusion == CONFUSION


def test_bootstrap_confidence_and_table():
    result = identify(label("myopic:gamma=0.9"), folds=3, bootstraps=10, seed=3, value_fn=value_fn)
    table = result.table
    assert result.winner == "myopic" == table.loc[0, "model"]
    assert result.confidence == 1.0 == table.loc[0, "win_share"]
    assert table["win_share"].sum() == pytest.approx(1.0)
    assert list(table["model"].sort_values()) == sorted(DEFAULT_MODELS)
    assert (table["delta"] >= 0).all() and table.loc[0, "delta"] == 0
    # BIC = k ln M - 2 LL; the winner is the most accurate on held-out pairs
    m = result.num_pairs
    np.testing.assert_allclose(table["bic"], table["k"] * np.log(m) - 2 * table["loglik"])
    assert table.loc[0, "accuracy"] == table["accuracy"].max() > 0.99
    assert result.to_dict()["models"][0]["params"]["gamma"] == pytest.approx(0.9, abs=0.05)


def test_results_are_reproducible_from_the_seed():
    prefs = label("mistake:eps=0.2", num_pairs=1000)
    a, b = (identify(prefs, models="stoc,mistake", folds=3, bootstraps=5, seed=7) for _ in range(2))
    assert a.table.equals(b.table)


@pytest.mark.parametrize("criterion", ["aic", "heldout"])
def test_other_criteria_select_the_generator(criterion):
    result = identify(
        label("mistake:eps=0.1"), models="stoc,mistake", folds=3, bootstraps=3, criterion=criterion
    )
    assert result.winner == "mistake" and result.confidence == 1.0


def test_regret_is_skipped_with_a_reason_without_an_oracle():
    result = identify(label("partial_return:beta=2", num_pairs=500), folds=2, bootstraps=0)
    assert set(result.skipped) == {"regret"}
    assert "oracle" in result.skipped["regret"]
    assert "regret" not in set(result.table["model"])
    with pytest.raises(RaterError, match="no preference model left"):
        identify(label("regret", num_pairs=500), models="regret", folds=2, bootstraps=0)


def test_regret_uses_the_datasets_env_oracle(tmp_path):
    prefs = make_rater("regret", "pendulum").label(
        SEGMENTS[:100], np.array([[i, i + 50] for i in range(50)]), np.random.default_rng(0)
    )
    path = save(prefs, tmp_path / "d.npz", rater="regret")
    result = identify(path, models="stoc,regret", folds=2, bootstraps=0)
    assert result.skipped == {} and result.winner == "regret" and result.generator == "regret"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"models": "myopik"}, RaterError, "did you mean 'myopic'"),
        ({"models": ""}, RaterError, "no preference model"),
        ({"criterion": "bics"}, RaterError, "criterion"),
        ({"folds": 1}, DatasetError, "folds"),
        ({"folds": 60}, DatasetError, "too few"),
        ({"bootstraps": -1}, DatasetError, "bootstraps"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        identify(label("partial_return", num_pairs=100), **kwargs)


def test_every_candidate_names_itself():
    assert set(DEFAULT_MODELS) <= set(CANDIDATE_MODELS)
    for name, model in CANDIDATE_MODELS.items():
        assert model.name == name and model.parameters[0].name == "beta" and model.description
    assert BETA_SATURATED < CANDIDATE_MODELS["stoc"].parameters[0].high


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def test_cli_prints_the_table_and_the_verdict(tmp_path, capsys):
    path = save(label("mistake:eps=0.1", num_pairs=1500), tmp_path / "d.npz", rater="mistake:eps=0.1")
    argv = [
        "identify",
        "--dataset",
        str(path),
        "--models",
        "stoc,mistake",
        "--folds",
        "3",
        "--bootstraps",
        "4",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "best: mistake (BIC; wins 100% of 4 bootstrap resamples)" in out
    assert "generated by mistake:eps=0.1" in out and "eps=" in out
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["winner"] == "mistake" and report["confidence"] == 1.0
    assert report["models"][0]["params"]["eps"] == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--models", "stok"], "did you mean 'stoc'"),
        (["--models", "regret"], "no preference model left to fit"),
        (["--folds", "80"], "too few for 80-fold"),
        (["--dataset-missing"], "does not exist"),
    ],
)
def test_cli_errors_are_one_line_with_exit_status_2(extra, message, tmp_path, capsys):
    path = save(label("partial_return", num_pairs=100), tmp_path / "d.npz", env="no_such_env")
    dataset = str(tmp_path / "missing.npz") if extra == ["--dataset-missing"] else str(path)
    extra = [] if extra == ["--dataset-missing"] else extra
    assert main(["identify", "--dataset", dataset, "--bootstraps", "0", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


# --------------------------------------------------------------------------------------------------
# CSV labels
# --------------------------------------------------------------------------------------------------


def test_csv_round_trip_keeps_pairs_and_labels_and_records_the_csv(tmp_path):
    source = save(label("partial_return:beta=2,soft=true", num_pairs=300), tmp_path / "src.npz", rater="x")
    csv_path = write_labels_csv(source, tmp_path / "labels.csv")
    out = import_labels_csv(source, csv_path, tmp_path / "people.npz")
    original, imported = load_dataset(source), load_dataset(out)
    np.testing.assert_array_equal(imported.preferences.pairs, original.preferences.pairs)
    np.testing.assert_array_equal(imported.preferences.labels, original.preferences.labels)
    np.testing.assert_array_equal(imported.segments.reward, original.segments.reward)
    labels = imported.provenance["labels"]
    assert labels["csv_sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert labels["rows"] == 300 and labels["skipped"] == 0 and labels["source_rater"] == "x"
    assert imported.provenance["rater_spec"] is None
    assert imported.provenance["params"]["rater"] == f"csv:{labels['csv_sha256']}"


def test_csv_skipped_rows_are_dropped_and_counted(tmp_path):
    csv_path = tmp_path / "l.csv"
    csv_path.write_text(
        "\ufeffsegment_a, segment_b ,label,person\n0,1,1,ann\n2,3,,bob\n4,5,skip,ann\n6,7,0.5,x\n"
    )
    pairs, labels, skipped = read_labels_csv(csv_path, 10)
    np.testing.assert_array_equal(pairs, [[0, 1], [6, 7]])
    np.testing.assert_array_equal(labels, [1.0, 0.5])
    assert skipped == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("segment_a,segment_b\n0,1\n", "missing column(s) label"),
        ("", "is empty"),
        ("segment_a,segment_b,label\n0,10,1\n", "line 2: segment_b 10 is out of range"),
        ("segment_a,segment_b,label\n-1,2,1\n", "segment_a -1 is out of range"),
        ("segment_a,segment_b,label\n0.5,2,1\n", "not a segment index"),
        ("segment_a,segment_b,label\n0,1,1.5\n", "line 2: label 1.5 is not in [0, 1]"),
        ("segment_a,segment_b,label\n0,1,nan\n", "not in [0, 1]"),
        ("segment_a,segment_b,label\n0,1,yes\n", "not a number"),
        ("segment_a,segment_b,label\n0,1,1\n2,3,0\n1,0,1\n", "line 4: the pair (1, 0) is already on line 2"),
        ("segment_a,segment_b,label\n3,3,1\n", "both 3"),
        ("segment_a,segment_b,label\n0,1,skip\n", "no labelled pair"),
        ("segment_a,segment_b,label\n0,1\n", "fewer cells"),
    ],
)
def test_bad_csv_is_a_dataset_error_naming_the_problem(text, message, tmp_path):
    csv_path = tmp_path / "l.csv"
    csv_path.write_text(text)
    with pytest.raises(DatasetError, match=None) as info:
        read_labels_csv(csv_path, 10)
    assert message in str(info.value) and str(csv_path) in str(info.value)


def test_cli_import_labels_and_its_errors(tmp_path, capsys):
    source = save(label("partial_return", num_pairs=50), tmp_path / "src.npz")
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("segment_a,segment_b,label\n0,1,1\n2,3,0\n4,5,\n")
    out = tmp_path / "new.npz"
    argv = ["dataset", "import-labels", "--segments", str(source), "--csv", str(csv_path), "--out", str(out)]
    assert main(argv) == 0
    assert "2 labelled pairs (1 skipped" in capsys.readouterr().out
    assert load_dataset(out).num_pairs == 2
    csv_path.write_text("segment_a,segment_b,label\n0,999,1\n")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "out of range" in err and len(err.splitlines()) == 1
    assert main([*argv[:-1], str(source)]) == 2
    assert "is the segments dataset itself" in capsys.readouterr().err
