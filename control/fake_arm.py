"""A kinematic fake arm (numpy only) for fast bridge tests and the bridge benchmark.

It tracks every setpoint perfectly (joint modes integrate joints and derive the end effector
from a smooth toy forward kinematics; Cartesian modes move the end effector directly), has a
horizontal "wall" below which it measures a spring contact force (to exercise the force ->
HOLD path), and can append every commanded setpoint to a binary log so tests can check that
nothing out of limits ever reached the "robot". Panda-like joint limits.
"""
from __future__ import annotations

import time

import numpy as np

from armflow.hardware.driver import MODES, Driver, DriverError, RobotInfo, RobotState, rotvec_quat_mul

_PANDA_LO = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
_PANDA_HI = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
_PANDA_VEL = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
_HOME = (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785)
#: log row: [t_ns, mode index, gripper, setpoint padded to 7]
LOG_WIDTH = 10
EE_DELTA_SCALE_M = 0.05  # metres per unit ee_delta action per step (the OSC convention)
EE_DELTA_SCALE_RAD = 0.5  # radians per unit ee_delta rotation per step (a base-frame rotation vector)


def _fk(q: np.ndarray) -> np.ndarray:
    """Toy forward kinematics: smooth, bounded, depends on every joint [m]."""
    return np.array([0.45 + 0.2 * np.sin(q[1]) + 0.05 * np.sin(q[0] + q[2]),
                     0.3 * np.sin(q[0]) + 0.05 * np.sin(q[4]),
                     0.45 + 0.15 * np.cos(q[3] + 2.2) + 0.05 * np.sin(q[5] - 2.0 + q[6] - 0.785)])


class FakeArm(Driver):
    """Args: rate_hz: native rate; is_sim: report as simulation (allows RESET);
    wall_z_m / wall_k_n_m: contact plane height [m] and stiffness [N/m]; log_path: setpoint log;
    fault_after: commands accepted before an injected protective stop (DriverError until recover())."""

    def __init__(self, rate_hz: float = 500.0, is_sim: bool = True, wall_z_m: float = -1.0,
                 wall_k_n_m: float = 2000.0, log_path: str | None = None, fault_after: int | None = None):
        self._info = RobotInfo("fake_arm", 7, tuple(f"joint{i + 1}" for i in range(7)), _PANDA_LO, _PANDA_HI,
                               _PANDA_VEL, float(rate_hz), MODES, bool(is_sim),
                               ee_delta_m_per_unit=EE_DELTA_SCALE_M, ee_delta_rad_per_unit=EE_DELTA_SCALE_RAD)
        self.dt_s = 1.0 / rate_hz
        self.wall_z_m, self.wall_k_n_m = wall_z_m, wall_k_n_m
        self.log_path, self._log = log_path, None
        self.fault_after, self.n_commands, self.faulted = fault_after, 0, False
        self._reset_pose(0)

    def _reset_pose(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.q = np.array(_HOME) + rng.uniform(-0.05, 0.05, 7)
        self.qd = np.zeros(7)
        self.ee_pos = _fk(self.q)
        self.ee_quat = np.array([0.0, 1.0, 0.0, 0.0])
        self.gripper = 0.0
        self.steps = 0

    def info(self) -> RobotInfo:
        return self._info

    def forward_pose(self, q_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The toy forward kinematics (joints do not change the orientation), so the safety layer can check
        joint modes too."""
        return _fk(np.asarray(q_rad, float)), self.ee_quat.copy()

    def connect(self) -> None:
        if self.log_path:
            self._log = open(self.log_path, "ab", buffering=0)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def reset(self, seed: int) -> None:
        """Simulation only: a new episode from a seeded start pose."""
        self._reset_pose(seed)

    def read_state(self) -> RobotState:
        depth = self.wall_z_m - self.ee_pos[2]
        force = np.array([0.0, 0.0, self.wall_k_n_m * depth if depth > 0 else 0.0])
        return RobotState(time.monotonic_ns(), self.q.copy(), self.qd.copy(), self.ee_pos.copy(),
                          self.ee_quat.copy(), self.gripper, force,
                          {"observation.state": np.concatenate([self.q, self.ee_pos, [self.gripper]]).astype("f4"),
                           "success": False, "step": self.steps})

    def command(self, mode: str, setpoint: np.ndarray, gripper: float | None = None) -> np.ndarray:
        setpoint = np.asarray(setpoint, float)
        self.n_commands += 1
        if self.faulted or (self.fault_after is not None and self.n_commands > self.fault_after):
            self.faulted = True  # like a vendor protective stop: every command fails until recover()
            raise DriverError("fake arm: protective stop (injected fault)")
        if mode == "joint_pos":
            self.qd = (setpoint - self.q) / self.dt_s
            self.q = setpoint.copy()
            self.ee_pos = _fk(self.q)
        elif mode == "joint_vel":
            self.qd = setpoint.copy()
            self.q = self.q + setpoint * self.dt_s
            self.ee_pos = _fk(self.q)
        elif mode == "ee_pose":
            self.ee_pos, self.ee_quat = setpoint[:3].copy(), setpoint[3:7] / np.linalg.norm(setpoint[3:7])
        elif mode == "ee_delta":
            self.ee_pos = self.ee_pos + EE_DELTA_SCALE_M * setpoint[:3]
            q = rotvec_quat_mul(EE_DELTA_SCALE_RAD * setpoint[3:6], self.ee_quat)
            self.ee_quat = q / np.linalg.norm(q)
        else:
            raise ValueError(f"FakeArm: unknown mode {mode!r}; valid: {MODES}")
        if gripper is not None:
            self.gripper = float(gripper)
        self.steps += 1
        if self._log is not None:
            row = np.zeros(LOG_WIDTH)
            row[0], row[1], row[2] = time.monotonic_ns(), MODES.index(mode), self.gripper
            row[3:3 + len(setpoint)] = setpoint
            self._log.write(row.tobytes())
        return setpoint

    def hold(self) -> None:
        self.qd = np.zeros(7)

    def stop(self) -> None:
        self.qd = np.zeros(7)

    def recover(self) -> None:
        self.faulted, self.fault_after = False, None


def read_log(path: str) -> np.ndarray:
    """The setpoint log as ``(N, LOG_WIDTH)`` float64 (see ``LOG_WIDTH``)."""
    return np.fromfile(path, dtype=np.float64).reshape(-1, LOG_WIDTH)


def make_fake_arm(rate_hz: float = 500.0, is_sim: bool = True, wall_z_m: float = -1.0,
                  log_path: str | None = None, fault_after: int | None = None) -> FakeArm:
    return FakeArm(rate_hz=rate_hz, is_sim=is_sim, wall_z_m=wall_z_m, log_path=log_path, fault_after=fault_after)
