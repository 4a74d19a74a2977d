"""Action-chunk rows (Q-chunking): one row per start step t of h consecutive steps, so that a
critic on chunks backs up over h steps with γ^h (docs/beyond_wsrl.md, "Action chunking").

A row holds s_t, the actions a_t … a_{t+h−1} flattened, the discounted reward sum
Σ_{k<h} γ^k r_{t+k}, s_{t+h} and whether the episode terminated within the window. At an
episode's end:
- a window cut short by a *truncation* (time limit, or the end of the data) is dropped: it has
  no s_{t+h} to bootstrap from;
- a window cut short by a *terminal* is dropped too (Q-chunking's rule: its `valid` mask
  leaves every window that crosses an episode end out of the critic loss), or with
  `pad_terminal` kept: its target is its discounted reward sum alone, and the missing actions
  repeat the last executed one (never executed, only fed to the critic).
A window whose last step is the terminal is whole and kept under both rules. So every
non-terminal row spans exactly h steps and the backup's discount is always γ^h.
"""

import numpy as np

from wsrl_wm.data.returns import episode_ends

STEP_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


def chunk_starts(terminals: np.ndarray, timeouts: np.ndarray, h: int,
                 pad_terminal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(the start steps whose window is kept, the last step of each one's episode), for steps
    in collection order; the last step closes an episode (by truncation unless terminal)."""
    terminals = np.asarray(terminals).astype(bool)
    end_rows = np.flatnonzero(episode_ends(terminals, timeouts))
    steps = np.arange(len(terminals))
    episode_end = end_rows[np.searchsorted(end_rows, steps)]
    keep = steps + h - 1 <= episode_end
    if pad_terminal:
        keep |= terminals[episode_end]
    return steps[keep], episode_end[keep]


def chunk_rows(steps: dict[str, np.ndarray], h: int, discount: float,
               pad_terminal: bool = False) -> dict[str, np.ndarray]:
    """The chunk rows of consecutive `steps` (the `STEP_KEYS`, `timeouts`, and optionally
    `mc_returns`: a chunk row's Cal-QL bound is the return-to-go from its first step, which the
    γ^h backup estimates too). h = 1: the steps themselves."""
    if h == 1:
        return {k: steps[k] for k in (*STEP_KEYS, "mc_returns") if k in steps}
    starts, episode_end = chunk_starts(steps["terminals"], steps["timeouts"], h, pad_terminal)
    offsets = np.arange(h)
    window = starts[:, None] + offsets
    executed = window <= episode_end[:, None]
    window = np.minimum(window, episode_end[:, None])  # repeats the last executed step
    last = window[:, -1]
    actions = np.asarray(steps["actions"])
    rewards = np.asarray(steps["rewards"])
    discounted = rewards.astype(np.float64)[window] * discount ** offsets * executed
    rows = {
        "observations": np.asarray(steps["observations"])[starts],
        "actions": actions[window].reshape(len(starts), h * actions.shape[-1]),
        "rewards": discounted.sum(axis=1).astype(rewards.dtype),
        "next_observations": np.asarray(steps["next_observations"])[last],
        "terminals": np.asarray(steps["terminals"])[last],
    }
    if "mc_returns" in steps:
        rows["mc_returns"] = np.asarray(steps["mc_returns"])[starts]
    return rows
