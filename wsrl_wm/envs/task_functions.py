"""Reward and termination of a task written over (obs, action, next_obs), for world-model
rollouts on goal-reaching tasks: the model predicts the next state, the task's own rule gives
the reward and whether the episode ended (DESIGN §9 c).

`task_reward_fn(env_name)` returns `fn(obs, action, next_obs) -> (reward, terminated)` as
tensors [B] (float reward in the env's raw units, before any config reward scale/bias; bool
terminated).
"""

from collections.abc import Callable

import torch
from torch import Tensor

from wsrl_wm.envs.registry import resolve_env
from wsrl_wm.errors import WsrlError

TaskFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

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


FAMILY_TASKS: dict[str, TaskFn] = {"pointmaze": maze_task, "antmaze": maze_task}


def task_reward_fn(env_name: str) -> TaskFn:
    """The task function of a D4RL name or gymnasium id; families without one fail loudly."""
    family = resolve_env(env_name).family
    if family not in FAMILY_TASKS:
        raise WsrlError(
            f"no task reward/termination function for {env_name!r} (family {family!r}); "
            f"known: {', '.join(sorted(FAMILY_TASKS))}"
        )
    return FAMILY_TASKS[family]
