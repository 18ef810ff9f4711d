"""Showing a library module's progress messages (its ``logging`` INFO records) on the terminal.

Library code never prints; it logs. A command that wants a module's progress on screen calls
:func:`echo_progress` with the module's logger name.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["echo_progress"]


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of the record (not the one at creation: a test's
    captured stdout, or a stdout a caller redirected later, would otherwise be written to after it closed)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; the property ignores it
        pass


def echo_progress(*logger_names: str) -> None:
    """Print the INFO records of these loggers on stdout, message only (once per logger)."""
    for name in logger_names:
        log = logging.getLogger(name)
        if not any(getattr(h, "prefrl_echo", False) for h in log.handlers):
            handler = _StdoutHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.prefrl_echo = True  # type: ignore[attr-defined]
            log.addHandler(handler)
        log.setLevel(logging.INFO)
