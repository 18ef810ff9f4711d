"""Every agent: the :class:`Agent` interface, the templates agents build on, and the registry.

Layout (data flows env -> rollout -> rater -> agent)::

    base.py           Agent: the interface every learner implements (learn, predict, save, load_policy)
    registry.py       register_agent / make_agent / get_agent_class / list_agents
    sb3_agent.py      SB3Agent: what the SB3 templates share (env stack, loop, progress rows, saved policy)
    on_policy.py      PPOAgent: the SB3-PPO template of ppo, rm_ppo, heron and spo
    off_policy.py     SACAgent: the SB3-SAC template of sac and pebble
    learned_reward.py LearnedRewardAgent: what rm_ppo, heron and pebble share (their reward learner)
    offline.py        OfflineAgent: the template of cpl, p_iql and bc (gradient steps on a preference dataset)
    ppo.py            PPO on the true reward (reference)
    rm_ppo.py         PPO on a reward model learned from preferences (Christiano et al. 2017)
    heron.py          rm_ppo with HERON's hierarchical comparisons
    spo.py            self-play preference optimisation (+ self_play.py: opponents, win rates, queue)
    sac.py            SAC on the true reward (reference)
    pebble.py         SAC on a learned reward with unsupervised pre-training and relabelling (Lee et al. 2021)
    cpl.py            contrastive preference learning (offline)
    p_iql.py          a Bradley-Terry reward model, then IQL on the relabelled dataset (offline; + iql.py)
    bc.py             behaviour cloning (offline reference for cpl)

The reward-learning loop rm_ppo, heron and pebble share (queries, labels, refits) is
:mod:`prefrl.reward_learning`; :mod:`prefrl.agents.learned_reward` connects it to an SB3 template.
"""

from prefrl.agents.base import COMMON_DEFAULTS, Agent
from prefrl.agents.on_policy import PPOAgent
from prefrl.agents.registry import get_agent_class, list_agents, make_agent, register_agent

__all__ = [
    "COMMON_DEFAULTS",
    "Agent",
    "PPOAgent",
    "get_agent_class",
    "list_agents",
    "make_agent",
    "register_agent",
]
