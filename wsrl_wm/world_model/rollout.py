"""Branched on-policy rollouts in the world model (MBPO-style), started from online states."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from models import TanhGaussianActor
from wsrl_wm.errors import DivergenceError, WsrlError
from wsrl_wm.world_model.model import WorldModel

DISAGREEMENT_SAMPLE = 1000  # rows per step on which an ungated rollout measures disagreement
# (obs, action, next_obs) → (reward, terminated), in the units the batches use
TaskFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


START_FROM = ("buffer", "warmup")


@dataclass
class RolloutConfig:
    """How imagined data is made, kept and mixed: each batch = (1 − ratio)·real + ratio·model.

    ratio = 0 is plain WSRL: the world model is then never loaded or called.
    """

    ratio: float = 0.0
    interval: int = 250  # env steps between rollout rounds (M)
    starts: int = 10_000  # rollouts per round (B), started from online-buffer states ...
    start_from: str = "buffer"  # ... anywhere in the buffer, or "warmup": its warmup rows only
    horizon: int = 1  # H at the switch ...
    max_horizon: int | None = None  # ... rising linearly to this by `horizon_ramp_steps`
    horizon_ramp_steps: int = 100_000
    # Model-buffer capacity = starts · H(now) · retain_rounds, first in first out. MBPO keeps
    # one epoch of rollouts (mbpo examples/config/hopper/0.py: model_retain_epochs 1,
    # epoch_length 1000, model_train_freq 250), i.e. 1000 / 250 = 4 rounds.
    retain_rounds: int = 4
    # Stop a rollout before a transition whose (standardised) elite disagreement exceeds this
    # quantile of the disagreement on the model's holdout; None: no gate (MBPO has none).
    uncertainty_quantile: float | None = None
    # Model warmup: K_model extra imagined transitions of the still-pretrained policy at the
    # switch, started from the K_real real warmup states (`warmup_steps`), so that fewer real
    # warmup steps are needed.
    warmup_imagined: int = 0
    # Online adaptation: every `adapt_interval` online env steps (0: never, the model stays
    # frozen), warm-started epochs on the online buffer only, early-stopped on an online
    # holdout (docs/world_model.md). The defaults are MBPO's rule (mbpo/models/bnn.py `train`,
    # called by mbpo/algorithms/mbpo.py `_train_model` with max_epochs None every 250 env
    # steps): no epoch cap (`adapt_epochs` null), the scaler refit on each training's data,
    # every training's best epoch chosen afresh (`adapt_keep_start` false), and a time guard.
    # The earlier rule: adapt_epochs 5, adapt_keep_start true, adapt_refit_normalizer false.
    adapt_interval: int = 0
    adapt_epochs: int | None = None
    adapt_keep_start: bool = False
    adapt_refit_normalizer: bool = True
    adapt_max_seconds: float = 300.0

    def check(self, batch_size: int) -> None:
        """One clear line for every setting that would fail later or silently do nothing."""
        if not 0.0 <= self.ratio <= 1.0:
            raise WsrlError(f"rollout.ratio must be in [0, 1], got {self.ratio}")
        if self.interval <= 0 or self.starts <= 0 or self.horizon <= 0:
            raise WsrlError("rollout.interval, rollout.starts and rollout.horizon must be > 0")
        if self.warmup_imagined > 0 and self.ratio == 0:
            raise WsrlError("rollout.warmup_imagined > 0 needs rollout.ratio > 0 (imagined data "
                            "is only trained on through the model share of each batch)")
        if self.start_from not in START_FROM:
            raise WsrlError(f"rollout.start_from must be one of {', '.join(START_FROM)}, got "
                            f"{self.start_from!r}")
        if self.ratio == 0:
            return
        if round(self.ratio * batch_size) == 0:
            raise WsrlError(f"rollout.ratio {self.ratio} of batch_size {batch_size} rounds to "
                            f"0 model rows per batch; raise rollout.ratio to at least "
                            f"{0.5 / batch_size:.2g} or set it to 0")
        if self.max_horizon is not None and self.max_horizon <= 0:
            raise WsrlError(f"rollout.max_horizon must be > 0 (or null for a fixed horizon), "
                            f"got {self.max_horizon}")
        if self.max_horizon is not None and self.horizon_ramp_steps <= 0:
            raise WsrlError(f"rollout.horizon_ramp_steps must be > 0 when rollout.max_horizon "
                            f"is set, got {self.horizon_ramp_steps}")
        if self.retain_rounds <= 0:
            raise WsrlError(f"rollout.retain_rounds must be > 0, got {self.retain_rounds}")
        if self.uncertainty_quantile is not None and not 0 < self.uncertainty_quantile <= 1:
            raise WsrlError(f"rollout.uncertainty_quantile must be in (0, 1], got "
                            f"{self.uncertainty_quantile}")
        if self.adapt_interval < 0 or (self.adapt_epochs is not None and self.adapt_epochs <= 0):
            raise WsrlError(f"need rollout.adapt_interval >= 0 (0: frozen model) and "
                            f"rollout.adapt_epochs > 0 (or null: no cap), got "
                            f"{self.adapt_interval}, {self.adapt_epochs}")
        if not self.adapt_max_seconds > 0:
            raise WsrlError(f"rollout.adapt_max_seconds must be > 0, got "
                            f"{self.adapt_max_seconds}")

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

    def buffer_capacity(self, online_step: int) -> int:
        """`retain_rounds` rounds of `starts` rollouts at the horizon of `online_step`."""
        return self.starts * self.horizon_at(online_step) * self.retain_rounds


@torch.no_grad()
def branched_rollout(world_model: WorldModel, actor: TanhGaussianActor, start_obs: torch.Tensor,
                     horizon: int, terminated: Callable[[torch.Tensor], torch.Tensor],
                     uncertainty_threshold: float | None = None,
                     generator: torch.Generator | None = None,
                     drop_nonfinite: bool = False,
                     task_fn: TaskFn | None = None, action_chunk: int = 1,
                     discount: float = 0.99, pad_terminal: bool = False) -> tuple[dict, dict]:
    """Roll the current (stochastic) policy out in the model for up to `horizon` steps.

    With `action_chunk` h > 1 the actor gives chunks of h actions and `horizon` counts chunks:
    the one-step model is stepped h times with each chunk's actions, and each chunk becomes
    one chunk row (wsrl_wm/data/chunks.py: rewards summed with `discount`; a terminal before
    the chunk's last step ends the rollout and drops the chunk, or with `pad_terminal` ends
    the chunk, its later actions repeating the last one); a gated or non-finite step drops its
    whole chunk.

    A rollout stops at a terminal state (the terminal transition is kept, flagged) or, when
    gated, before a transition whose ensemble disagreement (standardised, as
    `WorldModel.disagreement`) exceeds the threshold (that transition is not kept). With
    `task_fn` (a goal-reaching task's own reward and termination, `wsrl_wm.envs.task_functions`)
    the model only predicts the next observation: reward and termination come from
    `task_fn(obs, action, next_obs)` instead of the model's reward and `terminated`.

    The gate needs every elite on every row; ungated, disagreement is only a logged statistic,
    estimated on the first `DISAGREEMENT_SAMPLE` rows of each step (the starts are a random
    sample), so the rollout computes one elite per row.

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
    # Predictions with a non-finite next_obs, reward, either, and finite ones the gate cut:
    # counted here, synced once at the end.
    counts = torch.zeros(4, dtype=torch.long, device=obs.device)
    predictions = 0
    h, chunk_reward = action_chunk, None
    for step in range(horizon * h):
        k = step % h  # the step within the chunk
        if k == 0:
            first_obs, actions = obs, actor(obs)[0].view(len(obs), h, -1)
        action = actions[:, k]
        next_obs, reward = world_model.sample(obs, action, generator)
        if task_fn is not None:
            reward, done = task_fn(obs, action, next_obs)
        else:
            done = terminated(next_obs)
        finite_obs, finite_reward = torch.isfinite(next_obs).all(dim=-1), torch.isfinite(reward)
        keep = finite_obs & finite_reward
        counts[:3] += torch.stack([~finite_obs, ~finite_reward, ~keep]).sum(dim=1)
        predictions += len(obs)
        measured = len(obs) if uncertainty_threshold is not None else DISAGREEMENT_SAMPLE
        disagreement = world_model.disagreement(obs[:measured], action[:measured])
        disagreements.append(disagreement[keep[:measured]])
        if uncertainty_threshold is not None:
            certain = disagreement <= uncertainty_threshold
            counts[3] += (keep & ~certain).sum()
            keep &= certain
        chunk_reward = reward if k == 0 else chunk_reward + discount ** k * reward
        if pad_terminal and k + 1 < h:  # a terminal-cut chunk repeats its last action
            actions[:, k + 1:] = torch.where(done[:, None, None], action[:, None],
                                             actions[:, k + 1:])
        complete = keep & ((done & pad_terminal) | (k + 1 == h))
        for key, value in zip(rows, (first_obs, actions.flatten(1), chunk_reward, next_obs,
                                     done.float()), strict=True):
            rows[key].append(value[complete])
        lengths[alive[keep]] += 1
        running = keep & ~done
        obs, alive = next_obs[running], alive[running]
        first_obs, actions, chunk_reward = first_obs[running], actions[running], \
            chunk_reward[running]
        if not len(obs):
            break
    bad_obs, bad_reward, bad, gated = counts.tolist()
    if bad and not drop_nonfinite:
        names = [name for name, n in (("next_obs", bad_obs), ("reward", bad_reward)) if n]
        raise DivergenceError(f"the world model predicted a non-finite {' and '.join(names)} "
                              f"in {bad} of {predictions} imagined transitions")
    transitions = {k: torch.cat(v) for k, v in rows.items()}
    stats = {"rollout/transitions": float(len(transitions["rewards"])),
             "rollout/mean_length": float(lengths.mean()),
             "rollout/disagreement": float(torch.cat(disagreements).mean()),
             "rollout/gated_share": gated / predictions,
             "rollout/nonfinite": float(bad)}
    return transitions, stats
