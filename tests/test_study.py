"""Studies: the spec, paired differences and the regime against hand computations, the report's
numbers recomputed from results.csv, and a smoke study end to end through `wsrl-wm study` —
committed cell by cell into git and resumed from the commits alone on a fresh work folder."""

import csv
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from wsrl_wm.ablation.paired import bootstrap_mean, paired_difference, regime
from wsrl_wm.ablation.plan import plan
from wsrl_wm.ablation.report import group_rows, mean_ci
from wsrl_wm.ablation.study import load_spec, sweep_of
from wsrl_wm.errors import WsrlError

ROOT = Path(__file__).resolve().parents[1]


def rows_of(variant, ratio, values, key="dip"):
    return [{"variant": variant, "r": ratio, "seed": seed, "s0": 50.0, key: value,
             "forgot": False, "cell": f"{variant}_{seed}"} for seed, value in values.items()]


def test_paired_difference_pairs_by_seed_and_bootstraps_over_seeds():
    wsrl = rows_of("wsrl", 0.0, {0: 10.0, 1: 20.0, 2: 30.0, 3: 5.0, 4: 8.0, 5: 1.0})
    other = rows_of("no_warmup", 0.0, {1: 25.0, 0: 14.0, 2: 33.0, 3: 6.0, 4: 10.0, 9: 99.0})
    diff = paired_difference(other, wsrl, "dip")  # seed 9 unpaired, seed 5 missing
    assert diff.n == 5 and diff.mean == pytest.approx(3.0)  # (4 + 5 + 3 + 1 + 2) / 5
    picks = np.random.default_rng(0).integers(0, 5, (10_000, 5))
    means = np.array([4.0, 5.0, 3.0, 1.0, 2.0])[picks].mean(axis=1)
    assert (diff.low, diff.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert diff.sign == 1 and str(diff).startswith("+3 [")
    assert bootstrap_mean([1.0, -1.0, 2.0, -2.0, 0.5]).sign == 0


def test_too_few_pairs_give_no_interval():
    """A percentile bootstrap over 3 seeds is not printed as if it meant something."""
    few = bootstrap_mean([0.0, 0.0, 0.0])
    assert few.low is None and few.sign == 0
    assert str(few) == "+0 (n = 3: too few for an interval)"


@pytest.mark.parametrize(("s0s", "data", "name"), [
    ([60, 62, 58], 40.0, "superior"), ([30, 32, 28], 40.0, "inferior"),
    ([35, 45, 40], 40.0, "comparable")])
def test_regime_compares_the_switch_score_ci_with_the_data(s0s, data, name):
    rows = [{"variant": "wsrl", "r": 0.0, "seed": i, "s0": s, "forgot": False}
            for i, s in enumerate(s0s)]
    assert f"the **{name}** regime" in regime(group_rows(rows), data)
    assert str(mean_ci(s0s)) in regime(group_rows(rows), data)


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\n", "missing key"),
    ("name: x\nenv: Hopper-v5\ndataset: {file: a.hdf5}\npretrain_config: a\n"
     "finetune_config: b\nseeds: [0]\n", "dataset needs either"),
    ("name: x\nenv: Hopper-v5\ndataset: d\npretrain_config: a\nfinetune_config: b\n"
     "seeds: [0]\nvariant: {}\n", r"unknown key\(s\) \['variant'\]"),
    ("[1, 2]", "a YAML mapping"), ("a: [", "not valid YAML")])
def test_bad_specs_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(WsrlError, match=message):
        load_spec(path)


# --- a smoke study end to end -------------------------------------------------------------------

def write_spec(folder: Path, dataset: str) -> Path:
    spec = {"name": "smoke", "env": "Hopper-v5", "dataset": {"source": dataset},
            "pretrain_config": str(ROOT / "configs/smoke/pretrain.yaml"),
            "finetune_config": str(ROOT / "configs/smoke/finetune.yaml"),
            "seeds": [0, 1], "ratios": [0.0],
            "variants": {"no_warmup": {"model.warmup_steps": 0},
                         "retain": {"model.retain_offline_ratio": 0.5,
                                    "model.offline_dataset": "{dataset}"}},
            "set": ["model.world_model=null"], "dip_window": 15,
            "work": str(folder / "work"), "results": str(folder / "repo/results")}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def study(spec: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wsrl_wm.cli", "study", str(spec), "--commit",
                           "--workers", "2", "--wandb-mode", "disabled"], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, hopper_dataset):
    folder = tmp_path_factory.mktemp("study")
    repo = folder / "repo"
    repo.mkdir()
    for command in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"],
                    ["commit", "-q", "--allow-empty", "-m", "start"]):
        subprocess.run(["git", *command], cwd=repo, check=True)
    spec = write_spec(folder, hopper_dataset)
    return folder, spec, study(spec, folder)


def git_log(repo: Path) -> list[str]:
    return subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.splitlines()


@pytest.mark.slow  # a real study of smoke fits (~70 s); CI runs it with -m slow
def test_study_commits_each_cell_then_the_report(smoke_study):
    folder, _, result = smoke_study
    assert result.returncode == 0, result.stderr[-3000:]
    repo = folder / "repo"
    log = git_log(repo)
    cells = {f"{v}_r0_seed{s}" for v in ("wsrl", "no_warmup", "retain") for s in (0, 1)}
    assert {line.removeprefix("study smoke: cell ") for line in log[1:7]} == cells
    assert log[0] == "study smoke: report"
    committed = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True,
                               check=True).stdout.split()
    assert {f"results/cells/{c}.json" for c in cells} <= set(committed)
    assert {"results/results.csv", "results/report.md", "results/scores.png"} <= set(committed)
    record = json.loads((repo / "results/cells/retain_r0_seed1.json").read_text())
    assert "{dataset}" in record["args"] and "{work}/pretrain/seed_1/checkpoints/last.ckpt" in (
        record["args"])
    assert not any(str(folder) in arg for arg in record["args"])  # machine-independent


@pytest.mark.slow  # a real study of smoke fits (~70 s); CI runs it with -m slow
def test_report_numbers_recompute_from_results_csv(smoke_study):
    folder, _, result = smoke_study
    assert result.returncode == 0, result.stderr[-3000:]
    results = folder / "repo/results"
    with open(results / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    report = (results / "report.md").read_text()
    assert "## Paired difference to WSRL (r = 0)" in report and "Regime:" in report
    for variant in ("wsrl", "no_warmup", "retain"):
        mine = [r for r in rows if r["variant"] == variant]
        line = next(x for x in report.splitlines() if x.startswith(f"| {variant} | 0 | 2 |"))
        for column, key in ((3, "s0"), (4, "dip"), (5, "dip_auc"), (7, "final"), (8, "auc")):
            assert line.split(" | ")[column] == str(mean_ci([float(r[key]) for r in mine]))
    wsrl = {r["seed"]: float(r["final"]) for r in rows if r["variant"] == "wsrl"}
    retain = [float(r["final"]) - wsrl[r["seed"]] for r in rows if r["variant"] == "retain"]
    section = report.split("## Paired difference")[1].splitlines()
    paired = next(x for x in section if x.startswith("| retain | 0 | 2 |"))
    assert paired.split(" | ")[5] == str(bootstrap_mean(retain))  # Δ final


@pytest.mark.slow  # a real study of smoke fits (~70 s); CI runs it with -m slow
def test_a_fresh_work_folder_resumes_from_the_committed_cells(smoke_study):
    folder, spec, first = smoke_study
    assert first.returncode == 0, first.stderr[-3000:]
    report = (folder / "repo/results/report.md").read_text()
    shutil.rmtree(folder / "work")  # a new machine: only the committed results are there
    again = study(spec, folder)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "6 cell(s) restored" in again.stdout
    assert re.search(r"pretrain: 0 cell\(s\) to run", again.stdout)
    assert re.search(r"fine-tune: 0 cell\(s\) to run, 6 already done", again.stdout)
    assert (folder / "repo/results/report.md").read_text() == report
    assert not (folder / "work/pretrain").exists()


@pytest.mark.slow  # a real study of smoke fits (~70 s); CI runs it with -m slow
def test_an_archived_cell_of_other_arguments_is_not_reused(smoke_study, tmp_path):
    folder, spec, first = smoke_study
    assert first.returncode == 0
    changed = yaml.safe_load(spec.read_text())
    changed["set"].append("model.eval_episodes=2")
    changed["work"] = str(tmp_path / "work")
    other = tmp_path / "spec.yaml"
    other.write_text(yaml.safe_dump(changed))
    result = study(other, folder)
    assert result.returncode == 2 and "made with other arguments" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a real study of smoke fits (~70 s); CI runs it with -m slow
def test_report_only_reports_the_finished_cells_and_runs_nothing(smoke_study):
    folder, spec, first = smoke_study
    assert first.returncode == 0
    (folder / "repo/results/cells/retain_r0_seed1.json").unlink()
    (folder / "work/cells/retain_r0_seed1/done.json").unlink(missing_ok=True)
    result = subprocess.run([sys.executable, "-m", "wsrl_wm.cli", "study", str(spec),
                             "--report-only", "--wandb-mode", "disabled"], cwd=folder,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cell(s) to run" not in result.stdout
    assert not (folder / "work/cells/retain_r0_seed1/done.json").exists()
    with open(folder / "repo/results/results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and "| retain | 0 | 1 |" in (folder / "repo/results/report.md"
                                                         ).read_text()


def test_a_study_whose_data_cannot_be_scored_says_so():
    rows = [{"variant": "wsrl", "r": 0.0, "seed": i, "s0": s, "forgot": False}
            for i, s in enumerate([60, 62, 58])]
    assert regime(group_rows(rows), None).startswith("Regime: not stated")


@pytest.mark.slow  # a real study of smoke fits (~70 s), then two cells rerun (~30 s)
def test_replicate_reruns_committed_cells_through_the_cli(smoke_study):
    """`--replicate 2` reruns one WSRL and one no-warmup cell (their pretrainings included)
    in <work>/replicate and prints committed vs new values and the spread; on the machine
    and build that made them, the cells come out identical."""
    folder, spec, first = smoke_study
    assert first.returncode == 0, first.stderr[-3000:]
    result = subprocess.run([sys.executable, "-m", "wsrl_wm.cli", "study", str(spec),
                             "--replicate", "2", "--workers", "2", "--wandb-mode", "disabled"],
                            cwd=folder, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"replicating 2 of [56] committed cell\(s\)", out)  # (5: one deleted above)
    for cell in ("wsrl_r0_seed0", "no_warmup_r0_seed0"):
        block = out.split(f"{cell}: committed on ")[1].split("identical to")[0]
        assert "rerun on code" in block and "NO" not in block, block
        record = json.loads((folder / "repo/results/cells" / f"{cell}.json").read_text())
        line = next(x for x in block.splitlines() if x.strip().startswith("final"))
        assert line.split()[1] == line.split()[2] == f"{record['summary']['final']:.4g}"
        assert (folder / "work/replicate/cells" / cell / "done.json").is_file()
    assert "2 of 2 cell(s) identical, 2 inside the committed spread" in out
    assert not (folder / "work/replicate/cells/retain_r0_seed1").exists()
    committed = json.loads((folder / "repo/results/cells/wsrl_r0_seed0.json").read_text())
    assert committed["provenance"]["threads"] >= 1  # cells record where they ran
    assert (folder / "repo/README.md").read_text().startswith("<!-- The index")


SPECS = sorted((ROOT / "configs" / "study").glob("*.yaml"))
# The beyond study's committed cells ran under arm names its spec has since changed (the spec
# says, arm by arm, which name each ran as); every other study owns all its committed cells.
RENAMED_ARMS = {"beyond"}


@pytest.mark.parametrize("path", SPECS, ids=lambda path: path.stem)
def test_every_committed_spec_plans_the_cells_it_promises(path):
    """Each spec loads, plans seeds × (ratios + variants) fine-tunings, and every cell record
    committed under its results folder is one of them: a cell moved to the wrong study, or a
    spec that dropped an arm its results still hold, fails here."""
    spec = load_spec(path)
    _, finetunes = plan(dataclasses.replace(sweep_of(spec, "stub"), dataset="stub"))
    names = {cell.name for cell in finetunes}
    assert len(names) == len(spec.seeds) * (len(spec.ratios) + len(spec.variants))
    committed = {record.stem for record in (ROOT / spec.results / "cells").glob("*.json")}
    if spec.name not in RENAMED_ARMS:
        assert committed <= names, sorted(committed - names)
