"""`load_dataset`: any supported source → one row per transition, validated, with MC returns."""

import importlib
from pathlib import Path

import numpy as np

from wsrl_wm.data.d4rl_format import d4rl_dataset_dir, read_d4rl_file
from wsrl_wm.data.returns import mc_returns
from wsrl_wm.envs import env_dims, resolve_env
from wsrl_wm.errors import WsrlError

TRANSITION_KEYS = (
    "observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
    "mc_returns",
)


def load_dataset(
    source: str,
    discount: float = 0.99,
    env: str | None = None,
    sparse_negative_reward: float | None = None,
) -> dict[str, np.ndarray]:
    """Transitions from a D4RL-format hdf5 path, a D4RL name (the sparse-reward ones read from
    Minari, docs/sparse_tasks.md), or `minari:<dataset_id>`.

    Observation and action sizes are checked against `env` (or the env the source names).
    Rows with no known successor (the last step of a timed-out episode when the file has no
    `next_observations`) are dropped, as D4RL does; `timeouts` then marks the last kept row.
    """
    raw, source_env = _read_source(source)
    _check_raw(raw, source)
    transitions = _to_transitions(raw, discount, sparse_negative_reward)
    env = env or source_env
    if env is not None:
        check_matches_env(transitions, env, source)
    return transitions


def check_matches_env(data: dict[str, np.ndarray], env: str, source: str = "dataset") -> None:
    """Fail early if the data cannot belong to `env` (a dataset of another task)."""
    obs_dim, act_dim = env_dims(env)
    got_obs, got_act = data["observations"].shape[1], data["actions"].shape[1]
    if (got_obs, got_act) != (obs_dim, act_dim):
        raise WsrlError(
            f"{source}: observation/action size {got_obs}/{got_act} does not match env {env!r} "
            f"({obs_dim}/{act_dim}); pick the env the dataset was collected on"
        )


def _read_source(source: str) -> tuple[dict[str, np.ndarray], str | None]:
    if source.startswith("minari:"):
        from wsrl_wm.data.minari_source import read_minari

        return read_minari(source.removeprefix("minari:"))
    path = Path(source).expanduser()
    if path.suffix in (".hdf5", ".h5") or path.exists():
        raw, attrs = read_d4rl_file(path)
        return raw, attrs.get("env")
    spec = resolve_env(source)  # raises a clear error for a name that is no env at all
    if spec.minari_id is not None:  # a sparse-reward task: its data live in Minari's D4RL set
        from wsrl_wm.data.minari_source import read_minari

        return read_minari(spec.minari_id, spec.family)[0], source
    candidates = d4rl_file_candidates(source)
    for local in candidates:
        if local.is_file():
            return read_d4rl_file(local)[0], source
    return _read_with_d4rl_package(source, candidates), source


def d4rl_file_candidates(name: str) -> list[Path]:
    """Where a D4RL name's file may sit: `<name>.hdf5`, and the name the d4rl package itself
    downloads to (its URL's file name, underscores before the version:
    `hopper-medium-replay-v2` → `hopper_medium_replay-v2.hdf5`)."""
    root = d4rl_dataset_dir()
    stem, _, version = name.rpartition("-")
    names = [f"{name}.hdf5", f"{stem.replace('-', '_')}-{version}.hdf5"]
    return [root / n for n in dict.fromkeys(names)]


def _read_with_d4rl_package(name: str, tried: list[Path]) -> dict[str, np.ndarray]:
    """The d4rl package is optional: it only helps when it imports (it needs MuJoCo 2.1)."""
    try:
        importlib.import_module("d4rl")
        gym = importlib.import_module("gym")
    except Exception:
        raise WsrlError(
            f"D4RL dataset {name!r} not found (tried {', '.join(map(str, tried))}); put the "
            f"file there or set D4RL_DATASET_DIR (the optional d4rl package does not import "
            f"here)"
        ) from None
    dataset = gym.make(name).get_dataset()
    return {k: np.asarray(v) for k, v in dataset.items() if not k.startswith("infos")}


def _check_raw(raw: dict[str, np.ndarray], source: str) -> None:
    lengths = {k: len(v) for k, v in raw.items()}
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise WsrlError(f"{source}: keys have mismatched lengths ({detail}); the file is damaged")
    if lengths["observations"] == 0:
        raise WsrlError(f"{source}: the dataset is empty")
    for key in ("observations", "actions"):
        if raw[key].ndim != 2:
            raise WsrlError(f"{source}: {key} must be 2-D (rows × features), got {raw[key].shape}")
    if "next_observations" in raw and raw["next_observations"].shape != raw["observations"].shape:
        raise WsrlError(
            f"{source}: next_observations shape {raw['next_observations'].shape} does not match "
            f"observations {raw['observations'].shape}; the file is damaged"
        )
    for key in ("observations", "actions", "rewards", "next_observations"):
        if key in raw and not np.all(np.isfinite(raw[key])):
            bad = np.flatnonzero(~np.isfinite(raw[key]).reshape(len(raw[key]), -1).all(axis=1))
            raise WsrlError(
                f"{source}: {key} has NaN/inf values in {len(bad)} row(s), first at row {bad[0]}; "
                f"clean or regenerate the dataset"
            )


def _to_transitions(raw, discount, sparse_negative_reward) -> dict[str, np.ndarray]:
    obs = raw["observations"].astype(np.float32)
    terminals = raw["terminals"].astype(bool)
    timeouts = raw["timeouts"].astype(bool) & ~terminals
    returns = mc_returns(raw["rewards"], terminals, timeouts, discount, sparse_negative_reward)
    n = len(obs)
    if "next_observations" in raw:
        keep = np.ones(n, dtype=bool)
        next_obs = raw["next_observations"].astype(np.float32)
        timeouts[-1] |= not terminals[-1]  # a file cut mid-episode ends it by truncation
    else:
        # obs[i + 1] is the successor only inside an episode. A terminal row keeps its own obs
        # as a placeholder (the terminal flag masks it); timeout rows and a cut-off last row
        # have no successor in the file and are dropped.
        keep = ~timeouts
        keep[-1] = terminals[-1]
        next_obs = np.concatenate([obs[1:], obs[-1:]])
        next_obs[terminals] = obs[terminals]
        # The row before a dropped one becomes the end of a truncated episode.
        dropped_end = np.flatnonzero(~keep)
        before = dropped_end[dropped_end > 0] - 1
        timeouts = np.zeros(n, dtype=bool)
        timeouts[before[keep[before] & ~terminals[before]]] = True
    out = {
        "observations": obs[keep],
        "actions": raw["actions"].astype(np.float32)[keep],
        "rewards": raw["rewards"].astype(np.float32).reshape(n)[keep],
        "next_observations": next_obs[keep],
        "terminals": terminals[keep],
        "timeouts": timeouts[keep],
        "mc_returns": returns[keep],
    }
    if not len(out["observations"]):
        raise WsrlError("the dataset has no complete transition (every episode is one step long)")
    return out
