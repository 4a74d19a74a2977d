"""`wsrl-wm` console script: `collect` datasets, `fit` (LightningCLI), and the `demo` main job."""

import argparse
import json
import re
import signal
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path

from wsrl_wm.allocator import keep_freed_memory
from wsrl_wm.errors import WsrlError


def collect_command(argv: list[str]) -> None:
    from wsrl_wm.collect import (
        MAZE_GOALS,
        MAZE_QUALITIES,
        QUALITIES,
        TrainingBudget,
        collect_dataset,
    )

    parser = argparse.ArgumentParser(
        prog="wsrl-wm collect", description="Collect a D4RL-format dataset from a v5 env, or "
        "from PointMaze with the waypoint planner (qualities clean, noisy).")
    parser.add_argument("--env", required=True, help="gymnasium id or D4RL name, e.g. Hopper-v5")
    parser.add_argument("--quality", required=True, choices=(*QUALITIES, *MAZE_QUALITIES))
    parser.add_argument("--steps", type=int, required=True, help="transitions to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output .hdf5 path")
    parser.add_argument("--goals", choices=MAZE_GOALS, default=None,
                        help="PointMaze: goals anywhere (random, the default) or the "
                        "evaluation goal from random starts (eval)")
    parser.add_argument("--save-policy", dest="save_policy_to", default=None,
                        help="also save the trained behaviour policy here (.pt)")
    parser.add_argument("--policy", default=None,
                        help="roll out this saved behaviour policy instead of training one")
    defaults = TrainingBudget()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"behaviour-policy training (default {value})")
    args = vars(parser.parse_args(argv))
    budget = TrainingBudget(**{k: args.pop(k) for k in vars(defaults)})
    metadata = collect_dataset(budget=budget, **args)
    print(f"wrote {args['out']}: " + ", ".join(f"{k}={v}" for k, v in metadata.items()))


def demo_command(argv: list[str]) -> None:
    from wsrl_wm.demo import run_demo

    parser = argparse.ArgumentParser(
        prog="wsrl-wm demo",
        description="Collect, pretrain, and fine-tune with r = 0, r = 0.25 and no warmup.")
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--workers", type=int, default=None, help="parallel fine-tune runs")
    args = parser.parse_args(argv)
    run_demo(Path(args.out), args.workers)


def study_command(argv: list[str]) -> None:
    from wsrl_wm import WANDB_MODES
    from wsrl_wm.ablation import make_runner
    from wsrl_wm.ablation.study import load_spec, run_study

    parser = argparse.ArgumentParser(
        prog="wsrl-wm study", description="Run (or resume) a study from its YAML spec.")
    parser.add_argument("spec", help="study spec, e.g. configs/study/hopper.yaml")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=int, default=None,
                        help="concurrent fits (default: one per CPU core)")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--commit", action="store_true",
                        help="git-commit each finished cell's record and the final report")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the cells finished so far")
    parser.add_argument("--wandb-mode", "--wandb_mode", choices=WANDB_MODES, default=None,
                        help="default: $WANDB_MODE, else offline")
    parser.add_argument("--replicate", type=int, default=None, metavar="N",
                        help="rerun N committed cells here and compare them with the "
                        "committed ones and the study's spread over seeds")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    runner = make_runner(args.backend, args.workers, args.ray_address)
    if args.replicate is not None:
        from wsrl_wm.ablation.replicate import replicate

        replicate(spec, args.replicate, runner, args.wandb_mode)
        return
    result = run_study(spec, runner, args.wandb_mode, args.commit, report_only=args.report_only)
    print(f"\n{result.table}\n")
    for name, path in result.outputs.items():
        print(f"{name}: {path}")
    if not result.ok:
        for outcome in result.failures:
            print(f"FAILED {outcome.cell.name}: {outcome.error}", file=sys.stderr)
        sys.exit(1)


def fit_command(argv: list[str]) -> None:
    """LightningCLI `fit`: the config picks PretrainModule or FinetuneModule (class_path)."""
    from lightning.pytorch import LightningModule
    from lightning.pytorch.cli import LightningCLI

    from wsrl_wm import WANDB_MODES
    from wsrl_wm.compile_cache import use_persistent_cache
    from wsrl_wm.lightning.trainer_setup import default_callbacks, default_loggers

    use_persistent_cache()  # compiled updates kept across runs (a study sets its own)

    class WsrlCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # unset: $WANDB_MODE, else offline (default_loggers); spelt as in `study`, with
            # LightningCLI's underscore form accepted too
            parser.add_argument("--wandb_mode", "--wandb-mode", default=None,
                                choices=WANDB_MODES)
            parser.add_argument("--wandb_project", default="wsrl-wm")

        def _parse_ckpt_path(self) -> None:
            """LightningCLI would re-read the model's hyper-parameters from a --ckpt_path file
            with a weights-only load, which our run-state checkpoints do not allow; the config
            on the command line already defines the run, so nothing is merged."""

        def instantiate_trainer(self, **kwargs):
            config = self.config_init[self.subcommand]
            root = Path(config.trainer.default_root_dir or "runs/default")
            if config.trainer.logger in (None, True):
                kwargs["logger"] = default_loggers(root, config.wandb_mode, config.wandb_project)
            progress_bar = config.trainer.enable_progress_bar is not False
            kwargs["callbacks"] = [*(config.trainer.callbacks or []),
                                   *default_callbacks(root, progress_bar)]
            return super().instantiate_trainer(**kwargs)

    if not any(arg.startswith("--weights_only") for arg in argv):
        # Resume checkpoints hold the run's own state (RNG states, configs), not only tensors;
        # they are files the user's run wrote, so full unpickling is the intended use.
        argv = [*argv, "--weights_only", "false"]
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    try:
        WsrlCLI(LightningModule, subclass_mode_model=True, args=["fit", *nested_nulls(argv)],
                trainer_defaults={"max_epochs": 1, "enable_model_summary": False},
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False})
    except ArgumentError as exc:
        raise WsrlError(config_error_line(str(exc))) from None


def nested_nulls(argv: list[str]) -> list[str]:
    """`--model.rollout.uncertainty_quantile null` as `--model.rollout '{"uncertainty_quantile":
    null}'`: LightningCLI hands a null inside a nested dataclass to its field as the string
    "None", which fails the field's type; the one-key mapping form sets it and keeps the
    group's other values."""
    out, i = [], 0
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        if not eq and i + 1 < len(argv):
            value = argv[i + 1]
        group, _, field = key.rpartition(".")
        if key.startswith("--") and group.count(".") >= 1 and value == "null":
            out += [group, json.dumps({field: None})]
            i += 1 if eq else 2
            continue
        out.append(argv[i])
        i += 1
    return out


def config_error_line(message: str) -> str:
    """One line out of jsonargparse's multi-line report (usage, union subtypes, values)."""
    for pattern, template in (
            (r"Option '([^']+)' is not accepted", "unknown model option '{}'"),
            (r'Key "([^"]+)" is not expected', "unknown config key '{}'"),
            (r"(?i)unrecognized arguments: (.+)", "unrecognised arguments '{}'")):
        found = re.search(pattern, message)
        if found:
            return f"{template.format(found[1].strip())}; see `wsrl-wm fit --help`"
    keys = re.findall(r'Parser key "([^"]+)"', message)
    lines = [line.strip(" -") for line in message.splitlines()]
    reasons = [line for line in lines if line and not line.startswith(
        ("Parser key", "Does not validate", "Subtypes", "Errors", "Given value", "Problem with",
         "Expected a <class 'NoneType'>"))]
    where = ".".join(dict.fromkeys(keys)) or "configuration"
    return f"invalid {where}: {reasons[0] if reasons else lines[0]}"


COMMANDS = {"collect": collect_command, "fit": fit_command, "demo": demo_command,
            "study": study_command}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: wsrl-wm {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        sys.exit(2)
    keep_freed_memory()
    # SIGTERM (kill, a scheduler's stop) unwinds like Ctrl-C, so temporary files are removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        COMMANDS[argv[0]](argv[1:])
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None:
            raise
        print(f"wsrl-wm: error: {user_error}", file=sys.stderr)
        sys.exit(2)


def find_user_error(exc: BaseException | None) -> WsrlError | None:
    """The WsrlError behind `exc`, if any: jsonargparse wraps errors raised while it
    instantiates the model, and the user should see only the original one line."""
    while exc is not None and not isinstance(exc, WsrlError):
        exc = exc.__cause__ or exc.__context__
    return exc


if __name__ == "__main__":
    main()
