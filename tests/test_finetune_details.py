"""Fine-tuning details that the curves depend on but no other test pins: where the warmup's
actions come from, what `evaluate` runs (and that S0 repeats the pretraining's last score),
the reward scale and bias on every path, and how the three data sources fill each batch."""

import csv
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import PRETRAIN_STEPS, TINY_AGENT, build_raw, fit_module

import wsrl_wm.evaluation
import wsrl_wm.lightning.finetune
from wsrl_wm.agents import CQLConfig
from wsrl_wm.agents.batches import split_batch
from wsrl_wm.data import load_dataset
from wsrl_wm.evaluation import evaluate
from wsrl_wm.lightning import FinetuneModule, PretrainModule
from wsrl_wm.lightning.bundle import PretrainedBundle
from wsrl_wm.lightning.offline_data import load_offline_tensors
from wsrl_wm.world_model import RolloutConfig

HOPPER_MIN, HOPPER_MAX = -20.272305, 3234.3  # D4RL's reference returns


def edited_checkpoint(pretrained: str, path: Path, edit) -> str:
    bundle = PretrainedBundle.load(pretrained)
    edit(bundle)
    bundle.save(path)
    return str(path)


def near_deterministic_policy(bundle: PretrainedBundle) -> None:
    """Pin the actor's std at its floor (σ = 1e-5, the official std_min): its samples are then
    tanh(μ(s)) up to ~1e-4, so a stored action shows which policy, at which state, produced
    it."""
    state = bundle.agent_state
    last = max((k for k in state if k.startswith("actor.net.") and k.endswith(".weight")),
               key=lambda k: int(k.split(".")[2]))
    act_dim = state[last].shape[0] // 2
    state[last][act_dim:] = 0.0
    state[last.replace(".weight", ".bias")][act_dim:] = -30.0


def scaled_rewards(scale: float, bias: float):
    def edit(bundle: PretrainedBundle) -> None:
        bundle.reward_scale, bundle.reward_bias = scale, bias
    return edit


# --- 4: the warmup acts with the frozen pretrained policy -----------------------------------


def test_warmup_actions_are_the_pretrained_policys_at_the_stored_states(pretrained, tmp_path):
    sharp = edited_checkpoint(pretrained, tmp_path / "sharp.ckpt", near_deterministic_policy)
    warmup = 30
    pretrained_actor = FinetuneModule(sharp, warmup_steps=1, online_steps=1).agent.actor
    module = FinetuneModule(sharp, warmup_steps=warmup, online_steps=1, batch_size=32,
                            eval_interval=1, eval_episodes=1)
    fit_module(module, tmp_path / "run")
    rows = {k: v[:warmup] for k, v in module.buffer.storage.items()}
    with torch.no_grad():
        want = pretrained_actor(rows["observations"], deterministic=True)[0]
    torch.testing.assert_close(rows["actions"], want, rtol=0, atol=1e-4)
    assert rows["actions"].std(dim=0).min() > 1e-2  # they follow the state: not one constant


# --- 5: evaluate() and S0 -------------------------------------------------------------------


def hand_rollout_return(actor, seed: int) -> float:
    """One episode on a new gymnasium Hopper-v5, reset with `seed`, acting tanh(μ(s))."""
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        with torch.no_grad():
            mean, _ = actor.distribution_params(torch.as_tensor(obs, dtype=torch.float32))
        obs, reward, terminated, truncated, _ = env.step(torch.tanh(mean).numpy())
        total, done = total + float(reward), terminated or truncated
    return total


def test_evaluate_runs_deterministic_seeded_episodes_on_its_own_env(pretrained, monkeypatch):
    actor = FinetuneModule(pretrained, warmup_steps=1, online_steps=1).agent.actor
    made = []
    monkeypatch.setattr(wsrl_wm.evaluation, "make_env",
                        lambda name, seed=None: made.append(name) or gym.make("Hopper-v5"))
    got = evaluate(actor, "Hopper-v5", 3, seed=77)
    want = np.mean([hand_rollout_return(actor, 77 + episode) for episode in range(3)])
    assert got["eval/return"] == pytest.approx(want, rel=1e-9)
    assert got["eval/normalized_score"] == pytest.approx(
        100 * (want - HOPPER_MIN) / (HOPPER_MAX - HOPPER_MIN), rel=1e-9)
    assert made == ["Hopper-v5"] * 3  # an env per episode (run together), never the training env
    assert evaluate(actor, "Hopper-v5", 3, seed=77) == got  # nothing carried between calls


def test_s0_repeats_the_pretrainings_last_evaluation(pretrained, tmp_path):
    log = Path(pretrained).parents[1] / "csv" / "version_0" / "metrics.csv"
    with open(log) as f:
        scores = [(int(r["env_step"]), float(r["eval/normalized_score"]))
                  for r in csv.DictReader(f) if r.get("eval/normalized_score")]
    assert scores[-1][0] == PRETRAIN_STEPS
    module = FinetuneModule(pretrained, warmup_steps=5, online_steps=1, batch_size=32,
                            eval_interval=1, eval_episodes=1)  # as pretrained: 1 episode, seed 0
    fit_module(module, tmp_path)
    assert module.evaluations[0]["env_step"] == 5
    assert module.evaluations[0]["eval/normalized_score"] == pytest.approx(scores[-1][1],
                                                                           rel=1e-12)


# --- 6: reward scale and bias, offline and online -------------------------------------------


def test_offline_tensors_scale_rewards_and_recompute_mc_returns_on_them(d4rl_file):
    """Raw 0/1 rewards, ×10 − 5 as antmaze: the sparse rule applies to the scaled −5."""
    raw = build_raw([(3, "terminal"), (3, "terminal")],
                    rewards=np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
    tensors = load_offline_tensors(str(d4rl_file(raw)), "Hopper-v5", 0.9, reward_scale=10.0,
                                   reward_bias=-5.0, sparse_negative_reward=-5.0)
    torch.testing.assert_close(tensors["rewards"],
                               torch.tensor([-5.0, -5.0, -5.0, -5.0, 5.0, -5.0]))
    never = -5.0 / (1 - 0.9)  # the goal never reached: r_neg / (1 − γ) at every step
    second = [-5.0 + 0.9 * 5.0 + 0.81 * -5.0, 5.0 + 0.9 * -5.0, -5.0]
    torch.testing.assert_close(tensors["mc_returns"], torch.tensor([never] * 3 + second))


def test_pretraining_and_retained_rows_see_the_scaled_rewards(pretrained, hopper_dataset,
                                                              tmp_path):
    raw = torch.as_tensor(load_dataset(hopper_dataset)["rewards"])
    pre = PretrainModule("Hopper-v5", hopper_dataset, CQLConfig(**TINY_AGENT), steps=1,
                         reward_scale=10.0, reward_bias=-5.0)
    torch.testing.assert_close(pre.offline["rewards"], raw * 10 - 5)
    scaled = edited_checkpoint(pretrained, tmp_path / "scaled.ckpt", scaled_rewards(10.0, -5.0))
    module = FinetuneModule(scaled, warmup_steps=5, online_steps=5, batch_size=64,
                            retain_offline_ratio=0.5, offline_dataset=hopper_dataset)
    torch.testing.assert_close(module.offline_buffer.storage["rewards"], raw * 10 - 5)


def test_online_rewards_are_stored_scaled(pretrained, tmp_path, monkeypatch):
    scaled = edited_checkpoint(pretrained, tmp_path / "scaled.ckpt", scaled_rewards(10.0, -5.0))
    env_rewards = []

    class Recorder(gym.Wrapper):
        def step(self, action):
            out = self.env.step(action)
            env_rewards.append(out[1])
            return out

    make_env = wsrl_wm.lightning.finetune.make_env
    monkeypatch.setattr(wsrl_wm.lightning.finetune, "make_env",
                        lambda name, seed=None: Recorder(make_env(name, seed)))
    module = FinetuneModule(scaled, warmup_steps=20, online_steps=1, batch_size=32,
                            eval_interval=1, eval_episodes=1)
    fit_module(module, tmp_path / "run")
    stored = module.buffer.storage["rewards"][: len(module.buffer)]
    torch.testing.assert_close(stored, torch.tensor(env_rewards, dtype=torch.float32) * 10 - 5)


# --- 9: batches mixing retained offline, imagined and online rows ---------------------------


def test_each_utd_slice_mixes_all_three_sources_at_their_ratios(pretrained, hopper_dataset):
    module = FinetuneModule(pretrained, batch_size=64, utd=4, retain_offline_ratio=0.25,
                            offline_dataset=hopper_dataset,
                            rollout=RolloutConfig(ratio=0.25, starts=8))
    module.buffer.add({k: torch.full((50, *v.shape[1:]), 7.0)
                       for k, v in module.buffer.storage.items()})
    imagined = module.model_buffer.rows.storage
    module.model_buffer.add({k: torch.full((50, *v.shape[1:]), 9.0)
                             for k, v in imagined.items() if k != "env_step"}, env_step=0)
    shares = []
    for _ in range(60):
        batch = module.sample_batch()
        slices = split_batch(batch, 4)
        source = [torch.stack([(part["observations"] == m).all(1) for m in (7.0, 9.0)])
                  for part in slices]
        counts = torch.stack([torch.stack([s[0].sum(), s[1].sum(), (~s.any(0)).sum()])
                              for s in source])  # [slice, (online, model, offline)]
        assert counts.sum(0).tolist() == [32, 16, 16]  # exact shares per batch
        shares.append(counts.float() / 16)
    mean = torch.stack(shares).mean(0)  # every slice, averaged over batches
    torch.testing.assert_close(mean, torch.tensor([[0.5, 0.25, 0.25]] * 4), rtol=0, atol=0.07)


# --- the online max-target backup (official antmaze_wsrl) ----------------------------------


@pytest.mark.parametrize("switch", [False, True])
def test_online_max_target_backup_is_a_finetuning_option(pretrained, switch):
    """Off by default; on, the online SAC maxes its target over 10 sampled next actions."""
    options = {"max_target_backup": switch} if switch else {}
    agent = FinetuneModule(pretrained, warmup_steps=1, online_steps=1, **options).agent
    assert agent.config.max_target_backup is switch
    assert agent.backup_actions() == (10 if switch else 1)
