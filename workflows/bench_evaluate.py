"""``armflow bench evaluate``: the rollout core's throughput, episodes/s against the number of envs and workers.

1. A policy: ``checkpoint=DIR``, or (default) a flow policy trained for ``train_steps`` on ``demos`` scripted demos
   of ``task``, good enough that its episodes end at different steps (successes end early, failures run to the
   time limit): the case where lockstep rounds made every env wait for the slowest.
2. ``evaluate_policy`` over the same ``episodes`` seeds for every (n_envs, n_workers) in ``grid``, one torch thread.

Prints a ``BENCH_JSON`` line with ``episodes_per_s_<n_envs>x<n_workers>`` and ``env_steps_per_s_<n_envs>x<n_workers>``
per grid point, ``success_rate`` (the same at every point: a seed gives the same episode whatever N), and
``ratio_32_vs_8`` (episodes/s of 32 in-process envs over 8).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from armflow.workflows.common import bench_line, write_json


def bench_policy(cfg: DictConfig, out: Path):
    from armflow.workflows.bench_vision import train_variant
    from armflow.workflows.collect import collect_scripted
    from armflow.policies import load_policy

    if cfg.checkpoint:
        return load_policy(cfg.checkpoint)
    dataset = out / "dataset"
    if not (dataset / "meta" / "info.json").exists():
        collect_scripted(cfg.task, dataset, int(cfg.demos), 0.0, 0, progress=bool(cfg.progress))
    keys = ["observation.state", "observation.environment_state"]
    summary = train_variant(cfg, dataset, keys, out / "policy")
    return load_policy(summary["checkpoint"])


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.evaluate import evaluate_policy

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    policy = bench_policy(cfg, out).eval()
    bench: dict = {"task": cfg.task, "episodes": int(cfg.episodes)}
    rates = set()
    for n_envs, n_workers in cfg.grid:
        t0 = time.perf_counter()
        ev = evaluate_policy(policy, cfg.task, int(cfg.episodes), int(cfg.eval_seed), int(n_envs), int(n_workers),
                             progress=False, source="bench evaluate")
        wall = time.perf_counter() - t0
        tag = f"{n_envs}x{n_workers}"
        bench[f"episodes_per_s_{tag}"] = ev["episodes"] / wall
        bench[f"env_steps_per_s_{tag}"] = ev["episodes"] * ev["mean_length"] / wall
        rates.add(round(ev["success_rate"], 6))
        print(f"[bench evaluate] {n_envs} envs, {n_workers} workers: {bench[f'episodes_per_s_{tag}']:.1f} episodes/s, "
              f"success {ev['success_rate']:.2f}, mean length {ev['mean_length']:.1f}", flush=True)
    bench["success_rate"] = rates.pop() if len(rates) == 1 else sorted(rates)
    if "episodes_per_s_32x0" in bench and "episodes_per_s_8x0" in bench:
        bench["ratio_32_vs_8"] = bench["episodes_per_s_32x0"] / bench["episodes_per_s_8x0"]
    write_json(out / "summary.json", bench)
    print(bench_line(bench), flush=True)
    return bench
