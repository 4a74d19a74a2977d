"""Where a result was made: the code's commit (and whether the checkout had uncommitted
changes), the CPU model, the torch version and its thread count. A config and seed give the
same curves only on the same build and the same CPU type, so every fine-tuning records these
(run.json, and through it each study cell) and a study's report says whether its cells agree.
"""

import platform
import subprocess
from pathlib import Path

import torch

KEYS = ("commit", "dirty", "cpu", "torch", "threads")
CHECKOUT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str | None:
    """A git command's output in the package's checkout; None outside one (an installed
    package) or without git."""
    try:
        done = subprocess.run(["git", *args], cwd=CHECKOUT, capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_state() -> tuple[str | None, bool | None]:
    """(the checkout's commit, whether tracked files outside docs/ differ from it)."""
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)docs")
    return commit, None if changes is None else bool(changes)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def provenance() -> dict:
    """This process's provenance record (the `KEYS`)."""
    commit, dirty = code_state()
    return {"commit": commit, "dirty": dirty, "cpu": cpu_model(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def build_label(record: dict | None) -> str:
    """One line for a record: short commit (+ "dirty"), CPU, torch and threads; "unrecorded"
    for results made before these records existed."""
    if not record:
        return "unrecorded"
    commit = (record.get("commit") or "unknown")[:7] + (" (dirty)" if record.get("dirty") else "")
    return (f"code {commit}, {record.get('cpu', 'unknown CPU')}, torch {record.get('torch')}, "
            f"{record.get('threads')} thread(s)")
