"""Validated loading of the declarative YAML specs in ``envs/`` and ``agents/``.

Every problem is reported as one :class:`SpecError` naming the file and the offending key, with a
"did you mean" hint for misspellings.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Self, Union, get_args, get_origin, get_type_hints

import yaml

from prefrl.errors import SpecError

#: repository root of a source checkout (holds envs/, agents/, results/); in an installed wheel this is
#: site-packages, so package data is found through :func:`shipped_spec_dir` instead
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: where the wheel carries copies of the top-level ``envs/`` and ``agents/`` folders (setup.py copies them
#: at build time; the checkout's folders stay the source of truth)
PACKAGED_SPECS = Path(__file__).resolve().parent / "_specs"


def shipped_spec_dir(kind: str) -> Path:
    """The built-in ``envs`` or ``agents`` folder: the wheel's packaged copy, else the source checkout's.

    The packaged copy wins when present: in an installed wheel ``PROJECT_ROOT`` is site-packages, whose
    ``envs/`` or ``agents/`` (if any) would belong to some other distribution.
    """
    if kind not in ("envs", "agents"):
        raise ValueError(f"kind must be 'envs' or 'agents', got {kind!r}")
    packaged = PACKAGED_SPECS / kind
    return packaged if packaged.is_dir() else PROJECT_ROOT / kind


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


# --------------------------------------------------------------------------------------------------
# Typed config sections
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfigSection:
    """Base of a typed, frozen config section: one field per key, its default the only default.

    A subclass is a ``@dataclass(frozen=True)`` whose fields are the section's keys, each with its type,
    its default and a ``#:`` comment saying what it is. :meth:`from_mapping` builds one from the merged
    YAML (defaults < per-env entry < user overrides): unknown keys fail with a spelling hint, values are
    checked against the field types (ints are accepted where floats are; a ``Literal`` lists the allowed
    strings), and :meth:`validate` checks ranges. Code reads typed attributes, never casts.
    """

    #: what a ``Literal`` key's values are called in error messages ("unknown schedule 'x'"); default "value"
    value_names: ClassVar[dict[str, str]] = {}

    def validate(self, where: str) -> None:
        """Range and consistency checks of the typed values; raise :class:`SpecError` naming ``where``."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The section's keys, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str) -> Self:
        """The section from a (partial) mapping; missing keys take the field defaults."""
        data = {} if data is None else data
        check_keys(data, cls.keys(), where)
        hints = get_type_hints(cls)
        values = {
            key: _typed(value, hints[key], f"{where}.{key}", cls.value_names.get(key, "value"))
            for key, value in data.items()
        }
        section = cls(**values)
        section.validate(where)
        return section

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), as stored in a run's config.yaml."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}


def _typed(value: Any, kind: Any, where: str, noun: str = "value") -> Any:
    """``value`` checked against the annotation ``kind`` (and converted: int -> float, list -> tuple)."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (UnionType, Union):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _typed(value, option, where, noun)
            except SpecError as e:
                errors.append(str(e))
        raise SpecError(errors[0] if len(errors) == 1 else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            allowed = [str(a) for a in args]
            hint = suggest(str(value), allowed)
            raise SpecError(f"{where}: unknown {noun} '{value}'{hint}; one of {', '.join(allowed)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise SpecError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_typed(item, args[0], where, noun) for item in value)
    if kind is Any:
        return value
    if kind is float and isinstance(value, str):
        try:  # PyYAML 1.1 reads "3e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    return check_type(value, kind, where)
