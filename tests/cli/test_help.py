"""``prefrl --version``, ``prefrl list`` and the help of every sub-command (defaults, allowed values)."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys

import pytest

from prefrl import cli
from prefrl.agents import Agent, get_agent_class, list_agents
from prefrl.cli import rate
from prefrl.envs import ENV_DIR, list_env_specs
from prefrl.errors import SpecError
from prefrl.raters import list_raters


def _sub_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(command path, parser)`` for every sub-command, nested ones included (``oracle train``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _sub_parsers(sub, (*path, name))


def _option_blocks(help_text: str) -> dict[str, str]:
    """Each option string of a help page -> its entry (invocation and help), whitespace normalised."""
    blocks: list[list[str]] = []
    for line in help_text.splitlines():
        if re.match(r"^  -", line):  # an option's entry starts at indent 2; its help wraps deeper
            blocks.append([line])
        elif blocks and line.startswith("   "):
            blocks[-1].append(line)
        elif blocks and line.strip() and not line.startswith(" "):
            blocks.append([])  # a section heading ends the entry before it
    entries = {}
    for block in filter(None, blocks):
        text = " ".join(" ".join(block).split())
        for option in re.findall(r"(?:^|, )(--?[\w-]+)", block[0].strip()):
            entries[option] = text
    return entries


SUB_PARSERS = list(_sub_parsers(cli.build_parser()))


def test_the_walk_finds_every_command():
    commands = {" ".join(path) for path, _ in SUB_PARSERS}
    assert {"run", "sweep", "demo", "rate", "list", "plot", "report", "render", "oracle train"} <= commands


@pytest.mark.parametrize(("path", "parser"), SUB_PARSERS, ids=[" ".join(p) for p, _ in SUB_PARSERS])
def test_every_option_with_a_default_shows_it(path, parser):
    entries = _option_blocks(parser.format_help())
    checked = 0
    for action in parser._actions:
        if not action.option_strings or action.default in (None, argparse.SUPPRESS):
            continue
        entry = entries[action.option_strings[-1]]
        assert f"default: {action.default}" in entry, (path, action.option_strings, entry)
        checked += 1
    for action in parser._actions:
        if action.option_strings and action.default is None:
            # "default: None" says nothing: such options say where their value comes from instead
            assert "default: None" not in entries[action.option_strings[-1]]
    if path == ("run",):
        assert checked >= 2  # --env, --seed


def test_closed_sets_are_choices_and_open_ones_are_named_in_the_help():
    parsers = {" ".join(path): parser for path, parser in SUB_PARSERS}
    assert "{local,ray}" in parsers["sweep"].format_help()
    assert "{md,html}" in parsers["report"].format_help()
    run_help = " ".join(parsers["run"].format_help().split())
    for agent in list_agents():
        assert agent in run_help
    assert "partial_return" in run_help and "regret" in run_help and "mistake" in run_help
    rate_help = " ".join(parsers["rate"].format_help().split())
    assert "random, mixed" in rate_help and "oracle:CHECKPOINT" in rate_help


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"prefrl {importlib.metadata.version('prefrl')}"


def test_library_warnings_are_one_line(tmp_path, capsys):
    shadow = tmp_path / "pendulum.yaml"  # a user spec named like the built-in
    shadow.write_text((ENV_DIR / "pendulum.yaml").read_text())
    assert cli.main(["rate", "--env", str(shadow), "--rater", "partial_return", "--pairs", "10"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    notice = f"prefrl rate: warning: env 'pendulum': using {shadow} instead of the built-in spec of that name"
    assert err == [notice]


@pytest.mark.slow  # ~4-8 s: a fresh interpreter imports the package
def test_python_dash_m_prefrl_is_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "prefrl", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"prefrl {cli.prefrl_version()}"


def _list_lines(capsys) -> dict[str, str]:
    assert cli.main(["list"]) == 0
    lines = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  ") and not line.startswith("  ("):
            name, _, text = line.strip().partition(" ")
            lines[name] = text.strip()
    return lines


def test_list_describes_every_env_agent_and_rater(capsys):
    lines = _list_lines(capsys)
    for env in list_env_specs():
        assert lines[env], env
    for agent in list_agents():
        description = get_agent_class(agent).description
        assert description and "\n" not in description
        assert lines[agent] == description
    for rater, text in list_raters().items():
        assert lines[rater] == text


def test_list_survives_an_invalid_env_spec(monkeypatch, capsys):
    def broken(name):
        raise SpecError(f"envs/{name}.yaml: bad key")

    monkeypatch.setattr(rate, "load_env_spec", broken)
    lines = _list_lines(capsys)
    assert lines["pendulum"] == "(invalid spec: envs/pendulum.yaml: bad key)"


def test_agent_description_defaults_to_the_docstring():
    class Documented(Agent):
        """Learns nothing at all.

        Longer explanation that ``prefrl list`` does not show.
        """

    class Described(Documented):
        """Another docstring."""

        description = "explicit one-liner"

    class Silent(Described):
        pass

    assert Documented.description == "Learns nothing at all"
    assert Described.description == "explicit one-liner"
    assert Silent.description == "explicit one-liner"  # no docstring of its own: inherits
