"""Aggregate statistics as Agarwal et al. (2021, "Deep RL at the Edge of the Statistical
Precipice") recommend them: the interquartile mean (IQM) with a stratified percentile-bootstrap
CI, and the probability of improvement P(X > Y). The definitions follow their `rliable`
package (IQM = scipy's trim_mean with 25 % cut from each end; P(X > Y) the Mann–Whitney
statistic, ties counting half); here a study has one task, so the strata are the groups.
Below `MIN_INTERVAL_N` runs no interval is printed: a percentile bootstrap over 3 seeds covers
far less than 95 %."""

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
MIN_INTERVAL_N = 5
# Which way is better, per metric (the dip is a loss, the others gains).
HIGHER_IS_BETTER = {"dip": False, "dip_auc": True, "final": True, "auc": True, "s0": True}


@dataclass(frozen=True)
class Point:
    """A statistic with its 95 % bootstrap CI (None when n < MIN_INTERVAL_N)."""

    value: float
    low: float | None
    high: float | None
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        if self.low is None:
            return f"{self.value:.3g} (n = {self.n}: too few for an interval)"
        return f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}]"


def iqm(values) -> np.ndarray:
    """The mean of the middle half of the last axis: ⌊n/4⌋ values cut from each end."""
    values = np.sort(np.asarray(values, dtype=np.float64), axis=-1)
    n = values.shape[-1]
    return values[..., int(0.25 * n): n - int(0.25 * n)].mean(axis=-1)


def iqm_interval(values, seed: int = 0) -> Point:
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(values):
        return Point(float("nan"), None, None, 0)
    if len(values) < MIN_INTERVAL_N:
        return Point(float(iqm(values)), None, None, len(values))
    picks = np.random.default_rng(seed).integers(0, len(values), (RESAMPLES, len(values)))
    low, high = np.percentile(iqm(values[picks]), [2.5, 97.5])
    return Point(float(iqm(values)), float(low), float(high), len(values))


def improvement_probability(x, y, higher_is_better: bool = True) -> float:
    """P(a run of X is better than a run of Y), ties counting half."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if not higher_is_better:
        x, y = -x, -y
    diff = x[..., :, None] - y[..., None, :]
    return (diff > 0).mean(axis=(-2, -1)) + 0.5 * (diff == 0).mean(axis=(-2, -1))


def improvement_interval(x, y, higher_is_better: bool = True, seed: int = 0) -> Point:
    """P(X > Y) with a stratified bootstrap CI (X and Y resampled each within itself)."""
    x = np.asarray([v for v in x if v is not None], dtype=np.float64)
    y = np.asarray([v for v in y if v is not None], dtype=np.float64)
    n = min(len(x), len(y))
    if n == 0:
        return Point(float("nan"), None, None, 0)
    value = float(improvement_probability(x, y, higher_is_better))
    if n < MIN_INTERVAL_N:
        return Point(value, None, None, n)
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(0, len(x), (RESAMPLES, len(x)))]
    ys = y[rng.integers(0, len(y), (RESAMPLES, len(y)))]
    low, high = np.percentile(improvement_probability(xs, ys, higher_is_better), [2.5, 97.5])
    return Point(value, float(low), float(high), n)


def rliable_table(groups, reference) -> str:
    """Markdown: per group the IQM [CI] of dip, dip AUC, final and AUC, and P(group better than the
    reference) [CI] for each (the reference's own row has no probability)."""
    metrics = ("dip", "dip_auc", "final", "auc")
    header = ["variant", "r", "n", *(f"IQM {m}" for m in metrics),
              *(f"P(better {m})" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        cells = [str(iqm_interval([row[m] for row in group.rows])) for m in metrics]
        for m in metrics:
            cells.append("—" if group is reference else str(improvement_interval(
                [row[m] for row in group.rows], [row[m] for row in reference.rows],
                HIGHER_IS_BETTER[m])))
        lines.append("| " + " | ".join([group.variant, f"{group.ratio:g}",
                                        str(len(group.rows)), *cells]) + " |")
    return "\n".join(lines)


RLIABLE_CAPTION = (
    "Interquartile mean (IQM: the mean of the middle half of the runs) with a 95 % "
    f"percentile-bootstrap CI ({RESAMPLES} resamples), and the probability of improvement "
    "P(variant better than WSRL at r = 0): the chance that a run of the variant beats a run of "
    "WSRL (a smaller dip; a higher dip AUC, final score or AUC), ties counting half, with a "
    f"stratified bootstrap CI (Agarwal et al. 2021). Below {MIN_INTERVAL_N} runs no interval "
    "is given.")
