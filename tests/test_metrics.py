"""Unlearning metrics on hand-made curves."""

import pytest

from wsrl_wm.errors import WsrlError
from wsrl_wm.metrics import area_under_curve, dip, dip_area, drift, recovery_step, summarize

STEPS = [0, 10, 20, 30, 40]


def test_dip_and_recovery_of_a_curve_that_drops_then_recovers():
    scores = [50.0, 30.0, 45.0, 55.0, 60.0]
    assert dip(STEPS, scores, window=20) == 20.0
    assert recovery_step(STEPS, scores, window=20) == 30.0


def test_dip_only_looks_inside_the_window():
    scores = [50.0, 45.0, 48.0, 10.0, 60.0]
    assert dip(STEPS, scores, window=20) == 5.0
    assert dip(STEPS, scores, window=30) == 40.0


def test_a_curve_that_never_drops_has_no_dip_and_recovers_at_once():
    scores = [50.0, 52.0, 55.0, 58.0, 60.0]
    assert dip(STEPS, scores, window=40) == 0.0
    assert recovery_step(STEPS, scores, window=40) == 0.0


def test_never_recovering_is_forgetting():
    scores = [50.0, 20.0, 25.0, 30.0, 49.9]
    assert recovery_step(STEPS, scores, window=20) is None
    summary = summarize(STEPS, scores, dip_window=20)
    assert summary == {"s0": 50.0, "dip": 30.0, "dip_auc": pytest.approx(
                           (50 + 20 + 20 + 25) * 10 / 2 / 20),
                       "recovery_step": None, "forgot": True,
                       "final": 49.9, "auc": pytest.approx(
                           (50 + 20 + 20 + 25 + 25 + 30 + 30 + 49.9) * 10 / 2 / 40)}


def test_recovery_counts_from_the_dips_low_point_not_from_a_score_before_the_fall():
    # Still at S0 ten steps in (a dense evaluation before the fall), at the floor at 20 and 30:
    # the first score back at S0 after the first time the floor is reached is at 40.
    scores = [50.0, 50.0, 0.0, 0.0, 55.0]
    assert recovery_step(STEPS, scores, window=30) == 40.0
    assert recovery_step(STEPS[:4], scores[:4], window=30) is None  # never back: forgetting
    # The low point is looked for inside the window only; none below S0 there is no dip.
    assert recovery_step(STEPS, scores, window=10) == 0.0


def test_the_dip_area_separates_dips_that_reach_the_same_floor():
    short, long = [50.0, 0.0, 50.0, 50.0, 50.0], [50.0, 0.0, 0.0, 0.0, 50.0]
    assert dip(STEPS, short, window=40) == dip(STEPS, long, window=40) == 50.0
    assert dip_area(STEPS, short, window=40) == pytest.approx((25 + 25 + 50 + 50) / 4)
    assert dip_area(STEPS, long, window=40) == pytest.approx((25 + 0 + 0 + 25) / 4)
    assert dip_area(STEPS, long, window=25) == pytest.approx((25 + 0) / 2)  # steps 0-20 only


def test_auc_is_the_time_average_of_the_trapezoid():
    assert area_under_curve([0, 10, 30], [0.0, 10.0, 10.0]) == pytest.approx((50 + 200) / 30)
    assert area_under_curve([0], [7.0]) == 7.0


def test_drift_is_end_minus_switch():
    assert drift(STEPS, [5.0, 1.0, -3.0, 0.0, -2.5]) == -7.5


@pytest.mark.parametrize(("steps", "scores", "message"), [
    ([10, 20], [1.0, 2.0], "no evaluation at the switch"),
    ([0, 0], [1.0, 2.0], "strictly increasing"),
    ([0, 10], [1.0], "matching"),
    ([], [], "matching"),
])
def test_malformed_curves_are_rejected(steps, scores, message):
    with pytest.raises(WsrlError, match=message):
        summarize(steps, scores, dip_window=10)
