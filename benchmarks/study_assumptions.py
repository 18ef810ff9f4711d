"""The study's part 3: how well each learner recovers true-return behaviour under each label-generating rater.

Reads the per-run final scores the other parts commit (``results/study/<part>_runs.csv``, written by
``benchmarks/study.py``; ``results/offline/halfcheetah_runs.csv`` by ``benchmarks/offline_assumptions.py``)
and writes ``results/study/assumptions.md`` and ``.csv``::

    .venv/bin/python benchmarks/study_assumptions.py

No training: it only aggregates, so it runs in seconds and can be rerun whenever a part gains runs.
What it writes, per env:

* **scores**: IQM of the final normalised score over seeds with its 95% stratified-bootstrap CI, one row
  per rater, one column per learner, grouped by the preference model the learner assumes;
* **Q1, SPO vs a reward model**: for each rater R of :data:`ROBUSTNESS_RATERS`, each learner's drop from
  its ``partial_return`` score, and SPO's drop minus the reward-model learner's drop (a difference of
  IQM differences, :func:`prefrl.analysis.iqm_contrast`; negative: SPO loses less), with P(SPO > it);
* **Q2, CPL vs P-IQL**: IQM(cpl) - IQM(p_iql) and P(cpl > p_iql) under ``regret`` and ``partial_return``
  labels, and the change between the two;
* **Q3, what each B-Pref teacher costs**: IQM under ``partial_return`` minus IQM under the teacher;
* **the headline table** of ``results/README.md`` (the study's front page): Pendulum's scores by rater and
  learner, written between the page's ``<!-- headline -->`` and ``<!-- /headline -->`` markers
  (``--front-page``), so the front page never drifts from the committed per-run scores.

Each question ends in a reading generated from the intervals (an interval that includes 0, or 0.5 for a
probability of improvement, is reported as "not established at these seeds"), and a stated contradiction
where an interval excludes the published direction. Cells with fewer than :data:`MIN_SEEDS` seeds are
left out of every comparison.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from prefrl.analysis import iqm_contrast, probability_of_improvement
from prefrl.atomic_files import write_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import HALFCHEETAH_RATERS, PENDULUM_RATERS  # the sibling script that runs the sweeps

#: learners by the preference model they assume (table column order)
ASSUMPTIONS = {
    "rm_ppo": "partial return",
    "heron": "partial return, factor inputs",
    "pebble": "partial return",
    "p_iql": "partial return",
    "cpl": "regret",
    "spo": "no model: self-play",
    "bc": "no model: imitation",
}
#: references on the true reward (one row above each env's table)
REFERENCES = ("ppo", "sac")
#: raters of Q1 (SPO's robustness claim: intransitive, stochastic and non-Markovian preferences)
ROBUSTNESS_RATERS = ("intransitive", "stoc", "non_markovian")
#: the reward-model learners SPO is compared with in Q1
REWARD_MODEL_LEARNERS = ("rm_ppo", "pebble")
#: B-Pref's teachers (Q3); ``mistake:eps=0.1`` is HalfCheetah's spelling of the mistake teacher
TEACHERS = ("stoc", "mistake", "mistake:eps=0.1", "skip", "equal", "myopic")
BASELINE = "partial_return"
MIN_SEEDS = 5
SOURCES = (
    Path("results/study/pendulum_runs.csv"),
    Path("results/study/pendulum-offline_runs.csv"),
    Path("results/study/halfcheetah_runs.csv"),
    Path("results/offline/halfcheetah_runs.csv"),
)
COMMAND = ".venv/bin/python benchmarks/study_assumptions.py"
#: the front page's headline: env, learners (column order) and the markers around the table
HEADLINE_ENV = "pendulum"
HEADLINE_LEARNERS = ("rm_ppo", "heron", "pebble", "spo", "cpl", "p_iql", "bc")
HEADLINE_MARKERS = ("<!-- headline -->", "<!-- /headline -->")


#: row order of every table: the study's rater lists, then any other rater alphabetically
RATER_ORDER = tuple(dict.fromkeys((*PENDULUM_RATERS, *HALFCHEETAH_RATERS)))


def rater_rows(table: pd.DataFrame) -> list[str]:
    """The raters of ``table`` (no ``none``) in :data:`RATER_ORDER`."""
    raters = [r for r in table["rater"].drop_duplicates() if r != "none"]
    return sorted(raters, key=lambda r: (RATER_ORDER.index(r) if r in RATER_ORDER else len(RATER_ORDER), r))


def load_scores(paths: Iterable[Path]) -> pd.DataFrame:
    """Per-run final scores (env, agent, rater, seed, normalised_score) of the files that exist."""
    frames = [pd.read_csv(p) for p in paths if p.is_file()]
    if not frames:
        return pd.DataFrame(columns=["env", "agent", "rater", "seed", "normalised_score"])
    table = pd.concat(frames, ignore_index=True)
    table = table.drop_duplicates(["env", "agent", "rater", "seed"], keep="first")
    return table[["env", "agent", "rater", "seed", "normalised_score"]].dropna()


def seeds_of(table: pd.DataFrame, agent: str, rater: str) -> np.ndarray | None:
    """The per-seed scores of one cell, or None when it has fewer than :data:`MIN_SEEDS` seeds."""
    scores = table[(table["agent"] == agent) & (table["rater"] == rater)]["normalised_score"].to_numpy(float)
    return scores if len(scores) >= MIN_SEEDS else None


def interval(point: float, low: float, high: float, digits: int = 1) -> str:
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def verdict(low: float, high: float, null: float = 0.0) -> int:
    """+1 when the interval lies above ``null``, -1 below it, 0 when it includes it."""
    return 1 if low > null else -1 if high < null else 0


def poi(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """P(x > y) with its 95% CI (rliable's probability of improvement, one task)."""
    row = probability_of_improvement({"x": x[:, None], "y": y[:, None]}, [("x", "y")]).iloc[0]
    return float(row["probability"]), float(row["low"]), float(row["high"])


def score_table(table: pd.DataFrame) -> tuple[list[str], list[dict]]:
    """The scores table of one env (Markdown lines and CSV rows)."""
    learners = [a for a in ASSUMPTIONS if a in set(table["agent"])]
    lines = [
        "| rater | " + " | ".join(f"{a} ({ASSUMPTIONS[a]})" for a in learners) + " |",
        "|---|" + "---|" * len(learners),
    ]
    rows = []
    for rater in rater_rows(table):
        cells = []
        for agent in learners:
            scores = seeds_of(table, agent, rater)
            if scores is None:
                cells.append("-")
                continue
            point, low, high = iqm_contrast((1,), scores)
            cells.append(interval(point, low, high))
            rows.append({"agent": agent, "rater": rater, "seeds": len(scores), "iqm": point, "low": low,
                         "high": high})  # fmt: skip
        lines.append(f"| {rater} | " + " | ".join(cells) + " |")
    references = []
    for agent in REFERENCES:
        scores = seeds_of(table, agent, "none")
        if scores is not None:
            point, low, high = iqm_contrast((1,), scores)
            references.append(f"{agent} on the true reward {interval(point, low, high)}")
            rows.append({"agent": agent, "rater": "none", "seeds": len(scores), "iqm": point, "low": low,
                         "high": high})  # fmt: skip
    if references:
        lines += ["", "References: " + "; ".join(references) + "."]
    return lines, rows


#: learner pairs whose probability of improvement is tabulated per rater (same labels, same env)
IMPROVEMENT_PAIRS = (
    ("spo", "rm_ppo"),
    ("spo", "pebble"),
    ("pebble", "rm_ppo"),
    ("heron", "rm_ppo"),
    ("cpl", "p_iql"),
    ("cpl", "bc"),
    ("p_iql", "bc"),
)


POI_NOTE = (
    "P(X > Y): the chance that a run of X scores above a run of Y (rliable's probability of improvement), "
    "95% CI; 0.5 = no difference."
)


def improvement_table(table: pd.DataFrame) -> list[str]:
    """P(X > Y) with its 95% CI for each learner pair of :data:`IMPROVEMENT_PAIRS`, per rater."""
    raters = rater_rows(table)
    pairs = [
        (x, y)
        for x, y in IMPROVEMENT_PAIRS
        if any(seeds_of(table, x, r) is not None and seeds_of(table, y, r) is not None for r in raters)
    ]
    if not pairs:
        return ["No learner pair with 5 seeds each under the same rater yet."]
    header = "| rater | " + " | ".join(f"P({x} > {y})" for x, y in pairs) + " |"
    lines = [header, "|---|" + "---|" * len(pairs)]
    for rater in raters:
        cells = []
        for x, y in pairs:
            sx, sy = seeds_of(table, x, rater), seeds_of(table, y, rater)
            cells.append("-" if sx is None or sy is None else interval(*poi(sx, sy), digits=2))
        lines.append(f"| {rater} | " + " | ".join(cells) + " |")
    return lines


def spo_robustness(table: pd.DataFrame) -> list[str]:
    """Q1: SPO's drop from partial_return vs each reward-model learner's, per robustness rater."""
    lines = [
        "| rater | learner | its drop | SPO's drop | SPO's minus its drop | P(SPO > it) |",
        "|---|---|---|---|---|---|",
    ]
    readings = []
    spo_base = seeds_of(table, "spo", BASELINE)
    for rater in ROBUSTNESS_RATERS:
        spo = seeds_of(table, "spo", rater)
        for learner in REWARD_MODEL_LEARNERS:
            base, other = seeds_of(table, learner, BASELINE), seeds_of(table, learner, rater)
            if any(s is None for s in (spo_base, spo, base, other)):
                continue
            drop = iqm_contrast((1, -1), base, other)
            spo_drop = iqm_contrast((1, -1), spo_base, spo)
            contrast = iqm_contrast((1, -1, -1, 1), spo_base, spo, base, other)
            p = poi(spo, other)
            lines.append(
                f"| {rater} | {learner} | {interval(*drop)} | {interval(*spo_drop)} | "
                f"{interval(*contrast)} | {interval(*p, digits=2)} |"
            )
            sign = verdict(contrast[1], contrast[2])
            if sign < 0:
                text = f"SPO loses less than {learner} under {rater} (by {-contrast[0]:.1f} points)"
            elif sign > 0:
                text = (f"SPO loses more than {learner} under {rater} (by {contrast[0]:.1f} points): "
                        "**contradicts SPO's robustness claim** at these seeds")  # fmt: skip
            else:
                text = f"SPO vs {learner} under {rater}: the difference of drops is not established"
            readings.append(text)
    if len(lines) == 2:
        return ["Not enough finished cells (spo and a reward-model learner under partial_return and R)."]
    return [*lines, "", "Reading: " + "; ".join(readings) + "."]


def cpl_vs_piql(table: pd.DataFrame) -> list[str]:
    """Q2: CPL against P-IQL on regret and on partial-return labels."""
    lines = ["| labels | IQM(cpl) - IQM(p_iql) | P(cpl > p_iql) |", "|---|---|---|"]
    readings = []
    cells = {}
    for rater in ("regret", BASELINE):
        cpl, piql = seeds_of(table, "cpl", rater), seeds_of(table, "p_iql", rater)
        if cpl is None or piql is None:
            continue
        cells[rater] = (cpl, piql)
        difference = iqm_contrast((1, -1), cpl, piql)
        p = poi(cpl, piql)
        lines.append(f"| {rater} | {interval(*difference)} | {interval(*p, digits=2)} |")
        sign = verdict(difference[1], difference[2])
        word = {1: "beats", -1: "trails", 0: "is not distinguishable from"}[sign]
        text = f"on {rater} labels cpl {word} p_iql"
        if rater == "regret" and sign < 0:
            text += " (**contradicts the CPL paper**, where CPL matches or beats P-IQL on regret labels)"
        readings.append(text)
    if len(cells) == 2:
        change = iqm_contrast((1, -1, -1, 1), *cells["regret"], *cells[BASELINE])
        lines.append(f"| regret minus partial_return | {interval(*change)} | |")
        sign = verdict(change[1], change[2])
        where = {1: "larger on regret labels", -1: "larger on partial-return labels"}
        readings.append("cpl's lead over p_iql is " + where.get(sign, "not shown to vary with the labels"))
    if not readings:
        return ["Not enough finished cells (cpl and p_iql under regret or partial_return)."]
    return [*lines, "", "Reading: " + "; ".join(readings) + "."]


def teacher_costs(table: pd.DataFrame) -> list[str]:
    """Q3: IQM under partial_return minus IQM under each B-Pref teacher, per learner."""
    teachers = [t for t in TEACHERS if t in set(table["rater"])]
    learners = [a for a in ASSUMPTIONS if seeds_of(table, a, BASELINE) is not None]
    lines = ["| learner | " + " | ".join(teachers) + " |", "|---|" + "---|" * len(teachers)]
    costly = []
    for agent in learners:
        cells = []
        for teacher in teachers:
            scores = seeds_of(table, agent, teacher)
            if scores is None:
                cells.append("-")
                continue
            cost = iqm_contrast((1, -1), seeds_of(table, agent, BASELINE), scores)
            cells.append(interval(*cost))
            if verdict(cost[1], cost[2]) > 0:
                costly.append(f"{teacher} costs {agent} {cost[0]:.1f} points")
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    if not teachers or not learners:
        return ["Not enough finished cells (a learner under partial_return and a B-Pref teacher)."]
    reading = "; ".join(costly) if costly else "no teacher's cost is established at these seeds"
    return [*lines, "", f"Reading (costs whose interval excludes 0): {reading}."]


def headline_table(table: pd.DataFrame) -> list[str]:
    """The front page's table: one row per rater, one column per learner with any finished cell."""
    learners = [a for a in HEADLINE_LEARNERS if (table["agent"] == a).any()]
    lines = [
        "| rater | " + " | ".join(f"{a} ({ASSUMPTIONS[a]})" for a in learners) + " |",
        "|---|" + "---|" * len(learners),
    ]
    for rater in rater_rows(table):
        cells = [seeds_of(table, agent, rater) for agent in learners]
        lines.append(
            f"| {rater} | "
            + " | ".join("-" if s is None else interval(*iqm_contrast((1,), s)) for s in cells)
            + " |"
        )
    references = [
        f"{agent} {interval(*iqm_contrast((1,), scores))}"
        for agent in REFERENCES
        if (scores := seeds_of(table, agent, "none")) is not None
    ]
    if references:
        lines += ["", "References on the true reward: " + ", ".join(references) + "."]
    return lines


def replace_between_markers(page: str, lines: list[str], markers: tuple[str, str] = HEADLINE_MARKERS) -> str:
    """``page`` with the text between the two marker lines replaced by ``lines`` (markers kept)."""
    start, end = markers
    if page.count(start) != 1 or page.count(end) != 1 or page.index(start) > page.index(end):
        raise SystemExit(f"the front page needs one '{start}' line before one '{end}' line")
    head, rest = page.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + start + "\n" + "\n".join(lines) + "\n" + end + tail


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", type=Path, nargs="+", default=list(SOURCES))
    parser.add_argument("--out", type=Path, default=Path("results/study/assumptions"))
    parser.add_argument(
        "--front-page",
        type=Path,
        default=Path("results/README.md"),
        help="page whose headline table (between the markers) is rewritten; '' to skip",
    )
    args = parser.parse_args()
    scores = load_scores(args.inputs)
    used = [str(p) for p in args.inputs if p.is_file()]
    text = [
        "# Study part 3: which learner recovers true-return behaviour under which preference model",
        "",
        f"    {COMMAND}",
        "",
        "Reads the per-run final scores " + (", ".join(f"`{p}`" for p in used) or "(none found)") + ". "
        "Final normalised score per run (end-of-run evaluation, 20 held-out episodes), IQM over seeds with "
        f"its 95% stratified-bootstrap CI (2,000 resamples); cells with fewer than {MIN_SEEDS} seeds are "
        "left out. Differences of IQMs come with the CI of the difference (seeds resampled independently per "
        "cell); an interval that includes 0 (0.5 for P(X > Y)) is not a finding.",
    ]
    rows = []
    for env, table in scores.groupby("env", sort=True):
        lines, env_rows = score_table(table)
        rows += [{"env": env, **r} for r in env_rows]
        text += ["", f"## {env}", "", "### Scores: IQM [95% CI]", "", *lines]
        text += ["", "### Probability of improvement between learners on the same labels", ""]
        text += [*improvement_table(table), "", POI_NOTE]
        text += ["", "### Q1: does SPO degrade less than a reward model?", "", *spo_robustness(table)]
        text += ["", "### Q2: does CPL beat P-IQL on regret labels and not on partial-return labels?", ""]
        text += cpl_vs_piql(table)
        text += ["", "### Q3: what each B-Pref teacher costs (IQM under partial_return minus under it)", ""]
        text += teacher_costs(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).round(3).to_csv(args.out.with_suffix(".csv"), index=False)
    write_atomic(args.out.with_suffix(".md"), "\n".join(text) + "\n")
    print("\n".join(text))
    headline_scores = scores[scores["env"] == HEADLINE_ENV]
    if str(args.front_page) not in ("", ".") and not headline_scores.empty:
        page = args.front_page.read_text(encoding="utf-8")
        write_atomic(args.front_page, replace_between_markers(page, headline_table(headline_scores)))
        print(f"headline table of {args.front_page} rewritten")


if __name__ == "__main__":
    main()
