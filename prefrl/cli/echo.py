"""Showing a library module's progress messages (its ``logging`` INFO records) on the terminal.

Library code never prints; it logs. A command that wants a module's progress on screen calls
:func:`echo_progress` with the module's logger name.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["echo_progress"]


def echo_progress(*logger_names: str) -> None:
    """Print the INFO records of these loggers on stdout, message only (once per logger)."""
    for name in logger_names:
        log = logging.getLogger(name)
        if not any(getattr(h, "prefrl_echo", False) for h in log.handlers):
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.prefrl_echo = True  # type: ignore[attr-defined]
            log.addHandler(handler)
        log.setLevel(logging.INFO)
