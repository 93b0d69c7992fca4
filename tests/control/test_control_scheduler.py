"""Chunk scheduling on a fake clock: stale drops, merge, interpolation, starvation, lockstep, and a
policy loop with 20-700 ms inference delays (incl. a cold start)."""
import numpy as np
import pytest

from armflow.control.limits import load_limits
from armflow.control.safety import SafetyLayer
from armflow.control.scheduler import ChunkScheduler
from armflow.control.fake_arm import FakeArm

MS = 1_000_000


def test_stale_waypoints_dropped_and_merge_replaces_future():
    s = ChunkScheduler("joint_pos", 1, exec_latency_ns=5 * MS)
    r = s.insert(0, t0_ns=0, dt_ns=10 * MS, actions=np.arange(10.0)[:, None], gripper=None, now_ns=32 * MS,
                 last_setpoint=np.zeros(1))
    assert (r.n_stale, r.n_kept, r.first_kept_index) == (4, 6, 4)  # t=0..30 < 32+5
    r = s.insert(1, t0_ns=60 * MS, dt_ns=10 * MS, actions=np.full((3, 1), 100.0), gripper=None, now_ns=33 * MS,
                 last_setpoint=np.zeros(1))
    assert r.n_replaced == 4 and r.n_kept == 3  # old t=60..90 replaced, t=40,50 kept
    assert [(w.chunk_id, w.t_ns // MS) for w in s.buffer] == [(0, 40), (0, 50), (1, 60), (1, 70), (1, 80)]


def test_position_interpolates_from_last_setpoint_then_holds_when_starved():
    s = ChunkScheduler("joint_pos", 1)
    s.insert(0, 100 * MS, 100 * MS, np.array([[1.0], [2.0]]), None, now_ns=0, last_setpoint=np.zeros(1))
    assert s.tick(50 * MS, np.zeros(1)).setpoint[0] == pytest.approx(0.5)  # halfway from anchor 0 -> 1
    t = s.tick(100 * MS, None)
    assert t.setpoint[0] == pytest.approx(1.0) and t.executed == [(0, 0, 100 * MS)]
    assert s.tick(150 * MS, None).setpoint[0] == pytest.approx(1.5)
    t = s.tick(250 * MS, None)
    assert t.setpoint[0] == pytest.approx(2.0) and t.starved and t.executed == [(0, 1, 200 * MS)]
    assert s.tick(900 * MS, None).setpoint[0] == pytest.approx(2.0)  # hold, never extrapolate


def test_rate_mode_holds_then_ramps_to_zero():
    s = ChunkScheduler("joint_vel", 1, ramp_ns=100 * MS)
    s.insert(0, 0, 10 * MS, np.array([[1.0], [2.0]]), None, now_ns=0, last_setpoint=None)
    assert s.tick(5 * MS, None).setpoint[0] == 1.0
    assert s.tick(15 * MS, None).setpoint[0] == 2.0
    t = s.tick(20 * MS + 50 * MS, None)
    assert t.starved and t.setpoint[0] == pytest.approx(1.0)  # halfway down the 100 ms ramp
    assert s.tick(500 * MS, None).setpoint[0] == 0.0


def test_lockstep_executes_one_waypoint_per_tick_and_none_when_empty():
    s = ChunkScheduler("ee_delta", 6, lockstep=True)
    assert s.tick(0, None) is None
    s.insert(0, 0, 50 * MS, np.arange(18.0).reshape(3, 6), np.array([0.0, 1.0, 1.0]), now_ns=0, last_setpoint=None)
    out = [s.tick(10**12, None) for _ in range(4)]  # wall time is irrelevant in lockstep
    assert [o.executed[0][1] for o in out[:3]] == [0, 1, 2] and out[3] is None
    np.testing.assert_array_equal(out[1].setpoint, np.arange(6.0, 12.0))
    assert out[1].gripper == 1.0


def _policy_loop(delays_ms: list[float], dt_ms=50, horizon=16, tick_ms=4, margin_ms=20, t_end_ms=5000,
                 clear_clamps_ms=None):
    """Simulated async deployment: inference overlaps motion; returns executed items and setpoints."""
    info = FakeArm().info()
    safety = SafetyLayer(load_limits("sim_panda"), info)
    q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785])
    traj = lambda t_ns: q0 + 0.2 * np.sin(2 * np.pi * 0.5 * t_ns / 1e9)  # noqa: E731  the "true" plan
    from armflow.hardware.driver import RobotState
    state = RobotState(0, q0.copy(), np.zeros(7), np.zeros(3), np.array([1.0, 0, 0, 0]), 0.0)
    safety.reset("joint_pos", state)
    sched = ChunkScheduler("joint_pos", 7)
    dt = dt_ms * MS
    now, last, executed, setpoints, chunk_id = 0, q0.copy(), [], [], 0
    inference_done_at, pending, warm = None, None, []
    t_end = t_end_ms * MS
    delays = iter(delays_ms)
    while now < t_end:
        # the policy side: start an inference when remaining buffer time <= p95(warm delays) + margin
        remaining_ns = (sched.buffer[-1].t_ns - now) if sched.buffer else 0
        p95 = np.percentile(warm, 95) * MS if warm else 0
        if inference_done_at is None and remaining_ns <= p95 + margin_ms * MS:
            d = next(delays, 100.0)
            t_obs = (now // dt) * dt
            pending, inference_done_at = t_obs, now + int(d * MS)
            if chunk_id > 0:
                warm.append(d)  # the cold first inference is excluded from the estimate
        if inference_done_at is not None and now >= inference_done_at:
            t0 = pending + dt
            acts = np.stack([traj(t0 + i * dt) for i in range(horizon)])
            sched.insert(chunk_id, t0, dt, acts, None, now, last)
            chunk_id, inference_done_at = chunk_id + 1, None
        tick = sched.tick(now, last)
        sp, _ = safety.filter("joint_pos", tick.setpoint, None, state, tick_ms / 1e3)
        executed += [(c, i, t) for c, i, t in tick.executed]
        setpoints.append(sp)
        last = sp
        now += tick_ms * MS
        if clear_clamps_ms is not None and now == clear_clamps_ms * MS:
            safety.clamps.clear()
    return executed, np.array(setpoints), safety, dt


@pytest.mark.parametrize("seed", [0, 1])
def test_async_policy_loop_with_inference_delays(seed):
    rng = np.random.default_rng(seed)
    delays = [700.0] + list(rng.uniform(20, 300, 200))
    delays[10] = 700.0  # a late spike after warm-up
    executed, sp, safety, dt = _policy_loop(delays)
    times = np.array([t for _, _, t in executed])
    assert len(executed) > 80
    assert np.all(np.diff(times) > 0), "a waypoint time executed twice or out of order"
    # after the cold start the executed grid is gap-free except where the buffer ran dry
    steps = np.diff(times) // dt
    assert (steps == 1).mean() > 0.95
    for c, i, t in executed:  # each executed index is the chunk's own waypoint for that time
        assert (t - (t // dt) * dt) == 0
    # per-tick delta within the velocity limit everywhere (no jumps at chunk boundaries)
    dq = np.abs(np.diff(sp, axis=0))
    assert np.all(dq <= safety.qd_max * 0.004 + 1e-9)
    assert np.all(sp >= safety.q_lo - 1e-9) and np.all(sp <= safety.q_hi + 1e-9)


def test_policy_loop_tracks_plan_closely_once_warm():
    executed, sp, safety, dt = _policy_loop([700.0] + [60.0] * 300, clear_clamps_ms=2000)
    # after catching up from the cold start, a smooth plan needs no speed clamps
    assert safety.clamps["joint_vel"] == 0 and safety.clamps["joint_limit"] == 0


def test_ee_delta_waypoints_apply_exactly_once_whatever_the_tick_phase():
    """Delta actions are increments: a tick never repeats one (overshoot) nor merges several."""
    from armflow.control.scheduler import ChunkScheduler

    dt = 50_000_000
    sched = ChunkScheduler("ee_delta", 7)
    actions = np.arange(1, 6, dtype=float)[:, None] * np.ones((5, 7))
    sched.insert(1, t0_ns=dt, dt_ns=dt, actions=actions, gripper=None, now_ns=0, last_setpoint=None)
    applied = []
    for now in range(0, 8 * dt, dt // 3):  # ticks three times faster than the waypoints, out of phase
        res = sched.tick(now, None)
        applied.append(res.setpoint[0])
    nonzero = [a for a in applied if a != 0.0]
    assert nonzero == [1.0, 2.0, 3.0, 4.0, 5.0]  # each once, in order
    assert applied[0] == 0.0 and res.starved  # nothing due yet at t=0; dry at the end


# -- issue 10: an ACK must mean "will run, or you hear why" ------------------------------------------------------

def test_admit_decides_at_receipt_what_cannot_run():
    from armflow.control.scheduler import MAX_LEAD_NS, MAX_PAST_NS, admit
    now = 10**12
    assert admit(now + 5 * MS, 10 * MS, 4, now) == ("", "")
    assert admit(now - 25 * MS, 10 * MS, 4, now) == ("", "")  # the tail is still ahead: it runs
    assert admit(now - 40 * MS, 10 * MS, 4, now)[0] == "stale"  # every waypoint already due
    assert admit(now + 5 * MS, 10 * MS, 4, now, exec_latency_ns=50 * MS)[0] == "stale"
    assert admit(now + MAX_LEAD_NS + 1, 10 * MS, 4, now)[0] == "too_far"
    assert admit(now - MAX_PAST_NS - 1, 10**9, 1000, now)[0] == "stale"  # tail ahead, but a clock error


def test_t0_near_int64_max_cannot_wedge_the_scheduler():
    """t0 + i*dt overflowed to negative times: the huge first waypoint sat at the head forever and every
    later chunk was buffered behind it, never to run until a new ARM."""
    s = ChunkScheduler("joint_pos", 1)
    with pytest.raises(ValueError, match="int64"):
        s.insert(0, t0_ns=2**63 - 15 * MS, dt_ns=10 * MS, actions=np.ones((4, 1)), gripper=None, now_ns=0,
                 last_setpoint=np.zeros(1))
    s.insert(1, t0_ns=10 * MS, dt_ns=10 * MS, actions=np.ones((2, 1)), gripper=None, now_ns=0,
             last_setpoint=np.zeros(1))
    ran = [e[:2] for t in range(0, 40 * MS, MS) for e in s.tick(t, np.zeros(1)).executed]
    assert ran == [(1, 0), (1, 1)]


def test_clear_and_merge_report_the_chunks_that_lose_waypoints():
    s = ChunkScheduler("joint_pos", 1)
    kw = {"gripper": None, "last_setpoint": np.zeros(1)}
    s.insert(0, t0_ns=10 * MS, dt_ns=10 * MS, actions=np.ones((3, 1)), now_ns=0, **kw)  # 10, 20, 30 ms
    s.insert(1, t0_ns=40 * MS, dt_ns=10 * MS, actions=np.ones((3, 1)), now_ns=0, **kw)  # 40, 50, 60 ms
    res = s.insert(2, t0_ns=5 * MS, dt_ns=10 * MS, actions=np.ones((2, 1)), now_ns=0, **kw)
    assert res.superseded == [0, 1]  # neither ran a waypoint: the controller must hear it
    s.tick(5 * MS, np.zeros(1))  # chunk 2 starts running
    res = s.insert(3, t0_ns=15 * MS, dt_ns=10 * MS, actions=np.ones((4, 1)), now_ns=6 * MS, **kw)
    assert res.n_replaced == 1 and res.superseded == []  # chunk 2 ran: only its tail was replaced
    assert s.clear() == [3] and s.clear() == []
