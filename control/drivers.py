"""Driver plumbing for the servo process: driver construction by name, per-mode setpoint widths, and
``RobotState`` -> wire arrays / scalars for the STATE message."""
from __future__ import annotations

import importlib

import numpy as np

from armflow.hardware.driver import DriverError, RobotState

#: Driver names served from armflow.control itself; anything else goes to armflow.hardware.make_driver.
LOCAL_DRIVERS = {"fake_arm": ("armflow.control.fake_arm", "make_fake_arm")}


def action_dims(dof: int) -> dict[str, int]:
    """Setpoint width per mode: joints, xyz + quaternion (w, x, y, z), or a 6-D twist/delta."""
    return {"joint_pos": dof, "joint_vel": dof, "ee_pose": 7, "ee_delta": 6}


def make_driver(name: str, options: dict):
    if name in LOCAL_DRIVERS:
        module, attr = LOCAL_DRIVERS[name]
        return getattr(importlib.import_module(module), attr)(**options)
    hardware = importlib.import_module("armflow.hardware")
    if not hasattr(hardware, "make_driver"):
        raise DriverError(f"robot {name!r}: armflow.hardware.make_driver is not available; "
                          f"local drivers: {sorted(LOCAL_DRIVERS)}")
    return hardware.make_driver(name, **options)


def state_arrays(st: RobotState) -> dict[str, np.ndarray]:
    arrays = {"joint_pos": st.joint_pos_rad, "joint_vel": st.joint_vel_rad_s, "ee_pos": st.ee_pos_m,
              "ee_quat": st.ee_quat_wxyz, "ee_force": st.ee_force_n}
    for key, value in st.extras.items():
        if isinstance(value, np.ndarray) and key.startswith("observation."):
            arrays[key] = value
    return arrays


def scalar_extras(extras: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in extras.items()
            if isinstance(v, (bool, int, float, str, np.generic))}
