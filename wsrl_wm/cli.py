"""`wsrl-wm` console script: `collect` datasets, `fit` (LightningCLI), and the `demo` main job."""

import argparse
import os
import sys
from pathlib import Path

from wsrl_wm.errors import WsrlError

DEMO_ENV = "Hopper-v5"


def cache_dir() -> Path:
    """Generated datasets are cached here ($WSRL_WM_CACHE or ~/.cache/wsrl-wm)."""
    return Path(os.environ.get("WSRL_WM_CACHE", Path.home() / ".cache" / "wsrl-wm"))


def collect_command(argv: list[str]) -> None:
    from wsrl_wm.collect import QUALITIES, TrainingBudget, collect

    parser = argparse.ArgumentParser(
        prog="wsrl-wm collect", description="Collect a D4RL-format dataset from a v5 env.")
    parser.add_argument("--env", required=True, help="gymnasium id or D4RL name, e.g. Hopper-v5")
    parser.add_argument("--quality", required=True, choices=QUALITIES)
    parser.add_argument("--steps", type=int, required=True, help="transitions to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output .hdf5 path")
    defaults = TrainingBudget()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"behaviour-policy training (default {value})")
    args = vars(parser.parse_args(argv))
    budget = TrainingBudget(**{k: args.pop(k) for k in vars(defaults)})
    metadata = collect(budget=budget, **args)
    print(f"wrote {args['out']}: " + ", ".join(f"{k}={v}" for k, v in metadata.items()))


def demo_command(argv: list[str]) -> None:
    from wsrl_wm.collect import collect

    parser = argparse.ArgumentParser(
        prog="wsrl-wm demo", description="Collect, pretrain and fine-tune on Hopper-v5.")
    parser.parse_args(argv)
    dataset = cache_dir() / "hopper-v5-random-5k-seed0.hdf5"
    if not dataset.exists():
        collect(DEMO_ENV, "random", 5_000, 0, str(dataset))
    print(f"dataset: {dataset}")
    print("pretrain and fine-tune are not built yet (issues 3-5); the demo stops after the data.")


COMMANDS = {"collect": collect_command, "demo": demo_command}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: wsrl-wm {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        sys.exit(2)
    try:
        COMMANDS[argv[0]](argv[1:])
    except WsrlError as exc:
        print(f"wsrl-wm: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
