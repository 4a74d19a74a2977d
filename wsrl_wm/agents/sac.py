"""SAC with a critic ensemble, as WSRL uses online (and our collector uses to train behaviour
policies): REDQ-style target = min over a random subset of target critics, UTD k critic steps on
k slices of the batch with a target update after each, then one actor + temperature step.
Only the drawn target critics are computed, and the actor's gradient goes through each row's
minimising critic only (docs/performance.md).

The agent says what to optimise (its losses and target update); how to step them, the finite
checks and compilation included, is its `Updater`'s (wsrl_wm/agents/update.py)."""

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from models import CriticEnsemble, LogScalar, TanhGaussianActor
from models.init import INITS
from wsrl_wm.agents.batches import Batch, repeat_rows
from wsrl_wm.agents.compilation import wants_compile
from wsrl_wm.agents.fused_update import FusedStepper
from wsrl_wm.agents.schedule import UPDATE_RULES
from wsrl_wm.agents.update import Optimizers, Updater
from wsrl_wm.errors import WsrlError

NONFINITE_POLICIES = ("stop", "skip")
Q_AGGREGATIONS = ("min", "mean")
TERMINAL_WINDOWS = ("drop", "pad")
# Q-chunking's QC-RLPD (github ColinQiyangLi/qc, README's QC-RLPD command and
# agents/acrlpd.py `get_config`): mean over the critics, BC weight 0.01, and a target entropy
# of half the chunk's dimension (`target_entropy_multiplier` 0.5).
QC_RLPD = {"q_agg": "mean", "bc_alpha": 0.01}
QC_ENTROPY_MULTIPLIER = 0.5


@dataclass
class SACConfig:
    """Defaults are WSRL's online locomotion settings (docs/configs.md)."""

    discount: float = 0.99
    tau: float = 5e-3
    num_critics: int = 10
    target_subset: int = 2  # target = min over this many randomly chosen target critics
    # Draw that subset with replacement (repeats possible), as the official code does:
    # wsrl/agents/sac.py `critic_loss_fn` and wsrl/agents/cql.py `_get_cql_q_diff` draw
    # `jax.random.randint(key, (critic_subsample_size,), 0, critic_ensemble_size)`.
    # False: distinct critics (`randperm`).
    subset_with_replacement: bool = True
    critic_hidden: tuple[int, ...] = (256, 256)
    actor_hidden: tuple[int, ...] = (256, 256)
    layer_norm: bool = True
    actor_state_dependent_std: bool = True  # False: one learned log-std vector (antmaze)
    # Network init (models/init.py): "official" = orthogonal(√2) kernels, zero biases
    # (wsrl/common/initialization.py `orthogonal_init`, flax Dense's zero bias), the last
    # hidden layer's kernel orthogonal(kernel_scale_final) (wsrl/networks/mlp.py); "pytorch"
    # = torch's default. kernel_scale_final 1e-2: experiments/configs/train_config.py sets it
    # for locomotion, antmaze and adroit, not kitchen (None there).
    init: str = "official"
    kernel_scale_final: float | None = 1e-2
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 1e-4
    initial_temperature: float = 1.0
    target_entropy: float | None = None  # None → −|A| (Q-chunking's −h·|A|/2 for chunks of h)
    backup_entropy: bool = False  # WSRL: no entropy term in the Bellman target
    # Max-target backup: the target maxes the subset-min target Q over `max_target_actions`
    # sampled next actions (official SAC `max_target_backup`, `n_actions` 10:
    # wsrl/agents/sac.py `_create_common`; on online only in antmaze_wsrl, train_config.py).
    # CQL has its own switch (`CQLConfig.cql_max_target_backup`).
    max_target_backup: bool = False
    max_target_actions: int = 10
    utd: int = 1
    # How the optimisers step within one update (wsrl_wm/agents/schedule.py): "official"
    # (wsrl/agents/sac.py `update`, `update_high_utd`: one joint step at UTD 1; at UTD k every
    # Adam takes k + 1 steps, the idle ones on zero gradients) or "trained_only" (only the
    # trained network's optimiser steps, critic before actor at every UTD).
    update_rule: str = "official"
    on_nonfinite: str = "stop"  # on a non-finite loss: "stop" (raise) or "skip" the update
    q_bound: float = 1e6  # warn once when some |Q(s, a_data)| exceeds this
    compile: str = "auto"  # torch.compile the update: "auto" (long runs), "on" or "off"
    # Action chunking (Q-chunking, Li, Zhou & Levine 2025): actor and critics act on chunks of
    # h consecutive actions, one flattened action of h·|A|, backed up over h steps with γ^h
    # (docs/beyond_wsrl.md, "Action chunking"). 1: plain one-step actions.
    action_chunk: int = 1
    # How the critics are aggregated in the target and the actor loss: "min" (WSRL: min over
    # the drawn `target_subset` in the target, min over all in the actor loss) or "mean" (over
    # all critics in both, Q-chunking's `q_agg`). None: "min" at action_chunk 1, "mean" above.
    q_agg: str | None = None
    # Weight of the actor's behaviour-cloning term −log π(a_data | s) on the actor's batch
    # (Q-chunking's `bc_alpha`). None: 0 at action_chunk 1, 0.01 (QC-RLPD) above.
    bc_alpha: float | None = None
    # A chunk window that a terminal cuts short: "drop" it (Q-chunking masks every window that
    # crosses an episode end) or "pad" it with its last action (wsrl_wm/data/chunks.py).
    terminal_windows: str = "drop"

    def __post_init__(self) -> None:
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise WsrlError(f"on_nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got "
                            f"{self.on_nonfinite!r}")
        if not self.q_bound > 0:
            raise WsrlError(f"q_bound must be positive, got {self.q_bound}")
        if self.update_rule not in UPDATE_RULES:
            raise WsrlError(f"update_rule must be one of {', '.join(UPDATE_RULES)}, got "
                            f"{self.update_rule!r}")
        wants_compile(self.compile, 0)  # rejects an unknown mode now, not at the first update
        if self.init not in INITS:
            raise WsrlError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.max_target_actions < 1:
            raise WsrlError(f"max_target_actions must be at least 1, got "
                            f"{self.max_target_actions}")
        if self.action_chunk < 1:
            raise WsrlError(f"action_chunk must be at least 1, got {self.action_chunk}")
        chunked = self.action_chunk > 1  # unset Q-chunking rules: QC-RLPD's for chunks
        if self.q_agg is None:
            self.q_agg = QC_RLPD["q_agg"] if chunked else "min"
        if self.bc_alpha is None:
            self.bc_alpha = QC_RLPD["bc_alpha"] if chunked else 0.0
        if self.q_agg not in Q_AGGREGATIONS:
            raise WsrlError(f"q_agg must be one of {', '.join(Q_AGGREGATIONS)}, got "
                            f"{self.q_agg!r}")
        if not self.bc_alpha >= 0:
            raise WsrlError(f"bc_alpha must be >= 0, got {self.bc_alpha}")
        if self.terminal_windows not in TERMINAL_WINDOWS:
            raise WsrlError(f"terminal_windows must be one of {', '.join(TERMINAL_WINDOWS)}, "
                            f"got {self.terminal_windows!r}")
        if self.kernel_scale_final is not None and not self.kernel_scale_final > 0:
            raise WsrlError(f"kernel_scale_final must be positive (or null for gain √2), got "
                            f"{self.kernel_scale_final}")

    @property
    def pad_terminal(self) -> bool:
        """Whether chunk windows cut short by a terminal are kept, padded (`terminal_windows`)."""
        return self.terminal_windows == "pad"


class SAC(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, config: SACConfig | None = None):
        """`act_dim`: the env's; the networks take a chunk of `config.action_chunk` of them."""
        super().__init__()
        self.config = config = config or SACConfig()
        act_dim *= config.action_chunk
        init = dict(init=config.init, kernel_scale_final=config.kernel_scale_final)
        self.actor = TanhGaussianActor(obs_dim, act_dim, config.actor_hidden, config.layer_norm,
                                       config.actor_state_dependent_std, **init)
        self.critic = CriticEnsemble(obs_dim, act_dim, config.num_critics, config.critic_hidden,
                                     config.layer_norm, **init)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperature = LogScalar(config.initial_temperature)
        multiplier = QC_ENTROPY_MULTIPLIER if config.action_chunk > 1 else 1.0
        self.target_entropy = (-multiplier * act_dim if config.target_entropy is None
                               else config.target_entropy)
        self.updater = Updater(self)

    def make_optimizers(self) -> Optimizers:
        c = self.config
        return {
            "critic": adam(self.critic.parameters(), c.critic_lr),
            "actor": adam(self.actor.parameters(), c.actor_lr),
            "temperature": adam(self.temperature.parameters(), c.temperature_lr),
        }

    def compile_losses(self, updates: int) -> bool:
        """Let the updater run fused (one compiled function per update) if `config.compile`
        asks for it for a run of `updates` updates. Returns whether."""
        return self.updater.compile(updates)

    @property
    def fused_update(self) -> FusedStepper | None:
        """The compiled stepper, when this agent's updates run fused."""
        return self.updater.fused

    def update(self, batch: Batch, optimizers: Optimizers) -> dict:
        """One update on `batch` by this agent's `Updater`."""
        return self.updater.update(batch, optimizers)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor(obs, deterministic)[0]

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """r + γ·(1 − terminal)·min over the drawn target critics of Q(s', a'), a' ~ π(s')
        (`q_agg` "mean": the mean over all target critics); with n = `backup_actions()` > 1,
        the max of that over n sampled a' (the entropy term, if any, is taken before the max,
        as the official `_process_target_next_qs`).
        For chunks of h actions the rows are h steps long (wsrl_wm/data/chunks.py): r is the
        chunk's discounted reward sum, s' the state h steps on, and γ becomes γ^h."""
        n, next_obs = self.backup_actions(), batch["next_observations"]
        if n > 1:
            next_obs = repeat_rows(next_obs, n)
        next_action, next_log_prob = self.actor(next_obs)
        if self.config.q_agg == "mean":
            target_q = self.target_critic(next_obs, next_action).mean(dim=0)
        else:
            target_q = self.target_critic(next_obs, next_action,
                                          self.target_members(next_action.device)).min(dim=0).values
        if self.config.backup_entropy:
            target_q = target_q - self.temperature() * next_log_prob
        if n > 1:
            target_q = target_q.view(-1, n).max(dim=1).values
        not_done = 1.0 - batch["terminals"].float()
        discount = self.config.discount ** self.config.action_chunk
        return batch["rewards"] + discount * not_done * target_q

    def backup_actions(self) -> int:
        """How many sampled next actions the target maxes over (1: the plain backup)."""
        return self.config.max_target_actions if self.config.max_target_backup else 1

    def target_members(self, device: torch.device) -> torch.Tensor | None:
        """A random `target_subset` of the N critics (`draw_members`): only these are
        computed. None (all of them) when the subset would hold every critic, as in the
        official code, where a run without a subset size (the 2-critic CQL / Cal-QL) takes the
        min over all; and inductor fails to compile a `randperm` slice that keeps every row
        (docs/performance.md)."""
        critics = self.critic.num_critics
        if self.config.target_subset >= critics:
            return None
        return draw_members(critics, self.config.target_subset,
                            self.config.subset_with_replacement, device)

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        return self.td_loss(self.critic(batch["observations"], batch["actions"]), batch)

    def td_loss(self, q: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict]:
        """Mean squared Bellman error of the critics' Q(s, a_data) = `q` [N, B]."""
        loss = (q - self.td_target(batch)).pow(2).mean()
        return loss, {"critic_loss": loss.detach(), "q_mean": q.detach().mean(),
                      "q_abs_max": q.detach().abs().max()}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(actor loss, log π of the sampled actions, info); critics get no gradient here."""
        with frozen(self.critic):
            return self.policy_loss(batch)

    def policy_loss(self, batch: Batch, static: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The actor loss; the caller keeps gradients out of the critics (`actor_loss`, or the
        fused stepper, which differentiates the actor's parameters only). `static`: `per_row`
        without its host sync, for an update run as one graph. With `bc_alpha` > 0 it adds
        the behaviour-cloning term on the batch's own actions (QC-RLPD's)."""
        obs = batch["observations"]
        action, log_prob = self.actor(obs)
        if self.config.q_agg == "mean":
            q = self.critic(obs, action).mean(dim=0)
        else:
            with torch.no_grad():  # which critic is the minimum, row by row ...
                minimiser = self.critic(obs, action).argmin(dim=0)
            # ... since the gradient of the min flows only through it
            q = self.critic.per_row(obs, action, minimiser, static)
        loss = (self.temperature().detach() * log_prob - q).mean()
        info = {"actor_loss": loss.detach(), "entropy": -log_prob.detach().mean()}
        if self.config.bc_alpha > 0:
            bc_loss = -self.config.bc_alpha * data_log_prob(self.actor, obs,
                                                            batch["actions"]).mean()
            loss = loss + bc_loss
            info["bc_loss"] = bc_loss.detach()
        return loss, log_prob.detach(), info

    def temperature_loss(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """α·(entropy − target entropy), the entropy estimated from the policy's actions at the
        next states, as many per state as the backup samples (the official
        `temperature_loss_fn` draws them with `_compute_next_actions`, wsrl/agents/sac.py)."""
        next_obs = batch["next_observations"]
        with torch.no_grad():
            _, log_prob = self.actor(repeat_rows(next_obs, self.backup_actions()))
        temperature = self.temperature()
        loss = -(temperature * (log_prob + self.target_entropy)).mean()
        return loss, {"temperature": temperature.detach(), "temperature_loss": loss.detach()}

    def update_target(self) -> None:
        online = list(self.critic.parameters())
        target = list(self.target_critic.parameters())
        with torch.no_grad():
            torch._foreach_lerp_(target, online, self.config.tau)

    def dual_losses(self, info: dict) -> dict[str, torch.Tensor]:
        """Losses stepped after the update, by optimiser name, from its info: none here."""
        return {}


def draw_members(critics: int, size: int, replacement: bool, device: torch.device | None = None
                 ) -> torch.Tensor:
    """`size` critic indices out of `critics`: independent uniform draws, so repeats happen
    (the official rule, `SACConfig.subset_with_replacement`), or distinct ones."""
    if replacement:
        return torch.randint(critics, (size,), device=device)
    return torch.randperm(critics, device=device)[:size]


def data_log_prob(actor: TanhGaussianActor, obs: torch.Tensor, action: torch.Tensor
                  ) -> torch.Tensor:
    """log π(action | obs) of given actions (the BC term's), clipped into (−1, 1) by 1e-5 as
    Q-chunking's `actor_loss` does so that the tanh's inverse stays finite."""
    mean, log_std = actor.distribution_params(obs)
    action = action.clamp(-1.0 + 1e-5, 1.0 - 1e-5)
    noise = (torch.atanh(action) - mean) / log_std.exp()
    gaussian = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    return gaussian - torch.log1p(-action.pow(2)).sum(-1)


def adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam with its fused kernel (one pass over all parameters per step, CPU and GPU)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


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
