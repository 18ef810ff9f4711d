"""``prefrl dataset build``: offline preference datasets (cpl, bc)."""

from __future__ import annotations

import argparse
from typing import Any

from prefrl.datasets import PAIR_MODES, DatasetConfig, build_dataset, load_dataset

__all__ = ["add_parser"]


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
    """Add ``prefrl dataset build ...`` to the ``prefrl`` sub-command parsers; returns the parser."""
    parser = subparsers.add_parser("dataset", help="build offline preference datasets (cpl, bc)")
    sub = parser.add_subparsers(dest="dataset_command", required=True)
    build = sub.add_parser("build", help="roll out the oracle's checkpoints with noise, cut, pair and label")
    build.add_argument("--env", required=True, help="env spec name (it needs a trained oracle)")
    build.add_argument("--rater", default="regret", help="rater spec (default regret)")
    build.add_argument(
        "--episodes", type=int, default=DatasetConfig.episodes, help="episodes over all checkpoints"
    )
    build.add_argument(
        "--noise", type=float, default=DatasetConfig.noise, help="action-noise std / action half-range"
    )
    build.add_argument("--segment", type=int, default=DatasetConfig.segment, help="steps per segment")
    build.add_argument(
        "--pairs", type=_pairs_arg, default=DatasetConfig.pairs, help="dense, sparse or a number"
    )
    build.add_argument(
        "--pairs-per-segment",
        type=int,
        default=DatasetConfig.pairs_per_segment,
        help="pairs per segment (dense)",
    )
    build.add_argument("--seed", type=int, default=DatasetConfig.seed)
    build.add_argument("--out", default=None, help="output file (default: the cache, by content hash)")
    build.add_argument(
        "--return-episodes",
        type=int,
        default=DatasetConfig.return_episodes,
        help="episodes per checkpoint measuring its noisy return",
    )
    build.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    parser.set_defaults(func=cmd_dataset)
    return parser


def cmd_dataset(args: argparse.Namespace) -> int:
    """Handler of ``prefrl dataset build``: builds, then prints the path and a one-line summary."""
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
        return_episodes=args.return_episodes,
        rebuild=args.rebuild,
    )
    prov = load_dataset(path).provenance
    score = prov.get("mean_normalised_score")
    print(
        f"{path}\n{prov['num_segments']} segments, {prov['pairs_labelled']} labelled pairs "
        f"(tie rate {prov['tie_rate']:.3f}), "
        f"behaviour return {prov.get('mean_noisy_return', float('nan')):.1f}"
        + (f" (normalised {score:.1f})" if score is not None else "")
    )
    return 0
