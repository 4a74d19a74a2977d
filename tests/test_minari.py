"""`load_dataset("minari:<id>")` against a small Minari dataset written by Minari itself."""

import sys

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari import DataCollector
from minari.data_collector import EpisodeBuffer

from wsrl_wm.data import load_dataset
from wsrl_wm.errors import WsrlError

# Minari nags about unset author/description metadata; irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore:.*is set to None:UserWarning")

DATASET_ID = "wsrl-test/hopper/random-v0"
GAMMA = 0.99


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    return tmp_path


def _collect_hopper_dataset() -> list[list[tuple]]:
    """Step Hopper-v5 at random through Minari's own `DataCollector`, write DATASET_ID, and
    return the steps per episode as this test saw them."""
    env = DataCollector(gym.make("Hopper-v5", max_episode_steps=30))
    env.action_space.seed(0)
    episodes = []
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        steps, done = [], False
        while not done:
            action = env.action_space.sample()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            steps.append((obs, action, reward, next_obs, terminated, truncated))
            obs, done = next_obs, terminated or truncated
        episodes.append(steps)
    env.create_dataset(dataset_id=DATASET_ID, algorithm_name="random")
    env.close()
    return episodes


def test_minari_dataset_loads_exactly_the_collected_transitions(minari_root):
    episodes = _collect_hopper_dataset()
    last_steps = [steps[-1] for steps in episodes]
    assert any(s[4] for s in last_steps), "need an episode that ends by falling"
    assert any(s[5] and not s[4] for s in last_steps), "need an episode cut by the time limit"

    data = load_dataset(f"minari:{DATASET_ID}", discount=GAMMA)

    rows = [step for steps in episodes for step in steps]
    assert len(data["observations"]) == len(rows)
    for i, (obs, action, reward, next_obs, terminated, truncated) in enumerate(rows):
        np.testing.assert_array_equal(data["observations"][i], np.float32(obs))
        np.testing.assert_array_equal(data["actions"][i], np.float32(action))
        np.testing.assert_array_equal(data["rewards"][i], np.float32(reward))
        np.testing.assert_array_equal(data["next_observations"][i], np.float32(next_obs))
        assert data["terminals"][i] == terminated
        assert data["timeouts"][i] == truncated

    # Discounted reward-to-go, restarted at every episode: G_t = r_t + γ G_{t+1}, G_T = 0.
    expected_returns = []
    for steps in episodes:
        to_go, episode_returns = 0.0, []
        for step in reversed(steps):
            to_go = step[2] + GAMMA * to_go
            episode_returns.append(to_go)
        expected_returns.extend(reversed(episode_returns))
    np.testing.assert_allclose(data["mc_returns"], expected_returns, rtol=1e-5)

    # Inside an episode next_obs[i] is obs[i + 1]; at an episode's end it is not the next
    # episode's first observation.
    ends = data["terminals"] | data["timeouts"]
    assert ends.sum() == len(episodes) and ends[-1]
    for i in range(len(rows) - 1):
        same = np.array_equal(data["next_observations"][i], data["observations"][i + 1])
        assert same != ends[i], f"row {i}"


def test_unknown_minari_dataset_names_the_id_and_root(minari_root):
    with pytest.raises(WsrlError, match="no/such/dataset-v0") as info:
        load_dataset("minari:no/such/dataset-v0")
    assert str(minari_root) in str(info.value)
    assert "minari download" in str(info.value)


def test_missing_minari_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)
    with pytest.raises(WsrlError, match=r"pip install 'wsrl-wm\[minari\]'"):
        load_dataset("minari:any/dataset-v0")


def _dict_dataset(dataset_id: str, obs_space, observations) -> None:
    episode = EpisodeBuffer(
        observations=observations,
        actions=np.zeros((2, 1), dtype=np.float32),
        rewards=[0.0, 0.0],
        terminations=[False, True],
        truncations=[False, False],
    )
    minari.create_dataset_from_buffers(
        dataset_id, [episode], observation_space=obs_space,
        action_space=gym.spaces.Box(-1.0, 1.0, (1,)),
    )


@pytest.mark.filterwarnings("ignore:env_spec is None:UserWarning")
def test_dict_observations_are_flattened_in_gymnasiums_order(minari_root):
    obs_space = gym.spaces.Dict({"z": gym.spaces.Box(-9.0, 9.0, (1,)),
                                 "a": gym.spaces.Dict({"q": gym.spaces.Box(-9.0, 9.0, (2,))})})
    steps = [{"z": np.float32([i]), "a": {"q": np.float32([10 * i, 10 * i + 1]) / 10}}
             for i in range(3)]
    _dict_dataset("wsrl-test/dict-v0", obs_space, {
        "z": np.stack([s["z"] for s in steps]), "a": {"q": np.stack([s["a"]["q"] for s in steps])}})
    data = load_dataset("minari:wsrl-test/dict-v0")
    expected = np.stack([gym.spaces.flatten(obs_space, s) for s in steps])  # a.q first, then z
    np.testing.assert_array_equal(data["observations"], expected[:2])
    np.testing.assert_array_equal(data["next_observations"], expected[1:])


@pytest.mark.filterwarnings("ignore:env_spec is None:UserWarning")
def test_non_box_observations_are_refused(minari_root):
    obs_space = gym.spaces.Dict({"x": gym.spaces.Discrete(3)})
    _dict_dataset("wsrl-test/discrete-v0", obs_space, {"x": np.zeros(3, dtype=np.int64)})
    with pytest.raises(WsrlError, match="only Box observations and Dicts of them"):
        load_dataset("minari:wsrl-test/discrete-v0")
