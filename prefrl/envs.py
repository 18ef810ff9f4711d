"""Environment specs (envs/*.yaml), env construction and the reward-factor wrapper.

API CONTRACT (implementation in progress by the envs helper):

    @dataclass(frozen=True) class FactorSpec: name: str; sign: float; source: str; description: str; in_reward: bool
    @dataclass(frozen=True) class CriterionSpec: name: str; weights: dict[str, float]   # weights on factor utilities
    @dataclass(frozen=True) class EnvSpec:
        name: str                      # spec name == yaml file stem, e.g. "pendulum", "halfcheetah"
        gym_id: str                    # e.g. "Pendulum-v1"
        kwargs: dict                   # gymnasium.make kwargs
        horizon: int                   # fixed episode length (TimeLimit), no early termination by default
        segment_length: int            # default H for segments
        factors: tuple[FactorSpec, ...]
        heron_ranking: tuple[str, ...] # factor names, most important first
        heron_margins: tuple[float, ...]  # sigma_l per level
        criteria: tuple[CriterionSpec, ...]  # K >= 3 intransitive criteria
        non_markovian: dict            # {"statistic": "min"|"max"|"mean"|"fraction_above"|..., "factor": name, ...}
        random_return: float | None
        oracle_return: float | None
        oracle: dict                   # {"algo": ..., "checkpoint": path or None}
        path: Path                     # the YAML file it came from
        @property factor_names -> list[str]; factor_signs -> np.ndarray [F]; factor_index(name) -> int
        normalise(returns) -> np.ndarray  (100 * (R - R_rand) / (R_oracle - R_rand); raises if unset)

    load_env_spec(name_or_path: str) -> EnvSpec      # accepts "pendulum", "Pendulum-v1", or a path
    list_env_specs() -> list[str]
    make_env(spec, seed=None, render_mode=None) -> gym.Env   # TimeLimit(horizon) + RewardFactorWrapper
    make_vec_env(spec, n_envs=1, seed=0, vec_env_cls=DummyVecEnv) -> VecEnv
    RewardFactorWrapper(env, spec): info["factors"] = np.ndarray [F] (raw values in spec order)
"""
