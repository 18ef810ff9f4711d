"""Rater diagnostics: how a rater's labels differ from the noise-free partial-return labels.

:func:`rate_report` collects segments from an env, samples pairs and triples, and reports per rater:
queries answered, tie share, skip share, agreement with the noise-free ``partial_return`` labels, the
measured cycle rate (intransitive triples) and the labelling throughput. :func:`format_report` prints it
as a table (``prefrl rate``). :func:`cycle_rate` works for any rater.

**Bounded memory.** Pairs are sampled and labelled in chunks of ``chunk_pairs`` (default
:data:`RATE_CHUNK_PAIRS`) and only running counts are kept, so ``num_pairs`` sets the time, not the
memory; the segments (and the triples of the cycle rate) are checked against the machine's memory before
they are collected. Pairs are drawn from one stream whatever the chunking, so a deterministic rater
(``beta = inf``, no ``mistake``/``stoc``) gives the same report for every chunk size; a noisy rater
draws its noise per chunk (a generator per chunk index), so its labels depend on the chunk size, which is
fixed by default rather than chosen from the machine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from prefrl.envs import load_env_spec
from prefrl.errors import ConfigError, OracleError
from prefrl.oracle import load_oracle
from prefrl.raters.base import Rater
from prefrl.raters.partial_return import PartialReturnRater
from prefrl.raters.registry import make_rater
from prefrl.segments import collect_segments, sample_triples
from prefrl.spec_utils import check_int, check_memory
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.raters.regret import QFn, ValueFn


__all__ = [
    "MAX_RATE_PAIRS",
    "RATE_CHUNK_PAIRS",
    "agreement",
    "cycle_rate",
    "format_report",
    "policy_segments",
    "rate_report",
]

#: pairs labelled at once by :func:`rate_report` (its memory is a few dozen bytes per pair of a chunk)
RATE_CHUNK_PAIRS = 100_000
#: the most pairs :func:`rate_report` labels (about a minute per rater per 10**9 pairs at best)
MAX_RATE_PAIRS = 10**10
#: the most triples for the cycle rate (they are labelled at once)
MAX_RATE_TRIPLES = 10**7
#: the most segments :func:`rate_report` collects
MAX_RATE_SEGMENTS = 10**6


def cycle_rate(rater: Rater, segments: SegmentBatch, triples: np.ndarray, rng: np.random.Generator) -> float:
    """Fraction of triples ``(a, b, c)`` on which the rater's strict labels form a cycle.

    Each triple is queried as ``(a, b)``, ``(b, c)``, ``(c, a)``; it is intransitive when all three labels
    are strict (not 0.5) and point the same way round the triangle (``a > b > c > a`` or the reverse).
    Triples with a skipped query are left out of the denominator.

    :param triples: ``[T, 3]`` segment indices (e.g. :func:`prefrl.segments.sample_triples`).
    :returns: cycles / triples with all three queries answered (0.0 if there are none).
    """
    triples = np.asarray(triples)
    if triples.ndim != 2 or triples.shape[1] != 3:
        raise ValueError(f"triples must be [T, 3], got shape {triples.shape}")
    a, b, c = triples[:, 0], triples[:, 1], triples[:, 2]
    pairs = np.concatenate([np.stack([a, b], 1), np.stack([b, c], 1), np.stack([c, a], 1)])
    labels, answered = rater.label_array(segments, pairs, rng)
    t = triples.shape[0]
    labels, answered = labels.reshape(3, t), answered.reshape(3, t)
    complete = answered.all(axis=0)
    with np.errstate(invalid="ignore"):  # NaN labels of skipped queries compare False
        strict = (labels != 0.5).all(axis=0)
        first_wins = labels > 0.5
    same_way = first_wins.all(axis=0) | (~first_wins).all(axis=0)
    cycles = complete & strict & same_way
    num_complete = int(complete.sum())
    return float(cycles.sum() / num_complete) if num_complete else 0.0


def agreement(labels: np.ndarray, reference: np.ndarray) -> float:
    """Mean ``1 - |y - y_ref|`` over pairs: 1 for the same strict label, 0.5 for a tie vs a strict one."""
    if labels.size == 0:
        return float("nan")
    return float(np.mean(1.0 - np.abs(labels - reference)))


def _throughput(rater: Rater, segments: SegmentBatch, pairs: np.ndarray, seed: int, repeats: int) -> float:
    """Pairs per second of ``rater.label`` alone (best of ``repeats``)."""
    best = float("inf")
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        start = time.perf_counter()
        rater.label(segments, pairs, rng)
        best = min(best, time.perf_counter() - start)
    return len(pairs) / max(best, 1e-9)


def policy_segments(
    spec: EnvSpec, policy: Any, num_segments: int, segment_length: int | None, seed: int
) -> SegmentBatch:
    """Segments from a named policy: ``random``, ``mixed``, ``oracle:<checkpoint>``, or any policy object.

    ``mixed`` splits the segments evenly between a random policy and every checkpoint of the env's oracle
    (worst to best); each segment's ``source`` is its policy's index (0 = random).
    """
    if isinstance(policy, str) and (policy == "mixed" or policy.startswith("oracle:")):
        oracle = load_oracle(spec)
        if policy == "mixed" and len(oracle.checkpoint_names) < 2:
            # without skill levels "mixed" would silently be random + expert only
            raise OracleError(
                f"policy 'mixed' needs the oracle's skill levels, but the {spec.name} oracle has none "
                "(its manifest lists no levels); use --policy random or oracle:expert, or retrain the oracle"
            )
        names = oracle.checkpoint_names if policy == "mixed" else [policy.split(":", 1)[1]]
        policies: list[Any] = (["random"] if policy == "mixed" else []) + [oracle.policy(n) for n in names]
        shares = np.array_split(np.arange(num_segments), len(policies))
        batches = [
            collect_segments(spec, p, len(share), segment_length, seed + k, source=k)
            for k, (p, share) in enumerate(zip(policies, shares, strict=True))
            if len(share)
        ]
        return SegmentBatch.concatenate(batches)
    return collect_segments(spec, policy, num_segments, segment_length, seed)


def rate_report(
    env_spec: EnvSpec | str,
    rater_specs: Sequence[str],
    num_pairs: int,
    policy: Any = "random",
    seed: int = 0,
    num_segments: int | None = None,
    num_triples: int | None = None,
    segment_length: int | None = None,
    repeats: int = 3,
    value_fn: ValueFn | None = None,
    q_fn: QFn | None = None,
    chunk_pairs: int = RATE_CHUNK_PAIRS,
) -> dict[str, Any]:
    """Label the same sampled pairs with every rater and compare them.

    :param env_spec: env spec or its name.
    :param rater_specs: rater spec strings (:func:`prefrl.raters.make_rater`); a single string is accepted.
    :param num_pairs: pairs to label (uniform over the collected segments).
    :param policy: rollout policy (see :func:`policy_segments`): ``"random"``, ``"mixed"`` (the oracle's
        skill-graded checkpoints and random, in equal shares), ``"oracle:<checkpoint>"``, a callable or an
        SB3 model.
    :param seed: seeds the rollouts, the pair/triple sampling and the raters' draws.
    :param num_segments: segments to collect (default ``clip(num_pairs // 5, 100, 1000)``).
    :param num_triples: triples for the cycle rate (default ``min(num_pairs, 10000)``).
    :param segment_length: ``H`` (default: the env spec's).
    :param repeats: timing repeats for the throughput (best is kept).
    :param value_fn: ``V*`` for regret raters (default: the registered oracle provider).
    :param q_fn: ``Q*`` for regret raters with ``form=advantage``.
    :param chunk_pairs: pairs labelled at once (module docstring: bounded memory).
    :raises ConfigError: a count out of range, or segments or triples that would not fit in memory.
    :returns: ``{"env", "policy", "seed", "num_segments", "segment_length", "num_pairs", "num_triples",
        "raters": [{"rater", "queries", "tie_share", "skip_share", "agreement", "cycle_rate",
        "pairs_per_s"}, ...]}`` (JSON-serialisable; ``agreement`` is ``None`` if nothing was answered).
    """
    spec = load_env_spec(env_spec)
    if isinstance(rater_specs, str):
        rater_specs = [rater_specs]
    num_pairs = check_int(num_pairs, "num_pairs", 1, MAX_RATE_PAIRS, error=ConfigError)
    chunk_pairs = check_int(chunk_pairs, "chunk_pairs", 1, None, error=ConfigError)
    repeats = check_int(repeats, "repeats", 1, 1000, error=ConfigError)
    # build every rater first so a typo fails before any env step
    raters = [make_rater(s, spec, value_fn=value_fn, q_fn=q_fn) for s in rater_specs]
    n = int(np.clip(num_pairs // 5, 100, 1000)) if num_segments is None else num_segments
    n = check_int(n, "num_segments", 3, MAX_RATE_SEGMENTS, error=ConfigError)
    t = min(num_pairs, 10_000) if num_triples is None else num_triples
    t = check_int(t, "num_triples", 1, MAX_RATE_TRIPLES, error=ConfigError)
    length = spec.segment_length if segment_length is None else segment_length
    length = check_int(length, "segment_length", 1, spec.horizon, error=ConfigError)
    per_step = sum(int(np.prod(s.shape or (1,))) for s in (spec.observation_space, spec.action_space))
    # segments: obs, next obs, actions, factors, reward and flags per step, float64
    check_memory(n * length * (2 * per_step + spec.num_factors + 4) * 8, f"{n:,} segments of {length} steps")
    # the cycle rate labels 3 pairs per triple at once (indices, labels and the rater's temporaries)
    check_memory(t * 3 * 96, f"{t:,} triples")

    segments = policy_segments(spec, policy, n, segment_length, seed)
    triples = sample_triples(segments.num_segments, t, np.random.default_rng([seed, 2]))
    pair_stream = np.random.default_rng([seed, 3])
    reference_rater = PartialReturnRater()
    totals = [{"answered": 0, "ties": 0, "agreement": 0.0} for _ in raters]
    first_chunk: np.ndarray | None = None
    for index, start in enumerate(range(0, num_pairs, chunk_pairs)):
        pairs = _draw_pairs(segments.num_segments, min(chunk_pairs, num_pairs - start), pair_stream)
        first_chunk = pairs if first_chunk is None else first_chunk
        reference, _ = reference_rater.label_array(segments, pairs, np.random.default_rng(seed))
        for rater, total in zip(raters, totals, strict=True):
            labels, answered = rater.label_array(segments, pairs, np.random.default_rng([seed, 1, index]))
            given = labels[answered]
            total["answered"] += int(answered.sum())
            total["ties"] += int(np.count_nonzero(given == 0.5))
            total["agreement"] += float(np.sum(1.0 - np.abs(given - reference[answered])))
    assert first_chunk is not None

    rows = []
    for spec_str, rater, total in zip(rater_specs, raters, totals, strict=True):
        queries = rater.num_queries
        answered = total["answered"]
        rows.append(
            {
                "rater": spec_str,
                "queries": int(queries),
                "tie_share": total["ties"] / answered if answered else 0.0,
                "skip_share": 1.0 - answered / num_pairs,
                "agreement": total["agreement"] / answered if answered else None,
                "cycle_rate": cycle_rate(rater, segments, triples, np.random.default_rng([seed, 2])),
                # timed on the first chunk: the rate per pair does not grow with num_pairs
                "pairs_per_s": _throughput(rater, segments, first_chunk, seed, repeats),
            }
        )
    return {
        "env": spec.name,
        "policy": policy if isinstance(policy, str) else type(policy).__name__,
        "seed": int(seed),
        "num_segments": int(segments.num_segments),
        "segment_length": int(segments.length),
        "num_pairs": int(num_pairs),
        "num_triples": int(t),
        "raters": rows,
    }


def _draw_pairs(num_segments: int, count: int, stream: np.random.Generator) -> np.ndarray:
    """``[count, 2]`` uniform pairs of distinct segments from two doubles each.

    Doubles are drawn one 64-bit output at a time, so drawing 10 + 10 pairs gives the same pairs as drawing
    20: the pairs do not depend on how :func:`rate_report` chunks them.
    """
    u = stream.random((count, 2))
    first = np.minimum((u[:, 0] * num_segments).astype(np.int64), num_segments - 1)
    second = np.minimum((u[:, 1] * (num_segments - 1)).astype(np.int64), num_segments - 2)
    second += second >= first  # uniform over the other n - 1 segments
    return np.stack([first, second], axis=1)


def format_report(report: dict[str, Any]) -> str:
    """A readable table of :func:`rate_report`'s result."""
    header = (
        f"env {report['env']}  policy {report['policy']}  seed {report['seed']}  "
        f"{report['num_segments']} segments x {report['segment_length']} steps  "
        f"{report['num_pairs']:,} pairs  {report['num_triples']:,} triples"
    )
    columns = ("rater", "queries", "ties", "skipped", "agree", "cycles", "pairs/s")
    body = []
    for row in report["raters"]:
        agree = "-" if row["agreement"] is None else f"{row['agreement']:.3f}"
        body.append(
            (
                row["rater"],
                f"{row['queries']:,}",
                f"{row['tie_share']:.3f}",
                f"{row['skip_share']:.3f}",
                agree,
                f"{row['cycle_rate']:.4f}",
                f"{row['pairs_per_s']:,.0f}",
            )
        )
    widths = [max(len(columns[i]), *(len(r[i]) for r in body)) if body else len(columns[i]) for i in range(7)]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = "  ".join(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
        return f"{first}  {rest}"

    rule = "-" * len(line(columns))
    notes = (
        "agree: mean 1 - |y - y_ref| vs noise-free partial_return on answered pairs (tie vs strict = 0.5); "
        "cycles: share of answered triples with a strict a>b>c>a cycle"
    )
    return "\n".join([header, rule, line(columns), rule, *(line(r) for r in body), rule, notes])
