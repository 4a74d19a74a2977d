"""The training env's episode in progress, stepped by the agent into the online buffer."""

import gymnasium as gym
import numpy as np
import torch

from wsrl_wm.envs.state import get_env_state, set_env_state


class EnvRunner:
    """One env step per call with the agent's stochastic action (the frozen pretrained policy
    during the warmup, since no update has happened yet), stored in the online buffer in the
    run's reward units (scale and bias). With a `guide` (JSRL), the guide acts instead for the
    first `roll_in` steps of the episode; whoever acts, the row goes to the same buffer."""

    def __init__(self, env: gym.Env, buffer, reward_scale: float = 1.0,
                 reward_bias: float = 0.0, episodic: bool = False):
        """`episodic`: the buffer is an `EpisodeReplayBuffer`, told where each episode ends."""
        self.env, self.buffer, self.episodic = env, buffer, episodic
        self.reward_scale, self.reward_bias = reward_scale, reward_bias
        self.obs, self.episode_return = None, 0.0
        self.episode_step, self.roll_in = 0, 0

    def reset(self, seed: int) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.episode_return, self.episode_step = 0.0, 0

    def step(self, agent, device: torch.device | str = "cpu", guide=None) -> float | None:
        """One step; returns the episode's return (in reward units) when it ended here."""
        obs = torch.as_tensor(self.obs, dtype=torch.float32, device=device)
        actor = guide if guide is not None and self.episode_step < self.roll_in else agent
        action = actor.act(obs).cpu().numpy()
        self.episode_step += 1
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        reward = reward * self.reward_scale + self.reward_bias
        self.buffer.add({
            "observations": self.obs[None], "actions": action[None],
            "rewards": np.array([reward]), "next_observations": next_obs[None],
            "terminals": np.array([float(terminated)]),
        })
        self.episode_return += float(reward)
        self.obs = next_obs
        if not (terminated or truncated):
            return None
        finished, self.episode_return, self.episode_step = self.episode_return, 0.0, 0
        self.obs, _ = self.env.reset()
        if self.episodic:
            self.buffer.end_episode()
        return finished

    def state_dict(self) -> dict:
        """The episode in progress, the env's physics included."""
        return {"obs": self.obs, "episode_return": self.episode_return,
                "episode_step": self.episode_step, "roll_in": self.roll_in,
                "env": get_env_state(self.env)}

    def load_state_dict(self, state: dict) -> None:
        set_env_state(self.env, state["env"])
        self.obs, self.episode_return = state["obs"], state["episode_return"]
        # (absent in checkpoints from before JSRL: no roll-in there)
        self.episode_step, self.roll_in = state.get("episode_step", 0), state.get("roll_in", 0)
