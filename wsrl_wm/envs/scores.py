"""D4RL reference returns, so scores are comparable with published offline-to-online results."""

import numpy as np

from wsrl_wm.envs.registry import resolve_env
from wsrl_wm.errors import WsrlError

# (random, expert) episode returns that D4RL uses for its normalised score.
REFERENCE_RETURNS = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


def normalized_score(name: str, returns):
    """100 · (R − R_random) / (R_expert − R_random); `name` is a D4RL name or a gymnasium id."""
    spec = resolve_env(name)
    if spec.sparse:
        raise WsrlError(f"{name!r} is scored by its success rate (wsrl_wm.evaluation.evaluate), "
                        f"not by D4RL reference returns")
    low, high = REFERENCE_RETURNS[spec.family]
    return 100.0 * (np.asarray(returns, dtype=np.float64) - low) / (high - low)
