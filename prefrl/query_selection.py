"""Query selection: which of the candidate pairs of segments to ask the rater about.

The rules of the preference-RL literature, as benchmarked by B-Pref (Lee et al. 2021), as pure functions
any reward-model agent can call. The caller draws and de-duplicates ``C`` candidate pairs (``[C, 2]``
segment indices), computes what the rule needs, and asks the rater about the pairs whose indices
:func:`select_queries` returns:

=========================  ========================================================================
rule                       picks
=========================  ========================================================================
``uniform``                a random subset
``disagreement``           the largest std across ensemble members of ``P_k(i > j)``
``entropy``                the largest mean over members of the binary entropy ``H(P_k(i > j))``
``kcenter``                greedy k-center on pair feature vectors, away from the labelled pairs
``kcenter_disagreement``   the top ``preselect_factor * quota`` by disagreement, then k-center
``kcenter_entropy``        the top ``preselect_factor * quota`` by entropy, then k-center
=========================  ========================================================================

``member_probs`` is ``[K, C]``, the members' predicted ``P_k(seg i preferred to seg j)`` of each candidate
(:meth:`prefrl.reward_model.RewardEnsemble.preference_probabilities`). The k-center rules compare pairs
by their :func:`pair_features`.
"""

from __future__ import annotations

import math

import numpy as np

from prefrl.errors import ConfigError, SpecError
from prefrl.spec_utils import suggest

__all__ = [
    "DEFAULT_PRESELECT_FACTOR",
    "SELECTION_RULES",
    "binary_entropy",
    "kcenter_greedy",
    "pair_features",
    "select_queries",
]

#: every rule :func:`select_queries` knows
SELECTION_RULES = ("uniform", "disagreement", "entropy", "kcenter", "kcenter_disagreement", "kcenter_entropy")

#: B-Pref draws ``large_batch = 10`` times the queries as candidates and keeps the uncertain half before
#: k-center, i.e. 5 times the queries
DEFAULT_PRESELECT_FACTOR = 5.0

_NEEDS_PROBS = {"disagreement", "entropy", "kcenter_disagreement", "kcenter_entropy"}
_NEEDS_FEATURES = {"kcenter", "kcenter_disagreement", "kcenter_entropy"}
# the member probabilities are clipped this far from 0 and 1 so that p log p stays finite
_PROB_EPS = 1e-12
# labelled pairs compared with all candidates per block (bounds the [C, block] distance matrix)
_LABELLED_BLOCK = 1024


def pair_features(segment_features: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The feature vector of each pair: both segments' per-step features, flattened and concatenated.

    ``phi(i, j) = [vec(x_i), vec(x_j)]`` with ``x_i`` the ``[H, D]`` per-step features of segment ``i``,
    so ``F = 2 H D``. This is B-Pref's k-center representation; B-Pref uses the observations only
    (no actions), which is ``prefrl.reward_model.segment_features("obs", segments)`` here. The vector
    depends on the order of the pair, as in B-Pref.

    :param segment_features: ``[N, H, D]`` per-step features of the segments
    :param pairs: ``[C, 2]`` indices into the segments
    :returns: ``[C, 2 H D]`` float32 (the distances are computed in float32: half the memory traffic per pick)
    """
    segment_features = np.asarray(segment_features)
    pairs = np.asarray(pairs)
    if segment_features.ndim != 3:
        raise ValueError(f"segment_features must be [N, H, D], got shape {segment_features.shape}")
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must be [C, 2], got shape {pairs.shape}")
    flat = segment_features.reshape(len(segment_features), -1).astype(np.float32, copy=False)
    return np.concatenate([flat[pairs[:, 0]], flat[pairs[:, 1]]], axis=1)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """``H(p) = -p log p - (1 - p) log(1 - p)`` in nats, elementwise (0 at p = 0 or 1, log 2 at 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), _PROB_EPS, 1.0 - _PROB_EPS)
    return -(p * np.log(p) + (1.0 - p) * np.log1p(-p))


def kcenter_greedy(
    features: np.ndarray, labelled: np.ndarray, num: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedy k-center: ``num`` row indices of ``features``, each farthest from the labelled and picked.

    Pick ``argmax_c min_{y in L u S} ||phi_c - y||_2`` one at a time, where ``L`` are the labelled pairs'
    vectors and ``S`` those picked so far (B-Pref's ``KCenterGreedy``). A running minimum distance per
    candidate is updated after each pick, so a pick costs ``O(C F)`` (in float32, as
    ``|a|^2 + |b|^2 - 2 a.b``). Ties go to the lower index. With
    nothing labelled the first pick is uniform at random (``rng``): B-Pref never runs k-center then, it asks
    its first batch uniformly.

    :param features: ``[C, F]`` candidate vectors
    :param labelled: ``[L, F]`` labelled vectors, ``L`` may be 0
    :param num: how many to pick, ``<= C``
    :returns: ``[num]`` int64 indices in the order picked
    """
    x = np.asarray(features, dtype=np.float32)
    sq_norms = np.einsum("cf,cf->c", x, x)
    min_sq = np.full(len(x), np.inf, dtype=np.float32)
    # ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product per block instead of a [C, L, F] difference
    for start in range(0, len(labelled), _LABELLED_BLOCK):
        block = np.asarray(labelled[start : start + _LABELLED_BLOCK], dtype=np.float32)
        sq = sq_norms[:, None] + np.einsum("lf,lf->l", block, block)[None, :] - 2.0 * (x @ block.T)
        min_sq = np.minimum(min_sq, sq.min(axis=1))
    picked = np.empty(num, dtype=np.int64)
    for k in range(num):
        c = int(rng.integers(len(x))) if k == 0 and len(labelled) == 0 else int(np.argmax(min_sq))
        picked[k] = c
        min_sq = np.minimum(min_sq, sq_norms + sq_norms[c] - 2.0 * (x @ x[c]))
        min_sq[picked[: k + 1]] = -np.inf  # never again, even when duplicates leave every distance at 0
    return picked


def _top(scores: np.ndarray, num: int) -> np.ndarray:
    """Indices of the ``num`` largest ``scores``, largest first; ties keep candidate order."""
    return np.argsort(-scores, kind="stable")[:num]


def select_queries(
    rule: str,
    candidates: np.ndarray,
    quota: int,
    rng: np.random.Generator,
    *,
    member_probs: np.ndarray | None = None,
    pair_features: np.ndarray | None = None,
    labelled_features: np.ndarray | None = None,
    preselect_factor: float = DEFAULT_PRESELECT_FACTOR,
) -> np.ndarray:
    """Indices into ``candidates`` of the ``min(quota, C)`` distinct pairs to ask, in selection order.

    With ``p_kc`` member ``k``'s predicted probability that candidate ``c``'s first segment is preferred:

    * ``uniform``: a uniformly random subset (``rng``).
    * ``disagreement``: the largest ``std_k p_kc`` (population std; needs ``K >= 2``).
    * ``entropy``: the largest ``mean_k H(p_kc)``, ``H`` the binary entropy (:func:`binary_entropy`). As in
      B-Pref this is the members' mean entropy, not the entropy of the mean prediction: a pair on which
      confident members contradict each other scores low.
    * ``kcenter``: :func:`kcenter_greedy` on ``pair_features`` against ``labelled_features``.
    * ``kcenter_disagreement`` / ``kcenter_entropy``: keep the
      ``m = min(C, max(quota, ceil(preselect_factor * quota)))`` candidates with the largest disagreement /
      entropy, then k-center among those (B-Pref's order: uncertainty first, coverage second).

    Ties in the uncertainty scores keep candidate order (a stable sort).

    :param rule: one of :data:`SELECTION_RULES`
    :param candidates: ``[C, 2]`` de-duplicated segment index pairs
    :param quota: how many to ask (``>= 0``)
    :param rng: randomness of ``uniform`` and of a k-center first pick with nothing labelled
    :param member_probs: ``[K, C]`` member probabilities (the uncertainty rules)
    :param pair_features: ``[C, F]`` candidate pair vectors, :func:`pair_features` (the k-center rules)
    :param labelled_features: ``[L, F]`` vectors of the pairs labelled so far, ``[0, F]`` if none (k-center)
    :param preselect_factor: candidates kept per query before k-center, ``>= 1``
    :returns: ``[min(quota, C)]`` int64 indices into ``candidates``
    :raises SpecError: an unknown rule, or disagreement with fewer than 2 members
    :raises ConfigError: ``preselect_factor < 1``
    :raises ValueError: an input the rule needs is missing or has the wrong shape (a bug in the caller)
    """
    if rule not in SELECTION_RULES:
        raise SpecError(
            f"unknown query selection rule {rule!r}{suggest(rule, SELECTION_RULES)}; "
            f"choose from {', '.join(SELECTION_RULES)}"
        )
    candidates = np.asarray(candidates)
    if candidates.ndim != 2 or candidates.shape[1] != 2:
        raise ValueError(f"candidates must be [C, 2], got shape {candidates.shape}")
    if quota < 0:
        raise ValueError(f"quota must be >= 0, got {quota}")
    num_candidates = len(candidates)
    num = min(quota, num_candidates)
    probs = _check_probs(rule, member_probs, num_candidates)
    features, labelled = _check_features(rule, pair_features, labelled_features, num_candidates)
    if rule in ("kcenter_disagreement", "kcenter_entropy") and not preselect_factor >= 1:
        raise ConfigError(f"preselect_factor must be >= 1, got {preselect_factor}")
    if num == 0:
        return np.empty(0, dtype=np.int64)

    if rule == "uniform":
        return rng.choice(num_candidates, size=num, replace=False).astype(np.int64)
    if rule == "kcenter":
        return kcenter_greedy(features, labelled, num, rng)
    scores = probs.std(axis=0) if "disagreement" in rule else binary_entropy(probs).mean(axis=0)
    if rule in ("disagreement", "entropy"):
        return _top(scores, num).astype(np.int64)
    keep = _top(scores, min(num_candidates, max(num, math.ceil(preselect_factor * num))))
    return keep[kcenter_greedy(features[keep], labelled, num, rng)].astype(np.int64)


def _check_probs(rule: str, member_probs: np.ndarray | None, num_candidates: int) -> np.ndarray | None:
    if rule not in _NEEDS_PROBS:
        return None
    if member_probs is None:
        raise ValueError(f"query selection {rule!r} needs member_probs ([K, C] member probabilities)")
    probs = np.asarray(member_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != num_candidates:
        raise ValueError(f"member_probs must be [K, {num_candidates}], got shape {probs.shape}")
    if "disagreement" in rule and probs.shape[0] < 2:
        raise SpecError(
            f"query selection {rule!r} needs a reward-model ensemble (ensemble_size >= 2), "
            f"got ensemble_size={probs.shape[0]}"
        )
    return probs


def _check_features(
    rule: str, pair_feats: np.ndarray | None, labelled: np.ndarray | None, num_candidates: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if rule not in _NEEDS_FEATURES:
        return None, None
    if pair_feats is None or labelled is None:
        raise ValueError(
            f"query selection {rule!r} needs pair_features [C, F] and labelled_features [L, F] "
            "(an empty [0, F] array when nothing is labelled yet)"
        )
    pair_feats, labelled = np.asarray(pair_feats), np.asarray(labelled)
    if pair_feats.ndim != 2 or len(pair_feats) != num_candidates:
        raise ValueError(f"pair_features must be [{num_candidates}, F], got shape {pair_feats.shape}")
    if labelled.ndim != 2 or labelled.shape[1] != pair_feats.shape[1]:
        raise ValueError(f"labelled_features must be [L, {pair_feats.shape[1]}], got shape {labelled.shape}")
    return pair_feats, labelled
