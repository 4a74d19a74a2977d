"""A task's own reward and termination for world-model rollouts (DESIGN.md §9 (c)).

For goal-reaching tasks the reward is a known function of the state (goal reached or not), so
rollouts should not ask a learned model for it: the model predicts the next observation, and
reward and termination come from the function registered here for the env. Locomotion envs
register nothing: their reward depends on velocities and control costs, which the model learns.

A task function maps torch tensors (obs [B, obs_dim], action [B, act_dim], next_obs
[B, obs_dim]) to (reward [B], terminated bool [B]), with the env's raw reward, before the run's
reward scale and bias (fine-tuning applies those).
"""

from collections.abc import Callable

from torch import Tensor

TaskFunction = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

# Env-name prefix (matched case-insensitively) → task function.
TASK_FUNCTIONS: dict[str, TaskFunction] = {}


def register_task_function(prefix: str) -> Callable[[TaskFunction], TaskFunction]:
    """Decorator: use the function for every env whose name starts with `prefix`."""

    def register(fn: TaskFunction) -> TaskFunction:
        TASK_FUNCTIONS[prefix] = fn
        return fn

    return register


def task_reward_fn(env_name: str) -> TaskFunction | None:
    """The registered task function for `env_name` (the longest matching prefix), or None when
    the model learns the env's reward."""
    matches = [p for p in TASK_FUNCTIONS if env_name.lower().startswith(p.lower())]
    return TASK_FUNCTIONS[max(matches, key=len)] if matches else None
