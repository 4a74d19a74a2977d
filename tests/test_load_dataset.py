"""`load_dataset` on hand-made D4RL files, checked row by row against an independent reference."""

import numpy as np
import pytest
from conftest import ACT_DIM, OBS_DIM, build_raw, write_d4rl_hdf5

from wsrl_wm.data.datasets import load_dataset
from wsrl_wm.errors import WsrlError

KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
        "mc_returns")

# Every way an episode can end, including the awkward ones: a one-row terminal episode, a
# one-row timeout episode right after it (dropped whole; the terminal before it must stay
# untouched), a row flagged both terminal and timeout, and a file cut mid-episode.
MIXED_EPISODES = [
    (4, "terminal"),
    (3, "timeout"),
    (1, "terminal"),
    (1, "timeout"),
    (5, "timeout"),
    (2, "both"),
    (3, "cut"),
]


def reference(raw: dict, discount: float, sparse_negative_reward=None) -> dict:
    """What load_dataset must return, written as a plain loop over episodes."""
    n = len(raw["rewards"])
    terminal = [bool(raw["terminals"][i]) for i in range(n)]
    timeout = [bool(raw["timeouts"][i]) and not terminal[i] for i in range(n)]
    rewards = [float(r) for r in raw["rewards"]]
    has_next = "next_observations" in raw

    episodes, start = [], 0
    for i in range(n):
        if terminal[i] or timeout[i] or i == n - 1:
            episodes.append(list(range(start, i + 1)))
            start = i + 1

    out = {key: [] for key in KEYS}
    out["episode"] = []  # not a load_dataset key: lets the test check episode boundaries
    for ep_id, episode in enumerate(episodes):
        returns = {}
        if sparse_negative_reward is not None and all(
            rewards[i] == sparse_negative_reward for i in episode
        ):
            for i in episode:
                returns[i] = sparse_negative_reward / (1 - discount)
        else:
            running = 0.0
            for i in reversed(episode):
                running = rewards[i] + discount * running
                returns[i] = running

        last = episode[-1]
        if has_next:
            kept = episode
        elif terminal[last]:
            kept = episode
        else:
            kept = episode[:-1]  # a timeout row or a cut-off last row has no successor
        for i in kept:
            if has_next:
                next_obs = raw["next_observations"][i]
                is_timeout = timeout[i] or (i == n - 1 and not terminal[i])
            else:
                next_obs = raw["observations"][i] if terminal[i] else raw["observations"][i + 1]
                is_timeout = i == kept[-1] and not terminal[last]
            out["observations"].append(raw["observations"][i])
            out["actions"].append(raw["actions"][i])
            out["rewards"].append(rewards[i])
            out["next_observations"].append(next_obs)
            out["terminals"].append(terminal[i])
            out["timeouts"].append(is_timeout)
            out["mc_returns"].append(returns[i])
            out["episode"].append(ep_id)
    return {key: np.array(value) for key, value in out.items()}


def episode_of_rows(raw: dict) -> list[int]:
    """Episode id of every raw row (an episode ends at a terminal or a timeout row)."""
    ids, current = [], 0
    for term, tout in zip(raw["terminals"], raw["timeouts"], strict=True):
        ids.append(current)
        if term or tout:
            current += 1
    return ids


def assert_matches_reference(got: dict, want: dict) -> None:
    assert set(got) == set(KEYS)
    n = len(want["observations"])
    for key in KEYS:
        assert isinstance(got[key], np.ndarray), key
        assert len(got[key]) == n, key
    assert got["observations"].shape == (n, OBS_DIM)
    assert got["next_observations"].shape == (n, OBS_DIM)
    assert got["actions"].shape == (n, ACT_DIM)
    for key in ("rewards", "terminals", "timeouts", "mc_returns"):
        assert got[key].shape == (n,), key
    assert got["terminals"].dtype == bool and got["timeouts"].dtype == bool
    for key in ("observations", "actions", "next_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_allclose(got["rewards"], want["rewards"], rtol=0, atol=0)
    np.testing.assert_allclose(got["mc_returns"], want["mc_returns"], rtol=1e-5, atol=1e-5)


def assert_no_cross_episode_pairs(got: dict, raw: dict) -> None:
    """Rows are identified by observations[i, 0] == i; a successor must be in the same episode."""
    episode = episode_of_rows(raw)
    for row, (obs, nxt, term) in enumerate(
        zip(got["observations"], got["next_observations"], got["terminals"], strict=True)
    ):
        i, j = int(round(obs[0])), int(round(nxt[0]))
        assert obs[0] == i and nxt[0] == j, "row ids are not integers: test data changed?"
        assert episode[i] == episode[j], f"output row {row} pairs raw rows {i} and {j}"
        if term:
            assert j == i, f"terminal output row {row} should keep its own obs as placeholder"
        else:
            assert j == i + 1, f"output row {row}: successor of raw row {i} is raw row {j}"


# --- pairing and every key, row by row ------------------------------------------------------


@pytest.mark.parametrize("discount", [0.99, 0.5])
def test_without_next_observations_matches_reference(d4rl_file, discount):
    raw = build_raw(MIXED_EPISODES)
    got = load_dataset(str(d4rl_file(raw)), discount=discount)
    want = reference(raw, discount)
    assert_matches_reference(got, want)
    assert_no_cross_episode_pairs(got, raw)


def test_without_next_observations_explicit_rows(d4rl_file):
    """The same file, with the surviving raw rows and flags spelled out by hand."""
    raw = build_raw(MIXED_EPISODES)
    # raw rows: ep0 0-3 (T at 3), ep1 4-6 (timeout 6), ep2 7 (T), ep3 8 (timeout),
    # ep4 9-13 (timeout 13), ep5 14-15 (terminal+timeout 15), ep6 16-18 (cut off)
    got = load_dataset(str(d4rl_file(raw)))
    kept = [0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 14, 15, 16, 17]
    np.testing.assert_array_equal(got["observations"][:, 0], np.array(kept, dtype=np.float32))
    successors = [1, 2, 3, 3, 5, 6, 7, 10, 11, 12, 13, 15, 15, 17, 18]
    np.testing.assert_array_equal(got["next_observations"][:, 0], np.array(successors, float))
    terminal_rows = {3, 7, 15}
    truncated_rows = {5, 12, 17}  # the row before each dropped timeout / cut-off row
    assert [bool(t) for t in got["terminals"]] == [i in terminal_rows for i in kept]
    assert [bool(t) for t in got["timeouts"]] == [i in truncated_rows for i in kept]
    np.testing.assert_array_equal(got["actions"][:, 1], -(np.array(kept, np.float32) + 0.01))


@pytest.mark.parametrize("discount", [0.99, 0.5])
def test_with_next_observations_uses_them_for_every_row(d4rl_file, discount):
    raw = build_raw(MIXED_EPISODES)
    # Successors that differ from obs[i + 1], so using the file's array is visible.
    raw["next_observations"] = raw["observations"] + np.float32(0.5)
    got = load_dataset(str(d4rl_file(raw)), discount=discount)
    want = reference(raw, discount)
    assert len(want["observations"]) == len(raw["observations"])  # nothing dropped
    assert_matches_reference(got, want)
    np.testing.assert_array_equal(got["next_observations"], raw["next_observations"])
    # a row flagged terminal and timeout is terminal; the cut-off last row ends by truncation
    np.testing.assert_array_equal(np.flatnonzero(got["terminals"]), [3, 7, 15])
    np.testing.assert_array_equal(np.flatnonzero(got["timeouts"]), [6, 8, 13, 18])


def test_file_ending_on_terminal_and_on_timeout(d4rl_file):
    for last in ("terminal", "timeout"):
        raw = build_raw([(3, "timeout"), (4, last)])
        got = load_dataset(str(d4rl_file(raw, name=f"{last}.hdf5")), discount=0.9)
        assert_matches_reference(got, reference(raw, 0.9))
        assert_no_cross_episode_pairs(got, raw)
        assert len(got["observations"]) == (6 if last == "terminal" else 5)


def test_random_episode_layouts_match_reference(d4rl_file):
    rng = np.random.default_rng(0)
    for trial in range(5):
        episodes = [
            (int(rng.integers(1, 6)), str(rng.choice(["terminal", "timeout", "both"])))
            for _ in range(int(rng.integers(2, 8)))
        ]
        episodes.append((int(rng.integers(1, 4)), str(rng.choice(["terminal", "cut"]))))
        raw = build_raw(episodes, rewards=rng.normal(size=sum(n for n, _ in episodes)))
        got = load_dataset(str(d4rl_file(raw, name=f"r{trial}.hdf5")), discount=0.95)
        assert_matches_reference(got, reference(raw, 0.95))
        assert_no_cross_episode_pairs(got, raw)


# --- Monte-Carlo returns by hand -------------------------------------------------------------


def test_mc_returns_literal_terminal_episode(d4rl_file):
    raw = build_raw([(3, "terminal")], rewards=[1.0, 2.0, 3.0])
    got = load_dataset(str(d4rl_file(raw)), discount=0.5)
    np.testing.assert_array_equal(got["rewards"], [1.0, 2.0, 3.0])
    # 1 + .5 * (2 + .5 * 3) = 2.75; 2 + .5 * 3 = 3.5; 3
    np.testing.assert_allclose(got["mc_returns"], [2.75, 3.5, 3.0], rtol=1e-6)
    np.testing.assert_array_equal(got["terminals"], [False, False, True])
    np.testing.assert_array_equal(got["timeouts"], [False, False, False])


def test_mc_returns_count_the_dropped_timeout_reward(d4rl_file):
    # episode 1: rewards 1, 2, 3 ending on a timeout (row 2 dropped, its reward still counts)
    # episode 2: rewards 4, 8 ending terminal, so it must not see episode 1's rewards
    raw = build_raw([(3, "timeout"), (2, "terminal")], rewards=[1.0, 2.0, 3.0, 4.0, 8.0])
    got = load_dataset(str(d4rl_file(raw)), discount=0.5)
    np.testing.assert_array_equal(got["rewards"], [1.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(got["mc_returns"], [2.75, 3.5, 8.0, 8.0], rtol=1e-6)
    np.testing.assert_array_equal(got["timeouts"], [False, True, False, False])


def test_mc_returns_cut_off_file_sums_to_the_end(d4rl_file):
    # the last episode is cut off: no bootstrap, its dropped last row's reward still counts
    raw = build_raw([(2, "terminal"), (3, "cut")], rewards=[1.0, 1.0, 1.0, 2.0, 4.0])
    got = load_dataset(str(d4rl_file(raw)), discount=0.5)
    # 1 + .5 * 1 = 1.5; 1; then 1 + .5 * (2 + .5 * 4) = 3; 2 + .5 * 4 = 4
    np.testing.assert_allclose(got["mc_returns"], [1.5, 1.0, 3.0, 4.0], rtol=1e-6)
    np.testing.assert_array_equal(got["timeouts"], [False, False, False, True])


def test_sparse_negative_reward(d4rl_file):
    rewards = [-1.0, -1.0, -1.0, -1.0, -1.0, 0.0, -1.0, -1.0]
    # ep A: rows 0-2 all -1, timeout; ep B: rows 3-5 reaches the goal, terminal;
    # ep C: rows 6-7 all -1, terminal
    raw = build_raw([(3, "timeout"), (3, "terminal"), (2, "terminal")], rewards=rewards)
    path = str(d4rl_file(raw))
    got = load_dataset(path, discount=0.9, sparse_negative_reward=-1.0)
    # all -1 → -1 / (1 - .9) = -10 at every step; ep B: -1 + .9 * (-1 + .9 * 0) = -1.9, -1, 0
    np.testing.assert_allclose(
        got["mc_returns"], [-10.0, -10.0, -1.9, -1.0, 0.0, -10.0, -10.0], rtol=1e-5
    )
    assert_matches_reference(got, reference(raw, 0.9, sparse_negative_reward=-1.0))

    plain = load_dataset(path, discount=0.9)
    # without the option, ep A is an ordinary truncated sum: -1 - .9 - .81 = -2.71, -1.9
    np.testing.assert_allclose(
        plain["mc_returns"], [-2.71, -1.9, -1.9, -1.0, 0.0, -1.9, -1.0], rtol=1e-5
    )


# --- D4RL names and env checks ---------------------------------------------------------------


def test_d4rl_name_resolves_in_dataset_dir(d4rl_file, tmp_path, monkeypatch):
    raw = build_raw(MIXED_EPISODES)
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    write_d4rl_hdf5(tmp_path / "d4rl" / "hopper-medium-v2.hdf5", raw)
    got = load_dataset("hopper-medium-v2", discount=0.9)
    assert_matches_reference(got, reference(raw, 0.9))


def test_d4rl_name_default_dir_is_home_dot_d4rl(tmp_path, monkeypatch):
    monkeypatch.delenv("D4RL_DATASET_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    write_d4rl_hdf5(tmp_path / ".d4rl" / "datasets" / "walker2d-medium-v2.hdf5",
                    build_raw([(3, "terminal")], obs_dim=17, act_dim=6))
    got = load_dataset("walker2d-medium-v2")
    assert got["observations"].shape == (3, 17)
    assert got["actions"].shape == (3, 6)


@pytest.mark.parametrize(("name", "file_name"), [
    ("hopper-medium-v2", "hopper_medium-v2.hdf5"),
    ("hopper-medium-replay-v2", "hopper_medium_replay-v2.hdf5"),
    ("hopper-medium-expert-v2", "hopper_medium_expert-v2.hdf5"),
])
def test_d4rl_name_finds_the_d4rl_packages_own_file_name(name, file_name, tmp_path,
                                                          monkeypatch):
    """The d4rl package saves a download under its URL's name, with underscores."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    raw = build_raw(MIXED_EPISODES)
    write_d4rl_hdf5(tmp_path / file_name, raw)
    assert_matches_reference(load_dataset(name, discount=0.9), reference(raw, 0.9))


def test_d4rl_name_missing_file_lists_the_names_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    with pytest.raises(WsrlError, match="not found") as info:
        load_dataset("hopper-medium-replay-v2")
    message = str(info.value)
    assert str(tmp_path / "hopper-medium-replay-v2.hdf5") in message
    assert str(tmp_path / "hopper_medium_replay-v2.hdf5") in message
    assert "D4RL_DATASET_DIR" in message and "\n" not in message


def test_d4rl_name_checks_its_own_env(tmp_path, monkeypatch):
    """A file stored under a halfcheetah name but holding hopper-sized rows is rejected."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    write_d4rl_hdf5(tmp_path / "halfcheetah-medium-v2.hdf5", build_raw([(3, "terminal")]))
    with pytest.raises(WsrlError, match=r"11/3 does not match env 'halfcheetah-medium-v2'"):
        load_dataset("halfcheetah-medium-v2")


@pytest.mark.parametrize("name", ["pong-medium-v2", "CartPole-v1", "no such dataset"])
def test_unknown_dataset_name(name, tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    with pytest.raises(WsrlError, match="unknown env or dataset name"):
        load_dataset(name)


def test_sparse_d4rl_name_reads_minari_and_names_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    with pytest.raises(WsrlError, match="`minari download D4RL/antmaze/umaze-v1`"):
        load_dataset("antmaze-umaze-v2")


def test_env_match_passes(d4rl_file):
    raw = build_raw([(4, "terminal")])
    path = str(d4rl_file(raw))
    for env in ("Hopper-v5", "hopper-medium-v2"):
        assert load_dataset(path, env=env)["observations"].shape == (4, OBS_DIM)


@pytest.mark.parametrize(
    ("obs_dim", "act_dim", "env"),
    [(11, 3, "HalfCheetah-v5"), (17, 6, "Hopper-v5"), (11, 6, "Hopper-v5"),
     (11, 3, "ant-medium-v2")],
)
def test_env_mismatch(d4rl_file, obs_dim, act_dim, env):
    path = str(d4rl_file(build_raw([(4, "terminal")], obs_dim=obs_dim, act_dim=act_dim)))
    with pytest.raises(WsrlError, match=rf"{obs_dim}/{act_dim} does not match env '{env}'"):
        load_dataset(path, env=env)


def test_env_named_in_file_attrs_is_checked(d4rl_file):
    path = str(d4rl_file(build_raw([(4, "terminal")]), attrs={"env": "HalfCheetah-v5"}))
    with pytest.raises(WsrlError, match="does not match env 'HalfCheetah-v5'"):
        load_dataset(path)


def test_unknown_env_argument(d4rl_file):
    path = str(d4rl_file(build_raw([(4, "terminal")])))
    with pytest.raises(WsrlError, match="unknown env"):
        load_dataset(path, env="Pong-v5")


# --- bad input -------------------------------------------------------------------------------


def assert_one_line(info) -> None:
    message = str(info.value)
    assert message and "\n" not in message, repr(message)


@pytest.mark.parametrize("key", ["observations", "actions", "rewards", "terminals", "timeouts"])
def test_missing_key(d4rl_file, key):
    raw = build_raw([(3, "terminal")])
    del raw[key]
    with pytest.raises(WsrlError, match=rf"missing key\(s\) {key}") as info:
        load_dataset(str(d4rl_file(raw)))
    assert_one_line(info)


@pytest.mark.parametrize("key", ["rewards", "terminals", "timeouts", "actions",
                                 "next_observations"])
def test_mismatched_lengths(d4rl_file, key):
    raw = build_raw([(3, "terminal"), (3, "timeout")])
    raw["next_observations"] = raw["observations"] + 1
    raw[key] = raw[key][:-1]
    with pytest.raises(WsrlError, match=rf"mismatched lengths.*{key}=5") as info:
        load_dataset(str(d4rl_file(raw)))
    assert_one_line(info)


@pytest.mark.parametrize("key", ["observations", "actions", "rewards", "next_observations"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(d4rl_file, key, bad):
    raw = build_raw([(3, "terminal"), (4, "timeout")])
    raw["next_observations"] = raw["observations"] + 1
    if raw[key].ndim == 2:
        raw[key][4, 1] = bad
    else:
        raw[key][4] = bad
    with pytest.raises(WsrlError, match=rf": {key} has NaN/inf values .*first at row 4") as info:
        load_dataset(str(d4rl_file(raw)))
    assert_one_line(info)


def test_non_finite_in_dropped_row_is_still_an_error(d4rl_file):
    raw = build_raw([(3, "timeout"), (2, "terminal")])
    raw["observations"][2, 0] = np.nan  # row 2 is a timeout row, dropped from the output
    with pytest.raises(WsrlError, match="observations has NaN/inf"):
        load_dataset(str(d4rl_file(raw)))


def test_file_not_found(tmp_path):
    missing = tmp_path / "nowhere" / "data.hdf5"
    with pytest.raises(WsrlError, match="not found") as info:
        load_dataset(str(missing))
    assert str(missing) in str(info.value)
    assert_one_line(info)


def test_truncated_file(tmp_path):
    raw = build_raw([(50, "terminal"), (50, "timeout")])
    path = write_d4rl_hdf5(tmp_path / "cut.hdf5", raw)
    assert load_dataset(str(path))["observations"].shape == (99, OBS_DIM)  # valid before the cut
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WsrlError, match="corrupt or truncated") as info:
        load_dataset(str(path))
    assert_one_line(info)


@pytest.mark.parametrize("name", ["notes.hdf5", "notes.txt"])
def test_not_an_hdf5_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("observations,actions\n1,2\n")
    with pytest.raises(WsrlError, match="cannot read as hdf5") as info:
        load_dataset(str(path))
    assert_one_line(info)


def test_errors_are_one_line(d4rl_file, tmp_path):
    """The env mismatch and unknown-name messages are one line too (the CLI prints them)."""
    path = str(d4rl_file(build_raw([(3, "terminal")])))
    with pytest.raises(WsrlError) as info:
        load_dataset(path, env="Walker2d-v5")
    assert_one_line(info)
    with pytest.raises(WsrlError) as info:
        load_dataset("pong-medium-v2")
    assert_one_line(info)


def test_next_observations_size_must_match_env(d4rl_file):
    """next_observations are observations too: a 10-wide array cannot belong to Hopper-v5 (11)."""
    raw = build_raw([(3, "terminal"), (3, "timeout")])
    raw["next_observations"] = raw["observations"][:, :10] + 1
    with pytest.raises(WsrlError, match="next_observations shape"):
        load_dataset(str(d4rl_file(raw)), env="Hopper-v5")
