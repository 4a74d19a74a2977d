"""The rollout-ratio ablation: summaries, CIs and the report on hand-made cells; the smoke sweep
end to end on the local backend (and its resume), on a local Ray instance, and its CLI."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from wsrl_wm.ablation import Cell, LocalRunner, RayRunner, Sweep, mean_ci, plan, run_sweep
from wsrl_wm.ablation.cell import describe, load_done, log_tail
from wsrl_wm.ablation.mechanism import mechanism_table
from wsrl_wm.ablation.plan import Variant
from wsrl_wm.ablation.report import write_report
from wsrl_wm.ablation.runners import cpu_cores, import_ray
from wsrl_wm.errors import WsrlError
from wsrl_wm.metrics import area_under_curve
from wsrl_wm.run_info import write_run_info

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "ablate_rollout_ratio.py"
PRETRAIN = str(ROOT / "configs/smoke/pretrain.yaml")
FINETUNE = str(ROOT / "configs/smoke/finetune.yaml")
NUMBERS = ("s0", "dip", "final", "auc", "q_offline_drift")


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=600)


# --- hand-made cells --------------------------------------------------------------------------

WARMUP, ONLINE = 100, 40


def fake_cell(root: Path, scores: list[float], q_policy: list[float] | None = None,
              variant: str = "wsrl", ratio: float = 0.0, seed: int = 0) -> Cell:
    """A fine-tune cell folder as a fit leaves it: its run.json (a stale csv log config to be
    ignored) and the evaluation history, every 10 online steps, in evaluations.csv."""
    log_dir = root / "csv" / "version_0"
    log_dir.mkdir(parents=True)
    config = {"model": {"init_args": {"warmup_steps": 999, "online_steps": 7}}}
    (log_dir / "config.yaml").write_text(yaml.safe_dump(config))
    write_run_info(root, {"warmup_steps": WARMUP, "online_steps": ONLINE})
    columns = ["env_step", "eval/normalized_score", "eval/return"]
    columns += ["probe/q_policy"] if q_policy else []
    with open(root / "evaluations.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, score in enumerate(scores):
            writer.writerow([WARMUP + 10 * i, score, 3 * score]
                            + ([q_policy[i]] if q_policy else []))
    return Cell(root.name, "finetune", variant, ratio, seed, root, ())


def test_cell_summary_reads_run_json_against_online_steps(tmp_path):
    scores, q = [50.0, 30.0, 45.0, 55.0, 60.0], [10.0, 8.0, 7.0, 6.5, 4.0]
    record = describe(fake_cell(tmp_path / "cell", scores, q), dip_window=None)
    assert record["online_steps"] == ONLINE and record["dip_window"] == 0.25 * ONLINE
    assert record["curves"]["score"] == {"online_step": [0, 10, 20, 30, 40], "value": scores}
    assert record["summary"] == {
        "s0": 50.0, "dip": 20.0, "recovery_step": 30.0, "forgot": False, "final": 60.0,
        "dip_auc": pytest.approx(area_under_curve([0, 10], scores[:2])),
        "auc": pytest.approx(area_under_curve([0, 10, 20, 30, 40], scores)),
        "q_offline_drift": -6.0}
    without_probe = describe(fake_cell(tmp_path / "bare", [50.0, 49.0]), dip_window=10)
    assert without_probe["summary"]["q_offline_drift"] is None
    assert without_probe["summary"]["forgot"] is True


def test_the_mechanism_table_reads_each_arms_curves_at_its_steps(tmp_path):
    """Policy drift of two seeds of WSRL, evaluated at 0, 200, 1000, 2000 and 3000: read at step
    100 (halfway between 0 and 200), 500 (between 200 and 1000), 2000 and the end."""
    steps = [0, 200, 1000, 2000, 3000]
    drift = {0: [0.0, 0.4, 0.8, 1.0, 1.2], 1: [0.0, 0.6, 1.0, 1.0, 0.8]}
    runs = [(Cell(f"wsrl_r0_seed{seed}", "finetune", "wsrl", 0.0, seed, tmp_path, ()),
             {"curves": {"policy_drift": {"online_step": steps, "value": values}}})
            for seed, values in drift.items()]
    runs.append((Cell("wsrl_r0.5_seed0", "finetune", "wsrl", 0.5, 0, tmp_path, ()),
                 {"curves": {"score": {"online_step": steps, "value": [1.0] * 5}}}))
    lines = mechanism_table(runs, mean_ci).splitlines()
    assert lines[0] == "| curve | arm | step 100 | step 500 | step 2000 | end |"
    assert len(lines) == 3  # the r = 0.5 arm logged no mechanism curve: no row
    want = [mean_ci([0.2, 0.3]), mean_ci([0.4 + 0.4 * 300 / 800, 0.6 + 0.4 * 300 / 800]),
            mean_ci([1.0, 1.0]), mean_ci([1.2, 0.8])]
    assert lines[2] == "| policy_drift | wsrl r=0 | " + " | ".join(map(str, want)) + " |"
    assert mechanism_table(runs[2:], mean_ci) == ""


def test_t_interval_matches_a_hand_computation():
    estimate = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert estimate.mean == 2.5 and estimate.n == 4
    assert estimate.half == pytest.approx(3.182 * math.sqrt(5 / 3) / 2)  # t_{0.975,3}·s/√n
    assert str(mean_ci([7.0])) == "7" and mean_ci([7.0]).half is None
    assert str(mean_ci([None, None])) == "n/a"
    wide = mean_ci(list(np.arange(40.0)))  # df 39: the conservative df-30 quantile
    assert wide.half == pytest.approx(2.042 * np.std(np.arange(40.0), ddof=1) / math.sqrt(40))


def test_report_tables_reads_and_plots_hand_made_cells(tmp_path):
    curves = {(0.0, 0): [50, 30, 45, 55, 60], (0.0, 1): [50, 34, 40, 48, 49],
              (0.5, 0): [50, 46, 52, 58, 61], (0.5, 1): [50, 44, 51, 57, 62]}
    runs = []
    for (ratio, seed), scores in curves.items():
        cell = fake_cell(tmp_path / f"wsrl_r{ratio:g}_seed{seed}", scores,
                         [5.0, 4.0, 3.0, 2.0, 1.0], ratio=ratio, seed=seed)
        runs.append((cell, describe(cell, dip_window=None)))
    out = tmp_path / "out"
    out.mkdir()
    outputs, table = write_report(out, runs, dip_window=20, wandb_mode="disabled", config={})
    rows = read_rows(outputs["results"])
    assert [(r["r"], r["seed"], r["dip"]) for r in rows] == [
        ("0.0", "0", "20.0"), ("0.0", "1", "16.0"), ("0.5", "0", "4.0"), ("0.5", "1", "6.0")]
    assert rows[1]["forgot"] == "True" and rows[1]["recovery_step"] == ""
    dip_r0 = f"18 ± {12.706 * np.std([20, 16], ddof=1) / math.sqrt(2):.3g}"
    areas = [(50 + 30 + 30 + 45) * 10 / 2 / 20, (50 + 34 + 34 + 40) * 10 / 2 / 20]  # steps ≤ 20
    area_r0 = f"{np.mean(areas):.3g} ± {12.706 * np.std(areas, ddof=1) / math.sqrt(2):.3g}"
    assert f"| wsrl | 0 | 2 | 50 ± 0 | {dip_r0} | {area_r0} | 30 | " in table
    report = outputs["report"].read_text()
    markdown, caption, paired = table.split("\n\n")  # printed: both of the report's tables
    assert markdown in report and caption in report and paired in report
    assert paired.startswith("| variant | r | pairs | Δ dip |")
    assert "first 20 online steps" in report
    assert "The smallest mean dip was at r = 0.5: 5 ± 12.7 against " + dip_r0 in report
    assert "intervals overlap" in report
    assert "1 of 4 runs never got back to their switch score (forgot): wsrl_r0_seed1." in report
    for name in ("scores", "q_probe"):
        assert outputs[name].stat().st_size > 0 and f"]({name}.png)" in report


def test_report_without_probe_or_runs_skips_what_it_cannot_show(tmp_path):
    cell = fake_cell(tmp_path / "cell", [50.0, 60.0])
    outputs, _ = write_report(tmp_path, [(cell, describe(cell, None))], None, "disabled", {})
    assert "q_probe" not in outputs and not (tmp_path / "q_probe.png").exists()
    assert "r > 0" not in outputs["report"].read_text()  # r = 0 alone: nothing to compare
    empty = tmp_path / "empty"
    empty.mkdir()
    outputs, _ = write_report(empty, [], None, "disabled", {})
    assert read_rows(outputs["results"]) == []
    assert "No fine-tuning run finished" in outputs["report"].read_text()


def test_report_is_logged_to_one_offline_wandb_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cell = fake_cell(tmp_path / "cell", [50.0, 60.0], [1.0, 2.0])
    write_report(tmp_path, [(cell, describe(cell, None))], None, "offline", {"seeds": [0]})
    assert len(list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))) == 1


def test_log_tail_splits_progress_bar_redraws(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("start\nEpoch 0: 10%\rEpoch 0: 100%\nwsrl-wm: error: bad\n")
    assert log_tail(log, lines=2) == "Epoch 0: 100%\nwsrl-wm: error: bad"


def test_a_done_record_of_another_command_is_not_reused(tmp_path):
    cell = Cell("c", "finetune", "wsrl", 0.0, 0, tmp_path, ("--model.rollout.ratio", "0.5"))
    (tmp_path / "done.json").write_text(json.dumps({"args": ["--model.rollout.ratio", "0.25"]}))
    with pytest.raises(WsrlError, match="different arguments"):
        load_done(cell)


# --- planning ---------------------------------------------------------------------------------


def test_plan_lays_out_cells_and_routes_overrides_to_the_fits_that_take_them(tmp_path):
    sweep = Sweep(PRETRAIN, FINETUNE, "hopper-medium-v2", str(tmp_path), ratios=(0.0, 0.5),
                  seeds=(0, 1), baselines=("no_warmup", "retain"),
                  overrides=("model.online_steps=20", "model.agent.num_critics=2",
                             "model.eval_episodes=2", "finetune.model.log_interval=5"))
    pretrain, finetune = plan(sweep)
    assert [c.root for c in pretrain] == [tmp_path / f"pretrain/seed_{s}" for s in (0, 1)]
    assert [c.name for c in finetune] == [
        "wsrl_r0_seed0", "wsrl_r0_seed1", "wsrl_r0.5_seed0", "wsrl_r0.5_seed1",
        "no_warmup_r0_seed0", "no_warmup_r0_seed1", "retain_r0_seed0", "retain_r0_seed1"]
    pre = " ".join(pretrain[1].args)
    assert "--model.agent.num_critics 2 --model.eval_episodes 2" in pre
    assert "online_steps" not in pre and "log_interval" not in pre
    assert "--seed_everything 1 --model.seed 1" in pre
    retain = " ".join(finetune[7].args)
    assert "--model.online_steps 20 --model.eval_episodes 2 --model.log_interval 5" in retain
    assert "num_critics" not in retain
    assert f"--model.pretrained {tmp_path}/pretrain/seed_1/checkpoints/last.ckpt" in retain
    assert ("--model.retain_offline_ratio 0.5 --model.offline_dataset hopper-medium-v2"
            in retain)
    assert "--model.warmup_steps 0" in " ".join(finetune[4].args)


@pytest.mark.parametrize(("change", "message"), [
    ({"ratios": (0.0, 1.5)}, r"ratios must be in \[0, 1\]"),
    ({"seeds": (0, 0)}, "seeds repeat a value"),
    ({"baselines": ("cql",)}, "unknown baseline"),
    ({"dataset": "missing.hdf5"}, "dataset file not found"),
    ({"finetune_config": "nope.yaml"}, "finetune config not found"),
    ({"overrides": ("model.online_steps",)}, "KEY=VALUE"),
    ({"overrides": ("model.rollout.ratio=0.1",)}, "set by the sweep itself"),
    ({"overrides": ("model.no_such_field=1",)}, "no fit of this sweep takes"),
    ({"overrides": ("pretrain.model.online_steps=1",)}, "no fit of this sweep takes"),
    ({"dip_window": 0.0}, "dip window must be > 0"),
])
def test_bad_sweeps_are_rejected_before_anything_runs(tmp_path, change, message):
    settings = dict(pretrain_config=PRETRAIN, finetune_config=FINETUNE, dataset="x-v2",
                    out=str(tmp_path / "out"))
    with pytest.raises(WsrlError, match=message):
        plan(Sweep(**{**settings, **change}))
    assert not (tmp_path / "out").exists()


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(WsrlError, match=r"pip install 'wsrl-wm\[ray\]'"):
        import_ray()


def test_cli_bad_input_is_one_error_line_and_exit_2(tmp_path):
    for args in (["--dataset", "x-v2", "--ratios", "2"], ["--dataset", "x", "--backend", "k8s"]):
        result = run_script(*args, "--out", str(tmp_path))
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("error: ")


# --- the smoke sweep end to end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory, hopper_dataset) -> tuple[Sweep, subprocess.CompletedProcess]:
    """2 ratios × 2 seeds on the smoke configs through the command line, 2 workers."""
    sweep = Sweep(PRETRAIN, FINETUNE, hopper_dataset, str(tmp_path_factory.mktemp("ablation")),
                  ratios=(0.0, 0.5), seeds=(0, 1), dip_window=15)
    result = run_script("--pretrain-config", PRETRAIN, "--finetune-config", FINETUNE,
                        "--dataset", hopper_dataset, "--ratios", "0", "0.5", "--seeds", "0", "1",
                        "--dip-window", "15", "--out", sweep.out, "--workers", "2")
    return sweep, result


@pytest.mark.slow  # a real sweep of smoke fits (~1 min); CI runs it with -m slow
def test_local_sweep_writes_results_report_and_plots(smoke_sweep):
    sweep, result = smoke_sweep
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = Path(sweep.out)
    assert f"results: {out / 'results.csv'}" in result.stdout
    rows = read_rows(out / "results.csv")
    assert sorted((r["r"], r["seed"]) for r in rows) == [
        ("0.0", "0"), ("0.0", "1"), ("0.5", "0"), ("0.5", "1")]
    for row in rows:
        assert all(math.isfinite(float(row[key])) for key in NUMBERS)
        assert (row["recovery_step"] == "") == (row["forgot"] == "True")
    report = (out / "report.md").read_text()
    assert "| variant | r | n | S0 | dip |" in report and "| wsrl | 0.5 | 2 |" in report
    assert "| variant | r | n | S0 | dip |" in result.stdout
    for name in ("scores.png", "q_probe.png"):
        assert (out / name).stat().st_size > 0


def hand_summary(cell_root: Path, warmup: int, window: float) -> dict:
    """The results.csv numbers of one cell, recomputed from its evaluations.csv by hand."""
    rows = read_rows(cell_root / "evaluations.csv")
    steps = [int(float(r["env_step"])) - warmup for r in rows]
    scores = [float(r["eval/normalized_score"]) for r in rows]
    q_policy = [float(r["probe/q_policy"]) for r in rows]
    assert steps[0] == 0
    inside = [s for t, s in zip(steps, scores, strict=True) if t <= window]
    low = inside.index(min(inside))  # the dip's low point, where it is first reached
    later = [step for step, score in zip(steps[low + 1:], scores[low + 1:], strict=True)
             if score >= scores[0]]

    def mean_area(n):  # trapezoid time average of the first n evaluations
        return sum((scores[i] + scores[i + 1]) / 2 * (steps[i + 1] - steps[i])
                   for i in range(n - 1)) / (steps[n - 1] - steps[0]) if n > 1 else scores[0]

    return {"s0": scores[0], "final": scores[-1], "auc": mean_area(len(steps)),
            "dip": max(0.0, scores[0] - min(inside)), "dip_auc": mean_area(len(inside)),
            "recovery_step": (0.0 if min(inside) >= scores[0]
                              else float(later[0]) if later else None),
            "q_offline_drift": q_policy[-1] - q_policy[0]}


@pytest.mark.slow  # a real sweep of smoke fits (~1 min); CI runs it with -m slow
def test_results_csv_and_report_are_recomputed_from_the_cells(smoke_sweep):
    """results.csv from each cell's evaluations.csv (warmup 50, dip window 15); the report's
    S0 and final columns from results.csv: mean ± t_{0.975,1}·s/√2 over the two seeds."""
    sweep, result = smoke_sweep
    assert result.returncode == 0
    rows = read_rows(Path(sweep.out) / "results.csv")
    for row in rows:
        want = hand_summary(Path(sweep.out) / "cells" / row["cell"], warmup=50, window=15)
        for key in ("s0", "final", "auc", "dip", "dip_auc", "q_offline_drift"):
            assert float(row[key]) == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
        assert row["recovery_step"] == ("" if want["recovery_step"] is None
                                        else str(want["recovery_step"]))
    lines = (Path(sweep.out) / "report.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant | r | n | S0 |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    table = [line.split(" | ") for line in lines[start + 2:end]]  # the first table's rows
    header = "variant | r | n | S0 | dip | dip AUC | recovery step | final".split(" | ")
    assert [cells[:2] for cells in table] == [["| wsrl", "0"], ["| wsrl", "0.5"]]
    for cells in table:
        ratio = float(cells[1])
        for column, key in (("S0", "s0"), ("final", "final")):
            values = [float(r[key]) for r in rows if float(r["r"]) == ratio]
            mean, half = np.mean(values), 12.706 * np.std(values, ddof=1) / math.sqrt(2)
            shown = cells[header.index(column)]
            assert shown == f"{mean:.3g} ± {half:.3g}", (column, shown)


@pytest.mark.slow  # a real sweep of smoke fits (~1 min); CI runs it with -m slow
def test_every_cell_keeps_its_command_log_record_and_config(smoke_sweep):
    sweep, _ = smoke_sweep
    pretrain, finetune = plan(sweep)
    for cell in pretrain + finetune:
        for name in ("command.txt", "run.log", "done.json"):
            assert (cell.root / name).stat().st_size > 0, cell.root / name
        # 2 workers share the cores unless the environment chose a thread count
        threads = os.environ.get("OMP_NUM_THREADS") or max(1, cpu_cores() // 2)
        assert f"OMP_NUM_THREADS={threads} " in (cell.root / "command.txt").read_text()
        config = yaml.safe_load(next(cell.root.glob("csv/version_*/config.yaml")).read_text())
        assert config["seed_everything"] == cell.seed
        assert config["model"]["init_args"]["seed"] == cell.seed
        if cell.phase == "finetune":
            assert config["model"]["init_args"]["rollout"]["ratio"] == cell.ratio


@pytest.mark.slow  # a real sweep of smoke fits (~1 min); CI runs it with -m slow
def test_rerunning_the_sweep_starts_no_fit(smoke_sweep):
    sweep, first = smoke_sweep
    assert first.returncode == 0
    pretrain, finetune = plan(sweep)
    stamps = {cell.name: [(cell.root / f).stat().st_mtime_ns for f in ("done.json", "run.log")]
              for cell in pretrain + finetune}
    results = (Path(sweep.out) / "results.csv").read_text()
    again = run_sweep(sweep, LocalRunner(workers=2), wandb_mode="disabled", log=lambda _: None)
    assert again.ok and again.ran == [] and len(again.skipped) == 6
    assert stamps == {cell.name: [(cell.root / f).stat().st_mtime_ns
                                  for f in ("done.json", "run.log")]
                      for cell in pretrain + finetune}
    assert again.outputs["results"].read_text() == results


def test_a_failed_cell_is_reported_and_the_sweep_exits_non_zero(tmp_path):
    out = tmp_path / "out"
    result = run_script("--pretrain-config", PRETRAIN, "--finetune-config", FINETUNE,
                        "--dataset", "hopper-not-a-dataset-v2", "--ratios", "0", "--seeds", "0",
                        "--out", str(out), "--workers", "1")
    assert result.returncode == 1
    assert "FAILED pretrain_seed0: fit exited with code 2" in result.stderr
    assert "wsrl-wm: error:" in result.stderr  # the tail of the fit's own log
    assert "FAILED wsrl_r0_seed0: not run: pretrain_seed0 failed" in result.stderr
    assert not (out / "pretrain/seed_0/done.json").exists()
    assert read_rows(out / "results.csv") == [] and (out / "report.md").is_file()


@pytest.mark.slow  # a local Ray instance's start-up dominates; CI runs it with -m slow
def test_ray_backend_runs_the_sweep_on_a_local_instance(tmp_path, hopper_dataset, smoke_sweep):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        sweep = Sweep(PRETRAIN, FINETUNE, hopper_dataset, str(tmp_path), ratios=(0.0, 0.5),
                      seeds=(0,), dip_window=15)
        result = run_sweep(sweep, RayRunner(), wandb_mode="disabled", log=lambda _: None)
        assert ray.is_initialized()  # the runner leaves a Ray it did not start running
    finally:
        ray.shutdown()
    assert result.ok, [f.error for f in result.failures]
    assert sorted(result.ran) == ["pretrain_seed0", "wsrl_r0.5_seed0", "wsrl_r0_seed0"]
    ray_rows = read_rows(tmp_path / "results.csv")
    assert len(ray_rows) == 2
    # the same cells as the local sweep's seed 0: the same numbers, whichever backend ran them
    local = {row["r"]: row for row in read_rows(Path(smoke_sweep[0].out) / "results.csv")
             if row["seed"] == "0"}
    for row in ray_rows:
        for key in (*NUMBERS, "recovery_step", "forgot"):
            assert row[key] == local[row["r"]][key], (row["r"], key)
    for name in ("report", "scores", "q_probe"):
        assert result.outputs[name].stat().st_size > 0
    assert all((cell.root / "done.json").is_file() for cell in sum(plan(sweep), []))


def test_single_seed_reports_say_they_are_single_observations(tmp_path):
    runs = []
    for ratio in (0.0, 0.5):
        cell = fake_cell(tmp_path / f"wsrl_r{ratio:g}_seed0", [50, 30, 45, 55, 60], ratio=ratio)
        runs.append((cell, describe(cell, dip_window=None)))
    out = tmp_path / "out"
    out.mkdir()
    outputs, _ = write_report(out, runs, dip_window=20, wandb_mode="disabled", config={})
    assert "one seed, so these are single observations" in outputs["report"].read_text()


def test_model_curves_come_from_every_csv_log_against_online_steps(tmp_path):
    cell = fake_cell(tmp_path / "cell", [50.0, 60.0])
    logs = [("version_0", [(WARMUP, 0.5, ""), (WARMUP + 5, "", ""), (WARMUP + 10, 0.7, 2.0)]),
            ("version_1", [(WARMUP + 10, 0.6, 1.5), (WARMUP + 20, 0.8, 3.0)])]  # resumed
    for version, rows in logs:
        (tmp_path / "cell/csv" / version).mkdir(parents=True, exist_ok=True)
        with open(tmp_path / "cell/csv" / version / "metrics.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["env_step", "model/one_step_mse", "model/h_step_mse"])
            writer.writerows(rows)
    curves = describe(cell, None)["curves"]
    assert curves["model_one_step"] == {"online_step": [0, 10, 20], "value": [0.5, 0.6, 0.8]}
    assert curves["model_h_step"] == {"online_step": [10, 20], "value": [1.5, 3.0]}
    assert "model_probe" not in curves


def test_shared_pretraining_plans_one_checkpoint_for_every_seed(tmp_path):
    sweep = Sweep(PRETRAIN, FINETUNE, "hopper-medium-v2", str(tmp_path), ratios=(0.0,),
                  seeds=(3, 4), baselines=("no_warmup",), shared_pretraining=True)
    pretrain, finetune = plan(sweep)
    assert [cell.name for cell in pretrain] == ["pretrain_seed3"]
    checkpoint = f"--model.pretrained {tmp_path}/pretrain/seed_3/checkpoints/last.ckpt"
    for cell in finetune:
        assert cell.pretrain == "pretrain_seed3" and checkpoint in " ".join(cell.args)
        assert f"--seed_everything {cell.seed} --model.seed {cell.seed}" in " ".join(cell.args)
    assert [cell.seed for cell in finetune] == [3, 4, 3, 4]


@pytest.mark.parametrize("shared", [False, True])
def test_a_variant_with_pretrain_overrides_fine_tunes_from_its_own_pretraining(tmp_path, shared):
    variant = Variant("small", 0.0, ("pretrain.model.agent.num_critics=2",
                                     "model.warmup_steps=0"))
    sweep = Sweep(PRETRAIN, FINETUNE, "hopper-medium-v2", str(tmp_path), ratios=(0.0,),
                  seeds=(0, 1), variants=(variant,), shared_pretraining=shared)
    pretrain, finetune = plan(sweep)
    seeds = (0,) if shared else (0, 1)
    assert [cell.name for cell in pretrain] == [
        *(f"pretrain_seed{s}" for s in seeds), *(f"pretrain_small_seed{s}" for s in seeds)]
    for cell in pretrain:
        assert ("--model.agent.num_critics 2" in " ".join(cell.args)) == ("small" in cell.name)
    for cell in finetune:
        args, own = " ".join(cell.args), cell.variant == "small"
        source = seeds[0] if shared else cell.seed
        assert cell.pretrain == ("pretrain_small" if own else "pretrain") + f"_seed{source}"
        folder = tmp_path / "pretrain" / ("small" if own else "") / f"seed_{source}"
        assert f"{folder}/checkpoints/last.ckpt" in args
        assert ("--model.warmup_steps 0" in args) == own
        assert "num_critics" not in args
