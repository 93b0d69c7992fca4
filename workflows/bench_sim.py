"""``armflow bench sim``: control steps per second of the native ``lift`` task vs robosuite Lift.

Each single-env measurement runs in its own fresh process (spawn) with one BLAS/OpenMP thread,
one after the other in the same run, so the ratio is fair on a noisy shared machine. Actions are
uniform random in [-1, 1]; episode resets are included in the timing. The vectorised figure is
``lift`` with ``vec_envs`` envs over 2 subprocess workers (``armflow.sim.make_vec_env``), counted in env steps.
Target: ``lift_speedup_vs_robosuite`` >= 10.

Where an env step's time goes (issue 11), in the same run:

- ``physics_share_lift``: ``lift``'s physics steps per CPU-second through ``env.step``
  (``env_physics_steps_per_s_lift``) over raw ``mj_step`` on the env's own MjModel/MjData
  (``raw_mj_step_per_s``) doing the very same physics: each episode is stepped through the env, then
  replayed from its start state (warm start included) with the ctrl the env's controller set,
  ``mj_step(nstep=n_substeps)`` per control step. ``physics_replay_exact``: the replay ended on the env's
  qpos bit for bit. Target >= 0.60.
- ``ipc_overhead_us_per_step`` / ``_chunk``: wall time per env step of ``ipc_envs`` envs in one subprocess
  worker minus in-process (``n_workers=0``), by ``step`` and by ``step_chunk`` (``chunk_len`` actions per
  message); with one worker the parent waits while it steps, so the difference is the IPC cost.
- ``vec_chunk_steps_per_s_<n>``: env steps/s of ``step_chunk`` over 2 workers at each of ``eval_envs``
  env counts (evaluate-like: chunks of ``chunk_len``, same-step autoreset).
"""
from __future__ import annotations

import os
import time
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from omegaconf import DictConfig

_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def time_native(name: str, steps: int, warmup: int, seed: int, cameras: tuple[str, ...] = ()) -> tuple[float, float]:
    """(wall-clock, process-CPU) control steps/s of one native env (``armflow.sim.make_env``), random actions."""
    from armflow.sim.registry import make_env

    env = make_env(name, cameras=list(cameras))
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1.0, 1.0, size=(steps + warmup, 7)).astype(np.float32)
    env.reset(seed=seed)
    t0 = c0 = 0.0
    for i in range(steps + warmup):
        if i == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        _, _, terminated, truncated, _ = env.step(actions[i])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)


def time_robosuite_lift(steps: int, warmup: int, seed: int) -> tuple[float, float]:
    """(wall-clock, process-CPU) control steps/s of robosuite Lift (Panda, default OSC_POSE, no renderer)."""
    import robosuite

    env = robosuite.make("Lift", robots="Panda", has_renderer=False, has_offscreen_renderer=False,
                         use_camera_obs=False)
    low, high = env.action_spec
    rng = np.random.default_rng(seed)
    actions = rng.uniform(low, high, size=(steps + warmup, len(low)))
    env.reset()
    t0 = c0 = 0.0
    for i in range(steps + warmup):
        if i == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        _, _, done, _ = env.step(actions[i])
        if done:
            env.reset()
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)


def time_native_vec(name: str, n_envs: int, n_workers: int, steps: int, warmup: int, seed: int) -> float:
    """Env steps/s (vector steps x n_envs) of ``make_vec_env(name, n_envs, n_workers)``."""
    from armflow.sim import make_vec_env

    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1.0, 1.0, size=(steps + warmup, n_envs, 7)).astype(np.float32)
    with make_vec_env(name, n_envs, n_workers=n_workers) as venv:
        venv.reset(seed=seed)
        t0 = 0.0
        for i in range(steps + warmup):
            if i == warmup:
                t0 = time.perf_counter()
            venv.step(actions[i])
        return steps * n_envs / (time.perf_counter() - t0)


def time_physics_share(name: str, steps: int, warmup: int, seed: int) -> dict:
    """Env physics steps/s through ``env.step`` vs raw ``mj_step`` replaying the same physics (module docstring)."""
    import mujoco

    from armflow.sim.registry import make_env

    env = make_env(name)
    model, data, n_sub = env.model, env.data, env.n_substeps
    spec = int(mujoco.mjtState.mjSTATE_FULLPHYSICS) | int(mujoco.mjtState.mjSTATE_WARMSTART)
    start = np.empty(mujoco.mj_stateSize(model, spec))
    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(steps + warmup, 7)).astype(np.float32)
    env.reset(seed=seed)
    for action in actions[:warmup]:
        env.step(action)
    env.reset()
    t_env = t_raw = 0.0
    done, exact = warmup, True
    while done < len(actions):
        mujoco.mj_getState(model, data, start, spec)
        ctrls, seconds, qpos_end = _env_episode(env, data, actions[done:])
        t_env += seconds
        t_raw += _raw_replay(model, data, start, spec, ctrls, n_sub)
        exact = exact and np.array_equal(qpos_end, data.qpos)
        done += len(ctrls)
        env.reset()
    n_physics = steps * n_sub
    return {f"physics_share_{name}": t_raw / t_env, f"env_physics_steps_per_s_{name}": n_physics / t_env,
            "raw_mj_step_per_s": n_physics / t_raw, "physics_replay_exact": bool(exact)}


def _env_episode(env, data, actions: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Step ``env`` until its episode ends (or ``actions`` run out): (ctrl after each step, CPU seconds,
    final qpos). CPU time: a 2-core box shared with other jobs preempts often, which wall time would count."""
    ctrls = np.empty((len(actions), data.ctrl.size))
    t0 = time.process_time()
    for k, action in enumerate(actions):
        _, _, terminated, truncated, _ = env.step(action)
        ctrls[k] = data.ctrl  # the replay's only bookkeeping is the same one copy per step
        if terminated or truncated:
            break
    return ctrls[: k + 1], time.process_time() - t0, data.qpos.copy()


def _raw_replay(model, data, start: np.ndarray, spec: int, ctrls: np.ndarray, n_sub: int) -> float:
    """CPU seconds of ``mj_step(nstep=n_sub)`` replaying ``ctrls`` from state ``start``."""
    import mujoco

    mujoco.mj_setState(model, data, start, spec)
    mujoco.mj_forward(model, data)
    ctrl = data.ctrl
    t0 = time.process_time()
    for row in ctrls:
        ctrl[:] = row
        mujoco.mj_step(model, data, nstep=n_sub)
    return time.process_time() - t0


def time_vec_ipc(name: str, n_envs: int, steps: int, chunk_len: int, seed: int) -> dict:
    """IPC overhead [us per env step] of one subprocess worker over in-process, by ``step`` and by
    ``step_chunk``; the two vector envs are timed in alternating blocks so machine drift hits both alike."""
    from armflow.sim import make_vec_env

    rng = np.random.default_rng(seed)
    blocks, per_block = 5, max(1, steps // 5)
    seconds = {key: 0.0 for key in ("step0", "step1", "chunk0", "chunk1")}
    env_steps = {key: 0 for key in seconds}
    with make_vec_env(name, n_envs, n_workers=0) as local, make_vec_env(name, n_envs, n_workers=1) as remote:
        for venv in (local, remote):
            venv.reset(seed=seed)
        for _ in range(blocks):
            step_actions = rng.uniform(-1.0, 1.0, size=(per_block, n_envs, 7)).astype(np.float32)
            chunk_actions = rng.uniform(-1.0, 1.0, size=(max(1, per_block // chunk_len), n_envs, chunk_len, 7))
            for workers, venv in enumerate((local, remote)):
                t0 = time.perf_counter()
                for actions in step_actions:
                    venv.step(actions)
                seconds[f"step{workers}"] += time.perf_counter() - t0
                env_steps[f"step{workers}"] += step_actions.shape[0] * n_envs
                t0 = time.perf_counter()
                n = sum(int(venv.step_chunk(actions)["n_steps"].sum()) for actions in chunk_actions)
                seconds[f"chunk{workers}"] += time.perf_counter() - t0
                env_steps[f"chunk{workers}"] += n
    per_step = {key: seconds[key] / env_steps[key] * 1e6 for key in seconds}
    return {"vec_inproc_us_per_step": per_step["step0"], "vec_1worker_us_per_step": per_step["step1"],
            "ipc_overhead_us_per_step": per_step["step1"] - per_step["step0"],
            "ipc_overhead_us_per_step_chunk": per_step["chunk1"] - per_step["chunk0"]}


def time_vec_chunks(name: str, n_envs: int, n_workers: int, chunks: int, chunk_len: int, seed: int) -> float:
    """Env steps/s of ``step_chunk`` (evaluate-like: chunks of ``chunk_len``, same-step autoreset)."""
    from armflow.sim import make_vec_env

    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(chunks, n_envs, chunk_len, 7))
    with make_vec_env(name, n_envs, n_workers=n_workers) as venv:
        venv.reset(seed=seed)
        venv.step_chunk(actions[0])  # warm-up
        t0, n = time.perf_counter(), 0
        for chunk in actions[1:]:
            n += int(venv.step_chunk(chunk)["n_steps"].sum())
        return n / (time.perf_counter() - t0)


def in_fresh_process(fn, *args):
    """Run ``fn(*args)`` in a new spawned process limited to one math thread; return its result."""
    saved = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update(_ONE_THREAD)  # inherited by the child before it imports numpy
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
            return pool.submit(fn, *args).result()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.common import bench_line, write_json

    seed, warmup, steps = int(cfg.seed), int(cfg.warmup), int(cfg.steps)
    runs = {
        "lift": in_fresh_process(time_native, "lift", steps, warmup, seed),
        "robosuite_lift": in_fresh_process(time_robosuite_lift, int(cfg.robosuite_steps), warmup, seed),
        "pick_either": in_fresh_process(time_native, "pick_either", steps, warmup, seed),
    }
    if cfg.camera_steps > 0:
        runs["lift_agentview84"] = in_fresh_process(time_native, "lift", int(cfg.camera_steps), warmup, seed,
                                                    ("agentview",))
    results = {f"{k}_steps_per_s": wall for k, (wall, _) in runs.items()}
    results.update({f"{k}_steps_per_cpu_s": cpu for k, (_, cpu) in runs.items()})
    results["lift_speedup_vs_robosuite"] = results["lift_steps_per_s"] / results["robosuite_lift_steps_per_s"]
    # CPU time is immune to other processes competing for the cores: the fairer ratio on a shared box.
    results["lift_speedup_vs_robosuite_cpu"] = (results["lift_steps_per_cpu_s"]
                                                / results["robosuite_lift_steps_per_cpu_s"])
    results.update(in_fresh_process(time_physics_share, "lift", int(cfg.share_steps), warmup, seed))
    os.environ.update(_ONE_THREAD)  # for the vector env's worker processes
    results["lift_vec2_steps_per_s"] = time_native_vec("lift", int(cfg.vec_envs), 2, int(cfg.vec_steps), warmup, seed)
    results.update(time_vec_ipc("lift", int(cfg.ipc_envs), int(cfg.vec_steps), int(cfg.chunk_len), seed))
    for n_envs in cfg.eval_envs:
        chunks = max(2, int(cfg.vec_steps) * int(cfg.vec_envs) // (int(n_envs) * int(cfg.chunk_len)))
        results[f"vec_chunk_steps_per_s_{n_envs}"] = time_vec_chunks("lift", int(n_envs), 2, chunks,
                                                                     int(cfg.chunk_len), seed)
    results["cpu_count"] = os.cpu_count()
    print(f"{'what':<22}{'steps/s (wall)':>16}{'steps/CPU-s':>14}")
    for key in [*runs, "lift_vec2"]:
        cpu = results.get(f"{key}_steps_per_cpu_s", float("nan"))
        print(f"{key:<22}{results[f'{key}_steps_per_s']:>16.1f}{cpu:>14.1f}")
    print(f"lift speed-up vs robosuite: {results['lift_speedup_vs_robosuite']:.1f}x wall, "
          f"{results['lift_speedup_vs_robosuite_cpu']:.1f}x CPU (target >= 10x)")
    _print_breakdown(results, cfg)
    if cfg.out:
        write_json(os.path.join(str(cfg.out), "bench_sim.json"), results)
    print(bench_line(results))
    return results


def _print_breakdown(results: dict, cfg: DictConfig) -> None:
    print(f"lift physics share: {results['physics_share_lift']:.2f} (target >= 0.60): "
          f"{results['env_physics_steps_per_s_lift']:.0f} physics steps/s through env.step vs "
          f"{results['raw_mj_step_per_s']:.0f} raw mj_step/s (replay exact: {results['physics_replay_exact']})")
    print(f"IPC overhead, {cfg.ipc_envs} envs in 1 worker vs in-process: "
          f"{results['ipc_overhead_us_per_step']:.1f} us per env step by step(), "
          f"{results['ipc_overhead_us_per_step_chunk']:.1f} by step_chunk({cfg.chunk_len})")
    print("step_chunk over 2 workers: " + ", ".join(
        f"{n} envs {results[f'vec_chunk_steps_per_s_{n}']:.0f} env steps/s" for n in cfg.eval_envs))
