"""Online fine-tuning as in WSRL: restore, warm up with the frozen policy, then high-UTD SAC,
optionally mixing imagined rollouts of a pretrained world model into every batch.

No offline transition enters the online buffer, a rollout start or a loss unless
`retain_offline_ratio` > 0 (the paper's retention baselines). Every curve is logged against
the env-step count.
"""

import dataclasses
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch.utils.data import DataLoader

from wsrl_wm.agents import CQL, SAC, CQLConfig, SACConfig
from wsrl_wm.data import EpisodeReplayBuffer, ReplayBuffer
from wsrl_wm.diagnostics import q_diagnostics
from wsrl_wm.envs import env_dims, make_env, termination_fn
from wsrl_wm.envs.state import get_env_state, set_env_state
from wsrl_wm.envs.task_functions import task_reward_fn
from wsrl_wm.errors import WsrlError
from wsrl_wm.evaluation import evaluate
from wsrl_wm.lightning.checkpoint import load_pretrained, submodule_state
from wsrl_wm.lightning.divergence import stop_on_divergence
from wsrl_wm.lightning.env_step_logging import EnvSteps, log_at_env_step, write_csv_atomically
from wsrl_wm.lightning.offline_data import load_offline_tensors
from wsrl_wm.metrics import summarize
from wsrl_wm.run_info import write_run_info
from wsrl_wm.world_model import (
    ModelBuffer,
    RolloutConfig,
    WorldModel,
    WorldModelConfig,
    branched_rollout,
    h_step_error,
    one_step_error,
    train_world_model,
    trajectory_windows,
)


class FinetuneModule(LightningModule):
    """One environment step per training step; after the warmup, UTD updates on each.

    The agent keeps the pretrained architecture; only online settings come from here. With
    `online_cql_alpha` = 0 (default) the online loss is plain SAC (WSRL: no CQL term online);
    > 0 keeps the pretraining's CQL term online with that α, and after a Cal-QL pretraining
    also its bound, on the MC returns of the online episodes (see `_online_agent`).
    `max_target_backup`: the online SAC target maxes over `max_target_actions` (10) sampled
    next actions (`SACConfig.max_target_backup`; official only in antmaze_wsrl, configs/antmaze).
    With `rollout.ratio` = r > 0, every `rollout.interval` online steps the current policy is
    rolled out in the pretrained world model from online-buffer states, and each batch takes
    r of its rows from those imagined transitions (docs/world_model.md).

    Everything imagination draws (start states, elites, model noise, the policy's actions in
    the model, model rows, the adaptation's splits) comes from its own generator, so an r > 0
    run samples the same real rows as the r = 0 run with the same seed until their agents
    differ.
    """

    def __init__(self, pretrained: str, warmup_steps: int = 5000, online_steps: int = 250_000,
                 utd: int = 4, batch_size: int = 1024, online_cql_alpha: float = 0.0,
                 max_target_backup: bool = False,
                 retain_offline_ratio: float = 0.0, offline_dataset: str | None = None,
                 rollout: RolloutConfig | None = None, buffer_capacity: int = 1_000_000,
                 eval_interval: int = 20_000, eval_episodes: int = 20, log_interval: int = 1000,
                 dip_window: int | None = None, checkpoint_interval: int = 10_000,
                 on_nonfinite: str | None = None, compile: str | None = None,
                 env: str | None = None, seed: int = 0):
        super().__init__()
        rollout = rollout or RolloutConfig()
        self._check_options(warmup_steps, online_steps, utd, batch_size, retain_offline_ratio,
                            offline_dataset, rollout, buffer_capacity)
        self.save_hyperparameters()
        self.automatic_optimization = False
        ckpt = load_pretrained(pretrained)
        pre = ckpt["hyper_parameters"]
        self.env_name = ckpt["env"]
        obs_dim, act_dim = env_dims(self.env_name)
        if env is not None and env_dims(env) != (obs_dim, act_dim):
            raise WsrlError(f"{pretrained} was pretrained on {self.env_name!r}, which does not "
                            f"match env {env!r}; pretrain on {env!r} first")
        self.agent = self._online_agent(CQLConfig(**ckpt["agent_config"]), obs_dim, act_dim)
        self.agent.load_state_dict(submodule_state(ckpt["state_dict"], "agent", self.agent))
        self.agent.compile_losses(online_steps)
        self.optimizer_names = list(self.agent.make_optimizers())
        self._pretrained_optimizers = dict(zip(ckpt["optimizer_names"], ckpt["optimizer_states"],
                                               strict=True))
        self.reward_scale, self.reward_bias = pre["reward_scale"], pre["reward_bias"]
        self.probe = ckpt["probe"]  # offline rows for diagnostics only: never a loss or buffer
        self.calql_online = isinstance(self.agent, CQL) and self.agent.config.calql
        if self.calql_online:
            self.buffer = EpisodeReplayBuffer(buffer_capacity, obs_dim, act_dim,
                                              self.agent.config.discount,
                                              pre["sparse_negative_reward"])
        else:
            self.buffer = ReplayBuffer.for_transitions(buffer_capacity, obs_dim, act_dim)
        self.offline_buffer = None
        if retain_offline_ratio > 0:
            offline = load_offline_tensors(offline_dataset, self.env_name,
                                           self.agent.config.discount, self.reward_scale,
                                           self.reward_bias, pre["sparse_negative_reward"])
            self.offline_buffer = ReplayBuffer.for_transitions(
                len(offline["rewards"]), obs_dim, act_dim, with_mc_returns=self.calql_online)
            self.offline_buffer.add(offline)
        self.rollout = rollout
        self.world_model = self.model_buffer = None
        if rollout.ratio > 0 and self.calql_online:
            raise WsrlError("online_cql_alpha > 0 after a Cal-QL pretraining keeps the Cal-QL "
                            "bound, which needs an MC return for every row, and imagined "
                            "rollouts have none: use rollout.ratio 0 or online_cql_alpha 0")
        if rollout.ratio > 0:  # r = 0 is plain WSRL: the world model is not even loaded
            self.world_model = self._pretrained_world_model(
                ckpt, obs_dim, act_dim, rollout.uncertainty_quantile is not None)
            self.world_model.requires_grad_(rollout.adapt_interval > 0)
            self.model_buffer = ModelBuffer(rollout.buffer_capacity(0), obs_dim, act_dim)
            self.terminated = termination_fn(self.env_name)
            self.raw_task_fn = task_reward_fn(self.env_name)
        self._share_rows = [0, 0]  # model rows, all rows in the batches since the last log
        self.env_step = 0
        self.last_eval: dict = {}
        self.score_curve: tuple[list[int], list[float]] = ([], [])  # (online step, score)
        self.evaluations: list[dict] = []  # every evaluation's metrics, also in evaluations.csv
        self._resumed: dict | None = None
        self.dip_window = online_steps // 4 if dip_window is None else dip_window
        self.checkpoint_interval = checkpoint_interval  # env steps between resumable checkpoints
        self.sampler = torch.Generator().manual_seed(seed)
        imagination_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
        self.imagination = torch.Generator().manual_seed(imagination_seed)

    @staticmethod
    def _check_options(warmup_steps, online_steps, utd, batch_size, retain_ratio, dataset,
                       rollout: RolloutConfig, buffer_capacity: int):
        if utd <= 0:
            raise WsrlError(f"utd must be a positive integer, got {utd}")
        if batch_size % utd:
            raise WsrlError(f"batch_size {batch_size} must split into utd={utd} equal slices")
        if warmup_steps < 0 or online_steps <= 0:
            raise WsrlError(f"need warmup_steps >= 0 and online_steps > 0, got "
                            f"{warmup_steps}, {online_steps}")
        if warmup_steps > buffer_capacity:
            raise WsrlError(f"warmup_steps {warmup_steps} exceed buffer_capacity "
                            f"{buffer_capacity}: the warmup data would be overwritten before "
                            f"training starts; raise buffer_capacity or shorten the warmup")
        if not 0.0 <= retain_ratio <= 1.0:
            raise WsrlError(f"retain_offline_ratio must be in [0, 1], got {retain_ratio}")
        rollout.check(batch_size)
        if retain_ratio + rollout.ratio > 1.0:
            raise WsrlError(f"retain_offline_ratio + rollout.ratio must be <= 1, got "
                            f"{retain_ratio} + {rollout.ratio}")
        if retain_ratio > 0 and not dataset:
            raise WsrlError("retain_offline_ratio > 0 needs offline_dataset (the retained data)")

    def _online_agent(self, pretrained_config: CQLConfig, obs_dim: int, act_dim: int) -> SAC:
        """Same networks as pretraining; online the CQL term is off unless asked for.

        When asked for, the pretraining's CQL settings stay, Cal-QL's bound included: the
        official WSRL keeps the agent and only sets `cql_alpha` to `online_cql_alpha` at the
        switch (finetune.py, `agent.update_config`; `online_use_cql_loss` defaults to True),
        and gives a Cal-QL run an online buffer with the MC returns of finished episodes
        (`ReplayBufferMC`), whose rows are the only ones sampled; its updates wait until one
        episode has ended (there, ≥ `_max_episode_steps` online steps). Here: an
        `EpisodeReplayBuffer`, and no update while it holds no finished episode.
        """
        shared = {f.name: getattr(pretrained_config, f.name)
                  for f in dataclasses.fields(SACConfig)}
        shared.update(utd=self.hparams.utd, backup_entropy=False,
                      max_target_backup=self.hparams.max_target_backup)
        for option in ("on_nonfinite", "compile"):  # unset: the pretraining's choice
            if self.hparams[option] is not None:
                shared[option] = self.hparams[option]
        if self.hparams.online_cql_alpha > 0:
            config = dataclasses.replace(pretrained_config, **shared,
                                         cql_alpha=self.hparams.online_cql_alpha)
            return CQL(obs_dim, act_dim, config)
        return SAC(obs_dim, act_dim, SACConfig(**shared))

    @staticmethod
    def _pretrained_world_model(ckpt: dict, obs_dim: int, act_dim: int, gated: bool
                                ) -> WorldModel:
        if ckpt.get("world_model_config") is None:
            raise WsrlError("rollout.ratio > 0 needs a world model in the pretrained checkpoint; "
                            "pretrain with model.world_model set")
        world_model = WorldModel(obs_dim, act_dim, WorldModelConfig(**ckpt["world_model_config"]))
        state = submodule_state(ckpt["state_dict"], "world_model")
        # Checkpoints from before the gate's calibration lack its two buffers: usable ungated.
        missing = world_model.load_state_dict(state, strict=False).missing_keys
        if set(missing) - {"target_std", "disagreement_quantiles"}:
            raise WsrlError(f"the world model in the checkpoint lacks {missing}; pretrain again")
        if missing and gated:
            raise WsrlError("this checkpoint's world model has no disagreement calibration "
                            "(pretrained before it existed); pretrain again or set "
                            "rollout.uncertainty_quantile to null")
        return world_model.requires_grad_(False)

    # --- Lightning hooks -------------------------------------------------------------------

    def configure_optimizers(self):
        optimizers = self.agent.make_optimizers()
        for name, optimizer in optimizers.items():
            if name in self._pretrained_optimizers:
                optimizer.load_state_dict(self._pretrained_optimizers[name])
        return list(optimizers.values())

    def train_dataloader(self) -> DataLoader:
        """An endless tick: the env-step budget, not the data, ends the run (and a resumed run
        restarts the ticks while `env_step` carries on)."""
        # Its own generator: a DataLoader otherwise draws its worker seed from the global RNG
        # when iteration starts, which would shift the agent's random stream on resume.
        return DataLoader(EnvSteps(), batch_size=None, generator=torch.Generator())

    @property
    def total_env_steps(self) -> int:
        return self.hparams.warmup_steps + self.hparams.online_steps

    def on_fit_start(self) -> None:
        hp = self.hparams
        write_run_info(self.trainer.default_root_dir, {
            "env": self.env_name, "seed": hp.seed, "warmup_steps": hp.warmup_steps,
            "online_steps": hp.online_steps, "dip_window": self.dip_window, "utd": hp.utd,
            "batch_size": hp.batch_size, "rollout_ratio": self.rollout.ratio,
            "online_cql_alpha": hp.online_cql_alpha,
            "retain_offline_ratio": hp.retain_offline_ratio, "pretrained": hp.pretrained})
        self.train_env = make_env(self.env_name, self.hparams.seed)
        self.obs, _ = self.train_env.reset(seed=self.hparams.seed)
        self.episode_return = 0.0
        if self._resumed is not None:
            set_env_state(self.train_env, self._resumed["env"])
            self.obs, self.episode_return = self._resumed["obs"], self._resumed["episode_return"]
            self._resumed = None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.env_step >= self.total_env_steps:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Everything a killed run needs to continue exactly: buffers, counters, the episode in
        progress (the env's physics included) and every random stream."""
        checkpoint["probe"] = self.probe
        checkpoint["online_state"] = {
            "env_step": self.env_step, "obs": self.obs, "episode_return": self.episode_return,
            "env": get_env_state(self.train_env), "buffer": self.buffer.state_dict(),
            "model_buffer": None if self.model_buffer is None else self.model_buffer.state_dict(),
            "sampler": self.sampler.get_state(), "imagination": self.imagination.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "last_eval": self.last_eval, "score_curve": self.score_curve,
            "evaluations": self.evaluations,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("online_state")
        if state is None:
            raise WsrlError("this checkpoint has no fine-tuning state to resume; to start "
                            "fine-tuning from a pretraining checkpoint use model.pretrained")
        self.env_step, self.last_eval = state["env_step"], state["last_eval"]
        self.score_curve, self.evaluations = state["score_curve"], state["evaluations"]
        self.buffer.load_state_dict(state["buffer"])
        if self.model_buffer is not None and state["model_buffer"] is not None:
            self.model_buffer.load_state_dict(state["model_buffer"])
        self.sampler.set_state(state["sampler"])
        if "imagination" in state:  # absent in checkpoints from before it existed
            self.imagination.set_state(state["imagination"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self._resumed = state  # the env exists only from on_fit_start on

    def training_step(self, batch, batch_idx: int) -> None:
        online = self.env_step - self.hparams.warmup_steps  # < 0 during the warmup
        if online == 0:
            self.run_evaluation()  # S0: the score at the switch, before any online update
        if self.world_model is not None and online > 0 and self.rollout.adapt_interval and \
                online % self.rollout.adapt_interval == 0:
            self.adapt_world_model()
        if self.world_model is not None and online >= 0 and online % self.rollout.interval == 0:
            with stop_on_divergence(self, f"env step {self.env_step} (model rollouts)"):
                self.imagine(online)
        self.act_and_store()
        info = {}
        if online >= 0 and (not self.calql_online or self.buffer.finished):
            optimizers = dict(zip(self.optimizer_names, self.optimizers(), strict=True))
            with stop_on_divergence(self, f"env step {self.env_step} (online update "
                                          f"{online + 1})"):
                info = self.agent.update(self.sample_batch(), optimizers)
        self.env_step += 1
        online += 1
        if online > 0 and (online % self.hparams.eval_interval == 0
                           or online == self.hparams.online_steps):
            self.run_evaluation()
        if info and self.env_step % self.hparams.log_interval == 0:
            log_at_env_step(self, {f"train/{k}": v for k, v in info.items()}, self.env_step)
            if self.world_model is not None:  # the realised model share, after gating
                model_rows, rows = self._share_rows
                log_at_env_step(self, {"rollout/model_share": model_rows / rows}, self.env_step)
                self._share_rows = [0, 0]

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
            if self.calql_online:
                self.buffer.end_episode()

    def imagine(self, online_step: int) -> None:
        """A round of branched rollouts of the current policy from online-buffer states, after
        measuring the model on the online transitions gathered since the last round (which it
        has never been trained on) and on the offline probe."""
        fresh = self._on_device(self.buffer.latest(self.rollout.interval))
        metrics = self.model_accuracy(fresh)
        starts = self.buffer.sample(self.rollout.starts_at(online_step),
                                    self.imagination)["observations"]
        quantile = self.rollout.uncertainty_quantile
        threshold = None if quantile is None else self.world_model.gate_threshold(quantile)
        task_fn = None if self.raw_task_fn is None else self._scaled_task_fn
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the policy's noise: off the agent's stream
            torch.manual_seed(int(torch.randint(2**62, (), generator=self.imagination)))
            transitions, stats = branched_rollout(
                self.world_model, self.agent.actor, starts.to(self.device),
                self.rollout.horizon_at(online_step), self.terminated, threshold,
                self.imagination, self.agent.config.on_nonfinite == "skip", task_fn)
        count = len(transitions["rewards"])  # the switch's round may exceed the nominal size
        self.model_buffer.resize(max(self.rollout.buffer_capacity(online_step), count))
        if count:
            self.model_buffer.add(transitions, self.env_step)
        metrics |= {"model_buffer/size": float(len(self.model_buffer)),
                    "model_buffer/mean_age": self.model_buffer.mean_age(self.env_step)}
        log_at_env_step(self, {**metrics, **stats}, self.env_step)

    def model_accuracy(self, fresh: dict[str, torch.Tensor]) -> dict[str, float]:
        """One-step error on `fresh` online rows and on the offline probe (does an adapted
        model unlearn the offline data?), and the H-step error (H = the largest rollout
        horizon) of open-loop predictions along the real trajectories in `fresh`."""
        probe = self._on_device(self.probe)
        metrics = {"model/one_step_mse": one_step_error(self.world_model, fresh),
                   "model/probe_mse": one_step_error(self.world_model, probe)}
        horizon = max(self.rollout.horizon, self.rollout.max_horizon or 0)
        states, actions = trajectory_windows(fresh, horizon)
        if len(states):
            errors = h_step_error(self.world_model, states, actions)
            metrics["model/h_step_mse"] = float(errors[-1])
        return metrics

    def adapt_world_model(self) -> None:
        """Warm-started epochs on the online buffer only (warmup + online rows, never offline
        data), early-stopped on an online holdout; logs the holdout error before and after."""
        config = dataclasses.replace(self.world_model.config,
                                     max_epochs=self.rollout.adapt_epochs)
        with torch.enable_grad():
            result = train_world_model(self.world_model, self.buffer.latest(len(self.buffer)),
                                       config, self.imagination, progress=False,
                                       warm_start=True)
        probe = self._on_device(self.probe)
        log_at_env_step(self, {
            "model/adapt_holdout_mse_before": result["elite_holdout_mse_before"],
            "model/adapt_holdout_mse_after": result["elite_holdout_mse"],
            "model/adapt_epochs": float(result["epochs"]),
            "model/probe_mse_after_adapt": one_step_error(self.world_model, probe),
        }, self.env_step)

    def _scaled_task_fn(self, obs, action, next_obs) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's raw reward in the run's reward units (scale and bias), and termination."""
        reward, terminated = self.raw_task_fn(obs, action, next_obs)
        return reward * self.reward_scale + self.reward_bias, terminated

    def _on_device(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in rows.items()}

    def sample_batch(self) -> dict[str, torch.Tensor]:
        """(1 − retain − r)·online + retain·offline + r·model rows, shuffled so that every UTD
        slice sees every source; exactly the online sample when retain = r = 0.

        The online rows are always a full batch's draw (then cut to size) and model rows and
        their shuffle come from the imagination generator, so the real-data stream is the same
        for every r. While the model buffer is empty (everything gated), batches are all real.
        """
        size = self.hparams.batch_size
        batch = self.buffer.sample(size, self.sampler)
        retained = (round(self.hparams.retain_offline_ratio * size)
                    if self.offline_buffer is not None else 0)
        imagined = (round(self.rollout.ratio * size)
                    if self.model_buffer is not None and len(self.model_buffer) else 0)
        self._share_rows = [self._share_rows[0] + imagined, self._share_rows[1] + size]
        if retained or imagined:
            parts = [{k: v[: size - retained - imagined] for k, v in batch.items()}]
            if retained:
                parts.append(self.offline_buffer.sample(retained, self.sampler))
            if imagined:
                parts.append(self.model_buffer.sample(imagined, self.imagination))
            order = torch.randperm(size, generator=self.sampler if retained else
                                   self.imagination)
            batch = {k: torch.cat([part[k] for part in parts])[order] for k in batch}
        return self._on_device(batch)

    def run_evaluation(self) -> None:
        """Score, plus Q diagnostics on the offline probe and on the latest online data."""
        self.last_eval = evaluate(self.agent.actor, self.env_name, self.hparams.eval_episodes,
                                  self.hparams.seed + 10**6)
        probe = {k: v.to(self.device) for k, v in self.probe.items()}
        latest = self.buffer.latest(len(probe["rewards"]))
        latest = {k: v.to(self.device) for k, v in latest.items()}
        metrics = {**self.last_eval, **self.unlearning_so_far(),
                   **q_diagnostics(self.agent, probe, "probe"),
                   **q_diagnostics(self.agent, latest, "online")}
        log_at_env_step(self, metrics, self.env_step)
        self.evaluations.append({"env_step": self.env_step, **metrics})
        write_csv_atomically(Path(self.trainer.default_root_dir) / "evaluations.csv",
                             self.evaluations)

    def unlearning_so_far(self) -> dict[str, float]:
        """S0, dip, recovery (or not yet: `unlearning/forgetting` = 1) of the curve so far."""
        steps, scores = self.score_curve
        steps.append(self.env_step - self.hparams.warmup_steps)
        scores.append(self.last_eval["eval/normalized_score"])
        summary = summarize(steps, scores, self.dip_window)
        metrics = {"unlearning/s0": summary["s0"], "unlearning/dip": summary["dip"],
                   "unlearning/forgetting": float(summary["forgot"]),
                   "unlearning/auc": summary["auc"]}
        if not summary["forgot"]:
            metrics["unlearning/recovery_step"] = summary["recovery_step"]
        return metrics


    def progress_metrics(self) -> dict:
        phase = "warmup" if self.env_step < self.hparams.warmup_steps else "online"
        metrics = {"env_step": self.env_step, "phase": phase}
        if "eval/normalized_score" in self.last_eval:
            metrics["score"] = f"{self.last_eval['eval/normalized_score']:.1f}"
        return metrics
