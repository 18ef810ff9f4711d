"""Argument types of the command line: integers within bounds, checked while the arguments are parsed.

A value out of range stops ``prefrl`` with argparse's usage line and one error line naming the option
(exit status 2), before any work starts: ``prefrl render: error: argument --width: must be an integer in
[1, 8192], got 0``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["MAX_SEED", "int_in", "seed"]

#: the largest seed (numpy's and torch's generators take seeds below 2**32)
MAX_SEED = 2**32 - 1


def int_in(low: int, high: int | None = None, what: str = "an integer") -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in ``[low, high]`` (``high=None``: no upper bound).

    Plain digits only (``1e9`` is refused: write ``1000000000``); the message states the bounds.
    """

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low:,}" if high is None else f"in [{low:,}, {high:,}]"
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, got {value:,}")
        return value

    parse.__name__ = what  # argparse names the type by it in some messages
    return parse


#: a seed: an integer in [0, MAX_SEED]
seed = int_in(0, MAX_SEED, "a seed (an integer)")
