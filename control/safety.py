"""The server-side safety layer: every setpoint passes it, in order, before the driver sees it.

Order (bridge.md): 1. validation (done by ``protocol`` + ``check_finite`` here); 2. workspace
box and joint limits with margins; 3. per-tick delta / velocity / acceleration limits;
4. force threshold -> HOLD (``force_exceeded``); 5. mode gating (``check_mode``); 6. e-stop
(the watchdog). Each clamp increments a named counter that the server publishes.
Position limits are applied last again so a rate clamp can never push through them.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from armflow.control.limits import SafetyLimits
from armflow.hardware.driver import RobotInfo, RobotState


class SafetyViolation(RuntimeError):
    """A setpoint that cannot be made safe by clamping (e.g. non-finite); the servo goes to FAULT."""


def quat_normalize(q: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(q)
    return np.array([1.0, 0, 0, 0]) if n < 1e-9 else q / n


def quat_angle(q1: np.ndarray, q2: np.ndarray) -> float:
    """Rotation angle between unit quaternions (w, x, y, z) [rad]."""
    return float(2.0 * np.arccos(np.clip(abs(float(np.dot(q1, q2))), 0.0, 1.0)))


def quat_slerp(q1: np.ndarray, q2: np.ndarray, s: float) -> np.ndarray:
    """Shortest-path spherical interpolation from q1 (s=0) to q2 (s=1)."""
    dot = float(np.dot(q1, q2))
    if dot < 0:
        q2, dot = -q2, -dot
    if dot > 0.9995:
        return quat_normalize(q1 + s * (q2 - q1))
    theta = np.arccos(dot)
    return (np.sin((1 - s) * theta) * q1 + np.sin(s * theta) * q2) / np.sin(theta)


def _track_velocity(prev: np.ndarray, target: np.ndarray, prev_target: np.ndarray, dt: float,
                    a_max: float) -> np.ndarray:
    """Velocity for this tick: the target's own velocity plus a catch-up term for the tracking
    error left by earlier clamps, capped at the speed from which the error can still be closed
    without overshoot (sqrt(2 a |e|)). Without that cap a deadbeat tracker under an acceleration
    limit overshoots and oscillates after every clamp."""
    v_ff = (target - prev_target) / dt
    err = prev_target - prev
    catch_up = np.sign(err) * np.minimum(np.abs(err) / dt, np.sqrt(2.0 * a_max * np.abs(err)))
    return v_ff + catch_up


def _track_velocity_vec(prev: np.ndarray, target: np.ndarray, prev_target: np.ndarray, dt: float,
                        a_max: float) -> np.ndarray:
    """``_track_velocity`` for a Cartesian position: the catch-up term acts along the error vector."""
    err = prev_target - prev
    n = float(np.linalg.norm(err))
    catch_up = np.zeros(3) if n < 1e-12 else err / n * min(n / dt, np.sqrt(2.0 * a_max * n))
    return (target - prev_target) / dt + catch_up


class SafetyLayer:
    """Clamp setpoints to the limits; ``filter`` is called once per servo tick.

    ``prev`` is the last commanded setpoint in the same mode and ``prev_vel`` its rate, both
    kept here so rate limits apply across ticks; ``reset(mode, state)`` seeds them from the
    measured state when a mode starts.
    """

    def __init__(self, limits: SafetyLimits, info: RobotInfo):
        self.limits = limits
        self.info = info
        m = limits.joint_margin_rad
        self.q_lo = np.asarray(info.joint_pos_min_rad, float) + m
        self.q_hi = np.asarray(info.joint_pos_max_rad, float) - m
        self.qd_max = np.asarray(info.joint_vel_max_rad_s, float) * limits.joint_vel_scale
        self.box_lo = np.asarray(limits.workspace_min_m, float)
        self.box_hi = np.asarray(limits.workspace_max_m, float)
        self.clamps: Counter = Counter()
        self.prev: np.ndarray | None = None  # last safe setpoint
        self.prev_vel: np.ndarray | None = None  # its rate
        self.prev_target: np.ndarray | None = None  # last requested (pre-rate-limit) position

    # -- bookkeeping -------------------------------------------------------------------------
    def reset(self, mode: str, state: RobotState) -> None:
        """Start rate limiting from the measured state (on ARM / mode change / after HOLD)."""
        self.prev_target = None
        if mode == "joint_pos":
            self.prev, self.prev_vel = state.joint_pos_rad.astype(float).copy(), np.zeros(self.info.dof)
            self.prev_target = self.prev.copy()
        elif mode == "ee_pose":
            self.prev = np.concatenate([state.ee_pos_m, quat_normalize(np.asarray(state.ee_quat_wxyz, float))])
            self.prev_vel = np.zeros(3)
        elif mode == "joint_vel":
            self.prev, self.prev_vel = np.zeros(self.info.dof), None
        else:  # ee_delta
            self.prev, self.prev_vel = np.zeros(6), None

    def _clip(self, name: str, x: np.ndarray, lo, hi) -> np.ndarray:
        y = np.clip(x, lo, hi)
        if not np.array_equal(y, x):
            self.clamps[name] += 1
        return y

    def check_mode(self, mode: str) -> bool:
        """Mode gating: the limits file and the driver must both allow ``mode``."""
        return mode in self.limits.allowed_modes and mode in self.info.modes

    def force_exceeded(self, state: RobotState) -> bool:
        over = float(np.linalg.norm(state.ee_force_n)) > self.limits.force_max_n
        if over:
            self.clamps["force_hold"] += 1
        return over

    def resume_ok(self, mode: str, first: np.ndarray, state: RobotState) -> tuple[bool, float]:
        """Is the first waypoint after ARM within ``max_resume_delta`` of the measured pose?"""
        if mode == "joint_pos":
            dist = float(np.max(np.abs(first - state.joint_pos_rad)))
            return dist <= self.limits.max_resume_delta_rad, dist
        if mode == "ee_pose":
            dist = float(np.linalg.norm(first[:3] - state.ee_pos_m))
            return dist <= self.limits.max_resume_delta_m, dist
        return True, 0.0  # rate modes start from zero motion and are acceleration limited

    # -- the filter ---------------------------------------------------------------------------
    def filter(self, mode: str, setpoint: np.ndarray, gripper: float | None, state: RobotState,
               dt_s: float) -> tuple[np.ndarray, float | None]:
        """Return the safe ``(setpoint, gripper)`` for one tick of ``dt_s`` seconds."""
        setpoint = np.asarray(setpoint, float)
        if not np.isfinite(setpoint).all() or (gripper is not None and not np.isfinite(gripper)):
            raise SafetyViolation(f"non-finite setpoint {setpoint} / gripper {gripper}")
        if self.prev is None:
            self.reset(mode, state)
        if gripper is not None:
            gripper = float(self._clip("gripper", np.array([gripper]), 0.0, 1.0)[0])
        out = {"joint_pos": self._joint_pos, "joint_vel": self._joint_vel, "ee_pose": self._ee_pose,
               "ee_delta": self._ee_delta}[mode](setpoint, state, dt_s)
        return out, gripper

    def _joint_pos(self, q: np.ndarray, state: RobotState, dt: float) -> np.ndarray:
        q = self._clip("joint_limit", q, self.q_lo, self.q_hi)
        v = _track_velocity(self.prev, q, self.prev_target, dt, self.limits.joint_acc_max_rad_s2)
        v = self._clip("joint_vel", v, -self.qd_max, self.qd_max)
        a_max = self.limits.joint_acc_max_rad_s2 * dt
        v = self._clip("joint_acc", v, self.prev_vel - a_max, self.prev_vel + a_max)
        v = np.clip(v, -self.qd_max, self.qd_max)
        q_out = self.prev + v * dt
        # position limits win over the acceleration limit; a start outside the margins may only move inward
        q_out = np.clip(q_out, np.minimum(self.q_lo, self.prev), np.maximum(self.q_hi, self.prev))
        self.prev_vel, self.prev, self.prev_target = (q_out - self.prev) / dt, q_out, q
        return q_out

    def _joint_vel(self, qd: np.ndarray, state: RobotState, dt: float) -> np.ndarray:
        qd = self._clip("joint_vel", qd, -self.qd_max, self.qd_max)
        a_max = self.limits.joint_acc_max_rad_s2 * dt
        qd = self._clip("joint_acc", qd, self.prev - a_max, self.prev + a_max)
        q_next = state.joint_pos_rad + qd * dt
        blocked = ((q_next > self.q_hi) & (qd > 0)) | ((q_next < self.q_lo) & (qd < 0))
        if blocked.any():
            self.clamps["joint_limit"] += 1
            qd = np.where(blocked, 0.0, qd)
        self.prev = qd
        return qd

    def _ee_pose(self, pose: np.ndarray, state: RobotState, dt: float) -> np.ndarray:
        pos = self._clip("workspace", pose[:3], self.box_lo, self.box_hi)
        quat = quat_normalize(pose[3:7])
        prev_pos, prev_quat = self.prev[:3], self.prev[3:7]
        target_prev = prev_pos if self.prev_target is None else self.prev_target
        v = _track_velocity_vec(prev_pos, pos, target_prev, dt, self.limits.ee_acc_max_m_s2)
        v_max = self.limits.ee_vel_max_m_s
        if np.linalg.norm(v) > v_max:
            self.clamps["ee_vel"] += 1
            v = v * (v_max / np.linalg.norm(v))
        dv, a_max = v - self.prev_vel, self.limits.ee_acc_max_m_s2 * dt
        if np.linalg.norm(dv) > a_max:
            self.clamps["ee_acc"] += 1
            v = self.prev_vel + dv * (a_max / np.linalg.norm(dv))
            v = v * min(1.0, v_max / max(np.linalg.norm(v), 1e-12))
        pos_out = np.clip(prev_pos + v * dt, np.minimum(self.box_lo, prev_pos), np.maximum(self.box_hi, prev_pos))
        angle, rot_max = quat_angle(prev_quat, quat), self.limits.ee_rot_vel_max_rad_s * dt
        if angle > rot_max:
            self.clamps["ee_rot_vel"] += 1
            quat = quat_slerp(prev_quat, quat, rot_max / angle)
        self.prev_vel, self.prev_target = (pos_out - prev_pos) / dt, pos
        self.prev = np.concatenate([pos_out, quat_normalize(quat)])
        return self.prev.copy()

    def _ee_delta(self, delta: np.ndarray, state: RobotState, dt: float) -> np.ndarray:
        lim = self.limits.ee_delta_max
        delta = self._clip("ee_delta_max", delta, -lim, lim)
        rate = self.limits.ee_delta_rate_max
        delta = self._clip("ee_delta_rate", delta, self.prev - rate, self.prev + rate)
        pos = np.asarray(state.ee_pos_m, float)
        outward = ((pos >= self.box_hi) & (delta[:3] > 0)) | ((pos <= self.box_lo) & (delta[:3] < 0))
        if outward.any():
            self.clamps["workspace"] += 1
            delta = delta.copy()
            delta[:3] = np.where(outward, 0.0, delta[:3])
        self.prev = delta
        return delta
