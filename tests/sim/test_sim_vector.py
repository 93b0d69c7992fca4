"""Vector envs: same-step autoreset, equivalence with sequential single envs, errors, process hygiene."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from armflow.sim import SubprocVectorEnv, SyncVectorEnv, WorkerError, make_env, make_vec_env

STATE_KEY = "observation.state"


def _reference(name, seeds, actions, overrides):
    """Same-step autoreset done by hand on sequential single envs; returns per-step records."""
    envs = [make_env(name, **overrides) for _ in seeds]
    obs = [env.reset(seed=s)[0] for env, s in zip(envs, seeds)]
    returns, lengths, records = np.zeros(len(envs)), np.zeros(len(envs), dtype=int), []
    for step_actions in actions:
        rec = {k: [] for k in ("obs", "final", "reward", "term", "trunc", "success", "ret", "len")}
        for i, env in enumerate(envs):
            o, r, term, trunc, info = env.step(step_actions[i])
            returns[i] += r
            lengths[i] += 1
            rec["final"].append(o[STATE_KEY])
            done = term or trunc
            rec["ret"].append(returns[i] if done else np.nan)
            rec["len"].append(lengths[i] if done else 0)
            if done:
                o, returns[i], lengths[i] = env.reset()[0], 0.0, 0
            for key, val in (("obs", o[STATE_KEY]), ("reward", r), ("term", term), ("trunc", trunc),
                             ("success", info["success"])):
                rec[key].append(val)
        records.append({k: np.array(v) for k, v in rec.items()})
    for env in envs:
        env.close()
    return obs, records


def _check_equivalent(venv, name, seeds, actions, overrides):
    first, records = _reference(name, seeds, actions, overrides)
    obs, info = venv.reset(seed=seeds)
    np.testing.assert_allclose(obs[STATE_KEY], np.stack([o[STATE_KEY] for o in first]), rtol=0, atol=0)
    assert info["success"].shape == (len(seeds),) and not info["success"].any()
    n_done = 0
    for step_actions, rec in zip(actions, records):
        obs, reward, term, trunc, info = venv.step(step_actions)
        assert reward.shape == term.shape == trunc.shape == info["success"].shape == (len(seeds),)
        assert reward.dtype == np.float32 and term.dtype == bool and trunc.dtype == bool
        np.testing.assert_array_equal(obs[STATE_KEY], rec["obs"])
        np.testing.assert_array_equal(info["final_obs"][STATE_KEY], rec["final"])
        np.testing.assert_allclose(reward, rec["reward"], rtol=1e-6)
        np.testing.assert_array_equal(term, rec["term"])
        np.testing.assert_array_equal(trunc, rec["trunc"])
        np.testing.assert_array_equal(info["success"], rec["success"])
        np.testing.assert_array_equal(info["done_mask"], rec["term"] | rec["trunc"])
        np.testing.assert_allclose(info["episode_return"], rec["ret"], rtol=1e-5)
        np.testing.assert_array_equal(info["episode_length"], rec["len"])
        for terms in info["reward_terms"].values():
            assert terms.shape == (len(seeds),)
        np.testing.assert_allclose(sum(info["reward_terms"].values()), reward, rtol=1e-4, atol=1e-5)
        n_done += int(info["done_mask"].sum())
    return n_done


def _toy_actions(n_envs, n_steps, seed=0):
    """Env 0 heads right (successes), env 1 left, the rest wander (truncations)."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(n_steps, n_envs, 2)).astype(np.float32)
    actions[:, 0] = (1.0, 0.0)
    actions[:, 1] = (-1.0, 0.0)
    return actions


@pytest.mark.parametrize("n_workers", [0, 2])
def test_toy2d_vector_matches_sequential_envs(n_workers):
    overrides = {"max_episode_steps": 7}
    with make_vec_env("toy2d", 3, n_workers=n_workers, **overrides) as venv:
        assert isinstance(venv, SyncVectorEnv if n_workers == 0 else SubprocVectorEnv)
        assert venv.num_envs == 3 and venv.max_episode_steps == 7 and venv.task_name == "toy2d"
        assert venv.action_space.shape == (3, 2) and venv.single_action_space.shape == (2,)
        n_done = _check_equivalent(venv, "toy2d", [11, 12, 13], _toy_actions(3, 30), overrides)
        assert n_done >= 6


def test_autoreset_success_then_new_episode():
    with make_vec_env("toy2d", 2, n_workers=0) as venv:
        obs, _ = venv.reset(seed=[0, 1])
        for t in range(1, 31):
            prev = obs
            obs, _, term, trunc, info = venv.step(np.tile([[1.0, 0.0]], (2, 1)))
            if term[0]:
                break
        assert info["success"][0] and not trunc[0] and info["episode_length"][0] == t
        assert info["final_obs"][STATE_KEY][0, 0] > 0.85, "final obs is at the right goal"
        assert abs(obs[STATE_KEY][0, 0]) <= 0.05, "obs is the new episode's start, near the origin"
        assert prev[STATE_KEY][0, 0] < info["final_obs"][STATE_KEY][0, 0]
        obs, _, term, _, info = venv.step(np.zeros((2, 2), dtype=np.float32))
        assert not term[0] and np.isnan(info["episode_return"][0]) and info["episode_length"][0] == 0


@pytest.mark.skipif(importlib.util.find_spec("armflow.sim.tasks.lift") is None, reason="native lift not there yet")
def test_native_lift_vector_matches_sequential_envs():
    overrides = {"max_episode_steps": 6}
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, size=(14, 2, 7)).astype(np.float32)
    with make_vec_env("lift", 2, n_workers=2, **overrides) as venv:
        assert _check_equivalent(venv, "lift", [3, 4], actions, overrides) == 4


def test_worker_exception_reraised_with_traceback():
    with make_vec_env("toy2d", 3, n_workers=2) as venv:
        venv.reset(seed=0)
        bad = np.zeros((3, 2), dtype=np.float32)
        bad[2, 0] = np.nan  # env 2 lives in worker 1
        with pytest.raises(WorkerError, match=r"(?s)worker 1 .*Traceback.*ValueError: toy2d: action must be"):
            venv.step(bad)
        obs, *_ = venv.step(np.zeros((3, 2), dtype=np.float32))  # the pipes stay in sync afterwards
        assert obs[STATE_KEY].shape == (3, 2)


def test_construction_error_reraised_and_workers_cleaned():
    with pytest.raises(WorkerError, match="unknown config keys"):
        make_vec_env("toy2d", 2, n_workers=2, no_such_key=1)


def test_input_validation():
    with make_vec_env("toy2d", 2, n_workers=0) as venv:
        with pytest.raises(ValueError, match="seeds"):
            venv.reset(seed=[1, 2, 3])
        venv.reset(seed=5)
        with pytest.raises(ValueError, match=r"\(2, 2\)"):
            venv.step(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="context"):
        make_vec_env("toy2d", 2, n_workers=1, context="fork")


def test_int_seed_gives_consecutive_seeds_and_render_call():
    with make_vec_env("toy2d", 3, n_workers=2) as venv:
        obs, _ = venv.reset(seed=20)
        expected = np.stack([make_env("toy2d").reset(seed=20 + i)[0][STATE_KEY] for i in range(3)])
        np.testing.assert_array_equal(obs[STATE_KEY], expected)
        frame = venv.render(env_index=2)
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        assert venv.call("max_episode_steps") == [30, 30, 30]
        with pytest.raises(IndexError):
            venv.call_at(3, "render")


def _proc_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent, or a zombie left to a non-reaping init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_killed_worker_raises_worker_error():
    with make_vec_env("toy2d", 2, n_workers=2) as venv:
        venv.reset(seed=0)
        os.kill(venv.processes[1].pid, 9)
        venv.processes[1].join(timeout=10)
        with pytest.raises(WorkerError, match="worker 1"):
            venv.step(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(RuntimeError, match="closed"):
        venv.step(np.zeros((2, 2), dtype=np.float32))


def test_close_reaps_workers():
    venv = make_vec_env("toy2d", 4, n_workers=2)
    procs = list(venv.processes)
    assert all(p.is_alive() for p in procs)
    venv.close()
    venv.close()  # idempotent
    assert all(p.exitcode == 0 for p in procs)
    assert all(_proc_gone(p.pid) for p in procs)


def test_workers_exit_when_parent_is_killed(tmp_path):
    script = textwrap.dedent("""
        import os, signal, sys
        from armflow.sim import make_vec_env
        if __name__ == "__main__":
            venv = make_vec_env("toy2d", 2, n_workers=2)
            venv.reset(seed=0)
            print(" ".join(str(p.pid) for p in venv.processes), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    path = tmp_path / "parent.py"
    path.write_text(script)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and not all(_proc_gone(p) for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if not _proc_gone(p)]
    for pid in alive:  # clean up before failing, only our own orphans
        os.kill(pid, 9)
    assert not alive, f"workers {alive} outlived their killed parent"


def test_step_chunk_is_one_message_of_t_a_steps_and_stops_at_the_episode_end():
    """``step_chunk`` over 2 workers equals stepping single envs by hand, leftover actions dropped at the end."""
    seeds, t_a = [3, 4, 5], 4
    actions = np.zeros((3, t_a, 2), np.float32)
    actions[:, :, 0] = 1.0  # right at full speed: the goal (1 m at 0.1 m/step) is reached at step 10
    with make_vec_env("toy2d", 3, n_workers=2) as venv:
        venv.reset(seed=seeds)
        chunks = [venv.step_chunk(actions, keys=(STATE_KEY,), keep=2) for _ in range(3)]
    envs = [make_env("toy2d") for _ in seeds]
    for i, env in enumerate(envs):
        env.reset(seed=seeds[i])
        for c, chunk in enumerate(chunks):
            n = int(chunk["n_steps"][i])
            assert n == t_a if c < 2 else 0 < n < t_a  # the goal is reached inside the third chunk
            steps = [env.step(a) for a in actions[i, :n]]
            np.testing.assert_array_equal(chunk["reward"][i, :n], [s[1] for s in steps])
            assert not chunk["reward"][i, n:].any()
            m = min(n, 2)  # the last executed steps' obs, right-aligned
            np.testing.assert_array_equal(chunk["obs"][STATE_KEY][i, 2 - m:], [s[0][STATE_KEY] for s in steps[-m:]])
        assert chunk["terminated"][i] and chunk["success"][i]
        assert not np.array_equal(chunk["reset_obs"][STATE_KEY][i], chunk["obs"][STATE_KEY][i, -1])  # autoreset
