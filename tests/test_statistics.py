"""The aggregate statistics (wsrl_wm/ablation/statistics.py) against independent
computations: scipy's trimmed mean for the IQM, pair counting by hand for P(X > Y)."""

import numpy as np
import pytest
from scipy import stats

from wsrl_wm.ablation.report import Group, plot_curves
from wsrl_wm.ablation.statistics import (
    improvement_interval,
    improvement_probability,
    iqm,
    iqm_interval,
    rliable_table,
)


@pytest.mark.parametrize("n", [4, 5, 8, 10, 13])
def test_iqm_is_scipys_trimmed_mean(n):
    values = np.random.default_rng(n).normal(size=n)
    assert float(iqm(values)) == pytest.approx(stats.trim_mean(values, 0.25))


def test_probability_of_improvement_counts_pairs_with_ties_half():
    x, y = [3.0, 1.0, 2.0], [2.0, 0.0]
    # pairs (x, y): 3>2, 3>0, 1<2, 1>0, 2=2 (half), 2>0 → 4.5 / 6
    assert float(improvement_probability(x, y)) == pytest.approx(4.5 / 6)
    # for a loss (the dip) smaller is better: 3>2 ✗, 3>0 ✗, 1<2 ✓, 1>0 ✗, 2=2 half, 2>0 ✗
    assert float(improvement_probability(x, y, higher_is_better=False)) == pytest.approx(1.5 / 6)


def test_intervals_only_from_five_runs_and_inside_the_data_range():
    assert iqm_interval([10.0, 20.0, 30.0]).low is None
    assert "too few for an interval" in str(iqm_interval([10.0, 20.0, 30.0]))
    point = iqm_interval([0.0, 0.0, 100.0, 100.0, 100.0, 90.0])
    assert 0.0 <= point.low <= point.value <= point.high <= 100.0
    better = improvement_interval([9.0, 8.0, 7.0, 9.5, 8.5], [1.0, 2.0, 3.0, 1.5, 2.5])
    assert better.value == 1.0 and better.low == 1.0 and better.high == 1.0


def test_rliable_table_rows_per_group():
    reference = Group("wsrl", 0.0, [{"dip": d, "dip_auc": 100 - d, "final": f, "auc": a}
                                     for d, f, a in [(80, 20, 30), (70, 30, 35), (90, 10, 20),
                                                     (60, 40, 45), (85, 15, 25)]])
    model = Group("wsrl", 0.5, [{"dip": d, "dip_auc": 25.0, "final": f, "auc": a}
                                 for d, f, a in [(40, 60, 50), (30, 70, 55), (50, 50, 45),
                                                 (20, 80, 65), (45, 55, 40)]])
    lines = rliable_table([reference, model], reference).splitlines()
    assert len(lines) == 4 and lines[2].endswith("| — | — | — | — |")
    dip, area, final, auc = lines[3].removesuffix(" |").split(" | ")[7:]
    assert dip == "1 [1, 1]" and final == "1 [1, 1]"  # every pair better
    # dip AUC, higher is better: each 25 beats 20, 10 and 15 and loses to 30 and 40: 15 of 25
    assert area.startswith("0.6 [")
    # AUC pairs: 50, 55 and 65 beat all 5; 45 beats 4 and ties 1; 40 beats 4 → 23.5 / 25
    assert auc.startswith("0.94 [")


def test_bands_stay_inside_the_metric_range(tmp_path, monkeypatch):
    """Success rates near 100 with a spread: a t-band would cross 100, the bootstrap band of
    the mean cannot."""
    from matplotlib.axes import Axes

    bands = []
    original = Axes.fill_between
    monkeypatch.setattr(Axes, "fill_between", lambda self, x, low, high, **kw: (
        bands.append((np.asarray(low), np.asarray(high))), original(self, x, low, high, **kw))[1])

    class Cell:
        variant, ratio = "wsrl", 0.0

    runs = [(Cell, {"curves": {"score": {"online_step": [0, 500], "value": [v, v]}}})
            for v in (100.0, 100.0, 100.0, 100.0, 40.0)]
    assert plot_curves(runs, "score", "score", tmp_path / "s.png", None)
    low, high = bands[0]
    assert (low >= 40.0).all() and (high <= 100.0).all()
