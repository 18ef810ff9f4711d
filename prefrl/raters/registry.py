"""Build raters from short spec strings.

Grammar::

    spec    := part ("+" part)*
    part    := name [":" key "=" value ("," key "=" value)*]

The first part names a base rater; every following part names a noise wrapper applied on top, left to
right: ``regret+myopic:gamma=0.9+mistake:eps=0.2`` is ``Mistake(Myopic(Regret, 0.9), 0.2)``. A spec that
starts with a wrapper wraps ``partial_return``: ``mistake:eps=0.2`` is ``Mistake(PartialReturn, 0.2)``.
Values are parsed as int, float (``inf`` allowed), bool (``true``/``false``) or string, then checked
against the parameter's type. ``oracle`` is B-Pref's noise-free teacher (= ``partial_return``);
B-Pref's other presets are the wrappers with their defaults (``stoc``, ``mistake``, ``skip``, ``equal``,
``myopic``).

Your own raters: :func:`register_rater` adds a name from Python; a third-party package adds one with an
entry point in the group ``prefrl.raters`` (``my_rater = "my_package.raters:MyRater"``: a
:class:`~prefrl.raters.base.Rater` subclass or a factory returning one), loaded on first use. Either is
then usable in every spec string, CLI command and sweep.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prefrl.envs import load_env_spec
from prefrl.errors import RaterError
from prefrl.raters.base import Rater
from prefrl.raters.hierarchical import HierarchicalRater
from prefrl.raters.intransitive import IntransitiveRater
from prefrl.raters.noise import Equal, Mistake, Myopic, Skip, Stochastic
from prefrl.raters.non_markovian import NonMarkovianRater
from prefrl.raters.panel import PanelRater
from prefrl.raters.partial_return import PartialReturnRater
from prefrl.raters.regret import QFn, RegretRater, ValueFn
from prefrl.spec_utils import parse_value, suggest

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec


#: entry-point group of third-party raters
ENTRY_POINT_GROUP = "prefrl.raters"
#: parameter types a spec string can give
_SPEC_TYPES = (float, int, bool, str)


@dataclass(frozen=True)
class _Entry:
    """One registry name: how to build it, which parameters it takes, what it does.

    ``cls`` is a :class:`Rater` subclass or a factory returning a rater; ``needs_spec``: it takes the env
    spec as the keyword ``env_spec``; a ``wrapper`` takes the inner rater as its first argument.
    """

    cls: Callable[..., Rater]
    params: dict[str, type]
    description: str
    wrapper: bool = False

    @property
    def needs_spec(self) -> bool:
        """The factory takes the env spec (keyword ``env_spec``)."""
        return "env_spec" in inspect.signature(self.cls).parameters


_ENTRIES: dict[str, _Entry] = {
    "partial_return": _Entry(
        PartialReturnRater,
        {"beta": float, "discount": float, "soft": bool},
        "sum of rewards, P = sigmoid(beta * dS) (Christiano et al.)",
    ),
    "oracle": _Entry(PartialReturnRater, {}, "B-Pref's noise-free teacher (= partial_return)"),
    "regret": _Entry(
        RegretRater,
        {"form": str, "gamma": float, "beta": float, "soft": bool},
        "negated regret under the oracle's V*/Q* (Knox et al.; CPL)",
    ),
    "intransitive": _Entry(
        IntransitiveRater, {"beta": float}, "majority vote of the env's K >= 3 criteria (cycles)"
    ),
    "non_markovian": _Entry(
        NonMarkovianRater,
        {"statistic": str, "factor": str, "threshold": float, "beta": float, "soft": bool},
        "segment statistic (min/max/mean/final/fraction_above) of one factor",
    ),
    "hierarchical": _Entry(
        HierarchicalRater,
        {"margin": float, "drop_ties": bool},
        "HERON: ranked factors compared in order with margins",
    ),
    "panel": _Entry(
        PanelRater,
        {"mode": str, "num_members": int, "spread": float, "seed": int},
        "population of reward weightings; random member or majority",
    ),
    "stoc": _Entry(
        Stochastic, {"beta": float, "soft": bool}, "B-Pref stochastic: Bradley-Terry choice", wrapper=True
    ),
    "mistake": _Entry(Mistake, {"eps": float}, "B-Pref mistake: flip labels with prob eps", wrapper=True),
    "skip": _Entry(
        Skip,
        {"eps": float, "margin": float, "threshold": float},
        "B-Pref skip: drop pairs of two low-return segments",
        wrapper=True,
    ),
    "equal": _Entry(
        Equal, {"eps": float, "margin": float}, "B-Pref equal: tie when |dS| < eps * |margin|", wrapper=True
    ),
    "myopic": _Entry(Myopic, {"gamma": float}, "B-Pref myopic: step t weighted gamma^(H-1-t)", wrapper=True),
}

_BUILTIN_NAMES = frozenset(_ENTRIES)
_plugins_loaded = False


def _signature_params(factory: Callable[..., Rater], wrapper: bool) -> dict[str, type]:
    """Spec-string parameters of ``factory``: its keyword parameters annotated float, int, bool or str."""
    hints = inspect.get_annotations(factory.__init__ if isinstance(factory, type) else factory, eval_str=True)
    params = {}
    for i, (key, parameter) in enumerate(inspect.signature(factory).parameters.items()):
        skipped = (wrapper and i == 0) or key == "env_spec"
        if skipped or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if hints.get(key) in _SPEC_TYPES:
            params[key] = hints[key]
    return params


def register_rater(
    name: str,
    factory: Callable[..., Rater],
    params: Mapping[str, type] | None = None,
    description: str = "",
    wrapper: bool = False,
) -> None:
    """Make ``name`` usable in rater specs (``make_rater``, ``prefrl run --rater``, sweeps).

    :param name: the spec name; must not be taken (built-in names cannot be replaced)
    :param factory: a :class:`Rater` subclass or a callable returning a rater; it receives the spec
        string's parameters as keywords, plus ``env_spec=`` if it has such a parameter, plus the inner
        rater as its first argument if ``wrapper``
    :param params: ``{parameter: float | int | bool | str}`` accepted in spec strings (default: the
        factory's keyword parameters annotated with one of those types)
    :param description: one line for ``prefrl list`` (default: the first line of the factory's docstring)
    :param wrapper: the factory wraps another rater (like ``mistake``)
    :raises ValueError: a bad name, a taken name, or a parameter type a spec string cannot give
    """
    _load_plugins()
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"rater name must be an identifier (letters, digits, _), got {name!r}")
    if name in _BUILTIN_NAMES or (name in _ENTRIES and _ENTRIES[name].cls is not factory):
        raise ValueError(f"rater name '{name}' is already registered")
    if not callable(factory):
        raise ValueError(f"rater factory for '{name}' must be a Rater class or a callable, got {factory!r}")
    params = dict(_signature_params(factory, wrapper) if params is None else params)
    bad = {k: t for k, t in params.items() if t not in _SPEC_TYPES}
    if bad:
        raise ValueError(f"rater '{name}': spec parameters must be float, int, bool or str, got {bad}")
    doc = (inspect.getdoc(factory) or "").strip().splitlines()
    _ENTRIES[name] = _Entry(
        cls=factory,
        params=params,
        description=description or (doc[0] if doc else f"{name} (user rater)"),
        wrapper=wrapper,
    )


def _load_plugins() -> None:
    """Register the raters of installed packages (``prefrl.raters`` entry points), once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_rater(entry.name, entry.load())
        except Exception as e:  # a third-party plugin's failure must not break the built-ins
            warnings.warn(f"rater plugin '{entry.name}' ({entry.value}) not loaded: {e}", stacklevel=2)


def _coerce(value: int | float | bool | str, kind: type, name: str, key: str, raw: str) -> Any:
    """Check a parsed value against the parameter's type (ints are accepted for floats)."""
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if kind is str:
        return raw.strip()
    what = {float: "a number", int: "an integer", bool: "true or false"}[kind]
    raise RaterError(f"{name}: parameter '{key}' must be {what}, got '{raw}'")


def _parse_part(part: str, full: str) -> tuple[str, dict[str, Any]]:
    """``"name:k=v,k=v"`` -> ``(name, {k: typed v})``; errors name the part and the whole spec."""
    name, _, arg_text = part.partition(":")
    name = name.strip()
    if not name:
        raise RaterError(f"empty rater name in '{full}' (expected name or name:key=value,...)")
    _load_plugins()
    if name not in _ENTRIES:
        raise RaterError(f"unknown rater '{name}'{suggest(name, _ENTRIES)}; available: {', '.join(_ENTRIES)}")
    entry = _ENTRIES[name]
    params: dict[str, Any] = {}
    if not arg_text.strip():
        return name, params
    for item in arg_text.split(","):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key or not raw.strip():
            raise RaterError(f"{name}: malformed parameter '{item.strip()}' in '{full}' (expected key=value)")
        if key not in entry.params:
            valid = ", ".join(entry.params) if entry.params else "none"
            raise RaterError(
                f"{name}: unknown parameter '{key}'{suggest(key, entry.params)}; valid parameters: {valid}"
            )
        if key in params:
            raise RaterError(f"{name}: parameter '{key}' given twice in '{full}'")
        params[key] = _coerce(parse_value(raw), entry.params[key], name, key, raw)
    return name, params


def make_rater(
    spec: str,
    env_spec: EnvSpec | str | None = None,
    value_fn: ValueFn | None = None,
    q_fn: QFn | None = None,
) -> Rater:
    """Build a rater from a spec string such as ``"regret+myopic:gamma=0.9+mistake:eps=0.2"``.

    :param spec: the rater spec (grammar in the module docstring; names in :func:`list_raters`).
    :param env_spec: the env spec (or its name); needed by the factor-based raters and by the default
        value function of ``regret``.
    :param value_fn: ``V*`` for ``regret`` (``obs [N, obs_dim] -> [N]``).
    :param q_fn: ``Q*`` for ``regret`` with ``form=advantage`` (``obs, act -> [N]``).
    :raises RaterError: unknown name or parameter, bad value, or an invalid composition.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise RaterError(f"a rater spec must be a non-empty string, got {spec!r}")
    if isinstance(env_spec, str):
        env_spec = load_env_spec(env_spec)
    parts = [_parse_part(part, spec) for part in spec.split("+")]
    first_name, first_params = parts[0]
    if _ENTRIES[first_name].wrapper:
        rater: Rater = PartialReturnRater()
    else:
        rater = _build_base(first_name, first_params, env_spec, value_fn, q_fn)
        parts = parts[1:]
    for name, params in parts:
        entry = _ENTRIES[name]
        if not entry.wrapper:
            raise RaterError(
                f"'{name}' is a base rater and can only come first in '{spec}'; the parts after the "
                f"first must be wrappers ({', '.join(n for n, e in _ENTRIES.items() if e.wrapper)})"
            )
        rater = entry.cls(rater, **params)  # type: ignore[call-arg]
    return rater


def _build_base(
    name: str,
    params: dict[str, Any],
    env_spec: EnvSpec | None,
    value_fn: ValueFn | None,
    q_fn: QFn | None,
) -> Rater:
    entry = _ENTRIES[name]
    cls = entry.cls
    kwargs = dict(params)
    if entry.needs_spec:
        kwargs["env_spec"] = env_spec
    if cls is RegretRater:
        kwargs.update(value_fn=value_fn, q_fn=q_fn)
    return cls(**kwargs)


def _defaults(entry: _Entry) -> str:
    signature = inspect.signature(entry.cls)
    shown = []
    for key in entry.params:
        parameter = signature.parameters.get(key)
        default = None if parameter is None or parameter.default is parameter.empty else parameter.default
        # None defaults come from the env spec or are measured on the batch
        shown.append(f"{key}={'auto' if default is None else default}")
    return ", ".join(shown)


def list_raters() -> dict[str, str]:
    """``{name: one-line help}`` for every base rater and wrapper (iterating gives the names)."""
    _load_plugins()
    out = {}
    for name, entry in _ENTRIES.items():
        kind = "wrapper" if entry.wrapper else "rater"
        params = _defaults(entry)
        out[name] = f"{kind}: {entry.description}" + (f" [{params}]" if params else "")
    return out


def describe_raters() -> str:
    """A help text: one line per rater name, then the spec grammar."""
    rows = list_raters()
    width = max(len(n) for n in rows)
    lines = [f"  {name:<{width}}  {text}" for name, text in rows.items()]
    lines.append(
        "spec: name[:key=value,...][+wrapper[:key=value,...]]...  e.g. regret+myopic:gamma=0.9+mistake"
    )
    return "\n".join(lines)
