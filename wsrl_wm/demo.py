"""`wsrl-wm demo`, the main job: the whole question on the embedded default, on a laptop.

The PointMaze study cut to ~15 minutes on 2 CPU cores (configs/demo/study.yaml): collect the
planner's data (cached, no download), pretrain Cal-QL plus the world model once, fine-tune three
seeds each of plain WSRL (r = 0), WSRL with imagined rollouts (r = 0.25) and WSRL without a
warmup, and print dip / recovery / final score with their CIs and the paired differences.
"""

import dataclasses
import time
from pathlib import Path

from wsrl_wm.ablation import make_runner
from wsrl_wm.ablation.study import load_spec, run_study
from wsrl_wm.errors import WsrlError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO_SPEC = CONFIGS / "demo" / "study.yaml"
# Where the question the demo samples is answered: the rollout-ratio study's report.
ANSWER = "docs/results/ratio/report.md"


def run_demo(out: Path, workers: int | None = None) -> None:
    if not DEMO_SPEC.is_file():
        raise WsrlError(f"demo spec not found at {DEMO_SPEC}; run the demo from a checkout")
    start = time.time()
    spec = load_spec(DEMO_SPEC)
    spec = dataclasses.replace(
        spec, work=str(out), results=str(out / "report"),
        pretrain_config=str(CONFIGS.parent / spec.pretrain_config),
        finetune_config=str(CONFIGS.parent / spec.finetune_config))
    result = run_study(spec, make_runner("local", workers))
    print(f"\n{result.table}\n")
    for name, path in result.outputs.items():
        print(f"{name}: {path}")
    print(f"demo wall time: {time.time() - start:.0f} s")
    print(f"The demo shows the pipeline on 3 seeds; the evidence is in the committed studies: "
          f"{ANSWER} (index: docs/results/README.md).")
    if not result.ok:
        raise WsrlError(f"{len(result.failures)} demo run(s) failed; see their run.log above")
