"""A compiled run's critic step as one compiled function: the loss's gradient by torch.func,
then Adam and the target update written out in the same graph. No autograd engine, no
optimiser dispatch and one guard check per step instead of one per piece: ~1 ms of a ~10 ms
critic step on 2 CPU cores (docs/performance.md).

Numerically it is `torch.optim.Adam` (no weight decay, no AMSGrad) and `lerp_` toward the
online critics, and it keeps Adam's state layout (`step`, `exp_avg`, `exp_avg_sq`), so the
optimiser's checkpoints load into either path. A non-finite loss leaves every tensor as it was
(the update is masked on the device), so the caller's divergence check after the step keeps
the guarantee that parameters never train on NaN."""

import torch
from torch import nn
from torch.func import functional_call, grad_and_value


class FusedCriticStep:
    def __init__(self, agent: nn.Module):
        self.tau = agent.config.tau
        self.loss_module = _CriticLoss(agent)
        self.names = [f"critic.{name}" for name, _ in agent.critic.named_parameters()]
        self.params = list(agent.critic.parameters())
        self.targets = list(agent.target_critic.parameters())
        self.compiled = torch.compile(self.step)

    def supports(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether `optimizer` is the plain Adam over exactly the critic that this step writes
        out; anything else (weight decay, AMSGrad, other parameters) keeps the autograd step."""
        if len(optimizer.param_groups) != 1:
            return False
        group = optimizer.param_groups[0]
        return (isinstance(optimizer, torch.optim.Adam)
                and [id(p) for p in group["params"]] == [id(p) for p in self.params]
                and group["weight_decay"] == 0 and not group["amsgrad"] and not group["maximize"])

    def __call__(self, batch: dict, optimizer: torch.optim.Optimizer
                 ) -> tuple[torch.Tensor, dict]:
        group = optimizer.param_groups[0]
        states = [adam_state(optimizer, param) for param in self.params]
        # A tensor, not a float: a changed learning rate does not recompile the step.
        lr = torch.tensor(float(group["lr"]), device=self.params[0].device)
        return self.compiled(batch, states, lr, *group["betas"], group["eps"])

    def step(self, batch: dict, states: list[dict], lr: torch.Tensor, beta1: float,
             beta2: float, eps: float) -> tuple[torch.Tensor, dict]:
        def loss_of(values):
            return functional_call(self.loss_module, dict(zip(self.names, values, strict=True)),
                                   (batch,))

        detached = [param.detach() for param in self.params]
        grads, (loss, info) = grad_and_value(loss_of, has_aux=True)(detached)
        finite = torch.isfinite(loss)
        with torch.no_grad():
            for param, grad, state, target in zip(self.params, grads, states, self.targets,
                                                  strict=True):
                step = state["step"] + finite.to(state["step"].dtype)
                exp_avg = torch.where(finite, state["exp_avg"].lerp(grad, 1 - beta1),
                                      state["exp_avg"])
                exp_avg_sq = torch.where(finite, state["exp_avg_sq"] * beta2
                                         + (1 - beta2) * grad * grad, state["exp_avg_sq"])
                denominator = (exp_avg_sq.sqrt() / (1 - beta2 ** step).sqrt()) + eps
                updated = param - lr / (1 - beta1 ** step) * exp_avg / denominator
                updated = torch.where(finite, updated, param)
                state["step"].copy_(step)
                state["exp_avg"].copy_(exp_avg)
                state["exp_avg_sq"].copy_(exp_avg_sq)
                param.copy_(updated)
                target.copy_(torch.where(finite, target.lerp(updated, self.tau), target))
        return loss.detach(), info


def adam_state(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict:
    """`param`'s Adam state, created as torch.optim.Adam creates it on its first step."""
    state = optimizer.state[param]
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state


class _CriticLoss(nn.Module):
    """The agent's own critic loss as a module with the critic as its only submodule, so that
    `functional_call` can swap the critic's parameters for the ones being differentiated."""

    def __init__(self, agent: nn.Module):
        super().__init__()
        self.critic = agent.critic
        self.loss = type(agent).critic_loss.__get__(agent)  # the uncompiled method

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return self.loss(batch)
