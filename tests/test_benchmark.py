"""The benchmark measures what it says, against a reference that does the same work (no timing
assertions: figures are ratios printed by experiments/benchmark.py)."""

import functools
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from wsrl_wm.agents import SAC, CQLConfig, SACConfig
from wsrl_wm.benchmark import suite
from wsrl_wm.benchmark.measure import flops, in_fresh_process, peak_rss_added_mb
from wsrl_wm.benchmark.reference import ReferenceCQL, ReferenceSAC

SPEC = importlib.util.spec_from_file_location(
    "benchmark_cli", Path(__file__).resolve().parents[1] / "experiments" / "benchmark.py")
benchmark_cli = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(benchmark_cli)

TINY = dict(num_critics=4, critic_hidden=(16, 16), actor_hidden=(16, 16), utd=2, compile="off")


@pytest.mark.parametrize("reference_class, config", [
    (ReferenceSAC, SACConfig(**TINY)), (ReferenceCQL, CQLConfig(**TINY, cql_n_actions=3))])
def test_reference_has_our_shapes_flops_and_trains_every_critic(reference_class, config):
    reference = reference_class(17, 6, config)
    ours = SAC(17, 6, config)
    assert sum(p.numel() for p in reference.critics.parameters()) == sum(
        p.numel() for p in ours.critic.parameters())
    batch = suite.random_batch(8)
    before = [p.clone() for p in reference.critics.parameters()]
    reference.update(batch)
    assert all(not torch.equal(a, b) for a, b in zip(before, reference.critics.parameters(),
                                                       strict=True))


def test_reference_critic_step_does_exactly_our_matmul_work():
    """Same Bellman update, same FLOPs: the comparison measures implementation, not work."""
    config = SACConfig(**TINY)
    ours, reference = SAC(17, 6, config), ReferenceSAC(17, 6, config)
    part = {k: v[:16] for k, v in suite.random_batch(32).items()}
    optimizers = ours.make_optimizers()
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")
    # Our one-output heads are a product and a sum, which torch's counter (matmuls only) does
    # not see: 2·rows·hidden per critic in the forward pass, the two backward products and the
    # target critics' forward pass.
    head = 2 * 16 * config.critic_hidden[-1] * (3 * config.num_critics + config.target_subset)
    assert flops(lambda: ours.critic_step(part, optimizers["critic"])) + head == flops(
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


def test_update_section_reports_both_rates_and_their_ratio():
    figures = suite.sac_update(iterations=1, compiled=False, batch_size=8,
                               config=SACConfig(**TINY))
    values = {f.name: f.value for f in figures}
    assert values["reference"] > 0 and values["wsrl-wm eager"] > 0
    assert values["best / reference"] == values["wsrl-wm eager"] / values["reference"]
    achieved = values["GFLOP per update"] * values["wsrl-wm eager"]
    assert values["best / matmul roofline"] == pytest.approx(
        achieved / values["matmul roofline, same blocks"])
    assert values["wsrl-wm eager, glibc's default allocator"] > 0
    assert {f.target for f in figures} >= {"≥ 2", "≥ 0.7"}


def test_buffer_and_world_model_sections_measure_real_work():
    buffer = {f.name: f.value for f in suite.buffer_scaling([1000, 4000], iterations=5)}
    assert buffer["largest / smallest"] == buffer["4,000 rows"] / buffer["1,000 rows"]
    epoch = {f.name: f.value for f in suite.world_model_epoch(rows=600)}
    assert epoch["one epoch"] > 0 and epoch["throughput"] == pytest.approx(600 / epoch["one epoch"])


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
    assert not list(tmp_path.glob(".*tmp"))


def test_lightning_section_times_a_real_fit_and_the_direct_update():
    figures = {f.name: f.value for f in suite.lightning_loop(online_steps=8, iterations=2)}
    assert figures["fit, per online env step"] > 0
    assert figures["direct update, same agent, same buffer"] > 0
    assert figures["loop overhead / update"] == pytest.approx(
        figures["fit, per online env step"] / figures["direct update, same agent, same buffer"]
        - 1)
