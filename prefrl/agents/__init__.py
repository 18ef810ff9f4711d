"""Every agent: the :class:`Agent` interface, the templates agents build on, and the registry.

Layout (data flows env -> rollout -> rater -> agent)::

    base.py       Agent: the interface every learner implements (learn, predict, save, load_policy)
    registry.py   register_agent / make_agent / get_agent_class / list_agents
    on_policy.py  PPOAgent: the SB3-PPO template of ppo, rm_ppo, heron and spo (+ the progress callback)
    offline.py    OfflineAgent: the template of cpl and bc (gradient steps on a preference dataset)
    ppo.py        PPO on the true reward (reference)
    rm_ppo.py     PPO on a reward model learned from preferences (Christiano et al. 2017)
    heron.py      rm_ppo with HERON's hierarchical comparisons
    spo.py        self-play preference optimisation (+ self_play.py: opponents, win rates, queue)
    cpl.py        contrastive preference learning (offline)
    bc.py         behaviour cloning (offline reference for cpl)
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
