"""The index of committed studies (docs/results/README.md): one row per results folder that
holds a study.json — its task, the arms that have results, seeds, the code its cells ran, and a
headline with its CI. The study runner rewrites it whenever it commits a study; a README there
that the runner did not write is left alone."""

import csv
import json
from pathlib import Path

from wsrl_wm.ablation.paired import paired_difference, reference_group
from wsrl_wm.ablation.report import group_rows
from wsrl_wm.atomic import write_text_atomic

STUDY_RECORD = "study.json"
INDEX = "README.md"
MARKER = "<!-- The index of committed studies: rewritten by `wsrl-wm study --commit`. -->"
NUMBERS = ("s0", "dip", "dip_auc", "recovery_step", "final", "auc", "q_offline_drift")


def read_results_csv(path: Path) -> list[dict]:
    """results.csv back into report rows (numbers, None for empty cells)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.update({key: float(row[key]) if row[key] else None for key in NUMBERS})
        row.update(r=float(row["r"]), seed=int(row["seed"]), forgot=row["forgot"] == "True")
    return rows


def headline(rows: list[dict]) -> str:
    """WSRL's final score, then every arm whose paired Δ AUC vs WSRL has a CI excluding 0."""
    groups = group_rows(rows)
    reference = reference_group(groups)
    if reference is None:
        return "no WSRL (r = 0) arm to compare with"
    resolved = []
    for group in groups:
        if group is not reference:
            diff = paired_difference(group.rows, reference.rows, "auc")
            if diff.sign:
                resolved.append(f"`{group.variant}` Δ AUC {diff}")
    return (f"WSRL final {reference.stat('final')} (n = {len(reference.rows)}); "
            + ("; ".join(resolved) if resolved else "no arm's Δ AUC vs WSRL excludes 0"))


def code_of(folder: Path) -> str:
    """The commits the study's cells ran at (short, "dirty" marked), and how many cells
    predate provenance records."""
    commits, unrecorded = set(), 0
    for path in sorted((folder / "cells").glob("*.json")):
        record = json.loads(path.read_text()).get("provenance")
        if record:
            commits.add((record.get("commit") or "unknown")[:7]
                        + (" (dirty)" if record.get("dirty") else ""))
        else:
            unrecorded += 1
    return ", ".join([*sorted(commits), *([f"unrecorded ({unrecorded} cells)"]
                                          if unrecorded else [])]) or "no cells"


def index_text(root: Path) -> str:
    rows = ["| study | task | arms | seeds | code of the cells | headline (95 % CI) |",
            "|---|---|---|---|---|---|"]
    for record_path in sorted(root.glob(f"*/{STUDY_RECORD}")):
        folder, study = record_path.parent, json.loads(record_path.read_text())
        results = folder / "results.csv"
        found = read_results_csv(results) if results.is_file() else []
        arms = dict.fromkeys(group.label for group in group_rows(found))
        pretraining = "shared pretraining" if study["shared_pretraining"] else \
            "one pretraining per seed"
        line = headline(found) if found else "no results yet"
        rows.append(f"| [{study['name']}]({folder.name}/report.md) | {study['env']}, "
                    f"{study['dataset']} | {', '.join(arms) or 'none'} | "
                    f"{len(study['seeds'])} ({pretraining}) | {code_of(folder)} | {line} |")
    return (f"{MARKER}\n# Committed studies\n\nEach study's report (tables, plots, where its "
            "cells ran) is linked from its name; `wsrl-wm study <spec> --commit` reruns or "
            "resumes it and rewrites this table. Headline: WSRL's final score (mean ± 95 % "
            "t-interval over seeds) and each arm's paired Δ AUC vs WSRL whose 95 % bootstrap "
            "CI excludes 0.\n\n" + "\n".join(rows) + "\n")


def write_index(root: Path, log=print) -> Path | None:
    """Rewrite `root`/README.md from the study folders under `root`; None (and a warning)
    when a README there was not written by this function."""
    path = Path(root) / INDEX
    if path.is_file() and not path.read_text().startswith(MARKER):
        log(f"warning: not rewriting {path}: it is not the index of committed studies")
        return None
    write_text_atomic(path, index_text(Path(root)))
    return path
