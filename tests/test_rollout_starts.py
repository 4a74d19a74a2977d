"""Where imagined rollouts start (`rollout.start_from`), through the real fine-tuning loop."""

import pytest
import torch
from conftest import fit_module

from wsrl_wm.errors import WsrlError
from wsrl_wm.lightning import FinetuneModule
from wsrl_wm.online import imagination as imagination_module
from wsrl_wm.world_model import RolloutConfig

SHORT = dict(warmup_steps=30, online_steps=12, utd=2, batch_size=32, eval_interval=100,
             eval_episodes=1, log_interval=4, buffer_capacity=1000)


@pytest.mark.parametrize("start_from", ["warmup", "buffer"])
def test_rollouts_start_from_the_warmup_states_only_when_asked(pretrained, tmp_path,
                                                               monkeypatch, start_from):
    starts = []
    original = imagination_module.branched_rollout

    def recording(world_model, actor, start_states, *args, **kwargs):
        starts.append(start_states.clone())
        return original(world_model, actor, start_states, *args, **kwargs)

    monkeypatch.setattr(imagination_module, "branched_rollout", recording)
    rollout = RolloutConfig(ratio=0.5, interval=4, starts=64, horizon=1, start_from=start_from)
    module = FinetuneModule(pretrained, **SHORT, rollout=rollout)
    fit_module(module, tmp_path)
    warmup = {row.tobytes() for row in module.buffer.storage["observations"][:30].numpy()}
    later = [row.tobytes() for batch in starts[1:] for row in batch.numpy()]
    assert len(starts) == 3  # online steps 0, 4, 8
    outside = sum(row not in warmup for row in later)
    assert outside == 0 if start_from == "warmup" else outside > 0


def test_warmup_starts_need_a_warmup(pretrained):
    rollout = RolloutConfig(ratio=0.5, interval=4, starts=16, horizon=1, start_from="warmup")
    with pytest.raises(WsrlError, match="start_from warmup needs warmup_steps > 0"):
        FinetuneModule(pretrained, **{**SHORT, "warmup_steps": 0}, rollout=rollout)


def test_an_unknown_start_is_refused():
    with pytest.raises(WsrlError, match="rollout.start_from must be one of buffer, warmup"):
        RolloutConfig(ratio=0.5, start_from="anywhere").check(32)


def test_sampling_the_first_rows_refuses_a_full_buffer():
    from wsrl_wm.data import ReplayBuffer

    buffer = ReplayBuffer.for_transitions(4, 2, 1)
    buffer.add({k: torch.zeros(4, *v.shape[1:]) for k, v in buffer.storage.items()})
    with pytest.raises(WsrlError, match="is full"):
        buffer.sample(2, first=2)
