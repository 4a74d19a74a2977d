"""Online CQL / Cal-QL after a Cal-QL pretraining (`online_cql_alpha` > 0): the paper's
no-retention Cal-QL baseline. The bound stays on, over the MC returns of finished online
episodes, as in the official WSRL (its `ReplayBufferMC`)."""

import numpy as np
import pytest
import torch
from conftest import PRETRAIN_STEPS, fit_module
from lightning.pytorch import Callback

from wsrl_wm.agents import CQL
from wsrl_wm.data import EpisodeReplayBuffer, mc_returns
from wsrl_wm.errors import WsrlError
from wsrl_wm.lightning import FinetuneModule
from wsrl_wm.world_model import RolloutConfig

ONLINE = 60


class CriticSteps(Callback):
    """(finished rows in the buffer, critic Adam steps) after each env step (the update comes
    after the step's transition is stored, so an episode ending there already counts)."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        critic = trainer.optimizers[module.optimizer_names.index("critic")]
        steps = next(iter(critic.state.values()))["step"]
        self.rows.append((module.buffer.finished, int(steps)))


@pytest.fixture(scope="module")
def calql_online(tmp_path_factory, pretrained):
    torch.manual_seed(0)  # as the CLI's seed_everything: the run must not depend on test order
    module = FinetuneModule(pretrained, warmup_steps=0, online_steps=ONLINE, utd=2,
                            batch_size=32, online_cql_alpha=1.0, eval_interval=ONLINE,
                            eval_episodes=1, log_interval=1)
    recorder = CriticSteps()
    fit_module(module, tmp_path_factory.mktemp("calql_online"), [recorder])
    return module, recorder


def test_the_online_agent_keeps_the_calql_bound_with_the_online_alpha(calql_online):
    module, _ = calql_online
    assert isinstance(module.agent, CQL)
    assert module.agent.config.calql and module.agent.config.cql_alpha == 1.0
    assert isinstance(module.buffer, EpisodeReplayBuffer)


def test_updates_wait_for_a_finished_episode_then_run_every_step(calql_online):
    _, recorder = calql_online
    first = next(i for i, (finished, _) in enumerate(recorder.rows) if finished)
    assert 0 < first < ONLINE  # a random-ish Hopper episode ends well within 60 steps
    assert [steps for _, steps in recorder.rows[:first]] == [PRETRAIN_STEPS] * first
    assert [steps for _, steps in recorder.rows[first:]] == [  # UTD 2: 3 Adam steps each
        PRETRAIN_STEPS + 3 * k for k in range(1, ONLINE - first + 1)]


def test_online_rows_carry_their_episodes_mc_return(calql_online):
    module, _ = calql_online
    buf = module.buffer
    stored = {k: v[: len(buf)].numpy() for k, v in buf.storage.items()}
    ends = np.flatnonzero(stored["terminals"])
    assert len(ends) and ends[-1] == buf.finished - 1  # no time limit within 60 steps
    done = slice(0, buf.finished)
    want = mc_returns(stored["rewards"][done], stored["terminals"][done],
                      np.zeros(buf.finished), module.agent.config.discount)
    np.testing.assert_allclose(stored["mc_returns"][done], want, rtol=1e-6)
    assert np.all(stored["mc_returns"][buf.finished:] == 0)  # the open episode: not yet


def test_the_online_diagnostics_report_the_online_mc_return(calql_online):
    """The last evaluation's `online/mc_return`: the mean discounted return-to-go, summed by
    hand backwards through each finished episode's stored rewards, over the newest finished
    rows (as many as the probe has); the open episode's rows have no return yet."""
    module, _ = calql_online
    buf, gamma = module.buffer, module.agent.config.discount
    rewards = buf.storage["rewards"][: len(buf)].tolist()
    terminals = buf.storage["terminals"][: len(buf)].tolist()
    finished = max(i for i, t in enumerate(terminals) if t) + 1
    returns, to_go = [0.0] * finished, 0.0
    for i in reversed(range(finished)):
        to_go = rewards[i] + (0.0 if terminals[i] else gamma * to_go)
        returns[i] = to_go
    newest = returns[-len(module.probe["rewards"]):]
    assert module.evaluations[-1]["env_step"] == ONLINE
    assert module.evaluations[-1]["online/mc_return"] == pytest.approx(
        sum(newest) / len(newest), rel=1e-5)


def test_online_calql_with_imagined_rollouts_is_rejected(pretrained):
    with pytest.raises(WsrlError, match="imagined rollouts have none"):
        FinetuneModule(pretrained, online_cql_alpha=1.0, rollout=RolloutConfig(ratio=0.5))


def test_retained_offline_rows_bring_their_mc_return(pretrained, hopper_dataset):
    module = FinetuneModule(pretrained, warmup_steps=5, online_steps=5, batch_size=64,
                            online_cql_alpha=1.0, retain_offline_ratio=0.5,
                            offline_dataset=hopper_dataset)
    module.buffer.add({k: torch.zeros(4, *v.shape[1:]) for k, v in module.buffer.storage.items()
                       if k != "mc_returns"})
    module.buffer.end_episode()
    batch = module.sample_batch()
    assert batch["mc_returns"].shape == (64,)
    assert int((batch["mc_returns"] != 0).sum()) > 0  # the offline half: real returns
