"""wsrl-wm: warm-start RL fine-tuning without offline data, with a pretrained world model."""

from wsrl_wm.errors import WsrlError

# Weights & Biases modes a run accepts; shared by `fit` and the ablation, which must not
# import Lightning just for this.
WANDB_MODES = ("offline", "online", "disabled")

__all__ = ["WANDB_MODES", "WsrlError"]
