"""The SDK fakes enforce their vendors' documented ordering and watchdogs, and the adapters cope with them."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.hardware import DriverError, make_driver
from armflow.hardware.fakes import franky as fk
from armflow.hardware.fakes import ur_rtde as fur
from armflow.hardware.fakes import xarm as fxa
from armflow.hardware.fakes._clock import ManualClock


def test_ur_fake_requires_servo_stop_before_movej_and_validates_servo_args():
    ctl = fur.FakeURController(clock=ManualClock())
    sdk = fur.make_sdk(ctl)
    c = sdk.RTDEControlInterface("10.0.0.2")
    q = ctl.q.copy()
    with pytest.raises(ValueError, match="lookahead_time"):
        c.servoJ(q.tolist(), 0.0, 0.0, 0.002, 0.5, 300)
    assert c.servoJ((q + 0.001).tolist(), 0.0, 0.0, 0.002, 0.1, 300)
    assert c.moveJ(q.tolist()) is False  # still servoing
    assert c.servoStop()
    assert c.moveJ(q.tolist())
    assert c.speedJ([0.1] * 6, 0.5, 0.002) and c.servoJ(q.tolist(), 0, 0, 0.002, 0.1, 300) is False


def test_ur_fake_protective_stop_on_jump_and_watchdog_stops_the_script():
    clock = ManualClock()
    ctl = fur.FakeURController(clock=clock)
    drv = make_driver("ur", sdk=fur.make_sdk(ctl))
    drv.connect()
    q = drv.read_state().joint_pos_rad
    with pytest.raises(DriverError, match="protective_stop=True"):
        drv.command("joint_pos", q + 0.5)  # 0.5 rad in 2 ms: the safety system stops the arm
    assert ctl.faults[-1].startswith("protective stop")
    clock.advance(5.0)
    drv.recover()
    assert ctl.calls[-3:] == ["unlockProtectiveStop", "reuploadScript", "setWatchdog"]
    drv.command("joint_pos", q)
    clock.advance(0.5)  # no kick for 0.5 s > 1 / 50 Hz: the robot's own watchdog stops the script
    ctl.update()  # the controller box runs on its own clock
    assert not ctl.program_running and "watchdog timeout" in ctl.faults[-1]
    with pytest.raises(DriverError, match="program_running=False"):
        drv.command("joint_pos", q)
    drv.recover()
    assert drv.command("joint_pos", q) is not None


def test_ur_adapter_switches_servo_and_speed_modes_cleanly():
    ctl = fur.FakeURController(clock=ManualClock())
    drv = make_driver("ur", sdk=fur.make_sdk(ctl))
    drv.connect()
    q = drv.read_state().joint_pos_rad
    drv.command("joint_pos", q)
    drv.command("joint_vel", np.full(6, 0.1))
    drv.command("joint_pos", drv.read_state().joint_pos_rad)
    motion_calls = [c for c in ctl.calls if c in ("servoJ", "servoStop", "speedJ", "speedStop")]
    assert motion_calls == ["servoJ", "servoStop", "speedJ", "speedStop", "servoJ"]
    assert not ctl.faults


def test_franky_fake_reflex_latches_until_recover():
    clock = ManualClock()
    ctl = fk.FakeFrankaController(clock=clock)
    drv = make_driver("franka", sdk=fk.make_sdk(ctl))
    drv.connect()
    assert "set_collision_behavior" in ctl.calls and ctl.force_threshold_n[2] == 30.0
    q = drv.read_state().joint_pos_rad
    drv.command("joint_pos", q + 0.1)
    ctl.external_wrench[2] = 45.0  # a collision above the reflex threshold
    clock.advance(0.01)
    assert drv.read_state().extras["has_errors"]
    with pytest.raises(DriverError, match="recover"):
        drv.command("joint_pos", q)
    ctl.external_wrench[:] = 0.0
    drv.recover()
    drv.command("joint_pos", q)
    assert not ctl.errors


def test_franky_reaction_stops_motion_below_reflex_and_velocity_has_duration():
    clock = ManualClock()
    ctl = fk.FakeFrankaController(clock=clock)
    drv = make_driver("franka", sdk=fk.make_sdk(ctl))
    drv.connect()
    v = np.zeros(7)
    v[0] = 0.5
    drv.command("joint_vel", v)
    clock.advance(0.05)
    q_mid = drv.read_state().joint_pos_rad[0]
    clock.advance(1.0)  # the bridge went quiet: the 100 ms duration ran out, the joint stopped
    q_end = drv.read_state().joint_pos_rad[0]
    assert q_end - q_mid < 0.5 * 0.1
    drv.command("joint_vel", v)
    ctl.external_wrench[0] = -25.0  # above the 20 N reaction, below the 30 N reflex
    clock.advance(0.01)
    q1 = drv.read_state().joint_pos_rad[0]
    clock.advance(0.5)
    assert abs(drv.read_state().joint_pos_rad[0] - q1) < 1e-9 and not ctl.errors


def test_xarm_fake_mode_state_ordering():
    ctl = fxa.FakeXArmController(clock=ManualClock())
    arm = fxa.XArmAPI("10.0.0.3", is_radian=True, controller=ctl)
    q = ctl.q.tolist()
    assert arm.set_servo_angle_j(q) == fxa.NOT_READY  # not enabled, no set_state(0)
    arm.motion_enable(True)
    arm.set_mode(1)
    assert arm.mode == 0 and arm.set_servo_angle_j(q) == fxa.NOT_READY  # mode pending until set_state(0)
    arm.set_state(0)
    assert arm.mode == 1 and arm.set_servo_angle_j(q) == 0
    assert arm.vc_set_joint_velocity([0.1] * 7, duration=0.1) == fxa.MODE_IS_NOT_CORRECT
    bad = list(q)
    bad[1] = 3.0
    assert arm.set_servo_angle_j(bad) == fxa.JOINT_LIMIT


def test_xarm_adapter_velocity_always_has_duration_and_errors_latch():
    clock = ManualClock()
    ctl = fxa.FakeXArmController(clock=clock)
    drv = make_driver("xarm", sdk=fxa.make_sdk(ctl))
    drv.connect()
    v = np.zeros(7)
    v[0] = 0.5
    drv.command("joint_vel", v)
    assert "vc_set_joint_velocity(duration=0.1)" in ctl.calls
    clock.advance(2.0)  # the bridge died: the arm stops after 0.1 s instead of running on
    assert drv.read_state().joint_pos_rad[0] == pytest.approx(0.05, abs=1e-6)
    q = drv.read_state().joint_pos_rad
    with pytest.raises(DriverError, match="error_code=24"):
        drv.command("joint_pos", q + 0.5)  # too fast a servo step: controller error 24 latches
    with pytest.raises(DriverError, match="recover"):
        drv.command("joint_pos", q)
    drv.recover()
    assert ctl.calls[-4:] == ["clean_error", "motion_enable(True)", "set_mode(1)", "set_state(0)"]
    drv.command("joint_pos", q)


def test_missing_sdk_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install armflow\[ur\]"):
        make_driver("ur")
