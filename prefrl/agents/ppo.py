"""The reference agent: SB3 PPO on the true env reward (the upper bound every preference agent is
compared with, and the normalised-score anchor)."""

from __future__ import annotations

from prefrl.agents.on_policy import PPOAgent
from prefrl.agents.registry import register_agent


@register_agent
class TrueRewardPPO(PPOAgent):
    """PPO optimising the environment's true reward; needs no rater and asks no queries."""

    name = "ppo"
    description = "PPO on the true env reward (no rater, no queries): the reference upper bound"
    requires_rater = False
