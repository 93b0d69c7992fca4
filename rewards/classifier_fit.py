"""Training a ``SuccessClassifier``: frame labels from episodes, split by episode, BCE with random crops,
temperature calibration and a threshold for a target false-positive rate (pure numpy/torch; the
workflow ``armflow reward fit`` reads the dataset and calls these).

Labels per episode come from ``frame_success`` (``armflow.rewards.metrics``): row t's ``next.success`` is
the state AFTER its action, i.e. what frame t+1 shows, so frame t's own label is row t-1's (frame 0: false).

- successful episode (a frame shows success): positives = the last ``positive_frames`` success frames
  at/after the first one; negatives = frames before it, except the ``boundary_skip`` frames right
  before it (the cube half-way up is neither);
- failed episode: every frame is a negative.

Training draws each batch with ``negative_ratio`` negatives per positive (SERL: 2-3x) from ALL labelled
frames of the training episodes, so every hard negative of a failed attempt is seen; the validation
split keeps every labelled frame, so its false-positive rate is measured on the natural negatives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from armflow.rewards.classifier import ClassifierNet, SuccessClassifier, sigmoid

POSITIVE, NEGATIVE, SKIP = 1, 0, -1


def load_encoder_weights(net: ClassifierNet, path: str | Path) -> list[str]:
    """Load a local safetensors file of CameraEncoder weights (keys ``conv.*`` / ``spatial.*``, optionally under
    ``encoders.<cam>.``) into every camera's encoder; returns the loaded keys. Shape mismatches raise."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder_weights={path}: no such file (a local .safetensors of encoder weights)")
    state = load_file(str(path))
    loaded = []
    for cam, enc in net.encoders.items():
        own = enc.state_dict()
        for key, tensor in state.items():
            short = key.removeprefix(f"encoders.{cam}.")
            if short in own:
                if own[short].shape != tensor.shape:
                    raise ValueError(f"{path}: {key} has shape {tuple(tensor.shape)}, the encoder's "
                                     f"{short} is {tuple(own[short].shape)}")
                own[short] = tensor
                loaded.append(f"encoders.{cam}.{short}")
        enc.load_state_dict(own)
    if not loaded:
        keys = ", ".join(next(iter(net.encoders.values())).state_dict())
        raise ValueError(f"{path}: no tensor matches the encoder's keys ({keys})")
    return loaded


def episode_labels(success: np.ndarray, positive_frames: int | None = None, boundary_skip: int = 0) -> np.ndarray:
    """Per-frame labels (T,) int8 of one episode from what each frame shows (``success``, (T,) bool, e.g.
    ``frame_success(next_success)``): 1 positive, 0 negative, -1 not used (see module doc)."""
    success = np.asarray(success, dtype=bool).reshape(-1)
    labels = np.full(success.shape, NEGATIVE, dtype=np.int8)
    if not success.any():
        return labels
    first = int(np.argmax(success))
    labels[max(0, first - boundary_skip):] = SKIP
    pos = first + np.flatnonzero(success[first:])
    if positive_frames is not None:
        pos = pos[-int(positive_frames):]
    labels[pos] = POSITIVE
    return labels


def split_episodes(outcomes: list[bool], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split episode indices into (train, val) by episode, stratified by outcome (success / failure).

    Each class gives ``round(val_fraction * n)`` episodes to val, at least one when it has two or more, so
    both splits see both classes whenever the data allows it.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: expected a fraction in (0, 1)")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in (True, False):
        ids = np.array([i for i, ok in enumerate(outcomes) if bool(ok) == cls], dtype=int)
        rng.shuffle(ids)
        n_val = min(max(int(round(val_fraction * len(ids))), 1 if len(ids) >= 2 else 0), max(len(ids) - 1, 0))
        val += ids[:n_val].tolist()
        train += ids[n_val:].tolist()
    return sorted(train), sorted(val)


def balanced_batch(labels: torch.Tensor, batch_size: int, negative_ratio: float | None,
                   generator: torch.Generator) -> torch.Tensor:
    """Indices (batch_size,) drawn with replacement: ``round(batch_size / (1 + negative_ratio))`` positives and
    negatives for the rest (``negative_ratio`` None: uniform over all frames)."""
    if negative_ratio is None:
        return torch.randint(0, len(labels), (batch_size,), generator=generator)
    pos, neg = torch.nonzero(labels > 0.5).flatten(), torch.nonzero(labels < 0.5).flatten()
    n_pos = min(max(int(round(batch_size / (1.0 + negative_ratio))), 1), batch_size - 1)
    return torch.cat([pos[torch.randint(0, len(pos), (n_pos,), generator=generator)],
                      neg[torch.randint(0, len(neg), (batch_size - n_pos,), generator=generator)]])


def random_crop(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ-style shift: pad uint8 (B, H, W, 3) by ``pad`` px (edge replicate), crop each back at a random offset."""
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).view(b, 1, h, 1).expand(b, 3, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(b, 1, 1, w).expand(b, 3, h, w)
    return out.gather(3, cols).to(torch.uint8).permute(0, 2, 3, 1)


@dataclass(frozen=True)
class FitConfig:
    steps: int = 1000  # gradient steps
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    negative_ratio: float | None = 2.5  # negatives per positive in each batch (None: uniform sampling)
    crop_pad: int = 4  # random-crop augmentation [px] (0: off)
    eval_every: int = 100  # steps between validation passes (the best validation loss is kept)
    freeze_encoder: bool = False  # train only the spatial embedding + head (with loaded encoder weights)
    seed: int = 0


def fit(model: SuccessClassifier, train: tuple[dict, np.ndarray], val: tuple[dict, np.ndarray], cfg: FitConfig,
        on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``model.net`` in place with BCE; ``train``/``val`` = (camera -> uint8 (N, H, W, 3), labels (N,) 0/1).

    Keeps the weights with the lowest validation loss; returns ``{"best_step", "best_val_loss", "history"}``.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    images = {c: torch.from_numpy(np.ascontiguousarray(a)) for c, a in train[0].items()}
    labels = torch.as_tensor(train[1], dtype=torch.float32)
    net = model.net
    if cfg.freeze_encoder:
        for enc in net.encoders.values():
            enc.conv.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    best = {"best_step": 0, "best_val_loss": math.inf, "state": None}
    history = []
    for step in range(1, cfg.steps + 1):
        net.train()
        idx = balanced_batch(labels, cfg.batch_size, cfg.negative_ratio, gen)
        batch = {c: random_crop(x[idx], cfg.crop_pad, gen) for c, x in images.items()}
        loss = F.binary_cross_entropy_with_logits(net(batch), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"step": step, "train/loss": float(loss.detach()), **validation_terms(model, *val)}
            history.append(row)
            if row["val/loss"] < best["best_val_loss"]:
                best = {"best_step": step, "best_val_loss": row["val/loss"],
                        "state": {k: v.clone() for k, v in net.state_dict().items()}}
            if on_step is not None:
                on_step(step, row)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    return {"best_step": best["best_step"], "best_val_loss": best["best_val_loss"], "history": history}


def batched_logits(model: SuccessClassifier, images: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    n = len(next(iter(images.values())))
    parts = [model.logits({c: a[i:i + batch] for c, a in images.items()}) for i in range(0, n, batch)]
    return np.concatenate(parts) if parts else np.zeros(0)


def validation_terms(model: SuccessClassifier, images: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    logits = batched_logits(model, images)
    y = np.asarray(labels, dtype=np.float64)
    loss = float(np.mean(np.logaddexp(0.0, logits) - y * logits)) if len(y) else math.nan
    acc = float(np.mean((logits >= 0) == (y > 0.5))) if len(y) else math.nan
    return {"val/loss": loss, "val/accuracy_at_0.5": acc}


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature T minimising the BCE of ``sigmoid(logit / T)`` (golden-section search on log T).

    1.0 when the logits separate the classes perfectly: the BCE then falls without bound as T -> 0, and a
    validation split that small says nothing about how sharp the probabilities should be.
    """
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if len(z) == 0 or y.min() == y.max() or z[y > 0.5].min() > z[y < 0.5].max():
        return 1.0

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(60):
        if nll(a) < nll(b):
            hi, b = b, a
            a = hi - g * (hi - lo)
        else:
            lo, a = a, b
            b = lo + g * (hi - lo)
    return float(math.exp((lo + hi) / 2))


def threshold_for_fp(neg_probs: np.ndarray, target_fp: float, min_threshold: float = 0.5) -> float:
    """The lowest threshold t (>= ``min_threshold``) whose false-positive rate on ``neg_probs`` is <= target_fp.

    A negative counts as a false positive when ``prob >= t``; at most ``floor(target_fp * n)`` of them may.
    """
    if not 0.0 <= target_fp < 1.0:
        raise ValueError(f"target_fp={target_fp}: expected a rate in [0, 1)")
    neg = np.sort(np.asarray(neg_probs, dtype=np.float64))[::-1]
    allowed = int(math.floor(target_fp * len(neg) + 1e-9))
    if allowed >= len(neg):
        return float(min_threshold)
    t = float(np.nextafter(neg[allowed], np.inf))  # strictly above the (allowed+1)-th highest negative
    return float(min(max(t, min_threshold), 1.0))


def calibrate_and_threshold(model: SuccessClassifier, images: dict[str, np.ndarray], labels: np.ndarray,
                            target_fp: float, min_threshold: float, calibrate: bool) -> SuccessClassifier:
    """The model with its temperature (optional) and threshold chosen on the validation split."""
    logits = batched_logits(model, images)
    temperature = fit_temperature(logits, labels) if calibrate else 1.0
    probs = sigmoid(logits / temperature)
    threshold = threshold_for_fp(probs[np.asarray(labels) == 0], target_fp, min_threshold)
    return model.with_decision(threshold=threshold, temperature=temperature)
