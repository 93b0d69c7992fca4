"""Every driver passes the same contract: the three MuJoCo sim arms and the three real adapters on their SDK fakes."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.configs import ConfigError
from armflow.hardware import MODES, DriverError, make_driver
from armflow.hardware.fakes import franky as fake_franky
from armflow.hardware.fakes import ur_rtde as fake_ur
from armflow.hardware.fakes import xarm as fake_xarm
from armflow.hardware.fakes._clock import ManualClock

SIMS = ("sim_panda", "sim_ur5e", "sim_xarm7")
REALS = ("ur", "franka", "xarm")
FAKE_CONTROLLERS = {"ur": (fake_ur, "FakeURController"), "franka": (fake_franky, "FakeFrankaController"),
                    "xarm": (fake_xarm, "FakeXArmController")}


class Rig:
    """A driver plus a way to let time pass without a new command (sim: idle ticks; fakes: the manual clock)."""

    def __init__(self, name: str):
        self.name = name
        if name in SIMS:
            self.driver, self.clock = make_driver(name), None
        else:
            module, cls = FAKE_CONTROLLERS[name]
            self.clock = ManualClock()
            self.controller = getattr(module, cls)(clock=self.clock)
            self.driver = make_driver(name, sdk=module.make_sdk(self.controller))
        self.dt = 1.0 / self.driver.info().native_rate_hz

    def tick(self) -> None:
        """Call after each command: time moves one servo period on the fakes (the sim already stepped)."""
        if self.clock is not None:
            self.clock.advance(self.dt)

    def idle(self, n: int) -> None:
        if self.clock is None:
            self.driver.idle(n)
        else:
            self.clock.advance(n * self.dt)


@pytest.fixture(scope="module")
def sim_drivers():
    return {name: Rig(name) for name in SIMS}


@pytest.fixture(params=SIMS + REALS)
def rig(request, sim_drivers):
    if request.param in SIMS:
        r = sim_drivers[request.param]
        r.driver.connect()
        r.driver.reset()
    else:
        r = Rig(request.param)
        r.driver.connect()
    yield r
    r.driver.close()


def test_info_is_sane(rig):
    info = rig.driver.info()
    assert info.dof == len(info.joint_names) == len(info.joint_pos_min_rad) == len(info.joint_vel_max_rad_s)
    assert np.all(np.asarray(info.joint_pos_min_rad) < np.asarray(info.joint_pos_max_rad))
    assert np.all(np.asarray(info.joint_vel_max_rad_s) > 0) and info.native_rate_hz > 0
    assert set(info.modes) <= set(MODES) and "joint_pos" in info.modes
    assert info.is_sim == rig.name.startswith("sim_")


@pytest.mark.parametrize("name", ("sim_ur5e", "ur", "xarm"))
def test_connect_close_and_context_manager(name):
    rig = Rig(name)
    with pytest.raises(DriverError, match="not connected"):
        rig.driver.read_state()
    with rig.driver as drv:
        assert drv.read_state().joint_pos_rad.shape == (drv.info().dof,)
    with pytest.raises(DriverError, match="not connected"):
        rig.driver.command("joint_pos", np.zeros(rig.driver.info().dof))


def test_state_is_stamped_monotonic_and_finite(rig):
    drv, dof = rig.driver, rig.driver.info().dof
    s1 = drv.read_state()
    s2 = drv.read_state()
    assert s2.t_capture_ns >= s1.t_capture_ns > 0
    for s in (s1, s2):
        assert s.joint_pos_rad.shape == s.joint_vel_rad_s.shape == (dof,)
        assert s.ee_pos_m.shape == (3,) and s.ee_quat_wxyz.shape == (4,) and s.ee_force_n.shape == (3,)
        assert np.all(np.isfinite(np.concatenate([s.joint_pos_rad, s.joint_vel_rad_s, s.ee_pos_m, s.ee_force_n])))
        assert abs(np.linalg.norm(s.ee_quat_wxyz) - 1.0) < 1e-6 and 0.0 <= s.gripper <= 1.0


def test_command_returns_clipped_setpoint_and_rejects_bad_input(rig):
    drv, info = rig.driver, rig.driver.info()
    q = drv.read_state().joint_pos_rad
    v_big = np.full(info.dof, 100.0)
    sent = drv.command("joint_vel", v_big)
    rig.tick()
    assert np.all(sent <= np.asarray(info.joint_vel_max_rad_s) + 1e-9) and np.all(sent >= 0)
    assert np.any(sent > 0)
    drv.hold()
    q = drv.read_state().joint_pos_rad
    target = q.copy()
    target[0] = info.joint_pos_max_rad[0] + 10.0  # far outside: must be clipped (the fakes then refuse the jump)
    with pytest.raises(ValueError, match="shape"):
        drv.command("joint_pos", np.zeros(info.dof + 1))
    with pytest.raises(ValueError, match="finite"):
        drv.command("joint_pos", np.full(info.dof, np.nan))
    with pytest.raises(ValueError, match="valid modes"):
        drv.command("torque", q)
    if rig.name in SIMS:
        sent = drv.command("joint_pos", target)
        assert sent[0] == pytest.approx(info.joint_pos_max_rad[0]) and np.allclose(sent[1:], q[1:])


def test_joint_limits_respected_under_velocity_command(rig):
    drv, info = rig.driver, rig.driver.info()
    qmin, qmax, vmax = (np.asarray(a) for a in (info.joint_pos_min_rad, info.joint_pos_max_rad, info.joint_vel_max_rad_s))
    q = drv.read_state().joint_pos_rad
    j = int(np.argmin((qmax - q) / vmax))  # the joint that reaches its upper limit first
    n_ticks = int(np.ceil((qmax[j] - q[j]) / (0.8 * vmax[j]) / rig.dt)) + 40
    v = np.zeros(info.dof)
    v[j] = 0.8 * vmax[j]
    for _ in range(n_ticks):
        sent = drv.command("joint_vel", v)
        rig.tick()
        q_now = drv.read_state().joint_pos_rad
        assert np.all(q_now <= qmax + 0.02) and np.all(q_now >= qmin - 0.02)
    assert sent[j] < v[j]  # the driver slowed the joint down at its limit
    assert drv.read_state().joint_pos_rad[j] > qmax[j] - 0.1  # and it did get there


def test_hold_stop_recover(rig):
    drv, dof = rig.driver, rig.driver.info().dof
    v = np.zeros(dof)
    v[0] = 0.3
    for _ in range(20):
        drv.command("joint_vel", v)
        rig.tick()
    drv.hold()
    q_hold = drv.read_state().joint_pos_rad
    rig.idle(100)
    assert np.max(np.abs(drv.read_state().joint_pos_rad - q_hold)) < 0.02
    drv.stop()
    with pytest.raises(DriverError):
        drv.command("joint_vel", v)
    if rig.name == "ur":
        with pytest.raises(DriverError, match="unlock"):
            drv.recover()  # UR refuses to unlock a protective stop within 5 s
        rig.clock.advance(5.0)
    drv.recover()
    q0 = drv.read_state().joint_pos_rad
    for _ in range(30):
        drv.command("joint_vel", v)
        rig.tick()
    assert drv.read_state().joint_pos_rad[0] > q0[0] + 1e-3


def test_gripper(rig):
    drv, dof = rig.driver, rig.driver.info().dof
    if not drv.info().has_gripper:
        with pytest.raises(DriverError, match="gripper"):
            drv.command("joint_vel", np.zeros(dof), gripper=1.0)
        return
    for _ in range(150):
        drv.command("joint_vel", np.zeros(dof), gripper=1.0)
        rig.tick()
    assert drv.read_state().gripper > 0.8
    for _ in range(150):
        drv.command("joint_vel", np.zeros(dof), gripper=0.0)
        rig.tick()
    assert drv.read_state().gripper < 0.2


def test_ee_delta_moves_the_end_effector(rig):
    drv = rig.driver
    p0 = drv.read_state().ee_pos_m
    step = np.array([0.0, 0.0, 0.0005, 0.0, 0.0, 0.0])  # 0.5 mm up per tick
    for _ in range(60):
        drv.command("ee_delta", step)
        rig.tick()
    rig.idle(100)
    dz = drv.read_state().ee_pos_m[2] - p0[2]
    assert dz == pytest.approx(0.03, abs=0.006)


def test_make_driver_registry_errors():
    with pytest.raises(KeyError, match="valid robots: sim_panda"):
        make_driver("sim_kuka")
    with pytest.raises(ConfigError, match="unknown config key.*latncy_s.*Did you mean 'latency_s'"):
        make_driver("sim_panda", latncy_s=0.1)
    with pytest.raises(ValueError, match="needs robot sim_panda"):
        make_driver("sim_ur5e", task="lift")
