"""Task rules of the paper's sparse-reward families, as the official WSRL code applies them.

The official code (github zhouzypaul/wsrl) runs the d4rl / mj_envs versions of these tasks; this
project runs their gymnasium-robotics successors, so each rule is restated here against the new
env's own signals (`info["success"]`, the maze's goal distance), with the official file it comes
from. Reward scale and bias are per-family config values (configs/<family>/*.yaml), not rules.
"""

from collections.abc import Callable, Sequence

import gymnasium as gym

from wsrl_wm.envs.registry import EnvSpec

# Mazes end the episode at the goal. Official: the online and evaluation env is d4rl's antmaze
# (wsrl/envs/env_common.py make_gym_env → gym.make("antmaze-...-v2")), registered with
# eval=True, which sets done when the sparse reward is positive; gymnasium-robotics' mazes do the
# same with continuing_task=False (terminated when the goal is within 0.45). PointMaze has no
# official config; it follows the antmaze rules throughout (docs/sparse_tasks.md).
FAMILY_ENV_KWARGS = {
    "pointmaze": {"continuing_task": False},
    "antmaze": {"continuing_task": False},
}
# D4RL's mazes evaluate on one goal cell, (row, col) in gymnasium's orientation. Antmaze also
# from one start cell: medium and large as the eval_env_spec maps of Minari's D4RL/antmaze
# datasets (start (1, 1); goal (6, 6) / (7, 9)); umaze as the map those datasets were recorded
# on (start (3, 1), goal (1, 1)), which is d4rl's U_MAZE_TEST with its rows in gymnasium's order.
# PointMaze from any free cell to the goal of the EVAL_ENV_MAPS of Minari's D4RL/pointmaze
# datasets (umaze (1, 1), medium (6, 6), large (7, 9)), as D4RL's maze2d evaluates.
MAZE_EVAL_CELLS = {
    "antmaze": {"umaze": ((3, 1), (1, 1)), "medium": ((1, 1), (6, 6)),
                "large": ((1, 1), (7, 9))},
    "pointmaze": {"umaze": (None, (1, 1)), "medium": (None, (6, 6)), "large": (None, (7, 9))},
}


def maze_eval_map(family: str, size: str) -> list[list]:
    """The gymnasium-robotics map of `size` with its goal ("g") and, for antmaze, its one reset
    ("r") cell; other free cells stay resets."""
    from gymnasium_robotics.envs.maze import maps

    base = {"umaze": maps.U_MAZE, "medium": maps.MEDIUM_MAZE, "large": maps.LARGE_MAZE}[size]
    grid = [list(row) for row in base]
    reset, (goal_row, goal_col) = MAZE_EVAL_CELLS[family][size]
    grid[goal_row][goal_col] = "g"
    if reset is not None:
        grid[reset[0]][reset[1]] = "r"
    return grid


def env_kwargs(spec: EnvSpec) -> dict:
    """gym.make arguments of a sparse-reward env: the family's rule, then the name's own."""
    kwargs = {**FAMILY_ENV_KWARGS.get(spec.family, {}), **dict(spec.kwargs)}
    if "eval_maze" in kwargs:
        kwargs["maze_map"] = maze_eval_map(spec.family, kwargs.pop("eval_maze"))
    return kwargs


class BinarySuccessReward(gym.Wrapper):
    """Adroit "-binary": reward 0 when the goal is achieved and −1 otherwise, and the episode
    ends at the goal. Official: wsrl/envs/env_common.py ENV_REWARD_INFO["adroit-binary"]
    (reward_pos 0, reward_neg −1) and wsrl/envs/wrappers/adroit.py (done on goal_achieved);
    gymnasium-robotics' AdroitHand*-v1 report the goal as info["success"]."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        success = bool(info["success"])
        return obs, 0.0 if success else -1.0, terminated or success, truncated, info


class KitchenTaskCount(gym.Wrapper):
    """Kitchen: the reward is the number of target tasks completed so far in the episode, as in
    D4RL's kitchen data, which the official code relies on (wsrl/envs/wrappers/kitchen.py ends
    the episode at reward 4; finetune.py scores the last reward / 4). FrankaKitchen-v1 rewards
    only the tasks completed at this step, and itself ends the episode once all are done."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float(len(info["episode_task_completions"])), terminated, truncated, info


FAMILY_WRAPPERS: dict[str, Sequence[Callable[[gym.Env], gym.Env]]] = {
    "adroit": (BinarySuccessReward,),
    "kitchen": (KitchenTaskCount,),
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

