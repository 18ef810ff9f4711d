"""Preference-model identification: which simulated rater explains a set of labels best.

Given labelled segment pairs (any prefrl dataset, also labels collected from people, see
:mod:`prefrl.label_import`), every candidate preference model has its free parameters fitted by maximum
likelihood, and the models are compared on the same pairs::

    result = identify("labels.npz")         # or a PreferenceDataset / PreferenceBatch
    result.table                             # one row per model: parameters, log-likelihoods, AIC, BIC
    result.winner, result.confidence         # best model, share of bootstrap resamples it wins

**Likelihood.** A model gives ``p = P(segment 1 preferred)`` for each pair; a label ``y`` (the project
convention: ``y = P(segment 1 preferred)``, 0.5 a tie, skipped queries absent) contributes the
cross-entropy ``y log p + (1 - y) log(1 - p)``: the Bernoulli log-likelihood for hard labels, and for a tie
the average of both outcomes (it pulls ``p`` towards 0.5).

**Candidates** (:data:`CANDIDATE_MODELS`; ``dR_t`` = reward of segment 1 minus segment 2 at step ``t``,
``H`` steps, ``sigma`` the logistic function)::

    stoc            p = sigma(beta * sum_t dR_t)                    beta          B-Pref's stoc teacher
    partial_return  p = sigma(beta * sum_t discount^t dR_t)         beta, discount in (0, 1]
    myopic          p = sigma(beta * sum_t gamma^(H-1-t) dR_t)      beta, gamma in (0, 1]
    regret          p = sigma(beta * (S_1 - S_2)), S = -regret      beta          needs the oracle's V*
    mistake         p = (1 - eps) * p_stoc + eps * (1 - p_stoc)     beta, eps in [0, 0.5)
    X+mistake       the same flip noise over X = partial_return, myopic or regret (not fitted by default)

These are the likelihoods of the raters of the same names (:mod:`prefrl.raters`); the parameters are
reported in the raters' units, so ``partial_return:beta=2`` is recovered as ``stoc`` with ``beta ~ 2``.
The regret statistic is the ``regret`` rater's own score (``sum_t r_t + V*(s_H) - V*(s_0)`` with the
env's oracle), computed once; without an env spec or an oracle the models that need it are skipped, with
the reason. ``stoc`` is ``partial_return`` at ``discount = 1`` (and ``myopic`` at ``gamma = 1``,
``mistake`` at ``eps = 0``): on labels from a plain partial-return rater these models fit equally well
and the criterion's penalty picks ``stoc``, the model with fewer parameters. A noise-free rater
(``beta = inf``) drives the fitted ``beta`` towards the top of its range (:attr:`ModelFit.at_bound`, shown as
``beta>=...``): read it as "deterministic under this model".

**Comparison.** Each model is fitted on all pairs (log-likelihood, AIC ``= 2k - 2 LL``, BIC
``= k ln M - 2 LL``) and in ``folds``-fold cross-validation (held-out log-likelihood per pair and
held-out accuracy on the pairs that are not ties). The winner has the best ``criterion`` (BIC by default;
``aic``, or ``heldout`` for the cross-validated log-likelihood); its confidence is the share of
``bootstraps`` resamples of the pairs (with replacement, every model refitted) in which it wins again.

Fitting: L-BFGS (:class:`torch.optim.LBFGS`, float64) on unconstrained parameters mapped into their
bounds with a logistic function (``beta`` on a log scale), from a few starting points on the full data and
from the full-data optimum in the folds and resamples.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from prefrl.datasets import PreferenceDataset, load_dataset
from prefrl.envs import load_env_spec
from prefrl.errors import DatasetError, OracleError, RaterError, SpecError
from prefrl.raters.regret import RegretRater, ValueFn
from prefrl.segments import validate_segments
from prefrl.spec_utils import suggest
from prefrl.types import PreferenceBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec

__all__ = [
    "CANDIDATE_MODELS",
    "CRITERIA",
    "DEFAULT_MODELS",
    "IdentificationResult",
    "ModelFit",
    "PairStatistics",
    "Parameter",
    "PreferenceModel",
    "fit_model",
    "identify",
    "pair_statistics",
    "preference_log_likelihood",
]

#: model-selection criteria: lower AIC / BIC, or higher cross-validated log-likelihood
CRITERIA = ("bic", "aic", "heldout")
#: ``beta`` is searched in ``[BETA_LOW, BETA_HIGH]`` / the spread of the model's statistic
BETA_LOW, BETA_HIGH = 1e-3, 1e4
#: a fitted (scaled) ``beta`` above this is reported as at its bound: the labels are deterministic under
#: the model (a difference of 1% of the statistic's spread already gives ``p > 0.9999``)
BETA_SATURATED = BETA_HIGH / 10
_DTYPE = torch.float64


# --------------------------------------------------------------------------------------------------
# Statistics and likelihood
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairStatistics:
    """What every candidate needs from the pairs, computed once.

    Reward differences are divided by ``reward_scale`` (the spread of the return differences) and regret
    differences by ``regret_scale``, so a fitted ``beta`` of 1 means the same in every env.

    :param step_diff: ``[M, H]`` per-step reward of segment 1 minus segment 2, scaled.
    :param return_diff: ``[M]`` return difference (the row sums of ``step_diff``).
    :param regret_diff: ``[M]`` score difference of the ``regret`` rater, scaled; ``None`` without oracle.
    """

    step_diff: torch.Tensor
    return_diff: torch.Tensor
    regret_diff: torch.Tensor | None
    reward_scale: float
    regret_scale: float

    @property
    def num_pairs(self) -> int:
        return int(self.step_diff.shape[0])

    @property
    def length(self) -> int:
        return int(self.step_diff.shape[1])


def _spread(values: np.ndarray) -> float:
    """The std of ``values``, or 1 when they are all equal (nothing to scale)."""
    std = float(np.std(values))
    return std if std > 0 and math.isfinite(std) else 1.0


def pair_statistics(prefs: PreferenceBatch, regret_scores: np.ndarray | None = None) -> PairStatistics:
    """The sufficient statistics of ``prefs`` for every candidate model.

    :param prefs: labelled pairs.
    :param regret_scores: ``[N]`` the ``regret`` rater's score of every segment of the pool, if known.
    """
    reward = np.asarray(prefs.segments.reward, dtype=np.float64)
    first, second = prefs.pairs[:, 0], prefs.pairs[:, 1]
    step_diff = reward[first] - reward[second]
    reward_scale = _spread(step_diff.sum(axis=1))
    step = torch.as_tensor(step_diff / reward_scale, dtype=_DTYPE)
    regret_diff, regret_scale = None, 1.0
    if regret_scores is not None:
        scores = np.asarray(regret_scores, dtype=np.float64)
        diff = scores[first] - scores[second]
        regret_scale = _spread(diff)
        regret_diff = torch.as_tensor(diff / regret_scale, dtype=_DTYPE)
    return PairStatistics(step, step.sum(dim=1), regret_diff, reward_scale, regret_scale)


def preference_log_likelihood(
    logits: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pair log-likelihood ``y log p + (1 - y) log(1 - p)``, ``[M]``.

    ``p = sigmoid(logits)``, or with flip noise ``p = (1 - eps) sigmoid(logits) + eps (1 - sigmoid(logits))``;
    computed in log space, so it stays finite for large logits.
    """
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    if eps is not None:
        keep, flip = torch.log1p(-eps), torch.log(eps)
        log_p, log_q = (
            torch.logaddexp(keep + log_p, flip + log_q),
            torch.logaddexp(keep + log_q, flip + log_p),
        )
    return labels * log_p + (1.0 - labels) * log_q


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """A bounded parameter, fitted on an unconstrained scale ``u``: ``value = low + (high - low) sigmoid(u)``.

    :param log: bound ``log(value)`` instead (for scale parameters such as ``beta``).
    :param starts: starting values of a fit from scratch (every combination over the parameters is tried).
    """

    name: str
    low: float
    high: float
    log: bool = False
    starts: tuple[float, ...] = ()

    def _bounds(self) -> tuple[float, float]:
        return (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)

    def value(self, u: torch.Tensor) -> torch.Tensor:
        low, high = self._bounds()
        x = low + (high - low) * torch.sigmoid(u)
        return torch.exp(x) if self.log else x

    def unconstrained(self, value: float) -> float:
        low, high = self._bounds()
        x = math.log(value) if self.log else value
        fraction = min(max((x - low) / (high - low), 1e-6), 1 - 1e-6)
        return math.log(fraction / (1 - fraction))


#: inverse temperature on the scaled statistic
_BETA = Parameter("beta", BETA_LOW, BETA_HIGH, log=True, starts=(1.0,))
_EPS = Parameter("eps", 0.0, 0.5, starts=(0.05,))


def _shape_parameter(name: str) -> Parameter:
    """A per-step weight base in (0, 1]: discount or myopia."""
    return Parameter(name, 0.0, 1.0, starts=(0.5, 0.9, 0.99))


class PreferenceModel(ABC):
    """A candidate preference model: ``p = sigmoid(beta * statistic)``, possibly with flip noise.

    Subclasses give the scaled statistic (:meth:`statistic`) and how ``beta`` converts to the rater's
    units (:meth:`beta_unit`).
    """

    #: the model's name (a rater spec name where there is one)
    name: str = "model"
    #: one line for tables and help
    description: str = ""
    #: the fitted parameters, ``beta`` first
    parameters: tuple[Parameter, ...] = (_BETA,)
    #: needs the oracle's value function (the regret statistic)
    needs_oracle: bool = False

    @property
    def num_params(self) -> int:
        return len(self.parameters)

    def values(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unconstrained ``u [k]`` -> ``{name: bounded value}``."""
        return {p.name: p.value(u[i]) for i, p in enumerate(self.parameters)}

    def starting_points(self) -> list[torch.Tensor]:
        """Every combination of the parameters' starting values, on the unconstrained scale."""
        grids = [[p.unconstrained(v) for v in p.starts] for p in self.parameters]
        return [torch.tensor(point, dtype=_DTYPE) for point in itertools.product(*grids)]

    @abstractmethod
    def statistic(self, values: Mapping[str, torch.Tensor], stats: PairStatistics) -> torch.Tensor:
        """``[M]`` the scaled score difference ``beta`` multiplies."""

    def beta_unit(self, values: Mapping[str, float], stats: PairStatistics) -> float:
        """Factor turning the fitted (scaled) ``beta`` into the rater's ``beta``."""
        return 1.0 / stats.reward_scale

    def log_likelihood(
        self, values: Mapping[str, torch.Tensor], stats: PairStatistics, labels: torch.Tensor
    ) -> torch.Tensor:
        """Per-pair log-likelihood of ``labels`` under the parameter ``values``, ``[M]``."""
        return preference_log_likelihood(
            values["beta"] * self.statistic(values, stats), labels, values.get("eps")
        )

    def probability(self, values: Mapping[str, torch.Tensor], stats: PairStatistics) -> torch.Tensor:
        """``P(segment 1 preferred)`` per pair, ``[M]``."""
        p = torch.sigmoid(values["beta"] * self.statistic(values, stats))
        eps = values.get("eps")
        return p if eps is None else (1 - eps) * p + eps * (1 - p)

    def rater_params(self, values: Mapping[str, float], stats: PairStatistics) -> dict[str, float]:
        """The fitted parameters in the units of the rater of the same name."""
        out = dict(values)
        out["beta"] = values["beta"] * self.beta_unit(values, stats)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ReturnModel(PreferenceModel):
    """Bradley-Terry on the plain partial return (B-Pref's ``stoc``; ``partial_return`` with finite beta)."""

    name = "stoc"
    description = "p = sigmoid(beta * dReturn): partial return, Bradley-Terry (B-Pref stoc)"

    def statistic(self, values: Mapping[str, torch.Tensor], stats: PairStatistics) -> torch.Tensor:
        return stats.return_diff


class WeightedReturnModel(PreferenceModel):
    """Bradley-Terry on a per-step weighted return; subclasses give the weights of a base in (0, 1].

    The weights are normalised to mean 1 inside the fit, so ``beta`` and the base are not entangled;
    :meth:`beta_unit` converts back to the rater's unnormalised sum.
    """

    #: the name of the weight base
    base: str = "discount"

    @abstractmethod
    def weights(self, base: torch.Tensor, length: int) -> torch.Tensor:
        """``[H]`` per-step weights for the base value."""

    def statistic(self, values: Mapping[str, torch.Tensor], stats: PairStatistics) -> torch.Tensor:
        weights = self.weights(values[self.base], stats.length)
        return stats.step_diff @ (weights / weights.mean())

    def beta_unit(self, values: Mapping[str, float], stats: PairStatistics) -> float:
        mean = float(self.weights(torch.tensor(values[self.base], dtype=_DTYPE), stats.length).mean())
        return 1.0 / (stats.reward_scale * mean)


class DiscountedReturnModel(WeightedReturnModel):
    """Partial return discounted inside the segment: step ``t`` weighted ``discount^t``."""

    name = "partial_return"
    description = "p = sigmoid(beta * sum_t discount^t dr_t): discounted partial return"
    parameters = (_BETA, _shape_parameter("discount"))
    base = "discount"

    def weights(self, base: torch.Tensor, length: int) -> torch.Tensor:
        return base ** torch.arange(length, dtype=_DTYPE)


class MyopicModel(WeightedReturnModel):
    """B-Pref's myopic teacher on the partial return: step ``t`` weighted ``gamma^(H-1-t)``."""

    name = "myopic"
    description = "p = sigmoid(beta * sum_t gamma^(H-1-t) dr_t): B-Pref myopic partial return"
    parameters = (_BETA, _shape_parameter("gamma"))
    base = "gamma"

    def weights(self, base: torch.Tensor, length: int) -> torch.Tensor:
        return base ** torch.arange(length - 1, -1, -1, dtype=_DTYPE)


class RegretModel(PreferenceModel):
    """Bradley-Terry on the negated regret under the oracle's ``V*`` (the ``regret`` rater)."""

    name = "regret"
    description = "p = sigmoid(beta * d(-regret)): regret under the oracle's V* (needs an oracle)"
    needs_oracle = True

    def statistic(self, values: Mapping[str, torch.Tensor], stats: PairStatistics) -> torch.Tensor:
        if stats.regret_diff is None:
            raise RaterError("the regret model needs the oracle's regret statistic (pass an env spec)")
        return stats.regret_diff

    def beta_unit(self, values: Mapping[str, float], stats: PairStatistics) -> float:
        return 1.0 / stats.regret_scale


class MistakeModel(PreferenceModel):
    """Flip noise over another model: ``p = (1 - eps) p_inner + eps (1 - p_inner)`` (B-Pref ``mistake``)."""

    def __init__(self, inner: PreferenceModel, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or f"{inner.name}+mistake"
        self.description = f"{inner.name} with labels flipped with probability eps (B-Pref mistake)"
        self.parameters = (*inner.parameters, _EPS)
        self.needs_oracle = inner.needs_oracle

    def statistic(self, values: Mapping[str, torch.Tensor], stats: PairStatistics) -> torch.Tensor:
        return self.inner.statistic(values, stats)

    def beta_unit(self, values: Mapping[str, float], stats: PairStatistics) -> float:
        return self.inner.beta_unit(values, stats)


def _candidates() -> dict[str, PreferenceModel]:
    models: list[PreferenceModel] = [ReturnModel(), DiscountedReturnModel(), MyopicModel(), RegretModel()]
    noisy = [MistakeModel(ReturnModel(), name="mistake")]
    noisy += [MistakeModel(m) for m in models[1:]]
    return {m.name: m for m in models + noisy}


#: every model :func:`identify` can fit, by name
CANDIDATE_MODELS: Mapping[str, PreferenceModel] = _candidates()
#: the models fitted when none are named
DEFAULT_MODELS = ("stoc", "partial_return", "myopic", "regret", "mistake")


# --------------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFit:
    """One model fitted to (weighted) pairs.

    :param params: fitted parameters in the rater's units (``beta`` of the rater of the same name).
    :param log_likelihood: the maximised (weighted) log-likelihood, in nats.
    :param at_bound: parameters that ran to the edge of their range: ``beta`` above
        :data:`BETA_SATURATED` (the labels are deterministic under the model; ``beta`` is a lower bound).
    :param raw: the optimum on the unconstrained scale (a warm start for refits).
    """

    model: PreferenceModel
    params: dict[str, float]
    log_likelihood: float
    at_bound: tuple[str, ...]
    raw: torch.Tensor


def _weighted_loss(
    model: PreferenceModel,
    u: torch.Tensor,
    stats: PairStatistics,
    labels: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    return -(weights * model.log_likelihood(model.values(u), stats, labels)).sum()


def fit_model(
    model: PreferenceModel,
    stats: PairStatistics,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    max_iter: int = 200,
) -> ModelFit:
    """Maximise the (weighted) log-likelihood of ``labels`` over the model's parameters with L-BFGS.

    :param weights: ``[M]`` non-negative pair weights (fold masks, bootstrap counts); default all 1.
    :param start: unconstrained starting point (e.g. a previous optimum); default every combination of
        the parameters' starting values, keeping the best optimum.
    """
    weights = torch.ones_like(labels) if weights is None else weights
    total = float(weights.sum())
    if total <= 0:
        raise DatasetError("no pairs to fit the preference model on")
    best_u, best_loss = None, math.inf
    for u0 in [start] if start is not None else model.starting_points():
        u = u0.detach().clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [u],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )

        def closure(u: torch.Tensor = u, optimizer: torch.optim.LBFGS = optimizer) -> torch.Tensor:
            optimizer.zero_grad()
            # the mean keeps the gradient scale independent of the number of pairs
            loss = _weighted_loss(model, u, stats, labels, weights) / total
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            loss = float(_weighted_loss(model, u, stats, labels, weights))
        if loss < best_loss or best_u is None:
            best_u, best_loss = u.detach(), loss
    assert best_u is not None
    values = {name: float(v) for name, v in model.values(best_u).items()}
    # a noise-free rater has no finite MLE of beta: the fit runs towards the top of the range
    at_bound = ("beta",) if values["beta"] >= BETA_SATURATED else ()
    return ModelFit(model, model.rater_params(values, stats), -best_loss, at_bound, best_u)


def _probabilities(fit: ModelFit, stats: PairStatistics) -> torch.Tensor:
    with torch.no_grad():
        return fit.model.probability(fit.model.values(fit.raw), stats)


def _pair_log_likelihood(fit: ModelFit, stats: PairStatistics, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return fit.model.log_likelihood(fit.model.values(fit.raw), stats, labels)


def _accuracy(prob: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of non-tie pairs whose label the model's ``p`` points to (``p = 0.5`` counts half)."""
    decided = labels != 0.5
    if not bool(decided.any()):
        return float("nan")
    agreement = torch.sign(prob[decided] - 0.5) * torch.sign(labels[decided] - 0.5)
    return float(((agreement + 1) / 2).mean())


def _criterion_value(criterion: str, log_likelihood: float, num_params: int, num_pairs: int) -> float:
    """Lower is better: AIC, BIC, or minus the held-out log-likelihood."""
    if criterion == "aic":
        return 2 * num_params - 2 * log_likelihood
    if criterion == "bic":
        return num_params * math.log(num_pairs) - 2 * log_likelihood
    return -log_likelihood


# --------------------------------------------------------------------------------------------------
# identify
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentificationResult:
    """The outcome of :func:`identify`.

    :param table: one row per fitted model, best first: ``model``, ``k`` (free parameters), ``params``
        (fitted, rater units), ``loglik`` (all pairs), ``heldout_loglik`` (cross-validated, per pair),
        ``accuracy`` (cross-validated, non-tie pairs), ``aic``, ``bic``, ``delta`` (criterion minus the
        winner's) and ``win_share`` (share of bootstrap resamples won; NaN without resamples).
    :param winner: the best model by ``criterion``.
    :param confidence: the winner's share of bootstrap resamples won (``None`` with ``bootstraps=0``).
    :param fits: the full-data fits by model name.
    :param skipped: models that could not be fitted, with the reason.
    """

    table: pd.DataFrame
    winner: str
    confidence: float | None
    criterion: str
    num_pairs: int
    tie_rate: float
    folds: int
    bootstraps: int
    fits: dict[str, ModelFit] = field(repr=False)
    skipped: dict[str, str] = field(default_factory=dict)
    generator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``inf``/NaN become ``None``)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float | np.floating):
                return float(value) if math.isfinite(value) else None
            if isinstance(value, np.integer):
                return int(value)
            return value

        rows = []
        for row in self.table.to_dict(orient="records"):
            name = row["model"]
            row = {key: clean(value) for key, value in row.items() if key != "params"}
            row["params"] = {k: clean(v) for k, v in self.fits[name].params.items()}
            row["at_bound"] = list(self.fits[name].at_bound)
            rows.append(row)
        return {
            "winner": self.winner,
            "confidence": clean(self.confidence) if self.confidence is not None else None,
            "criterion": self.criterion,
            "num_pairs": self.num_pairs,
            "tie_rate": clean(self.tie_rate),
            "folds": self.folds,
            "bootstraps": self.bootstraps,
            "generator": self.generator,
            "models": rows,
            "skipped": dict(self.skipped),
        }


def format_params(fit: ModelFit) -> str:
    """``beta=2.1, eps=0.098``; a ``beta`` at its upper bound shows as ``beta>=...`` (deterministic)."""
    parts = []
    for name, value in fit.params.items():
        op = ">=" if name in fit.at_bound else "="
        parts.append(f"{name}{op}{value:.4g}")
    return ", ".join(parts)


def resolve_models(models: Iterable[str] | str | None) -> list[str]:
    """Model names to fit: ``None`` = :data:`DEFAULT_MODELS`; a string is split at commas."""
    if models is None:
        return list(DEFAULT_MODELS)
    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models)]
    names = [m for m in names if m]
    if not names:
        raise RaterError("no preference model named; choose from: " + ", ".join(CANDIDATE_MODELS))
    for name in names:
        if name not in CANDIDATE_MODELS:
            raise RaterError(
                f"unknown preference model '{name}'{suggest(name, CANDIDATE_MODELS)}; "
                f"available: {', '.join(CANDIDATE_MODELS)}"
            )
    return list(dict.fromkeys(names))


def _as_dataset(
    dataset: PreferenceDataset | PreferenceBatch | str | Path, env_spec: EnvSpec | str | None
) -> tuple[PreferenceBatch, dict[str, Any]]:
    if isinstance(dataset, str | Path):
        dataset = load_dataset(dataset, env_spec)
    if isinstance(dataset, PreferenceDataset):
        return dataset.preferences, dataset.provenance
    if isinstance(dataset, PreferenceBatch):
        return dataset, {}
    raise TypeError(
        f"identify needs a dataset path, PreferenceDataset or PreferenceBatch, got {type(dataset)}"
    )


def _regret_scores(
    prefs: PreferenceBatch,
    provenance: Mapping[str, Any],
    env_spec: EnvSpec | str | None,
    value_fn: ValueFn | None,
) -> tuple[np.ndarray | None, str | None]:
    """``(regret score of every segment, None)`` or ``(None, why not)``."""
    spec = None
    if env_spec is not None:
        spec = load_env_spec(env_spec)
    elif provenance.get("params", {}).get("env") is not None:
        name = provenance["params"]["env"]
        try:
            spec = load_env_spec(name)
        except SpecError as e:
            if value_fn is None:
                return None, f"the dataset's env '{name}' cannot be loaded ({e}); pass its env spec"
    if value_fn is None and spec is None:
        return None, "no env spec and no value function: the regret statistic needs the env's oracle V*"
    if spec is not None:
        try:
            validate_segments(prefs.segments, spec)
        except ValueError as e:
            raise DatasetError(f"the pairs' segments do not match env '{spec.name}': {e}") from None
    try:
        rater = RegretRater(value_fn=value_fn, env_spec=spec)
    except (OracleError, RaterError) as e:
        return None, f"no oracle V* for env '{spec.name if spec else '?'}': {e}"
    return rater.score(prefs.segments), None


def identify(
    dataset: PreferenceDataset | PreferenceBatch | str | Path,
    env_spec: EnvSpec | str | None = None,
    models: Iterable[str] | str | None = None,
    folds: int = 5,
    bootstraps: int = 200,
    seed: int = 0,
    criterion: str = "bic",
    value_fn: ValueFn | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IdentificationResult:
    """Fit every candidate preference model to the labels and name the one that explains them best.

    :param dataset: a dataset file, a loaded :class:`~prefrl.datasets.PreferenceDataset` or a bare
        :class:`~prefrl.types.PreferenceBatch`.
    :param env_spec: the env (spec or name) for the regret statistic; default the dataset's env.
    :param models: model names (:data:`CANDIDATE_MODELS`), a list or ``"a,b"``; default
        :data:`DEFAULT_MODELS`. Models needing an oracle are skipped, with the reason, when there is none.
    :param folds: cross-validation folds (>= 2).
    :param bootstraps: bootstrap resamples of the pairs for the winner's confidence (0: none).
    :param seed: seeds the fold split and the resamples.
    :param criterion: ``bic`` (default), ``aic`` or ``heldout`` (cross-validated log-likelihood; the
        resamples then compare out-of-bag log-likelihoods).
    :param value_fn: ``V*`` for the regret statistic instead of the env's oracle.
    :param progress: called as ``progress(done, total)`` after every bootstrap resample.
    :raises RaterError: an unknown model name, or no model left to fit.
    :raises DatasetError: too few pairs for the folds, or segments that do not match the env.
    """
    names = resolve_models(models)
    if criterion not in CRITERIA:
        raise RaterError(f"unknown criterion '{criterion}'; choose from: {', '.join(CRITERIA)}")
    if not (isinstance(folds, int) and folds >= 2):
        raise DatasetError(f"folds must be an int >= 2, got {folds!r}")
    if not (isinstance(bootstraps, int) and bootstraps >= 0):
        raise DatasetError(f"bootstraps must be an int >= 0, got {bootstraps!r}")
    prefs, provenance = _as_dataset(dataset, env_spec)
    num_pairs = len(prefs)
    if num_pairs < 2 * folds:
        raise DatasetError(f"{num_pairs} labelled pairs are too few for {folds}-fold cross-validation")

    skipped: dict[str, str] = {}
    regret_scores = None
    if any(CANDIDATE_MODELS[n].needs_oracle for n in names):
        regret_scores, reason = _regret_scores(prefs, provenance, env_spec, value_fn)
        if reason is not None:
            skipped = {n: reason for n in names if CANDIDATE_MODELS[n].needs_oracle}
    fitted_names = [n for n in names if n not in skipped]
    if not fitted_names:
        raise RaterError(
            f"no preference model left to fit: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}"
        )
    # simpler models first: a tie on the criterion goes to the one with fewer parameters
    fitted_names.sort(key=lambda n: CANDIDATE_MODELS[n].num_params)

    stats = pair_statistics(prefs, regret_scores)
    labels = torch.as_tensor(prefs.labels, dtype=_DTYPE)
    rng = np.random.default_rng(seed)

    fits = {n: fit_model(CANDIDATE_MODELS[n], stats, labels) for n in fitted_names}
    heldout_ll, heldout_acc = _cross_validate(fits, stats, labels, folds, rng)

    def score(name: str, log_likelihood: float) -> float:
        return _criterion_value(criterion, log_likelihood, fits[name].model.num_params, num_pairs)

    full_scores = {
        n: -heldout_ll[n] if criterion == "heldout" else score(n, fits[n].log_likelihood)
        for n in fitted_names
    }
    winner = min(fitted_names, key=lambda n: full_scores[n])
    wins = _bootstrap_wins(fits, stats, labels, bootstraps, rng, score, criterion, progress)

    rows = []
    for n in fitted_names:
        fit, k = fits[n], fits[n].model.num_params
        rows.append(
            {
                "model": n,
                "k": k,
                "params": format_params(fit),
                "loglik": fit.log_likelihood,
                "heldout_loglik": heldout_ll[n] / num_pairs,
                "accuracy": heldout_acc[n],
                "aic": _criterion_value("aic", fit.log_likelihood, k, num_pairs),
                "bic": _criterion_value("bic", fit.log_likelihood, k, num_pairs),
                "delta": full_scores[n] - full_scores[winner],
                "win_share": wins[n] / bootstraps if bootstraps else float("nan"),
            }
        )
    table = pd.DataFrame(rows).sort_values("delta", kind="stable").reset_index(drop=True)
    return IdentificationResult(
        table=table,
        winner=winner,
        confidence=wins[winner] / bootstraps if bootstraps else None,
        criterion=criterion,
        num_pairs=num_pairs,
        tie_rate=prefs.tie_rate,
        folds=folds,
        bootstraps=bootstraps,
        fits=fits,
        skipped=skipped,
        generator=provenance.get("rater_spec"),
    )


def _cross_validate(
    fits: Mapping[str, ModelFit],
    stats: PairStatistics,
    labels: torch.Tensor,
    folds: int,
    rng: np.random.Generator,
) -> tuple[dict[str, float], dict[str, float]]:
    """Summed held-out log-likelihood and held-out accuracy of every model over a ``folds``-fold split."""
    fold_of = torch.as_tensor(rng.permutation(stats.num_pairs) % folds)
    total_ll, accuracy = {}, {}
    for name, full in fits.items():
        pair_ll = torch.empty_like(labels)
        prob = torch.empty_like(labels)
        for k in range(folds):
            held_out = fold_of == k
            fit = fit_model(full.model, stats, labels, weights=(~held_out).to(_DTYPE), start=full.raw)
            pair_ll[held_out] = _pair_log_likelihood(fit, stats, labels)[held_out]
            prob[held_out] = _probabilities(fit, stats)[held_out]
        total_ll[name] = float(pair_ll.sum())
        accuracy[name] = _accuracy(prob, labels)
    return total_ll, accuracy


def _bootstrap_wins(
    fits: Mapping[str, ModelFit],
    stats: PairStatistics,
    labels: torch.Tensor,
    bootstraps: int,
    rng: np.random.Generator,
    score: Callable[[str, float], float],
    criterion: str,
    progress: Callable[[int, int], None] | None,
) -> dict[str, int]:
    """How often each model wins on ``bootstraps`` resamples of the pairs (every model refitted)."""
    wins = dict.fromkeys(fits, 0)
    num_pairs = stats.num_pairs
    for b in range(bootstraps):
        counts = torch.as_tensor(
            rng.multinomial(num_pairs, np.full(num_pairs, 1.0 / num_pairs)), dtype=_DTYPE
        )
        out_of_bag = counts == 0
        scores = {}
        for name, full in fits.items():
            fit = fit_model(full.model, stats, labels, weights=counts, start=full.raw)
            if criterion == "heldout":
                scores[name] = -float(_pair_log_likelihood(fit, stats, labels)[out_of_bag].sum())
            else:
                scores[name] = score(name, fit.log_likelihood)
        wins[min(scores, key=scores.__getitem__)] += 1
        if progress is not None:
            progress(b + 1, bootstraps)
    return wins
