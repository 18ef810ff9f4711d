"""prefrl: a testbed for preference-based reinforcement learning on continuous control.

The top level gathers what a script needs most; everything else lives in its module::

    import prefrl

    spec = prefrl.load_env_spec("pendulum")               # or a spec file, or "gym:<id>"
    run_dir = prefrl.run_experiment("pendulum", "rm_ppo", "partial_return", seed=0)
    venv = prefrl.load_reward_model(run_dir)               # the learned reward, for any SB3 algorithm

Extending: :func:`register_rater` and :func:`register_agent` (or the ``prefrl.raters`` / ``prefrl.agents`` /
``prefrl.envs`` entry points of an installed package).
"""

from importlib import metadata

from prefrl.agents import register_agent
from prefrl.envs import load_env_spec, make_env, make_vec_env
from prefrl.experiment import run_experiment
from prefrl.raters import make_rater, register_rater
from prefrl.reward_artifact import load_reward_fn, load_reward_model
from prefrl.sweep import run_sweep

try:
    __version__ = metadata.version("prefrl")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "load_env_spec",
    "load_reward_fn",
    "load_reward_model",
    "make_env",
    "make_rater",
    "make_vec_env",
    "register_agent",
    "register_rater",
    "run_experiment",
    "run_sweep",
]
