"""Shared test fixtures: hand-made D4RL-format hdf5 files written with plain h5py (no library
code), a collected dataset and a tiny pretrained checkpoint."""

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

# A plain `pytest` (without the Makefile's WANDB_MODE=disabled) must never reach for wandb's
# servers: fits that build their own loggers would otherwise ask for an API key.
os.environ.setdefault("WANDB_MODE", "disabled")

OBS_DIM = 11  # Hopper-v5
ACT_DIM = 3


def write_d4rl_hdf5(path, arrays: dict, attrs: dict | None = None) -> Path:
    """Write `arrays` as top-level datasets of a new hdf5 file (the D4RL layout)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=np.asarray(value))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def build_raw(episodes, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM, rewards=None) -> dict:
    """Raw D4RL arrays for `episodes`, a list of (length, end) with end one of
    "terminal", "timeout", "both" (terminal and timeout on the same row) or "cut" (no flag).

    Values are distinctive so mistakes are visible: observations[i, k] = i + k / 100,
    actions[i, k] = -(i + k / 100), rewards[i] = 0.5 + i / 4 unless `rewards` is given.
    """
    n = sum(length for length, _ in episodes)
    rows = np.arange(n, dtype=np.float32)[:, None]
    obs = rows + np.arange(obs_dim, dtype=np.float32)[None, :] / 100
    act = -(rows + np.arange(act_dim, dtype=np.float32)[None, :] / 100)
    rew = (0.5 + np.arange(n) / 4) if rewards is None else rewards
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    start = 0
    for length, end in episodes:
        last = start + length - 1
        if end in ("terminal", "both"):
            terminals[last] = True
        if end in ("timeout", "both"):
            timeouts[last] = True
        start += length
    return {
        "observations": obs.astype(np.float32),
        "actions": act.astype(np.float32),
        "rewards": np.asarray(rew, dtype=np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def make_batch(batch_size: int, seed: int = 0, obs_dim: int = 3, act_dim: int = 2) -> dict:
    """A random batch of transitions (MC returns included) for the agent tests."""
    g = torch.Generator().manual_seed(seed)
    return {
        "observations": torch.randn(batch_size, obs_dim, generator=g),
        "actions": torch.rand(batch_size, act_dim, generator=g) * 2 - 1,
        "rewards": torch.randn(batch_size, generator=g),
        "next_observations": torch.randn(batch_size, obs_dim, generator=g),
        "terminals": torch.zeros(batch_size),
        "mc_returns": torch.randn(batch_size, generator=g),
    }


@pytest.fixture
def d4rl_file(tmp_path):
    """`d4rl_file(arrays, name="data.hdf5", attrs=None)` → path of a freshly written file."""

    def make(arrays: dict, name: str = "data.hdf5", attrs: dict | None = None) -> Path:
        return write_d4rl_hdf5(tmp_path / name, arrays, attrs)

    return make


# --- a real collected dataset and a tiny pretrained checkpoint, shared by the training tests ---

PRETRAIN_STEPS = 20
TINY_AGENT = dict(num_critics=4, critic_hidden=(32, 32), actor_hidden=(32, 32), cql_n_actions=4,
                  calql=True)
TINY_WORLD_MODEL = dict(num_members=3, num_elites=2, hidden=(32, 32), batch_size=128,
                        max_epochs=3)


def fit_module(module, root: Path, callbacks=(), precision: str = "32-true"):
    """Run a module through a bare Trainer writing `<root>/checkpoints/last.ckpt`."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0)
    trainer = Trainer(max_epochs=1, logger=CSVLogger(root, name="csv"), enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[*callbacks, checkpoint],
                      default_root_dir=root, precision=precision)
    trainer.fit(module)
    return trainer


def build_config_module(path: Path, source: tuple[str, str], root: Path):
    """The module a fit config builds (LightningCLI, nothing run) on `source`, e.g.
    ("--model.dataset", file): what `--print_config` never checks."""
    from lightning.pytorch import LightningModule
    from lightning.pytorch.cli import LightningCLI

    cli = LightningCLI(LightningModule, subclass_mode_model=True, run=False,
                       args=["--config", str(path), *source, "--trainer.logger", "false",
                             "--trainer.default_root_dir", str(root)],
                       trainer_defaults={"max_epochs": 1}, save_config_callback=None)
    return cli.model


@pytest.fixture(scope="session")
def hopper_dataset(tmp_path_factory) -> str:
    """1500 random Hopper-v5 steps from the project's collector (seed 1: the fine-tuning env
    uses seed 0, so no online state can coincide with an offline one by construction)."""
    from wsrl_wm.collect import collect

    path = tmp_path_factory.mktemp("data") / "hopper-random.hdf5"
    collect("Hopper-v5", "random", 1500, 1, str(path))
    return str(path)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, hopper_dataset) -> str:
    """A tiny Cal-QL agent plus world model, pretrained for PRETRAIN_STEPS updates."""
    from wsrl_wm.agents import CQLConfig
    from wsrl_wm.lightning import PretrainModule
    from wsrl_wm.world_model import WorldModelConfig

    root = tmp_path_factory.mktemp("pretrain")
    module = PretrainModule("Hopper-v5", hopper_dataset, CQLConfig(**TINY_AGENT),
                            steps=PRETRAIN_STEPS, batch_size=32, eval_interval=PRETRAIN_STEPS,
                            eval_episodes=1, log_interval=5,
                            world_model=WorldModelConfig(**TINY_WORLD_MODEL))
    fit_module(module, root)
    return str(root / "checkpoints" / "last.ckpt")
