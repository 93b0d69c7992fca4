"""Watchdog state machine: lease, ARM, T_cmd -> HOLD, latching, severity, clock sync."""
import pytest

from armflow.control.clock import ClockSync
from armflow.control.watchdog import Watchdog

MS = 1_000_000


def test_lifecycle_and_tcmd_timeout_latches_hold():
    w = Watchdog(100 * MS)
    assert w.state == "DISCONNECTED" and w.on_arm(0) == (False, "no controller lease")
    w.on_lease(True)
    assert w.state == "IDLE" and w.on_chunk()[0] is False
    assert w.on_arm(0)[0] and w.state == "ARMED"
    assert w.on_chunk()[0] and w.state == "RUNNING"
    w.on_command(50 * MS)
    assert not w.check(150 * MS) and w.state == "RUNNING"
    assert w.check(151 * MS) and w.state == "HOLD"
    w.on_command(152 * MS)  # a late heartbeat does not resume
    assert not w.check(153 * MS) and w.state == "HOLD" and not w.motion_allowed
    assert w.on_chunk()[0] is False
    w.on_disarm()
    assert w.state == "HOLD"  # only ARM leaves a latch
    assert w.on_arm(200 * MS)[0] and w.state == "ARMED"
    assert [t[1] for t in w.drain()] == ["IDLE", "ARMED", "RUNNING", "HOLD", "ARMED"]


def test_severity_ordering_and_estop():
    w = Watchdog(100 * MS)
    w.on_lease(True)
    w.on_arm(0)
    assert w.trip("ESTOP", "button")
    assert not w.trip("HOLD", "x") and not w.trip("FAULT", "x") and w.state == "ESTOP"
    w.on_lease(False)
    assert w.state == "ESTOP"  # lease loss does not clear a latch
    w.on_lease(True)
    assert w.on_arm(0)[0] and w.state == "ARMED"
    assert w.trip("HOLD", "x") and w.trip("FAULT", "y") and w.state == "FAULT"
    with pytest.raises(ValueError):
        w.trip("RUNNING", "no")


def test_lease_loss_while_moving_holds():
    w = Watchdog(100 * MS)
    w.on_lease(True)
    w.on_arm(0)
    w.on_lease(False)
    assert w.state == "HOLD"
    idle = Watchdog(100 * MS)
    idle.on_lease(True)
    idle.on_lease(False)
    assert idle.state == "DISCONNECTED"


def test_clock_sync_keeps_min_rtt_sample():
    c = ClockSync()
    # server clock = client + 1000; symmetric 10 ns paths, then an asymmetric slow sample
    assert c.add_sample(0, 1010, 1020, 30)
    assert c.offset_ns == 1000 and c.rtt_ns == 20
    assert not c.add_sample(100, 1500, 1510, 520)  # rtt 410: ignored
    assert c.offset_ns == 1000 and c.to_server(5) == 1005 and c.error_bound_ns == 10
    assert not c.add_sample(0, 0, 10, -5)  # corrupt (negative rtt)
