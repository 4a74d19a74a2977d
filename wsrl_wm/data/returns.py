"""Monte-Carlo return-to-go per trajectory, as Cal-QL needs for its lower bound on Q."""

import numpy as np


def episode_ends(terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Boolean mask of rows that end an episode; the last row always closes the final one."""
    ends = np.logical_or(terminals, timeouts).astype(bool)
    if len(ends):
        ends[-1] = True
    return ends


def mc_returns(
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    discount: float = 0.99,
    sparse_negative_reward: float | None = None,
) -> np.ndarray:
    """Discounted reward-to-go within each episode.

    A truncated episode is summed up to its last step (no bootstrap: it is not a terminal). When
    `sparse_negative_reward` is given, an episode whose rewards all equal it (the goal was never
    reached) gets the infinite-horizon value r_neg / (1 - discount) at every step, as in Cal-QL.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(rewards)
    ends = episode_ends(terminals, timeouts)
    start = 0
    for end in np.flatnonzero(ends):
        segment = rewards[start : end + 1]
        if sparse_negative_reward is not None and np.allclose(segment, sparse_negative_reward):
            out[start : end + 1] = sparse_negative_reward / (1.0 - discount)
        else:
            running = 0.0
            for i in range(end, start - 1, -1):
                running = rewards[i] + discount * running
                out[i] = running
        start = end + 1
    return out.astype(np.float32)
