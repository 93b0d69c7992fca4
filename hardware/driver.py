"""The one arm interface shared by the MuJoCo sim arm, every real arm, and the bridge client.

Numpy only: this module runs on a robot's controller PC (never torch).
Units: joints [rad], positions [m], orientation as quaternion (w, x, y, z), time [ns]
from ``time.monotonic_ns()`` on the host that captured it.
"""
from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

#: Command modes a driver may support (``RobotInfo.modes``).
MODES = ("joint_pos", "joint_vel", "ee_pose", "ee_delta")


class DriverError(RuntimeError):
    """A driver-level fault (connection lost, controller error, protective stop)."""


@dataclass(frozen=True)
class RobotInfo:
    name: str
    dof: int
    joint_names: tuple[str, ...]
    joint_pos_min_rad: tuple[float, ...]
    joint_pos_max_rad: tuple[float, ...]
    joint_vel_max_rad_s: tuple[float, ...]
    native_rate_hz: float
    modes: tuple[str, ...]
    is_sim: bool
    has_gripper: bool = True
    # What one ee_delta command means, so the safety layer can turn it into a Cartesian velocity
    # (bridge.md: every limit holds on what the driver is commanded):
    ee_delta_m_per_unit: float = 1.0  # EE translation [m] one command of ee_delta[:3] = 1 asks for
    ee_delta_rad_per_unit: float = 1.0  # EE rotation [rad] one command of ee_delta[3:] = 1 asks for
    # "target": the step is added to the last commanded EE target (the sim arm, the real adapters);
    # "measured": to the measured pose, re-anchored every command (robosuite-style OSC, the sim task env)
    ee_delta_anchor: str = "target"
    # (translation, rotation): fraction of a "measured"-anchored step the arm realises per command
    # (servo lag), an upper bound; (1, 1) for "target"
    ee_delta_tracking: tuple[float, float] = (1.0, 1.0)
    # Points of the gripper in the EE frame [m] (its bounding corners) that must stay in the workspace box
    # too, so the box bounds the whole gripper and a tilted hand cannot strike the table; () = the EE only
    ee_points_m: tuple[tuple[float, float, float], ...] = ()
    # Radii [m] of spheres that bound the arm's links (elbow to flange) and must stay in the workspace box as
    # well (its floor is the table plane); their centres come from the driver's forward kinematics,
    # ``forward_link_points(q) -> (K, 3)`` in the base frame. () = no link check (the EE and ee_points_m only)
    link_radii_m: tuple[float, ...] = ()


@dataclass(frozen=True)
class MotionLimits:
    """The safety layer's limits, for drivers that make joint targets themselves (their own IK)."""

    q_min_rad: np.ndarray  # joint limits minus margins (dof,)
    q_max_rad: np.ndarray
    qd_max_rad_s: np.ndarray  # scaled joint speeds (dof,)
    box_min_m: np.ndarray  # EE workspace box in the base frame (3,)
    box_max_m: np.ndarray
    ee_vel_max_m_s: float
    ee_rot_vel_max_rad_s: float
    qdd_max_rad_s2: float = np.inf  # joint acceleration of the targets [rad/s^2]
    ee_points_m: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # RobotInfo.ee_points_m (K, 3)
    link_radii_m: np.ndarray = field(default_factory=lambda: np.zeros(0))  # RobotInfo.link_radii_m (L,)


#: ``fk(q_rad) -> (EE position [m], quaternion (w, x, y, z))`` in the base frame.
ForwardPose = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
#: ``link_fk(q_rad) -> (L, 3)``: centres [m] of the link spheres (``RobotInfo.link_radii_m``) in the base frame.
ForwardLinks = Callable[[np.ndarray], np.ndarray]


def quat_angle(q1: np.ndarray, q2: np.ndarray) -> float:
    """Rotation angle between unit quaternions (w, x, y, z) [rad]."""
    return float(2.0 * np.arccos(np.clip(abs(float(np.dot(q1, q2))), 0.0, 1.0)))


def stop_speed(dist: np.ndarray, a_max: float, dt: float) -> np.ndarray:
    """Largest speed [unit/s] from which braking by ``a_max * dt`` per tick stops within ``dist`` (>= 0),
    and never more than ``dist`` in one tick. From n ticks of braking covering a dt^2 n (n + 1) / 2."""
    d = np.maximum(np.asarray(dist, float), 0.0)
    adt = a_max * dt
    v = adt * (np.sqrt(0.25 + 2.0 * d / max(adt * dt, 1e-12)) - 0.5)
    return np.minimum(v, d / dt)


def box_excess(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Distance [m] of ``p`` (or the farthest of the points ``p`` (K, 3)) outside the box (0 inside)."""
    p = np.atleast_2d(p)
    return float(np.max(np.linalg.norm(p - np.clip(p, lo, hi), axis=1)))


def sphere_excess(centres: np.ndarray, radii: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Distance [m] by which the farthest of the spheres (``centres`` (L, 3), ``radii`` (L,)) pokes out of the
    box (0 when all lie inside): each centre against the box shrunk by its radius."""
    if not len(radii):
        return 0.0
    r = np.asarray(radii, float)[:, None]
    out = np.maximum(np.maximum(lo + r - centres, centres - (hi - r)), 0.0)  # per axis; cheaper than clip + norm
    return float(np.sqrt(np.max(np.sum(out * out, axis=1))))


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def rotvec_quat_mul(rotvec_rad: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The orientation ``q`` (w, x, y, z) rotated by the base-frame rotation vector ``rotvec_rad``."""
    angle = float(np.linalg.norm(rotvec_rad))
    if angle < 1e-12:
        return np.asarray(q, float).copy()
    r = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * np.asarray(rotvec_rad, float) / angle])
    w1, x1, y1, z1 = r
    w2, x2, y2, z2 = q
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def ee_points(pos: np.ndarray, quat: np.ndarray, points_ee: np.ndarray) -> np.ndarray:
    """The EE position and the gripper points ``points_ee`` (K, 3, EE frame) in the base frame, (K + 1, 3)."""
    pts = np.asarray(points_ee, float).reshape(-1, 3)
    return np.vstack([np.asarray(pos, float)[None], pos + pts @ quat_to_mat(quat).T])


def limit_joint_step(lim: MotionLimits, q: np.ndarray, v: np.ndarray, v_prev: np.ndarray, dt: float,
                     fk: ForwardPose | None = None, clamps: Counter | None = None,
                     link_fk: ForwardLinks | None = None) -> np.ndarray:
    """The joint velocity [rad/s] for one tick of ``dt`` from the joint target ``q``, after ``v_prev``: speed,
    acceleration, braking before the joint limits, then (with ``fk``) the EE speeds and the box. One
    implementation for the safety layer's joint modes and for drivers that make joint targets themselves
    (their IK), so every target sequence a servo receives is continuous in velocity: a position servo
    tracks an acceleration-limited target without the overshoot that steps of the target velocity
    excite (libfranka likewise rejects commands that are not acceleration/jerk limited).

    The EE speed limit moves from ``v_prev`` towards ``v`` only as far as it allows (so it keeps the
    acceleration limit), and the box is checked on the next target and along the path of braking from it;
    a step that would leave the box (from outside: go farther out) brakes along the previous velocity (all
    joints in proportion, so on the path that was checked), and stops if even that would leave it. "The box"
    holds the EE, the gripper points (``lim.ee_points_m``) and, with ``link_fk``, the link spheres
    (``lim.link_radii_m``), so no arm link is driven into the table either."""
    count = clamps if clamps is not None else Counter()

    def clip(name: str, x: np.ndarray, lo, hi) -> np.ndarray:
        y = np.clip(x, lo, hi)
        if not np.array_equal(y, x):
            count[name] += 1
        return y

    a = lim.qdd_max_rad_s2
    v = clip("joint_vel", v, -lim.qd_max_rad_s, lim.qd_max_rad_s)
    v = clip("joint_acc", v, v_prev - a * dt, v_prev + a * dt)
    # outside a margin stop_speed is 0 on that side: only motion back inward
    lo, hi = stop_speed(q - lim.q_min_rad, a, dt), stop_speed(lim.q_max_rad - q, a, dt)
    v = clip("joint_limit", v, -lo, hi)
    if fk is None:
        return v
    p0, quat0 = fk(q)

    def ee_ratio(x: np.ndarray) -> tuple[float, float]:
        p1, quat1 = fk(q + x * dt)
        return (float(np.linalg.norm(p1 - p0)) / dt / lim.ee_vel_max_m_s,
                quat_angle(quat0, quat1) / dt / lim.ee_rot_vel_max_rad_s)

    r = ee_ratio(v)
    if max(r) > 1.0:
        count["ee_vel" if r[0] >= r[1] else "ee_rot_vel"] += 1
        # move from the previous velocity towards v only as far as the EE speeds allow (bisection: the EE
        # speed is convex along the segment); at a pose where the previous joint speeds are already too
        # fast, from them scaled down (the EE limit wins over the acceleration limit, by a tiny step)
        v_keep = np.clip(v_prev, -lo, hi)
        v_keep = v_keep / max(1.0, *ee_ratio(v_keep))
        s_lo, s_hi = 0.0, 1.0
        for _ in range(10):
            s = 0.5 * (s_lo + s_hi)
            s_lo, s_hi = (s, s_hi) if max(ee_ratio(v_keep + s * (v - v_keep))) <= 1.0 else (s_lo, s)
        v = v_keep + s_lo * (v - v_keep)
    check_links = link_fk is not None and len(lim.link_radii_m) > 0

    def excess(x: np.ndarray, pose: tuple[np.ndarray, np.ndarray] | None = None) -> float:
        out = box_excess(ee_points(*(pose or fk(x)), lim.ee_points_m), lim.box_min_m, lim.box_max_m)
        if check_links:  # after fk(x): a driver may reuse that kinematics pass for its link spheres
            out = max(out, sphere_excess(link_fk(x), lim.link_radii_m, lim.box_min_m, lim.box_max_m))
        return out

    out_now = excess(q, (p0, quat0))

    def leaves_box(x: np.ndarray, braking_path: bool) -> bool:
        """Does the next target, or (``braking_path``) the path of braking from it, go farther out than now?
        Braking scales the joint velocity down as a whole (``brake``), so it stays on this line in joint space."""
        if not np.any(x):
            return False  # standing still goes nowhere
        q_next = q + x * dt
        reach = x * (float(np.max(np.abs(x))) / (2.0 * max(a, 1e-12)))  # braking at a on the fastest joint
        path = [q_next + f * reach for f in ((0.25, 0.5, 0.75, 1.0) if braking_path else ())]
        path = [np.clip(y, np.minimum(lim.q_min_rad, q_next), np.maximum(lim.q_max_rad, q_next)) for y in path]
        return any(excess(y) > out_now + 1e-9 for y in [q_next, *path])

    if not leaves_box(v, True):
        return v
    count["workspace"] += 1
    v_max = float(np.max(np.abs(v_prev)))
    brake = np.clip(v_prev * max(0.0, 1.0 - a * dt / max(v_max, 1e-12)), -lo, hi)
    brake = brake / max(1.0, *ee_ratio(brake))  # braking can speed the EE up at some poses: never past its limits
    return brake if not leaves_box(brake, False) else np.zeros_like(v)  # the box wins over the acceleration limit


@dataclass
class RobotState:
    """A stamped snapshot; ``t_capture_ns`` is monotonic time when it was read."""

    t_capture_ns: int
    joint_pos_rad: np.ndarray  # (dof,)
    joint_vel_rad_s: np.ndarray  # (dof,)
    ee_pos_m: np.ndarray  # (3,) in the robot base frame
    ee_quat_wxyz: np.ndarray  # (4,)
    gripper: float  # 0 open .. 1 closed
    ee_force_n: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) external force at the EE
    extras: dict = field(default_factory=dict)  # e.g. sim task observation {"observation.state": ...}


class Driver(abc.ABC):
    """One servo tick per ``command``; non-blocking; returns what was actually sent."""

    @abc.abstractmethod
    def info(self) -> RobotInfo: ...

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def read_state(self) -> RobotState: ...

    @abc.abstractmethod
    def command(self, mode: str, setpoint: np.ndarray, gripper: float | None = None) -> np.ndarray:
        """Send one setpoint in ``mode``; return the setpoint actually sent (after the driver's own clipping)."""

    @abc.abstractmethod
    def hold(self) -> None:
        """Hold the current pose (position modes) / ramp velocity to zero."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop motion now (protective stop semantics)."""

    @abc.abstractmethod
    def recover(self) -> None:
        """Clear a recoverable fault so the arm can be armed again."""

    def set_motion_limits(self, limits: MotionLimits) -> None:
        """Called once by the servo with the safety layer's limits (``SafetyLayer.motion_limits``). A driver
        that turns setpoints into joint targets itself (its own IK, its own integration) must keep those
        targets, and the EE pose they put the arm in, inside them; a real arm whose vendor controller does
        the IK and enforces its own limits may ignore them (the default)."""

    def __enter__(self) -> "Driver":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
