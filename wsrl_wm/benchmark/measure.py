"""Timing, FLOP and memory measurements shared by the benchmark sections."""

import functools
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def per_second(work: Callable[[], object], iterations: int, warmup: int = 2) -> float:
    """Calls of `work` per second, after `warmup` untimed calls (caches, allocator, compile)."""
    for _ in range(warmup):
        work()
    synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        work()
    synchronize()
    return iterations / (time.perf_counter() - start)


def interleaved_per_second(works: dict[str, Callable[[], object]], iterations: int,
                           rounds: int = 3) -> dict[str, float]:
    """Calls per second of each of `works`, timed in alternating blocks of `iterations // rounds`
    calls and reported as each one's median block: slow phases of a shared machine then hit
    every contender alike instead of whichever happened to run during them."""
    for work in works.values():  # warm up all before timing any
        per_second(work, 1, warmup=2)
    block = max(1, iterations // rounds)
    rates: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(rounds):
        for name, work in works.items():
            rates[name].append(per_second(work, block, warmup=0))
    return {name: statistics.median(values) for name, values in rates.items()}


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def flops(work: Callable[[], object]) -> float:
    """Floating-point operations of one call of `work` (matmuls, as torch counts them)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return float(counter.get_total_flops())


def matmul_probe(device: str = "cpu") -> tuple[Callable[[], object], float]:
    """(a call, its FLOPs): a [10, 256, 256] batched matmul — the critic ensemble's hidden
    layer, the fastest shape in the update. Its rate on this machine now is the roofline."""
    a = torch.randn(10, 256, 256, device=device)
    b = torch.randn(10, 256, 256, device=device)
    repeats = 20  # ~40 ms on 2 CPU cores: long enough to sample the same machine state

    def work() -> None:
        for _ in range(repeats):
            torch.bmm(a, b)
    return work, repeats * 2 * 10 * 256**3


def peak_matmul_flops(device: str = "cpu", iterations: int = 20) -> float:
    work, work_flops = matmul_probe(device)
    return work_flops * per_second(work, iterations, warmup=5)


def in_fresh_process(task: Callable[..., float], *args) -> float:
    """`task(*args)` run in a freshly spawned interpreter (its own allocator and peak RSS)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(task, args)


def peak_rss_added_mb(task: Callable[[], object]) -> float:
    """Peak resident memory (MB) that `task()` adds to this process's current footprint.

    Linux: the high-water mark is first reset to the current RSS (/proc/self/clear_refs), since
    imports alone peak above what they keep. Elsewhere: the process's lifetime peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_mb("VmRSS")
        peak = functools.partial(_proc_status_mb, "VmHWM")
    except OSError:
        before, peak = _lifetime_peak_mb(), _lifetime_peak_mb
    task()
    return peak() - before


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise OSError(f"no {field} in /proc/self/status")


def _lifetime_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB
