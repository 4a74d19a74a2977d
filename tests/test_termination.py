"""Termination functions agree with gymnasium's own `terminated`, on rollouts and at the bounds."""

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch

from wsrl_wm.envs import make_env, termination_fn
from wsrl_wm.errors import WsrlError

Policy = Callable[[int], np.ndarray]
POLICIES = ("uniform", "full_plus", "full_minus", "forward_bias", "bang_bang", "oversized")


def make_policy(kind: str, rng: np.random.Generator, act_dim: int) -> Policy:
    """Seeded random and deliberately bad policies, so the robots fall in many different ways."""
    phases = np.arange(act_dim)
    policies: dict[str, Policy] = {
        "uniform": lambda t: rng.uniform(-1, 1, act_dim),
        "full_plus": lambda t: np.ones(act_dim),  # every joint pushed hard one way
        "full_minus": lambda t: -np.ones(act_dim),
        "forward_bias": lambda t: np.clip(rng.uniform(-1, 1, act_dim) + 0.8, -1, 1),
        "bang_bang": lambda t: np.sign(np.sin(t / 3 + phases)),  # extreme alternating strokes
        "oversized": lambda t: rng.uniform(-5, 5, act_dim),  # beyond the action space
    }
    return policies[kind]


def rollouts(env: gym.Env, steps_per_policy: int) -> tuple[np.ndarray, np.ndarray]:
    """(next observations, terminated) of every step, resetting on terminated or truncated."""
    act_dim = env.action_space.shape[0]
    next_obs, terminated = [], []
    for seed, kind in enumerate(POLICIES):
        policy = make_policy(kind, np.random.default_rng(seed), act_dim)
        env.reset(seed=seed)
        for t in range(steps_per_policy):
            obs, _, term, trunc, _ = env.step(policy(t))
            next_obs.append(obs)
            terminated.append(term)
            if term or trunc:
                env.reset()
    return np.array(next_obs), np.array(terminated)


@pytest.mark.parametrize(
    ("name", "steps_per_policy", "can_terminate"),
    [
        ("Hopper-v5", 600, True),
        ("Walker2d-v5", 600, True),
        ("HalfCheetah-v5", 500, False),
        ("Ant-v5", 400, True),
        ("ant-medium-v2", 400, True),  # D4RL's 111-dim ant layout
    ],
)
def test_matches_env_on_rollouts(name, steps_per_policy, can_terminate):
    env = make_env(name)
    try:
        next_obs, terminated = rollouts(env, steps_per_policy)
    finally:
        env.close()
    assert len(terminated) >= 2400
    if can_terminate:
        assert terminated.sum() >= 5 and (~terminated).sum() >= 5
    else:
        assert not terminated.any()
    fn = termination_fn(name)
    np.testing.assert_array_equal(fn(torch.from_numpy(next_obs)).numpy(), terminated)
    # World models predict float32; these rollouts hold no value within a float32 step of a bound.
    np.testing.assert_array_equal(fn(torch.from_numpy(next_obs).float()).numpy(), terminated)


def observe(env: gym.Env) -> np.ndarray:
    """The observation of the env's current state, through the D4RL ant wrapper if present."""
    obs = env.unwrapped._get_obs()
    return env.observation(obs) if isinstance(env, gym.ObservationWrapper) else obs


def env_verdict(name: str, qpos: dict[int, float], qvel: dict[int, float]) -> tuple[bool, bool]:
    """(env's terminated, termination_fn's verdict) with the initial state edited at the given
    qpos/qvel indices; `terminated` is `not is_healthy` as `terminate_when_unhealthy` is on."""
    env = make_env(name, seed=0)
    try:
        base = env.unwrapped
        q, v = base.init_qpos.copy(), base.init_qvel.copy()
        q[list(qpos)] = list(qpos.values())
        v[list(qvel)] = list(qvel.values())
        base.set_state(q, v)
        predicted = termination_fn(name)(torch.from_numpy(observe(env))[None])
        return not base.is_healthy, bool(predicted.item())
    finally:
        env.close()


def above(x: float) -> float:
    return float(np.nextafter(x, np.inf))


def below(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


NAN, INF = float("nan"), float("inf")

# (qpos edits, qvel edits, expected terminated); qpos[1] is z and qpos[2] the torso angle.
HOPPER_CASES = [
    ({}, {}, False),
    ({1: above(0.7)}, {}, False),
    ({1: 0.7}, {}, True),
    ({1: below(0.7)}, {}, True),
    ({1: 1e6}, {}, False),  # z has no finite upper bound and is outside the state-range check
    ({1: INF}, {}, True),
    ({1: NAN}, {}, True),
    ({2: below(0.2)}, {}, False),
    ({2: 0.2}, {}, True),
    ({2: above(-0.2)}, {}, False),
    ({2: -0.2}, {}, True),
    ({3: below(100.0)}, {}, False),  # joint angles are checked against (-100, 100)
    ({3: 100.0}, {}, True),
    ({5: -100.0}, {}, True),
    ({4: NAN}, {}, True),
    ({4: -INF}, {}, True),
    ({}, {2: 50.0}, False),
    ({}, {0: NAN}, True),  # NaN survives the observation's velocity clip
]
WALKER2D_CASES = [
    ({}, {}, False),
    ({1: above(0.8)}, {}, False),
    ({1: 0.8}, {}, True),
    ({1: below(2.0)}, {}, False),
    ({1: 2.0}, {}, True),
    ({1: NAN}, {}, True),
    ({2: below(1.0)}, {}, False),
    ({2: 1.0}, {}, True),
    ({2: above(-1.0)}, {}, False),
    ({2: -1.0}, {}, True),
    ({2: NAN}, {}, True),
    ({3: 1e3}, {}, False),  # no state-range check in Walker2d
    ({4: NAN}, {}, False),  # nor a finiteness check outside z and the angle
    ({}, {3: INF}, False),
]
# Ant: qpos = x, y, z, torso quaternion (4), 8 joints; qpos[2] is z (obs[0]).
ANT_CASES = [
    ({}, {}, False),
    ({2: 0.2}, {}, False),  # Ant's z range is closed
    ({2: below(0.2)}, {}, True),
    ({2: 1.0}, {}, False),
    ({2: above(1.0)}, {}, True),
    ({2: NAN}, {}, True),
    ({4: NAN}, {}, True),
    ({10: INF}, {}, True),
    ({}, {5: -INF}, True),
    ({}, {13: NAN}, True),
    ({7: 1e6}, {3: 1e6}, False),  # large but finite is healthy
]


@pytest.mark.parametrize(
    ("name", "qpos", "qvel", "expected"),
    [("Hopper-v5", *case) for case in HOPPER_CASES]
    + [("Walker2d-v5", *case) for case in WALKER2D_CASES]
    + [("Ant-v5", *case) for case in ANT_CASES]
    + [("ant-medium-v2", *case) for case in ANT_CASES],
)
def test_boundary_cases_match_env_health_check(name, qpos, qvel, expected):
    assert env_verdict(name, qpos, qvel) == (expected, expected)


@pytest.mark.parametrize(
    ("name", "qpos", "qvel"),
    [
        # The observation clips Hopper's velocities to ±10; the env checks them unclipped.
        ("Hopper-v5", {}, {1: 150.0}),
        ("Hopper-v5", {}, {3: INF}),
        # Ant's finiteness check covers the x, y position, which is not observed.
        ("Ant-v5", {0: NAN}, {}),
    ],
)
def test_unobservable_terminations_are_missed(name, qpos, qvel):
    assert env_verdict(name, qpos, qvel) == (True, False)


@pytest.mark.parametrize("name", ["Ant-v5", "ant-medium-v2"])
def test_ant_contact_forces_are_outside_the_health_check(name):
    env = make_env(name, seed=0)
    try:
        env.unwrapped.data.cfrc_ext[3, 1] = np.nan
        obs = observe(env)
        assert np.isnan(obs[27:]).any() and env.unwrapped.is_healthy
        assert not termination_fn(name)(torch.from_numpy(obs)[None]).item()
    finally:
        env.close()


def test_hopper_predicted_velocity_beyond_state_range_terminates():
    obs = torch.zeros(3, 11)
    obs[:, 0] = 1.25
    obs[1, 7] = 100.0
    obs[2, 10] = -150.0
    assert termination_fn("hopper-medium-v2")(obs).tolist() == [False, True, True]


def test_halfcheetah_never_terminates():
    obs = torch.tensor([[NAN] * 17, [INF] * 17, [-1e9] * 17])
    assert termination_fn("HalfCheetah-v5")(obs).tolist() == [False, False, False]


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device"))],
)
@pytest.mark.parametrize(
    ("name", "obs_dim"),
    [("Hopper-v5", 11), ("walker2d-medium-v2", 17), ("HalfCheetah-v5", 17), ("Ant-v5", 105),
     ("ant-medium-v2", 111)],
)
def test_output_is_bool_batch_on_input_device(name, obs_dim, device):
    obs = torch.randn(7, obs_dim, device=device)
    out = termination_fn(name)(obs)
    assert out.dtype == torch.bool and out.shape == (7,) and out.device == obs.device


@pytest.mark.parametrize(("name", "obs_dim"), [("Hopper-v5", 17), ("Ant-v5", 111),
                                               ("ant-medium-v2", 105)])
def test_wrong_observation_size_raises(name, obs_dim):
    with pytest.raises(WsrlError, match="dims"):
        termination_fn(name)(torch.zeros(2, obs_dim))


@pytest.mark.parametrize("name", ["CartPole-v1", "humanoid-medium-v2", "pen-human-v1"])
def test_unknown_env_raises(name):
    with pytest.raises(WsrlError):
        termination_fn(name)
