"""Read and write the D4RL hdf5 layout with h5py, so the optional `d4rl` package is never needed."""

import os
from pathlib import Path

import h5py
import numpy as np

from wsrl_wm.atomic import atomic_path
from wsrl_wm.errors import WsrlError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def d4rl_dataset_dir() -> Path:
    """Where D4RL keeps its files: $D4RL_DATASET_DIR or ~/.d4rl/datasets."""
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets"))


def read_d4rl_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Raw per-row arrays and the file's root attributes (our collector writes metadata there)."""
    path = Path(path)
    if not path.is_file():
        raise WsrlError(f"dataset file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if k not in f]
            if missing:
                raise WsrlError(
                    f"{path}: missing key(s) {', '.join(missing)}; a D4RL-format file needs "
                    f"{', '.join(REQUIRED_KEYS)}"
                )
            keys = [*REQUIRED_KEYS, *(["next_observations"] if "next_observations" in f else [])]
            raw = {k: f[k][()] for k in keys}
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise WsrlError(
            f"{path}: cannot read as hdf5 ({exc}); the file is corrupt or truncated"
        ) from None
    return raw, attrs


def write_d4rl_file(path: str | os.PathLike, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Written atomically: a killed or interrupted run never leaves half a file."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value, compression="gzip")
        for key, value in attrs.items():
            f.attrs[key] = value


def _plain(value):
    """hdf5 attributes come back as numpy scalars or bytes; make them plain Python values."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
