"""Fine-tuning curves: eval success rate and return vs env steps and wall time (one PNG)."""
from __future__ import annotations

from pathlib import Path

from armflow.workflows.common import read_jsonl


def plot_curves(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path | None:
    """Plot the ``eval/*`` rows of a MetricLogger JSONL; returns the PNG path (None without eval rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_jsonl(metrics_path) if "eval/success_rate" in r]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    wall = [r.get("charts/wall_time_s", r["wall_time_s"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [r["eval/success_rate"] for r in rows], marker="o")
    axes[0].set(xlabel="env steps", ylabel="eval success rate", ylim=(-0.02, 1.02))
    axes[1].plot(wall, [r["eval/success_rate"] for r in rows], marker="o")
    axes[1].set(xlabel="wall time [s]", ylabel="eval success rate", ylim=(-0.02, 1.02))
    # The return of the reward being optimised (reward=success|shaped); the env's own dense return can fall
    # as success rises (lift's env reward pays for hovering until the time limit). Older runs: env return.
    key = "eval/rl_return" if all("eval/rl_return" in r for r in rows) else "eval/return"
    axes[2].plot(steps, [r[key] for r in rows], marker="o")
    axes[2].set(xlabel="env steps", ylabel="eval return (RL reward)" if key == "eval/rl_return" else "eval return")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return Path(png_path)
