"""The world model online: branched rollouts of the current policy into the model buffer, the
model's accuracy on fresh online data and on the offline probe, and its adaptation on the
online buffer (docs/world_model.md)."""

import dataclasses

import torch

from wsrl_wm.envs import termination_fn
from wsrl_wm.envs.task_functions import task_reward_fn
from wsrl_wm.metrics import MODEL_COLUMNS
from wsrl_wm.world_model import (
    ModelBuffer,
    RolloutConfig,
    WorldModel,
    branched_rollout,
    h_step_error,
    one_step_error,
    train_world_model,
    trajectory_windows,
)


class Imagination:
    """Everything it draws (start states, elites, model noise, the policy's actions in the
    model, the adaptation's splits) comes from its own `generator`, so a run with imagination
    samples the same real rows as one without, with the same seed, until their agents
    differ."""

    def __init__(self, world_model: WorldModel, rollout: RolloutConfig, buffer: ModelBuffer,
                 env_name: str, probe: dict[str, torch.Tensor], generator: torch.Generator,
                 reward_scale: float = 1.0, reward_bias: float = 0.0,
                 skip_nonfinite: bool = False, warmup_steps: int = 0):
        self.world_model, self.rollout, self.buffer = world_model, rollout, buffer
        self.probe, self.generator = probe, generator  # probe: diagnostics only, never a loss
        self.reward_scale, self.reward_bias = reward_scale, reward_bias
        self.skip_nonfinite = skip_nonfinite  # drop non-finite rollouts instead of stopping
        self.warmup_steps = warmup_steps  # the first rows of the online buffer
        self.terminated = termination_fn(env_name)
        self.raw_task_fn = task_reward_fn(env_name)

    def round(self, agent, online, online_step: int, env_step: int,
              device: torch.device) -> dict[str, float]:
        """A round of branched rollouts of the current policy from `online`-buffer states
        (`online` holds env steps, also when the agent acts in chunks), after measuring the
        model on the online transitions gathered since the last round (which it has never
        been trained on) and on the offline probe. Returns its metrics."""
        fresh = on_device(online.latest(self.rollout.interval), device)
        metrics = self.accuracy(fresh, device, agent.config.action_chunk)
        first = self.warmup_steps if self.rollout.start_from == "warmup" else None
        starts = online.sample(self.rollout.starts_at(online_step), self.generator,
                               first)["observations"]
        quantile = self.rollout.uncertainty_quantile
        threshold = None if quantile is None else self.world_model.gate_threshold(quantile)
        task_fn = None if self.raw_task_fn is None else self.scaled_task_fn
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the policy's noise: off the agent's stream
            torch.manual_seed(int(torch.randint(2**62, (), generator=self.generator)))
            transitions, stats = branched_rollout(
                self.world_model, agent.actor, starts.to(device),
                self.rollout.horizon_at(online_step), self.terminated, threshold,
                self.generator, self.skip_nonfinite, task_fn, agent.config.action_chunk,
                agent.config.discount, agent.config.pad_terminal)
        count = len(transitions["rewards"])  # the switch's round may exceed the nominal size
        self.buffer.resize(max(self.rollout.buffer_capacity(online_step), count))
        if count:
            self.buffer.add(transitions, env_step)
        metrics |= {"model_buffer/size": float(len(self.buffer)),
                    "model_buffer/mean_age": self.buffer.mean_age(env_step)}
        return {**metrics, **stats}

    def accuracy(self, fresh: dict[str, torch.Tensor], device: torch.device,
                 action_chunk: int = 1) -> dict[str, float]:
        """One-step error on `fresh` online rows and on the offline probe (does an adapted
        model unlearn the offline data?), and the H-step error (H = the model steps of the
        longest rollout: its horizon in chunks of `action_chunk`) of open-loop predictions
        along the real trajectories in `fresh`."""
        probe = on_device(self.probe, device)
        metrics = {MODEL_COLUMNS["model_one_step"]: one_step_error(self.world_model, fresh),
                   MODEL_COLUMNS["model_probe"]: one_step_error(self.world_model, probe)}
        horizon = max(self.rollout.horizon, self.rollout.max_horizon or 0) * action_chunk
        states, actions = trajectory_windows(fresh, horizon)
        if len(states):
            errors = h_step_error(self.world_model, states, actions)
            metrics[MODEL_COLUMNS["model_h_step"]] = float(errors[-1])
        return metrics

    def adapt(self, online, device: torch.device) -> dict[str, float]:
        """Warm-started epochs on the online buffer only (warmup + online rows, never offline
        data), early-stopped on an online holdout; the holdout error before and after."""
        rollout = self.rollout
        config = dataclasses.replace(self.world_model.config, max_epochs=rollout.adapt_epochs)
        with torch.enable_grad():
            result = train_world_model(self.world_model, online.latest(len(online)), config,
                                       self.generator, progress=False,
                                       refit_normalizer=rollout.adapt_refit_normalizer,
                                       keep_start=rollout.adapt_keep_start,
                                       max_seconds=rollout.adapt_max_seconds)
        return {
            "model/adapt_holdout_mse_before": result["elite_holdout_mse_before"],
            "model/adapt_holdout_mse_after": result["elite_holdout_mse"],
            "model/adapt_epochs": float(result["epochs"]),
            "model/probe_mse_after_adapt": one_step_error(self.world_model,
                                                          on_device(self.probe, device)),
        }

    def scaled_task_fn(self, obs, action, next_obs) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's raw reward in the run's reward units (scale and bias), and termination."""
        reward, terminated = self.raw_task_fn(obs, action, next_obs)
        return reward * self.reward_scale + self.reward_bias, terminated


def on_device(rows: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in rows.items()}
