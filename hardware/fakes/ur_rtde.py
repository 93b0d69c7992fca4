"""A fake ``ur_rtde`` (RTDEControlInterface / RTDEReceiveInterface / DashboardClient) over one fake UR5e box.

Enforced, as documented by ur_rtde and Universal Robots:

- The control script runs once ``RTDEControlInterface`` is constructed; control calls return ``False``
  while it is not running (after a protective stop, a watchdog timeout, ``stopScript``) until
  ``reuploadScript()``.
- ``servoJ``/``servoL`` validate ``lookahead_time`` in [0.03, 0.2] s and ``gain`` in [100, 2000]
  (``ValueError``, like ur_rtde's range_error). Servo and speed modes exclude each other and any
  ``moveJ``/``moveL``: ``servoStop()`` / ``speedStop()`` first, else the call returns ``False``.
- A servo target outside the joint limits, or one that needs more than the joint speed limit to
  reach in its ``time``, is a protective stop (latched). ``triggerProtectiveStop()`` is one too.
- Protective stop: motion stops, the program stops, ``isProtectiveStopped()`` is True; it clears only
  by ``DashboardClient.unlockProtectiveStop()`` at least 5 s after it happened, then ``reuploadScript()``.
- ``setWatchdog(min_frequency)``: once armed, if ``kickWatchdog()`` is not called within
  ``1 / min_frequency`` the control script stops (the robot halts).
- ``speedJ(qd, acceleration, time)`` keeps moving at ``qd`` until ``speedStop`` or a new command.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from armflow.hardware.fakes._clock import WallClock
from armflow.hardware.fakes._kin import UR5E
from armflow.hardware.kinematics import quat_to_rotvec

Q_MAX_RAD = np.array([2 * np.pi, 2 * np.pi, np.pi, 2 * np.pi, 2 * np.pi, 2 * np.pi])
QD_MAX_RAD_S = np.full(6, np.pi)
UNLOCK_DELAY_S = 5.0
HOME_RAD = np.array([0.0, -1.57, 1.57, -1.57, -1.57, 0.0])


class FakeURController:
    """The controller box: joint state, script/servo/speed/protective-stop state and the watchdog."""

    def __init__(self, q0_rad=HOME_RAD, clock=None):
        self.clock = clock or WallClock()
        self.q = np.asarray(q0_rad, float).copy()
        self.qd = np.zeros(6)
        self.program_running = False
        self.servo_active = self.speed_active = False
        self.protective_stop = False
        self.t_stop_s = -np.inf
        self.watchdog_min_hz: float | None = None
        self.t_kick_s = self.clock.now()
        self.t_update_s = self.clock.now()
        self.external_wrench = np.zeros(6)  # tests inject contact here
        self.faults: list[str] = []  # every fault, in order (what a test asserts on)
        self.calls: list[str] = []

    def update(self) -> None:
        """Advance the controller to clock time: integrate speedJ, check the watchdog."""
        now = self.clock.now()
        dt = now - self.t_update_s
        self.t_update_s = now
        if self.program_running and self.watchdog_min_hz and now - self.t_kick_s > 1.0 / self.watchdog_min_hz:
            self.faults.append("watchdog timeout: control script stopped")
            self._halt(program=True)
        if self.speed_active and self.program_running:
            q = self.q + self.qd * dt
            if np.any(np.abs(q) > Q_MAX_RAD):
                self.protect("joint position limit reached under speedJ")
            else:
                self.q = q

    def protect(self, reason: str) -> None:
        self.faults.append(f"protective stop: {reason}")
        self.protective_stop = True
        self.t_stop_s = self.clock.now()
        self._halt(program=True)

    def _halt(self, program: bool) -> None:
        self.qd = np.zeros(6)
        self.servo_active = self.speed_active = False
        if program:
            self.program_running = False

    def tcp_pose(self) -> np.ndarray:
        pos, quat = UR5E.pose(self.q)
        return np.concatenate([pos, quat_to_rotvec(quat)])


class _Control:
    def __init__(self, ctl: FakeURController, hostname: str, frequency: float = 500.0):
        self._c, self.hostname, self.frequency = ctl, hostname, frequency
        self._connected = True
        ctl.program_running = not ctl.protective_stop
        ctl.calls.append("RTDEControlInterface")

    def _ready(self, what: str) -> bool:
        c = self._c
        c.update()
        c.calls.append(what)
        return self._connected and c.program_running and not c.protective_stop

    def _servo_target(self, q: np.ndarray, time_s: float) -> bool:
        c = self._c
        if np.any(np.abs(q) > Q_MAX_RAD):
            c.protect(f"servo target outside joint limits: {q}")
            return False
        if np.any(np.abs(q - c.q) > QD_MAX_RAD_S * max(time_s, 1e-3) * 1.001):
            c.protect("servo step exceeds the joint speed limit")
            return False
        c.qd = (q - c.q) / max(time_s, 1e-3)
        c.q = q.copy()
        c.servo_active = True
        return True

    @staticmethod
    def _check_servo_args(lookahead_time: float, gain: float) -> None:
        if not 0.03 <= lookahead_time <= 0.2:
            raise ValueError(f"lookahead_time {lookahead_time} outside [0.03, 0.2]")
        if not 100 <= gain <= 2000:
            raise ValueError(f"gain {gain} outside [100, 2000]")

    def servoJ(self, q, speed, acceleration, time, lookahead_time, gain) -> bool:
        self._check_servo_args(lookahead_time, gain)
        if not self._ready("servoJ") or self._c.speed_active:
            return False
        return self._servo_target(np.asarray(q, float), time)

    def servoL(self, pose, speed, acceleration, time, lookahead_time, gain) -> bool:
        self._check_servo_args(lookahead_time, gain)
        if not self._ready("servoL") or self._c.speed_active:
            return False
        from armflow.hardware.kinematics import rotvec_to_quat

        pose = np.asarray(pose, float)
        q = UR5E.ik(self._c.q, pose[:3], rotvec_to_quat(pose[3:]))
        return self._servo_target(q, time)

    def servoStop(self, a: float = 10.0) -> bool:
        ok = self._ready("servoStop")
        self._c.servo_active = False
        self._c.qd = np.zeros(6)
        return ok

    def speedJ(self, qd, acceleration: float = 0.5, time: float = 0.0) -> bool:
        if not self._ready("speedJ") or self._c.servo_active:
            return False
        qd = np.asarray(qd, float)
        if np.any(np.abs(qd) > QD_MAX_RAD_S):
            self._c.protect(f"speedJ above the joint speed limit: {qd}")
            return False
        self._c.qd, self._c.speed_active = qd.copy(), True
        return True

    def speedStop(self, a: float = 10.0) -> bool:
        ok = self._ready("speedStop")
        self._c.speed_active = False
        self._c.qd = np.zeros(6)
        return ok

    def moveJ(self, q, speed: float = 1.05, acceleration: float = 1.4, asynchronous: bool = False) -> bool:
        if not self._ready("moveJ") or self._c.servo_active or self._c.speed_active:
            return False
        q = np.asarray(q, float)
        if np.any(np.abs(q) > Q_MAX_RAD):
            return False  # the planner refuses unreachable targets without a stop
        self._c.q = q.copy()
        return True

    def setWatchdog(self, min_frequency: float = 10.0) -> bool:
        ok = self._ready("setWatchdog")
        self._c.watchdog_min_hz = float(min_frequency)
        self._c.t_kick_s = self._c.clock.now()
        return ok

    def kickWatchdog(self) -> bool:
        ok = self._ready("kickWatchdog")
        if ok:
            self._c.t_kick_s = self._c.clock.now()
        return ok

    def triggerProtectiveStop(self) -> bool:
        self._c.calls.append("triggerProtectiveStop")
        self._c.protect("triggered by the client")
        return True

    def isProgramRunning(self) -> bool:
        self._c.update()
        return self._c.program_running

    def isConnected(self) -> bool:
        return self._connected

    def reuploadScript(self) -> bool:
        c = self._c
        c.calls.append("reuploadScript")
        if c.protective_stop:
            return False
        c.program_running, c.t_kick_s = True, c.clock.now()
        return True

    def stopScript(self) -> None:
        self._c.calls.append("stopScript")
        self._c._halt(program=True)

    def disconnect(self) -> None:
        self._connected = False


class _Receive:
    def __init__(self, ctl: FakeURController, hostname: str, frequency: float = -1.0):
        self._c, self.hostname = ctl, hostname
        self._connected = True

    def _state(self) -> FakeURController:
        if not self._connected:
            raise RuntimeError("RTDEReceiveInterface: not connected")
        self._c.update()
        return self._c

    def getActualQ(self) -> list[float]:
        return self._state().q.tolist()

    def getActualQd(self) -> list[float]:
        return self._state().qd.tolist()

    def getActualTCPPose(self) -> list[float]:
        return self._state().tcp_pose().tolist()

    def getActualTCPForce(self) -> list[float]:
        return self._state().external_wrench.tolist()

    def getTimestamp(self) -> float:
        return self._state().clock.now()

    def isProtectiveStopped(self) -> bool:
        return self._state().protective_stop

    def getSafetyMode(self) -> int:
        return 3 if self._state().protective_stop else 1  # 1 NORMAL, 3 PROTECTIVE_STOP

    def getRobotMode(self) -> int:
        return 7  # RUNNING (powered, brakes released)

    def isConnected(self) -> bool:
        return self._connected

    def disconnect(self) -> None:
        self._connected = False


class _Dashboard:
    def __init__(self, ctl: FakeURController, hostname: str):
        self._c, self.hostname, self._connected = ctl, hostname, False

    def connect(self) -> None:
        self._connected = True

    def isConnected(self) -> bool:
        return self._connected

    def unlockProtectiveStop(self) -> None:
        c = self._c
        c.calls.append("unlockProtectiveStop")
        if not self._connected:
            raise RuntimeError("DashboardClient: not connected")
        if c.protective_stop and c.clock.now() - c.t_stop_s < UNLOCK_DELAY_S:
            raise RuntimeError("Cannot unlock protective stop until 5s after occurrence. Always inspect cause.")
        c.protective_stop = False

    def closeSafetyPopup(self) -> None:
        pass

    def disconnect(self) -> None:
        self._connected = False


def make_sdk(controller: FakeURController | None = None) -> SimpleNamespace:
    """The three ur_rtde classes, all talking to ``controller`` (a new one when None)."""
    ctl = controller or FakeURController()
    return SimpleNamespace(
        controller=ctl,
        RTDEControlInterface=lambda hostname, frequency=500.0, *a: _Control(ctl, hostname, frequency),
        RTDEReceiveInterface=lambda hostname, frequency=-1.0, *a: _Receive(ctl, hostname, frequency),
        DashboardClient=lambda hostname, *a: _Dashboard(ctl, hostname),
    )
