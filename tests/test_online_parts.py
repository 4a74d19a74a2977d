"""The parts of online fine-tuning (wsrl_wm/online), each without Lightning: the env runner, the
batch source, the evaluator and the world model online."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ACT_DIM, OBS_DIM, TINY_WORLD_MODEL

import wsrl_wm.online.evaluator
from wsrl_wm.data import EpisodeReplayBuffer, ReplayBuffer
from wsrl_wm.envs import make_env
from wsrl_wm.metrics import MODEL_COLUMNS, SCORE
from wsrl_wm.online import BatchSource, EnvRunner, Evaluator, Imagination
from wsrl_wm.world_model import ModelBuffer, RolloutConfig, WorldModel, WorldModelConfig


class StateAction:
    """A deterministic agent: its action is a function of the observation only."""

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(obs[:ACT_DIM] * 3.0)


def short_hopper(seed: int = 0, steps: int = 6) -> gym.Env:
    return gym.wrappers.TimeLimit(make_env("Hopper-v5", seed), max_episode_steps=steps)


# ------------------------------------------------------------------------------- env runner


def test_env_runner_stores_scaled_rewards_and_ends_episodes():
    buffer = ReplayBuffer.for_transitions(100, OBS_DIM, ACT_DIM)
    runner = EnvRunner(short_hopper(), buffer, reward_scale=2.0, reward_bias=-1.0)
    runner.reset(seed=3)
    plain = short_hopper()
    obs, _ = plain.reset(seed=3)
    raw = []
    for _ in range(6):
        obs, reward, *_ = plain.step(StateAction().act(torch.as_tensor(obs, dtype=torch.float32))
                                     .numpy())
        raw.append(reward)
    returns = [runner.step(StateAction()) for _ in range(6)]
    assert returns[:5] == [None] * 5  # the time limit ends the episode at its sixth step
    scaled = [2.0 * r - 1.0 for r in raw]
    assert returns[5] == pytest.approx(sum(scaled))
    torch.testing.assert_close(buffer.storage["rewards"][:6],
                               torch.tensor(scaled, dtype=torch.float32))
    assert runner.episode_return == 0.0 and len(buffer) == 6
    np.testing.assert_allclose(buffer.storage["next_observations"][5].numpy(), obs, rtol=1e-6)


def test_env_runner_closes_episodes_of_an_episodic_buffer():
    buffer = EpisodeReplayBuffer(100, OBS_DIM, ACT_DIM, discount=0.9)
    runner = EnvRunner(short_hopper(steps=3), buffer, episodic=True)
    runner.reset(seed=0)
    for _ in range(4):
        runner.step(StateAction())
    assert buffer.finished == 3 and len(buffer) == 4  # the fourth row's episode is open


def test_env_runner_resumes_the_episode_in_progress_exactly():
    def transitions(runner, steps):
        for _ in range(steps):
            runner.step(StateAction())
        return {k: v[: len(runner.buffer)].clone() for k, v in runner.buffer.storage.items()}

    whole = EnvRunner(make_env("Hopper-v5", 0), ReplayBuffer.for_transitions(50, OBS_DIM,
                                                                             ACT_DIM))
    whole.reset(seed=1)
    expected = transitions(whole, 10)
    first = EnvRunner(make_env("Hopper-v5", 0), ReplayBuffer.for_transitions(50, OBS_DIM,
                                                                             ACT_DIM))
    first.reset(seed=1)
    transitions(first, 4)
    resumed = EnvRunner(make_env("Hopper-v5", 5), first.buffer)  # another env, same physics
    resumed.reset(seed=9)
    resumed.load_state_dict(first.state_dict())
    got = transitions(resumed, 6)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


# ----------------------------------------------------------------------------- batch source


def filled(value: float, rows: int = 40, capacity: int = 100) -> ReplayBuffer:
    buffer = ReplayBuffer.for_transitions(capacity, OBS_DIM, ACT_DIM)
    buffer.add({k: torch.full((rows, *v.shape[1:]), value) for k, v in buffer.storage.items()})
    return buffer


def source(model_ratio=0.0, retain_ratio=0.0, model_rows=40, seed=0) -> BatchSource:
    imagined = ModelBuffer(100, OBS_DIM, ACT_DIM)
    if model_rows:
        imagined.add({k: torch.ones((model_rows, *v.shape[1:]))
                      for k, v in filled(0.0).storage.items()}, env_step=0)
    return BatchSource(filled(0.0), 32, torch.Generator().manual_seed(seed),
                       torch.Generator().manual_seed(seed + 1),
                       filled(2.0) if retain_ratio else None, retain_ratio, imagined, model_ratio)


def test_batch_source_without_mixing_is_the_online_sample():
    batches = source()
    expected = batches.online.sample(32, torch.Generator().manual_seed(0))
    got = batches.sample()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize(("model_ratio", "retain_ratio"), [(0.25, 0.0), (0.5, 0.25)])
def test_batch_source_mixes_the_three_sources_at_their_ratios(model_ratio, retain_ratio):
    batches = source(model_ratio, retain_ratio)
    for _ in range(3):
        rewards = batches.sample()["rewards"]
        assert int((rewards == 1.0).sum()) == round(model_ratio * 32)
        assert int((rewards == 2.0).sum()) == round(retain_ratio * 32)
        first_slice = rewards[:16]  # shuffled: a UTD slice sees the model rows too
        assert 0 < int((first_slice == 1.0).sum()) < 16
    assert batches.model_share() == pytest.approx(round(model_ratio * 32) / 32)
    assert batches.share_rows == [0, 0]  # the share restarts after each read


def test_batch_source_real_stream_does_not_depend_on_the_model_ratio():
    plain, mixed = source(0.0), source(0.5)
    for _ in range(4):
        plain.sample(), mixed.sample()
        assert torch.equal(plain.sampler.get_state(), mixed.sampler.get_state())


def test_an_empty_model_buffer_gives_all_real_batches():
    batches = source(0.5, model_rows=0)
    assert torch.all(batches.sample()["rewards"] == 0.0)
    assert batches.model_share() == 0.0


# -------------------------------------------------------------------------------- evaluator


class TinyAgent:
    """What the evaluator's Q diagnostics need: Q = the sum of the action, for 2 critics; the
    policy's action = the first two observation dims; the TD target = the reward."""

    def actor(self, obs, deterministic=False):
        return obs[:, :2], None

    def critic(self, obs, action):
        return action.sum(-1)[None].expand(2, -1)

    def td_target(self, batch):
        return batch["rewards"]


def test_evaluator_scores_summarises_and_keeps_every_evaluation(monkeypatch):
    scores = iter([50.0, 30.0, 60.0])
    monkeypatch.setattr(wsrl_wm.online.evaluator, "evaluate",
                        lambda *args, **kwargs: {SCORE: next(scores)})
    probe = {"observations": torch.ones(4, 3), "actions": torch.ones(4, 2),
             "rewards": torch.zeros(4), "next_observations": torch.ones(4, 3),
             "terminals": torch.zeros(4), "mc_returns": torch.full((4,), 5.0)}
    online = ReplayBuffer.for_transitions(10, 3, 2)
    online.add({k: v for k, v in probe.items() if k != "mc_returns"})
    evaluator = Evaluator("Hopper-v5", 1, 0, probe, online, warmup_steps=100, dip_window=15)
    agent = TinyAgent()
    first = evaluator(agent, 100)
    assert first["unlearning/s0"] == 50.0 and first["unlearning/dip"] == 0.0
    assert first["probe/q_data"] == first["probe/q_policy"] == 2.0
    assert first["probe/mc_return"] == 5.0 and first["online/td_error"] == 4.0
    second = evaluator(agent, 110)
    assert second["unlearning/dip"] == 20.0 and second["unlearning/forgetting"] == 1.0
    state = evaluator.state_dict()
    resumed = Evaluator("Hopper-v5", 1, 0, probe, online, warmup_steps=100, dip_window=15)
    resumed.load_state_dict(state)
    third = resumed(agent, 120)
    assert third["unlearning/recovery_step"] == 20.0 and third["unlearning/forgetting"] == 0.0
    assert [e["env_step"] for e in resumed.evaluations] == [100, 110, 120]
    assert resumed.evaluations[-1][SCORE] == 60.0


# ----------------------------------------------------------------------- the model online


def test_imagination_rounds_fill_the_model_buffer_off_the_agents_random_stream():
    from wsrl_wm.agents import SAC, SACConfig

    torch.manual_seed(0)
    model = WorldModel(OBS_DIM, ACT_DIM, WorldModelConfig(**TINY_WORLD_MODEL))
    agent = SAC(OBS_DIM, ACT_DIM, SACConfig(num_critics=2, critic_hidden=(8,),
                                            actor_hidden=(8,)))
    rollout = RolloutConfig(ratio=0.5, interval=4, starts=16, horizon=2)
    online = ReplayBuffer.for_transitions(100, OBS_DIM, ACT_DIM)
    g = torch.Generator().manual_seed(1)
    obs = 0.01 * torch.randn(40, OBS_DIM, generator=g)
    obs[:, 0] += 1.25  # Hopper's healthy height
    online.add({"observations": obs, "actions": torch.zeros(40, ACT_DIM),
                "rewards": torch.zeros(40), "next_observations": obs, "terminals": torch.zeros(40)})
    buffer = ModelBuffer(rollout.buffer_capacity(0), OBS_DIM, ACT_DIM)
    imagination = Imagination(model, rollout, buffer, "Hopper-v5", online.latest(8),
                              torch.Generator().manual_seed(2))
    agent_stream = torch.get_rng_state()
    metrics = imagination.round(agent, online, online_step=0, env_step=50,
                                device=torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), agent_stream)
    assert 0 < len(buffer) <= rollout.buffer_capacity(0)
    assert metrics["model_buffer/size"] == len(buffer) and metrics["model_buffer/mean_age"] == 0
    assert {MODEL_COLUMNS["model_one_step"], MODEL_COLUMNS["model_probe"]} <= metrics.keys()
