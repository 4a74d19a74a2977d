"""Which `wsrl-wm fit` runs the rollout-ratio ablation needs, with which arguments, and where.

Every path in a planned command is absolute, so a cell runs the same from any working
directory (a Ray worker's included) and its command identifies it when a sweep resumes.
"""

import functools
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from wsrl_wm.errors import WsrlError

MAIN_VARIANT = "wsrl"  # WSRL plus model rollouts at ratio r (r = 0 is plain WSRL)
PHASES = ("pretrain", "finetune")
# Set by the sweep itself; a --set on them would silently break the cell/seed/ratio layout.
RESERVED_KEYS = {"config", "seed_everything", "model.seed", "model.dataset", "model.pretrained",
                 "model.rollout.ratio", "trainer.default_root_dir"}
BASELINES = ("no_warmup", "retain")


def baseline_args(name: str, dataset: str) -> tuple[str, ...]:
    """Fit arguments of the paper's baselines, both run at r = 0."""
    if name == "no_warmup":
        return ("--model.warmup_steps", "0")
    return ("--model.retain_offline_ratio", "0.5", "--model.offline_dataset", dataset)


@dataclass(frozen=True)
class Variant:
    """A named setting beside the ratio grid: "KEY=VALUE" fit overrides (like --set; "{dataset}"
    in a value stands for the sweep's dataset), run at model-rollout ratio `ratio`. They go to
    the fine-tuning; a key prefixed `pretrain.` goes to a pretraining of the variant's own (per
    seed, or shared as the sweep's), for settings the pretrained agent carries (e.g. its
    architecture)."""

    name: str
    ratio: float = 0.0
    overrides: tuple[str, ...] = ()

    @property
    def own_pretraining(self) -> tuple[str, ...]:
        return tuple(item for item in self.overrides if item.startswith("pretrain."))


@dataclass(frozen=True)
class Sweep:
    """The ablation grid: ratios × seeds (+ optional baselines at r = 0), one pretraining per
    seed. `overrides` are "KEY=VALUE" fit overrides (see `route_overrides`); `dip_window` is in
    online steps, None = 25 % of each run's online steps."""

    pretrain_config: str
    finetune_config: str
    dataset: str
    out: str = "runs/ablation"
    ratios: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5)
    seeds: tuple[int, ...] = (0, 1, 2)
    baselines: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    dip_window: float | None = None
    variants: tuple[Variant, ...] = ()
    shared_pretraining: bool = False  # one pretraining (the first seed's) for every seed


@dataclass(frozen=True)
class Cell:
    """One fit run: `args` follow `wsrl-wm fit`; its files live in `root`. A fine-tuning
    names the pretraining cell whose checkpoint it starts from."""

    name: str
    phase: str
    variant: str
    ratio: float | None
    seed: int
    root: Path
    args: tuple[str, ...]
    pretrain: str = ""


def plan(sweep: Sweep, reporting: bool = False) -> tuple[list[Cell], list[Cell]]:
    """(pretrain cells, fine-tune cells); checks the sweep first so bad input fails before any
    run starts (`reporting`: nothing will run, so the dataset need not be here)."""
    check(sweep, reporting)
    out = Path(sweep.out).resolve()
    configs = {"pretrain": str(Path(sweep.pretrain_config).resolve()),
               "finetune": str(Path(sweep.finetune_config).resolve())}
    dataset = str(Path(sweep.dataset).resolve()) if Path(sweep.dataset).exists() else sweep.dataset
    routed = route_overrides(sweep.overrides, configs)
    pretrain_seeds = sweep.seeds[:1] if sweep.shared_pretraining else sweep.seeds
    pretrain: dict[tuple[str, int], Cell] = {}  # by (whose pretraining, seed)
    for seed in pretrain_seeds:
        root = out / "pretrain" / f"seed_{seed}"
        pretrain[MAIN_VARIANT, seed] = Cell(f"pretrain_seed{seed}", "pretrain", "pretrain", None,
                                            seed, root, _pretrain_args(configs, routed, dataset,
                                                                       seed, root))
    variants = [(MAIN_VARIANT, float(r), (), MAIN_VARIANT) for r in sweep.ratios]
    variants += [(name, 0.0, baseline_args(name, dataset), MAIN_VARIANT)
                 for name in sweep.baselines]
    for variant in sweep.variants:
        overrides = tuple(item.replace("{dataset}", dataset) for item in variant.overrides)
        own = route_overrides(tuple(item if item in variant.own_pretraining
                                    else f"finetune.{item}" for item in overrides), configs)
        source = MAIN_VARIANT
        if own["pretrain"]:
            source = variant.name
            for seed in pretrain_seeds:
                root = out / "pretrain" / variant.name / f"seed_{seed}"
                pretrain[source, seed] = Cell(
                    f"pretrain_{variant.name}_seed{seed}", "pretrain", "pretrain", None, seed,
                    root, _pretrain_args(configs, {"pretrain": routed["pretrain"]
                                                   + own["pretrain"]}, dataset, seed, root))
        variants.append((variant.name, float(variant.ratio), tuple(own["finetune"]), source))
    finetune = []
    for variant, ratio, extra, whose in variants:
        for seed in sweep.seeds:
            name = f"{variant}_r{ratio:g}_seed{seed}"
            root = out / "cells" / name
            source = pretrain[whose, pretrain_seeds[0] if sweep.shared_pretraining else seed]
            checkpoint = source.root / "checkpoints" / "last.ckpt"
            finetune.append(Cell(name, "finetune", variant, ratio, seed, root, (
                "--config", configs["finetune"], *routed["finetune"],
                "--model.pretrained", str(checkpoint), "--model.rollout.ratio", f"{ratio:g}",
                *extra, *_seed_and_root(seed, root)), pretrain=source.name))
    return list(pretrain.values()), finetune


def _pretrain_args(configs: dict[str, str], routed: dict[str, list[str]], dataset: str,
                   seed: int, root: Path) -> tuple[str, ...]:
    return ("--config", configs["pretrain"], *routed["pretrain"], "--model.dataset", dataset,
            *_seed_and_root(seed, root))


def _seed_and_root(seed: int, root: Path) -> tuple[str, ...]:
    return ("--seed_everything", str(seed), "--model.seed", str(seed),
            "--trainer.default_root_dir", str(root))


def check(sweep: Sweep, reporting: bool = False) -> None:
    """Raise a one-line WsrlError for anything that would make the sweep wrong or fail late."""
    for label, path in (("pretrain config", sweep.pretrain_config),
                        ("finetune config", sweep.finetune_config)):
        model_class(path, label)
    if not reporting and Path(sweep.dataset).suffix in (".hdf5", ".h5") and \
            not Path(sweep.dataset).is_file():
        raise WsrlError(f"dataset file not found: {sweep.dataset}")
    if not (sweep.ratios or sweep.variants) or not sweep.seeds:
        raise WsrlError("the sweep needs at least one ratio or variant, and one seed")
    if any(not 0.0 <= r <= 1.0 for r in sweep.ratios):
        raise WsrlError(f"ratios must be in [0, 1], got {list(sweep.ratios)}")
    if any(int(s) != s or s < 0 for s in sweep.seeds):
        raise WsrlError(f"seeds must be non-negative integers, got {list(sweep.seeds)}")
    unknown = set(sweep.baselines) - set(BASELINES)
    if unknown:
        raise WsrlError(f"unknown baseline(s) {sorted(unknown)}; choose from {list(BASELINES)}")
    for label, values in (("ratios", sweep.ratios), ("seeds", sweep.seeds),
                          ("baselines", sweep.baselines)):
        if len(set(values)) != len(values):
            raise WsrlError(f"{label} repeat a value: {list(values)}")
    names = [MAIN_VARIANT, *sweep.baselines, *(v.name for v in sweep.variants)]
    if len(set(names)) != len(names):
        raise WsrlError(f"variant names must be unique (and not {MAIN_VARIANT!r}, the ratio "
                        f"grid's), got {names}")
    for variant in sweep.variants:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", variant.name):
            raise WsrlError(f"variant name {variant.name!r} must be letters, digits, _ . -")
        if not 0.0 <= variant.ratio <= 1.0:
            raise WsrlError(f"variant {variant.name}: ratio must be in [0, 1], got "
                            f"{variant.ratio}")
    if sweep.dip_window is not None and sweep.dip_window <= 0:
        raise WsrlError(f"dip window must be > 0 online steps, got {sweep.dip_window}")


def model_class(config: str, label: str = "config") -> str:
    """The `model.class_path` of a fit config (every ablation config must name its module)."""
    path = Path(config)
    if not path.is_file():
        raise WsrlError(f"{label} not found: {config}")
    try:
        class_path = yaml.safe_load(path.read_text())["model"]["class_path"]
    except (yaml.YAMLError, TypeError, KeyError) as exc:
        raise WsrlError(f"{label} {config} has no model.class_path ({exc})") from None
    return class_path


@functools.cache
def init_parameters(class_path: str) -> frozenset[str]:
    """The constructor arguments of a LightningModule named by its class path."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise WsrlError(f"cannot import the config's model class {class_path}: {exc}") from None
    return frozenset(inspect.signature(cls).parameters)


def route_overrides(overrides: tuple[str, ...], configs: dict[str, str]) -> dict[str, list[str]]:
    """Fit arguments per phase from "KEY=VALUE" strings.

    A `model.<field>...` key goes to each phase whose module takes <field> (model.online_steps
    to fine-tuning only, model.agent.* to pretraining only), any other key to both; a
    `pretrain.` or `finetune.` prefix restricts it to that phase. A key no phase takes is an
    error rather than a silently ignored setting.
    """
    routed: dict[str, list[str]] = {phase: [] for phase in PHASES}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise WsrlError(f"--set takes KEY=VALUE, got {item!r}")
        phases = PHASES
        head, _, rest = key.partition(".")
        if head in PHASES:
            phases, key = (head,), rest
        if key in RESERVED_KEYS:
            raise WsrlError(f"{key} is set by the sweep itself (per cell); it cannot be overridden")
        if key.startswith("model."):
            field = key.split(".")[1]
            phases = tuple(p for p in phases
                           if field in init_parameters(model_class(configs[p])))
            if not phases:
                raise WsrlError(f"no fit of this sweep takes {key!r} (from --set {item})")
        for phase in phases:
            routed[phase] += [f"--{key}", value]
    return routed
