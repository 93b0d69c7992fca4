"""Fuzz a live bridge with hostile messages (hypothesis): bad msgpack, wrong types/shapes, NaN, huge sizes,
out-of-order times, wrong major, second controllers. The server must keep serving and no setpoint may leave
the limits. Default run: ~1,500 messages; the slow run sends >= 10,000."""
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from armflow.control import protocol as P
from armflow.control.client import BridgeClient
from armflow.control.fake_arm import FakeArm, read_log
from armflow.control.launch import ServerProcess
from armflow.control.limits import load_limits
from armflow.control.safety import SafetyLayer
from armflow.control.server import ServerConfig

MS = 1_000_000
BATCH = 20
RATE_HZ = 200.0

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70).filter(lambda x: -2**63 <= x < 2**64),
                    st.floats(allow_nan=True), st.text(max_size=20), st.binary(max_size=20))
json_like = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), c, max_size=4)),
                         max_leaves=12)
types = st.sampled_from(list(P.MSG_TYPES) + ["", "NOPE", "CHUNK\x00"])
dtypes = st.sampled_from(list(P.ALLOWED_DTYPES) + [">f8", "O", "<c16", "bogus"])


@st.composite
def hostile(draw, session):
    kind = draw(st.integers(0, 5))
    if kind == 0:  # random bytes
        return [draw(st.binary(max_size=200)) for _ in range(draw(st.integers(1, 3)))]
    if kind == 1:  # random msgpack structure
        return [msgpack.packb(draw(json_like), use_bin_type=True)]
    hdr = {"v": draw(st.sampled_from([list(P.PROTOCOL_VERSION), [P.PROTOCOL_VERSION[0] + 1, 0], [0, 0], "1", [1]])),
           "type": draw(types), "seq": draw(st.one_of(st.integers(-5, 2**63 - 1), scalars)),
           "session": draw(st.sampled_from([session, "", "bogus"])), "t_send_ns": draw(st.integers(0, 2**63 - 1)),
           "frames": [], "body": draw(st.dictionaries(st.text(max_size=10), json_like, max_size=4))}
    frames = []
    if kind == 2:  # well-formed header, garbage body / fields
        return [msgpack.packb(hdr, use_bin_type=True)]
    if kind == 3:  # frame descriptor games: wrong sizes, dtypes, huge shapes
        n = draw(st.integers(1, 3))
        for i in range(n):
            shape = draw(st.lists(st.integers(0, 10**7), max_size=5))
            hdr["frames"].append([f"a{i}", draw(dtypes), shape])
            frames.append(draw(st.binary(max_size=256)))
        return [msgpack.packb(hdr, use_bin_type=True)] + frames
    # kind 4, 5: schema-valid CHUNKs / ARMs with adversarial contents
    if kind == 4:
        return P.encode("ARM", {"mode": draw(st.sampled_from(["joint_pos", "ee_delta", "joint_vel", "warp"]))},
                        seq=draw(st.integers(1, 1000)), session=session)
    h = draw(st.integers(1, 12))
    d = draw(st.sampled_from([7, 7, 7, 6, 3]))
    vals = draw(st.sampled_from([1e6, 10.0, 1.0, 0.01]))
    acts = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(0, vals, (h, d))
    if draw(st.booleans()):
        acts[draw(st.integers(0, h - 1)), 0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e308]))
    body = {"chunk_id": draw(st.integers(0, 2**40)), "obs_seq": 0,
            "t0_ns": time.monotonic_ns() + draw(st.integers(-10**9, 10**9)),
            "dt_ns": draw(st.integers(-5, 10**9)), "action_space": draw(st.sampled_from(["joint_pos", "ee_delta"]))}
    return P.encode("CHUNK", body, {"actions": acts}, seq=draw(st.integers(1, 1000)), session=session)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = ServerConfig(robot="fake_arm", robot_options={"rate_hz": RATE_HZ, "log_path": str(tmp / "arm.log")},
                       endpoint=f"ipc://{tmp}/fuzz", lease_timeout_ms=60_000, t_cmd_ms=500)
    with ServerProcess(cfg) as sp:
        ctx = zmq.Context.instance()
        fuzz = ctx.socket(zmq.DEALER)
        fuzz.linger = 0
        fuzz.connect(sp.endpoint)
        fuzz.send_multipart(P.encode("HELLO", {"client_version": "fuzz", "role": "controller"}, seq=1))
        assert fuzz.poll(5000)
        welcome = P.decode(fuzz.recv_multipart(), max_bytes=P.MAX_PUB_BYTES)
        rival = ctx.socket(zmq.DEALER)
        rival.linger = 0
        rival.connect(sp.endpoint)
        stats = {"sent": 0, "replies": 0}
        yield sp, fuzz, rival, welcome.body["session"], stats, str(tmp / "arm.log")
        fuzz.close()
        rival.close()


def _drain(sock, stats):
    while sock.poll(0):
        P.decode(sock.recv_multipart(), max_bytes=P.MAX_PUB_BYTES)  # the server's answers are always valid
        stats["replies"] += 1


def _fuzz_batch(target, data):
    sp, fuzz, rival, session, stats, _ = target
    for _ in range(BATCH):
        fuzz.send_multipart(data.draw(hostile(session)))
        stats["sent"] += 1
        if data.draw(st.integers(0, 30)) == 0:  # a second controller tries to take over
            rival.send_multipart(P.encode("HELLO", {"client_version": "rival", "role": "controller"}, seq=1))
            stats["sent"] += 1
        if data.draw(st.integers(0, 10)) == 0:  # keep the lease warm and the arm armed now and then
            fuzz.send_multipart(P.encode("ARM", {"mode": "joint_pos"}, seq=2, session=session))
            stats["sent"] += 1
    _drain(fuzz, stats)
    _drain(rival, stats)


def _check(target, min_sent):
    sp, fuzz, rival, session, stats, log_path = target
    time.sleep(0.3)
    _drain(fuzz, stats)
    _drain(rival, stats)
    assert stats["sent"] >= min_sent and stats["replies"] > stats["sent"] // 2
    assert sp.proc.is_alive()
    with BridgeClient(sp.endpoint, role="observer") as obs:  # still serving, servo still ticking
        obs.heartbeat()
        s1 = obs.latest_state()
        time.sleep(0.1)
        assert obs.latest_state().t_capture_ns > s1.t_capture_ns
    log = read_log(log_path)
    safety = SafetyLayer(load_limits("sim_panda"), FakeArm().info())
    q = log[log[:, 1] == 0][:, 3:10]
    assert np.isfinite(log).all()
    assert np.all(q >= safety.q_lo - 1e-9) and np.all(q <= safety.q_hi + 1e-9)
    assert np.all(np.abs(np.diff(q, axis=0)) <= safety.qd_max / RATE_HZ + 1e-9)


@pytest.mark.timeout(300)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_fuzz_live_server(target, data):
    _fuzz_batch(target, data)


@pytest.mark.timeout(120)
def test_fuzz_live_server_survived(target):
    _check(target, min_sent=800)


@pytest.mark.slow
@pytest.mark.timeout(900)
@settings(max_examples=450, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_fuzz_live_server_10k(target, data):
    _fuzz_batch(target, data)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_fuzz_live_server_10k_survived(target):
    _check(target, min_sent=10_000)
