"""Environment construction, name mapping and D4RL normalised scores."""

from wsrl_wm.envs.make import env_dims, make_env
from wsrl_wm.envs.registry import EnvSpec, resolve_env
from wsrl_wm.envs.scores import REFERENCE_RETURNS, normalized_score

__all__ = [
    "EnvSpec", "REFERENCE_RETURNS", "env_dims", "make_env", "normalized_score", "resolve_env",
]
