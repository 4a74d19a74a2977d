"""Where the CQL / Cal-QL update's time goes: wall time per stage (the agent's methods, timed
by wrapping them) and torch's top operators, at WSRL's shapes (10 LayerNorm critics 2×256,
batch 256, 10 sampled actions) or, with --calql2, the classic Cal-QL shapes (2 critics, no
LayerNorm). With --compiled, the fused compiled update (one graph: operators only, no stages).
The breakdowns in docs/performance.md come from this script.

    OMP_NUM_THREADS=1 python experiments/profile_cql.py [--calql2] [--compiled] [--updates 6]
"""

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from wsrl_wm.agents import CQL, CQLConfig
from wsrl_wm.allocator import keep_freed_memory
from wsrl_wm.benchmark import suite

STAGES = {"td_target": "TD target (no grad)", "cql_gap": "CQL gap forward (with π samples)",
          "critic_loss": "critic loss forward (all of it)",
          "actor_loss": "actor loss (with its critic pass)", "update_target": "target lerp"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calql2", action="store_true", help="2 critics, no LayerNorm, Cal-QL")
    parser.add_argument("--compiled", action="store_true",
                        help="the fused compiled update (operators only: it is one graph)")
    parser.add_argument("--updates", type=int, default=6)
    args = parser.parse_args()
    keep_freed_memory()
    torch.manual_seed(0)
    shape = dict(num_critics=2, layer_norm=False, calql=True) if args.calql2 else {}
    agent = CQL(suite.OBS_DIM, suite.ACT_DIM,
                CQLConfig(compile="on" if args.compiled else "off", **shape))
    agent.compile_losses(args.updates)
    optimizers, batch = agent.make_optimizers(), suite.random_batch(256)
    for _ in range(3):
        agent.update(batch, optimizers)
    seconds: dict[str, float] = defaultdict(float)
    if not args.compiled:
        for name, label in STAGES.items():
            wrap(agent, name, label, seconds)
        wrap(optimizers["critic"], "step", "critic Adam", seconds)
    start = time.perf_counter()
    for _ in range(args.updates):
        agent.update(batch, optimizers)
    total = (time.perf_counter() - start) / args.updates
    print(f"update: {total * 1e3:.0f} ms ({torch.get_num_threads()} threads)")
    for label, value in seconds.items():
        share = value / args.updates
        print(f"  {label:<36} {share * 1e3:7.0f} ms  {share / total:4.0%}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        agent.update(batch, optimizers)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def wrap(owner, name: str, label: str, seconds: dict) -> None:
    method = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - start
    setattr(owner, name, timed)


if __name__ == "__main__":
    main()
