"""The off-policy reference agent: SB3 SAC on the true env reward (the upper bound beside pebble, which
runs the same SAC on a reward learned from preferences)."""

from __future__ import annotations

from prefrl.agents.off_policy import SACAgent
from prefrl.agents.registry import register_agent


@register_agent
class TrueRewardSAC(SACAgent):
    """SAC optimising the environment's true reward; needs no rater and asks no queries."""

    name = "sac"
    description = "SAC on the true env reward (no rater, no queries): the off-policy reference upper bound"
    requires_rater = False
