"""Learned dynamics for model-based rollouts (DESIGN.md §4 "World model")."""

from wsrl_wm.world_model.model import WorldModel, WorldModelConfig
from wsrl_wm.world_model.rollout import RolloutConfig, branched_rollout
from wsrl_wm.world_model.train import (
    BestMemberTracker,
    member_mse,
    one_step_error,
    train_world_model,
)

__all__ = [
    "BestMemberTracker", "RolloutConfig", "WorldModel", "WorldModelConfig", "branched_rollout",
    "member_mse", "one_step_error", "train_world_model",
]
