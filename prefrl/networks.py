"""Network building blocks shared by policies and reward models: the one table of activation functions.

Configs name activations by string (``policy_kwargs.activation_fn: relu``, ``reward_model.activation:
tanh``); :func:`activation` resolves a name to its torch module class, :func:`numpy_activation` to the
same function on numpy arrays (the reward wrapper evaluates reward models in numpy on the hot path).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from torch import nn

from prefrl.errors import SpecError
from prefrl.spec_utils import suggest

__all__ = ["ACTIVATIONS", "activation", "numpy_activation", "sb3_policy_kwargs"]

#: activation functions accepted by name
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

_ERF = np.vectorize(math.erf, otypes=[np.float64])

#: the same functions on numpy arrays (torch's default parameters: LeakyReLU slope 0.01, ELU alpha 1)
_NUMPY: dict[type[nn.Module], Callable[[np.ndarray], np.ndarray]] = {
    nn.Tanh: np.tanh,
    nn.ReLU: lambda x: np.maximum(x, 0.0),
    nn.ELU: lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    nn.LeakyReLU: lambda x: np.where(x > 0, x, 0.01 * x),
    nn.GELU: lambda x: 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0))),
    nn.SiLU: lambda x: x / (1.0 + np.exp(-x)),
}


def activation(name: str, where: str) -> type[nn.Module]:
    """The torch module class of the activation called ``name`` (case-insensitive).

    :param where: the config key being read, for the error message
    :raises SpecError: unknown name (with a spelling hint and the allowed names)
    """
    key = str(name).lower()
    if key not in ACTIVATIONS:
        allowed = ", ".join(ACTIVATIONS)
        raise SpecError(
            f"{where}: unknown activation '{name}'{suggest(key, ACTIVATIONS)}; allowed: {allowed}"
        )
    return ACTIVATIONS[key]


def numpy_activation(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The numpy function computing what the activation ``module`` computes."""
    return _NUMPY[type(module)]


def sb3_policy_kwargs(policy_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` from a config's: ``activation_fn`` is a name (``"tanh"``, ``"relu"``, ...)."""
    kwargs = dict(policy_kwargs)
    if isinstance(kwargs.get("activation_fn"), str):
        kwargs["activation_fn"] = activation(kwargs["activation_fn"], "policy_kwargs.activation_fn")
    return kwargs
