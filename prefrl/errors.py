"""The errors prefrl raises for bad input, one family.

Every error a user can cause (an unknown env, a misspelled config key, a corrupted dataset, a missing
oracle, a foreign run directory, ...) is a :class:`PrefrlError`. The command line prints such an error as
one line and exits with status 2; any other exception is a bug and keeps its traceback. Library code that
detects bad input raises the most specific subclass below; an assertion or a plain ``RuntimeError`` means
prefrl itself is wrong.

The subclasses also derive from the built-in exception a caller would expect (``ValueError`` for bad
values, ``RuntimeError`` for a missing rendering backend, ``ImportError`` for a missing optional extra),
so ``except ValueError`` keeps working around library calls.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatasetError",
    "MissingExtraError",
    "OracleError",
    "PrefrlError",
    "RaterError",
    "RenderError",
    "RunDirError",
    "ShapeError",
    "SpecError",
    "TrainingStateError",
]


class PrefrlError(Exception):
    """Base class of every error caused by bad input rather than by a bug in prefrl."""


class SpecError(PrefrlError, ValueError):
    """An invalid spec file, spec key or spec value (``envs/*.yaml``, ``agents/*.yaml``)."""


class ConfigError(SpecError):
    """An invalid agent config value, config override or budget."""


class RaterError(PrefrlError, ValueError):
    """An invalid rater name, parameter or composition."""


class ShapeError(PrefrlError, ValueError):
    """Arrays with inconsistent shapes, or values outside their allowed range (segments, pairs, labels)."""


class DatasetError(PrefrlError, ValueError):
    """A missing, corrupted or mismatching preference dataset file."""


class OracleError(PrefrlError, ValueError):
    """A missing or unusable oracle checkpoint, or an invalid oracle setting."""


class TrainingStateError(OracleError):
    """A missing, damaged or mismatching saved oracle training state."""


class RunDirError(PrefrlError, ValueError):
    """A run directory that cannot be used: not a run directory, not writable, or its files are damaged."""


class RenderError(PrefrlError, RuntimeError):
    """No headless OpenGL backend works for rendering (names what to install)."""


class MissingExtraError(PrefrlError, ImportError):
    """An optional extra (e.g. ``prefrl[ray]``) is needed but not installed."""
