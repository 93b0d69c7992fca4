"""The CLI entry points: ``armflow serve`` runs until SIGTERM and shuts down cleanly; ``armflow bench bridge``
prints its BENCH_JSON keys."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from armflow.control.client import BridgeClient

pytestmark = pytest.mark.timeout(180)
ARMFLOW = str(Path(sys.executable).parent / "armflow")


def test_serve_runs_until_sigterm_and_cleans_up(tmp_path):
    sock = tmp_path / "bridge"
    proc = subprocess.Popen([ARMFLOW, "serve", "robot=fake_arm", "mode=realtime", f"endpoint=ipc://{sock}",
                             f"out={tmp_path / 'run'}", "+robot_options.rate_hz=100.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "[serve]" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "serve exited early"
        assert f"ipc://{sock}" in line
        info = json.loads((tmp_path / "run" / "serve.json").read_text())
        assert info["timing"] == "realtime" and len(info["limits_hash"]) == 16
        with BridgeClient(f"ipc://{sock}") as c:
            c.heartbeat()
            assert c.welcome["limits_hash"] == info["limits_hash"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out[-2000:]
        assert "stopped cleanly" in out
        assert not os.path.exists(sock) and not os.path.exists(f"{sock}.pub")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_rejects_bad_mode(tmp_path):
    out = subprocess.run([ARMFLOW, "serve", "mode=turbo", f"out={tmp_path}"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "lockstep" in (out.stderr + out.stdout)


def test_bench_bridge_prints_bench_json(tmp_path):
    out = subprocess.run([ARMFLOW, "bench", "bridge", "roundtrips=100", "rate_hz=500", "warmup=10", "servo_seconds=0.2",
                          "transports=[ipc]", f"out={tmp_path}"], capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("BENCH_JSON: ")
    res = json.loads(last[len("BENCH_JSON: "):])
    for key in ("ipc_rtt_p50_us", "ipc_rtt_p99_us", "ipc_rtt_p999_us", "ipc_floor_p50_us", "servo_period_err_p50_us",
                "servo_period_err_p99_us", "floor_echo_p50_us_ipc", "roundtrip_p50_us_ipc", "roundtrip_ratio_ipc",
                "servo_period_err_p99_us_ipc"):
        assert res[key] > 0, key
    assert res["ipc_rtt_p99_us"] >= res["ipc_rtt_p50_us"]
    assert res["roundtrip_p50_us_ipc"] == res["ipc_rtt_p50_us"] and res["floor_echo_p50_us_ipc"] == res["ipc_floor_p50_us"]
    assert abs(res["roundtrip_ratio_ipc"] - res["roundtrip_p50_us_ipc"] / res["floor_echo_p50_us_ipc"]) < 1e-9
    assert res["servo_sched_ipc"] in ("deadline", "fifo", "other")  # the servo tick thread's class, for the record


def test_bench_floor_is_a_plain_process_echo_of_the_chunk(tmp_path):
    """The floor echoes every frame of the same CHUNK back from its own process, over its own context."""
    import numpy as np
    import zmq

    from armflow.control import protocol as P
    from armflow.workflows.bench_bridge import FloorEcho

    frames = [bytes(f) for f in P.encode("CHUNK", {"chunk_id": 1, "obs_seq": 0, "t0_ns": 1, "dt_ns": 1,
                                                   "action_space": "joint_pos"}, {"actions": np.ones((10, 7))})]
    floor = FloorEcho(f"ipc://{tmp_path}/floor")
    try:
        assert floor.proc.pid != os.getpid() and floor.ctx is not zmq.Context.instance()
        floor.sock.send_multipart(frames)
        assert floor.sock.poll(5000) and floor.sock.recv_multipart() == frames
        assert floor.roundtrip(frames) > 0
    finally:
        floor.close()
    assert not floor.proc.is_alive()
