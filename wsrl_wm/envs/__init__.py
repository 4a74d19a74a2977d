"""Environment construction, name mapping, D4RL normalised scores and termination functions."""

from wsrl_wm.envs.make import env_dims, make_env
from wsrl_wm.envs.registry import EnvSpec, resolve_env
from wsrl_wm.envs.scores import REFERENCE_RETURNS, normalized_score
from wsrl_wm.envs.termination import termination_fn

__all__ = [
    "EnvSpec", "REFERENCE_RETURNS", "env_dims", "make_env", "normalized_score", "resolve_env",
    "termination_fn",
]
