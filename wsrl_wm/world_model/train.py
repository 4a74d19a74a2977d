"""Fit a WorldModel on transitions: bootstrapped minibatches, Gaussian NLL, per-member early
stopping on holdout MSE with each member restored to its own best epoch, then elite selection
(MBPO)."""

import itertools
import math
import time
from collections.abc import Iterable

import torch

from wsrl_wm.progress import progress_bar
from wsrl_wm.world_model.model import WorldModel, WorldModelConfig, generator_device


class BestMemberTracker:
    """Per-member early stopping that remembers each member's best weights.

    `member_params` are stacked [E, ...] (row e belongs to member e): on each epoch a member
    improves when its loss drops by more than `improvement_threshold` relative to its best,
    and then only its rows are snapshot. `shared_params` (e.g. the ensemble's log-variance
    bounds) belong to no single member: they are snapshot whenever any member improves, i.e.
    restored to the last epoch that set some member's best. Training should stop after
    `patience` consecutive epochs in which no member improved.
    """

    def __init__(self, member_params: Iterable[torch.Tensor],
                 shared_params: Iterable[torch.Tensor] = (), patience: int = 5,
                 improvement_threshold: float = 0.01):
        self.member_params = list(member_params)
        self.shared_params = list(shared_params)
        self.patience, self.improvement_threshold = patience, improvement_threshold
        num_members = self.member_params[0].shape[0]
        self.best_loss = torch.full((num_members,), math.inf)
        self.best_epoch = torch.full((num_members,), -1)
        self.epochs = 0
        self.epochs_without_improvement = 0
        self._member_best = [p.detach().clone() for p in self.member_params]
        self._shared_best = [p.detach().clone() for p in self.shared_params]

    @torch.no_grad()
    def update(self, losses: torch.Tensor) -> bool:
        """Record one epoch's per-member losses [E]; True once training should stop."""
        losses = losses.detach().cpu().float()
        relative_drop = (self.best_loss - losses) / self.best_loss
        improved = self.best_loss.isinf() | (relative_drop > self.improvement_threshold)
        if improved.any():
            mask = improved.to(self.member_params[0].device)
            for param, best in zip(self.member_params, self._member_best, strict=True):
                best[mask] = param[mask]
            for param, best in zip(self.shared_params, self._shared_best, strict=True):
                best.copy_(param)
            self.best_loss = torch.where(improved, losses, self.best_loss)
            self.best_epoch[improved] = self.epochs
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        self.epochs += 1
        return self.epochs_without_improvement >= self.patience

    @torch.no_grad()
    def restore(self) -> None:
        """Load every member's best weights (and the shared ones) back into the parameters."""
        for param, best in zip(self.member_params + self.shared_params,
                               self._member_best + self._shared_best, strict=True):
            param.copy_(best)


def train_world_model(model: WorldModel, data: dict[str, torch.Tensor],
                      config: WorldModelConfig | None = None,
                      generator: torch.Generator | None = None, progress: bool = True,
                      refit_normalizer: bool = True, keep_start: bool = False,
                      max_seconds: float | None = None) -> dict:
    """Fit `model` on `data` (observations, actions, next_observations, rewards), pick its
    elites and calibrate its disagreement on the holdout. `config` defaults to the model's
    (`max_epochs` None: no cap, only the early stop); random draws happen on `generator`'s
    device.

    For an online adaptation (warm-started weights): `refit_normalizer` False keeps the input
    normaliser the weights were trained with (MBPO refits its scaler at every training);
    `keep_start` counts the starting weights as epoch 0, so a member that does not improve on
    them keeps them (MBPO starts every training's best at infinity: the first epoch always
    replaces them); `max_seconds` stops after the epoch that passes it (MBPO's `max_t`).

    Returns epochs run, per-member best holdout MSE, the elites' mean holdout MSE before and
    after, the last epoch's mean training loss, and the holdout MSE of predicting the
    training-target mean (a constant baseline the model should clearly beat).
    """
    config = config or model.config
    device = model.input_mean.device
    obs, act, next_obs, rewards = (data[key].to(device, torch.float32) for key in (
        "observations", "actions", "next_observations", "rewards"))
    num_rows = len(obs)
    num_holdout = min(int(config.holdout_ratio * num_rows), config.max_holdout)
    if not 0 < num_holdout < num_rows:
        raise ValueError(f"{num_rows} transitions leave no holdout or no training rows "
                         f"(holdout_ratio={config.holdout_ratio})")
    if config.max_epochs is not None and config.max_epochs < 1:
        raise ValueError(f"max_epochs must be positive (or None for no cap), got "
                         f"{config.max_epochs}")
    draw = generator_device(generator, device)
    order = torch.randperm(num_rows, generator=generator, device=draw).to(device)
    holdout, train = order[:num_holdout], order[num_holdout:]

    targets = model.targets(obs, next_obs, rewards)
    # The holdout error of the model as it came (its own normaliser), before any refit.
    elite_before = member_mse(model, model.normalize(obs[holdout], act[holdout]),
                              targets[holdout])[model.elites].mean().item()
    if refit_normalizer:
        model.set_normalizer(obs[train], act[train])
    inputs = model.normalize(obs, act)
    ensemble = model.ensemble
    num_members, num_train = ensemble.num_members, len(train)
    bootstrap = train[torch.randint(num_train, (num_members, num_train), generator=generator,
                                    device=draw).to(device)]
    optimizer = torch.optim.Adam(model.optimizer_groups(), lr=config.lr)
    tracker = BestMemberTracker(ensemble.mlp.parameters(),
                                [ensemble.max_logvar, ensemble.min_logvar],
                                config.patience, config.improvement_threshold)
    if keep_start:  # the starting weights, under the normaliser they will be used with
        tracker.update(member_mse(model, inputs[holdout], targets[holdout]))
    train_loss = math.nan

    epochs = progress_bar(config.max_epochs, "world model", unit="epoch", disable=not progress)
    started = time.monotonic()
    for _ in itertools.count() if config.max_epochs is None else range(config.max_epochs):
        shuffle = torch.rand(bootstrap.shape, generator=generator, device=draw).argsort(dim=1)
        rows = bootstrap.gather(1, shuffle.to(device))
        losses = []
        for start in range(0, num_train, config.batch_size):
            batch = rows[:, start: start + config.batch_size]
            loss = ensemble.loss(inputs[batch], targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        train_loss = torch.stack(losses).mean().item()
        holdout_mse = member_mse(model, inputs[holdout], targets[holdout])
        epochs.set_postfix(train_loss=f"{train_loss:.3f}",
                           holdout_mse=f"{holdout_mse.min().item():.4f}")
        epochs.update(1)
        if tracker.update(holdout_mse):
            break
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            break
    epochs.close()
    tracker.restore()

    best = tracker.best_loss
    model.elites.copy_(best.argsort()[: config.num_elites].to(device))
    model.calibrate(targets[train], obs[holdout], act[holdout])
    baseline = (targets[holdout] - targets[train].mean(dim=0)).pow(2).mean()
    return {
        "epochs": tracker.epochs - keep_start,
        "holdout_mse": best.tolist(),
        "elite_holdout_mse_before": elite_before,
        "elite_holdout_mse": best[model.elites.cpu()].mean().item(),
        "train_loss": train_loss,
        "baseline_holdout_mse": baseline.item(),
    }


@torch.no_grad()
def member_mse(model: WorldModel, inputs: torch.Tensor, targets: torch.Tensor,
               members: torch.Tensor | None = None) -> torch.Tensor:
    """MSE [K] of each of the K `members`' (all) mean over [Δobs, reward]; `inputs` are
    already normalised."""
    mean, _ = model.ensemble(inputs, members)
    return (mean - targets).pow(2).mean(dim=(1, 2))

