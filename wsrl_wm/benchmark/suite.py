"""The benchmark sections. The contenders of a section are timed in interleaved blocks in this
process, so their ratios compare like with like on whatever machine runs them; peak memory and
the glibc-allocator rate are measured in fresh processes (that is what they measure)."""

import copy
import dataclasses
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback

from wsrl_wm.agents import CQL, SAC, CQLConfig, SACConfig
from wsrl_wm.agents.compilation import compile_available
from wsrl_wm.allocator import keep_freed_memory
from wsrl_wm.benchmark.measure import (
    flops,
    in_fresh_process,
    interleaved_per_second,
    matmul_probe,
    peak_matmul_flops,
    peak_rss_added_mb,
    per_second,
)
from wsrl_wm.benchmark.peers import D3RLPY_VERSION, d3rlpy_available, d3rlpy_calql_update
from wsrl_wm.benchmark.reference import ReferenceCQL, ReferenceSAC, every_elite_step
from wsrl_wm.collect import collect
from wsrl_wm.data import ReplayBuffer
from wsrl_wm.envs import termination_fn
from wsrl_wm.lightning import FinetuneModule, PretrainModule
from wsrl_wm.lightning.trainer_setup import default_callbacks, default_loggers
from wsrl_wm.world_model import WorldModel, WorldModelConfig, branched_rollout
from wsrl_wm.world_model.train import train_world_model

ENV = "HalfCheetah-v5"  # obs 17, act 6: the locomotion sizes
OBS_DIM, ACT_DIM = 17, 6
ROLLOUT_STARTS = 100_000  # the rollout batch the throughput target is set at


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    target: str = ""  # the project's target for this figure, if it has one


def random_batch(size: int, device: str = "cpu", obs_dim: int = OBS_DIM,
                 act_dim: int = ACT_DIM) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {"observations": torch.randn(size, obs_dim, generator=g),
             "actions": torch.rand(size, act_dim, generator=g) * 2 - 1,
             "rewards": torch.randn(size, generator=g),
             "next_observations": torch.randn(size, obs_dim, generator=g),
             "terminals": torch.zeros(size), "mc_returns": torch.randn(size, generator=g)}
    return {key: value.to(device) for key, value in batch.items()}


def update_section(section: str, agent: SAC, reference: ReferenceSAC, batch: dict,
                   iterations: int, compiled: bool, targets: tuple[str, str] = ("", ""),
                   others: dict[str, Callable[[], object]] | None = None) -> list[Figure]:
    """Updates/s of `agent` (eager and, if asked, compiled), of `reference` and of any
    `others` on the same batch, and the matmul roofline, all timed in interleaved blocks; the
    best of ours against the reference and against the roofline."""
    optimizers = agent.make_optimizers()
    update_flops = flops(lambda: agent.update(batch, optimizers))
    probe, probe_flops = matmul_probe(batch["observations"].device.type)
    ours = our_updates(agent, batch, iterations, compiled)
    works = {"reference": lambda: reference.update(batch), **ours, **(others or {})}
    rates = interleaved_per_second({**works, "roofline": probe}, iterations)
    peak = probe_flops * rates.pop("roofline")
    figures = [Figure(section, name, rate, "updates/s") for name, rate in rates.items()]
    best = max(rates[name] for name in ours)
    return figures + [
        Figure(section, "GFLOP per update", update_flops / 1e9, "GFLOP"),
        Figure(section, "matmul roofline, same blocks", peak / 1e9, "GFLOP/s"),
        Figure(section, "best / reference", best / rates["reference"], "x", targets[0]),
        Figure(section, "best / matmul roofline", update_flops * best / peak, "fraction",
               targets[1]),
    ]


def our_updates(agent: SAC, batch: dict, iterations: int, compiled: bool
                ) -> dict[str, Callable[[], object]]:
    """Calls that run one update of `agent` eager and, if asked, of a compiled copy of it,
    each with its own optimisers."""
    optimizers = agent.make_optimizers()
    works = {"wsrl-wm eager": lambda: agent.update(batch, optimizers)}
    if compiled:
        fast = copy.deepcopy(agent)
        fast.config.compile = "on"
        fast.compile_losses(updates=iterations)
        fast_optimizers = fast.make_optimizers()
        works["wsrl-wm compiled"] = lambda: fast.update(batch, fast_optimizers)
    return works


def bf16_mixed_update(agent: SAC, batch: dict) -> Callable[[], object]:
    """One eager update of a copy of `agent` under autocast to bfloat16, what Lightning's
    `precision: bf16-mixed` runs: matmuls in bfloat16, parameters, optimiser and losses in
    float32."""
    mixed, device = copy.deepcopy(agent), batch["observations"].device.type
    optimizers = mixed.make_optimizers()

    def update():
        with torch.autocast(device, dtype=torch.bfloat16):
            return mixed.update(batch, optimizers)
    return update


def sac_update(iterations: int, compiled: bool, batch_size: int = 1024,
               config: SACConfig | None = None, device: str = "cpu") -> list[Figure]:
    """WSRL's fine-tune update: 10 LayerNorm critics 2×256, UTD 4, batch 1024."""
    config = config or SACConfig(utd=4, compile="off")
    torch.manual_seed(0)
    agent = SAC(OBS_DIM, ACT_DIM, config).to(device)
    reference = ReferenceSAC(OBS_DIM, ACT_DIM, config, device)
    section = f"SAC update (fine-tune, {device})"
    figures = update_section(section, agent, reference, random_batch(batch_size, device),
                             iterations, compiled, ("≥ 2", "≥ 0.7"))
    if device != "cpu":
        return figures
    system = in_fresh_process(eager_sac_rate, iterations, batch_size, config)
    return [*figures, Figure(section, "wsrl-wm eager, glibc's default allocator", system,
                             "updates/s")]


def eager_sac_rate(iterations: int, batch_size: int, config: SACConfig) -> float:
    """Updates/s of the eager update (run in a fresh process: allocator left as it is)."""
    torch.manual_seed(0)
    agent, batch = SAC(OBS_DIM, ACT_DIM, config), random_batch(batch_size)
    optimizers = agent.make_optimizers()
    return per_second(lambda: agent.update(batch, optimizers), iterations)


EVERY_CRITIC = "CQL term on every critic"


def cql_update(iterations: int, compiled: bool, batch_size: int = 256,
               config: CQLConfig | None = None, device: str = "cpu") -> list[Figure]:
    """WSRL's pretraining update: CQL α = 5 with 10 sampled actions, same critics, batch 256,
    the CQL term on a drawn 2 of the 10 critics (both sides: "best / reference" compares the
    same work). Also timed, both with the CQL term on every critic (the work before the
    subset was adopted, and what common implementations do): ours and the reference, whose
    ratio to our best counts the subset's saving too."""
    config = config or CQLConfig(compile="off")
    torch.manual_seed(0)
    agent = CQL(OBS_DIM, ACT_DIM, config).to(device)
    reference = ReferenceCQL(OBS_DIM, ACT_DIM, config, device)
    batch = random_batch(batch_size, device)
    every = copy.deepcopy(agent)
    every.config.cql_critic_subset = False
    every_optimizers = every.make_optimizers()
    every_reference = ReferenceCQL(OBS_DIM, ACT_DIM, every.config, device)
    others = {f"wsrl-wm eager, {EVERY_CRITIC}": lambda: every.update(batch, every_optimizers),
              f"reference, {EVERY_CRITIC}": lambda: every_reference.update(batch)}
    section = f"CQL update (pretrain, {device})"
    figures = update_section(section, agent, reference, batch, iterations, compiled,
                             ("≥ 2", ""), others)
    rate = {figure.name: figure.value for figure in figures}
    best = rate["best / reference"] * rate["reference"]
    return [*figures, Figure(section, f"best / reference, {EVERY_CRITIC}",
                             best / rate[f"reference, {EVERY_CRITIC}"], "x")]


# The peer comparison's shapes: d3rlpy's CalQL defaults (2 critics 2×256 without LayerNorm,
# batch 256, 10 sampled actions, α = 5) and WSRL's (10 LayerNorm critics); both without the
# max-target backup, which d3rlpy's CalQL does not do (same work on both sides).
PEER_SHAPES = {"d3rlpy's shapes": CQLConfig(num_critics=2, layer_norm=False, calql=True,
                                            cql_max_target_backup=False, compile="off"),
               "WSRL's shapes": CQLConfig(calql=True, cql_max_target_backup=False,
                                          compile="off")}


BF16 = "wsrl-wm eager bf16-mixed"


def peer_update(iterations: int, compiled: bool, device: str = "cpu") -> list[Figure]:
    """Our Cal-QL update against d3rlpy's CalQL on the same batch, timed in interleaved blocks,
    at each of PEER_SHAPES; a note instead when d3rlpy is not installed."""
    title = f"Cal-QL update vs d3rlpy {D3RLPY_VERSION}"
    if not d3rlpy_available():
        return [Figure(f"{title} ({device})", "skipped: d3rlpy is not installed "
                       "(make .venv/.installed: the Makefile's PEERS)", math.nan, "")]
    figures = []
    for shape, config in PEER_SHAPES.items():
        config = copy.deepcopy(config)
        torch.manual_seed(0)
        agent, batch = CQL(OBS_DIM, ACT_DIM, config).to(device), random_batch(256, device)
        ours = our_updates(agent, batch, iterations, compiled)
        peer = d3rlpy_calql_update(config, OBS_DIM, ACT_DIM, batch, device)
        mixed = bf16_mixed_update(agent, batch)
        rates = interleaved_per_second({"d3rlpy CalQL": peer, **ours, BF16: mixed},
                                       iterations)
        section = f"{title}, {shape} ({device})"
        best = max(rates[name] for name in ours)  # float32: the peer's precision
        figures += [*(Figure(section, name, rate, "updates/s") for name, rate in rates.items()),
                    Figure(section, "best / d3rlpy", best / rates["d3rlpy CalQL"], "x", "≥ 2"),
                    Figure(section, "bf16-mixed / d3rlpy", rates[BF16] / rates["d3rlpy CalQL"],
                           "x")]
    return figures


class LoopVersusDirect(Callback):
    """Times the online env steps in [first, last] of a fit and, at ten points spread over that
    window, the agent's update called directly (on one copy of the agent, taken at the first
    point, with batches from the run's buffer). The VM's speed drifts by 10–30 % within a
    minute, so both are sampled across the same stretch of the run; the steps that hosted a
    direct measurement are left out of the loop's timing."""

    def __init__(self, first: int, last: int, iterations: int, points: int = 10):
        self.first, self.last = first, last
        self.points = {first + (last - first) * (k + 1) // (points + 1) for k in range(points)}
        self.per_point = max(1, iterations // len(self.points))
        self.step_seconds: list[float] = []
        self.update_seconds: list[float] = []
        self._start: float | None = None
        self._copy: tuple | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._start is not None and module.env_step - 1 not in self.points:
            self.step_seconds.append(now - self._start)
        self._start = None
        if module.env_step in self.points:
            self.time_direct_updates(module)
        if self.first <= module.env_step <= self.last:
            self._start = time.perf_counter()

    def time_direct_updates(self, module) -> None:
        warmup = 0
        if self._copy is None:
            agent = copy.deepcopy(module.agent)
            self._copy, warmup = (agent, agent.make_optimizers()), 2
        agent, optimizers = self._copy
        rate = per_second(lambda: agent.update(module.sample_batch(), optimizers),
                          self.per_point, warmup)
        self.update_seconds += [1 / rate] * self.per_point


def lightning_loop(online_steps: int, iterations: int) -> list[Figure]:
    """Wall time per online env step of a real fine-tuning fit (env step, buffer, sampling,
    Lightning hooks, the default loggers and checkpoint callbacks, logging every 1000 env
    steps) against calling the same agent's update directly, sampled across the same stretch
    of the run. The switch evaluation and the final one fall outside the timed window."""
    warmup = 1024
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        collect(ENV, "random", 2000, 1, str(root / "data.hdf5"))
        pretrain = PretrainModule(ENV, str(root / "data.hdf5"), CQLConfig(compile="off"), steps=1,
                                  eval_interval=1, eval_episodes=1)
        fit(pretrain, root / "pretrain", [])
        module = FinetuneModule(str(root / "pretrain" / "checkpoints" / "last.ckpt"),
                                warmup_steps=warmup, online_steps=online_steps,
                                eval_interval=10**9, eval_episodes=1, compile="off")
        clock = LoopVersusDirect(warmup + 1, warmup + online_steps - 2, iterations)
        fit(module, root / "finetune", [clock])
    per_step = statistics.mean(clock.step_seconds)
    per_update = statistics.mean(clock.update_seconds)
    section = "Lightning fine-tune loop"
    return [Figure(section, "fit, per online env step", per_step * 1e3, "ms"),
            Figure(section, "direct update, same agent, same buffer", per_update * 1e3, "ms"),
            Figure(section, "loop overhead / update", per_step / per_update - 1, "fraction",
                   "≤ 0.1")]


def fit(module, root: Path, callbacks: list) -> None:
    """A Trainer set up as `wsrl-wm fit` sets it up (loggers, callbacks), without the progress
    bar (its output would bury the table)."""
    trainer = Trainer(max_epochs=1, logger=default_loggers(root, None, "wsrl-wm-benchmark"),
                      callbacks=[*callbacks, *default_callbacks(root, progress_bar=False)],
                      default_root_dir=root,
                      enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(module)


def rollouts(iterations: int) -> list[Figure]:
    """Imagined transitions/s of one horizon-1 round from ROLLOUT_STARTS states with MBPO's
    default model (7 members, 5 elites, 4×200) and a 2×256 actor, against every elite on every
    row."""
    world_model, actor, obs = _rollout_models()
    terminated = termination_fn(ENV)
    ours = ROLLOUT_STARTS * per_second(
        lambda: branched_rollout(world_model, actor, obs, 1, terminated), iterations)
    reference = ROLLOUT_STARTS * per_second(lambda: every_elite_step(world_model, actor, obs),
                                            iterations)
    section = f"Rollouts (batch {ROLLOUT_STARTS}, H = 1)"
    return [Figure(section, "every elite per row", reference, "transitions/s"),
            Figure(section, "wsrl-wm", ours, "transitions/s", "≥ 100k"),
            Figure(section, "wsrl-wm / every elite", ours / reference, "x")]


def world_model_epoch(rows: int) -> list[Figure]:
    """One training epoch (bootstrap batches of 256 per member, then the holdout pass) of the
    default ensemble on `rows` transitions."""
    torch.manual_seed(0)
    data = random_batch(rows)
    model = WorldModel(OBS_DIM, ACT_DIM, WorldModelConfig())
    config = dataclasses.replace(model.config, max_epochs=1)
    start = time.perf_counter()
    train_world_model(model, data, config, torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    section = f"World-model training ({rows} rows)"
    return [Figure(section, "one epoch", seconds, "s"),
            Figure(section, "throughput", rows / seconds, "rows/s")]


def memory() -> list[Figure]:
    """Peak memory each task adds to a fresh process (set up as the CLI sets itself up)."""
    section = "Peak memory (added to a fresh process)"
    return [Figure(section, name, in_fresh_process(peak_memory_of, name), "MB")
            for name in MEMORY_TASKS]


def peak_memory_of(name: str) -> float:
    keep_freed_memory()
    return peak_rss_added_mb(MEMORY_TASKS[name])


def _sac_update() -> None:
    eager_sac_rate(2, 1024, SACConfig(utd=4, compile="off"))


def _reference_update() -> None:
    reference, batch = ReferenceSAC(OBS_DIM, ACT_DIM, SACConfig(utd=4)), random_batch(1024)
    per_second(lambda: reference.update(batch), 2)


def _rollout_models() -> tuple[WorldModel, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return (WorldModel(OBS_DIM, ACT_DIM, WorldModelConfig()), SAC(OBS_DIM, ACT_DIM).actor,
            torch.randn(ROLLOUT_STARTS, OBS_DIM))


def _rollout() -> None:
    world_model, actor, obs = _rollout_models()
    branched_rollout(world_model, actor, obs, 1, termination_fn(ENV))


def _every_elite_rollout() -> None:
    every_elite_step(*_rollout_models())


MEMORY_TASKS = {"SAC update (batch 1024)": _sac_update,
                "reference SAC update": _reference_update,
                f"rollout, {ROLLOUT_STARTS} starts": _rollout,
                "every-elite rollout": _every_elite_rollout}


def buffer_scaling(capacities: list[int], iterations: int) -> list[Figure]:
    """Cost of one env step's buffer work (insert one transition, sample a 1024 batch) in a full
    buffer of each capacity: it should not grow with the buffer."""
    section, costs = "Replay buffer: insert 1 + sample 1024", []
    for capacity in capacities:
        buffer = ReplayBuffer.for_transitions(capacity, OBS_DIM, ACT_DIM)
        buffer.add({k: v for k, v in random_batch(capacity).items() if k != "mc_returns"})
        row = {k: v[:1] for k, v in random_batch(1).items() if k != "mc_returns"}

        def step(buffer=buffer, row=row):
            buffer.add(row)
            buffer.sample(1024)
        costs.append(1e6 / per_second(step, iterations))
    return [*(Figure(section, f"{capacity:,} rows", cost, "µs/env step")
              for capacity, cost in zip(capacities, costs, strict=True)),
            Figure(section, "largest / smallest", costs[-1] / costs[0], "x", "≈ 1")]


def study_cell(quick: bool, compiled: bool) -> list[Figure]:
    """The PointMaze study cell end to end (wsrl_wm/benchmark/cell.py, which builds on this
    module's functions)."""
    from wsrl_wm.benchmark.cell import study_cell as section

    return section(quick, compiled)


SECTIONS = ("sac", "cql", "peer", "loop", "rollouts", "world-model", "memory", "buffer", "cell")


def run_suite(quick: bool = False, device: str = "cpu",
              sections: tuple[str, ...] = SECTIONS) -> list[Figure]:
    """The `sections` (all by default); `quick` shrinks the iteration counts and skips
    torch.compile. `device` runs the three update sections there (the others measure CPU-side
    work). The process is set up as `wsrl-wm` sets itself up (allocator)."""
    allocator = keep_freed_memory()
    compiled = not quick and compile_available()
    peak = peak_matmul_flops(device)
    runs = {
        "sac": lambda: sac_update(5 if quick else 30, compiled, device=device),
        "cql": lambda: cql_update(3 if quick else 12, compiled, device=device),
        "peer": lambda: peer_update(3 if quick else 12, compiled, device=device),
        "loop": lambda: lightning_loop(40 if quick else 1100, 5 if quick else 30),
        "rollouts": lambda: rollouts(2 if quick else 10),
        "world-model": lambda: world_model_epoch(10_000 if quick else 100_000),
        "memory": memory,
        "buffer": lambda: buffer_scaling(
            [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000],
            200 if quick else 1000),
        "cell": lambda: study_cell(quick, compiled),
    }
    figures = [Figure("Machine", f"matmul roofline ([10,256,256] bmm, {device})", peak / 1e9,
                      "GFLOP/s"),
               Figure("Machine", "torch threads", torch.get_num_threads(), ""),
               Figure("Machine", "freed memory kept (wsrl_wm.allocator)", float(allocator), "")]
    for name in sections:
        figures += runs[name]()
    return figures
