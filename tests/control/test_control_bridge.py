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


# -- issue 10: e-stops are never refused, no message kills the server, an ACKed chunk runs or is reported ---------

def _dealer(endpoint):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.connect(endpoint)
    return s


_HDR = {"v": list(P.PROTOCOL_VERSION), "type": "ESTOP", "seq": 7, "session": "", "t_send_ns": 0, "frames": [],
        "body": {}}


@pytest.mark.parametrize("frames", [
    [msgpack.packb({**_HDR, "body": {"reason": "r" * 300}})],  # the audit's case: NACKed bad_field, arm kept moving
    [msgpack.packb({**_HDR, "body": {"reason": "r" * 50_000}})],  # header over 16 kB
    [msgpack.packb({**_HDR, "body": {"reason": 3.5, "extra": [1, 2]}})],
    [msgpack.packb({**_HDR, "v": [P.PROTOCOL_VERSION[0] + 1, 0], "seq": -1})],
    [msgpack.packb({**_HDR, "frames": [["x", "<f8", [4]]]}), b"\x00" * 3],
    [msgpack.packb({"type": "estop"})],
    [b"", msgpack.packb(_HDR)],
], ids=["reason300", "reason50k", "types", "major", "frames", "bare", "delimiter"])
def test_every_malformed_estop_still_stops(server, frames):
    with BridgeClient(server.endpoint) as c:
        c.arm("joint_pos")
        button = _dealer(server.endpoint)
        button.send_multipart(frames)
        assert button.poll(2000)
        reply = P.decode(button.recv_multipart(), max_bytes=P.MAX_PUB_BYTES)
        button.close()
        assert reply.type == "ACK" and reply.body["info"]["applied"] is True
        c.wait_state(lambda s: s["status"] == "ESTOP", timeout_s=0.5)
        c.arm("joint_pos")
        c.disarm()


def test_reset_with_a_bad_seed_is_refused_and_the_server_keeps_serving(server):
    with BridgeClient(server.endpoint) as c:
        for seed in (-1, 2**32, 2**63 - 1):  # seed -1 made the fake arm's numpy raise and the servo exit
            with pytest.raises(BridgeError, match="RESET.seed") as err:
                c.reset(seed)
            assert err.value.code == "bad_field"
        c.reset(5)
        assert server.proc.is_alive() and c.status["status"] == "IDLE"


def test_a_driver_exception_from_a_command_faults_instead_of_killing_the_servo(tmp_path):
    """Whatever the driver raises for a controller's command: FAULT latched, NACK with the reason, loop lives."""
    from armflow.control import channel
    from armflow.control.servo import ServoConfig, ServoLoop

    mp = channel.get_context("spawn")
    here, there = mp.Pipe(duplex=True)
    loop = ServoLoop(ServoConfig("fake_arm", {}, load_limits("sim_panda").to_dict()), there,
                     channel.SharedWords.create(mp))

    def broken_reset(seed):  # a vendor/simulator error of any type (gymnasium raises its own Error class)
        raise KeyError(f"simulator refused seed {seed}")

    loop.driver.reset = broken_reset
    loop.handle({"cmd": "reset", "req": 1, "seed": 3})
    try:
        replies = []
        while here.poll(2.0) and not replies:
            msg = channel.unpack(here.recv_bytes())
            replies += [msg] if msg["kind"] == "reply" else []
        assert replies and replies[0]["ok"] is False and replies[0]["code"] == "driver_error"
        assert "simulator refused seed 3" in replies[0]["info"]["reason"]
        assert loop.watchdog.state == "FAULT" and loop.running
    finally:
        loop.outbox.put(None)
        loop.writer.join(1.0)


def _events(c, kind, timeout_s=2.0):
    deadline, out = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline and not out:
        c.heartbeat()
        out = [d for k, d in c.drain_events() if k == kind]
        time.sleep(0.01)
    return out


def test_a_chunk_is_acked_only_if_it_will_run_or_the_controller_hears_why(server):
    with BridgeClient(server.endpoint) as c:
        c.arm("joint_pos")
        q = c.read_state().joint_pos_rad
        now = c.server_now_ns()
        c.send_chunk(q[None], now + 20 * MS, 10 * MS, "joint_pos")
        refused = {  # each was ACKed before, and then never ran
            "bad_chunk_id": lambda: c.request("CHUNK", {"chunk_id": c.chunk_id, "obs_seq": 0, "t0_ns": now + 30 * MS,
                                                        "dt_ns": 10 * MS, "action_space": "joint_pos"},
                                              {"actions": q[None]}),  # a replayed id
            "stale": lambda: c.send_chunk(np.repeat(q[None], 3, 0), c.server_now_ns() - 500 * MS, 10 * MS,
                                          "joint_pos"),
            "too_far": lambda: c.send_chunk(q[None], c.server_now_ns() + 60 * 10**9, 10 * MS, "joint_pos"),
            "bad_field": lambda: c.send_chunk(np.repeat(q[None], 2, 0), 2**63 - 5 * MS, 10 * MS, "joint_pos"),
        }
        for code, send in refused.items():
            with pytest.raises(BridgeError) as err:
                send()
            assert err.value.code == code, err.value
        c.drain_events()
        late = c.send_chunk(q[None], c.server_now_ns() + 1500 * MS, 10 * MS, "joint_pos")
        early = c.send_chunk(np.repeat(q[None], 200, 0), c.server_now_ns() + 20 * MS, 10 * MS, "joint_pos")
        dropped = _events(c, "chunk_dropped")  # replaced before any waypoint ran: said at once
        assert dropped and dropped[0]["chunk_ids"] == [late] and "replaced" in dropped[0]["reason"]
        c.disarm()
        dropped = _events(c, "chunk_dropped")  # the rest of the running chunk: dropped by DISARM, said at once
        # "disarmed" (or a HOLD on a loaded box); chunk 0 too if its single waypoint (20 ms out) was not yet due
        assert dropped and early in dropped[0]["chunk_ids"] and set(dropped[0]["chunk_ids"]) <= {0, early}


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def test_an_oversize_frame_is_dropped_unread(server):
    """No MAXMSGSIZE: a 96 MB frame from a peer without a session was read whole before the 4 MiB check."""
    before = _peak_rss_mb(server.proc.pid)
    peer = _dealer(server.endpoint)
    peer.send_multipart([msgpack.packb(_HDR | {"type": "HEARTBEAT"}), b"\x00" * (96 * 1024 * 1024)])
    time.sleep(1.0)
    peer.close()
    grew = _peak_rss_mb(server.proc.pid) - before
    assert grew < 24, f"I/O process peak RSS grew {grew:.0f} MB"
    with BridgeClient(server.endpoint, role="observer") as obs:
        obs.heartbeat()


# -- e-stop re-arm race: an ARM must acknowledge the newest e-stop epoch ----------------------------------------

def _estop_from(button, seq: int, reason: str) -> int:
    """Press a session-less stop button and wait for its ACK; return the e-stop epoch it names."""
    button.send_multipart(P.encode("ESTOP", {"reason": reason}, seq=seq))
    assert button.poll(2000), "the e-stop was not answered"
    reply = P.decode(button.recv_multipart(), max_bytes=P.MAX_PUB_BYTES)
    assert reply.type == "ACK" and reply.body["info"]["applied"] is True
    return reply.body["info"].get("estop_epoch")


def test_an_arm_that_raced_another_clients_estop_is_refused_until_the_controller_has_seen_it(server):
    """Before epochs: the controller's ARM, sent before it heard of another client's e-stop but arriving after
    it, re-armed the arm ~2 ms after the e-stop latched. Now it is NACKed ``estopped`` (naming the e-stop's
    epoch and reason) and the arm stays in ESTOP; once the controller has received the e-stop, ARM works."""
    with BridgeClient(server.endpoint) as ctrl, BridgeClient(server.endpoint, role="observer") as button:
        ctrl.arm("joint_pos")
        ctrl.wait_state(lambda s: s["status"] == "ARMED", timeout_s=2.0)
        ctrl.drain_events()
        button.estop("operator pressed stop")  # a second client's e-stop, ACKed: counted by the server
        with pytest.raises(BridgeError, match="operator pressed stop") as err:
            ctrl.arm("joint_pos")  # the controller has read nothing since: sent with the pre-e-stop epoch
        seen, epoch = ctrl.estop_epoch, button.estop_epoch
        assert epoch == seen + 1 and err.value.code == "estopped" and f"e-stop {epoch}" in str(err.value)
        t_refused = time.monotonic_ns()
        st = ctrl.wait_state(lambda s: s["wall_ns"] > t_refused + 50 * MS, timeout_s=2.0)
        assert ctrl.status["status"] == "ESTOP" and ctrl.status["estop_epoch"] == epoch, ctrl.status
        assert not any(d["new"] in ("ARMED", "RUNNING") for k, d in ctrl.drain_events() if k == "state")
        assert st is not None and ctrl.estop_epoch == epoch  # now it has seen the e-stop (in STATE)
        assert ctrl.welcome["estop_epoch"] <= seen and "estop_epoch" in button.welcome
        ctrl.arm("joint_pos")  # an explicit ARM after seeing it re-arms
        ctrl.wait_state(lambda s: s["status"] == "ARMED", timeout_s=2.0)
        ctrl.disarm()


def test_arm_and_estop_sent_at_once_from_two_connections_always_end_estopped(server):
    """The real race, repeated: a stop button and the controller's ARM (pre-e-stop epoch) leave together over
    two sockets. Whichever reaches the server first, the arm ends in ESTOP: the ARM is refused, or it ran
    before the e-stop and the e-stop then latched. It never leaves that ESTOP without a later ARM."""
    with BridgeClient(server.endpoint) as ctrl:
        button, outcomes = _dealer(server.endpoint), {"refused": 0, "armed_first": 0}
        try:
            for i in range(12):
                ctrl.latest_state()
                ctrl.arm("joint_pos")
                button.send_multipart(P.encode("ESTOP", {"reason": f"race {i}"}, seq=i + 1))
                try:
                    ctrl.arm("ee_delta")
                    outcomes["armed_first"] += 1
                except BridgeError as err:
                    assert err.code == "estopped", err
                    outcomes["refused"] += 1
                assert button.poll(2000)
                epoch = P.decode(button.recv_multipart(), max_bytes=P.MAX_PUB_BYTES).body["info"].get("estop_epoch")
                t_ack = time.monotonic_ns()
                ctrl.wait_state(lambda s: s["wall_ns"] > t_ack + 30 * MS, timeout_s=2.0)
                assert ctrl.status["status"] == "ESTOP" and ctrl.status.get("estop_epoch") == epoch, (i, ctrl.status)
        finally:
            button.close()
        print("ARM/ESTOP race outcomes:", outcomes)
        assert outcomes["refused"] > 0


def test_a_protocol_1_0_arm_without_an_epoch_is_refused_after_any_estop_since_it_connected(server):
    """Fail safe for old clients: an ARM without ``estop_epoch`` acknowledges its WELCOME's epoch only."""
    def hello(sock, seq):
        sock.send_multipart([msgpack.packb({"v": [1, 0], "type": "HELLO", "seq": seq, "session": "",
                                            "t_send_ns": 0, "frames": [], "body": {"client_version": "old",
                                                                                   "role": "controller"}})])
        assert sock.poll(2000)
        return P.decode(sock.recv_multipart(), max_bytes=P.MAX_PUB_BYTES).body["session"]

    def arm(sock, session, seq):
        sock.send_multipart([msgpack.packb({"v": [1, 0], "type": "ARM", "seq": seq, "session": session,
                                            "t_send_ns": 0, "frames": [], "body": {"mode": "joint_pos"}})])
        assert sock.poll(3000)
        return P.decode(sock.recv_multipart(), max_bytes=P.MAX_PUB_BYTES)

    old, button = _dealer(server.endpoint), _dealer(server.endpoint)
    try:
        session = hello(old, 1)
        assert arm(old, session, 2).type == "ACK"  # no e-stop since it connected: as in protocol 1.0
        epoch = _estop_from(button, 1, "stop for the old client")
        reply = arm(old, session, 3)
        assert reply.type == "NACK" and reply.body["code"] == "estopped", reply.body
        assert f"e-stop {epoch}" in reply.body["reason"] and "reconnect" in reply.body["reason"]
        session = hello(old, 4)  # reconnecting shows it the ESTOP state: its new WELCOME acknowledges it
        assert arm(old, session, 5).type == "ACK"
        old.send_multipart(P.encode("BYE", {}, seq=6, session=session))
        assert old.poll(2000)
    finally:
        old.close()
        button.close()


def test_an_arm_naming_a_future_estop_epoch_is_refused(server):
    with BridgeClient(server.endpoint) as c:
        with pytest.raises(BridgeError, match="estop_epoch") as err:
            c.request("ARM", {"mode": "joint_pos", "estop_epoch": c.estop_epoch + 1})
        assert err.value.code == "bad_field"
        assert c.read_state() is not None and c.status["status"] != "ARMED"


def test_the_controller_that_sent_the_estop_may_re_arm_at_once_and_stays_armed(server):
    """Its own ESTOP's ACK names the epoch, so an immediate ARM acknowledges it; the servo latches a pending
    e-stop before judging the ARM, so the ARM is not undone by that e-stop a tick later."""
    with BridgeClient(server.endpoint) as c:
        for _ in range(5):
            c.arm("joint_pos")
            c.estop("operator")
            c.arm("joint_pos")  # no state read in between
            t_armed = time.monotonic_ns()
            c.wait_state(lambda s: s["wall_ns"] > t_armed + 30 * MS, timeout_s=2.0)
            assert c.status["status"] == "ARMED" and c.status["estop_epoch"] == c.estop_epoch, c.status
        c.disarm()


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
