"""Data sources (D4RL hdf5, Minari, own collector files) and replay buffers."""

from wsrl_wm.data.d4rl_format import read_d4rl_file, write_d4rl_file
from wsrl_wm.data.datasets import TRANSITION_KEYS, check_matches_env, load_dataset
from wsrl_wm.data.replay import EpisodeReplayBuffer, ReplayBuffer
from wsrl_wm.data.returns import mc_returns

__all__ = [
    "TRANSITION_KEYS", "EpisodeReplayBuffer", "ReplayBuffer", "check_matches_env",
    "load_dataset", "mc_returns", "read_d4rl_file", "write_d4rl_file",
]
