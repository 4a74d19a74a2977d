"""Snapshot and restore a running MuJoCo gymnasium env, so a killed fine-tuning run resumes
its episode exactly where it was (physics, time-limit counter and the env's random stream)."""

import pickle

import gymnasium as gym
import mujoco


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def get_env_state(env: gym.Env) -> dict:
    """The whole mjData, not just the integration state: gymnasium's rewards read derived
    quantities (body positions) computed before the last integration step, which cannot be
    recomputed from qpos/qvel."""
    base = env.unwrapped
    limit = _time_limit(env)
    return {"data": pickle.dumps(base.data), "rng": base.np_random.bit_generator.state,
            "elapsed_steps": None if limit is None else limit._elapsed_steps}


def set_env_state(env: gym.Env, state: dict) -> None:
    """Restore into an env of the same kind that has been reset once (gymnasium's order checks
    need it)."""
    base = env.unwrapped
    mujoco.mj_copyData(base.data, base.model, pickle.loads(state["data"]))
    base.np_random.bit_generator.state = state["rng"]
    limit = _time_limit(env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed_steps"]
