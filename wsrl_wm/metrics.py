"""Unlearning diagnostics of a fine-tuning curve (DESIGN.md §6).

Curves are (online_steps, values) with online step 0 = the switch (the evaluation S0 is the
score there). Everything is plain numpy so the same code scores live runs and saved CSVs.
"""

import numpy as np

from wsrl_wm.errors import WsrlError


def _curve(steps, values) -> tuple[np.ndarray, np.ndarray]:
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1 or not len(steps):
        raise WsrlError(f"a curve needs matching 1-D steps and values, got {steps.shape} and "
                        f"{values.shape}")
    if np.any(np.diff(steps) <= 0):
        raise WsrlError("curve steps must be strictly increasing")
    return steps, values


def switch_score(steps, scores) -> float:
    """S0: the evaluation at online step 0 (the switch)."""
    steps, scores = _curve(steps, scores)
    if steps[0] != 0:
        raise WsrlError(f"the curve has no evaluation at the switch (first step {steps[0]:g})")
    return float(scores[0])


def dip(steps, scores, window: float) -> float:
    """S0 − the lowest score within the first `window` online steps (0 if it never drops)."""
    steps, scores = _curve(steps, scores)
    s0 = switch_score(steps, scores)
    return float(max(0.0, s0 - scores[steps <= window].min()))


def recovery_step(steps, scores) -> float | None:
    """First online step after the switch whose score is back at S0 or above; None if the
    score never gets back there (forgetting)."""
    steps, scores = _curve(steps, scores)
    s0 = switch_score(steps, scores)
    later = (steps > 0) & (scores >= s0)
    return float(steps[later][0]) if later.any() else None


def area_under_curve(steps, values) -> float:
    """Trapezoid area divided by the step span: the curve's time-averaged value."""
    steps, values = _curve(steps, values)
    if len(steps) == 1:
        return float(values[0])
    area = np.sum((values[1:] + values[:-1]) * np.diff(steps)) / 2.0
    return float(area / (steps[-1] - steps[0]))


def drift(steps, values) -> float:
    """Change from the switch to the end (e.g. of mean Q on the offline probe)."""
    steps, values = _curve(steps, values)
    return float(values[-1] - values[0])


def summarize(steps, scores, dip_window: float) -> dict:
    """The per-run numbers of the ablation table."""
    recovered = recovery_step(steps, scores)
    return {"s0": switch_score(steps, scores), "dip": dip(steps, scores, dip_window),
            "recovery_step": recovered, "forgot": recovered is None,
            "final": float(np.asarray(scores)[-1]), "auc": area_under_curve(steps, scores)}
