"""The project's own datasets, in the D4RL file format, so that everything runs with no
download: PointMaze by a waypoint planner (`pointmaze`), locomotion by SAC behaviour policies
(`behaviour`); the other sparse families' data come from Minari (docs/sparse_tasks.md)."""

import os
from pathlib import Path

from wsrl_wm.collect.behaviour import QUALITIES, TrainingBudget, collect
from wsrl_wm.collect.pointmaze import MAZE_GOALS, MAZE_QUALITIES, collect_pointmaze
from wsrl_wm.envs import resolve_env
from wsrl_wm.errors import WsrlError

__all__ = ["MAZE_GOALS", "MAZE_QUALITIES", "QUALITIES", "TrainingBudget", "cache_dir", "collect",
           "collect_dataset", "collect_pointmaze"]


def collect_dataset(env: str, quality: str, steps: int, seed: int, out: str,
                    budget: TrainingBudget | None = None, save_policy_to: str | None = None,
                    policy: str | None = None, goals: str | None = None) -> dict:
    """Any dataset the project builds itself, by the collector of its env's family."""
    spec = resolve_env(env)
    if spec.family == "pointmaze":
        if save_policy_to or policy:
            raise WsrlError("PointMaze data come from the waypoint planner: there is no "
                            "behaviour policy to save or load")
        return collect_pointmaze(env, quality, steps, seed, out, goals or "random")
    if goals:
        raise WsrlError(f"--goals is a PointMaze option; {env!r} has no goals")
    if spec.sparse:
        raise WsrlError(f"{env!r}: the collector builds locomotion and PointMaze data; "
                        f"{spec.family} data come from Minari (docs/sparse_tasks.md)")
    return collect(env, quality, steps, seed, out, budget, save_policy_to, policy)


def cache_dir() -> Path:
    """Datasets the project generates for its demo and studies are cached here
    ($WSRL_WM_CACHE or ~/.cache/wsrl-wm)."""
    return Path(os.environ.get("WSRL_WM_CACHE", Path.home() / ".cache" / "wsrl-wm"))
