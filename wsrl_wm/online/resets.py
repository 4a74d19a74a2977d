"""Plasticity resets for the fine-tuning (primacy bias, Nikishin et al. 2022; shrink-and-perturb,
Ash & Adams 2020): layers of the actor and/or the critics, and optionally the temperature, are
re-drawn from their initialisation, or pulled toward a fresh draw, at the switch and/or every N
online steps (docs/beyond_wsrl.md)."""

from dataclasses import dataclass

import torch
from torch import nn

from models.ensemble import EnsembleLayerNorm
from wsrl_wm.errors import WsrlError

NETWORKS = ("actor", "critic")
# What each named recipe resets (docs/beyond_wsrl.md): "sac" is the official SAC resets of
# Nikishin et al. (rl_with_resets train_dense.py builds a whole new agent: every layer, the
# target critic, the temperature at its initial value, fresh Adam states); "head" re-draws the
# last layer only, as their SPR agent resets its head (SPR_with_resets.gin `reset_head`).
PRESETS = {
    "sac": {"networks": NETWORKS, "layers": 0, "shrink": 0.0, "temperature": True},
    "head": {"networks": NETWORKS, "layers": 1, "shrink": 0.0, "temperature": False},
}
UNSET = PRESETS["head"]  # without a preset, what an unset field means


@dataclass
class ResetConfig:
    """`preset`: a named recipe ("sac" or "head", `PRESETS`) that sets the four fields below;
    a field it sets may be left unset or repeat its value, nothing else.
    `networks`: which of the actor and the critics lose layers. `layers`: how many layers,
    counted from the output, each loses (a layer is a linear map with the LayerNorm after it;
    the actor's state-independent log-std counts with its head); 0 = all of them. `shrink`:
    the share of the old weights kept, θ ← shrink·θ + (1 − shrink)·θ_fresh (0 = a full reset,
    0 < shrink < 1 = shrink-and-perturb toward a fresh draw). `temperature`: the temperature
    goes the same way toward its initial value. Resets happen at the switch (`at_switch`,
    before the first update) and every `interval` online steps (0 = never). The target
    critics' same layers take the reset critics' new weights, and Adam's step count and
    moments of every reset parameter restart from zero."""

    preset: str | None = None
    networks: tuple[str, ...] | None = None
    layers: int | None = None
    shrink: float | None = None
    temperature: bool | None = None
    at_switch: bool = False
    interval: int = 0

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise WsrlError(f"resets.preset must be one of {', '.join(PRESETS)}, got "
                            f"{self.preset!r}")
        if self.networks is not None:
            self.networks = tuple(self.networks)
        for name, value in (PRESETS[self.preset] if self.preset else UNSET).items():
            given = getattr(self, name)
            if given is None:
                setattr(self, name, value)
            elif self.preset and given != value:
                raise WsrlError(f"resets.preset {self.preset} sets resets.{name} to {value}, got "
                                f"{given}; leave resets.{name} unset or drop the preset")
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
    groups = [*config.networks, *(["temperature"] if config.temperature else [])]
    missing = [name for name in groups if name not in optimizers]
    if missing:  # a reset parameter keeping its old Adam moments would be no full reset
        raise WsrlError(f"resets: no optimiser named {', '.join(missing)} to restart (the agent "
                        f"has {', '.join(optimizers) or 'none'})")
    count = 0
    for name in groups:
        for param, value in zip(reset_params(agent, name, config),
                                reset_params(fresh, name, config), strict=True):
            param.lerp_(value, 1.0 - config.shrink)
            restart_moments(optimizers[name], param)
            count += param.numel()
    if "critic" in groups:  # the target's same layers start where the critics' now are
        for param, target in zip(reset_params(agent, "critic", config),
                                 reset_params(agent, "target_critic", config), strict=True):
            target.copy_(param)
    return count


def reset_params(agent: nn.Module, name: str, config: ResetConfig) -> list[nn.Parameter]:
    """The parameters of `agent`'s `name` (a network, or "temperature") that `config` resets."""
    if name == "temperature":
        return list(agent.temperature.parameters())
    chosen = slice(-config.layers, None) if config.layers else slice(None)
    return [param for group in layer_groups(getattr(agent, name))[chosen] for param in group]


def restart_moments(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> None:
    """Adam's step and moments of `param` back to zero, in place (as a fresh Adam's)."""
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor):
            value.zero_()


def check_reset_layers(agent: nn.Module, config: ResetConfig) -> None:
    """Fail before the run starts when a network has fewer layers than asked for."""
    for name in config.networks:
        available = len(layer_groups(getattr(agent, name)))
        if config.layers > available:
            raise WsrlError(f"resets.layers {config.layers} exceeds the {available} layers of "
                            f"the {name}; use at most {available} (or 0 for all)")
