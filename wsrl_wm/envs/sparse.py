"""Task rules of the paper's sparse-reward families, as the official WSRL code applies them.

The official code (github zhouzypaul/wsrl) runs the d4rl / mj_envs versions of these tasks; this
project runs their gymnasium-robotics successors, so each rule is restated here against the new
env's own signals (`info["success"]`, the maze's goal distance), with the official file it comes
from. Reward scale and bias are per-family config values (configs/<family>/*.yaml), not rules.
"""

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np

# Mazes end the episode at the goal. Official: the online and evaluation env is d4rl's antmaze
# (wsrl/envs/env_common.py make_gym_env → gym.make("antmaze-...-v2")), registered with
# eval=True, which sets done when the sparse reward is positive; gymnasium-robotics' mazes do the
# same with continuing_task=False (terminated when the goal is within 0.45). PointMaze has no
# official config; it follows the antmaze rules throughout (docs/sparse_tasks.md).
FAMILY_ENV_KWARGS = {
    "pointmaze": {"continuing_task": False},
    "antmaze": {"continuing_task": False},
}


class BinarySuccessReward(gym.Wrapper):
    """Adroit "-binary": reward 0 when the goal is achieved and −1 otherwise, and the episode
    ends at the goal. Official: wsrl/envs/env_common.py ENV_REWARD_INFO["adroit-binary"]
    (reward_pos 0, reward_neg −1) and wsrl/envs/wrappers/adroit.py (done on goal_achieved);
    gymnasium-robotics' AdroitHand*-v1 report the goal as info["success"]."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        success = bool(info["success"])
        return obs, 0.0 if success else -1.0, terminated or success, truncated, info


FAMILY_WRAPPERS: dict[str, Sequence[Callable[[gym.Env], gym.Env]]] = {
    "adroit": (BinarySuccessReward,),
}


def episode_success(family: str, infos: Sequence[dict], rewards: Sequence[float]) -> float:
    """The paper's success measure of one episode, in [0, 1].

    Official: finetune.py evaluate_and_log_results — adroit: goal achieved at any step; kitchen:
    the last step's reward (tasks completed) / 4; antmaze: d4rl's normalised return, which with
    the episode ending at the goal is 1 if the goal was reached. Mazes use info["success"].
    """
    if family == "kitchen":
        return float(rewards[-1]) / 4.0
    return float(any(bool(info.get("success", False)) for info in infos))

