"""Evaluation episodes (deterministic unless asked), scored with D4RL's normalisation or, on
the sparse-reward tasks, the paper's success rate (normalised score = 100 · success rate)."""

import numpy as np
import torch

from models import TanhGaussianActor
from wsrl_wm.envs import make_env, normalized_score, resolve_env
from wsrl_wm.envs.sparse import episode_success
from wsrl_wm.metrics import SCORE

# Evaluation episodes of a run with seed s use seeds s + offset, s + offset + 1, ...: never a
# seed of the run's own training env.
EVAL_SEED_OFFSET = 10**6


@torch.no_grad()
def evaluate(actor: TanhGaussianActor, env_name: str, episodes: int, seed: int,
             action_chunk: int = 1, deterministic: bool = True) -> dict:
    """Mean raw return and normalised score of `episodes` episodes on a fresh env (its own
    instance, so evaluation never disturbs the training env's episode); sparse-reward tasks add
    eval/success_rate in [0, 1]. Fine-tuning scores the deterministic policy; the collector
    scores the stochastic one, which writes its data. An actor of chunks of `action_chunk`
    actions has each chunk executed open-loop (the episode may end inside one)."""
    spec = resolve_env(env_name)
    env = make_env(env_name)
    device = next(actor.parameters()).device
    returns, successes = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, rewards, infos = False, [], []
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            chunk = actor(obs_t, deterministic=deterministic)[0].cpu().numpy()
            for action in chunk.reshape(action_chunk, -1):
                obs, reward, terminated, truncated, info = env.step(action)
                rewards.append(float(reward))
                infos.append(info)
                done = terminated or truncated
                if done:
                    break
        returns.append(sum(rewards))
        if spec.sparse:
            successes.append(episode_success(spec.family, infos, rewards))
    env.close()
    mean_return = float(np.mean(returns))
    if not spec.sparse:
        return {"eval/return": mean_return,
                SCORE: float(normalized_score(env_name, mean_return))}
    rate = float(np.mean(successes))
    return {"eval/return": mean_return, "eval/success_rate": rate, SCORE: 100.0 * rate}
