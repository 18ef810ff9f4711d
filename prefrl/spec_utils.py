"""Validated loading of the declarative YAML specs in ``envs/`` and ``agents/``.

Every problem is reported as one :class:`SpecError` naming the file and the offending key, with a
"did you mean" hint for misspellings.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from prefrl.errors import SpecError

#: repository root (holds envs/ and agents/); specs are looked up here
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def suggest(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` when ``word`` is close to one of ``choices``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping; errors name the file."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def check_keys(
    mapping: Mapping[str, Any],
    allowed: Iterable[str],
    where: str,
    required: Iterable[str] = (),
) -> None:
    """Reject unknown keys (with a spelling hint) and missing required keys."""
    if not isinstance(mapping, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            raise SpecError(
                f"{where}: unknown key '{key}'{suggest(str(key), allowed)}; allowed: {', '.join(allowed)}"
            )
    for key in required:
        if key not in mapping:
            raise SpecError(f"{where}: missing required key '{key}'")


def check_type(value: Any, types: type | tuple[type, ...], where: str) -> Any:
    """Return ``value`` if it has one of ``types`` (ints are accepted where floats are), else raise."""
    if isinstance(types, type):
        types = (types,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in types:
        raise SpecError(f"{where}: expected {'/'.join(t.__name__ for t in types)}, got bool {value!r}")
    if not isinstance(value, types):
        raise SpecError(
            f"{where}: expected {'/'.join(t.__name__ for t in types)}, got {type(value).__name__} {value!r}"
        )
    return value


def deep_update(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (nested mappings merge, others replace)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_update(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def parse_value(raw: str) -> int | float | bool | str:
    """``"3" -> 3``, ``"0.5" -> 0.5``, ``"inf" -> inf``, ``"true" -> True``, anything else a string."""
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        return raw.strip()
