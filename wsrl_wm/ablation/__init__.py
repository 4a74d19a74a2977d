"""The rollout-ratio ablation (docs/design.md): pretrain once per seed, fine-tune every
(r, seed) cell (plus optional baselines), then summarise unlearning per cell and report
mean ± 95 % CI per r.

    from wsrl_wm.ablation import Sweep, make_runner, run_sweep
    result = run_sweep(Sweep("configs/cpu/pretrain.yaml", "configs/cpu/finetune.yaml",
                             "data/hopper-medium.hdf5", ratios=(0.0, 0.5), seeds=(0, 1)),
                       make_runner("local", workers=2))

Layout of `out`: pretrain/seed_<s>/ and cells/<variant>_r<r>_seed<s>/ (each a fit root with
command.txt, run.log and, once it succeeded, done.json), results.csv, report.md, scores.png,
q_probe.png. Cells with done.json are skipped, so an interrupted sweep resumes.
"""

from wsrl_wm.ablation.cell import CellOutcome, run_cell
from wsrl_wm.ablation.plan import BASELINES, Cell, Sweep, plan
from wsrl_wm.ablation.report import mean_ci, t_quantile
from wsrl_wm.ablation.runners import LocalRunner, RayRunner, Runner, make_runner
from wsrl_wm.ablation.sweep import WANDB_MODES, SweepResult, run_sweep

__all__ = ["BASELINES", "WANDB_MODES", "Cell", "CellOutcome", "LocalRunner", "RayRunner",
           "Runner", "Sweep", "SweepResult", "make_runner", "mean_ci", "plan", "run_cell",
           "run_sweep", "t_quantile"]
