"""A sweep or study stopped with SIGTERM (`kill`, a scheduler's stop) stops the fits it runs:
they are its subprocesses, outside the terminal's process group signal that Ctrl-C relies on."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsrl_wm.ablation import runners
from wsrl_wm.ablation.cell import CellOutcome
from wsrl_wm.ablation.plan import Cell

SWEEP = """
import signal, sys
from pathlib import Path
from wsrl_wm.ablation import cell as cell_module
from wsrl_wm.ablation.plan import Cell
from wsrl_wm.ablation.runners import LocalRunner

signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # as the CLI does
cell_module.fit_command = lambda cell: [sys.executable, "-c", (
    "import os, time; open({pid!r}, 'w').write(str(os.getpid())); time.sleep(120)")]
cells = [Cell(name=f"c{{i}}", phase="finetune", variant="wsrl", ratio=0.0, seed=i,
              root=Path({root!r}) / f"c{{i}}", args=()) for i in range(3)]
for outcome in LocalRunner(1).run(cells, {{}}, None):
    print("finished", outcome.cell.name, flush=True)
"""


def test_sigterm_to_a_sweep_stops_its_running_fit_and_starts_no_other(tmp_path):
    pid_file = tmp_path / "fit.pid"
    sweep = subprocess.Popen([sys.executable, "-c", SWEEP.format(pid=str(pid_file),
                                                                 root=str(tmp_path))],
                             stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()):
        assert time.monotonic() < deadline and sweep.poll() is None, "the fit never started"
        time.sleep(0.1)
    fit_pid = int(pid_file.read_text())
    pid_file.unlink()
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=30) == 128 + signal.SIGTERM
    assert "finished" not in sweep.stdout.read()
    try:
        os.kill(fit_pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the running fit outlived its sweep"
    assert not pid_file.exists(), "a queued fit started after the SIGTERM"


@pytest.mark.parametrize(("chosen", "expected"), [(None, "2"), ("1", "1")])
def test_fits_share_the_cores_unless_the_user_chose_a_thread_count(monkeypatch, chosen,
                                                                   expected):
    seen = []
    monkeypatch.setattr(runners, "cpu_cores", lambda: 4)
    monkeypatch.setattr(runners, "run_cell", lambda cell, env, dip_window, fits: (
        seen.append(env["OMP_NUM_THREADS"]) or CellOutcome(cell, True, 0.0)))
    if chosen is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", chosen)
    cells = [Cell(f"c{i}", "finetune", "wsrl", 0.0, i, Path("unused"), ()) for i in range(2)]
    assert len(list(runners.LocalRunner(2).run(cells, {}, None))) == 2
    assert seen == [expected, expected]
