"""The agent that fine-tunes: the pretrained agent's networks and settings, with the online
ones on top."""

import dataclasses

from wsrl_wm.agents.cql import CQL, CQLConfig
from wsrl_wm.agents.sac import SAC, SACConfig


def online_agent(pretrained_config: CQLConfig, obs_dim: int, act_dim: int,
                 online_cql_alpha: float = 0.0, overrides: dict | None = None) -> SAC:
    """Same networks as pretraining, with `overrides` (SACConfig fields: utd, the online
    max-target backup, ...) and never the entropy term in the backup; online the CQL term is
    off unless `online_cql_alpha` > 0.

    Then the pretraining's CQL settings stay, Cal-QL's bound included: the official WSRL keeps
    the agent and only sets `cql_alpha` to `online_cql_alpha` at the switch (finetune.py,
    `agent.update_config`; `online_use_cql_loss` defaults to True), and gives a Cal-QL run an
    online buffer with the MC returns of finished episodes (`ReplayBufferMC`), whose rows are
    the only ones sampled; its updates wait until one episode has ended. The fine-tuning gives
    it an `EpisodeReplayBuffer` and no update while that holds no finished episode.
    """
    shared = {f.name: getattr(pretrained_config, f.name) for f in dataclasses.fields(SACConfig)}
    shared.update(**(overrides or {}), backup_entropy=False)
    if online_cql_alpha > 0:
        return CQL(obs_dim, act_dim, dataclasses.replace(pretrained_config, **shared,
                                                         cql_alpha=online_cql_alpha))
    return SAC(obs_dim, act_dim, SACConfig(**shared))
