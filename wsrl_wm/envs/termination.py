"""Termination functions for world-model rollouts, derived from gymnasium's MuJoCo v5 envs.

A world model predicts next observations but not whether the episode ended, so rollouts need the
env's own `terminated` rule written over observations. Each function here maps next observations
[B, obs_dim] to the bool [B] that the v5 env, built with its default arguments, reports after the
step that produced them. The ranges are those defaults (see `gymnasium/envs/mujoco/*_v5.py`), with
the same strict/inclusive comparisons, so NaN fails every range check just as it does in numpy.
The default observations drop the x (and for Ant y) position, so obs[0] is the torso height z.

Comparisons run in the observation's dtype: float64 observations give the env's verdict exactly;
float32 ones are compared against the float32-rounded bounds, which can differ only for values
within one float32 step of a bound.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from wsrl_wm.envs.make import env_dims
from wsrl_wm.envs.registry import resolve_env
from wsrl_wm.errors import WsrlError

TerminationFn = Callable[[Tensor], Tensor]

# Hopper-v5 defaults: healthy_z_range, healthy_angle_range, healthy_state_range (all open).
HOPPER_Z_RANGE = (0.7, float("inf"))
HOPPER_ANGLE_RANGE = (-0.2, 0.2)
HOPPER_STATE_RANGE = (-100.0, 100.0)
# Walker2d-v5 defaults: healthy_z_range, healthy_angle_range (open).
WALKER2D_Z_RANGE = (0.8, 2.0)
WALKER2D_ANGLE_RANGE = (-1.0, 1.0)
# Ant-v5 default healthy_z_range (closed); its finiteness check covers qpos and qvel, which fill
# the first 27 observation dims (13 qpos without x, y; 14 qvel) in both the v5 and D4RL layouts.
ANT_Z_RANGE = (0.2, 1.0)
ANT_STATE_DIMS = 27


def _open_range(x: Tensor, bounds: tuple[float, float]) -> Tensor:
    """low < x < high, as gymnasium writes `min_z < z < max_z`."""
    return (x > bounds[0]) & (x < bounds[1])


def hopper_terminated(next_obs: Tensor) -> Tensor:
    """Hopper-v5: unhealthy unless z, the torso angle and state_vector()[2:] are in range.

    obs = qpos[1:] ++ clip(qvel, -10, 10), so obs[0] is z, obs[1] the angle and obs[1:] covers
    state_vector()[2:] = qpos[2:] ++ qvel, except that the env checks the *unclipped* velocities
    against ±100. A real observation cannot show a velocity beyond 100 (or an infinite one; NaN
    does survive the clip), so there the observed ±10 is taken as healthy, and a predicted
    velocity outside (-100, 100) terminates. Any non-finite value terminates.
    """
    healthy = (
        _open_range(next_obs[..., 0], HOPPER_Z_RANGE)
        & _open_range(next_obs[..., 1], HOPPER_ANGLE_RANGE)
        & _open_range(next_obs[..., 1:], HOPPER_STATE_RANGE).all(dim=-1)
    )
    return ~healthy


def walker2d_terminated(next_obs: Tensor) -> Tensor:
    """Walker2d-v5: unhealthy unless z = obs[0] and the torso angle obs[1] are in range.

    Walker2d has no state-range or finiteness check, so a non-finite value elsewhere in the
    observation does not terminate (NaN or ±inf in z or the angle does, failing the range).
    """
    healthy = _open_range(next_obs[..., 0], WALKER2D_Z_RANGE) & _open_range(
        next_obs[..., 1], WALKER2D_ANGLE_RANGE
    )
    return ~healthy


def halfcheetah_terminated(next_obs: Tensor) -> Tensor:
    """HalfCheetah-v5 never terminates (its step returns terminated=False), whatever the state."""
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


def ant_terminated(next_obs: Tensor) -> Tensor:
    """Ant-v5: unhealthy unless qpos and qvel are all finite and 0.2 <= z <= 1.0 (inclusive).

    The finiteness check runs over obs[:27] = qpos[2:] ++ qvel only: the x, y position it also
    covers is not observed (if only those were non-finite the env would terminate and this would
    not), and the clipped contact forces after dim 27 are not part of the env's check.
    """
    z = next_obs[..., 0]
    healthy = (
        torch.isfinite(next_obs[..., :ANT_STATE_DIMS]).all(dim=-1)
        & (z >= ANT_Z_RANGE[0])
        & (z <= ANT_Z_RANGE[1])
    )
    return ~healthy


FAMILY_TERMINATION = {
    "hopper": hopper_terminated,
    "walker2d": walker2d_terminated,
    "halfcheetah": halfcheetah_terminated,
    "ant": ant_terminated,
}


def termination_fn(env_id: str) -> TerminationFn:
    """`terminated` as a function of next observations for a D4RL name or gymnasium id.

    The returned function checks the observation size (D4RL's ant has 111 dims, Ant-v5 105), so
    observations of another env or layout fail loudly instead of being judged by the wrong rule.
    """
    spec = resolve_env(env_id)
    if spec.sparse:  # goal-reaching tasks end where their task function says (task_functions)
        from wsrl_wm.envs.task_functions import task_reward_fn

        task = task_reward_fn(env_id)
        if task is None:
            raise WsrlError(f"no termination function for {env_id!r} ({spec.family}): model "
                            "rollouts (rollout.ratio > 0) run on locomotion and maze tasks")
        return lambda next_obs: task(next_obs, next_obs, next_obs)[1]
    rule = FAMILY_TERMINATION[spec.family]
    obs_dim = env_dims(env_id)[0]  # the env's own size, to catch another env's observations

    def terminated(next_obs: Tensor) -> Tensor:
        if next_obs.shape[-1] != obs_dim:
            raise WsrlError(
                f"{env_id} observations have {obs_dim} dims, got shape {tuple(next_obs.shape)}"
            )
        return rule(next_obs)

    return terminated
