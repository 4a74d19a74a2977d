"""Reading the pretraining checkpoint that fine-tuning starts from."""

from pathlib import Path

import torch

from wsrl_wm.errors import WsrlError


def load_pretrained(path: str) -> dict:
    """The pretrain `fit`'s checkpoint, checked to hold what fine-tuning restores."""
    if not Path(path).is_file():
        raise WsrlError(f"pretrained checkpoint not found: {path}; run the pretrain config first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise WsrlError(f"{path}: cannot load checkpoint ({exc})") from None
    missing = [k for k in ("state_dict", "optimizer_states", "optimizer_names", "env",
                           "agent_config", "probe", "hyper_parameters") if k not in ckpt]
    if missing:
        raise WsrlError(f"{path}: not a wsrl-wm pretraining checkpoint (missing {missing})")
    return ckpt


def submodule_state(state_dict: dict, prefix: str, target: torch.nn.Module | None = None) -> dict:
    """The entries of a module's state_dict under `prefix.`, with the prefix removed; only
    those `target` has, when given (the online agent lacks e.g. the CQL multiplier)."""
    state = {k.removeprefix(prefix + "."): v for k, v in state_dict.items()
             if k.startswith(prefix + ".")}
    if target is not None:
        wanted = target.state_dict().keys()
        state = {k: v for k, v in state.items() if k in wanted}
    return state
