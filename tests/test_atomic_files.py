"""Atomic writes: the target is replaced whole or left as it was, and no temporary file survives."""

from __future__ import annotations

import pytest

from prefrl.atomic_files import atomic_path, write_atomic


@pytest.mark.parametrize("content", ["text é\n", b"\x00bytes"])
def test_write_atomic_replaces_the_file(tmp_path, content):
    path = tmp_path / "out"
    path.write_text("old")
    write_atomic(path, content)
    read = path.read_bytes() if isinstance(content, bytes) else path.read_text(encoding="utf-8")
    assert read == content
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt, SystemExit])
def test_interrupted_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, error):
    path = tmp_path / "progress.csv"
    path.write_text("a\n1\n")
    with pytest.raises(error), atomic_path(path) as tmp:
        tmp.write_text("a\n1\n2")  # half written when the interruption comes
        raise error
    assert path.read_text() == "a\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["progress.csv"]


def test_a_new_file_is_not_created_by_a_failed_write(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.json") as tmp:
        tmp.write_text("{")
        raise RuntimeError("serialisation failed")
    assert list(tmp_path.iterdir()) == []
