"""The update schedule, written once for both steppers (wsrl_wm/agents/update.py)."""

from wsrl_wm.agents.batches import Batch, split_batch


def schedule(steps, batch: Batch, utd: int) -> dict:
    """UTD k: k critic steps on k slices of `batch` (each sees fresh samples), each followed
    by the target update, then one actor + temperature step on the whole batch. `steps` is a
    stepper's `critic(part, k)`, `target()` and `actor_and_temperature(batch)`. Returns the
    last critic step's info merged with the actor's and the temperature's."""
    info: dict = {}
    for k, part in enumerate(split_batch(batch, utd)):
        info.update(steps.critic(part, k))
        steps.target()
    info.update(steps.actor_and_temperature(batch))
    return info
