"""Rater spec strings: composition, value parsing and one clear error per mistake."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.errors import RaterError
from prefrl.raters import (
    Equal,
    HierarchicalRater,
    IntransitiveRater,
    Mistake,
    Myopic,
    PanelRater,
    PartialReturnRater,
    RegretRater,
    Skip,
    Stochastic,
    describe_raters,
    list_raters,
    make_rater,
)
from prefrl.raters import regret as regret_module
from prefrl.spec_utils import parse_value


def zero_value(obs: np.ndarray) -> np.ndarray:
    return np.zeros(len(obs))


def test_chain_of_wrappers_applied_left_to_right(pendulum):
    rater = make_rater("regret+myopic:gamma=0.8+mistake:eps=0.2", pendulum, value_fn=zero_value)
    assert isinstance(rater, Mistake) and rater.eps == 0.2
    assert isinstance(rater.inner, Myopic) and rater.inner.gamma == 0.8
    assert isinstance(rater.inner.inner, RegretRater) and rater.inner.inner.value_fn is zero_value


@pytest.mark.parametrize(
    ("spec", "cls", "attr", "value"),
    [
        ("stoc", Stochastic, "beta", 1.0),
        ("stoc:beta=0.5", Stochastic, "beta", 0.5),
        ("mistake", Mistake, "eps", 0.1),
        ("mistake:eps=0.2", Mistake, "eps", 0.2),
        ("skip", Skip, "eps", 0.1),
        ("equal", Equal, "eps", 0.1),
        ("myopic", Myopic, "gamma", 0.9),
        ("myopic:gamma=1", Myopic, "gamma", 1.0),
    ],
)
def test_bare_wrapper_wraps_partial_return_with_b_pref_defaults(pendulum, spec, cls, attr, value):
    rater = make_rater(spec, pendulum)
    assert isinstance(rater, cls) and getattr(rater, attr) == value
    assert type(rater.inner) is PartialReturnRater and rater.inner.beta == float("inf")


@pytest.mark.parametrize(
    ("spec", "cls"),
    [
        ("oracle", PartialReturnRater),
        ("partial_return:beta=2,discount=0.99,soft=true", PartialReturnRater),
        ("intransitive:beta=inf", IntransitiveRater),
        ("hierarchical:margin=0.5,drop_ties=true", HierarchicalRater),
        ("panel:mode=majority,num_members=3,spread=0.2,seed=4", PanelRater),
    ],
)
def test_base_raters_with_parameters(spec, cls):
    rater = make_rater(spec, "pendulum")  # env spec by name also works
    assert type(rater) is cls


def test_parsed_parameters_reach_the_rater(pendulum):
    pr = make_rater("partial_return:beta=2,discount=0.99,soft=true", pendulum)
    assert (pr.beta, pr.discount, pr.soft) == (2.0, 0.99, True)
    nm = make_rater("non_markovian:statistic=min,factor=velocity_sq", pendulum)
    assert (nm.statistic, nm.factor) == ("min", "velocity_sq")
    h = make_rater("hierarchical:margin=0.5,drop_ties=true", pendulum)
    assert h.sigmas.tolist() == [0.5, 0.5, 0.5] and h.drop_ties
    panel = make_rater("panel:mode=majority,num_members=3", pendulum)
    assert panel.mode == "majority" and len(panel.members) == 3


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        ("inf", float("inf")),
        ("true", True),
        ("False", False),
        ("min", "min"),
    ],
)
def test_parse_value(raw, value):
    parsed = parse_value(raw)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("partial_retrun", "unknown rater 'partial_retrun' (did you mean 'partial_return'?)"),
        ("mistak:eps=0.1", "did you mean 'mistake'"),
        ("mistake:epsilon=0.2", "unknown parameter 'epsilon' (did you mean 'eps'?); valid parameters: eps"),
        ("skip:gamma=0.2", "valid parameters: eps, margin, threshold"),
        ("oracle:beta=1", "valid parameters: none"),
        ("stoc:beta=-1", "beta (inverse temperature) must be >= 0"),
        ("partial_return:beta=-0.5", "beta (inverse temperature) must be >= 0"),
        ("mistake:eps=1.5", r"eps must lie in [0, 1], got 1.5"),
        ("skip:eps=-0.1", r"eps must lie in [0, 1]"),
        ("equal:eps=2", r"eps must lie in [0, 1]"),
        ("myopic:gamma=0", r"gamma must lie in (0, 1]"),
        ("myopic:gamma=1.5", r"gamma must lie in (0, 1]"),
        ("stoc:beta=abc", "parameter 'beta' must be a number, got 'abc'"),
        ("mistake:eps=true", "parameter 'eps' must be a number"),
        ("panel:num_members=2.5", "parameter 'num_members' must be an integer"),
        ("hierarchical:drop_ties=maybe", "parameter 'drop_ties' must be true or false"),
        ("intransitive+stoc", "stoc needs a score-based rater"),
        ("hierarchical+equal", "equal needs a score-based rater"),
        ("panel+myopic", "myopic needs a score-based rater"),
        ("non_markovian+myopic", "per-step sum"),
        ("mistake+regret", "'regret' is a base rater and can only come first"),
        ("mistake:eps", "malformed parameter 'eps'"),
        ("mistake:eps=0.1,eps=0.2", "given twice"),
        ("partial_return+", "empty rater name"),
        ("", "non-empty string"),
        ("regret:form=q", "form must be one of value, advantage"),
        ("panel:mode=vote", "mode must be one of random, majority"),
        ("non_markovian:statistic=median", "unknown statistic 'median'"),
    ],
)
def test_registry_errors(pendulum, spec, message):
    with pytest.raises(RaterError) as info:
        make_rater(spec, pendulum, value_fn=zero_value)
    assert message in str(info.value)


def test_regret_without_value_function_asks_for_the_oracle(pendulum, monkeypatch):
    monkeypatch.setattr(regret_module, "_default_provider", None)
    with pytest.raises(RaterError, match="an oracle value function is needed"):
        make_rater("regret", pendulum)
    with pytest.raises(RaterError, match="form='advantage' needs q_fn"):
        make_rater("regret:form=advantage", pendulum, value_fn=zero_value)


@pytest.mark.parametrize("spec", ["intransitive", "non_markovian", "hierarchical", "panel"])
def test_factor_raters_need_an_env_spec(spec):
    with pytest.raises(RaterError, match="env spec"):
        make_rater(spec)


def test_list_raters_and_help():
    names = list(list_raters())
    for name in (
        "partial_return",
        "oracle",
        "regret",
        "intransitive",
        "non_markovian",
        "hierarchical",
        "panel",
    ):
        assert name in names
    for name in ("stoc", "mistake", "skip", "equal", "myopic"):
        assert list_raters()[name].startswith("wrapper")
    assert "[eps=0.1]" in list_raters()["mistake"]
    text = describe_raters()
    assert "regret+myopic:gamma=0.9+mistake" in text and "hierarchical" in text
