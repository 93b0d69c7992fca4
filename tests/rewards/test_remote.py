"""The reward server over real ZeroMQ in another process: a slow model never blocks the client's loop."""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from armflow.rewards.protocol import RewardQuery
from armflow.rewards.remote import PendingRewards, RemoteRewardModel, check_endpoint
from armflow.rewards.testing_server import ChatServer
from armflow.rewards.vlm_stress import count_mismatched, stress_queries

SLOW_SERVER = textwrap.dedent("""
    import sys
    from armflow.rewards.fake import FunctionReward
    from armflow.rewards.remote import serve
    model = FunctionReward(lambda q: q.frames["front"][-1, 0, 0, 0] / 255.0, name="pixel", version="p1",
                           delay_s=float(sys.argv[2]), invalid_when=lambda q: q.instruction == "flaky")
    serve(model, sys.argv[1], max_seconds=60, workers=4, on_ready=lambda: print("ready", flush=True))
""")


def _start(cmd, env=None, ready="ready"):
    """Start ``cmd``; return it and its stdout up to the line that contains ``ready``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = ""
    while ready not in lines:
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise AssertionError(lines + proc.stderr.read()[-3000:])
        lines += line
    return proc, lines


def _stop(proc):
    proc.terminate()
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


def _q(value, key, instruction=""):
    frame = np.zeros((6, 6, 3), np.uint8)
    frame[0, 0, 0] = value
    return RewardQuery(frames={"front": frame}, instruction=instruction, key=key)


@pytest.fixture
def slow_server(tmp_path):
    endpoint = f"ipc://{tmp_path}/reward.sock"
    proc, _ = _start([sys.executable, "-c", SLOW_SERVER, endpoint, "0.6"])
    yield endpoint
    _stop(proc)


def test_slow_model_never_blocks_the_control_loop(slow_server):
    model = RemoteRewardModel(slow_server, timeout_s=10)
    pending = PendingRewards(model)
    replay_reward = np.full(8, np.nan)
    ticks, arrived_at = [], None
    for tick in range(200):  # a 100 Hz loop that submits its transitions at tick 0 and 1
        start = time.perf_counter()
        if tick < 2:
            pending.submit([tick * 4 + i for i in range(4)], [_q(51 * i, tick * 4 + i) for i in range(4)])
        for key, result in pending.poll():
            replay_reward[key] = result.value
            arrived_at = arrived_at or tick
        ticks.append(time.perf_counter() - start)
        if not len(pending):
            break
        time.sleep(0.01)
    assert max(ticks) < 0.05, f"a tick waited {max(ticks):.3f} s on the reward model"
    assert arrived_at is not None and arrived_at >= 20  # the model took 0.6 s; the loop kept ticking meanwhile
    np.testing.assert_allclose(replay_reward, np.tile(np.arange(4) * 0.2, 2))
    assert model.info()["model_version"] == "p1"
    model.close()


def test_results_carry_keys_backend_and_invalids_across_the_wire(slow_server):
    with RemoteRewardModel(slow_server, timeout_s=10) as model:
        results = model.score([_q(255, "a"), _q(0, ("env", 3), instruction="flaky")])
    assert results[0].valid and results[0].value == 1.0 and results[0].key == "a"
    assert results[0].backend == "pixel" and results[0].model_version == "p1" and results[0].latency_s >= 0.6
    assert not results[1].valid and "no answer" in results[1].error and results[1].key == ("env", 3)


def test_bad_input_raises_from_the_future(slow_server):
    with RemoteRewardModel(slow_server, timeout_s=10) as model:
        future = model.score_async([RewardQuery(frames={"wrist": np.zeros((4, 4, 3), np.uint8)})])
        with pytest.raises(ValueError, match="KeyError"):
            future.result(timeout=10)


def test_dead_server_gives_invalid_results_after_the_timeout(tmp_path):
    with RemoteRewardModel(f"ipc://{tmp_path}/nobody.sock", timeout_s=0.3) as model:
        start = time.perf_counter()
        future = model.score_async([_q(1, 0), _q(2, 1)])
        assert time.perf_counter() - start < 0.05
        results = future.result(timeout=5)
    assert [r.valid for r in results] == [False, False] and "did not answer within 0.3 s" in results[0].error
    assert [r.key for r in results] == [0, 1]


def test_endpoint_must_be_loopback_unless_allowed():
    assert check_endpoint("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5555"
    with pytest.raises(ValueError, match="no authentication"):
        check_endpoint("tcp://0.0.0.0:5555")
    assert check_endpoint("tcp://0.0.0.0:5555", allow_remote=True)
    with pytest.raises(ValueError, match="expected ipc"):
        check_endpoint("http://127.0.0.1:5555")


def test_armflow_reward_serve_command_fronts_a_vlm_server(tmp_path):
    """The real CLI: ``armflow reward serve backend=openai`` in a subprocess, the stub VLM in this one."""
    queries = stress_queries(6)
    endpoint = f"ipc://{tmp_path}/serve.sock"
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    with ChatServer(hold_s=0.2) as vlm:
        proc, line = _start([sys.executable, "-m", "armflow.workflows.cli", "reward", "serve", "backend=openai",
                             f"url={vlm.url}", f"model={vlm.model}", f"endpoint={endpoint}",
                             "+options.concurrency=6", f"out={tmp_path / 'run'}"], env=env,
                             ready=f"on {endpoint}")
        assert "probe: scoring=logprobs" in line and "[reward serve] openai (stub-vlm|success.v1-" in line
        with RemoteRewardModel(endpoint, timeout_s=20) as model:
            start = time.perf_counter()
            future = model.score_async(queries)
            assert time.perf_counter() - start < 0.05
            results = future.result(timeout=20)
        assert count_mismatched(queries, results) == 0 and vlm.stats()["peak_in_flight"] == 6
        assert _stop(proc) == 0
    assert (tmp_path / "run" / "summary.json").is_file()
