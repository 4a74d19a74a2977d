"""The training env's episode in progress, stepped by the agent into the online buffer."""

import gymnasium as gym
import numpy as np
import torch

from wsrl_wm.data.chunks import chunk_rows
from wsrl_wm.envs.state import get_env_state, set_env_state


class EnvRunner:
    """One env step per call with the agent's stochastic action (the frozen pretrained policy
    during the warmup, since no update has happened yet), stored in the online buffer in the
    run's reward units (scale and bias). With a `guide` (JSRL), the guide picks the actions
    (chunks) that start within the first `roll_in` steps of the episode; whoever acts, the
    rows go to the same buffer.

    With action chunks of h, the agent is asked for h actions at once, which the next h calls
    execute open-loop (a new episode starts a new chunk), and the buffer gets chunk rows
    (wsrl_wm/data/chunks.py): the row starting h − 1 steps back as each window of h steps
    completes, and at an episode's end those of its last steps still pending whose window
    the episode's end does not cut short (with `pad_terminal`, also those a terminal cuts)."""

    def __init__(self, env: gym.Env, buffer, reward_scale: float = 1.0,
                 reward_bias: float = 0.0, episodic: bool = False, action_chunk: int = 1,
                 discount: float = 0.99, step_buffer=None, pad_terminal: bool = False):
        """`episodic`: the buffer is an `EpisodeReplayBuffer`, told where each episode ends.
        `step_buffer`: also gets every env step as a one-step row (the world model's data)."""
        self.env, self.buffer, self.episodic = env, buffer, episodic
        self.reward_scale, self.reward_bias = reward_scale, reward_bias
        self.action_chunk, self.discount, self.step_buffer = action_chunk, discount, step_buffer
        self.pad_terminal = pad_terminal
        self.obs, self.episode_return = None, 0.0
        self.episode_step, self.roll_in = 0, 0
        self.queue: list[np.ndarray] = []  # the current chunk's actions not yet executed
        self.pending: list[dict] = []  # the latest steps, whose chunk rows are not yet written
        self.episode_rewards: list[float] = []  # per step, for chunk rows' MC returns

    def reset(self, seed: int) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.episode_return, self.episode_step = 0.0, 0

    def step(self, agent, device: torch.device | str = "cpu", guide=None) -> float | None:
        """One step; returns the episode's return (in reward units) when it ended here."""
        if not self.queue:
            obs = torch.as_tensor(self.obs, dtype=torch.float32, device=device)
            actor = guide if guide is not None and self.episode_step < self.roll_in else agent
            self.queue = list(actor.act(obs).cpu().numpy().reshape(self.action_chunk, -1))
        action = self.queue.pop(0)
        self.episode_step += 1
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        reward = reward * self.reward_scale + self.reward_bias
        step = {"observations": self.obs[None], "actions": action[None],
                "rewards": np.array([reward]), "next_observations": next_obs[None],
                "terminals": np.array([float(terminated)])}
        if self.step_buffer is not None:
            self.step_buffer.add(step)
        if self.action_chunk == 1:  # a step is its own row (`chunk_rows` at h = 1)
            self.buffer.add(step)
        else:
            self.pending.append({**step, "timeouts": np.array([truncated and not terminated])})
        if self.episodic and self.action_chunk > 1:
            self.episode_rewards.append(float(reward))
        self.episode_return += float(reward)
        self.obs = next_obs
        if not (terminated or truncated):
            if len(self.pending) == self.action_chunk:  # a window of h steps is complete
                self.write_rows()
                self.pending.pop(0)
            return None
        if self.pending:
            self.write_rows()  # the windows the episode's end completes
        finished, self.episode_return, self.episode_step = self.episode_return, 0.0, 0
        self.obs, _ = self.env.reset()
        if self.episodic:
            self.end_episode(terminated)
        self.queue, self.pending, self.episode_rewards = [], [], []
        return finished

    def write_rows(self) -> None:
        """The chunk rows the pending steps complete (their end counts as a truncation unless
        the last step is terminal: only full windows are written while an episode goes on)."""
        steps = {k: np.concatenate([step[k] for step in self.pending]) for k in self.pending[0]}
        rows = chunk_rows(steps, self.action_chunk, self.discount, self.pad_terminal)
        if len(rows["rewards"]):
            self.buffer.add(rows)

    def end_episode(self, terminated: bool) -> None:
        """The episode's MC returns into the `EpisodeReplayBuffer`: from its chunk rows'
        first steps (one row per step but the last h − 1, which only a padded terminal
        keeps); single steps are the rows themselves."""
        if self.action_chunk == 1:
            self.buffer.end_episode()
            return
        steps = len(self.episode_rewards)
        whole = terminated and self.pad_terminal
        rows = steps if whole else max(steps - self.action_chunk + 1, 0)
        returns = self.buffer.returns_to_go(np.array(self.episode_rewards))
        self.buffer.end_episode(returns[:rows])

    def state_dict(self) -> dict:
        """The episode in progress, the env's physics and the chunk being executed included."""
        return {"obs": self.obs, "episode_return": self.episode_return,
                "episode_step": self.episode_step, "roll_in": self.roll_in,
                "env": get_env_state(self.env), "chunk_queue": self.queue,
                "chunk_pending": self.pending, "episode_rewards": self.episode_rewards}

    def load_state_dict(self, state: dict) -> None:
        set_env_state(self.env, state["env"])
        self.obs, self.episode_return = state["obs"], state["episode_return"]
        # (absent in checkpoints from before JSRL and action chunks)
        self.episode_step, self.roll_in = state.get("episode_step", 0), state.get("roll_in", 0)
        self.queue = list(state.get("chunk_queue", []))
        self.pending = list(state.get("chunk_pending", []))
        self.episode_rewards = list(state.get("episode_rewards", []))
