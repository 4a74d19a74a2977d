"""Snapshot and restore a running MuJoCo gymnasium env, so a killed fine-tuning run resumes
its episode exactly where it was (physics, time-limit counter, goal and the env's random
streams)."""

import pickle

import gymnasium as gym
import mujoco

# gymnasium-robotics' mazes are goal envs around an inner MuJoCo env that holds the physics.
INNER_ENV_ATTRS = ("point_env", "ant_env")


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def _physics_env(base: gym.Env) -> gym.Env:
    """The env that owns `model` and `data`: the base env itself, or a maze's inner env."""
    for attr in INNER_ENV_ATTRS:
        if hasattr(base, attr):
            return getattr(base, attr)
    return base


def get_env_state(env: gym.Env) -> dict:
    """The whole mjData, not just the integration state: gymnasium's rewards read derived
    quantities (body positions) computed before the last integration step, which cannot be
    recomputed from qpos/qvel."""
    base = env.unwrapped
    physics = _physics_env(base)
    limit = _time_limit(env)
    return {"data": pickle.dumps(physics.data), "rng": base.np_random.bit_generator.state,
            "physics_rng": physics.np_random.bit_generator.state,
            "goal": getattr(base, "goal", None),
            "elapsed_steps": None if limit is None else limit._elapsed_steps}


def set_env_state(env: gym.Env, state: dict) -> None:
    """Restore into an env of the same kind that has been reset once (gymnasium's order checks
    need it)."""
    base = env.unwrapped
    physics = _physics_env(base)
    mujoco.mj_copyData(physics.data, physics.model, pickle.loads(state["data"]))
    base.np_random.bit_generator.state = state["rng"]
    physics.np_random.bit_generator.state = state.get("physics_rng", state["rng"])
    if state.get("goal") is not None:
        base.goal = state["goal"].copy()
        base.update_target_site_pos()
    limit = _time_limit(env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed_steps"]
