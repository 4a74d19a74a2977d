"""Offline transitions as tensors, served as random batches to the pretraining loop."""

import numpy as np
import torch
from torch.utils.data import IterableDataset

from wsrl_wm.data import load_dataset, mc_returns
from wsrl_wm.data.chunks import chunk_rows

BATCH_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns")


def load_offline_steps(source: str, env: str, discount: float, reward_scale: float = 1.0,
                       reward_bias: float = 0.0, sparse_negative_reward: float | None = None
                       ) -> dict[str, np.ndarray]:
    """The dataset's env steps with rewards scaled as the agent sees them; MC returns follow
    the scaling (recomputed only when the rewards change)."""
    data = load_dataset(source, discount, env=env, sparse_negative_reward=sparse_negative_reward)
    if (reward_scale, reward_bias) != (1.0, 0.0):
        rewards = data["rewards"] * reward_scale + reward_bias
        returns = mc_returns(rewards, data["terminals"], data["timeouts"], discount,
                             sparse_negative_reward)
        data = {**data, "rewards": rewards, "mc_returns": returns}
    return data


def load_offline_tensors(source: str, env: str, discount: float, reward_scale: float = 1.0,
                         reward_bias: float = 0.0, sparse_negative_reward: float | None = None,
                         action_chunk: int = 1, pad_terminal: bool = False
                         ) -> dict[str, torch.Tensor]:
    """`load_offline_steps` as the agent's rows: chunks of `action_chunk` steps
    (wsrl_wm/data/chunks.py; 1: the steps)."""
    steps = load_offline_steps(source, env, discount, reward_scale, reward_bias,
                               sparse_negative_reward)
    return as_tensors(chunk_rows(steps, action_chunk, discount, pad_terminal))


def as_tensors(rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(rows[k], dtype=np.float32)) for k in BATCH_KEYS}


class RandomBatches(IterableDataset):
    """`num_batches` uniform batches (with replacement) from in-memory tensors, seeded."""

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, num_batches: int,
                 seed: int):
        self.tensors, self.batch_size = tensors, batch_size
        self.num_batches, self.seed = num_batches, seed

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        size = len(next(iter(self.tensors.values())))
        for _ in range(self.num_batches):
            idx = torch.randint(size, (self.batch_size,), generator=generator)
            yield {k: v[idx] for k, v in self.tensors.items()}
