"""Confusion table of `prefrl identify`: is each simulated rater identified as itself on real segments?

For each env, one pool of segments and pairs is built from the env's oracle with
:func:`prefrl.datasets.build_dataset` (every skill level and the expert, action noise 0.3, 64-step
segments, 6,000 random pairs; cached). The same pairs are then labelled by each generator rater
(fixed seed) and :func:`prefrl.identify.identify` fits the default candidate models
(stoc, partial_return, myopic, regret, mistake) with 5-fold cross-validation and 200 bootstrap
resamples. Finite ``beta`` values are set relative to the spread ``s`` of the pool's return differences
(``1/s`` and ``5/s`` for partial_return, ``2/s`` for stoc), so the labels are neither coin flips nor
deterministic in every env. Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/identify_confusion.py [--envs pendulum,halfcheetah]
        [--pairs 6000] [--bootstraps 200] [--out results/identify]

writes ``confusion.csv`` (one row per env and generator: expected and selected model, bootstrap
confidence, every candidate's share of resamples won, true and fitted parameters, whether the
parameters landed within tolerance) and ``README.md`` (the tables and this command).

``--study`` labels the same pairs with the benchmark study's ten raters instead (default parameters:
partial_return, regret, stoc, mistake, skip, equal, myopic, intransitive, non_markovian, panel) and
writes ``results/study/identify/``: which candidate explains each rater's labels best, and how surely.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import torch

from prefrl.datasets import build_dataset, load_dataset
from prefrl.envs import load_env_spec
from prefrl.identify import DEFAULT_MODELS, format_params, identify
from prefrl.raters import make_rater
from prefrl.spec_utils import PROJECT_ROOT
from prefrl.types import PreferenceBatch

#: episodes per env: about 1,200 segments of 64 steps each (Pendulum 3 per episode, MuJoCo 15)
EPISODES = {"pendulum": 400, "halfcheetah": 80}
#: tolerances of the recovered parameters: relative for beta, absolute otherwise
TOLERANCE = {"beta": 0.2, "eps": 0.02, "gamma": 0.05, "discount": 0.05}


@dataclass(frozen=True)
class Generator:
    """A labelling rater, the candidate it should be identified as, and the parameters to recover."""

    spec: str
    expected: str
    truth: dict[str, float]


def significant(x: float, digits: int = 2) -> float:
    return float(f"{x:.{digits - 1}e}")


def generators(spread: float) -> list[Generator]:
    """The generators; ``spread`` = std of the pool's return differences (sets the finite betas)."""
    low, high, stoc = (significant(c / spread) for c in (1.0, 5.0, 2.0))
    return [
        Generator(f"partial_return:beta={low:g}", "stoc", {"beta": low}),
        Generator(f"partial_return:beta={high:g}", "stoc", {"beta": high}),
        Generator(f"stoc:beta={stoc:g}", "stoc", {"beta": stoc}),
        Generator("partial_return:discount=0.95", "partial_return", {"discount": 0.95}),
        Generator("regret", "regret", {}),
        Generator("myopic:gamma=0.9", "myopic", {"gamma": 0.9}),
        Generator("mistake:eps=0.1", "mistake", {"eps": 0.1}),
    ]


#: the benchmark study's raters with their default parameters, and the candidate each is an instance of
#: (``""``: none of the candidates contains it; the table then shows which model explains it best). The
#: noise-free partial_return is ``stoc`` with an unbounded beta: the same likelihood with fewer parameters
STUDY_RATERS = {
    "partial_return": "stoc",
    "regret": "regret",
    "stoc": "stoc",
    "mistake": "mistake",
    "skip": "",
    "equal": "",
    "myopic": "myopic",
    "intransitive": "",
    "non_markovian": "",
    "panel": "",
}


def study_generators(spread: float) -> list[Generator]:
    """The study's ten raters as they label in the study (defaults; ``spread`` is not used)."""
    return [Generator(spec, expected, {}) for spec, expected in STUDY_RATERS.items()]


def within(name: str, fitted: float, truth: float) -> bool:
    if name == "beta":
        return abs(fitted - truth) <= TOLERANCE["beta"] * truth
    return abs(fitted - truth) <= TOLERANCE[name]


def pool(env: str, num_pairs: int, seed: int) -> PreferenceBatch:
    """The env's segments and pairs (labels of the noise-free partial_return rater, replaced below)."""
    path = build_dataset(
        env, "partial_return", episodes=EPISODES.get(env, 100), pairs=num_pairs, seed=seed, return_episodes=0
    )
    return load_dataset(path).preferences


def run_env(env: str, num_pairs: int, bootstraps: int, seed: int, study: bool = False) -> list[dict]:
    spec = load_env_spec(env)
    start = time.perf_counter()
    base = pool(env, num_pairs, seed)
    built = time.perf_counter() - start
    print(f"{env}: {base.segments.num_segments} segments, {len(base)} pairs ({built:.0f} s)")
    returns = base.segments.returns
    spread = float(np.std(returns[base.pairs[:, 0]] - returns[base.pairs[:, 1]]))
    rows = []
    for gen in (study_generators if study else generators)(spread):
        start = time.perf_counter()
        rater = make_rater(gen.spec, spec)
        prefs = rater.label(base.segments, base.pairs, np.random.default_rng(seed + 1))
        result = identify(prefs, env_spec=spec, folds=5, bootstraps=bootstraps, seed=seed)
        fit = result.fits[result.winner]
        expected_fit = result.fits.get(gen.expected) if gen.expected else None
        checks = {
            name: within(name, expected_fit.params[name], truth) if expected_fit else False
            for name, truth in gen.truth.items()
        }
        shares = dict(zip(result.table["model"], result.table["win_share"], strict=True))
        row = {
            "env": env,
            "generator": gen.spec,
            "expected": gen.expected,
            "winner": result.winner,
            "selected": result.winner == gen.expected if gen.expected else None,
            "confidence": result.confidence,
            **{f"share_{m}": shares.get(m, float("nan")) for m in DEFAULT_MODELS},
            "truth": ", ".join(f"{k}={v:g}" for k, v in gen.truth.items()),
            "fitted": format_params(expected_fit) if expected_fit else "",
            "winner_params": format_params(fit),
            "params_ok": all(checks.values()) if gen.expected else None,
            "pairs": result.num_pairs,
            "tie_rate": result.tie_rate,
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(
            f"  {gen.spec:<32} -> {result.winner:<15} ({result.confidence:.0%})  fitted {row['fitted']}"
            f"  truth {row['truth'] or '-'}  ok={row['params_ok']}  winner {row['winner_params']}"
            f"  {row['seconds']} s",
            flush=True,
        )
    return rows


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_readme(frame: pd.DataFrame, out: str, command: str, bootstraps: int, seconds: float) -> None:
    shares = frame[["env", "generator", "expected"] + [f"share_{m}" for m in DEFAULT_MODELS]].copy()
    for m in DEFAULT_MODELS:
        shares[f"share_{m}"] = shares[f"share_{m}"].map(lambda v: "-" if pd.isna(v) else f"{v:.0%}")
    shares.columns = ["env", "generator", "expected", *DEFAULT_MODELS]
    params = frame[["env", "generator", "winner", "confidence", "truth", "fitted", "params_ok"]].copy()
    params["confidence"] = params["confidence"].map("{:.0%}".format)
    params["truth"] = params["truth"].replace("", "-")
    selected, ok = int(frame["selected"].sum()), int(frame["params_ok"].sum())
    text = f"""# Preference-model identification: confusion table

`prefrl identify` (`prefrl/identify.py`) on labels from known simulated raters. Per env, one pool of
segments from the env's oracle (every skill level and the expert, action noise 0.3, 64-step segments)
and {frame["pairs"].iloc[0]:,} random pairs; each generator labels the same pairs. The default candidates
(stoc, partial_return, myopic, regret, mistake) are fitted by maximum likelihood, compared by BIC, with
5-fold cross-validation and {bootstraps} bootstrap resamples of the pairs. Finite betas are set from the
spread `s` of the pool's return differences: partial_return `1/s` and `5/s`, stoc `2/s`. The expected
model is the simplest candidate containing the generator (a plain `partial_return` with a finite beta is
`stoc`). Tolerances: beta within 20%, eps within 0.02, gamma and discount within 0.05 (measured on the
expected model's fit). `beta>=x` marks a beta at the top of its range (labels deterministic under the model).

**Generator selected: {selected}/{len(frame)}. Parameters within tolerance: {ok}/{len(frame)}.**
Total time {seconds / 60:.1f} min on one thread.

## Share of bootstrap resamples won by each candidate

{markdown(shares)}

## Fitted parameters vs truth

{markdown(params)}

Full rows (log-likelihood columns not included; see `prefrl identify --json` on a dataset for those):
`confusion.csv`.

## Command

```
{command}
```
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


def write_study_readme(frame: pd.DataFrame, out: str, command: str, bootstraps: int, seconds: float) -> None:
    """The study's table: which candidate model best explains each study rater's labels."""
    columns = ["env", "generator", "expected", "winner", "confidence", "winner_params", "tie_rate"]
    table = frame[columns].copy()
    table["expected"] = table["expected"].replace("", "(none)")
    table["confidence"] = table["confidence"].map("{:.0%}".format)
    table["tie_rate"] = table["tie_rate"].map("{:.3f}".format)
    shares = frame[["env", "generator"] + [f"share_{m}" for m in DEFAULT_MODELS]].copy()
    for m in DEFAULT_MODELS:
        shares[f"share_{m}"] = shares[f"share_{m}"].map(lambda v: "-" if pd.isna(v) else f"{v:.0%}")
    shares.columns = ["env", "rater", *DEFAULT_MODELS]
    known = frame[frame["expected"] != ""]
    text = f"""# Which preference model explains each study rater's labels (`prefrl identify`)

The benchmark study's ten raters, with their default parameters, label the same {frame["pairs"].iloc[0]:,}
random pairs of oracle segments per env (every skill level and the expert, action noise 0.3, 64-step
segments). `prefrl identify` fits the default candidates (stoc, partial_return, myopic, regret, mistake)
by maximum likelihood and compares them by BIC, with 5-fold cross-validation and {bootstraps} bootstrap
resamples; `confidence` is the winner's share of the resamples. `expected` is the candidate the rater is
an instance of; skip, equal, intransitive, non_markovian and panel are none of them, and the table shows
which model explains them best. **Raters that are candidates identified as themselves:
{int(known["selected"].sum())}/{len(known)}.** Total time {seconds / 60:.1f} min on one thread.

## Selected model

{markdown(table)}

## Share of bootstrap resamples won by each candidate

{markdown(shares)}

## Command

```
{command}
```
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", default="pendulum,halfcheetah")
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--bootstraps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="default: results/identify or results/study/identify")
    parser.add_argument(
        "--study",
        action="store_true",
        help="label with the benchmark study's ten raters (default parameters) instead of the generators",
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = str(PROJECT_ROOT / "results" / ("study/identify" if args.study else "identify"))
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for env in args.envs.split(","):
        rows += run_env(env, args.pairs, args.bootstraps, args.seed, study=args.study)
    frame = pd.DataFrame(rows)
    os.makedirs(args.out, exist_ok=True)
    frame.to_csv(os.path.join(args.out, "confusion.csv"), index=False, float_format="%.6g")
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/identify_confusion.py " + " ".join(sys.argv[1:])
    seconds = time.perf_counter() - start
    if args.study:
        write_study_readme(frame, args.out, command.strip(), args.bootstraps, seconds)
        return 0
    write_readme(frame, args.out, command.strip(), args.bootstraps, seconds)
    selected, ok = int(frame["selected"].sum()), int(frame["params_ok"].sum())
    print(f"selected {selected}/{len(frame)}, params ok {ok}/{len(frame)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
