"""The sweep's outputs: results.csv, report.md (mean ± 95 % CI per variant and r, where the
cells ran, and a paragraph reading it), scores.png, q_probe.png, and optionally one wandb run
with all of them.

Everything is built from the cells' done.json records, so a resumed sweep reports finished
cells exactly as a fresh one would. A hand-written reading of the results goes in
`reading.md` beside the report (never rebuilt), which the report then links.
"""

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsrl_wm.ablation.cell import summarize_curves
from wsrl_wm.ablation.mechanism import MECHANISM_CAPTION, MECHANISM_PLOTS, mechanism_table
from wsrl_wm.ablation.paired import (
    PAIRED_STATS,
    RESAMPLES,
    paired_difference,
    paired_reading,
    paired_table,
    reference_group,
    regime,
)
from wsrl_wm.ablation.plan import MAIN_VARIANT, Cell
from wsrl_wm.ablation.statistics import MIN_INTERVAL_N, RLIABLE_CAPTION, rliable_table
from wsrl_wm.atomic import write_text_atomic
from wsrl_wm.metrics import dip_window_for
from wsrl_wm.provenance import build_label

RESULT_COLUMNS = ("variant", "r", "seed", "s0", "dip", "dip_auc", "recovery_step", "forgot",
                  "final", "auc", "q_offline_drift", "cell")
READING = "reading.md"  # the hand-written reading beside a report
TABLE_STATS = (("s0", "S0"), ("dip", "dip"), ("dip_auc", "dip AUC"),
               ("recovery_step", "recovery step"),
               ("final", "final"), ("auc", "AUC"), ("q_offline_drift", "Q drift (probe)"))
# Student t quantiles t_{0.975, df}; between tabulated df the smaller df's (wider) value is used.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
         17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
         25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
         120: 1.980}
Z_975 = 1.96


def t_quantile(df: int) -> float:
    """t_{0.975, df}: tabulated up to df 120, the normal quantile beyond."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df > 120:
        return Z_975
    return T_975[max(d for d in T_975 if d <= df)]


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95 % CI half-width (None below two values)."""

    mean: float
    half: float | None
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        return _number(self.mean) + ("" if self.half is None else f" ± {_number(self.half)}")

    def overlaps(self, other: "Estimate") -> bool:
        return (self.mean - self.half <= other.mean + other.half
                and other.mean - other.half <= self.mean + self.half)


def mean_ci(values: list[float]) -> Estimate:
    """Mean ± t_{0.975, n−1} · s / √n over seeds (s: the sample standard deviation)."""
    values = [v for v in values if v is not None]
    if not values:
        return Estimate(math.nan, None, 0)
    mean = float(np.mean(values))
    if len(values) < 2:
        return Estimate(mean, None, 1)
    half = t_quantile(len(values) - 1) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return Estimate(mean, half, len(values))


def _number(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"


@dataclass
class Group:
    """The runs of one (variant, r) across seeds."""

    variant: str
    ratio: float
    rows: list[dict]

    @property
    def label(self) -> str:
        return f"{self.variant} r={self.ratio:g}"

    def stat(self, key: str) -> Estimate:
        return mean_ci([row[key] for row in self.rows])

    @property
    def forgot(self) -> int:
        return sum(row["forgot"] for row in self.rows)


def result_rows(runs: list[tuple[Cell, dict]], dip_window: float | None) -> list[dict]:
    """One results.csv row per fine-tune cell, summarised with this sweep's dip window."""
    rows = []
    for cell, record in runs:
        window = dip_window_for(dip_window, record["online_steps"])
        summary = summarize_curves(record["curves"], window)
        rows.append({"variant": cell.variant, "r": cell.ratio, "seed": cell.seed, **summary,
                     "cell": cell.name})
    return rows


def group_rows(rows: list[dict]) -> list[Group]:
    """Groups in table order: the main variant by r first, then the baselines as planned."""
    groups: dict[tuple[str, float], Group] = {}
    for row in rows:
        key = (row["variant"], row["r"])
        groups.setdefault(key, Group(*key, rows=[])).rows.append(row)
    return sorted(groups.values(), key=lambda g: (g.variant != MAIN_VARIANT, g.ratio))


def markdown_table(groups: list[Group]) -> str:
    header = ["variant", "r", "n", *(label for _, label in TABLE_STATS), "forgot"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        cells = [group.variant, f"{group.ratio:g}", str(len(group.rows))]
        for key, _ in TABLE_STATS:
            estimate = group.stat(key)
            cells.append("never" if key == "recovery_step" and estimate.n == 0 else str(estimate))
        cells.append(f"{group.forgot}/{len(group.rows)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _compare(a: Estimate, b: Estimate) -> str:
    if a.half is None or b.half is None:
        return ("With a single seed there is no confidence interval, so this is one observation, "
                "not evidence of a difference.")
    if a.overlaps(b):
        return (f"Their 95 % intervals overlap, so with n = {a.n} and {b.n} seeds this sweep "
                "does not resolve the difference.")
    return "Their 95 % intervals do not overlap."


def _best_against_plain(main: list[Group], key: str, name: str, lowest: bool) -> str:
    """The r with the lowest (or highest) mean of `key`, against r = 0 when the sweep has it."""
    sign = 1 if lowest else -1
    best = min(main, key=lambda g: (sign * g.stat(key).mean, g.ratio))
    plain = next((g for g in main if g.ratio == 0), None)
    extreme = "smallest" if lowest else "highest"
    if plain is None:
        return (f"The {extreme} mean {name} was at r = {best.ratio:g} ({best.stat(key)}); the "
                "sweep has no r = 0 run to compare it with.")
    if best is plain:
        return (f"Plain WSRL (r = 0) had the {extreme} mean {name} ({plain.stat(key)}); no r > 0 "
                f"{'lowered' if lowest else 'raised'} it on average.")
    return (f"The {extreme} mean {name} was at r = {best.ratio:g}: {best.stat(key)} against "
            f"{plain.stat(key)} for plain WSRL (r = 0). "
            + _compare(best.stat(key), plain.stat(key)))


def interpret(groups: list[Group], windows: list[float]) -> str:
    """A factual paragraph: where the dip was smallest and the final score highest (relative to
    r = 0 given the CIs), the baselines, whether any run forgot, and the probe Q drift."""
    if not groups:
        return "No fine-tuning run finished, so there is nothing to compare."
    main = sorted((g for g in groups if g.variant == MAIN_VARIANT), key=lambda g: g.ratio)
    sentences = []
    if any(g.stat("dip").mean > 0 for g in groups):
        if len(main) > 1:
            sentences.append(_best_against_plain(main, "dip", "dip", lowest=True))
    else:
        sentences.append(f"No run dipped below its switch score within {_within(windows)}.")
    if len(main) > 1:
        sentences.append(_best_against_plain(main, "final", "final score", lowest=False))
    plain = next((g for g in main if g.ratio == 0), None)
    for group in groups:
        if group.variant != MAIN_VARIANT:
            reference = f" against {plain.stat('dip')} for WSRL at r = 0" if plain else ""
            sentences.append(f"Baseline {group.variant}: mean dip {group.stat('dip')}"
                             f"{reference}.")
    rows = [row for group in groups for row in group.rows]
    forgot = [Path(row["cell"]).name for row in rows if row["forgot"]]
    if forgot:
        sentences.append(f"{len(forgot)} of {len(rows)} runs never got back to their switch score "
                         f"(forgot): {', '.join(forgot)}.")
    else:
        sentences.append(f"No run forgot: all {len(rows)} run(s) got back to their switch "
                         "score.")
    drifts = [f"{g.label}: {g.stat('q_offline_drift')}" for g in groups
              if g.stat("q_offline_drift").n]
    if drifts:
        sentences.append("Mean Q(s, π(s)) on the offline probe changed from the switch to the "
                         f"end by {'; '.join(drifts)}.")
    if all(len(group.rows) == 1 for group in groups):
        sentences.append("Every setting ran with one seed, so these are single observations; "
                         "differences between them are not evidence without more seeds.")
    return " ".join(sentences)


def _within(windows: list[float]) -> str:
    if not windows:
        return "the dip window"
    return f"the first {', '.join(f'{w:g}' for w in sorted(set(windows)))} online steps"


PAIRED_CAPTION = ("Paired difference to WSRL (r = 0): per seed, variant − WSRL on the same "
                  "pretrained checkpoint (a variant with a pretraining of its own pairs by "
                  "seed only); mean [95 % percentile-bootstrap CI over seeds, "
                  f"{RESAMPLES} resamples].")


def provenance_section(records: list[dict]) -> str:
    """Markdown: how many cells ran on each build and machine (`wsrl_wm.provenance`), flagged
    when they differ; cells from before the records existed count as "unrecorded"."""
    labels = Counter(build_label(record.get("provenance")) for record in records)
    lines = ["| code, CPU, torch, threads | cells |", "|---|---|",
             *(f"| {label} | {count} |" for label, count in sorted(labels.items()))]
    recorded = [record["provenance"] for record in records if record.get("provenance")]
    codes = {(p.get("commit"), p.get("dirty")) for p in recorded}
    machines = {(p.get("cpu"), p.get("torch"), p.get("threads")) for p in recorded}
    notes = []
    if len(codes) > 1 or len(machines) > 1:
        notes.append(f"**Mixed provenance:** the cells come from {len(codes)} code state(s) and "
                     f"{len(machines)} machine setting(s) (CPU, torch, threads); results of a "
                     "config and seed agree bit for bit only on the same build and CPU type.")
    elif recorded:
        notes.append("Every recorded cell comes from one code state and one machine setting.")
    if len(recorded) < len(records):
        notes.append(f"{len(records) - len(recorded)} of {len(records)} cells predate these "
                     "records (unrecorded): where they ran is not known.")
    return "\n".join(lines) + "\n\n" + " ".join(notes)


def render_report(groups: list[Group], windows: list[float], images: list[Path],
                  title: str = "Rollout-ratio ablation", dataset_score: float | None = None,
                  setup: str = "", provenance: str = "", reading: bool = False,
                  mechanism: str = "") -> str:
    """The report's markdown; `provenance`: `provenance_section`'s table, `reading`: link the
    hand-written reading beside it, `mechanism`: `mechanism_table`'s table."""
    paired = paired_table(groups)
    return "\n\n".join(part for part in [
        f"# {title}",
        reading and f"What these results show, read by hand: [{READING}]({READING}).",
        setup and f"## Setup\n\n{setup}",
        "Mean ± 95 % CI over seeds (Student t). S0: normalised score at the switch; dip: S0 − "
        f"lowest score within {_within(windows)}; dip AUC: time-averaged score within "
        "that window (how deep and how long the dip is); recovery step: first online step "
        "after the dip's low point with score ≥ S0 (0: no dip), over the runs that recovered; "
        "forgot: never recovered; final: last "
        "evaluation; AUC: time-averaged score; Q drift: change of mean Q(s, π(s)) on the offline "
        "probe from the switch to the end.",
        markdown_table(groups),
        paired and f"## Paired difference to WSRL (r = 0)\n\n{PAIRED_CAPTION}\n\n{paired}",
        paired and "## Interquartile mean and probability of improvement\n\n"
                   f"{RLIABLE_CAPTION}\n\n{rliable_table(groups, reference_group(groups))}",
        mechanism and "## The mechanism in numbers\n\n" + MECHANISM_CAPTION + "\n\n" + mechanism,
        "## Reading\n\n" + " ".join(filter(None, [regime(groups, dataset_score),
                                                  interpret(groups, windows),
                                                  paired_reading(groups)])),
        provenance and f"## Where the cells ran\n\n{provenance}",
        *(f"![{path.stem}]({path.name})" for path in images),
    ] if part) + "\n"


def results_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if row[k] is None else row[k]) for k in RESULT_COLUMNS}
                     for row in rows)
    return buffer.getvalue()


def plot_curves(runs: list[tuple[Cell, dict]], key: str, ylabel: str, path: Path,
                window: float | None, reference: tuple[str, str] | None = None) -> bool:
    """Curve `key` against the online step: the mean per (variant, r) with the 95 %
    percentile-bootstrap interval of that mean over seeds as a band (from MIN_INTERVAL_N seeds;
    a mean of resampled values never leaves the metric's range, as a t-band can), thin lines
    per seed; the dip window shaded; the mean of the
    `reference` (curve key, label) dashed, e.g. the probe's MC return. False when no run
    logged `key`."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    series: dict[str, list[dict]] = {}
    for cell, record in runs:
        if key in record["curves"]:
            series.setdefault(f"{cell.variant} r={cell.ratio:g}", []).append(record["curves"][key])
    if not series:
        return False
    figure = Figure(figsize=(7, 4.5))
    ax = figure.subplots()
    for i, (label, curves) in enumerate(series.items()):
        for curve in curves:
            ax.plot(curve["online_step"], curve["value"], color=f"C{i}", lw=0.7, alpha=0.35)
        grid = np.unique(np.concatenate([curve["online_step"] for curve in curves]))
        values = np.array([np.interp(grid, c["online_step"], c["value"]) for c in curves])
        mean = values.mean(axis=0)
        ax.plot(grid, mean, color=f"C{i}", lw=2, label=f"{label} (n={len(curves)})")
        if len(curves) >= MIN_INTERVAL_N:
            picks = np.random.default_rng(0).integers(0, len(curves), (RESAMPLES, len(curves)))
            low, high = np.percentile(values[picks].mean(axis=1), [2.5, 97.5], axis=0)
            ax.fill_between(grid, low, high, color=f"C{i}", alpha=0.15, lw=0)
    if reference:
        ref_key, ref_label = reference
        values = [v for _, record in runs for v in record["curves"].get(ref_key, {}).get(
            "value", [])]
        if values:
            ax.axhline(float(np.mean(values)), color="0.3", ls="--", lw=1, label=ref_label)
    if window:
        ax.axvspan(0, window, color="0.9", zorder=0, label="dip window")
    ax.set_xlabel("online step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def plot_dose_response(groups: list[Group], path: Path) -> bool:
    """Each PAIRED_STATS difference (paired by seed, to r = 0) against r for the main variant,
    with its bootstrap 95 % CI, one panel each. False when it has fewer than three ratios."""
    from matplotlib.figure import Figure

    reference = reference_group(groups)
    main = [g for g in groups if g.variant == MAIN_VARIANT and g is not reference]
    if reference is None or len(main) < 2:
        return False
    figure = Figure(figsize=(4 * len(PAIRED_STATS), 3.6))
    for ax, (key, label) in zip(figure.subplots(1, len(PAIRED_STATS)), PAIRED_STATS,
                                strict=True):
        ratios = [0.0] + [g.ratio for g in main]
        diffs = [paired_difference(g.rows, reference.rows, key) for g in main]
        means = [0.0] + [d.mean for d in diffs]
        ax.plot(ratios, means, "o-", color="C0")
        for ratio, diff in zip(ratios[1:], diffs, strict=True):
            if diff.low is not None:
                ax.vlines(ratio, diff.low, diff.high, color="C0", lw=2, alpha=0.5)
        ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_xlabel("model rollout ratio r")
        ax.set_title(f"{label} vs r = 0 (paired)", fontsize=10)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def log_to_wandb(out: Path, rows: list[dict], images: list[Path], mode: str,
                 config: dict) -> None:
    """One wandb run (offline unless mode says online) with the table and the plots."""
    import wandb

    run = wandb.init(project="wsrl-wm", name=f"ablation-{out.name}", dir=str(out), mode=mode,
                     job_type="ablation", config=config)
    table = wandb.Table(columns=list(RESULT_COLUMNS),
                        data=[[row[k] for k in RESULT_COLUMNS] for row in rows])
    run.log({"ablation/results": table,
             **{f"ablation/{path.stem}": wandb.Image(str(path)) for path in images}})
    run.finish()


def write_report(out: Path, runs: list[tuple[Cell, dict]], dip_window: float | None,
                 wandb_mode: str, config: dict, title: str = "Rollout-ratio ablation",
                 dataset_score: float | None = None, setup: str = ""
                 ) -> tuple[dict[str, Path], str]:
    """Write every output into `out`; returns their paths and the markdown table.
    `dataset_score` (the data's average normalised episode score) adds the regime."""
    rows = result_rows(runs, dip_window)
    groups = group_rows(rows)
    windows = [dip_window_for(dip_window, record["online_steps"]) for _, record in runs]
    outputs = {"results": out / "results.csv", "report": out / "report.md"}
    write_text_atomic(outputs["results"], results_csv(rows))
    window = max(windows, default=None)
    plots = {"scores": ("score", "normalised score", None),
             "q_probe": ("q_policy", "Q(s, π(s)) on the offline probe",
                         ("mc_return", "MC return on the probe (mean)")),
             "td_probe": ("td_error", "TD error on the offline probe", None),
             "model_error": ("model_one_step", "world model one-step MSE on fresh online data",
                             None),
             "model_h_step": ("model_h_step", "world model H-step MSE along online trajectories",
                              None),
             **{f"mechanism_{key}": (key, label, None) for key, label in MECHANISM_PLOTS}}
    for name, (key, ylabel, reference) in plots.items():
        path = out / f"{name}.png"
        if plot_curves(runs, key, ylabel, path, window, reference):
            outputs[name] = path
    if plot_dose_response(groups, out / "dose_response.png"):
        outputs["dose_response"] = out / "dose_response.png"
    images = [path for name, path in outputs.items() if name in plots or name == "dose_response"]
    write_text_atomic(outputs["report"], render_report(
        groups, windows, images, title, dataset_score, setup,
        provenance_section([record for _, record in runs]), (out / READING).is_file(),
        mechanism_table(runs, mean_ci)))
    if wandb_mode != "disabled" and rows:
        log_to_wandb(out, rows, images, wandb_mode, config)
    paired = paired_table(groups)  # printed too: the answer a reader wants is the difference
    return outputs, markdown_table(groups) + (f"\n\n{PAIRED_CAPTION}\n\n{paired}"
                                              if paired else "")
