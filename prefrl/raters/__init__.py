"""Simulated raters (preference models) and B-Pref noise wrappers.

Build one from a spec string with :func:`make_rater` (``"partial_return"``, ``"regret+mistake:eps=0.2"``,
...); :func:`list_raters` lists the names. Labels follow the project convention
``y = P(segment 1 preferred)``, 0.5 = tie, skipped queries removed.
"""

from typing import TYPE_CHECKING

from prefrl.errors import RaterError
from prefrl.oracle import oracle_value_functions
from prefrl.raters.base import Rater, ScoreRater, preference_from_difference
from prefrl.raters.hierarchical import HierarchicalRater
from prefrl.raters.intransitive import IntransitiveRater
from prefrl.raters.noise import Equal, Mistake, Myopic, RaterWrapper, Skip, Stochastic
from prefrl.raters.non_markovian import NonMarkovianRater
from prefrl.raters.panel import PanelRater
from prefrl.raters.partial_return import PartialReturnRater
from prefrl.raters.registry import describe_raters, list_raters, make_rater, register_rater
from prefrl.raters.regret import RegretRater, set_default_value_fn_provider

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec


def _oracle_value_functions(env_spec: "EnvSpec") -> tuple:
    """``regret`` with no value function uses the env's shipped oracle expert (``V*``, ``Q*``)."""
    return oracle_value_functions(env_spec)


set_default_value_fn_provider(_oracle_value_functions)

__all__ = [
    "Equal",
    "HierarchicalRater",
    "IntransitiveRater",
    "Mistake",
    "Myopic",
    "NonMarkovianRater",
    "PanelRater",
    "PartialReturnRater",
    "Rater",
    "RaterError",
    "RaterWrapper",
    "RegretRater",
    "ScoreRater",
    "Skip",
    "Stochastic",
    "describe_raters",
    "list_raters",
    "make_rater",
    "preference_from_difference",
    "register_rater",
    "set_default_value_fn_provider",
]
