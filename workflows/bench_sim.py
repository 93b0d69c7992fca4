"""``armflow bench sim``: control steps per second of the native ``lift`` task vs robosuite Lift.

Each single-env measurement runs in its own fresh process (spawn) with one BLAS/OpenMP thread,
one after the other in the same run, so the ratio is fair on a noisy shared machine. Actions are
uniform random in [-1, 1]; episode resets are included in the timing. The vectorised figure is
``lift`` with ``vec_envs`` envs over 2 subprocess workers (``armflow.sim.make_vec_env``), counted in env steps.
Target: ``lift_speedup_vs_robosuite`` >= 10.
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
    os.environ.update(_ONE_THREAD)  # for the vector env's worker processes
    results["lift_vec2_steps_per_s"] = time_native_vec("lift", int(cfg.vec_envs), 2, int(cfg.vec_steps), warmup, seed)
    results["cpu_count"] = os.cpu_count()
    print(f"{'what':<22}{'steps/s (wall)':>16}{'steps/CPU-s':>14}")
    for key in [*runs, "lift_vec2"]:
        cpu = results.get(f"{key}_steps_per_cpu_s", float("nan"))
        print(f"{key:<22}{results[f'{key}_steps_per_s']:>16.1f}{cpu:>14.1f}")
    print(f"lift speed-up vs robosuite: {results['lift_speedup_vs_robosuite']:.1f}x wall, "
          f"{results['lift_speedup_vs_robosuite_cpu']:.1f}x CPU (target >= 10x)")
    if cfg.out:
        write_json(os.path.join(str(cfg.out), "bench_sim.json"), results)
    print(bench_line(results))
    return results
