"""Run a planned sweep: pretraining cells, then fine-tuning cells, skipping finished ones, then
write the report from every finished cell (also when some failed)."""

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wsrl_wm import WANDB_MODES
from wsrl_wm.ablation.cell import CellOutcome, load_done
from wsrl_wm.ablation.plan import Sweep, plan
from wsrl_wm.ablation.report import write_report
from wsrl_wm.ablation.runners import LocalRunner, Runner
from wsrl_wm.compile_cache import cell_env
from wsrl_wm.errors import WsrlError


@dataclass
class SweepResult:
    """What a sweep did and wrote. `ran` names the cells whose fit was started this time."""

    out: Path
    outputs: dict[str, Path]
    table: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[CellOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def resolve_wandb_mode(mode: str | None) -> str:
    """An explicit mode wins, then $WANDB_MODE, then offline (no network needed)."""
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode not in WANDB_MODES:
        raise WsrlError(f"wandb mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
    return mode


def run_sweep(sweep: Sweep, runner: Runner | None = None, wandb_mode: str | None = None,
              log: Callable[[str], None] = print, report_to: Path | None = None,
              on_done: Callable[[CellOutcome], None] | None = None,
              report_title: str = "Rollout-ratio ablation",
              dataset_score: float | None = None, run: bool = True,
              report_setup: str = "", only: set[str] | None = None) -> SweepResult:
    """Plan, run what is not done yet, and report (into `report_to`, default the sweep's out).
    Cells' fits log to wandb in the same mode; `on_done` sees every cell that succeeded. A
    seed's pretraining runs only while one of its fine-tunings is still to do. With `run`
    False nothing runs: the report covers the cells finished so far. `only`: the names of the
    fine-tuning cells to plan (default all)."""
    pretrain, finetune = plan(sweep, reporting=not run)
    if only is not None:
        finetune = [cell for cell in finetune if cell.name in only]
    mode = resolve_wandb_mode(wandb_mode)
    runner = runner or LocalRunner()
    records = {cell.name: load_done(cell) for cell in pretrain + finetune}  # before any run
    needed = {cell.pretrain for cell in finetune if records[cell.name] is None}
    pretrain = [cell for cell in pretrain if cell.name in needed or records[cell.name]]
    result = SweepResult(Path(sweep.out).resolve(), {}, "",
                         skipped=[cell.name for cell in pretrain + finetune
                                  if records[cell.name]])
    with runner:
        for phase, cells in (("pretrain", pretrain), ("fine-tune", finetune)) if run else ():
            failed = {o.cell.name for o in result.failures if o.cell.phase == "pretrain"}
            waiting = [cell for cell in cells if records[cell.name] is None]
            todo = [cell for cell in waiting if cell.pretrain not in failed]
            result.failures += [CellOutcome(cell, False, error=f"not run: {cell.pretrain} "
                                            "failed")
                                for cell in waiting if cell.pretrain in failed]
            blocked = len(waiting) - len(todo)
            log(f"{phase}: {len(todo)} cell(s) to run, {len(cells) - len(waiting)} already done"
                + (f", {blocked} blocked by a failed pretraining" if blocked else ""))
            # Every cell compiles into the sweep's cache; `auto` counts the fine-tunings as
            # runs sharing their update, and a pretraining as one run, as before (a study's
            # 8000-update PointMaze pretraining stays eager).
            env = {"WANDB_MODE": mode,
                   **cell_env(result.out, len(todo) if phase == "fine-tune" else 1)}
            for i, outcome in enumerate(runner.run(todo, env, sweep.dip_window), start=1):
                result.ran.append(outcome.cell.name)
                log(f"  [{i}/{len(todo)}] {'ok  ' if outcome.ok else 'FAIL'} "
                    f"{outcome.cell.name} ({outcome.seconds:.0f} s)")
                if outcome.ok:
                    records[outcome.cell.name] = outcome.record
                    if on_done is not None:
                        on_done(outcome)
                else:
                    result.failures.append(outcome)
    runs = [(cell, records[cell.name]) for cell in finetune if records[cell.name]]
    report_to = Path(report_to or result.out)
    report_to.mkdir(parents=True, exist_ok=True)
    result.outputs, result.table = write_report(report_to, runs, sweep.dip_window, mode,
                                                asdict(sweep), report_title, dataset_score,
                                                report_setup)
    return result
