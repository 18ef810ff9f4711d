"""``prefrl plot DIR`` and ``prefrl report DIR``: figures and a report of the runs under a directory.

Both list on stderr every run directory they leave out or read only in part, one line each (a damaged
``progress.csv`` or ``config.yaml``, a ragged line) and the number of unfinished runs; ``--strict`` stops
with one error line instead when a run is damaged.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefrl.analysis import RunScan, scan_runs
from prefrl.cli.values import int_in
from prefrl.report import make_figures, write_report

__all__ = ["add_parser"]

#: the most bootstrap resamples (each is a full pass over the scores)
MAX_REPS = 1_000_000


def add_parser(subparsers: Any) -> None:
    """Add ``prefrl plot`` and ``prefrl report``."""
    add_plot_parser(subparsers)
    add_report_parser(subparsers)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reps", type=int_in(1, MAX_REPS), default=2000, help="bootstrap resamples for the 95%% CIs"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop with an error when a run directory is damaged (default: leave it out and list it)",
    )


def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prefrl plot DIR`` (learning curves, aggregate intervals, probability of improvement)."""
    p = subparsers.add_parser("plot", help="plot the runs under a directory (PNG + SVG)")
    p.add_argument("dir", help="sweep root or any directory holding run directories")
    p.add_argument("--out", default=None, help="figure directory (default: DIR/plots)")
    _add_common(p)
    p.add_argument("--all", action="store_true", help="include unfinished runs (default: finished runs only)")
    p.set_defaults(func=cmd_plot)
    return p


def _show_skipped(command: str, scan: RunScan, only_done: bool) -> None:
    """One stderr line per damaged or partly read run; one line counting the unfinished ones."""
    for skipped in scan.damaged:
        what = "read in part" if skipped.kind == "partial" else "skipped"
        print(f"prefrl {command}: warning: {what} {skipped}", file=sys.stderr)
    unfinished = len(scan.skipped) - len(scan.damaged)
    if unfinished:
        hint = " (--all includes them)" if only_done and command == "plot" else ""
        print(f"prefrl {command}: note: {unfinished} unfinished run(s) left out{hint}", file=sys.stderr)


def cmd_plot(args: argparse.Namespace) -> int:
    """``prefrl plot``: write every figure and print their paths."""
    only_done = not args.all
    scan = scan_runs(args.dir, only_done=only_done, strict=args.strict)
    _show_skipped("plot", scan, only_done)
    figures = make_figures(args.dir, out=args.out, reps=args.reps, only_done=only_done, table=scan.table)
    for paths in figures.values():
        for path in paths:
            print(path)
    return 0


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prefrl report DIR`` (one self-contained Markdown or HTML page)."""
    p = subparsers.add_parser("report", help="write a self-contained report of the runs under a directory")
    p.add_argument("dir", help="sweep root or any directory holding run directories")
    p.add_argument("--out", default=None, help="report file (default: DIR/report.md or DIR/report.html)")
    p.add_argument(
        "--format",
        choices=["md", "html"],
        default="md",
        dest="fmt",
        help="md: Markdown with the figures beside it in figures/; html: one self-contained page",
    )
    _add_common(p)
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    """``prefrl report``: write the report (it lists the skipped runs too) and print its path."""
    scan = scan_runs(args.dir, only_done=True, strict=args.strict)
    _show_skipped("report", scan, only_done=True)
    print(write_report(args.dir, out=args.out, fmt=args.fmt, reps=args.reps, table=scan.table))
    return 0
