"""Action chunking (Q-chunking): the h-step backup, chunk rows offline and online, chunks
executed open-loop, imagined chunks, and the option through the CLI configs."""

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


def test_padded_chunk_rows_keep_terminal_windows_and_drop_truncated_ones():
    # episode A: steps 0-4, terminal at 4; episode B: steps 5-8, time limit at 8
    steps = steps_of(build_raw([(5, "terminal"), (4, "timeout")]))
    rows = chunk_rows(steps, H, GAMMA, pad_terminal=True)
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


def test_chunk_rows_drop_every_window_an_episode_end_cuts():
    """Q-chunking's rule, rows written out by hand: steps 0-4 end on a terminal, 5-8 on a time
    limit; observation i = i, action i = −i, reward i = 0.5 + i/4, successor i = 1000 + i."""
    steps = steps_of(build_raw([(5, "terminal"), (4, "timeout")], obs_dim=1, act_dim=1))
    del steps["mc_returns"]
    rows = chunk_rows(steps, H, GAMMA)
    # kept: starts 0, 1, 2 (the window 2-4 ends on the terminal: whole) and 5, 6
    np.testing.assert_array_equal(rows["observations"], [[0], [1], [2], [5], [6]])
    np.testing.assert_array_equal(rows["actions"], [[0, -1, -2], [-1, -2, -3], [-2, -3, -4],
                                                    [-5, -6, -7], [-6, -7, -8]])
    # 0.5 + 0.9·0.75 + 0.81·1.0, 0.75 + 0.9·1.0 + 0.81·1.25, ...
    np.testing.assert_allclose(rows["rewards"], [1.985, 2.6625, 3.34, 5.3725, 6.05], rtol=1e-6)
    np.testing.assert_array_equal(rows["next_observations"],
                                  [[1002], [1003], [1004], [1007], [1008]])
    np.testing.assert_array_equal(rows["terminals"], [0, 0, 1, 0, 0])


def test_chunks_of_one_are_the_steps():
    steps = steps_of(build_raw([(5, "terminal"), (4, "timeout")]))
    rows = chunk_rows(steps, 1, GAMMA)
    for key, value in rows.items():
        assert value is steps[key], key


def test_h_step_target_against_a_hand_computation():
    """Chunk rows of a hand-made trajectory, then r0 + γ r1 + γ² r2 + γ³ min Q'(s3, π(s3))
    (the plain chunked SAC's rules: min target, padded terminal windows)."""
    torch.manual_seed(0)
    config = SACConfig(action_chunk=H, discount=GAMMA, num_critics=2, target_subset=2,
                       critic_hidden=(16,), actor_hidden=(16,), q_agg="min",
                       terminal_windows="pad")
    agent = SAC(OBS_DIM, ACT_DIM, config)
    assert agent.actor.net[-1].out_features == 2 * H * ACT_DIM  # mean and log-std per action
    steps = steps_of(build_raw([(4, "timeout"), (3, "terminal")]))
    batch = {k: torch.as_tensor(np.asarray(v, np.float32))
             for k, v in chunk_rows(steps, H, GAMMA, config.pad_terminal).items()}
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


def test_bad_chunk_settings_are_one_clear_error():
    for bad, message in (({"action_chunk": 0}, "action_chunk must be at least 1"),
                         ({"q_agg": "max"}, "q_agg must be one of min, mean"),
                         ({"bc_alpha": -0.1}, "bc_alpha must be >= 0"),
                         ({"terminal_windows": "keep"}, "terminal_windows must be one of")):
        with pytest.raises(WsrlError, match=message):
            CQLConfig(**bad)


# ----------------------------------------------------------- QC-RLPD's agent rules


def test_qc_rlpd_rules_are_the_chunk_defaults_and_one_step_actions_keep_wsrl_s():
    chunked, plain = SACConfig(action_chunk=H), SACConfig()
    assert (chunked.q_agg, chunked.bc_alpha, chunked.terminal_windows) == ("mean", 0.01, "drop")
    assert (plain.q_agg, plain.bc_alpha) == ("min", 0.0)
    assert SAC(OBS_DIM, ACT_DIM, chunked).target_entropy == -H * ACT_DIM / 2
    assert SAC(OBS_DIM, ACT_DIM, plain).target_entropy == -ACT_DIM
    assert SAC(OBS_DIM, ACT_DIM, SACConfig(action_chunk=H, target_entropy=-9.0)
               ).target_entropy == -9.0
    old_rules = CQLConfig(action_chunk=H, q_agg="min", bc_alpha=0.0)
    assert (old_rules.q_agg, old_rules.bc_alpha) == ("min", 0.0)


def tiny_chunk_agent(**rules) -> SAC:
    """Three critics of one hidden layer, no LayerNorm: simple enough to run by hand."""
    torch.manual_seed(0)
    return SAC(OBS_DIM, ACT_DIM, SACConfig(action_chunk=2, discount=GAMMA, num_critics=3,
                                           target_subset=2, critic_hidden=(5,),
                                           actor_hidden=(8,), layer_norm=False, **rules))


def q_by_hand(critic, obs, action, member: int) -> torch.Tensor:
    """Critic `member`'s Q(s, a) from its weights: relu([s, a]·W0 + b0)·W1 + b1."""
    first, last = critic.mlp.net[0], critic.mlp.net[-1]
    hidden = torch.relu(torch.cat([obs, action], -1) @ first.weight[member] + first.bias[member])
    return (hidden @ last.weight[member] + last.bias[member]).squeeze(-1)


def chunk_batch(rows: int = 6) -> dict:
    generator = torch.Generator().manual_seed(3)
    actions = torch.rand(rows, 2 * ACT_DIM, generator=generator) * 2 - 1
    actions[0, 0] = 1.0  # on the bound: the BC term clips it into (−1, 1)
    return {"observations": torch.randn(rows, OBS_DIM, generator=generator),
            "actions": actions, "rewards": torch.randn(rows, generator=generator),
            "next_observations": torch.randn(rows, OBS_DIM, generator=generator),
            "terminals": torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0][:rows])}


def test_mean_aggregation_in_the_target_and_the_actor_loss_by_hand():
    agent, batch = tiny_chunk_agent(q_agg="mean", bc_alpha=0.0), chunk_batch()
    with torch.no_grad():  # target critics unlike the critics, so a mix-up shows
        for param in agent.target_critic.parameters():
            param.add_(0.3)
    torch.manual_seed(1)
    target = agent.td_target(batch)
    torch.manual_seed(1)
    with torch.no_grad():
        next_action = agent.actor(batch["next_observations"])[0]
        q_next = sum(q_by_hand(agent.target_critic, batch["next_observations"], next_action, i)
                     for i in range(3)) / 3
    expected = batch["rewards"] + GAMMA**2 * (1 - batch["terminals"]) * q_next
    torch.testing.assert_close(target, expected)

    torch.manual_seed(2)
    loss, _, info = agent.actor_loss(batch)
    torch.manual_seed(2)
    action, log_prob = agent.actor(batch["observations"])
    q = sum(q_by_hand(agent.critic, batch["observations"], action, i) for i in range(3)) / 3
    torch.testing.assert_close(loss, (1.0 * log_prob - q).mean())  # temperature 1
    assert "bc_loss" not in info


def test_the_bc_term_is_the_data_chunks_negative_log_likelihood_by_hand():
    """QC-RLPD's actor loss adds −bc_alpha·mean log π(clip(a_data) | s) on the actor's batch."""
    batch = chunk_batch()
    plain, with_bc = tiny_chunk_agent(bc_alpha=0.0), tiny_chunk_agent(bc_alpha=0.5)
    torch.manual_seed(2)
    loss_plain = plain.actor_loss(batch)[0]
    torch.manual_seed(2)
    loss, _, info = with_bc.actor_loss(batch)
    with torch.no_grad():
        mean, log_std = with_bc.actor.distribution_params(batch["observations"])
        data = batch["actions"].clamp(-1 + 1e-5, 1 - 1e-5)
        gaussian = torch.distributions.Normal(mean, log_std.exp())
        log_prob = (gaussian.log_prob(torch.atanh(data)) - torch.log(1 - data**2)).sum(-1)
    expected = -0.5 * log_prob.mean()
    assert torch.isfinite(expected)
    torch.testing.assert_close(info["bc_loss"], expected)
    torch.testing.assert_close(loss, loss_plain + expected)


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


class Steps(gym.Wrapper):
    """Records every step the env takes: (obs, action, reward, next obs, terminated)."""

    def __init__(self, env):
        super().__init__(env)
        self.taken = []

    def reset(self, **kwargs):
        self.obs, info = self.env.reset(**kwargs)
        return self.obs, info

    def step(self, action):
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.taken.append((self.obs, np.array(action), reward, next_obs, terminated))
        self.obs = next_obs
        return next_obs, reward, terminated, truncated, info


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("end", ["terminal", "timeout"])
def test_runner_executes_chunks_and_writes_each_full_window_as_one_row(end, pad):
    """Two 5-step episodes in chunks of 3: each episode's windows 0-2, 1-3 and 2-4 (the ones
    inside it) are rows summed by hand from the steps the env took, in the run's reward units,
    with the return-to-go from their first step as MC return. (Windows running past a
    terminal are kept, padded, only under `pad`: 4 more rows; past a time limit none is
    written.)"""
    inner = TerminateAt(make_env("Hopper-v5", 0), 5) if end == "terminal" else \
        gym.wrappers.TimeLimit(make_env("Hopper-v5", 0), max_episode_steps=5)
    env = Steps(inner)
    buffer = EpisodeReplayBuffer(100, OBS_DIM, H * ACT_DIM, GAMMA)
    steps = ReplayBuffer.for_transitions(100, OBS_DIM, ACT_DIM)
    runner = EnvRunner(env, buffer, reward_scale=2.0, reward_bias=-1.0, episodic=True,
                       action_chunk=H, discount=GAMMA, step_buffer=steps, pad_terminal=pad)
    runner.reset(seed=0)
    agent = ChunkAgent()
    returns = run(runner, agent, 10)
    assert [r is None for r in returns] == [True] * 4 + [False] + [True] * 4 + [False]
    assert agent.queries == 4  # steps 0 and 3 of each episode: a new episode, a new chunk
    obs, actions, raw, next_obs, terminated = (np.array(c) for c in zip(*env.taken, strict=True))
    rewards = 2.0 * raw - 1.0
    assert terminated.tolist() == [False, False, False, False, end == "terminal"] * 2
    # the chunk is executed open-loop: step 1 runs the second action of step 0's chunk
    chunk = ChunkAgent().act(torch.as_tensor(obs[0], dtype=torch.float32)).numpy()
    np.testing.assert_allclose(actions[1], chunk[ACT_DIM: 2 * ACT_DIM], rtol=1e-6)
    got = stored(buffer)
    assert buffer.finished == len(got["rewards"])
    for first in (0, 1, 2, 5, 6, 7):
        last = first + H - 1
        (row,) = [i for i, o in enumerate(got["observations"].numpy()) if np.array_equal(
            o, obs[first].astype(np.float32))]
        episode_end = 4 if first < 5 else 9
        to_go = sum(GAMMA ** (k - first) * rewards[k] for k in range(first, episode_end + 1))
        want = {"actions": actions[first: last + 1].reshape(-1),
                "rewards": sum(GAMMA ** k * rewards[first + k] for k in range(H)),
                "next_observations": next_obs[last], "terminals": float(terminated[last]),
                "mc_returns": to_go}
        for key, value in want.items():
            np.testing.assert_allclose(got[key][row].numpy(), value, rtol=1e-5, err_msg=key)
    assert len(got["rewards"]) == (10 if end == "terminal" and pad else 6)
    one_step = stored(steps)
    np.testing.assert_allclose(one_step["rewards"].numpy(), rewards, rtol=1e-6)
    np.testing.assert_allclose(one_step["actions"].numpy(), actions, rtol=1e-6)


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
    """Two evaluation episodes of a chunk actor with a wide std, against the same episodes
    played by hand: one query per chunk of tanh(mean) actions, executed open-loop until the
    episode ends (inside a chunk too)."""
    torch.manual_seed(0)
    actor = TanhGaussianActor(OBS_DIM, H * ACT_DIM, hidden=(16,), init="pytorch")
    with torch.no_grad():
        actor.net[-1].bias[H * ACT_DIM:] = 1.0  # log-std 1: a sampled chunk is far off the mean
    queries = []  # one entry per state queried, however many a batched call holds
    heads = actor.heads
    actor.heads = lambda out: (queries.extend([1] * len(out)) if out.dim() > 1
                               else queries.append(1), heads(out))[1]
    env, returns, asked = make_env("Hopper-v5"), [], 0
    for episode in range(2):
        obs, _ = env.reset(seed=7 + episode)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                mean = actor.distribution_params(torch.as_tensor(obs, dtype=torch.float32))[0]
            asked += 1
            for action in torch.tanh(mean).numpy().reshape(H, ACT_DIM):
                obs, reward, terminated, truncated, _ = env.step(action)
                total, done = total + reward, terminated or truncated
                if done:
                    break
        returns.append(total)
    queries.clear()
    for _ in range(2):  # the same return every time: nothing is drawn
        metrics = evaluate(actor, "Hopper-v5", 2, seed=7, action_chunk=H)
        assert metrics["eval/return"] == pytest.approx(np.mean(returns), rel=1e-9)
    assert len(queries) == 2 * asked


# ----------------------------------------------------------------------- the world model


class Drift:
    """A stand-in one-step model: s' = s + Σ a, reward 1, no disagreement."""

    def sample(self, obs, action, generator=None):
        return obs + action.sum(dim=-1, keepdim=True), torch.ones(len(obs))

    def disagreement(self, obs, action):
        return torch.zeros(len(obs))


def test_imagined_chunks_a_terminal_cuts_are_dropped():
    """Q-chunking's rule in the model: a chunk whose terminal comes before its last step is
    no row (the same starts as the padded case below)."""
    chunk = torch.tensor([0.5, 0.5, 0.2, 0.8, 0.9, 0.1])  # every action moves s by 1.0
    actor = lambda obs: (chunk.expand(len(obs), -1).clone(), None)  # noqa: E731
    ends_past_4 = lambda obs: obs[:, 0] > 4.0  # noqa: E731
    rows, stats = branched_rollout(Drift(), actor, torch.tensor([[0.0], [3.0]]), 2, ends_past_4,
                                   action_chunk=H, discount=GAMMA)
    # start 0: its first chunk (s 0 → 3) is whole; its second and start 3's first end at
    # their second step
    torch.testing.assert_close(rows["observations"], torch.tensor([[0.0]]))
    torch.testing.assert_close(rows["next_observations"], torch.tensor([[3.0]]))
    torch.testing.assert_close(rows["rewards"], torch.tensor([1 + GAMMA + GAMMA**2]))
    torch.testing.assert_close(rows["terminals"], torch.tensor([0.0]))
    torch.testing.assert_close(rows["actions"], chunk[None])
    assert stats["rollout/mean_length"] == pytest.approx((5 + 2) / 2)  # env steps


def test_imagined_chunks_step_the_one_step_model_h_times():
    chunk = torch.tensor([0.5, 0.5, 0.2, 0.8, 0.9, 0.1])  # every action moves s by 1.0
    actor = lambda obs: (chunk.expand(len(obs), -1).clone(), None)  # noqa: E731
    start = torch.tensor([[0.0], [3.0]])
    ends_past_4 = lambda obs: obs[:, 0] > 4.0  # noqa: E731

    rows, stats = branched_rollout(Drift(), actor, start, 2, ends_past_4, action_chunk=H,
                                   discount=GAMMA, pad_terminal=True)
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
