"""RL agents: losses and update steps on plain tensors (no Lightning, no env)."""

from wsrl_wm.agents.cql import CQL, CQLConfig
from wsrl_wm.agents.sac import SAC, SACConfig

__all__ = ["CQL", "CQLConfig", "SAC", "SACConfig"]
