"""The mechanism of the dip in numbers: each arm's mechanism curves (wsrl_wm/online/mechanism.py,
logged at every evaluation) read at a few online steps, mean ± 95 % t-interval over seeds, so a
reading can say where the arms part without reading values off the plots."""

import numpy as np

from wsrl_wm.ablation.plan import Cell

# (curve key, what it is) in the order the table and the plots give them.
MECHANISM_PLOTS = (("policy_drift", "policy drift on the probe, mean |π_t(s) − π_0(s)|"),
                   ("q_real", "Q(s, a) on real (online) rows"),
                   ("q_imagined", "Q(s, a) on imagined (model) rows"),
                   ("model_error", "world model one-step MSE where the policy goes now"),
                   ("temperature", "SAC temperature α"),
                   ("actor_grad_norm", "actor gradient norm"))
# The first evaluation after the switch, inside the dip, the end of the dip window; and the end.
MECHANISM_STEPS = (100, 500, 2000)

MECHANISM_CAPTION = (
    "Each mechanism curve (logged at every evaluation; plots below) at online steps "
    f"{', '.join(map(str, MECHANISM_STEPS))} and at the end: mean ± 95 % CI over seeds "
    "(Student t). policy_drift: mean |π_t(s) − π_0(s)| on the offline probe; q_real / "
    "q_imagined: mean Q(s, a) on the real / imagined rows of a training batch; model_error: the "
    "world model's one-step MSE on the states the policy visits now; temperature: SAC's α; "
    "actor_grad_norm: the actor's gradient norm.")


def value_at(curve: dict, step: float) -> float | None:
    """The curve's value at `step`, interpolated between evaluations; None outside it."""
    steps = curve["online_step"]
    if not steps or not steps[0] <= step <= steps[-1]:
        return None
    return float(np.interp(step, steps, curve["value"]))


def mechanism_table(runs: list[tuple[Cell, dict]], mean_ci) -> str:
    """Markdown: one row per (mechanism curve, arm) that logged it, its mean ± CI over seeds at
    each of MECHANISM_STEPS and at the end; "" when no run logged a mechanism curve. `mean_ci`
    is the report's estimator (kept there so both tables use one)."""
    arms: dict[str, list[dict]] = {}
    for cell, record in runs:
        arms.setdefault(f"{cell.variant} r={cell.ratio:g}", []).append(record["curves"])
    header = ["curve", "arm", *(f"step {step}" for step in MECHANISM_STEPS), "end"]
    lines = []
    for key, _ in MECHANISM_PLOTS:
        for arm, curves in arms.items():
            logged = [c[key] for c in curves if key in c]
            if not logged:
                continue
            cells = [str(mean_ci([v for c in logged if (v := value_at(c, step)) is not None]))
                     for step in MECHANISM_STEPS]
            cells.append(str(mean_ci([c["value"][-1] for c in logged])))
            lines.append("| " + " | ".join([key, arm, *cells]) + " |")
    if not lines:
        return ""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *lines])
