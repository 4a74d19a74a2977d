"""Branched on-policy rollouts in the world model (MBPO-style), started from online states."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from models import TanhGaussianActor
from wsrl_wm.errors import DivergenceError
from wsrl_wm.world_model.model import WorldModel

DISAGREEMENT_SAMPLE = 1000  # rows per step on which an ungated rollout measures disagreement


@dataclass
class RolloutConfig:
    """How imagined data is made and mixed: each batch = (1 − ratio)·real + ratio·model.

    ratio = 0 is plain WSRL: the world model is then never loaded or called.
    """

    ratio: float = 0.0
    interval: int = 250  # env steps between rollout rounds (M)
    starts: int = 10_000  # rollouts per round (B), started from online-buffer states
    horizon: int = 1  # H at the switch ...
    max_horizon: int | None = None  # ... rising linearly to this by `horizon_ramp_steps`
    horizon_ramp_steps: int = 100_000
    retain_rounds: int = 20  # model-buffer capacity = starts · max horizon · retain_rounds
    uncertainty_threshold: float | None = None  # stop a rollout where disagreement exceeds it
    # Model warmup: K_model extra imagined transitions of the still-pretrained policy at the
    # switch, started from the K_real real warmup states (`warmup_steps`), so that fewer real
    # warmup steps are needed.
    warmup_imagined: int = 0

    def starts_at(self, online_step: int) -> int:
        """Rollouts in the round at `online_step`; the round at the switch adds the warmup."""
        extra = -(-self.warmup_imagined // self.horizon_at(0)) if online_step == 0 else 0
        return self.starts + extra

    def horizon_at(self, online_step: int) -> int:
        """Linear schedule from `horizon` to `max_horizon` over the first ramp steps."""
        if self.max_horizon is None:
            return self.horizon
        progress = min(max(online_step / self.horizon_ramp_steps, 0.0), 1.0)
        return round(self.horizon + progress * (self.max_horizon - self.horizon))

    def buffer_capacity(self) -> int:
        return self.starts * max(self.horizon, self.max_horizon or 0) * self.retain_rounds


@torch.no_grad()
def branched_rollout(world_model: WorldModel, actor: TanhGaussianActor, start_obs: torch.Tensor,
                     horizon: int, terminated: Callable[[torch.Tensor], torch.Tensor],
                     uncertainty_threshold: float | None = None,
                     generator: torch.Generator | None = None,
                     drop_nonfinite: bool = False) -> tuple[dict, dict]:
    """Roll the current (stochastic) policy out in the model for up to `horizon` steps.

    A rollout stops at a terminal state (the terminal transition is kept, flagged) or, when
    gated, before a transition whose ensemble disagreement exceeds the threshold (that
    transition is not kept). The gate needs every elite on every row; ungated, disagreement is
    only a logged statistic, estimated on the first `DISAGREEMENT_SAMPLE` rows of each step
    (the starts are a random sample), so the rollout computes one elite per row.

    A non-finite predicted next_obs or reward is never kept: it raises DivergenceError once the
    round is done, or with `drop_nonfinite` ends that rollout like the gate does (fine-tuning's
    "skip": the frozen model would predict the same again, so only the rollouts that left its
    range are lost). Returns the transitions and rollout statistics.
    """
    obs = start_obs
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in (
        "observations", "actions", "rewards", "next_observations", "terminals")}
    disagreements, lengths = [], torch.zeros(len(obs), device=obs.device)
    alive = torch.arange(len(obs), device=obs.device)  # which rollouts are still running
    # Predictions with a non-finite next_obs, reward, either: counted here, synced once at the end.
    nonfinite = torch.zeros(3, dtype=torch.long, device=obs.device)
    predictions = 0
    for _ in range(horizon):
        action = actor(obs)[0]
        next_obs, reward = world_model.sample(obs, action, generator)
        finite_obs, finite_reward = torch.isfinite(next_obs).all(dim=-1), torch.isfinite(reward)
        keep = finite_obs & finite_reward
        nonfinite += torch.stack([~finite_obs, ~finite_reward, ~keep]).sum(dim=1)
        predictions += len(obs)
        measured = len(obs) if uncertainty_threshold is not None else DISAGREEMENT_SAMPLE
        disagreement = world_model.disagreement(obs[:measured], action[:measured])
        disagreements.append(disagreement[keep[:measured]])
        if uncertainty_threshold is not None:
            keep &= disagreement <= uncertainty_threshold
        done = terminated(next_obs)
        for key, value in zip(rows, (obs, action, reward, next_obs, done.float()), strict=True):
            rows[key].append(value[keep])
        lengths[alive[keep]] += 1
        running = keep & ~done
        obs, alive = next_obs[running], alive[running]
        if not len(obs):
            break
    bad_obs, bad_reward, bad = nonfinite.tolist()
    if bad and not drop_nonfinite:
        names = [name for name, n in (("next_obs", bad_obs), ("reward", bad_reward)) if n]
        raise DivergenceError(f"the world model predicted a non-finite {' and '.join(names)} "
                              f"in {bad} of {predictions} imagined transitions")
    transitions = {k: torch.cat(v) for k, v in rows.items()}
    stats = {"rollout/transitions": float(len(transitions["rewards"])),
             "rollout/mean_length": float(lengths.mean()),
             "rollout/disagreement": float(torch.cat(disagreements).mean()),
             "rollout/nonfinite": float(bad)}
    return transitions, stats
