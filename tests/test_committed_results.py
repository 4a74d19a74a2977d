"""The committed study reports say what their committed results.csv says: both tables of every
`docs/results/<study>/report.md` are recomputed from its results.csv (no hand edits, no stale
report beside new cells)."""

import csv
from pathlib import Path

import pytest

from wsrl_wm.ablation.paired import paired_table
from wsrl_wm.ablation.report import group_rows, markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
STUDIES = sorted(path.parent.name for path in RESULTS.glob("*/results.csv"))
NUMBERS = ("s0", "dip", "recovery_step", "final", "auc", "q_offline_drift")


def read_results(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            row.update({key: float(row[key]) if row[key] != "" else None for key in NUMBERS})
            row.update(r=float(row["r"]), seed=int(row["seed"]), forgot=row["forgot"] == "True")
            rows.append(row)
    return rows


def test_the_studies_are_committed():
    assert {"beyond", "hopper", "pointmaze"} <= set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_report_tables_recompute_from_results_csv(study):
    groups = group_rows(read_results(RESULTS / study / "results.csv"))
    report = (RESULTS / study / "report.md").read_text()
    assert sum(len(g.rows) for g in groups) >= 20  # ≥ 5 seeds of ≥ 4 variants
    assert markdown_table(groups) in report
    assert paired_table(groups) in report
