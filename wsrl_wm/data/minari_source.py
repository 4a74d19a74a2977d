"""Read a Minari dataset that is already on disk into flat per-transition arrays.

Minari is optional, so it is imported only here, when a Minari source is asked for. Nothing is
downloaded: a training run must not fetch data behind the user's back.

Dict observations (the gymnasium-robotics tasks) are flattened exactly as
gymnasium.spaces.flatten / FlattenObservation flatten them, the order `make_env` observes:
sub-spaces in the Dict's (sorted) key order, recursively.

Read through a D4RL name (`pen-binary-v0`, `kitchen-mixed-v0`), the data get the official
code's per-family rules (`FAMILY_RULES`); a plain `minari:<id>` source is read as recorded.
"""

from collections.abc import Callable

import numpy as np
from gymnasium.spaces import Box, Dict, Space

from wsrl_wm.errors import WsrlError

Episode = dict[str, np.ndarray]


def read_minari(dataset_id: str, family: str | None = None
                ) -> tuple[dict[str, np.ndarray], str | None]:
    """Raw transitions of all episodes in order, and the dataset's env id (None if it has none).

    Each episode of T steps gives T rows: observations = obs[:-1], next_observations = obs[1:],
    terminals = terminations, timeouts = truncations; then `family`'s rule, if it has one.
    """
    try:
        import minari
        from minari.storage.datasets_root_dir import get_dataset_path
    except ImportError:
        raise WsrlError("minari is not installed; run pip install 'wsrl-wm[minari]'") from None
    try:
        dataset = minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError:
        raise WsrlError(
            f"Minari dataset {dataset_id!r} is not in the local Minari root {get_dataset_path()} "
            f"(MINARI_DATASETS_PATH); wsrl-wm never downloads, run "
            f"`minari download {dataset_id}` yourself"
        ) from None
    space = dataset.observation_space
    if not _flattenable(space):
        raise WsrlError(
            f"Minari dataset {dataset_id!r}: observation space {space} is not supported (only "
            f"Box observations and Dicts of them are)"
        )
    rule = FAMILY_RULES.get(family, _as_recorded)
    episodes = []
    for ep in dataset.iterate_episodes():
        obs = flatten_observations(space, ep.observations)
        episode = rule({
            "observations": obs[:-1], "actions": np.asarray(ep.actions),
            "rewards": np.asarray(ep.rewards, dtype=np.float64),
            "next_observations": obs[1:], "terminals": np.asarray(ep.terminations, dtype=bool),
            "timeouts": np.asarray(ep.truncations, dtype=bool),
            "success": _step_success(ep.infos, len(ep.rewards)),
        })
        if episode is not None:
            episodes.append(episode)
    if not episodes:
        raise WsrlError(f"Minari dataset {dataset_id!r} has no episodes"
                        + (f" that {family} training can use" if family in FAMILY_RULES else ""))
    env_id = dataset.env_spec.id if dataset.env_spec is not None else None
    keys = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    return {k: np.concatenate([episode[k] for episode in episodes]) for k in keys}, env_id


def _flattenable(space: Space) -> bool:
    if isinstance(space, Dict):
        return all(_flattenable(sub) for sub in space.spaces.values())
    return isinstance(space, Box)


def flatten_observations(space: Space, observations) -> np.ndarray:
    """[T, D] rows of an episode's observations (a Dict's arrays, or an array)."""
    if isinstance(space, Dict):
        return np.concatenate([flatten_observations(sub, observations[key])
                               for key, sub in space.spaces.items()], axis=-1)
    observations = np.asarray(observations)
    return observations.reshape(len(observations), -1)


def _step_success(infos: dict, steps: int) -> np.ndarray | None:
    """info["success"] after each step (Minari's infos hold the reset's info first)."""
    if not infos or "success" not in infos:
        return None
    success = np.asarray(infos["success"], dtype=bool)
    return success[-steps:]


def adroit_binary(episode: Episode) -> Episode | None:
    """Cal-QL's binary adroit data: reward 0 at steps where the goal is achieved and −1
    elsewhere; an episode is kept only if it achieves the goal, cut after its last success,
    and every success step is a terminal (official wsrl/envs/adroit_binary_dataset.py:
    `if not (0 in rewards): continue`, truncate_traj to the last 0 reward, `dones = rewards
    == 0`)."""
    success = episode["success"]
    if success is None:
        raise WsrlError("adroit binary rewards need info['success'] in the Minari dataset")
    if not success.any():
        return None
    end = int(np.flatnonzero(success)[-1]) + 1
    cut = {k: v[:end] for k, v in episode.items() if k != "success"}
    cut["rewards"] = np.where(success[:end], 0.0, -1.0)
    cut["terminals"] = success[:end].copy()
    cut["timeouts"] = np.zeros(end, dtype=bool)
    return cut


KITCHEN_ALL_TASKS_DONE = 4


def kitchen_task_count(episode: Episode) -> Episode:
    """Kitchen: the reward becomes the number of target tasks completed so far in the episode
    (D4RL's kitchen reward; FrankaKitchen-v1, which Minari's datasets were recorded on, rewards
    the tasks completed at each step), and every row with all four done is a terminal (official
    wsrl/envs/d4rl_dataset.py: `terminals |= rewards == 4`, "kitchen envs don't set the done
    signal correctly")."""
    out = _as_recorded(episode)
    out["rewards"] = np.cumsum(episode["rewards"])
    out["terminals"] = episode["terminals"] | (out["rewards"] >= KITCHEN_ALL_TASKS_DONE)
    return out


def _as_recorded(episode: Episode) -> Episode:
    return {k: v for k, v in episode.items() if k != "success"}


# Per family: how a recorded episode becomes training data. Antmaze (and PointMaze, which
# follows it) keep the dataset's own flags and 0/1 rewards, as the official code keeps
# D4RL's (wsrl/envs/d4rl_dataset.py qlearning_dataset_and_calc_mc).
FAMILY_RULES: dict[str | None, Callable[[Episode], Episode | None]] = {
    None: _as_recorded, "pointmaze": _as_recorded, "antmaze": _as_recorded,
    "adroit": adroit_binary, "kitchen": kitchen_task_count,
}
