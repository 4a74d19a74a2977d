"""SAC with a critic ensemble, as WSRL uses online (and our collector uses to train behaviour
policies): REDQ-style target = min over a random subset of target critics, UTD k critic steps on
k slices of the batch with a target update after each, then one actor + temperature step."""

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from models import CriticEnsemble, LogScalar, TanhGaussianActor

Batch = dict[str, torch.Tensor]


@dataclass
class SACConfig:
    """Defaults are WSRL's online locomotion settings (DESIGN.md §4)."""

    discount: float = 0.99
    tau: float = 5e-3
    num_critics: int = 10
    target_subset: int = 2  # target = min over this many randomly chosen target critics
    critic_hidden: tuple[int, ...] = (256, 256)
    actor_hidden: tuple[int, ...] = (256, 256)
    layer_norm: bool = True
    actor_state_dependent_std: bool = True  # False: one learned log-std vector (antmaze)
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 1e-4
    initial_temperature: float = 1.0
    target_entropy: float | None = None  # None → −|A|
    backup_entropy: bool = False  # WSRL: no entropy term in the Bellman target
    utd: int = 1


class SAC(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, config: SACConfig | None = None):
        super().__init__()
        self.config = config = config or SACConfig()
        self.actor = TanhGaussianActor(obs_dim, act_dim, config.actor_hidden, config.layer_norm,
                                       config.actor_state_dependent_std)
        self.critic = CriticEnsemble(obs_dim, act_dim, config.num_critics, config.critic_hidden,
                                     config.layer_norm)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperature = LogScalar(config.initial_temperature)
        self.target_entropy = (-float(act_dim) if config.target_entropy is None
                               else config.target_entropy)

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        return {
            "critic": torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr),
            "actor": torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr),
            "temperature": torch.optim.Adam(self.temperature.parameters(), lr=c.temperature_lr),
        }

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor(obs, deterministic)[0]

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        next_action, next_log_prob = self.actor(batch["next_observations"])
        subset = torch.randperm(self.critic.num_critics, device=next_action.device)
        target_q = self.target_critic(batch["next_observations"], next_action)
        target_q = target_q[subset[: self.config.target_subset]].min(dim=0).values
        if self.config.backup_entropy:
            target_q = target_q - self.temperature() * next_log_prob
        not_done = 1.0 - batch["terminals"].float()
        return batch["rewards"] + self.config.discount * not_done * target_q

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        return self.td_loss(self.critic(batch["observations"], batch["actions"]), batch)

    def td_loss(self, q: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict]:
        """Mean squared Bellman error of the critics' Q(s, a_data) = `q` [N, B]."""
        loss = (q - self.td_target(batch)).pow(2).mean()
        return loss, {"critic_loss": loss.detach(), "q_mean": q.detach().mean()}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(actor loss, log π of the sampled actions, info); critics get no gradient here."""
        action, log_prob = self.actor(batch["observations"])
        with frozen(self.critic):
            q = self.critic(batch["observations"], action).min(dim=0).values
        loss = (self.temperature().detach() * log_prob - q).mean()
        return loss, log_prob.detach(), {"actor_loss": loss.detach(),
                                         "entropy": -log_prob.detach().mean()}

    def temperature_loss(self, log_prob: torch.Tensor) -> tuple[torch.Tensor, dict]:
        temperature = self.temperature()
        loss = -(temperature * (log_prob + self.target_entropy)).mean()
        return loss, {"temperature": temperature.detach(), "temperature_loss": loss.detach()}

    def update_target(self) -> None:
        online = list(self.critic.parameters())
        target = list(self.target_critic.parameters())
        with torch.no_grad():
            torch._foreach_lerp_(target, online, self.config.tau)

    def update(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
        """UTD k: k critic steps on k slices of `batch`, then one actor + temperature step."""
        info: dict = {}
        for part in split_batch(batch, self.config.utd):
            info.update(self.critic_step(part, optimizers["critic"]))
        info.update(self.actor_step(batch, optimizers))
        return info

    def critic_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict:
        loss, info = self.critic_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.update_target()
        return info

    def actor_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
        actor_loss, log_prob, info = self.actor_loss(batch)
        optimizers["actor"].zero_grad(set_to_none=True)
        actor_loss.backward()
        optimizers["actor"].step()
        temperature_loss, temperature_info = self.temperature_loss(log_prob)
        optimizers["temperature"].zero_grad(set_to_none=True)
        temperature_loss.backward()
        optimizers["temperature"].step()
        return {**info, **temperature_info}


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """k equal slices of a batch (the UTD critic steps each see fresh samples)."""
    size = len(next(iter(batch.values())))
    if size % parts:
        raise ValueError(f"batch of {size} rows does not split into {parts} equal UTD slices")
    chunks = {key: value.chunk(parts) for key, value in batch.items()}
    return [{key: chunks[key][i] for key in batch} for i in range(parts)]


@contextmanager
def frozen(module: nn.Module):
    """Stop gradients into `module`'s parameters while still back-propagating through it."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in zip(module.parameters(), flags, strict=True):
            param.requires_grad_(flag)
