"""How accurate the world model is on real transitions: one-step error, and the H-step
(compounding) error of open-loop predictions along real trajectories (docs/world_model.md).

Inputs must be on the model's device: these functions never move data, so a caller that mixes
devices fails loudly instead of silently copying every call.
"""

import torch

from wsrl_wm.world_model.model import WorldModel
from wsrl_wm.world_model.train import member_mse


def one_step_error(model: WorldModel, data: dict[str, torch.Tensor]) -> float:
    """The elites' mean one-step MSE on fresh transitions: the quantity `elite_holdout_mse`
    reports at training time, so the two can be compared directly."""
    obs = data["observations"]
    targets = model.targets(obs, data["next_observations"], data["rewards"])
    return member_mse(model, model.normalize(obs, data["actions"]), targets,
                      model.elites).mean().item()


def trajectory_windows(data: dict[str, torch.Tensor], length: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every run of `length` consecutive transitions of one episode in `data` (rows in the
    order they were collected): observations [N, length + 1, obs_dim] and actions
    [N, length, act_dim].

    Row j continues into row j + 1 when it is not terminal and its next_obs is row j + 1's obs
    (a reset after a terminal or a time limit breaks the chain).
    """
    obs, next_obs = data["observations"], data["next_observations"]
    links = (next_obs[:-1] == obs[1:]).all(dim=-1) & (data["terminals"][:-1] == 0)
    breaks = torch.cat([links.new_zeros(1, dtype=torch.long), (~links).long().cumsum(0)])
    count = len(obs) - length + 1
    if count <= 0:
        return obs.new_zeros(0, length + 1, obs.shape[-1]), obs.new_zeros(
            0, length, data["actions"].shape[-1])
    starts = torch.arange(count, device=obs.device)
    starts = starts[breaks[starts + length - 1] == breaks[starts]]  # no break inside
    steps = starts[:, None] + torch.arange(length, device=obs.device)
    states = torch.cat([obs[steps], next_obs[steps[:, -1:]]], dim=1)
    return states, data["actions"][steps]


@torch.no_grad()
def h_step_error(model: WorldModel, states: torch.Tensor, actions: torch.Tensor
                 ) -> torch.Tensor:
    """[H]: MSE over obs dims of each elite's own open-loop mean prediction after 1..H steps of
    the real actions (each elite propagates its own trajectory), averaged over the elites.

    `states` [N, H + 1, obs_dim], `actions` [N, H, act_dim], as `trajectory_windows` returns.
    """
    elites = len(model.elites)
    state = states[:, 0].expand(elites, -1, -1)
    errors = []
    for step in range(actions.shape[1]):
        action = actions[:, step].expand(elites, -1, -1)
        mean, _ = model.predict(state, action, model.elites)
        state = state + mean[..., : model.obs_dim]
        errors.append((state - states[:, step + 1]).pow(2).mean())
    return torch.stack(errors)
