"""Universal Robots e-Series through ``ur_rtde`` (``pip install armflow[ur]``), or its fake (``sdk="fake"``).

The bridge's servo loop calls ``command`` at ``rate_hz`` (500 Hz e-Series, 125 Hz CB3):
``joint_pos`` -> ``servoJ``, ``ee_pose``/``ee_delta`` -> ``servoL`` (pose as x, y, z, rotation vector),
``joint_vel`` -> ``speedJ``. Switching between servo and speed modes stops the old one first
(``servoStop``/``speedStop``), as ur_rtde requires. The UR watchdog (``setWatchdog``) is armed on
connect and kicked on every command and state read: if this process dies, the robot's own script stops.
No gripper (``has_gripper=False``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from armflow.hardware.driver import Driver, DriverError, RobotInfo, RobotState
from armflow.hardware.kinematics import quat_to_rotvec, rotvec_to_quat
from armflow.hardware.real_common import (cartesian_target, check_setpoint, clip_velocity, load_sdk,
                                          require)

UR_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
UR_Q_MAX_RAD = (2 * np.pi, 2 * np.pi, np.pi, 2 * np.pi, 2 * np.pi, 2 * np.pi)
UR_QD_MAX_RAD_S = (np.pi,) * 6
UR_MODES = ("joint_pos", "joint_vel", "ee_pose", "ee_delta")


@dataclass(frozen=True)
class URConfig:
    host: str = "192.168.1.102"
    rate_hz: float = 500.0  # servo rate: 500 e-Series, 125 CB3
    lookahead_s: float = 0.1  # servoJ/servoL lookahead_time, in [0.03, 0.2]
    gain: float = 300.0  # servoJ/servoL proportional gain, in [100, 2000]
    speed_accel_rad_s2: float = 2.0  # speedJ acceleration
    stop_decel: float = 10.0  # servoStop / speedStop deceleration
    watchdog_min_hz: float = 50.0  # UR watchdog: script stops if not kicked this often
    joint_margin_rad: float = 0.05  # commands are clipped this far inside the joint limits
    ee_delta_max_m: float = 0.01
    ee_delta_max_rad: float = 0.05
    sdk: object = "real"  # "real" | "fake" | an SDK namespace


def _real_sdk() -> SimpleNamespace:
    import dashboard_client
    import rtde_control
    import rtde_receive

    return SimpleNamespace(RTDEControlInterface=rtde_control.RTDEControlInterface,
                           RTDEReceiveInterface=rtde_receive.RTDEReceiveInterface,
                           DashboardClient=dashboard_client.DashboardClient)


class URDriver(Driver):
    def __init__(self, cfg: URConfig = URConfig()):
        self.cfg = cfg
        self.sdk = load_sdk(cfg.sdk, _real_sdk, "armflow.hardware.fakes.ur_rtde", "ur", "ur_rtde")
        self._qmax = np.asarray(UR_Q_MAX_RAD) - cfg.joint_margin_rad
        self._ctrl = self._recv = self._dash = None
        self._active: str | None = None  # "servo" | "speed" | None
        self._target: tuple[np.ndarray, np.ndarray] | None = None

    def info(self) -> RobotInfo:
        return RobotInfo(name="ur5e", dof=6, joint_names=UR_JOINTS, joint_pos_min_rad=tuple(-self._qmax),
                         joint_pos_max_rad=tuple(self._qmax), joint_vel_max_rad_s=UR_QD_MAX_RAD_S,
                         native_rate_hz=self.cfg.rate_hz, modes=UR_MODES, is_sim=False, has_gripper=False)

    def connect(self) -> None:
        c = self.cfg
        self._ctrl = self.sdk.RTDEControlInterface(c.host, c.rate_hz)
        self._recv = self.sdk.RTDEReceiveInterface(c.host)
        self._dash = self.sdk.DashboardClient(c.host)
        self._dash.connect()
        if not self._ctrl.isProgramRunning():
            raise DriverError(f"ur5e@{c.host}: control script not running (robot in remote control? protective stop?)")
        require(self._ctrl.setWatchdog(c.watchdog_min_hz), "ur5e", "setWatchdog")

    def close(self) -> None:
        if self._ctrl is None:
            return
        self._stop_active()
        self._ctrl.stopScript()
        self._ctrl.disconnect()
        self._recv.disconnect()
        self._dash.disconnect()
        self._ctrl = self._recv = self._dash = None

    def read_state(self) -> RobotState:
        r = self._require()
        self._ctrl.kickWatchdog()
        tcp = np.asarray(r.getActualTCPPose(), float)
        return RobotState(
            t_capture_ns=time.monotonic_ns(), joint_pos_rad=np.asarray(r.getActualQ(), float),
            joint_vel_rad_s=np.asarray(r.getActualQd(), float), ee_pos_m=tcp[:3].copy(),
            ee_quat_wxyz=rotvec_to_quat(tcp[3:]), gripper=0.0,
            ee_force_n=np.asarray(r.getActualTCPForce(), float)[:3],
            extras={"protective_stop": bool(r.isProtectiveStopped()), "safety_mode": int(r.getSafetyMode()),
                    "program_running": bool(self._ctrl.isProgramRunning())},
        )

    def command(self, mode: str, setpoint: np.ndarray, gripper: float | None = None) -> np.ndarray:
        self._require()
        if gripper is not None:
            raise DriverError("ur5e: this adapter drives no gripper (has_gripper=False); pass gripper=None")
        x = check_setpoint("ur5e", mode, UR_MODES, setpoint, 6)
        c, ctrl = self.cfg, self._ctrl
        require(ctrl.kickWatchdog(), "ur5e", "kickWatchdog", self._why)
        dt = 1.0 / c.rate_hz
        if mode == "joint_vel":
            q = np.asarray(self._recv.getActualQ(), float)
            sent = clip_velocity(x, q, -self._qmax, self._qmax, UR_QD_MAX_RAD_S, dt)
            self._switch("speed")
            require(ctrl.speedJ(sent.tolist(), c.speed_accel_rad_s2, dt), "ur5e", "speedJ", self._why)
            self._target = None
            return sent
        self._switch("servo")
        if mode == "joint_pos":
            sent = np.clip(x, -self._qmax, self._qmax)
            require(ctrl.servoJ(sent.tolist(), 0.0, 0.0, dt, c.lookahead_s, c.gain), "ur5e", "servoJ", self._why)
            self._target = None
            return sent
        sent, self._target = cartesian_target(mode, x, self._target, self._current_pose,
                                              c.ee_delta_max_m, c.ee_delta_max_rad)
        pose6 = np.concatenate([self._target[0], quat_to_rotvec(self._target[1])])
        require(ctrl.servoL(pose6.tolist(), 0.0, 0.0, dt, c.lookahead_s, c.gain), "ur5e", "servoL", self._why)
        return sent

    def hold(self) -> None:
        self._require()
        self._ctrl.kickWatchdog()
        self._stop_active()
        self._target = None

    def stop(self) -> None:
        self._require()
        self._stop_active()
        self._ctrl.triggerProtectiveStop()
        self._target = None

    def recover(self) -> None:
        self._require()
        if self._recv.isProtectiveStopped():
            try:
                self._dash.unlockProtectiveStop()
            except RuntimeError as exc:
                raise DriverError(f"ur5e: cannot unlock the protective stop yet: {exc}") from None
        if not self._ctrl.isProgramRunning():
            require(self._ctrl.reuploadScript(), "ur5e", "reuploadScript", self._why)
            require(self._ctrl.setWatchdog(self.cfg.watchdog_min_hz), "ur5e", "setWatchdog")
        self._active, self._target = None, None

    # -- internals --------------------------------------------------------------------------------
    def _require(self):
        if self._ctrl is None:
            raise DriverError("ur5e: not connected; call connect() first")
        return self._recv

    def _switch(self, kind: str) -> None:
        if self._active not in (None, kind):
            self._stop_active()
        self._active = kind

    def _stop_active(self) -> None:
        if self._active == "servo":
            self._ctrl.servoStop(self.cfg.stop_decel)
        elif self._active == "speed":
            self._ctrl.speedStop(self.cfg.stop_decel)
        self._active = None

    def _current_pose(self) -> tuple[np.ndarray, np.ndarray]:
        tcp = np.asarray(self._recv.getActualTCPPose(), float)
        return tcp[:3].copy(), rotvec_to_quat(tcp[3:])

    def _why(self) -> str:
        r = self._recv
        return (f"; protective_stop={r.isProtectiveStopped()} program_running={self._ctrl.isProgramRunning()}"
                " (call recover())")
