"""The persistent compile cache: `compile: auto` compiles a shorter run when its update's shape
is already compiled in the cache, or when a study says how many runs will share it; a run
marks its shape once its compiled update has run; a study's cells share its cache."""

from pathlib import Path

import pytest
import torch
from conftest import fit_module

from wsrl_wm import compile_cache
from wsrl_wm.ablation import Sweep, run_sweep
from wsrl_wm.ablation.cell import CellOutcome
from wsrl_wm.ablation.runners import Runner
from wsrl_wm.agents import CQL, SAC, CQLConfig, SACConfig, compilation
from wsrl_wm.compile_cache import (
    RUNS,
    WARM_MIN_UPDATES,
    CompiledUpdates,
    auto_compiles,
    expecting,
    mark_compiled,
    update_key,
)
from wsrl_wm.errors import WsrlError
from wsrl_wm.lightning import FinetuneModule

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {phase: str(ROOT / "configs" / "smoke" / f"{phase}.yaml")
         for phase in ("pretrain", "finetune")}
SHAPES = dict(num_critics=2, critic_hidden=(8, 8), actor_hidden=(8, 8), utd=2)
COLD = compilation.AUTO_MIN_UPDATES


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test compiles into its own cache, with no run count set."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(RUNS, raising=False)


@pytest.fixture(autouse=True)
def random_streams_left_as_found():
    """These tests seed and draw from torch's global generator; the tests after them see it
    as if these had not run (some of those depend on its state)."""
    with torch.random.fork_rng():
        yield


def test_auto_compiles_a_cached_shape_from_fewer_updates():
    key = update_key(SAC(3, 2, SACConfig(**SHAPES)), 256)
    with expecting(key):
        assert not auto_compiles(COLD - 1, COLD) and auto_compiles(COLD, COLD)
        assert not auto_compiles(WARM_MIN_UPDATES, COLD)
        mark_compiled(key)
        assert auto_compiles(WARM_MIN_UPDATES, COLD)
        assert not auto_compiles(WARM_MIN_UPDATES - 1, COLD)
    assert not auto_compiles(WARM_MIN_UPDATES, COLD)  # no shape expected: the cold rule


def test_runs_sharing_the_cache_count_towards_the_cold_rule(monkeypatch):
    monkeypatch.setenv(RUNS, "4")
    assert auto_compiles(COLD // 4, COLD) and not auto_compiles(COLD // 4 - 1, COLD)
    monkeypatch.setenv(RUNS, "0")
    with pytest.raises(WsrlError, match="positive integer"):
        auto_compiles(COLD, COLD)


def test_the_key_names_what_the_compiled_graph_depends_on():
    key = update_key(SAC(3, 2, SACConfig(**SHAPES, compile="off")), 256)
    assert update_key(SAC(3, 2, SACConfig(**SHAPES, compile="on")), 256) == key
    assert update_key(SAC(3, 2, SACConfig(**SHAPES)), 128) != key
    assert update_key(SAC(4, 2, SACConfig(**SHAPES)), 256) != key
    assert update_key(SAC(3, 2, SACConfig(**{**SHAPES, "num_critics": 3})), 256) != key
    assert update_key(CQL(3, 2, CQLConfig(**SHAPES)), 256) != key


def test_a_compiled_fine_tune_marks_its_update_once_it_ran(pretrained, tmp_path, monkeypatch):
    """With dynamo's eager backend (inductor's compile would take minutes here)."""
    monkeypatch.setattr(compilation, "BACKEND", "eager")
    module = FinetuneModule(pretrained, warmup_steps=5, online_steps=2, batch_size=32,
                            compile="on", eval_interval=10, eval_episodes=1)
    assert not compile_cache.is_cached(module.compiled_updates.key)
    fit_module(module, tmp_path / "run")
    assert module.agent.fused_update is not None
    assert compile_cache.is_cached(module.compiled_updates.key)


def test_an_eager_or_failed_compile_marks_nothing():
    agent = SAC(3, 2, SACConfig(**SHAPES, compile="off"))
    updates = CompiledUpdates(agent, 32, updates=10**6)
    updates.ran()
    assert not compile_cache.is_cached(updates.key)


def test_finetune_auto_compiles_when_its_update_is_cached(pretrained, monkeypatch):
    monkeypatch.setattr(compilation, "why_compile_unavailable", lambda: None)

    def module(batch_size: int) -> FinetuneModule:
        return FinetuneModule(pretrained, warmup_steps=1, online_steps=WARM_MIN_UPDATES,
                              batch_size=batch_size, compile="auto")

    assert not module(32).agent.updater.compiled  # too short to pay a cold compile
    mark_compiled(module(32).compiled_updates.key)
    assert module(32).agent.updater.compiled
    assert not module(64).agent.updater.compiled  # another shape: not cached


class Recording(Runner):
    """Records each phase's environment; runs nothing (pretrainings pass, fine-tunings fail)."""

    def __init__(self):
        self.envs = []

    def run(self, cells, env, dip_window):
        self.envs.append(env)
        for cell in cells:
            passed = cell.phase == "pretrain"
            yield CellOutcome(cell, passed, record={"checkpoint": "x"} if passed else None,
                              error="" if passed else "not run here")


def test_a_sweep_gives_its_cells_its_cache_and_counts_the_fine_tunings(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    runner = Recording()
    sweep = Sweep(SMOKE["pretrain"], SMOKE["finetune"], "hopper-medium-v2", str(tmp_path / "out"),
                  ratios=(0.0, 0.5), seeds=(0, 1, 2))
    run_sweep(sweep, runner, wandb_mode="disabled", log=lambda _: None)
    cache = str((tmp_path / "out" / "compile-cache").resolve())
    assert [env["TORCHINDUCTOR_CACHE_DIR"] for env in runner.envs] == [cache, cache]
    assert [env[RUNS] for env in runner.envs] == ["1", "6"]
