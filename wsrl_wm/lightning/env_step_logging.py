"""Logging against environment steps.

Under manual optimisation Lightning's global_step counts optimiser steps (three or more per
update), so every curve here is logged with the env-step count as its step instead.
"""

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import TQDMProgressBar


def log_at_env_step(module: LightningModule, metrics: dict, env_step: int) -> None:
    """Send `metrics` to every logger at x = env_step (tensors are synced here, once)."""
    plain = {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
    plain["env_step"] = env_step
    for logger in module.loggers:
        logger.log_metrics(plain, step=env_step)


class EnvStepProgressBar(TQDMProgressBar):
    """Shows the module's `progress_metrics()` (env step, phase, last eval), not loss/v_num."""

    def get_metrics(self, trainer, pl_module) -> dict:
        return pl_module.progress_metrics() if hasattr(pl_module, "progress_metrics") else {}
