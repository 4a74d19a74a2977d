"""Lightning modules for pretraining and fine-tuning, and their logging functions."""

from wsrl_wm.lightning.finetune import FinetuneModule
from wsrl_wm.lightning.pretrain import PretrainModule

__all__ = ["FinetuneModule", "PretrainModule"]
