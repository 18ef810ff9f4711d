"""The end-of-run evaluation a study reports: many deterministic episodes on fixed, held-out start states.

The evaluations in ``progress.csv`` follow training (a few episodes every ``eval_freq`` steps, start
states seeded from the run seed) and make the learning curve. A final score needs more episodes: one
HalfCheetah policy scored 6,070 on 5 episodes and 5,517 +- 1,602 on 10 others. :func:`evaluate_final`
loads a finished run's saved policy (the agent's safe loader: nothing is unpickled) and runs
``episodes`` (default :data:`DEFAULT_EPISODES`) deterministic episodes whose start states come from
:data:`FINAL_EVAL_SEED`: the same start states for every run, agent and seed, so all are scored on one
test set, and disjoint from the training envs (seeded ``seed + i``) and the progress evaluations
(``seed + 1_000_003 + i``) for any run seed below ``FINAL_EVAL_SEED - 1_000_003 - 64``.

The result goes to ``final_eval.json`` in the run directory (written atomically; plain JSON). It is
evaluated once: a later call with the same episodes and seed reads it back, so
:func:`evaluate_final_runs` over a sweep resumes where it stopped. :mod:`prefrl.analysis` uses it as the
run's final score where present (:func:`prefrl.analysis.final_scores`); ``prefrl evaluate DIR`` is the
command.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prefrl.errors import PrefrlError, RunDirError
from prefrl.evaluation import episode_returns
from prefrl.render import load_policy
from prefrl.run_dir import is_done, write_json

__all__ = [
    "DEFAULT_EPISODES",
    "FINAL_EVAL_FILE",
    "FINAL_EVAL_SEED",
    "FinalEval",
    "evaluate_final",
    "evaluate_final_runs",
    "read_final_eval",
]

#: the file in the run directory
FINAL_EVAL_FILE = "final_eval.json"
#: episodes of the final evaluation unless told otherwise (the study's minimum)
DEFAULT_EPISODES = 20
#: seed of the first final-evaluation episode (episode ``k`` starts from ``FINAL_EVAL_SEED + k``)
FINAL_EVAL_SEED = 1_500_000_000
#: most episodes of one final evaluation (they run in lockstep, one env each)
MAX_EPISODES = 1_000


@dataclass(frozen=True)
class FinalEval:
    """One run's final evaluation (the contents of ``final_eval.json``).

    :param episodes: deterministic episodes run
    :param seed: start seed of the first episode (episode ``k``: ``seed + k``)
    :param returns: each episode's true undiscounted return
    :param mean: mean of ``returns``
    :param std: their standard deviation (``ddof=0``, as progress.csv)
    :param normalised_score: ``mean`` normalised with the run's env spec anchors (NaN without them)
    :param env: the env spec name
    """

    episodes: int
    seed: int
    returns: list[float]
    mean: float
    std: float
    normalised_score: float
    env: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # JSON has no NaN: an env without anchors stores null
        data["normalised_score"] = None if math.isnan(self.normalised_score) else self.normalised_score
        return data


def read_final_eval(run_dir: str | Path) -> FinalEval | None:
    """The run's ``final_eval.json``, or ``None`` if it has none.

    :raises RunDirError: the file exists but is not a final evaluation (not JSON, fields missing or of the
        wrong type, returns that do not match the episode count)
    """
    path = Path(run_dir) / FINAL_EVAL_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({' '.join(str(e).split())[:100]})") from None
    try:
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        score = data["normalised_score"]
        returns = [float(r) for r in data["returns"]]
        result = FinalEval(
            episodes=_plain_int(data["episodes"]),
            seed=_plain_int(data["seed"]),
            returns=returns,
            mean=float(data["mean"]),
            std=float(data["std"]),
            normalised_score=math.nan if score is None else float(score),
            env=str(data["env"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{path}: not a final evaluation ({type(e).__name__}: {e})") from None
    if result.episodes != len(returns) or not np.isfinite(returns).all():
        raise RunDirError(f"{path}: {len(returns)} finite returns expected {result.episodes}")
    return result


def _readable_final_eval(run_dir: Path) -> FinalEval | None:
    try:
        return read_final_eval(run_dir)
    except RunDirError:
        return None


def _plain_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def evaluate_final(
    run_dir: str | Path,
    episodes: int = DEFAULT_EPISODES,
    seed: int = FINAL_EVAL_SEED,
    force: bool = False,
    trust: bool = False,
) -> FinalEval:
    """Evaluate a finished run's policy on ``episodes`` held-out episodes; write and return the result.

    An existing ``final_eval.json`` with the same ``episodes`` and ``seed`` is returned as it is (unless
    ``force``); one with others is replaced.

    :param trust: see :func:`prefrl.render.load_policy` (runs saved before prefrl's safe policy files)
    :raises RunDirError: ``run_dir`` is not a finished run (no ``done`` marker or no policy)
    :raises ValueError: ``episodes`` outside ``[1, MAX_EPISODES]`` or a negative ``seed``
    """
    _check_settings(episodes, seed)
    return _evaluate_final(Path(run_dir), episodes, seed, force, trust)[0]


def _check_settings(episodes: int, seed: int) -> None:
    if isinstance(episodes, bool) or not 1 <= int(episodes) <= MAX_EPISODES:
        raise ValueError(f"episodes must be in [1, {MAX_EPISODES}], got {episodes}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _evaluate_final(
    run_dir: Path, episodes: int, seed: int, force: bool, trust: bool
) -> tuple[FinalEval, bool]:
    """:func:`evaluate_final`'s work; also says whether the result was read back (``True``) or evaluated."""
    if not is_done(run_dir):
        raise RunDirError(f"{run_dir} is not a finished run (no done marker): nothing to evaluate yet")
    if not force:
        existing = _readable_final_eval(run_dir)  # a damaged file is evaluated again and overwritten
        if existing is not None and existing.episodes == episodes and existing.seed == seed:
            return existing, True
    spec, predict = load_policy(run_dir, trust=trust)
    returns = episode_returns(predict, spec, int(episodes), int(seed))
    mean = float(returns.mean())
    result = FinalEval(
        episodes=int(episodes),
        seed=int(seed),
        returns=[float(r) for r in returns],
        mean=mean,
        std=float(returns.std()),
        normalised_score=float(spec.normalise(mean)) if spec.has_normalisation else math.nan,
        env=spec.name,
    )
    write_json(run_dir / FINAL_EVAL_FILE, result.to_json())
    return result, False


@dataclass(frozen=True)
class FinalEvalOutcome:
    """What :func:`evaluate_final_runs` did with one run directory: its result, or why there is none."""

    run_dir: Path
    result: FinalEval | None = None
    error: str | None = None
    #: the result was read back from an earlier evaluation with the same settings
    reused: bool = False


def finished_run_dirs(roots: Iterable[str | Path]) -> list[Path]:
    """Every finished run directory (``done`` marker) under ``roots`` (or a root itself), sorted."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise RunDirError(f"{root}: no such directory")
        found.update(p.parent for p in [root / "done", *root.rglob("done")] if p.is_file())
    return sorted(found)


def evaluate_final_runs(
    roots: Iterable[str | Path],
    episodes: int = DEFAULT_EPISODES,
    seed: int = FINAL_EVAL_SEED,
    force: bool = False,
    trust: bool = False,
) -> Iterator[FinalEvalOutcome]:
    """:func:`evaluate_final` on every finished run under ``roots``, one at a time (a generator, so a
    caller can report progress; runs already evaluated with these settings are read back, not rerun).

    A run that cannot be evaluated (its policy unreadable, its agent unknown here) yields its error and
    the others go on; bugs raise.
    """
    _check_settings(episodes, seed)
    for run_dir in finished_run_dirs(roots):
        try:
            result, reused = _evaluate_final(run_dir, episodes, seed, force, trust)
            yield FinalEvalOutcome(run_dir, result, reused=reused)
        except PrefrlError as e:
            yield FinalEvalOutcome(run_dir, error=str(e))
