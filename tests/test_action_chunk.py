"""Action chunking (Q-chunking): the h-step backup, chunk rows offline and online, chunks
executed open-loop, imagined chunks, and the option through the CLI configs."""

import math
import subprocess

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ACT_DIM, OBS_DIM, TINY_AGENT, TINY_WORLD_MODEL, build_raw, fit_module
from test_lightning import ROOT, read_csv, run_cli
from test_resume import ENV, assert_same_state, fit_command, kill_after_checkpoint

from models import TanhGaussianActor
from wsrl_wm.agents import SAC, CQLConfig, SACConfig
from wsrl_wm.data import EpisodeReplayBuffer, ReplayBuffer, mc_returns
from wsrl_wm.data.chunks import chunk_rows
from wsrl_wm.envs import make_env
from wsrl_wm.errors import WsrlError
from wsrl_wm.evaluation import evaluate
from wsrl_wm.lightning import PretrainModule
from wsrl_wm.online import EnvRunner
from wsrl_wm.world_model import WorldModelConfig, branched_rollout

H, GAMMA = 3, 0.9


def steps_of(raw: dict) -> dict:
    """Steps of `build_raw` episodes with their successors (the next row's observation)."""
    return {**raw, "next_observations": raw["observations"] + 1000.0,
            "mc_returns": mc_returns(raw["rewards"], raw["terminals"], raw["timeouts"], GAMMA)}


def test_chunk_rows_keep_terminal_windows_padded_and_drop_truncated_ones():
    # episode A: steps 0-4, terminal at 4; episode B: steps 5-8, time limit at 8
    steps = steps_of(build_raw([(5, "terminal"), (4, "timeout")]))
    rows = chunk_rows(steps, H, GAMMA)
    r, a, s, s_next = (steps[k] for k in ("rewards", "actions", "observations",
                                          "next_observations"))
    starts = [0, 1, 2, 3, 4, 5, 6]  # 7 and 8 run past the time limit: no s_{t+3}
    np.testing.assert_array_equal(rows["observations"], s[starts])
    np.testing.assert_array_equal(rows["terminals"], [0, 0, 1, 1, 1, 0, 0])
    # full windows: s_{t+3}; windows the terminal cut: the terminal step's successor
    np.testing.assert_array_equal(rows["next_observations"], s_next[[2, 3, 4, 4, 4, 7, 8]])
    np.testing.assert_allclose(rows["rewards"][0], r[0] + GAMMA * r[1] + GAMMA**2 * r[2],
                               rtol=1e-6)
    np.testing.assert_allclose(rows["rewards"][3], r[3] + GAMMA * r[4], rtol=1e-6)
    np.testing.assert_allclose(rows["rewards"][4], r[4], rtol=1e-6)
    np.testing.assert_array_equal(rows["actions"][3], np.concatenate([a[3], a[4], a[4]]))
    np.testing.assert_array_equal(rows["actions"][6], a[6:9].reshape(-1))
    # a chunk row's MC return is the return-to-go from its first step
    np.testing.assert_array_equal(rows["mc_returns"], steps["mc_returns"][starts])


def test_chunks_of_one_are_the_steps():
    steps = steps_of(build_raw([(5, "terminal"), (4, "timeout")]))
    rows = chunk_rows(steps, 1, GAMMA)
    for key, value in rows.items():
        assert value is steps[key], key


def test_h_step_target_against_a_hand_computation():
    """Chunk rows of a hand-made trajectory, then r0 + γ r1 + γ² r2 + γ³ min Q'(s3, π(s3))."""
    torch.manual_seed(0)
    config = SACConfig(action_chunk=H, discount=GAMMA, num_critics=2, target_subset=2,
                       critic_hidden=(16,), actor_hidden=(16,))
    agent = SAC(OBS_DIM, ACT_DIM, config)
    assert agent.actor.net[-1].out_features == 2 * H * ACT_DIM  # mean and log-std per action
    assert agent.target_entropy == -H * ACT_DIM
    steps = steps_of(build_raw([(4, "timeout"), (3, "terminal")]))
    batch = {k: torch.as_tensor(np.asarray(v, np.float32))
             for k, v in chunk_rows(steps, H, GAMMA).items()}
    torch.manual_seed(1)
    target = agent.td_target(batch)
    torch.manual_seed(1)
    next_action = agent.actor(batch["next_observations"])[0]
    q_next = agent.target_critic(batch["next_observations"], next_action).min(dim=0).values
    r = steps["rewards"]
    # row 0: steps 0-2, bootstrapped from s_3; row 2: steps 4-6 ending on the terminal
    expected0 = r[0] + GAMMA * r[1] + GAMMA**2 * r[2] + GAMMA**3 * q_next[0]
    expected2 = r[4] + GAMMA * r[5] + GAMMA**2 * r[6]
    torch.testing.assert_close(target[0], expected0.float())
    torch.testing.assert_close(target[2], torch.tensor(expected2, dtype=torch.float32))
    assert len(target) == 5  # starts 0, 1 (episode 1) and 4, 5, 6 (episode 2)


def test_bad_chunk_is_one_clear_error():
    with pytest.raises(WsrlError, match="action_chunk must be at least 1"):
        CQLConfig(action_chunk=0)


# ----------------------------------------------------------------------------- online


class ChunkAgent:
    """Deterministic chunks of H actions from the observation; records each query's step."""

    def __init__(self):
        self.queries = 0

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        self.queries += 1
        return torch.tanh(obs[: H * ACT_DIM] * 3.0)


class TerminateAt(gym.Wrapper):
    """Terminates every episode at its `length`-th step."""

    def __init__(self, env, length: int):
        super().__init__(env)
        self.length, self.count = length, 0

    def reset(self, **kwargs):
        self.count = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.count += 1
        return obs, reward, terminated or self.count == self.length, truncated, info


def run(runner, agent, steps):
    return [runner.step(agent) for _ in range(steps)]


def stored(buffer) -> dict:
    return {k: v[: len(buffer)].clone() for k, v in buffer.storage.items()}


@pytest.mark.parametrize("end", ["terminal", "timeout"])
def test_runner_executes_chunks_and_writes_the_offline_rule_rows(end):
    """Two 5-step episodes; the rows the runner writes are `chunk_rows` of the steps it took,
    and the Cal-QL buffer's MC returns are each row's return-to-go from its first step."""
    env = TerminateAt(make_env("Hopper-v5", 0), 5) if end == "terminal" else \
        gym.wrappers.TimeLimit(make_env("Hopper-v5", 0), max_episode_steps=5)
    buffer = EpisodeReplayBuffer(100, OBS_DIM, H * ACT_DIM, GAMMA)
    steps = ReplayBuffer.for_transitions(100, OBS_DIM, ACT_DIM)
    runner = EnvRunner(env, buffer, reward_scale=2.0, reward_bias=-1.0, episodic=True,
                       action_chunk=H, discount=GAMMA, step_buffer=steps)
    runner.reset(seed=0)
    agent = ChunkAgent()
    returns = run(runner, agent, 10)
    assert [r is None for r in returns] == [True] * 4 + [False] + [True] * 4 + [False]
    assert agent.queries == 4  # steps 0 and 3 of each episode: a new episode, a new chunk
    taken = {k: v.numpy() for k, v in stored(steps).items()}
    assert not taken["terminals"][:4].any()
    ends, never = np.zeros(10, bool), np.zeros(10, bool)
    ends[[4, 9]] = True
    taken.update(terminals=ends if end == "terminal" else never,
                 timeouts=ends if end == "timeout" else never)
    taken["mc_returns"] = mc_returns(taken["rewards"], taken["terminals"], taken["timeouts"],
                                     GAMMA)
    expected = chunk_rows(taken, H, GAMMA)
    got = stored(buffer)
    assert len(got["rewards"]) == (10 if end == "terminal" else 6) == buffer.finished
    for key, value in expected.items():
        torch.testing.assert_close(got[key], torch.as_tensor(value, dtype=torch.float32),
                                   msg=key)
    # the actions of a step are those of its chunk: step 1 executed the chunk's second action
    chunk = ChunkAgent().act(torch.as_tensor(taken["observations"][0], dtype=torch.float32))
    np.testing.assert_allclose(taken["actions"][1], chunk[ACT_DIM: 2 * ACT_DIM].numpy())


def test_runner_resumes_mid_chunk_exactly():
    def runner(env_seed):
        made = EnvRunner(make_env("Hopper-v5", env_seed),
                         ReplayBuffer.for_transitions(50, OBS_DIM, H * ACT_DIM),
                         action_chunk=H, discount=GAMMA)
        made.reset(seed=1)
        return made

    whole = runner(0)
    run(whole, ChunkAgent(), 10)
    first = runner(0)
    run(first, ChunkAgent(), 4)  # two actions of the second chunk left, two steps pending
    resumed = runner(5)
    resumed.buffer = first.buffer
    resumed.load_state_dict(first.state_dict())
    agent = ChunkAgent()
    run(resumed, agent, 6)
    assert agent.queries == 2  # steps 6 and 9: the pending action was not asked for again
    for key, value in stored(whole.buffer).items():
        torch.testing.assert_close(stored(resumed.buffer)[key], value, rtol=0, atol=0,
                                   msg=key)


def test_evaluation_executes_deterministic_chunks_open_loop():
    class Counting(TanhGaussianActor):
        """Always the chunk tanh(atanh 0.3), counting the policy queries."""

        calls = 0

        def heads(self, out):
            self.calls += 1
            return torch.full_like(out, math.atanh(0.3)), torch.zeros_like(out)

    actor = Counting(OBS_DIM, H * ACT_DIM, (8,), state_dependent_std=False)
    metrics = evaluate(actor, "Hopper-v5", 1, seed=0, action_chunk=H)
    action = torch.tanh(torch.full((ACT_DIM,), math.atanh(0.3))).numpy()  # the actor's
    env = make_env("Hopper-v5")
    env.reset(seed=0)
    length, done = 0, False
    while not done:
        *_, terminated, truncated, _ = env.step(action)
        length, done = length + 1, terminated or truncated
    assert actor.calls == -(-length // H)
    assert np.isfinite(metrics["eval/return"])


# ----------------------------------------------------------------------- the world model


class Drift:
    """A stand-in one-step model: s' = s + Σ a, reward 1, no disagreement."""

    def sample(self, obs, action, generator=None):
        return obs + action.sum(dim=-1, keepdim=True), torch.ones(len(obs))

    def disagreement(self, obs, action):
        return torch.zeros(len(obs))


def test_imagined_chunks_step_the_one_step_model_h_times():
    chunk = torch.tensor([0.5, 0.5, 0.2, 0.8, 0.9, 0.1])  # every action moves s by 1.0
    actor = lambda obs: (chunk.expand(len(obs), -1).clone(), None)  # noqa: E731
    start = torch.tensor([[0.0], [3.0]])
    ends_past_4 = lambda obs: obs[:, 0] > 4.0  # noqa: E731

    rows, stats = branched_rollout(Drift(), actor, start, 2, ends_past_4, action_chunk=H,
                                   discount=GAMMA)
    # each env step adds 1.0; start 0: chunk 1 reaches 3, chunk 2 ends at step 2 (s = 5);
    # start 3: its first chunk ends at step 2 (s = 5), its third action a repeat of the second
    assert sorted(rows["observations"][:, 0].tolist()) == [0.0, 3.0, 3.0]
    by_start = {(o, t): (r, n) for o, t, r, n in zip(
        rows["observations"][:, 0].tolist(), rows["terminals"].tolist(),
        rows["rewards"].tolist(), rows["next_observations"][:, 0].tolist(), strict=True)}
    assert by_start[(0.0, 0.0)] == pytest.approx((1 + GAMMA + GAMMA**2, 3.0))
    assert by_start[(3.0, 1.0)] == pytest.approx((1 + GAMMA, 5.0))
    cut = rows["terminals"].bool()
    torch.testing.assert_close(rows["actions"][~cut], chunk[None])
    torch.testing.assert_close(rows["actions"][cut], torch.tensor([[0.5, 0.5, 0.2, 0.8, 0.2,
                                                                     0.8]] * 2))
    assert stats["rollout/mean_length"] == pytest.approx((5 + 2) / 2)  # env steps


# ------------------------------------------------------------------------------- the CLI


@pytest.mark.slow  # pretrain + fine-tune through the CLI with chunks of 3 (~1 min)
def test_chunked_pretraining_and_finetuning_through_the_cli(tmp_path, hopper_dataset):
    pre = run_cli("fit", "--config", str(ROOT / "configs/smoke/pretrain.yaml"),
                  "--model.dataset", hopper_dataset, "--model.agent.action_chunk", "3",
                  cwd=tmp_path)
    assert pre.returncode == 0, pre.stderr[-2000:]
    for extra, root in (((), "plain"), (("--model.rollout.ratio", "0.5"), "imagined"),
                        (("--model.online_cql_alpha", "1.0"), "calql")):
        fine = run_cli("fit", "--config", str(ROOT / "configs/smoke/finetune.yaml"), *extra,
                       "--trainer.default_root_dir", f"runs/{root}", cwd=tmp_path)
        assert fine.returncode == 0, fine.stderr[-2000:]
        rows = read_csv(tmp_path / f"runs/{root}/csv/version_0/metrics.csv")
        losses = [float(r["train/critic_loss"]) for r in rows if r["train/critic_loss"]]
        assert losses and np.all(np.isfinite(losses)), root
        scores = [float(r["eval/normalized_score"]) for r in rows if r["eval/normalized_score"]]
        assert len(scores) == 3, root
    ckpt = torch.load(tmp_path / "runs/plain/checkpoints/last.ckpt", weights_only=False)
    actions = ckpt["online_state"]["buffer"]["storage"]["actions"]
    assert actions.shape[1] == 3 * ACT_DIM
    assert ckpt["online_state"]["buffer"]["size"] > 0
    rounds = [r for r in read_csv(tmp_path / "runs/imagined/csv/version_0/metrics.csv")
              if r["rollout/transitions"]]
    assert rounds and all(float(r["model/one_step_mse"]) >= 0 for r in rounds)


@pytest.mark.slow  # three 500-step fits in subprocesses (~2 min)
def test_a_killed_chunked_run_resumes_exactly(hopper_dataset, tmp_path):
    """SIGKILL online (with model rollouts, so the one-step buffer too), resume: the end state
    is the uninterrupted run's, chunk rows, pending steps and unexecuted actions included."""
    module = PretrainModule("Hopper-v5", hopper_dataset, CQLConfig(**TINY_AGENT, action_chunk=H),
                            steps=20, batch_size=32, eval_interval=20, eval_episodes=1,
                            world_model=WorldModelConfig(**TINY_WORLD_MODEL))
    fit_module(module, tmp_path / "pretrain")
    pretrained = str(tmp_path / "pretrain/checkpoints/last.ckpt")
    subprocess.run(fit_command(pretrained, tmp_path / "whole"), env=ENV, check=True,
                   capture_output=True)
    kill_after_checkpoint(pretrained, tmp_path / "killed", 260)
    resumed = subprocess.run(fit_command(pretrained, tmp_path / "killed", "--ckpt_path", "last"),
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = (torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=False)
                 for run in ("killed", "whole"))
    assert_same_state(got, want)
    assert got["online_state"]["buffer"]["storage"]["actions"].shape[1] == H * ACT_DIM
    steps, reference = got["online_state"]["step_buffer"], want["online_state"]["step_buffer"]
    assert steps["size"] == reference["size"] == 500
    for key, rows in steps["storage"].items():
        assert torch.equal(rows, reference["storage"][key]), key
