"""``armflow bench inference``: milliseconds per action chunk (``predict_chunk``) at batch 1, one thread.

Each variant is a freshly initialised policy at its default sizes on a state-only observation
(D_s = 20, D_a = 7, T_p = 16, T_o = 2); timing covers obs normalisation, encoding, the full sampler
and unnormalisation. Reports p50/p99 [ms] and parameter counts; targets: flow p50 <= 5 ms,
diffusion DDIM-10 p50 <= 20 ms.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

TARGETS_P50_MS = {"flow": 5.0, "diffusion_ddim10": 20.0}


def synthetic_stats(state_dim: int, action_dim: int) -> dict:
    return {"observation.state": {"min": -np.ones(state_dim), "max": np.ones(state_dim)},
            "action": {"min": -np.ones(action_dim), "max": np.ones(action_dim)}}


def time_chunks(policy, obs: dict, warmup: int, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and thread-CPU time [ms] of ``iters`` calls of ``predict_chunk(obs)`` after ``warmup`` untimed ones.

    The CPU time excludes time this thread spent descheduled: on a shared, oversubscribed machine it is
    the steadier of the two (both are reported; the targets apply to wall time)."""
    wall, cpu = np.empty(iters), np.empty(iters)
    with torch.inference_mode():
        for _ in range(warmup):
            policy.predict_chunk(obs)
        for i in range(iters):
            t0, c0 = time.perf_counter(), time.thread_time()
            policy.predict_chunk(obs)
            wall[i], cpu[i] = (time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3
    return wall, cpu


def reference_mlp_ms(iters: int) -> float:
    """p50 [ms] of a plain 3x512 MLP forward at batch 1: ~0.06 ms on an idle box of this kind
    (ecosystem.md), so the ratio tells how loaded the machine was during this run."""
    mlp = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                              torch.nn.ReLU(), torch.nn.Linear(512, 512))
    x = torch.randn(1, 512)
    times = np.empty(iters)
    with torch.inference_mode():
        for _ in range(10):
            mlp(x)
        for i in range(iters):
            t0 = time.perf_counter()
            mlp(x)
            times[i] = (time.perf_counter() - t0) * 1e3
    return float(np.percentile(times, 50))


def bench_variant(name: str, spec: dict, cfg: DictConfig) -> dict:
    from armflow.policies import make_policy

    spec = dict(spec)
    policy_type = spec.pop("type")
    policy = make_policy(policy_type, {"observation.state": (cfg.state_dim,)}, cfg.action_dim,
                         synthetic_stats(cfg.state_dim, cfg.action_dim), n_obs_steps=cfg.n_obs_steps,
                         horizon=cfg.horizon, **spec).eval()
    obs = {"observation.state": torch.randn(1, cfg.n_obs_steps, cfg.state_dim)}
    wall, cpu = time_chunks(policy, obs, int(cfg.warmup), int(cfg.iters))
    return {f"{name}_p50_ms": float(np.percentile(wall, 50)), f"{name}_p99_ms": float(np.percentile(wall, 99)),
            f"{name}_cpu_p50_ms": float(np.percentile(cpu, 50)), f"{name}_min_ms": float(wall.min()),
            f"{name}_params": int(sum(p.numel() for p in policy.parameters()))}


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.common import bench_line, write_json

    torch.set_num_threads(int(cfg.num_threads))
    torch.manual_seed(int(cfg.seed))
    variants = OmegaConf.to_container(cfg.variants, resolve=True)
    results: dict = {"num_threads": int(cfg.num_threads), "batch": 1, "load_avg_1min": float(os.getloadavg()[0])}
    for name, spec in variants.items():
        results.update(bench_variant(name, spec, cfg))
        print(f"{name:>24}: p50 {results[f'{name}_p50_ms']:.2f} ms  p99 {results[f'{name}_p99_ms']:.2f} ms  "
              f"cpu p50 {results[f'{name}_cpu_p50_ms']:.2f} ms  min {results[f'{name}_min_ms']:.2f} ms  "
              f"params {results[f'{name}_params'] / 1e6:.2f} M", flush=True)
    results["reference_mlp3x512_p50_ms"] = reference_mlp_ms(int(cfg.iters))
    for name, target in TARGETS_P50_MS.items():
        if f"{name}_p50_ms" in results:
            results[f"{name}_meets_target"] = bool(results[f"{name}_p50_ms"] <= target)
    if cfg.get("out"):
        write_json(f"{cfg.out}/results.json", results)
    print(bench_line(results), flush=True)
    return results
