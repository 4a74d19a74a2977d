"""The fused stepper: `schedule` (the UTD critic steps, then the actor and temperature step)
traced into one compiled function, each loss's gradient by torch.func, with Adam and the
target update written out in the same graph. No autograd engine, no optimiser dispatch, one
guard check and one host sync per update instead of one per step (docs/performance.md).

Numerically it is `torch.optim.Adam` (no weight decay, no AMSGrad) and `lerp_` toward the
online critics, and it keeps Adam's state layout (`step`, `exp_avg`, `exp_avg_sq`), so the
optimisers' checkpoints load into either stepper. A non-finite loss masks its own step and every
later one on the device, so the parameters end where the eager stepper's check before that step
would have stopped them; the `Updater` reads the losses once and raises."""

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from wsrl_wm.agents.compilation import compile_or_fall_back
from wsrl_wm.agents.schedule import schedule

GROUPS = ("critic", "actor", "temperature")  # the optimisers this stepper writes out


class FusedStepper:
    def __init__(self, agent: nn.Module, on_failure: Callable[[Exception], None]):
        self.utd, self.tau, self.rule = agent.config.utd, agent.config.tau, agent.config.update_rule
        self.losses = _Losses(agent)
        self.names = {group: [f"{group}.{name}" for name, _ in module.named_parameters()]
                      for group, module in self.losses.named_children()}
        self.params = {group: list(module.parameters())
                       for group, module in self.losses.named_children()}
        self.targets = list(agent.target_critic.parameters())
        # One graph (`fullgraph`): a compile failure then comes before any step has run, so
        # the update can fall back to eager for this very call (`compile_or_fall_back`).
        self.compiled = compile_or_fall_back(self.update, on_failure, fullgraph=True)

    def supports(self, optimizers: dict[str, torch.optim.Optimizer]) -> bool:
        """Whether the critic, actor and temperature optimisers are each the plain Adam over
        exactly the parameters this stepper writes out; anything else (weight decay, AMSGrad,
        other parameters) keeps the eager stepper, as does an optimiser of its own (CQL's
        Lagrange α) that the official rule would step idle inside the critic sub-steps."""
        if self.idle_steps and set(optimizers) - set(GROUPS):
            return False
        return all(name in optimizers and plain_adam(optimizers[name], self.params[name])
                   for name in GROUPS)

    @property
    def idle_steps(self) -> bool:
        """Whether idle optimisers step on zero gradients (the official rule at UTD > 1)."""
        return self.rule == "official" and self.utd > 1

    def steps_per_update(self, name: str) -> int:
        """How many Adam steps `name`'s optimiser takes in one update."""
        if self.idle_steps:
            return self.utd + 1
        return self.utd if name == "critic" and self.rule == "trained_only" else 1

    def __call__(self, batch: dict, optimizers: dict[str, torch.optim.Optimizer]
                 ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(losses [utd critic losses, actor, temperature], each critic step's max |Q|, the
        last critic step's info merged with the actor's and the temperature's)."""
        hyper, states = {}, {}
        for name in GROUPS:
            group = optimizers[name].param_groups[0]
            states[name] = [adam_state(optimizers[name], p) for p in self.params[name]]
            hyper[name] = (*bias_corrections(states[name], group, self.steps_per_update(name)),
                           *group["betas"],
                           group["eps"])
        return self.compiled(batch, states, hyper)

    def update(self, batch: dict, states: dict, hyper: dict
               ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        steps = _Steps(self, states, hyper, batch["rewards"].device)
        info = schedule(steps, batch, self.utd, self.rule)
        losses = torch.stack([*steps.critic_losses, steps.actor_loss, steps.temperature_loss])
        return losses, torch.stack(steps.q_abs_max), info

    def differentiate(self, name: str, data) -> tuple[tuple[torch.Tensor, list], object]:
        """((loss, its gradient w.r.t. `name`'s parameters), aux) of `name`'s loss on `data`;
        the other groups' parameters are constants there, so no gradient is computed for
        them."""
        def loss_of(values):
            params = dict(zip(self.names[name], values, strict=True))
            return functional_call(self.losses, params, (name, data))

        values = [param.detach() for param in self.params[name]]
        grads, (loss, aux) = grad_and_value(loss_of, has_aux=True)(values)
        return (loss.detach(), grads), aux


class _Steps:
    """`schedule`'s steps inside the compiled function: `ok` (a device bool) turns false at
    the first non-finite loss and masks that step and every later one. Each step takes its
    column of the bias corrections: a critic sub-step k column k, the actor sub-step the
    next one (the official rule's idle steps count for every optimiser)."""

    def __init__(self, stepper: FusedStepper, states: dict, hyper: dict, device):
        self.stepper, self.states, self.hyper = stepper, states, hyper
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self.critic_losses, self.q_abs_max = [], []
        self.actor_loss = self.temperature_loss = None

    def critic(self, part: dict, k: int) -> dict:
        (loss, grads), info = self.critic_gradients(part)
        self.adam("critic", grads, k)
        if self.stepper.idle_steps:
            self.adam("actor", None, k)
            self.adam("temperature", None, k)
        return info

    def target(self) -> None:
        with torch.no_grad():
            for target, param in zip(self.stepper.targets, self.stepper.params["critic"],
                                     strict=True):
                target.copy_(torch.where(self.ok, target.lerp(param, self.stepper.tau), target))

    def actor_and_temperature(self, batch: dict) -> dict:
        grads, info = self.actor_and_temperature_gradients(batch)
        column = self.stepper.utd if self.stepper.idle_steps else 0
        for name in ("actor", "temperature"):
            self.adam(name, grads[name], column)
        if self.stepper.idle_steps:
            self.adam("critic", None, column)
        return info

    def joint(self, batch: dict) -> dict:
        """Every gradient at the same parameters, then every step, then the target update."""
        (loss, critic_grads), info = self.critic_gradients(batch)
        grads, actor_info = self.actor_and_temperature_gradients(batch)
        for name, group_grads in (("critic", critic_grads), *grads.items()):
            self.adam(name, group_grads, 0)
        self.target()
        return {**info, **actor_info}

    def critic_gradients(self, part: dict):
        (loss, grads), info = self.stepper.differentiate("critic", part)
        self.ok = self.ok & torch.isfinite(loss)
        self.critic_losses.append(loss)
        self.q_abs_max.append(info["q_abs_max"])
        return (loss, grads), info

    def actor_and_temperature_gradients(self, batch: dict) -> tuple[dict, dict]:
        differentiate = self.stepper.differentiate
        (actor_loss, actor_grads), (_, actor_info) = differentiate("actor", batch)
        (temperature_loss, temperature_grads), temperature_info = differentiate(
            "temperature", batch)
        self.ok = self.ok & torch.isfinite(actor_loss) & torch.isfinite(temperature_loss)
        self.actor_loss, self.temperature_loss = actor_loss, temperature_loss
        return ({"actor": actor_grads, "temperature": temperature_grads},
                {**actor_info, **temperature_info})

    def adam(self, name: str, grads: list[torch.Tensor] | None, column: int) -> None:
        adam_(self.stepper.params[name], grads, self.states[name], self.hyper[name], column,
              self.ok)


def adam_(params: list[nn.Parameter], grads: list[torch.Tensor] | None, states: list[dict],
          hyper: tuple, step: int, ok: torch.Tensor) -> None:
    """torch.optim.Adam's step, in place, where `ok` (a device bool); elsewhere nothing moves.
    `grads` None: a step on zero gradients (the moments decay, the momentum still moves the
    parameters). `hyper`: (`bias_corrections`' two [parameters, steps] tensors, β1, β2, ε);
    `step` picks this step's column of the corrections."""
    step_size, inverse_root, beta1, beta2, eps = hyper
    step_size, inverse_root = step_size[:, step], inverse_root[:, step]
    with torch.no_grad():
        for i, (param, state) in enumerate(zip(params, states, strict=True)):
            grad = torch.zeros_like(param) if grads is None else grads[i]
            exp_avg = torch.where(ok, state["exp_avg"].lerp(grad, 1 - beta1), state["exp_avg"])
            exp_avg_sq = torch.where(ok, state["exp_avg_sq"] * beta2 + (1 - beta2) * grad * grad,
                                     state["exp_avg_sq"])
            denominator = exp_avg_sq.sqrt() * inverse_root[i] + eps
            updated = param - step_size[i] * exp_avg / denominator
            state["step"].add_(ok.to(state["step"].dtype))
            state["exp_avg"].copy_(exp_avg)
            state["exp_avg_sq"].copy_(exp_avg_sq)
            param.copy_(torch.where(ok, updated, param))


def bias_corrections(states: list[dict], group: dict, steps: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam's lr / (1 − β1^t) and 1 / √(1 − β2^t) for each parameter's next `steps` steps t,
    [parameters, steps], computed here (in float64, as torch.optim.Adam computes them) and
    passed in: inside the compiled update, inductor would recompute each power for every 16
    elements of its parameter (0.88 vs 0.23 ms for a 655k-element Adam step)."""
    beta1, beta2 = group["betas"]
    step = torch.stack([state["step"] for state in states]).double()[:, None]
    step = step + torch.arange(1, steps + 1, dtype=torch.float64, device=step.device)
    step_size = group["lr"] / (1 - beta1 ** step)
    inverse_root = (1 - beta2 ** step).rsqrt()
    return step_size.float(), inverse_root.float()


def plain_adam(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> bool:
    """`optimizer` is torch's Adam over exactly `params`, with no weight decay or AMSGrad."""
    if not isinstance(optimizer, torch.optim.Adam) or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    return ([id(p) for p in group["params"]] == [id(p) for p in params]
            and group["weight_decay"] == 0 and not group["amsgrad"] and not group["maximize"])


def adam_state(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict:
    """`param`'s Adam state, created as torch.optim.Adam creates it on its first step."""
    state = optimizer.state[param]
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state


class _Losses(nn.Module):
    """The agent's losses behind one module whose children are the modules they
    differentiate, so that `functional_call` can swap in the parameters being differentiated.
    The actor loss runs `per_row` with its static chunk count (no host sync, so the whole
    update stays one graph)."""

    def __init__(self, agent: nn.Module):
        super().__init__()
        self.critic, self.actor, self.temperature = agent.critic, agent.actor, agent.temperature
        self.critic_loss, self.policy_loss = agent.critic_loss, agent.policy_loss
        self.temperature_loss = agent.temperature_loss

    def forward(self, name: str, data) -> tuple[torch.Tensor, object]:
        if name == "critic":
            return self.critic_loss(data)
        if name == "actor":
            loss, log_prob, info = self.policy_loss(data, static=True)
            return loss, (log_prob, info)
        return self.temperature_loss(data)
