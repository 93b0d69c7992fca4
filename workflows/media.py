"""Videos (MP4 via PyAV) and plots (PNG via matplotlib, Agg) for run reports."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

CAMERA_PREFIX = "observation.images."


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


def read_mp4(path: str | os.PathLike) -> np.ndarray:
    """Every frame of an MP4 written by ``write_mp4``, uint8 ``(N, H, W, 3)`` RGB."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"read_mp4({path}): no frames")
    return np.stack(frames)


def camera_row(obs: Mapping[str, np.ndarray], keys: Sequence[str] | None = None) -> np.ndarray | None:
    """One observation's camera images side by side, uint8 ``(H, W_1 + ... + W_n, 3)``, in ``keys`` order
    (default: every ``observation.images.*`` key, in the observation's order): the picture a policy reading
    these cameras was given. None when the observation has no camera."""
    keys = [k for k in obs if k.startswith(CAMERA_PREFIX)] if keys is None else list(keys)
    if not keys:
        return None
    return np.concatenate([np.asarray(obs[k], dtype=np.uint8) for k in keys], axis=1)


def save_filmstrip(path: str | os.PathLike, video: str | os.PathLike, n_frames: int = 6, min_height: int = 160) -> Path:
    """``n_frames`` evenly spaced frames of ``video`` in one row to a PNG (a rollout at a glance in a report),
    scaled up by whole pixels to at least ``min_height`` rows so 84x84 camera frames stay visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    frames = read_mp4(video)
    picks = frames[np.linspace(0, len(frames) - 1, min(n_frames, len(frames))).round().astype(int)]
    gap = np.full((picks.shape[1], 2, 3), 255, np.uint8)
    row = np.concatenate([part for frame in picks for part in (frame, gap)][:-1], axis=1)
    scale = max(1, -(-min_height // row.shape[0]))
    matplotlib.image.imsave(path, np.repeat(np.repeat(row, scale, axis=0), scale, axis=1))
    return Path(path)


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


def plot_bars(path: str | os.PathLike, values: dict[str, float], ylabel: str, title: str = "", ylim=(0, 1),
              errors: dict[str, float] | None = None) -> Path:
    """Bar chart of named values to a PNG (e.g. success rate per stage); ``errors``: half-widths drawn as error
    bars on the named bars (e.g. a 95% interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    names = list(values)
    bars = ax.bar(names, [values[n] for n in names], color="#4c72b0")
    if errors:
        ax.errorbar([n for n in names if n in errors], [values[n] for n in names if n in errors],
                    yerr=[errors[n] for n in names if n in errors], fmt="none", ecolor="black", capsize=4)
    for bar, name in zip(bars, names):  # the value above its bar and error bar
        top = bar.get_height() + (errors or {}).get(name, 0.0)
        ax.annotate(f"{values[name]:.2f}", (bar.get_x() + bar.get_width() / 2, top), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel(ylabel)
    if ylim is not None:  # headroom for the labels above the tallest bars
        ax.set_ylim(ylim[0], ylim[1] + 0.08 * (ylim[1] - ylim[0]))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
