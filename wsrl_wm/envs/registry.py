"""Map D4RL dataset names and gymnasium ids onto the environments this project builds.

Locomotion runs on gymnasium's MuJoCo v5 envs. The paper's sparse-reward families run on
gymnasium-robotics (the optional `robotics` extra) with their data from Minari's D4RL collection
(docs/sparse_tasks.md): a D4RL name such as `antmaze-large-diverse-v2` resolves to the env and to
the Minari dataset id that replaced the D4RL file.
"""

import re
from dataclasses import dataclass

from wsrl_wm.errors import WsrlError

FAMILY_TO_GYM_ID = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}
GYM_ID_TO_FAMILY = {gym_id.lower(): family for family, gym_id in FAMILY_TO_GYM_ID.items()}
D4RL_NAME = re.compile(r"^(?P<family>[a-z0-9]+)-(?P<quality>[a-z-]+)-v\d+$")

# Families whose evaluation is a success rate (the paper's sparse-reward tasks).
SPARSE_FAMILIES = ("pointmaze", "antmaze", "adroit", "kitchen")

MAZE_SIZES = {"umaze": "UMaze", "medium": "Medium", "large": "Large"}
# D4RL antmaze name → (gymnasium-robotics map the Minari D4RL/antmaze/*-v1 dataset was recorded
# on, maze size of its evaluation map): Minari's generation script DATASET_ID_TO_ENV_ID and
# EVAL_ENV_MAPS (github rodrigodelazcano/d4rl-minari-dataset-generation, antmaze).
ANTMAZE_DATASETS = {
    "umaze": ("UMaze", "umaze"), "umaze-diverse": ("UMaze", "umaze"),
    "medium-play": ("Medium", "medium"), "medium-diverse": ("Medium_Diverse_GR", "medium"),
    "large-play": ("Large", "large"), "large-diverse": ("Large_Diverse_GR", "large"),
}
# AntMaze-v4 observes the ant without its x, y (27 dims) plus x, y as achieved_goal: the same
# quantities as D4RL's 29-dim antmaze observation, and the version Minari's datasets use (v5
# adds contact forces by default).
ANTMAZE_VERSION = "v4"
ADROIT_TASKS = ("pen", "door", "relocate")
# Cal-QL's binary adroit data are expert demonstrations plus behaviour-cloned rollouts; Minari's
# `cloned` datasets are that mixture (half demonstrations, half a BC policy's rollouts).
ADROIT_BINARY_DATASET = "cloned-v2"
# D4RL's pen episodes last 100 steps (pen-*-v1 and Cal-QL's pen-binary-v0); gymnasium-robotics
# registers AdroitHandPen-v1 with 200. Door and relocate keep 200 in both.
ADROIT_EPISODE_STEPS = {"pen": 100}
# The four target tasks of D4RL's kitchen datasets (d4rl kitchen_envs.py:
# KitchenMicrowaveKettleLightSliderV0 for complete/partial, ...BottomBurnerLightV0 for mixed).
KITCHEN_TASKS = {
    "complete": ("microwave", "kettle", "light switch", "slide cabinet"),
    "partial": ("microwave", "kettle", "light switch", "slide cabinet"),
    "mixed": ("microwave", "kettle", "bottom burner", "light switch"),
}

GYM_ID_PATTERNS = (
    (re.compile(r"^PointMaze_(UMaze|Medium|Large)-v3$"), "pointmaze"),
    (re.compile(r"^AntMaze_[A-Za-z_]+-v[45]$"), "antmaze"),
    (re.compile(r"^AdroitHand(Pen|Door|Relocate)-v1$"), "adroit"),
    (re.compile(r"^FrankaKitchen-v1$"), "kitchen"),
)


@dataclass(frozen=True)
class EnvSpec:
    """What `make_env` needs: the gymnasium id, the family (for scores and task rules), whether
    the observation follows D4RL's layout, and the Minari dataset a D4RL name stands for."""

    gym_id: str
    family: str
    d4rl_layout: bool = False
    minari_id: str | None = None
    kwargs: tuple[tuple[str, object], ...] = ()  # gym.make arguments this name implies

    @property
    def sparse(self) -> bool:
        return self.family in SPARSE_FAMILIES


def resolve_env(name: str) -> EnvSpec:
    """`hopper-medium-v2` → Hopper-v5 with D4RL's observation layout; `Hopper-v5` → itself;
    `antmaze-large-diverse-v2` → AntMaze_Large_Diverse_GR-v4 and D4RL/antmaze/large-diverse-v1."""
    family = GYM_ID_TO_FAMILY.get(name.lower())
    if family is not None:
        return EnvSpec(FAMILY_TO_GYM_ID[family], family)
    for pattern, family in GYM_ID_PATTERNS:
        match = pattern.match(name)
        if match and family == "pointmaze":  # evaluated as D4RL's maze2d: one fixed goal
            size = {v: k for k, v in MAZE_SIZES.items()}[match[1]]
            return EnvSpec(name, family, kwargs=(("eval_maze", size),))
        if match:
            return EnvSpec(name, family)
    match = D4RL_NAME.match(name.lower())
    if match and match["family"] in FAMILY_TO_GYM_ID:
        return EnvSpec(FAMILY_TO_GYM_ID[match["family"]], match["family"], d4rl_layout=True)
    if match:
        spec = _sparse_d4rl_name(match["family"], match["quality"])
        if spec is not None:
            return spec
    raise WsrlError(
        f"unknown env or dataset name {name!r}; use one of {', '.join(FAMILY_TO_GYM_ID.values())}, "
        f"PointMaze_Medium-v3, a D4RL name such as hopper-medium-v2 or antmaze-large-diverse-v2, "
        f"pen-binary-v0, kitchen-mixed-v0"
    )


def _sparse_d4rl_name(family: str, quality: str) -> EnvSpec | None:
    """The sparse-reward D4RL names (None if `family-quality` is not one of them)."""
    if family in ("pointmaze", "maze2d") and quality in MAZE_SIZES:
        return EnvSpec(f"PointMaze_{MAZE_SIZES[quality]}-v3", "pointmaze",
                       minari_id=f"D4RL/pointmaze/{quality}-v2",
                       kwargs=(("eval_maze", quality),))
    if family == "antmaze" and quality in ANTMAZE_DATASETS:
        maze, eval_maze = ANTMAZE_DATASETS[quality]
        return EnvSpec(f"AntMaze_{maze}-{ANTMAZE_VERSION}", "antmaze",
                       minari_id=f"D4RL/antmaze/{quality}-v1",
                       kwargs=(("eval_maze", eval_maze),))
    if family in ADROIT_TASKS and quality == "binary":
        steps = ADROIT_EPISODE_STEPS.get(family)
        return EnvSpec(f"AdroitHand{family.capitalize()}-v1", "adroit",
                       minari_id=f"D4RL/{family}/{ADROIT_BINARY_DATASET}",
                       kwargs=(("max_episode_steps", steps),) if steps else ())
    if family == "kitchen" and quality in KITCHEN_TASKS:
        return EnvSpec("FrankaKitchen-v1", "kitchen", minari_id=f"D4RL/kitchen/{quality}-v2",
                       kwargs=(("tasks_to_complete", KITCHEN_TASKS[quality]),))
    return None
