"""The committed results say what their data say. Every number in both tables of each
`docs/results/<study>/report.md`, and every figure the README and the studies' readings quote
as `` `variant` stat value ``, is recomputed here from the study's results.csv: the mean ±
t-interval over seeds and the paired percentile bootstrap are written out in this file, not
taken from the report code. A printed number must equal the recomputed one to its printed
precision."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
STUDIES = sorted(path.parent.name for path in RESULTS.glob("*/results.csv"))
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262}
COLUMNS = {"S0": "s0", "dip": "dip", "dip AUC": "dip_auc", "recovery step": "recovery_step",
           "final": "final", "AUC": "auc", "Q drift": "q_offline_drift",
           "Q drift (probe)": "q_offline_drift"}
NUMBER = r"[+\-−]?\d+(?:\.\d+)?"


def rows_of(study: str) -> list[dict]:
    with open(RESULTS / study / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def values(rows, variant: str, key: str, ratio: float | None = None) -> dict[int, float]:
    """{seed: value} of one variant (at `ratio`, if given), seeds without a value left out."""
    return {int(r["seed"]): float(r[key]) for r in rows if r["variant"] == variant and r[key]
            and (ratio is None or float(r["r"]) == ratio)}


def t_interval(numbers: list[float]) -> tuple[float, float | None]:
    mean = sum(numbers) / len(numbers)
    if len(numbers) < 2:
        return mean, None
    sd = (sum((x - mean) ** 2 for x in numbers) / (len(numbers) - 1)) ** 0.5
    return mean, T_975[len(numbers) - 1] * sd / len(numbers) ** 0.5


def paired(variant: dict[int, float], reference: dict[int, float]) -> tuple[float, ...]:
    """Mean per-seed difference and its 95 % percentile bootstrap (10 000 resamples of the
    seeds, generator seeded 0)."""
    diffs = np.array([variant[s] - reference[s] for s in sorted(variant) if s in reference])
    picks = np.random.default_rng(0).integers(0, len(diffs), (10_000, len(diffs)))
    low, high = np.percentile(diffs[picks].mean(axis=1), [2.5, 97.5])
    return float(diffs.mean()), float(low), float(high)


def number(text: str) -> float:
    return float(text.replace("−", "-").replace("+", ""))


def agrees(printed: str, value: float) -> bool:
    """`printed` is `value` rounded to the digits it shows."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(number(printed) - value) <= 0.5 * 10 ** -decimals + 1e-9


def check_estimate(text: str, numbers: list[float], where: str) -> None:
    mean, half = t_interval(numbers)
    parts = text.split(" ± ")
    assert agrees(parts[0], mean), (where, text, mean)
    assert (len(parts) == 2) == (half is not None), (where, text)
    if half is not None:
        assert agrees(parts[1], half), (where, text, half)


def check_paired(text: str, variant, reference, where: str) -> None:
    few = re.fullmatch(rf"({NUMBER}) \(n = (\d+): too few for an interval\)", text.strip())
    if few:  # below 5 pairs only the mean is printed
        pairs = len(set(variant) & set(reference))
        assert int(few[2]) == pairs < 5, (where, text, pairs)
        assert agrees(few[1], paired(variant, reference)[0]), (where, text)
        return
    found = re.fullmatch(rf"({NUMBER}) \[({NUMBER}), ({NUMBER})\]", text.strip())
    assert found, (where, text)
    for printed, value in zip(found.groups(), paired(variant, reference), strict=True):
        assert agrees(printed, value), (where, text, value)


def test_the_studies_are_committed():
    assert {"beyond", "hopper", "pointmaze"} <= set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_report_tables_recompute_from_results_csv(study):
    rows = rows_of(study)
    report = (RESULTS / study / "report.md").read_text()
    groups = {(r["variant"], r["r"]) for r in rows}
    seeds = [sum((r["variant"], r["r"]) == group for r in rows) for group in groups]
    # ≥ 3 arms of ≥ 5 seeds each, or a long run's 2 arms of 3 (its report gives no interval)
    assert (len(groups) >= 3 and min(seeds) >= 5) or (len(groups) == 2 and min(seeds) >= 3)
    header = ("| variant | r | n | S0 | dip | dip AUC | recovery step | final | AUC "
              "| Q drift (probe) | forgot |")
    labels = [c.strip() for c in header.strip("|").split("|")]
    table = report[report.index(header):].split("\n\n")[0].splitlines()[2:]
    assert len(table) == len({(r["variant"], r["r"]) for r in rows})
    for line in table:
        cells = dict(zip(labels, (c.strip() for c in line.strip("|").split("|")), strict=True))
        mine = [r for r in rows if r["variant"] == cells["variant"]
                and float(r["r"]) == float(cells["r"])]
        assert cells["n"] == str(len(mine))
        forgot = sum(r["forgot"] == "True" for r in mine)
        assert cells["forgot"] == f"{forgot}/{len(mine)}"
        for label in ("S0", "dip", "dip AUC", "recovery step", "final", "AUC",
                      "Q drift (probe)"):
            numbers = [float(r[COLUMNS[label]]) for r in mine if r[COLUMNS[label]]]
            if not numbers:
                assert cells[label] in ("never", "n/a"), (study, cells)
                continue
            check_estimate(cells[label], numbers, f"{study} {cells['variant']} {label}")
    section = report.split("## Paired difference to WSRL (r = 0)")[1].split("\n## ")[0]
    paired_lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert len(paired_lines) == len(table) - 1
    keys = ("dip", "dip_auc", "final", "auc")
    reference = {k: values(rows, "wsrl", k, 0.0) for k in keys}
    for line in paired_lines:
        variant, ratio, pairs, *diffs = (c.strip() for c in line.strip("|").split("|"))
        for key, text in zip(keys, diffs, strict=True):
            check_paired(text, values(rows, variant, key, float(ratio)), reference[key],
                         f"{study} {variant} Δ {key}")


QUOTE = re.compile(rf"`(\w+)(?: r=(\d+(?:\.\d+)?))?` (Δ (?:dip AUC|dip|final|AUC)|S0|dip AUC|"
                   rf"dip|final|AUC|Q drift) ({NUMBER}(?: ± {NUMBER}| \[{NUMBER}, {NUMBER}\])?)")


def check_quotes(text: str, study: str, where: str) -> int:
    """Recompute every `` `variant` stat value `` quote of `study` in `text` (`` `wsrl r=0.5` ``
    names a ratio of the main variant; plain `` `wsrl` `` is r = 0); their count."""
    rows, count = rows_of(study), 0
    for variant, r, stat, value in QUOTE.findall(" ".join(text.split())):  # across line breaks
        assert any(row["variant"] == variant for row in rows), (where, variant)
        ratio = float(r) if r else 0.0 if variant == "wsrl" else None
        if stat.startswith("Δ"):
            key = COLUMNS[stat[2:]]
            check_paired(value, values(rows, variant, key, ratio),
                         values(rows, "wsrl", key, 0.0), f"{where}: {variant} {stat}")
        else:
            numbers = list(values(rows, variant, COLUMNS[stat], ratio).values())
            check_estimate(value, numbers, f"{where}: {variant} {stat}")
        count += 1
    return count


@pytest.mark.parametrize("study", STUDIES)
def test_the_studys_reading_quotes_its_results(study):
    path = RESULTS / study / "reading.md"
    assert path.is_file(), f"{study} has no reading.md"
    assert check_quotes(path.read_text(), study, str(path.relative_to(ROOT))) >= 5
    assert "[reading.md](reading.md)" in (RESULTS / study / "report.md").read_text()


def test_the_readme_answer_table_quotes_the_results():
    """Each README line linking a study's report quotes figures of that study only."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()
             if re.search(r"docs/results/\w+/report\.md", line) and line.startswith("|")]
    studies = {re.search(r"docs/results/(\w+)/report\.md", line)[1] for line in lines}
    assert {"beyond", "hopper", "pointmaze"} <= studies
    for line in lines:
        study = re.search(r"docs/results/(\w+)/report\.md", line)[1]
        assert check_quotes(line, study, f"README ({study})") >= 2, line


def test_the_readme_answer_quotes_the_results():
    """Each finding of "Does the world model reduce unlearning?" quotes its linked study."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Does the world model reduce unlearning?")[1].split("\n## ")[0]
    findings = [part for part in section.split("\n- ") if "docs/results/" in part]
    assert len(findings) >= 4
    for finding in findings:
        study = re.search(r"docs/results/(\w+)/report\.md", finding)[1]
        assert check_quotes(finding, study, f"README answer ({study})") >= 1, finding
