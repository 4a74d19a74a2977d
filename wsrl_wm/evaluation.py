"""Evaluation episodes (deterministic unless asked), scored with D4RL's normalisation."""

import numpy as np
import torch

from models import TanhGaussianActor
from wsrl_wm.envs import make_env, normalized_score


@torch.no_grad()
def evaluate(actor: TanhGaussianActor, env_name: str, episodes: int, seed: int,
             deterministic: bool = True) -> dict:
    """Mean return and normalised score of `episodes` episodes on a fresh env (its own
    instance, so evaluation never disturbs the training env's episode). Fine-tuning scores the
    deterministic policy; the collector scores the stochastic one, which writes its data."""
    env = make_env(env_name)
    device = next(actor.parameters()).device
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            action = actor(obs_t, deterministic=deterministic)[0].cpu().numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    mean_return = float(np.mean(returns))
    return {"eval/return": mean_return,
            "eval/normalized_score": float(normalized_score(env_name, mean_return))}
