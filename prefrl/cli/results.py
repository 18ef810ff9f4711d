"""``prefrl plot DIR`` and ``prefrl report DIR``: figures and a report of the runs under a directory."""

from __future__ import annotations

import argparse
from typing import Any

from prefrl.report import make_figures, write_report

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add ``prefrl plot`` and ``prefrl report``."""
    add_plot_parser(subparsers)
    add_report_parser(subparsers)


def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prefrl plot DIR`` (learning curves, aggregate intervals, probability of improvement)."""
    p = subparsers.add_parser("plot", help="plot the runs under a directory (PNG + SVG)")
    p.add_argument("dir", help="sweep root or any directory holding run directories")
    p.add_argument("--out", default=None, help="figure directory (default: DIR/plots)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--all", action="store_true", help="include unfinished runs (default: finished runs only)")
    p.set_defaults(func=cmd_plot)
    return p


def cmd_plot(args: argparse.Namespace) -> int:
    """``prefrl plot``: write every figure and print their paths."""
    figures = make_figures(args.dir, out=args.out, reps=args.reps, only_done=not args.all)
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
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the 95%% CIs")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    """``prefrl report``: write the report and print its path."""
    print(write_report(args.dir, out=args.out, fmt=args.fmt, reps=args.reps))
    return 0
