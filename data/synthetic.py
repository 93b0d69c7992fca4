"""Small deterministic LeRobot datasets for tests and examples (no simulator needed).

Frame values are pure functions of (episode, step), so a test can recompute what
any episode must contain: `synthetic_frame(episode, t, ...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from armflow.data.lerobot import LeRobotWriter


def synthetic_features(state_dim: int = 9, action_dim: int = 7,
                       image_shape: tuple[int, int, int] | None = None) -> dict[str, dict]:
    """LeRobot features: state, action, reward, done and optionally one camera `front`."""
    feats = {
        "observation.state": {"dtype": "float32", "shape": (state_dim,), "names": None},
        "action": {"dtype": "float32", "shape": (action_dim,), "names": None},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    }
    if image_shape is not None:
        feats["observation.images.front"] = {"dtype": "video", "shape": tuple(image_shape),
                                             "names": ["height", "width", "channels"]}
    return feats


def synthetic_image(episode: int, t: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth uint8 `(H, W, 3)` image (codec-friendly) that changes with episode and step."""
    height, width, _ = shape
    y, x = np.mgrid[0:height, 0:width]
    base = (episode * 37 + t * 9) % 160
    img = np.stack([base + x * 60 // width, base + y * 60 // height, np.full_like(x, 200 - base)], axis=-1)
    return img.astype(np.uint8)


def synthetic_frame(episode: int, t: int, length: int, state_dim: int = 9, action_dim: int = 7,
                    image_shape: tuple[int, int, int] | None = None) -> dict[str, np.ndarray]:
    """Frame `t` of episode `episode` (of `length` steps): state[j] = 100 e + t + j/100, action = -state[:D_a]."""
    state = (100.0 * episode + t + np.arange(state_dim) / 100.0).astype(np.float32)
    frame = {"observation.state": state,
             "action": -np.resize(state, action_dim).astype(np.float32),
             "next.reward": np.float32(t == length - 1),
             "next.done": np.bool_(t == length - 1)}
    if image_shape is not None:
        frame["observation.images.front"] = synthetic_image(episode, t, image_shape)
    return frame


def write_synthetic_dataset(root: str | Path, episode_lengths: Sequence[int] = (10, 11, 12), fps: int = 20,
                            state_dim: int = 9, action_dim: int = 7,
                            image_shape: tuple[int, int, int] | None = None, task: str = "lift the cube",
                            video_codec: str = "auto") -> Path:
    """Write (or append) episodes of the given lengths; returns `root`."""
    feats = synthetic_features(state_dim, action_dim, image_shape)
    with LeRobotWriter(root, fps, feats, robot_type="synthetic", video_codec=video_codec) as writer:
        for length in episode_lengths:
            episode = writer.num_episodes
            for t in range(length):
                writer.add_frame(synthetic_frame(episode, t, length, state_dim, action_dim, image_shape))
            writer.save_episode(task)
    return Path(root)
