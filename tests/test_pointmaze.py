"""PointMaze end to end: flattened observations, the task function against the env's own reward,
the waypoint collector's dataset, success-rate evaluation and the CLI configs."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import TanhGaussianActor
from wsrl_wm.collect.pointmaze import GridPlanner, WaypointController, collect_pointmaze
from wsrl_wm.data import load_dataset, read_d4rl_file
from wsrl_wm.envs import make_env, resolve_env
from wsrl_wm.envs.state import get_env_state, set_env_state
from wsrl_wm.envs.task_functions import task_reward_fn
from wsrl_wm.errors import WsrlError
from wsrl_wm.evaluation import evaluate

pytest.importorskip("gymnasium_robotics")
ROOT = Path(__file__).resolve().parents[1]
GAMMA = 0.99


@pytest.fixture(scope="module")
def umaze_dataset(tmp_path_factory) -> tuple[str, dict]:
    path = tmp_path_factory.mktemp("pointmaze") / "umaze-noisy.hdf5"
    metadata = collect_pointmaze("PointMaze_UMaze-v3", "noisy", 2500, 3, str(path))
    return str(path), metadata


@pytest.mark.parametrize(("name", "gym_id", "minari_id"), [
    ("PointMaze_Medium-v3", "PointMaze_Medium-v3", None),
    ("pointmaze-large-v2", "PointMaze_Large-v3", "D4RL/pointmaze/large-v2"),
    ("maze2d-umaze-v1", "PointMaze_UMaze-v3", "D4RL/pointmaze/umaze-v2"),
])
def test_pointmaze_names(name, gym_id, minari_id):
    spec = resolve_env(name)
    assert (spec.gym_id, spec.family, spec.minari_id, spec.sparse) == (
        gym_id, "pointmaze", minari_id, True)


def test_observation_is_achieved_desired_then_the_point_state():
    env = make_env("PointMaze_Medium-v3", seed=0)
    obs, _ = env.reset(seed=5)
    base = env.unwrapped
    for _ in range(20):
        obs, *_ = env.step(env.action_space.sample())
    qpos, qvel = base.point_env.data.qpos, base.point_env.data.qvel
    assert obs.shape == (8,)
    np.testing.assert_allclose(obs[0:2], qpos[:2])  # achieved_goal
    np.testing.assert_allclose(obs[2:4], base.goal)  # desired_goal
    np.testing.assert_allclose(obs[4:8], np.concatenate([qpos[:2], qvel[:2]]))  # observation


def test_episode_ends_at_the_goal_and_the_task_function_matches_the_env():
    """Drive to goals with the collector's controller; on every real transition the task
    function gives the env's own reward and termination, including the goal-reaching ones."""
    env = make_env("PointMaze_UMaze-v3", seed=0)
    task = task_reward_fn("PointMaze_UMaze-v3")
    controller = WaypointController(env.unwrapped.maze, np.random.default_rng(0))
    rows, reached = [], 0
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            action = controller.action(obs).astype(np.float32)
            next_obs, reward, terminated, truncated, info = env.step(action)
            rows.append((obs, action, next_obs, reward, terminated))
            assert terminated == info["success"]  # continuing_task=False: the goal ends it
            reached += terminated
            obs, done = next_obs, terminated or truncated
    assert reached == 3
    obs, act, next_obs, reward, terminated = (np.array(x) for x in zip(*rows, strict=True))
    got_reward, got_terminated = task(*(torch.as_tensor(x) for x in (obs, act, next_obs)))
    np.testing.assert_array_equal(got_reward.numpy(), reward)
    np.testing.assert_array_equal(got_terminated.numpy(), terminated)


def test_families_without_a_task_function_get_none():
    assert task_reward_fn("Hopper-v5") is None


def test_planner_gives_shortest_grid_distances():
    env = make_env("PointMaze_UMaze-v3")
    planner = GridPlanner(env.unwrapped.maze)
    # U_MAZE: row 1 = [1, 0, 0, 0, 1], row 2 = [1, 1, 1, 0, 1], row 3 = [1, 0, 0, 0, 1]
    planner.plan((1, 1))
    assert planner.distance[3, 1] == 6  # around the U: (3,1)→(3,2)→(3,3)→(2,3)→(1,3)→(1,2)→(1,1)
    assert planner.next_cell((3, 1)) == (3, 2) and planner.next_cell((2, 3)) == (1, 3)
    assert planner.distance[2, 1] == -1  # a wall


def test_collector_writes_real_goal_episodes(umaze_dataset):
    path, metadata = umaze_dataset
    raw, attrs = read_d4rl_file(path)
    assert attrs["env"] == "PointMaze_UMaze-v3" and attrs["quality"] == "noisy"
    assert len(raw["rewards"]) == 2500 and metadata["steps"] == 2500
    obs, next_obs = raw["observations"], raw["next_observations"]
    reached = np.linalg.norm(next_obs[:, 0:2] - next_obs[:, 2:4], axis=1) <= 0.45
    # A terminal is exactly a goal-reaching step, with the sparse reward 1.
    np.testing.assert_array_equal(raw["terminals"], reached)
    np.testing.assert_array_equal(raw["rewards"], reached.astype(np.float32))
    assert not np.any(raw["terminals"] & raw["timeouts"]) and raw["timeouts"][-1] == (
        not raw["terminals"][-1])
    ends = raw["terminals"] | raw["timeouts"]
    inside = ~ends[:-1]
    # Inside an episode the next row starts where this one ended, with the same goal.
    np.testing.assert_array_equal(obs[1:][inside], next_obs[:-1][inside])
    # After a reached goal the point carries on from where it is, towards a new goal.
    after_goal = np.flatnonzero(raw["terminals"][:-1]) + 1
    assert len(after_goal) >= 5
    np.testing.assert_array_equal(obs[after_goal, 0:2], next_obs[after_goal - 1, 0:2])
    assert np.all(np.linalg.norm(obs[after_goal, 2:4] - obs[after_goal - 1, 2:4], axis=1) > 0)
    # Episodes ended by the env (goal or time limit); the budget may cut the last one.
    assert ends[:-1].sum() <= metadata["episodes"] <= ends.sum()
    assert metadata["behaviour_success_rate"] == pytest.approx(
        raw["terminals"].sum() / metadata["episodes"])
    assert metadata["behaviour_score"] == pytest.approx(100 * metadata["behaviour_success_rate"])


def test_noisy_waypoint_policy_reaches_its_goals(umaze_dataset):
    """The recipe's behaviour policy solves the maze despite N(0, 0.5²) action noise; a random
    policy reaches about a quarter of UMaze goals in 300 steps (README)."""
    assert umaze_dataset[1]["behaviour_success_rate"] >= 0.9


def test_dataset_loads_with_sparse_mc_returns(umaze_dataset):
    data = load_dataset(umaze_dataset[0], discount=GAMMA, sparse_negative_reward=0.0)
    ends = np.flatnonzero(data["terminals"])
    # The goal step's return is its reward; the step before it is discounted once.
    np.testing.assert_allclose(data["mc_returns"][ends], 1.0)
    before = ends[1:] - 1
    before = before[~(data["terminals"] | data["timeouts"])[before]]
    np.testing.assert_allclose(data["mc_returns"][before], GAMMA, rtol=1e-6)


def test_eval_goals_command_the_evaluation_goal_from_random_starts(tmp_path):
    """`goals="eval"`: every episode heads for the evaluation env's single goal from a random
    free cell and starts afresh after reaching it (D4RL antmaze-umaze's recording)."""
    path = tmp_path / "eval.hdf5"
    metadata = collect_pointmaze("PointMaze_UMaze-v3", "noisy", 1500, 0, str(path), "eval")
    raw, attrs = read_d4rl_file(path)
    assert attrs["goals"] == "eval" and metadata["behaviour_success_rate"] >= 0.9
    env = make_env("PointMaze_UMaze-v3")
    maze = env.unwrapped.maze
    assert {tuple(maze.cell_xy_to_rowcol(g)) for g in raw["observations"][:, 2:4]} == {(1, 1)}
    starts = np.flatnonzero(np.r_[True, (raw["terminals"] | raw["timeouts"])[:-1]])
    assert len(starts) >= 10 and raw["terminals"].sum() >= 10
    # After a reached goal the next episode starts elsewhere, not where the goal was reached.
    after_goal = np.flatnonzero(raw["terminals"][:-1]) + 1
    moved = np.linalg.norm(raw["observations"][after_goal, 0:2]
                           - raw["next_observations"][after_goal - 1, 0:2], axis=1)
    assert np.mean(moved > 0.5) > 0.5
    assert len({tuple(maze.cell_xy_to_rowcol(p)) for p in raw["observations"][starts, 0:2]}) >= 3


@pytest.mark.parametrize(("quality", "steps", "goals", "message"), [
    ("random", 10, "random", "unknown PointMaze quality"),
    ("noisy", 0, "random", "must be positive"),
    ("noisy", 10, "anywhere", "unknown PointMaze goals"),
])
def test_collector_rejects_bad_options(tmp_path, quality, steps, goals, message):
    with pytest.raises(WsrlError, match=message):
        collect_pointmaze("PointMaze_UMaze-v3", quality, steps, 0, str(tmp_path / "x.hdf5"),
                          goals)
    assert not (tmp_path / "x.hdf5").exists()


def test_evaluation_reports_success_rate_next_to_the_raw_return():
    torch.manual_seed(0)
    actor = TanhGaussianActor(8, 2, (16, 16))
    metrics = evaluate(actor, "PointMaze_UMaze-v3", episodes=6, seed=0)
    # The same deterministic episodes, replayed here: success = the env terminated at the goal.
    env = make_env("PointMaze_UMaze-v3")
    reached, returns = [], []
    for episode in range(6):
        obs, _ = env.reset(seed=episode)
        done, total, terminated = False, 0.0, False
        while not done:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32), deterministic=True)[0]
            obs, reward, terminated, truncated, _ = env.step(action.numpy())
            total += reward
            done = terminated or truncated
        reached.append(terminated)
        returns.append(total)
    assert metrics["eval/success_rate"] == pytest.approx(np.mean(reached))
    assert metrics["eval/normalized_score"] == pytest.approx(100 * np.mean(reached))
    assert metrics["eval/return"] == pytest.approx(np.mean(returns))


def test_env_state_restores_physics_and_goal():
    env = make_env("PointMaze_Medium-v3", seed=0)
    env.reset(seed=1)
    for _ in range(30):
        env.step(np.array([0.5, -0.3], dtype=np.float32))
    state = get_env_state(env)
    actions = [np.array([np.sin(i), np.cos(i)], dtype=np.float32) for i in range(40)]
    expected = [env.step(a)[0] for a in actions]
    other = make_env("PointMaze_Medium-v3")
    other.reset(seed=99)  # a different goal and start
    set_env_state(other, state)
    np.testing.assert_array_equal([other.step(a)[0] for a in actions], expected)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "wsrl_wm.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600,
                          env={"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


@pytest.mark.slow  # collect, pretrain, fine-tune through the CLI (~35 s); CI: -m slow
def test_collect_then_smoke_configs_through_the_cli(tmp_path):
    collected = run_cli("collect", "--env", "PointMaze_UMaze-v3", "--quality", "noisy",
                        "--steps", "3000", "--out", "data/pointmaze-smoke.hdf5", cwd=tmp_path)
    assert collected.returncode == 0, collected.stderr[-2000:]
    assert "behaviour_success_rate=" in collected.stdout
    pre = run_cli("fit", "--config", str(ROOT / "configs/pointmaze/smoke-pretrain.yaml"),
                  cwd=tmp_path)
    assert pre.returncode == 0, pre.stderr[-2000:]
    fine = run_cli("fit", "--config", str(ROOT / "configs/pointmaze/smoke-finetune.yaml"),
                   cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr[-2000:]
    with open(tmp_path / "runs/pointmaze/smoke-finetune/evaluations.csv") as f:
        evals = list(csv.DictReader(f))
    assert [int(r["env_step"]) for r in evals] == [50, 70, 90]
    for row in evals:
        rate = float(row["eval/success_rate"])
        assert 0.0 <= rate <= 1.0
        assert float(row["eval/normalized_score"]) == pytest.approx(100 * rate)


def test_world_model_termination_on_a_maze_is_the_task_rule():
    from wsrl_wm.envs import termination_fn

    next_obs = torch.tensor([[0.0, 0.0, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0],
                             [0.0, 0.0, 0.4, 0.4, 0.0, 0.0, 0.0, 0.0]])
    assert termination_fn("PointMaze_UMaze-v3")(next_obs).tolist() == [True, False]


def test_online_env_has_d4rls_single_goal_and_random_starts():
    env = make_env("PointMaze_Medium-v3")
    maze = env.unwrapped.maze
    starts, goals = set(), set()
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        starts.add(tuple(maze.cell_xy_to_rowcol(obs[0:2])))
        goals.add(tuple(maze.cell_xy_to_rowcol(obs[2:4])))
    assert goals == {(6, 6)} and len(starts) >= 4
