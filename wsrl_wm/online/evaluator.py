"""The evaluations of a fine-tune: score, Q diagnostics and the unlearning summary so far."""

import torch

from wsrl_wm.diagnostics import q_diagnostics
from wsrl_wm.evaluation import EVAL_SEED_OFFSET, EvalEnvs, evaluate
from wsrl_wm.metrics import PROBE, SCORE, unlearning_metrics


class Evaluator:
    """At each evaluation: the deterministic policy's score, the unlearning summary of the
    score curve so far (S0, dip, recovery), and Q diagnostics on the offline probe and on the
    latest online rows (as many as the probe has). Keeps every evaluation's metrics."""

    def __init__(self, env_name: str, episodes: int, seed: int, probe: dict[str, torch.Tensor],
                 online, warmup_steps: int, dip_window: float, action_chunk: int = 1):
        self.env_name, self.episodes, self.seed = env_name, episodes, seed
        self.probe, self.online = probe, online  # probe: diagnostics only, never a loss
        self.warmup_steps, self.dip_window = warmup_steps, dip_window
        self.action_chunk = action_chunk  # actions per policy query, executed open-loop
        self.envs = EvalEnvs(env_name)  # built once, reset with each episode's seed
        self.last_eval: dict = {}
        self.score_curve: tuple[list[int], list[float]] = ([], [])  # (online step, score)
        self.evaluations: list[dict] = []  # every evaluation's metrics

    def __call__(self, agent, env_step: int, device: torch.device | str = "cpu",
                 extra: dict | None = None) -> dict:
        """This evaluation's metrics, `extra` (measured by the caller at the same step)
        included."""
        self.last_eval = evaluate(agent.actor, self.env_name, self.episodes,
                                  self.seed + EVAL_SEED_OFFSET, self.action_chunk,
                                  envs=self.envs)
        probe = {k: v.to(device) for k, v in self.probe.items()}
        latest = self.online.latest(len(probe["rewards"]))
        latest = {k: v.to(device) for k, v in latest.items()}
        metrics = {**self.last_eval, **self.unlearning_so_far(env_step),
                   **q_diagnostics(agent, probe, PROBE),
                   **q_diagnostics(agent, latest, "online"), **(extra or {})}
        self.evaluations.append({"env_step": env_step, **metrics})
        return metrics

    def unlearning_so_far(self, env_step: int) -> dict[str, float]:
        steps, scores = self.score_curve
        steps.append(env_step - self.warmup_steps)
        scores.append(self.last_eval[SCORE])
        return unlearning_metrics(steps, scores, self.dip_window)

    def state_dict(self) -> dict:
        return {"last_eval": self.last_eval, "score_curve": self.score_curve,
                "evaluations": self.evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.last_eval, self.score_curve = state["last_eval"], state["score_curve"]
        self.evaluations = state["evaluations"]
