"""``armflow bench vision``: a flow policy that sees (cameras + proprioception) against one that reads object state.

1. Collect ``demos`` scripted demos of ``task`` with ``cameras`` (one dataset; seeds 0, 1, ...).
2. Train two flow policies on the same demos and budget: ``vision`` reads ``observation.state`` (the robot's
   proprioception) and ``observation.images.<cam>``; ``state`` reads ``observation.state`` plus
   ``observation.environment_state`` (the simulator's object state, where the dataset has it).
3. Evaluate both on ``episodes`` unseen seeds (``eval_seed``, ...), the vision policy with the same cameras.
4. Time ``predict_chunk`` at batch 1 on one thread on a real observation.

Prints a ``BENCH_JSON`` line: ``success_rate``, ``episodes_evaluated``, ``train_wall_s``, ``train_samples_per_s``
and ``inference_p50_ms`` of the vision policy, and the same keys prefixed ``state_`` for the state policy.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from armflow.workflows.common import bench_line, compose_config, write_json

ENV_STATE = "observation.environment_state"


def variant_obs_keys(features: dict, cameras: list[str]) -> dict[str, list[str]]:
    """The observation keys of each variant (``state`` gets the object state only where the dataset has it)."""
    return {"vision": ["observation.state", *[f"observation.images.{c}" for c in cameras]],
            "state": ["observation.state", *([ENV_STATE] if ENV_STATE in features else [])]}


def train_variant(cfg: DictConfig, dataset: Path, obs_keys: list[str], out: Path) -> dict:
    """Train one flow policy with ``armflow train``'s loop; returns its summary (``wall_time_s``, ``checkpoint``)."""
    from armflow.workflows import train

    overrides = [f"dataset={dataset}", f"out={out}", f"steps={cfg.train_steps}", f"batch_size={cfg.batch_size}",
                 f"seed={cfg.seed}", f"num_threads={cfg.num_threads}", f"obs_keys=[{','.join(obs_keys)}]",
                 *[f"policy.{k}={v}" for k, v in OmegaConf.to_container(cfg.policy, resolve=True).items()]]
    tcfg = compose_config("train", overrides)
    out.mkdir(parents=True, exist_ok=True)
    return train.train(tcfg)


def inference_p50_ms(policy, task: str, env_overrides: dict, warmup: int, iters: int) -> float:
    """p50 [ms] of ``predict_chunk`` at batch 1 on one thread, on a real first observation (uint8 images)."""
    from armflow.sim import make_env
    from armflow.workflows.bench_inference import time_chunks

    env = make_env(task, **env_overrides)
    obs, _ = env.reset(seed=0)
    env.close()
    window = {k: torch.as_tensor(np.stack([obs[k]] * policy.n_obs_steps)[None]) for k in policy.obs_spec}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        wall, _ = time_chunks(policy.eval(), window, warmup, iters)
    finally:
        torch.set_num_threads(threads)
    return float(np.percentile(wall, 50))


def run_variant(cfg: DictConfig, name: str, dataset: Path, obs_keys: list[str], out: Path) -> dict:
    from armflow.policies import load_policy
    from armflow.workflows.evaluate import evaluate_policy

    summary = train_variant(cfg, dataset, obs_keys, out / name)
    policy = load_policy(summary["checkpoint"])
    cams = [k.removeprefix("observation.images.") for k in obs_keys if k.startswith("observation.images.")]
    overrides = {"cameras": cams} if cams else {}
    ev = evaluate_policy(policy, cfg.task, int(cfg.episodes), int(cfg.eval_seed), int(cfg.n_envs), cfg.n_workers,
                         env_overrides=overrides)
    res = {"success_rate": ev["success_rate"], "episodes_evaluated": ev["episodes"],
           "train_wall_s": summary["wall_time_s"],
           "train_samples_per_s": summary["steps"] * int(cfg.batch_size) / summary["wall_time_s"],
           "inference_p50_ms": inference_p50_ms(policy, cfg.task, overrides, int(cfg.warmup), int(cfg.iters)),
           "obs_keys": obs_keys}
    print(f"[bench vision] {name}: success {res['success_rate']:.2f} over {res['episodes_evaluated']} seeds, "
          f"train {res['train_wall_s']:.0f} s ({res['train_samples_per_s']:.0f} samples/s), "
          f"inference p50 {res['inference_p50_ms']:.1f} ms", flush=True)
    return res


def main(cfg: DictConfig) -> dict:
    from armflow.data import LeRobotDataset
    from armflow.workflows.collect import collect_scripted

    out, t0 = Path(cfg.out), time.monotonic()
    torch.set_num_threads(int(cfg.num_threads))
    dataset = out / "dataset"
    if not (dataset / "meta" / "info.json").exists():
        collect_scripted(cfg.task, dataset, int(cfg.demos), float(cfg.noise_std), int(cfg.seed),
                         cameras=list(cfg.cameras), progress=bool(cfg.progress))
    keys = variant_obs_keys(LeRobotDataset(dataset).features, list(cfg.cameras))
    vision = run_variant(cfg, "vision", dataset, keys["vision"], out)
    state = run_variant(cfg, "state", dataset, keys["state"], out)
    bench = {k: v for k, v in vision.items()}
    bench.update({f"state_{k}": v for k, v in state.items()})
    bench.update({"task": cfg.task, "demos": int(cfg.demos), "cameras": list(cfg.cameras),
                  "train_steps": int(cfg.train_steps), "batch_size": int(cfg.batch_size),
                  "wall_time_s": time.monotonic() - t0})
    write_json(out / "summary.json", bench)
    print(bench_line(bench), flush=True)
    return bench
