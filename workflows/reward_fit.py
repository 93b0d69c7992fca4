"""``armflow reward fit``: train a success classifier on the labelled frames of a LeRobot v3 dataset.

1. Label every episode's frames from ``next.success`` (``armflow.rewards.classifier_fit.episode_labels`` on
   ``frame_success``: positives at/after success, negatives early in successful episodes and everywhere in
   failed ones).
2. Split by episode (stratified by outcome) into train / val; training batches hold ``negative_ratio``
   negatives per positive.
3. Train (BCE, random crops), keep the best validation loss; fit a temperature on val (``calibrate``);
   pick the threshold whose val false-positive rate is <= ``target_fp`` (never below ``min_threshold``).
4. Write ``<out>/checkpoint`` (model.safetensors + config.json), ``metrics.json`` (val metrics at the
   threshold, training curve) and ``scores.png`` (val score histograms + ROC).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from armflow.workflows.common import write_json

IMAGE_PREFIX = "observation.images."
SUCCESS_KEY = "next.success"


def dataset_cameras(ds) -> list[str]:
    return [k.removeprefix(IMAGE_PREFIX) for k in ds.video_keys if k.startswith(IMAGE_PREFIX)]


def check_dataset(ds, cameras: list[str], label_key: str = SUCCESS_KEY) -> None:
    """Unknown cameras or a dataset without the ``label_key`` column raise, naming what the dataset has."""
    have = dataset_cameras(ds)
    if not cameras:
        raise ValueError(f"cameras=[]: name at least one camera of {ds.root} (it has {have or 'no cameras'})")
    unknown = [c for c in cameras if c not in have]
    if unknown:
        raise ValueError(f"cameras={list(cameras)}: {unknown} not in the dataset {ds.root}; its cameras: "
                         f"{have or 'none (record with cameras=[...])'}")
    if label_key not in ds.features:
        bools = sorted(k for k, f in ds.features.items() if f["dtype"] == "bool")
        raise ValueError(f"{ds.root}: no {label_key!r} column; the classifier learns from per-frame success "
                         f"labels (armflow collect writes next.success; bool columns here: {bools})")


def episode_outcomes(ds, label_key: str = SUCCESS_KEY) -> list[bool]:
    success = np.asarray(ds.column(label_key), dtype=bool).reshape(-1)
    return [bool(success[lo:hi].any()) for lo, hi in ds.episode_ranges]


def labelled_frames(ds, episodes: list[int], cameras: list[str], positive_frames: int | None,
                    boundary_skip: int, label_key: str = SUCCESS_KEY
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(camera -> uint8 (N, H, W, 3), labels (N,) 0/1, episode index (N,)) of the labelled frames of ``episodes``."""
    from armflow.rewards.classifier_fit import episode_labels
    from armflow.rewards.metrics import frame_success

    images: dict[str, list] = {c: [] for c in cameras}
    labels, owners = [], []
    for i in episodes:
        lab = episode_labels(frame_success(ds.episode(i)[label_key]), positive_frames, boundary_skip)
        keep = np.flatnonzero(lab >= 0)
        for cam in cameras:
            images[cam].append(ds.episode_frames(i, IMAGE_PREFIX + cam)[keep])
        labels.append(lab[keep])
        owners.append(np.full(len(keep), i))
    stacked = {c: np.concatenate(v) for c, v in images.items()}
    return stacked, np.concatenate(labels).astype(np.int64), np.concatenate(owners)


def check_classes(labels: np.ndarray, split: str, root) -> None:
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"{root}: the {split} split has {n_pos} positive and {n_neg} negative frames; record both "
                         "(armflow collect only_success=false failures=0.5 success_hold_steps=10) or add episodes")


def build_model(cfg: DictConfig, cameras: list[str], image_hw: tuple[int, int]):
    from armflow.rewards.classifier import ClassifierConfig, SuccessClassifier
    from armflow.rewards.classifier_fit import load_encoder_weights

    config = ClassifierConfig(cameras=tuple(cameras), image_size=image_hw, channels=tuple(cfg.channels),
                              spatial_features=int(cfg.spatial_features))
    model = SuccessClassifier(config)
    if cfg.encoder_weights:
        load_encoder_weights(model.net, cfg.encoder_weights)
    return model


def fit_on_dataset(cfg: DictConfig) -> tuple[object, dict, tuple[dict, np.ndarray]]:
    """Steps 1-3; returns (the classifier with its threshold, a summary with the training curve, the
    validation frames and labels)."""
    from armflow.data import LeRobotDataset
    from armflow.rewards.classifier_fit import FitConfig, calibrate_and_threshold, fit, split_episodes

    ds = LeRobotDataset(cfg.dataset)
    cameras = list(cfg.cameras)
    label_key = str(cfg.get("label_key") or SUCCESS_KEY)
    check_dataset(ds, cameras, label_key)
    outcomes = episode_outcomes(ds, label_key)
    train_ids, val_ids = split_episodes(outcomes, float(cfg.val_fraction), int(cfg.seed))
    k = int(cfg.positive_frames) if cfg.positive_frames else None
    train_x, train_y, _ = labelled_frames(ds, train_ids, cameras, k, int(cfg.boundary_skip), label_key)
    val_x, val_y, _ = labelled_frames(ds, val_ids, cameras, k, int(cfg.boundary_skip), label_key)
    check_classes(train_y, "train", ds.root)
    check_classes(val_y, "validation", ds.root)
    height, width, _ = ds.features[IMAGE_PREFIX + cameras[0]]["shape"]
    model = build_model(cfg, cameras, (int(height), int(width)))
    fit_cfg = FitConfig(steps=int(cfg.steps), batch_size=int(cfg.batch_size), lr=float(cfg.lr),
                        negative_ratio=float(cfg.negative_ratio) if cfg.negative_ratio else None,
                        crop_pad=int(cfg.crop_pad), eval_every=int(cfg.eval_every),
                        freeze_encoder=bool(cfg.freeze_encoder), seed=int(cfg.seed))
    t0 = time.monotonic()
    bar = _progress(cfg)
    result = fit(model, (train_x, train_y), (val_x, val_y), fit_cfg, on_step=bar)
    train_s = time.monotonic() - t0
    model = calibrate_and_threshold(model, val_x, val_y, float(cfg.target_fp), float(cfg.min_threshold),
                                    bool(cfg.calibrate))
    summary = {"dataset": str(ds.root), "label_key": label_key, "cameras": cameras, "episodes_train": train_ids, "episodes_val": val_ids,
               "train_frames": {"positive": int(train_y.sum()), "negative": int((train_y == 0).sum())},
               "val_frames": {"positive": int(val_y.sum()), "negative": int((val_y == 0).sum())},
               "steps": int(cfg.steps), "best_step": result["best_step"], "train_wall_s": train_s,
               "target_fp": float(cfg.target_fp), "threshold": model.config.threshold,
               "temperature": model.config.temperature, "history": result["history"]}
    return model, summary, (val_x, val_y)


def _progress(cfg: DictConfig):
    if not cfg.progress:
        return None

    def report(step: int, row: dict) -> None:
        print(f"[reward fit] step {step}/{cfg.steps}: train loss {row['train/loss']:.4f}, val loss "
              f"{row['val/loss']:.4f}, val acc@0.5 {row['val/accuracy_at_0.5']:.3f}", flush=True)
    return report


def main(cfg: DictConfig) -> dict:
    from armflow.rewards.metrics import detection_metrics
    from armflow.workflows.reward_plots import plot_scores

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    out = Path(cfg.out)
    model, summary, (val_x, val_y) = fit_on_dataset(cfg)
    prob = np.concatenate([model.probs({c: a[i:i + 1024] for c, a in val_x.items()})
                           for i in range(0, len(val_y), 1024)])
    val = detection_metrics(prob, prob >= model.config.threshold, val_y > 0)
    model.training = {k: v for k, v in summary.items() if k != "history"} | {
        "val_accuracy": val["accuracy"], "val_fp_rate": val["fp_rate"], "val_fn_rate": val["fn_rate"],
        "config": OmegaConf.to_container(cfg, resolve=True)}
    checkpoint = model.save(out / "checkpoint")
    plot = plot_scores(out / "scores.png", prob, val_y > 0, model.config.threshold,
                       f"success classifier, validation episodes {summary['episodes_val']}")
    metrics = {**summary, "val": val, "checkpoint": str(checkpoint), "model_version": model.model_version,
               "plot": str(plot)}
    write_json(out / "metrics.json", metrics)
    print(f"[reward fit] {model.model_version} -> {checkpoint}: threshold {model.config.threshold:.3f} (T "
          f"{model.config.temperature:.2f}); val accuracy {val['accuracy']:.4f}, FP rate {val['fp_rate']:.4f}, "
          f"FN rate {val['fn_rate']:.4f}, AUC {val['auc']:.4f}", flush=True)
    return metrics
