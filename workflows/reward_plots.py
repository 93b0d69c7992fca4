"""Plots of a success detector against privileged labels: score histograms + ROC, and reliability diagrams."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from armflow.rewards.metrics import roc_curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scores(path: str | Path, prob: np.ndarray, label: np.ndarray, threshold: float | None,
                title: str = "") -> Path:
    """Left: histogram of P(success) for negative and positive frames (threshold dashed); right: ROC curve."""
    plt = _pyplot()
    p, y = np.asarray(prob, dtype=float), np.asarray(label, dtype=bool)
    fig, (ax_h, ax_r) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    bins = np.linspace(0, 1, 41)
    ax_h.hist(p[~y], bins=bins, alpha=0.6, label=f"no success ({int((~y).sum())})", color="tab:red")
    ax_h.hist(p[y], bins=bins, alpha=0.6, label=f"success ({int(y.sum())})", color="tab:green")
    if threshold is not None:
        ax_h.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f}")
    ax_h.set(xlabel="P(success)", ylabel="frames", yscale="log")
    ax_h.legend(fontsize=8)
    fpr, tpr = roc_curve(p, y)
    ax_r.plot(fpr, tpr, marker=".", ms=3)
    ax_r.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax_r.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    for ax in (ax_h, ax_r):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_reliability(path: str | Path, calibrations: dict[str, dict], title: str = "") -> Path:
    """Reliability diagram: observed success frequency vs mean predicted P(success) per bin, one line per
    name in ``calibrations`` (``armflow.rewards.metrics.calibration_bins`` output); bin counts below."""
    plt = _pyplot()
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5.5, 6), dpi=100, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfectly calibrated")
    for name, cal in calibrations.items():
        pred, obs = np.asarray(cal["mean_pred"], float), np.asarray(cal["observed"], float)
        keep = ~np.isnan(pred)
        ax.plot(pred[keep], obs[keep], marker="o", label=f"{name} (ECE {cal['ece']:.3f})")
        edges = np.asarray(cal["edges"])
        ax_n.bar(edges[:-1], cal["count"], width=np.diff(edges), align="edge", alpha=0.5, label=name)
    ax.set(ylabel="observed success frequency", xlim=(0, 1), ylim=(-0.02, 1.02))
    ax_n.set(xlabel="predicted P(success)", ylabel="frames", yscale="log")
    ax.legend(fontsize=8)
    for a in (ax, ax_n):
        a.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
