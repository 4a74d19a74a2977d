"""One cell as a resumable unit: its exact command, its log, and `done.json` once it succeeded.

`run_cell` is what every runner executes (a thread here, a Ray task elsewhere), so a cell
behaves the same under every backend.
"""

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from wsrl_wm.ablation.plan import Cell
from wsrl_wm.atomic import write_text_atomic
from wsrl_wm.errors import WsrlError
from wsrl_wm.metrics import CURVE_COLUMNS, MODEL_COLUMNS, dip_window_for, drift, summarize
from wsrl_wm.run_info import read_run_info

DONE = "done.json"


@dataclass
class CellOutcome:
    """What a runner reports for a cell: its done.json record, or why it failed."""

    cell: Cell
    ok: bool
    seconds: float = 0.0
    record: dict | None = None
    error: str = ""


def fit_command(cell: Cell) -> list[str]:
    return [sys.executable, "-m", "wsrl_wm.cli", "fit", *cell.args]


def load_done(cell: Cell) -> dict | None:
    """The cell's done.json, or None if it has not succeeded yet. A record made by a different
    command is an error: reusing it would report results of another experiment."""
    path = cell.root / DONE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("args") != list(cell.args):
        raise WsrlError(f"{cell.root} holds a run with different arguments than this sweep "
                        "plans (see its command.txt); use another --out or delete that folder")
    return record


class RunningFits:
    """The fit subprocesses of one local run, so that a stop (Ctrl-C, or a SIGTERM that the
    terminal's process group does not pass on to them) ends them and starts no other."""

    def __init__(self):
        self.lock, self.fits, self.stopped = threading.Lock(), set(), False

    def start(self, command: list[str], **popen) -> subprocess.Popen | None:
        with self.lock:
            if self.stopped:
                return None
            fit = subprocess.Popen(command, **popen)
            self.fits.add(fit)
            return fit

    def wait(self, fit: subprocess.Popen) -> int:
        code = fit.wait()
        with self.lock:
            self.fits.discard(fit)
        return code

    def stop(self) -> None:
        """SIGTERM every running fit (each unwinds and removes its temporary files) and wait."""
        with self.lock:
            self.stopped, fits = True, list(self.fits)
        for fit in fits:
            fit.terminate()
        for fit in fits:
            fit.wait()


def run_cell(cell: Cell, env: dict[str, str], dip_window: float | None,
             fits: RunningFits | None = None) -> CellOutcome:
    """Run the cell's fit as a subprocess (env adds to the inherited environment; `fits`
    tracks it for a stop) and, on success, write done.json atomically with its summary and
    curves."""
    fits = fits or RunningFits()
    start = time.monotonic()
    cell.root.mkdir(parents=True, exist_ok=True)
    command = fit_command(cell)
    settings = " ".join(f"{key}={shlex.quote(value)}" for key, value in sorted(env.items()))
    write_text_atomic(cell.root / "command.txt", f"{settings} {shlex.join(command)}\n")
    log_path = cell.root / "run.log"
    with open(log_path, "w") as log:
        fit = fits.start(command, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env={**os.environ, **env})
        code = fits.wait(fit) if fit else None
    if code is None:
        return CellOutcome(cell, False, 0.0, error="the run was stopped before this cell began")
    try:
        if code:
            raise WsrlError(f"fit exited with code {code}")
        record = done_record(cell, dip_window)
    except WsrlError as exc:
        return CellOutcome(cell, False, time.monotonic() - start,
                           error=f"{exc}; end of {log_path}:\n{log_tail(log_path)}")
    write_text_atomic(cell.root / DONE, json.dumps(record, indent=1) + "\n")
    return CellOutcome(cell, True, time.monotonic() - start, record)


def done_record(cell: Cell, dip_window: float | None) -> dict:
    """What done.json holds: the cell, its exact arguments and `describe`'s payload."""
    return {"cell": cell.name, "args": list(cell.args), **describe(cell, dip_window)}


def describe(cell: Cell, dip_window: float | None) -> dict:
    """The done.json payload: the checkpoint of a pretraining; the curves and summary of a
    fine-tuning, and where it ran (its run.json's provenance; None from before it existed)."""
    if cell.phase == "pretrain":
        checkpoint = cell.root / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            raise WsrlError(f"the fit wrote no checkpoint at {checkpoint}")
        return {"checkpoint": str(checkpoint)}
    curves, online_steps = read_curves(cell.root)
    curves.update(read_model_curves(cell.root))
    window = dip_window_for(dip_window, online_steps)
    return {"online_steps": online_steps, "dip_window": window,
            "summary": summarize_curves(curves, window), "curves": curves,
            "provenance": read_run_info(cell.root).get("provenance")}


def summarize_curves(curves: dict, dip_window: float) -> dict:
    """`metrics.summarize` of the score curve plus the drift of Q(s, π(s)) on the offline probe
    (None when the run logged no probe)."""
    score = curves["score"]
    summary = summarize(score["online_step"], score["value"], dip_window)
    probe = curves.get("q_policy")
    summary["q_offline_drift"] = drift(probe["online_step"], probe["value"]) if probe else None
    return summary


def read_curves(root: Path) -> tuple[dict, int]:
    """Curves against the online step (env_step − warmup_steps, from the run's run.json) and
    the run's online_steps. They come from `evaluations.csv`, the fit's whole evaluation
    history (rewritten from its checkpoint, so complete and without repeats after a resume),
    not from one csv/version_N log."""
    info = read_run_info(root)
    warmup, online_steps = int(info["warmup_steps"]), int(info["online_steps"])
    history = root / "evaluations.csv"
    if not history.is_file():
        raise WsrlError(f"the fit wrote no evaluation history at {history}")
    with open(history, newline="") as f:
        rows = list(csv.DictReader(f))
    curves = {}
    for name, column in CURVE_COLUMNS.items():
        points = [(int(float(row["env_step"])) - warmup, float(row[column]))
                  for row in rows if row.get(column) and row.get("env_step")]
        if points:
            steps, values = zip(*points, strict=True)
            curves[name] = {"online_step": list(steps), "value": list(values)}
    if "score" not in curves:
        raise WsrlError(f"{history} has no {CURVE_COLUMNS['score']} evaluations")
    return curves, online_steps


def read_model_curves(root: Path) -> dict:
    """MODEL_COLUMNS against the online step from every csv/version_N/metrics.csv of the run
    (they are logged at rollout rounds, not evaluations, so they are not in evaluations.csv; a
    resumed run continues in a new version; a step logged twice keeps its last value)."""
    warmup = int(read_run_info(root)["warmup_steps"])
    points: dict[str, dict[int, float]] = {name: {} for name in MODEL_COLUMNS}
    versions = sorted((root / "csv").glob("version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.removeprefix("version_")))
    for path in versions:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for name, column in MODEL_COLUMNS.items():
                    if row.get(column) and row.get("env_step"):
                        points[name][int(float(row["env_step"])) - warmup] = float(row[column])
    return {name: {"online_step": sorted(values), "value": [values[s] for s in sorted(values)]}
            for name, values in points.items() if values}


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log; progress bars redraw with carriage returns, so those split
    lines too."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 16_000))
        text = f.read().decode(errors="replace")
    kept = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    return "\n".join(kept[-lines:])

