"""`run.json`: what a fine-tuning run was (env, seed, budgets, variant settings, versions) and
where it ran (`wsrl_wm.provenance`), written beside its `evaluations.csv` so sweeps and studies
read runs without parsing logs."""

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from wsrl_wm.atomic import write_text_atomic
from wsrl_wm.errors import WsrlError
from wsrl_wm.provenance import provenance

RUN_INFO = "run.json"
PACKAGES = ("wsrl-wm", "torch", "lightning", "gymnasium", "mujoco")


def package_versions() -> dict[str, str | None]:
    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {name: installed(name) for name in PACKAGES}


def write_run_info(root: str | Path, info: dict) -> None:
    write_text_atomic(Path(root) / RUN_INFO,
                      json.dumps({**info, "versions": package_versions(),
                                  "provenance": provenance()}, indent=1) + "\n")


def read_run_info(root: str | Path) -> dict:
    path = Path(root) / RUN_INFO
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WsrlError(f"cannot read the run description {path}: {exc}") from None
