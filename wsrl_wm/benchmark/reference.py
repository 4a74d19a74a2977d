"""What the benchmark compares against: the agents and the rollout step written the way common
single-file PyTorch implementations write them, with the same algorithm and shapes as ours.

Critics are one nn.Sequential each, forwarded in a Python loop; the actor samples through a
torch.distributions tanh-transformed Normal; the rollout computes every elite on every row and
then picks one per row; evaluation runs its episodes one after another. Only the update math
of wsrl-wm's agents is reproduced (no divergence guard, no logging), so the comparison favours
the reference.
"""

import copy
import math

import torch
from torch import nn
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from models.actor import mlp
from wsrl_wm.agents import CQLConfig, SACConfig
from wsrl_wm.agents.sac import draw_members
from wsrl_wm.envs import make_env, resolve_env
from wsrl_wm.evaluation import Episode, scores
from wsrl_wm.world_model import WorldModel


class ReferenceSAC:
    """The loop-over-critics SAC update with WSRL's settings (REDQ 2-of-N target, UTD k)."""

    def __init__(self, obs_dim: int, act_dim: int, config: SACConfig, device: str = "cpu"):
        self.config = config
        self.critics = nn.ModuleList(
            mlp(obs_dim + act_dim, config.critic_hidden, 1, config.layer_norm)
            for _ in range(config.num_critics)).to(device)
        self.targets = copy.deepcopy(self.critics).requires_grad_(False)
        self.actor = mlp(obs_dim, config.actor_hidden, 2 * act_dim, config.layer_norm).to(device)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
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

    def td_target(self, rew, next_obs, done):
        c, n = self.config, backup_actions(self.config)
        with torch.no_grad():
            next_obs = next_obs.repeat_interleave(n, 0)  # n sampled next actions per row
            next_act, _ = self.policy(next_obs)
            chosen = subset(c)
            target_q = self.q_values([self.targets[i] for i in chosen], next_obs, next_act)
            return rew + c.discount * (1 - done) * target_q.min(0).values.view(-1, n).max(1).values

    def critic_loss(self, obs, act, rew, next_obs, done):
        q = self.q_values(self.critics, obs, act)
        return (q - self.td_target(rew, next_obs, done)).pow(2).mean()

    def update(self, batch: dict) -> None:
        c = self.config
        keys = ("observations", "actions", "rewards", "next_observations", "terminals")
        for part in zip(*(batch[key].chunk(c.utd) for key in keys), strict=True):
            loss = self.critic_loss(*part)
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


class ReferenceCQL(ReferenceSAC):
    """CQL's importance-sampled logsumexp over random, current- and next-policy actions, added
    to the Bellman error of each critic of the CQL term (all, or a drawn `target_subset` as
    ours does by default), one critic at a time (fixed α)."""

    config: CQLConfig

    def critic_loss(self, obs, act, rew, next_obs, done):
        c, n, batch_size = self.config, self.config.cql_n_actions, len(obs)
        q_data = self.q_values(self.critics, obs, act)
        td = (q_data - self.td_target(rew, next_obs, done)).pow(2).mean()
        obs_n = obs.repeat_interleave(n, 0)
        with torch.no_grad():
            current, current_log_prob = self.policy(obs_n)
            following, following_log_prob = self.policy(next_obs.repeat_interleave(n, 0))
        random = torch.rand_like(current) * 2 - 1
        uniform_log_density = act.shape[-1] * math.log(0.5)
        # the CQL term's critics: all, or a drawn subset
        chosen = subset(c) if c.cql_critic_subset else range(c.num_critics)
        gaps = []
        for critic, q in ((self.critics[i], q_data[i]) for i in chosen):
            def q_of(actions, critic=critic):
                return critic(torch.cat([obs_n, actions], -1)).view(batch_size, n)
            candidates = torch.cat([
                q_of(random) - uniform_log_density,
                q_of(following) - following_log_prob.view(batch_size, n),
                q_of(current) - current_log_prob.view(batch_size, n)], -1)
            gaps.append((torch.logsumexp(candidates, -1) - q).mean())
        return td + c.cql_alpha * torch.stack(gaps).mean()


def backup_actions(config: SACConfig) -> int:
    """The sampled next actions a max-target backup maxes over (1: none): CQL's own switch
    for a CQL config, SAC's otherwise, as the agents."""
    if isinstance(config, CQLConfig):
        return config.cql_n_actions if config.cql_max_target_backup else 1
    return config.max_target_actions if config.max_target_backup else 1


def subset(config: SACConfig) -> list[int] | range:
    """The critics a REDQ min (or the CQL term) covers: drawn by the agents' own rule, or all
    of them when the subset would hold every critic."""
    if config.target_subset >= config.num_critics:
        return range(config.num_critics)
    return draw_members(config.num_critics, config.target_subset,
                        config.subset_with_replacement).tolist()


@torch.no_grad()
def every_elite_step(world_model: WorldModel, actor, obs: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One imagined step the common way: every elite on every row, then one picked per row."""
    action = actor(obs)[0]
    mean, logvar = world_model.predict(obs, action, world_model.elites)
    rows = torch.arange(len(obs))
    pick = torch.randint(len(world_model.elites), (len(obs),))
    drawn = mean[pick, rows] + torch.exp(0.5 * logvar[pick, rows]) * torch.randn_like(
        mean[0])
    return obs + drawn[:, :-1], drawn[:, -1]


@torch.no_grad()
def one_at_a_time_evaluate(actor, env_name: str, episodes: int, seed: int,
                           action_chunk: int = 1, deterministic: bool = True,
                           envs=None) -> dict:
    """`wsrl_wm.evaluation.evaluate` as evaluation loops are commonly written (and wsrl-wm's
    was before its episodes were stepped together): a new env, the episodes one after another,
    a one-row policy query per chunk. (`envs` is taken and ignored: a drop-in replacement.)"""
    spec, env, results = resolve_env(env_name), make_env(env_name), []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        rewards, infos, done = [], [], False
        while not done:
            chunk = actor(torch.as_tensor(obs, dtype=torch.float32), deterministic)[0]
            for action in chunk.numpy().reshape(action_chunk, -1):
                obs, reward, terminated, truncated, info = env.step(action)
                rewards.append(float(reward))
                infos.append(info)
                done = terminated or truncated
                if done:
                    break
        results.append(Episode.of(spec, rewards, infos))
    env.close()
    return scores(env_name, results)
