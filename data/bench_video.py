"""Benchmark: video encode/decode speed per codec at 84x84 and writer save latency.

Run: `python -m armflow.data.bench_video [--size 84] [--frames 200] [--episodes 20]`;
the last line is `BENCH_JSON: {...}`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from armflow.data.lerobot import LeRobotWriter
from armflow.data.synthetic import synthetic_features, synthetic_frame, synthetic_image
from armflow.data.video import CODEC_OPTIONS, EpisodeEncoder, choose_codec, decode_range, encoder_works


def bench_codec(codec: str, size: int, n_frames: int, folder: Path) -> dict[str, float]:
    """Encode then decode `n_frames` smooth frames `(size, size, 3)`; frames/s and bytes/frame."""
    shape = (size, size, 3)
    frames = [synthetic_image(0, t, shape) for t in range(n_frames)]
    path = folder / f"{codec}.mp4"
    start = time.perf_counter()
    encoder = EpisodeEncoder(path, codec, 20, size, size)
    for frame in frames:
        encoder.add(frame)
    encoder.close()
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode_range(path, 0, n_frames, 20)
    decode_s = time.perf_counter() - start
    err = float(np.abs(decoded.astype(int) - np.stack(frames).astype(int)).mean())
    return {"encode_fps": n_frames / encode_s, "decode_fps": n_frames / decode_s,
            "bytes_per_frame": path.stat().st_size / n_frames, "mean_abs_err": err}


def bench_writer(size: int, n_episodes: int, length: int, folder: Path) -> dict[str, float]:
    """Record episodes with state + one camera; per-save latency [ms] and overall frames/s."""
    shape = (size, size, 3)
    saves, start = [], time.perf_counter()
    with LeRobotWriter(folder / "ds", 20, synthetic_features(image_shape=shape)) as writer:
        for e in range(n_episodes):
            for t in range(length):
                writer.add_frame(synthetic_frame(e, t, length, image_shape=shape))
            t0 = time.perf_counter()
            writer.save_episode("bench")
            saves.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {"frames_per_s": n_episodes * length / total, "save_ms_first": 1e3 * saves[0],
            "save_ms_last": 1e3 * saves[-1], "save_ms_mean": 1e3 * float(np.mean(saves))}


def run_bench(size: int = 84, n_frames: int = 200, n_episodes: int = 20) -> dict:
    """Results dict: auto-chosen codec, per-codec speeds, writer save latency."""
    results: dict = {"size": size, "auto_codec": choose_codec("auto", size, size, 20)}
    with tempfile.TemporaryDirectory() as tmp:
        for codec in CODEC_OPTIONS:
            if encoder_works(codec, size, size, 20):
                results[codec] = bench_codec(codec, size, n_frames, Path(tmp))
        results["writer"] = bench_writer(size, n_episodes, 100, Path(tmp))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    results = run_bench(args.size, args.frames, args.episodes)
    for key, value in results.items():
        print(key, value)
    print("BENCH_JSON: " + json.dumps(results))


if __name__ == "__main__":
    main()
