"""`wsrl-wm study SPEC --replicate N`: rerun N committed cells here and compare.

A committed cell is rerun with exactly its committed arguments (its pretraining included) in
`<work>/replicate`, and its new summary is set beside the committed one and against the study's
per-variant spread: the lowest and highest committed value of each statistic over the variant's
seeds. Equal values mean this build and CPU reproduce the cell; values inside the spread mean
the difference is within what the seeds already show.
"""

import dataclasses
import json
from pathlib import Path

from wsrl_wm.ablation.cell import load_done, summarize_curves
from wsrl_wm.ablation.plan import plan
from wsrl_wm.ablation.runners import Runner
from wsrl_wm.ablation.study import CellArchive, StudySpec, ensure_dataset, sweep_of
from wsrl_wm.ablation.sweep import run_sweep
from wsrl_wm.errors import WsrlError
from wsrl_wm.metrics import dip_window_for
from wsrl_wm.provenance import build_label

STATS = ("s0", "dip", "dip_auc", "recovery_step", "final", "auc", "q_offline_drift")


def summary_of(record: dict, dip_window: float | None) -> dict:
    """A cell record's summary under the study's dip window (as its report has it)."""
    return summarize_curves(record["curves"], dip_window_for(dip_window, record["online_steps"]))


def pick(names: list[str], variants: dict[str, str], count: int) -> list[str]:
    """`count` cells taken in turn from each variant (plan order), so a few cover every arm."""
    queues: dict[str, list[str]] = {}
    for name in names:
        queues.setdefault(variants[name], []).append(name)
    picked = []
    while len(picked) < count and any(queues.values()):
        for queue in queues.values():
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


def compare(name: str, committed: dict, new: dict, spread: dict[str, tuple], before: str,
            now: str) -> tuple[list[str], bool, bool]:
    """Printable lines for one cell, whether every value is identical, and whether every value
    falls inside the spread."""
    lines = [f"{name}: committed on {before}; rerun on {now}",
             f"  {'statistic':<16}{'committed':>12}{'new':>12}   {'spread over seeds':<24}inside"]
    identical = inside_all = True
    for stat in STATS:
        old, value, (low, high) = committed[stat], new[stat], spread[stat]
        inside = within(value, low, high)
        identical &= old == value
        inside_all &= inside
        bounds = f"[{fmt(low)}, {fmt(high)}]"
        lines.append(f"  {stat:<16}{fmt(old):>12}{fmt(value):>12}   {bounds:<24}"
                     + ("yes" if inside else "NO"))
    lines.append("  identical to the committed cell" if identical else
                 "  differs from the committed cell")
    return lines, identical, inside_all


def within(value, low, high) -> bool:
    """Whether `value` lies in [low, high]; None ("never", e.g. no recovery) sorts above every
    number."""
    if value is None:
        return high is None
    return low is not None and low <= value and (high is None or value <= high)


def fmt(value) -> str:
    return "never" if value is None else f"{value:.4g}"


def value_spread(values: list) -> tuple:
    """(lowest, highest) over the seeds; None marks a statistic some seed never reached."""
    known = [v for v in values if v is not None]
    if not known:
        return None, None
    return min(known), (None if len(known) < len(values) else max(known))


def replicate(spec: StudySpec, count: int, runner: Runner | None = None,
              wandb_mode: str | None = None, log=print) -> list[tuple[str, bool, bool]]:
    """Rerun `count` committed cells and print the comparison; returns (cell, identical,
    inside the spread) per cell."""
    if count < 1:
        raise WsrlError(f"--replicate needs a positive number of cells, got {count}")
    dataset = ensure_dataset(spec, log)
    here = dataclasses.replace(spec, work=str(Path(spec.work) / "replicate"))
    sweep = sweep_of(here, dataset)
    _, finetune = plan(sweep)
    folder = Path(spec.results) / "cells"
    committed = {cell.name: json.loads((folder / f"{cell.name}.json").read_text())
                 for cell in finetune if (folder / f"{cell.name}.json").is_file()}
    if not committed:
        raise WsrlError(f"{folder} holds no committed cell of {spec.spec_path} to replicate")
    archive = CellArchive(here, dataset, commit=False, log=log)
    for cell in finetune:
        if cell.name in committed and committed[cell.name]["args"] != archive.portable(cell.args):
            raise WsrlError(f"{folder / cell.name}.json was made with other arguments than "
                            f"{spec.spec_path} plans; it cannot be replicated from this spec")
    cells = {cell.name: cell for cell in finetune}
    chosen = pick(list(committed), {n: cells[n].variant for n in committed}, count)
    log(f"replicating {len(chosen)} of {len(committed)} committed cell(s) in {sweep.out}")
    result = run_sweep(sweep, runner, wandb_mode, log, only=set(chosen),
                       report_title=f"{spec.title} (replicated cells)")
    if result.failures:
        raise WsrlError("; ".join(f"{o.cell.name}: {o.error.splitlines()[0]}"
                                  for o in result.failures))
    verdicts = []
    for name in chosen:
        cell, old = cells[name], committed[name]
        group = [summary_of(record, spec.dip_window) for other, record in committed.items()
                 if (cells[other].variant, cells[other].ratio) == (cell.variant, cell.ratio)]
        spread = {stat: value_spread([s[stat] for s in group]) for stat in STATS}
        new = load_done(cell)
        lines, identical, inside = compare(
            name, summary_of(old, spec.dip_window), summary_of(new, spec.dip_window), spread,
            build_label(old.get("provenance")), build_label(new.get("provenance")))
        log("\n".join(lines))
        verdicts.append((name, identical, inside))
    log(f"{sum(v[1] for v in verdicts)} of {len(verdicts)} cell(s) identical, "
        f"{sum(v[2] for v in verdicts)} inside the committed spread on every statistic")
    return verdicts
