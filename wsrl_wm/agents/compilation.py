"""When to torch.compile the agent's update.

Compiling turns the whole update into one function (`FusedStepper`) and fuses each loss's
element-wise work (LayerNorm, ReLU, the Bellman error, the tanh-Gaussian log-density) into a few
kernels around the matmuls. It costs a one-off ~95 s on a 2-core CPU with a cold inductor cache
and pays from ~2 500 updates on (docs/performance.md), so "auto" compiles only runs of at least
`AUTO_MIN_UPDATES` updates, and only where inductor has a backend: a C++ compiler on CPU,
Triton on CUDA. Should compiling still fail (a torch bug at some shape), the run goes on eager
after one warning line (`compile_or_fall_back`).
"""

import functools
import importlib.util
import shutil
import warnings
from collections.abc import Callable

import torch
from torch._dynamo.exc import TorchDynamoException

from wsrl_wm import compile_cache
from wsrl_wm.errors import WsrlError

COMPILE_MODES = ("auto", "on", "off")
AUTO_MIN_UPDATES = 10_000
BACKEND = "inductor"  # what torch.compile lowers to (tests swap in a failing one)


def compile_available() -> bool:
    """Whether inductor works here (`why_compile_unavailable` says why not)."""
    return why_compile_unavailable() is None


@functools.cache
def why_compile_unavailable() -> str | None:
    """None where inductor works: a backend is installed and a trial kernel compiles (a
    compiler without Python's headers, say, would otherwise fail a long run at its first
    update); else the reason, in a few words. Seconds, once per process, and only asked for
    runs that `auto` would compile."""
    if torch.cuda.is_available():
        if importlib.util.find_spec("triton") is None:
            return "CUDA without triton installed"
        device = "cuda"
    elif any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        device = "cpu"
    else:
        return "no C++ compiler (c++, g++ or clang++) on PATH"
    try:
        trial = torch.compile(lambda x: torch.relu(x) * 2.0 + 1.0, dynamic=False)
        if trial(torch.ones(3, device=device)).sum().item() != 9.0:
            return "a trial kernel computed a wrong value"
    except Exception as error:  # any failure means: stay eager, and say why
        return f"a trial kernel failed to compile ({type(error).__name__})"
    return None


def wants_compile(mode: str, updates: int) -> bool:
    """Whether a run of `updates` agent updates should compile, for `compile` = `mode`; when
    "auto" would compile a run but inductor cannot, one warning line says why."""
    if mode not in COMPILE_MODES:
        raise WsrlError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode == "auto":
        if not compile_cache.auto_compiles(updates, AUTO_MIN_UPDATES):
            return False
        reason = why_compile_unavailable()
        if reason is not None:
            warnings.warn(f"compile: auto runs eager: {reason} (set compile: off to silence "
                          "this)", RuntimeWarning, stacklevel=3)
        return reason is None
    return mode == "on"


def compile_or_fall_back(fn: Callable, on_failure: Callable[[Exception], None],
                         **options) -> Callable:
    """`fn` compiled; if dynamo or its backend fails on a call, `on_failure(error)` is told
    (the agent then drops compilation) and that call runs `fn` eagerly. Safe only for a `fn`
    that changes nothing before its graph runs: a pure loss, or one whole graph
    (`fullgraph=True`), where a compile failure comes before any of it has run."""
    compiled = torch.compile(fn, backend=BACKEND, **options)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except TorchDynamoException as error:
            on_failure(error)
            return fn(*args, **kwargs)
    return run


def failure_line(error: Exception) -> str:
    """The warning for a failed compile: one line, naming the error and the way out."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if not line.startswith("backend=")), "")
    return (f"torch.compile failed ({type(error).__name__}: {reason[:160]}); this run goes on "
            "eager (set compile: off to skip the attempt)")
