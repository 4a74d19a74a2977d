"""Fine-tune update throughput: wsrl-wm's batched SAC update against a reference written the
way common single-file PyTorch implementations do it (one nn.Sequential per critic forwarded
in a Python loop, a torch.distributions tanh-Normal actor), same shapes, same batch, same
process — so the printed figure is a ratio measured side by side, not an absolute time.

    python experiments/benchmark.py [--quick] [--out benchmark.json]

This is the first part of the benchmark suite (issue 6); the CQL update, the Lightning loop,
rollouts and memory are still to be added.
"""

import argparse
import copy
import json
import time

import torch
from torch import nn
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from wsrl_wm.agents import SAC, SACConfig


class ReferenceSAC:
    """The loop-over-critics SAC update with WSRL's settings (REDQ 2-of-N target, UTD k)."""

    def __init__(self, obs_dim: int, act_dim: int, config: SACConfig):
        def mlp(inputs: int, hidden: tuple[int, ...], outputs: int) -> nn.Sequential:
            layers, width, layer_norm = [], inputs, config.layer_norm
            for size in hidden:
                layers += [nn.Linear(width, size), *([nn.LayerNorm(size)] if layer_norm else []),
                           nn.ReLU()]
                width = size
            return nn.Sequential(*layers, nn.Linear(width, outputs))

        self.config = config
        self.critics = nn.ModuleList(mlp(obs_dim + act_dim, config.critic_hidden, 1)
                                     for _ in range(config.num_critics))
        self.targets = copy.deepcopy(self.critics).requires_grad_(False)
        self.actor = mlp(obs_dim, config.actor_hidden, 2 * act_dim)
        self.log_alpha = torch.zeros((), requires_grad=True)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=config.critic_lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=config.temperature_lr)
        self.target_entropy = -float(act_dim)

    def policy(self, obs):
        mean, log_std = self.actor(obs).chunk(2, -1)
        dist = TransformedDistribution(Normal(mean, log_std.clamp(-20, 2).exp()),
                                       TanhTransform(cache_size=1))
        action = dist.rsample()
        return action, dist.log_prob(action).sum(-1)

    def q_values(self, critics, obs, act):
        x = torch.cat([obs, act], -1)
        return torch.stack([critic(x).squeeze(-1) for critic in critics])

    def update(self, batch: dict) -> None:
        c = self.config
        for part in zip(*(v.chunk(c.utd) for v in batch.values()), strict=True):
            obs, act, rew, next_obs, done = part
            with torch.no_grad():
                next_act, _ = self.policy(next_obs)
                chosen = torch.randperm(c.num_critics)[: c.target_subset].tolist()
                target_q = self.q_values([self.targets[i] for i in chosen], next_obs, next_act)
                target = rew + c.discount * (1 - done) * target_q.min(0).values
            loss = (self.q_values(self.critics, obs, act) - target).pow(2).mean()
            self.critic_opt.zero_grad()
            loss.backward()
            self.critic_opt.step()
            with torch.no_grad():
                for target_p, p in zip(self.targets.parameters(), self.critics.parameters(),
                                       strict=True):
                    target_p.mul_(1 - c.tau).add_(c.tau * p)
        obs = batch["observations"]
        action, log_prob = self.policy(obs)
        q = self.q_values(self.critics, obs, action).min(0).values
        actor_loss = (self.log_alpha.exp().detach() * log_prob - q).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha.exp() * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()


def updates_per_second(update, batch: dict, iterations: int) -> float:
    for _ in range(2):
        update(batch)
    start = time.perf_counter()
    for _ in range(iterations):
        update(batch)
    return iterations / (time.perf_counter() - start)


def run(obs_dim: int = 17, act_dim: int = 6, batch_size: int = 1024, iterations: int = 20,
        config: SACConfig | None = None) -> dict:
    """WSRL's locomotion setting by default: 10 LayerNorm critics 2×256, UTD 4, batch 1024."""
    config = config or SACConfig(utd=4)
    torch.manual_seed(0)
    batch = {"observations": torch.randn(batch_size, obs_dim),
             "actions": torch.rand(batch_size, act_dim) * 2 - 1,
             "rewards": torch.randn(batch_size),
             "next_observations": torch.randn(batch_size, obs_dim),
             "terminals": torch.zeros(batch_size)}
    agent = SAC(obs_dim, act_dim, config)
    optimizers = agent.make_optimizers()
    ours = updates_per_second(lambda b: agent.update(b, optimizers), batch, iterations)
    reference = updates_per_second(ReferenceSAC(obs_dim, act_dim, config).update, batch,
                                   iterations)
    return {"setting": f"{config.num_critics} critics {config.critic_hidden}, UTD {config.utd},"
                       f" batch {batch_size}", "threads": torch.get_num_threads(),
            "wsrl_wm_updates_per_s": ours, "reference_updates_per_s": reference,
            "speedup": ours / reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (< 1 minute)")
    parser.add_argument("--out", default="benchmark.json", help="JSON results")
    args = parser.parse_args()
    result = run(iterations=5 if args.quick else 30)
    for key, value in result.items():
        print(f"{key:>26}: {value:.3g}" if isinstance(value, float) else f"{key:>26}: {value}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
