"""Minimal MuJoCo scenes for the sim arm driver: one robosuite arm MJCF on a table, a simple gripper.

The arm's MJCF comes from robosuite (``robosuite/models/assets/robots/<arm>/robot.xml``); its torque
motors are replaced by joint position servos (gravity compensated), and a two-finger parallel gripper
plus an ``ee_site`` between the fingertips are attached to the arm's ``right_hand`` body.
Frames: the robot base is the world origin; the table top is the plane z = 0.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np


@dataclass(frozen=True)
class ArmSpec:
    """Static facts about one arm model (limits in the vendor's datasheet units: rad, rad/s)."""

    asset: str  # folder under robosuite/models/assets/robots
    home_rad: tuple[float, ...]
    joint_vel_max_rad_s: tuple[float, ...]
    kp: tuple[float, ...]  # position servo stiffness [N m / rad]
    base_height_m: float  # robot base above the table top [m]


ARMS: dict[str, ArmSpec] = {
    "panda": ArmSpec(
        asset="panda",
        home_rad=(0.0, np.pi / 16, 0.0, -np.pi / 2 - np.pi / 3, 0.0, np.pi - 0.2, np.pi / 4),
        joint_vel_max_rad_s=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61),
        kp=(3000.0, 3000.0, 2000.0, 1500.0, 800.0, 500.0, 300.0),
        base_height_m=0.0,
    ),
    "ur5e": ArmSpec(
        asset="ur5e",
        home_rad=(-0.470, -1.735, 2.480, -2.275, -1.590, -1.991),
        joint_vel_max_rad_s=(3.14, 3.14, 3.14, 3.14, 3.14, 3.14),
        kp=(4000.0, 4000.0, 2000.0, 800.0, 500.0, 300.0),
        base_height_m=0.0,
    ),
    "xarm7": ArmSpec(
        asset="xarm7",
        home_rad=(0.0, 0.0, 0.0, 0.39 * np.pi, 0.0, 0.39 * np.pi, 0.0),
        joint_vel_max_rad_s=(3.14, 3.14, 3.14, 3.14, 3.14, 3.14, 3.14),
        kp=(3000.0, 3000.0, 2000.0, 1500.0, 800.0, 500.0, 300.0),
        base_height_m=0.0,
    ),
}

FINGER_TRAVEL_M = 0.04  # each finger's stroke from open to closed [m]
HAND_BODY = "right_hand"
EE_SITE = "ee_site"
GRIPPER_BODIES = ("gripper_palm", "finger_left", "finger_right")


def robosuite_robot_xml(asset: str) -> Path:
    """Path of robosuite's MJCF for ``asset`` without importing robosuite (its import is slow and noisy)."""
    spec = importlib.util.find_spec("robosuite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("robosuite is not installed; the sim arm needs its robot MJCF assets")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "assets" / "robots" / asset / "robot.xml"
    if not path.exists():
        raise FileNotFoundError(f"robot MJCF not found: {path}")
    return path


def _add_gripper(spec: mujoco.MjSpec, hand: mujoco.MjsBody) -> None:
    """A palm, two slide fingers (0 = open, FINGER_TRAVEL_M = closed) and the EE site at the fingertips."""
    palm = hand.add_body(name="gripper_palm", pos=[0, 0, 0.02])
    palm.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.02, 0.06, 0.02], rgba=[0.2, 0.2, 0.2, 1], mass=0.3)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        finger = palm.add_body(name=f"finger_{side}", pos=[0, sign * 0.05, 0.06])
        finger.add_joint(
            name=f"finger_{side}_joint", type=mujoco.mjtJoint.mjJNT_SLIDE, axis=[0, -sign, 0],
            range=[0, FINGER_TRAVEL_M], damping=5.0, armature=0.01,
        )
        finger.add_geom(
            name=f"finger_{side}_pad", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.01, 0.008, 0.04],
            rgba=[0.6, 0.6, 0.6, 1], mass=0.05, friction=[1.5, 0.01, 0.001],
        )
        act = spec.add_actuator(name=f"finger_{side}", target=f"finger_{side}_joint",
                                trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=200.0, dampratio=1.0)
        act.ctrlrange = [0, FINGER_TRAVEL_M]
        act.forcerange = [-40.0, 40.0]
        act.forcelimited = True
    palm.add_site(name=EE_SITE, pos=[0, 0, 0.09], size=[0.005, 0.005, 0.005], rgba=[1, 0, 0, 0.5])


def _add_world(spec: mujoco.MjSpec, size_px: tuple[int, int]) -> None:
    spec.visual.quality.shadowsize = 0  # fast software rendering (see ecosystem.md)
    spec.visual.quality.offsamples = 0
    spec.visual.global_.offwidth = max(size_px[0], 640)
    spec.visual.global_.offheight = max(size_px[1], 480)
    world = spec.worldbody
    world.add_light(pos=[0.5, 0, 2.0], dir=[0, 0, -1], diffuse=[0.8, 0.8, 0.8])
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=[0, 0, -0.8],
                   rgba=[0.3, 0.35, 0.4, 1])
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.4, 0.5, 0.4], pos=[0.65, 0, -0.4],
                   rgba=[0.75, 0.6, 0.45, 1], contype=1, conaffinity=3)
    world.add_camera(name="front", pos=[1.6, 0.0, 0.9], xyaxes=[0, 1, 0, -0.45, 0, 0.9])
    world.add_camera(name="side", pos=[0.5, -1.4, 0.7], xyaxes=[1, 0, 0, 0, 0.45, 0.9])


def build_arm_model(arm: str, timestep_s: float = 0.002, image_size_px: tuple[int, int] = (640, 480)
                    ) -> mujoco.MjModel:
    """Compile the scene for ``arm`` (a key of ``ARMS``): position servos on every arm joint, then 2 finger servos."""
    if arm not in ARMS:
        raise KeyError(f"unknown sim arm {arm!r}; valid arms: {', '.join(ARMS)}")
    info = ARMS[arm]
    spec = mujoco.MjSpec.from_file(str(robosuite_robot_xml(info.asset)))
    for act in list(spec.actuators):
        spec.delete(act)
    spec.option.timestep = timestep_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    arm_joints = [j.name for j in spec.joints]
    for name, kp in zip(arm_joints, info.kp):
        joint = spec.joint(name)
        joint.armature = max(joint.armature, 0.05)
        act = spec.add_actuator(name=f"servo_{name}", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=kp, dampratio=1.0)
        act.ctrlrange = list(joint.range)
    base = spec.body("base")
    base.pos = [0, 0, info.base_height_m]
    _add_gripper(spec, spec.body(HAND_BODY))
    for body in spec.bodies:
        body.gravcomp = 1.0  # an ideal gravity model, like the vendors' controllers
    for geom in spec.geoms:  # robot geoms: no self-collision, but they touch the table and objects
        geom.contype, geom.conaffinity = 2, 1
    _add_world(spec, image_size_px)
    return spec.compile()


def arm_joint_names(model: mujoco.MjModel) -> tuple[str, ...]:
    """Names of the arm's hinge joints (all joints except the two finger slides), in qpos order."""
    names = []
    for j in range(model.njnt):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
        if not name.startswith("finger_"):
            names.append(name)
    return tuple(names)


def subtree_body_ids(model: mujoco.MjModel, root: str) -> np.ndarray:
    """Ids of ``root`` and every body below it (used to find the EE's contacts)."""
    root_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, root)
    ids = [b for b in range(model.nbody) if _is_descendant(model, b, root_id)]
    return np.asarray(ids, dtype=int)


def _is_descendant(model: mujoco.MjModel, body: int, root: int) -> bool:
    while body > 0:
        if body == root:
            return True
        body = int(model.body_parentid[body])
    return root == 0
