"""``armflow bench train``: imitation-training throughput (samples/s) of a default-size policy.

Synthetic state-only batches (D_s = 20, D_a = 7, T_p = 16, T_o = 2) isolate the model update
(forward, backward, AdamW step, EMA update) from dataset I/O.
"""
from __future__ import annotations

import time

import torch
from omegaconf import DictConfig

from armflow.workflows.bench_inference import synthetic_stats


def synthetic_batch(cfg: DictConfig, g: torch.Generator) -> dict:
    b, t_o, t_p = int(cfg.batch_size), int(cfg.n_obs_steps), int(cfg.horizon)
    return {"observation.state": torch.randn(b, t_o, int(cfg.state_dim), generator=g),
            "action": torch.rand(b, t_p, int(cfg.action_dim), generator=g) * 2 - 1,
            "action_is_pad": torch.zeros(b, t_p, dtype=torch.bool)}


def main(cfg: DictConfig) -> dict:
    from armflow.policies import EMA, make_policy
    from armflow.workflows.common import bench_line, write_json

    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    torch.manual_seed(int(cfg.seed))
    g = torch.Generator().manual_seed(int(cfg.seed))
    policy = make_policy(str(cfg.policy_type), {"observation.state": (int(cfg.state_dim),)}, int(cfg.action_dim),
                         synthetic_stats(int(cfg.state_dim), int(cfg.action_dim)),
                         n_obs_steps=int(cfg.n_obs_steps), horizon=int(cfg.horizon)).train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=float(cfg.lr))
    ema = EMA(policy, decay=0.995)
    batches = [synthetic_batch(cfg, g) for _ in range(4)]

    def step(i: int) -> float:
        loss, _ = policy.compute_loss(batches[i % len(batches)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update()
        return float(loss.detach())

    for i in range(int(cfg.warmup_steps)):
        step(i)
    t0 = time.perf_counter()
    for i in range(int(cfg.steps)):
        last_loss = step(i)
    elapsed_s = time.perf_counter() - t0
    results = {"policy": str(cfg.policy_type), "batch_size": int(cfg.batch_size), "num_threads": torch.get_num_threads(),
               "params": int(sum(p.numel() for p in policy.parameters())),
               "train_steps_per_s": int(cfg.steps) / elapsed_s,
               "train_samples_per_s": int(cfg.steps) * int(cfg.batch_size) / elapsed_s, "last_loss": last_loss}
    print(f"{cfg.policy_type}: {results['train_samples_per_s']:.0f} samples/s "
          f"({results['train_steps_per_s']:.2f} steps/s, batch {cfg.batch_size})", flush=True)
    if cfg.get("out"):
        write_json(f"{cfg.out}/results.json", results)
    print(bench_line(results), flush=True)
    return results
