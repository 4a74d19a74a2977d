"""Evaluation episodes (deterministic unless asked), scored with D4RL's normalisation or, on
the sparse-reward tasks, the paper's success rate (normalised score = 100 · success rate).

The deterministic policy's episodes of one evaluation are stepped together: one policy query
for all live episodes, each on its own env. Every row of that query is computed as a one-row
query computes it (`one_row_linear`), so each episode's actions, and hence its return, are
bit for bit those of the episode run alone (tests/test_evaluation.py)."""

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from models import TanhGaussianActor
from wsrl_wm.envs import make_env, normalized_score, resolve_env
from wsrl_wm.envs.registry import EnvSpec
from wsrl_wm.envs.sparse import episode_success
from wsrl_wm.errors import WsrlError
from wsrl_wm.metrics import SCORE

# Evaluation episodes of a run with seed s use seeds s + offset, s + offset + 1, ...: never a
# seed of the run's own training env.
EVAL_SEED_OFFSET = 10**6

# torch's CPU bmm runs its own loop below this many multiply-adds per matrix instead of the
# BLAS gemm that a one-row `addmm` calls (aten LinearAlgebra.cpp, `bmm_out_or_baddbmm_`).
BMM_OWN_LOOP_BELOW = 400


@dataclass
class Episode:
    ret: float  # raw return
    steps: int
    success: float  # the paper's success measure (sparse-reward tasks), else 0

    @classmethod
    def of(cls, spec: EnvSpec, rewards: list[float], infos: list[dict]) -> "Episode":
        success = episode_success(spec.family, infos, rewards) if spec.sparse else 0.0
        return cls(sum(rewards), len(rewards), success)


class EvalEnvs:
    """Evaluation envs kept for a run's evaluations (a PointMaze env takes ~80 ms to build).
    Never the training env; each episode starts from `reset(seed=...)`, so reusing an env
    changes no episode (tested)."""

    def __init__(self, env_name: str):
        self.env_name, self.envs = env_name, []

    def take(self, count: int) -> list[gym.Env]:
        self.envs += [make_env(self.env_name) for _ in range(count - len(self.envs))]
        return self.envs[:count]

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


def evaluate(actor: TanhGaussianActor, env_name: str, episodes: int, seed: int,
             action_chunk: int = 1, deterministic: bool = True,
             envs: EvalEnvs | None = None) -> dict:
    """Mean raw return and normalised score of `episodes` episodes (seeds `seed`, `seed` + 1,
    ...) on evaluation envs (`envs`, else fresh ones, so evaluation never disturbs the training
    env's episode); sparse-reward tasks add eval/success_rate in [0, 1]. Fine-tuning scores the
    deterministic policy; the collector scores the stochastic one, which writes its data. An
    actor of chunks of `action_chunk` actions has each chunk executed open-loop (the episode
    may end inside one)."""
    return scores(env_name, run_episodes(actor, env_name, [seed + e for e in range(episodes)],
                                         action_chunk, deterministic, envs))


def scores(env_name: str, results: list[Episode]) -> dict:
    """An evaluation's metrics from its episodes."""
    spec = resolve_env(env_name)
    mean_return = float(np.mean([episode.ret for episode in results]))
    if not spec.sparse:
        return {"eval/return": mean_return,
                SCORE: float(normalized_score(env_name, mean_return))}
    rate = float(np.mean([episode.success for episode in results]))
    return {"eval/return": mean_return, "eval/success_rate": rate, SCORE: 100.0 * rate}


@torch.no_grad()
def run_episodes(actor: TanhGaussianActor, env_name: str, seeds: list[int],
                 action_chunk: int = 1, deterministic: bool = True,
                 envs: EvalEnvs | None = None) -> list[Episode]:
    """One episode per seed, in the seeds' order. The deterministic policy's run together; the
    stochastic policy's one after another, since a joint query would draw its noise in another
    order than episodes run alone."""
    if envs is not None and envs.env_name != env_name:
        raise WsrlError(f"evaluation envs of {envs.env_name!r} cannot evaluate {env_name!r}")
    pool = envs or EvalEnvs(env_name)
    groups = [seeds] if deterministic else [[seed] for seed in seeds]
    try:
        return [episode for group in groups for episode in
                joint_episodes(actor, pool.take(len(group)), group, resolve_env(env_name),
                               action_chunk, deterministic)]
    finally:
        if envs is None:
            pool.close()


def joint_episodes(actor: TanhGaussianActor, envs: list[gym.Env], seeds: list[int], spec: EnvSpec,
                   action_chunk: int, deterministic: bool) -> list[Episode]:
    """Env i runs the episode of seeds[i]; each policy query acts for every live episode."""
    device = next(actor.parameters()).device
    obs = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]
    rewards: list[list[float]] = [[] for _ in envs]
    infos: list[list[dict]] = [[] for _ in envs]
    live = list(range(len(envs)))
    while live:
        batch = torch.as_tensor(np.stack([obs[i] for i in live]), dtype=torch.float32,
                                device=device)
        chunks = policy_rows(actor, batch, deterministic).cpu().numpy()
        still = []
        for i, chunk in zip(live, chunks, strict=True):
            for action in chunk.reshape(action_chunk, -1):
                obs[i], reward, terminated, truncated, info = envs[i].step(action)
                rewards[i].append(float(reward))
                infos[i].append(info)
                if terminated or truncated:
                    break
            else:
                still.append(i)
        live = still
    return [Episode.of(spec, r, info) for r, info in zip(rewards, infos, strict=True)]


def policy_rows(actor: TanhGaussianActor, obs: torch.Tensor, deterministic: bool
                ) -> torch.Tensor:
    """The actor's actions for the rows of `obs`, each row bit for bit `actor(obs[i])`'s: its
    linear layers by `one_row_linear`; LayerNorm, ReLU and the heads work row by row whatever
    the number of rows."""
    hidden = obs
    for layer in actor.net:
        hidden = one_row_linear(layer, hidden) if isinstance(layer, nn.Linear) else layer(hidden)
    return actor.squash(*actor.heads(hidden), deterministic, log_prob=False)[0]


def one_row_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` with each row computed as `layer(x[i])` computes it. A matmul of many rows
    sums in another order than one of a single row (the last bits differ, and an episode
    can then take another path), so the rows go as a batch of one-row matmuls: on CPU one
    `baddbmm`, whose BLAS call per row is the one-row `addmm`'s, or one call per row where
    torch's bmm would use its own loop, and on other devices. (The actor's layers have
    biases.)"""
    rows, (out_features, in_features) = len(x), layer.weight.shape
    if x.device.type == "cpu" and in_features * out_features >= BMM_OWN_LOOP_BELOW:
        weight = layer.weight.t().expand(rows, in_features, out_features)
        return torch.baddbmm(layer.bias.expand(rows, 1, out_features), x[:, None], weight)[:, 0]
    return torch.cat([layer(row) for row in x.split(1)])
