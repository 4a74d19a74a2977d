"""Stopping a diverged run with a checkpoint of its last good state.

The agent raises DivergenceError before stepping on a non-finite loss (and rollouts before
keeping a non-finite prediction), so the module's state at that moment is still good: it is
saved next to the run's other checkpoints, and the error that stops the run says where.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer

from wsrl_wm.atomic import atomic_path
from wsrl_wm.errors import DivergenceError

LAST_GOOD = "last-good.ckpt"


@contextmanager
def stop_on_divergence(module: LightningModule, where: str) -> Iterator[None]:
    """Turn a DivergenceError raised inside into one naming `where` (e.g. "env step 123") and
    the saved last-good checkpoint."""
    try:
        yield
    except DivergenceError as error:
        path = save_last_good(module.trainer)
        raise DivergenceError(f"{error} at {where}; the last good state was saved to {path}"
                              ) from error


def save_last_good(trainer: Trainer) -> Path:
    """`<default_root_dir>/checkpoints/last-good.ckpt`, written under a temporary name and then
    renamed, so a crash while saving never leaves a truncated checkpoint under the real name."""
    path = Path(trainer.default_root_dir) / "checkpoints" / LAST_GOOD
    with atomic_path(path) as temporary:
        trainer.save_checkpoint(temporary)
    return path
