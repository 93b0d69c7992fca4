"""A fake ``xarm.wrapper.XArmAPI`` (xarm-python-sdk) for one xArm7, with the SDK's return codes.

Enforced, as documented in xArm-Python-SDK (``xarm_api.md``, ``xarm_api_code.md``):

- Motion needs ``motion_enable(True)`` then ``set_state(0)``; ``set_mode(m)`` takes effect only at the
  next ``set_state(0)``. Otherwise motion calls return -2 ("not ready: motion not enabled or state not set").
- ``set_servo_angle_j`` / ``set_servo_cartesian`` need servo mode 1; ``vc_set_joint_velocity`` needs
  mode 4; the wrong mode returns 51 (MODE_IS_NOT_CORRECT).
- Joint targets outside the limits return -7 (SDK-side check, nothing sent). A servo step faster than
  the joint speed limit raises controller error 24 (Speed Exceeds Limit): the arm stops (state 4)
  and every motion call returns 1 ("uncleared error") until ``clean_error()`` and then
  ``motion_enable(True)`` + ``set_mode`` + ``set_state(0)`` again.
- ``vc_set_joint_velocity(..., duration=s)``: with ``duration > 0`` the velocity drops to zero after
  ``s`` seconds; ``duration <= 0`` keeps it forever (the failure mode ``duration`` was added for).
- ``emergency_stop()``: state 4 and motion disabled, cleared like an error.
- Positions are in mm, angles in rad when ``is_radian``; gripper position 0 (closed) .. 850 (open),
  needs ``set_gripper_enable(True)`` (else 103 END_EFFECTOR_NOT_ENABLED).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from armflow.hardware.fakes._clock import WallClock
from armflow.hardware.fakes._kin import XARM7
from armflow.hardware.kinematics import quat_to_rpy, rpy_to_quat

Q_MIN = np.array([-2 * np.pi, -2.059, -2 * np.pi, -0.19198, -2 * np.pi, -1.69297, -2 * np.pi])
Q_MAX = np.array([2 * np.pi, 2.0944, 2 * np.pi, 3.927, 2 * np.pi, np.pi, 2 * np.pi])
QD_MAX = np.full(7, np.pi)
HOME = np.array([0.0, 0.0, 0.0, 1.2, 0.0, 1.2, 0.0])
MODE_IS_NOT_CORRECT, NOT_READY, JOINT_LIMIT, UNCLEARED_ERROR, EE_NOT_ENABLED = 51, -2, -7, 1, 103


class FakeXArmController:
    def __init__(self, q0=HOME, clock=None):
        self.clock = clock or WallClock()
        self.q, self.dq = np.asarray(q0, float).copy(), np.zeros(7)
        self.enabled = False
        self.mode, self.pending_mode, self.state = 0, 0, 4
        self.error_code = self.warn_code = 0
        self.vel_until_s = np.inf
        self.t_update_s = self.clock.now()
        self.gripper_enabled, self.gripper_pos = False, 850.0
        self.external_force = np.zeros(6)
        self.calls: list[str] = []

    def update(self) -> None:
        now = self.clock.now()
        dt, self.t_update_s = now - self.t_update_s, now
        if self.mode == 4 and self.state in (1, 2) and np.any(self.dq):
            t_end = min(now, self.vel_until_s)
            run = max(0.0, t_end - (now - dt))
            self.q = np.clip(self.q + self.dq * run, Q_MIN, Q_MAX)
            if now >= self.vel_until_s:
                self.dq = np.zeros(7)

    def fault(self, code: int) -> None:
        self.error_code, self.state, self.dq = code, 4, np.zeros(7)

    def ready(self, mode: int) -> int:
        self.update()
        if self.error_code:
            return UNCLEARED_ERROR
        if not self.enabled or self.state not in (1, 2):
            return NOT_READY
        return 0 if self.mode == mode else MODE_IS_NOT_CORRECT


class XArmAPI:
    def __init__(self, port=None, is_radian: bool = False, do_not_open: bool = False, *, controller=None, **kwargs):
        self._c = controller or FakeXArmController()
        self.port, self.default_is_radian = port, is_radian
        self.connected = not do_not_open

    # -- status -------------------------------------------------------------------------------------
    error_code = property(lambda self: self._c.error_code)
    warn_code = property(lambda self: self._c.warn_code)
    mode = property(lambda self: self._c.mode)
    ft_ext_force = property(lambda self: self._c.external_force.tolist())

    @property
    def state(self) -> int:
        self._c.update()
        return self._c.state

    def _rad(self, is_radian) -> bool:
        return self.default_is_radian if is_radian is None else is_radian

    def connect(self, port=None) -> None:
        self.connected = True

    def disconnect(self) -> None:
        self.connected = False

    def motion_enable(self, enable: bool = True, servo_id=None) -> int:
        self._c.calls.append(f"motion_enable({enable})")
        self._c.enabled = bool(enable)
        return 0

    def set_mode(self, mode: int = 0) -> int:
        self._c.calls.append(f"set_mode({mode})")
        self._c.pending_mode = int(mode)
        return 0

    def set_state(self, state: int = 0) -> int:
        c = self._c
        c.update()
        c.calls.append(f"set_state({state})")
        if state == 0:
            if c.error_code:
                return UNCLEARED_ERROR
            if not c.enabled:
                return NOT_READY
            c.mode, c.state = c.pending_mode, 2
        else:
            c.state, c.dq = int(state), np.zeros(7)
        return 0

    def clean_error(self) -> int:
        self._c.calls.append("clean_error")
        self._c.error_code = 0
        return 0

    def clean_warn(self) -> int:
        self._c.warn_code = 0
        return 0

    def emergency_stop(self) -> int:
        self._c.calls.append("emergency_stop")
        self._c.state, self._c.dq, self._c.enabled = 4, np.zeros(7), False
        return 0

    # -- motion -------------------------------------------------------------------------------------
    def set_servo_angle_j(self, angles, speed=None, mvacc=None, mvtime=None, is_radian=None, **kwargs) -> int:
        c = self._c
        code = c.ready(1)
        if code:
            return code
        q = np.asarray(angles, float)[:7] * (1.0 if self._rad(is_radian) else np.pi / 180)
        if np.any(q < Q_MIN) or np.any(q > Q_MAX):
            return JOINT_LIMIT
        if np.any(np.abs(q - c.q) > QD_MAX * 0.02):  # more than the speed limit over a 20 ms servo period
            c.fault(24)
            return UNCLEARED_ERROR
        c.q, c.state = q, 1
        return 0

    def set_servo_cartesian(self, mvpose, speed=None, mvacc=None, mvtime=0, is_radian=None, is_tool_coord=False,
                            **kwargs) -> int:
        c = self._c
        if c.ready(1):
            return c.ready(1)
        pose = np.asarray(mvpose, float)
        rpy = pose[3:] * (1.0 if self._rad(is_radian) else np.pi / 180)
        q = XARM7.ik(c.q, pose[:3] / 1000.0, rpy_to_quat(rpy))
        return self.set_servo_angle_j(q, is_radian=True)

    def vc_set_joint_velocity(self, speeds, is_radian=None, is_sync=True, duration=-1, **kwargs) -> int:
        c = self._c
        code = c.ready(4)
        if code:
            return code
        v = np.asarray(speeds, float)[:7] * (1.0 if self._rad(is_radian) else np.pi / 180)
        if np.any(np.abs(v) > QD_MAX):
            c.fault(24)
            return UNCLEARED_ERROR
        c.calls.append(f"vc_set_joint_velocity(duration={duration})")
        c.dq, c.state = v, 1
        c.vel_until_s = c.clock.now() + duration if duration > 0 else np.inf
        return 0

    # -- state --------------------------------------------------------------------------------------
    def get_servo_angle(self, servo_id=None, is_radian=None):
        self._c.update()
        scale = 1.0 if self._rad(is_radian) else 180 / np.pi
        return 0, (self._c.q * scale).tolist()

    def get_joint_states(self, is_radian=None, num=3):
        self._c.update()
        scale = 1.0 if self._rad(is_radian) else 180 / np.pi
        return 0, [(self._c.q * scale).tolist(), (self._c.dq * scale).tolist(), [0.0] * 7]

    def get_position(self, is_radian=None):
        self._c.update()
        pos, quat = XARM7.pose(self._c.q)
        rpy = quat_to_rpy(quat) * (1.0 if self._rad(is_radian) else 180 / np.pi)
        return 0, [*(pos * 1000.0).tolist(), *rpy.tolist()]

    # -- gripper ------------------------------------------------------------------------------------
    def set_gripper_enable(self, enable: bool) -> int:
        self._c.gripper_enabled = bool(enable)
        return 0

    def set_gripper_mode(self, mode: int) -> int:
        return 0

    def set_gripper_position(self, pos, wait: bool = False, speed=None, auto_enable: bool = False, **kwargs) -> int:
        if not (self._c.gripper_enabled or auto_enable):
            return EE_NOT_ENABLED
        self._c.gripper_pos = float(np.clip(pos, -10.0, 850.0))
        return 0

    def get_gripper_position(self):
        return 0, self._c.gripper_pos


def make_sdk(controller: FakeXArmController | None = None) -> SimpleNamespace:
    ctl = controller or FakeXArmController()
    return SimpleNamespace(controller=ctl,
                           XArmAPI=lambda port=None, is_radian=False, **kw: XArmAPI(port, is_radian, controller=ctl))
