"""How an agent steps: the UTD schedule (wsrl_wm/agents/schedule.py), run by one of two steppers.

An agent exposes what to optimise (`critic_loss`, `actor_loss` / `policy_loss`,
`temperature_loss`, `dual_losses`, `update_target`); the `Updater` owns how to step:

- the schedule: UTD k critic steps on k slices of the batch, a target update after each, then
  one actor + temperature step on the whole batch (a single joint step at UTD 1 under the
  official rule, whose idle optimisers step on zero gradients), then the dual steps (CQL's
  Lagrange α);
- the steppers that run it: `EagerSteps` (autograd and torch.optim, each loss checked before
  its step) or, for a compiled run, `FusedStepper` (wsrl_wm/agents/fused_update.py: the same
  schedule traced into one compiled function, with torch.func gradients and Adam written out);
- the finite checks, and what a non-finite loss does: stop (DivergenceError) or, with
  `on_nonfinite="skip"`, undo the whole update.
"""

import copy
import math
import warnings

import torch

from wsrl_wm.agents.batches import Batch
from wsrl_wm.agents.compilation import failure_line, wants_compile
from wsrl_wm.agents.fused_update import FusedStepper
from wsrl_wm.agents.schedule import schedule
from wsrl_wm.errors import DivergenceError

Optimizers = dict[str, torch.optim.Optimizer]


class Updater:
    """One agent's update: `update(batch, optimizers)` runs `schedule` with the fused stepper
    when the run is compiled and the optimisers are the plain Adams it writes out, else
    eagerly, then the agent's dual steps."""

    def __init__(self, agent: torch.nn.Module):
        self.agent = agent
        self.compiled = False  # set by `compile`; the stepper is built on first use
        self._fused: FusedStepper | None = None
        self.skipped_updates = 0  # updates undone for a non-finite loss (on_nonfinite="skip")
        self.q_bound_warned = False

    def compile(self, updates: int) -> bool:
        """Run fused if `config.compile` asks for it for a run of `updates` updates; returns
        whether."""
        self.compiled = wants_compile(self.agent.config.compile, updates)
        return self.compiled

    @property
    def fused(self) -> FusedStepper | None:
        if self.compiled and self._fused is None:
            self._fused = FusedStepper(self.agent, self.stop_compiling)
        return self._fused

    def stop_compiling(self, error: Exception) -> None:
        """A compile failed: warn once, and run eager from now on (the failed call reruns
        eagerly; nothing of it had run)."""
        warnings.warn(failure_line(error), RuntimeWarning, stacklevel=4)
        self.compiled, self._fused = False, None

    def __deepcopy__(self, memo: dict) -> "Updater":
        """A copy compiles anew, on its first use: a compiled function is not copied, so the
        copy's would still update the original's modules."""
        copied = copy.copy(self)
        memo[id(self)] = copied
        copied.agent = copy.deepcopy(self.agent, memo)
        copied._fused = None
        return copied

    def update(self, batch: Batch, optimizers: Optimizers) -> dict:
        """One update on `batch`. A non-finite loss raises DivergenceError before its step
        ("stop"), or undoes the whole update ("skip": costs a copy of the parameters and
        optimiser moments per update, so only that mode pays it)."""
        if self.agent.config.on_nonfinite == "stop":
            return self.steps(batch, optimizers)
        saved = self.save_state(optimizers)
        try:
            info = self.steps(batch, optimizers)
        except DivergenceError as error:
            self.load_state(saved, optimizers)
            self.skipped_updates += 1
            if self.skipped_updates == 1:
                warnings.warn(f"{error}: update skipped (on_nonfinite='skip'); later skips are "
                              "only counted in skipped_updates", RuntimeWarning, stacklevel=3)
            info = {}
        return {**info, "skipped_updates": float(self.skipped_updates)}

    def steps(self, batch: Batch, optimizers: Optimizers) -> dict:
        fused = self.fused
        if fused is not None and fused.supports(optimizers):
            info = self.fused_steps(fused, batch, optimizers)
        else:
            info = schedule(EagerSteps(self, optimizers), batch, self.agent.config.utd,
                            self.agent.config.update_rule)
        for name, loss in self.agent.dual_losses(info).items():
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            check_finite(**{name: loss.item()})
            optimizers[name].step()
        return info

    def fused_steps(self, fused: FusedStepper, batch: Batch, optimizers: Optimizers) -> dict:
        """The compiled schedule masks a non-finite step and every later one on the device;
        its losses are read once, after it, and checked in the eager path's order."""
        losses, q_abs_max, info = fused(batch, optimizers)
        values = torch.cat([losses, q_abs_max]).tolist()  # the one host sync
        utd = len(q_abs_max)
        for loss, q_max in zip(values[:utd], values[-utd:], strict=True):
            self.check_critic_loss(loss, q_max)
        check_finite(actor=values[utd], temperature=values[utd + 1])
        return info

    def check_critic_loss(self, loss: float, q_abs_max: float) -> None:
        check_finite(critic=loss)
        self.warn_if_q_explodes(q_abs_max)

    def warn_if_q_explodes(self, q_abs_max: float) -> None:
        """Reported once per agent; training goes on (the critic may still recover)."""
        q_bound = self.agent.config.q_bound
        if q_abs_max > q_bound and not self.q_bound_warned:
            self.q_bound_warned = True
            warnings.warn(f"Q-values reached |Q| = {q_abs_max:.3g}, beyond q_bound = "
                          f"{q_bound:.3g}: the critic may be diverging", RuntimeWarning,
                          stacklevel=5)

    def save_state(self, optimizers: Optimizers) -> tuple[dict, list[dict]]:
        """Copies of the parameters, buffers and optimiser moments, to undo an update."""
        params = {key: value.clone() for key, value in self.agent.state_dict().items()}
        moments = [{param: {key: clone(value) for key, value in state.items()}
                    for param, state in optimizer.state.items()}
                   for optimizer in optimizers.values()]
        return params, moments

    def load_state(self, saved: tuple[dict, list[dict]], optimizers: Optimizers) -> None:
        """Back to `save_state`'s copies; optimiser state is changed in place, because
        Lightning's optimiser wrappers share the wrapped optimiser's `state` dict."""
        params, moments = saved
        self.agent.load_state_dict(params)
        for optimizer, state in zip(optimizers.values(), moments, strict=True):
            optimizer.state.clear()
            optimizer.state.update(state)


class EagerSteps:
    """`schedule`'s steps with autograd and torch.optim. Each loss is checked to be finite
    before its step (one host sync per step), so no parameter ever trains on NaN. Under the
    "official" rule the idle optimisers of a sub-step step on zero gradients."""

    def __init__(self, updater: Updater, optimizers: Optimizers):
        self.updater, self.agent, self.optimizers = updater, updater.agent, optimizers
        self.idle_steps = updater.agent.config.update_rule == "official"

    def critic(self, part: Batch, k: int) -> dict:
        loss, info = self.agent.critic_loss(part)
        optimizer = self.optimizers["critic"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.updater.check_critic_loss(*torch.stack([loss.detach(), info["q_abs_max"]]).tolist())
        optimizer.step()
        self.step_idle([name for name in self.optimizers if name != "critic"])
        return info

    def target(self) -> None:
        self.agent.update_target()

    def actor_and_temperature(self, batch: Batch) -> dict:
        """Both losses are checked with one host sync before either step."""
        actor_loss, temperature_loss, info = self.actor_and_temperature_losses(batch)
        actor_value, temperature_value = torch.stack([actor_loss.detach(),
                                                      temperature_loss.detach()]).tolist()
        check_finite(actor=actor_value, temperature=temperature_value)
        self.step("actor", "temperature")
        self.step_idle(["critic"])
        return info

    def joint(self, batch: Batch) -> dict:
        """Every loss at the same parameters, then every optimiser's step, then the target
        update (the official single update at UTD 1)."""
        critic_loss, info = self.agent.critic_loss(batch)
        self.optimizers["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        actor_loss, temperature_loss, actor_info = self.actor_and_temperature_losses(batch)
        values = torch.stack([critic_loss.detach(), info["q_abs_max"], actor_loss.detach(),
                              temperature_loss.detach()]).tolist()
        self.updater.check_critic_loss(*values[:2])
        check_finite(actor=values[2], temperature=values[3])
        self.step("critic", "actor", "temperature")
        self.target()
        return {**info, **actor_info}

    def actor_and_temperature_losses(self, batch: Batch
                                     ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Both losses, back-propagated into the actor's and the temperature's gradients."""
        actor_loss, _, info = self.agent.actor_loss(batch)
        temperature_loss, temperature_info = self.agent.temperature_loss(batch)
        for name, loss in (("actor", actor_loss), ("temperature", temperature_loss)):
            self.optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
        return actor_loss, temperature_loss, {**info, **temperature_info}

    def step(self, *names: str) -> None:
        for name in names:
            self.optimizers[name].step()

    def step_idle(self, names: list[str]) -> None:
        """The official rule's step of an optimiser whose network is not trained in this
        sub-step: on zero gradients (torch's Adam would skip a `None` gradient)."""
        if not self.idle_steps:
            return
        for name in names:
            optimizer = self.optimizers[name]
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = torch.zeros_like(param)
            optimizer.step()


def check_finite(**losses: float) -> None:
    """Raise DivergenceError naming the first non-finite loss (none is stepped on)."""
    for name, value in losses.items():
        if not math.isfinite(value):
            raise DivergenceError(f"{name} loss became {'NaN' if math.isnan(value) else value}")


def clone(value):
    """A copy of one optimiser-state entry (tensors are updated in place by the step)."""
    return value.clone() if isinstance(value, torch.Tensor) else value
