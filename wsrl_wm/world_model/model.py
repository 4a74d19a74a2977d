"""Learned dynamics p(Δs, r | s, a): a probabilistic ensemble with elites (MBPO)."""

from dataclasses import dataclass

import torch
from torch import nn

from models import ProbabilisticEnsemble

# Input features whose training std is below this are constant in the data: they are only
# centred (std 1), as MBPO's scaler does, instead of having float noise blown up by 1/std.
MIN_INPUT_STD = 1e-6


@dataclass
class WorldModelConfig:
    """Defaults are MBPO's (DESIGN.md §4)."""

    num_members: int = 7
    num_elites: int = 5
    hidden: tuple[int, ...] = (200, 200, 200, 200)
    lr: float = 1e-3
    weight_decay: float = 5e-5
    batch_size: int = 256
    holdout_ratio: float = 0.2
    max_holdout: int = 5000
    patience: int = 5  # epochs without any member improving before training stops
    improvement_threshold: float = 0.01  # relative holdout-MSE drop that counts as improving
    max_epochs: int = 200


class WorldModel(nn.Module):
    """Ensemble over standardised [obs, act] predicting raw [Δobs, reward].

    `input_mean`, `input_std` and `elites` are buffers, so a state_dict restores a ready model.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: WorldModelConfig | None = None):
        super().__init__()
        self.config = config = config or WorldModelConfig()
        if not 0 < config.num_elites <= config.num_members:
            raise ValueError(f"num_elites must be in 1..{config.num_members}, "
                             f"got {config.num_elites}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.ensemble = ProbabilisticEnsemble(obs_dim + act_dim, obs_dim + 1, config.num_members,
                                              config.hidden)
        self.register_buffer("input_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("input_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(config.num_elites))

    @torch.no_grad()
    def set_normalizer(self, obs: torch.Tensor, act: torch.Tensor) -> None:
        x = torch.cat([obs, act], dim=-1)
        std = x.std(dim=0)
        self.input_mean.copy_(x.mean(dim=0))
        self.input_std.copy_(torch.where(std < MIN_INPUT_STD, torch.ones_like(std), std))

    def normalize(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return (torch.cat([obs, act], dim=-1) - self.input_mean) / self.input_std

    @staticmethod
    def targets(obs: torch.Tensor, next_obs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """What the ensemble regresses: [Δobs, reward] per row."""
        return torch.cat([next_obs - obs, rewards.unsqueeze(-1)], dim=-1)

    def predict(self, obs: torch.Tensor, act: torch.Tensor, members: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of [Δobs, reward], each [K, B, obs_dim + 1] for K `members` (all)."""
        return self.ensemble(self.normalize(obs, act), members)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, act: torch.Tensor,
               generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next_obs [B, obs_dim], reward [B], disagreement [B]) from one random elite per row.

        Only the elites are computed (one batched pass). `disagreement` is the std across the
        elites' mean Δobs (population std, so 0 with one elite), averaged over obs dims.
        Random draws happen on `generator`'s device (e.g. a CPU generator with a GPU model).
        """
        mean, logvar = self.predict(obs, act, self.elites)
        draw = generator_device(generator, obs.device)
        rows = torch.arange(obs.shape[0], device=obs.device)
        pick = torch.randint(len(self.elites), rows.shape, generator=generator, device=draw)
        pick = pick.to(obs.device)
        mu, std = mean[pick, rows], torch.exp(0.5 * logvar[pick, rows])
        noise = torch.randn(mu.shape, generator=generator, device=draw, dtype=mu.dtype)
        noise = noise.to(mu.device)
        delta_and_reward = mu + std * noise
        next_obs = obs + delta_and_reward[:, : self.obs_dim]
        disagreement = mean[..., : self.obs_dim].std(dim=0, correction=0).mean(dim=-1)
        return next_obs, delta_and_reward[:, self.obs_dim], disagreement


def generator_device(generator: torch.Generator | None, default: torch.device) -> torch.device:
    """Where random numbers must be drawn: torch needs a generator's draws on its own device."""
    return default if generator is None else generator.device
