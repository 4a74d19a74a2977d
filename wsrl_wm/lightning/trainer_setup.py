"""What every `fit` run gets unless its config says otherwise: loggers, progress bar, checkpoints.

Kept in code so the per-family YAML configs only describe the experiment.
"""

import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from wsrl_wm.lightning.env_step_logging import EnvStepProgressBar

WANDB_MODES = ("offline", "online", "disabled")


def default_loggers(root: Path, wandb_mode: str, wandb_project: str) -> list[Logger]:
    """A CSV logger always; Weights & Biases offline unless asked for online (no network wait).

    WANDB_MODE in the environment wins over the config, so tests can disable wandb.
    """
    loggers: list[Logger] = [CSVLogger(root, name="csv")]
    mode = os.environ.get("WANDB_MODE", wandb_mode)
    if mode != "disabled":
        loggers.append(WandbLogger(project=wandb_project, name=root.name, save_dir=str(root),
                                   offline=mode != "online"))
    return loggers


def default_callbacks(root: Path) -> list[Callback]:
    """Env-step progress bar and `<root>/checkpoints/last.ckpt` (what fine-tuning restores)."""
    return [EnvStepProgressBar(),
            ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0,
                            enable_version_counter=False)]
