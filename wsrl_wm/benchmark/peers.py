"""A peer library's Cal-QL update, to time ours against on the same batch: d3rlpy's `CalQL`
(installed without its dependencies by the Makefile's PEERS, since it pins gymnasium 1.0.0; the
benchmark skips the section with a note when it is absent).

Only the update is timed on both sides: d3rlpy's `impl.update` on a `TorchMiniBatch` built
once from the batch, ours on the batch dict; neither includes sampling or host transfers.
d3rlpy's α is held at `cql_alpha` (no Lagrange step, as ours), its target is its default
deterministic backup over all critics, its critics are a Python loop over `n_critics` MLPs.
"""

import importlib.util
from collections.abc import Callable

import torch

from wsrl_wm.agents import CQLConfig

D3RLPY_VERSION = "2.8.1"  # the version the extra pins and the docs' figures were taken with


def d3rlpy_available() -> bool:
    return importlib.util.find_spec("d3rlpy") is not None


def d3rlpy_calql_update(config: CQLConfig, obs_dim: int, act_dim: int, batch: dict,
                        device: str = "cpu") -> Callable[[], object]:
    """A call that runs one d3rlpy CalQL update on `batch` with `config`'s shapes: critics,
    hidden sizes and LayerNorm, sampled actions, α, learning rates, discount, τ."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.torch_utility import TorchMiniBatch

    def encoder(hidden: tuple[int, ...]) -> VectorEncoderFactory:
        return VectorEncoderFactory(hidden_units=list(hidden), use_layer_norm=config.layer_norm)

    algo = d3rlpy.algos.CalQLConfig(
        actor_learning_rate=config.actor_lr, critic_learning_rate=config.critic_lr,
        temp_learning_rate=config.temperature_lr, alpha_learning_rate=0.0,
        initial_alpha=config.cql_alpha, conservative_weight=1.0, alpha_threshold=0.0,
        actor_encoder_factory=encoder(config.actor_hidden),
        critic_encoder_factory=encoder(config.critic_hidden),
        batch_size=len(batch["rewards"]), gamma=config.discount, tau=config.tau,
        n_critics=config.num_critics, n_action_samples=config.cql_n_actions,
        initial_temperature=config.initial_temperature,
    ).create(device=device)
    algo.create_impl((obs_dim,), act_dim)
    column = {key: batch[key].float().view(-1, 1)
              for key in ("rewards", "terminals", "mc_returns")}
    minibatch = TorchMiniBatch(
        observations=batch["observations"], actions=batch["actions"],
        rewards=column["rewards"], next_observations=batch["next_observations"],
        next_actions=batch["actions"], returns_to_go=column["mc_returns"],
        terminals=column["terminals"], intervals=torch.ones_like(column["rewards"]),
        device=str(device))
    steps = iter(range(10**12))
    return lambda: algo.impl.update(minibatch, next(steps))
