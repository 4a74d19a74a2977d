"""A ring-buffer replay memory of preallocated tensors: batched inserts, uniform sampling."""

import numpy as np
import torch

from wsrl_wm.data.returns import mc_returns
from wsrl_wm.errors import WsrlError


class ReplayBuffer:
    """Fixed-capacity transition store on one device.

    Inserts write a whole batch of rows with one indexed copy per field (wrapping around when
    full), and sampling draws uniform indices, so neither costs a Python loop per transition nor
    grows with the number of stored rows.
    """

    def __init__(self, capacity: int, shapes: dict[str, tuple[int, ...]], device="cpu",
                 dtypes: dict[str, torch.dtype] | None = None):
        if capacity <= 0:
            raise WsrlError(f"replay buffer capacity must be positive, got {capacity}")
        dtypes = dtypes or {}
        self.capacity = capacity
        self.device = torch.device(device)
        self.storage = {
            key: torch.zeros((capacity, *shape), dtype=dtypes.get(key, torch.float32),
                             device=self.device)
            for key, shape in shapes.items()
        }
        self.position = 0  # next row to write
        self.size = 0

    @classmethod
    def for_transitions(cls, capacity: int, obs_dim: int, act_dim: int, device="cpu",
                        with_mc_returns: bool = False):
        """The standard (s, a, r, s', done) layout used for online and model data, plus each
        row's MC return-to-go when `with_mc_returns` (the Cal-QL bound needs it)."""
        return cls(capacity, transition_shapes(obs_dim, act_dim, with_mc_returns), device)

    def __len__(self) -> int:
        return self.size

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Insert rows (leading dim = count); the oldest rows are overwritten once full."""
        count = len(next(iter(batch.values())))
        if count > self.capacity:  # only the newest `capacity` rows can survive
            batch = {k: v[-self.capacity:] for k, v in batch.items()}
            count = self.capacity
        if self.position + count <= self.capacity:  # a slice copies faster than an index
            rows = slice(self.position, self.position + count)
        else:
            rows = (self.position + torch.arange(count, device=self.device)) % self.capacity
        for key, store in self.storage.items():
            store[rows] = torch.as_tensor(batch[key], device=self.device, dtype=store.dtype)
        self.position = (self.position + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               first: int | None = None) -> dict:
        """Uniform sample with replacement over the stored rows, or over the `first` rows ever
        inserted (while none of them has been overwritten)."""
        if self.size == 0:
            raise WsrlError("cannot sample from an empty replay buffer")
        high = self.size
        if first is not None:
            if self.size == self.capacity:
                raise WsrlError(f"the buffer of {self.capacity} rows is full, so its first "
                                f"{first} rows may be overwritten; raise its capacity")
            high = min(first, self.size)
        idx = torch.randint(high, (batch_size,), device=self.device, generator=generator)
        return {key: store[idx] for key, store in self.storage.items()}

    def latest(self, count: int) -> dict:
        """The `count` most recently inserted rows (fewer if the buffer holds fewer)."""
        count = min(count, self.size)
        rows = (self.position - count + torch.arange(count, device=self.device)) % self.capacity
        return {key: store[rows] for key, store in self.storage.items()}

    def state_dict(self) -> dict:
        """Only the filled rows, so a checkpoint does not store empty capacity."""
        return {"position": self.position, "size": self.size,
                "storage": {k: v[: self.size].clone() for k, v in self.storage.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.position, self.size = state["position"], state["size"]
        for key, rows in state["storage"].items():
            self.storage[key][: self.size] = rows.to(self.device)


class EpisodeReplayBuffer(ReplayBuffer):
    """The online buffer of a run that keeps the Cal-QL bound online: every row also gets its
    episode's Monte-Carlo return-to-go, computed when the episode ends (`end_episode`).

    A return is only known once its episode has ended, so `sample` and `latest` serve finished
    episodes only: the rows of the episode in progress (the newest `open` rows) wait. This is
    the official WSRL's `ReplayBufferMC` (wsrl/data/replay_buffer.py: returns computed at
    `dones`, sampling from `_allow_idxs`, the finished rows), on a ring buffer.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, discount: float,
                 sparse_negative_reward: float | None = None, device="cpu"):
        super().__init__(capacity, transition_shapes(obs_dim, act_dim, True), device)
        self.discount, self.sparse_negative_reward = discount, sparse_negative_reward
        self.open = 0  # rows of the episode in progress: the newest ones

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Insert rows of the episode in progress (their MC return is set at its end)."""
        count = len(batch["rewards"])
        super().add({**batch, "mc_returns": torch.zeros(count)})
        self.open = min(self.open + count, self.size)

    def end_episode(self, returns: np.ndarray | None = None) -> None:
        """The episode in progress ended (terminal or time limit): write its rows' returns,
        computed from the rows' rewards, or given, one per row it added, oldest first (chunk
        rows, whose rewards are h steps each: `returns_to_go` of the episode's steps)."""
        rows = self._rows_before(self.position, self.open)
        if returns is None:
            returns = self.returns_to_go(self.storage["rewards"][rows].double().cpu().numpy())
        else:
            returns = returns[len(returns) - self.open:]  # the rows not overwritten since
        self.storage["mc_returns"][rows] = torch.as_tensor(returns, device=self.device)
        self.open = 0

    def returns_to_go(self, rewards: np.ndarray) -> np.ndarray:
        """Each step's discounted return-to-go in one finished episode of `rewards`."""
        return mc_returns(rewards, rewards * 0, rewards * 0, self.discount,
                          self.sparse_negative_reward)  # its last row closes the episode

    @property
    def finished(self) -> int:
        """Stored rows whose episode has ended (the ones `sample` draws from)."""
        return self.size - self.open

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """Uniform with replacement over the rows of finished episodes."""
        if self.finished == 0:
            raise WsrlError("no finished episode in the replay buffer yet: the Cal-QL bound "
                            "needs the MC return of every sampled row")
        oldest = self.position - self.size
        offsets = torch.randint(self.finished, (batch_size,), device=self.device,
                                generator=generator)
        idx = (oldest + offsets) % self.capacity
        return {key: store[idx] for key, store in self.storage.items()}

    def latest(self, count: int) -> dict:
        """The `count` newest rows of finished episodes."""
        rows = self._rows_before(self.position - self.open, min(count, self.finished))
        return {key: store[rows] for key, store in self.storage.items()}

    def _rows_before(self, end: int, count: int) -> torch.Tensor:
        return (end - count + torch.arange(count, device=self.device)) % self.capacity

    def state_dict(self) -> dict:
        return {**super().state_dict(), "open": self.open}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.open = state["open"]


def transition_shapes(obs_dim: int, act_dim: int, with_mc_returns: bool) -> dict:
    shapes = {"observations": (obs_dim,), "actions": (act_dim,), "rewards": (),
              "next_observations": (obs_dim,), "terminals": ()}
    return {**shapes, "mc_returns": ()} if with_mc_returns else shapes
