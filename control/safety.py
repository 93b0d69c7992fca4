"""The server-side safety layer: every setpoint passes it, in order, before the driver sees it.

Order (bridge.md): 1. validation (done by ``protocol`` + ``check_finite`` here); 2. workspace
box and joint limits with margins; 3. per-tick delta / velocity / acceleration limits;
4. force threshold -> HOLD (``force_exceeded``); 5. mode gating (``check_mode``); 6. e-stop
(the watchdog). Each clamp increments a named counter that the server publishes.
Every limit holds on what the driver is commanded, in every mode (issue 10):

- positions: the *predicted* next pose (last commanded target + this step) must stay in the box and
  inside the joint limits minus margins; a start outside may only move inward. Joint modes check the
  box through the driver's forward kinematics when it offers one (``fk``); joint_vel integrates its
  own commanded target (the driver's), never the measured q.
- speeds: ee_delta is converted to a Cartesian velocity with the driver's declared scale
  (``RobotInfo.ee_delta_*``) and limited like ee_pose (speed, acceleration, rotation speed).
- arm links: with the driver's ``forward_link_points`` (``RobotInfo.link_radii_m``) the spheres around the
  arm's links keep the box too (its floor is the table plane), so no link strikes the table: joint modes
  check them on the predicted joint target (``limit_joint_step``); the Cartesian modes carry them rigidly
  with the commanded EE pose from where they are in the measured EE frame (exact for the wrist and flange,
  which ride with the hand; first order for the elbow), where the gripper corners are checked; a driver
  with its own IK checks them exactly on its joint targets (``MotionLimits.link_radii_m``).
- walls are approached on a braking curve (``stop_speed``), so stopping at a limit never needs more
  than the acceleration limit. Position limits are applied last again so a rate clamp can never push
  through them.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from armflow.control.limits import SafetyLimits
from armflow.hardware.driver import (ForwardLinks, MotionLimits, RobotInfo, RobotState, box_excess,
                                    limit_joint_step, quat_angle, quat_to_mat, rotvec_quat_mul, sphere_excess,
                                    stop_speed)


class SafetyViolation(RuntimeError):
    """A setpoint that cannot be made safe by clamping (e.g. non-finite); the servo goes to FAULT."""


def quat_normalize(q: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(q)
    return np.array([1.0, 0, 0, 0]) if n < 1e-9 else q / n


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

    Kept across ticks, seeded from the measured state by ``reset(mode, state)`` when a mode starts:
    ``prev``, the last safe setpoint (ee_delta: the last action) and ``prev_vel`` its rate (ee_pose and
    ee_delta: the commanded Cartesian velocity [m/s]); ``q_cmd``, the joint target a joint_vel driver
    integrates; ``ee_target``, the EE position [m] a "target"-anchored ee_delta accumulates onto.
    ``fk(q_rad) -> (ee position [m], quaternion (w, x, y, z))`` in the base frame, the driver's forward
    kinematics when it has one (``forward_pose``), adds the box and the EE speed limits to the joint modes.
    ``link_fk(q_rad) -> (L, 3)``, the centres of the link spheres (``RobotInfo.link_radii_m``): by default the
    ``forward_link_points`` of the driver whose ``forward_pose`` is ``fk``, so every layer built on a driver's
    kinematics checks its links; without one, no link check.
    """

    def __init__(self, limits: SafetyLimits, info: RobotInfo,
                 fk: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                 link_fk: ForwardLinks | None = None):
        self.limits = limits
        self.info = info
        self.fk = fk
        if link_fk is None:
            link_fk = getattr(getattr(fk, "__self__", None), "forward_link_points", None)
        self.link_radii = np.asarray(info.link_radii_m, float).reshape(-1)
        self.link_fk = link_fk if len(self.link_radii) else None
        m = limits.joint_margin_rad
        self.q_lo = np.asarray(info.joint_pos_min_rad, float) + m
        self.q_hi = np.asarray(info.joint_pos_max_rad, float) - m
        self.qd_max = np.asarray(info.joint_vel_max_rad_s, float) * limits.joint_vel_scale
        self.box_lo = np.asarray(limits.workspace_min_m, float)
        self.box_hi = np.asarray(limits.workspace_max_m, float)
        self.points = np.asarray(info.ee_points_m, float).reshape(-1, 3)  # gripper points in the EE frame [m]
        if info.ee_delta_anchor not in ("target", "measured"):
            raise ValueError(f"{info.name}: RobotInfo.ee_delta_anchor {info.ee_delta_anchor!r}; "
                             "expected 'target' or 'measured'")
        scales = (info.ee_delta_m_per_unit, info.ee_delta_rad_per_unit, *info.ee_delta_tracking)
        if not all(np.isfinite(x) and x > 0 for x in scales):
            raise ValueError(f"{info.name}: RobotInfo ee_delta_m_per_unit / ee_delta_rad_per_unit / "
                             f"ee_delta_tracking must be finite and > 0, got {scales}")
        self.clamps: Counter = Counter()
        self._motion = self.motion_limits()
        self.prev: np.ndarray | None = None  # last safe setpoint
        self.prev_vel: np.ndarray | None = None  # its rate
        self.prev_target: np.ndarray | None = None  # last requested (pre-rate-limit) position
        self.q_cmd: np.ndarray | None = None  # joint_vel: the integrated joint target [rad]
        self.ee_target: np.ndarray | None = None  # ee_delta ("target" anchor): the EE position target [m]

    def motion_limits(self) -> MotionLimits:
        """The limits a driver's own IK / integration must keep (``Driver.set_motion_limits``)."""
        lim = self.limits
        return MotionLimits(self.q_lo.copy(), self.q_hi.copy(), self.qd_max.copy(), self.box_lo.copy(),
                            self.box_hi.copy(), lim.ee_vel_max_m_s, lim.ee_rot_vel_max_rad_s,
                            lim.joint_acc_max_rad_s2, self.points.copy(), self.link_radii.copy())

    # -- bookkeeping -------------------------------------------------------------------------
    def reset(self, mode: str, state: RobotState) -> None:
        """Start rate limiting from the measured state (on ARM / mode change / after HOLD)."""
        self.prev_target = None
        q = np.asarray(state.joint_pos_rad, float).copy()
        if mode == "joint_pos":
            self.prev, self.prev_vel, self.prev_target = q, np.zeros(self.info.dof), q.copy()
        elif mode == "ee_pose":
            self.prev = np.concatenate([state.ee_pos_m, quat_normalize(np.asarray(state.ee_quat_wxyz, float))])
            self.prev_vel = np.zeros(3)
        elif mode == "joint_vel":
            self.prev, self.prev_vel, self.q_cmd = np.zeros(self.info.dof), None, q
        else:  # ee_delta
            self.prev, self.prev_vel = np.zeros(6), np.zeros(3)
            self.ee_target = np.asarray(state.ee_pos_m, float).copy()

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

    # -- joint modes ----------------------------------------------------------------------------
    def _joint_step(self, q_from: np.ndarray, v: np.ndarray, v_prev: np.ndarray, dt: float) -> np.ndarray:
        """Safe joint velocity [rad/s] for one tick from the commanded ``q_from`` (``limit_joint_step``: speed,
        acceleration, braking before the joint limits minus margins, the EE speeds and the box through ``fk``)."""
        return limit_joint_step(self._motion, q_from, v, v_prev, dt, self.fk, self.clamps, self.link_fk)

    def _joint_pos(self, q: np.ndarray, state: RobotState, dt: float) -> np.ndarray:
        q = self._clip("joint_limit", q, self.q_lo, self.q_hi)
        v = _track_velocity(self.prev, q, self.prev_target, dt, self.limits.joint_acc_max_rad_s2)
        v = self._joint_step(self.prev, v, self.prev_vel, dt)
        q_out = self.prev + v * dt
        # position limits win over the acceleration limit; a start outside the margins may only move inward
        q_out = np.clip(q_out, np.minimum(self.q_lo, self.prev), np.maximum(self.q_hi, self.prev))
        self.prev_vel, self.prev, self.prev_target = (q_out - self.prev) / dt, q_out, q
        return q_out

    def _joint_vel(self, qd: np.ndarray, state: RobotState, dt: float) -> np.ndarray:
        """The limits act on the joint target the driver integrates (``q_cmd``), not on the measured q
        (which lags it: checking the measured q let the target run into the hard limit, issue 10)."""
        qd = self._joint_step(self.q_cmd, qd, self.prev, dt)
        self.q_cmd = self.q_cmd + qd * dt
        self.prev = qd
        return qd

    # -- Cartesian modes ------------------------------------------------------------------------
    def _cart_velocity(self, v: np.ndarray, pos: np.ndarray, dt: float, box_lo: np.ndarray,
                       box_hi: np.ndarray) -> np.ndarray:
        """Cartesian velocity [m/s] from ``pos``: speed, acceleration (from ``prev_vel``), braking before
        the walls of the EE position's box ``box_lo``..``box_hi`` (``_ee_box``; from outside: only inward)."""
        v_max, a_max = self.limits.ee_vel_max_m_s, self.limits.ee_acc_max_m_s2
        if np.linalg.norm(v) > v_max:
            self.clamps["ee_vel"] += 1
            v = v * (v_max / np.linalg.norm(v))
        dv = v - self.prev_vel
        if np.linalg.norm(dv) > a_max * dt:
            self.clamps["ee_acc"] += 1
            v = self.prev_vel + dv * (a_max * dt / np.linalg.norm(dv))
            v = v * min(1.0, v_max / max(np.linalg.norm(v), 1e-12))
        lo, hi = stop_speed(pos - box_lo, a_max, dt), stop_speed(box_hi - pos, a_max, dt)
        return self._clip("workspace", v, -lo, hi)

    def _carried(self, state: RobotState) -> tuple[np.ndarray, np.ndarray]:
        """The points the Cartesian modes keep in the box, in the EE frame, with their radii: the gripper
        corners (radius 0) and the link spheres where the measured state has them relative to its EE (carried
        rigidly with the commanded pose: exact for links that ride with the hand, first order for the rest)."""
        if self.link_fk is None:
            return self.points, np.zeros(len(self.points))
        rot = quat_to_mat(np.asarray(state.ee_quat_wxyz, float))
        links = (self.link_fk(np.asarray(state.joint_pos_rad, float)) - state.ee_pos_m) @ rot
        return np.vstack([self.points, links]), np.concatenate([np.zeros(len(self.points)), self.link_radii])

    def _ee_box(self, quat: np.ndarray, pts: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The box the EE position must keep so that the points ``pts`` (EE frame, ``_carried``) at orientation
        ``quat`` stay in the workspace box too, each with its radius inside the walls."""
        if not len(pts):
            return self.box_lo, self.box_hi
        off = pts @ quat_to_mat(quat).T
        r = radii[:, None]
        return (np.maximum(self.box_lo, (self.box_lo + r - off).max(axis=0)),
                np.minimum(self.box_hi, (self.box_hi - r - off).min(axis=0)))

    def _rot_inside(self, pos: np.ndarray, q_from: np.ndarray, q_to: np.ndarray, pts: np.ndarray,
                    radii: np.ndarray) -> float:
        """Fraction of the rotation ``q_from`` -> ``q_to`` at ``pos`` that keeps the points ``pts`` no farther
        out of the box than at ``q_from`` (halved until it does)."""
        if not len(pts):
            return 1.0
        out = lambda q: sphere_excess(pos + pts @ quat_to_mat(q).T, radii, self.box_lo, self.box_hi)  # noqa: E731
        ref, s = max(out(q_from), box_excess(pos, self.box_lo, self.box_hi)), 1.0
        while s > 1e-3 and out(quat_slerp(q_from, q_to, s)) > ref + 1e-9:
            s *= 0.5
        s = s if s > 1e-3 else 0.0
        if s < 1.0:
            self.clamps["workspace"] += 1
        return s

    def _rot_limit(self, angle_rad: float, dt: float) -> float:
        """Fraction of a rotation of ``angle_rad`` in one tick allowed by ``ee_rot_vel_max_rad_s``."""
        rot_max = self.limits.ee_rot_vel_max_rad_s * dt
        if angle_rad <= rot_max:
            return 1.0
        self.clamps["ee_rot_vel"] += 1
        return rot_max / angle_rad

    def _ee_pose(self, pose: np.ndarray, state: RobotState, dt: float) -> np.ndarray:
        prev_pos, prev_quat = self.prev[:3], self.prev[3:7]
        pts, radii = self._carried(state)
        box_lo, box_hi = self._ee_box(prev_quat, pts, radii)
        pos = self._clip("workspace", pose[:3], box_lo, box_hi)
        quat = quat_normalize(pose[3:7])
        target_prev = prev_pos if self.prev_target is None else self.prev_target
        v = _track_velocity_vec(prev_pos, pos, target_prev, dt, self.limits.ee_acc_max_m_s2)
        v = self._cart_velocity(v, prev_pos, dt, box_lo, box_hi)
        pos_out = np.clip(prev_pos + v * dt, np.minimum(box_lo, prev_pos), np.maximum(box_hi, prev_pos))
        angle = quat_angle(prev_quat, quat)
        s = self._rot_limit(angle, dt) * self._rot_inside(pos_out, prev_quat, quat, pts, radii)
        if s < 1.0:
            quat = quat_slerp(prev_quat, quat, s)
        self.prev_vel, self.prev_target = (pos_out - prev_pos) / dt, pos
        self.prev = np.concatenate([pos_out, quat_normalize(quat)])
        return self.prev.copy()

    def _ee_delta(self, delta: np.ndarray, state: RobotState, dt: float) -> np.ndarray:
        """An ee_delta action -> the Cartesian step and velocity it commands (``RobotInfo.ee_delta_*``),
        limited like ee_pose; the predicted pose (anchor + full step) must stay in the box. An action the
        limits leave alone is returned bit-identical (lockstep runs equal direct evaluation)."""
        info, n_clamps = self.info, sum(self.clamps.values())
        lim, rate = self.limits.ee_delta_max, self.limits.ee_delta_rate_max
        delta = self._clip("ee_delta_max", delta, -lim, lim)
        delta = self._clip("ee_delta_rate", delta, self.prev - rate, self.prev + rate)
        measured = info.ee_delta_anchor == "measured"
        anchor = np.asarray(state.ee_pos_m, float) if measured else self.ee_target
        track_pos, track_rot = info.ee_delta_tracking
        vel_per_unit = info.ee_delta_m_per_unit * track_pos / dt  # [m/s] per unit action
        rot_per_unit = info.ee_delta_rad_per_unit * track_rot / dt  # [rad/s] per unit action
        quat = quat_normalize(np.asarray(state.ee_quat_wxyz, float))  # the orientation the gripper points have
        pts, radii = self._carried(state)
        box_lo, box_hi = self._ee_box(quat, pts, radii)
        v = self._cart_velocity(delta[:3] * vel_per_unit, anchor, dt, box_lo, box_hi)
        step = v / vel_per_unit * info.ee_delta_m_per_unit  # the full commanded step [m]
        step = np.clip(anchor + step, np.minimum(box_lo, anchor), np.maximum(box_hi, anchor)) - anchor
        rot = delta[3:] * self._rot_limit(float(np.linalg.norm(delta[3:])) * rot_per_unit * dt, dt)
        if len(pts):
            rot = rot * self._rot_inside(anchor + step, quat, rotvec_quat_mul(rot * info.ee_delta_rad_per_unit, quat),
                                         pts, radii)
        if sum(self.clamps.values()) > n_clamps:
            delta = np.concatenate([step / info.ee_delta_m_per_unit, rot])
        self.prev_vel = delta[:3] * vel_per_unit
        if not measured:
            self.ee_target = anchor + delta[:3] * info.ee_delta_m_per_unit
        self.prev = delta
        return delta
