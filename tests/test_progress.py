"""Progress output of `wsrl-wm fit` written to a log (not a terminal): plain lines, no redraws."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_logged_fit_prints_a_line_every_five_percent(tmp_path, pretrained):
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        result = subprocess.run(
            [sys.executable, "-m", "wsrl_wm.cli", "fit", "--config",
             str(ROOT / "configs/smoke/finetune.yaml"), "--model.pretrained", pretrained,
             "--model.warmup_steps", "20", "--model.online_steps", "20",
             "--trainer.default_root_dir", str(tmp_path / "run")],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "WANDB_MODE": "disabled"},
            timeout=600)
    text = log.read_text()
    assert result.returncode == 0, text[-2000:]
    assert "\r" not in text
    lines = re.findall(r"^env step (\d+)/40 \((\d+)%\) phase=(\w+)", text, re.M)
    assert [int(step) for step, _, _ in lines] == list(range(2, 41, 2))  # every 5 % of 40
    assert lines[0][2] == "warmup" and lines[-1][2] == "online"
