"""Franka Panda / FR3 through ``franky`` (``pip install armflow[franka]``), or its fake (``sdk="fake"``).

libfranka runs its own 1 kHz loop; franky replans an asynchronous motion each time a new target
arrives, so the bridge feeds targets at ``rate_hz`` (100-250 Hz): ``joint_pos`` -> ``JointMotion``,
``ee_pose``/``ee_delta`` -> ``CartesianMotion`` (absolute), ``joint_vel`` -> ``JointVelocityMotion``
with a ``duration`` (the velocity stops by itself if the bridge goes quiet). Second safety layer:
libfranka reflex thresholds (``set_collision_behavior``) and per-motion force reactions that stop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from armflow.hardware.driver import Driver, DriverError, RobotInfo, RobotState
from armflow.hardware.kinematics import quat_normalize
from armflow.hardware.real_common import cartesian_target, check_setpoint, clip_velocity, load_sdk

PANDA_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
PANDA_Q_MIN = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
PANDA_Q_MAX = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
PANDA_QD_MAX = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
FRANKA_MODES = ("joint_pos", "joint_vel", "ee_pose", "ee_delta")


@dataclass(frozen=True)
class FrankaConfig:
    host: str = "172.16.0.2"
    rate_hz: float = 100.0  # how often the bridge sends new targets
    relative_dynamics_factor: float = 0.2  # franky's velocity/acceleration/jerk scale, (0, 1]
    vel_duration_ms: int = 100  # JointVelocityMotion duration: stops by itself after this
    reflex_force_n: float = 30.0  # libfranka reflex (aborts motion, latches an error)
    reflex_torque_nm: float = 20.0
    reaction_force_n: float = 20.0  # franky reaction: stop the motion above this contact force
    joint_margin_rad: float = 0.05
    ee_delta_max_m: float = 0.01
    ee_delta_max_rad: float = 0.05
    gripper_speed_m_s: float = 0.05
    sdk: object = "real"  # "real" | "fake" | an SDK namespace


def _real_sdk() -> SimpleNamespace:
    import franky

    return SimpleNamespace(**{name: getattr(franky, name) for name in (
        "Robot", "Gripper", "JointMotion", "JointVelocityMotion", "CartesianMotion", "Affine", "Duration",
        "ReferenceType", "Reaction", "Measure", "ControlException")})


class FrankaDriver(Driver):
    def __init__(self, cfg: FrankaConfig = FrankaConfig()):
        self.cfg = cfg
        self.sdk = load_sdk(cfg.sdk, _real_sdk, "armflow.hardware.fakes.franky", "franka", "franky")
        self._qmin = np.asarray(PANDA_Q_MIN) + cfg.joint_margin_rad
        self._qmax = np.asarray(PANDA_Q_MAX) - cfg.joint_margin_rad
        self._robot = self._gripper = None
        self._stopped = False
        self._target: tuple[np.ndarray, np.ndarray] | None = None
        self._grip_sent: float | None = None

    def info(self) -> RobotInfo:
        return RobotInfo(name="franka_panda", dof=7, joint_names=PANDA_JOINTS, joint_pos_min_rad=tuple(self._qmin),
                         joint_pos_max_rad=tuple(self._qmax), joint_vel_max_rad_s=PANDA_QD_MAX,
                         native_rate_hz=self.cfg.rate_hz, modes=FRANKA_MODES, is_sim=False, has_gripper=True)

    def connect(self) -> None:
        c = self.cfg
        self._robot = self.sdk.Robot(c.host)
        self._robot.recover_from_errors()
        self._robot.relative_dynamics_factor = c.relative_dynamics_factor
        self._robot.set_collision_behavior(c.reflex_torque_nm, c.reflex_force_n)
        self._gripper = self.sdk.Gripper(c.host)

    def close(self) -> None:
        if self._robot is not None:
            self._move(self._zero_velocity())
        self._robot = self._gripper = None

    def read_state(self) -> RobotState:
        robot = self._require()
        joints = robot.current_joint_state
        pose = robot.current_cartesian_state.pose.end_effector_pose
        x, y, z, w = np.asarray(pose.quaternion, float)
        return RobotState(
            t_capture_ns=time.monotonic_ns(), joint_pos_rad=np.asarray(joints.position, float),
            joint_vel_rad_s=np.asarray(joints.velocity, float), ee_pos_m=np.asarray(pose.translation, float),
            ee_quat_wxyz=quat_normalize(np.array([w, x, y, z])),
            gripper=float(np.clip(1.0 - self._gripper.width / self._gripper.max_width, 0.0, 1.0)),
            ee_force_n=np.asarray(robot.state.O_F_ext_hat_K, float)[:3],
            extras={"has_errors": bool(robot.has_errors)},
        )

    def command(self, mode: str, setpoint: np.ndarray, gripper: float | None = None) -> np.ndarray:
        self._require()
        if self._stopped:
            raise DriverError("franka: stopped; call recover() first")
        x = check_setpoint("franka", mode, FRANKA_MODES, setpoint, 7)
        sdk, c = self.sdk, self.cfg
        if mode == "joint_pos":
            sent = np.clip(x, self._qmin, self._qmax)
            motion, self._target = sdk.JointMotion(sent.tolist()), None
        elif mode == "joint_vel":
            q = np.asarray(self._robot.current_joint_state.position, float)
            sent = clip_velocity(x, q, self._qmin, self._qmax, PANDA_QD_MAX, 1.0 / c.rate_hz)
            motion = sdk.JointVelocityMotion(sent.tolist(), duration=sdk.Duration(c.vel_duration_ms))
            self._target = None
        else:
            sent, self._target = cartesian_target(mode, x, self._target, self._current_pose,
                                                  c.ee_delta_max_m, c.ee_delta_max_rad)
            pos, (w, qx, qy, qz) = self._target
            motion = sdk.CartesianMotion(sdk.Affine(pos.tolist(), [qx, qy, qz, w]), sdk.ReferenceType.Absolute)
        self._add_force_reactions(motion)
        self._move(motion)
        if gripper is not None:
            self._command_gripper(float(np.clip(gripper, 0.0, 1.0)))
        return sent

    def hold(self) -> None:
        robot = self._require()
        self._target = None
        self._move(self.sdk.JointMotion(np.asarray(robot.current_joint_state.position, float).tolist()))

    def stop(self) -> None:
        self._require()
        self._move(self._zero_velocity(), strict=False)
        self._stopped, self._target = True, None

    def recover(self) -> None:
        self._require().recover_from_errors()
        self._stopped, self._target = False, None

    # -- internals --------------------------------------------------------------------------------
    def _require(self):
        if self._robot is None:
            raise DriverError("franka: not connected; call connect() first")
        return self._robot

    def _move(self, motion, strict: bool = True) -> None:
        try:
            self._robot.move(motion, asynchronous=True)
        except self.sdk.ControlException as exc:
            if strict:
                raise DriverError(f"franka: motion rejected: {exc} (call recover())") from None

    def _zero_velocity(self):
        return self.sdk.JointVelocityMotion([0.0] * 7, duration=self.sdk.Duration(self.cfg.vel_duration_ms))

    def _add_force_reactions(self, motion) -> None:
        m, f = self.sdk.Measure, self.cfg.reaction_force_n
        for axis in (m.FORCE_X, m.FORCE_Y, m.FORCE_Z):
            motion.add_reaction(self.sdk.Reaction((axis > f) | (axis < -f), self._zero_velocity()))

    def _command_gripper(self, closed: float) -> None:
        if self._grip_sent is not None and abs(closed - self._grip_sent) < 0.01:
            return  # the gripper runs its own motion; resend only on a real change
        width = (1.0 - closed) * self._gripper.max_width
        self._gripper.move_async(width, self.cfg.gripper_speed_m_s)
        self._grip_sent = closed

    def _current_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pose = self._robot.current_cartesian_state.pose.end_effector_pose
        x, y, z, w = np.asarray(pose.quaternion, float)
        return np.asarray(pose.translation, float).copy(), quat_normalize(np.array([w, x, y, z]))
