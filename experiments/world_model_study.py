"""Frozen vs online-adapted world model (MBPO's adaptation rule and the earlier capped one) over
a CPU-sized Hopper fine-tuning run.

    python experiments/world_model_study.py --root runs/world_model_study \
        --out docs/results/world_model --seeds 0 1 2

Per seed: one pretraining (a smoke-sized agent and a 7-member 3×64 world model) on 6000
random Hopper-v5 steps, then three fine-tunes at r = 0.5 through the real entry point
(`wsrl-wm fit`): the model frozen, and the model adapted every 250 env steps under MBPO's rule
(the default: no epoch cap, the scaler refit, early stop on the holdout) and under the earlier
capped rule (5 epochs, the offline scaler kept, a member that does not improve keeps its
weights). Each round logs
the model's one-step and H-step error on the online data it has not been trained on and its
one-step error on the offline probe; at the end, the final model's H-step error along offline
trajectories is measured here (docs/world_model.md has the results). Writes `rounds.csv`,
`summary.md` and `errors.png` to --out. Finished runs (with a last.ckpt) are skipped, so an
interrupted study resumes.
"""

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"model/one_step_mse": "one-step MSE, fresh online data",
           "model/h_step_mse": "H-step MSE (H = 3), fresh online trajectories",
           "model/probe_mse": "one-step MSE, offline probe"}
ARMS = {"frozen": [],
        "adapted": ["--model.rollout.adapt_interval", "250"],
        "adapted_capped": ["--model.rollout.adapt_interval", "250",
                           "--model.rollout.adapt_epochs", "5",
                           "--model.rollout.adapt_keep_start", "true",
                           "--model.rollout.adapt_refit_normalizer", "false"]}
ADAPTED = [arm for arm in ARMS if arm != "frozen"]
PRETRAIN = ["--model.steps", "300", "--model.batch_size", "128", "--model.eval_interval", "300",
            "--model.world_model.num_members", "7", "--model.world_model.num_elites", "5",
            "--model.world_model.hidden", "[64, 64, 64]",
            "--model.world_model.batch_size", "256", "--model.world_model.max_epochs", "25"]
FINETUNE = ["--model.warmup_steps", "500", "--model.online_steps", "2500", "--model.utd", "2",
            "--model.batch_size", "128", "--model.eval_interval", "1000",
            "--model.eval_episodes", "2", "--model.log_interval", "250",
            "--model.checkpoint_interval", "0", "--model.rollout.ratio", "0.5",
            "--model.rollout.interval", "250", "--model.rollout.starts", "1000",
            "--model.rollout.horizon", "1", "--model.rollout.max_horizon", "3",
            "--model.rollout.horizon_ramp_steps", "2500"]
H = 3


def run(args: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "disabled"}
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-m", "wsrl_wm.cli", *args], env=env, check=True,
                       stdout=out, stderr=subprocess.STDOUT)


def fit(config: str, root: Path, seed: int, extra: list[str]) -> Path:
    checkpoint = root / "checkpoints" / "last.ckpt"
    if not checkpoint.exists():
        root.mkdir(parents=True, exist_ok=True)
        run(["fit", "--config", str(ROOT / config), "--seed_everything", str(seed),
             "--model.seed", str(seed), "--trainer.default_root_dir", str(root),
             "--trainer.enable_progress_bar", "false", *extra], root / "fit.log")
    return checkpoint


def rounds(run_root: Path) -> dict[str, dict[int, float]]:
    """metric → {env step: value} from the run's CSV log."""
    out: dict[str, dict[int, float]] = {m: {} for m in METRICS}
    with open(run_root / "csv" / "version_0" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for metric in METRICS:
                if row.get(metric):
                    out[metric][int(float(row["env_step"]))] = float(row[metric])
    return out


def load_world_model(checkpoint: Path):
    """The world model in a pretraining or fine-tuning checkpoint."""
    from wsrl_wm.lightning.bundle import BUNDLE_KEY, PretrainedBundle
    from wsrl_wm.world_model import WorldModel

    ckpt = torch.load(checkpoint, weights_only=False, map_location="cpu")
    pretrained = checkpoint if BUNDLE_KEY in ckpt else ckpt["hyper_parameters"]["pretrained"]
    model = WorldModel(11, 3, PretrainedBundle.load(pretrained).world_model_config)
    model.load_state_dict({k.removeprefix("world_model."): v for k, v in
                           ckpt["state_dict"].items() if k.startswith("world_model.")})
    return model


def last_online_rows(checkpoint: Path, count: int) -> dict[str, torch.Tensor]:
    """The run's last `count` online transitions (its buffer never wraps in this study)."""
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")
    buffer = state["online_state"]["buffer"]
    return {k: v[buffer["size"] - count: buffer["size"]] for k, v in buffer["storage"].items()}


def model_errors(model, data: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(one-step MSE over all rows, H-step MSE over up to 2000 trajectory windows)."""
    from wsrl_wm.world_model import h_step_error, one_step_error, trajectory_windows

    states, actions = trajectory_windows(data, H)
    pick = torch.randperm(len(states), generator=torch.Generator().manual_seed(0))[:2000]
    return (one_step_error(model, data),
            float(h_step_error(model, states[pick], actions[pick])[-1]))


def ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a normal-approximation 95 % interval across seeds."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(1.96 * array.std(ddof=1) / np.sqrt(len(array)))


def plot(curves: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.6))
    for ax, (metric, title) in zip(axes, METRICS.items(), strict=True):
        for arm, color in zip(ARMS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
            per_seed = curves[arm][metric]
            steps = sorted(set.intersection(*(set(c) for c in per_seed)))
            values = np.array([[c[s] for s in steps] for c in per_seed])
            mean = values.mean(0)
            half = 1.96 * values.std(0, ddof=1) / np.sqrt(len(values))
            ax.plot(steps, mean, color=color, label=arm)
            ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("env step")
        ax.set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    tmp = out.with_name(".errors.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/world_model_study"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/world_model"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = args.root / "hopper-random.hdf5"
    if not dataset.exists():
        run(["collect", "--env", "Hopper-v5", "--quality", "random", "--steps", "6000",
             "--seed", "100", "--out", str(dataset)], args.root / "collect.log")

    from wsrl_wm.data import load_dataset

    offline = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in
               load_dataset(str(dataset)).items()
               if k in ("observations", "actions", "rewards", "next_observations", "terminals")}
    curves = {arm: {m: [] for m in METRICS} for arm in ARMS}
    finals: dict[str, dict[str, list[float]]] = {arm: {} for arm in ARMS}
    paired: dict[str, dict[str, list[float]]] = {}  # data → "<model> <error>" → per seed
    table = []
    for seed in args.seeds:
        pretrained = fit("configs/smoke/pretrain.yaml", args.root / f"pretrain-{seed}", seed,
                         ["--model.dataset", str(dataset), *PRETRAIN])
        checkpoints = {}
        for arm, extra in ARMS.items():
            run_root = args.root / f"{arm}-{seed}"
            checkpoint = fit("configs/smoke/finetune.yaml", run_root, seed,
                             ["--model.pretrained", str(pretrained), *FINETUNE, *extra])
            logged = rounds(run_root)
            checkpoints[arm] = checkpoint
            for metric in METRICS:
                curves[arm][metric].append(logged[metric])
                table += [{"arm": arm, "seed": seed, "env_step": step, "metric": metric,
                           "value": value} for step, value in sorted(logged[metric].items())]
                # The run's mean over its rounds after the switch (the first round measures
                # the pretrained model on warmup data, identical in both arms).
                later = [v for s, v in logged[metric].items() if s > 500]
                finals[arm].setdefault(metric, []).append(float(np.mean(later)))
        # Both final models on the same data: the last 250 online rows of each run (after the
        # last adaptation, so neither model was trained on them) and the offline dataset.
        models = {"frozen": load_world_model(pretrained),
                  **{arm: load_world_model(checkpoints[arm]) for arm in ADAPTED}}
        data_sets = {f"last 250 online rows of the {arm} run":
                     last_online_rows(checkpoints[arm], 250) for arm in ARMS}
        data_sets["offline dataset (6000 rows)"] = offline
        for data_name, data in data_sets.items():
            for model_name, model in models.items():
                one, h = model_errors(model, data)
                errors = paired.setdefault(data_name, {})
                errors.setdefault(f"{model_name} one", []).append(one)
                errors.setdefault(f"{model_name} h", []).append(h)

    with open(args.out / "rounds.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["arm", "seed", "env_step", "metric", "value"])
        writer.writeheader()
        writer.writerows(table)
    lines = ["Logged each round, mean over the rounds after the switch (each arm on its own "
             "online data):", "", "| quantity | " + " | ".join(ARMS) + " |",
             "|---|" + "---|" * len(ARMS)]
    for key, name in METRICS.items():
        cells = [ci95(finals[arm][key]) for arm in ARMS]
        lines.append(f"| {name} | " + " | ".join(f"{m:.4g} ± {h:.2g}" for m, h in cells) + " |")
    lines += ["", "The final models on the same data (each adapted model − the frozen one: "
              "paired over seeds):", "",
              "| data | error | frozen model | " + " | ".join(f"{arm} model | {arm} − frozen"
                                                           for arm in ADAPTED) + " |",
              "|---|---|---|" + "---|---|" * len(ADAPTED)]
    for data_name, errors in paired.items():
        for kind, label in (("one", "one-step"), ("h", f"{H}-step")):
            frozen = errors[f"frozen {kind}"]
            cells = [ci95(frozen)]
            for arm in ADAPTED:
                adapted = errors[f"{arm} {kind}"]
                cells += [ci95(adapted),
                          ci95([a - f for a, f in zip(adapted, frozen, strict=True)])]
            lines.append(f"| {data_name} | {label} | " + " | ".join(
                f"{m:.4g} ± {h:.2g}" for m, h in cells) + " |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    plot(curves, args.out / "errors.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
