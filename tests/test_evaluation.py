"""Evaluation's episodes stepped together give every episode, action for action, what it gives
run alone: the same seeds in the same order, the same returns, successes and lengths, for a
plain env, a sparse-reward maze and open-loop action chunks; and reused evaluation envs change
nothing."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from models import TanhGaussianActor
from wsrl_wm.envs import make_env
from wsrl_wm.errors import WsrlError
from wsrl_wm.evaluation import EvalEnvs, evaluate, one_row_linear, run_episodes

pytest.importorskip("gymnasium_robotics")


@pytest.fixture(autouse=True)
def random_streams_left_as_found():
    """These tests seed and draw from torch's global generator; the tests after them see it
    as if these had not run (some of those depend on its state)."""
    with torch.random.fork_rng():
        yield


class Recorded(gym.Wrapper):
    """Keeps every action the env was stepped with, per episode."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.episodes: list[list[np.ndarray]] = []

    def reset(self, **kwargs):
        self.episodes.append([])
        return self.env.reset(**kwargs)

    def step(self, action):
        self.episodes[-1].append(np.array(action))
        return self.env.step(action)


def alone(actor, env_name: str, seeds: list[int], chunk: int = 1, deterministic: bool = True):
    """Each seed's episode on its own, one-row policy queries: (return, steps, actions) each."""
    env, episodes = Recorded(make_env(env_name)), []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        rewards, done = [], False
        while not done:
            with torch.no_grad():
                actions = actor(torch.as_tensor(obs, dtype=torch.float32), deterministic)[0]
            for action in actions.numpy().reshape(chunk, -1):
                obs, reward, terminated, truncated, _ = env.step(action)
                rewards.append(float(reward))
                done = terminated or truncated
                if done:
                    break
        episodes.append((sum(rewards), len(rewards), env.episodes[-1]))
    return episodes


def together(actor, env_name: str, seeds: list[int], chunk: int = 1,
             deterministic: bool = True):
    """`run_episodes` on recorded envs: (return, steps, actions) per seed, and the episodes."""
    envs = EvalEnvs(env_name)
    envs.envs = [Recorded(make_env(env_name)) for _ in seeds]
    episodes = run_episodes(actor, env_name, seeds, chunk, deterministic, envs)
    played = [action for env in envs.envs for action in env.episodes]
    if deterministic:  # env i played seed i's episode
        played = [env.episodes[0] for env in envs.envs]
    return [(e.ret, e.steps, actions) for e, actions in zip(episodes, played, strict=True)], \
        episodes


def assert_same_episodes(got, want) -> None:
    assert [(ret, steps) for ret, steps, _ in got] == [(ret, steps) for ret, steps, _ in want]
    for (*_, got_actions), (*_, want_actions) in zip(got, want, strict=True):
        assert len(got_actions) == len(want_actions)
        for a, b in zip(got_actions, want_actions, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)  # bit for bit


def hopper_actor(chunk: int = 1) -> TanhGaussianActor:
    """WSRL's actor shapes, with weights that make episodes of different lengths."""
    torch.manual_seed(0)
    actor = TanhGaussianActor(11, 3 * chunk, (256, 256), layer_norm=True, init="pytorch")
    with torch.no_grad():
        actor.net[-1].weight.mul_(0.2)
    return actor


def goal_seeker() -> TanhGaussianActor:
    """A PointMaze actor (no LayerNorm, state-independent std, as the study's minus the norm)
    that pushes towards the goal, damped by the velocity, plus small random weights: some
    episodes reach the goal early, some stay stuck behind a wall."""
    torch.manual_seed(1)
    actor = TanhGaussianActor(8, 2, (64, 64), layer_norm=False, state_dependent_std=False,
                              init="pytorch")
    first, second, head = (m for m in actor.net if isinstance(m, nn.Linear))
    with torch.no_grad():
        for p in actor.parameters():
            p.mul_(0.01)
        for k, (axis, sign) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1)]):
            # obs = [achieved (x, y), desired (x, y), position, velocity]
            first.weight[k, 2 + axis] += 10 * sign
            first.weight[k, axis] -= 10 * sign
            first.weight[k, 6 + axis] -= sign
            second.weight[k, k] += 1.0
        head.weight[0, 0] += 1
        head.weight[0, 1] -= 1
        head.weight[1, 2] += 1
        head.weight[1, 3] -= 1
    return actor


@pytest.mark.parametrize(("env_name", "actor", "chunk"), [
    ("Hopper-v5", hopper_actor, 1),
    ("Hopper-v5", lambda: hopper_actor(chunk=3), 3),
    ("PointMaze_UMaze-v3", goal_seeker, 1),
])
def test_episodes_run_together_are_the_episodes_run_alone(env_name, actor, chunk):
    actor, seeds = actor(), list(range(40, 49))
    got, episodes = together(actor, env_name, seeds, chunk)
    want = alone(actor, env_name, seeds, chunk)
    assert_same_episodes(got, want)
    assert len({steps for _, steps, _ in want}) > 2  # episodes end at different steps
    if env_name.startswith("PointMaze"):
        assert 0 < sum(e.success for e in episodes) < len(seeds)
        assert [e.success for e in episodes] == [float(steps < 300) for _, steps, _ in want]


def test_the_stochastic_policy_runs_its_episodes_one_after_another():
    """Its noise is drawn in the order the episodes run alone, so its scores stay the same."""
    actor, seeds = goal_seeker(), [3, 4, 5]
    torch.manual_seed(7)
    got, _ = together(actor, "PointMaze_UMaze-v3", seeds, deterministic=False)
    torch.manual_seed(7)
    assert_same_episodes(got, alone(actor, "PointMaze_UMaze-v3", seeds, deterministic=False))


def test_reused_evaluation_envs_change_no_score():
    actor, envs = goal_seeker(), EvalEnvs("PointMaze_UMaze-v3")
    first = evaluate(actor, "PointMaze_UMaze-v3", 6, seed=10, envs=envs)
    built = list(envs.envs)
    assert evaluate(actor, "PointMaze_UMaze-v3", 6, seed=10, envs=envs) == first
    assert envs.envs == built  # the same envs, not new ones
    assert evaluate(actor, "PointMaze_UMaze-v3", 6, seed=10) == first  # fresh envs
    assert evaluate(actor, "PointMaze_UMaze-v3", 4, seed=12, envs=envs) == evaluate(
        actor, "PointMaze_UMaze-v3", 4, seed=12)


@pytest.mark.parametrize(("in_features", "out_features"), [(64, 2), (8, 64), (256, 256)])
def test_one_row_linear_gives_each_row_its_one_row_result(in_features, out_features):
    """Both ways (torch's own bmm loop below 400 multiply-adds per row, BLAS above), for every
    number of live episodes."""
    torch.manual_seed(0)
    layer = nn.Linear(in_features, out_features)
    for rows in range(1, 13):
        x = torch.randn(rows, in_features) * 3
        with torch.no_grad():
            want = torch.stack([layer(row) for row in x])
            assert torch.equal(one_row_linear(layer, x), want)


def test_evaluation_envs_of_another_env_are_refused():
    with pytest.raises(WsrlError, match="cannot evaluate"):
        evaluate(goal_seeker(), "PointMaze_UMaze-v3", 1, 0, envs=EvalEnvs("Hopper-v5"))
