"""A study: one YAML spec names the dataset (collected once and cached), the pretraining and
fine-tuning configs, the seeds, the ratio grid and named variants; `run_study` runs it as a
sweep and writes the report into a results folder meant to be committed.

Studies outlive machines. Each finished fine-tuning's record (its curves and summary, the
`done.json` of its cell, where it ran) is copied to `<results>/cells/<cell>.json` and, with
`commit`, committed to git at once; a later run on a fresh checkout treats those cells as done,
redoes only the pretraining of seeds that still have cells to run (pretraining is deterministic
per seed on one build and CPU type), and rebuilds the report from every record.
`<results>/study.json` describes the study for the index of committed studies
(`wsrl_wm.ablation.index`, rebuilt beside the results folders on every commit).

    name: hopper-medium
    env: Hopper-v5
    dataset:
      file: hopper-v5-medium.hdf5          # in the cache ($WSRL_WM_CACHE or ~/.cache/wsrl-wm)
      collect: {env: Hopper-v5, quality: medium, steps: 100000, target_score: 45}
    pretrain_config: configs/study/hopper/pretrain.yaml
    finetune_config: configs/study/hopper/finetune.yaml
    seeds: [0, 1, 2, 3, 4]
    ratios: [0.0, 0.25]                    # WSRL at each model-rollout ratio r
    shared_pretraining: false              # true: every seed fine-tunes the first seed's
    variants:                              # name: fit overrides of the fine-tuning
      no_warmup: {model.warmup_steps: 0}
      small: {pretrain.model.agent.num_critics: 2}  # `pretrain.`: its own pretraining
      retain: {model.retain_offline_ratio: 0.5, model.offline_dataset: "{dataset}"}
    set: [model.online_steps=20000]        # overrides for every fit (routed by phase)
    work: runs/study/hopper                # fit folders (large, not committed)
    results: docs/results/hopper           # results.csv, report.md, plots, cells/
"""

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from wsrl_wm.ablation.cell import DONE, CellOutcome, done_record
from wsrl_wm.ablation.index import STUDY_RECORD, write_index
from wsrl_wm.ablation.plan import Cell, Sweep, Variant, plan
from wsrl_wm.ablation.runners import Runner
from wsrl_wm.ablation.sweep import SweepResult, run_sweep
from wsrl_wm.atomic import write_text_atomic
from wsrl_wm.errors import WsrlError
from wsrl_wm.provenance import code_state

SPEC_KEYS = {"name", "title", "env", "dataset", "pretrain_config", "finetune_config", "seeds",
             "ratios", "variants", "set", "dip_window", "work", "results", "shared_pretraining"}
RATIO_KEY = "model.rollout.ratio"


@dataclass(frozen=True)
class StudySpec:
    name: str
    env: str
    dataset_file: str | None
    collect: dict | None
    source: str | None
    pretrain_config: str
    finetune_config: str
    seeds: tuple[int, ...]
    ratios: tuple[float, ...] = (0.0,)
    variants: tuple[Variant, ...] = ()
    overrides: tuple[str, ...] = ()
    dip_window: float | None = None
    work: str = "runs/study"
    results: str = "docs/results/study"
    title: str = ""
    spec_path: str = ""
    shared_pretraining: bool = False


def load_spec(path: str | Path) -> StudySpec:
    """Parse and check a study spec; every problem is one WsrlError line."""
    path = Path(path)
    if not path.is_file():
        raise WsrlError(f"study spec not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise WsrlError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise WsrlError(f"{path}: a study spec is a YAML mapping")
    unknown = set(raw) - SPEC_KEYS
    missing = {"name", "env", "dataset", "pretrain_config", "finetune_config", "seeds"} - set(raw)
    if unknown or missing:
        raise WsrlError(f"{path}: " + "; ".join(
            ([f"unknown key(s) {sorted(unknown)}"] if unknown else [])
            + ([f"missing key(s) {sorted(missing)}"] if missing else []))
            + f" (keys: {sorted(SPEC_KEYS)})")
    dataset = raw["dataset"]
    if isinstance(dataset, str):
        dataset = {"source": dataset}
    if not isinstance(dataset, dict) or not (("file" in dataset and "collect" in dataset)
                                             or "source" in dataset):
        raise WsrlError(f"{path}: dataset needs either `source` (a file, D4RL name or "
                        "minari:<id>) or `file` plus `collect` (collector arguments)")
    variants = []
    for name, overrides in (raw.get("variants") or {}).items():
        overrides = dict(overrides or {})
        ratio = float(overrides.pop(RATIO_KEY, 0.0))
        variants.append(Variant(str(name), ratio, tuple(f"{k}={_yaml_value(v)}"
                                                       for k, v in overrides.items())))
    return StudySpec(
        name=str(raw["name"]), env=str(raw["env"]), dataset_file=dataset.get("file"),
        collect=dataset.get("collect"), source=dataset.get("source"),
        pretrain_config=str(raw["pretrain_config"]),
        finetune_config=str(raw["finetune_config"]),
        seeds=tuple(int(s) for s in raw["seeds"]),
        ratios=tuple(float(r) for r in raw.get("ratios", [0.0])), variants=tuple(variants),
        overrides=tuple(raw.get("set") or ()), dip_window=raw.get("dip_window"),
        work=str(raw.get("work", f"runs/study/{raw['name']}")),
        results=str(raw.get("results", f"docs/results/{raw['name']}")),
        title=str(raw.get("title", f"Study: {raw['name']}")), spec_path=str(path),
        shared_pretraining=bool(raw.get("shared_pretraining", False)))


def _yaml_value(value) -> str:
    """A spec value as a command-line value (lists and mappings as flow YAML)."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def ensure_dataset(spec: StudySpec, log=print, collect: bool = True) -> str:
    """The dataset to pretrain on: the spec's source, or the cached collected file (collected
    now, once, when absent and `collect`; the time it took is logged and stored beside it)."""
    if spec.source:
        return spec.source
    from wsrl_wm.collect import cache_dir

    path = cache_dir() / spec.dataset_file
    if collect and not path.is_file():
        from wsrl_wm.collect import TrainingBudget, collect_dataset

        args = dict(spec.collect)
        budget = TrainingBudget(**{k: args.pop(k) for k in list(args)
                                   if k in TrainingBudget.__dataclass_fields__})
        log(f"collecting {path} ({args}); cached afterwards")
        start = time.monotonic()
        metadata = collect_dataset(budget=budget, out=str(path), **{"seed": 0, **args})
        seconds = time.monotonic() - start
        write_text_atomic(path.with_suffix(".json"),
                          json.dumps({**metadata, "collect_seconds": seconds}, indent=1))
        log(f"collected in {seconds:.0f} s: {metadata}")
    return str(path)


def dataset_score(source: str, env: str) -> float | None:
    """The dataset's average normalised episode score (None when it cannot be scored)."""
    from wsrl_wm.data.d4rl_format import read_d4rl_file
    from wsrl_wm.envs import normalized_score

    if not Path(source).is_file():
        return None
    raw, _ = read_d4rl_file(source)
    ends = np.flatnonzero(raw["terminals"].astype(bool) | raw["timeouts"].astype(bool))
    returns = [chunk.sum() for chunk in np.split(raw["rewards"], ends + 1) if len(chunk)]
    try:
        return float(np.mean(normalized_score(env, returns)))
    except (KeyError, WsrlError):
        return None


def sweep_of(spec: StudySpec, dataset: str) -> Sweep:
    return Sweep(spec.pretrain_config, spec.finetune_config, dataset, spec.work, spec.ratios,
                 spec.seeds, (), spec.overrides, spec.dip_window, spec.variants,
                 spec.shared_pretraining)


class CellArchive:
    """`<results>/cells/<cell>.json`: finished fine-tunings' records, with their arguments
    written machine-independently (the dataset, work folder and working directory as
    placeholders), so a fresh checkout elsewhere recognises them."""

    def __init__(self, spec: StudySpec, dataset: str, commit: bool, log=print):
        self.folder = Path(spec.results) / "cells"
        self.places = [(str(Path(dataset).resolve()) if Path(dataset).exists() else dataset,
                        "{dataset}"), (str(Path(spec.work).resolve()), "{work}"),
                       (str(Path.cwd()), "{cwd}")]
        self.commit, self.log, self.name = commit, log, spec.name

    def portable(self, args) -> list[str]:
        out = []
        for arg in args:
            for place, token in self.places:
                arg = arg.replace(place, token)
            out.append(arg)
        return out

    def restore(self, cells: list[Cell]) -> list[str]:
        """Write done.json into every planned cell that the archive holds and that has none."""
        restored = []
        for cell in cells:
            archived = self.folder / f"{cell.name}.json"
            if (cell.root / DONE).is_file() or not archived.is_file():
                continue
            record = json.loads(archived.read_text())
            if record["args"] != self.portable(cell.args):
                raise WsrlError(f"{archived} was made with other arguments than this spec "
                                "plans; change the study's name/results or delete that file")
            cell.root.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cell.root / DONE, json.dumps({**record, "args": list(cell.args)}))
            restored.append(cell.name)
        return restored

    def refresh(self, cells: list[Cell], dip_window: float | None) -> None:
        """Describe again the finished cells whose run files are here (curves added to the
        records by a newer version of the code then reach the report); archived-only cells
        keep their records."""
        for cell in cells:
            if (cell.root / DONE).is_file() and (cell.root / "evaluations.csv").is_file():
                record = done_record(cell, dip_window)
                write_text_atomic(cell.root / DONE, json.dumps(record, indent=1) + "\n")
                self.keep(CellOutcome(cell, True, self.seconds(cell), record), commit=False)

    def seconds(self, cell: Cell) -> float:
        archived = self.folder / f"{cell.name}.json"
        return json.loads(archived.read_text()).get("seconds", 0.0) if archived.is_file() else 0.0

    def keep(self, outcome: CellOutcome, commit: bool | None = None) -> None:
        if outcome.cell.phase != "finetune":
            return
        path = self.folder / f"{outcome.cell.name}.json"
        record = {**outcome.record, "args": self.portable(outcome.cell.args),
                  "seconds": round(outcome.seconds, 1)}
        write_text_atomic(path, json.dumps(record, indent=1) + "\n")
        if self.commit if commit is None else commit:
            git_commit([path], f"study {self.name}: cell {outcome.cell.name}", self.log)


def git_commit(paths: list[Path], message: str, log=print) -> bool:
    """Commit exactly `paths` (nothing else staged goes with them); a failure is logged, not
    raised: the files are on disk and the next commit or a rerun picks them up."""
    paths = [str(Path(p).resolve()) for p in paths]
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                         cwd=Path(paths[0]).parent)
    if top.returncode:
        log(f"warning: not committing {message!r}: not inside a git repository")
        return False
    for command in (["git", "add", "--", *paths],
                    ["git", "commit", "-q", "--no-verify", "-m", message, "--", *paths]):
        done = subprocess.run(command, capture_output=True, text=True, cwd=top.stdout.strip())
        if done.returncode:
            log(f"warning: {' '.join(command[:2])} failed for {message!r}: "
                f"{(done.stderr or done.stdout).strip()[:200]}")
            return False
    return True


def setup_text(spec: StudySpec, dataset: str) -> str:
    """Seeds, budgets (the configs and overrides), the rerun command and the code's commit."""
    commit = (code_state()[0] or "unknown")[:7]
    pretraining = ("one shared pretraining (seed " + str(spec.seeds[0]) + ")"
                   if spec.shared_pretraining else "one pretraining per seed")
    return (f"Seeds {list(spec.seeds)}, {pretraining}. Dataset `{Path(dataset).name}`. "
            f"Pretraining `{spec.pretrain_config}`, fine-tuning `{spec.finetune_config}`"
            + (f", overrides {list(spec.overrides)}" if spec.overrides else "")
            + f" (budgets in those configs). Rerun or resume: `wsrl-wm study {spec.spec_path} "
            f"--commit`. Reported by code at commit {commit}.")


def study_record(spec: StudySpec, dataset: str, score: float | None) -> dict:
    """What `<results>/study.json` holds: the study as the index lists it, and the dataset's
    score (so a report can be rebuilt without the dataset)."""
    return {"name": spec.name, "title": spec.title, "env": spec.env, "spec": spec.spec_path,
            "seeds": list(spec.seeds), "shared_pretraining": spec.shared_pretraining,
            "dataset": Path(dataset).name, "dataset_score": score}


def recorded_score(results: Path) -> float | None:
    path = results / STUDY_RECORD
    return json.loads(path.read_text()).get("dataset_score") if path.is_file() else None


def run_study(spec: StudySpec, runner: Runner | None = None, wandb_mode: str | None = None,
              commit: bool = False, log=print, report_only: bool = False) -> SweepResult:
    """Collect (once), restore archived cells, run the rest (unless `report_only`: then
    nothing is collected either, and a missing dataset's score comes from study.json), and
    report into `spec.results`; with `commit`, commit the report and refresh the index."""
    dataset = ensure_dataset(spec, log, collect=not report_only)
    sweep = sweep_of(spec, dataset)
    _, finetune = plan(sweep, reporting=report_only)
    archive = CellArchive(spec, dataset, commit, log)
    restored = archive.restore(finetune)
    if restored:
        log(f"{len(restored)} cell(s) restored from {archive.folder}")
    archive.refresh(finetune, spec.dip_window)
    results = Path(spec.results)
    score = (dataset_score(dataset, spec.env) if Path(dataset).is_file()
             else recorded_score(results))
    result = run_sweep(sweep, runner, wandb_mode, log, report_to=results, on_done=archive.keep,
                       report_title=spec.title, dataset_score=score,
                       run=not report_only, report_setup=setup_text(spec, dataset))
    write_text_atomic(results / STUDY_RECORD,
                      json.dumps(study_record(spec, dataset, score), indent=1) + "\n")
    if commit:
        index = write_index(results.parent, log)
        git_commit([p for p in [*results.glob("*"), *archive.folder.glob("*.json"),
                                *([index] if index else [])] if p.is_file()],
                   f"study {spec.name}: report", log)
    return result
