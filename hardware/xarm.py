"""UFactory xArm7 through ``xarm-python-sdk`` (``pip install armflow[xarm]``), or its fake (``sdk="fake"``).

Servo mode 1 for ``joint_pos`` (``set_servo_angle_j``) and ``ee_pose``/``ee_delta``
(``set_servo_cartesian``, mm + roll/pitch/yaw); joint-velocity mode 4 for ``joint_vel``
(``vc_set_joint_velocity`` ALWAYS with ``duration``, so the arm stops by itself if the bridge dies:
the xArm "kept moving after the connection dropped" bug). Mode switches go through
``set_mode`` + ``set_state(0)``. Every SDK return code is checked; a non-zero code raises ``DriverError``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from armflow.hardware.driver import Driver, DriverError, RobotInfo, RobotState
from armflow.hardware.kinematics import quat_to_rpy, rpy_to_quat
from armflow.hardware.real_common import (cartesian_target, check_setpoint, clip_velocity, load_sdk,
                                          require)

XARM7_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
XARM7_Q_MIN = (-2 * np.pi, -2.059, -2 * np.pi, -0.19198, -2 * np.pi, -1.69297, -2 * np.pi)
XARM7_Q_MAX = (2 * np.pi, 2.0944, 2 * np.pi, 3.927, 2 * np.pi, np.pi, 2 * np.pi)
XARM7_QD_MAX = (np.pi,) * 7
XARM_MODES = ("joint_pos", "joint_vel", "ee_pose", "ee_delta")
SERVO_MODE, VELOCITY_MODE = 1, 4
GRIPPER_OPEN = 850.0  # xArm gripper position units: 0 closed .. 850 open


@dataclass(frozen=True)
class XArmConfig:
    host: str = "192.168.1.185"
    rate_hz: float = 200.0
    vel_duration_s: float = 0.1  # vc_set_joint_velocity duration: velocity drops to 0 after this
    joint_margin_rad: float = 0.05
    ee_delta_max_m: float = 0.01
    ee_delta_max_rad: float = 0.05
    clear_errors_on_connect: bool = False  # an arm in error at connect needs a human look by default
    sdk: object = "real"  # "real" | "fake" | an SDK namespace


def _real_sdk() -> SimpleNamespace:
    from xarm.wrapper import XArmAPI

    return SimpleNamespace(XArmAPI=XArmAPI)


class XArmDriver(Driver):
    def __init__(self, cfg: XArmConfig = XArmConfig()):
        self.cfg = cfg
        self.sdk = load_sdk(cfg.sdk, _real_sdk, "armflow.hardware.fakes.xarm", "xarm", "xarm-python-sdk")
        self._qmin = np.asarray(XARM7_Q_MIN) + cfg.joint_margin_rad
        self._qmax = np.asarray(XARM7_Q_MAX) - cfg.joint_margin_rad
        self._arm = None
        self._target: tuple[np.ndarray, np.ndarray] | None = None

    def info(self) -> RobotInfo:
        return RobotInfo(name="xarm7", dof=7, joint_names=XARM7_JOINTS, joint_pos_min_rad=tuple(self._qmin),
                         joint_pos_max_rad=tuple(self._qmax), joint_vel_max_rad_s=XARM7_QD_MAX,
                         native_rate_hz=self.cfg.rate_hz, modes=XARM_MODES, is_sim=False, has_gripper=True)

    def connect(self) -> None:
        self._arm = arm = self.sdk.XArmAPI(self.cfg.host, is_radian=True)
        if arm.error_code:
            if not self.cfg.clear_errors_on_connect:
                code = arm.error_code
                self._arm = None
                raise DriverError(f"xarm7@{self.cfg.host}: controller error {code} at connect; inspect the arm, "
                                  "then clean it (or set clear_errors_on_connect=true)")
            arm.clean_error()
        self._enable(SERVO_MODE)
        require(arm.set_gripper_enable(True), "xarm7", "set_gripper_enable")
        require(arm.set_gripper_mode(0), "xarm7", "set_gripper_mode")

    def close(self) -> None:
        if self._arm is not None:
            if self._arm.mode == VELOCITY_MODE:
                self._arm.vc_set_joint_velocity([0.0] * 7, is_radian=True, duration=self.cfg.vel_duration_s)
            self._arm.disconnect()
        self._arm = None

    def read_state(self) -> RobotState:
        arm = self._require()
        code, (q, dq, _effort) = arm.get_joint_states(is_radian=True)
        require(code, "xarm7", "get_joint_states")
        code, pose = arm.get_position(is_radian=True)
        require(code, "xarm7", "get_position")
        code, grip = arm.get_gripper_position()
        return RobotState(
            t_capture_ns=time.monotonic_ns(), joint_pos_rad=np.asarray(q[:7], float),
            joint_vel_rad_s=np.asarray(dq[:7], float), ee_pos_m=np.asarray(pose[:3], float) / 1000.0,
            ee_quat_wxyz=rpy_to_quat(np.asarray(pose[3:6], float)),
            gripper=float(np.clip(1.0 - float(grip) / GRIPPER_OPEN, 0.0, 1.0)) if code == 0 else 0.0,
            ee_force_n=np.asarray(arm.ft_ext_force, float)[:3],
            extras={"error_code": int(arm.error_code), "state": int(arm.state), "mode": int(arm.mode)},
        )

    def command(self, mode: str, setpoint: np.ndarray, gripper: float | None = None) -> np.ndarray:
        arm = self._require()
        x = check_setpoint("xarm7", mode, XARM_MODES, setpoint, 7)
        c = self.cfg
        if mode == "joint_vel":
            code, q = arm.get_servo_angle(is_radian=True)
            require(code, "xarm7", "get_servo_angle")
            sent = clip_velocity(x, np.asarray(q[:7], float), self._qmin, self._qmax, XARM7_QD_MAX, 1.0 / c.rate_hz)
            self._ensure_mode(VELOCITY_MODE)
            code = arm.vc_set_joint_velocity(sent.tolist(), is_radian=True, duration=c.vel_duration_s)
            self._target = None
            require(code, "xarm7", "vc_set_joint_velocity", self._why)
        elif mode == "joint_pos":
            sent = np.clip(x, self._qmin, self._qmax)
            self._ensure_mode(SERVO_MODE)
            self._target = None
            require(arm.set_servo_angle_j(sent.tolist(), is_radian=True), "xarm7", "set_servo_angle_j", self._why)
        else:
            sent, self._target = cartesian_target(mode, x, self._target, self._current_pose,
                                                  c.ee_delta_max_m, c.ee_delta_max_rad)
            self._ensure_mode(SERVO_MODE)
            mvpose = [*(self._target[0] * 1000.0).tolist(), *quat_to_rpy(self._target[1]).tolist()]
            require(arm.set_servo_cartesian(mvpose, is_radian=True), "xarm7", "set_servo_cartesian", self._why)
        if gripper is not None:
            pos = (1.0 - float(np.clip(gripper, 0.0, 1.0))) * GRIPPER_OPEN
            require(arm.set_gripper_position(pos, wait=False), "xarm7", "set_gripper_position")
        return sent

    def hold(self) -> None:
        arm = self._require()
        self._target = None
        if arm.mode == VELOCITY_MODE:
            arm.vc_set_joint_velocity([0.0] * 7, is_radian=True, duration=self.cfg.vel_duration_s)
        else:
            code, q = arm.get_servo_angle(is_radian=True)
            require(code, "xarm7", "get_servo_angle")
            arm.set_servo_angle_j(q[:7], is_radian=True)

    def stop(self) -> None:
        require(self._require().set_state(4), "xarm7", "set_state(4)")
        self._target = None

    def recover(self) -> None:
        arm = self._require()
        arm.clean_error()
        arm.clean_warn()
        self._enable(SERVO_MODE)
        self._target = None

    # -- internals --------------------------------------------------------------------------------
    def _require(self):
        if self._arm is None:
            raise DriverError("xarm7: not connected; call connect() first")
        return self._arm

    def _enable(self, mode: int) -> None:
        arm = self._arm
        require(arm.motion_enable(enable=True), "xarm7", "motion_enable")
        require(arm.set_mode(mode), "xarm7", f"set_mode({mode})")
        require(arm.set_state(0), "xarm7", "set_state(0)", self._why)
        if arm.mode != mode:
            raise DriverError(f"xarm7: mode is {arm.mode} after set_mode({mode}) + set_state(0)")

    def _ensure_mode(self, mode: int) -> None:
        arm = self._arm
        if arm.mode != mode or arm.state not in (1, 2):
            if arm.state == 4:
                raise DriverError(f"xarm7: arm stopped (state 4, error {arm.error_code}); call recover()")
            self._enable(mode)

    def _current_pose(self) -> tuple[np.ndarray, np.ndarray]:
        code, pose = self._arm.get_position(is_radian=True)
        require(code, "xarm7", "get_position")
        return np.asarray(pose[:3], float) / 1000.0, rpy_to_quat(np.asarray(pose[3:6], float))

    def _why(self) -> str:
        return f"; error_code={self._arm.error_code} state={self._arm.state} mode={self._arm.mode}"
