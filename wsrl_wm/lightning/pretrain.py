"""Offline pretraining (CQL / Cal-QL) as a LightningModule with manual optimisation."""

import torch
from lightning.pytorch import LightningModule
from torch.utils.data import DataLoader

from wsrl_wm.agents import CQL, CQLConfig
from wsrl_wm.compile_cache import CompiledUpdates
from wsrl_wm.data.chunks import chunk_rows, chunk_starts
from wsrl_wm.envs import env_dims
from wsrl_wm.errors import WsrlError
from wsrl_wm.evaluation import EVAL_SEED_OFFSET, EvalEnvs, evaluate
from wsrl_wm.lightning.bundle import BUNDLE_KEY, PretrainedBundle
from wsrl_wm.lightning.divergence import stop_on_divergence
from wsrl_wm.lightning.env_step_logging import log_at_env_step
from wsrl_wm.lightning.offline_data import RandomBatches, as_tensors, load_offline_steps
from wsrl_wm.metrics import SCORE
from wsrl_wm.world_model import WorldModel, WorldModelConfig, train_world_model


class PretrainModule(LightningModule):
    """One CQL/Cal-QL update per training step on random offline batches.

    With `world_model` set, the dynamics ensemble is first fitted on the same offline data.
    The checkpoint it writes holds what `FinetuneModule` restores, as a `PretrainedBundle`:
    agent parameters, optimiser states (by name), temperature, the world model and the probe.
    "Steps" here are gradient updates (no env interaction); they are the x-axis of the
    pretraining curves.
    """

    def __init__(self, env: str, dataset: str, agent: CQLConfig | None = None,
                 steps: int = 250_000, batch_size: int = 256, reward_scale: float = 1.0,
                 reward_bias: float = 0.0, sparse_negative_reward: float | None = None,
                 eval_interval: int = 25_000, eval_episodes: int = 10, log_interval: int = 1000,
                 world_model: WorldModelConfig | None = None, probe_size: int = 2000,
                 seed: int = 0):
        super().__init__()
        agent = agent or CQLConfig()
        if steps <= 0 or batch_size <= 0:
            raise WsrlError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.env_name = env
        obs_dim, act_dim = env_dims(env)
        self.agent = CQL(obs_dim, act_dim, agent)
        self.compiled_updates = CompiledUpdates(self.agent, batch_size, steps)
        self.optimizer_names = list(self.agent.make_optimizers())
        data = load_offline_steps(dataset, env, agent.discount, reward_scale, reward_bias,
                                  sparse_negative_reward)
        h = agent.action_chunk
        self.offline = as_tensors(chunk_rows(data, h, agent.discount,  # the agent's rows
                                             agent.pad_terminal))
        # The world model is one-step: it learns from env steps, not chunks.
        self.offline_steps = self.offline if h == 1 else as_tensors(data)
        self.last_eval: dict = {}
        self.eval_envs = EvalEnvs(env)  # built once, reset with each episode's seed
        # A fixed offline sample that fine-tuning keeps for Q diagnostics only (never trained on).
        rows = torch.randperm(len(self.offline["rewards"]),
                              generator=torch.Generator().manual_seed(seed))[:probe_size]
        self.probe = {k: v[rows].clone() for k, v in self.offline.items()}
        # With chunks, the probe rows' first steps, for the world model's probe error.
        self.step_probe = None
        if h > 1:
            first = torch.as_tensor(chunk_starts(data["terminals"], data["timeouts"], h,
                                                 agent.pad_terminal)[0])
            self.step_probe = {k: v[first[rows]].clone() for k, v in self.offline_steps.items()}
        self.world_model, self.world_model_config = None, world_model
        if world_model is not None:
            with torch.random.fork_rng(devices=[]):  # leave the agent's random stream as is,
                torch.manual_seed(seed)  # so adding a world model never changes the agent
                self.world_model = WorldModel(obs_dim, act_dim, world_model)
            # In the state_dict, so a resumed pretraining run does not train the model twice.
            self.register_buffer("world_model_trained", torch.tensor(False))

    def train_dataloader(self) -> DataLoader:
        batches = RandomBatches(self.offline, self.hparams.batch_size, self.hparams.steps,
                                self.hparams.seed)
        return DataLoader(batches, batch_size=None)

    def configure_optimizers(self):
        return list(self.agent.make_optimizers().values())

    def on_train_start(self) -> None:
        """The dynamics ensemble is fitted once, on the same offline data, before the agent."""
        if self.world_model is None or self.world_model_trained:
            return
        generator = torch.Generator().manual_seed(self.hparams.seed)
        metrics = train_world_model(self.world_model, self.offline_steps, self.world_model_config,
                                    generator)
        self.world_model_trained.fill_(True)
        log_at_env_step(self, {f"world_model/{k}": v for k, v in metrics.items()
                               if isinstance(v, float | int)}, 0)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        optimizers = dict(zip(self.optimizer_names, self.optimizers(), strict=True))
        step = batch_idx + 1
        with stop_on_divergence(self, f"pretraining update {step}"):
            info = self.agent.update(batch, optimizers)
        self.compiled_updates.ran()
        if step % self.hparams.log_interval == 0:
            log_at_env_step(self, {f"pretrain/{k}": v for k, v in info.items()}, step)
        if step % self.hparams.eval_interval == 0 or step == self.hparams.steps:
            self.last_eval = evaluate(self.agent.actor, self.env_name, self.hparams.eval_episodes,
                                      self.hparams.seed + EVAL_SEED_OFFSET,
                                      action_chunk=self.agent.config.action_chunk,
                                      envs=self.eval_envs)
            log_at_env_step(self, self.last_eval, step)

    def progress_metrics(self) -> dict:
        score = self.last_eval.get(SCORE)
        return {"phase": "pretrain", **({"score": f"{score:.1f}"} if score is not None else {})}

    def bundle(self, optimizer_states: list[dict]) -> PretrainedBundle:
        """What fine-tuning takes from this run, given the optimisers' state_dicts (in
        `optimizer_names` order)."""
        hp = self.hparams
        return PretrainedBundle(
            env=self.env_name, dataset=hp.dataset, agent_config=self.agent.config,
            agent_state=self.agent.state_dict(),
            optimizer_states=dict(zip(self.optimizer_names, optimizer_states, strict=True)),
            probe=self.probe, step_probe=self.step_probe, reward_scale=hp.reward_scale,
            reward_bias=hp.reward_bias, sparse_negative_reward=hp.sparse_negative_reward,
            world_model_config=self.world_model_config,
            world_model_state=None if self.world_model is None else self.world_model.state_dict())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[BUNDLE_KEY] = self.bundle(checkpoint["optimizer_states"]).to_dict()
