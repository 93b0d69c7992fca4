"""Per-feature statistics in LeRobot's layout: {min, max, mean, std, count, q01..q99}.

Low-dimensional features get one value per dimension (shape `(D,)`, `(1,)` for
scalars). Camera streams get one value per channel, shape `(3, 1, 1)`, in [0, 1];
they are computed exactly from 256-bin per-channel histograms of the uint8 pixels.
Episodes are merged with `aggregate_stats` (exact for min/max/mean/std/count;
quantiles are count-weighted means of the per-episode quantiles, as LeRobot does).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES: tuple[str, ...] = ("min", "max", "mean", "std", "count", *QUANTILES)

Stats = dict[str, np.ndarray]


def compute_stats(values: np.ndarray) -> Stats:
    """Stats of low-dimensional samples `values (N,)` or `(N, D)` along axis 0.

    min/max keep integer dtype (int64) for integer data, everything else is float64.
    """
    arr = np.asarray(values)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"compute_stats expects (N,) or (N, D) with N > 0, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float64)
    as_float = arr.astype(np.float64)
    out_dtype = np.int64 if np.issubdtype(arr.dtype, np.integer) else np.float64
    stats: Stats = {
        "min": arr.min(axis=0).astype(out_dtype),
        "max": arr.max(axis=0).astype(out_dtype),
        "mean": as_float.mean(axis=0),
        "std": as_float.std(axis=0),
        "count": np.array([arr.shape[0]], dtype=np.int64),
    }
    qs = np.quantile(as_float, list(QUANTILES.values()), axis=0)
    for i, name in enumerate(QUANTILES):
        stats[name] = qs[i]
    return stats


def image_histogram(frames: np.ndarray) -> np.ndarray:
    """Per-channel pixel counts `(C, 256)` int64 of uint8 frames `(..., H, W, C)`."""
    if frames.dtype != np.uint8:
        raise ValueError(f"image_histogram expects uint8 pixels, got {frames.dtype}")
    channels = frames.shape[-1]
    flat = frames.reshape(-1, channels)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(channels)]).astype(np.int64)


def stats_from_histogram(hist: np.ndarray, n_frames: int) -> Stats:
    """Image stats `(C, 1, 1)` in [0, 1] from per-channel histograms `(C, 256)`.

    `count` is the number of frames (LeRobot's convention), not of pixels.
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    totals = hist.sum(axis=1).astype(np.float64)
    if np.any(totals == 0):
        raise ValueError("stats_from_histogram: empty histogram")
    mean = hist @ levels / totals
    var = hist @ (levels**2) / totals - mean**2
    nonzero = hist > 0
    lo = np.argmax(nonzero, axis=1)
    hi = 255 - np.argmax(nonzero[:, ::-1], axis=1)
    cdf = np.cumsum(hist, axis=1) / totals[:, None]
    shape = (hist.shape[0], 1, 1)
    stats: Stats = {
        "min": (lo / 255.0).reshape(shape),
        "max": (hi / 255.0).reshape(shape),
        "mean": mean.reshape(shape),
        "std": np.sqrt(np.maximum(var, 0.0)).reshape(shape),
        "count": np.array([n_frames], dtype=np.int64),
    }
    for name, q in QUANTILES.items():
        idx = np.array([np.searchsorted(row, q - 1e-12) for row in cdf])
        stats[name] = (idx / 255.0).reshape(shape)
    return stats


def compute_image_stats(frames: np.ndarray) -> Stats:
    """Image stats `(3, 1, 1)` in [0, 1] of uint8 frames `(N, H, W, 3)`."""
    return stats_from_histogram(image_histogram(frames), n_frames=frames.shape[0])


def aggregate_stats(stats_list: Sequence[Stats]) -> Stats:
    """Merge per-episode stats (same feature) into dataset stats, weighting by count."""
    if not stats_list:
        raise ValueError("aggregate_stats needs at least one stats dict")
    counts = np.array([float(s["count"].reshape(-1)[0]) for s in stats_list])
    weights = counts / counts.sum()

    def wsum(key: str) -> np.ndarray:
        return sum(w * np.asarray(s[key], dtype=np.float64) for w, s in zip(weights, stats_list))

    mean = wsum("mean")
    second = sum(
        w * (np.asarray(s["std"], np.float64) ** 2 + (np.asarray(s["mean"], np.float64) - mean) ** 2)
        for w, s in zip(weights, stats_list)
    )
    out: Stats = {
        "min": np.min(np.stack([s["min"] for s in stats_list]), axis=0),
        "max": np.max(np.stack([s["max"] for s in stats_list]), axis=0),
        "mean": mean,
        "std": np.sqrt(np.maximum(second, 0.0)),
        "count": np.array([int(counts.sum())], dtype=np.int64),
    }
    for name in QUANTILES:
        out[name] = wsum(name)
    return out


def stats_to_json(stats: dict[str, Stats]) -> dict[str, dict[str, list]]:
    """Nested lists for `meta/stats.json`."""
    return {key: {name: np.asarray(v).tolist() for name, v in feat.items()} for key, feat in stats.items()}


def stats_from_json(raw: dict) -> dict[str, Stats]:
    """Inverse of `stats_to_json` (lists -> numpy arrays)."""
    return {key: {name: np.asarray(v) for name, v in feat.items()} for key, feat in raw.items()}
