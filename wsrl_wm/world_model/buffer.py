"""The model buffer: imagined transitions, first in first out, sized so that it holds about the
last few rollout rounds at the current horizon (MBPO's model pool, docs/world_model.md)."""

import torch

from wsrl_wm.data import ReplayBuffer

TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


class ModelBuffer:
    """A ReplayBuffer of imagined transitions that also stamps each row with the env step of
    the round that made it (for the buffer's mean age) and can be resized between rounds.

    MBPO reallocates its pool whenever the rollout horizon changes (mbpo/algorithms/mbpo.py,
    `_reallocate_model_pool`), keeping the newest rows; `resize` does the same.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.rows = self._empty(capacity)

    def _empty(self, capacity: int) -> ReplayBuffer:
        shapes = {"observations": (self.obs_dim,), "actions": (self.act_dim,), "rewards": (),
                  "next_observations": (self.obs_dim,), "terminals": (), "env_step": ()}
        return ReplayBuffer(capacity, shapes, dtypes={"env_step": torch.long})

    @property
    def capacity(self) -> int:
        return self.rows.capacity

    def __len__(self) -> int:
        return len(self.rows)

    def resize(self, capacity: int) -> None:
        """Keep the newest min(len, capacity) rows in a buffer of `capacity` rows."""
        if capacity != self.capacity:
            newest = self.rows.latest(min(len(self), capacity))
            self.rows = self._empty(capacity)
            self.rows.add(newest)

    def add(self, transitions: dict[str, torch.Tensor], env_step: int) -> None:
        count = len(transitions["rewards"])
        stamp = torch.full((count,), env_step, dtype=torch.long)
        self.rows.add({**{k: transitions[k] for k in TRANSITION_KEYS}, "env_step": stamp})

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = self.rows.sample(batch_size, generator)
        return {k: batch[k] for k in TRANSITION_KEYS}

    def mean_age(self, env_step: int) -> float:
        """Mean number of env steps since the stored rows were imagined (NaN when empty)."""
        stamps = self.rows.storage["env_step"][: len(self)]
        return float(env_step - stamps.double().mean()) if len(self) else float("nan")

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, **self.rows.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rows = self._empty(state["capacity"])
        self.rows.load_state_dict({k: v for k, v in state.items() if k != "capacity"})
