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

from wsrl_wm.agents import CQL, SAC
from wsrl_wm.agents.online import online_agent
from wsrl_wm.compile_cache import CompiledUpdates
from wsrl_wm.data import EpisodeReplayBuffer, ReplayBuffer
from wsrl_wm.envs import env_dims, make_env
from wsrl_wm.errors import WsrlError
from wsrl_wm.lightning.bundle import PretrainedBundle
from wsrl_wm.lightning.divergence import stop_on_divergence
from wsrl_wm.lightning.env_step_logging import EnvSteps, log_at_env_step, write_csv_atomically
from wsrl_wm.lightning.offline_data import load_offline_tensors
from wsrl_wm.metrics import SCORE, dip_window_for
from wsrl_wm.online import BatchSource, EnvRunner, Evaluator, Imagination, JSRLConfig, ResetConfig
from wsrl_wm.online.mechanism import Mechanism
from wsrl_wm.online.resets import check_reset_layers, reset_layers
from wsrl_wm.run_info import write_run_info
from wsrl_wm.world_model import ModelBuffer, RolloutConfig, restore_world_model


class FinetuneModule(LightningModule):
    """One environment step per training step; after the warmup, UTD updates on each.

    The agent keeps the pretrained architecture; only online settings come from here. With
    `online_cql_alpha` = 0 (default) the online loss is plain SAC (WSRL: no CQL term online);
    > 0 keeps the pretraining's CQL term online with that α, and after a Cal-QL pretraining
    also its bound, on the MC returns of the online episodes (wsrl_wm/agents/online.py).
    `max_target_backup`: the online SAC target maxes over `max_target_actions` (10) sampled
    next actions (`SACConfig.max_target_backup`; official only in antmaze_wsrl, configs/antmaze).
    With `rollout.ratio` = r > 0, every `rollout.interval` online steps the current policy is
    rolled out in the pretrained world model from online-buffer states, and each batch takes
    r of its rows from those imagined transitions (docs/world_model.md).
    `resets` (plasticity resets) and `jsrl` (a guide roll-in with its curriculum) are the
    beyond-WSRL options of docs/beyond_wsrl.md; both are off by default.

    Everything imagination draws (start states, elites, model noise, the policy's actions in
    the model, model rows, the adaptation's splits) comes from its own generator, so an r > 0
    run samples the same real rows as the r = 0 run with the same seed until their agents
    differ.

    The work is done by parts that know nothing of Lightning (wsrl_wm/online): `EnvRunner`
    (the training env's episode), `BatchSource` (each update's rows), `Imagination` (the world
    model online) and `Evaluator` (scores and diagnostics); this module restores the
    pretrained agent, builds the parts, calls them in order at each env step, logs what they
    return and checkpoints their state.
    """

    def __init__(self, pretrained: str, warmup_steps: int = 5000, online_steps: int = 250_000,
                 utd: int = 4, batch_size: int = 1024, online_cql_alpha: float = 0.0,
                 max_target_backup: bool = False,
                 retain_offline_ratio: float = 0.0, offline_dataset: str | None = None,
                 rollout: RolloutConfig | None = None, buffer_capacity: int = 1_000_000,
                 eval_interval: int = 20_000, eval_episodes: int = 20,
                 dense_eval_steps: int = 0, dense_eval_interval: int = 100,
                 log_interval: int = 1000,
                 dip_window: int | None = None, checkpoint_interval: int = 10_000,
                 on_nonfinite: str | None = None, compile: str | None = None,
                 update_rule: str | None = None, resets: ResetConfig | None = None,
                 jsrl: JSRLConfig | None = None, env: str | None = None, seed: int = 0):
        super().__init__()
        rollout = rollout or RolloutConfig()
        self.resets, self.jsrl = resets or ResetConfig(), jsrl or JSRLConfig()
        self._check_options(warmup_steps, online_steps, utd, batch_size, retain_offline_ratio,
                            offline_dataset, rollout, buffer_capacity)
        if dense_eval_steps < 0 or dense_eval_interval <= 0:
            raise WsrlError(f"need dense_eval_steps >= 0 and dense_eval_interval > 0, got "
                            f"{dense_eval_steps}, {dense_eval_interval}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        bundle = PretrainedBundle.load(pretrained)
        self.env_name = bundle.env
        obs_dim, act_dim = env_dims(self.env_name)
        if env is not None and env_dims(env) != (obs_dim, act_dim):
            raise WsrlError(f"{pretrained} was pretrained on {self.env_name!r}, which does not "
                            f"match env {env!r}; pretrain on {env!r} first")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        overrides = {"utd": utd, "max_target_backup": max_target_backup}
        overrides |= {option: value for option, value in (
            ("on_nonfinite", on_nonfinite), ("compile", compile), ("update_rule", update_rule))
            if value is not None}  # unset: the pretraining's choice

        def make_agent() -> SAC:
            return online_agent(bundle.agent_config, obs_dim, act_dim, online_cql_alpha,
                                overrides)

        self.agent = make_agent()
        self.agent.load_state_dict(bundle.agent_state_for(self.agent))
        self._pretrained_optimizers = bundle.optimizer_states
        self.guide = None
        if self.jsrl.enabled:  # the frozen pretrained agent rolls in; the learner may restart
            self.guide = make_agent()
            self.guide.load_state_dict(self.agent.state_dict())
            self.guide.requires_grad_(False)
            if self.jsrl.learner == "scratch":
                self.agent = make_agent()
                self._pretrained_optimizers = {}
        self.roll_ins = np.random.default_rng([seed, 2])  # JSRL-Random's draws
        if self.resets.enabled:
            check_reset_layers(self.agent, self.resets)
        self.compiled_updates = CompiledUpdates(self.agent, batch_size, online_steps)
        self.optimizer_names = list(self.agent.make_optimizers())
        self.reward_scale, self.reward_bias = bundle.reward_scale, bundle.reward_bias
        self.probe = bundle.probe  # offline rows for diagnostics only: never a loss or buffer
        self.calql_online = isinstance(self.agent, CQL) and self.agent.config.calql
        self.action_chunk = chunk = self.agent.config.action_chunk
        if self.calql_online:  # rows of `chunk` env steps (wsrl_wm/data/chunks.py)
            self.buffer = EpisodeReplayBuffer(buffer_capacity, obs_dim, act_dim * chunk,
                                              self.agent.config.discount,
                                              bundle.sparse_negative_reward)
        else:
            self.buffer = ReplayBuffer.for_transitions(buffer_capacity, obs_dim, act_dim * chunk)
        self.offline_buffer = None
        if retain_offline_ratio > 0:
            offline = load_offline_tensors(offline_dataset, self.env_name,
                                           self.agent.config.discount, self.reward_scale,
                                           self.reward_bias, bundle.sparse_negative_reward,
                                           chunk, self.agent.config.pad_terminal)
            self.offline_buffer = ReplayBuffer.for_transitions(
                len(offline["rewards"]), obs_dim, act_dim * chunk,
                with_mc_returns=self.calql_online)
            self.offline_buffer.add(offline)
        self.rollout = rollout
        self.world_model = self.model_buffer = self.model_rollouts = self.step_buffer = None
        if rollout.ratio > 0 and self.calql_online:
            raise WsrlError("online_cql_alpha > 0 after a Cal-QL pretraining keeps the Cal-QL "
                            "bound, which needs an MC return for every row, and imagined "
                            "rollouts have none: use rollout.ratio 0 or online_cql_alpha 0")
        if rollout.ratio > 0:  # r = 0 is plain WSRL: the world model is not even loaded
            self.world_model = restore_world_model(
                bundle.world_model_config, bundle.world_model_state, obs_dim, act_dim,
                rollout.uncertainty_quantile is not None)
            self.world_model.requires_grad_(rollout.adapt_interval > 0)
            self.model_buffer = ModelBuffer(rollout.buffer_capacity(0), obs_dim, act_dim * chunk)
            if chunk > 1:  # the one-step model is measured and adapted on env steps
                self.step_buffer = ReplayBuffer.for_transitions(buffer_capacity, obs_dim, act_dim)
        self.env_step = 0
        self._resumed: dict | None = None
        self.dip_window = dip_window_for(dip_window, online_steps)
        self.checkpoint_interval = checkpoint_interval  # env steps between resumable checkpoints
        self.sampler = torch.Generator().manual_seed(seed)
        imagination_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
        self.imagination = torch.Generator().manual_seed(imagination_seed)
        self.batches = BatchSource(self.buffer, batch_size, self.sampler, self.imagination,
                                   self.offline_buffer, retain_offline_ratio, self.model_buffer,
                                   rollout.ratio)
        if self.world_model is not None:
            self.model_rollouts = Imagination(
                self.world_model, rollout, self.model_buffer, self.env_name, bundle.model_probe,
                self.imagination, self.reward_scale, self.reward_bias,
                self.agent.config.on_nonfinite == "skip", warmup_steps)
        self.evaluator = Evaluator(self.env_name, eval_episodes, seed, self.probe, self.buffer,
                                   warmup_steps, self.dip_window, chunk)
        mechanism_seed = int(np.random.SeedSequence([seed, 3]).generate_state(1)[0])
        env_rows = self.buffer if self.step_buffer is None else self.step_buffer
        self.mechanism = Mechanism(self.probe, self.buffer, self.model_buffer, self.world_model,
                                   env_rows, seed=mechanism_seed)

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
        if rollout.start_from == "warmup" and warmup_steps == 0:
            raise WsrlError("rollout.start_from warmup needs warmup_steps > 0 (the rollouts "
                            "start from the warmup's states)")
        if retain_ratio > 0 and not dataset:
            raise WsrlError("retain_offline_ratio > 0 needs offline_dataset (the retained data)")

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
            "retain_offline_ratio": hp.retain_offline_ratio, "pretrained": hp.pretrained,
            "resets": dataclasses.asdict(self.resets), "jsrl": dataclasses.asdict(self.jsrl)})
        self.runner = EnvRunner(make_env(self.env_name, hp.seed), self.buffer, self.reward_scale,
                                self.reward_bias, episodic=self.calql_online,
                                action_chunk=self.action_chunk,
                                discount=self.agent.config.discount, step_buffer=self.step_buffer,
                                pad_terminal=self.agent.config.pad_terminal)
        self.runner.reset(hp.seed)
        if self._resumed is not None:
            self.runner.load_state_dict(self._resumed)
            self._resumed = None
        elif self.guide is not None:
            self.start_roll_in(self.env_step - hp.warmup_steps)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.env_step >= self.total_env_steps:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Everything a killed run needs to continue exactly: buffers, counters, the episode in
        progress (the env's physics included) and every random stream."""
        checkpoint["probe"] = self.probe
        checkpoint["online_state"] = {
            "env_step": self.env_step, **self.runner.state_dict(),
            "buffer": self.buffer.state_dict(),
            "model_buffer": None if self.model_buffer is None else self.model_buffer.state_dict(),
            "step_buffer": None if self.step_buffer is None else self.step_buffer.state_dict(),
            "sampler": self.sampler.get_state(), "imagination": self.imagination.get_state(),
            "roll_ins": self.roll_ins.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            **self.evaluator.state_dict(),
            "mechanism": self.mechanism.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("online_state")
        if state is None:
            raise WsrlError("this checkpoint has no fine-tuning state to resume; to start "
                            "fine-tuning from a pretraining checkpoint use model.pretrained")
        self.env_step = state["env_step"]
        self.evaluator.load_state_dict(state)
        if "mechanism" in state:  # absent in checkpoints from before it existed
            self.mechanism.load_state_dict(state["mechanism"])
        self.buffer.load_state_dict(state["buffer"])
        if self.model_buffer is not None and state["model_buffer"] is not None:
            self.model_buffer.load_state_dict(state["model_buffer"])
        if self.step_buffer is not None:
            self.step_buffer.load_state_dict(state["step_buffer"])
        self.sampler.set_state(state["sampler"])
        if "imagination" in state:  # absent in checkpoints from before it existed
            self.imagination.set_state(state["imagination"])
        if "roll_ins" in state:  # (as is this)
            self.roll_ins.bit_generator.state = state["roll_ins"]
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
        episode_return = self.runner.step(self.agent, self.device, self.guide)
        if episode_return is not None:
            log_at_env_step(self, {"train/episode_return": episode_return}, self.env_step)
            if self.guide is not None:
                self.start_roll_in(online + 1)
        if self.resets.due(online, self.hparams.online_steps):
            self.reset()
        info = {}
        if online >= 0 and (not self.calql_online or self.buffer.finished):
            with stop_on_divergence(self, f"env step {self.env_step} (online update "
                                          f"{online + 1})"):
                info = self.agent.update(self.sample_batch(), self.named_optimizers())
            self.compiled_updates.ran()
        self.env_step += 1
        online += 1
        if self.evaluation_due(online):
            self.run_evaluation()
        if info and self.env_step % self.hparams.log_interval == 0:
            log_at_env_step(self, {f"train/{k}": v for k, v in info.items()}, self.env_step)
            if self.world_model is not None:  # the realised model share, after gating
                log_at_env_step(self, {"rollout/model_share": self.batches.model_share()},
                                self.env_step)

    # --- the parts, called in order ------------------------------------------------------

    def start_roll_in(self, online_step: int) -> None:
        """The guide's roll-in for the episode starting at `online_step` (`JSRLConfig.roll_in`),
        logged."""
        self.runner.roll_in = self.jsrl.roll_in(online_step, self.hparams.online_steps,
                                                self.roll_ins)
        if online_step >= 0:
            log_at_env_step(self, {"jsrl/roll_in": self.runner.roll_in}, self.env_step)

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(zip(self.optimizer_names, self.optimizers(), strict=True))

    def reset(self) -> None:
        """A plasticity reset (`reset_layers`) from a freshly initialised agent, logged as an
        event on the env-step axis."""
        fresh = type(self.agent)(self.obs_dim, self.act_dim, self.agent.config)
        count = reset_layers(self.agent, fresh, self.resets, self.named_optimizers())
        log_at_env_step(self, {"event/reset_parameters": count}, self.env_step)

    def imagine(self, online_step: int) -> None:
        """A round of model rollouts (`Imagination.round`), logged."""
        metrics = self.model_rollouts.round(self.agent, self.model_rows, online_step,
                                            self.env_step, self.device)
        log_at_env_step(self, metrics, self.env_step)

    def adapt_world_model(self) -> None:
        """The world model's adaptation on the online buffer (`Imagination.adapt`), logged."""
        log_at_env_step(self, self.model_rollouts.adapt(self.model_rows, self.device),
                        self.env_step)

    @property
    def model_rows(self) -> ReplayBuffer:
        """The online env steps the world model starts from, is measured and adapted on."""
        return self.buffer if self.step_buffer is None else self.step_buffer

    def sample_batch(self) -> dict[str, torch.Tensor]:
        return self.batches.sample(self.device)

    def evaluation_due(self, online: int) -> bool:
        """After online step `online`: every `dense_eval_interval` steps for the first
        `dense_eval_steps` (where the dip is), every `eval_interval` steps, and at the end."""
        hp = self.hparams
        return online > 0 and (online % hp.eval_interval == 0 or online == hp.online_steps
                               or (online <= hp.dense_eval_steps
                                   and online % hp.dense_eval_interval == 0))

    def run_evaluation(self) -> None:
        """Score and diagnostics (`Evaluator`, `Mechanism`), logged and added to
        evaluations.csv."""
        metrics = self.evaluator(self.agent, self.env_step, self.device,
                                 self.mechanism(self.agent, self.device))
        log_at_env_step(self, metrics, self.env_step)
        write_csv_atomically(Path(self.trainer.default_root_dir) / "evaluations.csv",
                             self.evaluations)

    @property
    def evaluations(self) -> list[dict]:
        return self.evaluator.evaluations

    def progress_metrics(self) -> dict:
        phase = "warmup" if self.env_step < self.hparams.warmup_steps else "online"
        metrics = {"env_step": self.env_step, "phase": phase}
        last_eval = self.evaluator.last_eval
        if SCORE in last_eval:
            metrics["score"] = f"{last_eval[SCORE]:.1f}"
        return metrics
