"""A persistent torch.compile cache, so that only the first run of an update's shape pays
its compile.

Inductor keeps compiled graphs (its FX graph and AOTAutograd caches, both on by default) under
$TORCHINDUCTOR_CACHE_DIR, by default a folder in /tmp that a reboot may empty. `wsrl-wm` points
it at a per-user folder (`use_persistent_cache`) and a study points its cells at its work
folder (`cell_env`). With the graphs cached, compiling the fine-tune update takes ~10 s instead
of ~95–200 s on 2 cores (docs/performance_cells.md).

`compile: auto` weighs that: inductor's own keys hash the traced graph, which exists only after
tracing, so this module keeps a marker per update shape (`update_key`), written once a run's
compiled update has run (`mark_compiled`). `auto` compiles a run whose updates, times the runs
expected to share the cache ($WSRL_WM_COMPILE_RUNS, set by a study to its number of
fine-tunings), reach the cold threshold, and, inside `expecting(key)` (the Lightning modules
wrap their `compile_losses` in it), a run of ≥ `WARM_MIN_UPDATES` updates whose shape is
marked. The arithmetic of a compiled update differs from eager in the last bits, so a run's
curves then depend on the cache; pin `compile: on` or `off` where that matters.
"""

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch

from wsrl_wm.errors import WsrlError

CACHE_DIR = "TORCHINDUCTOR_CACHE_DIR"  # inductor reads it at each compile
RUNS = "WSRL_WM_COMPILE_RUNS"  # runs expected to share this run's compiled update
# A warm compile takes ~10 s on 2 loaded cores; the compiled PointMaze update (10 critics 2×64,
# batch 256) saves ~9 ms per update, the WSRL-sized one ~37 ms: 2000 updates pay it back twice
# over at the smaller shapes.
WARM_MIN_UPDATES = 2000
MARKERS = "wsrl-wm-compiled"  # the markers' folder, inside the cache (deleted with it)

_expected: ContextVar[str | None] = ContextVar("expected_update", default=None)


def default_cache_dir() -> Path:
    """Per user, surviving reboots: $XDG_CACHE_HOME/wsrl-wm/inductor, else ~/.cache/..."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wsrl-wm" / "inductor"


def use_persistent_cache() -> Path:
    """Point inductor at the per-user cache unless $TORCHINDUCTOR_CACHE_DIR says where;
    returns the folder in use."""
    os.environ.setdefault(CACHE_DIR, str(default_cache_dir()))
    return Path(os.environ[CACHE_DIR])


def cell_env(work: Path, runs: int) -> dict[str, str]:
    """What a study adds to its cells' environment: its work folder's cache (unless the user
    set one) and how many cells will share it."""
    env = {RUNS: str(runs)}
    if CACHE_DIR not in os.environ:
        env[CACHE_DIR] = str(Path(work).resolve() / "compile-cache")
    return env


def update_key(agent: torch.nn.Module, batch_size: int) -> str:
    """What the compiled update's graph depends on: the agent's class and settings (not its
    compile mode), its input sizes, the batch size, the device kind and the versions."""
    config = {k: v for k, v in dataclasses.asdict(agent.config).items() if k != "compile"}
    shape = {"agent": type(agent).__qualname__, "config": config, "batch_size": batch_size,
             "parameters": [list(p.shape) for p in agent.parameters()],
             "device": "cuda" if torch.cuda.is_available() else "cpu",
             "torch": torch.__version__, "python": sys.version.split()[0]}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


def _marker(key: str) -> Path:
    """In the folder inductor uses now ($TORCHINDUCTOR_CACHE_DIR, else its /tmp default)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / MARKERS / key


def is_cached(key: str) -> bool:
    return _marker(key).is_file()


def mark_compiled(key: str) -> None:
    """Record that the update of `key` has been compiled into the cache in use."""
    marker = _marker(key)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


@contextmanager
def expecting(key: str) -> Iterator[None]:
    """`auto` decisions made inside are for the update of `key` (`auto_compiles`)."""
    token = _expected.set(key)
    try:
        yield
    finally:
        _expected.reset(token)


def shared_runs() -> int:
    value = os.environ.get(RUNS, "1")
    if not value.isdigit() or int(value) < 1:
        raise WsrlError(f"${RUNS} must be a positive integer, got {value!r}")
    return int(value)


def auto_compiles(updates: int, cold_min_updates: int) -> bool:
    """`compile: auto`'s rule for a run of `updates` updates: compile once the runs sharing
    the cache bring `cold_min_updates` (what a cold compile needs to pay back; every cell of a
    study then decides alike), or from `WARM_MIN_UPDATES` on when the shape is cached."""
    if updates * shared_runs() >= cold_min_updates:
        return True
    key = _expected.get()  # (looked up last: finding the cache imports inductor, ~2 s)
    return key is not None and updates >= WARM_MIN_UPDATES and is_cached(key)


class CompiledUpdates:
    """A run's agent set to compile by its `compile` setting, `auto` told whether the
    update's shape is cached; `ran()`, called after each update, marks the shape once its
    compiled update has run (a failed compile leaves the agent eager and the shape unmarked)."""

    def __init__(self, agent: torch.nn.Module, batch_size: int, updates: int):
        self.agent, self.key, self.marked = agent, update_key(agent, batch_size), False
        with expecting(self.key):
            agent.compile_losses(updates)

    def ran(self) -> None:
        if not self.marked and self.agent.fused_update is not None:
            mark_compiled(self.key)
            self.marked = True
