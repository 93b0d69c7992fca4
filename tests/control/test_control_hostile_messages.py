"""The live bridge against hostile input (issue 10): e-stops are never refused (malformed, session-less, racing an
ARM from another connection, across protocol versions), no message kills the server or the servo, and an ACKed
chunk either runs or the controller hears why."""
import time

import msgpack
import numpy as np
import pytest
import zmq

from armflow.control import protocol as P
from armflow.control.client import BridgeClient, BridgeError
from armflow.control.launch import ServerProcess
from armflow.control.limits import load_limits
from armflow.control.server import ServerConfig

pytestmark = pytest.mark.timeout(120)
MS = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    cfg = ServerConfig(robot="fake_arm", robot_options={"rate_hz": 200.0, "log_path": str(tmp / "main.log")},
                       endpoint=f"ipc://{tmp}/main", lease_timeout_ms=400)
    with ServerProcess(cfg) as sp:
        yield sp


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
