"""Learned dynamics p(Δs, r | s, a): a probabilistic ensemble with elites (MBPO)."""

import math
from dataclasses import dataclass

import torch
from torch import nn

from models import EnsembleLinear, ProbabilisticEnsemble
from wsrl_wm.errors import WsrlError

# Input features whose training std is below this are constant in the data: they are only
# centred (std 1), as MBPO's scaler does, instead of having float noise blown up by 1/std.
MIN_INPUT_STD = 1e-6
# The uncertainty gate's calibration table: holdout disagreement at quantiles 0, 1/100, ..., 1.
QUANTILE_GRID = 101


@dataclass
class WorldModelConfig:
    """Defaults are MBPO's (docs/world_model.md, docs/configs.md)."""

    num_members: int = 7
    num_elites: int = 5
    hidden: tuple[int, ...] = (200, 200, 200, 200)
    lr: float = 1e-3
    # L2 on the linear layers' weights only (not biases or the log-variance bounds), as MBPO's
    # per-layer decays (mbpo/models/constructor.py: 2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4): one
    # value for every layer, or one per linear layer (hidden layers, then the head).
    weight_decay: float | tuple[float, ...] = 5e-5
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
        layers = len(config.hidden) + 1
        if not isinstance(config.weight_decay, float | int) and len(config.weight_decay) != layers:
            raise ValueError(f"weight_decay needs one value or one per linear layer ({layers}), "
                             f"got {list(config.weight_decay)}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.ensemble = ProbabilisticEnsemble(obs_dim + act_dim, obs_dim + 1, config.num_members,
                                              config.hidden)
        self.register_buffer("input_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("input_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(config.num_elites))
        # The disagreement's units (per-dim std of the training Δobs) and its calibration
        # table on the holdout: set by `calibrate` after every fit, NaN until then.
        self.register_buffer("target_std", torch.ones(obs_dim + 1))
        self.register_buffer("disagreement_quantiles", torch.full((QUANTILE_GRID,), math.nan))

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
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(next_obs [B, obs_dim], reward [B]) from one random elite per row.

        Only each row's own elite is computed: the rows, in random order, are dealt to the K
        elites, in random order, like cards (so every row's elite is uniform and the counts
        differ by at most one), and one batched pass computes B/K rows per elite instead of
        all K elites on every row. Random draws happen on `generator`'s device (e.g. a CPU
        generator with a GPU model).
        """
        rows, elites = len(obs), len(self.elites)
        per_elite = -(-rows // elites)
        draw = generator_device(generator, obs.device)
        order = torch.randperm(rows, generator=generator, device=draw).to(obs.device)
        dealer = torch.randperm(elites, generator=generator, device=draw).to(obs.device)
        padded = torch.cat([order, order[: per_elite * elites - rows]])  # repeats are dropped
        dealt = padded.view(per_elite, elites).T  # [K, B/K]: elite k's rows
        mean, logvar = self.predict(obs[dealt], act[dealt], self.elites[dealer])
        noise = torch.randn(mean.shape, generator=generator, device=draw, dtype=mean.dtype)
        drawn = mean + torch.exp(0.5 * logvar) * noise.to(mean.device)
        delta_and_reward = torch.empty(rows, drawn.shape[-1], device=obs.device,
                                       dtype=drawn.dtype)
        delta_and_reward[order] = drawn.transpose(0, 1).reshape(-1, drawn.shape[-1])[:rows]
        return obs + delta_and_reward[:, : self.obs_dim], delta_and_reward[:, self.obs_dim]

    def optimizer_groups(self) -> list[dict]:
        """Adam parameter groups: each linear layer's weights with its decay, then everything
        else (biases, log-variance bounds) without."""
        weights = [m.weight for m in self.ensemble.mlp.modules() if isinstance(m, EnsembleLinear)]
        decay = self.config.weight_decay
        decays = [decay] * len(weights) if isinstance(decay, float | int) else decay
        rest = [p for p in self.ensemble.parameters() if all(p is not w for w in weights)]
        return [*({"params": [w], "weight_decay": float(d)} for w, d in zip(weights, decays,
                                                                              strict=True)),
                {"params": rest, "weight_decay": 0.0}]

    @torch.no_grad()
    def disagreement(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """[B]: std across the elites' mean Δobs (population std, so 0 with one elite) in units
        of each dim's training-target std, averaged over obs dims (so fast dims such as
        velocities do not swamp slow ones); computes every elite on every row."""
        mean, _ = self.predict(obs, act, self.elites)
        spread = mean[..., : self.obs_dim].std(dim=0, correction=0)
        return (spread / self.target_std[: self.obs_dim]).mean(dim=-1)

    @torch.no_grad()
    def calibrate(self, train_targets: torch.Tensor, holdout_obs: torch.Tensor,
                  holdout_act: torch.Tensor) -> None:
        """Set the disagreement's units from the training targets, then tabulate its quantiles
        on held-out rows (which the gate's `uncertainty_quantile` reads)."""
        std = train_targets.std(dim=0)
        self.target_std.copy_(torch.where(std < MIN_INPUT_STD, torch.ones_like(std), std))
        grid = torch.linspace(0, 1, QUANTILE_GRID, device=holdout_obs.device)
        self.disagreement_quantiles.copy_(
            torch.quantile(self.disagreement(holdout_obs, holdout_act).float(), grid))

    def gate_threshold(self, quantile: float) -> float:
        """The disagreement below which `quantile` of the holdout rows lie (interpolated in the
        calibration table)."""
        table = self.disagreement_quantiles
        if torch.isnan(table).any():
            raise ValueError("this world model has no disagreement calibration; fit it with "
                             "train_world_model (or pretrain again) to use the uncertainty gate")
        position = quantile * (len(table) - 1)
        low = min(int(position), len(table) - 2)
        return float(table[low] + (position - low) * (table[low + 1] - table[low]))


def generator_device(generator: torch.Generator | None, default: torch.device) -> torch.device:
    """Where random numbers must be drawn: torch needs a generator's draws on its own device."""
    return default if generator is None else generator.device


def restore_world_model(config: WorldModelConfig | None, state: dict | None, obs_dim: int,
                        act_dim: int, gated: bool) -> WorldModel:
    """The pretrained world model of a checkpoint, frozen, with one clear line for a
    checkpoint that has none or lacks what the run needs."""
    if config is None:
        raise WsrlError("rollout.ratio > 0 needs a world model in the pretrained checkpoint; "
                        "pretrain with model.world_model set")
    world_model = WorldModel(obs_dim, act_dim, config)
    # Checkpoints from before the gate's calibration lack its two buffers: usable ungated.
    missing = world_model.load_state_dict(state, strict=False).missing_keys
    if set(missing) - {"target_std", "disagreement_quantiles"}:
        raise WsrlError(f"the world model in the checkpoint lacks {missing}; pretrain again")
    if missing and gated:
        raise WsrlError("this checkpoint's world model has no disagreement calibration "
                        "(pretrained before it existed); pretrain again or set "
                        "rollout.uncertainty_quantile to null")
    return world_model.requires_grad_(False)
