"""``armflow bench reward``: the success classifier on real MuJoCo renders, and the VLM client under load.

1. Record ``train_episodes`` + ``test_episodes`` scripted ``task`` episodes with ``cameras`` (two datasets,
   disjoint seeds), a ``failures`` fraction of them scripted failures, ``success_hold_steps`` frames kept
   after each success (``armflow collect``'s recorder).
2. ``armflow reward fit`` on the first (threshold for ``target_fp`` on its validation episodes).
3. ``armflow reward eval`` on the held-out second: accuracy and false-positive rate against ``next.success``.
4. Time ``score()`` at batch ``score_batch`` on real frames (RewardQuery in, RewardResult out).
5. The VLM client's stress check against the loopback server (``armflow.rewards.vlm_openai.stress``).

Prints ``BENCH_JSON`` with ``classifier_accuracy``, ``classifier_fp_rate``, ``classifier_frames_per_s``,
``vlm_concurrent_requests``, ``vlm_lost_or_mismatched`` and ``vlm_cache_rerun_requests``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from armflow.workflows.common import bench_line, compose_config, write_json

VLM_KEYS = ("vlm_concurrent_requests", "vlm_lost_or_mismatched", "vlm_cache_rerun_requests")


def record(cfg: DictConfig, root: Path, episodes: int, seed: int) -> dict:
    """One dataset of scripted successes and failures (reused when ``root`` already holds one)."""
    from armflow.workflows.collect import collect_scripted

    if (root / "meta" / "info.json").exists():
        return {"reused": str(root)}
    return collect_scripted(cfg.task, root, episodes, float(cfg.noise_std), seed, cameras=list(cfg.cameras),
                            only_success=False, progress=bool(cfg.progress),
                            env_overrides={"image_size": int(cfg.image_size)}, failures=float(cfg.failures),
                            success_hold_steps=int(cfg.success_hold_steps))


def run_sub(module, config: str, overrides: list[str], out: Path) -> dict:
    """Run another command's ``main`` in-process with its own composed, validated config and run dir."""
    from armflow.workflows.common import prepare_run_dir

    sub = compose_config(config, [*overrides, f"out={out}"])
    prepare_run_dir(sub, config)
    return module.main(sub)


def frames_per_s(model, frames: dict[str, np.ndarray], batch: int, warmup: int, iters: int) -> dict:
    """Median and best frames/s of ``model.score`` on ``batch`` queries built from real frames."""
    from armflow.rewards import RewardQuery

    n = len(next(iter(frames.values())))
    pick = np.arange(batch) % n
    queries = [RewardQuery(frames={c: f[i] for c, f in frames.items()}) for i in pick]
    for _ in range(warmup):
        model.score(queries)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model.score(queries)
        times.append(time.perf_counter() - t0)
    return {"classifier_frames_per_s": batch / float(np.median(times)),
            "classifier_frames_per_s_best": batch / float(np.min(times)),
            "classifier_batch": batch, "torch_threads": torch.get_num_threads()}


def vlm_stress(cfg: DictConfig) -> dict:
    from armflow.rewards.vlm_openai import stress

    result = stress(n_queries=int(cfg.vlm_queries), concurrency=int(cfg.vlm_concurrency))
    print(f"[bench reward] VLM: peak {result['vlm_concurrent_requests']} requests in flight, "
          f"{result['vlm_lost_or_mismatched']} lost/mismatched, cached rerun issued "
          f"{result['vlm_cache_rerun_requests']} requests", flush=True)
    return result


def main(cfg: DictConfig) -> dict:
    from armflow.data import LeRobotDataset
    from armflow.rewards.classifier import SuccessClassifier
    from armflow.workflows import reward_eval, reward_fit

    out, t0 = Path(cfg.out), time.monotonic()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    cams = f"[{','.join(cfg.cameras)}]"
    train_info = record(cfg, out / "train_dataset", int(cfg.train_episodes), int(cfg.seed))
    test_info = record(cfg, out / "test_dataset", int(cfg.test_episodes), int(cfg.test_seed))
    fit_overrides = [f"dataset={out / 'train_dataset'}", f"cameras={cams}", f"target_fp={cfg.target_fp}",
                     f"seed={cfg.seed}", f"progress={str(bool(cfg.progress)).lower()}",
                     *[f"{k}={v}" for k, v in OmegaConf.to_container(cfg.fit, resolve=True).items()]]
    fit = run_sub(reward_fit, "reward_fit", fit_overrides, out / "fit")
    ev = run_sub(reward_eval, "reward_eval", [f"dataset={out / 'test_dataset'}", f"checkpoint={fit['checkpoint']}",
                                              f"cameras={cams}"], out / "eval")
    model = SuccessClassifier.load(fit["checkpoint"])
    test = LeRobotDataset(out / "test_dataset")
    frames = {c: test.episode_frames(0, f"observation.images.{c}") for c in cfg.cameras}
    speed = frames_per_s(model, frames, int(cfg.score_batch), int(cfg.warmup), int(cfg.iters))
    print(f"[bench reward] score(): {speed['classifier_frames_per_s']:.0f} frames/s median "
          f"({speed['classifier_frames_per_s_best']:.0f} best) at batch {cfg.score_batch}, "
          f"{speed['torch_threads']} torch threads", flush=True)
    overall = ev["overall"]
    bench = {"classifier_accuracy": overall["accuracy"], "classifier_fp_rate": overall["fp_rate"],
             "classifier_fn_rate": overall["fn_rate"], "classifier_auc": overall["auc"],
             "classifier_precision": overall["precision"], "classifier_recall": overall["recall"],
             "classifier_episode_fp_rate": overall["episode_fp_rate"], **speed,
             "classifier_threshold": fit["threshold"], "classifier_val_fp_rate": fit["val"]["fp_rate"],
             "classifier_train_wall_s": fit["train_wall_s"], "test_frames": ev["frames"],
             "test_positive_frames": overall["positives"], "test_negative_frames": overall["negatives"],
             "train_dataset": train_info, "test_dataset": test_info, "task": cfg.task, "cameras": list(cfg.cameras),
             "image_size": int(cfg.image_size), "episodes": int(cfg.train_episodes) + int(cfg.test_episodes)}
    bench.update({k: v for k, v in vlm_stress(cfg).items()} if cfg.vlm else {k: None for k in VLM_KEYS})
    bench["wall_time_s"] = time.monotonic() - t0
    write_json(out / "summary.json", bench)
    print(bench_line(bench), flush=True)
    return bench
