"""The eager CQL / Cal-QL update of another version of this code against this one, in one
process: interleaved blocks, each contender's median block rate (a shared machine's slow phases
then hit both alike). The other version is imported as `wsrl_wm_old`, from a copy made with

    mkdir -p /tmp/old && git archive <commit> wsrl_wm models | tar x -C /tmp/old
    cd /tmp/old && mv wsrl_wm wsrl_wm_old && mv models models_old && grep -rl 'wsrl_wm\\|models' \\
        wsrl_wm_old models_old | xargs sed -i -e 's/\\bwsrl_wm\\b/wsrl_wm_old/g' \\
        -e 's/from models\\b/from models_old/g' -e 's/import models\\b/import models_old/g'

    OMP_NUM_THREADS=1 python experiments/ab_cql.py --old /tmp/old [--rounds 3]
"""

import argparse
import sys

import torch

from wsrl_wm.agents import CQL, CQLConfig
from wsrl_wm.allocator import keep_freed_memory
from wsrl_wm.benchmark import suite
from wsrl_wm.benchmark.measure import interleaved_per_second

SHAPES = {"WSRL (10 LayerNorm critics, CQL)": {},
          "Cal-QL (2 critics, no LayerNorm)": dict(num_critics=2, layer_norm=False, calql=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="folder holding wsrl_wm_old, models_old")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, args.old)
    from wsrl_wm_old.agents import CQL as OldCQL
    from wsrl_wm_old.agents import CQLConfig as OldConfig

    keep_freed_memory()
    for name, shape in SHAPES.items():
        torch.manual_seed(0)
        batch = suite.random_batch(256)
        agents = {"old": OldCQL(suite.OBS_DIM, suite.ACT_DIM, OldConfig(compile="off", **shape)),
                  "new": CQL(suite.OBS_DIM, suite.ACT_DIM, CQLConfig(compile="off", **shape)),
                  "new, CQL term on every critic": CQL(suite.OBS_DIM, suite.ACT_DIM, CQLConfig(
                      compile="off", cql_critic_subset=False, **shape))}
        works = {label: update_of(agent, batch) for label, agent in agents.items()}
        rates = interleaved_per_second(works, args.rounds, rounds=args.rounds)
        print(name, " ".join(f"{label}: {rate:.3g}/s" for label, rate in rates.items()),
              " ".join(f"{label} / old: {rate / rates['old']:.2f}" for label, rate in
                       rates.items() if label != "old"), flush=True)


def update_of(agent, batch: dict):
    optimizers = agent.make_optimizers()
    return lambda: agent.update(batch, optimizers)


if __name__ == "__main__":
    main()
