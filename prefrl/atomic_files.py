"""Atomic file writes: readers see the previous file or the new one, never half of one.

A file is written under a temporary name beside its target and renamed over it (``os.replace``, atomic on
POSIX and Windows). When the write fails or is interrupted - an exception, or a sweep worker's SIGTERM,
which :mod:`prefrl.sweep` raises as an exception inside the run - the temporary file is removed, so an
interrupted run directory holds no stray ``*.tmp`` files. (Only a SIGKILL in the middle of a write can
leave one behind; it is never read.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_atomic"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    The temporary name carries the process id, so two processes writing the same file never share one.
    On any exception (including ``KeyboardInterrupt``) the temporary file is deleted and ``path`` is left
    as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8")
