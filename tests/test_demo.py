"""`wsrl-wm demo` is the PointMaze study cut down: its spec runs the study's recipe (same data,
agent, world model and fine-tuning rules) on fewer steps, with r kept and the no-warmup baseline,
over at least three seeds; its configs build their modules."""

from pathlib import Path

import pytest
import yaml
from conftest import build_config_module

from wsrl_wm.ablation.study import load_spec
from wsrl_wm.collect.pointmaze import collect_pointmaze
from wsrl_wm.demo import DEMO_SPEC
from wsrl_wm.lightning import PretrainModule

ROOT = Path(__file__).resolve().parents[1]
STEP_KEYS = {"steps", "eval_interval", "warmup_steps", "online_steps", "starts",
             "horizon_ramp_steps"}


def init_args(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())["model"]["init_args"]


def without_budgets(args: dict) -> dict:
    """A config's rules: everything but its step counts and the paths the runner sets."""
    return {key: (without_budgets(value) if isinstance(value, dict) else value)
            for key, value in args.items()
            if key not in STEP_KEYS | {"dataset", "pretrained"}}


def test_demo_is_the_pointmaze_study_on_fewer_steps():
    demo, study = load_spec(DEMO_SPEC), load_spec(ROOT / "configs/study/pointmaze.yaml")
    assert (demo.env, demo.dataset_file, demo.collect) == (
        study.env, study.dataset_file, study.collect)
    assert len(demo.seeds) >= 3 and 0.0 in demo.ratios and any(r > 0 for r in demo.ratios)
    assert [(v.name, v.overrides) for v in demo.variants] == [
        ("no_warmup", ("model.warmup_steps=0",))]
    for phase in ("pretrain", "finetune"):
        mine = init_args(getattr(demo, f"{phase}_config"))
        theirs = init_args(getattr(study, f"{phase}_config"))
        assert without_budgets(mine) == without_budgets(theirs), phase
        assert mine.get("steps", 0) <= theirs.get("steps", 0)
        assert mine.get("online_steps", 0) <= theirs.get("online_steps", 0)


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_demo_pretraining_config_builds_on_planner_data(tmp_path):
    data = tmp_path / "maze.hdf5"
    collect_pointmaze("PointMaze_Medium-v3", "noisy", 1500, 0, str(data), "eval")
    module = build_config_module(ROOT / "configs/demo/pretrain.yaml",
                                 ("--model.dataset", str(data)), tmp_path)
    assert type(module) is PretrainModule
    for key, value in init_args("configs/demo/pretrain.yaml").items():
        if key != "dataset" and not isinstance(value, dict):
            assert module.hparams[key] == value, key
