"""The update schedule, written once for both steppers (wsrl_wm/agents/update.py).

Two rules (`SACConfig.update_rule`, docs/configs.md "Update rule"):

- "official" (WSRL's `update` / `update_high_utd`, wsrl/agents/sac.py): at UTD 1 one joint
  step, every loss taken at the same parameters and every optimiser stepped once; at UTD k > 1,
  k critic sub-steps then one actor + temperature sub-step, and in every sub-step the idle
  optimisers step too, on zero gradients (their Adam momentum keeps moving the parameters), so
  each Adam takes k + 1 steps per update;
- "trained_only": only the optimiser of the network being trained steps; the critic steps come
  before the actor's at every UTD, so the actor sees the updated critic.
"""

from wsrl_wm.agents.batches import Batch, split_batch

UPDATE_RULES = ("official", "trained_only")


def schedule(steps, batch: Batch, utd: int, rule: str) -> dict:
    """Runs one update with a stepper's `joint(batch)`, `critic(part, k)`, `target()` and
    `actor_and_temperature(batch)`. Returns the last critic step's info merged with the
    actor's and the temperature's."""
    if rule == "official" and utd == 1:
        return steps.joint(batch)
    info: dict = {}
    for k, part in enumerate(split_batch(batch, utd)):
        info.update(steps.critic(part, k))
        steps.target()
    info.update(steps.actor_and_temperature(batch))
    return info

