"""Read a Minari dataset that is already on disk into flat per-transition arrays.

Minari is optional, so it is imported only here, when a `minari:<id>` source is asked for.
Nothing is downloaded: a training run must not fetch data behind the user's back.
"""

import numpy as np
from gymnasium.spaces import Box

from wsrl_wm.errors import WsrlError


def read_minari(dataset_id: str) -> tuple[dict[str, np.ndarray], str | None]:
    """Raw transitions of all episodes in order, and the dataset's env id (None if it has none).

    Each episode of T steps gives T rows: observations = obs[:-1], next_observations = obs[1:],
    terminals = terminations, timeouts = truncations.
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
    if not isinstance(space, Box):
        raise WsrlError(
            f"Minari dataset {dataset_id!r}: observation space {type(space).__name__} is not "
            f"supported (only flat Box observations are)"
        )
    episodes = list(dataset.iterate_episodes())
    if not episodes:
        raise WsrlError(f"Minari dataset {dataset_id!r} has no episodes")
    raw = {
        "observations": [ep.observations[:-1] for ep in episodes],
        "actions": [ep.actions for ep in episodes],
        "rewards": [ep.rewards for ep in episodes],
        "next_observations": [ep.observations[1:] for ep in episodes],
        "terminals": [ep.terminations for ep in episodes],
        "timeouts": [ep.truncations for ep in episodes],
    }
    env_id = dataset.env_spec.id if dataset.env_spec is not None else None
    return {key: np.concatenate(parts) for key, parts in raw.items()}, env_id
