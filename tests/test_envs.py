"""Env name mapping, D4RL observation layout and normalised scores."""

import numpy as np
import pytest

from wsrl_wm.envs import env_dims, make_env, normalized_score, resolve_env
from wsrl_wm.errors import WsrlError


@pytest.mark.parametrize(
    ("name", "gym_id", "family"),
    [
        ("hopper-medium-v2", "Hopper-v5", "hopper"),
        ("hopper-medium-replay-v2", "Hopper-v5", "hopper"),
        ("halfcheetah-medium-v2", "HalfCheetah-v5", "halfcheetah"),
        ("halfcheetah-medium-expert-v2", "HalfCheetah-v5", "halfcheetah"),
        ("walker2d-random-v2", "Walker2d-v5", "walker2d"),
        ("walker2d-medium-replay-v2", "Walker2d-v5", "walker2d"),
        ("ant-medium-v2", "Ant-v5", "ant"),
        ("ant-expert-v2", "Ant-v5", "ant"),
    ],
)
def test_d4rl_names_map_to_v5(name, gym_id, family):
    spec = resolve_env(name)
    assert (spec.gym_id, spec.family, spec.d4rl_layout) == (gym_id, family, True)


@pytest.mark.parametrize(
    ("name", "family"),
    [("Hopper-v5", "hopper"), ("HalfCheetah-v5", "halfcheetah"), ("Walker2d-v5", "walker2d"),
     ("Ant-v5", "ant")],
)
def test_gym_ids_map_to_themselves(name, family):
    spec = resolve_env(name)
    assert (spec.gym_id, spec.family, spec.d4rl_layout) == (name, family, False)


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("hopper-medium-v2", (11, 3)),
        ("Hopper-v5", (11, 3)),
        ("halfcheetah-medium-v2", (17, 6)),
        ("walker2d-medium-v2", (17, 6)),
        ("ant-medium-v2", (111, 8)),  # D4RL's ant layout
        ("Ant-v5", (105, 8)),
    ],
)
def test_env_dims(name, dims):
    assert env_dims(name) == dims


def test_d4rl_ant_observation_inserts_world_body_zeros():
    d4rl_env, plain_env = make_env("ant-medium-v2", seed=3), make_env("Ant-v5", seed=3)
    try:
        d4rl_obs, _ = d4rl_env.reset(seed=3)
        plain_obs, _ = plain_env.reset(seed=3)
        assert d4rl_obs.shape == (111,) and plain_obs.shape == (105,)
        assert d4rl_env.observation_space.shape == (111,)
        np.testing.assert_array_equal(d4rl_obs[27:33], np.zeros(6))
        np.testing.assert_array_equal(np.concatenate([d4rl_obs[:27], d4rl_obs[33:]]), plain_obs)
        action = np.full(8, 0.3)
        d4rl_step, plain_step = d4rl_env.step(action)[0], plain_env.step(action)[0]
        assert d4rl_step.shape == (111,)
        np.testing.assert_array_equal(d4rl_step[27:33], np.zeros(6))
        np.testing.assert_array_equal(np.concatenate([d4rl_step[:27], d4rl_step[33:]]),
                                      plain_step)
    finally:
        d4rl_env.close()
        plain_env.close()


def test_make_env_seed_is_reproducible():
    a, b = make_env("hopper-medium-v2", seed=5), make_env("hopper-medium-v2", seed=5)
    try:
        assert a.action_space.sample().tolist() == b.action_space.sample().tolist()
        obs_a, _ = a.reset(seed=5)
        obs_b, _ = b.reset(seed=5)
        np.testing.assert_array_equal(obs_a, obs_b)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    "name", ["pong-medium-v2", "CartPole-v1", "Humanoid-v5", "hopper", "", "medium-v2"]
)
def test_unknown_names_raise(name):
    with pytest.raises(WsrlError, match="unknown env or dataset name"):
        resolve_env(name)
    with pytest.raises(WsrlError, match="unknown env or dataset name"):
        make_env(name)


@pytest.mark.parametrize(("name", "family"), [
    ("antmaze-umaze-v2", "antmaze"), ("antmaze-large-diverse-v2", "antmaze"),
    ("kitchen-mixed-v0", "kitchen"), ("pen-binary-v0", "adroit"),
    ("maze2d-medium-v1", "pointmaze"),
])
def test_sparse_d4rl_names_resolve_to_gymnasium_robotics(name, family):
    spec = resolve_env(name)
    assert spec.family == family and spec.sparse and spec.minari_id.startswith("D4RL/")
    with pytest.raises(WsrlError, match="success rate"):
        normalized_score(name, 1.0)


@pytest.mark.parametrize("name", ["pen-human-v1", "hammer-binary-v0", "antmaze-huge-v2"])
def test_unsupported_sparse_names_raise(name):
    with pytest.raises(WsrlError, match="unknown env or dataset name"):
        resolve_env(name)


REFERENCE = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}
NAMES = {
    "hopper": ("hopper-medium-v2", "Hopper-v5"),
    "halfcheetah": ("halfcheetah-medium-replay-v2", "HalfCheetah-v5"),
    "walker2d": ("walker2d-expert-v2", "Walker2d-v5"),
    "ant": ("ant-medium-v2", "Ant-v5"),
}


@pytest.mark.parametrize("family", sorted(REFERENCE))
def test_normalized_score_at_reference_returns(family):
    low, high = REFERENCE[family]
    for name in NAMES[family]:
        assert normalized_score(name, low) == pytest.approx(0.0, abs=1e-9)
        assert normalized_score(name, high) == pytest.approx(100.0, rel=1e-12)
        assert normalized_score(name, (low + high) / 2) == pytest.approx(50.0, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "ret", "want"),
    [
        # 100 * (1000 + 20.272305) / (3234.3 + 20.272305), worked out with bc
        ("hopper-medium-v2", 1000.0, 31.348890403588),
        # 100 * (5000 + 280.178953) / (12135.0 + 280.178953)
        ("halfcheetah-medium-v2", 5000.0, 42.530026937099),
        # 100 * (2000 - 1.629008) / (4592.3 - 1.629008)
        ("walker2d-medium-v2", 2000.0, 43.531130753706),
        # 100 * (1000 + 325.6) / (3879.7 + 325.6)
        ("ant-medium-v2", 1000.0, 31.522126839940),
    ],
)
def test_normalized_score_mid_value(name, ret, want):
    assert normalized_score(name, ret) == pytest.approx(want, rel=1e-10)


def test_normalized_score_is_vectorised():
    low, high = REFERENCE["hopper"]
    got = normalized_score("Hopper-v5", np.array([low, high, 2 * high - low]))
    np.testing.assert_allclose(got, [0.0, 100.0, 200.0], atol=1e-9)
    assert normalized_score("Hopper-v5", [low - (high - low)]).tolist() == pytest.approx([-100.0])


def test_normalized_score_unknown_env():
    with pytest.raises(WsrlError, match="unknown env"):
        normalized_score("pong-medium-v2", 100.0)


@pytest.mark.parametrize("name", ["PointMaze_Medium-v3", "AntMaze_UMaze-v5"])
def test_flattened_maze_observations_are_gymnasiums(name):
    """The maze's dict observation, flattened by the cheap wrapper, is FlattenObservation's:
    the same space, and the same array at every step."""
    pytest.importorskip("gymnasium_robotics")
    import gymnasium as gym

    ours = make_env(name)
    theirs = gym.wrappers.FlattenObservation(make_env(name).env)
    assert ours.observation_space == theirs.observation_space
    (got, _), (want, _) = ours.reset(seed=3), theirs.reset(seed=3)
    for _ in range(30):
        assert got.dtype == want.dtype and np.array_equal(got, want)
        action = ours.action_space.sample()
        got, *_ = ours.step(action)
        want, *_ = theirs.step(action)
