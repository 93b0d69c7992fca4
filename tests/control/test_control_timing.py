"""Servo timing helpers: garbage collection moved out of the tick into the slack after it; deadline scheduling."""
import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

from armflow.control.client import BridgeClient
from armflow.control.launch import ServerProcess
from armflow.control.server import ServerConfig
from armflow.control.timing import DEADLINE_RUNTIME_FRACTION, SlackGC, TickTrace, set_deadline_scheduling


class _Node:
    pass


def test_slack_gc_collects_only_when_the_loop_asks_and_in_the_interpreters_schedule():
    calls = []

    def on_gc(phase, info):
        if phase == "start":
            calls.append(info["generation"])

    slack = SlackGC()
    slack.start()
    gc.callbacks.append(on_gc)
    try:
        assert not gc.isenabled()
        for _ in range(3 * slack.threshold):  # cyclic garbage: the interpreter would have collected by now
            node = _Node()
            node.me = node
        assert calls == []  # nothing ran inside the "tick"
        slack.after_tick()
        assert calls == [0]
        slack.after_tick()  # below the threshold again: nothing to do
        assert calls == [0]
        for _ in range(9):
            for _ in range(slack.threshold + 1):
                node = _Node()
                node.me = node
            slack.after_tick()
        assert calls == [0] * 9 + [1]  # every 10th collection is an older generation's, as gc would
    finally:
        gc.callbacks.remove(on_gc)
        slack.stop()
        gc.unfreeze()
    assert gc.isenabled()


def test_deadline_scheduling_applies_to_the_calling_thread_only_and_its_new_threads_may_start():
    """The servo's tick thread asks for SCHED_DEADLINE (ahead of every FIFO task); threads it makes later must
    still start (a deadline thread may not clone without RESET_ON_FORK) and run SCHED_OTHER."""
    out = {}

    def tick_thread():
        out["applied"] = set_deadline_scheduling(2_000_000)
        out["policy"] = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
        child = threading.Thread(target=lambda: out.__setitem__("child", os.sched_getscheduler(0)))
        child.start()
        child.join()

    t = threading.Thread(target=tick_thread)
    t.start()
    t.join()
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's own thread is untouched
    if not out["applied"]:
        pytest.skip("SCHED_DEADLINE is not permitted here (no CAP_SYS_NICE, or admission refused)")
    assert out["applied"] == f"SCHED_DEADLINE {2000 * DEADLINE_RUNTIME_FRACTION:.0f} us / 2000 us"
    assert out["policy"] == 6 and out["child"] == os.SCHED_OTHER


def test_servo_trace_records_each_tick_and_a_late_tick_re_phases_instead_of_catching_up(tmp_path, monkeypatch):
    """``ARMFLOW_SERVO_TRACE``: the diagnostic that attributed the late ticks (wake-up vs the tick's own work).
    The servo stopped for 30 ms wakes late; the tick after it comes a full period later (no catch-up ticks:
    no period in the whole run is shorter than 3/4 of the nominal one)."""
    monkeypatch.setenv("ARMFLOW_SERVO_TRACE", str(tmp_path / "trace"))
    cfg = ServerConfig(robot="fake_arm", robot_options={"rate_hz": 200.0}, endpoint=f"ipc://{tmp_path}/tr")
    with ServerProcess(cfg) as sp, BridgeClient(sp.endpoint) as c:
        c.arm("joint_pos")
        q = c.read_state().joint_pos_rad
        c.send_chunk(np.repeat(q[None], 10, 0), c.server_now_ns() + 20_000_000, 20_000_000, "joint_pos")
        time.sleep(0.15)
        servo_pid = int(open(f"/proc/{sp.proc.pid}/task/{sp.proc.pid}/children").read().split()[0])
        os.kill(servo_pid, signal.SIGSTOP)
        time.sleep(0.03)
        os.kill(servo_pid, signal.SIGCONT)
        time.sleep(0.15)
        c.disarm()
    files = list(tmp_path.glob("trace.*.npy"))
    assert len(files) == 1
    rows = np.load(files[0])
    assert rows.shape[1] == len(TickTrace.COLUMNS) and len(rows) > 20
    deadline, wake, work_end, gc_end, runq_wait, cpu, flags = rows.T
    assert (wake >= deadline).all() and (work_end >= wake).all() and (gc_end >= work_end).all()
    assert (np.diff(deadline) >= 5_000_000).all()  # one row per 200 Hz tick, in order
    assert (runq_wait >= 0).all() and (cpu >= 0).all() and cpu.sum() > 0  # accounted at context switches
    assert (flags & TickTrace.F_MOVED).sum() > 10 and (flags & TickTrace.F_PUB).sum() > 5
    assert (flags & TickTrace.F_CMD).any()  # the chunk (and the ARM) arrived in some tick
    period = 5_000_000
    late = np.flatnonzero(wake - deadline > period // 4)
    assert len(late) and (wake - deadline).max() > 20_000_000  # the stop
    assert (deadline[late[late < len(rows) - 1] + 1] == wake[late[late < len(rows) - 1]] + period).all()
    assert np.diff(wake).min() >= period * 3 // 4
