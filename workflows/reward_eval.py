"""``armflow reward eval``: audit any reward backend against privileged ``next.success`` on recorded rollouts.

1. Build the backend by name (``armflow.rewards.registry``): ``checkpoint`` is its ``path``; ``url``,
   ``model`` and ``options`` go to it as keys.
2. Score every frame of the chosen episodes (one query per frame: the frame of each camera, the episode's
   task string as the instruction, ``observation.state`` for gates), ``batch_size`` queries at a time.
3. Per task and overall: FP / FN / precision / recall / accuracy / AUC / Brier / calibration of the
   backend's decision (``value >= 0.5``) and probability against what the frame shows (``frame_success``:
   frame t against row t-1's ``next.success``); invalid
   results are counted and left out; episode level: did the detector fire in a failed episode (what RL
   exploits) or never in a successful one.
4. Write ``metrics.json``, ``scores.png`` (histograms + ROC) and ``reliability.png``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from armflow.workflows.common import write_json
from armflow.workflows.reward_fit import IMAGE_PREFIX, SUCCESS_KEY, dataset_cameras

STATE_KEY = "observation.state"


def backend_options(cfg: DictConfig) -> dict:
    options = {"path": cfg.checkpoint} if cfg.get("checkpoint") else {}
    options.update({k: cfg[k] for k in ("url", "model") if cfg.get(k) is not None})
    return {**options, **OmegaConf.to_container(cfg.options, resolve=True)}


def eval_cameras(cfg: DictConfig, model, ds) -> list[str]:
    """``cameras`` if set, else the model's own (``model.cameras``), else every camera of the dataset."""
    have = dataset_cameras(ds)
    cameras = list(cfg.cameras or getattr(model, "cameras", None) or have)
    unknown = [c for c in cameras if c not in have]
    if unknown or not cameras:
        raise ValueError(f"cameras {cameras}: {unknown or 'none'} not in the dataset {ds.root}; its cameras: "
                         f"{have or 'none (record with cameras=[...])'}")
    if SUCCESS_KEY not in ds.features:
        raise ValueError(f"{ds.root}: no {SUCCESS_KEY!r} column to audit the reward model against")
    return cameras


def score_episode(model, ds, i: int, cameras: list[str], batch_size: int) -> dict[str, np.ndarray]:
    """Per frame of episode ``i``: ``prob`` (NaN where none), ``value``, ``valid``, ``label``."""
    from armflow.rewards import RewardQuery
    from armflow.rewards.metrics import frame_success

    cols = ds.episode(i)
    frames = {c: ds.episode_frames(i, IMAGE_PREFIX + c) for c in cameras}
    task, n = ds.episode_task(i), len(cols[SUCCESS_KEY])
    states = cols.get(STATE_KEY)
    results = []
    for lo in range(0, n, batch_size):
        queries = [RewardQuery(frames={c: frames[c][t] for c in cameras}, instruction=task, key=(i, t),
                               state=None if states is None else states[t]) for t in range(lo, min(n, lo + batch_size))]
        results += model.score(queries)
    return {"prob": np.array([np.nan if r.prob is None or not r.valid else r.prob for r in results]),
            "value": np.array([r.value if r.valid else np.nan for r in results], dtype=np.float64),
            "valid": np.array([r.valid for r in results]),
            "label": frame_success(cols[SUCCESS_KEY])}


def group_metrics(rows: list[dict[str, np.ndarray]], bins: int) -> dict:
    """Frame-level detection metrics over the valid frames of ``rows`` plus episode-level rates."""
    from armflow.rewards.metrics import detection_metrics

    cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    ok = cat["valid"]
    out = detection_metrics(cat["prob"][ok], cat["value"][ok] >= 0.5, cat["label"][ok], bins)
    out["invalid"] = int((~ok).sum())
    fired = np.array([bool(np.any(r["value"][r["valid"]] >= 0.5)) for r in rows])
    succeeded = np.array([bool(r["label"].any()) for r in rows])
    out["episodes"] = len(rows)
    out["episode_fp_rate"] = float(fired[~succeeded].mean()) if (~succeeded).any() else float("nan")
    out["episode_fn_rate"] = float((~fired[succeeded]).mean()) if succeeded.any() else float("nan")
    return out


def evaluate(model, ds, episodes: list[int], cameras: list[str], batch_size: int, bins: int) -> tuple[dict, dict]:
    """(metrics: overall + per task, the per-frame arrays of every episode concatenated)."""
    rows, tasks = [], []
    t0 = time.perf_counter()
    for i in episodes:
        rows.append(score_episode(model, ds, i, cameras, batch_size))
        tasks.append(ds.episode_task(i))
    wall = time.perf_counter() - t0
    frames = sum(len(r["label"]) for r in rows)
    metrics = {"overall": group_metrics(rows, bins),
               "per_task": {t: group_metrics([r for r, rt in zip(rows, tasks) if rt == t], bins)
                            for t in dict.fromkeys(tasks)},
               "frames": frames, "scoring_frames_per_s": frames / wall if wall > 0 else float("inf")}
    return metrics, {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def main(cfg: DictConfig) -> dict:
    from armflow.data import LeRobotDataset
    from armflow.rewards.registry import make_reward_model
    from armflow.workflows.reward_plots import plot_reliability, plot_scores

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    out = Path(cfg.out)
    ds = LeRobotDataset(cfg.dataset)
    episodes = list(cfg.episode_ids) if cfg.episode_ids is not None else list(range(ds.num_episodes))
    bad = [e for e in episodes if not 0 <= int(e) < ds.num_episodes]
    if bad or not episodes:
        raise ValueError(f"episode_ids={episodes}: {bad or 'none'} not in [0, {ds.num_episodes}) of {ds.root}")
    with make_reward_model(str(cfg.backend), **backend_options(cfg)) as model:
        cameras = eval_cameras(cfg, model, ds)
        metrics, arrays = evaluate(model, ds, [int(e) for e in episodes], cameras, int(cfg.batch_size), int(cfg.bins))
        metrics.update({"backend": model.backend, "model_version": model.model_version, "cameras": cameras,
                        "dataset": str(ds.root), "episodes": episodes,
                        "threshold": getattr(getattr(model, "config", None), "threshold", None)})
    ok = arrays["valid"] & ~np.isnan(arrays["prob"])
    title = f"{metrics['backend']} {metrics['model_version']} on {Path(str(ds.root)).name}"
    metrics["plots"] = [str(plot_scores(out / "scores.png", arrays["prob"][ok], arrays["label"][ok],
                                        metrics["threshold"], title)),
                        str(plot_reliability(out / "reliability.png",
                                             {t: m["calibration"] for t, m in metrics["per_task"].items()}, title))]
    write_json(out / "metrics.json", metrics)
    o = metrics["overall"]
    print(f"[reward eval] {metrics['backend']} on {metrics['frames']} frames of {len(episodes)} episodes: accuracy "
          f"{o['accuracy']:.4f}, FP rate {o['fp_rate']:.4f}, FN rate {o['fn_rate']:.4f}, precision "
          f"{o['precision']:.4f}, recall {o['recall']:.4f}, AUC {o['auc']:.4f}, invalid {o['invalid']}; "
          f"episodes: FP {o['episode_fp_rate']:.2f}, FN {o['episode_fn_rate']:.2f}", flush=True)
    return metrics
