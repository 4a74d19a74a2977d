"""Plasticity resets for the fine-tuning (primacy bias, Nikishin et al. 2022; shrink-and-perturb,
Ash & Adams 2020): the last layers of the actor and/or the critics are re-drawn from their
initialisation, or pulled toward a fresh draw, at the switch and/or every N online steps
(docs/beyond_wsrl.md)."""

from dataclasses import dataclass

import torch
from torch import nn

from models.ensemble import EnsembleLayerNorm
from wsrl_wm.errors import WsrlError

NETWORKS = ("actor", "critic")


@dataclass
class ResetConfig:
    """`layers`: how many layers, counted from the output, each named network loses (a layer
    is a linear map with the LayerNorm after it; the actor's state-independent log-std counts
    with its head); 0 = all of them. `shrink`: the share of the old weights kept,
    θ ← shrink·θ + (1 − shrink)·θ_fresh (0 = a full reset, 0 < shrink < 1 = shrink-and-perturb
    toward a fresh draw). Resets happen at the switch
    (`at_switch`, before the first update) and every `interval` online steps (0 = never). The
    target critics' same layers take the reset critics' new weights, and Adam's moments of
    every reset parameter restart from zero."""

    networks: tuple[str, ...] = NETWORKS
    layers: int = 1
    shrink: float = 0.0
    at_switch: bool = False
    interval: int = 0

    def __post_init__(self) -> None:
        self.networks = tuple(self.networks)
        unknown = set(self.networks) - set(NETWORKS)
        if unknown or not self.networks:
            raise WsrlError(f"resets.networks must name some of {', '.join(NETWORKS)}, got "
                            f"{list(self.networks)}")
        if self.layers < 0:
            raise WsrlError(f"resets.layers must be >= 1 (or 0 for all), got {self.layers}")
        if not 0.0 <= self.shrink < 1.0:
            raise WsrlError(f"resets.shrink must be in [0, 1), got {self.shrink}")
        if self.interval < 0:
            raise WsrlError(f"resets.interval must be >= 0 online steps, got {self.interval}")

    @property
    def enabled(self) -> bool:
        return self.at_switch or self.interval > 0

    def due(self, online_step: int, online_steps: int) -> bool:
        """Whether a reset comes before the update of this online step (none at the very end,
        where no update would follow it)."""
        if not 0 <= online_step < online_steps:
            return False
        if online_step == 0:
            return self.at_switch
        return self.interval > 0 and online_step % self.interval == 0


def layer_groups(network: nn.Module) -> list[list[nn.Parameter]]:
    """The network's layers in order, each the parameters of one linear map and the LayerNorm
    after it (the actor's `net`, a critic ensemble's `mlp.net`); an actor's state-independent
    log-std joins its head."""
    body = network.mlp.net if hasattr(network, "mlp") else network.net
    groups: list[list[nn.Parameter]] = []
    for module in body:
        params = list(module.parameters(recurse=False))
        if not params:
            continue
        if isinstance(module, (nn.LayerNorm, EnsembleLayerNorm)):
            groups[-1] += params
        else:
            groups.append(params)
    extra = getattr(network, "log_std", None)
    if extra is not None:
        groups[-1].append(extra)
    return groups


@torch.no_grad()
def reset_layers(agent: nn.Module, fresh: nn.Module, config: ResetConfig,
                 optimizers: dict[str, torch.optim.Optimizer]) -> int:
    """Apply one reset to `agent` in place from `fresh` (a newly initialised agent of the same
    configuration); returns how many parameters were reset. In place, so compiled updates and
    optimisers keep their references."""
    count = 0
    chosen = slice(-config.layers, None) if config.layers else slice(None)
    for name in config.networks:
        groups = layer_groups(getattr(agent, name))[chosen]
        for params, fresh_params in zip(groups, layer_groups(getattr(fresh, name))[chosen],
                                        strict=True):
            for param, value in zip(params, fresh_params, strict=True):
                param.lerp_(value, 1.0 - config.shrink)
                restart_moments(optimizers.get(name), param)
                count += param.numel()
        if name == "critic":  # the target's same layers start where the critics' now are
            for params, targets in zip(groups, layer_groups(agent.target_critic)[chosen],
                                       strict=True):
                for param, target in zip(params, targets, strict=True):
                    target.copy_(param)
    return count


def restart_moments(optimizer: torch.optim.Optimizer | None, param: nn.Parameter) -> None:
    """Adam's step and moments of `param` back to zero, in place."""
    state = optimizer.state.get(param) if optimizer is not None else None
    for value in (state or {}).values():
        if isinstance(value, torch.Tensor):
            value.zero_()


def check_reset_layers(agent: nn.Module, config: ResetConfig) -> None:
    """Fail before the run starts when a network has fewer layers than asked for."""
    for name in config.networks:
        available = len(layer_groups(getattr(agent, name)))
        if config.layers > available:
            raise WsrlError(f"resets.layers {config.layers} exceeds the {available} layers of "
                            f"the {name}; use at most {available} (or 0 for all)")
