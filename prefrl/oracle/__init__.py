"""Oracle experts: a policy trained on the true reward plus its value function, per environment.

Layout (loading never imports training, agents or the config layer)::

    loading.py           load_oracle, Oracle (V*, Q*, skill-level policies), manifest, checkpoint files,
                         where oracles live (user folder before shipped) and the completeness check
    storage.py           staged, sealed, atomically renamed oracle folders; install_oracle
    returns.py           Monte-Carlo discounted returns of expert rollouts
    value_correction.py  the residual network that corrects V* towards those returns, and its fit
    quality.py           value_quality (how well V* ranks held-out states), evaluate_oracle
    training.py          train_oracle, correct_value (`prefrl oracle train|correct-value`)
    training_state.py    the resumable state of a SAC oracle run
    checkpoints/<env>/   the shipped experts (written by `prefrl oracle install` only)

Where an env's oracle is loaded from, first match wins: an explicit folder; the user folder
``$PREFRL_ORACLE_DIR/<spec name>`` (default ``${XDG_CACHE_HOME:-~/.cache}/prefrl/oracles/<spec name>``),
where ``prefrl oracle train`` writes; the shipped ``checkpoints/<env>``. Only complete folders load.

This package exports the loading side only; import :mod:`prefrl.oracle.training` to train and
:mod:`prefrl.oracle.storage` to install.
"""

from prefrl.errors import OracleError
from prefrl.oracle.loading import (
    CheckpointInfo,
    Oracle,
    OracleManifest,
    load_oracle,
    oracle_dir,
    oracle_value_functions,
    resolve_oracle_dir,
    shipped_oracle_dir,
    user_oracle_dir,
    user_oracle_root,
)

__all__ = [
    "CheckpointInfo",
    "Oracle",
    "OracleError",
    "OracleManifest",
    "load_oracle",
    "oracle_dir",
    "oracle_value_functions",
    "resolve_oracle_dir",
    "shipped_oracle_dir",
    "user_oracle_dir",
    "user_oracle_root",
]
