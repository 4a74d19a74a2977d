"""`wsrl-wm demo`, the main job: the whole question on the embedded default, on a laptop.

Collect a Hopper-v5 "medium" dataset with the project's own collector (cached, no download),
pretrain CQL plus the world model, then fine-tune three ways from the same
checkpoint — plain WSRL (r = 0), WSRL with imagined rollouts (r = 0.25), and WSRL without a
warmup (the broken baseline) — and report dip / recovery / final score side by side.
"""

import time
from pathlib import Path

from wsrl_wm.ablation import Sweep, make_runner, run_sweep
from wsrl_wm.collect import TrainingBudget, cache_dir, collect
from wsrl_wm.errors import WsrlError

DEMO_ENV = "Hopper-v5"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"
# A cheap behaviour policy: SAC trained for at most 20k steps (a few minutes on 2 cores).
DEMO_BUDGET = TrainingBudget(target_score=20.0, max_train_steps=20_000, random_steps=2_000,
                             eval_interval=2_500, eval_episodes=3)
DEMO_DATASET_STEPS = 20_000


def demo_dataset() -> Path:
    """The demo's dataset, collected on first use and reused afterwards."""
    path = cache_dir() / "hopper-v5-medium-demo-seed0.hdf5"
    if not path.exists():
        print(f"collecting the demo dataset into {path} (once; cached afterwards)")
        metadata = collect(DEMO_ENV, "medium", DEMO_DATASET_STEPS, 0, str(path), DEMO_BUDGET)
        print(f"behaviour policy: normalised score {metadata['behaviour_score']:.1f}")
    return path


def run_demo(out: Path, workers: int | None = None) -> None:
    if not CONFIGS.is_dir():
        raise WsrlError(f"demo configs not found at {CONFIGS}; run the demo from a checkout")
    start = time.time()
    sweep = Sweep(str(CONFIGS / "pretrain.yaml"), str(CONFIGS / "finetune.yaml"),
                  str(demo_dataset()), out=str(out), ratios=(0.0, 0.25), seeds=(0,),
                  baselines=("no_warmup",))
    # One process per fine-tune cell (one torch thread each): faster than queueing the third.
    result = run_sweep(sweep, make_runner("local", workers=workers or 3))
    print(result.table)
    for name, path in result.outputs.items():
        print(f"{name}: {path}")
    print(f"demo wall time: {time.time() - start:.0f} s")
    if not result.ok:
        raise WsrlError(f"{len(result.failures)} demo run(s) failed; see their run.log above")
