"""A shim for gymnasium-robotics 1.4 under mujoco 4.0 (FrankaKitchen-v1 fails to construct).

Cause: mujoco 4.0's `mjtJoint` enum compares unequal to a numpy integer when the enum is the
left operand (`mjtJoint.mjJNT_HINGE == np.int32(3)` is False, `np.int32(3) == mjJNT_HINGE` is
True). gymnasium_robotics.utils.mujoco_utils.get_joint_qpos / get_joint_qvel read the joint type
from `model.jnt_type` (a numpy int32) and assert `joint_type in (mjJNT_HINGE, mjJNT_SLIDE)`;
tuple membership puts the enum on the left, so the assertion fails for every hinge and slide
joint, and FrankaKitchen-v1 (whose observation reads the robot's hinge joints through them)
raises AssertionError at construction. The shim casts the joint type to a Python int before the
library compares it, and is installed only where the comparison is broken.
"""

import mujoco
import numpy as np

JOINT_QPOS_SIZE = {int(mujoco.mjtJoint.mjJNT_FREE): 7, int(mujoco.mjtJoint.mjJNT_BALL): 4}
JOINT_QVEL_SIZE = {int(mujoco.mjtJoint.mjJNT_FREE): 6, int(mujoco.mjtJoint.mjJNT_BALL): 3}


def enum_comparison_broken() -> bool:
    return not (mujoco.mjtJoint.mjJNT_HINGE == np.int32(int(mujoco.mjtJoint.mjJNT_HINGE)))


def _joint(model, name: str) -> int:
    joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
    if joint_id == -1:
        raise ValueError(f"Joint with name '{name}' is not part of the model!")
    return joint_id


def get_joint_qpos(model, data, name):
    """The joint's qpos slice (7 for a free joint, 4 for a ball, 1 for a hinge or slide)."""
    joint_id = _joint(model, name)
    start = model.jnt_qposadr[joint_id]
    return data.qpos[start:start + JOINT_QPOS_SIZE.get(int(model.jnt_type[joint_id]), 1)].copy()


def get_joint_qvel(model, data, name):
    """The joint's qvel slice (6 for a free joint, 3 for a ball, 1 for a hinge or slide)."""
    joint_id = _joint(model, name)
    start = model.jnt_dofadr[joint_id]
    return data.qvel[start:start + JOINT_QVEL_SIZE.get(int(model.jnt_type[joint_id]), 1)].copy()


def install() -> None:
    """Replace the two readers in gymnasium_robotics.utils.mujoco_utils when needed (the
    library's callers look them up in that module at call time)."""
    if not enum_comparison_broken():
        return
    from gymnasium_robotics.utils import mujoco_utils

    mujoco_utils.get_joint_qpos = get_joint_qpos
    mujoco_utils.get_joint_qvel = get_joint_qvel
