"""Unlearning diagnostics of a fine-tuning curve (docs/design.md).

Curves are (online_steps, values) with online step 0 = the switch (the evaluation S0 is the
score there). Everything is plain numpy so the same code scores live runs and saved CSVs. The
names of the logged metrics that runs are judged by live here too, so that the fine-tune that
logs them and the ablation that reads them back cannot drift apart.
"""

import numpy as np

from wsrl_wm.errors import WsrlError

SCORE = "eval/normalized_score"
# Curves an ablation keeps (name → logged metric): the score is required, the Q diagnostics on
# the offline probe (`diagnostics.q_diagnostics` with this prefix) are used when logged.
PROBE = "probe"
# What the dip comes from, measured at each evaluation (wsrl_wm/online/mechanism.py).
MECHANISM = "mechanism"
MECHANISM_CURVES = ("policy_drift", "q_real", "q_imagined", "model_error", "temperature",
                    "actor_grad_norm")
CURVE_COLUMNS = {"score": SCORE, **{name: f"{PROBE}/{name}" for name in
                                    ("q_policy", "q_data", "mc_return", "td_error")},
                 **{name: f"{MECHANISM}/{name}" for name in MECHANISM_CURVES}}
# World-model curves of r > 0 runs, logged at every rollout round: one-step and H-step error
# on fresh online data, one-step on the probe.
MODEL_COLUMNS = {"model_one_step": "model/one_step_mse", "model_h_step": "model/h_step_mse",
                 "model_probe": "model/probe_mse"}
DIP_WINDOW_FRACTION = 0.25  # of the online steps, unless a dip window is given


def dip_window_for(dip_window: float | None, online_steps: int) -> float:
    return dip_window if dip_window is not None else DIP_WINDOW_FRACTION * online_steps


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


def recovery_step(steps, scores, window: float) -> float | None:
    """First online step after the dip's low point (the lowest score within the first `window`
    online steps, where it is first reached) whose score is back at S0; 0 if the score never
    falls below S0 in the window; None if it never gets back (forgetting). Counting from the
    low point keeps an evaluation made before the fall (dense evaluations catch the policy still
    at S0 a few hundred steps in) from passing for a recovery."""
    steps, scores = _curve(steps, scores)
    s0 = switch_score(steps, scores)
    low = int(np.argmin(scores[steps <= window]))
    if scores[low] >= s0:
        return 0.0
    later = (steps > steps[low]) & (scores >= s0)
    return float(steps[later][0]) if later.any() else None


def dip_area(steps, scores, window: float) -> float:
    """The time-averaged score within the first `window` online steps: how deep and how long
    the dip is. Runs that all touch the same floor (a dip of S0 − 0) still differ here."""
    steps, scores = _curve(steps, scores)
    inside = steps <= window
    return area_under_curve(steps[inside], scores[inside])


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
    recovered = recovery_step(steps, scores, dip_window)
    return {"s0": switch_score(steps, scores), "dip": dip(steps, scores, dip_window),
            "dip_auc": dip_area(steps, scores, dip_window),
            "recovery_step": recovered, "forgot": recovered is None,
            "final": float(np.asarray(scores)[-1]), "auc": area_under_curve(steps, scores)}


def unlearning_metrics(steps, scores, dip_window: float) -> dict[str, float]:
    """`summarize` of the curve so far as logged metrics: S0, dip, AUC, and the recovery step
    or, while the score has not come back, `unlearning/forgetting` = 1."""
    summary = summarize(steps, scores, dip_window)
    metrics = {"unlearning/s0": summary["s0"], "unlearning/dip": summary["dip"],
               "unlearning/dip_auc": summary["dip_auc"],
               "unlearning/forgetting": float(summary["forgot"]),
               "unlearning/auc": summary["auc"]}
    if not summary["forgot"]:
        metrics["unlearning/recovery_step"] = summary["recovery_step"]
    return metrics
