"""The ``prefrl`` command line: the only code that parses arguments or prints; it calls the library.

Sub-commands, one module per group::

    run.py      prefrl run   --env ENV --agent AGENT [--rater R] --seed S [--steps N] [--queries Q]
                prefrl sweep --env E1,E2 --agent A1,A2 --rater R1,R2 --seeds 5 [--backend local|ray]
                prefrl demo  [--out results/demo]
    rate.py     prefrl rate  --env ENV --rater R1 [--rater R2 ...] --pairs N [--policy random] [--json]
                prefrl list  (environments, agents, raters)
    oracle.py   prefrl oracle train --env ENV [--out DIR] [--steps N] [--seed S] [--resume]
                prefrl oracle eval --env ENV [--from DIR] | prefrl oracle install --env ENV [--from DIR]
                prefrl oracle correct-value --env ENV [--from DIR] [--out DIR] [--episodes N] [--fit-steps N]
    dataset.py  prefrl dataset build --env ENV --rater R [--episodes N] [--noise S] [--segment 64] [--pairs P]
                prefrl dataset export FILE --format minari --id NS/NAME-v0 | prefrl dataset import ID --out F
    identify.py prefrl identify --dataset FILE [--env ENV] [--models a,b] [--folds K] [--bootstraps B]
    evaluate.py prefrl evaluate DIR... [--episodes 20] [--seed S] [--force]
    results.py  prefrl plot DIR | prefrl report DIR
    render.py   prefrl render --run DIR | --env ENV --pair

ENV is a spec name, a spec file (``my_env.yaml``) or ``gym:<gymnasium id>[,key=value...]`` everywhere.

Errors. Bad input - a :class:`~prefrl.errors.PrefrlError` (unknown env, misspelled config key, bad rater
parameter, corrupted dataset, ...) or an OS error on a path the user gave (missing file, no permission) -
prints one line naming the problem and exits with status 2 (``PREFRL_DEBUG=1`` shows the traceback).
Anything else is a bug in prefrl: it keeps its traceback, with a line asking to report it.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

import prefrl
from prefrl.cli import dataset, evaluate, identify, oracle, rate, render, results, run
from prefrl.errors import PrefrlError

__all__ = ["BUG_REPORT", "HelpFormatter", "Parser", "build_parser", "main", "prefrl_version"]

#: printed under the traceback of an unexpected exception
BUG_REPORT = (
    "This is a bug in prefrl, not a problem with your input: please report it with the command you ran "
    "and the traceback above."
)

#: the command groups, in the order their sub-commands are listed by ``prefrl --help``
COMMAND_GROUPS = (run, rate, oracle, dataset, identify, evaluate, results, render)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows every option's default, also for options without a help text.

    A ``None`` default is not shown (it means "taken from elsewhere", which the help text says), nor is a
    default the help text already shows through ``%(default)s``.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "%(default)" in text:
            return action.help
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return action.help  # a required positional: its default is never used
        return f"{text} (default: %(default)s)".strip()

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help:
            # argparse skips the help column of an option without help text, and with it the default
            shown = self._get_help_string(action)
            if shown:
                action = copy.copy(action)
                action.help = shown
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose help uses :class:`HelpFormatter` unless told otherwise.

    Passed as ``parser_class`` to ``add_subparsers``, so every sub-command (and their own sub-commands,
    which inherit the class) shows its defaults.
    """

    def __init__(
        self, *args: Any, formatter_class: type[argparse.HelpFormatter] = HelpFormatter, **kwargs: Any
    ) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def prefrl_version() -> str:
    """The installed prefrl's version (``prefrl.__version__``, read from the package metadata)."""
    return prefrl.__version__


def build_parser() -> argparse.ArgumentParser:
    """The ``prefrl`` argument parser with every sub-command."""
    parser = Parser(
        prog="prefrl",
        description="Preference-based RL testbed on continuous control. "
        "`prefrl list` shows the environments, agents and raters; `prefrl COMMAND -h` a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {prefrl_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prefrl`` command; returns the exit status.

    Warnings the library raises for the user (a spec file shadowing a built-in, an ignored rater, ...) are
    shown as one line each, ``prefrl COMMAND: warning: ...``, without Python's file and line.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, args.command)
            return int(args.func(args))
    except PrefrlError as e:
        return _bad_input(args.command, e)
    except OSError as e:
        # an OS error naming a file is a path the user gave (missing, unreadable, not a directory, ...)
        return _bad_input(args.command, e) if e.filename is not None else _bug(args.command)
    except KeyboardInterrupt:
        print(f"prefrl {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        return _bug(args.command)


def _show_warning(command: str, message: Warning | str, *args: Any, **kwargs: Any) -> None:
    print(f"prefrl {command}: warning: {message}", file=sys.stderr)


def _bad_input(command: str, error: Exception) -> int:
    if os.environ.get("PREFRL_DEBUG"):
        raise error
    print(f"prefrl {command}: error: {_one_line(error)}", file=sys.stderr)
    return 2


def _bug(command: str) -> int:
    traceback.print_exc()
    print(f"prefrl {command}: {BUG_REPORT}", file=sys.stderr)
    return 1
