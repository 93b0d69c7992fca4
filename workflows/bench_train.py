"""``armflow bench train``: imitation-training throughput (samples/s) of default-size policies.

Synthetic batches isolate the model update (forward, backward, AdamW step, EMA update) from dataset I/O.
Variants, in one run so their ratios share the machine's load:

- ``state``: state-only (D_s = 20, D_a = 7, T_p = 16, T_o = 2).
- ``image``: the same plus one ``image_size``-square camera, uint8 channels-first as ``armflow train`` feeds it
  (``WindowDataset(uint8_images=True)``), with the default image encoder (``conv``).
- ``image_baseline`` (``baseline=true``): the image encoder armflow trained with before issue 12 (``resnet``
  trunk at (32, 64, 128) on both T_o frames, float [0, 1] images); ``image_speedup`` = image / image_baseline samples/s.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from omegaconf import DictConfig

from armflow.workflows.bench_inference import synthetic_stats

CAMERA = "observation.images.agentview"
BASELINE_IMAGE_CFG = {"image_encoder": "resnet", "image_channels": (32, 64, 128), "image_obs_steps": None}
IMAGE_TARGET_SPEEDUP = 30.0  # issue 12: >= 30x the ~34 samples/s measured before it


def synthetic_batch(cfg: DictConfig, g: torch.Generator, image: str | None = None) -> dict:
    """State-only batch; ``image="uint8"`` or ``"float"`` adds one camera (B, T_o, 3, S, S)."""
    b, t_o, t_p = int(cfg.batch_size), int(cfg.n_obs_steps), int(cfg.horizon)
    batch = {"observation.state": torch.randn(b, t_o, int(cfg.state_dim), generator=g),
             "action": torch.rand(b, t_p, int(cfg.action_dim), generator=g) * 2 - 1,
             "action_is_pad": torch.zeros(b, t_p, dtype=torch.bool)}
    if image is not None:
        s = int(cfg.image_size)
        pixels = torch.randint(0, 256, (b, t_o, 3, s, s), generator=g, dtype=torch.uint8)
        batch[CAMERA] = pixels if image == "uint8" else pixels.float() / 255.0
    return batch


def _stats(cfg: DictConfig, with_image: bool) -> dict:
    stats = synthetic_stats(int(cfg.state_dim), int(cfg.action_dim))
    if with_image:
        stats[CAMERA] = {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25)}
    return stats


def time_variant(cfg: DictConfig, name: str, image: str | None, policy_cfg: dict, steps: int) -> dict:
    """Samples/s of ``steps`` timed optimiser steps (after ``cfg.warmup_steps`` untimed ones)."""
    from armflow.policies import EMA, make_policy

    torch.manual_seed(int(cfg.seed))
    g = torch.Generator().manual_seed(int(cfg.seed))
    spec = {"observation.state": (int(cfg.state_dim),)}
    if image is not None:
        spec[CAMERA] = (int(cfg.image_size), int(cfg.image_size), 3)
    policy = make_policy(str(cfg.policy_type), spec, int(cfg.action_dim), _stats(cfg, image is not None),
                         n_obs_steps=int(cfg.n_obs_steps), horizon=int(cfg.horizon), **policy_cfg).train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=float(cfg.lr))
    ema = EMA(policy, decay=0.995)
    batches = [synthetic_batch(cfg, g, image) for _ in range(2 if image else 4)]

    def step(i: int) -> float:
        loss, _ = policy.compute_loss(batches[i % len(batches)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update()
        return float(loss.detach())

    for i in range(int(cfg.warmup_steps)):
        step(i)
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(steps):
        last_loss = step(i)
    elapsed_s, cpu_s = time.perf_counter() - t0, time.thread_time() - c0
    res = {"samples_per_s": steps * int(cfg.batch_size) / elapsed_s,
           "cpu_samples_per_s": steps * int(cfg.batch_size) / max(cpu_s, 1e-9), "steps_per_s": steps / elapsed_s,
           "params": int(sum(p.numel() for p in policy.parameters())), "last_loss": last_loss}
    print(f"{name}: {res['samples_per_s']:.0f} samples/s ({res['steps_per_s']:.2f} steps/s, batch "
          f"{cfg.batch_size}, {res['params']} params)", flush=True)
    return res


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.common import bench_line, write_json

    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    state = time_variant(cfg, "state", None, {}, int(cfg.steps))
    results = {"policy": str(cfg.policy_type), "batch_size": int(cfg.batch_size),
               "num_threads": torch.get_num_threads(), "params": state["params"],
               "train_steps_per_s": state["steps_per_s"], "train_samples_per_s": state["samples_per_s"],
               "last_loss": state["last_loss"]}
    if cfg.image:
        img = time_variant(cfg, f"image ({cfg.image_size}x{cfg.image_size}, conv encoder, uint8)", "uint8", {},
                           int(cfg.image_steps))
        results.update({"image_size": int(cfg.image_size), "image_samples_per_s": img["samples_per_s"],
                        "image_cpu_samples_per_s": img["cpu_samples_per_s"], "image_params": img["params"]})
        if cfg.baseline:
            old = time_variant(cfg, "image_baseline (resnet (32, 64, 128), float)", "float", BASELINE_IMAGE_CFG,
                               int(cfg.baseline_steps))
            results.update({"image_baseline_samples_per_s": old["samples_per_s"],
                            "image_speedup": img["samples_per_s"] / old["samples_per_s"],
                            "image_cpu_speedup": img["cpu_samples_per_s"] / old["cpu_samples_per_s"]})
            print(f"image speedup over the pre-issue-12 encoder: {results['image_speedup']:.1f}x "
                  f"(target >= {IMAGE_TARGET_SPEEDUP:.0f}x over ~34 samples/s)", flush=True)
        results["image_vs_issue_baseline"] = img["samples_per_s"] / float(cfg.issue_baseline_samples_per_s)
    if cfg.get("out"):
        write_json(f"{cfg.out}/results.json", results)
    print(bench_line(results), flush=True)
    return results
