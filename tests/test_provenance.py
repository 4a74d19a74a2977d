"""Provenance of results (code commit, CPU, torch, threads) in run.json and the reports, the
index of committed studies, and the replication's comparison against hand-made numbers."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fit_module

from wsrl_wm.ablation.index import MARKER, index_text, write_index
from wsrl_wm.ablation.replicate import compare, pick, value_spread, within
from wsrl_wm.ablation.report import provenance_section, results_csv
from wsrl_wm.lightning import FinetuneModule
from wsrl_wm.provenance import build_label, provenance
from wsrl_wm.run_info import read_run_info

ROOT = Path(__file__).resolve().parents[1]


def test_a_fine_tuning_records_where_it_ran(pretrained, tmp_path):
    module = FinetuneModule(pretrained, warmup_steps=5, online_steps=5, batch_size=32,
                            eval_interval=5, eval_episodes=1)
    fit_module(module, tmp_path)
    record = read_run_info(tmp_path)["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    assert record["commit"] == (head or None) and isinstance(record["dirty"], bool)
    assert record["torch"] == torch.__version__ and record["threads"] == torch.get_num_threads()
    assert record["cpu"] and record == {**provenance(), "threads": record["threads"]}


CPU_A, CPU_B = "Example CPU A", "Example CPU B"


def made(commit: str, cpu: str, dirty: bool = False) -> dict:
    return {"provenance": {"commit": commit, "dirty": dirty, "cpu": cpu, "torch": "2.13.0",
                           "threads": 1}}


def test_the_report_lists_builds_and_flags_mixed_or_unrecorded_cells():
    same = provenance_section([made("a" * 40, CPU_A), made("a" * 40, CPU_A)])
    assert f"| code aaaaaaa, {CPU_A}, torch 2.13.0, 1 thread(s) | 2 |" in same
    assert "one code state and one machine setting" in same and "Mixed" not in same
    mixed = provenance_section([made("a" * 40, CPU_A), made("a" * 40, CPU_B), {}])
    assert "**Mixed provenance:** the cells come from 1 code state(s) and 2 machine" in mixed
    assert "| unrecorded | 1 |" in mixed and "1 of 3 cells predate these records" in mixed
    dirty = provenance_section([made("b" * 40, CPU_A, dirty=True), made("b" * 40, CPU_A)])
    assert "2 code state(s)" in dirty and "bbbbbbb (dirty)" in dirty
    assert build_label(None) == "unrecorded"


# --------------------------------------------------------------------------------- the index


def write_study(root: Path, name: str, finals: dict[str, list[float]],
                aucs: dict[str, list[float]], cells: list[dict]) -> None:
    folder = root / name
    (folder / "cells").mkdir(parents=True)
    rows = [{"variant": variant, "r": 0.0, "seed": seed, "s0": 50.0, "dip": 10.0, "dip_auc": 45.0,
             "recovery_step": None, "forgot": True, "final": final, "auc": aucs[variant][seed],
             "q_offline_drift": None, "cell": f"{variant}_r0_seed{seed}"}
            for variant, values in finals.items() for seed, final in enumerate(values)]
    (folder / "results.csv").write_text(results_csv(rows))
    for i, record in enumerate(cells):
        (folder / "cells" / f"cell{i}.json").write_text(json.dumps(record))
    (folder / "study.json").write_text(json.dumps({
        "name": name, "title": name, "env": "Hopper-v5", "spec": f"{name}.yaml",
        "seeds": list(range(len(next(iter(finals.values()))))), "shared_pretraining": False,
        "dataset": "data.hdf5",
        "dataset_score": None}))


def test_the_index_lists_each_study_with_its_code_and_headline(tmp_path):
    write_study(tmp_path, "alpha", {"wsrl": [10.0, 20.0, 30.0, 40.0, 50.0],
                                    "better": [40.0, 50.0, 60.0, 70.0, 80.0]},
                {"wsrl": [1.0, 2.0, 3.0, 4.0, 5.0], "better": [5.0, 7.0, 6.0, 9.0, 8.0]},
                [made("c" * 40, CPU_A), {}])
    write_study(tmp_path, "beta", {"wsrl": [10.0, 10.0, 10.0], "same": [10.0, 10.0, 10.0]},
                {"wsrl": [1.0, 2.0, 3.0], "same": [2.0, 1.0, 3.0]}, [])
    path = write_index(tmp_path)
    text = path.read_text()
    assert text.startswith(MARKER) and text == index_text(tmp_path)
    alpha = next(line for line in text.splitlines() if line.startswith("| [alpha]"))
    assert "(alpha/report.md)" in alpha
    assert "| wsrl r=0, better r=0 | 5 (one pretraining per seed) |" in alpha
    assert "| ccccccc, unrecorded (1 cells) |" in alpha
    # WSRL's final: 30 ± t(0.975, 4)·s/√5; better − wsrl per seed: AUC +4, +5, +3, +5, +3
    spread = np.std([10.0, 20.0, 30.0, 40.0, 50.0], ddof=1)
    assert f"WSRL final 30 ± {2.776 * spread / np.sqrt(5):.3g} (n = 5)" in alpha
    picks = np.random.default_rng(0).integers(0, 5, (10_000, 5))
    means = np.array([4.0, 5.0, 3.0, 5.0, 3.0])[picks]
    low, high = np.percentile(means.mean(axis=1), [2.5, 97.5])
    assert f"`better` Δ AUC +4 [{low:+.3g}, {high:+.3g}]" in alpha
    beta = next(line for line in text.splitlines() if line.startswith("| [beta]"))
    assert "no arm's Δ AUC vs WSRL excludes 0" in beta and "| no cells |" in beta


def test_the_index_leaves_a_readme_it_did_not_write_alone(tmp_path):
    (tmp_path / "README.md").write_text("# my notes\n")
    warnings = []
    assert write_index(tmp_path, warnings.append) is None
    assert (tmp_path / "README.md").read_text() == "# my notes\n" and "not rewriting" in (
        warnings[0])


def test_the_committed_index_is_current():
    results = ROOT / "docs" / "results"
    assert (results / "README.md").read_text() == index_text(results)
    assert {"beyond", "hopper", "pointmaze"} <= {p.parent.name for p in
                                                 results.glob("*/study.json")}


# --------------------------------------------------------------------------- replication


def test_replication_picks_cells_across_variants_and_compares_with_the_spread():
    variants = {"wsrl_0": "wsrl", "wsrl_1": "wsrl", "wsrl_2": "wsrl", "nw_0": "nw", "nw_1": "nw"}
    assert pick(list(variants), variants, 3) == ["wsrl_0", "nw_0", "wsrl_1"]
    assert pick(list(variants), variants, 9) == ["wsrl_0", "nw_0", "wsrl_1", "nw_1", "wsrl_2"]
    assert value_spread([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert value_spread([3.0, None]) == (3.0, None)  # a seed never recovered: open above
    assert value_spread([None, None]) == (None, None)
    assert within(2.0, 1.0, 3.0) and not within(3.5, 1.0, 3.0) and not within(0.5, 1.0, 3.0)
    assert within(None, 3.0, None) and within(9.0, 3.0, None) and not within(None, 1.0, 3.0)
    assert within(None, None, None) and not within(1.0, None, None)

    stats = ("s0", "dip", "dip_auc", "recovery_step", "final", "auc", "q_offline_drift")
    committed = dict(zip(stats, (80.0, 70.0, 25.0, None, 30.0, 20.5, -145.0), strict=True))
    spread = {"s0": (70.0, 90.0), "dip": (60.0, 80.0), "dip_auc": (10.0, 40.0),
              "recovery_step": (500.0, None),
              "final": (20.0, 50.0), "auc": (15.0, 30.0), "q_offline_drift": (-160.0, -120.0)}
    lines, identical, inside = compare("wsrl_r0_seed4", committed, dict(committed), spread,
                                       "unrecorded", "here")
    assert identical and inside and lines[-1] == "  identical to the committed cell"
    moved = {**committed, "final": 60.0}
    lines, identical, inside = compare("wsrl_r0_seed4", committed, moved, spread, "a", "b")
    assert not identical and not inside
    final = next(line for line in lines if line.lstrip().startswith("final"))
    assert final.split()[1:4] == ["30", "60", "[20,"] and final.endswith("NO")


@pytest.mark.parametrize("bad", [0, -2])
def test_replicating_no_cells_is_one_clear_error(bad, tmp_path):
    from wsrl_wm.ablation.replicate import replicate
    from wsrl_wm.ablation.study import load_spec
    from wsrl_wm.errors import WsrlError

    with pytest.raises(WsrlError, match="positive number of cells"):
        replicate(load_spec(ROOT / "configs/study/pointmaze.yaml"), bad)
