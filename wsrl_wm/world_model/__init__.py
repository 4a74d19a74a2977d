"""Learned dynamics for model-based rollouts (docs/world_model.md)."""

from wsrl_wm.world_model.accuracy import h_step_error, one_step_error, trajectory_windows
from wsrl_wm.world_model.buffer import ModelBuffer
from wsrl_wm.world_model.model import WorldModel, WorldModelConfig, restore_world_model
from wsrl_wm.world_model.rollout import RolloutConfig, branched_rollout
from wsrl_wm.world_model.train import BestMemberTracker, member_mse, train_world_model

__all__ = [
    "BestMemberTracker", "ModelBuffer", "RolloutConfig", "WorldModel", "WorldModelConfig",
    "branched_rollout", "h_step_error", "member_mse", "one_step_error", "restore_world_model",
    "train_world_model", "trajectory_windows",
]
