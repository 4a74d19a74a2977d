"""A ring-buffer replay memory of preallocated tensors: batched inserts, uniform sampling."""

import torch

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
    def for_transitions(cls, capacity: int, obs_dim: int, act_dim: int, device="cpu"):
        """The standard (s, a, r, s', done) layout used for online and model data."""
        shapes = {"observations": (obs_dim,), "actions": (act_dim,), "rewards": (),
                  "next_observations": (obs_dim,), "terminals": ()}
        return cls(capacity, shapes, device)

    def __len__(self) -> int:
        return self.size

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Insert rows (leading dim = count); the oldest rows are overwritten once full."""
        count = len(next(iter(batch.values())))
        if count > self.capacity:  # only the newest `capacity` rows can survive
            batch = {k: v[-self.capacity:] for k, v in batch.items()}
            count = self.capacity
        rows = (self.position + torch.arange(count, device=self.device)) % self.capacity
        for key, store in self.storage.items():
            store[rows] = torch.as_tensor(batch[key], device=self.device, dtype=store.dtype)
        self.position = (self.position + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """Uniform sample with replacement over the stored rows."""
        if self.size == 0:
            raise WsrlError("cannot sample from an empty replay buffer")
        idx = torch.randint(self.size, (batch_size,), device=self.device, generator=generator)
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
