"""docs/configs.md against the configs: every value a family's pretrain / finetune run gets
(its yaml, else the module's or the agent config's default) is a row of the table with that
value and a source, and the table has no row that is not such a value."""

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

from wsrl_wm.agents import CQLConfig
from wsrl_wm.lightning import FinetuneModule, PretrainModule
from wsrl_wm.world_model import RolloutConfig

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"locomotion": "hopper", "antmaze": "antmaze", "kitchen": "kitchen",
            "adroit": "adroit", "pointmaze": "pointmaze"}
NESTED = ("agent", "rollout")  # dicts whose values get rows of their own
SOURCES = {"S", "C", "R", "T", "L", "F", "A", "N", "E", "ours", "antmaze's"}  # the doc's tags


def parameters(module) -> dict:
    """The module's arguments and their defaults (`inspect.Parameter.empty`: required)."""
    return {name: p.default for name, p in inspect.signature(module.__init__).parameters.items()
            if name not in ("self", *NESTED)}


def run_values(folder: str) -> dict:
    """What a run of `configs/<folder>` gets, as "phase.key" → value (tuples as lists)."""
    values = {}
    for phase, module in (("pretrain", PretrainModule), ("finetune", FinetuneModule)):
        args = yaml.safe_load((ROOT / f"configs/{folder}/{phase}.yaml").read_text())[
            "model"]["init_args"]
        for key, default in parameters(module).items():
            values[f"{phase}.{key}"] = args[key] if default is inspect.Parameter.empty else \
                args.get(key, default)
        if phase == "pretrain":
            for field in dataclasses.fields(CQLConfig):
                values[f"pretrain.agent.{field.name}"] = args.get("agent", {}).get(
                    field.name, field.default)
        else:
            values["finetune.rollout.ratio"] = args.get("rollout", {}).get(
                "ratio", RolloutConfig().ratio)
    return {key: list(v) if isinstance(v, tuple) else v for key, v in values.items()}


def doc_table() -> dict:
    """The table's rows: key → {family: (value, source)}."""
    lines = (ROOT / "docs/configs.md").read_text().splitlines()
    header = "| key | " + " | ".join(FAMILIES) + " |"
    start = lines.index(header) + 2
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        key, *cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == len(FAMILIES), line
        parsed = {}
        for family, cell in zip(FAMILIES, cells, strict=True):
            match = re.fullmatch(r"`([^`]*)` (.+)", cell)
            assert match, f"{key}/{family}: a cell is `value` then its source, got {cell!r}"
            parsed[family] = (yaml.safe_load(match.group(1)), match.group(2))
        rows[key.strip("`")] = parsed
    return rows


def test_the_table_holds_every_value_of_every_family_and_nothing_else():
    table = doc_table()
    for family, folder in FAMILIES.items():
        values = run_values(folder)
        assert set(table) == set(values), (family, set(table) ^ set(values))
        for key, value in values.items():
            documented, source = table[key][family]
            assert documented == value, (f"{family} {key}: docs say {documented!r}, runs "
                                         f"get {value!r}")
            assert source.split()[0].rstrip(",") in SOURCES, (family, key, source)


@pytest.mark.parametrize("folder", ["halfcheetah", "walker2d"])
def test_the_other_locomotion_configs_match_hopper_but_for_their_task(folder):
    hopper, other = run_values("hopper"), run_values(folder)
    differ = {key for key in hopper if hopper[key] != other[key]}
    assert differ <= {"pretrain.env", "pretrain.dataset", "finetune.pretrained"}, differ
