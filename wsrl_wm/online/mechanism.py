"""What the dip comes from, measured at every evaluation (docs/world_model.md, "The
mechanism"): how far the policy has moved on the offline probe, the critics' Q on real and on
imagined rows, the world model's error where the policy goes now, the temperature and the
actor's gradient norm. Read-only: no parameter, buffer or training random stream changes, so
a run measures the same with or without being watched."""

import torch

from wsrl_wm.data import EpisodeReplayBuffer
from wsrl_wm.metrics import MECHANISM
from wsrl_wm.world_model import one_step_error


class Mechanism:
    """`sample_size` rows of each kind per measurement, drawn on a generator of its own."""

    def __init__(self, probe: dict[str, torch.Tensor], online, imagined=None, world_model=None,
                 model_rows=None, sample_size: int = 256, seed: int = 0):
        self.probe, self.online, self.imagined = probe, online, imagined
        self.world_model, self.model_rows = world_model, model_rows  # env-step rows
        self.sample_size = sample_size
        self.generator = torch.Generator().manual_seed(seed)
        self.initial_actions: torch.Tensor | None = None  # π_0 on the probe, at the switch

    def __call__(self, agent, device: torch.device | str = "cpu") -> dict[str, float]:
        device = torch.device(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            metrics = self.drift(agent, device)
            metrics["temperature"] = float(agent.temperature().detach())
            if sampleable(self.online):  # (no warmup: nothing yet at the switch)
                real = self.rows(self.online, device)
                metrics["actor_grad_norm"] = actor_grad_norm(agent, real)
                metrics["q_real"] = mean_q(agent, real)
            if self.imagined is not None and len(self.imagined):
                metrics["q_imagined"] = mean_q(agent, self.rows(self.imagined, device))
            if self.world_model is not None and len(self.model_rows):
                latest = self.model_rows.latest(min(self.sample_size, len(self.model_rows)))
                with torch.no_grad():
                    metrics["model_error"] = one_step_error(
                        self.world_model, {k: v.to(device) for k, v in latest.items()})
        return {f"{MECHANISM}/{name}": value for name, value in metrics.items()}

    @torch.no_grad()
    def drift(self, agent, device: torch.device) -> dict[str, float]:
        """Mean distance of π_t(s) to π_0(s) (deterministic actions) over the probe states."""
        actions = agent.actor(self.probe["observations"].to(device), deterministic=True)[0]
        if self.initial_actions is None:
            self.initial_actions = actions.cpu()
        distance = (actions - self.initial_actions.to(device)).norm(dim=-1).mean()
        return {"policy_drift": float(distance)}

    def rows(self, buffer, device: torch.device) -> dict[str, torch.Tensor]:
        rows = buffer.sample(self.sample_size, self.generator)
        return {k: v.to(device) for k, v in rows.items()}

    def state_dict(self) -> dict:
        return {"initial_actions": self.initial_actions,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.initial_actions = state["initial_actions"]
        self.generator.set_state(state["generator"])


def sampleable(buffer) -> int:
    """Rows `buffer.sample` can draw from: a Cal-QL buffer's finished episodes only."""
    return buffer.finished if isinstance(buffer, EpisodeReplayBuffer) else len(buffer)


@torch.no_grad()
def mean_q(agent, rows: dict[str, torch.Tensor]) -> float:
    """Q(s, a) of the rows' own actions, averaged over the critics and the rows."""
    return float(agent.critic(rows["observations"], rows["actions"]).mean())


@torch.enable_grad()
def actor_grad_norm(agent, batch: dict[str, torch.Tensor]) -> float:
    """The L2 norm of the actor loss's gradient on `batch`, the step the actor would take."""
    loss = agent.actor_loss(batch)[0]
    grads = torch.autograd.grad(loss, list(agent.actor.parameters()))
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
