"""How often a success detector is wrong: confusion counts, rates, ROC AUC and calibration bins.

Every backend is audited the same way against a privileged label (``next.success`` in sim, aligned with
the frames by ``frame_success``): ``detection_metrics(prob, decision, label)``. ``prob`` may be NaN where
a backend gives no probability (its AUC and calibration are then computed on the rest).
"""
from __future__ import annotations

import numpy as np


def frame_success(next_success: np.ndarray) -> np.ndarray:
    """What each frame of an episode shows: row t's ``next.success`` describes the state after row t's action,
    which is frame t+1, so frame t's label is row t-1's (frame 0, the reset state: false). A detector scoring
    frame t is audited against this (as RL scores the next observation of transition t-1)."""
    s = np.asarray(next_success, dtype=bool).reshape(-1)
    return np.r_[False, s[:-1]] if s.size else s


def confusion(decision: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Counts and rates of binary decisions against labels (both (N,) bool).

    ``fp_rate`` = FP / negatives (what RL exploits), ``fn_rate`` = FN / positives; a rate with an empty
    denominator is NaN.
    """
    d, y = np.asarray(decision, dtype=bool), np.asarray(label, dtype=bool)
    tp, fp = int(np.sum(d & y)), int(np.sum(d & ~y))
    fn, tn = int(np.sum(~d & y)), int(np.sum(~d & ~y))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {"n": int(d.size), "positives": tp + fn, "negatives": fp + tn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "accuracy": ratio(tp + tn, d.size), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "fp_rate": ratio(fp, fp + tn), "fn_rate": ratio(fn, fn + tp)}


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties count 1/2."""
    s, y = np.asarray(score, dtype=np.float64), np.asarray(label, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) over every distinct threshold, from (0, 0) to (1, 1)."""
    s, y = np.asarray(score, dtype=np.float64), np.asarray(label, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, int)
    tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
    tpr = np.r_[0.0, tps / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fps / max(int((~y).sum()), 1)]
    return fpr, tpr


def calibration_bins(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Reliability diagram data: per equal-width prob bin, the mean predicted prob, the observed success
    frequency and the count (empty bins: NaN); plus ``ece`` (count-weighted |pred - observed|)."""
    p, y = np.asarray(prob, dtype=np.float64), np.asarray(label, dtype=np.float64)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(idx, weights=p, minlength=bins) / count
        observed = np.bincount(idx, weights=y, minlength=bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] * np.abs(mean_pred[filled] - observed[filled])) / max(count.sum(), 1))
    return {"edges": np.linspace(0, 1, bins + 1).tolist(), "mean_pred": mean_pred.tolist(),
            "observed": observed.tolist(), "count": count.tolist(), "ece": ece}


def detection_metrics(prob: np.ndarray, decision: np.ndarray, label: np.ndarray, bins: int = 10) -> dict:
    """Confusion counts and rates of ``decision``, plus AUC, Brier score and calibration of ``prob``."""
    p, y = np.asarray(prob, dtype=np.float64), np.asarray(label, dtype=bool)
    out = confusion(decision, y)
    has_p = ~np.isnan(p)
    out["auc"] = roc_auc(p[has_p], y[has_p])
    out["brier"] = float(np.mean((p[has_p] - y[has_p]) ** 2)) if has_p.any() else float("nan")
    out["calibration"] = calibration_bins(p[has_p], y[has_p], bins)
    return out
