"""Where cells run: local subprocesses in parallel, or Ray tasks on a local or remote cluster.

Each cell's fit gets OMP_NUM_THREADS = its share of the cores: torch's default of one thread
per core in every concurrent fit oversubscribes the machine and slows each fit down ~100×.
"""

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

from wsrl_wm.ablation.cell import CellOutcome, RunningFits, run_cell
from wsrl_wm.ablation.plan import Cell
from wsrl_wm.errors import WsrlError


def cpu_cores() -> int:
    """Cores this process may use (the affinity mask, which containers and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Runner:
    """Runs a phase's cells, yielding outcomes as they finish; a context manager so a backend
    can hold a cluster connection across both phases."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def run(self, cells: list[Cell], env: dict[str, str],
            dip_window: float | None) -> Iterator[CellOutcome]:
        raise NotImplementedError


class LocalRunner(Runner):
    """`workers` concurrent fit subprocesses (default: one per core)."""

    def __init__(self, workers: int | None = None):
        if workers is not None and workers < 1:
            raise WsrlError(f"workers must be >= 1, got {workers}")
        self.workers = workers or cpu_cores()

    def run(self, cells, env, dip_window):
        if not cells:
            return
        concurrent = min(self.workers, len(cells))
        # The cores shared out among the fits, unless the user chose a thread count: on a busy
        # machine two threads per fit ran the world model's epochs ~6× slower than one.
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, cpu_cores() // concurrent))
        env = {**env, "OMP_NUM_THREADS": threads}
        pool, fits = ThreadPoolExecutor(concurrent), RunningFits()
        try:
            futures = [pool.submit(run_cell, cell, env, dip_window, fits) for cell in cells]
            for future in as_completed(futures):
                yield future.result()
        except BaseException:  # Ctrl-C or SIGTERM: stop the running fits, start no queued one
            fits.stop()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayRunner(Runner):
    """Each cell a Ray task running the same fit subprocess on its worker.

    Connects to `address`, or starts a local instance (`workers` × `cpus_per_task` CPUs if
    `workers` is given) unless Ray is already initialised in this process. The out folder
    must be on a filesystem that every node sees.
    """

    def __init__(self, address: str | None = None, cpus_per_task: int = 1,
                 workers: int | None = None):
        if cpus_per_task < 1:
            raise WsrlError(f"cpus per Ray task must be >= 1, got {cpus_per_task}")
        if workers is not None and (workers < 1 or address):
            raise WsrlError("with Ray, --workers sizes a local instance (>= 1); a cluster at "
                            "--ray-address decides its own size")
        self.address, self.cpus_per_task, self.workers = address, cpus_per_task, workers
        self.started = False

    def __enter__(self) -> "RayRunner":
        ray = import_ray()
        if not ray.is_initialized():
            local = {} if self.address else {
                "include_dashboard": False,
                "num_cpus": self.workers * self.cpus_per_task if self.workers else None}
            try:
                ray.init(address=self.address, **local)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {self.address}" if self.address else "locally"
                raise WsrlError(f"cannot start or reach Ray {where}: {exc}") from None
            self.started = True
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            import_ray().shutdown()
            self.started = False

    def run(self, cells, env, dip_window):
        ray = import_ray()
        task = ray.remote(run_cell).options(num_cpus=self.cpus_per_task)
        env = {**env, "OMP_NUM_THREADS": str(self.cpus_per_task)}
        pending = [task.remote(cell, env, dip_window) for cell in cells]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        finally:  # interrupted: leave no cell running on a cluster that outlives this sweep
            for ref in pending:
                ray.cancel(ref, force=True)


def import_ray():
    """Ray is an optional extra; say how to get it instead of an ImportError."""
    try:
        import ray
    except ImportError:
        raise WsrlError("the ray backend needs Ray: pip install 'wsrl-wm[ray]'") from None
    return ray


def make_runner(backend: str, workers: int | None = None, ray_address: str | None = None,
                ray_cpus_per_task: int = 1) -> Runner:
    if backend == "local":
        if ray_address:
            raise WsrlError("--ray-address needs --backend ray")
        return LocalRunner(workers)
    if backend == "ray":
        return RayRunner(ray_address, ray_cpus_per_task, workers)
    raise WsrlError(f"unknown backend {backend!r}; choose local or ray")
