"""A fake ``franky`` (franky-control) over one fake Panda, with franky's class names and call surface.

Enforced, as documented by franky / libfranka:

- ``Robot.relative_dynamics_factor`` must be in (0, 1].
- ``move(motion, asynchronous=True)`` preempts the running motion; motions progress in clock time at
  ``relative_dynamics_factor`` x the joint speed limits (the fake's stand-in for franky's planner).
- A ``JointMotion`` target outside the joint limits raises ``ControlException`` and latches an error.
- ``JointVelocityMotion(v, duration=Duration(ms))``: the velocity lasts ``duration`` then drops to zero
  (the watchdog); |v| above the limits is an error.
- Reflexes: an external force above ``set_collision_behavior``'s force threshold aborts the motion and
  latches ``cartesian_reflex``; every ``move`` then raises ``ControlException`` until
  ``recover_from_errors()``.
- Reactions: ``motion.add_reaction(Reaction(condition, new_motion))`` switch to ``new_motion`` as soon as
  the condition on ``Measure.FORCE_X/Y/Z`` holds.
- ``Affine(translation, quaternion)`` takes the quaternion as (x, y, z, w).
- ``Gripper.move_async(width, speed)``: width in [0, max_width = 0.08 m].
"""
from __future__ import annotations

import enum
from types import SimpleNamespace

import numpy as np

from armflow.hardware.fakes._clock import WallClock
from armflow.hardware.fakes._kin import PANDA

Q_MIN = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
Q_MAX = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
QD_MAX = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


class ControlException(RuntimeError):
    pass


class InvalidOperationException(RuntimeError):
    pass


class ReferenceType(enum.Enum):
    Absolute = 0
    Relative = 1


class Duration:
    def __init__(self, milliseconds: int):
        self.ms = int(milliseconds)

    def to_sec(self) -> float:
        return self.ms / 1000.0


class Affine:
    def __init__(self, translation=(0.0, 0.0, 0.0), quaternion=(0.0, 0.0, 0.0, 1.0)):
        self.translation = np.asarray(translation, float)
        self.quaternion = np.asarray(quaternion, float)  # (x, y, z, w)


class _Condition:
    def __init__(self, fn):
        self.fn = fn

    def __or__(self, other):
        return _Condition(lambda f: self.fn(f) or other.fn(f))

    def __and__(self, other):
        return _Condition(lambda f: self.fn(f) and other.fn(f))


class _Measure:
    def __init__(self, axis: int):
        self.axis = axis

    def __gt__(self, value):
        return _Condition(lambda f: f[self.axis] > value)

    def __lt__(self, value):
        return _Condition(lambda f: f[self.axis] < value)


Measure = SimpleNamespace(FORCE_X=_Measure(0), FORCE_Y=_Measure(1), FORCE_Z=_Measure(2))


class Reaction:
    def __init__(self, condition: _Condition, motion=None):
        self.condition, self.motion = condition, motion


class _Motion:
    def __init__(self):
        self.reactions: list[Reaction] = []

    def add_reaction(self, reaction: Reaction) -> None:
        self.reactions.append(reaction)


class JointMotion(_Motion):
    def __init__(self, target, relative_dynamics_factor: float = 1.0):
        super().__init__()
        self.target, self.factor = np.asarray(target, float), relative_dynamics_factor


class JointVelocityMotion(_Motion):
    def __init__(self, target, duration: Duration | None = None, relative_dynamics_factor: float = 1.0):
        super().__init__()
        self.target, self.duration, self.factor = np.asarray(target, float), duration, relative_dynamics_factor


class CartesianMotion(_Motion):
    def __init__(self, target: Affine, reference_type=ReferenceType.Absolute, relative_dynamics_factor: float = 1.0):
        super().__init__()
        self.target, self.reference_type, self.factor = target, reference_type, relative_dynamics_factor


class FakeFrankaController:
    """The arm + its control box: joint state, running motion, latched errors, reflex thresholds."""

    def __init__(self, q0=HOME, clock=None):
        self.clock = clock or WallClock()
        self.q, self.dq = np.asarray(q0, float).copy(), np.zeros(7)
        self.motion: _Motion | None = None
        self.t_motion_s = self.t_update_s = self.clock.now()
        self.errors: list[str] = []
        self.force_threshold_n = np.full(6, 30.0)  # franky's default reflex thresholds
        self.torque_threshold_nm = np.full(7, 20.0)
        self.external_wrench = np.zeros(6)  # tests inject contact here
        self.gripper_width_m = 0.08
        self.calls: list[str] = []

    def update(self) -> None:
        now = self.clock.now()
        dt, self.t_update_s = now - self.t_update_s, now
        if self.errors or self.motion is None:
            self.dq = np.zeros(7)
            return
        if np.any(np.abs(self.external_wrench) > self.force_threshold_n):
            self.errors.append("cartesian_reflex")
            self.motion, self.dq = None, np.zeros(7)
            return
        for reaction in self.motion.reactions:
            if reaction.condition.fn(self.external_wrench):
                self.start(reaction.motion, now)
                break
        self._integrate(dt, now)

    def _integrate(self, dt: float, now: float) -> None:
        m = self.motion
        if isinstance(m, JointVelocityMotion):
            expired = m.duration is not None and now - self.t_motion_s > m.duration.to_sec()
            self.dq = np.zeros(7) if expired else m.target
        else:
            target = m.target if isinstance(m, JointMotion) else m.q_goal
            step = np.clip(target - self.q, -QD_MAX * m.factor * dt, QD_MAX * m.factor * dt)
            self.dq = step / dt if dt > 0 else np.zeros(7)
        q = self.q + self.dq * dt
        if np.any(q < Q_MIN) or np.any(q > Q_MAX):
            self.errors.append("joint_position_limits_violation")
            self.motion, self.dq = None, np.zeros(7)
            return
        self.q = q

    def start(self, motion: _Motion, now: float) -> None:
        if isinstance(motion, JointMotion) and (np.any(motion.target < Q_MIN) or np.any(motion.target > Q_MAX)):
            self.errors.append("joint_motion_generator_position_limits_violation")
            raise ControlException(f"JointMotion target outside joint limits: {motion.target}")
        if isinstance(motion, JointVelocityMotion) and np.any(np.abs(motion.target) > QD_MAX):
            self.errors.append("joint_velocity_violation")
            raise ControlException(f"JointVelocityMotion above the velocity limits: {motion.target}")
        if isinstance(motion, CartesianMotion):
            t = motion.target
            quat_wxyz = np.array([t.quaternion[3], *t.quaternion[:3]])
            if motion.reference_type == ReferenceType.Relative:
                raise ControlException("fake franky: only Absolute Cartesian targets are modelled")
            motion.q_goal = PANDA.ik(self.q, t.translation, quat_wxyz)
        self.motion, self.t_motion_s = motion, now


class Robot:
    def __init__(self, fci_hostname: str, controller: FakeFrankaController, realtime_config=None):
        self.fci_hostname, self._c = fci_hostname, controller
        self._factor = 1.0

    @property
    def relative_dynamics_factor(self) -> float:
        return self._factor

    @relative_dynamics_factor.setter
    def relative_dynamics_factor(self, value: float) -> None:
        if not 0.0 < float(value) <= 1.0:
            raise ValueError(f"relative_dynamics_factor must be in (0, 1], got {value}")
        self._factor = float(value)

    def set_collision_behavior(self, torque_thresholds, force_thresholds) -> None:
        self._c.calls.append("set_collision_behavior")
        self._c.torque_threshold_nm = np.broadcast_to(np.asarray(torque_thresholds, float), (7,)).copy()
        self._c.force_threshold_n = np.broadcast_to(np.asarray(force_thresholds, float), (6,)).copy()

    @property
    def has_errors(self) -> bool:
        self._c.update()
        return bool(self._c.errors)

    @property
    def current_errors(self) -> list[str]:
        return list(self._c.errors)

    def recover_from_errors(self) -> bool:
        self._c.calls.append("recover_from_errors")
        self._c.errors.clear()
        self._c.motion = None
        return True

    def move(self, motion: _Motion, asynchronous: bool = False) -> None:
        c = self._c
        c.update()
        c.calls.append(type(motion).__name__)
        if c.errors:
            raise ControlException(f"robot has errors {c.errors}; call recover_from_errors()")
        motion.factor = min(motion.factor, 1.0) * self._factor
        c.start(motion, c.clock.now())

    def join_motion(self, timeout=None) -> bool:
        return self._c.motion is None

    @property
    def current_joint_state(self):
        self._c.update()
        return SimpleNamespace(position=self._c.q.copy(), velocity=self._c.dq.copy())

    @property
    def current_cartesian_state(self):
        self._c.update()
        pos, quat = PANDA.pose(self._c.q)
        pose = Affine(pos, [quat[1], quat[2], quat[3], quat[0]])
        return SimpleNamespace(pose=SimpleNamespace(end_effector_pose=pose), velocity=None)

    @property
    def state(self):
        self._c.update()
        return SimpleNamespace(q=self._c.q.copy(), dq=self._c.dq.copy(), O_F_ext_hat_K=self._c.external_wrench.copy())


class Gripper:
    def __init__(self, fci_hostname: str, controller: FakeFrankaController):
        self._c, self.max_width = controller, 0.08

    @property
    def width(self) -> float:
        return self._c.gripper_width_m

    def move_async(self, width: float, speed: float):
        if not 0.0 <= width <= self.max_width or speed <= 0:
            raise ControlException(f"gripper width {width} outside [0, {self.max_width}] or speed {speed} <= 0")
        self._c.calls.append("gripper.move_async")
        self._c.gripper_width_m = float(width)
        return SimpleNamespace(wait=lambda timeout=None: True, get=lambda: True)


def make_sdk(controller: FakeFrankaController | None = None) -> SimpleNamespace:
    ctl = controller or FakeFrankaController()
    return SimpleNamespace(
        controller=ctl, Robot=lambda host, realtime_config=None: Robot(host, ctl, realtime_config),
        Gripper=lambda host: Gripper(host, ctl), JointMotion=JointMotion, JointVelocityMotion=JointVelocityMotion,
        CartesianMotion=CartesianMotion, Affine=Affine, Duration=Duration, ReferenceType=ReferenceType,
        Reaction=Reaction, Measure=Measure, ControlException=ControlException,
    )
