"""A task's own reward and termination for world-model rollouts on goal-reaching tasks: the
model predicts the next observation, the task's rule gives the reward and whether the episode
ended (docs/world_model.md). Locomotion families register nothing: their reward depends on
velocities and control costs, which the model learns.

`task_reward_fn(env_name)` returns `fn(obs, action, next_obs) -> (reward, terminated)` over
torch tensors ([B] float reward in the env's raw units, before the run's reward scale and bias,
which fine-tuning applies; [B] bool terminated), or None when the model learns the reward.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from wsrl_wm.envs.registry import resolve_env

TaskFunction = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

# gymnasium-robotics maze_v4.py compute_reward / compute_terminated: the goal is reached within
# 0.45 of it; with continuing_task=False (wsrl_wm.envs.sparse) that step also terminates.
MAZE_GOAL_RADIUS = 0.45
# Flattened maze observations start [achieved_goal (x, y), desired_goal (x, y), ...].
ACHIEVED, DESIRED = slice(0, 2), slice(2, 4)


def maze_task(obs: Tensor, action: Tensor, next_obs: Tensor) -> tuple[Tensor, Tensor]:
    """Sparse reward 1 and termination when the achieved position is within the goal radius
    (a function of `next_obs` only)."""
    distance = torch.linalg.vector_norm(next_obs[..., ACHIEVED] - next_obs[..., DESIRED], dim=-1)
    reached = distance <= MAZE_GOAL_RADIUS
    return reached.to(next_obs.dtype), reached


# Env family (wsrl_wm.envs.registry) → its task function.
FAMILY_TASKS: dict[str, TaskFunction] = {"pointmaze": maze_task, "antmaze": maze_task}


def task_reward_fn(env_name: str) -> TaskFunction | None:
    """The task function of a D4RL name or gymnasium id, or None when the model learns the
    env's reward."""
    return FAMILY_TASKS.get(resolve_env(env_name).family)
