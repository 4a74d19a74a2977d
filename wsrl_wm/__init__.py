"""wsrl-wm: warm-start RL fine-tuning without offline data, with a pretrained world model."""

from wsrl_wm.errors import WsrlError

__all__ = ["WsrlError"]
