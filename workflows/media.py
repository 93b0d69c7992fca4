"""Videos (MP4 via PyAV) and plots (PNG via matplotlib, Agg) for run reports."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


def _pick_codec() -> str:
    import av

    for codec in ("libx264", "h264", "mpeg4"):
        if codec in av.codecs_available:
            return codec
    raise RuntimeError(f"no MP4 video encoder in PyAV; have: {sorted(av.codecs_available)[:20]}...")


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Write uint8 (H, W, 3) RGB frames to an H.264 MP4 (tmp + rename, so a crash leaves no half file)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    frames = list(frames)
    if not frames:
        raise ValueError(f"write_mp4({path}): no frames")
    height, width = frames[0].shape[:2]
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(_pick_codec(), rate=int(round(fps)))
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            img = np.ascontiguousarray(frame[: stream.height, : stream.width, :3], dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def plot_curves(
    path: str | os.PathLike,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
) -> Path:
    """Line plot of named (x, y) series to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_bars(path: str | os.PathLike, values: dict[str, float], ylabel: str, title: str = "", ylim=(0, 1)) -> Path:
    """Bar chart of named values to a PNG (e.g. success rate per stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    names = list(values)
    bars = ax.bar(names, [values[n] for n in names], color="#4c72b0")
    for bar, name in zip(bars, names):
        ax.annotate(f"{values[name]:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
