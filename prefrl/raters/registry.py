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
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Entry:
    """One registry name: how to build it, which parameters it takes, what it does."""

    cls: type[Rater]
    params: dict[str, type]
    description: str
    wrapper: bool = False


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

#: raters whose constructor takes the env spec
_NEEDS_SPEC = (IntransitiveRater, NonMarkovianRater, HierarchicalRater, PanelRater, RegretRater)


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
    cls = _ENTRIES[name].cls
    kwargs = dict(params)
    if cls in _NEEDS_SPEC:
        kwargs["env_spec"] = env_spec
    if cls is RegretRater:
        kwargs.update(value_fn=value_fn, q_fn=q_fn)
    return cls(**kwargs)


def _defaults(entry: _Entry) -> str:
    signature = inspect.signature(entry.cls.__init__)
    shown = []
    for key in entry.params:
        default = signature.parameters[key].default
        # None defaults come from the env spec or are measured on the batch
        shown.append(f"{key}={'auto' if default is None else default}")
    return ", ".join(shown)


def list_raters() -> dict[str, str]:
    """``{name: one-line help}`` for every base rater and wrapper (iterating gives the names)."""
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
