"""The live bridge (server process + servo process + fake arm): handshake, version negotiation, lease,
allow_real, e-stop jumping the queue, resume check, server death -> client error, and lockstep stepping."""
import os
import time

import msgpack
import numpy as np
import pytest
import zmq

from armflow.control import protocol as P
from armflow.control.client import BridgeClient, BridgeError
from armflow.control.fake_arm import read_log
from armflow.control.launch import ServerProcess
from armflow.control.limits import load_limits
from armflow.control.server import ServerConfig

pytestmark = pytest.mark.timeout(120)
SCHED_DEADLINE = 6  # Linux; Python's os has no name for it
MS = 1_000_000


def _cfg(tmp_path, name, **kw):
    opts = {"rate_hz": 200.0, "log_path": str(tmp_path / f"{name}.log")}
    opts.update(kw.pop("robot_options", {}))
    return ServerConfig(robot="fake_arm", robot_options=opts, endpoint=f"ipc://{tmp_path}/{name}", **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bridge")
    with ServerProcess(_cfg(tmp, "main", lease_timeout_ms=400)) as sp:
        sp.log_path = str(tmp / "main.log")
        yield sp


def _raw_hello(endpoint, major, minor=0, role="controller"):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(endpoint)
    hdr = {"v": [major, minor], "type": "HELLO", "seq": 1, "session": "", "t_send_ns": 0, "frames": [],
           "body": {"client_version": "other", "role": role, "from_the_future": 1}}
    s.send_multipart([msgpack.packb(hdr)])
    assert s.poll(3000)
    msg = P.decode(s.recv_multipart(), max_bytes=P.MAX_PUB_BYTES)
    s.close()
    return msg


def test_welcome_carries_robot_limits_and_clock(server):
    with BridgeClient(server.endpoint, role="observer") as obs:
        w = obs.welcome
        lim = load_limits("sim_panda")
        assert w["limits_hash"] == lim.hash and w["limits"]["force_max_n"] == lim.force_max_n
        assert w["robot"]["is_sim"] is True and set(w["robot"]["modes"]) == set(P.ACTION_SPACES)
        assert w["servo_rate_hz"] == 200.0 and w["timing"] == "realtime"
        assert w["action_dims"] == {"joint_pos": 7, "joint_vel": 7, "ee_pose": 7, "ee_delta": 6}
        assert abs(obs.clock.offset_ns) < 5 * MS  # same host: offset ~ 0 within the RTT bound
        assert obs.info().dof == 7 and obs.read_state().joint_pos_rad.shape == (7,)


def test_version_major_mismatch_rejected_minor_accepted(server):
    msg = _raw_hello(server.endpoint, P.PROTOCOL_VERSION[0] + 1)
    assert msg.type == "REJECT" and msg.body["code"] == "version"
    msg = _raw_hello(server.endpoint, P.PROTOCOL_VERSION[0], P.PROTOCOL_VERSION[1] + 1, role="observer")
    assert msg.type == "WELCOME"  # a newer minor (with a field we do not know) is accepted


def test_lease_is_exclusive_observers_unlimited(server):
    with BridgeClient(server.endpoint) as ctrl:
        with pytest.raises(BridgeError) as err:
            BridgeClient(server.endpoint).connect()
        assert err.value.code == "lease_held"
        observers = [BridgeClient(server.endpoint, role="observer") for _ in range(3)]
        for o in observers:
            o.connect()
        with pytest.raises(BridgeError) as err:
            observers[0].arm("joint_pos")
        assert err.value.code == "not_controller"
        ctrl.arm("joint_pos")
        ctrl.disarm()
        for o in observers:
            o.close()
    # BYE released the lease: a new controller gets it at once
    with BridgeClient(server.endpoint) as again:
        again.heartbeat()


def test_silent_controller_loses_lease(server):
    first = BridgeClient(server.endpoint)
    first.connect()
    time.sleep(0.6)  # > lease_timeout_ms without a message
    with BridgeClient(server.endpoint) as second:
        second.heartbeat()
    with pytest.raises(BridgeError):
        first.heartbeat()  # its session is gone
    first.close()


def test_estop_jumps_the_queue_and_latches(server):
    with BridgeClient(server.endpoint) as c:
        c.arm("joint_pos")
        q = c.read_state().joint_pos_rad
        now = c.server_now_ns()
        for k in range(30):  # flood the servo pipe with chunks
            c.send_chunk(q + 0.01 * np.sin(np.arange(50)[:, None] * 0.1 + k), now + 5 * MS, 10 * MS, "joint_pos")
        t_estop = time.monotonic_ns()
        c.estop("test")
        st = c.wait_state(lambda s: s["status"] == "ESTOP", timeout_s=2.0)
        assert st is not None
        ev = [d for k, d in c.drain_events() if k == "state" and d["new"] == "ESTOP"]
        latency_ms = (ev[0]["t_ns"] - t_estop) / 1e6
        assert latency_ms < 50, f"e-stop took {latency_ms:.1f} ms"
        time.sleep(0.1)
        log = read_log(server.log_path)
        assert not (log[:, 0] > ev[0]["t_ns"] + 6 * MS).any(), "motion after e-stop"
        with pytest.raises(BridgeError, match="ARM first") as err:
            c.send_chunk(q[None], c.server_now_ns(), 10 * MS, "joint_pos")
        assert err.value.code == "not_armed"
        # explicit ARM resumes, but a first waypoint far from the measured pose is refused
        c.arm("joint_pos")
        q = c.read_state().joint_pos_rad
        c.send_chunk((q + 1.0)[None], c.server_now_ns() + 20 * MS, 10 * MS, "joint_pos")
        time.sleep(0.1)
        c.heartbeat()
        assert any("max_resume_delta" in d["reason"] for k, d in c.drain_events() if k == "chunk_rejected")
        c.send_chunk((q + 0.02)[None], c.server_now_ns() + 20 * MS, 10 * MS, "joint_pos")
        c.wait_state(lambda s: s["status"] == "RUNNING", timeout_s=2.0)
        c.disarm()


def test_mode_gating_and_chunk_validation(server):
    with BridgeClient(server.endpoint) as c:
        c.arm("joint_pos")
        with pytest.raises(BridgeError) as err:
            c.send_chunk(np.full((2, 7), np.nan), c.server_now_ns(), 10 * MS, "joint_pos")
        assert err.value.code == "not_finite"
        with pytest.raises(BridgeError) as err:  # valid, but not the armed mode: refused at receipt, not ACKed
            c.send_chunk(np.zeros((2, 6)), c.server_now_ns(), 10 * MS, "ee_delta")
        assert err.value.code == "wrong_mode" and "armed mode joint_pos" in str(err.value)
        with pytest.raises(BridgeError) as err:
            c.request("CHUNK", {"chunk_id": 99, "obs_seq": 0, "t0_ns": 0, "dt_ns": 10 * MS, "action_space": "joint_pos"},
                      {"actions": np.zeros((2, 7)), "evil": np.zeros(3)})
        assert err.value.code == "bad_frames"
        c.disarm()


def test_real_robot_requires_allow_real(tmp_path):
    with ServerProcess(_cfg(tmp_path, "real", robot_options={"is_sim": False})) as sp:
        with pytest.raises(BridgeError) as err:
            BridgeClient(sp.endpoint).connect()
        assert err.value.code == "allow_real"
        with BridgeClient(sp.endpoint, allow_real=True) as c:
            with pytest.raises(BridgeError) as err:
                c.reset(0)
            assert err.value.code == "not_sim"


def _children(pid):
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(x) for x in open(path).read().split()] if os.path.exists(path) else []


def test_server_killed_client_errors_within_1s_and_servo_stops(tmp_path):
    sp = ServerProcess(_cfg(tmp_path, "dies")).__enter__()
    try:
        servo_pids = _children(sp.proc.pid)
        c = BridgeClient(sp.endpoint)
        c.connect()
        c.arm("joint_pos")
        sp.kill()
        t0 = time.monotonic()
        with pytest.raises(BridgeError) as err:
            c.heartbeat()
        assert time.monotonic() - t0 < 1.0 and err.value.code == "timeout"
        assert "did not answer" in str(err.value)
        with pytest.raises(BridgeError):
            time.sleep(max(0.0, 1.05 - (time.monotonic() - t0)))
            c.read_state()
        c.close()
        deadline = time.monotonic() + 5
        while servo_pids and any(os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]
                                 for p in servo_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert servo_pids and time.monotonic() < deadline, "servo process outlived its server"
    finally:
        sp.stop()


def test_lockstep_steps_only_on_waypoints(tmp_path):
    with ServerProcess(_cfg(tmp_path, "lock", lockstep=True, robot_options={"rate_hz": 20.0})) as sp:
        with BridgeClient(sp.endpoint) as c:
            assert c.lockstep
            first = c.reset(seed=3)
            c.arm("ee_delta")
            for _ in range(6):
                time.sleep(0.05)
                c.heartbeat()
            assert c.latest_state().t_capture_ns == first.t_capture_ns == 0  # no waypoints: time stands still
            acts = np.tile([0.1, 0, 0, 0, 0, 0], (5, 1))
            c.send_chunk(acts, t0_ns=0, dt_ns=50 * MS, action_space="ee_delta", gripper=np.ones(5))
            st = c.wait_state(lambda s: s["step"] == 5, timeout_s=5)
            assert st.t_capture_ns == 5 * 50 * MS and c.status["exec"][:2] == [0, 4]
            np.testing.assert_allclose(st.ee_pos_m - first.ee_pos_m, [5 * 0.1 * 0.05, 0, 0], atol=1e-12)
            time.sleep(0.2)
            assert c.latest_state().t_capture_ns == 5 * 50 * MS and c.status["starved"] is False
            again = c.reset(seed=3)
            np.testing.assert_array_equal(again.joint_pos_rad, first.joint_pos_rad)


def test_estop_needs_no_session(server):
    with BridgeClient(server.endpoint) as c:
        c.arm("joint_pos")
        ctx = zmq.Context.instance()
        button = ctx.socket(zmq.DEALER)  # a bare stop button: no HELLO
        button.linger = 0
        button.connect(server.endpoint)
        button.send_multipart(P.encode("ESTOP", {"reason": "big red button"}, seq=1))
        assert button.poll(3000)
        assert P.decode(button.recv_multipart(), max_bytes=P.MAX_PUB_BYTES).type == "ACK"
        button.close()
        c.wait_state(lambda s: s["status"] == "ESTOP", timeout_s=2.0)
        c.arm("joint_pos")  # explicit ARM clears it
        c.disarm()


def test_driver_fault_latches_fault_until_arm(tmp_path):
    with ServerProcess(_cfg(tmp_path, "fault", robot_options={"fault_after": 5})) as sp:
        with BridgeClient(sp.endpoint) as c:
            c.arm("joint_pos")
            q = c.read_state().joint_pos_rad
            c.send_chunk(np.repeat(q[None], 20, axis=0), c.server_now_ns(), 10 * MS, "joint_pos")
            c.wait_state(lambda s: s["status"] == "FAULT", timeout_s=3)
            assert "protective stop" in c.status["reason"]
            n = len(read_log(f"{tmp_path}/fault.log"))
            assert n == 5
            c.arm("joint_pos")  # recover() + ARM
            c.send_chunk((q + 0.01)[None], c.server_now_ns() + 20 * MS, 10 * MS, "joint_pos")
            c.wait_state(lambda s: s["status"] == "RUNNING" and s["exec"][0] == c.chunk_id, timeout_s=3)
            assert len(read_log(f"{tmp_path}/fault.log")) > n


def test_contact_force_holds(tmp_path):
    """The fake arm's wall sits just below the start pose: pushing into it trips HOLD (force -> HOLD path)."""
    with ServerProcess(_cfg(tmp_path, "wall", robot_options={"wall_z_m": 0.5})) as sp:
        with BridgeClient(sp.endpoint) as c:
            st = c.read_state()
            assert st.ee_pos_m[2] > 0.5 + 0.04
            c.arm("ee_pose")
            pose = np.concatenate([st.ee_pos_m, st.ee_quat_wxyz])
            down = np.stack([pose + np.array([0, 0, -0.02 * (i + 1), 0, 0, 0, 0]) for i in range(20)])
            c.send_chunk(down, c.server_now_ns() + 10 * MS, 20 * MS, "ee_pose")
            for _ in range(100):  # heartbeats keep the watchdog fed while the arm moves down
                c.heartbeat()
                if c.wait_state(lambda s: True, timeout_s=0.5) is not None and c.status["status"] == "HOLD":
                    break
                time.sleep(0.02)
            assert "force" in c.status["reason"] and c.status["clamps"]["force_hold"] >= 1


def test_a_float32_chunk_is_passed_on_as_bytes_and_runs(server):
    """The I/O process checks a chunk's frames without building arrays; the servo converts them."""
    with BridgeClient(server.endpoint) as c:
        c.arm("joint_pos")
        q = c.read_state().joint_pos_rad.astype(np.float32)
        c.drain_events()
        reply = c.request("CHUNK", {"chunk_id": c.chunk_id + 1, "obs_seq": 0, "t0_ns": c.server_now_ns() + 20 * MS,
                                    "dt_ns": 10 * MS, "action_space": "joint_pos"},
                          {"actions": np.repeat(q[None], 3, 0), "gripper": np.array([0.0, 0.5, 1.0], np.float32)})
        c.chunk_id += 1
        assert reply.type == "ACK"
        deadline, ran = time.monotonic() + 2.0, set()
        while time.monotonic() < deadline and len(ran) < 3:
            c.heartbeat()
            ran |= {i for status, _ in c.new_states(0.01) for cid, i, _ in status["executed"] if cid == c.chunk_id}
        assert ran == {0, 1, 2} and not [d for k, d in c.drain_events() if k == "chunk_rejected"]
        c.disarm()


def test_rt_priority_puts_the_io_process_just_below_the_servo(tmp_path):
    """The servo's tick thread runs SCHED_DEADLINE where the kernel admits it (ahead of every FIFO task), else
    FIFO at rt_priority; its other thread (the writer) stays FIFO rt_priority; the I/O process just below."""
    with ServerProcess(_cfg(tmp_path, "rt", rt_priority=3)) as sp:
        servo_pid = _children(sp.proc.pid)[0]
        tick_policy = os.sched_getscheduler(servo_pid) & ~os.SCHED_RESET_ON_FORK
        if tick_policy not in (os.SCHED_FIFO, SCHED_DEADLINE):
            pytest.skip("SCHED_FIFO is not permitted here (no CAP_SYS_NICE)")
        others = [int(t) for t in os.listdir(f"/proc/{servo_pid}/task") if int(t) != servo_pid]
        fifo3 = lambda tid: os.sched_getscheduler(tid) == os.SCHED_FIFO and os.sched_getparam(tid).sched_priority == 3
        assert len([t for t in others if fifo3(t)]) == 1  # the writer (numpy's BLAS threads predate the policy)
        assert tick_policy == SCHED_DEADLINE or fifo3(servo_pid)
        assert os.sched_getscheduler(sp.proc.pid) == os.SCHED_FIFO and os.sched_getparam(sp.proc.pid).sched_priority == 2
        with BridgeClient(sp.endpoint) as c:
            c.arm("joint_pos")
            c.send_chunk(c.read_state().joint_pos_rad[None], c.server_now_ns() + 20 * MS, 10 * MS, "joint_pos")
            c.disarm()
    with ServerProcess(_cfg(tmp_path, "rt0", rt_priority=3, io_rt_priority=0)) as sp:
        assert os.sched_getscheduler(sp.proc.pid) != os.SCHED_FIFO


def test_a_chunk_whose_later_waypoints_are_still_due_is_acked(server):
    """Admission counts every waypoint of the chunk (H = 10 here), not some other length of its frame."""
    with BridgeClient(server.endpoint) as c:
        c.arm("joint_pos")
        q = c.read_state().joint_pos_rad
        c.send_chunk(np.repeat(q[None], 10, 0), c.server_now_ns() - 45 * MS, 10 * MS, "joint_pos")  # 5 still due
        with pytest.raises(BridgeError) as err:
            c.send_chunk(np.repeat(q[None], 10, 0), c.server_now_ns() - 200 * MS, 10 * MS, "joint_pos")
        assert err.value.code == "stale"
        c.disarm()
