"""Online fine-tuning as in WSRL: restore, warm up with the frozen policy, then high-UTD SAC.

No offline transition enters the online buffer or a loss unless `retain_offline_ratio` > 0
(the paper's retention baselines). Every curve is logged against the env-step count.
"""

import dataclasses

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch.utils.data import DataLoader

from wsrl_wm.agents import CQL, SAC, CQLConfig, SACConfig
from wsrl_wm.data import ReplayBuffer
from wsrl_wm.envs import env_dims, make_env
from wsrl_wm.errors import WsrlError
from wsrl_wm.evaluation import evaluate
from wsrl_wm.lightning.checkpoint import load_pretrained, submodule_state
from wsrl_wm.lightning.env_step_logging import log_at_env_step
from wsrl_wm.lightning.offline_data import load_offline_tensors

ONLINE_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


class FinetuneModule(LightningModule):
    """One environment step per training step; after the warmup, UTD updates on each.

    The agent keeps the pretrained architecture; only online settings come from here. With
    `online_cql_alpha` = 0 (default) the online loss is plain SAC (WSRL: no CQL term online).
    """

    def __init__(self, pretrained: str, warmup_steps: int = 5000, online_steps: int = 250_000,
                 utd: int = 4, batch_size: int = 1024, online_cql_alpha: float = 0.0,
                 retain_offline_ratio: float = 0.0, offline_dataset: str | None = None,
                 buffer_capacity: int = 1_000_000, eval_interval: int = 20_000,
                 eval_episodes: int = 20, log_interval: int = 1000, seed: int = 0):
        super().__init__()
        self._check_options(warmup_steps, online_steps, utd, batch_size, retain_offline_ratio,
                            offline_dataset)
        self.save_hyperparameters()
        self.automatic_optimization = False
        ckpt = load_pretrained(pretrained)
        pre = ckpt["hyper_parameters"]
        self.env_name = ckpt["env"]
        obs_dim, act_dim = env_dims(self.env_name)
        self.agent = self._online_agent(CQLConfig(**ckpt["agent_config"]), obs_dim, act_dim)
        self.agent.load_state_dict(self._pretrained_agent_state(ckpt), strict=True)
        self.optimizer_names = list(self.agent.make_optimizers())
        self._pretrained_optimizers = dict(zip(ckpt["optimizer_names"], ckpt["optimizer_states"],
                                               strict=True))
        self.reward_scale, self.reward_bias = pre["reward_scale"], pre["reward_bias"]
        self.buffer = ReplayBuffer.for_transitions(buffer_capacity, obs_dim, act_dim)
        self.offline = None
        if retain_offline_ratio > 0:
            self.offline = load_offline_tensors(offline_dataset, self.env_name,
                                                self.agent.config.discount, self.reward_scale,
                                                self.reward_bias, pre["sparse_negative_reward"])
        self.env_step = 0
        self.last_eval: dict = {}
        self.sampler = torch.Generator().manual_seed(seed)

    @staticmethod
    def _check_options(warmup_steps, online_steps, utd, batch_size, retain_ratio, dataset):
        if utd <= 0:
            raise WsrlError(f"utd must be a positive integer, got {utd}")
        if batch_size % utd:
            raise WsrlError(f"batch_size {batch_size} must split into utd={utd} equal slices")
        if warmup_steps < 0 or online_steps <= 0:
            raise WsrlError(f"need warmup_steps >= 0 and online_steps > 0, got "
                            f"{warmup_steps}, {online_steps}")
        if not 0.0 <= retain_ratio <= 1.0:
            raise WsrlError(f"retain_offline_ratio must be in [0, 1], got {retain_ratio}")
        if retain_ratio > 0 and not dataset:
            raise WsrlError("retain_offline_ratio > 0 needs offline_dataset (the retained data)")

    def _online_agent(self, pretrained_config: CQLConfig, obs_dim: int, act_dim: int) -> SAC:
        """Same networks as pretraining; online the CQL term is off unless asked for."""
        shared = {f.name: getattr(pretrained_config, f.name)
                  for f in dataclasses.fields(SACConfig)}
        shared.update(utd=self.hparams.utd, backup_entropy=False)
        if self.hparams.online_cql_alpha > 0:
            config = dataclasses.replace(pretrained_config, **shared,
                                         cql_alpha=self.hparams.online_cql_alpha)
            return CQL(obs_dim, act_dim, config)
        return SAC(obs_dim, act_dim, SACConfig(**shared))

    def _pretrained_agent_state(self, ckpt: dict) -> dict:
        state = submodule_state(ckpt["state_dict"], "agent")
        wanted = self.agent.state_dict().keys()
        return {k: v for k, v in state.items() if k in wanted}

    # --- Lightning hooks -------------------------------------------------------------------

    def configure_optimizers(self):
        optimizers = self.agent.make_optimizers()
        for name, optimizer in optimizers.items():
            if name in self._pretrained_optimizers:
                optimizer.load_state_dict(self._pretrained_optimizers[name])
        return list(optimizers.values())

    def train_dataloader(self) -> DataLoader:
        total = self.hparams.warmup_steps + self.hparams.online_steps
        return DataLoader(range(total - self.env_step), batch_size=None)

    def on_fit_start(self) -> None:
        self.train_env = make_env(self.env_name, self.hparams.seed)
        self.obs, _ = self.train_env.reset(seed=self.hparams.seed)
        self.episode_return = 0.0

    def training_step(self, batch, batch_idx: int) -> None:
        warmup = self.hparams.warmup_steps
        if self.env_step == warmup:
            self.run_evaluation()  # S0: the score at the switch, before any online update
        self.act_and_store()
        info = {}
        if self.env_step >= warmup:
            optimizers = dict(zip(self.optimizer_names, self.optimizers(), strict=True))
            info = self.agent.update(self.sample_batch(), optimizers)
        self.env_step += 1
        online = self.env_step - warmup
        if online > 0 and (online % self.hparams.eval_interval == 0
                           or online == self.hparams.online_steps):
            self.run_evaluation()
        if info and self.env_step % self.hparams.log_interval == 0:
            log_at_env_step(self, {f"train/{k}": v for k, v in info.items()}, self.env_step)

    # --- the pieces ------------------------------------------------------------------------

    def act_and_store(self) -> None:
        """One env step with the current policy's stochastic action (the frozen pretrained
        policy during warmup, since no update has happened yet)."""
        obs = torch.as_tensor(self.obs, dtype=torch.float32, device=self.device)
        action = self.agent.act(obs).cpu().numpy()
        next_obs, reward, terminated, truncated, _ = self.train_env.step(action)
        reward = reward * self.reward_scale + self.reward_bias
        self.buffer.add({
            "observations": self.obs[None], "actions": action[None],
            "rewards": np.array([reward]), "next_observations": next_obs[None],
            "terminals": np.array([float(terminated)]),
        })
        self.episode_return += float(reward)
        self.obs = next_obs
        if terminated or truncated:
            log_at_env_step(self, {"train/episode_return": self.episode_return}, self.env_step)
            self.episode_return = 0.0
            self.obs, _ = self.train_env.reset()

    def sample_batch(self) -> dict[str, torch.Tensor]:
        """(1 − retain)·online + retain·offline rows; plain online sampling when retain = 0."""
        size = self.hparams.batch_size
        n_offline = round(self.hparams.retain_offline_ratio * size)
        batch = self.buffer.sample(size - n_offline, self.sampler)
        if n_offline == 0:
            return {k: v.to(self.device) for k, v in batch.items()}
        idx = torch.randint(len(self.offline["observations"]), (n_offline,),
                            generator=self.sampler)
        merged = {k: torch.cat([batch[k], self.offline[k][idx].to(batch[k])]) for k in ONLINE_KEYS}
        order = torch.randperm(size, generator=self.sampler)  # mix both sources in every slice
        return {k: v[order].to(self.device) for k, v in merged.items()}

    def run_evaluation(self) -> None:
        self.last_eval = evaluate(self.agent.actor, self.env_name, self.hparams.eval_episodes,
                                  self.hparams.seed + 10**6)
        log_at_env_step(self, self.last_eval, self.env_step)

    def progress_metrics(self) -> dict:
        phase = "warmup" if self.env_step < self.hparams.warmup_steps else "online"
        metrics = {"env_step": self.env_step, "phase": phase}
        if "eval/normalized_score" in self.last_eval:
            metrics["score"] = f"{self.last_eval['eval/normalized_score']:.1f}"
        return metrics
