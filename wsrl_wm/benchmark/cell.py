"""The PointMaze study cell end to end (configs/study/pointmaze/finetune.yaml plus the dense
evaluations of its first 1000 online steps): "before" — eager updates, evaluation episodes one
after another (`one_at_a_time_evaluate`) — against "after" — `compile: auto` on a warm compile
cache, evaluation episodes stepped together. Each cell runs in a fresh process, as a study's
cells do, the two alternated; also timed: the first compiled update with a cold and a warm
cache (fresh processes) and the update's steady rate eager and compiled (interleaved)."""

import os
import statistics
import tempfile
import time
from pathlib import Path

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI

from wsrl_wm.allocator import keep_freed_memory
from wsrl_wm.benchmark.measure import in_fresh_process, interleaved_per_second
from wsrl_wm.benchmark.reference import one_at_a_time_evaluate
from wsrl_wm.benchmark.suite import Figure, fit, our_updates, random_batch
from wsrl_wm.compile_cache import CACHE_DIR
from wsrl_wm.online import evaluator
from wsrl_wm.pointmaze_collect import collect_pointmaze

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "study" / "pointmaze"
ENV = "PointMaze_Medium-v3"
DENSE_EVAL_STEPS = 1000
SECTION = "Study cell (PointMaze fine-tune, configs/study/pointmaze, dense evaluations)"


def config_module(config: Path, *args: str) -> LightningModule:
    """The module `wsrl-wm fit --config config *args` builds."""
    cli = LightningCLI(LightningModule, subclass_mode_model=True, run=False,
                       args=["--config", str(config), *args, "--trainer.logger", "false"],
                       trainer_defaults={"max_epochs": 1}, save_config_callback=None)
    return cli.model


def pretrained_pointmaze(root: Path, rows: int, steps: int) -> str:
    """The study's data (the noisy planner towards the evaluation goal) and pretraining, without
    the world model (r = 0 cells do not load it); returns the checkpoint."""
    data = root / "pointmaze.hdf5"
    collect_pointmaze(ENV, "noisy", rows, 0, str(data), goals="eval")
    module = config_module(CONFIGS / "pretrain.yaml", "--model.dataset", str(data),
                           "--model.steps", str(steps), "--model.world_model", "null")
    fit(module, root / "pretrain", [])
    return str(root / "pretrain" / "checkpoints" / "last.ckpt")


def cell_module(checkpoint: str, compile_mode: str, warmup: int | None = None,
                online: int | None = None) -> LightningModule:
    lengths = [] if warmup is None else ["--model.warmup_steps", str(warmup),
                                         "--model.online_steps", str(online)]
    return config_module(CONFIGS / "finetune.yaml", "--model.pretrained", checkpoint,
                         "--model.dense_eval_steps", str(DENSE_EVAL_STEPS),
                         "--model.compile", compile_mode, *lengths)


def update_batch(module) -> dict:
    """A batch of the cell's size and keys (an online buffer's: no MC returns)."""
    batch = random_batch(module.hparams.batch_size, obs_dim=module.obs_dim,
                         act_dim=module.act_dim)
    return {k: v for k, v in batch.items() if k != "mc_returns"}


def first_update_seconds(checkpoint: str, cache: str) -> float:
    """The cell's first compiled update, in this (fresh) process, compiling into `cache`; the
    update's shape is then marked there, as a compiled run marks it."""
    os.environ[CACHE_DIR] = cache
    module = cell_module(checkpoint, "on")
    batch, optimizers = update_batch(module), module.agent.make_optimizers()
    start = time.perf_counter()
    module.agent.update(batch, optimizers)
    seconds = time.perf_counter() - start
    module.compiled_updates.ran()
    return seconds


def timed_cell(checkpoint: str, root: str, after: bool, cache: str, warmup: int,
               online: int) -> dict:
    """One cell in this (fresh) process: seconds in updates, in evaluations and in the fit,
    whether its update ran compiled, and its evaluations."""
    keep_freed_memory()
    os.environ[CACHE_DIR] = cache
    if not after:
        evaluator.evaluate = one_at_a_time_evaluate
    module = cell_module(checkpoint, "auto" if after else "off", warmup, online)
    spent = {"updates": 0.0, "evaluation": 0.0}

    def timed(name, work):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return work(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return run

    module.agent.update = timed("updates", module.agent.update)
    module.run_evaluation = timed("evaluation", module.run_evaluation)
    start = time.perf_counter()
    fit(module, Path(root), [])
    return {**spent, "fit": time.perf_counter() - start,
            "compiled": module.agent.fused_update is not None,
            "evaluations": module.evaluations}


def update_rates(checkpoint: str, cache: str, iterations: int) -> list[Figure]:
    """Updates/s of the cell's agent eager and compiled (warm cache), interleaved."""
    previous = os.environ.get(CACHE_DIR)
    os.environ[CACHE_DIR] = cache
    try:
        module = cell_module(checkpoint, "off")
        rates = interleaved_per_second(
            our_updates(module.agent, update_batch(module), iterations, compiled=True),
            iterations)
    finally:
        if previous is None:
            del os.environ[CACHE_DIR]
        else:
            os.environ[CACHE_DIR] = previous
    eager, compiled = rates["wsrl-wm eager"], rates["wsrl-wm compiled"]
    return [Figure(SECTION, "update, eager", eager, "updates/s"),
            Figure(SECTION, "update, compiled", compiled, "updates/s"),
            Figure(SECTION, "compiled / eager", compiled / eager, "x")]


def study_cell(quick: bool, compiled: bool, rounds: int = 3) -> list[Figure]:
    """Before and after, alternated `rounds` times (the study's length, or 500 + 1000 steps
    from a shorter pretraining when `quick`); with `compiled`, the compile costs and rates
    first (they leave the warm cache the "after" cells use)."""
    warmup, online = (500, 1000) if quick else (None, None)
    rows, pretrain_steps = (20_000, 2000) if quick else (100_000, 8000)
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = str(root / "compile-cache")
        checkpoint = pretrained_pointmaze(root, rows, pretrain_steps)
        if compiled:
            cold = in_fresh_process(first_update_seconds, checkpoint, cache)
            warm = in_fresh_process(first_update_seconds, checkpoint, cache)
            figures += [Figure(SECTION, "first compiled update, cold cache", cold, "s"),
                        Figure(SECTION, "first compiled update, warm cache", warm, "s"),
                        *update_rates(checkpoint, cache, 30)]
        walls: dict[str, list[float]] = {"before": [], "after": []}
        last: dict[str, dict] = {}
        for round_ in range(rounds):
            for path in walls:
                start = time.perf_counter()
                last[path] = in_fresh_process(timed_cell, checkpoint,
                                              str(root / f"{path}-{round_}"),
                                              path == "after", cache, warmup, online)
                walls[path].append(time.perf_counter() - start)
    ratios = [b / a for b, a in zip(walls["before"], walls["after"], strict=True)]
    figures += [
        Figure(SECTION, "cell before (eager, one episode at a time), process wall",
               statistics.median(walls["before"]), "s"),
        Figure(SECTION, "cell after (compile: auto; episodes together), process wall",
               statistics.median(walls["after"]), "s"),
        Figure(SECTION, "before / after, median of the rounds", statistics.median(ratios), "x",
               "≥ 3"),
        Figure(SECTION, "after: update ran compiled", float(last["after"]["compiled"]), ""),
    ]
    for path in walls:
        figures += [Figure(SECTION, f"{path}, last round: {part}", last[path][part], "s")
                    for part in ("updates", "evaluation", "fit")]
    if not last["after"]["compiled"]:  # the same arithmetic: the same curves
        same = last["after"]["evaluations"] == last["before"]["evaluations"]
        figures.append(Figure(SECTION, "after's evaluations identical to before's", float(same),
                              "", "1"))
    return figures
