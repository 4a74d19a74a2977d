"""ReplayBuffer: FIFO ring contents, sampling from stored rows only, seeding, checkpoints, the
newest rows across the wrap; EpisodeReplayBuffer: MC returns per finished episode (Cal-QL)."""

import io

import pytest
import torch

from wsrl_wm.data.replay import EpisodeReplayBuffer, ReplayBuffer
from wsrl_wm.errors import WsrlError

OBS, ACT = 3, 2


def rows(start: int, count: int) -> dict[str, torch.Tensor]:
    """Transitions numbered start .. start+count-1; every field encodes its row's number."""
    ids = torch.arange(start, start + count, dtype=torch.float32)
    return {
        "observations": ids[:, None] + torch.arange(OBS) / 10,
        "actions": -ids[:, None] - torch.arange(ACT) / 10,
        "rewards": ids * 2,
        "next_observations": ids[:, None] + 1 + torch.arange(OBS) / 10,
        "terminals": (ids % 3 == 0).float(),
    }


def stored_in_order(buf: ReplayBuffer) -> dict[str, torch.Tensor]:
    """The stored rows, oldest first (the oldest row sits at `position` once the ring wraps)."""
    first = buf.position if buf.size == buf.capacity else 0
    order = [(first + j) % buf.capacity for j in range(buf.size)]
    return {key: store[order] for key, store in buf.storage.items()}


def assert_holds(buf: ReplayBuffer, start: int, count: int) -> None:
    assert len(buf) == count
    want = rows(start, count)
    got = stored_in_order(buf)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


def test_fills_in_order_before_wrapping():
    buf = ReplayBuffer.for_transitions(10, OBS, ACT)
    assert len(buf) == 0
    buf.add(rows(0, 4))
    assert_holds(buf, 0, 4)
    buf.add(rows(4, 3))
    assert_holds(buf, 0, 7)
    # rows not yet written are untouched
    assert torch.all(buf.storage["observations"][7:] == 0)


@pytest.mark.parametrize("capacity", [1, 5, 7])
def test_keeps_exactly_the_newest_capacity_rows(capacity):
    buf = ReplayBuffer.for_transitions(capacity, OBS, ACT)
    total = 0
    for count in [1, 2, 3, 4, 1, 9, 5, 2, 7, 3]:  # includes batches larger than capacity
        buf.add(rows(total, count))
        total += count
        kept = min(total, capacity)
        assert_holds(buf, total - kept, kept)


def test_add_larger_than_capacity_keeps_the_batch_tail():
    buf = ReplayBuffer.for_transitions(4, OBS, ACT)
    buf.add(rows(0, 2))  # position 2 before the big batch
    buf.add(rows(2, 11))  # rows 2..12; only 9..12 can survive
    assert_holds(buf, 9, 4)
    assert set(buf.storage["rewards"].tolist()) == {18.0, 20.0, 22.0, 24.0}


def test_add_exactly_capacity_replaces_everything():
    buf = ReplayBuffer.for_transitions(6, OBS, ACT)
    buf.add(rows(0, 4))
    buf.add(rows(100, 6))
    assert_holds(buf, 100, 6)


def test_sample_shapes_and_dtypes():
    buf = ReplayBuffer.for_transitions(20, OBS, ACT)
    buf.add(rows(1, 12))
    batch = buf.sample(32)
    assert set(batch) == {"observations", "actions", "rewards", "next_observations", "terminals"}
    assert batch["observations"].shape == (32, OBS)
    assert batch["next_observations"].shape == (32, OBS)
    assert batch["actions"].shape == (32, ACT)
    assert batch["rewards"].shape == (32,)
    assert batch["terminals"].shape == (32,)
    for value in batch.values():
        assert value.dtype == torch.float32
        assert value.device == torch.device("cpu")


def test_custom_shapes_and_dtypes():
    buf = ReplayBuffer(8, {"obs": (2, 3), "done": (), "step": ()},
                       dtypes={"done": torch.bool, "step": torch.int64})
    buf.add({"obs": torch.ones(5, 2, 3), "done": torch.tensor([0, 1, 0, 1, 1]),
             "step": torch.arange(5)})
    batch = buf.sample(16)
    assert batch["obs"].shape == (16, 2, 3) and batch["obs"].dtype == torch.float32
    assert batch["done"].shape == (16,) and batch["done"].dtype == torch.bool
    assert batch["step"].dtype == torch.int64
    assert set(batch["step"].tolist()) <= {0, 1, 2, 3, 4}
    # done follows its row: rows 1, 3 and 4 are done
    for step, done in zip(batch["step"].tolist(), batch["done"].tolist(), strict=True):
        assert done == (step in (1, 3, 4))


def test_samples_come_from_stored_rows_only_and_rows_stay_whole():
    buf = ReplayBuffer.for_transitions(10, OBS, ACT)
    buf.add(rows(1, 3))  # 7 of 10 rows are still empty (zeros): none may be sampled
    batch = buf.sample(600, generator=torch.Generator().manual_seed(0))
    ids = batch["rewards"] / 2
    assert set(ids.tolist()) == {1.0, 2.0, 3.0}  # every stored row is reachable, nothing else
    want = rows(0, 4)
    idx = ids.long()
    for key in want:
        torch.testing.assert_close(batch[key], want[key][idx], rtol=0, atol=0, msg=key)


def test_samples_after_wrap_never_return_overwritten_rows():
    buf = ReplayBuffer.for_transitions(5, OBS, ACT)
    buf.add(rows(0, 8))
    buf.add(rows(8, 3))  # holds rows 6..10
    batch = buf.sample(500, generator=torch.Generator().manual_seed(1))
    assert set((batch["rewards"] / 2).tolist()) == {6.0, 7.0, 8.0, 9.0, 10.0}
    torch.testing.assert_close(batch["observations"][:, 0] + 1, batch["next_observations"][:, 0])


def test_seeded_generator_reproducible():
    buf = ReplayBuffer.for_transitions(50, OBS, ACT)
    buf.add(rows(0, 50))
    first = buf.sample(64, generator=torch.Generator().manual_seed(123))
    again = buf.sample(64, generator=torch.Generator().manual_seed(123))
    other = buf.sample(64, generator=torch.Generator().manual_seed(124))
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["rewards"], other["rewards"])


def round_trip(state: dict) -> dict:
    stream = io.BytesIO()
    torch.save(state, stream)
    stream.seek(0)
    return torch.load(stream)


@pytest.mark.parametrize("inserted", [3, 13])  # partly filled, and wrapped around
def test_state_dict_round_trip(inserted):
    buf = ReplayBuffer.for_transitions(8, OBS, ACT)
    for start in range(0, inserted, 5):
        buf.add(rows(start, min(5, inserted - start)))
    state = buf.state_dict()
    assert state["size"] == min(inserted, 8) and state["position"] == inserted % 8
    assert all(len(v) == state["size"] for v in state["storage"].values())  # no empty rows

    restored = ReplayBuffer.for_transitions(8, OBS, ACT)
    restored.load_state_dict(round_trip(state))
    assert (restored.position, restored.size) == (buf.position, buf.size)
    kept = min(inserted, 8)
    assert_holds(restored, inserted - kept, kept)

    a = buf.sample(40, generator=torch.Generator().manual_seed(7))
    b = restored.sample(40, generator=torch.Generator().manual_seed(7))
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # both keep behaving the same: the next insert overwrites the same (oldest) rows
    buf.add(rows(inserted, 4))
    restored.add(rows(inserted, 4))
    kept = min(inserted + 4, 8)
    assert_holds(restored, inserted + 4 - kept, kept)
    for key in buf.storage:
        assert torch.equal(buf.storage[key], restored.storage[key]), key


def test_state_dict_is_a_snapshot():
    buf = ReplayBuffer.for_transitions(4, OBS, ACT)
    buf.add(rows(0, 4))
    state = buf.state_dict()
    buf.add(rows(4, 4))
    assert state["storage"]["rewards"].tolist() == [0.0, 2.0, 4.0, 6.0]


def test_empty_buffer_cannot_sample():
    buf = ReplayBuffer.for_transitions(4, OBS, ACT)
    with pytest.raises(WsrlError, match="empty replay buffer"):
        buf.sample(1)


@pytest.mark.parametrize("capacity", [0, -3])
def test_capacity_must_be_positive(capacity):
    with pytest.raises(WsrlError, match="capacity must be positive"):
        ReplayBuffer.for_transitions(capacity, OBS, ACT)


@pytest.mark.parametrize(("inserted", "count"), [(3, 2), (3, 10), (13, 5), (13, 8), (21, 3)])
def test_latest_returns_the_newest_rows_in_order_across_the_wrap(inserted, count):
    buf = ReplayBuffer.for_transitions(8, OBS, ACT)
    for start in range(0, inserted, 5):
        buf.add(rows(start, min(5, inserted - start)))
    got = buf.latest(count)
    kept = min(count, inserted, 8)
    want = rows(inserted - kept, kept)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


def discounted(rewards: list[float], discount: float) -> list[float]:
    """Reward-to-go written out: G_t = r_t + γ·r_{t+1} + γ²·r_{t+2} + ..."""
    return [sum(r * discount**k for k, r in enumerate(rewards[t:])) for t in range(len(rewards))]


def episode_rows(rewards: list[float]) -> dict[str, torch.Tensor]:
    count = len(rewards)
    return {"observations": torch.zeros(count, OBS), "actions": torch.zeros(count, ACT),
            "rewards": torch.tensor(rewards), "next_observations": torch.zeros(count, OBS),
            "terminals": torch.zeros(count)}


def test_episode_buffer_writes_each_episodes_mc_return_at_its_end():
    buf = EpisodeReplayBuffer(20, OBS, ACT, discount=0.9)
    first, second = [1.0, 2.0, 3.0], [5.0, -1.0]
    for reward in first:  # one row per env step, as fine-tuning inserts them
        buf.add(episode_rows([reward]))
    assert buf.finished == 0
    buf.end_episode()
    buf.add(episode_rows(second))
    assert (buf.finished, buf.open) == (3, 2)
    torch.testing.assert_close(buf.storage["mc_returns"][:3], torch.tensor(discounted(first, 0.9)))
    buf.end_episode()
    torch.testing.assert_close(buf.storage["mc_returns"][3:5],
                               torch.tensor(discounted(second, 0.9)))
    assert buf.finished == 5


def test_episode_buffer_sparse_rule_and_wrap_around():
    buf = EpisodeReplayBuffer(6, OBS, ACT, discount=0.99, sparse_negative_reward=-5.0)
    buf.add(episode_rows([-5.0] * 4))  # never reached the goal: r/(1-γ) at every step
    buf.end_episode()
    buf.add(episode_rows([-5.0, -5.0, 5.0, -5.0]))  # wraps: rows 4, 5, 0, 1
    buf.end_episode()
    stored = buf.storage["mc_returns"]
    torch.testing.assert_close(stored[2:4], torch.full((2,), -500.0))
    torch.testing.assert_close(stored[[4, 5, 0, 1]],
                               torch.tensor(discounted([-5.0, -5.0, 5.0, -5.0], 0.99)))


def test_episode_buffer_serves_finished_episodes_only():
    buf = EpisodeReplayBuffer(10, OBS, ACT, discount=0.9)
    buf.add(episode_rows([1.0, 2.0]))
    with pytest.raises(WsrlError, match="no finished episode"):
        buf.sample(4)
    buf.end_episode()
    buf.add(episode_rows([7.0, 8.0, 9.0]))  # in progress: its return is not known yet
    batch = buf.sample(300, generator=torch.Generator().manual_seed(0))
    assert set(batch["rewards"].tolist()) == {1.0, 2.0}
    torch.testing.assert_close(buf.latest(5)["rewards"], torch.tensor([1.0, 2.0]))
    buf.add(episode_rows([10.0] * 7))  # wraps over the first episode's rows
    buf.end_episode()
    batch = buf.sample(300, generator=torch.Generator().manual_seed(0))
    assert set(batch["rewards"].tolist()) == {7.0, 8.0, 9.0, 10.0}
    torch.testing.assert_close(buf.latest(3)["mc_returns"],
                               torch.tensor(discounted([10.0] * 7, 0.9)[-3:]))


def test_episode_buffer_state_dict_keeps_the_open_episode():
    buf = EpisodeReplayBuffer(8, OBS, ACT, discount=0.9)
    buf.add(episode_rows([1.0, 2.0]))
    buf.end_episode()
    buf.add(episode_rows([3.0]))
    restored = EpisodeReplayBuffer(8, OBS, ACT, discount=0.9)
    restored.load_state_dict(round_trip(buf.state_dict()))
    assert (restored.finished, restored.open) == (2, 1)
    restored.add(episode_rows([4.0]))
    restored.end_episode()
    torch.testing.assert_close(restored.storage["mc_returns"][2:4],
                               torch.tensor(discounted([3.0, 4.0], 0.9)))
