"""Map D4RL dataset names and gymnasium ids onto the gymnasium MuJoCo v5 environments."""

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
# Families that only exist inside the d4rl package (mujoco-py + MuJoCo 2.1 binaries).
D4RL_ONLY_FAMILIES = ("antmaze", "kitchen", "pen", "door", "relocate", "hammer", "maze2d")
D4RL_NAME = re.compile(r"^(?P<family>[a-z0-9]+)-(?P<quality>[a-z-]+)-v\d+$")


@dataclass(frozen=True)
class EnvSpec:
    """What `make_env` needs: the gymnasium id, the family (for scores) and the D4RL obs layout."""

    gym_id: str
    family: str
    d4rl_layout: bool = False


def resolve_env(name: str) -> EnvSpec:
    """`hopper-medium-v2` → Hopper-v5 with D4RL's observation layout; `Hopper-v5` → itself."""
    family = GYM_ID_TO_FAMILY.get(name.lower())
    if family is not None:
        return EnvSpec(FAMILY_TO_GYM_ID[family], family)
    match = D4RL_NAME.match(name.lower())
    if match and match["family"] in FAMILY_TO_GYM_ID:
        return EnvSpec(FAMILY_TO_GYM_ID[match["family"]], match["family"], d4rl_layout=True)
    if match and match["family"] in D4RL_ONLY_FAMILIES:
        raise WsrlError(
            f"env {name!r} needs the optional d4rl package (mujoco-py and MuJoCo 2.1), which does "
            f"not import here; use a locomotion env ({', '.join(FAMILY_TO_GYM_ID.values())})"
        )
    raise WsrlError(
        f"unknown env or dataset name {name!r}; use one of {', '.join(FAMILY_TO_GYM_ID.values())} "
        f"or a D4RL name such as hopper-medium-v2"
    )
