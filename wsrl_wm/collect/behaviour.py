"""Locomotion datasets from SAC behaviour policies: D4RL-format files from gymnasium MuJoCo v5
envs.

random        uniform actions;
medium        a SAC policy trained until its evaluation reaches `target_score` (D4RL's medium is
              about a third of expert), then rolled out with its stochastic actions;
medium-replay that policy's whole training buffer;
expert        the same policy trained further, to `expert_score`, then rolled out.

The target is judged on the policy that writes the data: its stochastic actions, evaluated every
`eval_interval` steps. SAC's score can collapse between evaluations, so when the budget runs out
before the target the best-evaluated policy writes the data, not the last one (with a warning).
"""

import copy
import sys
from dataclasses import dataclass

import numpy as np
import torch

from models import TanhGaussianActor
from wsrl_wm.agents import SAC, SACConfig
from wsrl_wm.atomic import atomic_path
from wsrl_wm.data import ReplayBuffer, write_d4rl_file
from wsrl_wm.envs import env_dims, make_env, normalized_score
from wsrl_wm.errors import WsrlError
from wsrl_wm.evaluation import evaluate
from wsrl_wm.progress import progress_bar

QUALITIES = ("random", "medium", "medium-replay", "expert")
HIDDEN = (256, 256)  # the behaviour policy's networks (SACConfig's default)


@dataclass
class TrainingBudget:
    """How the behaviour policy is trained; the defaults stay cheap enough for a laptop."""

    target_score: float = 33.0
    expert_score: float = 90.0
    max_train_steps: int = 300_000
    random_steps: int = 5_000
    eval_interval: int = 5_000
    eval_episodes: int = 5
    batch_size: int = 256


class EpisodeRecorder:
    """Steps an env with a given policy and records D4RL rows (terminal ≠ timeout)."""

    def __init__(self, env, seed: int):
        self.env = env
        self.obs, _ = env.reset(seed=seed)
        self.rows: dict[str, list] = {k: [] for k in (
            "observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
        self.episode_return = 0.0
        self.returns: list[float] = []

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        row = {"observations": self.obs, "actions": action, "rewards": reward,
               "next_observations": next_obs, "terminals": terminated, "timeouts": truncated}
        for key, value in row.items():
            self.rows[key].append(value)
        self.episode_return += reward
        self.obs = next_obs
        if terminated or truncated:
            self.returns.append(self.episode_return)
            self.episode_return = 0.0
            self.obs, _ = self.env.reset()
        return row

    def arrays(self) -> dict[str, np.ndarray]:
        """Rows as D4RL arrays; an episode cut by the step budget ends as a timeout."""
        out = {k: np.asarray(v, dtype=np.float32) for k, v in self.rows.items()}
        out["terminals"] = out["terminals"].astype(bool)
        out["timeouts"] = out["timeouts"].astype(bool)
        if len(out["timeouts"]) and not out["terminals"][-1]:
            out["timeouts"][-1] = True
        return out


class BehaviourTrainer:
    """Online SAC on one env whose training can be continued (medium → expert); every
    transition it sees is recorded, which is exactly the medium-replay dataset."""

    def __init__(self, env_name: str, budget: TrainingBudget, seed: int):
        self.env_name, self.budget, self.seed = env_name, budget, seed
        env = make_env(env_name, seed)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        config = SACConfig(num_critics=2, layer_norm=False, backup_entropy=True,
                           actor_hidden=HIDDEN, critic_hidden=HIDDEN)
        self.agent = SAC(obs_dim, act_dim, config)
        self.optimizers = self.agent.make_optimizers()
        self.buffer = ReplayBuffer.for_transitions(budget.max_train_steps, obs_dim, act_dim)
        self.recorder = EpisodeRecorder(env, seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.score = -np.inf  # last evaluation; kept when a later call has no budget left
        self.best_score, self.best_actor = -np.inf, None  # the best-evaluated policy so far

    def evaluate(self) -> float:
        """The stochastic policy's score: the actions that will write the dataset."""
        self.score = evaluate(self.agent.actor, self.env_name, self.budget.eval_episodes,
                              self.seed + 10**4, deterministic=False)["eval/normalized_score"]
        if self.score > self.best_score:
            self.best_score, self.best_actor = self.score, copy.deepcopy(self.agent.actor)
        return self.score

    def behaviour_policy(self, target: float) -> tuple[TanhGaussianActor, float]:
        """The policy that writes the data and its score: the current one if it reached
        `target`, else the best evaluated one (the last can have collapsed)."""
        if self.score >= target or self.best_actor is None:
            return self.agent.actor, self.score
        print(f"warning: the behaviour policy never reached score {target:g} within "
              f"max_train_steps={self.budget.max_train_steps}; writing the data with the "
              f"best-evaluated policy (score {self.best_score:.1f}; the last scored "
              f"{self.score:.1f})", file=sys.stderr)
        return self.best_actor, self.best_score

    def train_until(self, target: float) -> float:
        """Train until the stochastic policy's score reaches `target` or the step budget
        (shared by all calls) runs out; returns the last evaluation score."""
        budget, buffer = self.budget, self.buffer
        progress = progress_bar(budget.max_train_steps, f"train SAC to score {target:g}",
                                initial=len(buffer))
        while len(buffer) < budget.max_train_steps:
            step = len(buffer)
            if step < budget.random_steps:
                action = self.recorder.env.action_space.sample()
            else:
                obs = torch.as_tensor(self.recorder.obs, dtype=torch.float32)
                action = self.agent.act(obs).numpy()
            row = self.recorder.step(action)
            buffer.add({k: torch.as_tensor(np.asarray(row[k]))[None] for k in buffer.storage})
            progress.update(1)
            if step < budget.random_steps:
                continue
            self.agent.update(buffer.sample(budget.batch_size, self.generator), self.optimizers)
            if (step + 1) % budget.eval_interval == 0:
                progress.set_postfix(score=f"{self.evaluate():.1f}")
                if self.score >= target:
                    break
        progress.close()
        return self.score


def rollout(actor: TanhGaussianActor | None, env_name: str, steps: int, seed: int
            ) -> EpisodeRecorder:
    """`steps` transitions of the actor's stochastic policy (uniform actions if no actor)."""
    env = make_env(env_name, seed)
    recorder = EpisodeRecorder(env, seed)
    progress = progress_bar(steps, "collect")
    for _ in range(steps):
        if actor is None:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = actor(torch.as_tensor(recorder.obs, dtype=torch.float32))[0].numpy()
        recorder.step(action)
        progress.update(1)
    progress.close()
    return recorder


def save_policy(path: str, actor: TanhGaussianActor, env: str, score: float) -> None:
    """The behaviour policy (a few hundred KB), so its data can be rolled out again without
    training it: `collect(..., policy=path)`."""
    with atomic_path(path) as tmp:
        torch.save({"env": env, "score": score, "hidden": HIDDEN,
                    "state_dict": actor.state_dict()}, tmp)


def load_policy(path: str, env: str) -> tuple[TanhGaussianActor, float]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise WsrlError(f"cannot load the behaviour policy {path}: {exc}") from None
    if env_dims(saved["env"]) != env_dims(env):
        raise WsrlError(f"{path} is a policy for {saved['env']!r}, not {env!r}")
    actor = TanhGaussianActor(*env_dims(env), tuple(saved["hidden"]))
    actor.load_state_dict(saved["state_dict"])
    return actor, float(saved["score"])


def collect(env: str, quality: str, steps: int, seed: int, out: str,
            budget: TrainingBudget | None = None, save_policy_to: str | None = None,
            policy: str | None = None) -> dict:
    """Write a D4RL-format dataset to `out` (atomically) and return its metadata. The
    behaviour policy of a trained quality is saved to `save_policy_to` if given; with `policy`
    (a saved one) nothing is trained: that policy writes the data."""
    if quality not in QUALITIES:
        raise WsrlError(f"unknown quality {quality!r}; choose one of {', '.join(QUALITIES)}")
    if steps <= 0:
        raise WsrlError(f"--steps must be positive, got {steps}")
    if policy and quality not in ("medium", "expert"):
        raise WsrlError(f"a saved --policy writes medium or expert data, not {quality}")
    budget = budget or TrainingBudget()
    torch.manual_seed(seed)
    make_env(env).close()  # fail on a bad env name before any work
    policy_score = None
    if quality == "random":
        recorder = rollout(None, env, steps, seed)
    elif policy:
        actor, policy_score = load_policy(policy, env)
        target = policy_score
        recorder = rollout(actor, env, steps, seed + 1)
    else:
        trainer = BehaviourTrainer(env, budget, seed)
        target = budget.expert_score if quality == "expert" else budget.target_score
        trainer.train_until(budget.target_score)
        if quality == "expert":
            trainer.train_until(budget.expert_score)
        actor, policy_score = trainer.behaviour_policy(target)
        if save_policy_to:
            save_policy(save_policy_to, actor, env, policy_score)
        recorder = trainer.recorder
        if quality != "medium-replay":
            recorder = rollout(actor, env, steps, seed + 1)
    arrays = recorder.arrays()
    returns = recorder.returns or [recorder.episode_return]
    metadata = {
        "env": env, "quality": quality, "seed": seed, "steps": len(arrays["rewards"]),
        "episodes": len(recorder.returns),
        "behaviour_score": float(np.mean(normalized_score(env, returns))),
        "behaviour_return": float(np.mean(returns)),
    }
    if policy_score is not None:  # the stochastic policy's score at its evaluation
        metadata["policy_eval_score"] = policy_score
        metadata["target_reached"] = policy_score >= target
    write_d4rl_file(out, arrays, metadata)
    return metadata
