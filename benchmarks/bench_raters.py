"""Rater labelling throughput on 50-step segments (target: >= 1,000,000 pairs/s).

A pool of synthetic segments with the env spec's dimensions (reward = the sum of the factor utilities,
as in the real envs) is labelled in one ``rater.label`` call per repeat; the best of the repeats is
reported, single-threaded. Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_raters.py [--env pendulum] [--segments 20000]
        [--pairs 1000000] [--repeats 5] [--raters partial_return mistake ...]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from prefrl.envs import load_env_spec
from prefrl.raters import make_rater
from prefrl.types import SegmentBatch

DEFAULT_RATERS = (
    "partial_return",
    "mistake",
    "intransitive",
    "stoc",
    "skip",
    "equal",
    "myopic",
    "myopic+stoc+mistake",
    "non_markovian",
    "hierarchical",
    "panel",
    "panel:mode=majority",
    "intransitive+mistake+skip",
)


def synthetic_segments(env: str, num_segments: int, length: int, seed: int = 0) -> SegmentBatch:
    """Random segments shaped like ``env``'s (obs/act dims, factors); reward = sum of utilities."""
    spec = load_env_spec(env)
    rng = np.random.default_rng(seed)
    obs_dim = spec.observation_space.shape[0]
    act_dim = spec.action_space.shape[0]
    factors = rng.random((num_segments, length, spec.num_factors))
    return SegmentBatch(
        obs=rng.standard_normal((num_segments, length, obs_dim)).astype(np.float32),
        act=rng.uniform(-1, 1, (num_segments, length, act_dim)).astype(np.float32),
        reward=spec.reward_from_factors(factors),
        factors=factors,
        dones=np.zeros((num_segments, length), dtype=bool),
        next_obs=rng.standard_normal((num_segments, obs_dim)).astype(np.float32),
    )


def random_pairs(num_segments: int, num_pairs: int, seed: int = 0) -> np.ndarray:
    """``[num_pairs, 2]`` uniform pairs of distinct segment indices (repeats allowed across pairs)."""
    rng = np.random.default_rng(seed)
    first = rng.integers(num_segments, size=num_pairs)
    second = (first + 1 + rng.integers(num_segments - 1, size=num_pairs)) % num_segments
    return np.stack([first, second], axis=1)


def time_rater(spec_str: str, env: str, segments: SegmentBatch, pairs: np.ndarray, repeats: int) -> dict:
    """Best-of-``repeats`` wall time of one ``label`` call over all pairs."""
    rater = make_rater(spec_str, env)
    times = []
    answered = 0
    for r in range(repeats):
        rng = np.random.default_rng(r)
        start = time.perf_counter()
        prefs = rater.label(segments, pairs, rng)
        times.append(time.perf_counter() - start)
        answered = len(prefs)
    best = min(times)
    return {"rater": spec_str, "seconds": best, "pairs_per_s": len(pairs) / best, "answered": answered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="pendulum")
    parser.add_argument("--segments", type=int, default=20_000)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--raters", nargs="+", default=list(DEFAULT_RATERS))
    args = parser.parse_args()

    segments = synthetic_segments(args.env, args.segments, args.length)
    pairs = random_pairs(args.segments, args.pairs)

    print(
        f"env={args.env} segments={args.segments}x{args.length} pairs={args.pairs:,} "
        f"repeats={args.repeats} (best), OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    print(f"{'rater':<28} {'ms / call':>10} {'pairs/s':>14} {'answered':>10}  target")
    for spec_str in args.raters:
        row = time_rater(spec_str, args.env, segments, pairs, args.repeats)
        ok = "ok" if row["pairs_per_s"] >= 1e6 else "BELOW 1e6"
        print(
            f"{row['rater']:<28} {1e3 * row['seconds']:>10.1f} {row['pairs_per_s']:>14,.0f} "
            f"{row['answered']:>10,}  {ok}"
        )


if __name__ == "__main__":
    main()
