"""What every `fit` run gets unless its config says otherwise: loggers, progress bar, checkpoints.

Kept in code so the per-family YAML configs only describe the experiment.
"""

import os
import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from wsrl_wm.atomic import atomic_path
from wsrl_wm.lightning.env_step_logging import EnvStepProgressBar, LineProgress


def default_loggers(root: Path, wandb_mode: str | None, wandb_project: str) -> list[Logger]:
    """A CSV logger always; Weights & Biases offline unless asked for online (no network wait).

    As in the ablation (`resolve_wandb_mode`): an explicit `wandb_mode` wins, then $WANDB_MODE
    (how tests and the ablation's cells set it), then offline.
    """
    loggers: list[Logger] = [CSVLogger(root, name="csv")]
    mode = wandb_mode or os.environ.get("WANDB_MODE") or "offline"
    if mode != "disabled":
        loggers.append(WandbLogger(project=wandb_project, name=root.name, save_dir=str(root),
                                   offline=mode != "online"))
    return loggers


class EnvStepCheckpoint(Callback):
    """Every `checkpoint_interval` env steps of a module that has one, rewrite
    `<root>/checkpoints/last.ckpt` atomically (temp file, then rename), so a run killed at any
    moment resumes from its last complete checkpoint with `--ckpt_path last`."""

    def __init__(self, root: Path):
        self.path = root / "checkpoints" / "last.ckpt"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        interval = getattr(pl_module, "checkpoint_interval", None)
        if interval and pl_module.env_step % interval == 0:
            with atomic_path(self.path) as tmp:
                trainer.save_checkpoint(tmp)


def default_callbacks(root: Path, progress_bar: bool = True) -> list[Callback]:
    """Env-step progress (unless turned off with `trainer.enable_progress_bar: false`): a bar
    on a terminal, a line every 5 % in a log file,
    periodic env-step checkpoints, and `<root>/checkpoints/last.ckpt` at the end (what
    fine-tuning restores)."""
    progress = EnvStepProgressBar() if sys.stderr.isatty() else LineProgress()
    return [*([progress] if progress_bar else []), EnvStepCheckpoint(root),
            ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0,
                            enable_version_counter=False)]
