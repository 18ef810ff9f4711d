"""Validated loading of the declarative YAML specs in ``envs/`` and ``agents/``, and value checks.

Every problem is reported as one :class:`SpecError` naming the file and the offending key, with a
"did you mean" hint for misspellings. YAML files are read with a loader that refuses duplicate keys (a
repeated key would otherwise silently replace the first). Numbers are checked where they enter:
:func:`check_type` refuses NaN and infinities for floats unless told otherwise, :func:`check_range`
checks an interval, and :func:`check_memory` compares what a large request would allocate with the
machine's memory before anything is allocated.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Self, Union, get_args, get_origin, get_type_hints

import yaml

from prefrl.errors import ConfigError, SpecError

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


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (YAML forbids it; PyYAML keeps the last).

    Keys brought in by a merge (``<<: *anchor``) may be overridden by the mapping's own keys, as YAML
    intends; only keys written twice in the same mapping are refused.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise DuplicateKeyError(key, seen[key] + 1, key_node.start_mark.line + 1)
                    seen[key] = key_node.start_mark.line
                except TypeError:  # an unhashable key: PyYAML reports it below
                    continue
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping repeats a key (raised by :class:`UniqueKeyLoader`)."""

    def __init__(self, key: Any, first_line: int, line: int) -> None:
        super().__init__(f"duplicate key '{key}' on line {line} (first on line {first_line})")
        self.key, self.first_line, self.line = key, first_line, line


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`UniqueKeyLoader` (safe: no Python objects, no duplicate keys)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: safe


def load_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping; errors name the file (and the key and line of a duplicate key)."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, not a YAML file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml_load(f.read())
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except DuplicateKeyError as e:
        raise SpecError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: invalid YAML: {_one_line(str(e))}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (invalid UTF-8)") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


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


def check_type(value: Any, types: type | tuple[type, ...], where: str, finite: bool = True) -> Any:
    """Return ``value`` if it has one of ``types`` (ints are accepted where floats are), else raise.

    :param finite: a float must be finite (NaN and infinities are refused, :func:`check_finite`); pass
        ``False`` where an infinity means something (a rater's ``beta = inf``).
    """
    if isinstance(types, type):
        types = (types,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) <= _MAX_EXACT_FLOAT_INT else float("inf")
        return check_finite(value, where) if finite else value
    if isinstance(value, bool) and bool not in types:
        raise SpecError(f"{where}: expected {'/'.join(t.__name__ for t in types)}, got bool {value!r}")
    if not isinstance(value, types):
        raise SpecError(
            f"{where}: expected {'/'.join(t.__name__ for t in types)}, got {type(value).__name__} {value!r}"
        )
    if finite and isinstance(value, float):
        check_finite(value, where)
    return value


#: larger ints are not converted to float (``float(10**400)`` overflows): they count as infinite
_MAX_EXACT_FLOAT_INT = 10**300


def check_finite(value: float, where: str) -> float:
    """``value`` if it is a finite number; NaN or an infinity raises :class:`SpecError` naming ``where``."""
    if not math.isfinite(value):
        raise SpecError(f"{where}: must be a finite number, got {value}")
    return value


def check_range(
    value: float,
    where: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` if it lies in the interval (``None``: unbounded on that side; NaN never lies in one).

    ``check_range(g, "ppo.gamma", 0, 1, low_open=True)`` accepts ``(0, 1]``.
    """
    inside = value == value  # NaN is outside every interval
    if inside and low is not None:
        inside = value > low if low_open else value >= low
    if inside and high is not None:
        inside = value < high if high_open else value <= high
    if not inside:
        raise SpecError(f"{where}: must lie in {interval_text(low, high, low_open, high_open)}, got {value}")
    return value


def interval_text(
    low: float | None, high: float | None, low_open: bool = False, high_open: bool = False
) -> str:
    """``"(0, 1]"``, ``"[0, inf)"``: how :func:`check_range` names an interval."""
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    low_text = "-inf" if low is None else f"{low:g}"
    high_text = "inf" if high is None else f"{high:g}"
    return f"{left}{low_text}, {high_text}{right}"


def check_int(
    value: Any,
    where: str,
    low: int | None = None,
    high: int | None = None,
    error: type[SpecError] = SpecError,
) -> int:
    """``value`` as an int if it is an integer (not a bool; numpy integers too) within ``[low, high]``.

    :param error: what to raise (a :class:`SpecError` for spec files, a ``ConfigError`` for settings)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            bound = f">= {low:,}"
        elif low is None:
            bound = f"<= {high:,}"
        else:
            bound = f"in [{low:,}, {high:,}]"
        raise error(f"{where}: must be an integer {bound}, got {value:,}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------------


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes (``None`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(num_bytes: float) -> str:
    """``"1.5 GB"``, ``"320 MB"``: a size for messages (powers of 1000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.3g} {unit}"
    return f"{num_bytes:.0f} B"


#: share of the machine's memory one request may plan to use (the rest: Python, torch, the OS, other jobs)
MEMORY_SHARE = 0.5


def check_memory(num_bytes: float, what: str, share: float = MEMORY_SHARE) -> None:
    """Refuse a request whose estimated memory exceeds ``share`` of this machine's memory, before allocating.

    :param num_bytes: the estimate
    :param what: the request, as the user wrote it (``"--pairs 1000000000"``)
    :raises ConfigError: ``"--pairs 1e9 needs ~24 GB, this machine has 16 GB (at most half of it is
        used for one request)"``
    """
    total = machine_memory()
    if total is None or num_bytes <= share * total:
        return
    raise ConfigError(
        f"{what} needs ~{format_bytes(num_bytes)} of memory, this machine has {format_bytes(total)} "
        f"(one request may use at most {share:.0%} of it); ask for less"
    )


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
    checked against the field types (ints are accepted where floats are, floats must be finite; a
    ``Literal`` lists the allowed strings), the intervals of :attr:`ranges` are checked, and
    :meth:`validate` checks the rest. Code reads typed attributes, never casts.
    """

    #: what a ``Literal`` key's values are called in error messages ("unknown schedule 'x'"); default "value"
    value_names: ClassVar[dict[str, str]] = {}
    #: key -> the interval its numbers must lie in, written ``"(0, inf)"``, ``"[0, 1)"``, ``"[1, inf)"``
    #: (a tuple's items each; ``None`` values are not checked)
    ranges: ClassVar[dict[str, str]] = {}

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
        for key, interval in cls.ranges.items():
            value = getattr(section, key)
            for item in value if isinstance(value, tuple) else (value,):
                if item is not None and not isinstance(item, str | bool):
                    check_range(item, f"{where}.{key}", *_parse_interval(interval))
        section.validate(where)
        return section

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), as stored in a run's config.yaml."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}


def _parse_interval(text: str) -> tuple[float | None, float | None, bool, bool]:
    """``"(0, 1]"`` -> ``(0.0, 1.0, True, False)``: :func:`check_range`'s bounds (``inf``: unbounded)."""
    text = text.strip()
    low_text, high_text = text[1:-1].split(",")
    low, high = float(low_text), float(high_text)
    return (
        None if math.isinf(low) else low,
        None if math.isinf(high) else high,
        text[0] == "(",
        text[-1] == ")",
    )


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
            return check_finite(float(value), where)
        except ValueError:
            pass
    return check_type(value, kind, where)
