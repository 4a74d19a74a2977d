"""PointMaze datasets the way D4RL's maze2d and Minari's D4RL/pointmaze were made, with no
policy training: a planner over the maze grid gives cell waypoints to the goal, a PD controller
steers the point mass to them, and Gaussian noise is added to its actions (docs/sparse_tasks.md).

The task continues as in Minari's recipe: on reaching a goal, the env draws a new one and the
point carries on from where it is. Each goal is its own episode in the file: the step that
reaches it is a terminal (the online and evaluation env ends the episode at the goal, the
antmaze rule in wsrl_wm.envs.sparse), and a goal not reached within the env's time limit ends
with a timeout, after which the env is reset. Rewards are the env's raw sparse 0/1.

Qualities: `noisy` adds N(0, 0.5²) to every action (Minari's recipe), `clean` adds none.
Goals: `random` draws each goal anywhere in the maze (Minari's recipe, as antmaze "diverse");
`eval` commands the evaluation env's single goal from a random free cell every episode and resets
after reaching it (as D4RL's antmaze-umaze data were recorded with the test goal).
"""

from collections import deque

import gymnasium as gym
import numpy as np

from wsrl_wm.data import write_d4rl_file
from wsrl_wm.envs.make import make_sparse_env, register_robotics_envs
from wsrl_wm.envs.registry import resolve_env
from wsrl_wm.envs.task_functions import ACHIEVED, DESIRED
from wsrl_wm.errors import WsrlError
from wsrl_wm.progress import progress_bar

MAZE_QUALITIES = {"clean": 0.0, "noisy": 0.5}  # action noise standard deviation
MAZE_GOALS = ("random", "eval")
VELOCITY = slice(6, 8)  # flat observation: achieved (2), desired (2), position (2), velocity (2)
# Minari's pointmaze recipe (docs/tutorials/dataset_creation/point_maze_dataset.py): PD gains,
# the distance at which a waypoint counts as reached, and each waypoint is its cell's centre
# shifted by −U(0, 0.2) per axis (scaled by the cell size) so paths vary.
P_GAIN, D_GAIN = 10.0, -1.0
WAYPOINT_REACHED = 0.1
WAYPOINT_JITTER = 0.2
NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


class GridPlanner:
    """Shortest paths over the maze's free cells (breadth-first from the goal cell): on a
    deterministic 4-connected grid this is the path the recipe's Q-iteration argmax follows."""

    def __init__(self, maze):
        self.maze = maze
        self.free = np.array([[cell != 1 for cell in row] for row in maze.maze_map])
        self.goal_cell: tuple[int, int] | None = None
        self.distance = np.full(self.free.shape, -1)

    def cell(self, xy: np.ndarray) -> tuple[int, int]:
        row, col = self.maze.cell_xy_to_rowcol(xy)
        return int(row), int(col)

    def plan(self, goal_cell: tuple[int, int]) -> None:
        """Steps to `goal_cell` from every free cell (−1: unreachable or a wall)."""
        self.goal_cell = goal_cell
        self.distance = np.full(self.free.shape, -1)
        self.distance[goal_cell] = 0
        queue = deque([goal_cell])
        while queue:
            row, col = queue.popleft()
            for d_row, d_col in NEIGHBOURS:
                nxt = (row + d_row, col + d_col)
                if (0 <= nxt[0] < self.free.shape[0] and 0 <= nxt[1] < self.free.shape[1]
                        and self.free[nxt] and self.distance[nxt] < 0):
                    self.distance[nxt] = self.distance[row, col] + 1
                    queue.append(nxt)

    def next_cell(self, cell: tuple[int, int]) -> tuple[int, int]:
        """The neighbour one step closer to the goal (the goal cell stays itself)."""
        if cell == self.goal_cell or self.distance[cell] <= 0:
            return cell
        for d_row, d_col in NEIGHBOURS:
            nxt = (cell[0] + d_row, cell[1] + d_col)
            if self.distance[nxt] == self.distance[cell] - 1 and self.free[nxt]:
                return nxt
        return cell


class WaypointController:
    """PD control towards the current waypoint: the next cell on the shortest path, until the
    point is within WAYPOINT_REACHED of it, then the one after; the goal itself in its cell."""

    def __init__(self, maze, rng: np.random.Generator):
        self.maze, self.rng = maze, rng
        self.planner = GridPlanner(maze)
        self.goal = np.full(2, np.nan)
        self.waypoint: tuple[int, int] | None = None
        self.target = np.zeros(2)

    def _aim(self, cell: tuple[int, int]) -> None:
        self.waypoint = cell
        if cell == self.planner.goal_cell:
            self.target = self.goal.copy()
        else:
            jitter = self.rng.uniform(size=2) * WAYPOINT_JITTER * self.maze.maze_size_scaling
            self.target = self.maze.cell_rowcol_to_xy(np.array(cell)) - jitter

    def action(self, obs: np.ndarray) -> np.ndarray:
        position, goal = obs[ACHIEVED], obs[DESIRED]
        cell = self.planner.cell(position)
        if not np.allclose(goal, self.goal):  # a new goal: plan again from here
            self.goal = goal.copy()
            self.planner.plan(self.planner.cell(goal))
            self._aim(self.planner.next_cell(cell))
        elif not self._on_path(cell):  # pushed off the path by noise: rejoin it from here
            self._aim(self.planner.next_cell(cell))
        if (self.waypoint != self.planner.goal_cell
                and np.linalg.norm(self.target - position) <= WAYPOINT_REACHED):
            self._aim(self.planner.next_cell(self.waypoint))
        action = P_GAIN * (self.target - position) + D_GAIN * obs[VELOCITY]
        return np.clip(action, -1.0, 1.0)

    def _on_path(self, cell: tuple[int, int]) -> bool:
        """In the waypoint's cell or in the cell the path leaves to reach it."""
        return cell == self.waypoint or self.planner.next_cell(cell) == self.waypoint


def collect_pointmaze(env: str, quality: str, steps: int, seed: int, out: str,
                      goals: str = "random") -> dict:
    """Write a D4RL-format PointMaze dataset of `steps` rows to `out`; return its metadata."""
    spec = resolve_env(env)
    if spec.family != "pointmaze":
        raise WsrlError(f"{env!r} is not a PointMaze env; use e.g. PointMaze_Medium-v3")
    if quality not in MAZE_QUALITIES:
        raise WsrlError(f"unknown PointMaze quality {quality!r}; choose one of "
                        f"{', '.join(MAZE_QUALITIES)}")
    if goals not in MAZE_GOALS:
        raise WsrlError(f"unknown PointMaze goals {goals!r}; choose one of {', '.join(MAZE_GOALS)}")
    if steps <= 0:
        raise WsrlError(f"--steps must be positive, got {steps}")
    register_robotics_envs()
    time_limit = gym.spec(spec.gym_id).max_episode_steps
    # Continuing: a reached goal is replaced in place; the time limit is applied here, per goal.
    # Goals anywhere: the registered map; the evaluation goal: the evaluation env's own map.
    continuing = goals == "random"
    maze = {"maze_map": gym.spec(spec.gym_id).kwargs["maze_map"]} if continuing else {}
    sim = make_sparse_env(spec, continuing_task=continuing, reset_target=continuing,
                          max_episode_steps=steps + 1, **maze)
    rng = np.random.default_rng(seed)
    sim.action_space.seed(seed)
    controller = WaypointController(sim.unwrapped.maze, rng)
    noise = MAZE_QUALITIES[quality]
    rows: dict[str, list] = {k: [] for k in (
        "observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    obs, _ = sim.reset(seed=seed)
    episode_steps, outcomes = 0, []  # outcomes: 1.0 reached, 0.0 timed out, per goal
    progress = progress_bar(steps, f"collect {spec.gym_id} ({quality}, {goals} goals)")
    for _ in range(steps):
        action = controller.action(obs) + noise * rng.standard_normal(2)
        action = np.clip(action, sim.action_space.low, sim.action_space.high).astype(np.float32)
        next_obs, reward, _, _, info = sim.step(action)
        episode_steps += 1
        reached = bool(info["success"])
        timeout = not reached and episode_steps >= time_limit
        for key, value in (("observations", obs), ("actions", action), ("rewards", reward),
                           ("next_observations", next_obs), ("terminals", reached),
                           ("timeouts", timeout)):
            rows[key].append(value)
        if reached and continuing:  # the env drew the next goal; observed from the next row on
            outcomes.append(1.0)
            obs = next_obs.copy()
            obs[DESIRED] = sim.unwrapped.goal
            episode_steps = 0
        elif reached or timeout:
            outcomes.append(float(reached))
            obs, _ = sim.reset()
            episode_steps = 0
        else:
            obs = next_obs
        progress.update(1)
    progress.close()
    sim.close()
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in rows.items()}
    arrays["terminals"] = arrays["terminals"].astype(bool)
    arrays["timeouts"] = arrays["timeouts"].astype(bool)
    if not arrays["terminals"][-1]:
        arrays["timeouts"][-1] = True  # the step budget cuts the last goal's episode
    success = float(np.mean(outcomes)) if outcomes else 0.0
    metadata = {
        "env": spec.gym_id, "quality": quality, "goals": goals, "seed": seed, "steps": steps,
        "episodes": len(outcomes), "behaviour_success_rate": success,
        "behaviour_score": 100.0 * success,
        "behaviour_return": float(arrays["rewards"].sum() / max(len(outcomes), 1)),
    }
    write_d4rl_file(out, arrays, metadata)
    return metadata
