"""``prefrl dataset build | export | import | import-labels``: offline preference datasets (cpl, p_iql,
bc), Minari, and labels collected elsewhere (a CSV over a dataset's segments, :mod:`prefrl.label_import`).

``build`` shows its progress: a bar when stdout is a terminal, else the library's log line every ~10%
of the env steps (:mod:`prefrl.datasets` logs them; :func:`~prefrl.cli.echo.echo_progress` prints them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from prefrl.cli.echo import echo_progress
from prefrl.cli.values import int_in, seed
from prefrl.dataset_minari import (
    EXPORT_FORMATS,
    MINARI_PATH_ENV,
    export_minari,
    import_minari,
    minari_root,
)
from prefrl.datasets import PAIR_MODES, DatasetConfig, ProgressFn, build_dataset, load_dataset
from prefrl.errors import DatasetError
from prefrl.label_import import import_labels_csv

__all__ = ["add_parser"]

#: where Minari keeps its datasets when neither an option nor the variable says otherwise
_MINARI_DEFAULT = f"${MINARI_PATH_ENV}, else ~/.minari/datasets"


def _pairs_arg(text: str) -> str | int:
    if text in PAIR_MODES:
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected dense, sparse or a number of pairs, got '{text}'"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the number of pairs must be >= 1, got {value}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prefrl dataset build | export | import`` to the ``prefrl`` sub-command parsers."""
    parser = subparsers.add_parser("dataset", help="build, export and import offline preference datasets")
    sub = parser.add_subparsers(dest="dataset_command", required=True)
    _add_build(sub)
    _add_export(sub)
    _add_import(sub)
    _add_import_labels(sub)
    parser.set_defaults(func=cmd_dataset)
    return parser


def _add_build(sub: Any) -> None:
    build = sub.add_parser("build", help="roll out the oracle's checkpoints with noise, cut, pair and label")
    build.add_argument("--env", required=True, help="env spec name (it needs a trained oracle)")
    build.add_argument("--rater", default="regret", help="rater spec (default: %(default)s)")
    build.add_argument(
        "--episodes",
        type=int_in(1),
        default=DatasetConfig.episodes,
        help="episodes over all checkpoints (default: %(default)s)",
    )
    build.add_argument(
        "--noise",
        type=float,
        default=DatasetConfig.noise,
        help="action-noise std / action half-range (default: %(default)s)",
    )
    build.add_argument(
        "--segment",
        type=int_in(1),
        default=DatasetConfig.segment,
        help="steps per segment (default: %(default)s)",
    )
    build.add_argument(
        "--pairs",
        type=_pairs_arg,
        default=DatasetConfig.pairs,
        help="dense, sparse or a number of random pairs (default: %(default)s)",
    )
    build.add_argument(
        "--pairs-per-segment",
        type=int_in(1),
        default=DatasetConfig.pairs_per_segment,
        help="pairs per segment with --pairs dense (default: %(default)s)",
    )
    build.add_argument("--seed", type=seed, default=DatasetConfig.seed, help="default: %(default)s")
    build.add_argument(
        "--n-envs",
        type=int_in(1, 1024),
        default=DatasetConfig.n_envs,
        help="parallel envs per checkpoint rollout (default: %(default)s)",
    )
    build.add_argument("--out", default=None, help="output file (default: the cache, by content hash)")
    build.add_argument(
        "--return-episodes",
        type=int_in(0),
        default=DatasetConfig.return_episodes,
        help="episodes per checkpoint measuring its noisy return (default: %(default)s)",
    )
    build.add_argument("--rebuild", action="store_true", help="rebuild even if cached")


def _add_export(sub: Any) -> None:
    export = sub.add_parser(
        "export",
        help="write a dataset in another library's format (Minari), labels and provenance included",
    )
    export.add_argument("dataset", metavar="DATASET", help="the .npz written by `prefrl dataset build`")
    export.add_argument(
        "--format",
        default=EXPORT_FORMATS[0],
        help=f"output format, one of: {', '.join(EXPORT_FORMATS)} (default: %(default)s)",
    )
    export.add_argument(
        "--id",
        required=True,
        dest="dataset_id",
        metavar="NAMESPACE/NAME-vN",
        help="Minari dataset id, e.g. prefrl/pendulum-regret-v0",
    )
    export.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"Minari datasets root; the dataset goes to DIR/ID (default: {_MINARI_DEFAULT})",
    )
    export.add_argument("--author", default=None, help="Minari metadata: author (default: none)")
    export.add_argument("--author-email", default=None, help="Minari metadata: author email (default: none)")
    export.add_argument(
        "--code-permalink", default=None, help="Minari metadata: link to the code (default: none)"
    )
    export.add_argument(
        "--description", default=None, help="Minari metadata: description (default: a summary of the data)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def _add_import(sub: Any) -> None:
    imp = sub.add_parser("import", help="read a dataset exported by `prefrl dataset export` back to .npz")
    imp.add_argument(
        "source",
        metavar="ID_OR_PATH",
        help="the Minari dataset's directory, or its id NAMESPACE/NAME-vN (an existing path wins)",
    )
    imp.add_argument("--out", required=True, metavar="FILE", help="the prefrl dataset (.npz) to write")
    imp.add_argument(
        "--minari-dir",
        default=None,
        metavar="DIR",
        help=f"Minari datasets root an id is looked up in (default: {_MINARI_DEFAULT})",
    )


def _add_import_labels(sub: Any) -> None:
    imp = sub.add_parser(
        "import-labels",
        help="a new dataset: the segments of one dataset with labels from a CSV (e.g. collected from people)",
        description="Read a CSV with columns segment_a,segment_b,label (segment indices into --segments; "
        "label = P(segment_a preferred): 1, 0, 0.5 for a tie, or in between; empty or 'skip' = skipped, "
        "dropped) and write a dataset of those pairs and labels over the segments of --segments.",
    )
    imp.add_argument(
        "--segments", required=True, metavar="DATASET", help="the dataset the indices point into"
    )
    imp.add_argument("--csv", required=True, metavar="FILE", help="the labels: segment_a,segment_b,label")
    imp.add_argument("--out", required=True, metavar="FILE", help="the new dataset (.npz) to write")


def cmd_dataset(args: argparse.Namespace) -> int:
    """Handler of ``prefrl dataset``: dispatches on the sub-command."""
    handlers = {
        "build": _cmd_build,
        "export": _cmd_export,
        "import": _cmd_import,
        "import-labels": _cmd_import_labels,
    }
    return handlers[args.dataset_command](args)


def _on_terminal() -> bool:
    return sys.stdout.isatty()


def _progress() -> tuple[ProgressFn | None, Callable[[], None]]:
    """``(callback for build_dataset, close)``: a bar on a terminal, else the library's log lines."""
    if not _on_terminal():
        echo_progress("prefrl.datasets")
        return None, lambda: None
    bars: list[tqdm] = []  # made on the first call, when the total is known (none for a cached dataset)

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="step", unit_scale=True, desc="rolling out", file=sys.stdout))
        bars[0].update(done - bars[0].n)

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


def _cmd_build(args: argparse.Namespace) -> int:
    """Builds, then prints the path and a one-line summary."""
    progress, close = _progress()
    try:
        path = build_dataset(
            args.env,
            args.rater,
            episodes=args.episodes,
            noise=args.noise,
            segment=args.segment,
            pairs=args.pairs,
            pairs_per_segment=args.pairs_per_segment,
            seed=args.seed,
            out=args.out,
            n_envs=args.n_envs,
            return_episodes=args.return_episodes,
            rebuild=args.rebuild,
            progress=progress,
        )
    finally:
        close()
    prov = load_dataset(path).provenance
    score = prov.get("mean_normalised_score")
    print(
        f"{path}\n{prov['num_segments']} segments, {prov['pairs_labelled']} labelled pairs "
        f"(tie rate {prov['tie_rate']:.3f}), "
        f"behaviour return {prov.get('mean_noisy_return', float('nan')):.1f}"
        + (f" (normalised {score:.1f})" if score is not None else "")
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Exports, then prints the Minari dataset's directory and how to load it."""
    if args.format not in EXPORT_FORMATS:
        raise DatasetError(f"unknown export format '{args.format}'; allowed: {', '.join(EXPORT_FORMATS)}")
    data = load_dataset(args.dataset)
    target = export_minari(
        data,
        args.dataset_id,
        args.out,
        author=args.author,
        author_email=args.author_email,
        code_permalink=args.code_permalink,
        description=args.description,
        overwrite=args.overwrite,
    )
    root = minari_root(args.out).expanduser().resolve()
    print(
        f"{target}\n{data.segments.num_segments} segments (Minari episodes), {data.num_pairs} labelled "
        f"pairs in metadata['prefrl']; load with {MINARI_PATH_ENV}={root} "
        f"minari.load_dataset('{args.dataset_id}')"
    )
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    """Imports, then prints the written file and a one-line summary."""
    path = import_minari(args.source, args.out, args.minari_dir)
    data = load_dataset(path)
    print(
        f"{path}\n{data.segments.num_segments} segments, {data.num_pairs} labelled pairs "
        f"(env {data.provenance['params']['env']}, rater {data.provenance.get('rater_spec')})"
    )
    return 0


def _cmd_import_labels(args: argparse.Namespace) -> int:
    """Imports the CSV's labels, then prints the written file and a one-line summary."""
    path = import_labels_csv(args.segments, args.csv, args.out)
    data = load_dataset(path)
    print(
        f"{path}\n{data.num_pairs} labelled pairs ({data.provenance['labels']['skipped']} skipped, tie rate "
        f"{data.preferences.tie_rate:.3f}) over {data.segments.num_segments} segments of {args.segments}"
    )
    return 0
