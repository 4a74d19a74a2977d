"""The benchmark runs and compares like with like (no timing assertions: those live in its
printed ratios)."""

import importlib.util
from pathlib import Path

import torch

from wsrl_wm.agents import SACConfig

SPEC = importlib.util.spec_from_file_location(
    "benchmark", Path(__file__).resolve().parents[1] / "experiments" / "benchmark.py")
benchmark = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(benchmark)


def test_reference_has_the_same_shapes_and_updates_its_networks():
    config = SACConfig(num_critics=4, critic_hidden=(16, 16), utd=2)
    reference = benchmark.ReferenceSAC(5, 2, config)
    assert len(reference.critics) == 4
    assert sum(p.numel() for p in reference.critics.parameters()) == sum(
        p.numel() for p in benchmark.SAC(5, 2, config).critic.parameters())
    before = [p.clone() for p in reference.critics.parameters()]
    batch = {"observations": torch.randn(8, 5), "actions": torch.rand(8, 2) * 2 - 1,
             "rewards": torch.randn(8), "next_observations": torch.randn(8, 5),
             "terminals": torch.zeros(8)}
    reference.update(batch)
    assert all(not torch.equal(a, b) for a, b in zip(before, reference.critics.parameters(),
                                                       strict=True))


def test_run_reports_both_throughputs_and_their_ratio():
    config = SACConfig(num_critics=2, critic_hidden=(8,), actor_hidden=(8,), utd=2)
    result = benchmark.run(obs_dim=3, act_dim=1, batch_size=8, iterations=1, config=config)
    assert result["wsrl_wm_updates_per_s"] > 0 and result["reference_updates_per_s"] > 0
    assert result["speedup"] == (result["wsrl_wm_updates_per_s"]
                                 / result["reference_updates_per_s"])
