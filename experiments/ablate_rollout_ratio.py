"""Rollout-ratio ablation: pretrain once per seed, fine-tune every (r, seed), report unlearning.

    python experiments/ablate_rollout_ratio.py --dataset data/hopper-medium.hdf5 \
        --ratios 0 0.1 0.5 --seeds 0 1 2 --baselines no_warmup --workers 4

A thin command line over `wsrl_wm.ablation`; rerunning it with the same --out resumes.
"""

import argparse
import sys
from typing import NoReturn

from wsrl_wm.ablation import BASELINES, WANDB_MODES, Sweep, make_runner, run_sweep
from wsrl_wm.errors import WsrlError


class OneLineParser(argparse.ArgumentParser):
    """Bad input is one `error: ...` line and exit code 2, like every wsrl-wm command."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Sweep("", "", "")
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-config", default="configs/cpu/pretrain.yaml")
    parser.add_argument("--finetune-config", default="configs/cpu/finetune.yaml")
    parser.add_argument("--dataset", required=True,
                        help="D4RL-format hdf5 file, D4RL name or minari:<id> (pretraining data)")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(defaults.ratios),
                        help="model-rollout ratios r to sweep")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    parser.add_argument("--baselines", nargs="*", choices=BASELINES, default=[],
                        help="extra variants at r = 0 per seed")
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (default: start a local instance)")
    parser.add_argument("--ray-cpus-per-task", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None,
                        help="concurrent cells (default: one per CPU core)")
    parser.add_argument("--dip-window", type=float, default=None,
                        help="online steps in which the dip is measured (default 25%% of "
                             "online_steps)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="fit override, e.g. model.online_steps=2000 (repeatable)")
    parser.add_argument("--wandb-mode", "--wandb_mode", choices=WANDB_MODES, default=None,
                        help="default: $WANDB_MODE, else offline")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweep = Sweep(args.pretrain_config, args.finetune_config, args.dataset, args.out,
                  tuple(args.ratios), tuple(args.seeds), tuple(args.baselines),
                  tuple(args.overrides), args.dip_window)
    try:
        runner = make_runner(args.backend, args.workers, args.ray_address,
                             args.ray_cpus_per_task)
        result = run_sweep(sweep, runner, args.wandb_mode)
    except WsrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{result.table}\n")
    for name, path in result.outputs.items():
        print(f"{name}: {path}")
    for outcome in result.failures:
        print(f"\nFAILED {outcome.cell.name}: {outcome.error}", file=sys.stderr)
    if result.failures:
        print(f"\n{len(result.failures)} cell(s) failed; rerun to retry them.", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
