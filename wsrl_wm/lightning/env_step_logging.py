"""Logging against environment steps.

Under manual optimisation Lightning's global_step counts optimiser steps (three or more per
update), so every curve here is logged with the env-step count as its step instead.
"""

import csv
import itertools
import time
from pathlib import Path

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from torch.utils.data import IterableDataset

from wsrl_wm.atomic import atomic_path


def log_at_env_step(module: LightningModule, metrics: dict, env_step: int) -> None:
    """Send `metrics` to every logger at x = env_step (tensors are synced here, once)."""
    plain = {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
    plain["env_step"] = env_step
    for logger in module.loggers:
        logger.log_metrics(plain, step=env_step)


def write_csv_atomically(path: Path, rows: list[dict]) -> None:
    """The whole table, rewritten through a temporary file: a resumed run rewrites it from its
    checkpointed history, so no row is ever duplicated or half-written."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


class EnvSteps(IterableDataset):
    """Endless ticks for loops whose budget is counted in env steps by the module itself."""

    def __iter__(self):
        return itertools.count()


class EnvStepProgressBar(TQDMProgressBar):
    """Shows the module's `progress_metrics()` (env step, phase, last eval), not loss/v_num,
    and counts env steps when the module has an env-step budget."""

    def get_metrics(self, trainer, pl_module) -> dict:
        return pl_module.progress_metrics() if hasattr(pl_module, "progress_metrics") else {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if hasattr(pl_module, "total_env_steps"):
            self.train_progress_bar.reset(total=pl_module.total_env_steps)
            self.train_progress_bar.update(pl_module.env_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not hasattr(pl_module, "total_env_steps"):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if pl_module.env_step % self.refresh_rate == 0 or trainer.should_stop:
            self.train_progress_bar.n = pl_module.env_step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


class LineProgress(ProgressBar):
    """Progress for logs (output not a terminal): one line every few percent of the run — env
    steps, phase and last score — instead of tqdm's redraw frames (which filled a 4000-step
    run's log with ~500 KB)."""

    def __init__(self, every_percent: int = 5):
        super().__init__()
        self.every, self.next_mark, self.start = every_percent, every_percent, time.monotonic()
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if hasattr(pl_module, "total_env_steps"):
            done, total, unit = pl_module.env_step, pl_module.total_env_steps, "env step"
        else:
            done, total, unit = batch_idx + 1, trainer.num_training_batches, "step"
        if not self.enabled or not total or 100 * done < self.next_mark * total:
            return
        self.next_mark = (100 * done // total // self.every + 1) * self.every
        metrics = pl_module.progress_metrics() if hasattr(pl_module, "progress_metrics") else {}
        shown = " ".join(f"{k}={v}" for k, v in metrics.items() if k != "env_step")
        print(f"{unit} {done}/{total} ({100 * done / total:.0f}%) {shown} "
              f"[{time.monotonic() - self.start:.0f} s]".replace("  ", " "), flush=True)
