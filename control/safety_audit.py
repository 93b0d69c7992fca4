"""How close a driver driven through the safety layer comes to each limit (1.0 = at the limit).

One implementation for the property tests (``tests/control/test_control_safety_props.py``) and
``armflow bench bridge``: setpoints go through ``SafetyLayer.filter`` into the real driver, one servo
tick each, and the ratios are measured on what the arm reaches (consecutive measured states) and, when
the driver exposes them, on the joint targets its servos were sent. Numpy only (robot side).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from armflow.control.safety import SafetyLayer, quat_angle
from armflow.hardware.driver import Driver, ee_points


@dataclass
class Trace:
    """Measured states (N + 1 rows: the start, then after each command) and the servo joint targets."""

    q: list = field(default_factory=list)  # joint angles [rad]
    ee: list = field(default_factory=list)  # EE position [m]
    quat: list = field(default_factory=list)  # EE orientation (w, x, y, z)
    q_target: list = field(default_factory=list)  # joint targets sent to the servos [rad] (optional)


def drive(driver: Driver, layer: SafetyLayer, mode: str, setpoints: np.ndarray, dt_s: float,
          joint_targets: Callable[[], np.ndarray] | None = None) -> Trace:
    """Send each setpoint (one per tick) through ``layer.filter`` and ``driver.command``; record the states."""
    state = driver.read_state()
    layer.reset(mode, state)
    trace = Trace()

    def record(st) -> None:
        trace.q.append(st.joint_pos_rad.copy())
        trace.ee.append(st.ee_pos_m.copy())
        trace.quat.append(np.asarray(st.ee_quat_wxyz, float).copy())
        if joint_targets is not None:
            trace.q_target.append(np.asarray(joint_targets(), float).copy())

    record(state)
    for sp in setpoints:
        safe, grip = layer.filter(mode, sp, None, state, dt_s)
        driver.command(mode, safe, grip)
        state = driver.read_state()
        record(state)
    return trace


def _range_ratio(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """max |x - centre| / half-width over samples and axes: <= 1 inside [lo, hi]."""
    return float(np.max(np.abs(x - (lo + hi) / 2) / ((hi - lo) / 2))) if len(x) else 0.0


def _speed_ratio(x: np.ndarray, dt_s: float, v_max) -> float:
    """max per-axis |dx/dt| / v_max over consecutive samples (v_max per axis, or a norm bound if scalar)."""
    if len(x) < 2:
        return 0.0
    v = np.diff(x, axis=0) / dt_s
    if np.ndim(v_max) == 0:
        return float(np.max(np.linalg.norm(v, axis=1)) / v_max)
    return float(np.max(np.abs(v) / v_max))


def limit_ratios(trace: Trace, layer: SafetyLayer, dt_s: float) -> dict[str, float]:
    """Max ratio to each limit: ``workspace`` / ``joint_range`` (box and joint limits minus margins,
    1 = on the boundary; ``gripper_workspace``: the box on the gripper's corners when the driver declares
    them), ``joint_vel``, ``ee_vel``, ``ee_rot_vel`` on the reached states; the ``target_`` keys on the
    servo joint targets (their EE position through ``layer.fk`` when it has one)."""
    lim = layer.limits
    q, ee, quat = np.array(trace.q), np.array(trace.ee), np.array(trace.quat)
    rot = [quat_angle(a, b) for a, b in zip(quat[:-1], quat[1:])]
    out = {"workspace": _range_ratio(ee, layer.box_lo, layer.box_hi),
           "joint_range": _range_ratio(q, layer.q_lo, layer.q_hi),
           "joint_vel": _speed_ratio(q, dt_s, layer.qd_max),
           "ee_vel": _speed_ratio(ee, dt_s, lim.ee_vel_max_m_s),
           "ee_rot_vel": float(max(rot, default=0.0) / dt_s / lim.ee_rot_vel_max_rad_s)}
    if len(layer.points):  # the gripper's corners (RobotInfo.ee_points_m) must keep the box too
        pts = np.vstack([ee_points(p, u, layer.points) for p, u in zip(ee, quat)])
        out["gripper_workspace"] = _range_ratio(pts, layer.box_lo, layer.box_hi)
    if trace.q_target:
        qt = np.array(trace.q_target)
        out["target_joint_range"] = _range_ratio(qt, layer.q_lo, layer.q_hi)
        out["target_joint_vel"] = _speed_ratio(qt, dt_s, layer.qd_max)
        if layer.fk is not None:
            poses = [layer.fk(x) for x in qt]
            pos = np.array([p for p, _ in poses])
            ang = [quat_angle(a, b) for (_, a), (_, b) in zip(poses[:-1], poses[1:])]
            out["target_workspace"] = _range_ratio(pos, layer.box_lo, layer.box_hi)
            out["target_ee_vel"] = _speed_ratio(pos, dt_s, lim.ee_vel_max_m_s)
            out["target_ee_rot_vel"] = float(max(ang, default=0.0) / dt_s / lim.ee_rot_vel_max_rad_s)
    return out


def merge_max(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Key-wise maximum of two ratio dicts."""
    return {k: max(a.get(k, 0.0), b.get(k, 0.0)) for k in sorted(set(a) | set(b))}
