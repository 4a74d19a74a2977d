"""Differences to plain WSRL, paired by seed, and the task's regime.

Every variant of a seed fine-tunes the same pretrained checkpoint (unless it has a pretraining of
its own, `Variant.own_pretraining`: then it pairs by seed only), so seed-to-seed variation of
the pretraining cancels in the per-seed difference to WSRL (r = 0); the difference's 95 % CI is
a percentile bootstrap over seeds (resampled with replacement, a fixed generator, so a report
recomputed from the same results.csv is identical).
"""

from dataclasses import dataclass

import numpy as np

from wsrl_wm.ablation.plan import MAIN_VARIANT
from wsrl_wm.ablation.statistics import MIN_INTERVAL_N

PAIRED_STATS = (("dip", "Δ dip"), ("dip_auc", "Δ dip AUC"), ("final", "Δ final"),
                ("auc", "Δ AUC"))
RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """A mean difference with its bootstrap 95 % CI (None below MIN_INTERVAL_N pairs)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        if self.low is None:
            return f"{self.mean:+.3g} (n = {self.n}: too few for an interval)"
        return f"{self.mean:+.3g} [{self.low:+.3g}, {self.high:+.3g}]"

    @property
    def sign(self) -> int:
        """+1 / −1 when the whole CI is above / below zero, else 0 (not resolved)."""
        if self.low is None:
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def bootstrap_mean(values: list[float], resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Below MIN_INTERVAL_N values no interval: a percentile bootstrap over 3 seeds covers far
    less than 95 % (3 equal values would print [+0, +0])."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return Interval(float("nan"), None, None, 0)
    if len(values) < MIN_INTERVAL_N:
        return Interval(float(values.mean()), None, None, len(values))
    picks = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    means = values[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(values.mean()), float(low), float(high), len(values))


def paired_difference(rows: list[dict], reference: list[dict], key: str) -> Interval:
    """Mean over the seeds both have of (row − reference row) for `key`."""
    by_seed = {row["seed"]: row[key] for row in reference if row[key] is not None}
    return bootstrap_mean([row[key] - by_seed[row["seed"]] for row in rows
                           if row[key] is not None and row["seed"] in by_seed])


def reference_group(groups):
    return next((g for g in groups if g.variant == MAIN_VARIANT and g.ratio == 0), None)


def paired_table(groups) -> str:
    """Markdown: every group's paired differences to WSRL (r = 0); "" without that group."""
    reference = reference_group(groups)
    if reference is None:
        return ""
    header = ["variant", "r", "pairs", *(label for _, label in PAIRED_STATS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        if group is reference:
            continue
        diffs = [paired_difference(group.rows, reference.rows, key) for key, _ in PAIRED_STATS]
        lines.append("| " + " | ".join([group.variant, f"{group.ratio:g}", str(diffs[0].n),
                                        *map(str, diffs)]) + " |")
    return "\n".join(lines)


def paired_reading(groups) -> str:
    """One sentence per group: do its dip and its dip AUC differ from WSRL's, resolved by the
    paired CI? (The dip AUC separates arms whose dips all reach the same floor.)"""
    reference = reference_group(groups)
    if reference is None:
        return ""
    verdicts = {-1: "smaller than WSRL's (the CI is below 0)",
                1: "larger than WSRL's (the CI is above 0)",
                0: "not resolved from WSRL's (the CI contains 0)"}
    sentences = []
    for group in groups:
        if group is reference:
            continue
        dip, area = (paired_difference(group.rows, reference.rows, key)
                     for key in ("dip", "dip_auc"))
        if dip.n:
            sentences.append(f"{group.label}: dip {verdicts[dip.sign]}, Δ = {dip}; dip AUC "
                             f"{verdicts[area.sign]}, Δ = {area}; over {dip.n} paired seed(s).")
    return " ".join(sentences)


def regime(groups, dataset_score: float | None) -> str:
    """The regime of "The Three Regimes of Offline-to-Online RL": the pretrained policy's
    score at the switch (S0, the same checkpoint in every variant of a seed) against the
    dataset's average episode score."""
    reference = reference_group(groups) or (groups[0] if groups else None)
    if reference is None:
        return ""
    if dataset_score is None:
        return ("Regime: not stated, since the dataset's average episode score is unknown (no "
                "readable dataset file, or no normalised score for this env).")
    s0 = reference.stat("s0")
    if s0.half is None:
        low = high = s0.mean
    else:
        low, high = s0.mean - s0.half, s0.mean + s0.half
    name = ("superior" if low > dataset_score else "inferior" if high < dataset_score
            else "comparable")
    return (f"Regime: the pretrained policy scores S0 = {s0} against the dataset's average "
            f"episode score {dataset_score:.3g}, the **{name}** regime (superior: S0's CI above "
            "the data's average, inferior: below it, comparable: overlapping). Unlearning is "
            "expected where the pretrained policy is at least as good as its data.")
