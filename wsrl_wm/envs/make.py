"""Build gymnasium MuJoCo v5 and gymnasium-robotics environments with flat observations, in
D4RL's layout where it differs."""

import gymnasium as gym
import numpy as np

from wsrl_wm.envs.registry import EnvSpec, resolve_env
from wsrl_wm.errors import WsrlError

# D4RL's ant (gym Ant-v2/v3) observes the external contact forces of all 14 bodies, the world
# body included (always zero); Ant-v5 drops the world body, so it has 6 fewer dimensions.
ANT_JOINT_DIMS = 27
WORLD_BODY_FORCE_DIMS = 6


class D4RLAntObservation(gym.ObservationWrapper):
    """Re-insert the world body's (zero) contact forces so Ant-v5 matches D4RL's 111-dim layout."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        size = env.observation_space.shape[0] + WORLD_BODY_FORCE_DIMS
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float64)

    def observation(self, observation):
        zeros = np.zeros(WORLD_BODY_FORCE_DIMS, dtype=observation.dtype)
        return np.concatenate(
            [observation[:ANT_JOINT_DIMS], zeros, observation[ANT_JOINT_DIMS:]]
        )


class FlatDictObservation(gym.ObservationWrapper):
    """gymnasium's FlattenObservation for a Dict of Boxes, the same array, without its
    per-step dispatch through `spaces.flatten` (a quarter of a PointMaze step)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.parts = [(key, space.dtype) for key, space in env.observation_space.spaces.items()]
        self.observation_space = gym.spaces.flatten_space(env.observation_space)

    def observation(self, observation):
        return np.concatenate([np.asarray(observation[key], dtype=dtype).ravel()
                               for key, dtype in self.parts])


def make_env(name: str, seed: int | None = None) -> gym.Env:
    """A gymnasium env for a D4RL name or gymnasium id, seeded if `seed` is given."""
    spec = resolve_env(name)
    if spec.sparse:
        env = make_sparse_env(spec)
    else:
        env = gym.make(spec.gym_id)
    if spec.d4rl_layout and spec.family == "ant":
        env = D4RLAntObservation(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def env_dims(name: str) -> tuple[int, int]:
    """(observation size, action size) of the env behind `name`."""
    env = make_env(name)
    try:
        return env.observation_space.shape[0], env.action_space.shape[0]
    finally:
        env.close()


def register_robotics_envs() -> None:
    """gymnasium-robotics is optional; its envs exist only once it has been registered."""
    try:
        import gymnasium_robotics
    except ImportError:
        raise WsrlError(
            "the sparse-reward envs need gymnasium-robotics; run pip install 'wsrl-wm[robotics]'"
        ) from None
    from wsrl_wm.envs import mujoco_compat

    mujoco_compat.install()
    gym.register_envs(gymnasium_robotics)


def make_sparse_env(spec: EnvSpec, **kwargs) -> gym.Env:
    """A gymnasium-robotics env with the task rules of its family (wsrl_wm.envs.sparse) and its
    dict observation flattened in gymnasium's order: the keys sorted by name, so a maze observes
    [achieved_goal (x, y), desired_goal (x, y), observation] (docs/sparse_tasks.md)."""
    from wsrl_wm.envs.sparse import FAMILY_WRAPPERS, env_kwargs

    register_robotics_envs()
    env = gym.make(spec.gym_id, **{**env_kwargs(spec), **kwargs})
    for wrapper in FAMILY_WRAPPERS.get(spec.family, ()):
        env = wrapper(env)
    space = env.observation_space
    if isinstance(space, gym.spaces.Dict):
        boxes = all(isinstance(part, gym.spaces.Box) for part in space.spaces.values())
        env = FlatDictObservation(env) if boxes else gym.wrappers.FlattenObservation(env)
    return env
