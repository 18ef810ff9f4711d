"""Oracle experts: a policy trained on the true reward plus its value function, per environment.

Layout (loading never imports training, agents or the config layer)::

    loading.py           load_oracle, Oracle (V*, Q*, skill-level policies), manifest, checkpoint files
    returns.py           Monte-Carlo discounted returns of expert rollouts
    value_correction.py  the residual network that corrects V* towards those returns, and its fit
    quality.py           value_quality (how well V* ranks held-out states), evaluate_oracle
    training.py          train_oracle, correct_value (`prefrl oracle train|correct-value`)
    training_state.py    the resumable state of a SAC oracle run
    checkpoints/<env>/   the shipped experts

This package exports the loading side only; import :mod:`prefrl.oracle.training` to train.
"""

from prefrl.errors import OracleError
from prefrl.oracle.loading import (
    CheckpointInfo,
    Oracle,
    OracleManifest,
    load_oracle,
    oracle_dir,
    oracle_value_functions,
)

__all__ = [
    "CheckpointInfo",
    "Oracle",
    "OracleError",
    "OracleManifest",
    "load_oracle",
    "oracle_dir",
    "oracle_value_functions",
]
