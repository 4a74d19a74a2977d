"""The benchmark measures what it says, against a reference that does the same work (no timing
assertions: figures are ratios printed by experiments/benchmark.py)."""

import functools
import importlib.util
import json
import math
import statistics
import time
import types
from pathlib import Path

import pytest
import torch

from wsrl_wm.agents import CQL, SAC, CQLConfig, SACConfig
from wsrl_wm.agents.update import EagerSteps
from wsrl_wm.benchmark import suite
from wsrl_wm.benchmark.measure import flops, in_fresh_process, peak_rss_added_mb
from wsrl_wm.benchmark.peers import d3rlpy_calql_update
from wsrl_wm.benchmark.reference import ReferenceCQL, ReferenceSAC
from wsrl_wm.data import ReplayBuffer

SPEC = importlib.util.spec_from_file_location(
    "benchmark_cli", Path(__file__).resolve().parents[1] / "experiments" / "benchmark.py")
benchmark_cli = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(benchmark_cli)

TINY = dict(num_critics=4, critic_hidden=(16, 16), actor_hidden=(16, 16), utd=2, compile="off")


@pytest.mark.parametrize("reference_class, config", [
    (ReferenceSAC, SACConfig(**TINY)), (ReferenceCQL, CQLConfig(**TINY, cql_n_actions=3))])
def test_reference_has_our_shapes_and_trains_every_critic(reference_class, config):
    reference = reference_class(17, 6, config)
    ours = SAC(17, 6, config)
    assert [p.numel() for p in reference.critics[0].parameters()] == [
        p[0].numel() for p in ours.critic.parameters()]  # layer by layer, per critic
    assert len(reference.critics) == ours.critic.num_critics
    batch = suite.random_batch(8)
    before = [p.clone() for p in reference.critics.parameters()]
    reference.update(batch)
    assert all(not torch.equal(a, b) for a, b in zip(before, reference.critics.parameters(),
                                                       strict=True))


@pytest.mark.parametrize("subset", [True, False])
def test_reference_cql_loss_does_exactly_our_matmul_work(subset):
    """The CQL term on the drawn subset (or every critic) and the max-target backup (the
    default) on both sides: same FLOPs."""
    config = CQLConfig(**TINY, cql_n_actions=3, cql_critic_subset=subset)
    assert config.cql_max_target_backup
    ours, reference = CQL(17, 6, config), ReferenceCQL(17, 6, config)
    batch = suite.random_batch(16)
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")
    # every matmul counted on both sides: our eager heads are batched matmuls too
    assert flops(lambda: ours.critic_loss(batch)[0].backward()) == flops(
        lambda: reference.critic_loss(*(batch[k] for k in keys)).backward())


def test_reference_critic_step_does_exactly_our_matmul_work():
    """Same Bellman update, same FLOPs: the comparison measures implementation, not work."""
    config = SACConfig(**TINY)
    ours, reference = SAC(17, 6, config), ReferenceSAC(17, 6, config)
    part = {k: v[:16] for k, v in suite.random_batch(32).items()}
    optimizers = ours.make_optimizers()
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")
    # Eager, our one-output heads are batched matmuls: torch's counter sees them as it sees
    # the reference's nn.Linear heads.
    assert flops(lambda: EagerSteps(ours.updater, optimizers).critic(part, 0)) == flops(
        lambda: reference.critic_loss(*(part[k] for k in keys)).backward())


def test_our_update_skips_work_the_reference_wastes():
    """The actor step back-propagates through each row's minimising critic only and computes no
    critic weight gradients; the reference back-propagates through every critic, weights
    included, as common implementations do."""
    config = SACConfig(**TINY)
    ours, batch = SAC(17, 6, config), suite.random_batch(256)
    optimizers = ours.make_optimizers()
    reference = ReferenceSAC(17, 6, config)
    assert flops(lambda: ours.update(batch, optimizers)) < flops(lambda: reference.update(batch))


class KnownWork:
    """Stands in for an agent or a reference: each update sleeps a known time and does one
    64×64 matmul (known FLOPs), and counts itself."""

    def __init__(self, seconds: float):
        self.seconds, self.calls, self.matrix = seconds, 0, torch.randn(64, 64)

    def make_optimizers(self) -> dict:
        return {}

    def update(self, batch: dict, optimizers: dict | None = None) -> None:
        self.calls += 1
        torch.mm(self.matrix, self.matrix)
        time.sleep(self.seconds)


def test_update_section_times_each_contender_for_real():
    """Rates, ratio and FLOPs against work of known cost: 100 ms vs 300 ms per update (a
    loaded machine oversleeps by a few ms)."""
    ours, reference = KnownWork(0.1), KnownWork(0.3)
    figures = suite.update_section("S", ours, reference, suite.random_batch(4), iterations=3,
                                   compiled=False, targets=("≥ 2", "≥ 0.7"))
    values = {f.name: f.value for f in figures}
    assert 10 / 2 < values["wsrl-wm eager"] <= 10
    assert 3.33 / 2 < values["reference"] <= 3.34
    assert 1.5 < values["best / reference"] < 3.3  # oversleeping only pulls it towards 1
    assert values["GFLOP per update"] == 2 * 64**3 / 1e9
    # each: 2 warm-up calls and 1 timed, then 3 interleaved blocks of 1 (ours: + FLOP count)
    assert (ours.calls, reference.calls) == (1 + 3 + 3, 3 + 3)
    assert {f.target for f in figures} >= {"≥ 2", "≥ 0.7"}


def test_sac_section_runs_both_updates_and_the_system_allocator():
    figures = {f.name: f for f in suite.sac_update(iterations=1, compiled=False, batch_size=8,
                                                   config=SACConfig(**TINY))}
    assert {"reference", "wsrl-wm eager", "wsrl-wm eager, glibc's default allocator",
            "best / reference", "best / matmul roofline"} <= set(figures)


def test_cql_section_times_the_every_critic_variant():
    figures = {f.name for f in suite.cql_update(iterations=1, compiled=False, batch_size=8,
                                                config=CQLConfig(**TINY, cql_n_actions=3))}
    assert {"reference", "wsrl-wm eager", "wsrl-wm eager, CQL term on every critic",
            "reference, CQL term on every critic", "best / reference",
            "best / reference, CQL term on every critic"} <= figures


def test_peer_section_is_a_note_without_d3rlpy(monkeypatch):
    monkeypatch.setattr(suite, "d3rlpy_available", lambda: False)
    (note,) = suite.peer_update(iterations=1, compiled=False)
    assert math.isnan(note.value) and "the Makefile's PEERS" in note.name
    assert note.name in benchmark_cli.table([note])


def test_d3rlpy_calql_adapter_trains_d3rlpys_critics_with_our_settings():
    """d3rlpy comes with the dev environment (the Makefile's PEERS), so this runs in CI."""
    config = CQLConfig(**TINY, cql_n_actions=3, calql=True, layer_norm=False)
    update = d3rlpy_calql_update(config, 17, 6, suite.random_batch(8))
    first, second = update(), update()
    assert first["alpha"] == pytest.approx(config.cql_alpha)
    assert first["critic_loss"] != second["critic_loss"]  # the critics moved


def test_buffer_section_times_one_insert_and_one_sample_per_env_step(monkeypatch):
    """An insert made to cost 10 ms and a sample 20 ms: each capacity's figure is at least
    30,000 µs (a loaded machine oversleeps: 48,000 and 119,000 µs seen at a load of 11 on 2
    cores, hence the loose upper bound; the call sequence pins what is timed)."""
    calls = []

    def known_cost(name, seconds):
        def call(self, data):
            calls.append((name, len(self), data if name == "sample" else len(data["rewards"])))
            time.sleep(seconds)
        return call

    monkeypatch.setattr(ReplayBuffer, "add", known_cost("add", 0.01))
    monkeypatch.setattr(ReplayBuffer, "sample", known_cost("sample", 0.02))
    buffer = {f.name: f.value for f in suite.buffer_scaling([1000, 4000], iterations=5)}
    for capacity in ("1,000", "4,000"):
        assert 30_000 <= buffer[f"{capacity} rows"] < 30_000 * 5
    # per capacity: the fill, then 2 warm-up and 5 timed steps of one insert and one sample
    steps = [("add", 0, 1), ("sample", 0, 1024)] * (2 + 5)
    assert calls == [("add", 0, 1000), *steps, ("add", 0, 4000), *steps]


def test_world_model_section_times_one_epoch_on_the_rows(monkeypatch):
    seen = []

    def known_epoch(model, data, config, generator):
        seen.append((len(data["observations"]), config.max_epochs))
        time.sleep(0.3)

    monkeypatch.setattr(suite, "train_world_model", known_epoch)
    epoch = {f.name: f.value for f in suite.world_model_epoch(rows=600)}
    assert seen == [(600, 1)]
    assert epoch["one epoch"] == pytest.approx(0.3, rel=0.3)
    assert epoch["throughput"] == pytest.approx(2000, rel=0.3)


def test_peak_memory_sees_an_allocation():
    """In a fresh process, as the benchmark measures it (memory this process freed and kept
    would otherwise be reused without raising the peak)."""
    added = in_fresh_process(peak_rss_added_mb, functools.partial(torch.ones, 50_000_000))
    assert 180 < added < 400  # 200 MB


def test_table_and_json(tmp_path):
    figures = [suite.Figure("S", "a", 1234.5, "x/s", "≥ 2"), suite.Figure("S", "b", 0.5, "x")]
    text = benchmark_cli.table(figures)
    assert "S" in text and "1,234" in text and "(target ≥ 2)" in text
    out = tmp_path / "b.json"
    benchmark_cli.write_json(out, figures)
    saved = json.loads(out.read_text())
    assert [f["name"] for f in saved["figures"]] == ["a", "b"] and saved["torch"]
    assert saved["cpu"] and "commit" in saved and "threads" in saved  # where it ran
    assert not list(tmp_path.glob(".*tmp"))


def test_loop_clock_times_env_steps_and_direct_updates_apart():
    """Known costs: an env step of 30 ms, a direct update of 10 ms; the steps that hosted a
    direct measurement are left out of the loop's timing."""
    clock = suite.LoopVersusDirect(first=5, last=20, iterations=6, points=3)
    module = types.SimpleNamespace(env_step=0, agent=KnownWork(0.05), sample_batch=dict)
    for step in range(25):
        module.env_step = step
        clock.on_train_batch_start(None, module, None, step)
        time.sleep(0.1)
    hosts = sorted(clock.points)
    assert len(hosts) == 3 and all(5 < p < 20 for p in hosts)
    assert len(clock.step_seconds) == (20 - 5 + 1) - len(hosts)
    assert 0.1 <= statistics.median(clock.step_seconds) < 0.2
    assert len(clock.update_seconds) == 6
    assert 0.05 <= statistics.median(clock.update_seconds) < 0.1
    direct = clock._copy[0]  # the agent's copy the direct updates ran on
    assert direct is not module.agent and direct.calls == 3 * 2 + 2  # 2 per point, 2 warm-up


def test_lightning_section_times_a_real_fit(monkeypatch):
    clocks = []

    class Recorded(suite.LoopVersusDirect):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            clocks.append(self)

    monkeypatch.setattr(suite, "LoopVersusDirect", Recorded)
    figures = {f.name: f.value for f in suite.lightning_loop(online_steps=8, iterations=2)}
    (clock,) = clocks
    # the window is online steps 1025..1030 of the real fit, minus the hosts of direct updates
    assert len(clock.step_seconds) == 6 - len(clock.points & set(range(1025, 1031)))
    assert figures["fit, per online env step"] == pytest.approx(
        1e3 * statistics.mean(clock.step_seconds))
    assert len(clock.update_seconds) == len(clock.points) * clock.per_point


def test_suite_runs_the_sections_asked_in_order(monkeypatch):
    called = []
    functions = {"sac": "sac_update", "cql": "cql_update", "peer": "peer_update",
                 "loop": "lightning_loop", "rollouts": "rollouts",
                 "world-model": "world_model_epoch", "memory": "memory",
                 "buffer": "buffer_scaling", "cell": "study_cell"}
    assert set(functions) == set(suite.SECTIONS)
    for function in functions.values():
        monkeypatch.setattr(suite, function,
                            lambda *args, function=function, **kwargs: called.append(function)
                            or [])
    suite.run_suite(quick=True, sections=("buffer", "cql"))
    assert called == ["buffer_scaling", "cql_update"]
