"""MJCF for the native Panda cube scenes, built for speed (compiled once per process, ``MjModel`` reused).

The kinematic chain, joint ranges and meshes are the Franka Panda's as shipped with robosuite
(``robosuite/models/assets/robots/panda`` and ``grippers/meshes/panda_gripper``); the XML is our own.
Speed choices: arm links are visual only (no collision), collision is boxes only (hand, finger pads,
cubes, table), joint position servos with gravity compensation, implicitfast integration at 5 ms,
no shadows / no multisampling (fast osmesa rendering).

World frame: robot base at the origin, table top at z = 0, x forward, z up.
"""
from __future__ import annotations

import functools
import os

# Offscreen rendering must pick its GL backend before mujoco is imported (no display on CPU boxes).
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import mujoco  # noqa: E402

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_joint1", "finger_joint2")
# Home posture [rad]: grip site at (0.45, 0, 0.20) m pointing straight down (solved once by IK),
# grip-site frame = world rotated pi about x (quat wxyz (0, 1, 0, 0)); fingers close along world y.
HOME_QPOS = (0.0, -0.07303, 0.0, -2.54601, 0.0, 2.47298, 0.78540)
HOME_EE_QUAT = (0.0, 1.0, 0.0, 0.0)
# Position-servo gains per joint [N m / rad] and damping [N m s / rad]; torque limits are Panda's.
_KP = (1200, 1200, 1000, 1000, 400, 300, 160)
_KV = (84, 84, 70, 70, 21, 17, 8.4)
_TAU_MAX = (87, 87, 87, 87, 12, 12, 12)
_RANGES = ((-2.8973, 2.8973), (-1.7628, 1.7628), (-2.8973, 2.8973), (-3.0718, -0.0698),
           (-2.8973, 2.8973), (-0.0175, 3.7525), (-2.8973, 2.8973))
# link name, pos, quat (parent frame), inertial (pos, mass, diag inertia): Panda data as in robosuite.
_LINKS = (
    ("link1", "0 0 0.333", "1 0 0 0", "0 0 -0.07", 3.0, 0.3),
    ("link2", "0 0 0", "0.707107 -0.707107 0 0", "0 -0.1 0", 3.0, 0.3),
    ("link3", "0 -0.316 0", "0.707107 0.707107 0 0", "0.04 0 -0.05", 2.0, 0.2),
    ("link4", "0.0825 0 0", "0.707107 0.707107 0 0", "-0.04 0.05 0", 2.0, 0.2),
    ("link5", "-0.0825 0.384 0", "0.707107 -0.707107 0 0", "0 0 -0.15", 2.0, 0.2),
    ("link6", "0 0 0", "0.707107 0.707107 0 0", "0.06 0 0", 1.5, 0.1),
    ("link7", "0.088 0 0", "0.707107 0.707107 0 0", "0 0 0.08", 0.5, 0.05),
)
CUBE_COLORS = ("0.85 0.2 0.2 1", "0.2 0.35 0.85 1")


def robosuite_asset_dir() -> str:
    """Folder holding robosuite's robot/gripper assets (meshes are read from there, not copied)."""
    import importlib.util

    spec = importlib.util.find_spec("robosuite")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("armflow.sim.arm_mjcf needs robosuite installed for the Panda meshes")
    return os.path.join(list(spec.submodule_search_locations)[0], "models", "assets")


def _arm_xml() -> str:
    """Nested link bodies, innermost (hand + fingers) first built, then wrapped outward."""
    inner = _hand_xml()
    for i in reversed(range(7)):
        name, pos, quat, ipos, mass, inertia = _LINKS[i]
        lo, hi = _RANGES[i]
        damping = 0.1 if i < 5 else 0.01
        inner = (
            f'<body name="{name}" pos="{pos}" quat="{quat}" gravcomp="1">'
            f'<inertial pos="{ipos}" mass="{mass}" diaginertia="{inertia} {inertia} {inertia}"/>'
            f'<joint name="joint{i + 1}" axis="0 0 1" range="{lo} {hi}" damping="{damping}" armature="0.1"/>'
            f'<geom class="vis" mesh="link{i + 1}"/>{inner}</body>'
        )
    return f'<body name="link0" pos="0 0 0"><geom class="vis" mesh="link0"/>{inner}</body>'


def _hand_xml() -> str:
    """Hand at the flange (-45 deg about z, as on the real Panda); fingers close along hand y."""
    pad = 'type="box" size="0.009 0.004 0.011" class="pad"'
    return (
        '<body name="hand" pos="0 0 0.107" quat="0.92388 0 0 -0.382683" gravcomp="1">'
        '<inertial pos="0 0 0.04" mass="0.7" diaginertia="0.003 0.003 0.002"/>'
        '<geom class="vis" mesh="hand"/>'
        '<geom name="hand_box" type="box" size="0.03 0.1 0.03" pos="0 0 0.03" class="col"/>'
        '<site name="grip_site" pos="0 0 0.097" size="0.005" rgba="1 0 0 0" group="3"/>'
        '<camera name="wrist" pos="0.06 0 0.02" quat="0 0.707107 0.707107 0" fovy="75"/>'
        '<body name="left_finger" pos="0 0 0.0524" gravcomp="1">'
        '<inertial pos="0 0 0.03" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>'
        '<joint name="finger_joint1" type="slide" axis="0 1 0" range="0 0.04" damping="20" armature="0.1"/>'
        '<geom class="vis" mesh="finger"/>'
        f'<geom name="left_pad" pos="0 0.0035 0.041" {pad}/></body>'
        '<body name="right_finger" pos="0 0 0.0524" gravcomp="1">'
        '<inertial pos="0 0 0.03" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>'
        '<joint name="finger_joint2" type="slide" axis="0 1 0" range="-0.04 0" damping="20" armature="0.1"/>'
        '<geom class="vis" mesh="finger" quat="0 0 0 1"/>'
        f'<geom name="right_pad" pos="0 -0.0035 0.041" {pad}/></body>'
        '</body>'
    )


def _cube_xml(index: int, half_m: float) -> str:
    return (
        f'<body name="cube{index}" pos="0.5 {0.15 * index} {half_m}"><freejoint name="cube{index}_joint"/>'
        f'<geom name="cube{index}" type="box" size="{half_m} {half_m} {half_m}" density="500" '
        f'rgba="{CUBE_COLORS[index % len(CUBE_COLORS)]}" class="col" group="1"/></body>'
    )


def _actuators_xml() -> str:
    arm = "".join(
        f'<position name="act_joint{i + 1}" joint="joint{i + 1}" kp="{_KP[i]}" kv="{_KV[i]}" '
        f'ctrlrange="{_RANGES[i][0]} {_RANGES[i][1]}" forcerange="{-_TAU_MAX[i]} {_TAU_MAX[i]}"/>'
        for i in range(7)
    )
    fingers = (
        '<position name="act_finger1" joint="finger_joint1" kp="800" kv="15" ctrlrange="0 0.04" forcerange="-20 20"/>'
        '<position name="act_finger2" joint="finger_joint2" kp="800" kv="15" ctrlrange="-0.04 0" forcerange="-20 20"/>'
    )
    return f"<actuator>{arm}{fingers}</actuator>"


def scene_xml(n_cubes: int, cube_half_m: float, sim_dt_s: float) -> str:
    """The full scene: Panda on a table with ``n_cubes`` free cubes of half-size ``cube_half_m`` [m]."""
    assets = robosuite_asset_dir()
    arm_meshes = "".join(
        f'<mesh name="link{i}" file="{assets}/robots/panda/meshes/link{i}.stl"/>' for i in range(8)
    )
    grip = f"{assets}/grippers/meshes/panda_gripper"
    cubes = "".join(_cube_xml(i, cube_half_m) for i in range(n_cubes))
    return f"""<mujoco model="armflow_panda_cubes">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{sim_dt_s}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual><quality shadowsize="0" offsamples="0"/><headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5"/><global offwidth="640" offheight="480"/></visual>
  <default>
    <default class="vis"><geom type="mesh" contype="0" conaffinity="0" group="1" rgba="0.92 0.92 0.94 1"/></default>
    <default class="col"><geom contype="1" conaffinity="1" condim="4" friction="1 0.01 0.0001" solimp="0.95 0.99 0.001" group="3"/></default>
    <default class="pad"><geom contype="1" conaffinity="1" condim="4" friction="1.5 0.02 0.0001" solimp="0.95 0.99 0.001"
      rgba="0.3 0.3 0.3 1" group="1"/></default>
  </default>
  <asset>{arm_meshes}
    <mesh name="hand" file="{grip}/hand.stl"/><mesh name="finger" file="{grip}/finger.stl"/>
  </asset>
  <worldbody>
    <light pos="0.4 0 1.5" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 -0.8" rgba="0.3 0.3 0.32 1" contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="0.5 0.6 0.02" pos="0.45 0 -0.02" rgba="0.6 0.5 0.4 1" class="col" group="1"/>
    <camera name="agentview" pos="1.0 0 0.75" xyaxes="0 1 0 -0.735 0 0.678" fovy="50"/>
    <camera name="topview" pos="0.5 0 0.9" xyaxes="0 -1 0 1 0 0" fovy="50"/>
    <camera name="video" pos="1.35 -0.95 0.85" xyaxes="0.671 0.742 0 -0.329 0.297 0.896" fovy="50"/>
    <body name="base" pos="0 0 0.0">{_arm_xml()}</body>
    {cubes}
  </worldbody>
  <contact><exclude body1="left_finger" body2="right_finger"/><exclude body1="link0" body2="link1"/></contact>
  {_actuators_xml()}
</mujoco>"""


@functools.lru_cache(maxsize=8)
def load_model(n_cubes: int, cube_half_m: float, sim_dt_s: float) -> mujoco.MjModel:
    """Compile the scene once per (n_cubes, cube size, timestep) and process; callers must not mutate it."""
    return mujoco.MjModel.from_xml_string(scene_xml(n_cubes, cube_half_m, sim_dt_s))
