"""The command line's error policy: bad input is one line and exit 2, a bug keeps its traceback."""

from __future__ import annotations

import pytest

from prefrl import cli
from prefrl.cli import rate
from prefrl.errors import PrefrlError


def test_bad_input_is_one_line_and_exit_2(capsys):
    assert cli.main(["rate", "--env", "pendullum", "--rater", "partial_return", "--pairs", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown env 'pendullum' (did you mean 'pendulum'?)" in err
    assert "Traceback" not in err


def test_an_os_error_on_a_given_path_is_bad_input(tmp_path, capsys):
    assert cli.main(["render", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prefrl render: error:") and "missing" in err and "Traceback" not in err


@pytest.mark.parametrize("bug", [ValueError("a library bug"), KeyError("oops"), RuntimeError("broken")])
def test_a_bug_keeps_its_traceback(monkeypatch, capsys, bug):
    def broken(args):
        raise bug

    monkeypatch.setattr(rate, "list_env_specs", lambda: broken(None))
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and type(bug).__name__ in err and cli.BUG_REPORT in err


def test_debug_shows_the_traceback_of_bad_input(monkeypatch):
    monkeypatch.setenv("PREFRL_DEBUG", "1")
    with pytest.raises(PrefrlError, match="pendullum"):
        cli.main(["rate", "--env", "pendullum", "--rater", "partial_return"])
