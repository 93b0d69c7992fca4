"""The one arm interface shared by the MuJoCo sim arm, every real arm, and the bridge client.

Numpy only: this module runs on a robot's controller PC (never torch).
Units: joints [rad], positions [m], orientation as quaternion (w, x, y, z), time [ns]
from ``time.monotonic_ns()`` on the host that captured it.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

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
